"""The agent's main loop: kernel log → OOM incidents → Events; cgroup sweeps → metrics, warnings, report.

Threads (all daemons; the main thread owns every piece of mutable agent state):

- main: waits for the kernel log (``oomsight.host.kernlog``: ``/dev/kmsg`` with poll(2), or syslog(2)
  polled) until a record comes or the next sweep is due. A kill line becomes an incident, a diagnosis
  and a spooled Event; then the sender is woken. Every ``--interval`` it sweeps the memory cgroups.
- ``pod-watch`` (``oomsight.kube.pods``): the Pods bound to this node.
- ``event-sender`` (``oomsight.agent.delivery``): drains the spool into the API with backoff.
- ``metrics``: ``/metrics`` and ``/healthz``.

No loss, no duplicates (see ``oomsight.agent.state``): an incident is spooled before the cursor
moves; on restart reading resumes ``REWIND`` records before the cursor (so a report cut by the
restart is read whole) and incidents at or before the cursor are dropped as already handled.

The floor under the log: each container cgroup's OOM-kill counter. A kill the log does not explain
(no log can be read, or its lines were overwritten before they were read) is reported from the
counter alone (``counted_kill_event``), once the log has had ``OOM_QUIET_SECONDS`` to explain it;
the counts accounted are saved with the cursor, so a restart does not report them again.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from bisect import bisect_left
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any

from oomsight import __version__
from oomsight.agent.delivery import SENDS_AT_ONCE, Deliverer
from oomsight.agent.latency import KillLatency
from oomsight.agent.metrics import (
    AgentCollector,
    ContainerSample,
    Counters,
    MetricsServer,
    Snapshot,
    make_registry,
)
from oomsight.agent.newcomers import Newcomers
from oomsight.agent.settings import Settings
from oomsight.agent.state import Cursor as SavedCursor
from oomsight.agent.state import StateDir
from oomsight.agent.writer import StateWriter
from oomsight.core.aftermath import Aftermath
from oomsight.core.diagnosis import KINDS, diagnose
from oomsight.core.errors import OomsightError
from oomsight.core.events import Aggregator, EventSpec
from oomsight.core.eventspecs import (
    counted_kill_event,
    high_working_set_event,
    node_finding_event,
    oom_event,
    stuck_event,
)
from oomsight.core.findings import Finding
from oomsight.core.kmsg import Record
from oomsight.core.kubepath import parse_cgroup_path
from oomsight.core.memory import MemoryReading, Pressure, breakdown
from oomsight.core.node import NodeFacts, node_findings
from oomsight.core.oomcount import Lead, leading, place_unreported, refused
from oomsight.core.oomreport import Incident, OomAssembler
from oomsight.core.podinfo import PodInfo
from oomsight.core.report import MAX_INCIDENTS, ProfileBook, build_status
from oomsight.core.stuck import find_stuck
from oomsight.core.watermark import Watermark, step
from oomsight.host.afterkill import AfterKill, kill_age_seconds
from oomsight.host.cgroupfs import CgroupWalker, detect_layout
from oomsight.host.heap import release_free_heap, share_one_heap
from oomsight.host.jvm import JvmScanner
from oomsight.host.kernlog import open_kernel_log
from oomsight.host.klogctl import KlogctlReader
from oomsight.host.kmsg import Cursor as KmsgCursor
from oomsight.host.kmsg import Gap, KmsgReader, read_boot_id
from oomsight.host.nodeinfo import read_node_facts
from oomsight.host.oomnotify import OomNotifier
from oomsight.host.processes import read_memory_cgroup_leaf
from oomsight.kube.events import EventSender
from oomsight.kube.pods import PodCache
from oomsight.kube.reports import ReportWriter
from oomsight.kube.rest import connect

log = logging.getLogger("oomsight.agent")

REWIND = 400
"""Records re-read before the cursor on restart; an OOM report is ~30-150 records."""
QUIET = 0.005
"""Seconds without a new record that end a burst: the kernel prints a report in one go."""
BURST_SECONDS = 0.5
"""A flood of kernel messages is read in slices of this long, so sweeps still happen."""
_Items = tuple[tuple[str, int], ...]
CURSOR_SAVE_SECONDS = 2.0
"""How often the cursor is saved when only other kernel messages moved it (a kill saves at once)."""
SWEEP_YIELD_SECONDS = 2.0
"""How long a due sweep waits for the kernel log (``Agent._sweep_delay``): a log that never falls
quiet, or a storm that never ends, must not stop the sweeps, which warn before the kills."""
STORM_GAP_SECONDS = 0.25
"""A kill this recent means more may be coming: a storm's kills came 5-30 ms apart here."""
OPEN_REPORT_HOLD = 30.0
"""Seconds a report whose kill line has not come yet keeps the saved cursor before its first line."""
NODE_CHECK_SECONDS = 600.0
UNRESOLVED_GRACE = 15.0
"""How long an incident for a pod not (yet) in the cache waits for the pod watch."""
FLUSH_SECONDS = 5.0
OOM_QUIET_SECONDS = 5.0
"""Without a kill for this long, per-cgroup OOM-kill counters are taken as fully accounted."""
SURPLUS_CLOCK_SLACK = 0.1
"""Seconds a kill line may be logged after a sweep found its kill counted: the error of the kernel
log clock's offset (``KillLatency.offset``) and how long after the walk read the counter the sweep
notes the lead. Such a line is placed as one of the kills that made the lead."""
KILLS_COUNTER = "oomsight_oom_kills_total"
HEAP_TRIM_SECONDS = 60.0
ONCE_PER_CGROUP = ("unmatched", "cgerr", "unattr")
"""Once-keys ``<kind>:<cgroup path>``: forgotten when the cgroup goes (``nocg:<container id>`` too)."""
AGENT_V1_FILES = (
    "memory.usage_in_bytes",
    "memory.limit_in_bytes",
    "memory.stat",
    "memory.oom_control",
    "memory.kmem.usage_in_bytes",
)
"""Per container, every sweep: working set, limit, breakdown, stuck (under_oom). Fewer files, less CPU."""
AGENT_V2_FILES = (
    "memory.current",
    "memory.max",
    "memory.stat",
    "memory.swap.current",
    "memory.events",
    "memory.peak",
    "memory.pressure",
)
"""v2: the same, plus the OOM counters, ``memory.peak`` (5.19+) and PSI. A file the kernel lacks is
found missing once per cgroup and never looked for again (``CgroupWalker`` keeps it as absent)."""


@dataclass(slots=True)
class _Unresolved:
    incident: Incident
    diag: dict[str, Any]
    deadline: float


class Agent:
    def __init__(self, settings: Settings) -> None:
        self.s = settings
        self.stop = threading.Event()
        self.counters = Counters()
        self.state = StateDir(settings.state_dir)
        self.writer = StateWriter(self.state, self._write_failed)
        # The Event writes at once, the pod watch, the report's writes: each its own connection.
        self.rest = connect(settings.kubeconfig, connections=SENDS_AT_ONCE + 2)
        self.pods = PodCache(self.rest, settings.node_name, on_error=self._api_error)
        self.latency = KillLatency()
        """Kill line → read, assembled, attributed, spooled, delivered (oomsight.agent.latency)."""
        self._timing = False
        """Off for the first batch read (the ring buffer of before the start: downtime, not latency)."""
        self.deliverer = Deliverer(
            self.state,
            EventSender(self.rest, settings.node_name),
            self.counters,
            on_delivered=self.latency.delivered,
        )
        self.reports = ReportWriter(
            self.rest, settings.node_name, min_interval=settings.report_interval, on_error=self._report_error
        )
        layout = detect_layout(settings.host_root)
        self.walker = CgroupWalker(
            layout, AGENT_V1_FILES if layout.memory_version == "v1" else AGENT_V2_FILES
        )
        self.memory_root = str(layout.memory_root)
        self.newcomers = Newcomers(self.walker, lambda: self.pods.changes)
        self.oomnotify = OomNotifier.open(layout)
        """v1: which accounted containers went OOM lately; a kill line without its report then reads
        only their counters (None on v2: all are read)."""
        """Containers made since the last sweep, accounted at once when a headerless kill needs them."""
        self.afterkill = AfterKill(layout, str(settings.host_root / "proc"))
        """Reads the cgroups around each kill right after it: the pod's container limits, survival."""
        self.jvms = JvmScanner(str(settings.host_root / "proc"))
        """-Xmx / MaxRAMPercentage of each container's JVM, for the report (oomsight.host.jvm)."""
        self.aggregator = Aggregator()
        self.book = ProfileBook()
        self.snapshot = Snapshot()
        self.assembler = OomAssembler()
        self.reader: KmsgReader | KlogctlReader | None = None
        self.source = "none"
        """The kernel log source in use: kmsg, syslog or none (host.kernlog)."""
        self.source_why = ""
        """Why the sources before it did not open (one line each, joined)."""
        self.boot_id = ""
        self.floor = -1
        """Incidents at or below this kmsg sequence were handled by an earlier run."""
        self.high: dict[tuple[str, str], bool] = {}
        self.stuck: set[tuple[str, str]] = set()
        self.unresolved: list[_Unresolved] = []
        self.guessed: dict[str, int] = {}
        """Containers still ahead of their counters since a kill line was placed among them (by how
        many): a line placed in one later may be the one that guess took (``_place_once``)."""
        self.deferred: list[tuple[Incident, dict[str, Any], bool]] = []
        """Kill lines without their report held back for one read of the log, because several
        containers were ahead of their counters (``_place_headerless``): (incident, diagnosis, made
        before a restart), kernel order."""
        self.oom_accounted: dict[str, int] = {}
        """Per container cgroup: its OOM-kill counter when first seen plus every kill attributed to it
        since. The counter running ahead of it means kills the agent has not placed yet."""
        self.last_kill = 0.0
        """Monotonic time of the last kill attributed; counters are re-synchronised only when quiet."""
        self.explained: dict[str, int] = {}
        """Kills accounted in cgroups the sweep has not matched to a container (yet): explained by the
        log, or loaded from the state file. Taken over when the sweep first matches the cgroup; kept
        apart so that ``place_unreported`` only weighs cgroups whose counter baseline is known."""
        self.leads: dict[str, Lead] = {}
        """Per container cgroup whose counter a sweep found ahead of the kills the log explained: since
        when, and the counter it read (``oomsight.core.oomcount.refused``)."""
        self.explained_at: dict[str, float] = {}
        """Per cgroup: monotonic time the log last explained a kill in it. Its counter's lead is
        reported only after ``OOM_QUIET_SECONDS`` without one there: per cgroup, because on a busy
        node some other cgroup is always being OOM-killed, so the node is never quiet."""
        self._saved_accounted: dict[str, int] = {}
        self._open_report: tuple[int | None, float] = (None, 0.0)
        """The first sequence number of the report being read when first seen open, and when."""
        self._fresh = True
        """No accounted counts saved for this boot: the first sweep takes counters as history."""
        self.logged_once: set[str] = set()
        """Keys logged once; those of a cgroup or container (``ONCE_PER_CGROUP``, ``nocg:``) go with it."""
        self._series_gone: dict[tuple[str, str], float] = {}
        """(namespace, pod) of kill counters whose pod went: since when (removed after the grace)."""
        self._last_trim = time.monotonic()
        self.incidents: deque[dict[str, Any]] = deque(maxlen=MAX_INCIDENTS)
        self.kill_times: deque[float] = deque(maxlen=100_000)
        self.findings: tuple[Finding, ...] = ()
        self.facts: NodeFacts | None = None
        self._last_node_check = 0.0
        self.last_loop = time.monotonic()
        self.metrics: MetricsServer | None = None
        self._saved_seq = -1
        self._saved_handled = -1
        self.handled = -1
        """Incidents up to this sequence number were handled by an earlier run, except ``replayed``."""
        self.replayed: frozenset[int] = frozenset()
        """Incidents the earlier run left waiting for their pod (they are handled again)."""
        self.spooled_through = -1
        """Incidents after ``handled`` up to this one had their Events spooled by an earlier run, after
        its last cursor save: accounted again, not reported again (``state.Cursor.spooled``; only for
        a state directory an agent without the journal of reported kills left)."""
        self.reported_before: frozenset[int] = frozenset()
        """Kills an earlier run reported after its last cursor save (``state.Cursor.reported``):
        skipped, their accounting taken from the journal."""
        self._last_cursor_save = 0.0
        self._bd_last: dict[str, tuple[MemoryReading, dict[str, int | None], _Items]] = {}
        self._listed_mark: int | None = None
        """``pods.changes`` as of the last sweep's start: the walker lists directories again when it moved."""
        """Per container cgroup: its last reading and the breakdown made of it (reused while idle)."""

    # ---- small helpers ------------------------------------------------------------------
    def _api_error(self, operation: str, code: int) -> None:
        self.counters.inc("oomsight_agent_api_errors_total", operation=operation, code=str(code))

    def _report_error(self, operation: str, code: int) -> None:
        self._api_error("report_" + operation, code)

    def _first(self, key: str) -> bool:
        """True the first time ``key`` comes (the set of keys seen is bounded): log once per key."""
        if key in self.logged_once:
            return False
        if len(self.logged_once) > 10_000:
            self.logged_once.clear()
        self.logged_once.add(key)
        return True

    def _once(self, key: str, msg: str, *args: object) -> None:
        if self._first(key):
            log.warning(msg, *args)

    def _catch_up(self, name: str, total: int) -> int:
        """Raise the unlabelled counter ``name`` to ``total``, a running count; return by how much."""
        delta = total - int(self.counters.get(name))
        if delta > 0:
            self.counters.inc(name, delta)
        return delta

    def _error(self, kind: str) -> None:
        self.counters.inc("oomsight_agent_errors_total", kind=kind)

    def _write_failed(self, what: str, err: OSError) -> None:
        """The state writer's thread could not put the spool (``what`` "spool"), the cursor or the
        journal (its trim) on disk."""
        if what == "journal":
            self._error("journal_write")
            self._once("journal", "state: cannot rewrite the journal of reported kills: %s", err)
        elif what == "spool":
            self._error("spool_write")
            self._once(
                "spool",
                "state: cannot put spooled Events on disk: %s; delivering them from memory",
                err,
            )
        else:
            self._error("cursor_write")
            self._once("cursor", "state: cannot save the kernel log cursor: %s", err)

    def healthy(self) -> tuple[bool, str]:
        age = time.monotonic() - self.last_loop
        if age > max(30.0, 3 * self.s.interval):
            return False, f"main loop stalled for {age:.0f}s"
        if not self.pods.synced.is_set():
            return True, "ok (waiting for the first pod list)"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        """Ready once alive, the pods listed and one sweep done: from then on a kill is placed in its
        container (before the first sweep a rate-limited kill line has no counter to land in)."""
        ok, why = self.healthy()
        if not ok:
            return ok, why
        if not self.pods.synced.is_set():
            return False, "not ready: waiting for the first pod list"
        if not self.snapshot.taken_at:
            return False, "not ready: waiting for the first sweep (the kernel log is read first)"
        return True, "ok"

    def _note_reported(self, seq: int | None, cgroup: str | None, accounted: int | None) -> None:
        """Journal a kill's report before its Event is spooled (``state``: a restart before the next
        cursor save neither reports it again nor counts it again from its cgroup's counter)."""
        try:
            self.state.note_reported(self.boot_id or "", seq, cgroup, accounted)
        except OSError as err:
            self._error("journal_write")
            self._once("journal", "state: cannot journal a reported kill: %s; a restart before the next "
                       "cursor save may report it twice", err)

    def _emit(self, spec: EventSpec, on_name: Callable[[str], None] | None = None) -> EventSpec:
        """Spool ``spec`` (folded into its series by the aggregator) and wake the sender; the spec
        spooled. ``on_name`` gets its name first, before the sender can have it."""
        spec = self.aggregator.occur(spec)
        if on_name is not None:
            on_name(spec.name)
        try:
            self.state.put(spec)
        except OSError as err:
            # Kept in memory and still delivered: only a restart before delivery would lose it.
            self._error("spool_write")
            self._once("spool", "state: cannot spool Event %s: %s; delivering it from memory", spec.name, err)
        self.deliverer.kick(spec.name)
        return spec

    # ---- start and stop -----------------------------------------------------------------
    def _open_log(self) -> None:
        self.boot_id = read_boot_id(str(self.s.host_root / "proc/sys/kernel/random/boot_id"))
        saved = self.state.resume_cursor(self.boot_id)
        cursor = None
        if saved is not None and saved.seq >= 0:
            cursor = KmsgCursor(self.boot_id, saved.seq + 1)
        opened = open_kernel_log(
            str(self.s.host_root),
            choice=self.s.kernel_log,  # type: ignore[arg-type]
            cursor=cursor,
            rewind=REWIND,
            source_of_cursor=saved.source if saved is not None else None,
        )
        self.reader, self.source, self.source_why = opened.reader, opened.source, opened.why()
        self._fresh = saved is None
        if saved is not None:
            if saved.source == self.source:
                self.floor = self._saved_seq = saved.seq
                self.handled, self.replayed = saved.handled, frozenset(saved.unresolved)
                self.spooled_through = saved.spooled
                self.reported_before = saved.reported
                if saved.reported:
                    log.info(
                        "state: %d kill(s) reported after the last cursor save (reported.jsonl): "
                        "not reported or counted again",
                        len(saved.reported),
                    )
            self.explained = self.state.load_oom_accounted(self.boot_id)
            self._saved_accounted = dict(self.explained)
            self.last_kill = time.monotonic()  # not "quiet": the replay may place kills against these
        where = {"kmsg": "/dev/kmsg", "syslog": "syslog(2) READ_ALL, polled"}.get(self.source, "")
        if self.reader is None:
            log.warning(
                "kernel log: none readable (%s); OOM kills are reported from each container's OOM-kill "
                "counter only, without the process killed or the limit hit",
                self.source_why or f"--kernel-log {self.s.kernel_log}",
            )
        elif saved is not None and saved.source == self.source and saved.seq >= 0:
            log.info(
                "kernel log: %s (%s), resuming after record %d of boot %s",
                self.source,
                where,
                saved.seq,
                self.boot_id,
            )
        elif saved is not None:
            log.info(
                "kernel log: %s (%s), from its newest record (the cursor was saved by %s); the "
                "OOM-kill counters cover the time in between",
                self.source,
                where,
                saved.source,
            )
        else:
            log.info(
                "kernel log: %s (%s), no cursor for boot %s: reading the whole ring buffer",
                self.source,
                where,
                self.boot_id,
            )
        if self.reader is not None and self.source_why:
            log.info("kernel log: not used: %s", self.source_why)

    def _install_signals(self) -> None:
        def on_term(signum: int, _frame: object) -> None:
            log.info("agent: signal %d, flushing and stopping", signum)
            self.stop.set()

        signal.signal(signal.SIGTERM, on_term)
        signal.signal(signal.SIGINT, on_term)

    def run(self) -> int:
        self._install_signals()
        share_one_heap()  # before the threads start: one heap for all (oomsight.host.heap)
        if self.s.metrics_port:
            collector = AgentCollector(
                lambda: self.snapshot,
                self.counters,
                self.state.count,
                self.s.node_name,
                source=lambda: self.source,
                pods=lambda: len(self.pods.pods()),
                latency=self.latency,
            )
            try:
                self.metrics = MetricsServer(
                    make_registry(collector),
                    self.healthy,
                    self.ready,
                    self.s.metrics_address,
                    self.s.metrics_port,
                )
            except OSError as err:
                raise OomsightError(
                    f"cannot listen on port {self.s.metrics_port} for /metrics: {err.strerror}",
                    "pick a free port with --metrics-port (or OOMSIGHT_METRICS_PORT)",
                ) from err
            self.metrics.start()
        self._open_log()
        self.pods.start()
        self.deliverer.start()
        self.writer.start()
        self._check_node()
        log.info(
            "agent: node %s, host root %s, state %s, sweep every %gs, kernel log %s, "
            "%d Events spooled from before",
            self.s.node_name,
            self.s.host_root,
            self.s.state_dir,
            self.s.interval,
            self.source,
            self.deliverer.pending,
        )
        while not self.stop.is_set() and not self.pods.wait_synced(0.5):
            self.last_loop = time.monotonic()
        try:
            self._loop()
        finally:
            self._shutdown()
        return 0

    def _shutdown(self) -> None:
        # Without pods, kills could not be attributed: leave them to the next run.
        if self.pods.synced.is_set() and self.reader is not None:
            with contextlib.suppress(OomsightError, OSError):
                self._process_kmsg(final=True)
        self._save_cursor(force=True)
        self.writer.stop(FLUSH_SECONDS)
        self.pods.stop()
        left = self.deliverer.stop(FLUSH_SECONDS)
        if left:
            log.warning(
                "agent: %d Events still spooled in %s; they are sent at the next start",
                left,
                self.state.spool_dir,
            )
        if self.reader is not None:
            self.reader.close()
        if self.metrics is not None:
            self.metrics.stop()

    # ---- the loop -----------------------------------------------------------------------
    def _loop(self) -> None:
        next_sweep = time.monotonic()
        while not self.stop.is_set():
            now = time.monotonic()
            self.last_loop = now
            delay = self._sweep_delay(now - next_sweep, now) if now >= next_sweep else next_sweep - now
            if delay <= 0:
                try:
                    self._sweep()
                except OomsightError as err:
                    self._error("sweep")
                    self._once("sweep:" + str(err), "sweep: %s", err)
                except Exception:
                    self._error("sweep")
                    log.exception("sweep failed")
                next_sweep = max(next_sweep + self.s.interval, time.monotonic() + self.s.interval / 10)
                continue
            timeout = 0.0 if self.deferred else min(delay, 0.5)
            try:
                if self.reader is None:
                    self.stop.wait(timeout)
                elif self.reader.wait(timeout):
                    self._process_kmsg()
                elif self.deferred:
                    self._incidents([])  # kill lines held back, and nothing more to read: placed now
                self._retry_unresolved()
                self._save_cursor()
            except OomsightError as err:
                self._error("kmsg")
                self._once("kmsg:" + str(err), "kmsg: %s", err)
                self.stop.wait(1.0)
            except Exception:
                self._error("loop")
                log.exception("agent loop error")
                self.stop.wait(1.0)

    def _sweep_delay(self, late: float, now: float) -> float:
        """How much longer a sweep due ``late`` seconds ago waits for the kernel log (0: none).
        It waits while kill lines are held back or records are unread, and while kills are being
        logged (one in the last ``STORM_GAP_SECONDS``), for up to ``SWEEP_YIELD_SECONDS``. A sweep
        takes 5-15 ms at 200 containers, 25-75 ms on a node busy with a storm, and the storm's kills
        read meanwhile waited for all of it; the counters it reads are wanted after the storm."""
        if late >= SWEEP_YIELD_SECONDS:
            return 0.0
        storm = self.last_kill + STORM_GAP_SECONDS - now
        if storm > 0:
            return min(storm, SWEEP_YIELD_SECONDS - late)
        if self.deferred or (self.reader is not None and self.reader.wait(0)):
            return 0.001  # read (or place) them first; the loop does not wait for more
        return 0.0

    # ---- kernel log ---------------------------------------------------------------------
    def _process_kmsg(self, final: bool = False) -> None:
        assert self.reader is not None
        incidents: list[Incident] = []
        burst_end = time.monotonic() + BURST_SECONDS
        timing, latency = self._timing, self.latency
        reads: list[tuple[int, float]] = []
        """(last sequence number, monotonic time) of each read of this batch: when a kill line was read."""
        while True:
            last: Record | None = None
            done: list[Incident] = []
            for item in self.reader.read_available(limit=5000):
                if isinstance(item, Gap) and item.unknown:
                    self.counters.inc("oomsight_agent_kmsg_gaps_total")
                    log.warning(
                        "kernel log: the ring buffer was overwritten between two polls of syslog(2): "
                        "an unknown number of records lost; the OOM-kill counters cover any kill among them"
                    )
                    continue
                if isinstance(item, Gap):
                    lost = item.next_seq - max(item.expected_seq, self.floor + 1)
                    # The first gap of a fresh start is only "older than the ring buffer": not a loss.
                    if lost > 0 and (self.floor >= 0 or self.reader.records_read > 0):
                        self.counters.inc("oomsight_agent_kmsg_gaps_total")
                        self.counters.inc("oomsight_agent_kmsg_lost_records_total", lost)
                        log.warning(
                            "kmsg: %d records overwritten before they were read (seq %d..%d)",
                            lost,
                            item.expected_seq,
                            item.next_seq - 1,
                        )
                    continue
                last = item
                done += self.assembler.feed(item)
            now = time.monotonic()
            if last is not None and last.usec is not None:
                latency.offset.observe(now, last.usec)
            if timing and last is not None and last.seq is not None:
                reads.append((last.seq, now))
            self._assembled(done, now, reads)
            incidents += done
            # A batch ends with the first read that completed a kill: reading on while the log was
            # busy (a storm) held each kill until it fell quiet, 40 ms and more, and placed the bare
            # kill lines among the many containers whose counters had moved meanwhile (a guess).
            if (incidents and not final) or time.monotonic() > burst_end or not self.reader.wait(QUIET):
                break
        done = self.assembler.idle()
        self._assembled(done, time.monotonic(), reads)
        incidents += done
        self._timing = True
        # The reader counts as it goes; the counters catch up once per batch, not once per record.
        self._catch_up("oomsight_agent_kmsg_records_total", self.reader.records_read)
        malformed = self._catch_up("oomsight_agent_kmsg_malformed_total", self.reader.malformed)
        if malformed > 0:
            self._once(
                "malformed",
                "kmsg: %d record(s) did not have the prefix,seq,usec,flags;text shape; "
                "skipped and counted in oomsight_agent_kmsg_malformed_total",
                malformed,
            )
        self._incidents(incidents)

    def _assembled(self, incidents: list[Incident], now: float, reads: list[tuple[int, float]]) -> None:
        """Start timing the kills (read live) whose reports are complete: their read and assembled
        stages. A kill was read by the first read of the batch that reached its sequence number."""
        for inc in incidents:
            if inc.seq is None or inc.usec is None:
                continue
            i = bisect_left(reads, inc.seq, key=itemgetter(0))
            if i < len(reads):
                self.latency.start(inc.seq, inc.usec, reads[i][1])
                self.latency.mark(inc.seq, "assembled", now)

    def _incidents(self, incidents: list[Incident]) -> None:
        """Diagnose a batch; account the kills whose report names their cgroup first, so that the
        per-cgroup counters (read now, possibly after later kills of the batch) are matched only
        against kills that no report explains; then attribute all in kernel order."""
        todo: list[tuple[Incident, dict[str, Any]]] = []
        again: set[int] = set()
        """Kills an earlier run reported after its last save: accounted, no Event made again."""
        last_in = {inc.task_memcg: i for i, inc in enumerate(incidents) if inc.task_memcg}
        for i, inc in enumerate(incidents):
            if inc.seq is not None and (
                inc.seq <= self.floor
                or (inc.seq <= self.handled and inc.seq not in self.replayed)
                or inc.seq in self.reported_before
            ):
                continue  # handled (spooled) by an earlier run
            if inc.seq is not None and inc.seq <= self.spooled_through and inc.seq not in self.replayed:
                again.add(inc.seq)
            else:
                self.counters.inc("oomsight_agent_oom_incidents_total")
            later = inc.task_memcg is not None and last_in[inc.task_memcg] > i
            try:
                todo.append((inc, diagnose(inc, aftermath=self._aftermath(inc, later)).as_json()))
            except Exception as err:  # noqa: BLE001 - one odd report must not stop the agent
                self._error("diagnose")
                log.warning("diagnose: incident at seq %s failed: %s", inc.seq, err)  # once: seqs differ
        held, self.deferred = self.deferred, []
        held_before = {inc.seq for inc, _, _ in held}
        again |= {inc.seq for inc, _, was_again in held if was_again and inc.seq is not None}
        todo = [(inc, diag) for inc, diag, _ in held] + todo
        if not todo:
            return
        self.last_kill = time.monotonic()
        headerless = []
        for i, (inc, diag) in enumerate(todo):
            cg = diag.get("task_cgroup")
            if cg:
                # Explained by the log: the counter may run ahead by this much less (a group kill
                # counts each task). Kept for a cgroup the sweep has not matched yet, too.
                book = self.oom_accounted if cg in self.oom_accounted else self.explained
                book[cg] = book.get(cg, 0) + max(1, len(inc.victims))
                todo[i] = (inc, {**diag, "accounted_with": book[cg]})
                self.explained_at[cg] = time.monotonic()
            elif diag.get("pod_uid") is None and inc.oom_memcg is None:
                headerless.append(i)
        hold: set[int] = set()
        if headerless:
            hold = self._place_headerless(todo, headerless, held_before)
        if again:
            log.info(
                "kernel log: %d kill(s) reported before the restart (Events spooled after the last "
                "save) accounted again, without new Events",
                len(again),
            )
        for i, (inc, diag) in enumerate(todo):
            if i in hold:
                self.deferred.append((inc, diag, inc.seq in again))
            elif inc.seq not in again:
                self._incident(inc, diag)

    def _place_headerless(
        self,
        todo: list[tuple[Incident, dict[str, Any]]],
        headerless: list[int],
        held_before: set[int | None],
    ) -> set[int]:
        """Give each kill line without its report (``todo[i]`` for ``i`` in ``headerless``) its cgroup.

        The victim, if still there (exiting, or a zombie), says which cgroup it was in: placed there,
        or left alone when that is not one of our containers (another tenant's kill must not use up
        the counter lead of ours). The rest go by the counters. What neither places may be in a
        container made since the last sweep: those join the accounting (``oomsight.agent.newcomers``)
        and the kills left are tried once more.

        With several containers ahead of their counters, which bare line is whose is a guess, and
        one of those leads may be a kill whose report the log holds but this batch has not read: the
        kernel prints a kill's report, raises its cgroup's counter, then prints its kill line. Placed
        now, a bare line of another container would take that lead, and the kill itself, read next,
        would leave its own container's lead to be reported again from the counter (bench/peers.py:
        121 Events for 120 kills). So such lines are held back once: returned, and placed by the
        next batch (at once: the log is read again right away), after the reports it reads; those
        held before (``held_before``, their sequence numbers) are placed, as a guess the note owns up to.
        """
        proc = str(self.s.host_root / "proc")
        leaves = {i: read_memory_cgroup_leaf(todo[i][0].victim.pid, proc) for i in headerless}
        may_hold = {i for i in headerless if todo[i][0].seq not in held_before}
        hold: set[int] = set()
        left = self._place_once(todo, headerless, leaves, may_hold, hold)
        if left and self.newcomers.adopt(self.oom_accounted, self.explained):
            left = self._place_once(todo, left, leaves, may_hold, hold)
        for i in left:
            if leaves[i] is None:
                self.counters.inc("oomsight_agent_errors_total", kind="headerless_unlocated")
        return hold

    def _place_once(
        self,
        todo: list[tuple[Incident, dict[str, Any]]],
        which: list[int],
        leaves: dict[int, str | None],
        may_hold: set[int],
        hold: set[int],
    ) -> list[int]:
        """One pass of ``_place_headerless`` over the accounted cgroups; returns the kills not placed,
        and adds to ``hold`` those of ``may_hold`` it held back (several containers ahead)."""
        by_leaf = {p.rstrip("/").rsplit("/", 1)[-1]: p for p in self.oom_accounted}
        left, rest = [], []
        for i in which:
            leaf = leaves[i]
            if leaf is None:
                rest.append(i)
            elif leaf in by_leaf:
                todo[i] = (todo[i][0], self._placed(todo[i][1], by_leaf[leaf]))
            else:
                left.append(i)
        if rest:
            candidates = self._may_explain([todo[i][0].usec for i in rest])
            if self.oomnotify is not None and all(todo[i][0].constraint == "CONSTRAINT_MEMCG" for i in rest):
                # A memcg's kill: only where the kernel signalled an OOM lately can it have happened.
                since = time.monotonic() - OOM_QUIET_SECONDS
                candidates = {p: candidates[p] for p in self.oomnotify.may_have_oomed(candidates, since)}
            counted = self._oom_counters(candidates)
            ahead = leading(candidates, counted)
            among = len(ahead)
            if among > 1 and may_hold.intersection(rest):
                hold.update(may_hold.intersection(rest))
                rest = [i for i in rest if i not in hold]
            # A guess among several leaves the others ahead, and the next line placed in one of them
            # may be the one the guess took: it is a guess too (its note says so), until that
            # container's lead is gone.
            self.guessed = {p: n for p, n in self.guessed.items() if p in ahead}
            if among > 1 and rest:
                self.guessed.update(dict.fromkeys(ahead, among))
            places = place_unreported(candidates, counted, len(rest))
            for i, path in zip(rest, places, strict=True):
                if path is None:
                    left.append(i)
                else:
                    shared = max(among, self.guessed.get(path, 1))
                    todo[i] = (todo[i][0], self._placed(todo[i][1], path, shared))
        return sorted(left)

    def _aftermath(self, inc: Incident, later_kill: bool) -> Aftermath | None:
        """The victim's container and its pod read right after the kill (before anything else), with
        the Pod's spec when the watch has it (names, pod-level limit, overhead, which ID is the sandbox)."""
        ref = parse_cgroup_path(inc.task_memcg or inc.oom_memcg or "")
        if ref is None:
            return None
        try:
            return self.afterkill.read(
                inc, self.pods.get(ref.pod_uid), kill_age_seconds(inc.usec), later_kill=later_kill
            )
        except OomsightError as err:
            self._error("afterkill")
            self._once(
                "afterkill", "oom: cannot read the cgroups around a kill (%s); judged from the report", err
            )
            return None

    def _incident(self, inc: Incident, diag: dict[str, Any]) -> None:
        if not self._attribute(inc, diag):
            uid = diag.get("pod_uid")
            if uid and self.pods.get(uid) is None:
                self.unresolved.append(_Unresolved(inc, diag, time.monotonic() + UNRESOLVED_GRACE))
            else:
                self._unattributed(diag, "not_a_pod")

    def _may_explain(self, stamps: list[int | None]) -> dict[str, int]:
        """The cgroups (with their accounted kills) where kill lines logged at ``stamps`` may have
        happened: not one whose counter a sweep found ahead before the first of them was logged, while
        the kills accounted there since have not reached the counter it read (``core.oomcount.refused``).
        Such a lead is older kills whose lines were lost; a kill elsewhere, in a cgroup of no pod here,
        whose report was rate-limited, must not be placed there. A lead the accounting has reached was
        a storm's kills whose lines came after the sweep read the counter: the storm's later lines
        are placed there again, at once, rather than counted from it after ``OOM_QUIET_SECONDS``;
        so are those of a cgroup the kernel signalled an OOM in since the lead (v1), still in its storm.

        ``stamps`` are the kernel log's (µs of ``local_clock`` since boot), put on CLOCK_MONOTONIC
        with the offset the agent measures (``KillLatency.offset``): the two clocks drift apart by
        more than the slack (184 ms after 13 h here), and a stamp taken raw made a storm's kill
        whose line came just after the sweep that saw its count look later than that sweep."""
        known = [s for s in stamps if s is not None]
        if not known or not self.leads:
            return self.oom_accounted
        first = min(known)
        mono = self.latency.offset.monotonic(first)  # None while unsettled: then taken as is
        logged = (first / 1e6 if mono is None else mono) - SURPLUS_CLOCK_SLACK
        notify = self.oomnotify
        active = [p for p, lead in self.leads.items() if notify.oomed_since(p, lead.since)] if notify else []
        out = refused(self.oom_accounted, self.leads, logged, active)
        return {p: n for p, n in self.oom_accounted.items() if p not in out} if out else self.oom_accounted

    def _oom_counters(self, paths: Mapping[str, int]) -> dict[str, int | None]:
        """Each of these container cgroups' OOM-kill counter, read now (a vanished one is left out)."""
        out: dict[str, int | None] = {}
        for path in paths:
            try:
                out[path] = self.walker.oom_kills(path)
            except OomsightError:
                continue
        return out

    def _placed(self, diag: dict[str, Any], path: str, among: int = 1) -> dict[str, Any]:
        """A kill line without its report (oomsight.core.oomcount), placed in ``path``: by the
        victim's own cgroup (``among`` 1), or by the counters, ``among`` of them ahead (2 or more:
        the count is right, which line is this container's a guess; the note says so)."""
        ref = parse_cgroup_path(path)
        if ref is None:
            self.counters.inc("oomsight_agent_errors_total", kind="headerless_unlocated")
            return diag
        self.oom_accounted[path] += 1
        self.explained_at[path] = time.monotonic()
        self.counters.inc("oomsight_agent_headerless_kills_total")
        placed = {
            **diag,
            "task_cgroup": path,
            "pod_uid": ref.pod_uid,
            "container_id": ref.container_id,
            "accounted_with": self.oom_accounted[path],
        }
        if among > 1:
            placed["placed_among"] = among
        return placed

    def _unattributed(self, diag: dict[str, Any], why: str) -> None:
        """Counted always; logged once per cgroup at info: on a first start the ring buffer holds
        kills of pods long gone, and on a shared node kills outside Kubernetes are normal."""
        self.counters.inc("oomsight_agent_unattributed_oom_kills_total", why=why)
        self.latency.forget(diag.get("seq"))
        cg = diag.get("task_cgroup") or diag.get("oom_cgroup") or "an unknown cgroup (report rate-limited)"
        if self._first(f"unattr:{cg}"):
            log.info(
                "oom: kill in %s (seq %s) is not attributed to a pod on this node: %s",
                cg,
                diag.get("seq"),
                why,
            )

    def _retry_unresolved(self) -> None:
        if not self.unresolved:
            return
        now = time.monotonic()
        keep: list[_Unresolved] = []
        for u in self.unresolved:
            if self._attribute(u.incident, u.diag):
                continue
            if now >= u.deadline:
                self._unattributed(u.diag, "pod_unknown")
            else:
                keep.append(u)
        self.unresolved = keep

    def _attribute(self, inc: Incident, diag: dict[str, Any]) -> bool:
        pod, cont = self.pods.lookup(diag.get("pod_uid"), diag.get("container_id"))
        if pod is None:
            return False

        name = cont.name if cont else None
        if name is None and diag.get("container_id"):
            self._once(
                f"cid:{diag['container_id']}",
                "oom: container %s of pod %s/%s is not in its status yet",
                diag["container_id"][:12],
                pod.namespace,
                pod.name,
            )
        resp = diag.get("responsible_container")
        if resp and not resp.get("name") and (named := pod.container_by_id(resp.get("container_id"))):
            diag = {**diag, "responsible_container": {**resp, "name": named.name}}
        when = self._kill_time(inc)
        seq = inc.seq if inc.seq is not None else (inc.usec or 0)
        spec = oom_event(diag, pod, name, self.s.node_name, self.boot_id, seq, when)
        self.latency.mark(inc.seq, "attributed")
        # The count its cgroup had with this kill (not the batch's later kills): a restart right after
        # its Event accounts the later ones again as it reads them.
        self._note_reported(inc.seq, diag.get("task_cgroup"), diag.get("accounted_with"))
        spec = self._emit(spec, lambda event: self.latency.handed(inc.seq, event))
        self.latency.spooled(inc.seq)
        survived = diag.get("container_survived")
        self.counters.inc(
            "oomsight_oom_kills_total",
            namespace=pod.namespace,
            pod=pod.name,
            container=name or "",
            scope=str(diag.get("scope") or "unknown"),
            container_survived="unknown" if survived is None else str(bool(survived)).lower(),
            reason=spec.reason,
        )
        self.book.oom(pod.uid, name or "", pod.namespace, pod.name)
        self.kill_times.append(when.timestamp())
        victim = diag.get("victim") or {}
        rss = sum(int(victim.get(k) or 0) for k in ("anon_rss_bytes", "file_rss_bytes", "shmem_rss_bytes"))
        item: dict[str, Any] = {
            "time": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "namespace": pod.namespace,
            "pod": pod.name,
            "podUID": pod.uid,
            "scope": diag.get("scope") or "container",
            "victim": {
                "pid": int(victim.get("pid") or 0),
                "comm": str(victim.get("comm") or "")[:16],
                "rss": rss,
            },
            "explanation": str(diag.get("explanation") or "")[:1024],
            "bootID": self.boot_id,
            "seq": max(0, seq),
        }
        if name:
            item["container"] = name
        if (resp := diag.get("responsible_container")) and resp.get("name"):
            item["responsibleContainer"] = resp["name"]
        if survived is not None:
            item["victim"]["containerSurvived"] = bool(survived)
        if diag.get("limit_bytes") is not None:
            item["limit"] = int(diag["limit_bytes"])
        if diag.get("dominant") in KINDS:
            item["dominant"] = diag["dominant"]
        self.incidents.append(item)
        log.info(
            "oom: %s %s/%s container %s (seq %s): %s",
            spec.reason,
            pod.namespace,
            pod.name,
            name,
            seq,
            spec.note,
        )
        return True

    def _kill_time(self, inc: Incident) -> datetime:
        """When the kill happened, in wall-clock time: its kill line's stamp put on CLOCK_MONOTONIC by
        the offset the latency estimates (``oomsight.agent.latency.ClockOffset``: the kernel's
        local_clock drifts from CLOCK_MONOTONIC by tens to hundreds of ms over hours, which left an
        Event's time after the moment its kill line could be read), else the reader's conversion."""
        mono = self.latency.offset.monotonic(inc.usec) if inc.usec is not None else None
        if mono is None:
            return inc.wall or datetime.now(UTC)
        return datetime.fromtimestamp(mono + time.time() - time.monotonic(), tz=UTC)

    def _report_start(self, now: float) -> int | None:
        """The first record of a report still being read (the kernel was preempted while printing it,
        or the read stopped at a burst's end): the cursor is saved before it, or a restart would read
        its kill line without the lines naming the cgroup, place nothing, and report the kill a second
        time from the counter. A header left open for ``OPEN_REPORT_HOLD`` (a report whose kill line
        never came) no longer holds the cursor back. None when no report is open."""
        seq = self.assembler.open_seq
        if seq is None:
            return None
        if self._open_report[0] != seq:
            self._open_report = (seq, now)
        return seq if now - self._open_report[1] < OPEN_REPORT_HOLD else None

    def _save_cursor(self, force: bool = False) -> None:
        """Hand the state writer the cursor to save when it moved (the spool is synced first), or
        just the spool's sync when Events were spooled without it moving."""
        now = time.monotonic()
        accounted = {**self.explained, **self.oom_accounted}
        # A kill changed the accounting: save at once, or a SIGKILL before the next save leaves the
        # restarted agent with older counts, and the kills' counters (ahead of them) are reported a
        # second time. Only the cursor's passing other kernel messages is worth batching.
        recent = now - self._last_cursor_save < CURSOR_SAVE_SECONDS
        if not force and recent and accounted == self._saved_accounted:
            self._sync_spool()
            return
        cur = self.reader.cursor if self.reader is not None else None
        handled = seq = cur.next_seq - 1 if cur is not None else self._saved_seq
        waiting = tuple(
            sorted(
                {u.incident.seq for u in self.unresolved if u.incident.seq is not None}
                | {inc.seq for inc, _, _ in self.deferred if inc.seq is not None}
            )
        )
        if waiting:  # not handled yet: resume before them, but do not handle the others again
            seq = min(seq, waiting[0] - 1)
        start = self._report_start(now)
        if start is not None:
            seq = min(seq, start - 1)
        seq = max(seq, self._saved_seq)
        handled = max(handled, self._saved_handled, seq)
        if seq == self._saved_seq and handled == self._saved_handled and accounted == self._saved_accounted:
            self._sync_spool()
            return
        cursor = SavedCursor(self.boot_id, seq, self.source, handled, waiting[:1000])
        self.writer.submit(cursor, accounted, self.state.journal_mark())
        self._saved_seq = seq
        self._saved_handled = handled
        self._saved_accounted = accounted
        self._last_cursor_save = now

    def _sync_spool(self) -> None:
        if self.state.unsynced():
            self.writer.submit(None)

    # ---- node facts ---------------------------------------------------------------------
    def _check_node(self) -> None:
        try:
            self.facts = read_node_facts(self.s.host_root)
            self.findings = node_findings(self.facts)
        except OomsightError as err:
            self._error("node_facts")
            self._once("node", "node: %s", err)
            return
        self._last_node_check = time.monotonic()
        now = datetime.now(UTC)
        for f in self.findings:
            if f.severity in ("warning", "critical"):
                self._emit(
                    node_finding_event(self.s.node_name, self.boot_id or "", f.id, f.severity, f.message, now)
                )

    def _node_summary(self) -> dict[str, Any]:
        f = self.facts
        if f is None:
            return {}
        kmem = f.kmem_accounting
        swap_used = None
        if f.swap_total_bytes is not None and f.swap_free_bytes is not None:
            swap_used = max(0, f.swap_total_bytes - f.swap_free_bytes)
        return {
            "kernel": str(f.kernel)[:128] if f.kernel else None,
            "cgroupVersion": f.cgroup_version,
            "memoryController": f.memory_version,
            "cgroupDriver": f.driver if f.driver in ("cgroupfs", "systemd") else "unknown",
            "kmemAccounting": "unknown" if kmem is None else ("enabled" if kmem else "disabled"),
            "memTotal": f.mem_total_bytes,
            "memoryCgroups": {
                k: v
                for k, v in (("counted", f.memory_cgroups.counted), ("live", f.memory_cgroups.live))
                if v is not None
            },
            "swap": {k: v for k, v in (("total", f.swap_total_bytes), ("used", swap_used)) if v is not None},
            "thp": f.thp if f.thp in ("always", "madvise", "never") else "unknown",
        }

    # ---- cgroup sweep -------------------------------------------------------------------
    def _sweep(self) -> None:
        t0 = time.perf_counter()
        if self.reader is not None and self.reader.wait(0):
            self._process_kmsg()  # account every kill already logged before reading the counters
        mark = self.pods.changes  # a Pod that changes after this may have a container the walk misses
        # Directories are listed again only when a Pod changed since the last sweep (a new container,
        # or a restart's new cgroup, comes with a Pod change) or their link count did.
        sweep = self.walker.sweep(relist=mark != self._listed_mark)
        self._listed_mark = mark
        if self.reader is not None and self.reader.wait(0):
            # ... and those logged while the walk read them: a cgroup seen for the first time on a
            # fresh start takes its counter as history, and a kill counted in it but accounted only
            # later would be counted twice (and a headerless kill then found no cgroup to go to).
            self._process_kmsg()
        quiet = time.monotonic() - self.last_kill > OOM_QUIET_SECONDS
        accounted, self.oom_accounted = self.oom_accounted, {}
        counted: list[tuple[PodInfo, str, str, int, int, int | None]] = []
        now_wall = time.time()
        when = datetime.now(UTC)
        samples: list[ContainerSample] = []
        readings = []
        live_keys: set[tuple[str, str]] = set()
        live_paths: set[str] = set()
        seen_ids: set[str] = set()
        for e in sweep.entries:
            ref = e.kube
            if ref is None or ref.level != "container" or e.reading is None:
                if e.error:
                    self._once(f"cgerr:{e.path}", "sweep: %s: %s", e.path, e.error)
                continue
            pod, cont = self.pods.lookup(ref.pod_uid, ref.container_id)
            if pod is None or cont is None:
                # Normal for sandbox (pause) containers and for pods the watch has not delivered yet.
                if self._first(f"unmatched:{e.path}"):
                    self._error("cgroup_without_pod")
                    log.debug("sweep: cgroup %s matches no container of a pod on this node", e.path)
                continue
            if cont.container_id:
                seen_ids.add(cont.container_id)
            r = e.reading
            ws = r.working_set_bytes
            kept = self._bd_last.get(e.path)
            if kept is not None and kept[0] is r:  # the walker reused an idle cgroup's reading
                bd, bd_items = kept[1], kept[2]
            else:
                bd = breakdown(r).as_dict()
                bd_items = tuple((k, v) for k, v in bd.items() if v is not None)
                self._bd_last[e.path] = (r, bd, bd_items)
            limit = e.limit.limit_bytes
            level = e.limit.level or "node"
            readings.append((e.path, r))
            if r.oom_kills is not None:
                acc, report = self._account(e.path, r.oom_kills, accounted.get(e.path), quiet)
                if report:
                    counted.append((pod, cont.name, e.path, acc, r.oom_kills, limit))
                    acc = r.oom_kills
                self.oom_accounted[e.path] = acc
            key = (pod.uid, cont.name)
            live_keys.add(key)
            live_paths.add(e.path)
            profile = self.book.observe(
                now_wall,
                pod.namespace,
                pod.name,
                pod.uid,
                cont.name,
                ws,
                container_id=cont.container_id or "",
                request=cont.request_bytes,
                limit=limit,
                limit_level=level,
                breakdown=bd,
            )
            jvm = self.jvms.flags(e.path, self.memory_root + e.path, time.monotonic())
            profile.xmx = jvm.max_heap_bytes if jvm else None
            profile.max_ram_percentage = jvm.max_ram_percentage if jvm else None
            samples.append(
                ContainerSample(
                    namespace=pod.namespace,
                    pod=pod.name,
                    container=cont.name,
                    working_set_bytes=ws,
                    usage_bytes=r.usage_bytes,
                    limit_bytes=limit,
                    limit_level=level,
                    breakdown=bd_items,
                    stuck=bool(r.oom_control and r.oom_control.under_oom and r.oom_control.oom_kill_disable),
                    peak_bytes=r.peak_bytes,
                    pressure=r.pressure,
                )
            )
            self._watermark(pod, cont.name, ws, limit, level, bd, when, r.pressure)
        all_paths = {e.path for e in sweep.entries}
        self.newcomers.swept(mark, all_paths)
        if self.oomnotify is not None:
            self.oomnotify.watch(self.oom_accounted)
        for path, n in accounted.items():  # matched before, not now (its pod went): keep its count
            if path not in self.oom_accounted:
                self.explained[path] = n
        for path in [p for p in self.explained if p not in all_paths]:
            del self.explained[path]
        for path in [p for p in self.leads if p not in self.oom_accounted]:
            del self.leads[path]
        self.guessed = {p: n for p, n in self.guessed.items() if p in self.oom_accounted}
        for path in [p for p in self.explained_at if p not in self.oom_accounted and p not in self.explained]:
            del self.explained_at[path]
        self._fresh = False
        for pod, name, path, first, last, limit in counted:
            for n in range(first + 1, last + 1):
                self._counted_kill(pod, name, path, n, limit, when)
        self._stuck(readings, when)
        self._pods_without_cgroup(seen_ids)
        if sweep.vanished:
            self.counters.inc("oomsight_agent_vanished_cgroups_total", sweep.vanished)
        if sweep.errors:
            self.counters.inc("oomsight_agent_errors_total", sweep.errors, kind="cgroup_read")
        self._forget_vanished(live_keys)
        self._forget_once(all_paths)
        self._trim_heap()
        self.jvms.forget(live_paths)
        if len(self._bd_last) > len(live_paths):
            self._bd_last = {p: v for p, v in self._bd_last.items() if p in live_paths}
        elapsed = time.perf_counter() - t0
        self.counters.inc("oomsight_agent_sweeps_total")
        self.counters.inc("oomsight_agent_sweep_seconds_total", elapsed)
        self.snapshot = Snapshot(tuple(samples), elapsed, time.time())
        if time.monotonic() - self._last_node_check > NODE_CHECK_SECONDS:
            self._check_node()
        self._write_report(now_wall)

    def _account(self, path: str, counter: int, before: int | None, quiet: bool) -> tuple[int, bool]:
        """The kills of ``path`` accounted so far, and whether the counter's lead is to be reported now.

        First sight: on a fresh start the counter holds history (taken as is); later, a cgroup is
        new and all its kills are ours (only those the log explained are accounted). A counter
        ahead of the log is reported once it stayed ahead for ``OOM_QUIET_SECONDS`` with no kill
        explained in this cgroup meanwhile (at once when there is no log); behind it (a group kill
        counted twice), it is taken when the node is quiet. The lead is noted (``self.leads``) with
        the counter read, for ``_may_explain``; a lead noted before and explained since (the
        accounting reached its counter) is noted anew, from now.
        """
        if before is None:
            before = self.explained.pop(path, None)
        if before is None:
            before = counter if self._fresh else 0
        if self._fresh:
            before = max(before, counter)
        if counter <= before:
            self.leads.pop(path, None)
            return (counter if quiet else before), False
        now = time.monotonic()
        lead = self.leads.get(path)
        if lead is None or before >= lead.counter:
            if self.oomnotify is not None:
                self.oomnotify.drain()  # an OOM signalled before the lead is timed before it
            lead = self.leads[path] = Lead(time.monotonic(), counter)
        since = lead.since
        settled = now - max(since, self.explained_at.get(path, since)) >= OOM_QUIET_SECONDS
        if self.reader is None or settled:
            self.leads.pop(path, None)
            return before, True  # the caller reports kills before+1 .. counter
        return before, False

    def _counted_kill(
        self, pod: PodInfo, container: str, path: str, n: int, limit: int | None, when: datetime
    ) -> None:
        """Report the ``n``-th kill of ``path`` from its counter alone (no log line explains it)."""
        why = (
            "the kernel log is not readable here"
            if self.reader is None
            else "its kernel log lines were lost (ring buffer overwritten or rate-limited)"
        )
        spec = counted_kill_event(pod, container, self.s.node_name, self.boot_id, path, n, limit, why, when)
        self._note_reported(None, path, n)
        self._emit(spec)
        self.counters.inc("oomsight_agent_counted_kills_total", source=self.source)
        self.counters.inc(
            "oomsight_oom_kills_total",
            namespace=pod.namespace,
            pod=pod.name,
            container=container,
            scope="unknown",
            container_survived="unknown",
            reason=spec.reason,
        )
        self.book.oom(pod.uid, container, pod.namespace, pod.name)
        self.kill_times.append(when.timestamp())
        item: dict[str, Any] = {
            "time": when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "namespace": pod.namespace,
            "pod": pod.name,
            "podUID": pod.uid,
            "container": container,
            "scope": "container",
            "explanation": spec.note[:1024],
            "bootID": self.boot_id,
            "seq": 0,
        }
        self.incidents.append(item)
        log.info(
            "oom: %s %s/%s container %s (counted, kill %d of %s): %s",
            spec.reason,
            pod.namespace,
            pod.name,
            container,
            n,
            path,
            spec.note,
        )

    def _pods_without_cgroup(self, seen_ids: set[str]) -> None:
        """A running container whose cgroup the sweep did not find: logged once and counted."""
        for pod in self.pods.pods():
            for c in pod.containers:
                cid = c.container_id
                if not cid or c.init or cid in seen_ids or not self._first(f"nocg:{cid}"):
                    continue
                self._error("pod_without_cgroup")
                log.warning(
                    "sweep: no memory cgroup for container %s of pod %s/%s (id %s); is --host-root right?",
                    c.name,
                    pod.namespace,
                    pod.name,
                    cid[:12],
                )

    def _watermark(
        self,
        pod: PodInfo,
        container: str,
        ws: int,
        limit: int | None,
        level: str,
        bd: dict[str, int | None],
        when: datetime,
        pressure: Pressure | None = None,
    ) -> None:
        mark = Watermark.at(
            pod.policy_threshold if pod.policy_threshold is not None else self.s.warn_threshold
        )
        key = (pod.uid, container)
        active, transition = step(self.high.get(key, False), ws / limit if limit else None, mark)
        self.high[key] = active
        if transition == "fired" and limit:
            self._emit(
                high_working_set_event(
                    pod, container, self.s.node_name, self.boot_id, ws, limit, level, bd, mark.warn, when,
                    pressure=pressure,
                )
            )

    def _stuck(self, readings: list[tuple[str, Any]], when: datetime) -> None:
        now_stuck: set[tuple[str, str]] = set()
        for st in find_stuck(readings):
            pod, cont = self.pods.lookup(st.pod_uid, st.container_id)
            if pod is None:
                continue
            key = (pod.uid, cont.name if cont else "")
            now_stuck.add(key)
            if key not in self.stuck:
                self._emit(
                    stuck_event(
                        pod,
                        cont.name if cont else None,
                        self.s.node_name,
                        self.boot_id,
                        st.cgroup,
                        st.limit_bytes,
                        when,
                    )
                )
        self.stuck = now_stuck

    def _forget_vanished(self, live_keys: set[tuple[str, str]]) -> None:
        gone = self.pods.take_removed()
        live_uids = {p.uid for p in self.pods.pods()}
        for uid in gone:
            self.aggregator.forget(uid)
        for key in [k for k in self.high if k not in live_keys or k[0] in gone]:
            del self.high[key]
        self.book.forget_pods(live_uids)
        self.aggregator.expire(datetime.now(UTC))
        self._forget_series({(p.namespace, p.name) for p in self.pods.pods()})

    def _forget_series(self, live: set[tuple[str, str]]) -> None:
        """A deleted pod's kill counters leave /metrics ``metrics_grace`` seconds after it went (a
        scrape in between sees its last kill); a pod of the same name back in time keeps them."""
        now = time.monotonic()
        for labels, _ in self.counters.family(KILLS_COUNTER):
            key = (labels.get("namespace", ""), labels.get("pod", ""))
            if key not in live:
                self._series_gone.setdefault(key, now)
        for key in [k for k in self._series_gone if k in live]:
            del self._series_gone[key]
        expired = {k for k, since in self._series_gone.items() if now - since >= self.s.metrics_grace}
        if expired:
            self.counters.remove(
                KILLS_COUNTER, lambda lbl: (lbl.get("namespace", ""), lbl.get("pod", "")) not in expired
            )
            for key in expired:
                del self._series_gone[key]

    def _trim_heap(self) -> None:
        """At most once a minute, after a sweep: the C heap's free pages go back to the kernel, or RSS
        keeps the high-water mark of every sweep's texts, scattered (oomsight.host.heap)."""
        now = time.monotonic()
        if now - self._last_trim >= HEAP_TRIM_SECONDS:
            self._last_trim = now
            release_free_heap()

    def _forget_once(self, swept: set[str]) -> None:
        """Drop the once-keys of cgroups that are gone and of containers no pod here has any more,
        so that they do not pile up with every container the node ever ran."""
        ids = {c.container_id for p in self.pods.pods() for c in p.containers if c.container_id}
        gone = []
        for key in self.logged_once:
            kind, _, subject = key.partition(":")
            if kind in ONCE_PER_CGROUP and subject.startswith("/"):
                if subject not in swept and not self.walker.exists(subject):
                    gone.append(key)
            elif kind == "nocg" and subject not in ids:
                gone.append(key)
        self.logged_once.difference_update(gone)

    def _write_report(self, now: float) -> None:
        last = self.reports.last_write
        if last is not None and now - last < self.reports.min_interval:
            return  # not due: do not even build it
        day_ago = now - 86400
        while self.kill_times and self.kill_times[0] < day_ago:
            self.kill_times.popleft()
        status = build_status(
            report_time=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            agent_version=__version__,
            boot_id=self.boot_id,
            node=self._node_summary(),
            findings=self.findings,
            profiles=self.book.profiles.values(),
            incidents=list(self.incidents),
            oom_kills_24h=len(self.kill_times),
            kernel_log={"source": self.source, "refused": self.source_why},
        )
        if self.reports.maybe_write(status, now):
            self.counters.inc("oomsight_agent_reports_written_total")


def run(settings: Settings) -> int:
    return Agent(settings).run()
