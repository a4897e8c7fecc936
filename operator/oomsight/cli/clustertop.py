"""``kubectl oomsight top``: the cluster's containers closest to their effective limit, from every
node's NodeMemoryReport, in the columns of ``oomsight top`` (``oomsight.cli.top.row``/``render``)."""

from __future__ import annotations

import argparse

from oomsight.cli.clusterflags import add_cluster_flags, connect
from oomsight.cli.common import add_json, print_json
from oomsight.cli.top import render, row
from oomsight.core.reportview import ReportContainer, parse_report

HELP = "the cluster's containers sorted by working set / effective limit (from NodeMemoryReports)"


def configure(parser: argparse.ArgumentParser) -> None:
    add_cluster_flags(parser)
    parser.add_argument("-A", "--all-namespaces", action="store_true", help="every namespace")
    parser.add_argument("--node", help="only this node's containers")
    add_json(parser)


def sort_key(c: ReportContainer) -> tuple[int, float, int, str]:
    """Closest to its limit first; unlimited ones after, by working set (as ``oomsight top``)."""
    r = c.ratio
    if r is None:
        return (1, 0.0, -(c.working_set or 0), f"{c.namespace}/{c.pod}/{c.container}")
    return (0, -r, -(c.working_set or 0), f"{c.namespace}/{c.pod}/{c.container}")


def run(args: argparse.Namespace) -> int:
    read = connect(args)
    reports = [parse_report(obj) for obj in read.node_reports()]
    if args.node:
        reports = [r for r in reports if r.node == args.node]
    namespace = None if args.all_namespaces else read.target.namespace
    found = [
        (rep.node, c)
        for rep in reports
        for c in rep.containers
        if (namespace is None or c.namespace == namespace) and c.working_set is not None
    ]
    found.sort(key=lambda nc: sort_key(nc[1]))
    if args.json:
        print_json({
            "namespace": namespace,
            "nodes": [r.node for r in reports],
            "containers": [
                {
                    "node": node, "namespace": c.namespace, "pod": c.pod, "pod_uid": c.pod_uid,
                    "container": c.container, "working_set_bytes": c.working_set, "limit_bytes": c.limit,
                    "limit_level": c.limit_level, "request_bytes": c.request,
                    "working_set_ratio": None if c.ratio is None else round(c.ratio, 4),
                    "breakdown": c.breakdown.as_dict() if c.breakdown else None, "oom_kills": c.oom_kills,
                }
                for node, c in found
            ],
        })  # fmt: skip
        return 0
    rows = [
        row(
            f"{c.pod}" if namespace else f"{c.namespace}/{c.pod}",
            c.container,
            "",
            c.working_set or 0,
            c.limit,
            c.limit_level,
            c.ratio,
            c.breakdown,
        )
        for _, c in found
    ]
    lines = render(rows, "POD" if namespace else "NAMESPACE/POD")
    where = f"namespace {namespace}" if namespace else "all namespaces"
    if not rows:
        lines.append(f"(no container in {where} is in a NodeMemoryReport: is the oomsight agent running?)")
    lines.append(f"{len(reports)} node reports, {len(rows)} containers in {where}")
    print("\n".join(lines))
    return 0
