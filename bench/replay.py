"""Replay memory series through three recommenders and score OOMs and slack.

    /tmp/v/bin/python bench/replay.py                 # tuning seeds 0-4 and held-out seeds 100-109
    /tmp/v/bin/python bench/replay.py --seeds 100-109 --days 28

Rule: every contender starts with no limit for a one-day warm-up, then recommends a limit from the
history it has seen so far, again every hour and right after each OOM. In an interval where the
memory the kernel cannot reclaim (anon + shmem + kernel) exceeds the contender's current limit, that
contender takes a simulated OOM kill, which it is told about (``add_oom`` / its own OOM rule); its
working set that interval is seen at the limit. Otherwise it sees the working set that limit allows:
the non-reclaimable part plus as much page cache as fits (the kernel trims cache, it does not kill).

Scores, from the end of the warm-up: OOM kills; slack = recommended limit - non-reclaimable memory,
as a mean in MiB and as a fraction of the usage (sum of slack / sum of usage) over intervals without
an OOM. Contenders:

* ``oomsight``: ``oomsight.core.recommend.Recommender`` with default settings, fed the breakdown and,
  for the JVM shape, -Xmx; the same engine ``oomsight recommend --from-csv`` runs.
* ``vpa``: VPA's memory recipe: daily peaks in a 24 h half-life histogram with VPA's buckets (10 MB,
  +5%), p90 x 1.15, an OOM adds a peak of max(limit + 100 MiB, limit x 1.2). No 250 MiB minimum (no
  series goes that low).
* ``krr``: KRR's simple strategy: max working set over 14 days x 1.15.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))

from oomsight.core.histogram import VPA_BUCKETS, DecayingHistogram
from oomsight.core.memory import Breakdown
from oomsight.core.recommend import JvmHeap, Recommender, RecommendSettings
from series import PER_DAY, SHAPES, STEP, MiB, Series, make

DAY = 86400.0
KEY = "w/c"


class Oomsight:
    name = "oomsight"

    def __init__(self, s: Series, settings: RecommendSettings) -> None:
        self.r = Recommender(settings)
        if s.xmx:
            self.r.set_jvm(KEY, JvmHeap(max_heap_bytes=s.xmx))

    def observe(self, t: float, ws: int, hard: int, limit: int | None) -> None:
        bd = Breakdown(anon=hard, active_file=ws - hard, inactive_file=0, shmem=0, kernel=0, swap=None,
                       dirty=None, writeback=None)  # fmt: skip
        self.r.add_sample(KEY, t, ws, breakdown=bd, limit_bytes=limit)

    def oom(self, t: float, limit: int) -> None:
        self.r.add_oom(KEY, t, limit)

    def limit(self, t: float) -> int:
        return self.r.recommend(KEY, t).limit_bytes


class Vpa:
    name = "vpa"

    def __init__(self, s: Series, settings: RecommendSettings) -> None:
        self.h = DecayingHistogram(DAY, VPA_BUCKETS)
        self.day = -1
        self.peak = 0
        self.peak_t = 0.0

    def _peak(self, t: float, value: int) -> None:
        day = math.floor(t / DAY)
        if day != self.day:
            if self.day >= 0:
                self.h.add(self.peak, self.peak_t)
            self.day, self.peak = day, 0
        self.peak, self.peak_t = max(self.peak, value), t

    def observe(self, t: float, ws: int, hard: int, limit: int | None) -> None:
        self._peak(t, ws)

    def oom(self, t: float, limit: int) -> None:
        self._peak(t, max(limit + 100 * MiB, math.ceil(limit * 1.2)))

    def limit(self, t: float) -> int:
        h = self.h.copy()
        h.add(self.peak, self.peak_t)
        return math.ceil(h.percentile(0.9) * 1.15)


class Krr:
    name = "krr"

    def __init__(self, s: Series, settings: RecommendSettings) -> None:
        self.seen: deque[tuple[float, int]] = deque()  # monotonic queue of (t, ws) for a sliding max

    def observe(self, t: float, ws: int, hard: int, limit: int | None) -> None:
        while self.seen and self.seen[-1][1] <= ws:
            self.seen.pop()
        self.seen.append((t, ws))

    def oom(self, t: float, limit: int) -> None:
        pass

    def limit(self, t: float) -> int:
        while self.seen and self.seen[0][0] < t - 14 * DAY:
            self.seen.popleft()
        return math.ceil(self.seen[0][1] * 1.15)


CONTENDERS = (Oomsight, Vpa, Krr)


@dataclass
class Score:
    ooms: int = 0
    slack: float = 0.0
    usage: float = 0.0
    n: int = 0

    def add(self, other: Score) -> None:
        self.ooms += other.ooms
        self.slack += other.slack
        self.usage += other.usage
        self.n += other.n

    @property
    def mean_mib(self) -> float:
        return self.slack / self.n / MiB if self.n else 0.0

    @property
    def fraction(self) -> float:
        return self.slack / self.usage if self.usage else 0.0


def replay(s: Series, contender: type, settings: RecommendSettings, every: int = 12) -> Score:
    c = contender(s, settings)
    score = Score()
    limit: int | None = None
    for i, (hard, cache) in enumerate(zip(s.hard, s.cache, strict=True)):
        t = i * STEP
        if i == PER_DAY or (i > PER_DAY and i % every == 0):
            limit = c.limit(t)
        if limit is not None and hard > limit:
            score.ooms += 1
            c.observe(t, limit, limit, limit)
            c.oom(t, limit)
            limit = c.limit(t)
            continue
        ws = hard + (cache if limit is None else min(cache, limit - hard))
        c.observe(t, ws, hard, limit)
        if limit is not None:
            score.slack += limit - hard
            score.usage += hard
            score.n += 1
    return score


def seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


def table(title: str, seed_list: list[int], days: int, settings: RecommendSettings) -> dict[str, Score]:
    names = [c.name for c in CONTENDERS]
    total = {n: Score() for n in names}
    no_cache = {n: Score() for n in names}
    print(f"\n{title}: seeds {seed_list[0]}-{seed_list[-1]} ({len(seed_list)}), {days} days, 5-min intervals")
    head = f"{'shape':<11}" + "".join(f"{n + ' OOMs':>14}{n + ' slack':>22}" for n in names)
    print(head)
    for shape in SHAPES:
        row = {n: Score() for n in names}
        for seed in seed_list:
            s = make(shape, seed, days)
            for c in CONTENDERS:
                row[c.name].add(replay(s, c, settings))
        for n in names:
            total[n].add(row[n])
            if shape != "page-cache":
                no_cache[n].add(row[n])
        print(f"{shape:<11}" + "".join(_cells(row[n]) for n in names))
    print(f"{'overall':<11}" + "".join(_cells(total[n]) for n in names))
    print(f"{'w/o cache':<11}" + "".join(_cells(no_cache[n]) for n in names))
    o, v = total["oomsight"], total["vpa"]
    cut = 1 - o.slack / v.slack if v.slack else 0.0
    verdict = "meets" if o.ooms <= v.ooms and cut >= 0.15 else "MISSES"
    print(f"oomsight vs vpa: OOMs {o.ooms} vs {v.ooms}, slack {cut:+.1%} less -> {verdict} the target"
          " (no more OOMs, >= 15% less slack)")  # fmt: skip
    return total


def _cells(s: Score) -> str:
    return f"{s.ooms:>14}{f'{s.mean_mib:8.0f} MiB ({s.fraction:5.1%})':>22}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tune-seeds", default="0-4")
    p.add_argument("--seeds", default="100-109", help="held-out seeds, reported separately")
    p.add_argument("--days", type=int, default=21)
    a = p.parse_args(argv)
    settings = RecommendSettings()
    started = time.perf_counter()
    table("tuning set", seeds(a.tune_seeds), a.days, settings)
    table("held-out set", seeds(a.seeds), a.days, settings)
    print(f"\n({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
