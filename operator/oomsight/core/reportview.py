"""A NodeMemoryReport read back: the agent's ``status`` (``oomsight.kube.crd`` documents the fields)
as frozen values for the cluster commands (``kubectl oomsight why|top|nodes``).

Parsing is lenient: a field of the wrong type is left out (None), never raised, because the report
was validated by the API server against the CRD schema and an older or newer agent may add or drop
optional fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from oomsight.core.memory import Breakdown


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 else None


def _str(v: Any) -> str | None:
    return str(v) if isinstance(v, str) and v else None


def parse_time(text: Any) -> float | None:
    """RFC 3339 (``Z`` or offset, with or without fractions) → Unix seconds; None when absent or bad."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ReportContainer:
    namespace: str
    pod: str
    pod_uid: str
    container: str
    request: int | None
    limit: int | None
    """The effective limit: the tightest between the container and the root."""
    limit_level: str | None
    working_set: int | None
    peak: int | None
    """The highest 5-minute peak the report still holds."""
    peak_span_seconds: int
    """How far back those peaks reach (0 without peaks)."""
    breakdown: Breakdown | None
    oom_kills: int | None

    @property
    def ratio(self) -> float | None:
        if self.working_set is None or not self.limit:
            return None
        return self.working_set / self.limit


@dataclass(frozen=True, slots=True)
class ReportIncident:
    time: float | None
    pod_uid: str | None
    container: str | None
    scope: str | None
    pid: int | None
    comm: str | None
    rss: int | None
    container_survived: bool | None
    limit: int | None
    explanation: str
    boot_id: str
    seq: int | None
    dominant: str | None


@dataclass(frozen=True, slots=True)
class NodeReport:
    node: str
    report_time: float | None
    agent_version: str | None
    kernel: str | None
    cgroup_version: str | None
    memory_controller: str | None
    cgroup_driver: str | None
    kmem_accounting: str | None
    memcg_counted: int | None
    memcg_live: int | None
    risk: str | None
    findings: tuple[Mapping[str, Any], ...]
    oom_kills_24h: int | None
    containers: tuple[ReportContainer, ...]
    incidents: tuple[ReportIncident, ...]

    @property
    def dying_memcgs(self) -> int | None:
        if self.memcg_counted is None or self.memcg_live is None:
            return None
        return max(0, self.memcg_counted - self.memcg_live)

    @property
    def cgroup(self) -> str:
        """``v1 (cgroupfs)``: the version and the kubelet's driver, for one table cell."""
        version = self.cgroup_version or "?"
        return f"{version} ({self.cgroup_driver})" if self.cgroup_driver else version

    def containers_of(self, pod_uid: str) -> dict[str, ReportContainer]:
        return {c.container: c for c in self.containers if c.pod_uid == pod_uid}


def _breakdown(bd: Any) -> Breakdown | None:
    if not isinstance(bd, Mapping) or _int(bd.get("anon")) is None:
        return None
    return Breakdown(
        anon=_int(bd.get("anon")),
        active_file=_int(bd.get("activeFile")),
        inactive_file=_int(bd.get("inactiveFile")),
        shmem=_int(bd.get("shmem")),
        kernel=_int(bd.get("kernel")),
        swap=_int(bd.get("swap")),
        dirty=None,
        writeback=None,
    )


def _container(c: Mapping[str, Any]) -> ReportContainer:
    peaks = [
        (int(p["t"]), int(p["bytes"]))
        for p in c.get("peaks") or []
        if isinstance(p, Mapping) and _int(p.get("t")) is not None and _int(p.get("bytes")) is not None
    ]
    ws = _int(c.get("workingSet"))
    peak_values = [b for _, b in peaks] + ([ws] if ws is not None else [])
    return ReportContainer(
        namespace=str(c.get("namespace") or ""),
        pod=str(c.get("pod") or ""),
        pod_uid=str(c.get("podUID") or ""),
        container=str(c.get("container") or ""),
        request=_int(c.get("request")),
        limit=_int(c.get("limit")) or None,
        limit_level=_str(c.get("limitLevel")),
        working_set=ws,
        peak=max(peak_values) if peak_values else None,
        peak_span_seconds=(peaks[-1][0] - peaks[0][0] + 300) if peaks else 0,
        breakdown=_breakdown(c.get("breakdown")),
        oom_kills=_int(c.get("oomKills")),
    )


def _incident(i: Mapping[str, Any]) -> ReportIncident:
    victim: Mapping[str, Any] = i["victim"] if isinstance(i.get("victim"), Mapping) else {}
    survived = victim.get("containerSurvived")
    return ReportIncident(
        time=parse_time(i.get("time")),
        pod_uid=_str(i.get("podUID")),
        container=_str(i.get("container")),
        scope=_str(i.get("scope")),
        pid=_int(victim.get("pid")),
        comm=_str(victim.get("comm")),
        rss=_int(victim.get("rss")),
        container_survived=survived if isinstance(survived, bool) else None,
        limit=_int(i.get("limit")),
        explanation=str(i.get("explanation") or ""),
        boot_id=str(i.get("bootID") or ""),
        seq=_int(i.get("seq")),
        dominant=_str(i.get("dominant")),
    )


def parse_report(obj: Mapping[str, Any]) -> NodeReport:
    """A NodeMemoryReport object (``metadata`` + ``status``) → NodeReport."""
    meta = obj.get("metadata") or {}
    st = obj.get("status") or {}
    node: Mapping[str, Any] = st["node"] if isinstance(st.get("node"), Mapping) else {}
    memcg: Mapping[str, Any] = node["memoryCgroups"] if isinstance(node.get("memoryCgroups"), Mapping) else {}
    return NodeReport(
        node=str(meta.get("name") or (obj.get("spec") or {}).get("nodeName") or ""),
        report_time=parse_time(st.get("reportTime")),
        agent_version=_str(st.get("agentVersion")),
        kernel=_str(node.get("kernel")),
        cgroup_version=_str(node.get("cgroupVersion")),
        memory_controller=_str(node.get("memoryController")),
        cgroup_driver=_str(node.get("cgroupDriver")),
        kmem_accounting=_str(node.get("kmemAccounting")),
        memcg_counted=_int(memcg.get("counted")),
        memcg_live=_int(memcg.get("live")),
        risk=_str(st.get("risk")),
        findings=tuple(f for f in st.get("findings") or [] if isinstance(f, Mapping)),
        oom_kills_24h=_int(st.get("oomKills24h")),
        containers=tuple(_container(c) for c in st.get("containers") or [] if isinstance(c, Mapping)),
        incidents=tuple(_incident(i) for i in st.get("incidents") or [] if isinstance(i, Mapping)),
    )
