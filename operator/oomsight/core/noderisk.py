"""Node risk flags from a NodeMemoryReport, pure: the Node condition, labels and Event to converge to.

The agent reports (``status.findings``, ``status.risk``, ``status.node``); only the operator writes to
Nodes, the split node-feature-discovery uses (worker reports a CR, master labels). While the report
has a finding of severity ``warning`` or ``critical`` the Node gets:

* the condition ``OomsightMemoryRisk`` = True, its reason the CamelCase id of the worst finding
  (``kmem-leak-kernel`` → ``KmemLeakKernel``), its message the findings' sentences;
* the labels ``oomsight.io/kmem-accounting`` (enabled|disabled|unknown) and
  ``oomsight.io/cgroup-version`` (v1|v2|hybrid), so workloads can steer with node affinity away
  from (or towards) such nodes;
* one Event when the risk appears or changes, one when it clears.

When the risk goes away the condition turns False (reason ``NoMemoryRisk``; kept, as the kubelet
keeps its own conditions, with the transition time) and both labels are removed.
Node condition shape: ``k8s.io/api/core/v1`` ``NodeCondition`` (type, status, reason, message,
lastHeartbeatTime, lastTransitionTime); conditions are merged by ``type`` in a strategic merge patch
(``patchMergeKey:"type"``), so one patch touches only our condition.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

CONDITION_TYPE = "OomsightMemoryRisk"
LABEL_KMEM = "oomsight.io/kmem-accounting"
LABEL_CGROUP = "oomsight.io/cgroup-version"
REASON_CLEAR = "NoMemoryRisk"
EVENT_RISK = "NodeMemoryRiskDetected"
EVENT_CLEAR = "NodeMemoryRiskCleared"
RISKY = ("warning", "critical")
_LABEL_VALUES = {
    LABEL_KMEM: ("enabled", "disabled", "unknown"),
    LABEL_CGROUP: ("v1", "v2", "hybrid"),
}


@dataclass(frozen=True, slots=True)
class NodeRisk:
    """What the Node should carry. ``at_risk`` False means: condition False, labels absent."""

    node: str
    at_risk: bool
    severity: str
    """none, warning or critical."""
    reason: str
    message: str
    labels: tuple[tuple[str, str], ...] = ()
    finding_ids: tuple[str, ...] = ()


def camel(finding_id: str) -> str:
    """``kmem-leak-kernel`` → ``KmemLeakKernel`` (a condition/event reason must be CamelCase)."""
    return "".join(part[:1].upper() + part[1:] for part in finding_id.split("-") if part) or "Unknown"


def risk_of(node: str, status: Mapping[str, Any] | None) -> NodeRisk:
    """The desired flags for ``node`` from its report's ``status`` (None: no report → no risk)."""
    listed = (status or {}).get("findings") or []
    findings = [f for f in listed if isinstance(f, Mapping) and f.get("severity") in RISKY]
    if not findings:
        return NodeRisk(node, False, "none", REASON_CLEAR, "the oomsight agent reports no memory risk")
    findings.sort(key=lambda f: (-RISKY.index(str(f.get("severity"))), str(f.get("id"))))
    worst = findings[0]
    severity = str(worst.get("severity"))
    message = " ".join(
        f"[{f.get('severity')}] {f.get('id')}: {str(f.get('message') or '').strip()}"
        + (f" Fix: {f.get('fix')}." if f.get("fix") else "")
        for f in findings
    )
    facts = (status or {}).get("node") or {}
    labels = []
    for label, field_name in ((LABEL_KMEM, "kmemAccounting"), (LABEL_CGROUP, "cgroupVersion")):
        value = facts.get(field_name)
        if value in _LABEL_VALUES[label]:
            labels.append((label, str(value)))
    return NodeRisk(
        node=node,
        at_risk=True,
        severity=severity,
        reason=camel(str(worst.get("id") or "")),
        message=message[:4000],
        labels=tuple(labels),
        finding_ids=tuple(str(f.get("id")) for f in findings),
    )


@dataclass(frozen=True, slots=True)
class NodePatch:
    """The changes to make to a Node; empty fields mean nothing to do there."""

    labels: dict[str, str | None]
    """Merge patch for metadata.labels: None removes a label."""
    condition: dict[str, Any] | None
    """The whole NodeCondition to merge into status.conditions, or None when it is already right."""
    event: tuple[str, str, str] | None
    """(type Normal|Warning, reason, note) to emit, or None."""

    @property
    def empty(self) -> bool:
        return not self.labels and self.condition is None and self.event is None


def plan(risk: NodeRisk, node: Mapping[str, Any], now: str) -> NodePatch:
    """Compare the desired flags with the Node object as it is; ``now`` is RFC 3339."""
    meta = node.get("metadata") or {}
    have_labels = meta.get("labels") or {}
    want = dict(risk.labels)
    labels: dict[str, str | None] = {}
    for label in (LABEL_KMEM, LABEL_CGROUP):
        if label in want and have_labels.get(label) != want[label]:
            labels[label] = want[label]
        elif label not in want and label in have_labels:
            labels[label] = None
    current = next(
        (c for c in (node.get("status") or {}).get("conditions") or [] if c.get("type") == CONDITION_TYPE),
        None,
    )
    if current is None and not risk.at_risk:
        return NodePatch(labels, None, None)  # never flagged: nothing to clear
    status = "True" if risk.at_risk else "False"
    prev: Mapping[str, Any] = current or {}
    if current is not None and (prev.get("status"), prev.get("reason"), prev.get("message")) == (
        status,
        risk.reason,
        risk.message,
    ):
        return NodePatch(labels, None, None)
    flipped = current is None or prev.get("status") != status
    condition = {
        "type": CONDITION_TYPE,
        "status": status,
        "reason": risk.reason,
        "message": risk.message,
        "lastHeartbeatTime": now,
        "lastTransitionTime": now if flipped else prev.get("lastTransitionTime", now),
    }
    event = None
    if risk.at_risk and (flipped or prev.get("reason") != risk.reason):
        event = ("Warning", EVENT_RISK, f"{risk.severity}: {risk.message}"[:1000])
    elif not risk.at_risk and flipped:
        event = ("Normal", EVENT_CLEAR, "the oomsight agent no longer reports a memory risk on this node")
    return NodePatch(labels, condition, event)
