"""``oomsight recommend --from-csv FILE``: memory requests and limits from an exported working-set series.

Runs the operator's engine (``oomsight.core.recommend.Recommender``) on a CSV (format in
``oomsight.core.usage_csv``) and prints one row per workload and container, or JSON with ``--json``.
Rows are replayed in time order; recommendations are as of the last timestamp, or as of ``--now``
(rows after it are left out, as if the export had been taken then).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from dataclasses import replace
from typing import Any

from oomsight.cli.common import print_json
from oomsight.core.errors import UsageError
from oomsight.core.memory import Breakdown
from oomsight.core.quantity import format_bytes, human_bytes, parse_bytes, parse_seconds
from oomsight.core.recommend import JvmHeap, Recommendation, Recommender, RecommendSettings
from oomsight.core.usage_csv import UsageRow, parse_timestamp, parse_usage_csv

HELP = "recommend memory requests and limits from an exported working-set series (CSV)"

# flag -> (settings field, parser, metavar)
_FLAGS: dict[str, tuple[str, Any, str]] = {
    "--percentile": ("percentile", float, "P"),
    "--limit-percentile": ("limit_percentile", float, "P"),
    "--headroom-percent": ("headroom_percent", float, "PCT"),
    "--minimum": ("minimum", parse_bytes, "QTY"),
    "--maximum": ("maximum", parse_bytes, "QTY"),
    "--half-life": ("half_life", parse_seconds, "DUR"),
    "--history-window": ("history_window", parse_seconds, "DUR"),
    "--oom-bump-ratio": ("oom_bump_ratio", float, "RATIO"),
    "--oom-min-bump": ("oom_min_bump", parse_bytes, "QTY"),
    "--peak-interval": ("peak_interval", parse_seconds, "DUR"),
    "--cache-allowance-percent": ("cache_allowance_percent", float, "PCT"),
    "--headroom-max": ("headroom_max", parse_bytes, "QTY"),
}


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--from-csv", required=True, metavar="FILE", help="the series; - reads stdin")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--now", metavar="TIME", help="recommend as of this time (default: the last row)")
    d = RecommendSettings()
    for flag, (field, _, metavar) in _FLAGS.items():
        default = getattr(d, field)
        if default is None:
            shown = "none"
        elif metavar == "QTY":
            shown = format_bytes(default)
        elif metavar == "DUR":
            shown = f"{default / 3600:g}h"
        else:
            shown = f"{default:g}"
        parser.add_argument(flag, metavar=metavar, help=f"default {shown}")


def settings_from(args: argparse.Namespace) -> RecommendSettings:
    changes: dict[str, Any] = {}
    for flag, (field, parse, _) in _FLAGS.items():
        raw = getattr(args, flag.lstrip("-").replace("-", "_"))
        if raw is None:
            continue
        try:
            changes[field] = float(raw) if parse is float else parse(raw, flag)
        except ValueError:
            raise UsageError(f"{flag} {raw!r} is not a number", "write e.g. 0.9 or 15") from None
    return replace(RecommendSettings(), **changes)


def _read(path: str) -> tuple[list[str], str]:
    if path == "-":
        return sys.stdin.read().splitlines(), "<stdin>"
    try:
        with open(path, encoding="utf-8", newline="") as f:
            return f.read().splitlines(), path
    except OSError as err:
        raise UsageError(
            f"cannot read {path}: {err.strerror}", "pass a readable CSV file, or - for stdin"
        ) from None
    except UnicodeDecodeError:
        raise UsageError(f"{path} is not UTF-8 text", "export the series as a UTF-8 CSV") from None


def replay(
    rows: Iterable[UsageRow], settings: RecommendSettings
) -> tuple[Recommender, dict[str, tuple[str, str]]]:
    """Feed rows (in time order) to a fresh engine; returns it and key -> (workload, container)."""
    rec = Recommender(settings)
    names: dict[str, tuple[str, str]] = {}
    for r in sorted(rows, key=lambda r: r.t):
        key = f"{r.workload}\t{r.container}"
        names[key] = (r.workload, r.container)
        bd = None
        if r.anon_bytes is not None:
            bd = Breakdown(
                anon=r.anon_bytes, active_file=None, inactive_file=None, shmem=r.shmem_bytes,
                kernel=r.kernel_bytes, swap=None, dirty=None, writeback=None,
            )  # fmt: skip
        if r.jvm_max_heap_bytes:
            rec.set_jvm(key, JvmHeap(max_heap_bytes=r.jvm_max_heap_bytes))
        rec.add_sample(key, r.t, r.working_set_bytes, breakdown=bd, limit_bytes=r.limit_bytes, replica=r.pod)
        if r.oom_killed:
            rec.add_oom(key, r.t, r.limit_bytes)
    return rec, names


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    lines, source = _read(args.from_csv)
    rows = parse_usage_csv(lines, source)
    if not rows:
        raise UsageError(f"{source} has a header but no rows", "export at least one reading")
    now = parse_timestamp(args.now, "--now", 0) if args.now else max(r.t for r in rows)
    rows = [r for r in rows if r.t <= now]
    if not rows:
        raise UsageError(f"{source} has no rows at or before --now {args.now}", "pick a later --now")
    rec, names = replay(rows, settings)
    out = [(names[k], rec.recommend(k, now)) for k in rec.series_keys()]
    if args.json:
        body = {
            "now": now,
            "recommendations": [{"workload": w, "container": c, **r.as_dict()} for (w, c), r in out],
        }
        print_json(body)
    else:
        print(_table(out))
    return 0


def _table(out: list[tuple[tuple[str, str], Recommendation]]) -> str:
    head = ("WORKLOAD", "CONTAINER", "REQUEST", "LIMIT", "P50", "P95", "MAX", "OOMS", "CONF", "REASON")
    rows = [
        (w, c, human_bytes(r.request_bytes), human_bytes(r.limit_bytes), human_bytes(r.p50),
         human_bytes(r.p95), human_bytes(r.max), str(r.oom_kills), f"{r.confidence:.2f}", r.reason)
        for (w, c), r in out
    ]  # fmt: skip
    widths = [max(len(x[i]) for x in [head, *rows]) for i in range(len(head) - 1)]
    return "\n".join(
        "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row[:-1])) + "  " + row[-1]
        for row in [head, *rows]
    )
