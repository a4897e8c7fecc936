"""``oomsight operator`` as a real process against the real kube-apiserver (hack/envtest).

Scenes are built the way the cluster would hold them without a controller-manager (see opkit):
Deployment → ReplicaSet → Pods, a StatefulSet's Pods, a bare Pod, NodeMemoryReports written as the agent
writes them, the kubelet's ``lastState.terminated.reason=OOMKilled`` written through pods/status.
"""

from __future__ import annotations

import contextlib
import json
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kube.crdkit import apply_crds
from kube.kubehelpers import Kubectl, unique_name
from kube.opkit import (
    KMEM_FINDING,
    MI,
    OperatorProc,
    condition,
    container_entry,
    create_deployment,
    create_node,
    create_peering,
    create_pod,
    create_statefulset,
    incident,
    policy,
    profile,
    report_status,
    set_oom_killed,
    status_of,
    wait_for,
    write_report,
)
from oomsight.core.policy import parse_quantity
from oomsight.kube import crd

TIMEOUT = 45.0


@pytest.fixture
def scene(kubectl: Kubectl, namespace: str) -> Iterator[dict[str, Any]]:
    apply_crds(kubectl)
    create_peering(kubectl, namespace)
    node = unique_name("node-op")
    create_node(kubectl, node)
    try:
        yield {"node": node}
    finally:
        kubectl.run("delete", crd.NODE_REPORT_PLURAL, node, "--ignore-not-found", "--wait=false", check=False)
        kubectl.run("delete", "node", node, "--ignore-not-found", "--wait=false", check=False)


@pytest.fixture
def operators(kubeconfig: Path, namespace: str, tmp_path: Path) -> Iterator[list[OperatorProc]]:
    procs: list[OperatorProc] = []
    yield procs
    for p in procs:
        p.stop()


def start(
    procs: list[OperatorProc], kubeconfig: Path, ns: str, tmp_path: Path, name: str = "op-a", *extra: str
) -> OperatorProc:
    p = OperatorProc(
        kubeconfig, ns, tmp_path / f"{name}.log", name, ["--peering", "oomsight", *extra]
    ).start()
    procs.append(p)
    return p


def pod_annotations(kubectl: Kubectl, ns: str, name: str) -> dict[str, str]:
    return kubectl.get("pod", name, ns)["metadata"].get("annotations") or {}


def three_workloads(kubectl: Kubectl, ns: str, node: str) -> dict[str, dict[str, Any]]:
    """Deployment web (2 pods via a ReplicaSet), StatefulSet db (2 pods), bare Pod tool, 1 unselected pod."""
    pods: dict[str, dict[str, Any]] = {}
    _, rs = create_deployment(kubectl, ns, "web", {"app": "web"})
    for i in range(2):
        pods[f"web-{i}"] = create_pod(
            kubectl,
            ns,
            f"web-7d9f8c6b5-{i}",
            node,
            {"app": "web", "team": "shop", "pod-template-hash": "7d9f8c6b5"},
            rs,
        )
    sts = create_statefulset(kubectl, ns, "db", {"app": "db"})
    for i in range(2):
        pods[f"db-{i}"] = create_pod(
            kubectl, ns, f"db-{i}", node, {"app": "db", "team": "shop"}, sts, request="512Mi", limit="1Gi"
        )
    pods["tool"] = create_pod(kubectl, ns, "tool", node, {"app": "tool", "team": "shop"})
    pods["other"] = create_pod(kubectl, ns, "other", node, {"app": "other", "team": "billing"})
    return pods


def test_status_and_annotations_for_three_workloads(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    scene: dict[str, Any],
    operators: list[OperatorProc],
    tmp_path: Path,
) -> None:
    ns, node = namespace, scene["node"]
    pods = three_workloads(kubectl, ns, node)
    containers = [
        profile(pods["web-0"], "app", [150 * MI, 180 * MI, 200 * MI]),
        profile(pods["web-1"], "app", [160 * MI, 170 * MI, 190 * MI]),
        profile(pods["db-0"], "app", [600 * MI, 700 * MI], limit=1 << 30, request=512 * MI),
        profile(pods["db-1"], "app", [650 * MI, 720 * MI], limit=1 << 30, request=512 * MI),
        profile(pods["tool"], "app", [40 * MI]),
        profile(pods["other"], "app", [90 * MI]),
    ]
    write_report(kubectl, node, report_status(containers))
    kubectl.run(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        stdin=json.dumps(
            policy(
                "shop",
                {
                    "matchLabels": {"team": "shop"},
                    "matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["batch"]}],
                },
            )
        ),
    )
    op = start(operators, kubeconfig, ns, tmp_path)

    def done() -> dict[str, Any] | None:
        st = status_of(kubectl, ns, "shop")
        ok = st.get("podsObserved") == 5 and all(
            container_entry(st, k, n).get("recommendedLimit")
            for k, n in (("Deployment", "web"), ("StatefulSet", "db"), ("Pod", "tool"))
        )
        return st if ok else None

    st = wait_for(done, TIMEOUT, "the policy status with 3 workloads")
    assert st["mode"] == "agents"
    assert condition(st, "Ready")["status"] == "True"
    assert condition(st, "Invalid")["status"] == "False"
    assert condition(st, "Degraded")["status"] == "False"
    by_kind = {(w["kind"], w["name"]): w for w in st["workloads"]}
    assert set(by_kind) == {("Deployment", "web"), ("StatefulSet", "db"), ("Pod", "tool")}, by_kind.keys()
    assert by_kind[("Deployment", "web")]["replicas"] == 2
    assert by_kind[("StatefulSet", "db")]["replicas"] == 2
    web = container_entry(st, "Deployment", "web")
    assert web["currentRequest"] == "128Mi" and web["currentLimit"] == "256Mi"
    # The max of both replicas' peaks is 200Mi; p50 sits between the replicas' peaks.
    assert 199 * MI <= parse_quantity(web["workingSet"]["max"]) <= 205 * MI, web
    assert parse_quantity(web["recommendedLimit"]) >= 200 * MI, web
    assert parse_quantity(web["recommendedRequest"]) <= parse_quantity(web["recommendedLimit"])
    assert 0 <= web["confidence"] < 0.05 and web["reason"]  # 10 minutes of an 8-day window: young
    db = container_entry(st, "StatefulSet", "db")
    assert parse_quantity(db["recommendedLimit"]) >= 720 * MI, db
    assert st["oomKills24h"] == 0

    # Annotations on every selected pod, none on the unselected one.
    ann = wait_for(
        lambda: pod_annotations(kubectl, ns, "web-7d9f8c6b5-0").get(crd.ANNOTATION_RECOMMENDATION),
        TIMEOUT,
        "the recommendation annotation",
    )
    value = json.loads(ann)
    assert value["policy"] == "shop"
    assert value["containers"]["app"]["limit"] == web["recommendedLimit"]
    assert value["containers"]["app"]["request"] == web["recommendedRequest"]
    for name in ("web-7d9f8c6b5-1", "db-0", "db-1", "tool"):
        wait_for(
            lambda n=name: crd.ANNOTATION_RECOMMENDATION in pod_annotations(kubectl, ns, n), TIMEOUT, name
        )
    assert crd.ANNOTATION_RECOMMENDATION not in pod_annotations(kubectl, ns, "other")
    assert crd.ANNOTATION_LAST_OOM not in pod_annotations(kubectl, ns, "tool")

    # Patched once: the pod's resourceVersion stays put across further reconciles (nothing changed).
    rv = kubectl.get("pod", "tool", ns)["metadata"]["resourceVersion"]
    kubectl.run("label", "pod", "other", "-n", ns, "poke=1")  # an unrelated change in the namespace
    wait_for(lambda: "reconciled" in op.log(), 5, "a reconcile in the log")
    import time

    time.sleep(2)
    assert kubectl.get("pod", "tool", ns)["metadata"]["resourceVersion"] == rv
    assert op.alive(), op.log()[-2000:]


def test_oom_history_raises_the_recommendation(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    scene: dict[str, Any],
    operators: list[OperatorProc],
    tmp_path: Path,
) -> None:
    ns, node = namespace, scene["node"]
    _, rs = create_deployment(kubectl, ns, "api", {"app": "api"})
    p0 = create_pod(kubectl, ns, "api-7d9f8c6b5-a", node, {"app": "api"}, rs)
    p1 = create_pod(kubectl, ns, "api-7d9f8c6b5-b", node, {"app": "api"}, rs)
    profiles = [profile(p0, "app", [100 * MI, 120 * MI]), profile(p1, "app", [110 * MI, 118 * MI])]
    write_report(kubectl, node, report_status(profiles))
    kubectl.run(
        "apply", "-n", ns, "-f", "-", stdin=json.dumps(policy("api", {"matchLabels": {"app": "api"}}))
    )
    start(operators, kubeconfig, ns, tmp_path)
    before = wait_for(
        lambda: container_entry(status_of(kubectl, ns, "api"), "Deployment", "api").get("recommendedLimit"),
        TIMEOUT,
        "a first recommendation",
    )
    assert parse_quantity(before) < 256 * MI

    # The agent reports an OOM kill of p0 at its 256Mi limit: censored demand, the limit must go above it.
    import time

    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    write_report(kubectl, node, report_status(profiles, incidents=[incident(p0, "app", when, 256 * MI, 901)]))

    def raised() -> dict[str, Any] | None:
        c = container_entry(status_of(kubectl, ns, "api"), "Deployment", "api")
        return c if c.get("oomKills") == 1 and parse_quantity(c["recommendedLimit"]) > 256 * MI else None

    c = wait_for(raised, TIMEOUT, "the OOM to raise the limit")
    assert parse_quantity(c["recommendedLimit"]) >= int(256 * MI * 1.2), c  # oomBumpRatio 1.2 by default
    assert c["lastOOM"] == when
    assert "OOM" in c["reason"]
    st = status_of(kubectl, ns, "api")
    assert st["oomKills24h"] == 1 and st["atRisk"] >= 1
    last = json.loads(
        wait_for(
            lambda: pod_annotations(kubectl, ns, "api-7d9f8c6b5-a").get(crd.ANNOTATION_LAST_OOM),
            TIMEOUT,
            "the last-oom annotation",
        )
    )
    assert last["time"] == when and last["victim"] == "java" and last["scope"] == "container"

    # A material change is an Event on the policy (events.k8s.io, reporting controller oomsight.io/operator).
    def change_events() -> list[dict[str, Any]]:
        items = kubectl.json("get", "events.events.k8s.io", "-n", ns)["items"]
        return [
            e for e in items if e.get("reason") == "RecommendationChanged" and e["regarding"]["name"] == "api"
        ]

    evs = wait_for(change_events, TIMEOUT, "a RecommendationChanged event")
    assert len(evs) == 1, evs
    assert evs[0]["reportingController"] == crd.OPERATOR_CONTROLLER
    assert "Deployment/api" in evs[0]["note"]

    # The same OOM seen again by the kubelet (lastState OOMKilled, same time) is not a second kill.
    set_oom_killed(kubectl, ns, p0, "app", when)
    time.sleep(3)
    c = container_entry(status_of(kubectl, ns, "api"), "Deployment", "api")
    assert c["oomKills"] == 1, c
    assert len(change_events()) == 1


def test_kubelet_only_mode_still_sees_oom_kills(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    scene: dict[str, Any],
    operators: list[OperatorProc],
    tmp_path: Path,
) -> None:
    ns, node = namespace, scene["node"]  # no NodeMemoryReport for this node
    sts = create_statefulset(kubectl, ns, "cache", {"app": "cache"})
    p = create_pod(kubectl, ns, "cache-0", node, {"app": "cache"}, sts, request="300Mi", limit="300Mi")
    kubectl.run(
        "apply", "-n", ns, "-f", "-", stdin=json.dumps(policy("cache", {"matchLabels": {"app": "cache"}}))
    )
    start(operators, kubeconfig, ns, tmp_path)
    st = wait_for(lambda: (s := status_of(kubectl, ns, "cache")).get("mode") and s, TIMEOUT, "a status")
    assert st["mode"] == "kubelet-only"
    deg = condition(st, "Degraded")
    assert deg["status"] == "True" and deg["reason"] == "KubeletOnly"
    assert "recommendedLimit" not in container_entry(st, "StatefulSet", "cache")

    import time

    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 60))
    set_oom_killed(kubectl, ns, p, "app", when)

    def bumped() -> dict[str, Any] | None:
        c = container_entry(status_of(kubectl, ns, "cache"), "StatefulSet", "cache")
        return c if c.get("oomKills") == 1 and c.get("recommendedLimit") else None

    c = wait_for(bumped, TIMEOUT, "the kubelet's OOMKilled to count")
    assert parse_quantity(c["recommendedLimit"]) >= int(300 * MI * 1.2)
    assert c["lastOOM"] == when
    assert status_of(kubectl, ns, "cache")["mode"] == "kubelet-only"


def test_unsatisfiable_policies_get_a_condition(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    scene: dict[str, Any],
    operators: list[OperatorProc],
    tmp_path: Path,
) -> None:
    ns, node = namespace, scene["node"]
    big = create_pod(kubectl, ns, "big", node, {"app": "big"}, request="1Gi", limit="2Gi")
    write_report(kubectl, node, report_status([profile(big, "app", [900 * MI, 1200 * MI], limit=2 << 30)]))
    kubectl.run(
        "apply", "-n", ns, "-f", "-", stdin=json.dumps(policy("nobody", {"matchLabels": {"app": "ghost"}}))
    )
    kubectl.run(
        "apply",
        "-n",
        ns,
        "-f",
        "-",
        stdin=json.dumps(policy("capped", {"matchLabels": {"app": "big"}}, maximum="512Mi")),
    )
    start(operators, kubeconfig, ns, tmp_path)

    st = wait_for(lambda: (s := status_of(kubectl, ns, "nobody")).get("conditions") and s, TIMEOUT, "nobody")
    inv = condition(st, "Invalid")
    assert inv["status"] == "True" and inv["reason"] == "SelectorMatchesNothing", inv
    assert ns in inv["message"]
    assert condition(st, "Ready")["status"] == "False"
    assert st["podsObserved"] == 0

    st = wait_for(
        lambda: (
            condition(status_of(kubectl, ns, "capped"), "Invalid").get("status") == "True"
            and status_of(kubectl, ns, "capped")
        ),
        TIMEOUT,
        "capped",
    )
    inv = condition(st, "Invalid")
    assert inv["reason"] == "MaximumBelowObservedPeak", inv
    assert "Pod/big" in inv["message"] and "512Mi" in inv["message"]
    assert container_entry(st, "Pod", "big")["recommendedLimit"] == "512Mi"

    # Fixing the spec clears it (a spec change re-selects and reconciles at once).
    kubectl.run(
        "patch",
        crd.MEMORY_POLICY_PLURAL,
        "capped",
        "-n",
        ns,
        "--type=merge",
        "-p",
        json.dumps({"spec": {"recommendation": {"maximum": "4Gi"}}}),
    )
    wait_for(
        lambda: condition(status_of(kubectl, ns, "capped"), "Invalid").get("status") == "False",
        TIMEOUT,
        "the condition to clear",
    )
    assert condition(status_of(kubectl, ns, "capped"), "Ready")["status"] == "True"

    # Deleting a policy is not blocked by the operator's finalizer (kopf's, for the policy's daemon).
    assert (
        "oomsight.io/operator"
        in kubectl.get(crd.MEMORY_POLICY_PLURAL, "nobody", ns)["metadata"]["finalizers"]
    )
    kubectl.run("delete", crd.MEMORY_POLICY_PLURAL, "nobody", "-n", ns, "--timeout=30s")
    assert kubectl.run("get", crd.MEMORY_POLICY_PLURAL, "nobody", "-n", ns, check=False).returncode != 0


def _status_managers(kubectl: Kubectl, ns: str, name: str) -> set[str]:
    obj = kubectl.json("get", crd.MEMORY_POLICY_PLURAL, name, "-n", ns, "--show-managed-fields")
    return {
        m["manager"] for m in obj["metadata"].get("managedFields") or [] if m.get("subresource") == "status"
    }


def test_two_replicas_only_one_acts_then_the_other_takes_over(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    scene: dict[str, Any],
    operators: list[OperatorProc],
    tmp_path: Path,
) -> None:
    ns, node = namespace, scene["node"]
    p = create_pod(kubectl, ns, "solo", node, {"app": "solo"})
    write_report(kubectl, node, report_status([profile(p, "app", [100 * MI])]))
    a = start(operators, kubeconfig, ns, tmp_path, "op-a", "--priority", "200", "--peering-lifetime", "10")
    b = start(operators, kubeconfig, ns, tmp_path, "op-b", "--priority", "100", "--peering-lifetime", "10")

    # Both replicas are in the peering object (kopf writes each one's priority there); op-b, lower,
    # stays paused: kopf keeps a replica paused from start-up until it is the highest live peer.
    def peers() -> dict[str, Any]:
        return kubectl.get("kopfpeerings.kopf.dev", "oomsight", ns).get("status") or {}

    wait_for(lambda: sorted(p["priority"] for p in peers().values()) == [100, 200], TIMEOUT, "both peers")
    kubectl.run(
        "apply", "-n", ns, "-f", "-", stdin=json.dumps(policy("ha", {"matchLabels": {"app": "solo"}}))
    )
    wait_for(lambda: status_of(kubectl, ns, "ha").get("podsObserved") == 1, TIMEOUT, "op-a's status")
    import time

    time.sleep(3)
    assert _status_managers(kubectl, ns, "ha") == {"oomsight-operator-op-a"}
    assert "reconciled MemoryPolicy" in a.log()
    assert "reconciled MemoryPolicy" not in b.log(), b.log()[-3000:]

    # The leader goes away; the standby takes over and acts on what changes next.
    a.stop(signal.SIGTERM)
    p2 = create_pod(kubectl, ns, "solo-2", node, {"app": "solo"})
    write_report(kubectl, node, report_status([profile(p, "app", [100 * MI]), profile(p2, "app", [80 * MI])]))
    wait_for(lambda: status_of(kubectl, ns, "ha").get("podsObserved") == 2, TIMEOUT + 30, "op-b to take over")
    assert "oomsight-operator-op-b" in _status_managers(kubectl, ns, "ha")
    assert "reconciled MemoryPolicy" in b.log()
    assert b.alive()


def test_node_flags_set_then_removed(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    scene: dict[str, Any],
    operators: list[OperatorProc],
    tmp_path: Path,
) -> None:
    node = scene["node"]
    start(operators, kubeconfig, namespace, tmp_path)
    write_report(kubectl, node, report_status(findings=[KMEM_FINDING], kmem="enabled", cgroup="v1"))

    def flagged() -> dict[str, Any] | None:
        n = kubectl.get("node", node)
        cond = next(
            (c for c in n.get("status", {}).get("conditions") or [] if c["type"] == crd.NODE_CONDITION_TYPE),
            None,
        )
        return (
            n
            if cond and cond["status"] == "True" and crd.LABEL_KMEM_ACCOUNTING in n["metadata"]["labels"]
            else None
        )

    n = wait_for(flagged, TIMEOUT, "the node condition and labels")
    cond = next(c for c in n["status"]["conditions"] if c["type"] == crd.NODE_CONDITION_TYPE)
    assert cond["reason"] == "KmemLeakKernel"
    assert "kmem-leak-kernel" in cond["message"] and "nokmem" in cond["message"]
    assert n["metadata"]["labels"][crd.LABEL_KMEM_ACCOUNTING] == "enabled"
    assert n["metadata"]["labels"][crd.LABEL_CGROUP_VERSION] == "v1"

    def node_events(reason: str) -> list[dict[str, Any]]:
        items = kubectl.json("get", "events.events.k8s.io", "-n", "default")["items"]
        return [e for e in items if e["regarding"].get("name") == node and e.get("reason") == reason]

    ev = wait_for(lambda: node_events("NodeMemoryRiskDetected"), TIMEOUT, "the node event")
    assert len(ev) == 1 and ev[0]["type"] == "Warning"

    # The node is fixed (booted with nokmem): the report no longer has the finding.
    write_report(kubectl, node, report_status(findings=[], kmem="disabled", cgroup="v1"))

    def cleared() -> dict[str, Any] | None:
        n = kubectl.get("node", node)
        cond = next(c for c in n["status"]["conditions"] if c["type"] == crd.NODE_CONDITION_TYPE)
        labels = n["metadata"]["labels"]
        gone = crd.LABEL_KMEM_ACCOUNTING not in labels and crd.LABEL_CGROUP_VERSION not in labels
        return n if cond["status"] == "False" and gone else None

    n = wait_for(cleared, TIMEOUT, "the flags to clear")
    assert n["metadata"]["labels"]["t"] == "op"  # other labels untouched
    assert wait_for(lambda: node_events("NodeMemoryRiskCleared"), TIMEOUT, "the clear event")
    assert len(node_events("NodeMemoryRiskDetected")) == 1


def test_a_restart_rebuilds_from_the_crs_and_loses_nothing(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    scene: dict[str, Any],
    operators: list[OperatorProc],
    tmp_path: Path,
    promtool_bin: Path,
) -> None:
    import time
    import urllib.request

    from kube.agentkit import free_port

    ns, node = namespace, scene["node"]
    _, rs = create_deployment(kubectl, ns, "pay", {"app": "pay"})
    p0 = create_pod(kubectl, ns, "pay-7d9f8c6b5-a", node, {"app": "pay"}, rs)
    p1 = create_pod(kubectl, ns, "pay-7d9f8c6b5-b", node, {"app": "pay"}, rs)
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() - 120))
    profiles = [profile(p0, "app", [200 * MI]), profile(p1, "app", [210 * MI])]
    write_report(kubectl, node, report_status(profiles, incidents=[incident(p0, "app", when, 256 * MI, 77)]))
    kubectl.run(
        "apply", "-n", ns, "-f", "-", stdin=json.dumps(policy("pay", {"matchLabels": {"app": "pay"}}))
    )
    port = free_port()
    op = start(operators, kubeconfig, ns, tmp_path, "op-a", "--metrics-port", str(port))

    def with_oom() -> dict[str, Any] | None:
        c = container_entry(status_of(kubectl, ns, "pay"), "Deployment", "pay")
        return c if c.get("oomKills") == 1 else None

    before = wait_for(with_oom, TIMEOUT, "the OOM in the status")
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'oomsight_operator_writes_total{kind="status"}' in metrics
    assert "oomsight_operator_policies 1.0" in metrics
    import subprocess

    lint = subprocess.run(
        [str(promtool_bin), "check", "metrics"], input=metrics, capture_output=True, text=True
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    health = urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
    assert health.status == 200 and json.loads(health.read())["unsyncedNamespaces"] == []
    assert op.stop() == 0

    # While it is down: the OOM-killed pod is replaced, and the agent's report no longer lists the
    # incident (its ring of 20 moved on). Only the policy's status still remembers the kill.
    kubectl.run("delete", "pod", "pay-7d9f8c6b5-a", "-n", ns, "--wait=false", "--grace-period=0", "--force")
    p2 = create_pod(kubectl, ns, "pay-7d9f8c6b5-c", node, {"app": "pay"}, rs)
    write_report(
        kubectl, node, report_status([profile(p1, "app", [210 * MI]), profile(p2, "app", [190 * MI])])
    )
    start(operators, kubeconfig, ns, tmp_path, "op-b")

    def settled() -> dict[str, Any] | None:
        st = status_of(kubectl, ns, "pay")
        return st if st.get("podsObserved") == 2 else None

    wait_for(lambda: "reconciled MemoryPolicy" in operators[-1].log(), TIMEOUT, "op-b's first reconcile")
    st = wait_for(settled, TIMEOUT, "the status after the restart")
    after = container_entry(st, "Deployment", "pay")
    assert after["oomKills"] == 1 and after["lastOOM"] == before["lastOOM"] == when
    assert parse_quantity(after["recommendedLimit"]) >= parse_quantity(before["recommendedLimit"])
    assert st["workloads"][0]["replicas"] == 2
    # No repeated Event for a recommendation that did not change.
    items = kubectl.json("get", "events.events.k8s.io", "-n", ns)["items"]
    assert [e for e in items if e.get("reason") == "RecommendationChanged"] == []


def test_runs_with_the_charts_rbac_and_peering(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    scene: dict[str, Any],
    operators: list[OperatorProc],
    tmp_path: Path,
    helm_bin: Path,
) -> None:
    """The operator as the chart runs it: its ServiceAccount's token and ClusterRole, all namespaces, the
    chart's ClusterKopfPeering found through OOMSIGHT_PEERING; it must do its whole job without a 403."""
    import os
    import subprocess

    import yaml

    from kube.kubehelpers import REPO_ROOT

    ns, node = namespace, scene["node"]
    release = unique_name("opr", 20)
    rendered = subprocess.run(
        [
            str(helm_bin),
            "template",
            release,
            str(REPO_ROOT / "charts" / "oomsight"),
            "--namespace",
            ns,
            "--show-only",
            "templates/serviceaccounts.yaml",
            "--show-only",
            "templates/operator-rbac.yaml",
            "--set",
            f"operator.peering.name={release}",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    kubectl.run("apply", "-n", ns, "-f", "-", stdin=rendered)
    kubectl.run(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": release}}
        ),
    )
    sa = next(
        d["metadata"]["name"]
        for d in yaml.safe_load_all(rendered)
        if d and d["kind"] == "ServiceAccount" and d["metadata"]["name"].endswith("operator")
    )
    token = kubectl.run("create", "token", sa, "-n", ns, "--duration=1h").stdout.strip()
    admin = yaml.safe_load(kubeconfig.read_text())
    admin["users"] = [{"name": "sa", "user": {"token": token}}]
    for ctx in admin["contexts"]:
        ctx["context"]["user"] = "sa"
    sa_kubeconfig = tmp_path / "sa.kubeconfig"
    sa_kubeconfig.write_text(yaml.safe_dump(admin))
    assert (
        kubectl.run("--kubeconfig", str(sa_kubeconfig), "get", "secrets", "-n", ns, check=False).returncode
        != 0
    )

    pod = create_pod(kubectl, ns, "web", node, {"app": "web"})
    write_report(kubectl, node, report_status([profile(pod, "app", [120 * MI])], findings=[KMEM_FINDING]))
    kubectl.run(
        "apply", "-n", ns, "-f", "-", stdin=json.dumps(policy("web", {"matchLabels": {"app": "web"}}))
    )
    os.environ["OOMSIGHT_PEERING"] = release
    try:
        op = OperatorProc(sa_kubeconfig, ns, tmp_path / "sa.log", "op-sa", ["--all-namespaces"])
        op.start()
        operators.append(op)
    finally:
        del os.environ["OOMSIGHT_PEERING"]
    wait_for(
        lambda: crd.ANNOTATION_RECOMMENDATION in pod_annotations(kubectl, ns, "web"), TIMEOUT, "annotation"
    )
    st = status_of(kubectl, ns, "web")
    assert container_entry(st, "Pod", "web").get("recommendedLimit") and st["mode"] == "agents"
    wait_for(
        lambda: crd.LABEL_KMEM_ACCOUNTING in kubectl.get("node", node)["metadata"]["labels"],
        TIMEOUT,
        "the node label",
    )
    peers = kubectl.get("clusterkopfpeerings.kopf.dev", release).get("status") or {}
    assert len(peers) == 1, peers  # it joined the chart's peering, not a default one
    log = op.log()
    # A 403 shows as the API's reason "Forbidden" or as "HTTP 403"/"status 403"/"code: 403"; a bare "403" is
    # not searched for, since log timestamps (",403]") and durations contain it by chance.
    denied = re.search(r"[Ff]orbidden|\b(?:HTTP|status|code)\W{0,3}403\b", log)
    assert denied is None, log[-3000:]


def test_a_killed_leader_is_replaced_when_its_peering_record_expires(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    scene: dict[str, Any],
    operators: list[OperatorProc],
    tmp_path: Path,
) -> None:
    """SIGKILL: no clean-up of the peering record; the standby resumes once the record's lifetime ends."""
    import time

    ns, node = namespace, scene["node"]
    p = create_pod(kubectl, ns, "solo", node, {"app": "solo"})
    write_report(kubectl, node, report_status([profile(p, "app", [100 * MI])]))
    kubectl.run(
        "apply", "-n", ns, "-f", "-", stdin=json.dumps(policy("ha", {"matchLabels": {"app": "solo"}}))
    )
    a = start(operators, kubeconfig, ns, tmp_path, "op-a", "--priority", "200", "--peering-lifetime", "6")
    wait_for(lambda: status_of(kubectl, ns, "ha").get("podsObserved") == 1, TIMEOUT, "op-a's status")
    b = start(operators, kubeconfig, ns, tmp_path, "op-b", "--priority", "100", "--peering-lifetime", "6")
    wait_for(
        lambda: len(kubectl.get("kopfpeerings.kopf.dev", "oomsight", ns).get("status") or {}) == 2,
        TIMEOUT,
        "both peers",
    )
    a.stop(signal.SIGKILL)
    killed = time.monotonic()
    create_pod(kubectl, ns, "solo-2", node, {"app": "solo"})
    wait_for(lambda: status_of(kubectl, ns, "ha").get("podsObserved") == 2, TIMEOUT, "op-b to take over")
    took = time.monotonic() - killed
    assert "oomsight-operator-op-b" in _status_managers(kubectl, ns, "ha")
    assert took >= 3, f"op-b acted {took:.1f}s after the kill, before op-a's record could expire"
    assert b.alive()


def test_a_missing_peering_object_is_one_line(kubeconfig: Path, namespace: str, kubectl: Kubectl) -> None:
    import subprocess
    import sys

    apply_crds(kubectl)
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "oomsight",
            "operator",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            namespace,
            "--peering",
            "nope",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert f"KopfPeering nope in namespace(s) {namespace} does not exist" in line and "--standalone" in line


def apply_threshold_policy(kubectl: Kubectl, ns: str, node: str, pods: dict[str, str]) -> dict[str, Any]:
    """``pods`` (name: app label) on ``node``, and MemoryPolicy ``warn`` selecting app=web with a 70% warning
    threshold and annotatePods off (the threshold is the policy's own setting, written anyway)."""
    for name, app in pods.items():
        create_pod(kubectl, ns, name, node, {"app": app})
    body = policy("warn", {"matchLabels": {"app": "web"}}, annotate=False)
    body["spec"]["warningThresholdPercent"] = 70
    kubectl.run("apply", "-n", ns, "-f", "-", stdin=json.dumps(body))
    return body


def wait_threshold(kubectl: Kubectl, ns: str, pod: str, value: str | None, what: str) -> None:
    """Until the pod's warning-threshold annotation is ``value`` (None: until it is gone)."""

    def current() -> str | None:
        return pod_annotations(kubectl, ns, pod).get(crd.ANNOTATION_WARNING_THRESHOLD)

    wait_for(lambda: current() == value, TIMEOUT, what)


def test_warning_threshold_is_written_on_selected_pods(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    scene: dict[str, Any],
    operators: list[OperatorProc],
    tmp_path: Path,
) -> None:
    ns, node = namespace, scene["node"]
    body = apply_threshold_policy(kubectl, ns, node, {"web-a": "web", "other": "other"})
    op = start(operators, kubeconfig, ns, tmp_path)
    wait_threshold(kubectl, ns, "web-a", "70", "the threshold annotation")
    assert crd.ANNOTATION_RECOMMENDATION not in pod_annotations(kubectl, ns, "web-a")
    assert crd.ANNOTATION_WARNING_THRESHOLD not in pod_annotations(kubectl, ns, "other")
    body["spec"]["warningThresholdPercent"] = 55.5
    kubectl.run("apply", "-n", ns, "-f", "-", stdin=json.dumps(body))
    wait_threshold(kubectl, ns, "web-a", "55.5", "the changed threshold")
    assert op.alive(), op.log()[-2000:]


def test_warning_threshold_is_removed_when_no_policy_selects_the_pod(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    scene: dict[str, Any],
    operators: list[OperatorProc],
    tmp_path: Path,
) -> None:
    # A relabel out of the selector, then the policy's deletion: the agent must not keep the old level.
    ns, node = namespace, scene["node"]
    apply_threshold_policy(kubectl, ns, node, {"web-a": "web", "web-b": "web"})
    op = start(operators, kubeconfig, ns, tmp_path)
    for pod in ("web-a", "web-b"):
        wait_threshold(kubectl, ns, pod, "70", f"the threshold annotation on {pod}")
    kubectl.run("label", "pod", "web-a", "-n", ns, "app=gone", "--overwrite")
    wait_threshold(kubectl, ns, "web-a", None, "the threshold removed from the relabelled pod")
    assert pod_annotations(kubectl, ns, "web-b").get(crd.ANNOTATION_WARNING_THRESHOLD) == "70"
    kubectl.run("delete", crd.MEMORY_POLICY_PLURAL, "warn", "-n", ns, "--timeout=30s")
    wait_threshold(kubectl, ns, "web-b", None, "the threshold removed after the policy was deleted")
    assert op.alive(), op.log()[-2000:]
    assert "removed the unowned warning threshold" in op.log()


def test_a_policy_deleted_while_the_operator_was_down_leaves_no_threshold(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    scene: dict[str, Any],
    operators: list[OperatorProc],
    tmp_path: Path,
) -> None:
    # The finalizer holds the deleted policy until an operator runs again; that operator never listed the
    # namespace's pods, and must still take the threshold off them.
    ns, node = namespace, scene["node"]
    apply_threshold_policy(kubectl, ns, node, {"web-a": "web"})
    first = start(operators, kubeconfig, ns, tmp_path, "op-first")
    wait_threshold(kubectl, ns, "web-a", "70", "the threshold annotation")
    assert first.stop() == 0
    kubectl.run("delete", crd.MEMORY_POLICY_PLURAL, "warn", "-n", ns, "--wait=false")
    held = kubectl.get(crd.MEMORY_POLICY_PLURAL, "warn", ns)["metadata"]
    assert held.get("deletionTimestamp") and held.get("finalizers"), held
    second = start(operators, kubeconfig, ns, tmp_path, "op-second")
    wait_threshold(kubectl, ns, "web-a", None, "the threshold removed by the restarted operator")
    gone = kubectl.run("get", crd.MEMORY_POLICY_PLURAL, "warn", "-n", ns, check=False)
    assert gone.returncode != 0 and "NotFound" in gone.stderr
    assert second.alive() and "removed the unowned warning threshold of 1 pod(s)" in second.log()


def test_jvm_xmx_in_the_report_sets_the_limit_floor(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    scene: dict[str, Any],
    operators: list[OperatorProc],
    tmp_path: Path,
) -> None:
    ns, node = namespace, scene["node"]
    pod = create_pod(kubectl, ns, "jvm-a", node, {"app": "jvm"}, request="512Mi", limit="1Gi")
    prof = profile(pod, "app", [250 * MI, 300 * MI], limit=1 << 30, request=512 * MI)
    prof["xmx"] = 512 * MI  # as the agent reports `java -Xmx512m` (tests/kube/test_agent_real.py)
    write_report(kubectl, node, report_status([prof]))
    body = policy("jvm", {"matchLabels": {"app": "jvm"}})
    kubectl.run("apply", "-n", ns, "-f", "-", stdin=json.dumps(body))
    start(operators, kubeconfig, ns, tmp_path)
    c = wait_for(
        lambda: (
            container_entry(status_of(kubectl, ns, "jvm"), "Pod", "jvm-a").get("recommendedLimit")
            and container_entry(status_of(kubectl, ns, "jvm"), "Pod", "jvm-a")
        ),
        TIMEOUT,
        "a recommendation",
    )
    # The heap grows to -Xmx whenever the collector lets it: the limit covers it plus off-heap
    # (at least 25% of the heap, at least 64Mi), though the working set never passed 300Mi.
    assert parse_quantity(c["recommendedLimit"]) >= 512 * MI + 128 * MI, c
    assert "JVM -Xmx" in c["reason"], c


def test_a_restart_with_unchanged_inputs_rewrites_no_annotation_and_no_status(
    kubectl: Kubectl,
    kubeconfig: Path,
    namespace: str,
    scene: dict[str, Any],
    operators: list[OperatorProc],
    tmp_path: Path,
) -> None:
    """bench/chaos.py op-sigkill: a restarted replica counted the persisted peaks of today once more (a
    pseudo-replica, at the interval's start): the confidence and percentiles moved, so a restart or a
    failover rewrote every pod's annotation and every status (5,000 PATCHes for 5,000 Pods)."""
    import urllib.request

    from kube.agentkit import free_port

    ns, node = namespace, scene["node"]
    _, rs = create_deployment(kubectl, ns, "cart", {"app": "cart"})
    pods = [create_pod(kubectl, ns, f"cart-7d9f8c6b5-{i}", node, {"app": "cart"}, rs) for i in range(3)]
    write_report(kubectl, node, report_status(
        [profile(p, "app", [(180 + 10 * i + k) * MI for k in range(8)]) for i, p in enumerate(pods)]
    ))  # fmt: skip
    kubectl.run(
        "apply", "-n", ns, "-f", "-", stdin=json.dumps(policy("cart", {"matchLabels": {"app": "cart"}}))
    )
    op = start(operators, kubeconfig, ns, tmp_path, "op-a")

    def annotated() -> list[dict[str, Any]] | None:
        items = [kubectl.get("pod", p["metadata"]["name"], ns) for p in pods]
        ok = all(crd.ANNOTATION_RECOMMENDATION in (i["metadata"].get("annotations") or {}) for i in items)
        return items if ok and status_of(kubectl, ns, "cart").get("podsObserved") == 3 else None

    before = wait_for(annotated, TIMEOUT, "op-a's annotations and status")
    status_before = status_of(kubectl, ns, "cart")
    assert op.stop() == 0

    port = free_port()
    start(operators, kubeconfig, ns, tmp_path, "op-b", "--metrics-port", str(port))

    def reconciled() -> bool:
        with contextlib.suppress(OSError):
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
            return any(
                ln.startswith("oomsight_operator_reconciles_total ") and float(ln.split()[1]) >= 1
                for ln in text.splitlines()
            )
        return False

    wait_for(reconciled, TIMEOUT, "op-b's first reconcile")
    after = [kubectl.get("pod", p["metadata"]["name"], ns) for p in pods]
    for b, a in zip(before, after, strict=True):
        assert a["metadata"]["annotations"] == b["metadata"]["annotations"]
        assert a["metadata"]["resourceVersion"] == b["metadata"]["resourceVersion"], "annotation rewritten"
    assert status_of(kubectl, ns, "cart") == status_before  # not written again (lastUpdateTime included)
