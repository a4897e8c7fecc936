"""``kubectl oomsight why POD``: one screen per Pod joining what the agent, the kubelet, the operator and
the node know about its memory (``oomsight.core.podreport`` joins; this module reads and prints).

A source that cannot be read (no agent on the node, no operator, RBAC) is one line on stderr and the
screen shows the rest; an unknown Pod or an unreachable cluster is one line and exit 1.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from oomsight.cli.clusterflags import add_cluster_flags, connect, notice
from oomsight.cli.common import add_json, print_json, wrap
from oomsight.core.errors import OomsightError
from oomsight.core.podreport import (
    Kill,
    PodAnswer,
    assemble,
    controller_uid,
    owned_newest_first,
    parse_target,
    selector_string,
    summary,
)
from oomsight.core.quantity import human_bytes
from oomsight.core.reportview import NodeReport, parse_report

HELP = "why a Pod's containers were OOM-killed: agent, kubelet, operator and node joined"
WIDTH = 80
DEFAULT_SINCE = "24h"


class NotFound(OomsightError):
    pass


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("pod", metavar="POD", help="a Pod name, or deploy/NAME, sts/NAME, ds/NAME, job/NAME")
    add_cluster_flags(parser)
    add_json(parser)
    parser.add_argument(
        "--since",
        default=DEFAULT_SINCE,
        help="only OOM kills after this: 30m, 24h, 7d or an ISO time (default 24h)",
    )
    parser.add_argument(
        "--pods", type=int, default=3, help="for a workload: how many of its Pods, newest first"
    )


# --- reading ---------------------------------------------------------------------------------------


def find_pods(read: Any, namespace: str, target: str, limit: int) -> tuple[list[dict[str, Any]], int]:
    """The Pods ``target`` names (newest first for a workload), and how many more were left out."""
    kind, name = parse_target(target)
    where = f"namespace {namespace!r}" + (f" (context {read.target.context})" if read.target.context else "")
    if kind == "Pod":
        pod = read.pod(namespace, name)
        if pod is None:
            raise NotFound(
                f"pod {name!r} not found in {where}", f"list them with kubectl get pods -n {namespace}"
            )
        return [pod], 0
    obj = read.workload(namespace, kind, name)
    if obj is None:
        raise NotFound(
            f"{kind} {name!r} not found in {where}",
            f"list them with kubectl get {kind.lower()}s -n {namespace}",
        )
    selector = selector_string((obj.get("spec") or {}).get("selector"))
    owners = {str(obj["metadata"]["uid"])}
    if kind == "Deployment":
        owners = {
            str(rs["metadata"]["uid"])
            for rs in read.replicasets(namespace, selector)
            if controller_uid(rs) in owners
        }
    pods = owned_newest_first(read.pods(namespace, selector), owners)
    if not pods:
        raise NotFound(f"{kind} {name!r} in {where} has no Pods", "kubectl describe it to see why")
    return [dict(p) for p in pods[:limit]], max(0, len(pods) - limit)


def _node_report(read: Any, node: str, warn: list[str]) -> NodeReport | None:
    from oomsight.kube.clusterread import ApiReadError, CrdMissing

    if not node:
        warn.append("the pod is not scheduled on a node yet: no node report, no agent")
        return None
    try:
        obj = read.node_report(node)
    except CrdMissing:
        warn.append(
            "oomsight is not installed in this cluster (no NodeMemoryReport CRD): showing only what the "
            "kubelet knows; install the chart (helm install oomsight charts/oomsight)"
        )
        return None
    except ApiReadError as err:
        warn.append(f"{err}; showing what the kubelet knows")
        return None
    if obj is None:
        warn.append(
            f"no NodeMemoryReport for node {node}: the oomsight agent is not running there (or has not "
            "reported yet); showing what the kubelet knows (kubectl get ds -A | grep oomsight)"
        )
        return None
    return parse_report(obj)


def _events(read: Any, namespace: str, pod: str, warn: list[str]) -> list[dict[str, Any]]:
    from oomsight.kube.clusterread import ApiReadError

    try:
        return list(read.pod_events(namespace, pod))
    except ApiReadError as err:
        warn.append(f"{err}; kills only from the node report and the kubelet")
        return []


def _owners(
    read: Any, pod: dict[str, Any], warn: list[str]
) -> dict[tuple[str, str, str], tuple[str, str] | None]:
    """The controller owner of the Pod's ReplicaSet or Job (its Deployment or CronJob)."""
    from oomsight.kube.clusterread import ApiReadError

    meta = pod.get("metadata") or {}
    ns = str(meta.get("namespace") or "")
    out: dict[tuple[str, str, str], tuple[str, str] | None] = {}
    for ref in meta.get("ownerReferences") or []:
        if not ref.get("controller") or ref.get("kind") not in ("ReplicaSet", "Job"):
            continue
        try:
            obj = read.workload(ns, ref["kind"], ref["name"])
        except ApiReadError as err:
            warn.append(f"{err}; the workload is named after its {ref['kind']}")
            continue
        up = next(
            (
                r
                for r in ((obj or {}).get("metadata") or {}).get("ownerReferences") or []
                if r.get("controller")
            ),
            None,
        )
        out[(ns, ref["kind"], ref["name"])] = (str(up["kind"]), str(up["name"])) if up else None
    return out


def _policies(read: Any, namespace: str, warn: list[str]) -> list[dict[str, Any]]:
    from oomsight.kube.clusterread import ApiReadError, CrdMissing

    try:
        return list(read.memory_policies(namespace))
    except CrdMissing:
        warn.append("the oomsight operator is not installed (no MemoryPolicy CRD): no recommendation")
    except ApiReadError as err:
        warn.append(f"{err}; no recommendation")
    return []


def answer_for(read: Any, pod: dict[str, Any], since: float | None) -> PodAnswer:
    meta = pod.get("metadata") or {}
    ns, name = str(meta.get("namespace")), str(meta.get("name"))
    warn: list[str] = []
    events = _events(read, ns, name, warn)
    report = _node_report(read, str((pod.get("spec") or {}).get("nodeName") or ""), warn)
    owners = _owners(read, pod, warn)
    policies = _policies(read, ns, warn)
    answer = assemble(
        pod,
        events,
        report,
        policies,
        owners,
        since,
        notices=warn,
        sources={"events": len(events), "report": report is not None, "policies": len(policies)},
    )
    for c in answer.containers:
        rec = c.recommendation
        if rec is not None and rec.pending:
            line = (
                f"MemoryPolicy {rec.policy} selects this pod but has no recommendation for it yet: "
                "is the oomsight operator running?"
            )
            if line not in warn:
                warn.append(line)
    if tuple(warn) != answer.notices:
        answer = PodAnswer(**{**answer.__dict__, "notices": tuple(warn)})
    return answer


# --- printing --------------------------------------------------------------------------------------


def _ago(t: float | None, now: float) -> str:
    if t is None:
        return "time unknown"
    s = max(0, int(now - t))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if s >= size:
            return f"{s // size}{unit} ago"
    return f"{s}s ago"


def _stamp(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%SZ", time.gmtime(t)) if t is not None else "time unknown"


SOURCE_WORDS = {"event": "agent Event", "report": "node report", "kubelet": "kubelet lastState"}
SAW_WORDS = {
    True: "Kubernetes saw it",
    False: "Kubernetes did not see it (the container kept running)",
    None: "not in the kubelet's lastState",
}


def _kill_lines(k: Kill, now: float) -> list[str]:
    count = f" x{k.count}" if k.count > 1 else ""
    lines = [f"  {_stamp(k.time)} ({_ago(k.time, now)})  {k.reason}{count}"]
    facts = [f"scope {k.scope or 'unknown'}"]
    if k.comm or k.pid is not None:
        rss = f" {human_bytes(k.rss)}" if k.rss is not None else ""
        facts.append(f"victim {k.comm or '?'}[{k.pid if k.pid is not None else '?'}]{rss}")
    facts.append(f"dominant {k.dominant or 'unknown'}")
    facts.append(SAW_WORDS[k.kubernetes_saw])
    facts.append("from " + " + ".join(SOURCE_WORDS.get(s, s) for s in k.sources))
    lines.extend(wrap(", ".join(facts), WIDTH - 4, "    "))
    what, fix = summary(k)
    lines.extend(wrap(what, WIDTH - 4, "    "))
    if fix:
        lines.extend(wrap(fix, WIDTH - 4, "    "))
    return lines


def render(a: PodAnswer, now: float | None = None) -> str:
    now = time.time() if now is None else now
    out = wrap(f"Pod {a.namespace}/{a.name} ({a.phase}) on node {a.node or '-'}, {a.workload}", WIDTH, "")
    since = f"since {_stamp(a.since)}" if a.since is not None else "all the sources hold"
    out.append(f"OOM kills {since}")
    for c in a.containers:
        out.append("")
        out.append(f"container {c.name}")
        eff = human_bytes(c.effective_limit) if c.effective_limit else "-"
        level = f" ({c.limit_level})" if c.limit_level else ""
        out.append(
            f"  request {human_bytes(c.request) if c.request else 'none'}   "
            f"limit {human_bytes(c.limit) if c.limit else 'none'}   effective {eff}{level}"
        )
        if c.working_set is not None:
            ratio = f" ({c.ratio:.0%})" if c.ratio is not None else ""
            span = f" over {c.peak_span_seconds // 60}m" if c.peak_span_seconds else ""
            out.append(
                f"  working set {human_bytes(c.working_set)}{ratio}   peak {human_bytes(c.peak)}{span}"
            )
        else:
            out.append("  working set unknown (no node report for this container)")
        if not c.kills:
            out.append("  no OOM kill")
        for k in c.kills:
            out.extend(_kill_lines(k, now))
        rec = c.recommendation
        if rec is not None and not rec.pending:
            conf = f", confidence {rec.confidence:.2f}" if rec.confidence is not None else ""
            out.extend(
                wrap(
                    f"recommended (MemoryPolicy {rec.policy}): request {rec.request}, "
                    f"limit {rec.limit}{conf}",
                    WIDTH - 2,
                    "  ",
                )
            )
            out.extend(wrap(rec.reason, WIDTH - 4, "    "))
        elif rec is not None:
            out.extend(wrap(f"MemoryPolicy {rec.policy}: no recommendation yet", WIDTH - 2, "  "))
    out.append("")
    rep = a.node_report
    if rep is not None:
        dying = rep.dying_memcgs
        out.extend(
            wrap(
                f"node {rep.node}: kernel {rep.kernel or '?'}, cgroup {rep.cgroup}, "
                f"kmem {rep.kmem_accounting or '?'}"
                f"{f', {dying} dying memcgs' if dying is not None else ''}, risk {rep.risk or '?'} "
                f"(report written {_ago(rep.report_time, now)})",
                WIDTH,
                "",
            )
        )
        risky = [f for f in rep.findings if f.get("severity") in ("warning", "critical")]
        for f in risky:
            out.extend(wrap(f"[{f.get('severity')}] {f.get('id')}: {f.get('message')}", WIDTH - 2, "  "))
        info = [str(f.get("id")) for f in rep.findings if f not in risky]
        if info:
            out.extend(wrap(f"info: {', '.join(info)} (--json has them)", WIDTH - 2, "  "))
    else:
        out.append(f"node {a.node or '-'}: no oomsight report")
    out.extend(wrap(f"what to do first: {a.first_step}", WIDTH, ""))
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    from oomsight.cli.diagnose import parse_since

    since = parse_since(args.since).timestamp() if args.since else None
    read = connect(args)
    pods, more = find_pods(read, read.target.namespace, args.pod, max(1, args.pods))
    answers = [answer_for(read, p, since) for p in pods]
    for a in answers:
        for line in a.notices:
            notice("why", line)
    if more:
        notice("why", f"{more} more pods of {args.pod} not shown (--pods {len(pods) + more})")
    if args.json:
        docs = [a.as_json() for a in answers]
        print_json(docs[0] if "/" not in args.pod or args.pod.startswith(("pod/", "po/", "pods/")) else docs)
        return 0
    print(("\n\n" + "=" * WIDTH + "\n\n").join(render(a) for a in answers))
    return 0
