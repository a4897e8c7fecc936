"""How long each OOM kill took from the kernel's kill line to each stage of its report.

The kill line's stamp is the kernel's ``local_clock`` (µs since boot), which is not
CLOCK_MONOTONIC: on this machine's TSC the two drifted apart by tens of ms within hours (measured
with a probe line written to /dev/kmsg, bench/bench_live_latency.py ``measure_skew``). The agent
writes nothing to the kernel log, so it estimates the offset from what it reads: every read of the
log ends with the newest record it got, taken at ``t``; ``t - stamp`` is the offset plus how long
that record waited, and its minimum over the last minutes is the offset plus the shortest wait
(sub-ms when the agent idles in poll(2), as it does between kills). A stage's latency is therefore
never over-stated, and under-stated by at most that shortest wait.

Stages, each in the histogram ``oomsight_agent_kill_report_latency_seconds{stage}``:

- ``read``: the kill line was taken from the kernel log;
- ``assembled``: its report was complete (the next report or a quiet log ended it);
- ``attributed``: the Event was made (diagnosed, placed in its Pod and container);
- ``spooled``: the Event was in the spool, where the sender takes it (the state writer puts it on
  disk before the kernel log cursor passes the kill: ``oomsight.agent.writer``);
- ``delivered``: the API server acknowledged the Event.

Kills in the ring buffer when the agent started (read in its first batch) are not timed: their
latency is the agent's downtime.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Iterator

from prometheus_client.core import HistogramMetricFamily

STAGES = ("read", "assembled", "attributed", "spooled", "delivered")
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
"""Seconds. 0.1 is a bound: the share of kills within the 100 ms target is read off exactly."""
METRIC = "oomsight_agent_kill_report_latency_seconds"
OFFSET_SLOT_SECONDS = 60.0
OFFSET_WINDOW_SECONDS = 600.0
"""The offset is the minimum over this long: the two clocks drift a few ms per 10 minutes here."""
SETTLED_SECONDS = 1.0
"""An offset estimate larger than this is not the clocks' skew (tens of ms) but a record's wait: the
first read's newest record may be hours old. Kill times are not corrected with it."""
MAX_OPEN = 10_000
"""Kills timed but not delivered yet (an API outage); the oldest are forgotten past this."""


class ClockOffset:
    """CLOCK_MONOTONIC minus the kernel log's clock, in seconds (None until a record was read)."""

    def __init__(self) -> None:
        self._slots: list[tuple[float, float]] = []
        """(slot start, minimum of ``t - stamp`` in it), oldest first; the newest is always kept."""

    def observe(self, now: float, usec: int) -> None:
        candidate = now - usec / 1e6
        if self._slots and now - self._slots[-1][0] < OFFSET_SLOT_SECONDS:
            start, best = self._slots[-1]
            if candidate < best:
                self._slots[-1] = (start, candidate)
            return
        self._slots.append((now, candidate))
        while len(self._slots) > 1 and now - self._slots[0][0] > OFFSET_WINDOW_SECONDS:
            del self._slots[0]

    def value(self) -> float | None:
        return min(best for _, best in self._slots) if self._slots else None

    def monotonic(self, usec: int) -> float | None:
        """The kernel log stamp ``usec`` on CLOCK_MONOTONIC, or None while the estimate is unsettled
        (``SETTLED_SECONDS``)."""
        offset = self.value()
        if offset is None or abs(offset) > SETTLED_SECONDS:
            return None
        return usec / 1e6 + offset


class KillLatency:
    """Per-stage histograms of kill → report latency. The loop starts and marks a kill by its kmsg
    sequence number; the sender thread marks ``delivered`` by the Event's name. Thread-safe."""

    def __init__(self) -> None:
        self.offset = ClockOffset()
        self._lock = threading.Lock()
        self._counts = {s: [0] * (len(BUCKETS) + 1) for s in STAGES}
        self._sums = dict.fromkeys(STAGES, 0.0)
        self._by_seq: OrderedDict[int, float] = OrderedDict()
        """Kill sequence number → its kill line's time on CLOCK_MONOTONIC."""
        self._by_event: OrderedDict[str, list[float]] = OrderedDict()
        """Event name → its kill lines' times, until the API acknowledged the Event (a series, one
        Event counting several kills, acknowledges them all at once)."""

    def _observe(self, stage: str, seconds: float) -> None:
        seconds = max(0.0, seconds)
        i = next((i for i, b in enumerate(BUCKETS) if seconds <= b), len(BUCKETS))
        with self._lock:
            self._counts[stage][i] += 1
            self._sums[stage] += seconds

    def start(self, seq: int, usec: int, read_at: float) -> None:
        """A kill line read live at ``read_at`` (monotonic); time its stages from now on."""
        offset = self.offset.value()
        if offset is None:
            return
        killed = usec / 1e6 + offset
        self._by_seq[seq] = killed
        if len(self._by_seq) > MAX_OPEN:
            self._by_seq.popitem(last=False)
        self._observe("read", read_at - killed)

    def mark(self, seq: int | None, stage: str, now: float | None = None) -> None:
        killed = self._by_seq.get(seq) if seq is not None else None
        if killed is not None:
            self._observe(stage, (time.monotonic() if now is None else now) - killed)

    def handed(self, seq: int | None, event: str) -> None:
        """The kill's Event ``event`` is about to reach the sender thread: its ``delivered`` is timed
        from there (registered first, so that a quick sender cannot deliver it unseen)."""
        killed = self._by_seq.get(seq) if seq is not None else None
        if killed is None:
            return
        with self._lock:
            self._by_event.setdefault(event, []).append(killed)
            if len(self._by_event) > MAX_OPEN:
                self._by_event.popitem(last=False)

    def spooled(self, seq: int | None) -> None:
        """The kill's Event is in the spool (on disk before the cursor moves past the kill)."""
        killed = self._by_seq.pop(seq, None) if seq is not None else None
        if killed is not None:
            self._observe("spooled", time.monotonic() - killed)

    def forget(self, seq: int | None) -> None:
        if seq is not None:
            self._by_seq.pop(seq, None)

    def delivered(self, event: str) -> None:
        with self._lock:
            kills = self._by_event.pop(event, ())
        now = time.monotonic()
        for killed in kills:
            self._observe("delivered", now - killed)

    def families(self) -> Iterator[HistogramMetricFamily]:
        fam = HistogramMetricFamily(
            METRIC,
            "time from the kernel's OOM kill line (its kmsg stamp, on CLOCK_MONOTONIC) to each stage of "
            "the kill's report: read, assembled, attributed, spooled, delivered (API acknowledged)",
            labels=["stage"],
        )
        with self._lock:
            rows = [(s, list(self._counts[s]), self._sums[s]) for s in STAGES]
        for stage, counts, total in rows:
            cumulative, buckets = 0, []
            for bound, n in zip([*map(str, BUCKETS), "+Inf"], counts, strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            fam.add_metric([stage], buckets, sum_value=total)
        yield fam
