"""End to end on a real node: real Deployments, the real kubelet, containerd and runc, real OOM kills,
and oomsight installed by ``helm install`` exactly as the README says (``hack/envtest up --node``).

Each test looks only at its own namespace and Pods: other people's OOM kills on this machine do not
matter, and every wait polls with a generous deadline (no timed asserts).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import envtest_node
import pytest

from kube.kubehelpers import unique_name
from node.nodekit import (
    CHILD,
    CREEP,
    GROW,
    SYSTEM_NS,
    Chart,
    MiB,
    apply,
    container_status,
    create_namespace,
    deployment,
    oomsight_events,
    reasons,
    series_total,
    service_get,
    the_pod,
    wait_for,
)

pytestmark = [pytest.mark.node, pytest.mark.slow]

KILL_DEADLINE = 240.0  # the kubelet's back-off and a busy machine: minutes, not seconds
EVENT_DEADLINE = 120.0


def test_the_chart_runs_unprivileged_and_serves_metrics_and_healthz(chart: Chart) -> None:
    pods = chart.agent_pods()
    assert len(pods) == 1
    agent = pods[0]["spec"]["containers"][0]
    assert agent["securityContext"].get("privileged") is False
    assert "ALL" in agent["securityContext"]["capabilities"]["drop"]
    ports = chart.metrics_services()
    assert {name for name, _ in ports} == {"oomsight-agent-metrics", "oomsight-operator-metrics"}
    for name, port in ports:
        assert service_get(chart.kubectl, name, port, "/healthz").strip(), (name, port)
        metrics = service_get(chart.kubectl, name, port, "/metrics")
        assert "# TYPE " in metrics and "oomsight_" in metrics, (name, port)


def test_the_built_in_user_roles_gain_oomsight_resources_by_aggregation(chart: Chart) -> None:
    """The chart's aggregated ClusterRoles, merged into view/edit by the real controller-manager: a
    viewer (ClusterRoleBinding to view) reads policies and node reports but cannot change them; an
    editor (RoleBinding to edit in one namespace) manages that namespace's policies only."""
    kubectl = chart.kubectl
    ns = create_namespace(kubectl, "e2e-roles")
    viewer, editor = f"system:serviceaccount:{ns}:viewer", f"system:serviceaccount:{ns}:editor"
    crb = unique_name("oomsight-viewer", max_length=50)
    kubectl.run("create", "clusterrolebinding", crb, "--clusterrole=view", f"--serviceaccount={ns}:viewer")
    kubectl.run(
        "create", "rolebinding", "editor", "-n", ns, "--clusterrole=edit", f"--serviceaccount={ns}:editor"
    )

    def can(who: str, verb: str, resource: str, namespace: str = ns) -> bool:
        out = kubectl.run("auth", "can-i", verb, resource, f"--as={who}", "-n", namespace, check=False)
        assert out.stdout.strip() in ("yes", "no"), out.stderr
        return out.stdout.strip() == "yes"

    try:
        # aggregation is the controller-manager's work: poll until view carries the rules
        wait_for(lambda: can(viewer, "list", "memorypolicies.oomsight.io"), 120, "view to aggregate")
        assert can(viewer, "get", "nodememoryreports.oomsight.io")
        assert can(viewer, "watch", "memorypolicies.oomsight.io", "default")
        assert not can(viewer, "create", "memorypolicies.oomsight.io")
        assert not can(viewer, "patch", "nodememoryreports.oomsight.io")
        wait_for(lambda: can(editor, "create", "memorypolicies.oomsight.io"), 120, "edit to aggregate")
        assert can(editor, "delete", "memorypolicies.oomsight.io")
        assert not can(editor, "create", "memorypolicies.oomsight.io", "default")
        assert not can(editor, "update", "nodememoryreports.oomsight.io")  # the agents' to write
    finally:
        kubectl.run("delete", "clusterrolebinding", crb, check=False)
        kubectl.run("delete", "namespace", ns, "--wait=false", check=False)


def test_main_process_killed_kubelet_and_oomsight_agree(chart: Chart) -> None:
    kubectl = chart.kubectl
    ns = create_namespace(kubectl, "e2e-main")
    apply(kubectl, ns, deployment("main", [GROW], limit="64Mi", request="32Mi"))

    def killed_and_restarted() -> dict[str, Any] | None:
        pod = the_pod(kubectl, ns, "main")
        if pod is None:
            return None
        status = container_status(pod)
        last = (status.get("lastState") or {}).get("terminated") or {}
        return pod if last.get("reason") == "OOMKilled" and status["restartCount"] >= 1 else None

    pod = wait_for(killed_and_restarted, KILL_DEADLINE, "the kubelet to report OOMKilled and a restart")
    name = pod["metadata"]["name"]
    events = wait_for(
        lambda: [e for e in oomsight_events(kubectl, ns, name) if e["reason"] == "OOMKilled"],
        EVENT_DEADLINE,
        f"oomsight's OOMKilled Event on {name}",
    )
    note = events[0]["note"]
    assert events[0]["type"] == "Warning"
    assert "container hog" in note and "64.0 MiB" in note, note
    assert "OOMKilledPodLimit" not in reasons(oomsight_events(kubectl, ns, name))


def test_child_killed_pid1_lives_only_oomsight_reports_it(chart: Chart) -> None:
    kubectl = chart.kubectl
    ns = create_namespace(kubectl, "e2e-child")
    apply(kubectl, ns, deployment("child", [CHILD, "1", "0"], limit="64Mi", request="32Mi"))

    def child_died() -> dict[str, Any] | None:
        pod = the_pod(kubectl, ns, "child")
        if pod is None:
            return None
        logs = kubectl.run("logs", "-n", ns, pod["metadata"]["name"], check=False).stdout
        return pod if "child exit -9 kills 1" in logs else None

    pod = wait_for(child_died, KILL_DEADLINE, "the child process to be OOM-killed")
    name = pod["metadata"]["name"]
    events = wait_for(
        lambda: [e for e in oomsight_events(kubectl, ns, name) if e["reason"] == "OOMKilledChild"],
        EVENT_DEADLINE,
        f"oomsight's OOMKilledChild Event on {name}",
    )
    assert "kept running" in events[0]["note"], events[0]["note"]
    status = container_status(the_pod(kubectl, ns, "child") or pod)
    assert status["restartCount"] == 0 and not status.get("lastState"), json.dumps(status)
    assert "running" in status["state"]


def test_working_set_warning_comes_before_the_kill(chart: Chart) -> None:
    kubectl = chart.kubectl
    ns = create_namespace(kubectl, "e2e-warn")
    # 95% of the limit, held for 45 s (the agent sweeps every 10 s), then past the limit.
    apply(kubectl, ns, deployment("warn", [CREEP, "0.95", "45"], limit="96Mi", request="32Mi"))

    def warned() -> tuple[str, dict[str, Any]] | None:
        pod = the_pod(kubectl, ns, "warn")
        if pod is None:
            return None
        got = [e for e in oomsight_events(kubectl, ns, pod["metadata"]["name"])]
        return (pod["metadata"]["name"], pod) if "HighWorkingSet" in reasons(got) else None

    name, pod = wait_for(warned, KILL_DEADLINE, "oomsight's HighWorkingSet Event")
    assert container_status(pod)["restartCount"] == 0, "the warning came only after the kill"
    wait_for(
        lambda: {"HighWorkingSet", "OOMKilled"} <= set(reasons(oomsight_events(kubectl, ns, name))),
        KILL_DEADLINE,
        "the OOM kill after the warning",
    )


def test_memory_policy_gets_status_recommendation_and_pod_annotations(chart: Chart) -> None:
    kubectl = chart.kubectl
    ns = create_namespace(kubectl, "e2e-policy")
    # A steady workload: grows to ~40 MiB and stays (no kill).
    steady = "import time\nchunks = [b'\\x01' * (4 << 20) for _ in range(8)]\ntime.sleep(86400)"
    apply(kubectl, ns, deployment("web", [steady], limit="128Mi", request="64Mi", labels={"team": "shop"}))
    policy = {
        "apiVersion": "oomsight.io/v1alpha1",
        "kind": "MemoryPolicy",
        "metadata": {"name": "shop"},
        "spec": {
            "selector": {"matchLabels": {"team": "shop"}},
            "actions": {"annotatePods": True, "emitEvents": True},
        },
    }
    apply(kubectl, ns, policy)

    def recommended() -> dict[str, Any] | None:
        status = kubectl.json("get", "memorypolicy", "shop", "-n", ns).get("status") or {}
        for workload in status.get("workloads") or []:
            if (workload["kind"], workload["name"]) == ("Deployment", "web"):
                for container in workload.get("containers") or []:
                    if container["name"] == "hog" and container.get("recommendedLimit"):
                        return status
        return None

    # The agent reports each node at most once a minute; the operator reconciles after that.
    status = wait_for(recommended, 300, "the MemoryPolicy status with a recommendation for web")
    assert status["podsObserved"] == 1 and status["mode"] == "agents", status
    pod = the_pod(kubectl, ns, "web")
    assert pod is not None

    def annotated() -> str | None:
        got = the_pod(kubectl, ns, "web") or {}
        return (got.get("metadata", {}).get("annotations") or {}).get("oomsight.io/memory-recommendation")

    value = json.loads(wait_for(annotated, 120, "the recommendation annotation on the real Pod"))
    assert value["policy"] == "shop" and value["containers"]["hog"]["limit"], value
    table = kubectl.run("get", "mp", "-n", ns).stdout
    header, row = table.splitlines()[:2]
    assert header.split()[:3] == ["NAME", "PODS", "AT"] and row.split()[:2] == ["shop", "1"], table


def test_agent_pod_deleted_while_kills_happen_reports_each_kill_once(chart: Chart) -> None:
    kubectl = chart.kubectl
    ns = create_namespace(kubectl, "e2e-restart")
    kills = 6
    # PID 1 starts a growing child every 5 s, six times; each child is OOM-killed, PID 1 lives on.
    apply(kubectl, ns, deployment("burst", [CHILD, str(kills), "5"], limit="64Mi", request="32Mi"))

    def logs() -> str:
        pod = the_pod(kubectl, ns, "burst")
        return kubectl.run("logs", "-n", ns, pod["metadata"]["name"], check=False).stdout if pod else ""

    wait_for(lambda: "kills 2" in logs(), KILL_DEADLINE, "the first two kills")
    old = {p["metadata"]["name"] for p in chart.agent_pods()}
    kubectl.run("delete", "pod", "-n", SYSTEM_NS, *old, "--wait=false")
    wait_for(
        lambda: [p for p in chart.agent_pods() if p["metadata"]["name"] not in old and _ready(p)],
        KILL_DEADLINE,
        "a new agent Pod",
    )
    done = wait_for(lambda: "done" in logs() and logs(), KILL_DEADLINE * 2, "all the kills")
    killed = done.count("child exit -9")
    assert killed == kills, done
    pod = the_pod(kubectl, ns, "burst")
    assert pod is not None and container_status(pod)["restartCount"] == 0
    name = pod["metadata"]["name"]

    def reported() -> list[dict[str, Any]] | None:
        got = [e for e in oomsight_events(kubectl, ns, name) if e["reason"].startswith("OOMKilled")]
        return got if series_total(got) >= killed else None

    events = wait_for(reported, EVENT_DEADLINE, f"{killed} kills reported")
    assert series_total(events) == killed, [(e["reason"], e.get("series")) for e in events]
    assert set(reasons(events)) == {"OOMKilledChild"}, reasons(events)


def test_node_allocatable_hit_by_best_effort_pods(chart: Chart, node: Any) -> None:
    kubectl = chart.kubectl
    usage = int(Path("/sys/fs/cgroup/memory/kubepods/memory.usage_in_bytes").read_text())
    node.set_allocatable(usage + 384 * MiB)  # restarts the kubelet: kubepods' limit shrinks
    try:
        ns = create_namespace(kubectl, "e2e-alloc")
        # BestEffort (no requests, no limits): only kubepods (node allocatable) bounds them.
        apply(kubectl, ns, deployment("besteffort", [GROW], limit=None, request=None, replicas=2))

        def ancestor_kill() -> list[dict[str, Any]]:
            got = oomsight_events(kubectl, ns)
            return [e for e in got if e["reason"] == "OOMKilledAncestorLimit"]

        events = wait_for(ancestor_kill, KILL_DEADLINE, "oomsight's OOMKilledAncestorLimit Event")
        assert "node allocatable" in events[0]["note"], events[0]["note"]
        assert events[0]["regarding"]["name"].startswith("besteffort-")
        kubectl.run("delete", "namespace", ns, "--wait=false")
    finally:
        node.set_allocatable(envtest_node.DEFAULT_ALLOCATABLE)


def _ready(pod: dict[str, Any]) -> bool:
    conditions = pod.get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)
