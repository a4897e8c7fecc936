"""``oomsight top``: containers sorted by working set ÷ effective limit, with what their memory is.

The working set is cAdvisor's (what the kubelet evicts on and what ``kubectl top`` shows); the
effective limit is the tightest limit between the container and the root, so a pod limit tighter than
the container's shows up as the limit that will actually be hit. ``--json`` is a contract (README).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from oomsight.cli.common import add_host_root, add_json, print_json
from oomsight.core.memory import V1_SWEEP_FILES, Breakdown, Pressure, PressureLine, breakdown
from oomsight.core.processes import ProcessSummary
from oomsight.core.quantity import human_bytes
from oomsight.host.cgroupfs import CgroupEntry, CgroupWalker, Sweep, detect_layout
from oomsight.host.processes import read_processes

HELP = "containers sorted by working set / effective limit, with what the memory is"



def configure(parser: argparse.ArgumentParser) -> None:
    add_host_root(parser)
    add_json(parser)
    parser.add_argument(
        "--all", action="store_true", help="also list cgroups outside Kubernetes (system services, ...)"
    )



def ratio(entry: CgroupEntry) -> float | None:
    """Working set ÷ effective limit; None without a reading or a limit."""
    if entry.reading is None or not entry.limit.limit_bytes:
        return None
    return entry.reading.working_set_bytes / entry.limit.limit_bytes


def sort_key(entry: CgroupEntry) -> tuple[int, float, int, str]:
    """Closest to its limit first; then unlimited ones by working set; unreadable ones last."""
    r = ratio(entry)
    if entry.reading is None:
        return (2, 0.0, 0, entry.path)
    if r is None:
        return (1, 0.0, -entry.reading.working_set_bytes, entry.path)
    return (0, -r, -entry.reading.working_set_bytes, entry.path)


Processes = dict[str, ProcessSummary]
"""Per cgroup path: its processes, read from /proc once per ``top``."""


def read_all_processes(sweep: Sweep, proc_root: Path) -> Processes:
    """Each swept cgroup's processes (``cgroup.procs`` pids, read by ``host.processes``)."""
    out: Processes = {}
    for e in sweep.entries:
        if e.pids is not None:
            out[e.path] = read_processes(e.pids, proc_root, limit_bytes=e.limit.limit_bytes)
    return out


def container_json(entry: CgroupEntry, processes: Processes | None = None) -> dict[str, Any]:
    """One element of ``containers[]`` (the README documents every field)."""
    kube = entry.kube
    reading = entry.reading
    r = ratio(entry)
    return {
        "cgroup": entry.path,
        "pod_uid": kube.pod_uid if kube else None,
        "container_id": kube.container_id if kube else None,
        "runtime": kube.runtime if kube else None,
        "qos": kube.qos if kube else None,
        "working_set_bytes": reading.working_set_bytes if reading else None,
        "usage_bytes": reading.usage_bytes if reading else None,
        "limit_bytes": entry.limit.limit_bytes,
        "limit_level": entry.limit.level,
        "limit_cgroup": entry.limit.path,
        "working_set_ratio": None if r is None else round(r, 4),
        "breakdown": breakdown(reading).as_dict() if reading else None,
        "oom_kills": reading.oom_kills if reading else None,
        "peak_bytes": reading.peak_bytes if reading else None,
        "pressure": _pressure_json(reading.pressure) if reading and reading.pressure else None,
        "processes": _processes_json(entry, processes),
        "error": entry.error,
    }


def _pressure_json(p: Pressure) -> dict[str, dict[str, float] | None]:
    """v2 ``memory.pressure`` (PSI) as the agent's metrics give it: per kind, the share of the last
    10 s its tasks were stalled on memory (0-1) and the seconds stalled since the cgroup was made."""

    def line(x: PressureLine | None) -> dict[str, float] | None:
        return None if x is None else {"avg10_ratio": x.avg10 / 100, "stalled_seconds": x.total_us / 1e6}

    return {"some": line(p.some), "full": line(p.full)}


def _processes_json(entry: CgroupEntry, processes: Processes | None) -> dict[str, object] | None:
    summary = (processes or {}).get(entry.path)
    if summary is not None:
        return summary.as_dict()
    return {"count": len(entry.pids)} if entry.pids is not None else None


def document(sweep: Sweep, processes: Processes | None = None) -> dict[str, Any]:
    layout = sweep.layout
    return {
        "host_root": str(layout.host_root),
        "cgroup_version": layout.version,
        "memory_cgroup_version": layout.memory_version,
        "memory_root": str(layout.memory_root),
        "cgroup_driver": layout.driver,
        "vanished": sweep.vanished,
        "errors": sweep.errors,
        "containers": [container_json(e, processes) for e in sorted(sweep.entries, key=sort_key)],
    }


def _name(entry: CgroupEntry) -> tuple[str, str, str]:
    kube = entry.kube
    if kube is None or kube.pod_uid is None:
        return entry.path, "", ""
    cid = (kube.container_id or "")[:12]
    return kube.pod_uid, cid, kube.qos or ""


HEADER = (
    "POD UID or CGROUP", "CONTAINER", "QOS", "WORKSET", "LIMIT", "LEVEL", "USE%",
    "ANON", "ACT_FILE", "INACT_FILE", "SHMEM", "KERNEL", "SWAP", "PIDS", "NEXT VICTIM",
)
"""The columns of ``oomsight top``; ``kubectl oomsight top`` prints the same ones (``row``, ``render``)."""
_LEFT = (0, 1, 2, 5, 14)


def row(
    pod: str,
    container: str,
    qos: str,
    working_set: int,
    limit: int | None,
    level: str | None,
    r: float | None,
    b: Breakdown | None,
    pids: str = "",
    victim: str = "",
) -> tuple[str, ...]:
    """One table row: sizes in binary units, ``none`` without a limit, ``-`` for unknown kinds."""
    kinds = (b.anon, b.active_file, b.inactive_file, b.shmem, b.kernel, b.swap) if b else (None,) * 6
    return (
        pod, container, qos,
        human_bytes(working_set),
        human_bytes(limit) if limit is not None else "none",
        level or "",
        f"{r * 100:.0f}%" if r is not None else "",
        *(human_bytes(v) for v in kinds),
        pids, victim,
    )  # fmt: skip


def render(rows: list[tuple[str, ...]], first: str = HEADER[0]) -> list[str]:
    """``HEADER`` (its first title replaced by ``first``) and ``rows`` as aligned lines (names left,
    numbers right)."""
    table_rows = [(first, *HEADER[1:]), *rows]
    widths = [max(len(r[i]) for r in table_rows) for i in range(len(HEADER))]
    return [
        "  ".join(c.ljust(w) if i in _LEFT else c.rjust(w)
                  for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip()
        for r in table_rows
    ]  # fmt: skip


def table(sweep: Sweep, processes: Processes | None = None) -> str:
    rows: list[tuple[str, ...]] = []
    broken: list[CgroupEntry] = []
    for e in sorted(sweep.entries, key=sort_key):
        if e.reading is None:
            broken.append(e)
            continue
        pod, cid, qos = _name(e)
        rows.append(row(
            pod, cid, qos, e.reading.working_set_bytes, e.limit.limit_bytes, e.limit.level, ratio(e),
            breakdown(e.reading),
            str(len(e.pids)) if e.pids is not None else "",
            _victim((processes or {}).get(e.path)),
        ))  # fmt: skip
    lines = render(rows)
    if not rows:
        lines.append("(no container cgroups found; --all lists every memory cgroup)")
    for e in broken:
        lines.append(f"unreadable: {e.path}: {e.error}")
    layout = sweep.layout
    lines.append(
        f"cgroup {layout.version} (memory {layout.memory_version}, driver {layout.driver}) at "
        f"{layout.memory_root}: {len(sweep.entries)} cgroups, {sweep.vanished} vanished, "
        f"{sweep.errors} unreadable"
    )
    return "\n".join(lines)


def _victim(summary: ProcessSummary | None) -> str:
    if summary is None or summary.next_victim is None:
        return ""
    v = summary.next_victim
    return f"{v.comm}[{v.pid}]"


def run(args: argparse.Namespace) -> int:
    layout = detect_layout(args.host_root)
    # v1: the sweep's files plus the peak (memory.max_usage_in_bytes), one read more per cgroup for a
    # one-off listing; v2 reads memory.peak and memory.pressure by default.
    files = (*V1_SWEEP_FILES, "memory.max_usage_in_bytes") if layout.memory_version == "v1" else None
    with CgroupWalker(layout, files=files, keep_open=False) as walker:
        result = walker.sweep(include_all=args.all, with_pids=True)
    processes = read_all_processes(result, Path(args.host_root) / "proc")
    if args.json:
        print_json(document(result, processes))
    else:
        print(table(result, processes))
    return 0
