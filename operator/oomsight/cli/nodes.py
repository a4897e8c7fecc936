"""``kubectl oomsight nodes``: one row per node from its NodeMemoryReport; a Node without one
(no agent there) gets a row that says so."""

from __future__ import annotations

import argparse
import time

from oomsight.cli.clusterflags import add_cluster_flags, connect, notice
from oomsight.cli.common import add_json, print_json
from oomsight.core.podreport import node_json
from oomsight.core.reportview import NodeReport, parse_report

HELP = "one row per node: kernel, cgroup, kmem accounting, dying memcgs, risk, OOMs in 24 h"
HEADER = ("NODE", "KERNEL", "CGROUP", "KMEM", "DYING MEMCGS", "RISK", "OOMS 24H", "REPORTED")
"""REPORTED: how long ago the agent last wrote the report."""


def configure(parser: argparse.ArgumentParser) -> None:
    add_cluster_flags(parser, namespaced=False)
    add_json(parser)


def _ago(t: float | None, now: float) -> str:
    if t is None:
        return "?"
    s = max(0, int(now - t))
    return f"{s // 3600}h" if s >= 3600 else f"{s // 60}m" if s >= 60 else f"{s}s"


def cells(r: NodeReport, now: float) -> tuple[str, ...]:
    def text(v: object) -> str:
        return "?" if v is None else str(v)

    return (
        r.node, text(r.kernel), r.cgroup, text(r.kmem_accounting), text(r.dying_memcgs), text(r.risk),
        text(r.oom_kills_24h), _ago(r.report_time, now),
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    from oomsight.kube.clusterread import ApiReadError

    read = connect(args)
    reports = sorted((parse_report(obj) for obj in read.node_reports()), key=lambda r: r.node)
    try:
        silent = sorted(set(read.node_names()) - {r.node for r in reports})
    except ApiReadError as err:
        notice("nodes", f"{err}; nodes without a report are not listed")
        silent = []
    if args.json:
        print_json({
            "nodes": [node_json(r.node, r) for r in reports],
            "without_report": silent,
        })  # fmt: skip
        return 0
    print("\n".join(table(reports, silent, time.time())))
    return 0


def table(reports: list[NodeReport], silent: list[str], now: float) -> list[str]:
    """The text table: a row per report, then a row per Node without one (no agent there)."""
    missing = (*("-",) * (len(HEADER) - 2), "no report")
    rows = [HEADER, *(cells(r, now) for r in reports), *((n, *missing) for n in silent)]
    widths = [max(len(row[i]) for row in rows) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    if len(rows) == 1:
        lines.append("(no NodeMemoryReport: the oomsight agent runs on no node yet)")
    return lines
