"""Memory request and limit recommendations from working-set history: VPA's method, made OOM- and cache-aware.

Baseline (the VPA recommender, kubernetes/autoscaler ``vertical-pod-autoscaler/pkg/recommender``):
every replica of a container contributes one *peak* per aggregation interval (24 h) to a decaying
histogram of the workload (``model/container.go`` ``addMemorySample``; replicas merge in
``model/aggregate_container_state.go``); the target is the p90 of those peaks plus a 15% margin
(``logic/recommender.go``); an OOM kill adds a synthetic peak of ``max(request + 100 MiB, request x 1.2)``
(``model/container.go`` ``RecordOOM``, defaults in ``model/aggregations_config.go``).

The rules (each measured with ``bench/replay_real.py`` on real VM memory traces, GWA-T-12 Bitbrains,
and with ``bench/replay.py`` on synthetic shapes; the README has the figures):

* **The limit is the larger of two peaks, plus a headroom.** (a) The *busy day*: ``limitPercentile``
  (p60) of the per-interval peaks in the window, each replica's peak once per interval. (b) The
  *recent peak*: the highest peak after halving it for every ``halfLife`` (18 h) of its age, so a peak
  from last night holds the limit up, and a one-off spike from five days ago (counted at 1/100) no
  longer does. A low busy day with a wide headroom (p60 + up to 30%) beat a high one with a narrow
  headroom (p75 + up to 20%) on both halves of the real series: the 3rd-highest of 9 daily peaks
  is often a one-off, the 4th-highest plus a margin follows the level the series keeps returning to.
  On 60 real series the maximum of 8 days (KRR) or a p98 of them (this engine before issue 13)
  over-provisions spiky series: the next day's peak stays below the 8-day maximum in most windows
  whose maximum is a one-off.
* **The headroom follows the series' own swing.** It is twice how far the highest interval peak stands
  above the median one, kept between a third of ``headroomPercent`` and all of it (10-30%): a series
  whose daily peaks agree to 2% gets 10%, one whose peaks swing by 15% or more gets 30% (VPA: a flat
  15% for all). The floor stays at 10% because a half (15%) added slack on the steady synthetic shapes
  (``bench/replay.py`` held-out: 502 MiB instead of 463 MiB) to save one real OOM case of 21.
* **The headroom in bytes is capped, and the cap follows the series' headroom.** An OOM kill costs one
  restart whatever the container's size, while every byte of headroom is a byte reserved on the node:
  30% of a 6 GiB peak is 1.8 GiB held back against one rare day. So the relative headroom applies to
  at most ``headroomMax / headroomPercent`` of the peak (448 MiB / 30% = 1.5 GiB): above that size a
  container gets the bytes a 1.5 GiB one with the same swing would get, i.e. at most ``headroomMax``
  (448 MiB) for a series at the full 30%, a third of it (149 MiB) for a steady one at 10%. A flat
  512 MiB cap for every series (before) gave a big steady series as many bytes as a big swinging one.
  On the 60 Bitbrains VMs, with the weekly rule below: 21 OOM cases and 247.4% slack instead of 20
  and 252.3% with the flat cap; alone, 22 and 249.2% instead of 21 and 254.2%. Chosen with ``--half
  2`` (the cap of 384-512 MiB with the least slack at no more OOM cases than before there), 448 MiB
  holds on half 1 (8 OOM cases, as before, at 285.3% instead of 293.6%); chosen with half 1 it would
  be 384 MiB, which gives half 2 15 OOM cases instead of 13: so 448, not lower. On the synthetic
  shapes (``bench/replay.py`` held-out) it costs one OOM (10 instead of 9) and saves 13 MiB (450).
* **A weekly cycle sizes the next day from the same weekday.** Business VMs run weekly jobs (a Tuesday
  batch, a weekend load). When the latest interval's peak repeats the one a week before within
  ``WEEKLY_MATCH`` (5%), and the series' interval peaks swing by ``weekly_min_swing`` (50%) or more
  (on a steadier series a 5% repeat is likely by chance: with 20% the synthetic spikes shape lost 6
  more OOMs), the limit is sized from the interval a week before the one most of the next interval
  falls on, instead of the busy day and the recent peak. A recent peak that the cycle does not
  explain (its interval a week before is missing or differs by more than 5%) still holds the limit
  up, halved per ``halfLife`` as usual: a new surge is not waved away as "not the weekday". On the 60
  Bitbrains VMs the rule fires in 12 of 420 cases, e.g. it covers vm-278's Tuesday job (306 MiB the
  next day; without the rule the limit was 140 MiB) and lets vm-317's weekend load (4.6 GiB) go on
  Sunday night (the limit 2.4 GiB instead of 5.0 GiB; Monday peaked at 1.7 GiB). Half 1: 8 OOM
  cases, 285.3% (without it 9, 289.6%); half 2: 13, 221.1% (13, 221.2%); alone (with the flat cap)
  it helps both halves too (half 1: 7, 289.3% instead of 8, 293.6%; half 2: 13, 226.6% instead of
  13, 226.7%). Days are UTC days.
* **The request is the typical day.** ``percentile`` (p50) of the same peaks, plus the headroom:
  what the scheduler reserves follows the usual day, the limit the tail.
* **A rising floor is said.** When the lowest reading of each interval rose four intervals in a row
  by 10% or more in all, the reason says so (a leak or a growing cache); the limit follows it only
  through the peaks (the recent-peak rule), never by extrapolation.

What this engine also does differently from VPA, and why (one sentence each):

* **OOM = censored demand.** An OOM says the container needed *more* than the limit it had, so each
  kill sets a floor of ``max(limit x oomBumpRatio, limit + oomMinBump)`` on the limit and raises the
  request to at least that limit for the whole history window: VPA bumps from the *request* and lets
  the one synthetic peak sink below p90 within days, which re-creates the limit that killed it.
* **Page cache does not ratchet.** When a breakdown is given, the demand is the non-reclaimable part
  (anon + shmem + kernel) plus a bounded allowance of active file cache (``cacheAllowancePercent`` of
  it): the kernel reclaims clean file pages before it OOM-kills (``mm/memcontrol.c`` ``try_charge``),
  so a working set that grows with cache would otherwise drive the limit up forever (cache fills any limit).
* **Memory that cannot be reclaimed counts.** shmem/tmpfs and kernel memory are in the demand in full:
  they sit on the anon LRU or in slab and are not reclaimable without swap (see ``core.memory.Breakdown``).
* **JVM heap is a promise.** With ``-Xmx`` visible, the limit covers ``Xmx + off-heap`` (observed, or
  at least 25% of the heap: the common ``MaxRAMPercentage=75`` rule), because the heap grows to Xmx
  whenever the collector lets it, whatever the history shows; with ``MaxRAMPercentage`` the heap scales
  with the limit, so the limit must leave ``off-heap / (1 - pct)`` room.
* **Margin follows confidence.** The headroom is widened by ``2 - confidence``: a young history has
  not seen a full cycle yet, an 8-day one has; VPA's flat 15% is too little on day one and waste on
  day eight (VPA widens only its *upper bound*, by ``1 + 1/days``, ``logic/recommender.go``).
* **Exact peaks, tight rounding.** Percentiles are taken over the peaks themselves (nearest rank), not
  over histogram buckets (VPA: 10 MB, +5%, i.e. up to 8% around 300 MB before any margin), and results
  are rounded up by at most 1/32.

Bounds and rounding: results are clamped to ``[minimum, maximum]`` (default minimum 64 MiB *per
container*; VPA's 250 MiB is per *pod* and split across its containers, which over-provisions small
sidecars and says nothing about a single big one), the limit is never below the request, and both are
rounded *up* to a multiple of ``2**(floor(log2(MiB)) - 5)`` MiB (at least 1 MiB): 300 MiB → 304 MiB,
1000 MiB → 1008 MiB; never more than +3.2%.

Confidence (0..1): ``min(history span / historyWindow, peak intervals seen / intervals in the window)``,
the VPA ``getConfidence`` idea (``logic/estimator.go``: min(lifespan days, samples / 1440)) scaled to 1
at a full window; 8 days of daily peaks → 1.0, one day → 0.125.

The engine is pure (no I/O, no clock): callers pass timestamps in seconds. State round-trips through
``Recommender.to_state()`` / ``Recommender.from_state()`` as JSON-ready dicts.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

from oomsight.core.errors import ParseError, UsageError
from oomsight.core.memory import Breakdown
from oomsight.core.quantity import MiB, format_bytes, human_bytes, parse_bytes, parse_seconds

DAY = 86400.0
STATE_VERSION = 2
JVM_OFFHEAP_FRACTION = 0.25
"""Off-heap assumed as a share of the heap until observed (MaxRAMPercentage=75 leaves 1/3; we take 1/4)."""
JVM_OFFHEAP_MIN = 64 * MiB
YOUNG_MARGIN = 1.0
"""The headroom is multiplied by ``1 + YOUNG_MARGIN * (1 - confidence)``: doubled with no history."""
SWING_FACTOR = 2.0
"""The headroom is this many times the swing of the interval peaks (highest over median), ..."""
MIN_HEADROOM_SHARE = 1 / 3
"""... at least this share of ``headroomPercent`` and at most all of it."""
RISING_INTERVALS = 4
"""A rising floor is noted after this many intervals whose lowest reading each beat the one before."""
RISING_MIN = 0.10
"""... and only if the floor rose by at least this share over them."""
WEEK = 7 * DAY
WEEKLY_MATCH = 0.05
"""The weekly-cycle rule applies when the current interval's peak is within this share of the peak of
the same interval a week before, and the peaks swing by ``RecommendSettings.weekly_min_swing``."""
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
PAGE_CACHE_NOTE = 1.10
"""Say "page cache" in the reason when the working-set estimate exceeds the demand estimate by 10%+."""


SPEC_FIELDS = frozenset(
    {
        "percentile", "limitPercentile", "headroomPercent", "minimum", "maximum", "halfLife",
        "historyWindow", "oomBumpRatio", "oomMinBump", "peakInterval", "cacheAllowancePercent",
        "headroomMax",
    }
)  # fmt: skip
"""The keys of a MemoryPolicy's ``spec.recommendation`` (the CRD schema lists exactly these)."""


@dataclass(frozen=True, slots=True)
class RecommendSettings:
    """The MemoryPolicy ``spec.recommendation`` block, in bytes and seconds (``from_spec`` parses it),
    and the engine's own thresholds that a policy does not set (the fields after ``headroom_max``)."""

    percentile: float = 0.5
    """Request = this percentile of the per-interval demand peaks (the typical day) + the headroom."""
    limit_percentile: float = 0.6
    """The busy-day rule of the limit: this percentile of the same peaks (+ the headroom)."""
    headroom_percent: float = 30.0
    """The most headroom a series gets at full confidence (VPA: 15% flat); the headroom is twice the
    series' swing, between a third of this and all of it; a young history widens it up to twice."""
    minimum: int = 64 * MiB
    maximum: int | None = None
    half_life: float = 0.75 * DAY
    """The recent-peak rule halves a peak's weight per this much of its age (18 h; VPA's decay: 24 h)."""
    history_window: float = 8 * DAY
    oom_bump_ratio: float = 1.2
    oom_min_bump: int = 100 * MiB
    peak_interval: float = DAY
    """Each replica contributes its peak once per interval (VPA: 24 h)."""
    cache_allowance_percent: float = 10.0
    """Active file cache counted as demand, as a share of the non-reclaimable memory."""
    headroom_max: int | None = 448 * MiB
    """The most headroom in bytes, for a series at the full ``headroomPercent``; a series that gets less
    headroom gets a proportionally lower cap (a 10% series: a third of it). None: no cap."""
    weekly_min_swing: float = 0.50
    """The weekly-cycle rule applies only when the interval peaks swing by at least this much (on a
    steadier series the weekday adds nothing); ``math.inf`` switches the rule off. Not a spec field."""

    def __post_init__(self) -> None:
        bad = None
        if not 0 < self.percentile <= 1:
            bad = ("percentile", self.percentile, "a fraction in (0, 1], e.g. 0.9")
        elif not 0 < self.limit_percentile <= 1:
            bad = ("limitPercentile", self.limit_percentile, "a fraction in (0, 1], e.g. 0.98")
        elif not 0 <= self.headroom_percent <= 1000:
            bad = ("headroomPercent", self.headroom_percent, "a percentage between 0 and 1000")
        elif self.minimum < 0:
            bad = ("minimum", self.minimum, "a non-negative quantity")
        elif self.maximum is not None and self.maximum < self.minimum:
            bad = ("maximum", self.maximum, f"at least the minimum ({format_bytes(self.minimum)})")
        elif self.half_life <= 0 or self.history_window <= 0 or self.peak_interval <= 0:
            bad = ("halfLife/historyWindow/peakInterval", 0, "positive durations")
        elif self.oom_bump_ratio < 1:
            bad = ("oomBumpRatio", self.oom_bump_ratio, "a ratio of at least 1, e.g. 1.2")
        elif self.oom_min_bump < 0:
            bad = ("oomMinBump", self.oom_min_bump, "a non-negative quantity")
        elif not 0 <= self.cache_allowance_percent <= 1000:
            bad = ("cacheAllowancePercent", self.cache_allowance_percent, "a percentage")
        elif self.headroom_max is not None and self.headroom_max < 0:
            bad = ("headroomMax", self.headroom_max, "a non-negative quantity, e.g. 512Mi")
        if bad:
            raise UsageError(f"recommendation.{bad[0]} = {bad[1]!r} is out of range", f"use {bad[2]}")

    @staticmethod
    def from_spec(spec: Mapping[str, Any] | None) -> RecommendSettings:
        """Parse a MemoryPolicy ``recommendation`` block (camelCase keys, ``512Mi``, ``24h``)."""
        spec = dict(spec or {})
        unknown = sorted(set(spec) - SPEC_FIELDS)
        if unknown:
            raise UsageError(
                f"recommendation: unknown field(s) {', '.join(unknown)}", f"use {sorted(SPEC_FIELDS)}"
            )
        d = RecommendSettings()

        def num(name: str, default: float) -> float:
            v = spec.get(name, default)
            try:
                return float(v)
            except (TypeError, ValueError):
                raise UsageError(f"recommendation.{name} = {v!r} is not a number", "write e.g. 0.9") from None

        def size(name: str, default: int | None) -> int | None:
            v = spec.get(name)
            return default if v is None else parse_bytes(v, f"recommendation.{name}")

        def dur(name: str, default: float) -> float:
            v = spec.get(name)
            return default if v is None else parse_seconds(v, f"recommendation.{name}")

        return RecommendSettings(
            percentile=num("percentile", d.percentile),
            limit_percentile=num("limitPercentile", d.limit_percentile),
            headroom_percent=num("headroomPercent", d.headroom_percent),
            minimum=size("minimum", d.minimum) or 0,
            maximum=size("maximum", d.maximum),
            half_life=dur("halfLife", d.half_life),
            history_window=dur("historyWindow", d.history_window),
            oom_bump_ratio=num("oomBumpRatio", d.oom_bump_ratio),
            oom_min_bump=size("oomMinBump", d.oom_min_bump) or 0,
            peak_interval=dur("peakInterval", d.peak_interval),
            cache_allowance_percent=num("cacheAllowancePercent", d.cache_allowance_percent),
            headroom_max=size("headroomMax", d.headroom_max),
        )

    def headroom_cap(self, h: float) -> float | None:
        """The most headroom in bytes for a relative headroom ``h``: ``headroom_max`` scaled by ``h``
        over ``headroomPercent`` (at most 1), i.e. ``h`` of a peak of ``headroomMax / headroomPercent``."""
        if self.headroom_max is None:
            return None
        cap = self.headroom_percent / 100
        return self.headroom_max * (min(1.0, h / cap) if cap > 0 else 1.0)

    def plus_headroom(self, value: float, h: float) -> float:
        """``value`` plus ``h`` (0.2 = 20%) of it, but no more than ``headroom_cap(h)`` bytes of it."""
        extra, most = value * h, self.headroom_cap(h)
        return value + (extra if most is None else min(extra, most))

    def first_interval(self, now: float) -> int:
        """Index of the oldest peak interval still inside the history window at ``now``."""
        return math.floor((now - self.history_window) / self.peak_interval)

    def oom_floor(self, limit: int) -> int:
        """What an OOM at ``limit`` says the container needs at least (VPA's bump, applied to the limit)."""
        return max(math.ceil(limit * self.oom_bump_ratio), limit + self.oom_min_bump)


@dataclass(frozen=True, slots=True)
class JvmHeap:
    """What the JVM's flags say about its heap; give one of the two."""

    max_heap_bytes: int | None = None
    """``-Xmx`` (or ``-XX:MaxHeapSize``)."""
    max_ram_percentage: float | None = None
    """``-XX:MaxRAMPercentage`` (0-100): the heap is this share of the container limit."""

    def __post_init__(self) -> None:
        if self.max_heap_bytes is not None and self.max_heap_bytes <= 0:
            raise UsageError(f"JVM max heap {self.max_heap_bytes} must be positive", "pass -Xmx in bytes")
        if self.max_ram_percentage is not None and not 0 < self.max_ram_percentage < 100:
            raise UsageError(
                f"JVM MaxRAMPercentage {self.max_ram_percentage} is out of range", "pass a value in (0, 100)"
            )


@dataclass(frozen=True, slots=True)
class Recommendation:
    """One container's recommendation, in bytes.

    ``p50``/``p95``/``max`` describe the observed working-set peaks (one per replica per peak interval)
    within the history window (nearest-rank percentiles of the peaks themselves).
    """

    request_bytes: int
    limit_bytes: int
    reason: str
    confidence: float
    p50: int
    p95: int
    max: int
    oom_kills: int
    samples: int = 0
    notes: tuple[str, ...] = ()
    """Machine-readable tags of what shaped the result: ``oom-floor``, ``page-cache``, ``jvm``, ``minimum``,
    ``maximum``, ``no-samples``, ``rising``, ``weekly``."""

    def as_dict(self) -> dict[str, Any]:
        return {
            "requestBytes": self.request_bytes,
            "limitBytes": self.limit_bytes,
            "request": format_bytes(self.request_bytes),
            "limit": format_bytes(self.limit_bytes),
            "reason": self.reason,
            "confidence": round(self.confidence, 3),
            "p50Bytes": self.p50,
            "p95Bytes": self.p95,
            "maxBytes": self.max,
            "oomKills": self.oom_kills,
            "samples": self.samples,
            "notes": list(self.notes),
        }


def round_up(n: float) -> int:
    """Up to a whole MiB, then up to a multiple of 2**(floor(log2(MiB)) - 5) MiB (≤ +3.2%)."""
    if n <= 0:
        return 0
    mib = math.ceil(n / MiB - 1e-9)
    step = 1 << max(0, mib.bit_length() - 1 - 5)
    return -(-mib // step) * step * MiB


def demand_of(working_set: int, bd: Breakdown | None, cache_allowance: float) -> tuple[int, int]:
    """(demand, reclaimable cache counted out). Without a usable breakdown the demand is the working set."""
    if bd is None or bd.anon is None:
        return working_set, 0
    hard = bd.anon + (bd.shmem or 0) + (bd.kernel or 0)
    if hard >= working_set:
        return working_set, 0
    cache = working_set - hard
    allowed = min(cache, math.ceil(hard * cache_allowance))
    return hard + allowed, cache - allowed


@dataclass(slots=True)
class _Window:
    """One replica's peak interval: its index, its last reading's time, the highest working set and
    demand in it, and the lowest demand (the floor)."""

    index: int
    t: float
    ws: int
    demand: int
    low: int


@dataclass(frozen=True, slots=True)
class _Weekly:
    """What the weekly-cycle rule saw: the peak it sizes from (and its interval), the current interval's
    peak and the peak of the interval a week before it."""

    peak: int
    index: int
    latest: int
    before: int
    other: tuple[float, int, float, bool]
    """The recent-peak rule over the peaks the cycle does not explain (those whose interval a week
    before is missing or not within WEEKLY_MATCH): (weighted, peak, age, False)."""

    @property
    def value(self) -> float:
        """What the limit is sized from: the same interval a week before, or a higher unexplained peak."""
        return max(float(self.peak), self.other[0])


@dataclass(slots=True)
class _Series:
    peaks: list[_Window] = field(default_factory=list)
    """Closed peak intervals, one per replica and interval, oldest first (pruned to the window)."""
    open: dict[str, _Window] = field(default_factory=dict)
    first: float | None = None
    last: float | None = None
    samples: int = 0
    dropped: int = 0
    ooms: list[tuple[float, int | None]] = field(default_factory=list)
    last_limit: int | None = None
    jvm: JvmHeap | None = None
    intervals: set[int] = field(default_factory=set)


class Recommender:
    """Per-key (e.g. ``namespace/workload/container``) history and recommendations. Not thread-safe."""

    def __init__(self, settings: RecommendSettings | None = None) -> None:
        self.settings = settings or RecommendSettings()
        self._series: dict[str, _Series] = {}

    def series_keys(self) -> list[str]:
        """Every key with history, sorted."""
        return sorted(self._series)

    def _get(self, key: str) -> _Series:
        s = self._series.get(key)
        if s is None:
            s = self._series[key] = _Series()
        return s

    def set_jvm(self, key: str, jvm: JvmHeap | None) -> None:
        """Tell the engine what the container's JVM flags say (None forgets it)."""
        self._get(key).jvm = jvm

    def add_sample(
        self,
        key: str,
        t: float,
        working_set_bytes: int,
        breakdown: Breakdown | None = None,
        limit_bytes: int | None = None,
        replica: str = "",
    ) -> bool:
        """One working-set reading of one replica. Returns False (and counts it) if it is out of order."""
        if working_set_bytes < 0:
            raise UsageError(f"working set {working_set_bytes} is negative", "pass bytes >= 0")
        s = self._get(key)
        cfg = self.settings
        idx = math.floor(t / cfg.peak_interval)
        w = s.open.get(replica)
        if w is not None and idx < w.index:
            s.dropped += 1
            return False
        if w is not None and idx > w.index:
            self._flush(s, w)
            w = None
        demand, _ = demand_of(working_set_bytes, breakdown, cfg.cache_allowance_percent / 100)
        if w is None:
            s.open[replica] = _Window(idx, t, working_set_bytes, demand, demand)
        else:
            w.t = max(w.t, t)
            w.ws = max(w.ws, working_set_bytes)
            w.demand = max(w.demand, demand)
            w.low = min(w.low, demand)
        s.first = t if s.first is None else min(s.first, t)
        s.last = t if s.last is None else max(s.last, t)
        s.samples += 1
        s.intervals.add(idx)
        if limit_bytes:
            s.last_limit = limit_bytes
        return True

    def interval_peaks(self, key: str) -> dict[int, tuple[int, int]]:
        """Interval index -> (highest working set, highest demand) read so far, over every replica."""
        s = self._series.get(key)
        out: dict[int, tuple[int, int]] = {}
        for w in (*s.peaks, *s.open.values()) if s is not None else ():
            ws, demand = out.get(w.index, (0, 0))
            out[w.index] = (max(ws, w.ws), max(demand, w.demand))
        return out

    def add_oom(self, key: str, t: float, limit_bytes: int | None = None) -> None:
        """An OOM kill at ``t`` under ``limit_bytes`` (None: the last limit seen with a sample)."""
        s = self._get(key)
        s.ooms.append((t, limit_bytes if limit_bytes else None))
        newest = max(o[0] for o in s.ooms)
        s.ooms = [o for o in s.ooms if newest - o[0] <= self.settings.history_window]
        if limit_bytes:
            s.last_limit = limit_bytes

    def forget(self, key: str) -> None:
        self._series.pop(key, None)

    def prune(self, now: float) -> int:
        """Drop keys with no sample and no OOM within the history window; returns how many."""
        window = self.settings.history_window
        gone = [
            k
            for k, s in self._series.items()
            if (s.last is None or now - s.last > window) and not any(now - t <= window for t, _ in s.ooms)
        ]
        for k in gone:
            del self._series[k]
        return len(gone)

    def _flush(self, s: _Series, w: _Window) -> None:
        s.peaks.append(w)
        horizon = w.t - self.settings.history_window - self.settings.peak_interval
        if s.peaks[0].t < horizon:
            s.peaks = [p for p in s.peaks if p.t >= horizon]

    def recommend(self, key: str, now: float) -> Recommendation:
        """The recommendation for ``key`` as of ``now`` (seconds). Raises UsageError for an unknown key."""
        s = self._series.get(key)
        if s is None:
            raise UsageError(f"no history for {key!r}", "add samples or OOM kills for it first")
        cfg = self.settings
        window = cfg.history_window
        current = math.floor(now / cfg.peak_interval)
        peaks = [p for p in (*s.peaks, *s.open.values()) if now - p.t <= window and p.index <= current]
        ooms = [(t, lim) for t, lim in s.ooms if 0 <= now - t <= window]
        notes: list[str] = []
        reasons: list[str] = []

        ws_sorted = sorted(p.ws for p in peaks)
        p50, p95, wmax = (_rank(ws_sorted, q) for q in (0.5, 0.95, 1.0))
        confidence = self._confidence(s, now)
        per = _per_interval(peaks)
        swing = _swing(per)
        h = _headroom(cfg.headroom_percent / 100, swing) * (1 + YOUNG_MARGIN * (1 - confidence))
        demands = sorted(p.demand for p in peaks)
        typical = _rank(demands, cfg.limit_percentile)
        recent = self._recent_peak(peaks, ooms, now)
        request = cfg.plus_headroom(_rank(demands, cfg.percentile), h)
        limit = 0.0
        if peaks:
            weekly = self._weekly(peaks, per, swing, now)
            limit = cfg.plus_headroom(weekly.value if weekly else max(typical, recent[0]), h)
            if weekly:
                notes.append("weekly")
            reasons.append(self._limit_reason(len(peaks), typical, recent, swing, confidence, weekly))
            ws_limit = 0.0
            if any(p.ws > p.demand for p in peaks):
                ws_limit = max(
                    cfg.plus_headroom(_rank(ws_sorted, cfg.limit_percentile), h),
                    cfg.plus_headroom(self._recent_peak(peaks, [], now, ws=True)[0], h),
                )
            if ws_limit > limit * PAGE_CACHE_NOTE:
                notes.append("page-cache")
                reasons.append(
                    f"the working set alone would ask for {human_bytes(ws_limit)}, but"
                    f" {human_bytes(ws_limit - limit)} of that is reclaimable page cache, so the limit"
                    f" follows anon+shmem+kernel plus a {cfg.cache_allowance_percent:g}% cache allowance"
                )
            trend = self._rising_floor(per)
            if trend:
                notes.append("rising")
                reasons.append(trend)
        else:
            notes.append("no-samples")
            reasons.append(f"no working-set samples in the last {_span(window)}")

        if ooms:
            known = [lim if lim else (s.last_limit or wmax) for _, lim in ooms]
            worst = max(known)
            floor = cfg.oom_floor(worst) if worst else 0
            request = max(request, worst)
            if floor > limit:
                notes.append("oom-floor")
                until = max(t for t, _ in ooms) + window
                reasons.append(
                    f"{len(ooms)} OOM kill(s) at a limit of {human_bytes(worst)}: the real peak is above it,"
                    f" so the limit stays at least {human_bytes(floor)} until t={until:.0f}"
                )
                limit = floor
            else:
                reasons.append(f"{len(ooms)} OOM kill(s) in the window, already covered")

        if s.jvm is not None:
            d_max = max((p.demand for p in peaks), default=0)
            jvm_floor, why = self._jvm_floor(s.jvm, d_max, s.last_limit)
            if jvm_floor > limit:
                limit = jvm_floor
                notes.append("jvm")
                reasons.append(why)

        if limit < cfg.minimum or request < cfg.minimum:
            if limit < cfg.minimum:
                notes.append("minimum")
                reasons.append(f"raised to the minimum {format_bytes(cfg.minimum)}")
            limit, request = max(limit, cfg.minimum), max(request, cfg.minimum)
        if cfg.maximum is not None and limit > cfg.maximum:
            notes.append("maximum")
            reasons.append(
                f"capped at the maximum {format_bytes(cfg.maximum)}; OOM kills are likely above it"
            )
            limit, request = cfg.maximum, min(request, cfg.maximum)

        limit_b = round_up(limit)
        if cfg.maximum is not None:
            limit_b = min(limit_b, cfg.maximum)
        request_b = min(round_up(request), limit_b)
        return Recommendation(
            request_bytes=request_b,
            limit_bytes=limit_b,
            reason="; ".join(reasons) + ".",
            confidence=confidence,
            p50=p50,
            p95=p95,
            max=wmax,
            oom_kills=len(ooms),
            samples=s.samples,
            notes=tuple(notes),
        )

    def _recent_peak(
        self, peaks: list[_Window], ooms: list[tuple[float, int | None]], now: float, ws: bool = False
    ) -> tuple[float, int, float, bool]:
        """The highest peak after halving each for every half-life of its age: (that weight x peak, the
        peak, its age in seconds, whether it is an OOM kill's floor). OOM floors count as peaks."""
        best: tuple[float, int, float, bool] = (0.0, 0, 0.0, False)
        hl = self.settings.half_life
        points = [(p.t, p.ws if ws else p.demand, False) for p in peaks]
        points += [(t, self.settings.oom_floor(lim), True) for t, lim in ooms if lim]
        for t, v, oom in points:
            age = max(0.0, now - t)
            weighted = v * 0.5 ** (age / hl)
            if weighted > best[0]:
                best = (weighted, v, age, oom)
        return best

    def _weekly(
        self, peaks: list[_Window], per: dict[int, tuple[int, int]], swing: float, now: float
    ) -> _Weekly | None:
        """The weekly-cycle rule: when the current interval's peak repeats the one a week before (within
        WEEKLY_MATCH) on a series that swings (``weekly_min_swing``), the interval that most of the next
        ``peakInterval`` falls on is sized from the same interval a week before; a recent peak that the
        cycle does not explain (its interval a week before differs) still holds the limit up."""
        cfg = self.settings
        period = WEEK / cfg.peak_interval
        k = round(period)
        if swing < cfg.weekly_min_swing or k < 2 or abs(period - k) > 1e-9:
            return None
        today = math.floor(now / cfg.peak_interval)
        ahead = math.floor((now + cfg.peak_interval / 2) / cfg.peak_interval)
        if today not in per or today - k not in per or ahead - k not in per:
            return None

        def repeats(i: int) -> bool:
            before = per.get(i - k, (0, 0))[0]
            return before > 0 and abs(per[i][0] / before - 1) <= WEEKLY_MATCH

        if not repeats(today):
            return None
        other = self._recent_peak([p for p in peaks if not repeats(p.index)], [], now)
        return _Weekly(per[ahead - k][0], ahead - k, per[today][0], per[today - k][0], other)

    def _limit_reason(
        self,
        n: int,
        typical: int,
        recent: tuple[float, int, float, bool],
        swing: float,
        confidence: float,
        weekly: _Weekly | None = None,
    ) -> str:
        cfg = self.settings
        every = _span(cfg.peak_interval)
        weighted, peak, age, oom = recent
        cap = cfg.headroom_percent / 100
        base = _headroom(cap, swing)
        h = base * (1 + YOUNG_MARGIN * (1 - confidence))
        busy = f"p{_pct(cfg.limit_percentile)} of {n} {every} peaks, {human_bytes(typical)}"
        what = "an OOM kill's floor" if oom else f"the {every} peak"
        counted = ""
        if weighted < peak * 0.995:
            counted = f", counted at {human_bytes(weighted)} after halving per {_span(cfg.half_life)} of age"
        last = f"{what} of {human_bytes(peak)} {_ago(age)}{counted}"
        if weekly:
            day = f"{every} a week before"
            if cfg.peak_interval == DAY:
                day = f"{WEEKDAYS[(weekly.index + 3) % 7]} a week before (UTC days)"  # 1970-01-01: a Thu
            cycle = (
                f"the last {every} peak, {human_bytes(weekly.latest)}, is within {WEEKLY_MATCH * 100:g}% of"
                f" the one a week before ({human_bytes(weekly.before)}) and the {every} peaks swing by"
                f" {swing * 100:.0f}%"
            )
            o_weighted, o_peak, o_age, _ = weekly.other
            if o_weighted > weekly.peak:
                rule = (
                    f"limit from the recent peak: the {every} peak of {human_bytes(o_peak)} {_ago(o_age)},"
                    f" counted at {human_bytes(o_weighted)} after halving per {_span(cfg.half_life)} of age,"
                    f" which the weekly cycle does not explain ({cycle}, and the same {day} peaked at"
                    f" {human_bytes(weekly.peak)})"
                )
            else:
                rule = (
                    f"limit from the weekly cycle: {cycle}, so the next {every} is sized from the same {day}:"
                    f" {human_bytes(weekly.peak)} (the busy {every} and the recent peak say"
                    f" {human_bytes(max(typical, weighted))})"
                )
        elif weighted > typical:
            rule = f"limit from the recent peak: {last}; it is above {busy}"
        else:
            rule = f"limit from the busy {every}: {busy}; the recent peak is lower ({last})"
        how = (
            f"+{base * 100:.0f}% headroom: twice the swing of the {every} peaks (the highest is"
            f" {swing * 100:.0f}% above the median), kept within"
            f" {cap * MIN_HEADROOM_SHARE * 100:g}-{cap * 100:g}%"
        )
        if round(h * 100) > round(base * 100):
            how += f", then widened to +{h * 100:.0f}% for a young history (confidence {confidence:.2f})"
        value = weekly.value if weekly else max(typical, weighted)
        most = cfg.headroom_cap(h)
        if most is not None and value * h > most:
            scaled = ""
            if h < cap:
                share = f"{h * 100:.0f}/{cap * 100:g}"
                scaled = f" x {share} (this series' share of the widest headroom), {human_bytes(most)}"
            how += (
                f"; that would be {human_bytes(value * h)}, so it is capped at headroomMax"
                f" {human_bytes(cfg.headroom_max or 0)}{scaled}"
            )
        return f"{rule}; {how}"

    def _rising_floor(self, per: dict[int, tuple[int, int]]) -> str:
        """A note when the lowest reading of each interval rose for RISING_INTERVALS intervals in a row."""
        seq = [per[i][1] for i in sorted(per)][-RISING_INTERVALS:]
        if len(seq) < RISING_INTERVALS or not all(b > a for a, b in pairwise(seq)):
            return ""
        if seq[0] <= 0 or seq[-1] < seq[0] * (1 + RISING_MIN):
            return ""
        step = (seq[-1] / seq[0]) ** (1 / (len(seq) - 1)) - 1
        every = _span(self.settings.peak_interval)
        return (
            f"the floor (the lowest reading of each {every}) rose {len(seq) - 1} times in a row, from"
            f" {human_bytes(seq[0])} to {human_bytes(seq[-1])} (+{step * 100:.0f}% per {every}): a leak or"
            f" a growing cache; the limit follows it only as its peaks rise"
        )

    def _jvm_floor(self, jvm: JvmHeap, d_max: float, last_limit: int | None) -> tuple[int, str]:
        if jvm.max_heap_bytes:
            heap = jvm.max_heap_bytes
            seen = max(0.0, d_max - heap)
            offheap = max(seen, heap * JVM_OFFHEAP_FRACTION, JVM_OFFHEAP_MIN)
            how = "observed" if seen >= offheap else "assumed"
            return math.ceil(heap + offheap), (
                f"JVM -Xmx is {human_bytes(heap)}: the heap grows to it whenever the collector lets it,"
                f" so the limit covers heap + {how} off-heap {human_bytes(offheap)}"
            )
        assert jvm.max_ram_percentage is not None
        share = jvm.max_ram_percentage / 100
        seen = max(0.0, d_max - share * last_limit) if last_limit else 0.0
        offheap = max(seen, JVM_OFFHEAP_MIN)
        return math.ceil(offheap / (1 - share)), (
            f"JVM MaxRAMPercentage={jvm.max_ram_percentage:g}: the heap takes that share of any limit, so the"
            f" limit leaves {100 - jvm.max_ram_percentage:g}% for off-heap {human_bytes(offheap)}"
        )

    def _confidence(self, s: _Series, now: float) -> float:
        if s.first is None or s.last is None:
            return 0.0
        cfg = self.settings
        span = (min(s.last, now) - s.first) / cfg.history_window
        lo = cfg.first_interval(now)
        seen = sum(1 for i in s.intervals if i >= lo)
        cover = seen / max(1.0, cfg.history_window / cfg.peak_interval)
        return max(0.0, min(1.0, span, cover))

    # --- state -------------------------------------------------------------------------------------

    def to_state(self, now: float | None = None) -> dict[str, Any]:
        """JSON-ready state; with ``now``, peaks and interval sets older than the window are dropped first."""
        keys: dict[str, Any] = {}
        cfg = self.settings
        for k, s in sorted(self._series.items()):
            intervals, peaks = s.intervals, s.peaks
            if now is not None:
                lo = cfg.first_interval(now)
                intervals = {i for i in intervals if i >= lo}
                peaks = [p for p in peaks if now - p.t <= cfg.history_window]
            keys[k] = {
                "peaks": [[p.index, p.t, p.ws, p.demand, p.low] for p in peaks],
                "open": {r: [w.index, w.t, w.ws, w.demand, w.low] for r, w in sorted(s.open.items())},
                "first": s.first,
                "last": s.last,
                "samples": s.samples,
                "dropped": s.dropped,
                "ooms": [[t, lim] for t, lim in s.ooms],
                "lastLimit": s.last_limit,
                "jvm": None
                if s.jvm is None
                else {"maxHeapBytes": s.jvm.max_heap_bytes, "maxRAMPercentage": s.jvm.max_ram_percentage},
                "intervals": sorted(intervals),
            }
        return {"version": STATE_VERSION, "keys": keys}

    @staticmethod
    def from_state(settings: RecommendSettings, state: Mapping[str, Any]) -> Recommender:
        """Rebuild from ``to_state()`` output (e.g. kept in a CR's status). ParseError if malformed."""
        if state.get("version") != STATE_VERSION:
            raise ParseError(
                f"recommender state version {state.get('version')!r} is not {STATE_VERSION}",
                "drop the saved state; it will be rebuilt from new samples",
            )
        r = Recommender(settings)

        def window(v: Any) -> _Window:
            return _Window(int(v[0]), float(v[1]), int(v[2]), int(v[3]), int(v[4]))

        try:
            for k, d in dict(state["keys"]).items():
                jvm = d.get("jvm")
                r._series[str(k)] = _Series(
                    peaks=[window(v) for v in d["peaks"]],
                    open={str(rep): window(v) for rep, v in dict(d.get("open", {})).items()},
                    first=None if d.get("first") is None else float(d["first"]),
                    last=None if d.get("last") is None else float(d["last"]),
                    samples=int(d.get("samples", 0)),
                    dropped=int(d.get("dropped", 0)),
                    ooms=[(float(t), None if lim is None else int(lim)) for t, lim in d.get("ooms", [])],
                    last_limit=None if d.get("lastLimit") is None else int(d["lastLimit"]),
                    jvm=None
                    if jvm is None
                    else JvmHeap(jvm.get("maxHeapBytes"), jvm.get("maxRAMPercentage")),
                    intervals={int(i) for i in d.get("intervals", [])},
                )
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise ParseError(f"recommender state is malformed ({err!r})", "drop the saved state") from None
        return r


def _per_interval(peaks: list[_Window]) -> dict[int, tuple[int, int]]:
    """Interval index -> (highest peak, highest floor) over the replicas."""
    per: dict[int, tuple[int, int]] = {}
    for p in peaks:
        old = per.get(p.index)
        per[p.index] = (p.demand, p.low) if old is None else (max(old[0], p.demand), max(old[1], p.low))
    return per


def _swing(per: dict[int, tuple[int, int]]) -> float:
    """How far the highest interval peak stands above the median one (0.1 = 10%): the series' own
    interval-to-interval variation, with replicas merged (the highest of them per interval)."""
    values = sorted(v[0] for v in per.values())
    median = _rank(values, 0.5)
    return values[-1] / median - 1 if median > 0 else 0.0


def _headroom(cap: float, swing: float) -> float:
    """SWING_FACTOR x the swing, between MIN_HEADROOM_SHARE x ``cap`` and ``cap``."""
    return min(cap, max(cap * MIN_HEADROOM_SHARE, SWING_FACTOR * swing))


def _rank(values: list[int], p: float) -> int:
    """The nearest-rank percentile of sorted ``values`` (0 when empty): the smallest value with at least
    ``p`` of them at or below it."""
    if not values:
        return 0
    return values[max(0, math.ceil(p * len(values) - 1e-9) - 1)]


def _ago(age: float) -> str:
    return "just now" if age < 60 else f"{_span(round(age / 3600) * 3600.0) if age >= 3600 else '<1h'} ago"


def _pct(p: float) -> str:
    return f"{p * 100:g}"


def _span(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", 3600.0), ("m", 60.0)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g}{unit}"
    return f"{seconds:g}s"
