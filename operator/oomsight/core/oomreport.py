"""Assemble the kernel's many-line OOM report into one ``Incident`` (pure, streaming).

What the kernel prints for one OOM kill (mm/oom_kill.c ``dump_header``, ``oom_kill_process``,
``__oom_kill_process``; mm/memcontrol.c ``mem_cgroup_print_oom_meminfo``), oldest kernels first:

- trigger: ``<comm> invoked oom-killer: gfp_mask=0x..(..), order=N, oom_score_adj=N``;
- ``CPU: N PID: N Comm: <comm> Not tainted <release> #..`` (the kernel release) and a stack trace;
- memcg OOM, ≤4.18: ``Task in <task memcg> killed as a result of limit of <oom memcg>``;
- ``memory: usage NkB, limit NkB, failcnt N``, ``memory+swap: ...``, ``kmem: ...`` (v1) or
  ``swap: ...`` (v2);
- ``Memory cgroup stats for <path>: cache:NKB rss:NKB ...`` (v1, ≤ ~5.2, one line per cgroup of the
  subtree, values local to each) or ``Memory cgroup stats for <path>:`` followed by ``key value``
  lines (v1 later: bytes with ``total_*`` hierarchical keys; v2: ``memory.stat`` keys, bytes);
- global OOM: ``Mem-Info:`` and its ``key:pages`` summary, zones, ``N pages RAM``;
- the task table: 3.x ``[ pid ]   uid  tgid total_vm      rss nr_ptes swapents oom_score_adj name``,
  4.8 adds ``nr_pmds``, 4.15 ``pgtables_bytes``, 4.19 ``Tasks state (memory values in pages):`` and
  ``[  pid  ]``, 6.x ``rss_anon rss_file rss_shmem`` (values in pages, pgtables in bytes);
- ≥4.19: ``oom-kill:constraint=..,nodemask=..,cpuset=..,mems_allowed=..,oom_memcg=..,
  task_memcg=..,task=<comm>,pid=N,uid=N`` (``oom_memcg`` absent for a global OOM: ``global_oom``);
- ≤5.0: ``[Memory cgroup out of memory|Out of memory]: Kill process N (comm) score S or sacrifice
  child`` then ``Killed process M (comm) total-vm:NkB, anon-rss:NkB, file-rss:NkB[, shmem-rss:NkB]``
  where M may be a child of N;
- ≥5.1: one ``Memory cgroup out of memory: Killed process N (comm) total-vm:.., anon-rss:..,
  file-rss:.., shmem-rss:.., UID:N pgtables:NkB oom_score_adj:N`` (``Out of memory:`` when global);
- memory.oom.group (≥4.19): ``Tasks in <path> are going to be killed due to memory.oom.group set``
  then one kill line per task of that cgroup.

``dump_header`` is rate-limited, the kill line is not: in a storm, kill lines arrive with no header.
Lines from other CPUs and subsystems interleave with the report. The assembler therefore keys on
the shape of each line, never on its position, and creates an incident only from a kill line or an
``oom-kill:`` summary, never from a header alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from datetime import datetime

from oomsight.core.kmsg import Record

KIB = 1024

# --- line shapes (cheap substring checks guard every regex; see feed()) -------------------------

_TRIGGER = re.compile(
    r"(?P<comm>.*?) invoked oom-killer: gfp_mask=(?P<gfp>[^,]*), (?:nodemask=[^,]*, )?order=(?P<order>-?\d+),"
    r" oom_score_adj=(?P<adj>-?\d+)"
)
_KILLED = re.compile(
    r"Killed process (?P<pid>\d+) \((?P<comm>.*)\)(?:, UID (?P<uid0>\d+))?,?"
    r" total-vm:(?P<vm>\d+)kB, anon-rss:(?P<anon>\d+)kB,"
    r" file-rss:(?P<file>\d+)kB(?:, shmem-rss:(?P<shmem>\d+)kB)?(?:,? UID:(?P<uid>\d+))?"
    r"(?: pgtables:(?P<pgt>\d+)kB)?(?: oom_score_adj:(?P<adj>-?\d+))?"
)
_KILLED_BARE = re.compile(r"Killed process (?P<pid>\d+)(?: \((?P<comm>.*)\))?")
"""A kill line without the memory figures, or one cut short (a log saved mid-line): the pid is enough."""
_SELECT = re.compile(r"Kill process (?P<pid>\d+) \((?P<comm>.*)\) score (?P<score>-?\d+) or sacrifice child")
_COUNTER = re.compile(
    r"^(?P<name>memory|memory\+swap|kmem|swap|tcp): usage (?P<usage>\d+)kB, limit (?P<limit>\d+)kB,"
    r" failcnt (?P<failcnt>\d+)"
)
_TASK_IN = re.compile(r"Task in (?P<task>\S+) killed as a result of limit of (?P<oom>\S+)")
_GROUP = re.compile(r"Tasks in (?P<path>\S+) are going to be killed due to memory\.oom\.group set")
_KV_KB = re.compile(r"(\w+):(\d+)KB")
_KV_PAGES = re.compile(r"(\w+):(\d+)(?=\s|$)")
_RELEASE = re.compile(r"(?:Not tainted|Tainted: .*?)\s+(\d+\.\d+[.\d]*[^\s#]*)(?=\s|$)")
_PAGES_RAM = re.compile(r"^(\d+) pages RAM")
_OOMKILL_KEYS = ("constraint", "oom_memcg", "task_memcg")
_AFTER_KILL = ("Tasks in ", "Memory cgroup ", "memory: usage ", "Mem-Info", "Task in ")
"""Lines that still belong to a report once its kill line was seen (or start the next one's body)."""
_MID_REPORT = (
    "Memory cgroup stats for ",
    "Task in ",
    "memory: usage ",
    "Tasks state",
    "[ pid ]",
    "[  pid  ]",
)


# --- what comes out ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Trigger:
    """The allocation that failed: ``<comm> invoked oom-killer: gfp_mask=.., order=.., oom_score_adj=..``."""

    comm: str
    gfp_mask: str
    order: int
    oom_score_adj: int


@dataclass(frozen=True, slots=True)
class MemcgCounter:
    """One ``memory:`` / ``memory+swap:`` / ``kmem:`` / ``swap:`` line of the OOM memcg, in bytes."""

    name: str
    usage_bytes: int
    limit_bytes: int
    failcnt: int


@dataclass(frozen=True, slots=True)
class TaskRow:
    """One row of the task table. Memory values are pages except ``pgtables_bytes``."""

    pid: int
    uid: int | None
    tgid: int | None
    total_vm_pages: int | None
    rss_pages: int | None
    rss_anon_pages: int | None
    rss_file_pages: int | None
    rss_shmem_pages: int | None
    pgtables_bytes: int | None
    """``pgtables_bytes`` (≥4.15) or ``nr_ptes``(+``nr_pmds``) × 4096 on older kernels."""
    swapents_pages: int | None
    oom_score_adj: int | None
    name: str

    @property
    def badness_pages(self) -> int:
        """oom_badness before oom_score_adj: rss + swap entries + page tables / PAGE_SIZE (4 KiB)."""
        return (self.rss_pages or 0) + (self.swapents_pages or 0) + (self.pgtables_bytes or 0) // 4096


@dataclass(frozen=True, slots=True)
class Victim:
    """A ``Killed process`` line (or, without one, what the ``oom-kill:`` summary says)."""

    pid: int
    comm: str
    total_vm_bytes: int | None = None
    anon_rss_bytes: int | None = None
    file_rss_bytes: int | None = None
    shmem_rss_bytes: int | None = None
    uid: int | None = None
    pgtables_bytes: int | None = None
    oom_score_adj: int | None = None
    seq: int | None = None
    usec: int | None = None
    wall: datetime | None = None


@dataclass(frozen=True, slots=True)
class Incident:
    """One OOM kill (or one memory.oom.group kill of several tasks) with everything its report said."""

    victims: tuple[Victim, ...]
    seq: int | None = None
    """Sequence number of the first kill line (or summary) — a stable id within a boot."""
    usec: int | None = None
    wall: datetime | None = None
    trigger: Trigger | None = None
    kernel: str | None = None
    """Kernel release from the report's ``CPU: .. Comm: ..`` line, when it was printed."""
    constraint: str | None = None
    """CONSTRAINT_MEMCG, CONSTRAINT_NONE, CONSTRAINT_CPUSET, CONSTRAINT_MEMORY_POLICY."""
    oom_memcg: str | None = None
    """The cgroup whose limit was hit; None for a global (node-wide) OOM."""
    task_memcg: str | None = None
    """The victim's own cgroup."""
    node_wide: bool = False
    counters: tuple[MemcgCounter, ...] = ()
    memcg_stats: tuple[tuple[str, tuple[tuple[str, int], ...]], ...] = ()
    """``(path, ((key, bytes), ...))`` per ``Memory cgroup stats for`` block, in printed order."""
    stats_format: str | None = None
    """``v1-line`` (one line per cgroup, local values), ``v1`` (total_* keys) or ``v2``."""
    meminfo: tuple[tuple[str, int], ...] = ()
    """Global OOM ``Mem-Info`` summary, pages; ``totalram_pages`` from ``N pages RAM``."""
    tasks: tuple[TaskRow, ...] = ()
    task_columns: tuple[str, ...] = ()
    selected_pid: int | None = None
    """≤5.0: the process chosen (``Kill process N .. or sacrifice child``); the victim may be its child."""
    selected_comm: str | None = None
    selected_score: int | None = None
    summary_pid: int | None = None
    summary_comm: str | None = None
    summary_uid: int | None = None
    group_kill: bool = False
    group_cgroup: str | None = None
    header_missing: bool = False
    """No ``invoked oom-killer`` header was seen (rate-limited, or the log starts mid-report)."""
    evidence: tuple[tuple[int | None, str], ...] = ()
    """``(seq, text)`` of every line the incident was built from."""

    @property
    def victim(self) -> Victim:
        """The first process killed (the one the OOM killer chose)."""
        return self.victims[0]

    def counter(self, name: str) -> MemcgCounter | None:
        return next((c for c in self.counters if c.name == name), None)

    def stats(self, path: str | None = None) -> dict[str, int]:
        """The stats block for ``path`` (default: the first one, the OOM memcg's own)."""
        for p, kv in self.memcg_stats:
            if path is None or p == path:
                return dict(kv)
        return {}


# --- assembly ------------------------------------------------------------------------------------


@dataclass
class _Partial:
    """Mutable scratch for one report while it is being read."""

    trigger: Trigger | None = None
    kernel: str | None = None
    constraint: str | None = None
    oom_memcg: str | None = None
    task_memcg: str | None = None
    global_oom: bool = False
    counters: list[MemcgCounter] = field(default_factory=list)
    stats: list[tuple[str, list[tuple[str, int]]]] = field(default_factory=list)
    stats_format: str | None = None
    meminfo: list[tuple[str, int]] = field(default_factory=list)
    columns: tuple[str, ...] = ()
    tasks: list[TaskRow] = field(default_factory=list)
    victims: list[Victim] = field(default_factory=list)
    selected: tuple[int, str, int] | None = None
    summary: tuple[int, str, int] | None = None
    summary_at: tuple[int | None, int | None, datetime | None] | None = None
    group: str | None = None
    evidence: list[tuple[int | None, str]] = field(default_factory=list)
    mode: str = ""
    """Which multi-line section is open: ``stats``, ``tasks``, ``meminfo`` or ``""``."""

    @property
    def killed(self) -> bool:
        return bool(self.victims) or self.summary is not None

    def incident(self) -> Incident:
        victims = list(self.victims)
        if not victims and self.summary is not None:
            pid, comm, uid = self.summary
            seq, usec, wall = self.summary_at or (None, None, None)
            victims.append(Victim(pid=pid, comm=comm, uid=uid, seq=seq, usec=usec, wall=wall))
        first = victims[0]
        if self.summary is not None:
            first = next((v for v in victims if v.pid == self.summary[0]), first)
            if first.uid is None:
                first = replace(first, uid=self.summary[2])
            victims = [first] + [v for v in victims if v.pid != first.pid]
        oom_memcg, constraint = self.oom_memcg, self.constraint
        if oom_memcg is None and self.stats and not self.global_oom:
            # The first stats block is the OOM memcg's own (mem_cgroup_print_oom_meminfo).
            oom_memcg, constraint = self.stats[0][0], constraint or "CONSTRAINT_MEMCG"
        node_wide = self.global_oom or (
            self.constraint is not None and self.constraint != "CONSTRAINT_MEMCG" and self.oom_memcg is None
        )
        if not node_wide and self.constraint is None and self.oom_memcg is None and self.meminfo:
            node_wide = True
        return Incident(
            victims=tuple(victims),
            seq=first.seq,
            usec=first.usec,
            wall=first.wall,
            trigger=self.trigger,
            kernel=self.kernel,
            constraint=constraint,
            oom_memcg=oom_memcg,
            task_memcg=self.task_memcg,
            node_wide=node_wide,
            counters=tuple(self.counters),
            memcg_stats=tuple((p, tuple(kv)) for p, kv in self.stats),
            stats_format=self.stats_format,
            meminfo=tuple(self.meminfo),
            tasks=tuple(self.tasks),
            task_columns=self.columns,
            selected_pid=self.selected[0] if self.selected else None,
            selected_comm=self.selected[1] if self.selected else None,
            selected_score=self.selected[2] if self.selected else None,
            summary_pid=self.summary[0] if self.summary else None,
            summary_comm=self.summary[1] if self.summary else None,
            summary_uid=self.summary[2] if self.summary else None,
            group_kill=self.group is not None,
            group_cgroup=self.group,
            header_missing=self.trigger is None,
            evidence=tuple(self.evidence),
        )


def _kb(value: str | None) -> int | None:
    return None if value is None else int(value) * KIB


_INT_COLUMNS = {
    "uid": "uid",
    "tgid": "tgid",
    "total_vm": "total_vm_pages",
    "rss": "rss_pages",
    "rss_anon": "rss_anon_pages",
    "rss_file": "rss_file_pages",
    "rss_shmem": "rss_shmem_pages",
    "swapents": "swapents_pages",
    "oom_score_adj": "oom_score_adj",
}


def _task_row(text: str, columns: tuple[str, ...]) -> TaskRow | None:
    """``[  2314]     0  2314    20533 ... python3`` under ``columns`` (the header after ``]``)."""
    close = text.find("]")
    if close < 2:
        return None
    try:
        pid = int(text[1:close])
    except ValueError:
        return None
    numeric = len(columns) - 1  # the last column is the name, which may contain spaces
    parts = text[close + 1 :].split(None, numeric)
    if len(parts) < numeric:
        return None
    values: dict[str, int | None] = {}
    pgtables: int | None = None
    try:
        for col, raw in zip(columns[:numeric], parts[:numeric], strict=True):
            n = int(raw)
            if col == "pgtables_bytes":
                pgtables = n
            elif col in ("nr_ptes", "nr_pmds"):
                pgtables = (pgtables or 0) + n * 4096
            elif col in _INT_COLUMNS:
                values[_INT_COLUMNS[col]] = n
    except ValueError:
        return None
    name = parts[numeric] if len(parts) > numeric else ""
    return TaskRow(
        pid=pid,
        uid=values.get("uid"),
        tgid=values.get("tgid"),
        total_vm_pages=values.get("total_vm_pages"),
        rss_pages=values.get("rss_pages"),
        rss_anon_pages=values.get("rss_anon_pages"),
        rss_file_pages=values.get("rss_file_pages"),
        rss_shmem_pages=values.get("rss_shmem_pages"),
        pgtables_bytes=pgtables,
        swapents_pages=values.get("swapents_pages"),
        oom_score_adj=values.get("oom_score_adj"),
        name=name,
    )


def _parse_oomkill(text: str) -> dict[str, str]:
    """``oom-kill:constraint=..,..,task=<comm>,pid=N,uid=N``; comm may hold commas, so split from the end."""
    body = text[text.index("oom-kill:") + 9 :]
    out: dict[str, str] = {}
    head, sep, tail = body.rpartition(",task=")
    if sep:
        comm, _, rest = tail.rpartition(",pid=")
        pid, _, uid = rest.partition(",uid=")
        out["task"], out["pid"], out["uid"] = comm, pid, uid
        body = head
    for key in _OOMKILL_KEYS:
        marker = key + "="
        i = body.find(marker)
        if i < 0 or (i > 0 and body[i - 1] != ","):
            continue
        start = i + len(marker)
        end = body.find(",", start)
        out[key] = body[start:] if end < 0 else body[start:end]
    return out


class OomAssembler:
    """Feed kernel log records in order; get back each ``Incident`` once its report is complete.

    An incident is held after its kill line (a memory.oom.group kill prints more kill lines after
    the first, maybe with other CPUs' lines between them) until the next report begins. A live
    reader calls ``idle()`` whenever its source has nothing more to read, so an incident never
    waits for the next OOM; ``flush()`` ends the stream (a header with no kill line is dropped
    then: no incident invented).
    """

    __slots__ = ("_cur", "_open", "_release", "dropped_headers")

    def __init__(self) -> None:
        self._cur: _Partial | None = None
        self._release: str | None = None
        """Release from a ``CPU: .. Comm: ..`` line seen while no report was open: a log that starts
        between the header's first line and its body (``journalctl -xe`` scrolled there) still names
        the kernel; only a report picked up mid-way (``_MID_REPORT``) takes it."""
        self.dropped_headers = 0
        """Headers seen with no kill line after them (e.g. the victim was already exiting)."""
        self._open: tuple[_Partial, int | None] | None = None
        """The report being read and the sequence number of its first record."""

    @property
    def open_seq(self) -> int | None:
        """Sequence number of the first record of a report still being read (no incident yet), or
        None. A reader that saves its place must resume at or before it: resumed after it, the rest
        of the report (its kill line, maybe without the ``oom-kill:`` line naming the cgroup) would be
        read as a kill without its report."""
        o, cur = self._open, self._cur
        return o[1] if o is not None and cur is not None and o[0] is cur else None

    def feed(self, record: Record) -> list[Incident]:
        """Read one record; the incidents it completed (usually none).

        One printk call may hold several lines: 5.10 and 6.1 print the whole v2 ``memory.stat`` of
        the OOM memcg as one record (``pr_info("%s", buf)`` in mem_cgroup_print_oom_meminfo), which
        /dev/kmsg hands out with its newlines escaped (``\\x0a``, undone by ``core.kmsg.unescape``);
        6.7 and later print it a line per record (``seq_buf_do_printk``). Each line of a record is
        read as a record of its own, with the record's sequence number and time (captures of all
        three kernels: tests/fixtures/oom/vm-*-v2-*.log)."""
        out = self._feed_record(record)
        cur = self._cur
        if cur is not None and (self._open is None or self._open[0] is not cur):
            self._open = (cur, record.seq)
        return out

    def _feed_record(self, record: Record) -> list[Incident]:
        """The work of ``feed``."""
        if "\n" not in record.text:
            return self._feed_line(record, record.text)
        out: list[Incident] = []
        for line in record.text.split("\n"):
            if line.strip():
                out += self._feed_line(record, line)
        return out

    # The hot path: most records are not part of any report. Every branch starts with a cheap
    # substring or prefix check; regexes run only on lines that already look right.
    def _feed_line(self, record: Record, text: str) -> list[Incident]:
        cur = self._cur
        if cur is None:
            if "oom" not in text and "Kill" not in text:
                if text.startswith(_MID_REPORT):
                    # A log that starts mid-report: keep what it says; it counts only if a kill follows.
                    self._cur = _Partial(kernel=self._release)
                    self._release = None
                    return self._report_line(record, text, self._cur)
                if text.startswith("CPU: "):
                    self._hint_release(text)
                return []
            return self._start_or_ignore(record, text)
        if (
            cur.victims
            and not cur.mode
            and "oom" not in text
            and "Kill" not in text
            and not text.startswith(_AFTER_KILL)
        ):
            return []  # after the kill only group kills or the next report matter: noise stays cheap
        if text.startswith("[") and cur.mode == "tasks":
            row = _task_row(text, cur.columns)
            if row is not None:
                cur.tasks.append(row)
                cur.evidence.append((record.seq, text))
                return []
        if cur.mode == "stats" and cur.stats:
            key, sp, value = (text.lstrip() if text[:1] == " " else text).partition(" ")
            if sp and value.isdigit() and key.replace("_", "").isalnum():
                cur.stats[-1][1].append((key, int(value)))
                cur.evidence.append((record.seq, text))
                return []
            self._end_stats(cur)  # any other line ends the block (and names its format)
        return self._report_line(record, text, cur)

    def _start_or_ignore(self, record: Record, text: str) -> list[Incident]:
        if "invoked oom-killer:" in text:
            self._trigger(record, text)
        elif (
            "Killed process " in text
            or text.startswith("oom-kill:")
            or "or sacrifice child" in text
            or ("memory.oom.group" in text and text.startswith("Tasks in "))
        ):
            # A header-less kill (a storm) keeps no release: an older CPU: line may be any oops'.
            self._release = None
            self._cur = _Partial()
            return self._report_line(record, text, self._cur)
        elif text.startswith("CPU: "):
            self._hint_release(text)
        return []

    def _hint_release(self, text: str) -> None:
        if " PID: " in text and " Comm: " in text:
            m = _RELEASE.search(text)
            self._release = m.group(1) if m is not None else None

    def _trigger(self, record: Record, text: str) -> list[Incident]:
        done = self._close()
        self._release = None  # the header's own CPU: line follows
        m = _TRIGGER.search(text)
        if m is None:
            return done
        self._cur = _Partial(
            trigger=Trigger(
                comm=m.group("comm").strip(),
                gfp_mask=m.group("gfp"),
                order=int(m.group("order")),
                oom_score_adj=int(m.group("adj")),
            ),
            evidence=[(record.seq, text)],
        )
        return done

    def _close(self) -> list[Incident]:
        cur, self._cur = self._cur, None
        if cur is None:
            return []
        if cur.killed:
            return [cur.incident()]
        self.dropped_headers += 1
        return []

    def _restart(self, record: Record, text: str) -> list[Incident]:
        """Hand out the open report and read ``text`` as the first line of a new (header-less) one."""
        done = self._close()
        self._cur = _Partial()
        return done + self._report_line(record, text, self._cur)

    def _report_line(self, record: Record, text: str, cur: _Partial) -> list[Incident]:
        seq = record.seq
        if "Killed process " in text:
            m = _KILLED.search(text)
            if m is None:
                m = _KILLED_BARE.search(text)
                if m is None:
                    return self._maybe_done(text, cur)
                pid = int(m.group("pid"))
                comm = m.group("comm")
                if comm is None:  # cut short: the task table (if printed) still names it
                    comm = next((t.name for t in cur.tasks if t.pid == pid), "?")
                victim = Victim(pid=pid, comm=comm, seq=seq, usec=record.usec, wall=record.wall)
            else:
                g = m.group
                victim = Victim(
                    pid=int(g("pid")),
                    comm=g("comm"),
                    total_vm_bytes=_kb(g("vm")),
                    anon_rss_bytes=_kb(g("anon")),
                    file_rss_bytes=_kb(g("file")),
                    shmem_rss_bytes=_kb(g("shmem")),
                    uid=int(g("uid") or g("uid0")) if (g("uid") or g("uid0")) is not None else None,
                    pgtables_bytes=_kb(g("pgt")),
                    oom_score_adj=int(g("adj")) if g("adj") is not None else None,
                    seq=seq,
                    usec=record.usec,
                    wall=record.wall,
                )
            if cur.victims and cur.group is None:
                # A second kill line with no group kill announced: a new (header-less) report.
                return self._restart(record, text)
            if any(v.pid == victim.pid for v in cur.victims):
                return []
            if text.startswith("Out of memory") and not cur.constraint:
                cur.global_oom = True
            elif text.startswith("Memory cgroup out of memory"):
                cur.constraint = cur.constraint or "CONSTRAINT_MEMCG"
            cur.victims.append(victim)
            cur.evidence.append((seq, text))
            cur.mode = ""
            return []
        if text.startswith("oom-kill:"):
            if cur.killed:
                return self._restart(record, text)
            kv = _parse_oomkill(text)
            cur.constraint = kv.get("constraint") or cur.constraint
            memcg = kv.get("oom_memcg")
            if memcg is not None:
                cur.oom_memcg = memcg
            elif "global_oom" in text:
                cur.global_oom = True
                cur.oom_memcg = None
            if kv.get("task_memcg"):
                cur.task_memcg = kv["task_memcg"]
            if "pid" in kv and kv["pid"].isdigit():
                uid = kv.get("uid", "")
                cur.summary = (int(kv["pid"]), kv["task"], int(uid) if uid.isdigit() else -1)
                cur.summary_at = (seq, record.usec, record.wall)
            cur.evidence.append((seq, text))
            cur.mode = ""
            return []
        if "invoked oom-killer:" in text:
            return self._trigger(record, text)
        if text.startswith("Memory cgroup stats for "):
            rest = text[24:]
            path, sep, tail = rest.partition(":")
            if not sep:
                return []
            tail = tail.strip()
            if tail:
                cur.stats.append((path, [(k, int(v) * KIB) for k, v in _KV_KB.findall(tail)]))
                cur.stats_format = "v1-line"
                cur.mode = ""
            else:
                cur.stats.append((path, []))
                cur.mode = "stats"
            cur.evidence.append((seq, text))
            return []
        if ": usage " in text:
            m = _COUNTER.match(text)
            if m is not None:
                cur.counters.append(
                    MemcgCounter(
                        name=m.group("name"),
                        usage_bytes=int(m.group("usage")) * KIB,
                        limit_bytes=int(m.group("limit")) * KIB,
                        failcnt=int(m.group("failcnt")),
                    )
                )
                cur.evidence.append((seq, text))
                cur.mode = ""
                return []
        if text.startswith("Tasks state"):
            self._end_stats(cur)
            cur.evidence.append((seq, text))
            return []
        if text.startswith("[") and "pid" in text[:12] and "name" in text:
            close = text.find("]")
            cur.columns = tuple(text[close + 1 :].split())
            self._end_stats(cur)
            cur.mode = "tasks"
            cur.evidence.append((seq, text))
            return []
        if "or sacrifice child" in text:
            m = _SELECT.search(text)
            if m is not None:
                if cur.victims and cur.group is None:
                    return self._restart(record, text)
                cur.selected = (int(m.group("pid")), m.group("comm"), int(m.group("score")))
                if text.startswith("Out of memory") and not cur.constraint:
                    cur.global_oom = True
                cur.evidence.append((seq, text))
                cur.mode = ""
            return []
        if text.startswith("Task in "):
            m = _TASK_IN.search(text)
            if m is not None:
                cur.task_memcg, cur.oom_memcg = m.group("task"), m.group("oom")
                cur.constraint = cur.constraint or "CONSTRAINT_MEMCG"
                cur.evidence.append((seq, text))
            return []
        if text.startswith("Tasks in ") and "memory.oom.group" in text:
            m = _GROUP.search(text)
            if m is not None:
                cur.group = m.group("path")
                cur.evidence.append((seq, text))
            return []
        if text.startswith("Mem-Info"):
            cur.mode = "meminfo"
            cur.global_oom = cur.global_oom or cur.oom_memcg is None
            cur.evidence.append((seq, text))
            return []
        if cur.mode == "meminfo":
            stripped = text.lstrip()
            if stripped.startswith("Node ") or stripped.startswith("lowmem_reserve"):
                return []
            m = _PAGES_RAM.match(stripped)
            if m is not None:
                cur.meminfo.append(("totalram_pages", int(m.group(1))))
                cur.evidence.append((seq, text))
                return []
            if ":" in stripped and " " in stripped and "kB" not in stripped:
                pairs = _KV_PAGES.findall(stripped)
                if pairs and len(cur.meminfo) < 64:
                    cur.meminfo.extend((k, int(v)) for k, v in pairs)
                    cur.evidence.append((seq, text))
            return []
        if text.startswith("CPU: ") and cur.kernel is None and " PID: " in text:
            m = _RELEASE.search(text)
            if m is not None:
                cur.kernel = m.group(1)
            return []
        return self._maybe_done(text, cur)

    @staticmethod
    def _end_stats(cur: _Partial) -> None:
        if cur.mode == "stats" and cur.stats:
            keys = {k for k, _ in cur.stats[-1][1]}
            if cur.stats_format != "v1-line":
                cur.stats_format = "v1" if ("total_rss" in keys or "rss" in keys) else "v2"
        cur.mode = ""

    def _maybe_done(self, text: str, cur: _Partial) -> list[Incident]:
        """An unrelated line (another CPU, another subsystem) inside or after a report.

        It closes nothing: a memory.oom.group ``Tasks in ..`` line and its kill lines may still follow
        the first kill line with other CPUs' lines in between. The incident is handed out by the next
        report's first line, by ``idle()`` (a live reader drained its source) or by ``flush()``."""
        if cur.mode == "stats":
            self._end_stats(cur)
        return []

    def idle(self) -> list[Incident]:
        """The source has nothing more for now: hand out an incident whose kill line was seen.

        An ``oom-kill:`` summary alone is held: its kill line follows it in the same kernel call."""
        if self._cur is not None and self._cur.victims:
            return self._close()
        return []

    def flush(self) -> list[Incident]:
        """End of input: the last incident if it was killed; a lone header is dropped, not invented."""
        if self._cur is not None and self._cur.mode == "stats":
            self._end_stats(self._cur)
        return self._close()


def assemble(records: list[Record] | tuple[Record, ...]) -> list[Incident]:
    """All incidents in ``records`` (a whole saved log)."""
    asm = OomAssembler()
    out: list[Incident] = []
    for r in records:
        out += asm.feed(r)
    out += asm.flush()
    return out
