"""The NodeMemoryReport status: per-container profiles, what counts as a change, and a size bound.

The schema is ``crds/nodememoryreports.oomsight.io.yaml`` (field names in ``oomsight.kube.crd``).
Three rules keep a report cheap for etcd and for every watcher of it:

- **bounded**: at most 250 containers (those closest to their limit or OOM-killed first), 8 peaks
  each, 16 findings, 20 incidents, and the JSON under 256 KiB (``fit``);
- **written on change only** (``changed``): byte counts that drift by less than 1 MiB or 5 % of
  the last written value are noise, while a new peak interval, an OOM kill, a finding or a
  container that came or went is a change;
- **at most once a minute**: ``due`` (the agent's clock is passed in; nothing here reads time).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from oomsight.core.findings import Finding, worst

# The CRD's maxItems (oomsight.kube.crd.MAX_REPORT_*; tests/agent/test_report.py checks they agree).
MAX_CONTAINERS = 250
MAX_PEAKS = 8
MAX_FINDINGS = 16
MAX_INCIDENTS = 20
MAX_BYTES = 256 * 1024
PEAK_INTERVAL_SECONDS = 600
"""One peak per 10 minutes; the 8 kept cover the last 80 minutes."""
MIN_WRITE_INTERVAL = 60.0

BREAKDOWN_KEYS = {
    "anon": "anon",
    "active_file": "activeFile",
    "inactive_file": "inactiveFile",
    "shmem": "shmem",
    "kernel": "kernel",
    "swap": "swap",
}


@dataclass(slots=True)
class Profile:
    """One container's memory history as the agent accumulates it (mutable, owned by ``ProfileBook``)."""

    namespace: str
    pod: str
    pod_uid: str
    container: str
    container_id: str = ""
    request: int | None = None
    limit: int | None = None
    limit_level: str = "node"
    working_set: int = 0
    breakdown: dict[str, int] = field(default_factory=dict)
    peaks: list[tuple[int, int]] = field(default_factory=list)
    """(interval start, Unix seconds; peak working set bytes), oldest first."""
    oom_kills: int = 0
    xmx: int | None = None
    """JVM ``-Xmx`` in bytes (``oomsight.core.jvm``), when the container runs a JVM that sets it."""
    max_ram_percentage: float | None = None
    """JVM ``-XX:MaxRAMPercentage``, when set and no ``-Xmx`` is (HotSpot lets -Xmx win)."""
    seen: float = 0.0
    breakdown_of: Mapping[str, int | None] | None = field(default=None, repr=False, compare=False)
    """The mapping ``breakdown`` was last made from: the same object again (an idle container's kept
    reading) is not copied again. The caller does not mutate a mapping it passed."""

    @property
    def ratio(self) -> float:
        return self.working_set / self.limit if self.limit else 0.0

    def as_status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "namespace": self.namespace[:63],
            "pod": self.pod[:253],
            "podUID": self.pod_uid[:36],
            "container": self.container[:63],
        }
        if self.container_id:
            body["containerID"] = self.container_id[:128]
        if self.request is not None:
            body["request"] = max(0, self.request)
        if self.limit is not None:
            body["limit"] = max(0, self.limit)
        body["limitLevel"] = self.limit_level
        body["workingSet"] = max(0, self.working_set)
        if self.peaks:
            body["peaks"] = [{"t": max(0, t), "bytes": max(0, b)} for t, b in self.peaks[-MAX_PEAKS:]]
        bd = {BREAKDOWN_KEYS[k]: max(0, v) for k, v in self.breakdown.items() if k in BREAKDOWN_KEYS}
        if bd:
            body["breakdown"] = bd
        body["oomKills"] = self.oom_kills
        if self.xmx is not None:
            body["xmx"] = self.xmx
        elif self.max_ram_percentage is not None:
            body["maxRAMPercentage"] = self.max_ram_percentage
        return body


def limit_level_for_report(level: str | None) -> str:
    """Map a sweep's limit level (container|pod|qos|kubepods|other|None) to the CRD's enum."""
    if level in ("container", "pod"):
        return level
    if level in ("qos", "kubepods", "other", "ancestor"):
        return "ancestor"
    return "node"


class ProfileBook:
    """Per-container profiles keyed by (pod UID, container name); pure (the caller passes the time)."""

    def __init__(self, interval: int = PEAK_INTERVAL_SECONDS) -> None:
        self.interval = interval
        self.profiles: dict[tuple[str, str], Profile] = {}

    def observe(
        self,
        now: float,
        namespace: str,
        pod: str,
        pod_uid: str,
        container: str,
        working_set: int,
        *,
        container_id: str = "",
        request: int | None = None,
        limit: int | None = None,
        limit_level: str | None = None,
        breakdown: Mapping[str, int | None] | None = None,
    ) -> Profile:
        key = (pod_uid, container)
        p = self.profiles.get(key)
        if p is None:
            p = self.profiles[key] = Profile(namespace, pod, pod_uid, container)
        p.container_id = container_id or p.container_id
        p.request, p.limit = request, limit
        p.limit_level = limit_level_for_report(limit_level) if limit else "node"
        p.working_set = working_set
        if breakdown is None or breakdown is not p.breakdown_of:
            p.breakdown = {k: int(v) for k, v in (breakdown or {}).items() if v is not None}
            p.breakdown_of = breakdown
        p.seen = now
        start = int(now // self.interval * self.interval)
        if p.peaks and p.peaks[-1][0] == start:
            if working_set > p.peaks[-1][1]:
                p.peaks[-1] = (start, working_set)
        else:
            p.peaks.append((start, working_set))
            del p.peaks[:-MAX_PEAKS]
        return p

    def oom(self, pod_uid: str, container: str, namespace: str = "", pod: str = "") -> None:
        key = (pod_uid, container)
        p = self.profiles.get(key)
        if p is None:
            p = self.profiles[key] = Profile(namespace, pod, pod_uid, container)
        p.oom_kills += 1

    def forget_pods(self, live_uids: Iterable[str]) -> int:
        """Drop profiles of pods no longer on the node; return how many."""
        live = set(live_uids)
        gone = [k for k in self.profiles if k[0] not in live]
        for k in gone:
            del self.profiles[k]
        return len(gone)


def select_containers(profiles: Iterable[Profile], limit: int = MAX_CONTAINERS) -> list[Profile]:
    """The ``limit`` profiles most worth reporting: OOM-killed first, then closest to their limit."""
    ranked = sorted(profiles, key=lambda p: (-(p.oom_kills > 0), -p.ratio, p.namespace, p.pod, p.container))
    return ranked[:limit]


def _finding_status(f: Finding) -> dict[str, Any]:
    body: dict[str, Any] = {"id": f.id[:64], "severity": f.severity, "message": f.message[:1024]}
    if f.evidence:
        body["evidence"] = {k: v[:256] for k, v in f.evidence[:16]}
    if f.fix:
        body["fix"] = f.fix[:1024]
    return body


def build_status(
    *,
    report_time: str,
    agent_version: str,
    boot_id: str,
    node: Mapping[str, Any],
    findings: Iterable[Finding],
    profiles: Iterable[Profile],
    incidents: Iterable[Mapping[str, Any]],
    oom_kills_24h: int,
    kernel_log: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The ``status`` of a NodeMemoryReport, bounded to the schema's list limits and ``MAX_BYTES``.

    ``kernel_log``: ``{"source": kmsg|syslog|none, "refused": why the sources before it failed}``.
    """
    found = list(findings)
    sev = worst(found)
    all_profiles = list(profiles)
    status: dict[str, Any] = {
        "reportTime": report_time,
        "agentVersion": agent_version[:64],
        "bootID": boot_id[:64],
        "node": {k: v for k, v in node.items() if v is not None},
        "risk": "none" if sev in (None, "info") else sev,
        "findings": [_finding_status(f) for f in found[:MAX_FINDINGS]],
        "oomKills24h": max(0, oom_kills_24h),
        "containersObserved": len(all_profiles),
        "containers": [p.as_status() for p in select_containers(all_profiles)],
        "incidents": [dict(i) for i in list(incidents)[-MAX_INCIDENTS:]],
    }
    if kernel_log:
        status["kernelLog"] = {"source": kernel_log["source"]}
        if kernel_log.get("refused"):
            status["kernelLog"]["refused"] = kernel_log["refused"][:1024]
    return fit(status)


def size_of(status: Mapping[str, Any]) -> int:
    return len(json.dumps(status, separators=(",", ":")).encode())


def fit(status: dict[str, Any], max_bytes: int = MAX_BYTES) -> dict[str, Any]:
    """Shrink ``status`` until its JSON is under ``max_bytes``: shorter explanations, fewer
    incidents, then fewer containers (the least interesting last in the list go first)."""
    if size_of(status) < max_bytes:
        return status
    for inc in status.get("incidents", []):
        if len(inc.get("explanation", "")) > 200:
            inc["explanation"] = inc["explanation"][:197] + "..."
    while size_of(status) >= max_bytes and len(status.get("incidents", [])) > 4:
        status["incidents"] = status["incidents"][1:]
    containers = status.get("containers", [])
    while size_of(status) >= max_bytes and containers:
        containers.pop()
    return status


NOISE_BYTES = 1 << 20
"""A byte count that moved by less than this (or 5 %, whichever is more) has not changed."""
NOISE_RATIO = 0.05
_FUZZY = frozenset(("workingSet", "bytes", "breakdown", "swap"))
"""Keys whose numbers (or whose mapping's numbers) are byte counts that drift while nothing happens."""


def _close(a: int, b: int) -> bool:
    return abs(a - b) <= max(NOISE_BYTES, NOISE_RATIO * max(abs(a), abs(b)))


def _same(old: Any, new: Any, fuzzy: bool) -> bool:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        if old.keys() != new.keys():
            return False
        return all(_same(old[k], new[k], fuzzy or k in _FUZZY) for k in old)
    if isinstance(old, list) and isinstance(new, list):
        return len(old) == len(new) and all(_same(a, b, fuzzy) for a, b in zip(old, new, strict=True))
    if fuzzy and type(old) is int and type(new) is int:
        return _close(old, new)
    return bool(old == new)


def changed(last: Mapping[str, Any] | None, status: Mapping[str, Any]) -> bool:
    """Whether ``status`` differs from the ``last`` one written in a way worth a write.

    Byte counts that drift on an idle container (working set, breakdown, peaks, swap) count only
    when they moved by more than ``NOISE_BYTES`` or ``NOISE_RATIO`` of their size, against the value
    last *written*: a reclaim that moves a few pages between the file LRU lists, or a value sitting
    on a rounding boundary, is not a change. Everything else (a new peak interval, an OOM kill, a
    finding, a container that came or went, the kernel log source) compares exactly; ``reportTime``
    is ignored.
    """
    if last is None:
        return True
    keys = (set(last) | set(status)) - {"reportTime"}
    return not all(_same(last.get(k), status.get(k), k in _FUZZY) for k in keys)


def due(
    last_write: float | None, now: float, changed: bool, min_interval: float = MIN_WRITE_INTERVAL
) -> bool:
    """Write when something changed and the last write is at least ``min_interval`` old."""
    if not changed:
        return False
    return last_write is None or now - last_write >= min_interval
