"""``oomsight diagnose``: everything this node can tell about memory, from the kernel's own evidence.

Four parts, each from the live host (``--host-root`` for a pod that mounts the host at ``/host``):

- ``node``: the node checks (kernel, kmem accounting, leaked memcgs, swap, THP, PSI), the same
  document as ``oomsight node --json``;
- ``incidents``: every OOM kill still in the kernel ring buffer (``/dev/kmsg``), assembled and
  diagnosed with what the live cgroups add (``oomsight.host.afterkill``: the pod's container limits
  for a kill at the pod cgroup, whether the victim's container still has its first process),
  optionally only those after ``--since``; ``kmsg`` says how many records were read and
  which ranges the ring had already overwritten (``gaps``), so a missing kill is never silent;
- ``at_risk``: containers whose working set is at least ``--threshold`` (90%) of their effective
  limit, with the same fields as ``oomsight top --json``;
- ``stuck``: v1 cgroups frozen at their limit with the OOM killer disabled.

If ``/dev/kmsg`` cannot be read, the other parts are still reported, the reason is printed as one
line (and kept in ``kmsg.error``), and the exit status is 1.
"""

from __future__ import annotations

import argparse
import re
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from oomsight.cli.common import add_host_root, add_json, print_json, wrap
from oomsight.cli.node import node_json
from oomsight.cli.top import container_json, ratio, sort_key
from oomsight.core.diagnosis import Diagnosis, diagnose
from oomsight.core.errors import OomsightError, UsageError
from oomsight.core.kmsg import Record
from oomsight.core.oomcount import unexplained
from oomsight.core.oomreport import OomAssembler
from oomsight.core.quantity import human_bytes
from oomsight.core.stuck import StuckCgroup, find_stuck
from oomsight.host.afterkill import AfterKill, kill_age_seconds
from oomsight.host.cgroupfs import CgroupEntry, CgroupWalker, Sweep, detect_layout
from oomsight.host.kmsg import Gap, KmsgReader
from oomsight.host.nodeinfo import read_node_facts

HELP = "OOM kills since boot explained, containers near their limit, frozen cgroups, node findings"

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$")


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``90s``, ``30m``, ``1h``, ``2d``, ``1h30m`` ago, or an ISO 8601 time (UTC unless it says)."""
    now = now or datetime.now(UTC)
    m = _DURATION.match(text.strip())
    if m and any(m.groups()):
        d, h, mi, s = (int(g) if g else 0 for g in m.groups())
        return now - timedelta(days=d, hours=h, minutes=mi, seconds=s)
    try:
        t = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(
            f"--since {text!r} is neither a duration nor a time",
            "use a duration like 30m, 1h, 2d or an ISO time like 2026-11-23T13:00:00Z",
        ) from None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def parse_threshold(text: str) -> float:
    """``0.9``, ``90`` or ``90%`` → 0.9."""
    raw = text.strip().rstrip("%")
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(f"--threshold {text!r} is not a number", "use a fraction like 0.9 or 90%") from None
    if value > 1 or text.strip().endswith("%"):
        value /= 100
    if not 0 < value <= 1:
        raise UsageError(f"--threshold {text!r} is out of range", "use a value between 1% and 100%")
    return value


def configure(parser: argparse.ArgumentParser) -> None:
    add_host_root(parser)
    add_json(parser)
    parser.add_argument(
        "--since",
        metavar="WHEN",
        help="only OOM kills after this: a duration (30m, 1h, 2d) or an ISO time (default: since boot)",
    )
    parser.add_argument(
        "--threshold",
        default="0.9",
        metavar="FRACTION",
        help="a container is at risk when working set / effective limit reaches this (default 0.9)",
    )


# --------------------------------------------------------------------------------------------- gather


@dataclass
class KmsgResult:
    records: int = 0
    gaps: list[Gap] = field(default_factory=list)
    first_seq: int | None = None
    last_seq: int | None = None
    boot_id: str | None = None
    error: str | None = None
    diagnoses: list[Diagnosis] = field(default_factory=list)
    reported: dict[str, int] = field(default_factory=dict)
    """Kills with a report in the whole ring (``--since`` aside), by the victim's cgroup."""
    headerless: int = 0
    """Kill lines in the whole ring that came without their report (the kernel's rate limit)."""
    live_error: str | None = None
    """Why the live cgroups around a kill could not be read (first failure); the report alone spoke."""

    def as_json(self) -> dict[str, Any]:
        return {
            "records": self.records,
            "first_seq": self.first_seq,
            "last_seq": self.last_seq,
            "gaps": [g.as_json() for g in self.gaps],
            "lost_records": sum(g.lost for g in self.gaps),
            "headerless": self.headerless,
            "boot_id": self.boot_id,
            "error": self.error,
        }


def read_incidents(host_root: Path, since: datetime | None, after: AfterKill | None = None) -> KmsgResult:
    """Every OOM incident still in the ring buffer, diagnosed (with ``after``'s live reads); a kmsg
    failure is kept, not raised."""
    result = KmsgResult()
    try:
        reader = KmsgReader.from_host_root(str(host_root))
    except OomsightError as err:
        result.error = str(err)
        return result
    asm = OomAssembler()
    incidents = []
    with reader:
        result.boot_id = reader.boot_id
        for item in reader.read_available():
            if isinstance(item, Record):
                if result.first_seq is None:
                    result.first_seq = item.seq
                result.last_seq = item.seq
                incidents += asm.feed(item)
        incidents += asm.flush()
        result.records = reader.records_read
        result.gaps = list(reader.gaps)
    last_in: dict[str, int] = {inc.task_memcg: i for i, inc in enumerate(incidents) if inc.task_memcg}
    for i, inc in enumerate(incidents):
        if inc.task_memcg:  # a group kill counts each of its victims, as the kernel does
            victims = max(1, len(inc.victims))
            result.reported[inc.task_memcg] = result.reported.get(inc.task_memcg, 0) + victims
        elif inc.oom_memcg is None:
            result.headerless += 1
        if since is not None and (inc.wall is None or inc.wall < since):
            continue
        aftermath = None
        if after is not None:
            try:
                later = inc.task_memcg is not None and last_in[inc.task_memcg] > i
                aftermath = after.read(inc, age=kill_age_seconds(inc.usec), later_kill=later)
            except OomsightError as err:
                if result.live_error is None:
                    result.live_error = str(err)
        result.diagnoses.append(diagnose(inc, aftermath=aftermath))
    return result


def unexplained_kills(sweep: Sweep, kmsg: KmsgResult) -> list[dict[str, Any]]:
    """Containers whose kernel OOM-kill counter is ahead of the reports in the log (README: "diagnose")."""
    if kmsg.error:
        return []
    containers = {e.path: e for e in sweep.entries if e.kube is not None and e.kube.level == "container"}
    counters = {p: e.reading.oom_kills if e.reading else None for p, e in containers.items()}
    out = []
    for path, (counted, reported) in sorted(unexplained(counters, kmsg.reported).items()):
        kube = containers[path].kube
        assert kube is not None
        out.append(
            {
                "cgroup": path,
                "pod_uid": kube.pod_uid,
                "container_id": kube.container_id,
                "oom_kills": counted,
                "reported": reported,
                "unexplained": counted - reported,
            }
        )
    return out


def at_risk(sweep: Sweep, threshold: float) -> list[CgroupEntry]:
    """Container cgroups whose working set is at least ``threshold`` of their effective limit."""
    out = []
    for e in sweep.entries:
        if e.kube is None or e.kube.level != "container":
            continue
        r = ratio(e)
        if r is not None and r >= threshold:
            out.append(e)
    return sorted(out, key=sort_key)


def stuck(sweep: Sweep) -> list[StuckCgroup]:
    return find_stuck((e.path, e.reading) for e in sweep.entries if e.reading is not None)


def document(
    *,
    node: dict[str, Any],
    kmsg: KmsgResult,
    sweep: Sweep,
    threshold: float,
    since: datetime | None,
) -> dict[str, Any]:
    """The ``diagnose --json`` document (README: "diagnose --json")."""
    return {
        "since": since.astimezone(UTC).isoformat().replace("+00:00", "Z") if since else None,
        "threshold": threshold,
        "node": node,
        "kmsg": kmsg.as_json(),
        "incidents": [d.as_json() for d in kmsg.diagnoses],
        "unexplained_kills": unexplained_kills(sweep, kmsg),
        "at_risk": [container_json(e) for e in at_risk(sweep, threshold)],
        "stuck": [s.as_json() for s in stuck(sweep)],
        "cgroups": {"read": len(sweep.entries), "vanished": sweep.vanished, "errors": sweep.errors},
    }


# --------------------------------------------------------------------------------------------- text


def _same_cause(j: dict[str, Any]) -> tuple[Any, ...]:
    """Kills that a person would read as one story: same cgroups, same victim name, same cause."""
    return (
        j["pod_uid"],
        j["container_id"],
        j["oom_cgroup"],
        j["task_cgroup"],
        j["scope"],
        j["dominant"],
        j["victim"]["comm"],
        j["container_survived"],
        j["limit_bytes"],
    )


def group_incidents(incidents: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    """Incidents grouped by ``_same_cause``, groups in order of their latest kill (a crash-looping
    container's 40 identical kills read as one entry, not a screenful)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for j in incidents:
        groups.setdefault(_same_cause(j), []).append(j)
    return sorted(groups.values(), key=lambda g: incidents.index(g[-1]))


def _incident_text(group: list[dict[str, Any]], n: int) -> list[str]:
    j = group[-1]  # the latest kill speaks for the group
    v = j["victim"]
    when = j["time"] or "time unknown"
    head = f"  #{n} {when}  {v['comm']} (pid {v['pid']}) killed, scope {j['scope'] or 'unknown'}"
    level = j.get("limit_level")
    if j["scope"] == "container" and level == "pod":
        head += " (the kernel hit the pod's limit, the sum of its containers')"
    if len(group) > 1:
        first = group[0]["time"] or "time unknown"
        head += f"  [{len(group)} kills like this one since {first}]"
    lines = [head]
    if j["pod_uid"]:
        cid = f"  container {j['container_id'][:12]}" if j["container_id"] else ""
        lines.append(f"     pod {j['pod_uid']}{cid}")
    lines += wrap(j["explanation"], 92, "     ")
    return lines


def _unexplained_text(rows: list[dict[str, Any]], k: dict[str, Any]) -> list[str]:
    if not rows:
        return []
    why = []
    if k["headerless"]:
        why.append(f"{k['headerless']} kill line(s) came without their report (the kernel's rate limit)")
    if k["lost_records"]:
        why.append("reports were overwritten in the ring buffer")
    lines = [
        f"  containers with more OOM kills than this log explains: {len(rows)}"
        + (f" ({'; '.join(why)})" if why else "")
    ]
    for r in rows:
        who = f"pod {r['pod_uid']} container {(r['container_id'] or '')[:12]}"
        counted = f"{r['oom_kills']} OOM kill(s) counted by the kernel"
        lines.append(f"    {who}: {counted}, {r['reported']} reported")
    return lines


def text(doc: dict[str, Any]) -> str:
    node = doc["node"]
    out = [
        f"node: kernel {node['kernel'] or '?'}, cgroup {node['cgroup_version'] or '?'} "
        f"(memory {node['memory_cgroup_version'] or '?'}, driver {node['driver'] or '?'})"
    ]
    findings = node["findings"]
    if not findings:
        out.append("  no node findings")
    for f in findings:
        out.append(f"  [{f['severity']}] {f['message']}")
        if f["fix"]:
            out += wrap(f"fix: {f['fix']}", 92, "      ")
    k = doc["kmsg"]
    span = "since " + doc["since"] if doc["since"] else "since boot"
    out.append("")
    if k["error"]:
        out.append(f"OOM kills {span}: unknown ({k['error']})")
    else:
        groups = group_incidents(doc["incidents"])
        shown = (
            f", in {len(groups)} groups of the same cause (--json lists each)"
            if len(groups) < len(doc["incidents"])
            else ""
        )
        out.append(
            f"OOM kills {span}: {len(doc['incidents'])}{shown} (kernel log: {k['records']} records read)"
        )
        if k["lost_records"]:
            out.append(
                f"  warning: {k['lost_records']} kernel log records were overwritten before they could "
                "be read; kills among them are not listed"
            )
        for n, group in enumerate(groups, start=1):
            out += _incident_text(group, n)
        out += _unexplained_text(doc["unexplained_kills"], k)
    out.append("")
    risk = doc["at_risk"]
    out.append(f"containers at or above {doc['threshold'] * 100:.0f}% of their limit: {len(risk)}")
    for c in risk:
        who = f"pod {c['pod_uid']} container {(c['container_id'] or '')[:12]}"
        out.append(
            f"  {who}: working set {human_bytes(c['working_set_bytes'])} of {human_bytes(c['limit_bytes'])} "
            f"({c['working_set_ratio'] * 100:.0f}%, limit at {c['limit_level']})"
        )
    out.append("")
    out.append(f"stuck cgroups (OOM killer disabled, frozen at the limit): {len(doc['stuck'])}")
    for s in doc["stuck"]:
        out += wrap(s["explanation"], 92, "  ")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    since = parse_since(args.since) if args.since else None
    threshold = parse_threshold(args.threshold)
    facts = read_node_facts(args.host_root)
    node = node_json(facts)
    layout = detect_layout(args.host_root)
    with CgroupWalker(layout, keep_open=False) as walker:
        sweep = walker.sweep(include_all=True, with_pids=True)
    kmsg = read_incidents(args.host_root, since, AfterKill(layout))
    doc = document(node=node, kmsg=kmsg, sweep=sweep, threshold=threshold, since=since)
    if args.json:
        print_json(doc)
    else:
        print(text(doc))
    if kmsg.live_error:
        print(
            f"oomsight diagnose: the cgroups around a kill could not be read ({kmsg.live_error}); "
            "such kills are explained from the kernel's report alone",
            file=sys.stderr,
        )
    if kmsg.error:
        print(f"oomsight diagnose: {kmsg.error}", file=sys.stderr)
        return 1
    return 0
