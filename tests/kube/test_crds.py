"""The CRDs against the real kube-apiserver: Established, valid objects accepted, each rule's
violation rejected with a message naming the field and the rule, printer columns in ``kubectl get``."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from kube.crdkit import apply_crds, crd_names, table
from kube.kubehelpers import Kubectl, unique_name
from oomsight.kube import crd
from reportsample import full_report

pytestmark = pytest.mark.kube


@pytest.fixture
def crds(kubectl: Kubectl) -> Kubectl:
    apply_crds(kubectl)
    return kubectl


def policy(name: str, namespace: str, **spec: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"selector": {"matchLabels": {"app": "web"}}}
    body.update(spec)
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.MEMORY_POLICY_KIND,
        "metadata": {"name": name, "namespace": namespace},
        "spec": body,
    }


def report(node: str) -> dict[str, Any]:
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.NODE_REPORT_KIND,
        "metadata": {"name": node},
        "spec": {"nodeName": node},
    }


def rejected(kubectl: Kubectl, obj: dict[str, Any]) -> str:
    """Create ``obj``; it must be refused. Returns kubectl's error text."""
    result = kubectl.run("create", "-f", "-", stdin=json.dumps(obj), check=False)
    assert result.returncode != 0, f"accepted: {json.dumps(obj)[:300]}"
    return result.stderr


def patch_status(
    kubectl: Kubectl,
    kind: str,
    name: str,
    status: dict[str, Any],
    namespace: str | None = None,
    check: bool = True,
) -> Any:
    scope = ["--namespace", namespace] if namespace else []
    return kubectl.run(
        "patch",
        kind,
        name,
        *scope,
        "--subresource=status",
        "--type=merge",
        "--patch-file=/dev/stdin",  # a full report is too long for an argument
        stdin=json.dumps({"status": status}),
        check=check,
    )


def test_crds_apply_and_become_established(crds: Kubectl) -> None:
    for name in crd_names():
        obj = crds.get("customresourcedefinition", name)
        conditions = {c["type"]: c["status"] for c in obj["status"]["conditions"]}
        assert conditions.get("Established") == "True", name
        assert conditions.get("NamesAccepted") == "True", name
    resources = crds.run("api-resources", "--api-group", crd.GROUP, "-o", "wide").stdout
    assert "memorypolicies" in resources and "mp" in resources
    assert "nodememoryreports" in resources and "nmr" in resources


def test_a_full_policy_is_accepted_and_defaults_are_filled(crds: Kubectl, namespace: str) -> None:
    obj = policy(
        "full",
        namespace,
        recommendation={
            "percentile": 0.95,
            "headroomPercent": 15,
            "minimum": "64Mi",
            "maximum": 17179869184,
            "halfLife": "24h",
            "historyWindow": "192h",
            "oomBumpRatio": 1.2,
            "oomMinBump": "100Mi",
            "limitPercentile": 0.8,
            "peakInterval": "1h",
            "cacheAllowancePercent": 10,
            "headroomMax": "1Gi",
        },
        actions={"annotatePods": True},
    )
    obj["spec"]["selector"] = {
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["fe"]},
            {"key": "canary", "operator": "DoesNotExist"},
        ],
    }
    stored = crds.create(obj)
    assert stored["spec"]["warningThresholdPercent"] == 90
    assert stored["spec"]["actions"] == {"annotatePods": True, "emitEvents": True, **APPLY_DEFAULTS}
    assert stored["spec"]["recommendation"]["maximum"] == 17179869184
    assert stored["spec"]["recommendation"]["limitPercentile"] == 0.8  # kept, not pruned
    assert stored["spec"]["recommendation"]["headroomMax"] == "1Gi"

    minimal = crds.create(policy("minimal", namespace, selector={}))
    assert minimal["spec"]["actions"] == {"annotatePods": False, "emitEvents": True, **APPLY_DEFAULTS}
    assert minimal["spec"]["recommendation"] == {}


# One case per rule: (what is wrong, spec overrides, fragments the error must contain).
APPLY_DEFAULTS = {"apply": "Off", "minConfidence": 0.5, "maxChangePercent": 50, "allowRestarts": False}
POLICY_RULES = [
    ("percentile 0", {"recommendation": {"percentile": 0}}, ["spec.recommendation.percentile", "(0, 1]"]),
    (
        "percentile above 1",
        {"recommendation": {"percentile": 1.5}},
        ["spec.recommendation.percentile", "(0, 1]"],
    ),
    ("threshold 0", {"warningThresholdPercent": 0}, ["spec.warningThresholdPercent", "(0, 100]"]),
    ("threshold above 100", {"warningThresholdPercent": 120}, ["spec.warningThresholdPercent", "(0, 100]"]),
    (
        "negative headroom",
        {"recommendation": {"headroomPercent": -5}},
        ["spec.recommendation.headroomPercent", "[0, 1000]"],
    ),
    (
        "limit percentile above 1",
        {"recommendation": {"limitPercentile": 2}},
        ["spec.recommendation.limitPercentile", "(0, 1]"],
    ),
    (
        "peak interval in days",
        {"recommendation": {"peakInterval": "1d"}},
        ["spec.recommendation.peakInterval", "positive duration"],
    ),
    (
        "negative headroom cap",
        {"recommendation": {"headroomMax": "-1Gi"}},
        ["spec.recommendation.headroomMax", "non-negative"],
    ),
    (
        "negative cache allowance",
        {"recommendation": {"cacheAllowancePercent": -1}},
        ["spec.recommendation.cacheAllowancePercent", "[0, 1000]"],
    ),
    (
        "bump ratio below 1",
        {"recommendation": {"oomBumpRatio": 0.9}},
        ["spec.recommendation.oomBumpRatio", "[1, 10]"],
    ),
    (
        "minimum above maximum",
        {"recommendation": {"minimum": "2Gi", "maximum": "1Gi"}},
        ["spec.recommendation.minimum", "less than or equal to recommendation.maximum"],
    ),
    (
        "minimum not a quantity",
        {"recommendation": {"minimum": "lots"}},
        ["spec.recommendation.minimum", "Kubernetes quantity"],
    ),
    ("maximum zero", {"recommendation": {"maximum": "0"}}, ["spec.recommendation.maximum", "positive"]),
    (
        "maximum below the default minimum (found by bench/fuzz_policies.py: the operator refused it)",
        {"recommendation": {"maximum": "2"}},
        ["spec.recommendation.maximum", "default minimum 64Mi"],
    ),
    (
        "negative min bump",
        {"recommendation": {"oomMinBump": "-100Mi"}},
        ["spec.recommendation.oomMinBump", "non-negative"],
    ),
    (
        "half-life in days",
        {"recommendation": {"halfLife": "3d"}},
        ["spec.recommendation.halfLife", "positive duration"],
    ),
    (
        "window not a duration",
        {"recommendation": {"historyWindow": "a week"}},
        ["spec.recommendation.historyWindow", "positive duration"],
    ),
    (
        "half-life longer than window",
        {"recommendation": {"halfLife": "200h", "historyWindow": "24h"}},
        ["spec.recommendation.halfLife", "must not be longer than recommendation.historyWindow"],
    ),
    (
        "In without values",
        {"selector": {"matchExpressions": [{"key": "app", "operator": "In"}]}},
        ["spec.selector.matchExpressions[0]", "In/NotIn needs at least one value"],
    ),
    (
        "Exists with values",
        {"selector": {"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}},
        ["spec.selector.matchExpressions[0]", "Exists/DoesNotExist takes no values"],
    ),
    (
        "unknown operator",
        {"selector": {"matchExpressions": [{"key": "app", "operator": "Like"}]}},
        ["spec.selector.matchExpressions[0].operator", "Unsupported value"],
    ),
    ("selector missing", {"selector": None}, ["spec.selector", "Required value"]),
    ("wrong type", {"actions": {"annotatePods": "yes"}}, ["spec.actions.annotatePods", "boolean"]),
    ("apply value", {"actions": {"apply": "Sometimes"}}, ["spec.actions.apply", "Unsupported value"]),
    ("apply as YAML 1.1 false", {"actions": {"apply": False}}, ["spec.actions.apply", "string"]),
    ("minConfidence above 1", {"actions": {"minConfidence": 1.5}}, ["spec.actions.minConfidence", "1"]),
    ("maxChangePercent 0", {"actions": {"maxChangePercent": 0}}, ["spec.actions.maxChangePercent", "0"]),
    ("maxChangePercent above 100", {"actions": {"maxChangePercent": 150}}, ["spec.actions.maxChangePercent"]),
]


@pytest.mark.parametrize(("case", "spec", "fragments"), POLICY_RULES, ids=[c[0] for c in POLICY_RULES])
def test_policy_rule_rejects_with_a_clear_message(
    crds: Kubectl, namespace: str, case: str, spec: dict[str, Any], fragments: list[str]
) -> None:
    obj = policy(unique_name("bad"), namespace, **spec)
    if spec.get("selector", "") is None:
        del obj["spec"]["selector"]
    error = rejected(crds, obj)
    for fragment in fragments:
        assert fragment in error, f"{case}: {fragment!r} not in {error!r}"


def test_policy_status_is_validated_too(crds: Kubectl, namespace: str) -> None:
    crds.create(policy("st", namespace))
    bad = patch_status(crds, "memorypolicy", "st", {"mode": "sometimes"}, namespace, check=False)
    assert bad.returncode != 0
    assert "status.mode" in bad.stderr and "Unsupported value" in bad.stderr
    workloads = [{"kind": "Deployment", "name": "w", "containers": [{"name": "c", "confidence": 1.5}]}]
    bad = patch_status(crds, "memorypolicy", "st", {"workloads": workloads}, namespace, check=False)
    assert bad.returncode != 0
    assert "status.workloads[0].containers[0].confidence" in bad.stderr


def test_kubectl_get_memorypolicies_shows_the_status_columns(crds: Kubectl, namespace: str) -> None:
    crds.create(policy("web", namespace))
    now = "2026-11-23T14:00:00Z"
    patch_status(
        crds,
        "memorypolicy",
        "web",
        {
            "observedGeneration": 1,
            "podsObserved": 12,
            "atRisk": 2,
            "oomKills24h": 3,
            "mode": "kubelet-only",
            "lastUpdateTime": now,
            "workloads": [
                {
                    "kind": "Deployment",
                    "name": "web",
                    "replicas": 3,
                    "containers": [
                        {
                            "name": "app",
                            "currentRequest": "256Mi",
                            "currentLimit": "512Mi",
                            "workingSet": {"p50": "300Mi", "p95": "480Mi", "max": "510Mi"},
                            "oomKills": 3,
                            "lastOOM": now,
                            "recommendedRequest": "512Mi",
                            "recommendedLimit": "768Mi",
                            "reason": "3 OOM kills at the 512Mi limit: raised by 1.2x",
                            "confidence": 0.4,
                        }
                    ],
                }
            ],
            "conditions": [
                {
                    "type": "Ready",
                    "status": "True",
                    "reason": "Reconciled",
                    "message": "3 workloads",
                    "lastTransitionTime": now,
                    "observedGeneration": 1,
                }
            ],
        },
        namespace,
    )
    headers = ["NAME", "PODS", "AT RISK", "OOMS 24H", "MODE", "READY", "AGE"]
    for kind in ("memorypolicies", "mp", "oomsight"):
        out = crds.run("get", kind, "--namespace", namespace).stdout
        rows = [r for r in table(out, headers) if r["NAME"].endswith("web")]
        assert rows, out
        row = rows[0]
        assert (row["PODS"], row["AT RISK"], row["OOMS 24H"], row["MODE"], row["READY"]) == (
            "12",
            "2",
            "3",
            "kubelet-only",
            "True",
        ), out
    wide = crds.run("get", "mp", "web", "--namespace", namespace, "-o", "wide").stdout
    assert table(wide, ["NAME", "THRESHOLD"])[0]["THRESHOLD"] == "90"


def test_a_valid_report_is_accepted_and_shows_its_columns(crds: Kubectl) -> None:
    node = unique_name("node-a")
    crds.create(report(node))
    try:
        patch_status(
            crds,
            "nodememoryreport",
            node,
            {
                "reportTime": "2026-11-23T14:00:00Z",
                "node": {
                    "kernel": "6.18.44",
                    "cgroupVersion": "hybrid",
                    "memoryController": "v1",
                    "cgroupDriver": "cgroupfs",
                    "kmemAccounting": "enabled",
                    "memoryCgroups": {"counted": 90, "live": 88},
                    "swap": {"total": 0, "used": 0},
                    "thp": "madvise",
                },
                "risk": "warning",
                "findings": [
                    {
                        "id": "dying-memcgs",
                        "severity": "warning",
                        "message": "2 dying memory cgroups",
                        "evidence": {"counted": "90", "live": "88"},
                        "fix": "none needed yet",
                    }
                ],
                "oomKills24h": 4,
                "containersObserved": 17,
            },
        )
        headers = ["NAME", "KERNEL", "CGROUP", "KMEM", "RISK", "CONTAINERS", "OOMS 24H", "AGE"]
        for kind in ("nodememoryreports", "nmr"):
            out = crds.run("get", kind, node).stdout
            row = table(out, headers)[0]
            assert (
                row["NAME"],
                row["KERNEL"],
                row["CGROUP"],
                row["KMEM"],
                row["RISK"],
                row["CONTAINERS"],
                row["OOMS 24H"],
            ) == (node, "6.18.44", "hybrid", "enabled", "warning", "17", "4"), out
        wide = crds.run("get", "nmr", node, "-o", "wide").stdout
        assert table(wide, ["NAME", "DRIVER"])[0]["DRIVER"] == "cgroupfs"
    finally:
        crds.run("delete", "nodememoryreport", node, "--ignore-not-found")


def test_a_full_report_with_250_containers_is_accepted_under_256_kib(crds: Kubectl) -> None:
    node = unique_name("node-full")
    full = full_report(node)
    crds.create(report(node))
    try:
        patch_status(crds, "nodememoryreport", node, full["status"])
        stored = crds.get("nodememoryreport", node)
        assert len(stored["status"]["containers"]) == crd.MAX_REPORT_CONTAINERS
        assert len(json.dumps(stored, separators=(",", ":"))) < crd.MAX_REPORT_BYTES
        too_many = copy.deepcopy(full["status"])
        too_many["containers"].append(too_many["containers"][0])
        bad = patch_status(
            crds, "nodememoryreport", node, {"containers": too_many["containers"]}, check=False
        )
        assert bad.returncode != 0
        assert (
            "status.containers" in bad.stderr and f"at most {crd.MAX_REPORT_CONTAINERS} items" in bad.stderr
        )
    finally:
        crds.run("delete", "nodememoryreport", node, "--ignore-not-found")


REPORT_STATUS_RULES = [
    (
        "swap used above total",
        {"node": {"swap": {"total": 100, "used": 200}}},
        ["status.node.swap", "node.swap.used must be less than or equal to node.swap.total"],
    ),
    (
        "finding id not kebab-case",
        {"findings": [{"id": "KmemLeak", "severity": "warning", "message": "m"}]},
        ["status.findings[0].id", "should match"],
    ),
    ("unknown risk", {"risk": "high"}, ["status.risk", "Unsupported value"]),
    (
        "too many peaks",
        {
            "containers": [
                {
                    "namespace": "n",
                    "pod": "p",
                    "podUID": "u",
                    "container": "c",
                    "peaks": [{"t": i, "bytes": 1} for i in range(crd.MAX_REPORT_PEAKS + 1)],
                }
            ]
        },
        ["status.containers[0].peaks", f"at most {crd.MAX_REPORT_PEAKS} items"],
    ),
    (
        "negative working set",
        {"containers": [{"namespace": "n", "pod": "p", "podUID": "u", "container": "c", "workingSet": -1}]},
        ["status.containers[0].workingSet", "greater than or equal to 0"],
    ),
    (
        "unknown incident scope",
        {"incidents": [{"time": "2026-11-23T14:00:00Z", "scope": "cluster", "bootID": "b", "seq": 1}]},
        ["status.incidents[0].scope", "Unsupported value"],
    ),
]


@pytest.mark.parametrize(
    ("case", "status", "fragments"), REPORT_STATUS_RULES, ids=[c[0] for c in REPORT_STATUS_RULES]
)
def test_report_status_rule_rejects_with_a_clear_message(
    crds: Kubectl, case: str, status: dict[str, Any], fragments: list[str]
) -> None:
    node = unique_name("node-bad")
    crds.create(report(node))
    try:
        bad = patch_status(crds, "nodememoryreport", node, status, check=False)
        assert bad.returncode != 0, f"{case}: accepted"
        for fragment in fragments:
            assert fragment in bad.stderr, f"{case}: {fragment!r} not in {bad.stderr!r}"
    finally:
        crds.run("delete", "nodememoryreport", node, "--ignore-not-found")


def test_report_must_be_named_after_its_node(crds: Kubectl) -> None:
    obj = report(unique_name("node-x"))
    obj["spec"]["nodeName"] = "some-other-node"
    error = rejected(crds, obj)
    assert "spec.nodeName must equal metadata.name" in error


def test_report_node_name_is_immutable(crds: Kubectl) -> None:
    node = unique_name("node-imm")
    crds.create(report(node))
    try:
        bad = crds.run(
            "patch",
            "nodememoryreport",
            node,
            "--type=merge",
            "-p",
            json.dumps({"spec": {"nodeName": "elsewhere"}}),
            check=False,
        )
        assert bad.returncode != 0
        assert "spec.nodeName is immutable" in bad.stderr
    finally:
        crds.run("delete", "nodememoryreport", node, "--ignore-not-found")


def test_kopf_peering_objects_keep_a_free_form_status(crds: Kubectl, namespace: str) -> None:
    name = unique_name("peering")
    peers = {"op-1@host": {"priority": 0, "lifetime": 60, "lastseen": "2026-11-23T14:00:00Z"}}
    crds.create(
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "ClusterKopfPeering",
            "metadata": {"name": name},
            "status": peers,
        }
    )
    try:
        # No status subresource: kopf patches status through the main resource.
        crds.run("patch", "clusterkopfpeering", name, "--type=merge", "-p", json.dumps({"status": peers}))
        assert crds.get("clusterkopfpeering", name)["status"] == peers
    finally:
        crds.run("delete", "clusterkopfpeering", name, "--ignore-not-found")
    crds.create(
        {
            "apiVersion": "kopf.dev/v1",
            "kind": "KopfPeering",
            "metadata": {"name": name, "namespace": namespace},
            "status": peers,
        }
    )
    assert crds.get("kopfpeering", name, namespace)["status"] == peers
