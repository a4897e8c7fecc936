"""The Events the agent emits, built from a diagnosis or a sweep reading: reason, action and note.

Reasons (stable; documented in README.md, users alert on them):

====================== ===================================================================
``OOMKilled``          the container's own limit was hit and its process was killed (also when
                       the kernel reports the pod's limit, the kubelet's sum of container limits,
                       and this container was at its own)
``OOMKilledChild``     a process was killed but the container kept running; Kubernetes will
                       not report this kill (the runtime only sees PID 1 exit)
``OOMKilledPodLimit``  the pod-level limit was hit by the containers together, none at its own
                       limit, or a PodLevelResources/other pod-level limit
``OOMKilledAncestorLimit`` a limit above the pod (kubepods: node allocatable; a QoS class cgroup:
                       the kubelet's --qos-reserved reservation)
``OOMKilledNode``      the whole node ran out of memory (global OOM) and picked this container
``HighWorkingSet``     working set reached the warning threshold of the effective limit
``WorkingSetBelowThreshold`` it went back below the threshold minus the hysteresis
``MemoryCgroupStuck``  a v1 cgroup sits at ``under_oom 1`` with the OOM killer disabled
``NodeMemoryRisk``     a node finding (kernel, kmem accounting, leaked memory cgroups...), on the Node
====================== ===================================================================
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from oomsight.core.diagnosis import KINDS
from oomsight.core.events import (
    REASON_HIGH_WORKING_SET,
    REASON_NODE_FINDING,
    REASON_OOM_ANCESTOR,
    REASON_OOM_CHILD,
    REASON_OOM_CONTAINER,
    REASON_OOM_NODE,
    REASON_OOM_POD,
    REASON_STUCK,
    REASON_WORKING_SET_NORMAL,
    EventSpec,
    EventType,
    ObjectRef,
    keyed_event_name,
    kill_event_name,
)
from oomsight.core.memory import Pressure
from oomsight.core.podinfo import PodInfo
from oomsight.core.quantity import prose_bytes

_KIND_WORDS = {
    "anon": "anonymous memory (heap, stacks)",
    "file": "page cache",
    "shmem": "shmem/tmpfs",
    "kernel": "kernel memory",
    "active_file": "active page cache",
    "inactive_file": "inactive page cache",
    "swap": "swap",
}


def pod_ref(pod: PodInfo, container: str | None = None) -> ObjectRef:
    """The Pod, and with ``container`` that container as ``fieldPath`` (the kubelet's own form), so a
    reader tells the containers of one Pod apart without parsing the note."""
    return ObjectRef(
        kind="Pod",
        name=pod.name,
        namespace=pod.namespace,
        uid=pod.uid,
        field_path=container_field_path(container) if container else "",
    )


def container_field_path(container: str) -> str:
    return f"spec.containers{{{container}}}"


def container_of_field_path(field_path: object) -> str | None:
    """``spec.containers{app}`` (or ``spec.initContainers{init}``) → ``app``; None for anything else."""
    text = str(field_path or "")
    for head in ("spec.containers{", "spec.initContainers{"):
        if text.startswith(head) and text.endswith("}"):
            return text[len(head) : -1] or None
    return None


def node_ref(node: str) -> ObjectRef:
    return ObjectRef(kind="Node", name=node)


def oom_reason(scope: str | None, container_survived: bool | None) -> str:
    """The reason for a kill: a survived container first (the case Kubernetes hides), then scope."""
    if container_survived is True:
        return REASON_OOM_CHILD
    return {
        "pod": REASON_OOM_POD,
        "ancestor": REASON_OOM_ANCESTOR,
        "node": REASON_OOM_NODE,
    }.get(scope or "", REASON_OOM_CONTAINER)


def kind_words(kind: str | None) -> str:
    return _KIND_WORDS.get(kind or "", kind or "an unknown kind of memory")


def dominant_in_note(note: str) -> str | None:
    """The kind ``oom_note`` named as dominating (``...; page cache dominated (40.0 MiB).``), or None."""
    for kind, words in _KIND_WORDS.items():
        if f"; {words} dominated (" in note:
            return kind
    return None


def dominant_of(amounts: Mapping[str, int | None]) -> str | None:
    """The largest kind among anon/file/shmem/kernel, None when none is known."""
    known = {k: v for k, v in amounts.items() if k in KINDS and v}
    if not known:
        return None
    return max(known, key=lambda k: known[k] or 0)


def _where(diag: Mapping[str, Any]) -> str:
    scope = diag.get("scope")
    level = diag.get("limit_level")
    limit = diag.get("limit_bytes")
    responsible = diag.get("responsible_container") or {}
    # cgroup v1 charges memory+swap first: when that counter failed, its limit is the one hit.
    kind = "memory+swap limit" if diag.get("limit_counter") == "memory+swap" else "limit"
    if scope == "container" and level == "pod":
        # The kernel hit the pod's limit, which the kubelet sets to the sum of the container limits.
        own = responsible.get("limit_bytes") or limit
        name = responsible.get("name")
        whose = f"container {name}'s own" if name else "its own"
        return f"at {whose} {kind} of {prose_bytes(own)} (reached first as the pod's, their sum)"
    lim = prose_bytes(limit)
    if scope == "ancestor" and level == "kubepods":
        return f"at node allocatable ({lim}, the limit on all pods of the node together)"
    if scope == "ancestor" and level == "qos":
        return f"at a QoS reservation ({lim}, the kubelet's --qos-reserved limit on its QoS class)"
    return {
        "container": f"at its own {kind} of {lim}",
        "pod": f"at the pod's {kind} of {lim}, shared by its containers",
        "ancestor": f"at a {kind} above the pod ({lim})",
        "node": "because the whole node ran out of memory",
    }.get(scope or "", "(the kernel rate-limited its report, so which limit was hit is not known)")


def oom_note(diag: Mapping[str, Any], container: str | None) -> str:
    """One sentence with the numbers: who died, which limit, what dominated, did the container live."""
    victim = diag.get("victim") or {}
    comm = victim.get("comm") or "a process"
    pid = victim.get("pid")
    anon = victim.get("anon_rss_bytes")
    who = f"{comm} (pid {pid}, {prose_bytes(anon)} anon)" if pid is not None else comm
    among = diag.get("placed_among")
    if among:
        # Kill lines without their reports in several containers at once: the OOM-kill counters
        # say how many kills each had, not which line was whose.
        who = (
            f"{who}, or another of the kill lines the kernel logged without their reports in "
            f"{among} containers at once (their counters give each its kills, not the lines)"
        )
    target = f"container {container}" if container else "this pod"
    charged = diag.get("charged") or {}
    dominant = diag.get("dominant") or dominant_of(charged)
    dom_bytes = charged.get(dominant) if dominant else None
    dom = f"; {kind_words(dominant)} dominated ({prose_bytes(dom_bytes)})" if dominant else ""
    where = _where(diag)
    survived = diag.get("container_survived")
    if survived is True:
        return (
            f"A process in {target} was OOM-killed {where}: {who}; the container kept running, "
            f"so Kubernetes will not report this kill{dom}."
        )
    tail = " (the container exited)" if survived is False else ""
    return f"{target[0].upper()}{target[1:]} was OOM-killed {where}: {who}{tail}{dom}."


def oom_event(
    diag: Mapping[str, Any],
    pod: PodInfo,
    container: str | None,
    node: str,
    boot_id: str,
    seq: int,
    when: datetime,
) -> EventSpec:
    """The Event for one kill (named after boot ID and kmsg sequence, so retries never duplicate)."""
    reason = oom_reason(diag.get("scope"), diag.get("container_survived"))
    return EventSpec(
        name=kill_event_name(pod.name, boot_id, seq),
        namespace=pod.namespace,
        regarding=pod_ref(pod, container),
        related=node_ref(node),
        reason=reason,
        action="OOMKill",
        note=oom_note(diag, container),
        type="Warning",
        event_time=when,
        key=f"oom|{pod.uid}|{container or ''}",
        seq=seq,
        boot_id=boot_id,
    )


def counted_kill_event(
    pod: PodInfo,
    container: str | None,
    node: str,
    boot_id: str,
    cgroup: str,
    count: int,
    limit: int | None,
    why: str,
    when: datetime,
) -> EventSpec:
    """A kill known only from the cgroup's OOM-kill counter (no kernel log line for it).

    Named after the cgroup and the counter's value (the ``count``-th kill in it), so a restart that
    counts the same kill again patches the same Event. ``why`` says why no log line explains it.
    """
    target = f"container {container}" if container else "this pod"
    lim = f" Its memory limit is {prose_bytes(limit)}." if limit else ""
    note = (
        f"A process in {target} was OOM-killed (kill {count} counted by its memory cgroup); {why}, "
        f"so which process died and which limit was hit are not known.{lim}"
    )
    return EventSpec(
        name=keyed_event_name(pod.name, boot_id, f"oomcount|{cgroup}|{count}"),
        namespace=pod.namespace,
        regarding=pod_ref(pod),
        related=node_ref(node),
        reason=REASON_OOM_CONTAINER,
        action="OOMKill",
        note=note,
        type="Warning",
        event_time=when,
        key=f"oom|{pod.uid}|{container or ''}",
        boot_id=boot_id,
    )


def high_working_set_event(
    pod: PodInfo,
    container: str,
    node: str,
    boot_id: str,
    working_set: int,
    limit: int,
    level: str | None,
    breakdown: Mapping[str, int | None],
    threshold: float,
    when: datetime,
    cleared: bool = False,
    pressure: Pressure | None = None,
) -> EventSpec:
    """``pressure`` (v2 ``memory.pressure``) adds how long its tasks stalled on memory; swapped-out
    memory in ``breakdown`` changes what 100% means: the kernel swaps before it kills."""
    ratio = working_set / limit if limit else 0.0
    dominant = dominant_of(breakdown)
    dom = (
        f"; {kind_words(dominant)} dominates ({prose_bytes(breakdown.get(dominant or ''))})"
        if dominant
        else ""
    )
    lvl = f"{level} " if level else ""
    if cleared:
        reason = REASON_WORKING_SET_NORMAL
        note = (
            f"Container {container}'s working set is back to {prose_bytes(working_set)}, "
            f"{ratio:.0%} of its {prose_bytes(limit)} {lvl}limit{dom}."
        )
        typ: EventType = "Normal"
    else:
        reason = REASON_HIGH_WORKING_SET
        swapped = breakdown.get("swap") or 0
        at_limit = (
            f"at 100% the kernel swaps its memory out ({prose_bytes(swapped)} already) and OOM-kills a "
            "process in it only when it may swap no more"
            if swapped
            else "at 100% the kernel OOM-kills a process in it"
        )
        stall = ""
        if pressure is not None and pressure.some.avg10 >= 1.0:
            stall = (
                f" Its tasks were stalled on memory {pressure.some.avg10:.1f}% of the last 10 s "
                "(PSI memory.pressure)."
            )
        note = (
            f"Container {container}'s working set is {prose_bytes(working_set)}, {ratio:.0%} of its "
            f"{prose_bytes(limit)} {lvl}limit (warning at {threshold:.0%}){dom}; {at_limit}.{stall}"
        )
        typ = "Warning"
    return _keyed_pod_event(pod, container, node, boot_id, reason, "MeasureWorkingSet", note, typ, when)


def stuck_event(
    pod: PodInfo,
    container: str | None,
    node: str,
    boot_id: str,
    cgroup: str,
    limit: int | None,
    when: datetime,
) -> EventSpec:
    target = f"container {container}" if container else "this pod"
    note = (
        f"The memory cgroup of {target} ({cgroup}) is stuck at its {prose_bytes(limit)} limit: "
        f"under_oom is 1 with the OOM killer disabled, so its processes are frozen until memory is "
        f"freed or the limit is raised."
    )
    return _keyed_pod_event(pod, container, node, boot_id, REASON_STUCK, "CheckCgroup", note, "Warning", when)


def _keyed_pod_event(
    pod: PodInfo,
    container: str | None,
    node: str,
    boot_id: str,
    reason: str,
    action: str,
    note: str,
    typ: EventType,
    when: datetime,
) -> EventSpec:
    """A state event on a Pod, one per (reason, pod, container) and boot, so repeats become a series."""
    key = f"{reason}|{pod.uid}|{container or ''}"
    return EventSpec(
        name=keyed_event_name(pod.name, boot_id, key),
        namespace=pod.namespace,
        regarding=pod_ref(pod),
        related=node_ref(node),
        reason=reason,
        action=action,
        note=note,
        type=typ,
        event_time=when,
        key=key,
        boot_id=boot_id,
    )


def node_finding_event(
    node: str, boot_id: str, finding_id: str, severity: str, message: str, when: datetime
) -> EventSpec:
    key = f"{REASON_NODE_FINDING}|{node}|{finding_id}"
    return EventSpec(
        name=keyed_event_name(node, boot_id, key),
        namespace="default",
        regarding=node_ref(node),
        reason=REASON_NODE_FINDING,
        action="CheckNode",
        note=f"[{finding_id}, {severity}] {message}",
        type="Normal" if severity in ("info", "ok") else "Warning",
        event_time=when,
        key=key,
        boot_id=boot_id,
    )
