"""core.noderisk: the Node condition, labels and Event from a NodeMemoryReport captured from the real API
server (tests/fixtures/operator/SOURCE), and findings as core.node produces them on this machine."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from oomsight.core.noderisk import (
    CONDITION_TYPE,
    EVENT_CLEAR,
    EVENT_RISK,
    LABEL_CGROUP,
    LABEL_KMEM,
    camel,
    plan,
    risk_of,
)
from oomsight.kube import crd

FIX = Path(__file__).parent / "fixtures" / "operator"
NOW = "2026-11-23T15:00:00Z"


def report() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIX / "nodememoryreport.json").read_text())["status"]
    return data


def node(
    labels: dict[str, str] | None = None, conditions: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "metadata": {"name": "node-a", "labels": labels or {"kubernetes.io/os": "linux"}},
        "status": {"conditions": conditions or [{"type": "Ready", "status": "True"}]},
    }


def test_names_match_the_shared_constants() -> None:
    assert CONDITION_TYPE == crd.NODE_CONDITION_TYPE
    assert (LABEL_KMEM, LABEL_CGROUP) == (crd.LABEL_KMEM_ACCOUNTING, crd.LABEL_CGROUP_VERSION)


@pytest.mark.parametrize(
    ("finding_id", "reason"),
    [
        ("kmem-leak-kernel", "KmemLeakKernel"),
        ("memcg-id-limit", "MemcgIdLimit"),
        ("swap-on", "SwapOn"),
        ("", "Unknown"),
    ],
)
def test_reasons_are_camel_case(finding_id: str, reason: str) -> None:
    assert camel(finding_id) == reason


def test_a_critical_finding_flags_the_node() -> None:
    r = risk_of("node-a", report())
    assert r.at_risk and r.severity == "critical" and r.reason == "KmemLeakKernel"
    assert "kmem-leak-kernel" in r.message and "nokmem" in r.message
    assert dict(r.labels) == {LABEL_KMEM: "enabled", LABEL_CGROUP: "v1"}
    p = plan(r, node(), NOW)
    assert p.labels == {LABEL_KMEM: "enabled", LABEL_CGROUP: "v1"}
    assert p.condition is not None
    assert (p.condition["type"], p.condition["status"], p.condition["reason"]) == (
        CONDITION_TYPE,
        "True",
        "KmemLeakKernel",
    )
    assert p.condition["lastTransitionTime"] == NOW
    assert p.event is not None and p.event[:2] == ("Warning", EVENT_RISK)


def test_nothing_to_do_when_the_node_already_carries_it() -> None:
    r = risk_of("node-a", report())
    first = plan(r, node(), NOW)
    assert first.condition is not None
    flagged = node({"kubernetes.io/os": "linux", **first.labels}, [{"type": "Ready"}, first.condition])  # type: ignore[dict-item]
    assert plan(r, flagged, "2026-11-23T16:00:00Z").empty


def test_info_findings_are_no_risk_and_clear_everything() -> None:
    st = report()
    for f in st["findings"]:
        f["severity"] = "info"
    r = risk_of("node-a", st)
    assert not r.at_risk and r.labels == ()
    # never flagged: nothing to write at all
    assert plan(r, node(), NOW).empty
    # flagged before: condition False (kept, with its transition time), labels removed, one Normal event
    was = plan(risk_of("node-a", report()), node(), "2026-11-23T14:00:00Z")
    assert was.condition is not None
    flagged = node({"kubernetes.io/os": "linux", LABEL_KMEM: "enabled", LABEL_CGROUP: "v1"}, [was.condition])
    p = plan(r, flagged, NOW)
    assert p.labels == {LABEL_KMEM: None, LABEL_CGROUP: None}
    assert (
        p.condition is not None
        and p.condition["status"] == "False"
        and p.condition["reason"] == "NoMemoryRisk"
    )
    assert p.condition["lastTransitionTime"] == NOW
    assert p.event is not None and p.event[:2] == ("Normal", EVENT_CLEAR)
    assert risk_of("node-a", None) == r.__class__("node-a", False, "none", r.reason, r.message)


def test_the_worst_finding_names_the_reason_and_a_change_of_reason_is_an_event() -> None:
    st = copy.deepcopy(report())
    st["findings"] = [
        {"id": "swap-on", "severity": "warning", "message": "swap is on"},
        {"id": "memcg-id-limit", "severity": "critical", "message": "61000 memory cgroups"},
    ]
    r = risk_of("node-a", st)
    assert r.reason == "MemcgIdLimit" and r.finding_ids == ("memcg-id-limit", "swap-on")
    assert r.message.index("memcg-id-limit") < r.message.index("swap-on")
    before = plan(risk_of("node-a", report()), node(), "2026-11-23T14:00:00Z")
    assert before.condition is not None
    p = plan(r, node(dict(r.labels), [before.condition]), NOW)
    assert p.condition is not None and p.condition["reason"] == "MemcgIdLimit"
    assert p.condition["lastTransitionTime"] == "2026-11-23T14:00:00Z"  # still True: no transition
    assert p.event is not None and p.event[1] == EVENT_RISK


def test_unknown_label_values_are_not_written() -> None:
    st = report()
    st["node"]["cgroupVersion"] = "v3"
    assert dict(risk_of("node-a", st).labels) == {LABEL_KMEM: "enabled"}
