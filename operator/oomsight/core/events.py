"""What the agent tells Kubernetes: Event specs, their stable names, and how repeats aggregate.

An ``events.k8s.io/v1`` Event (k8s.io/api/events/v1/types.go) carries ``regarding`` (the object it is
about), ``related`` (a second object), ``reportingController``/``reportingInstance``, ``action``,
``reason``, ``note`` (at most 1 KiB: pkg/apis/core/validation/events.go ``NoteLengthLimit``) and an
optional ``series`` {``count`` >= 2, ``lastObservedTime``} for repeats. ``eventTime``, ``action``,
``reason``, ``regarding``, ``related``, the reporting fields, ``type`` and ``note`` are immutable after
creation (kube-apiserver 1.36 answers 422 "field is immutable"); only ``series`` may be patched.

Everything here is pure so the naming and aggregation rules are tested without an API server:

- an OOM kill's Event is named after the node's boot ID and the kmsg sequence number of the kill, so
  a retry after a crash or a 409 Conflict addresses the same object and never duplicates it;
- condition-like events (high working set, stuck cgroup, node findings) are named after their key
  (boot ID, object UID, reason, container), so each new occurrence updates ``series`` instead of
  creating another Event;
- a container that is OOM-killed again and again (a crash loop) gets one Event per kill up to
  ``OOM_BURST`` within ``OOM_WINDOW_SECONDS``; later kills in that window add to the last Event's
  ``series``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, Literal

REPORTING_CONTROLLER = "oomsight.io/agent"
NOTE_LIMIT_BYTES = 1024
"""pkg/apis/core/validation/events.go: ``NoteLengthLimit = 1 * 1024``."""
NAME_LIMIT = 253
OOM_BURST = 5
OOM_WINDOW_SECONDS = 600.0
SERIES_WINDOW_SECONDS = 3600.0
"""kube-apiserver's default ``--event-ttl`` is 1 h; older occurrences start a new Event."""

EventType = Literal["Normal", "Warning"]

# Reasons are a public contract (users alert on them); README.md documents each one.
REASON_OOM_CONTAINER = "OOMKilled"
REASON_OOM_CHILD = "OOMKilledChild"
REASON_OOM_POD = "OOMKilledPodLimit"
REASON_OOM_ANCESTOR = "OOMKilledAncestorLimit"
REASON_OOM_NODE = "OOMKilledNode"
REASON_HIGH_WORKING_SET = "HighWorkingSet"
REASON_WORKING_SET_NORMAL = "WorkingSetBelowThreshold"
REASON_STUCK = "MemoryCgroupStuck"
REASON_NODE_FINDING = "NodeMemoryRisk"
OOM_REASONS = frozenset(
    {REASON_OOM_CONTAINER, REASON_OOM_CHILD, REASON_OOM_POD, REASON_OOM_ANCESTOR, REASON_OOM_NODE}
)

_NOT_NAME = re.compile(r"[^a-z0-9.-]+")
_DOTS = re.compile(r"[.-]*\.[.-]*")


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """An ``ObjectReference`` as Events carry it."""

    kind: str
    name: str
    namespace: str = ""
    uid: str = ""
    api_version: str = "v1"
    field_path: str = ""
    """The part of the object, as the kubelet's Events name a container: ``spec.containers{app}``."""

    def as_body(self) -> dict[str, str]:
        body = {"apiVersion": self.api_version, "kind": self.kind, "name": self.name}
        if self.namespace:
            body["namespace"] = self.namespace
        if self.uid:
            body["uid"] = self.uid
        if self.field_path:
            body["fieldPath"] = self.field_path
        return body


@dataclass(frozen=True, slots=True)
class EventSpec:
    """The full desired state of one Event; delivering it twice is the same as delivering it once."""

    name: str
    namespace: str
    regarding: ObjectRef
    reason: str
    action: str
    note: str
    type: EventType
    event_time: datetime
    key: str
    """Aggregation key: occurrences with the same key are one Event (with a series)."""
    related: ObjectRef | None = None
    count: int = 1
    last_time: datetime | None = None
    seq: int | None = None
    """kmsg sequence number of the kill this Event reports (OOM events only)."""
    boot_id: str = ""

    @property
    def last_observed(self) -> datetime:
        """The latest occurrence: ``last_time`` once repeated, else ``event_time``."""
        return self.last_time or self.event_time

    def repeated(self, when: datetime, note: str | None = None) -> EventSpec:
        """The same Event after one more occurrence at ``when``."""
        return replace(self, count=self.count + 1, last_time=when, note=self.note if note is None else note)

    def as_body(self, instance: str) -> dict[str, Any]:
        """The ``events.k8s.io/v1`` Event JSON; ``instance`` is the reporting node's name."""
        body: dict[str, Any] = {
            "apiVersion": "events.k8s.io/v1",
            "kind": "Event",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {"app.kubernetes.io/managed-by": "oomsight"},
            },
            "eventTime": micro_time(self.event_time),
            "reportingController": REPORTING_CONTROLLER,
            "reportingInstance": instance[:128],
            "action": self.action,
            "reason": self.reason,
            "note": clip_note(self.note),
            "type": self.type,
            "regarding": self.regarding.as_body(),
        }
        if self.related is not None:
            body["related"] = self.related.as_body()
        if self.count >= 2:
            body["series"] = self.series_body()
        return body

    def series_body(self) -> dict[str, Any]:
        return {"count": self.count, "lastObservedTime": micro_time(self.last_observed)}

    def patch_body(self) -> dict[str, Any] | None:
        """What may change on an existing Event: only ``series`` (the API rejects a changed ``note``
        with 422 "field is immutable"). None when there is nothing to change (a single occurrence)."""
        if self.count >= 2:
            return {"series": self.series_body()}
        return None

    def to_json(self) -> dict[str, Any]:
        """A plain dict for the on-disk spool; ``from_json`` reverses it."""
        return {
            "name": self.name,
            "namespace": self.namespace,
            "regarding": asdict(self.regarding),
            "related": asdict(self.related) if self.related else None,
            "reason": self.reason,
            "action": self.action,
            "note": self.note,
            "type": self.type,
            "event_time": self.event_time.isoformat(),
            "key": self.key,
            "count": self.count,
            "last_time": self.last_time.isoformat() if self.last_time else None,
            "seq": self.seq,
            "boot_id": self.boot_id,
        }

    @staticmethod
    def from_json(data: Mapping[str, Any]) -> EventSpec:
        typ = data["type"]
        if typ not in ("Normal", "Warning"):
            raise ValueError(f"event type {typ!r}")
        return EventSpec(
            name=str(data["name"]),
            namespace=str(data["namespace"]),
            regarding=ObjectRef(**data["regarding"]),
            related=ObjectRef(**data["related"]) if data.get("related") else None,
            reason=str(data["reason"]),
            action=str(data["action"]),
            note=str(data["note"]),
            type=typ,
            event_time=datetime.fromisoformat(data["event_time"]),
            key=str(data["key"]),
            count=int(data["count"]),
            last_time=datetime.fromisoformat(data["last_time"]) if data.get("last_time") else None,
            seq=int(data["seq"]) if data.get("seq") is not None else None,
            boot_id=str(data.get("boot_id", "")),
        )


def micro_time(when: datetime) -> str:
    """RFC 3339 with microseconds in UTC, as ``metav1.MicroTime`` serialises."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def clip_note(note: str) -> str:
    """Cut ``note`` to the API's 1 KiB limit on a character boundary."""
    raw = note.encode()
    if len(raw) <= NOTE_LIMIT_BYTES:
        return note
    return raw[: NOTE_LIMIT_BYTES - 3].decode(errors="ignore") + "..."


def _short_boot(boot_id: str) -> str:
    return boot_id.replace("-", "").lower()[:12] or "noboot"


def _name(object_name: str, suffix: str) -> str:
    """``<object>.<suffix>`` as a DNS subdomain (RFC 1123 labels), at most 253 characters."""
    head = _NOT_NAME.sub("-", object_name.lower())
    head = _DOTS.sub(".", head).strip("-.")
    head = head[: NAME_LIMIT - len(suffix) - 1].rstrip("-.") or "x"
    return f"{head}.{suffix}"


def kill_event_name(object_name: str, boot_id: str, seq: int) -> str:
    """``<pod>.oom-<boot>-<seq>``: one kill on one boot, the same name on every retry."""
    return _name(object_name, f"oom-{_short_boot(boot_id)}-{seq}")


def keyed_event_name(object_name: str, boot_id: str, key: str) -> str:
    """``<object>.<reason>-<hash>``: one Event per key per boot; repeats go into its series."""
    digest = hashlib.sha256(f"{boot_id}|{key}".encode()).hexdigest()[:16]
    reason = key.split("|", 1)[0].lower()[:32]
    return _name(object_name, f"{reason}-{digest}")


@dataclass(slots=True)
class _Open:
    spec: EventSpec
    kills: list[datetime] = field(default_factory=list)


class Aggregator:
    """Decides, for each occurrence, whether it is a new Event or a repeat of an open one.

    Not frozen: it is the agent's memory of open Events. Pure all the same (no clock, no I/O):
    callers pass the occurrence time. ``forget(uid)`` drops everything about a vanished object.
    """

    def __init__(
        self,
        oom_burst: int = OOM_BURST,
        oom_window: float = OOM_WINDOW_SECONDS,
        series_window: float = SERIES_WINDOW_SECONDS,
    ) -> None:
        self.oom_burst = oom_burst
        self.oom_window = oom_window
        self.series_window = series_window
        self._open: dict[str, _Open] = {}

    def __len__(self) -> int:
        return len(self._open)

    def occur(self, spec: EventSpec) -> EventSpec:
        """Record one occurrence described by ``spec``; return the Event state to deliver."""
        when = spec.last_observed
        cur = self._open.get(spec.key)
        if spec.reason in OOM_REASONS:
            return self._oom(spec, cur, when)
        if cur is not None and (when - cur.spec.last_observed).total_seconds() < self.series_window:
            cur.spec = cur.spec.repeated(when, spec.note)
            return cur.spec
        self._open[spec.key] = _Open(spec)
        return spec

    def _oom(self, spec: EventSpec, cur: _Open | None, when: datetime) -> EventSpec:
        if cur is None:
            cur = self._open[spec.key] = _Open(spec)
        cur.kills = [t for t in cur.kills if (when - t).total_seconds() < self.oom_window]
        cur.kills.append(when)
        if len(cur.kills) <= self.oom_burst:
            cur.spec = spec
            return spec
        cur.spec = cur.spec.repeated(when, spec.note)
        return cur.spec

    def forget(self, uid: str) -> int:
        """Drop open Events regarding the object ``uid``; return how many."""
        gone = [k for k, o in self._open.items() if o.spec.regarding.uid == uid]
        for k in gone:
            del self._open[k]
        return len(gone)

    def expire(self, now: datetime) -> int:
        """Drop open Events older than the series window; keeps memory bounded."""
        horizon = max(self.series_window, self.oom_window)
        gone = [k for k, o in self._open.items() if (now - o.spec.last_observed).total_seconds() >= horizon]
        for k in gone:
            del self._open[k]
        return len(gone)
