"""The agent under container churn keeps nothing of what went (bench/soak.py measures the hour).

Real cgroups on the v1 memory controller, a real kube-apiserver, real OOM kills. Each test fails
without its fix: the structure (or the /metrics series) keeps every container the node ever ran.
"""

from __future__ import annotations

from pathlib import Path

from cgroupkit import _rmdir
from kube.agentkit import ensure_crds, sample, wait_for
from oomsight.agent.loop import Agent
from oomsight.agent.settings import Settings

KILLS = "oomsight_oom_kills_total"


def test_a_deleted_pods_kill_counters_leave_metrics_after_the_grace(rest, scenes, agent, monkeypatch):
    """A pod's ``oomsight_oom_kills_total`` series stay while it lives, and go once it was deleted
    (after ``--metrics-grace``); before, every pod ever OOM-killed on the node stayed a series."""
    monkeypatch.setenv("OOMSIGHT_METRICS_GRACE", "2")
    made = [scenes() for _ in range(3)]
    a = agent()
    a.wait_swept(len(made))
    for s in made:
        s.oom_kill_main()
    wait_for(
        lambda: all(sample(a.get("/metrics"), KILLS, pod=s.name) == 1 for s in made),
        60,
        "one kill counted on /metrics for each pod",
    )
    gone, kept = made[:2], made[2]
    for s in gone:
        s.stop_procs()
        _rmdir(s.cgroup.path)
        _rmdir(s.pod_cgroup.path)
        rest.request("DELETE", f"/api/v1/namespaces/{s.namespace}/pods/{s.name}", {"gracePeriodSeconds": 0})
    wait_for(
        lambda: all(sample(a.get("/metrics"), KILLS, pod=s.name) is None for s in gone),
        60,
        "the deleted pods' kill series to leave /metrics",
    )
    assert sample(a.get("/metrics"), KILLS, pod=kept.name) == 1  # a live pod's series stays


def test_once_keys_of_removed_cgroups_are_forgotten(kubeconfig, rest, cgroups, node, tmp_path):
    """The keys of "log once per cgroup" messages go with their cgroup: 20 container cgroups of no
    pod (each logged once as unmatched), removed, leave none of their keys after the next sweep."""
    ensure_crds(rest)
    settings = Settings(
        node_name=node,
        kubeconfig=str(kubeconfig),
        host_root=Path("/"),
        state_dir=tmp_path / "state",
        interval=1.0,
        metrics_port=0,
    )
    agent = Agent(settings)
    agent.pods.start()
    try:
        assert agent.pods.wait_synced(60), "the pod list"
        made = [cgroups.container(cgroups.pod()[0])[0] for _ in range(20)]
        root = Path(agent.memory_root)
        ours = {"/" + str(c.path.relative_to(root)) for c in made}

        def keys() -> set[str]:
            return {k for k in agent.logged_once if k.partition(":")[2] in ours}

        agent._sweep()
        assert keys() == {f"unmatched:{p}" for p in ours}
        agent._sweep()
        assert len(keys()) == len(ours)  # still there: still logged once only
        for c in made:
            _rmdir(c.path)
            _rmdir(c.path.parent)
        agent._sweep()
        assert keys() == set()
    finally:
        agent.pods.stop()
        agent.walker.close()
