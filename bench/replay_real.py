"""Rolling replay of real memory series: 8 days of history in, one recommendation, the next 24 h scored.

    .venv/bin/python bench/replay_real.py /work/shared/data/bitbrains-2013-8-tuning.csv
    .venv/bin/python bench/replay_real.py usage.csv --json
    .venv/bin/python bench/replay_real.py --synthetic              # the shapes of bench/series.py
    .venv/bin/python bench/replay_real.py FILE --check-cli 3       # also run the CLI on 3 cuts and compare
    .venv/bin/python bench/replay_real.py FILE --half 1            # every other series (leave-half-out)

The method of issue 13, as a new user would try it: for every series, cuts fall every ``--every`` (3 d)
from ``--history`` (8 d) after the first reading of the file, as long as the 24 h after the cut are
inside the file. At a cut each contender sees the readings of the ``--history`` before it (``t < cut``)
and gives one request and one limit; the readings of the next 24 h (``cut <= t < cut + 1 d``) score it:

* **OOM case**: a 24 h window in which the usage exceeds the recommended limit at least once;
* **slack**: Σ(limit − usage) / Σ usage over every scored reading of every window;
* **request slack**: Σ(request − usage) / Σ usage, the part the scheduler actually reserves.

The replay is open-loop: a real series does not react to the limit (there is no page cache to trim and
no OOM kill to learn from), so every contender sees the same history.

Contenders, the two baselines written here and not imported from the project:

* ``oomsight``: the project's engine through the CLI's own code path (``oomsight.cli.recommend.replay``
  on the rows before the cut, then ``recommend(key, cut)``), i.e. what ``oomsight recommend --from-csv
  FILE --json --now <cut>`` prints; ``--check-cli N`` runs that command on N cuts and compares;
* ``vpa``: VPA's memory recipe: one peak per 24 h from the start of the history, each weighted by
  ``2 ** -(age of its window / 1 d)`` (half-life 1 d), the weighted p90 of those peaks × 1.15 (exact
  values: no buckets); request = limit;
* ``krr``: KRR's simple strategy: the maximum of the history × 1.15; request = limit.

Groups: a series is labelled by its own max/median over the whole file (``flat`` < 1.5 ≤ ``bursty`` < 3
≤ ``spiky``), or by the ``group`` column when the CSV has one.

Data: run on the GWA-T-12 Bitbrains "Rnd" traces (Shen, van Beek, Iosup, *Statistical Characterization
of Business-Critical Workloads Hosted in Cloud Datacenters*, CCGrid 2015, doi:10.1109/CCGrid.2015.60).
"""

from __future__ import annotations

import argparse
import bisect
import csv
import json
import math
import random
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "operator"))

from oomsight.cli.recommend import replay as cli_replay  # noqa: E402
from oomsight.core.errors import OomsightError  # noqa: E402
from oomsight.core.recommend import RecommendSettings  # noqa: E402
from oomsight.core.usage_csv import UsageRow, parse_usage_csv  # noqa: E402

DAY = 86400.0
MiB = 1 << 20


@dataclass
class Trace:
    """One series: time-ordered rows (the CLI's row type) and the usage that is scored."""

    name: str
    group: str
    rows: list[UsageRow]
    times: list[float] = field(default_factory=list)
    usage: list[int] = field(default_factory=list)
    """What must fit under the limit: the non-reclaimable part when the CSV gives it, else the working set."""

    def __post_init__(self) -> None:
        self.rows.sort(key=lambda r: r.t)
        self.times = [r.t for r in self.rows]
        self.usage = [
            r.working_set_bytes if r.anon_bytes is None
            else r.anon_bytes + (r.shmem_bytes or 0) + (r.kernel_bytes or 0)
            for r in self.rows
        ]  # fmt: skip


Advice = tuple[int, int]
"""(request, limit) in bytes."""


# --- the contenders --------------------------------------------------------------------------------


def oomsight(trace: Trace, lo: int, hi: int, start: float, cut: float, settings: RecommendSettings) -> Advice:
    rec, names = cli_replay(trace.rows[lo:hi], settings)
    (key,) = names
    r = rec.recommend(key, cut)
    return r.request_bytes, r.limit_bytes


def vpa(trace: Trace, lo: int, hi: int, start: float, cut: float, settings: RecommendSettings) -> Advice:
    """The weighted p90 of the daily peaks (decay half-life 1 d) x 1.15.

    Days are the 24 h windows from the start of the history (VPA's aggregation windows start with the
    first sample), each peak is weighted ``2 ** ((window start - cut) / 1 d)``, and the p90 is the
    smallest peak at which the cumulative weight reaches 90% (no buckets).
    """
    peaks: dict[int, int] = {}
    for i in range(lo, hi):
        d = math.floor((trace.times[i] - start) / DAY)
        peaks[d] = max(peaks.get(d, 0), trace.rows[i].working_set_bytes)
    items = sorted((v, 2.0 ** ((start + d * DAY - cut) / DAY)) for d, v in peaks.items())
    total = sum(w for _, w in items)
    running = 0.0
    for v, w in items:
        running += w
        if running >= 0.9 * total * (1 - 1e-12):
            target = math.ceil(v * 1.15)
            return target, target
    return 0, 0


def krr(trace: Trace, lo: int, hi: int, start: float, cut: float, settings: RecommendSettings) -> Advice:
    top = max((trace.rows[i].working_set_bytes for i in range(lo, hi)), default=0)
    v = math.ceil(top * 1.15)
    return v, v


Contender = Callable[[Trace, int, int, float, float, RecommendSettings], Advice]
"""(trace, first row, row after the last, history start, cut, settings) -> advice."""
CONTENDERS: dict[str, Contender] = {"oomsight": oomsight, "vpa": vpa, "krr": krr}


# --- scoring ---------------------------------------------------------------------------------------


@dataclass
class Score:
    cases: int = 0
    ooms: int = 0
    slack: float = 0.0
    request_slack: float = 0.0
    usage: float = 0.0
    seconds: float = 0.0

    def add(self, o: Score) -> None:
        self.cases += o.cases
        self.ooms += o.ooms
        self.slack += o.slack
        self.request_slack += o.request_slack
        self.usage += o.usage
        self.seconds += o.seconds

    @property
    def slack_fraction(self) -> float:
        return self.slack / self.usage if self.usage else 0.0

    @property
    def request_fraction(self) -> float:
        return self.request_slack / self.usage if self.usage else 0.0

    def as_dict(self) -> dict[str, float | int]:
        return {
            "cases": self.cases,
            "oomCases": self.ooms,
            "slack": round(self.slack_fraction, 4),
            "requestSlack": round(self.request_fraction, 4),
        }


def cuts_of(start: float, end: float, history: float, every: float) -> list[float]:
    out, cut = [], start + history
    while cut + DAY <= end:
        out.append(cut)
        cut += every
    return out


def score_window(trace: Trace, a: int, b: int, advice: Advice) -> Score:
    request, limit = advice
    used = trace.usage[a:b]
    s = Score(cases=1)
    s.ooms = int(any(u > limit for u in used))
    total = sum(used)
    s.usage = total
    s.slack = limit * len(used) - total
    s.request_slack = request * len(used) - total
    return s


def run(
    traces: Sequence[Trace],
    cuts: Sequence[float],
    history: float,
    settings: RecommendSettings,
    contenders: dict[str, Contender] = CONTENDERS,
) -> dict[str, dict[str, Score]]:
    """contender -> group -> Score (and the group ``all``)."""
    out: dict[str, dict[str, Score]] = {n: {} for n in contenders}
    for tr in traces:
        for cut in cuts:
            lo = bisect.bisect_left(tr.times, cut - history)
            hi = bisect.bisect_left(tr.times, cut)
            b = bisect.bisect_left(tr.times, cut + DAY)
            if hi in (lo, b):
                continue  # no history or nothing to score: not a case
            for name, fn in contenders.items():
                t0 = time.perf_counter()
                advice = fn(tr, lo, hi, cut - history, cut, settings)
                s = score_window(tr, hi, b, advice)
                s.seconds = time.perf_counter() - t0
                for g in (tr.group, "all"):
                    out[name].setdefault(g, Score()).add(s)
    return out


# --- inputs ----------------------------------------------------------------------------------------


def group_of(usage: Sequence[int]) -> str:
    s = sorted(usage)
    median = s[len(s) // 2] or 1
    ratio = s[-1] / median
    return "flat" if ratio < 1.5 else "bursty" if ratio < 3 else "spiky"


def load_csv(path: str) -> list[Trace]:
    try:
        with open(path, encoding="utf-8", newline="") as f:
            lines = f.read().splitlines()
    except OSError as err:
        raise SystemExit(f"replay_real: cannot read {path}: {err.strerror}; pass a CSV file") from None
    rows = parse_usage_csv(lines, path)
    labels: dict[str, str] = {}
    if lines and "group" in next(csv.reader(lines[:1])):
        for rec in csv.DictReader(lines):
            labels.setdefault(f"{rec['workload']}/{rec['container']}", rec["group"])
    by: dict[str, list[UsageRow]] = {}
    for r in rows:
        by.setdefault(f"{r.workload}/{r.container}", []).append(r)
    traces = []
    for name, rs in sorted(by.items()):
        tr = Trace(name, "", rs)
        tr.group = labels.get(name) or group_of(tr.usage)
        traces.append(tr)
    return traces


def synthetic(seeds: Sequence[int], days: int) -> list[Trace]:
    """bench/series.py's shapes as CSV rows: the working set (cache included), the non-reclaimable part
    as ``anon_bytes`` (so the usage scored is what the kernel cannot reclaim), and -Xmx for the JVM."""
    from series import SHAPES, STEP, make

    out = []
    for shape in SHAPES:
        for seed in seeds:
            s = make(shape, seed, days)
            rows = [
                UsageRow(
                    i + 2, i * STEP, f"{shape}-{seed}", "main", h + c,
                    anon_bytes=h, shmem_bytes=0, kernel_bytes=0, jvm_max_heap_bytes=s.xmx,
                )
                for i, (h, c) in enumerate(zip(s.hard, s.cache, strict=True))
            ]
            out.append(Trace(f"{shape}-{seed}/main", shape, rows))
    return out


def seeds(text: str) -> list[int]:
    out: list[int] = []
    for part in text.split(","):
        lo, _, hi = part.partition("-")
        out.extend(range(int(lo), int(hi or lo) + 1))
    return out


# --- output ----------------------------------------------------------------------------------------


def table(title: str, result: dict[str, dict[str, Score]]) -> str:
    names = list(result)
    groups = [*sorted(g for g in result[names[0]] if g != "all"), "all"]
    head = "".join(f"{n + ' OOM':>14}{'slack':>9}{'req slack':>10}" for n in names)
    lines = [title, f"{'group':<12}{'cases':>6}{head}"]
    for g in groups:
        row = [result[n].get(g, Score()) for n in names]
        lines.append(
            f"{g:<12}{row[0].cases:>6}"
            + "".join(f"{s.ooms:>14}{s.slack_fraction:>9.1%}{s.request_fraction:>10.1%}" for s in row)
        )
    o, v, k = (result[n]["all"] for n in ("oomsight", "vpa", "krr"))
    cut = 1 - o.slack / v.slack if v.slack else 0.0
    target = o.ooms < v.ooms and cut >= 0.15
    moon = o.ooms <= k.ooms and o.slack < v.slack
    lines.append(
        f"oomsight vs vpa: OOM cases {o.ooms} vs {v.ooms}, slack {cut:+.1%} less -> "
        f"{'meets' if target else 'MISSES'} the target (fewer OOM cases, >= 15% less slack); "
        f"moonshot (OOM cases <= krr's {k.ooms}, slack < vpa's): {'met' if moon else 'not met'}"
    )
    us = o.seconds / o.cases * 1e3 if o.cases else 0.0
    lines.append(f"oomsight: {us:.1f} ms per case (rows replayed into a fresh engine, one recommendation)")
    return "\n".join(lines)


def check_cli(
    traces: Sequence[Trace], cuts: Sequence[float], n: int, history: float, settings: RecommendSettings,
    flags: Sequence[str],
) -> int:  # fmt: skip
    """Run ``oomsight recommend --from-csv`` on ``n`` cuts (history-only CSVs) and compare with in-process."""
    rng = random.Random(13)
    picks = [(rng.choice(list(traces)), rng.choice(list(cuts))) for _ in range(n)]
    bad = 0
    exe = Path(sys.executable).with_name("oomsight")
    for tr, cut in picks:
        lo = bisect.bisect_left(tr.times, cut - history)
        hi = bisect.bisect_left(tr.times, cut)
        body = ["timestamp,workload,container,working_set_bytes,limit_bytes"]
        for r in tr.rows[lo:hi]:
            body.append(f"{r.t:.0f},{r.workload},{r.container},{r.working_set_bytes},{r.limit_bytes or ''}")
        now = datetime.fromtimestamp(cut, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        out = subprocess.run(
            [str(exe), "recommend", "--from-csv", "-", "--json", "--now", now, *flags],
            input="\n".join(body) + "\n", capture_output=True, text=True, check=True,
        )  # fmt: skip
        (cli,) = json.loads(out.stdout)["recommendations"]
        mine = oomsight(tr, lo, hi, cut - history, cut, settings)
        same = (cli["requestBytes"], cli["limitBytes"]) == mine
        bad += not same
        print(f"check-cli {tr.name} --now {now}: CLI {cli['requestBytes']}/{cli['limitBytes']},"
              f" in-process {mine[0]}/{mine[1]}: {'same' if same else 'DIFFERENT'}")  # fmt: skip
    return bad


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("csv", nargs="?", help="a CSV in the `oomsight recommend --from-csv` format")
    p.add_argument("--synthetic", action="store_true", help="also (or only) replay bench/series.py's shapes")
    p.add_argument("--seeds", default="100-109", help="synthetic seeds (default: the held-out 100-109)")
    p.add_argument("--days", type=int, default=21, help="synthetic series length")
    p.add_argument("--history", type=float, default=8.0, help="days of history in at each cut")
    p.add_argument("--every", type=float, default=3.0, help="days between cuts")
    p.add_argument("--only", help="score only these series (comma-separated workload names)")
    p.add_argument(
        "--half", type=int, choices=(1, 2),
        help="every other series, sorted by name: 1 = 1st, 3rd, ...; 2 = 2nd, 4th, ... (leave-half-out)",
    )  # fmt: skip
    p.add_argument(
        "--setting", action="append", default=[], metavar="FIELD=VALUE",
        help="an engine setting (a RecommendSettings field, e.g. headroom_percent=25), repeatable",
    )  # fmt: skip
    p.add_argument("--json", action="store_true")
    p.add_argument("--check-cli", type=int, default=0, metavar="N", help="compare with the CLI on N cuts")
    a = p.parse_args(argv)
    if not a.csv and not a.synthetic:
        p.error("give a CSV file, --synthetic, or both")
    history, every = a.history * DAY, a.every * DAY
    try:
        changes = {k: float(v) for k, _, v in (x.partition("=") for x in a.setting)}
        settings = replace(RecommendSettings(), **changes)
    except (TypeError, ValueError) as err:
        p.error(f"--setting: {err}")
    results: dict[str, dict[str, dict[str, Score]]] = {}
    started = time.perf_counter()
    try:
        if a.csv:
            traces = load_csv(a.csv)
            if a.only:
                keep = set(a.only.split(","))
                traces = [t for t in traces if t.rows[0].workload in keep]
            if a.half:
                traces = traces[a.half - 1 :: 2]
            start = min(t.times[0] for t in traces)
            end = max(t.times[-1] for t in traces)
            cuts = cuts_of(start, end, history, every)
            results[a.csv] = run(traces, cuts, history, settings)
            flags = [f"--{k.replace('_', '-')}={v}" for k, _, v in (x.partition("=") for x in a.setting)]
            if a.check_cli and check_cli(traces, cuts, a.check_cli, history, settings, flags):
                print("replay_real: the CLI and the in-process engine disagree", file=sys.stderr)
                return 1
        if a.synthetic:
            traces = synthetic(seeds(a.seeds), a.days)
            cuts = cuts_of(0.0, a.days * DAY, history, every)
            results[f"synthetic seeds {a.seeds}, {a.days} d"] = run(traces, cuts, history, settings)
    except OomsightError as err:
        print(f"replay_real: {err}", file=sys.stderr)
        return 2
    if a.json:
        body = {
            title: {n: {g: s.as_dict() for g, s in sorted(r.items())} for n, r in res.items()}
            for title, res in results.items()
        }
        print(json.dumps(body, indent=2))
    else:
        for title, res in results.items():
            print(table(title, res) + "\n")
        print(f"({time.perf_counter() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
