"""``MemoryPolicy.spec.actions.apply`` on a real node: the real kubelet resizes a running container's
cgroup in place, the real kernel OOM-kills it when the new limit is too tight, and the operator (the
helm-installed chart) puts the previous limit back.

Each test looks only at its own namespace and Pods; every wait polls with a generous deadline."""

from __future__ import annotations

import glob
import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from node.nodekit import (
    GROW,
    Chart,
    apply,
    container_status,
    create_namespace,
    deployment,
    oomsight_events,
    the_pod,
    wait_for,
)

pytestmark = [pytest.mark.node, pytest.mark.slow]

MiB = 1 << 20
DEADLINE = 300.0  # the agent reports at most once a minute; the operator then reconciles
START = 512 * MiB

# Holds 40 MiB (written, so charged) until the container's limit drops below START, then: "hold" keeps
# holding, "main" grows until the kernel kills it (PID 1: the kubelet sees OOMKilled), "child" starts a
# child that grows until killed while PID 1 lives on (the kubelet never sees it).
PROG = """
import subprocess, sys, time
def limit():
    with open("/sys/fs/cgroup/memory/memory.limit_in_bytes") as f:
        return int(f.read())
mode, start = sys.argv[1], int(sys.argv[2])
held = [b"\\x01" * (4 << 20) for _ in range(10)]
print(f"holding 40 MiB under {limit()}", flush=True)
while limit() >= start:
    time.sleep(0.2)
print(f"limit now {limit()}", flush=True)
if mode == "main":
    while True:
        held.append(b"\\x01" * (4 << 20))
if mode == "child":
    child = subprocess.run([sys.executable, "-c", GROW])
    print(f"child exit {child.returncode}", flush=True)
time.sleep(86400)
""".replace("GROW", repr(GROW))


def workload(kubectl: Any, ns: str, name: str, mode: str) -> None:
    apply(kubectl, ns, deployment(name, [PROG, mode, str(START)], limit="512Mi", request="512Mi"))


def mp(kubectl: Any, ns: str, name: str, **actions: Any) -> None:
    body = {
        "apiVersion": "oomsight.io/v1alpha1",
        "kind": "MemoryPolicy",
        "metadata": {"name": name},
        "spec": {"selector": {"matchLabels": {"app": name}}, "actions": {"minConfidence": 0, **actions}},
    }
    apply(kubectl, ns, body)


def entry(kubectl: Any, ns: str, name: str) -> dict[str, Any]:
    status = kubectl.json("get", "memorypolicy", name, "-n", ns).get("status") or {}
    for wl in status.get("workloads") or []:
        if wl["kind"] == "Deployment" and wl["name"] == name:
            return dict((wl.get("containers") or [{}])[0])
    return {}


def limit_of(pod: dict[str, Any]) -> str | None:
    return (pod["spec"]["containers"][0].get("resources") or {}).get("limits", {}).get("memory")


def cgroup_limit(pod: dict[str, Any]) -> int | None:
    """The container's cgroup v1 memory.limit_in_bytes on this host (the kubelet's cgroupfs layout)."""
    cid = container_status(pod).get("containerID", "").partition("://")[2]
    if not cid:
        return None
    found = glob.glob(f"/sys/fs/cgroup/memory/kubepods*/**/pod{pod['metadata']['uid']}/{cid}", recursive=True)
    if not found:
        return None
    return int(Path(found[0], "memory.limit_in_bytes").read_text())


def events(kubectl: Any, ns: str, reason: str) -> list[dict[str, Any]]:
    items = kubectl.json("get", "events.v1.events.k8s.io", "-n", ns)["items"]
    return [e for e in items if e["reason"] == reason]


def resized_down(kubectl: Any, ns: str, name: str) -> dict[str, Any]:
    def down() -> dict[str, Any] | None:
        pod = the_pod(kubectl, ns, name)
        return pod if pod is not None and limit_of(pod) == "256Mi" else None

    return wait_for(
        down, DEADLINE, f"{name}'s Pod resized in place to 256Mi (512Mi, 50% per step)", every=2.0
    )


def test_in_place_resize_changes_the_cgroup_limit_without_a_restart(chart: Chart) -> None:
    kubectl = chart.kubectl
    ns = create_namespace(kubectl, "apply-down")
    workload(kubectl, ns, "shrink", "hold")
    mp(kubectl, ns, "shrink", apply="InPlace")
    pod = resized_down(kubectl, ns, "shrink")
    got = wait_for(
        lambda: (p := the_pod(kubectl, ns, "shrink")) and cgroup_limit(p) == 256 * MiB and p,
        DEADLINE,
        "the kubelet to write 256Mi into the container's memory.limit_in_bytes",
    )
    status = container_status(got)
    assert status["restartCount"] == 0, json.dumps(status)
    assert status["containerID"] == container_status(pod)["containerID"]  # the same container, resized
    # The program polls its limit every 0.2 s: the log line may come just after the cgroup file
    # changed (a CI run read the log first, 2026-12-05 02:36 UTC).
    wait_for(
        lambda: f"limit now {256 * MiB}" in kubectl.run("logs", "-n", ns, got["metadata"]["name"]).stdout,
        DEADLINE,
        "the container's own program to see its limit at 256Mi",
    )

    def allocated() -> bool:
        p = the_pod(kubectl, ns, "shrink")
        res = container_status(p).get("resources") or {} if p else {}
        return bool((res.get("limits") or {}).get("memory") == "256Mi")

    wait_for(allocated, DEADLINE, "the kubelet's containerStatuses[].resources at 256Mi")
    applied = wait_for(lambda: entry(kubectl, ns, "shrink").get("applied"), DEADLINE, "status applied")
    assert (applied["limit"], applied["previousLimit"], applied["how"]) == ("256Mi", "512Mi", "InPlace")
    ev = wait_for(lambda: events(kubectl, ns, "MemoryResized"), DEADLINE, "the Pod's MemoryResized Event")
    assert "MemoryPolicy shrink" in ev[0]["note"] and "512Mi → 256Mi" in ev[0]["note"], ev[0]["note"]


@pytest.mark.parametrize("mode", ["main", "child"])
def test_an_oom_kill_at_the_new_limit_rolls_it_back(chart: Chart, mode: str) -> None:
    kubectl = chart.kubectl
    ns = create_namespace(kubectl, f"apply-{mode}")
    name = f"tight-{mode}"
    workload(kubectl, ns, name, mode)
    mp(kubectl, ns, name, apply="InPlace")
    # The status, not the Pod: the kill, and the rollback, can follow the resize within a second.
    applied = wait_for(lambda: entry(kubectl, ns, name).get("applied"), DEADLINE, "status applied")
    assert (applied["limit"], applied["previousLimit"]) == ("256Mi", "512Mi"), applied
    rolled = wait_for(lambda: entry(kubectl, ns, name).get("rolledBack"), DEADLINE, "status rolledBack")
    assert (rolled["limit"], rolled["fromLimit"]) == ("512Mi", "256Mi"), rolled
    pod = wait_for(
        lambda: (
            (p := the_pod(kubectl, ns, name)) and limit_of(p) == "512Mi" and cgroup_limit(p) == START and p
        ),
        DEADLINE,
        "the previous 512Mi back in the Pod and in the container's cgroup",
    )
    ev = wait_for(lambda: events(kubectl, ns, "ResizeRolledBack"), DEADLINE, "ResizeRolledBack")
    assert ev[0]["type"] == "Warning" and "256Mi → 512Mi" in ev[0]["note"], ev[0]["note"]
    assert any("Rolled back" in e["note"] for e in events(kubectl, ns, "MemoryResized"))
    status = container_status(pod)
    if mode == "child":
        wait_for(
            lambda: "child exit -9" in kubectl.run("logs", "-n", ns, pod["metadata"]["name"]).stdout,
            DEADLINE,
            "the container's own program to see its child killed",
        )
        assert status["restartCount"] == 0, json.dumps(status)  # the kubelet never saw this kill
    else:
        assert (
            status["restartCount"] >= 1
            and (status.get("lastState") or {}).get("terminated", {}).get("reason") == "OOMKilled"
        ), json.dumps(status)
    # How long the rollback took after the kill (a figure, not an assert).
    kills = sorted(
        str(e["eventTime"]) for e in oomsight_events(kubectl, ns) if e["reason"].startswith("OOMKilled")
    )
    kill = kills[0] if kills else "?"
    print(f"{mode}: kill {kill}, rolled back {rolled['time']}, oom seen {rolled['oomTime']}")
    # Held: nothing applied again.
    assert "held after the rollback" in wait_for(
        lambda: entry(kubectl, ns, name).get("applyNote"), DEADLINE, "the hold note"
    )


def test_off_never_writes_a_pods_resources(chart: Chart) -> None:
    kubectl = chart.kubectl
    ns = create_namespace(kubectl, "apply-off")
    workload(kubectl, ns, "watch", "hold")
    mp(kubectl, ns, "watch")  # apply defaults to Off
    rec = wait_for(lambda: entry(kubectl, ns, "watch").get("recommendedLimit"), DEADLINE, "a recommendation")
    assert rec != "512Mi"
    time.sleep(15)  # a few more reconciles
    pod = the_pod(kubectl, ns, "watch")
    assert pod is not None and limit_of(pod) == "512Mi" and cgroup_limit(pod) == START
    assert container_status(pod)["restartCount"] == 0
    managers = {
        m["manager"] for m in pod["metadata"].get("managedFields") or [] if m.get("subresource") == "resize"
    }
    assert managers == set(), managers
    assert events(kubectl, ns, "MemoryResized") == []
    assert "applied" not in entry(kubectl, ns, "watch")


def test_an_invalid_apply_value_is_refused_naming_the_field(chart: Chart) -> None:
    kubectl = chart.kubectl
    ns = create_namespace(kubectl, "apply-bad")
    body = {
        "apiVersion": "oomsight.io/v1alpha1",
        "kind": "MemoryPolicy",
        "metadata": {"name": "bad", "namespace": ns},
        "spec": {"selector": {}, "actions": {"apply": "Sometimes"}},
    }
    proc = subprocess.run(
        [kubectl.binary, f"--kubeconfig={kubectl.kubeconfig}", "apply", "-f", "-"],
        input=json.dumps(body), capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "spec.actions.apply" in proc.stderr and "Unsupported value" in proc.stderr, proc.stderr
