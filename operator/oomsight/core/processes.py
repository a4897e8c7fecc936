"""The processes of one container: memory, state, OOM scores, and who the OOM killer will pick next.

Pure: ``parse_status``/``parse_smaps_rollup``/``parse_stat_state`` take the text of /proc files;
``summarize`` turns ``ProcessInfo`` records into a ``ProcessSummary``. ``oomsight.host.processes``
reads the files.

How the kernel picks its victim (mm/oom_kill.c, ``oom_badness`` and ``oom_evaluate_task``; Linux 6.x):

- every process in the OOM domain (the cgroup that hit its limit, or the whole machine) gets
  ``points = rss + swap entries + page-table bytes / PAGE_SIZE`` (rss is ``get_mm_rss``: anon + file +
  shmem pages mapped by the process, which is ``VmRSS`` in /proc/<pid>/status);
- then ``points += oom_score_adj * (totalpages / 1000)``, where ``totalpages`` is the domain's size:
  RAM + swap for a global OOM, the cgroup's limit (``mem_cgroup_get_max``) for a memcg OOM. So an
  ``oom_score_adj`` of 1000 adds the whole domain and one of -999 almost cancels any rss;
- ``oom_score_adj == -1000`` (``OOM_SCORE_ADJ_MIN``) exempts the process; so does having no memory
  map (zombies, kernel threads) or being already marked ``MMF_OOM_SKIP``;
- the highest ``points`` dies (on a tie the task met later in the scan replaces the earlier one).

``/proc/<pid>/oom_score`` (fs/proc/base.c ``proc_oom_score``) is the same badness scaled against RAM
+ swap: since 5.9 ``(1000 + points * 1000 / totalpages) * 2 / 3`` (0..2000, -1000 → 0), earlier
``points * 1000 / totalpages`` (0..1000). Inside a cgroup whose limit is far below RAM, the adj term
weighs differently than oom_score shows: ``predict_victim`` recomputes the badness with the cgroup's
limit when it is known and falls back to the highest ``oom_score`` otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from oomsight.core.errors import ParseError

KIB = 1024
PAGE_SIZE = 4096
"""x86-64/arm64 4 KiB pages; only used to turn a byte limit into the kernel's ``totalpages``."""
OOM_SCORE_ADJ_MIN = -1000

STATES = {
    "R": "running",
    "S": "sleeping",
    "D": "disk sleep",
    "T": "stopped",
    "t": "tracing stop",
    "Z": "zombie",
    "X": "dead",
    "I": "idle",
    "P": "parked",
}
"""fs/proc/array.c ``task_state_array``."""


@dataclass(frozen=True, slots=True)
class Status:
    """What /proc/<pid>/status says about memory and state (bytes)."""

    name: str
    state: str
    """One letter: R S D T t Z X I P."""
    rss_bytes: int | None
    """``VmRSS``; absent (None) for zombies and kernel threads (no memory map)."""
    swap_bytes: int | None
    pgtables_bytes: int | None
    """``VmPTE``: page tables, which oom_badness counts."""


def parse_status(text: str) -> Status:
    """Parse /proc/<pid>/status (fs/proc/array.c ``proc_pid_status``, ``task_mem``)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep:
            fields[key] = value.strip()
    if "Name" not in fields or "State" not in fields:
        raise ParseError(
            "process status has no Name/State lines",
            "pass the text of /proc/<pid>/status",
        )

    def kib(key: str) -> int | None:
        v = fields.get(key)
        if v is None:
            return None
        parts = v.split()
        if not parts or not parts[0].isdigit():
            raise ParseError(f"process status {key} is {v!r}, expected 'N kB'", "pass /proc/<pid>/status")
        return int(parts[0]) * KIB

    return Status(
        name=fields["Name"],
        state=fields["State"][:1],
        rss_bytes=kib("VmRSS"),
        swap_bytes=kib("VmSwap"),
        pgtables_bytes=kib("VmPTE"),
    )


def parse_stat_state(line: str) -> tuple[int, str, str]:
    """``(pid, comm, state)`` from a /proc/<pid>/stat line. comm may hold spaces and parentheses, so it
    runs from the first ``(`` to the last ``)`` (fs/proc/array.c ``do_task_stat``)."""
    open_, close = line.find("("), line.rfind(")")
    if open_ < 1 or close < open_ or len(line) < close + 3:
        raise ParseError(f"stat line {line[:60]!r} is not 'pid (comm) state ...'", "pass /proc/<pid>/stat")
    pid = line[:open_].strip()
    state = line[close + 2 : close + 3]
    if not pid.isdigit() or state not in STATES:
        raise ParseError(f"stat line {line[:60]!r} is not 'pid (comm) state ...'", "pass /proc/<pid>/stat")
    return int(pid), line[open_ + 1 : close], state


def parse_smaps_rollup(text: str) -> int:
    """USS from /proc/<pid>/smaps_rollup (4.14+): Private_Clean + Private_Dirty + Private_Hugetlb, bytes.

    The memory only this process maps: what killing it would give back. The kernel sums the VMAs
    itself (one file instead of parsing every VMA of /proc/<pid>/smaps); psutil's ``uss`` is the same
    sum (``memory_full_info``).
    """
    total = 0
    seen = False
    for line in text.splitlines():
        key, sep, value = line.partition(":")
        if sep and key in ("Private_Clean", "Private_Dirty", "Private_Hugetlb"):
            parts = value.split()
            if not parts or not parts[0].isdigit():
                raise ParseError(f"smaps_rollup {key} is {value.strip()!r}", "pass /proc/<pid>/smaps_rollup")
            total += int(parts[0]) * KIB
            seen = True
    if not seen:
        raise ParseError("smaps_rollup has no Private_* lines", "pass /proc/<pid>/smaps_rollup")
    return total


def parse_int(text: str, what: str) -> int:
    s = text.strip()
    try:
        return int(s)
    except ValueError:
        raise ParseError(f"{what} is {s[:40]!r}, expected an integer", f"pass /proc/<pid>/{what}") from None


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    """One process (thread group) of a container."""

    pid: int
    comm: str
    state: str
    """One letter as in /proc/<pid>/stat: R S D T t Z X I P."""
    rss_bytes: int
    """``VmRSS`` (0 for a zombie)."""
    uss_bytes: int | None
    """Unique set size from smaps_rollup; None when not measured (it costs a VMA walk)."""
    oom_score: int
    oom_score_adj: int
    swap_bytes: int = 0
    pgtables_bytes: int = 0

    @property
    def killable(self) -> bool:
        """Whether oom_badness would consider it: not exempt (-1000), has a memory map (not a zombie)."""
        return self.oom_score_adj != OOM_SCORE_ADJ_MIN and self.state not in ("Z", "X")

    def badness(self, total_pages: int) -> int:
        """oom_badness with ``total_pages`` as the OOM domain's size (mm/oom_kill.c)."""
        points = (self.rss_bytes + self.swap_bytes + self.pgtables_bytes) // PAGE_SIZE
        return points + self.oom_score_adj * (total_pages // 1000)

    def as_dict(self) -> dict[str, object]:
        return {
            "pid": self.pid,
            "comm": self.comm,
            "state": self.state,
            "rss_bytes": self.rss_bytes,
            "uss_bytes": self.uss_bytes,
            "swap_bytes": self.swap_bytes,
            "oom_score": self.oom_score,
            "oom_score_adj": self.oom_score_adj,
        }


def predict_victim(processes: Iterable[ProcessInfo], limit_bytes: int | None = None) -> ProcessInfo | None:
    """The process the OOM killer would pick among ``processes`` right now; None if none is killable.

    With ``limit_bytes`` (the limit of the cgroup that would hit OOM) the badness is recomputed as the
    kernel does for a memcg OOM; without it the highest ``oom_score`` (scaled to RAM + swap) is used.
    Ties go to the higher pid (the later task in the kernel's scan, usually the younger one).
    """
    candidates = [p for p in processes if p.killable]
    if not candidates:
        return None
    if limit_bytes is not None and limit_bytes > 0:
        total = limit_bytes // PAGE_SIZE
        return max(candidates, key=lambda p: (p.badness(total), p.pid))
    return max(candidates, key=lambda p: (p.oom_score, p.pid))


@dataclass(frozen=True, slots=True)
class ProcessSummary:
    """A container's processes, summed."""

    count: int
    rss_bytes: int
    uss_bytes: int | None
    """Sum of USS; None when USS was not measured (or not measurable for every process)."""
    zombies: int
    dstate: int
    """Processes in uninterruptible sleep (D): stuck in the kernel, often on I/O or reclaim."""
    next_victim: ProcessInfo | None
    processes: tuple[ProcessInfo, ...]
    vanished: int = 0
    """Pids that exited between listing and reading (skipped)."""
    errors: int = 0
    """Pids skipped because their /proc files could not be parsed."""
    victim_basis: str = "oom_score"
    """``badness`` when the victim was computed against a cgroup limit, else ``oom_score``."""

    def as_dict(self) -> dict[str, object]:
        """The ``processes`` field of ``oomsight top --json``."""
        return {
            "count": self.count,
            "rss_bytes": self.rss_bytes,
            "uss_bytes": self.uss_bytes,
            "zombies": self.zombies,
            "dstate": self.dstate,
            "vanished": self.vanished,
            "errors": self.errors,
            "next_victim": self.next_victim.as_dict() if self.next_victim else None,
            "victim_basis": self.victim_basis,
            "processes": [p.as_dict() for p in self.processes],
        }


def summarize(
    processes: Iterable[ProcessInfo], vanished: int = 0, errors: int = 0, limit_bytes: int | None = None
) -> ProcessSummary:
    """Sum ``processes`` (sorted by RSS, largest first) and predict the next victim."""
    procs = tuple(sorted(processes, key=lambda p: (-p.rss_bytes, p.pid)))
    uss = [p.uss_bytes for p in procs]
    return ProcessSummary(
        count=len(procs),
        rss_bytes=sum(p.rss_bytes for p in procs),
        uss_bytes=sum(u for u in uss if u is not None) if procs and all(u is not None for u in uss) else None,
        zombies=sum(p.state == "Z" for p in procs),
        dstate=sum(p.state == "D" for p in procs),
        next_victim=predict_victim(procs, limit_bytes),
        processes=procs,
        vanished=vanished,
        errors=errors,
        victim_basis="badness" if limit_bytes else "oom_score",
    )
