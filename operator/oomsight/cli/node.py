"""``oomsight node``: this node's kernel and cgroup findings.

Kernel memory accounting, memory cgroups the kernel still holds against those that are visible (and
the distance to the 65535 memcg ID limit), swap, transparent hugepages, overcommit and memory
pressure. ``--json`` is a contract (README, "oomsight node --json").
"""

from __future__ import annotations

import argparse
from typing import Any

from oomsight.cli.common import add_host_root, add_json, print_json
from oomsight.core.node import NodeFacts, node_findings
from oomsight.core.quantity import prose_bytes
from oomsight.host.nodeinfo import read_node_facts

HELP = "this node's kernel and cgroup findings (kmem accounting, leaked memcgs, swap, THP)"

_MARK = {"critical": "CRIT", "warning": "WARN", "info": "info"}


def configure(parser: argparse.ArgumentParser) -> None:
    add_host_root(parser)
    add_json(parser)


def node_json(facts: NodeFacts) -> dict[str, Any]:
    """The ``oomsight node --json`` document (README documents every field)."""
    k = facts.kernel
    mc = facts.memory_cgroups
    p = facts.pressure
    return {
        "kernel": k.release if k else None,
        "cgroup_version": facts.cgroup_version,
        "memory_cgroup_version": facts.memory_version,
        "driver": facts.driver,
        "kmem_accounting": facts.kmem_accounting,
        "kmem_usage_bytes": facts.kmem_usage_bytes,
        "memory_cgroups": {"counted": mc.counted, "live": mc.live, "dying": mc.dying},
        "swap_total_bytes": facts.swap_total_bytes,
        "swap_free_bytes": facts.swap_free_bytes,
        "pod_swap": _pod_swap(facts),
        "thp": facts.thp,
        "overcommit_memory": facts.overcommit,
        "psi": {
            "available": facts.psi_available,
            "some_avg10": p.some.avg10 if p else None,
            "some_avg60": p.some.avg60 if p else None,
            "full_avg10": p.full.avg10 if p and p.full else None,
        },
        "findings": [f.as_dict() for f in node_findings(facts)],
        "errors": list(facts.errors),
    }


def _pod_swap(facts: NodeFacts) -> dict[str, Any] | None:
    ps = facts.pod_swap
    if ps is None:
        return None
    return {
        "behaviour": ps.behaviour,
        "containers": ps.containers,
        "unlimited": ps.unlimited,
        "unlimited_with_memory_limit": ps.unlimited_with_limit,
        "zero": ps.zero,
        "limited": ps.limited,
        "limited_bytes": ps.limited_bytes,
        "used_bytes": ps.used_bytes,
    }


def _yesno(v: bool | None) -> str:
    return "unknown" if v is None else ("on" if v else "off")


def _na(v: object) -> str:
    return "unknown" if v is None else str(v)


def _size(n: int | None) -> str:
    return "off" if n == 0 else prose_bytes(n)


def render(doc: dict[str, Any]) -> str:
    mc = doc["memory_cgroups"]
    lines = [
        f"kernel          {_na(doc['kernel'])}",
        f"cgroups         {_na(doc['cgroup_version'])} (memory on {_na(doc['memory_cgroup_version'])}), "
        f"driver {_na(doc['driver'])}",
        f"kmem accounting {_yesno(doc['kmem_accounting'])}",
        f"memory cgroups  {_na(mc['counted'])} counted, {_na(mc['live'])} live, {_na(mc['dying'])} dying "
        f"(limit 65535)",
        f"swap            {_size(doc['swap_total_bytes'])}"
        + (f" (pods: {doc['pod_swap']['behaviour']})" if doc["pod_swap"] else "")
        + f", THP {_na(doc['thp'])}, "
        f"overcommit_memory {_na(doc['overcommit_memory'])}, PSI {_yesno(doc['psi']['available'])}",
        "",
    ]
    findings = doc["findings"]
    if not findings:
        lines.append("no findings")
    for f in findings:
        lines.append(f"{_MARK[f['severity']]:<4}  {f['id']:<20} {f['message']}")
        if f["fix"]:
            lines.append(f"{'':<26} fix: {f['fix']}")
    if doc["errors"]:
        lines.append("")
        lines.append(f"{len(doc['errors'])} file(s) could not be read (their facts show as unknown):")
        lines += [f"  {e}" for e in doc["errors"]]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    facts = read_node_facts(args.host_root)
    doc = node_json(facts)
    if args.json:
        print_json(doc)
    else:
        print(render(doc))
    return 0
