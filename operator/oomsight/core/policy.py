"""MemoryPolicy reconcile, pure: selector matching, workload grouping, OOM evidence, the status.

Inputs are plain JSON (a MemoryPolicy, Pods, NodeMemoryReport ``status``), parsed here at the edge
into frozen dataclasses; ``reconcile`` turns one policy's selected pods plus the evidence about them
into the ``status`` body, the pod annotations and the recommendation changes worth an Event. The
controller (``oomsight.controller``) only watches, debounces and writes what this module returns.

Facts this module relies on:

* Label selectors (``k8s.io/apimachinery/pkg/apis/meta/v1/helpers.go``
  ``LabelSelectorAsSelector``): ``matchLabels`` and ``matchExpressions`` are ANDed; ``In`` needs the
  key with one of the values, ``NotIn`` matches when the key is absent *or* has another value,
  ``Exists``/``DoesNotExist`` look at the key only; an empty selector ``{}`` selects everything.
* Owner chains (``pkg/controller/deployment``, ``pkg/controller/cronjob``): a Deployment's Pods are
  owned by a ReplicaSet that is owned by the Deployment; a CronJob's Pods by a Job owned by the
  CronJob; StatefulSet and DaemonSet own their Pods directly. Only the ``controller: true`` owner
  reference counts (``metav1.GetControllerOf``).
* The kubelet reports a container killed by the OOM killer as
  ``status.containerStatuses[].lastState.terminated.reason == "OOMKilled"``
  (``pkg/kubelet/kuberuntime/kuberuntime_container.go``), with ``finishedAt``; only the *last*
  termination is kept, so the operator remembers earlier ones itself (``OomLog``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from oomsight.core.apply import (
    APPLY_MODES,
    APPLY_OFF,
    COND_RESIZE_IN_PROGRESS,
    COND_RESIZE_PENDING,
    DEFAULT_RESIZE_INTERVAL,
    ApplyRecord,
    ApplySettings,
    Decision,
    PodContainer,
    decide,
    record_from_status,
    record_to_status,
)
from oomsight.core.errors import OomsightError, UsageError
from oomsight.core.events import REASON_OOM_CHILD, REASON_OOM_CONTAINER, REASON_OOM_POD, REPORTING_CONTROLLER
from oomsight.core.memory import Breakdown
from oomsight.core.podinfo import ANNOTATION_WARNING_THRESHOLD, memory_resources
from oomsight.core.quantity import format_bytes, parse_quantity
from oomsight.core.recommend import JvmHeap, Recommendation, Recommender, RecommendSettings, demand_of

ANNOTATION_RECOMMENDATION = "oomsight.io/memory-recommendation"
ANNOTATION_LAST_OOM = "oomsight.io/last-oom"
MAX_WORKLOADS = 200
MAX_CONTAINERS = 16
DAY = 86400.0
KUBELET_DEDUP_SECONDS = 120.0
"""A kubelet ``OOMKilled`` within this many seconds of an agent incident for the same container is the
same kill (the kubelet sees the exit only after the runtime's next status poll)."""
CENSORING_SCOPES = ("container", "pod")
"""An OOM kill says "needed more than its limit" only when the container's or the pod's own limit was
hit; a node-wide (global) OOM or an ancestor's limit (QoS/kubepods: node allocatable) kills by badness
among everyone (``mm/oom_kill.c`` ``select_bad_process``), so it is counted but does not bump the limit."""
MAX_HISTORY = 32
"""Peak intervals kept per container in ``status...history.peaks`` (the CRD's maxItems)."""
MATERIAL_CHANGE = 0.10
"""A recommendation change worth an Event: request or limit moves by more than 10%."""
OUR_ANNOTATIONS = (ANNOTATION_RECOMMENDATION, ANNOTATION_LAST_OOM, ANNOTATION_WARNING_THRESHOLD)
SUPPORTED_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")

# Condition types and reasons on MemoryPolicy.status.conditions.
COND_READY = "Ready"
COND_DEGRADED = "Degraded"
COND_INVALID = "Invalid"
REASON_SELECTOR_EMPTY = "SelectorMatchesNothing"
REASON_SELECTOR_UNSUPPORTED = "UnsupportedSelector"
REASON_BAD_SETTINGS = "BadRecommendationSettings"
REASON_BAD_APPLY = "BadApplySettings"
REASON_MAX_BELOW_PEAK = "MaximumBelowObservedPeak"
REASON_VALID = "Valid"
REASON_RECONCILED = "Reconciled"
REASON_KUBELET_ONLY = "KubeletOnly"
REASON_AGENTS = "AgentsReporting"


# --- selectors ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Requirement:
    key: str
    operator: str
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        if self.operator == "In":
            return self.key in labels and labels[self.key] in self.values
        if self.operator == "NotIn":
            return self.key not in labels or labels[self.key] not in self.values
        if self.operator == "Exists":
            return self.key in labels
        return self.key not in labels  # DoesNotExist


@dataclass(frozen=True, slots=True)
class Selector:
    """A parsed ``metav1.LabelSelector``; ``{}`` (no terms) matches every pod."""

    match_labels: tuple[tuple[str, str], ...] = ()
    requirements: tuple[Requirement, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        for k, v in self.match_labels:
            if labels.get(k) != v:
                return False
        return all(r.matches(labels) for r in self.requirements)


def parse_selector(obj: Any) -> Selector:
    """``spec.selector`` → Selector. UsageError (with the offending term) for what cannot be matched."""
    if obj is None:
        raise UsageError("spec.selector is missing", "set spec.selector ({} selects every pod)")
    if not isinstance(obj, Mapping):
        raise UsageError(f"spec.selector is {type(obj).__name__}, not an object", "write matchLabels")
    unknown = sorted(set(obj) - {"matchLabels", "matchExpressions"})
    if unknown:
        raise UsageError(
            f"spec.selector has unsupported field(s) {', '.join(unknown)}",
            "use matchLabels and matchExpressions",
        )
    ml = obj.get("matchLabels") or {}
    if not isinstance(ml, Mapping) or not all(isinstance(v, str) for v in ml.values()):
        raise UsageError("spec.selector.matchLabels must map keys to strings", 'write {"app": "web"}')
    reqs: list[Requirement] = []
    for i, expr in enumerate(obj.get("matchExpressions") or []):
        if not isinstance(expr, Mapping) or not isinstance(expr.get("key"), str):
            raise UsageError(f"spec.selector.matchExpressions[{i}] has no key", "give key and operator")
        op = expr.get("operator")
        values = expr.get("values") or []
        if op not in SUPPORTED_OPERATORS:
            raise UsageError(
                f"spec.selector.matchExpressions[{i}] operator {op!r} is not supported for pod labels",
                f"use one of {', '.join(SUPPORTED_OPERATORS)}",
            )
        if op in ("In", "NotIn") and not values:
            raise UsageError(f"spec.selector.matchExpressions[{i}] ({op}) has no values", "add values")
        if op in ("Exists", "DoesNotExist") and values:
            raise UsageError(f"spec.selector.matchExpressions[{i}] ({op}) takes no values", "drop values")
        reqs.append(Requirement(str(expr["key"]), str(op), frozenset(str(v) for v in values)))
    return Selector(tuple(sorted((str(k), str(v)) for k, v in ml.items())), tuple(reqs))


# --- the policy --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PolicySpec:
    """What reconcile needs from a MemoryPolicy. ``error`` = (reason, message) when it cannot be used."""

    namespace: str
    name: str
    uid: str
    generation: int
    selector: Selector
    settings: RecommendSettings
    threshold_percent: float = 90.0
    annotate_pods: bool = False
    emit_events: bool = True
    error: tuple[str, str] | None = None
    apply: ApplySettings = field(default_factory=ApplySettings)
    """``spec.actions.apply`` and its bounds (the interval is the operator's, set at reconcile)."""

    @property
    def key(self) -> tuple[str, str]:
        return (self.namespace, self.name)


def parse_policy(obj: Mapping[str, Any]) -> PolicySpec:
    """A MemoryPolicy object → PolicySpec; an unusable spec gives ``error`` (never raises)."""
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    actions = spec.get("actions") or {}
    error: tuple[str, str] | None = None
    selector = Selector(requirements=(Requirement("", "In"),))  # matches nothing on error
    settings = RecommendSettings()
    try:
        selector = parse_selector(spec.get("selector"))
    except OomsightError as err:
        error = (REASON_SELECTOR_UNSUPPORTED, str(err))
    try:
        settings = RecommendSettings.from_spec(spec.get("recommendation"))
    except OomsightError as err:
        error = error or (REASON_BAD_SETTINGS, str(err))
    try:
        threshold = float(spec.get("warningThresholdPercent", 90))
    except (TypeError, ValueError):
        threshold = 90.0
    apply = ApplySettings()
    try:
        apply = parse_apply(actions)
    except OomsightError as err:
        error = error or (REASON_BAD_APPLY, str(err))
    return PolicySpec(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        generation=int(meta.get("generation") or 0),
        selector=selector,
        settings=settings,
        threshold_percent=threshold,
        annotate_pods=bool(actions.get("annotatePods", False)),
        emit_events=bool(actions.get("emitEvents", True)),
        error=error,
        apply=apply,
    )


def parse_apply(actions: Mapping[str, Any]) -> ApplySettings:
    """``spec.actions`` → ApplySettings (the CRD validates the same; this guards a CRD-less server)."""
    mode = actions.get("apply", APPLY_OFF)
    if mode not in APPLY_MODES:
        raise UsageError(f"spec.actions.apply is {mode!r}", f"use one of {', '.join(APPLY_MODES)}")
    try:
        conf = float(actions.get("minConfidence", 0.5))
        pct = float(actions.get("maxChangePercent", 50))
    except (TypeError, ValueError) as exc:
        raise UsageError(
            "spec.actions.minConfidence/maxChangePercent must be numbers", "e.g. 0.5 and 50"
        ) from exc
    if not 0 <= conf <= 1:
        raise UsageError(f"spec.actions.minConfidence is {conf:g}", "use a fraction in [0, 1], e.g. 0.5")
    if not 0 < pct <= 100:
        raise UsageError(f"spec.actions.maxChangePercent is {pct:g}", "use a percentage in (0, 100], e.g. 50")
    return ApplySettings(str(mode), conf, pct, bool(actions.get("allowRestarts", False)))


# --- pods and workloads ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Workload:
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.kind}/{self.name}"


@dataclass(frozen=True, slots=True)
class ContainerView:
    name: str
    request: int | None
    limit: int | None
    restart_count: int = 0
    last_oom: float | None = None
    """``lastState.terminated.finishedAt`` (Unix s) when its reason is OOMKilled."""
    restart_policy: str = "NotRequired"
    """``resizePolicy[]`` for memory (NotRequired when absent, as the API server defaults it)."""


@dataclass(frozen=True, slots=True)
class PodView:
    """The few facts of a Pod that a policy needs; equal views mean nothing relevant changed."""

    namespace: str
    name: str
    uid: str
    node: str
    labels: tuple[tuple[str, str], ...]
    owner: tuple[str, str] | None
    """(kind, name) of the controller owner reference."""
    containers: tuple[ContainerView, ...]
    annotations: tuple[tuple[str, str], ...] = ()
    """Only the oomsight.io annotations, to patch them only when they change."""
    resize_pending: tuple[str, str] | None = None
    """(reason, message) of the ``PodResizePending`` condition, when True."""
    resize_in_progress: bool = False

    @property
    def label_map(self) -> dict[str, str]:
        return dict(self.labels)

    def annotation(self, key: str) -> str | None:
        return dict(self.annotations).get(key)


def parse_time(text: Any) -> float | None:
    """RFC 3339 → Unix seconds; None when absent or malformed."""
    if not isinstance(text, str) or not text:
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def rfc3339(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def pod_view(obj: Mapping[str, Any]) -> PodView:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    statuses = {s.get("name"): s for s in (obj.get("status") or {}).get("containerStatuses") or []}
    owner = None
    for ref in meta.get("ownerReferences") or []:
        if ref.get("controller"):
            owner = (str(ref.get("kind", "")), str(ref.get("name", "")))
            break
    containers = []
    for c in spec.get("containers") or []:
        st = statuses.get(c.get("name")) or {}
        term = (st.get("lastState") or {}).get("terminated") or {}
        last_oom = parse_time(term.get("finishedAt")) if term.get("reason") == "OOMKilled" else None
        request, limit = memory_resources(c)
        restart = next(
            (
                str(r.get("restartPolicy"))
                for r in c.get("resizePolicy") or []
                if r.get("resourceName") == "memory"
            ),
            "NotRequired",
        )
        containers.append(
            ContainerView(
                name=str(c.get("name", "")),
                request=request,
                limit=limit,
                restart_count=int(st.get("restartCount") or 0),
                last_oom=last_oom,
                restart_policy=restart,
            )
        )
    ann = meta.get("annotations") or {}
    conds = {
        str(c.get("type")): c
        for c in (obj.get("status") or {}).get("conditions") or []
        if c.get("status") == "True"
    }
    pending = conds.get(COND_RESIZE_PENDING)
    return PodView(
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        uid=str(meta.get("uid", "")),
        node=str(spec.get("nodeName") or ""),
        labels=tuple(sorted((str(k), str(v)) for k, v in (meta.get("labels") or {}).items())),
        owner=owner,
        containers=tuple(containers),
        annotations=tuple(sorted((k, str(v)) for k, v in ann.items() if k in OUR_ANNOTATIONS)),
        resize_pending=(str(pending.get("reason") or ""), str(pending.get("message") or "")[:512])
        if pending
        else None,
        resize_in_progress=COND_RESIZE_IN_PROGRESS in conds,
    )


RESOLVED_KINDS = {"ReplicaSet": "Deployment", "Job": "CronJob"}
"""Owner kinds whose own controller owner is the workload (ReplicaSet → Deployment, Job → CronJob)."""


def owner_lookups(pods: Iterable[PodView]) -> set[tuple[str, str, str]]:
    """(namespace, kind, name) of the ReplicaSets and Jobs whose owner must be looked up."""
    return {(p.namespace, *p.owner) for p in pods if p.owner and p.owner[0] in RESOLVED_KINDS}


def workload_of(pod: PodView, owners: Mapping[tuple[str, str, str], tuple[str, str] | None]) -> Workload:
    """The workload a pod belongs to. ``owners`` maps (namespace, kind, name) of a ReplicaSet or Job to
    its controller owner (kind, name), or None when it has none (a bare ReplicaSet or Job) or is gone."""
    if pod.owner is None:
        return Workload("Pod", pod.name)
    kind, name = pod.owner
    if kind in RESOLVED_KINDS:
        up = owners.get((pod.namespace, kind, name))
        if up is not None and up[0] == RESOLVED_KINDS[kind]:
            return Workload(*up)
    return Workload(kind, name)


# --- evidence from NodeMemoryReports -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Profile:
    """One container's profile from a NodeMemoryReport (bytes; peaks are (t, bytes), oldest first)."""

    node: str
    pod_uid: str
    container: str
    working_set: int | None = None
    limit: int | None = None
    request: int | None = None
    peaks: tuple[tuple[int, int], ...] = ()
    breakdown: Breakdown | None = None
    oom_kills: int = 0
    xmx: int | None = None
    max_ram_percentage: float | None = None

    @property
    def jvm(self) -> JvmHeap | None:
        """What the agent saw of the container's JVM flags (-Xmx wins, as in HotSpot)."""
        if self.xmx:
            return JvmHeap(max_heap_bytes=self.xmx)
        if self.max_ram_percentage is not None and 0 < self.max_ram_percentage < 100:
            return JvmHeap(max_ram_percentage=self.max_ram_percentage)
        return None  # none, or MaxRAMPercentage=100: the heap may take the whole limit, nothing to add


@dataclass(frozen=True, slots=True)
class OomEvent:
    """One OOM kill of a container: from an agent incident (``key`` = bootID/seq) or the kubelet."""

    pod_uid: str
    container: str
    time: float
    key: str
    source: str
    """``agent`` or ``kubelet``."""
    scope: str = "container"
    victim: str = ""
    limit: int | None = None
    responsible: str = ""
    """At the pod's limit: the container whose own limit to raise, when the agent judged it another
    than the victim's (the one at its own limit); empty when it is the victim's container."""


def _int(v: Any) -> int | None:
    return int(v) if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 else None


def _percent(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v <= 100 else None


def profiles_from_report(node: str, status: Mapping[str, Any]) -> tuple[list[Profile], list[OomEvent]]:
    """The per-container profiles and OOM incidents of one NodeMemoryReport ``status``."""
    profiles = []
    for c in status.get("containers") or []:
        uid, name = c.get("podUID"), c.get("container")
        if not uid or not name:
            continue
        bd = c.get("breakdown")
        breakdown = None
        if isinstance(bd, Mapping) and _int(bd.get("anon")) is not None:
            breakdown = Breakdown(
                anon=_int(bd.get("anon")),
                active_file=_int(bd.get("activeFile")),
                inactive_file=_int(bd.get("inactiveFile")),
                shmem=_int(bd.get("shmem")),
                kernel=_int(bd.get("kernel")),
                swap=_int(bd.get("swap")),
                dirty=None,
                writeback=None,
            )
        peaks = tuple(
            (int(p["t"]), int(p["bytes"]))
            for p in c.get("peaks") or []
            if _int(p.get("t")) is not None and _int(p.get("bytes")) is not None
        )
        profiles.append(
            Profile(
                node=node,
                pod_uid=str(uid),
                container=str(name),
                working_set=_int(c.get("workingSet")),
                limit=_int(c.get("limit")),
                request=_int(c.get("request")),
                peaks=peaks,
                breakdown=breakdown,
                oom_kills=_int(c.get("oomKills")) or 0,
                xmx=_int(c.get("xmx")) or None,
                max_ram_percentage=_percent(c.get("maxRAMPercentage")),
            )
        )
    incidents = []
    for inc in status.get("incidents") or []:
        t = parse_time(inc.get("time"))
        uid, name = inc.get("podUID"), inc.get("container")
        if t is None or not uid or not name:
            continue  # a node-wide OOM with no container attributed says nothing about a workload
        victim = inc.get("victim") or {}
        incidents.append(
            OomEvent(
                pod_uid=str(uid),
                container=str(name),
                time=t,
                key=f"{inc.get('bootID', '')}/{inc.get('seq', '')}",
                source="agent",
                scope=str(inc.get("scope") or "container"),
                victim=str(victim.get("comm") or ""),
                limit=_int(inc.get("limit")) or None,
                responsible="" if inc.get("responsibleContainer") in (None, name) else str(
                    inc["responsibleContainer"]
                ),
            )
        )
    return profiles, incidents


KILL_EVENT_REASONS = (REASON_OOM_CONTAINER, REASON_OOM_CHILD, REASON_OOM_POD)
"""The agent's Event reasons for a kill at the container's or the pod's own limit."""


def agent_kill(event: Mapping[str, Any]) -> tuple[str, str, float] | None:
    """(pod UID, container, time) of an agent's OOM-kill Event (``events.k8s.io/v1``), else None.

    The agent posts it the moment it reads the kill (a killed child too, which the kubelet never
    reports); its NodeMemoryReport carries the same kill only at the next report write (at most once a
    minute). The operator uses it to roll back an applied limit at once, not as recommendation
    evidence (the report's incident is that, counted once)."""
    if (
        event.get("reportingController") != REPORTING_CONTROLLER
        or event.get("reason") not in KILL_EVENT_REASONS
    ):
        return None
    reg = event.get("regarding") or {}
    path = str(reg.get("fieldPath") or "")
    if (
        reg.get("kind") != "Pod"
        or not reg.get("uid")
        or not (path.startswith("spec.containers{") and path.endswith("}"))
    ):
        return None
    t = parse_time((event.get("series") or {}).get("lastObservedTime")) or parse_time(event.get("eventTime"))
    if t is None:
        return None
    return str(reg["uid"]), path[len("spec.containers{") : -1], t


def kubelet_ooms(pod: PodView) -> list[OomEvent]:
    """The kubelet's last ``OOMKilled`` termination of each container (works without agents)."""
    return [
        OomEvent(
            pod.uid,
            c.name,
            c.last_oom,
            f"kubelet/{pod.uid}/{c.name}/{c.last_oom:.0f}",
            "kubelet",
            limit=c.limit,
        )
        for c in pod.containers
        if c.last_oom is not None
    ]


class OomLog:
    """Every OOM kill seen per (pod UID, container), deduplicated across agent and kubelet evidence.

    The kubelet keeps only the last termination and the agents only the last 20 incidents per node,
    so the operator remembers what it saw (bounded per container and by age).
    """

    MAX_PER_CONTAINER = 64

    def __init__(self) -> None:
        self._events: dict[tuple[str, str], dict[str, OomEvent]] = {}

    def add(self, ev: OomEvent) -> bool:
        """Record ``ev``; False when it is already known (same key, or a kubelet twin of an incident)."""
        known = self._events.setdefault((ev.pod_uid, ev.container), {})
        if ev.key in known:
            return False
        for other in known.values():
            if other.source != ev.source and abs(other.time - ev.time) <= KUBELET_DEDUP_SECONDS:
                if ev.source == "agent":  # the agent's record is richer: it replaces the kubelet's
                    del known[other.key]
                    known[ev.key] = ev
                    return True
                return False
        known[ev.key] = ev
        if len(known) > self.MAX_PER_CONTAINER:
            for k in sorted(known, key=lambda k: known[k].time)[: len(known) - self.MAX_PER_CONTAINER]:
                del known[k]
        return True

    def of(self, pod_uid: str, container: str) -> list[OomEvent]:
        return sorted(self._events.get((pod_uid, container), {}).values(), key=lambda e: e.time)

    def blamed_on(self, pod_uid: str, container: str) -> list[OomEvent]:
        """Kills at the pod's limit of another container's process, judged to be ``container``'s
        (it was at its own limit): its limit is the one to raise."""
        return sorted(
            (
                e
                for (uid, name), evs in self._events.items()
                if uid == pod_uid and name != container
                for e in evs.values()
                if e.responsible == container
            ),
            key=lambda e: e.time,
        )

    def pods(self) -> set[str]:
        return {uid for uid, _ in self._events}

    def forget_pod(self, pod_uid: str) -> None:
        for k in [k for k in self._events if k[0] == pod_uid]:
            del self._events[k]

    def prune(self, now: float, keep: float) -> None:
        for k in list(self._events):
            evs = self._events[k]
            for key in [key for key, e in evs.items() if now - e.time > keep]:
                del evs[key]
            if not evs:
                del self._events[k]


# --- reconcile ---------------------------------------------------------------------------------


@dataclass(slots=True)
class PolicyMemory:
    """What the operator keeps per policy between reconciles; rebuilt from the previous status."""

    recommender: Recommender
    fed_ooms: set[str] = field(default_factory=set)
    oom_times: dict[str, list[float]] = field(default_factory=dict)
    """"Kind/name/container" → times of the OOM kills fed to the recommender."""
    cutoffs: dict[str, float] = field(default_factory=dict)
    """Evidence up to this time was already counted in the previous status (seeded on start)."""
    last_recs: dict[str, tuple[int, int]] = field(default_factory=dict)
    """"Kind/name/container" → (request, limit) last reported, to emit Events only on real changes."""
    applies: dict[str, ApplyRecord] = field(default_factory=dict)
    """"Kind/name/container" → what ``spec.actions.apply`` did to it (persisted in the status)."""
    apply_failures: dict[str, tuple[float, str]] = field(default_factory=dict)
    """"Kind/name/container" → (time, why) of a change the API refused: retried after the interval."""
    history: dict[str, dict[int, list[int]]] = field(default_factory=dict)
    """"Kind/name/container" → peak interval index → [interval start, working set, demand], the highest
    of all replicas: persisted in the status (``history.peaks``) and replayed after a restart."""
    pending: dict[str, tuple[list[Any], int | None]] = field(default_factory=dict)
    """"Kind/name/container" → (persisted ``history.peaks`` rows, limit) not replayed yet: replayed at
    the container's first reconcile, after the reports' peaks, without the intervals those already
    reach (counted twice they would move the percentiles and the confidence, and every restart or
    failover would rewrite each pod's annotation and the status)."""

    def remember(self, key: str, t: float, ws: int, breakdown: Breakdown | None) -> None:
        cfg = self.recommender.settings
        idx = math.floor(t / cfg.peak_interval)
        demand, _ = demand_of(ws, breakdown, cfg.cache_allowance_percent / 100)
        row = self.history.setdefault(key, {}).get(idx)
        if row is None:
            self.history[key][idx] = [int(idx * cfg.peak_interval), ws, demand]
        else:
            row[1], row[2] = max(row[1], ws), max(row[2], demand)

    def peaks(self, key: str, now: float) -> list[list[int]]:
        lo = self.recommender.settings.first_interval(now)
        rows = self.history.get(key, {})
        for idx in [i for i in rows if i < lo]:
            del rows[idx]
        return [rows[i] for i in sorted(rows)][-MAX_HISTORY:]


@dataclass(frozen=True, slots=True)
class RecommendationChange:
    workload: Workload
    container: str
    old: tuple[int, int]
    new: tuple[int, int]
    reason: str

    def message(self) -> str:
        return (
            f"{self.workload} container {self.container}: request {format_bytes(self.old[0])} → "
            f"{format_bytes(self.new[0])}, limit {format_bytes(self.old[1])} → {format_bytes(self.new[1])}. "
            f"{self.reason}"
        )[:1000]


@dataclass(frozen=True, slots=True)
class ApplyOutcome:
    """One workload container's apply decision, for the controller to carry out."""

    workload: Workload
    container: str
    key: str
    before: ApplyRecord
    decision: Decision
    entry: dict[str, Any]
    """Its status entry (the controller puts ``before`` back there when a write fails)."""


@dataclass(frozen=True, slots=True)
class PolicyResult:
    status: dict[str, Any]
    annotations: dict[str, dict[str, str | None]]
    """pod name → {annotation: new value (None removes)}; only pods whose value changes."""
    changes: tuple[RecommendationChange, ...]
    applies: tuple[ApplyOutcome, ...] = ()
    """Decisions that write (a resize, a template patch, a rollback)."""


APPLY_FIELDS = ("applied", "rolledBack", "resize", "applyNote")


def set_apply_fields(entry: dict[str, Any], record: ApplyRecord, note: str = "") -> None:
    """Replace the apply fields of a status container entry with ``record`` (and ``note``)."""
    for k in APPLY_FIELDS:
        entry.pop(k, None)
    entry.update(record_to_status(record))
    if note:
        entry["applyNote"] = note[:512]


def memory_for(policy: PolicySpec, previous_status: Mapping[str, Any] | None) -> PolicyMemory:
    """A fresh PolicyMemory, seeded from the policy's previous status so a restart loses nothing:
    the last recommendations (no repeated Events) and the OOM kills it counted (the OOM floor stays)."""
    mem = PolicyMemory(Recommender(policy.settings))
    for wl in (previous_status or {}).get("workloads") or []:
        for c in wl.get("containers") or []:
            key = f"{wl.get('kind')}/{wl.get('name')}/{c.get('name')}"
            try:
                req, lim = c.get("recommendedRequest"), c.get("recommendedLimit")
                if req is not None and lim is not None:
                    mem.last_recs[key] = (parse_quantity(str(req)), parse_quantity(str(lim)))
                t = parse_time(c.get("lastOOM"))
                n = int(c.get("oomKills") or 0)
                cur = c.get("currentLimit")
                limit = parse_quantity(str(cur)) if cur is not None else None
            except (OomsightError, TypeError, ValueError):
                continue
            record = record_from_status(c, parse_quantity, parse_time)
            if record != ApplyRecord():
                mem.applies[key] = record
            if t is not None and n > 0:
                for _ in range(n):
                    mem.recommender.add_oom(key, t, limit)
                    mem.oom_times.setdefault(key, []).append(t)
                mem.cutoffs[key] = t
            mem.pending[key] = (list((c.get("history") or {}).get("peaks") or []), limit)
    return mem


def _replay_pending(mem: PolicyMemory, key: str) -> None:
    """Replay ``key``'s persisted peaks (once), except the intervals the live readings already reach."""
    got = mem.pending.pop(key, None)
    if got is None:
        return
    rows, limit = got
    live = mem.recommender.interval_peaks(key)
    interval = mem.recommender.settings.peak_interval
    keep = []
    for row in rows:
        if isinstance(row, Sequence) and len(row) == 3 and all(isinstance(v, int) for v in row):
            have = live.get(math.floor(row[0] / interval))
            if have is not None and have[0] >= row[1] and have[1] >= row[2]:
                continue
        keep.append(row)
    _replay_history(mem, key, keep, limit)


def _replay_history(mem: PolicyMemory, key: str, rows: Sequence[Any], limit: int | None) -> None:
    """Feed persisted interval peaks back as samples of one pseudo-replica (``status``), with a
    breakdown that reproduces the persisted demand (``demand_of`` counts anon plus a cache allowance)."""
    allowance = mem.recommender.settings.cache_allowance_percent / 100
    for row in rows:
        if (
            not isinstance(row, Sequence)
            or len(row) != 3
            or not all(isinstance(v, int) and v >= 0 for v in row)
        ):
            continue
        t, ws, demand = row
        bd = None
        if demand < ws:
            guess = math.floor(demand / (1 + allowance))
            for hard in (guess, guess + 1, guess - 1, guess + 2, guess - 2):  # ceil() in demand_of
                bd = Breakdown(max(0, hard), ws - max(0, hard), 0, 0, 0, 0, None, None)
                if demand_of(ws, bd, allowance)[0] == demand:
                    break
        mem.recommender.add_sample(key, float(t), ws, bd, limit, replica="status")
        mem.remember(key, float(t), ws, bd)


def _scaled_breakdown(bd: Breakdown | None, ws: int | None, peak: int) -> Breakdown | None:
    """The breakdown as of a peak, assuming the current mix (reports carry one breakdown, many peaks)."""
    if bd is None or not ws or bd.anon is None:
        return None
    f = peak / ws

    def s(v: int | None) -> int | None:
        return None if v is None else math.floor(v * f)

    return Breakdown(s(bd.anon), s(bd.active_file), s(bd.inactive_file), s(bd.shmem), s(bd.kernel),
                     s(bd.swap), None, None)  # fmt: skip


def _material(old: tuple[int, int], new: tuple[int, int]) -> bool:
    return any(o <= 0 or abs(n - o) / o > MATERIAL_CHANGE for o, n in zip(old, new, strict=True))


def _condition(
    ctype: str, ok: bool, reason: str, message: str, previous: Mapping[str, Mapping[str, Any]], now: str,
    generation: int,
) -> dict[str, Any]:  # fmt: skip
    status = "True" if ok else "False"
    prev = previous.get(ctype) or {}
    since = prev.get("lastTransitionTime") if prev.get("status") == status else None
    return {
        "type": ctype,
        "status": status,
        "reason": reason,
        "message": message[:2000],
        "lastTransitionTime": since or now,
        "observedGeneration": generation,
    }


def _mi(n: int) -> str:
    """An observed size for people: whole MiB, rounded up (histogram bucket ends are not round)."""
    return f"{math.ceil(n / (1 << 20))}Mi"


def _q(n: int | None) -> str | None:
    return None if n is None else format_bytes(n)


def reconcile(
    policy: PolicySpec,
    pods: Sequence[PodView],
    workloads: Mapping[str, Workload],
    profiles: Mapping[tuple[str, str], Profile],
    ooms: OomLog,
    nodes_reporting: set[str] | frozenset[str],
    mem: PolicyMemory,
    previous_status: Mapping[str, Any] | None,
    now: float,
    annotate: set[str] | frozenset[str] | None = None,
    threshold_pods: set[str] | frozenset[str] | None = None,
    resize_interval: float = DEFAULT_RESIZE_INTERVAL,
    kill_signals: Mapping[tuple[str, str], Sequence[float]] | None = None,
) -> PolicyResult:
    """One policy's status, annotations and Event-worthy changes.

    ``annotate``: UIDs of the pods this policy may annotate (None: all it selects). When policies
    overlap, exactly one of them must own a pod's annotations, or they would overwrite each other
    forever; the controller picks the owner (``annotation_owner``).

    ``threshold_pods``: UIDs of the pods whose ``ANNOTATION_WARNING_THRESHOLD`` this policy writes
    (None: all it selects; the controller picks one policy per pod with ``threshold_owner``). The
    threshold is written whether or not ``annotatePods`` is on: it is the policy's own setting for the
    agent's HighWorkingSet warning, which issue #5 applies to every pod a policy selects, not advice.

    ``pods`` are the pods the selector matched; ``workloads`` maps their UIDs to workloads;
    ``profiles`` holds (pod UID, container) → Profile from every report; ``nodes_reporting`` the nodes
    that have a NodeMemoryReport. ``mem`` (mutated) carries the recommender across reconciles.
    """
    cfg = policy.settings
    rec = mem.recommender
    window = cfg.history_window
    prev_conditions = {c.get("type"): c for c in (previous_status or {}).get("conditions") or []}
    now_s = rfc3339(now)

    groups: dict[Workload, list[PodView]] = {}
    for p in pods:
        groups.setdefault(workloads.get(p.uid) or Workload("Pod", p.name), []).append(p)

    agents = any(p.node in nodes_reporting for p in pods) or any(
        (p.uid, c.name) in profiles for p in pods for c in p.containers
    )
    entries: list[tuple[tuple[int, str, str], dict[str, Any]]] = []
    at_risk = 0
    ooms_24h = 0
    changes: list[RecommendationChange] = []
    pod_recs: dict[str, dict[str, dict[str, Any]]] = {}
    pod_last_oom: dict[str, OomEvent] = {}
    peak_violations: list[str] = []
    applies: list[ApplyOutcome] = []
    apply_cfg = ApplySettings(
        policy.apply.mode, policy.apply.min_confidence, policy.apply.max_change_percent,
        policy.apply.allow_restart, resize_interval,
    )  # fmt: skip

    for wl, members in groups.items():
        names = sorted({c.name for p in members for c in p.containers})[:MAX_CONTAINERS]
        containers = []
        wl_risk = 0
        for cname in names:
            key = f"{wl}/{cname}"
            cut = mem.cutoffs.get(key)
            cur_req: int | None = None
            cur_lim: int | None = None
            risky = False
            kills: list[float] = []
            now_pods: list[PodContainer] = []
            for p in members:
                cv = next((c for c in p.containers if c.name == cname), None)
                if cv is None:
                    continue
                cur_req = max(filter(None, (cur_req, cv.request)), default=None)
                cur_lim = max(filter(None, (cur_lim, cv.limit)), default=None)
                prof = profiles.get((p.uid, cname))
                now_pods.append(PodContainer(
                    p.name, cv.request, cv.limit, prof.working_set if prof is not None else None,
                    cv.restart_policy, p.resize_pending, p.resize_in_progress,
                ))  # fmt: skip
                if prof is not None:
                    for t, b in prof.peaks:
                        bd = _scaled_breakdown(prof.breakdown, prof.working_set, b)
                        rec.add_sample(key, float(t), b, bd, prof.limit, replica=p.uid)
                        mem.remember(key, float(t), b, bd)
                    if prof.jvm is not None:
                        rec.set_jvm(key, prof.jvm)
                    limit = prof.limit or cv.limit
                    if prof.working_set is not None and limit:
                        risky |= prof.working_set * 100 >= policy.threshold_percent * limit
                kills += (kill_signals or {}).get((p.uid, cname), ())
                for ev in ooms.of(p.uid, cname):
                    censors = ev.scope in CENSORING_SCOPES and not ev.responsible  # else another's
                    if censors:
                        kills.append(ev.time)
                    last = pod_last_oom.get(p.name)
                    if last is None or ev.time > last.time:
                        pod_last_oom[p.name] = ev
                    if ev.key in mem.fed_ooms or (cut is not None and ev.time <= cut):
                        continue
                    mem.fed_ooms.add(ev.key)
                    if censors:
                        rec.add_oom(key, ev.time, ev.limit or cv.limit)
                    mem.oom_times.setdefault(key, []).append(ev.time)
                for ev in ooms.blamed_on(p.uid, cname):
                    kills.append(ev.time)
                    fed = f"{ev.key}@{cname}"
                    if fed in mem.fed_ooms or (cut is not None and ev.time <= cut):
                        continue
                    mem.fed_ooms.add(fed)
                    rec.add_oom(key, ev.time, cv.limit)  # its own limit, not the pod's
            _replay_pending(mem, key)
            entry: dict[str, Any] = {"name": cname}
            if cur_req is not None:
                entry["currentRequest"] = _q(cur_req)
            if cur_lim is not None:
                entry["currentLimit"] = _q(cur_lim)
            r: Recommendation | None
            try:
                r = rec.recommend(key, now)
            except UsageError:  # no sample and no OOM for it yet
                r = None
            # Samples that all fell out of the history window are no data (the engine would answer
            # with the minimum), unless an OOM kill in the window says something.
            if r is not None and "no-samples" in r.notes and r.oom_kills == 0:
                r = None
            ooms_in_window = [t for t in mem.oom_times.get(key, ()) if 0 <= now - t <= window]
            if r is not None and r.samples > 0 and r.max > 0:
                entry["workingSet"] = {"p50": _mi(r.p50), "p95": _mi(r.p95), "max": _mi(r.max)}
            entry["oomKills"] = len(ooms_in_window)
            if ooms_in_window:
                entry["lastOOM"] = rfc3339(max(ooms_in_window))
                risky = True
            ooms_24h += sum(1 for t in ooms_in_window if now - t <= DAY)
            if r is None:
                entry["reason"] = (
                    "no working-set data yet: no NodeMemoryReport covers these pods"
                    if not agents
                    else "no working-set samples for this container in the history window"
                )
            else:
                entry["recommendedRequest"] = _q(r.request_bytes)
                entry["recommendedLimit"] = _q(r.limit_bytes)
                entry["reason"] = r.reason[:512]
                entry["confidence"] = round(r.confidence, 2)
                hist = mem.peaks(key, now)
                if hist:
                    entry["history"] = {"peaks": hist}
                if cfg.maximum is not None and r.samples > 0 and r.max > cfg.maximum:
                    peak_violations.append(
                        f"{wl} container {cname} peaked at {format_bytes(r.max)} "
                        f"(max {_q(r.max)}), above the maximum {_q(cfg.maximum)}"
                    )
                new = (r.request_bytes, r.limit_bytes)
                old = mem.last_recs.get(key)
                if old is not None and _material(old, new):
                    changes.append(RecommendationChange(wl, cname, old, new, r.reason))
                if old is None or _material(old, new):
                    mem.last_recs[key] = new
                for p in members:
                    if any(c.name == cname for c in p.containers):
                        pod_recs.setdefault(p.name, {})[cname] = {
                            "request": _q(r.request_bytes),
                            "limit": _q(r.limit_bytes),
                            "confidence": round(r.confidence, 2),
                        }
            before = mem.applies.get(key, ApplyRecord())
            if apply_cfg.mode != APPLY_OFF or before != ApplyRecord():
                rec3 = None if r is None else (r.request_bytes, r.limit_bytes, r.confidence)
                peak = r.max if r is not None and r.samples > 0 else None
                d = decide(
                    apply_cfg, wl.kind, wl.name, cname, rec3, peak, now_pods, before, kills, now, window
                )
                failed = mem.apply_failures.get(key)
                if failed is not None and d.event == "applied" and now - failed[0] < resize_interval:
                    d = Decision(
                        before, note=f"{failed[1]}; retried at {rfc3339(failed[0] + resize_interval)}"
                    )
                set_apply_fields(entry, d.record, d.note)
                if d.record != ApplyRecord():
                    mem.applies[key] = d.record
                else:
                    mem.applies.pop(key, None)
                if d.event:
                    applies.append(ApplyOutcome(wl, cname, key, before, d, entry))
            if risky:
                wl_risk += 1
            containers.append(entry)
        at_risk += wl_risk
        entries.append(((-wl_risk, wl.kind, wl.name), {
            "kind": wl.kind, "name": wl.name, "replicas": len(members), "containers": containers,
        }))  # fmt: skip

    entries.sort(key=lambda e: e[0])
    workloads_out = [e[1] for e in entries[:MAX_WORKLOADS]]

    # Conditions.
    invalid: tuple[str, str] | None = policy.error
    if invalid is None and not pods:
        invalid = (
            REASON_SELECTOR_EMPTY,
            f"the selector matches no pod in namespace {policy.namespace}; check spec.selector against "
            "the pods' labels (kubectl get pods --show-labels)",
        )
    if invalid is None and peak_violations:
        invalid = (
            REASON_MAX_BELOW_PEAK,
            "recommendation.maximum cannot be satisfied: "
            + "; ".join(peak_violations[:5])
            + ("" if len(peak_violations) <= 5 else f"; and {len(peak_violations) - 5} more")
            + ". Raise recommendation.maximum or these containers will be OOM-killed.",
        )
    gen = policy.generation
    conditions = [
        _condition(COND_READY, invalid is None, invalid[0] if invalid else REASON_RECONCILED,
                   invalid[1] if invalid else f"{len(pods)} pods in {len(groups)} workloads reconciled",
                   prev_conditions, now_s, gen),
        _condition(COND_INVALID, invalid is not None, invalid[0] if invalid else REASON_VALID,
                   invalid[1] if invalid else "the policy can be satisfied", prev_conditions, now_s, gen),
        _condition(COND_DEGRADED, not agents and bool(pods),
                   REASON_KUBELET_ONLY if not agents else REASON_AGENTS,
                   "no NodeMemoryReport covers the selected pods: only the kubelet's OOMKilled is seen, "
                   "there is no working-set history (is the oomsight agent running on their nodes?)"
                   if not agents else "node agents report working sets and OOM incidents",
                   prev_conditions, now_s, gen),
    ]  # fmt: skip

    status: dict[str, Any] = {
        "observedGeneration": gen,
        "podsObserved": len(pods),
        "atRisk": at_risk,
        "oomKills24h": ooms_24h,
        "mode": "agents" if agents else "kubelet-only",
        "workloadsOmitted": max(0, len(entries) - MAX_WORKLOADS),
        "workloads": workloads_out,
        "conditions": conditions,
    }

    annotations: dict[str, dict[str, str | None]] = {}
    threshold = f"{policy.threshold_percent:g}"
    for p in pods:
        if (threshold_pods is None or p.uid in threshold_pods) and p.annotation(
            ANNOTATION_WARNING_THRESHOLD
        ) != threshold:
            annotations[p.name] = {ANNOTATION_WARNING_THRESHOLD: threshold}
        mine = _annotation_policy(p.annotation(ANNOTATION_RECOMMENDATION)) == policy.name
        if not policy.annotate_pods or (annotate is not None and p.uid not in annotate):
            if mine:  # annotatePods turned off (or another policy owns the pod now): take ours back
                annotations.setdefault(p.name, {}).update(
                    {ANNOTATION_RECOMMENDATION: None, ANNOTATION_LAST_OOM: None}
                )
            continue
        want: dict[str, str | None] = {}
        recs = pod_recs.get(p.name)
        if recs:
            want[ANNOTATION_RECOMMENDATION] = json.dumps(
                {"policy": policy.name, "containers": recs}, sort_keys=True, separators=(",", ":")
            )
        last = pod_last_oom.get(p.name)
        if last is not None:
            want[ANNOTATION_LAST_OOM] = json.dumps(
                {"time": rfc3339(last.time), "container": last.container, "scope": last.scope,
                 "victim": last.victim, "source": last.source},
                sort_keys=True, separators=(",", ":"),
            )  # fmt: skip
        diff = {k: v for k, v in want.items() if p.annotation(k) != v}
        if diff:
            annotations.setdefault(p.name, {}).update(diff)
    return PolicyResult(status, annotations, tuple(changes), tuple(applies))


def _annotation_policy(value: str | None) -> str | None:
    if not value:
        return None
    try:
        data = json.loads(value)
    except ValueError:
        return None
    return str(data.get("policy")) if isinstance(data, dict) else None


def annotation_owner(candidates: Iterable[PolicySpec]) -> tuple[str, str] | None:
    """Of the policies selecting one pod, the one that writes its annotations: the first by name among
    those with ``annotatePods`` (deterministic, so every reconcile agrees)."""
    keys = sorted(p.key for p in candidates if p.annotate_pods)
    return keys[0] if keys else None


def threshold_owner(candidates: Iterable[PolicySpec]) -> tuple[str, str] | None:
    """Of the valid policies selecting one pod, the one whose ``warningThresholdPercent`` goes on it:
    the lowest threshold (the most cautious warning wins), then the first by name, so that every
    reconcile agrees and two policies never overwrite each other."""
    ranked = sorted((p.threshold_percent, p.key) for p in candidates if p.error is None)
    return ranked[0][1] if ranked else None


def status_changed(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether ``new`` differs from ``old`` in anything but ``lastUpdateTime``."""
    if old is None:
        return True
    a = {k: v for k, v in old.items() if k != "lastUpdateTime"}
    b = {k: v for k, v in new.items() if k != "lastUpdateTime"}
    return a != b
