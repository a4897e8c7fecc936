"""``spec.actions.apply`` against the real kube-apiserver: a real operator resizes Pods through the real
``resize`` subresource (served without a kubelet: its validation and RBAC are the API server's),
patches a Deployment's template, rolls back on an OOM kill, records Infeasible, survives a restart.

No kubelet runs here, so the Pods' status is written as a kubelet would (running containers with their
``resources``, which the API server requires before it accepts a resize); tests/node runs the same on a
real kubelet, where the container's cgroup limit changes."""

from __future__ import annotations

import json
import socket
import time
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from kube.crdkit import apply_crds
from kube.kubehelpers import Kubectl, container_status, running_pod_status, unique_name
from kube.opkit import (
    MI,
    OperatorProc,
    container_entry,
    create_deployment,
    create_node,
    create_pod,
    policy,
    profile,
    report_status,
    status_of,
    wait_for,
    write_report,
)
from oomsight.kube import crd

pytestmark = pytest.mark.kube

DEADLINE = 60.0


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def set_running(
    kubectl: Kubectl, ns: str, pod: Mapping[str, Any], *, conditions: list[dict[str, Any]] | None = None,
    oom_at: str | None = None,
) -> None:  # fmt: skip
    """The kubelet's status: running, with the container's allocated ``resources`` (and an OOM kill)."""
    live = kubectl.get("pod", pod["metadata"]["name"], ns)
    c = live["spec"]["containers"][0]
    last = None
    if oom_at:
        last = {"exitCode": 137, "reason": "OOMKilled", "startedAt": "2026-01-01T00:00:00Z",
                "finishedAt": oom_at, "containerID": "containerd://" + "ab" * 32}  # fmt: skip
    st = container_status(c["name"], restart_count=1 if oom_at else 0, last_terminated=last)
    st["resources"] = c["resources"]
    status = running_pod_status([st])
    status["conditions"] += conditions or []
    kubectl.run("patch", "pod", pod["metadata"]["name"], "-n", ns, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": status}))  # fmt: skip


def ready_node(kubectl: Kubectl, name: str) -> None:
    """A Node with allocatable memory: the API server refuses a resize beyond it (403)."""
    create_node(kubectl, name)
    cap = {"cpu": "4", "memory": "8Gi", "pods": "110"}
    kubectl.run("patch", "node", name, "--subresource=status", "--type=merge",
                "-p", json.dumps({"status": {"capacity": cap, "allocatable": cap}}))  # fmt: skip


def apply_policy(name: str, labels: Mapping[str, str], **actions: Any) -> dict[str, Any]:
    body = policy(name, {"matchLabels": dict(labels)}, annotate=False)
    body["spec"]["actions"].update(actions)
    return body


def memory(obj: Mapping[str, Any]) -> tuple[str | None, str | None]:
    res = obj["spec"]["containers"][0].get("resources") or {}
    return (res.get("requests") or {}).get("memory"), (res.get("limits") or {}).get("memory")


def entry_of(
    kubectl: Kubectl, ns: str, policy: str, kind: str = "Deployment", name: str = "web"
) -> dict[str, Any]:
    return container_entry(status_of(kubectl, ns, policy), kind, name)


def events(kubectl: Kubectl, ns: str, reason: str, regarding: str) -> list[dict[str, Any]]:
    items = kubectl.json("get", "events.v1.events.k8s.io", "-n", ns)["items"]
    return [e for e in items if e["reason"] == reason and e["regarding"]["name"] == regarding]


@pytest.fixture
def scene(kubectl: Kubectl, namespace: str) -> Iterator[dict[str, Any]]:
    """A Deployment's Pod at 512Mi whose agent profile peaks at ~40 MiB, on a Node with a report."""
    apply_crds(kubectl)
    node = unique_name("apply-node", max_length=40)
    ready_node(kubectl, node)
    labels = {"app": "web"}
    _, rs = create_deployment(kubectl, namespace, "web", labels)
    pod = create_pod(kubectl, namespace, "web-1", node, {**labels, "pod-template-hash": "7d9f8c6b5"}, rs,
                     request="512Mi", limit="512Mi")  # fmt: skip
    set_running(kubectl, namespace, pod)
    prof = profile(pod, "app", [38 * MI, 40 * MI, 41 * MI, 40 * MI], limit=512 * MI, request=512 * MI)
    write_report(kubectl, node, report_status([prof]))
    try:
        yield {"node": node, "pod": pod, "labels": labels, "profile": prof}
    finally:
        kubectl.run("delete", "nodememoryreport", node, "--wait=false", check=False)
        kubectl.run("delete", "node", node, "--wait=false", check=False)


def start(
    kubeconfig: Path, ns: str, tmp_path: Path, interval: str = "1h", name: str = "op", port: int | None = None
) -> OperatorProc:
    extra = ["--standalone", "--resize-interval", interval]
    if port is not None:
        extra += ["--metrics-port", str(port)]
    return OperatorProc(kubeconfig, ns, tmp_path / f"{name}.log", name, extra).start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_in_place_resize_then_rollback_on_oom_then_held_across_a_restart(
    kubeconfig: Path, kubectl: Kubectl, namespace: str, scene: dict[str, Any], tmp_path: Path
) -> None:
    ns = namespace
    kubectl.run("apply", "-n", ns, "-f", "-", stdin=json.dumps(
        apply_policy("shrink", scene["labels"], apply="InPlace", minConfidence=0)))  # fmt: skip
    port = free_port()
    op = start(kubeconfig, ns, tmp_path, port=port)
    try:
        wait_for(lambda: memory(kubectl.get("pod", "web-1", ns)) == ("256Mi", "256Mi"), DEADLINE,
                 "the Pod resized 512Mi → 256Mi (50% per step)")  # fmt: skip
        wait_for(lambda: entry_of(kubectl, ns, "shrink").get("applied"), DEADLINE, "status applied")
        entry = entry_of(kubectl, ns, "shrink")
        assert entry["applied"]["how"] == "InPlace"
        assert (entry["applied"]["limit"], entry["applied"]["previousLimit"]) == ("256Mi", "512Mi")
        ev = wait_for(
            lambda: events(kubectl, ns, "MemoryResized", "web-1"), DEADLINE, "the Pod's MemoryResized"
        )
        assert "MemoryPolicy shrink" in ev[0]["note"] and "512Mi → 256Mi" in ev[0]["note"], ev[0]["note"]
        assert ev[0]["regarding"]["fieldPath"] == "spec.containers{app}"
        assert wait_for(
            lambda: events(kubectl, ns, "ResourcesApplied", "shrink"), DEADLINE, "ResourcesApplied"
        )
        # The Deployment's template is not touched by InPlace.
        assert memory(kubectl.get("deployment", "web", ns)["spec"]["template"]) == (None, None)

        # The kubelet reports an OOM kill after the change: the previous values come back at once.
        set_running(kubectl, ns, scene["pod"], oom_at=_now())
        wait_for(lambda: memory(kubectl.get("pod", "web-1", ns)) == ("512Mi", "512Mi"), DEADLINE,
                 "the rollback to 512Mi")  # fmt: skip
        rolled = wait_for(lambda: container_entry(status_of(kubectl, ns, "shrink"), "Deployment", "web")
                          .get("rolledBack"), DEADLINE, "status rolledBack")  # fmt: skip
        assert (rolled["limit"], rolled["fromLimit"]) == ("512Mi", "256Mi")
        ev = wait_for(lambda: events(kubectl, ns, "ResizeRolledBack", "shrink"), DEADLINE, "ResizeRolledBack")
        assert ev[0]["type"] == "Warning" and "256Mi → 512Mi" in ev[0]["note"], ev[0]["note"]
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        assert 'oomsight_operator_writes_total{kind="resize"} 2.0' in metrics, metrics
        assert "oomsight_operator_rollbacks_total 1.0" in metrics, metrics
    finally:
        op.stop()
    # A restarted operator reads the record back from the status: held, no new change.
    rv = kubectl.get("pod", "web-1", ns)["metadata"]["resourceVersion"]
    op2 = start(kubeconfig, ns, tmp_path, interval="1s", name="op2")
    try:
        wait_for(lambda: "reconciled MemoryPolicy" in op2.log() or "held after the rollback" in json.dumps(
            status_of(kubectl, ns, "shrink")), DEADLINE, "a reconcile by the restarted operator")  # fmt: skip
        time.sleep(3)  # a few 1 s intervals: nothing may be resized again
        entry = container_entry(status_of(kubectl, ns, "shrink"), "Deployment", "web")
        assert "held after the rollback" in entry.get("applyNote", ""), entry
        assert kubectl.get("pod", "web-1", ns)["metadata"]["resourceVersion"] == rv
    finally:
        op2.stop()


def test_off_never_writes_a_pods_resources(
    kubeconfig: Path, kubectl: Kubectl, namespace: str, scene: dict[str, Any], tmp_path: Path
) -> None:
    ns = namespace
    kubectl.run("apply", "-n", ns, "-f", "-", stdin=json.dumps(
        apply_policy("watch", scene["labels"], minConfidence=0)))  # fmt: skip
    op = start(kubeconfig, ns, tmp_path, interval="1s")
    try:
        entry = wait_for(lambda: container_entry(status_of(kubectl, ns, "watch"), "Deployment", "web")
                         .get("recommendedLimit") and container_entry(status_of(kubectl, ns, "watch"),
                         "Deployment", "web"), DEADLINE, "a recommendation")  # fmt: skip
        assert entry["recommendedLimit"] != "512Mi"
        time.sleep(3)
        pod = kubectl.get("pod", "web-1", ns)
        assert memory(pod) == ("512Mi", "512Mi")
        managers = {m["manager"] for m in pod["metadata"].get("managedFields") or []}
        assert not any(m.startswith("oomsight") for m in managers), managers
        assert "applied" not in entry and "applyNote" not in entry
        assert not events(kubectl, ns, "MemoryResized", "web-1")
        assert kubectl.get(crd.MEMORY_POLICY_PLURAL, "watch", ns)["spec"]["actions"]["apply"] == "Off"
    finally:
        op.stop()


def test_restart_container_policy_is_left_alone_unless_restarts_are_allowed(
    kubeconfig: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    ns = namespace
    apply_crds(kubectl)
    node = unique_name("apply-rc", max_length=40)
    ready_node(kubectl, node)
    pod = kubectl.create({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "jvm", "namespace": ns, "labels": {"app": "jvm"}},
        "spec": {"nodeName": node, "containers": [{
            "name": "app", "image": "registry.k8s.io/pause:3.10",
            "resources": {"requests": {"memory": "512Mi"}, "limits": {"memory": "512Mi"}},
            "resizePolicy": [{"resourceName": "memory", "restartPolicy": "RestartContainer"}]}]},
    })  # fmt: skip
    set_running(kubectl, ns, pod)
    write_report(kubectl, node, report_status([profile(pod, "app", [40 * MI, 41 * MI], limit=512 * MI)]))
    kubectl.run("apply", "-n", ns, "-f", "-", stdin=json.dumps(
        apply_policy("jvm", {"app": "jvm"}, apply="InPlace", minConfidence=0)))  # fmt: skip
    op = start(kubeconfig, ns, tmp_path)
    try:
        entry = wait_for(lambda: entry_of(kubectl, ns, "jvm", "Pod", "jvm").get("applyNote"),
                         DEADLINE, "the apply note")  # fmt: skip
        assert "RestartContainer" in entry
        assert memory(kubectl.get("pod", "jvm", ns)) == ("512Mi", "512Mi")
        kubectl.run("patch", crd.MEMORY_POLICY_PLURAL, "jvm", "-n", ns, "--type=merge",
                    "-p", json.dumps({"spec": {"actions": {"allowRestarts": True}}}))  # fmt: skip
        wait_for(lambda: memory(kubectl.get("pod", "jvm", ns)) == ("256Mi", "256Mi"), DEADLINE,
                 "the resize once restarts are allowed")  # fmt: skip
    finally:
        op.stop()
        kubectl.run("delete", "nodememoryreport", node, "--wait=false", check=False)


def test_infeasible_is_recorded_and_not_retried(
    kubeconfig: Path, kubectl: Kubectl, namespace: str, scene: dict[str, Any], tmp_path: Path
) -> None:
    ns = namespace
    kubectl.run("apply", "-n", ns, "-f", "-", stdin=json.dumps(
        apply_policy("tight", scene["labels"], apply="InPlace", minConfidence=0)))  # fmt: skip
    op = start(kubeconfig, ns, tmp_path, interval="1s")
    try:
        wait_for(
            lambda: memory(kubectl.get("pod", "web-1", ns)) == ("256Mi", "256Mi"), DEADLINE, "the first step"
        )
        message = "Node didn't have enough capacity: memory, requested: 268435456, capacity: 1"
        pending = {"type": "PodResizePending", "status": "True", "reason": "Infeasible", "message": message,
                   "lastTransitionTime": _now()}  # fmt: skip
        set_running(kubectl, ns, scene["pod"], conditions=[pending])
        entry = wait_for(lambda: container_entry(status_of(kubectl, ns, "tight"), "Deployment", "web")
                         .get("resize"), DEADLINE, "status resize Infeasible")  # fmt: skip
        assert entry["state"] == "Infeasible" and "enough capacity" in entry["message"]
        # Interval 1 s: without the rule the next step (→ 128Mi) would follow within seconds.
        time.sleep(4)
        assert memory(kubectl.get("pod", "web-1", ns)) == ("256Mi", "256Mi")
        note = container_entry(status_of(kubectl, ns, "tight"), "Deployment", "web").get("applyNote", "")
        assert "Infeasible: not retried" in note, note
    finally:
        op.stop()


def test_recreate_patches_the_deployment_template(
    kubeconfig: Path, kubectl: Kubectl, namespace: str, scene: dict[str, Any], tmp_path: Path
) -> None:
    ns = namespace
    kubectl.run("apply", "-n", ns, "-f", "-", stdin=json.dumps(
        apply_policy("roll", scene["labels"], apply="Recreate", minConfidence=0,
                     maxChangePercent=25)))  # fmt: skip
    op = start(kubeconfig, ns, tmp_path)
    try:
        tpl = wait_for(lambda: memory(kubectl.get("deployment", "web", ns)["spec"]["template"])[1],
                       DEADLINE, "the template patch")  # fmt: skip
        assert memory(kubectl.get("deployment", "web", ns)["spec"]["template"]) == ("384Mi", "384Mi"), tpl
        assert memory(kubectl.get("pod", "web-1", ns)) == ("512Mi", "512Mi")  # the rollout replaces Pods
        entry = wait_for(lambda: container_entry(status_of(kubectl, ns, "roll"), "Deployment", "web")
                         .get("applied"), DEADLINE, "status applied")  # fmt: skip
        assert entry["how"] == "Recreate"
    finally:
        op.stop()


def test_the_agents_child_kill_event_rolls_back_without_the_kubelet(
    kubeconfig: Path, kubectl: Kubectl, namespace: str, scene: dict[str, Any], tmp_path: Path
) -> None:
    """A killed child: the kubelet reports nothing and the report comes a minute later; the agent's
    Event (as the agent posts it) is enough."""
    ns = namespace
    kubectl.run("apply", "-n", ns, "-f", "-", stdin=json.dumps(
        apply_policy("child", scene["labels"], apply="InPlace", minConfidence=0)))  # fmt: skip
    op = start(kubeconfig, ns, tmp_path)
    try:
        wait_for(
            lambda: memory(kubectl.get("pod", "web-1", ns)) == ("256Mi", "256Mi"), DEADLINE, "the resize"
        )
        wait_for(lambda: entry_of(kubectl, ns, "child").get("applied"), DEADLINE, "status applied")
        pod = scene["pod"]
        now = time.time()
        kubectl.create({
            "apiVersion": "events.k8s.io/v1", "kind": "Event",
            "metadata": {"name": f"web-1.oom-6a5b1c2d-{int(now)}", "namespace": ns},
            "eventTime": time.strftime("%Y-%m-%dT%H:%M:%S.000000Z", time.gmtime(now)),
            "reportingController": "oomsight.io/agent", "reportingInstance": scene["node"],
            "action": "OOMKill", "reason": "OOMKilledChild", "type": "Warning",
            "note": "python3 (pid 77), a child process of container app, was OOM-killed; it kept running",
            "regarding": {"apiVersion": "v1", "kind": "Pod", "namespace": ns, "name": "web-1",
                          "uid": pod["metadata"]["uid"], "fieldPath": "spec.containers{app}"},
        })  # fmt: skip
        wait_for(lambda: memory(kubectl.get("pod", "web-1", ns)) == ("512Mi", "512Mi"), DEADLINE,
                 "the rollback on the agent's Event alone")  # fmt: skip
        rolled = wait_for(lambda: entry_of(kubectl, ns, "child").get("rolledBack"), DEADLINE, "rolledBack")
        assert rolled["fromLimit"] == "256Mi"
        assert not kubectl.get("pod", "web-1", ns)["status"]["containerStatuses"][0]["lastState"]
    finally:
        op.stop()
