"""Alternative limit rules on the cases of ``bench/replay_real.py``: the ideas tried and not kept.

    .venv/bin/python bench/rules_real.py /work/shared/data/bitbrains-2013-8-tuning.csv

Same cuts and scoring as ``replay_real.py`` (8 days in, the next 24 h scored, cuts every 3 days; an
OOM case is a window whose usage exceeds the limit, slack is Σ(limit − usage) / Σ usage), printed for
all series and for each half (``--half 1/2`` there: every other series by name), so that a rule is
judged on the half it was not looked at on. Rules (the engine's row is the project's engine):

* ``roll qP +H``: the P-quantile of the 24 h maxima of the history taken from *every* 5-minute offset
  (about 2,000 overlapping windows in 8 days instead of 8 calendar days), plus H (at most 512 MiB);
* ``trail x ratio qP``: the last 24 h's maximum times the P-quantile of the series' own ratios
  (the maximum of the 24 h after an offset / the maximum of the 24 h before it, every offset), +5%;
* ``cost L``: the same ratios, but the multiplier r minimises ``trail x r + L x P(ratio > r)``: an OOM
  case priced at L bytes, so that big series get less relative margin than small ones;
* ``min(engine, roll q0.75 +20%)``: the engine capped by the rolling-window rule;
* ``weekend``: when the scored 24 h start on a Saturday or Sunday (UTC), the engine's limit capped at
  the highest peak of the history's weekend days +20% (at most 512 MiB);
* ``oracle``: the next 24 h's maximum itself (the least slack with no OOM case).
"""

from __future__ import annotations

import argparse
import bisect
import math
import sys
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import replay_real as rr
from oomsight.core.recommend import RecommendSettings

DAY = rr.DAY
MiB = rr.MiB
GiB = 1024 * MiB


@dataclass
class Case:
    series: int
    cut: float
    times: list[float]
    usage: list[int]
    engine: int
    future: list[int]
    ahead: list[int]
    """Per history reading: the maximum of the 24 h from it (only those whose 24 h end before the cut)."""
    ratios: list[float]


def forward_max(t: Sequence[float], u: Sequence[int], w: float) -> list[int]:
    out, dq, j = [], deque[int](), 0
    for i in range(len(t)):
        while j < len(t) and t[j] < t[i] + w:
            while dq and u[dq[-1]] <= u[j]:
                dq.pop()
            dq.append(j)
            j += 1
        while dq[0] < i:
            dq.popleft()
        out.append(u[dq[0]])
    return out


def backward_max(t: Sequence[float], u: Sequence[int], w: float) -> list[int]:
    out, dq = [], deque[int]()
    for i in range(len(t)):
        while dq and t[dq[0]] < t[i] - w:
            dq.popleft()
        out.append(u[dq[0]] if dq else 0)
        while dq and u[dq[-1]] <= u[i]:
            dq.pop()
        dq.append(i)
    return out


def cases_of(path: str) -> list[Case]:
    traces = rr.load_csv(path)
    start, end = min(t.times[0] for t in traces), max(t.times[-1] for t in traces)
    history = 8 * DAY
    settings = RecommendSettings()
    out = []
    for n, tr in enumerate(traces):
        for cut in rr.cuts_of(start, end, history, 3 * DAY):
            lo, hi = bisect.bisect_left(tr.times, cut - history), bisect.bisect_left(tr.times, cut)
            b = bisect.bisect_left(tr.times, cut + DAY)
            if hi in (lo, b):
                continue
            t, u = tr.times[lo:hi], tr.usage[lo:hi]
            fwd, bwd = forward_max(t, u, DAY), backward_max(t, u, DAY)
            whole = [i for i in range(len(t)) if t[i] + DAY <= cut]
            ratios = [fwd[i] / bwd[i] for i in whole if t[i] - DAY >= cut - history and bwd[i]]
            engine = rr.oomsight(tr, lo, hi, cut - history, cut, settings)[1]
            out.append(Case(n, cut, t, u, engine, tr.usage[hi:b], [fwd[i] for i in whole], ratios))
    return out


def q(values: Sequence[float], p: float) -> float:
    s = sorted(values)
    return s[max(0, math.ceil(p * len(s) - 1e-9) - 1)] if s else 0.0


def plus(v: float, h: float) -> float:
    return v + min(v * h, 512 * MiB)


def trail(c: Case) -> int:
    return max((u for t, u in zip(c.times, c.usage, strict=True) if t >= c.cut - DAY), default=max(c.usage))


def cost_rule(c: Case, price: float) -> float:
    base, rs = trail(c), sorted(c.ratios)
    if not rs:
        return base * 1.2
    best = min((base * r + price * (len(rs) - bisect.bisect_right(rs, r)) / len(rs), r)
               for r in (1 + 0.02 * k for k in range(151)))  # fmt: skip
    return base * best[1]


def weekend(c: Case) -> float:
    if (math.floor(c.cut / DAY) + 3) % 7 < 5:  # 1970-01-01 was a Thursday: (day + 3) % 7 is Monday = 0
        return c.engine
    peaks: dict[int, int] = {}
    for t, u in zip(c.times, c.usage, strict=True):
        d = math.floor(t / DAY)
        if (d + 3) % 7 >= 5 and t >= c.cut - 7 * DAY:
            peaks[d] = max(peaks.get(d, 0), u)
    return min(c.engine, plus(max(peaks.values()), 0.2)) if len(peaks) >= 2 else c.engine


Rule = Callable[[Case], float]
RULES: dict[str, Rule] = {
    "engine (oomsight, the defaults)": lambda c: c.engine,
    "oracle (next 24 h max)": lambda c: max(c.future),
}
for _p, _h in ((0.75, 0.1), (0.75, 0.2), (0.9, 0.1), (0.9, 0.2)):
    RULES[f"roll q{_p} +{_h:.0%}"] = lambda c, p=_p, h=_h: plus(q(c.ahead, p), h)
for _p in (0.9, 0.98, 1.0):
    RULES[f"trail x ratio q{_p}"] = lambda c, p=_p: trail(c) * max(1.0, q(c.ratios, p)) * 1.05
for _g in (4, 8, 16):
    RULES[f"cost {_g} GiB"] = lambda c, g=_g: cost_rule(c, g * GiB)
RULES["min(engine, roll q0.75 +20%)"] = lambda c: min(c.engine, plus(q(c.ahead, 0.75), 0.2))
RULES["weekend"] = weekend


def score(cases: Sequence[Case], rule: Rule, half: int | None) -> tuple[int, float]:
    ooms, slack, used = 0, 0.0, 0.0
    for c in cases:
        if half is not None and c.series % 2 != half - 1:
            continue
        limit = rule(c)
        ooms += max(c.future) > limit
        slack += limit * len(c.future) - sum(c.future)
        used += sum(c.future)
    return ooms, slack / used if used else 0.0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", help="a CSV in the `oomsight recommend --from-csv` format")
    a = p.parse_args(argv)
    cases = cases_of(a.csv)
    print(f"| rule ({len(cases)} cases) | all: OOM cases, slack | half 1 | half 2 |")
    print("|---|---|---|---|")
    for name, rule in RULES.items():
        cells = [score(cases, rule, h) for h in (None, 1, 2)]
        print(f"| {name} | " + " | ".join(f"{o}, {s * 100:.1f}%" for o, s in cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
