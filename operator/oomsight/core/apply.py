"""Applying a recommendation to running workloads, pure: what to change, when, and when to undo it.

``decide`` takes one workload container's recommendation, the selected Pods' current values, what the
policy applied before (``ApplyRecord``, persisted in the policy status so an operator restart loses
nothing) and the OOM kills seen since, and returns the writes to make (``Resize`` of a Pod through the
``resize`` subresource, or ``TemplatePatch`` of the owning workload) with the new record. The
controller only performs the writes.

Facts this module relies on (kubernetes v1.36.4):

* In-place resize (KEP-1287, GA in 1.35): ``PATCH pods/<name>/resize`` changes a running container's
  ``resources``; ``resizePolicy[].restartPolicy`` for ``memory`` is ``NotRequired`` (the default: no
  restart) or ``RestartContainer`` (k8s.io/api core/v1 ``ResourceResizeRestartPolicy``). The QoS
  class may not change (pkg/apis/core/validation ``ValidatePodResize``).
* The kubelet refuses to lower a memory limit to or below the container's current usage
  (pkg/kubelet/kuberuntime/kuberuntime_manager.go ``validateMemoryResizeAction``) and leaves the
  resize in progress; hence the floor: never below the observed peak working set nor current usage.
* Progress is reported in Pod conditions ``PodResizePending`` (reason ``Infeasible``: rejected, may
  not be re-evaluated; ``Deferred``: feasible but not now, the kubelet retries by itself) and
  ``PodResizeInProgress`` (core/v1 ``PodReasonInfeasible``/``PodReasonDeferred``). Neither is retried
  here: the spec already holds the wanted values, and a new step waits until the condition is gone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Literal

from oomsight.core.quantity import format_bytes, human_bytes

MiB = 1 << 20
APPLY_OFF = "Off"
APPLY_IN_PLACE = "InPlace"
APPLY_RECREATE = "Recreate"
APPLY_MODES = (APPLY_OFF, APPLY_IN_PLACE, APPLY_RECREATE)
DEFAULT_MIN_CONFIDENCE = 0.5
DEFAULT_MAX_CHANGE_PERCENT = 50.0
DEFAULT_RESIZE_INTERVAL = 3600.0
MIN_CHANGE_PERCENT = 5.0
"""Request and limit both within this of the current values: nothing worth a resize."""
TEMPLATE_KINDS = ("Deployment", "StatefulSet", "DaemonSet")
"""Workloads whose Pod template ``Recreate`` patches (``spec.template``)."""
PENDING_REASONS = ("Infeasible", "Deferred")
COND_RESIZE_PENDING = "PodResizePending"
COND_RESIZE_IN_PROGRESS = "PodResizeInProgress"
RESTART_CONTAINER = "RestartContainer"


@dataclass(frozen=True, slots=True)
class ApplySettings:
    """``spec.actions`` of a MemoryPolicy plus the operator's ``--resize-interval``."""

    mode: str = APPLY_OFF
    min_confidence: float = DEFAULT_MIN_CONFIDENCE
    max_change_percent: float = DEFAULT_MAX_CHANGE_PERCENT
    allow_restart: bool = False
    interval: float = DEFAULT_RESIZE_INTERVAL


@dataclass(frozen=True, slots=True)
class PodContainer:
    """One selected Pod's container as it is now."""

    pod: str
    request: int | None
    limit: int | None
    usage: int | None = None
    """Current working set from the node agent, when reported."""
    restart_policy: str = "NotRequired"
    """``resizePolicy`` for memory."""
    pending: tuple[str, str] | None = None
    """(reason, message) of the Pod's ``PodResizePending`` condition."""
    in_progress: bool = False


@dataclass(frozen=True, slots=True)
class Applied:
    request: int | None
    limit: int
    previous_request: int | None
    previous_limit: int
    time: float
    how: str
    reason: str


@dataclass(frozen=True, slots=True)
class RolledBack:
    time: float
    request: int | None
    limit: int
    from_limit: int
    oom_time: float
    hold_until: float


@dataclass(frozen=True, slots=True)
class ApplyRecord:
    """What the policy did to one workload container; persisted in its status entry."""

    applied: Applied | None = None
    rolled_back: RolledBack | None = None
    pending: tuple[str, str, float] | None = None
    """(reason, message, since) of a resize the kubelet reported Infeasible or Deferred."""

    @property
    def last_change(self) -> float | None:
        times = [x.time for x in (self.applied, self.rolled_back) if x is not None]
        return max(times) if times else None


@dataclass(frozen=True, slots=True)
class Resize:
    pod: str
    container: str
    request: int | None
    limit: int
    old_request: int | None = None
    old_limit: int | None = None


@dataclass(frozen=True, slots=True)
class TemplatePatch:
    kind: str
    name: str
    container: str
    request: int | None
    limit: int


Write = Resize | TemplatePatch


@dataclass(frozen=True, slots=True)
class Decision:
    record: ApplyRecord
    writes: tuple[Write, ...] = ()
    note: str = ""
    """Why nothing was applied (empty when something was, or when apply is Off)."""
    event: Literal["", "applied", "rolledBack"] = ""
    message: str = ""
    """One sentence for the Events: old and new values and why."""


def _ceil_mib(n: float) -> int:
    return math.ceil(n / MiB) * MiB


def _fmt(n: int | None) -> str:
    return "unset" if n is None else format_bytes(n)


def _bounded(target: int, current: int, percent: float) -> int:
    step = current * percent / 100
    return int(min(max(target, current - step), current + step))


def _small(a: int | None, b: int | None) -> bool:
    if a is None or b is None:
        return a == b
    return abs(a - b) * 100 <= MIN_CHANGE_PERCENT * max(a, b)


def decide(
    settings: ApplySettings,
    kind: str,
    name: str,
    container: str,
    recommendation: tuple[int, int, float] | None,
    peak: int | None,
    pods: Sequence[PodContainer],
    record: ApplyRecord,
    ooms: Sequence[float],
    now: float,
    window: float,
) -> Decision:
    """One workload container's apply decision.

    ``recommendation``: (request, limit, confidence) or None; ``peak``: the highest working set in the
    history window (``window`` seconds); ``ooms``: times of the OOM kills of this container (its own or
    its pod's limit) in the selected Pods; ``record``: what was applied before.
    """
    wl = f"{kind}/{name} container {container}"
    how = APPLY_RECREATE if settings.mode == APPLY_RECREATE else APPLY_IN_PLACE
    # Pending resizes: recorded from the Pods' conditions, cleared when the kubelet is done.
    pending = next((p.pending for p in pods if p.pending and p.pending[0] in PENDING_REASONS), None)
    if pending is None:
        record = replace(record, pending=None)
    elif record.pending is None or record.pending[:2] != pending:
        record = replace(record, pending=(pending[0], pending[1], now))
    if settings.mode == APPLY_OFF:
        return Decision(record)

    # Rollback: an OOM kill after the last apply puts the previous values back at once.
    ap, rb = record.applied, record.rolled_back
    if ap is not None and (rb is None or rb.time < ap.time):
        killed = [t for t in ooms if t >= ap.time - 1]
        if killed:
            oom = max(killed)
            writes: list[Write] = []
            if ap.how == APPLY_RECREATE and kind in TEMPLATE_KINDS:
                writes.append(TemplatePatch(kind, name, container, ap.previous_request, ap.previous_limit))
            else:
                writes += [
                    Resize(
                        p.pod,
                        container,
                        ap.previous_request if p.request is not None else None,
                        ap.previous_limit,
                        p.request,
                        p.limit,
                    )
                    for p in pods
                    if p.limit is not None and p.limit < ap.previous_limit
                ]
            back = RolledBack(now, ap.previous_request, ap.previous_limit, ap.limit, oom, now + window)
            msg = (
                f"{wl}: OOM-killed at the applied limit {_fmt(ap.limit)}; limit {_fmt(ap.limit)} → "
                f"{_fmt(ap.previous_limit)}, request {_fmt(ap.request)} → {_fmt(ap.previous_request)} "
                f"(rolled back; no change for {window / 3600:g}h)"
            )
            return Decision(replace(record, rolled_back=back), tuple(writes), event="rolledBack", message=msg)

    if rb is not None and now < rb.hold_until and (ap is None or ap.time <= rb.time):
        return Decision(
            record, note=f"held after the rollback of {_fmt(rb.from_limit)} until {_iso(rb.hold_until)}"
        )
    if recommendation is None:
        return Decision(record, note="no recommendation yet")
    rec_req, rec_lim, confidence = recommendation
    if confidence < settings.min_confidence:
        return Decision(
            record, note=f"confidence {confidence:.2f} is below minConfidence {settings.min_confidence:g}"
        )
    # The kubelet's verdict on the last resize says more than the interval that follows it: both
    # hold the next change, and the note is what a user reads to learn why.
    if pending is not None:
        return Decision(record, note=f"the kubelet reports the last resize {pending[0]}: not retried")
    last = record.last_change
    if last is not None and now - last < settings.interval:
        return Decision(
            record, note=f"one change per resize interval: next at {_iso(last + settings.interval)}"
        )
    if any(p.in_progress for p in pods):
        return Decision(record, note="a resize is in progress")
    sized = [p for p in pods if p.limit is not None]
    if not sized:
        return Decision(record, note="no memory limit to resize")

    cur_lim = max(p.limit for p in sized if p.limit is not None)
    reqs = [p.request for p in sized if p.request is not None]
    cur_req = max(reqs) if reqs else None
    floor = max([peak or 0, *(p.usage or 0 for p in pods)])
    stepped = _bounded(rec_lim, cur_lim, settings.max_change_percent)
    limit = _ceil_mib(max(stepped, floor + 1))
    request: int | None = None
    if cur_req is not None:
        if cur_req >= cur_lim:
            request = limit  # requests == limits stays so: the QoS class may not change
        else:
            request = min(_ceil_mib(_bounded(rec_req, cur_req, settings.max_change_percent)), limit)
    if _small(limit, cur_lim) and _small(request, cur_req):
        return Decision(record, note="already at the recommendation")
    floor_note = f" (raised above the observed peak {human_bytes(floor)})" if floor + 1 > stepped else ""
    reason = (
        f"recommended request {_fmt(rec_req)}, limit {_fmt(rec_lim)} at confidence {confidence:.2f}, "
        f"at most {settings.max_change_percent:g}% per step{floor_note}"
    )

    writes = []
    if settings.mode == APPLY_RECREATE:
        if kind not in TEMPLATE_KINDS:
            return Decision(
                record, note=f"Recreate patches a {', '.join(TEMPLATE_KINDS)} template, not a {kind}"
            )
        writes.append(TemplatePatch(kind, name, container, request, limit))
    else:
        restarting = [p.pod for p in sized if p.restart_policy == RESTART_CONTAINER]
        if restarting and not settings.allow_restart:
            sized = [p for p in sized if p.restart_policy != RESTART_CONTAINER]
            if not sized:
                return Decision(
                    record, note="resizePolicy memory RestartContainer and the policy does not allow restarts"
                )
        writes += [
            Resize(p.pod, container, request if p.request is not None else None, limit, p.request, p.limit)
            for p in sized
            if p.limit != limit or (p.request is not None and p.request != request)
        ]
    applied = Applied(request, limit, cur_req, cur_lim, now, how, reason)
    msg = (
        f"{wl}: limit {_fmt(cur_lim)} → {_fmt(limit)}, request {_fmt(cur_req)} → {_fmt(request)} "
        f"({how}); {reason}"
    )
    return Decision(replace(record, applied=applied), tuple(writes), event="applied", message=msg)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- persistence in the policy status -------------------------------------------------------------


def record_to_status(record: ApplyRecord) -> dict[str, Any]:
    """The container status fields ``applied``, ``rolledBack``, ``resize`` (quantities, RFC 3339)."""
    out: dict[str, Any] = {}
    ap, rb = record.applied, record.rolled_back
    if ap is not None:
        a: dict[str, Any] = {
            "limit": format_bytes(ap.limit),
            "previousLimit": format_bytes(ap.previous_limit),
            "time": _iso(ap.time),
            "how": ap.how,
            "reason": ap.reason[:512],
        }
        if ap.request is not None:
            a["request"] = format_bytes(ap.request)
        if ap.previous_request is not None:
            a["previousRequest"] = format_bytes(ap.previous_request)
        out["applied"] = a
    if rb is not None:
        b: dict[str, Any] = {"time": _iso(rb.time), "limit": format_bytes(rb.limit),
                             "fromLimit": format_bytes(rb.from_limit), "oomTime": _iso(rb.oom_time),
                             "holdUntil": _iso(rb.hold_until)}  # fmt: skip
        if rb.request is not None:
            b["request"] = format_bytes(rb.request)
        out["rolledBack"] = b
    if record.pending is not None:
        reason, message, since = record.pending
        out["resize"] = {"state": reason, "message": message[:512], "since": _iso(since)}
    return out


def record_from_status(entry: Mapping[str, Any], parse_q: Any, parse_t: Any) -> ApplyRecord:
    """The record back from a status container entry (``parse_q``: quantity → bytes, ``parse_t``:
    RFC 3339 → Unix s, both raising or returning None on junk); junk gives an empty part."""

    def q(v: Any) -> int | None:
        try:
            return None if v is None else int(parse_q(str(v)))
        except Exception:  # noqa: BLE001 - a hand-edited status must not stop the operator
            return None

    applied = None
    a = entry.get("applied")
    if isinstance(a, Mapping):
        t, lim, prev = parse_t(a.get("time")), q(a.get("limit")), q(a.get("previousLimit"))
        if t is not None and lim is not None and prev is not None:
            applied = Applied(q(a.get("request")), lim, q(a.get("previousRequest")), prev, t,
                              str(a.get("how") or APPLY_IN_PLACE), str(a.get("reason") or ""))  # fmt: skip
    rolled = None
    b = entry.get("rolledBack")
    if isinstance(b, Mapping):
        t, lim, frm = parse_t(b.get("time")), q(b.get("limit")), q(b.get("fromLimit"))
        oom, hold = parse_t(b.get("oomTime")), parse_t(b.get("holdUntil"))
        if t is not None and lim is not None and frm is not None and hold is not None:
            rolled = RolledBack(t, q(b.get("request")), lim, frm, oom if oom is not None else t, hold)
    pending = None
    r = entry.get("resize")
    if isinstance(r, Mapping) and r.get("state") in PENDING_REASONS:
        since = parse_t(r.get("since"))
        pending = (str(r["state"]), str(r.get("message") or ""), since if since is not None else 0.0)
    return ApplyRecord(applied, rolled, pending)
