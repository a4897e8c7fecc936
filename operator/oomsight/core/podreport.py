"""One Pod's answer for ``kubectl oomsight why``: what the agent, the kubelet, the operator and the
node know about its memory, joined. Pure: the CLI reads the objects and passes their JSON in.

Sources of OOM kills, and how one kill seen by several is shown once:

* the agent's Events (``events.k8s.io/v1``, ``reportingController`` ``oomsight.io/agent``, one per
  kill, named ``<pod>.oom-<boot>-<kmsg seq>`` by ``core.events.kill_event_name``; the container is
  ``regarding.fieldPath``; kube-apiserver drops Events after ``--event-ttl``, 1 h by default);
* the incidents of the node's NodeMemoryReport (the last 20 of the node, each with its boot ID and
  kmsg sequence): an incident and an Event with the same name are the same kill;
* the kubelet's ``lastState.terminated`` (or ``state.terminated``) with reason ``OOMKilled``: only
  the last termination of each container, seen only when its first process died. Within
  ``core.policy.KUBELET_DEDUP_SECONDS`` of an agent kill of the same container that did not survive,
  it is that kill (the operator counts them the same way).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

from oomsight.core.errors import OomsightError, UsageError
from oomsight.core.events import OOM_REASONS, REPORTING_CONTROLLER, kill_event_name
from oomsight.core.eventspecs import container_of_field_path, dominant_in_note, oom_reason
from oomsight.core.podinfo import memory_resources
from oomsight.core.policy import KUBELET_DEDUP_SECONDS, parse_policy, pod_view, workload_of
from oomsight.core.quantity import human_bytes
from oomsight.core.reportview import NodeReport, ReportContainer, ReportIncident, parse_time

SOURCE_EVENT = "event"
SOURCE_REPORT = "report"
SOURCE_KUBELET = "kubelet"

_SCOPE_OF_REASON = {
    "OOMKilled": "container",
    "OOMKilledPodLimit": "pod",
    "OOMKilledAncestorLimit": "ancestor",
    "OOMKilledNode": "node",
}
_EVENT_NAME = re.compile(r"\.oom-[0-9a-z]+-\d+$")

# --- what a command line names ---------------------------------------------------------------

KIND_ALIASES = {
    "pod": "Pod", "pods": "Pod", "po": "Pod",
    "deploy": "Deployment", "deployment": "Deployment", "deployments": "Deployment",
    "sts": "StatefulSet", "statefulset": "StatefulSet", "statefulsets": "StatefulSet",
    "ds": "DaemonSet", "daemonset": "DaemonSet", "daemonsets": "DaemonSet",
    "job": "Job", "jobs": "Job",
    "rs": "ReplicaSet", "replicaset": "ReplicaSet", "replicasets": "ReplicaSet",
}  # fmt: skip


def parse_target(text: str) -> tuple[str, str]:
    """``web-0`` or ``pod/web-0`` → (Pod, web-0); ``deploy/web`` → (Deployment, web); as kubectl names."""
    kind, sep, name = text.partition("/")
    if not sep:
        return "Pod", text
    full = KIND_ALIASES.get(kind.lower().split(".", 1)[0])
    if full is None or not name:
        raise UsageError(
            f"cannot tell what {text!r} names",
            "give a Pod name, or deploy/NAME, sts/NAME, ds/NAME, job/NAME",
        )
    return full, name


def selector_string(selector: Mapping[str, Any] | None) -> str:
    """A workload's ``spec.selector`` as a ``labelSelector`` query (matchLabels and expressions)."""
    parts = [f"{k}={v}" for k, v in sorted(((selector or {}).get("matchLabels") or {}).items())]
    for e in (selector or {}).get("matchExpressions") or []:
        key, op, values = e.get("key"), e.get("operator"), ",".join(e.get("values") or [])
        parts.append(
            {"In": f"{key} in ({values})", "NotIn": f"{key} notin ({values})", "Exists": f"{key}",
             "DoesNotExist": f"!{key}"}.get(str(op), str(key))
        )  # fmt: skip
    return ",".join(parts)


def controller_uid(obj: Mapping[str, Any]) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("controller"):
            return str(ref.get("uid") or "") or None
    return None


def owned_newest_first(pods: Iterable[Mapping[str, Any]], owner_uids: set[str]) -> list[Mapping[str, Any]]:
    """The pods whose controller is one of ``owner_uids``, newest (creationTimestamp) first."""
    mine = [p for p in pods if controller_uid(p) in owner_uids]
    return sorted(mine, key=lambda p: (p.get("metadata") or {}).get("creationTimestamp") or "", reverse=True)


# --- the answer --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Kill:
    time: float | None
    reason: str
    scope: str | None
    pid: int | None
    comm: str | None
    rss: int | None
    dominant: str | None
    container_survived: bool | None
    kubernetes_saw: bool | None
    """True: the kubelet's lastState says OOMKilled; False: the container kept running (Kubernetes
    cannot see it); None: not in lastState, which keeps only the last termination."""
    explanation: str
    sources: tuple[str, ...]
    note: str = ""
    """The agent Event's one-sentence note (empty without an Event)."""
    count: int = 1
    """Kills this entry stands for (an Event's series when a container was killed again and again)."""
    name: str = ""
    """``<pod>.oom-<boot>-<seq>`` for the agent's kills (the join key), empty for the kubelet's."""

    def as_json(self) -> dict[str, Any]:
        return {
            "time": iso(self.time),
            "reason": self.reason,
            "scope": self.scope,
            "victim": {"pid": self.pid, "comm": self.comm, "rss_bytes": self.rss},
            "dominant": self.dominant,
            "container_survived": self.container_survived,
            "kubernetes_saw": self.kubernetes_saw,
            "explanation": self.explanation,
            "note": self.note or None,
            "sources": list(self.sources),
            "count": self.count,
        }


@dataclass(frozen=True, slots=True)
class Recommendation:
    policy: str
    workload: str
    request: str | None
    limit: str | None
    reason: str
    confidence: float | None
    current_request: str | None = None
    current_limit: str | None = None
    pending: bool = False
    """The policy selects the Pod but its status has no entry for it yet (no operator, or not yet)."""

    def as_json(self) -> dict[str, Any]:
        return {
            "policy": self.policy,
            "workload": self.workload,
            "request": self.request,
            "limit": self.limit,
            "current_request": self.current_request,
            "current_limit": self.current_limit,
            "reason": self.reason,
            "confidence": self.confidence,
            "pending": self.pending,
        }


@dataclass(frozen=True, slots=True)
class ContainerAnswer:
    name: str
    request: int | None
    limit: int | None
    effective_limit: int | None
    limit_level: str | None
    working_set: int | None
    peak: int | None
    peak_span_seconds: int
    kills: tuple[Kill, ...]
    recommendation: Recommendation | None

    @property
    def ratio(self) -> float | None:
        limit = self.effective_limit or self.limit
        if self.working_set is None or not limit:
            return None
        return self.working_set / limit

    def as_json(self) -> dict[str, Any]:
        r = self.ratio
        return {
            "name": self.name,
            "request_bytes": self.request,
            "limit_bytes": self.limit,
            "effective_limit_bytes": self.effective_limit,
            "limit_level": self.limit_level,
            "working_set_bytes": self.working_set,
            "peak_bytes": self.peak,
            "peak_window_seconds": self.peak_span_seconds,
            "working_set_ratio": None if r is None else round(r, 4),
            "oom_kills": [k.as_json() for k in self.kills],
            "recommendation": self.recommendation.as_json() if self.recommendation else None,
        }


@dataclass(frozen=True)
class PodAnswer:
    namespace: str
    name: str
    uid: str
    node: str
    phase: str
    workload: str
    containers: tuple[ContainerAnswer, ...]
    node_report: NodeReport | None
    since: float | None
    notices: tuple[str, ...] = ()
    sources: Mapping[str, Any] = field(default_factory=dict)
    first_step: str = ""

    def as_json(self) -> dict[str, Any]:
        recs = [c.recommendation for c in self.containers if c.recommendation]
        rep = self.node_report
        return {
            "pod": {
                "namespace": self.namespace,
                "name": self.name,
                "uid": self.uid,
                "node": self.node or None,
                "phase": self.phase,
                "workload": self.workload,
            },
            "since": iso(self.since),
            "containers": [c.as_json() for c in self.containers],
            "recommendation": (
                {
                    "policy": recs[0].policy,
                    "workload": recs[0].workload,
                    "pending": all(r.pending for r in recs),
                    "containers": {
                        c.name: c.recommendation.as_json() for c in self.containers if c.recommendation
                    },
                }
                if recs
                else None
            ),
            "node": node_json(self.node, rep),
            "sources": dict(self.sources),
            "notices": list(self.notices),
            "first_step": self.first_step,
        }


def node_json(name: str, rep: NodeReport | None) -> dict[str, Any]:
    return {
        "name": name or None,
        "report": rep is not None,
        "kernel": rep.kernel if rep else None,
        "cgroup_version": rep.cgroup_version if rep else None,
        "cgroup_driver": rep.cgroup_driver if rep else None,
        "kmem_accounting": rep.kmem_accounting if rep else None,
        "dying_memcgs": rep.dying_memcgs if rep else None,
        "risk": rep.risk if rep else None,
        "oom_kills_24h": rep.oom_kills_24h if rep else None,
        "report_time": iso(rep.report_time) if rep else None,
        "findings": [dict(f) for f in rep.findings] if rep else [],
    }


def iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- kills from each source ----------------------------------------------------------------------


def _event_kill(ev: Mapping[str, Any]) -> tuple[str | None, Kill]:
    """(container or None, Kill) of one agent OOM Event."""
    reason = str(ev.get("reason") or "")
    series = ev.get("series") or {}
    when = parse_time(series.get("lastObservedTime")) or parse_time(ev.get("eventTime"))
    if when is None:
        when = parse_time(
            ev.get("deprecatedLastTimestamp") or (ev.get("metadata") or {}).get("creationTimestamp")
        )
    note = str(ev.get("note") or "")
    survived = True if reason == "OOMKilledChild" else None
    return container_of_field_path((ev.get("regarding") or {}).get("fieldPath")), Kill(
        time=when,
        reason=reason,
        scope=_SCOPE_OF_REASON.get(reason),
        pid=None,
        comm=None,
        rss=None,
        dominant=dominant_in_note(note),
        container_survived=survived,
        kubernetes_saw=False if survived else None,
        explanation=note,
        note=note,
        sources=(SOURCE_EVENT,),
        count=int(series.get("count") or 1),
        name=str((ev.get("metadata") or {}).get("name") or ""),
    )


def _incident_kill(pod_name: str, inc: ReportIncident) -> Kill:
    return Kill(
        time=inc.time,
        reason=oom_reason(inc.scope, inc.container_survived),
        scope=inc.scope,
        pid=inc.pid,
        comm=inc.comm,
        rss=inc.rss,
        dominant=inc.dominant,
        container_survived=inc.container_survived,
        kubernetes_saw=False if inc.container_survived else None,
        explanation=inc.explanation,
        sources=(SOURCE_REPORT,),
        name=kill_event_name(pod_name, inc.boot_id, inc.seq) if inc.seq is not None else "",
    )


def _join(event: Kill, incident: Kill) -> Kill:
    """The same kill from the Event and the report: the report's facts, the Event's note if the
    report's explanation was cut, both sources."""
    return replace(
        incident,
        dominant=incident.dominant or event.dominant,
        explanation=incident.explanation or event.explanation,
        note=event.note,
        sources=(SOURCE_EVENT, SOURCE_REPORT),
        count=max(event.count, incident.count),
        time=incident.time if incident.time is not None else event.time,
    )


def summary(k: Kill) -> tuple[str, str]:
    """(what happened, what to consider) for a short screen: the Event's note (one sentence with
    the numbers) or the explanation's first sentence, and its "Fix to consider" sentence."""
    text = k.explanation.replace("\n", " ").strip()
    sentences = [s.strip() for s in text.split(". ") if s.strip()]
    if sentences and not text.endswith((".", "...")):
        # Cut by the report's 1 KiB bound mid-sentence: keep the last sentence up to its last clause.
        head, sep, _ = sentences[-1].rpartition("; ")
        sentences[-1] = head if sep else ""
    what = k.note or (sentences[0].rstrip(".") + "." if sentences else "")
    fix = next((s for s in sentences if s.startswith("Fix to consider")), "")
    return what, (fix.rstrip(".") + "." if fix else "")


def kubelet_kills(pod: Mapping[str, Any]) -> dict[str, list[Kill]]:
    """Per container, the kubelet's OOMKilled terminations (``lastState`` and a current ``state``)."""
    out: dict[str, list[Kill]] = {}
    status = pod.get("status") or {}
    for st in [*(status.get("initContainerStatuses") or []), *(status.get("containerStatuses") or [])]:
        for where in ("lastState", "state"):
            term = (st.get(where) or {}).get("terminated") or {}
            if term.get("reason") != "OOMKilled":
                continue
            when = parse_time(term.get("finishedAt"))
            out.setdefault(str(st.get("name") or ""), []).append(
                Kill(
                    time=when,
                    reason="OOMKilled",
                    scope=None,
                    pid=None,
                    comm=None,
                    rss=None,
                    dominant=None,
                    container_survived=False,
                    kubernetes_saw=True,
                    explanation=(
                        f"The kubelet reports the container OOMKilled "
                        f"(exit code {term.get('exitCode', 137)}, "
                        f"{where}); no agent report of this kill, so which limit was hit and what filled "
                        "it is not known."
                    ),
                    sources=(SOURCE_KUBELET,),
                )
            )
    return out


def _with_kubelet(kills: list[Kill], kubelet: Sequence[Kill]) -> list[Kill]:
    """Fold each kubelet OOMKilled into the agent kill it reports (closest in time, the container's
    first process died, within the dedup window), else keep it as a kill of its own."""
    out = list(kills)
    for kk in kubelet:
        best: int | None = None
        for i, k in enumerate(out):
            if (
                SOURCE_KUBELET in k.sources
                or k.container_survived is True
                or k.time is None
                or kk.time is None
            ):
                continue
            gap = abs(k.time - kk.time)
            if gap <= KUBELET_DEDUP_SECONDS and (best is None or gap < abs((out[best].time or 0) - kk.time)):
                best = i
        if best is None:
            out.append(kk)
        else:
            k = out[best]
            out[best] = replace(k, sources=(*k.sources, SOURCE_KUBELET), kubernetes_saw=True)
    return out


def merge_kills(
    pod: Mapping[str, Any],
    events: Iterable[Mapping[str, Any]],
    incidents: Iterable[ReportIncident],
    since: float | None,
) -> dict[str, list[Kill]]:
    """Every OOM kill of the Pod's containers in the window, each once, oldest first.

    Kills that name no container (an old agent's Event in a Pod with several containers and no
    incident to join) are listed under ``""``.
    """
    meta = pod.get("metadata") or {}
    uid, name = str(meta.get("uid") or ""), str(meta.get("name") or "")
    names = [str(c.get("name")) for c in (pod.get("spec") or {}).get("containers") or []]
    single = names[0] if len(names) == 1 else None
    by_name: dict[str, tuple[str | None, Kill]] = {}
    unnamed: list[tuple[str | None, Kill]] = []
    for inc in incidents:
        if inc.pod_uid != uid:
            continue
        kill = _incident_kill(name, inc)
        if kill.name:
            by_name[kill.name] = (inc.container, kill)
        else:
            unnamed.append((inc.container, kill))
    for ev in events:
        regarding = ev.get("regarding") or {}
        if (
            ev.get("reportingController") != REPORTING_CONTROLLER
            or ev.get("reason") not in OOM_REASONS
            or (regarding.get("uid") and regarding.get("uid") != uid)
        ):
            continue
        container, kill = _event_kill(ev)
        joined = by_name.get(kill.name) if _EVENT_NAME.search(kill.name) else None
        if joined is not None:
            by_name[kill.name] = (joined[0] or container, _join(kill, joined[1]))
        else:
            by_name[kill.name or f"event-{len(by_name)}"] = (container, kill)
    out: dict[str, list[Kill]] = {}
    for container, kill in [*by_name.values(), *unnamed]:
        out.setdefault(container or single or "", []).append(kill)
    for container, kk in kubelet_kills(pod).items():
        out[container] = _with_kubelet(out.get(container, []), kk)
    for container in list(out):
        kept = [k for k in out[container] if since is None or k.time is None or k.time >= since]
        out[container] = sorted(kept, key=lambda k: k.time or 0.0)
    return out


# --- the recommendation ----------------------------------------------------------------------------


def recommendation_for(
    pod: Mapping[str, Any],
    policies: Iterable[Mapping[str, Any]],
    owners: Mapping[tuple[str, str, str], tuple[str, str] | None],
) -> tuple[str, dict[str, Recommendation]]:
    """(workload, per container) from the first MemoryPolicy by name whose selector matches the Pod
    (the policy that owns its annotations); empty when none selects it."""
    view = pod_view(pod)
    workload = workload_of(view, owners)
    for obj in sorted(policies, key=lambda p: str((p.get("metadata") or {}).get("name") or "")):
        try:
            spec = parse_policy(obj)
        except OomsightError:
            continue
        if spec.error is not None or not spec.selector.matches(view.label_map):
            continue
        status = obj.get("status") or {}
        entry = next(
            (
                w
                for w in status.get("workloads") or []
                if w.get("kind") == workload.kind and w.get("name") == workload.name
            ),
            None,
        )
        recs: dict[str, Recommendation] = {}
        for c in view.containers:
            found = next((x for x in (entry or {}).get("containers") or [] if x.get("name") == c.name), None)
            if found is None:
                recs[c.name] = Recommendation(
                    policy=spec.name,
                    workload=str(workload),
                    request=None,
                    limit=None,
                    reason="the policy selects this pod but its status has no recommendation for it yet "
                    "(is the oomsight operator running?)",
                    confidence=None,
                    pending=True,
                )
                continue
            conf = found.get("confidence")
            recs[c.name] = Recommendation(
                policy=spec.name,
                workload=str(workload),
                request=found.get("recommendedRequest"),
                limit=found.get("recommendedLimit"),
                reason=str(found.get("reason") or ""),
                confidence=float(conf) if isinstance(conf, int | float) else None,
                current_request=found.get("currentRequest"),
                current_limit=found.get("currentLimit"),
            )
        return str(workload), recs
    return str(workload), {}


# --- assembly ------------------------------------------------------------------------------------------


def assemble(
    pod: Mapping[str, Any],
    events: Iterable[Mapping[str, Any]],
    report: NodeReport | None,
    policies: Iterable[Mapping[str, Any]],
    owners: Mapping[tuple[str, str, str], tuple[str, str] | None],
    since: float | None,
    notices: Sequence[str] = (),
    sources: Mapping[str, Any] | None = None,
) -> PodAnswer:
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    uid = str(meta.get("uid") or "")
    events = list(events)
    kills = merge_kills(pod, events, report.incidents if report else (), since)
    profiles: dict[str, ReportContainer] = report.containers_of(uid) if report else {}
    workload, recs = recommendation_for(pod, policies, owners)
    containers = []
    for c in spec.get("containers") or []:
        cname = str(c.get("name") or "")
        request, limit = memory_resources(c)
        prof = profiles.get(cname)
        containers.append(
            ContainerAnswer(
                name=cname,
                request=request,
                limit=limit,
                effective_limit=prof.limit if prof else None,
                limit_level=prof.limit_level if prof else None,
                working_set=prof.working_set if prof else None,
                peak=prof.peak if prof else None,
                peak_span_seconds=prof.peak_span_seconds if prof else 0,
                kills=tuple(kills.pop(cname, [])),
                recommendation=recs.get(cname),
            )
        )
    leftover = [k for ks in kills.values() for k in ks]
    if leftover:  # kills of init containers, or of a container the Events do not name
        containers.append(
            ContainerAnswer("(unnamed)", None, None, None, None, None, None, 0, tuple(leftover), None)
        )
    answer = PodAnswer(
        namespace=str(meta.get("namespace") or ""),
        name=str(meta.get("name") or ""),
        uid=uid,
        node=str(spec.get("nodeName") or ""),
        phase=str((pod.get("status") or {}).get("phase") or "Unknown"),
        workload=workload,
        containers=tuple(containers),
        node_report=report,
        since=since,
        notices=tuple(notices),
        sources=dict(sources or {}),
    )
    return replace(answer, first_step=first_step(answer))


WARN_RATIO = 0.9


def first_step(a: PodAnswer) -> str:
    """The one line a person should act on first, most urgent first."""
    critical = [
        f for f in (a.node_report.findings if a.node_report else ()) if f.get("severity") == "critical"
    ]
    kills = [(c, k) for c in a.containers for k in c.kills]
    hidden = [(c, k) for c, k in kills if k.container_survived]
    node_wide = [(c, k) for c, k in kills if k.scope == "node"]
    if critical:
        f = critical[0]
        return f"Fix node {a.node} first ({f.get('id')}): {f.get('fix') or f.get('message')}"
    if node_wide:
        return (
            f"Node {a.node} itself ran out of memory: set memory requests that add up to what its pods "
            "use (or move pods away); raising this container's limit will not help."
        )
    if kills:
        c, k = kills[-1]
        rec = c.recommendation
        target = f"container {c.name}"
        if rec and rec.limit and not rec.pending:
            conf = f", confidence {rec.confidence:.2f}" if rec.confidence is not None else ""
            step = f"Set {target}'s memory limit to {rec.limit} (MemoryPolicy {rec.policy}{conf})"
        elif k.scope == "pod" and len(a.containers) > 1:  # alone, its own limit is the pod's: raise it
            step = "Raise the pod's total memory: its containers together hit the pod-level limit"
        else:
            lim = c.effective_limit or c.limit
            grow = f" from {human_bytes(lim)}" if lim else ""
            what = k.dominant or "see the explanation"
            step = f"Raise {target}'s memory limit{grow}, or find what grew ({what})"
        if hidden:
            return f"{step}; a killed child left it running, so also restart it or make the app exit on it."
        return f"{step}."
    near = [c for c in a.containers if c.ratio is not None and c.ratio >= WARN_RATIO]
    if near:
        c = near[0]
        return (
            f"Container {c.name} is at {c.ratio:.0%} of its "
            f"{human_bytes(c.effective_limit or c.limit)} limit: "
            "raise it before the kernel kills it."
        )
    if a.node_report is None:
        return "No OOM kill seen by the kubelet; install the oomsight agent to see the kills it misses."
    return "Nothing to do: no OOM kill in the window and every container is below 90% of its limit."
