"""Which limit a kill at the pod, QoS or kubepods cgroup really was, in terms a user can change (pure).

The kernel names the cgroup whose counter failed (``oom_memcg``). Above the container, that cgroup's
limit is usually not one anybody wrote by hand:

- **pod**: the kubelet sets the pod cgroup's limit to the sum of its containers' limits, plus the
  pod's ``spec.overhead`` (RuntimeClass), and only when every container has a memory limit
  (pkg/kubelet/cm/helpers_linux.go ``ResourceConfigForPod`` with resourcehelper ``PodLimits``, which
  takes the larger of that sum and the largest init container's limit). With PodLevelResources
  (KEP-2837) a pod-level ``spec.resources.limits.memory`` is used instead. The sandbox (pause)
  container sits in the same pod cgroup with no limit of its own and is charged there (~200 KiB
  measured with containerd 1.6.20), so a one-container Pod at its own limit fills the pod's limit
  first: the kernel reports the pod, the user's fix is the container's limit.
- **QoS** (``kubepods/burstable``, ``kubepods/besteffort``): the kubelet limits these only with
  ``--qos-reserved=memory=N%`` (feature gate QOSReserved): Burstable gets node allocatable minus N%
  of the Guaranteed pods' memory requests, BestEffort that minus N% of the Burstable pods' requests
  (pkg/kubelet/cm/qos_container_manager_linux.go ``setMemoryReserve``).
- **kubepods**: node allocatable, i.e. capacity minus kube-reserved and system-reserved when
  ``enforceNodeAllocatable`` has ``pods`` (the default), else capacity
  (pkg/kubelet/cm/node_container_manager_linux.go ``enforceNodeAllocatableCgroups``).

``judge_pod`` decides a pod-cgroup kill from the pod limit in the kernel report and the pod's
containers (``Member``: own limit and usage, from the live cgroup tree or the Pod spec). Arithmetic:
when the pod limit P is the kubelet's sum of the limits L_i, the pod counter (the containers' usage
U_i plus the sandbox's S) reaches P only when the containers' headroom together, Σ(L_i − U_i), is at
most S. So the container whose own limit is at least what the pod left it,
``L_v ≥ P − S − Σ_{others} U_o``, was at its own limit: that container is the one to change.
With one container this is ``L_v ≥ P − S``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

PAGE = 4096
CHARGE_BATCH = 64 * PAGE
"""mm/memcontrol.c ``MEMCG_CHARGE_BATCH`` (64 pages): usage is charged ahead in per-CPU batches of this
size, so a usage read from the counter can be off by that much per CPU."""

Judgement = Literal[
    "container_at_limit", "pod_level_resources", "not_kubelet_sum", "none_at_limit", "unknown"
]


@dataclass(frozen=True, slots=True)
class Member:
    """One container cgroup inside a pod's cgroup."""

    container_id: str
    limit_bytes: int | None
    """Its own memory limit; None when it has none (the sandbox, on a pod the kubelet limited)."""
    usage_bytes: int | None = None
    """Its usage, read after the kill (the victim's memory already freed); None when not read."""
    name: str | None = None
    """The container's name in the Pod spec, when the Pod is known."""
    sandbox: bool | None = None
    """True for the pod's sandbox (pause); None: not known, judged by the limit (see ``is_sandbox``)."""

    @property
    def is_sandbox(self) -> bool:
        """The sandbox: said so, or (from cgroups alone) a member without a limit of its own. In a pod
        whose cgroup the kubelet limited, every real container has a limit (or there is no pod limit)."""
        return self.sandbox if self.sandbox is not None else self.limit_bytes is None


@dataclass(frozen=True, slots=True)
class PodContext:
    """What the judgement needs beyond the kernel report: the pod's container cgroups and spec facts."""

    members: tuple[Member, ...]
    pod_level_limit: int | None = None
    """``spec.resources.limits.memory`` (PodLevelResources), when the Pod is known and sets it."""
    overhead_bytes: int = 0
    """``spec.overhead.memory`` (RuntimeClass), added by the kubelet to the pod's limit."""
    source: Literal["cgroups", "pod"] = "cgroups"
    """Where ``members`` came from: the live cgroup tree (``diagnose``) or the Pod plus cgroups (agent)."""


@dataclass(frozen=True, slots=True)
class PodVerdict:
    """The judgement on a pod-cgroup kill."""

    judgement: Judgement
    responsible: Member | None = None
    """The container that was at (or nearest) its own limit; None when the pod as a whole is to blame."""
    kubelet_sum: int | None = None
    """Σ container limits + overhead: what the kubelet sets the pod's limit to."""
    sandbox_bytes: int | None = None
    """What the sandbox (and anything else outside the containers) had charged to the pod."""

    @property
    def container_level(self) -> bool:
        return self.responsible is not None


SpecContainer = tuple[str, str | None, int | None]
"""A Pod's container: (name, container ID, memory limit)."""


def with_spec(live: tuple[Member, ...], containers: tuple[SpecContainer, ...]) -> tuple[Member, ...]:
    """The pod's members from its spec, with what the live cgroups still say.

    ``live``: the container cgroups found in the pod cgroup after the kill; ``containers``: the Pod's
    (name, container ID, memory limit). A container whose main process was killed is often gone from
    the pod cgroup by the time it is read (the runtime removes it) or back under a new ID (the kubelet
    restarted it), so the live cgroups alone can miss the very container that was at its limit. Each
    spec container is a member, with its live cgroup's limit and usage when its ID is still there and
    the spec's limit otherwise; a live cgroup no spec container names and without a limit is the
    sandbox; one with a limit is a restarted container already counted by its spec entry.
    """
    by_id = {m.container_id: m for m in live}
    out = []
    for name, cid, limit in containers:
        m = by_id.get(cid) if cid else None
        out.append(
            Member(
                cid or "",
                m.limit_bytes if m is not None else limit,
                m.usage_bytes if m is not None else None,
                name=name,
                sandbox=False,
            )
        )
    ids = {cid for _, cid, _ in containers if cid}
    out += [
        Member(m.container_id, None, m.usage_bytes, name=None, sandbox=True)
        for m in live
        if m.container_id not in ids and m.limit_bytes is None
    ]
    return tuple(out)


def _tolerance(n: int) -> int:
    """How far the pod limit may sit from the kubelet's sum: each limit is rounded down to a page by
    the kernel (``page_counter_memparse``), the pod's and each container's separately."""
    return (n + 1) * PAGE


def kubelet_sum(ctx: PodContext) -> int | None:
    """Σ of the containers' own limits plus overhead; None when a container has none (then the kubelet
    sets no pod limit, so a pod limit seen came from elsewhere)."""
    real = [m for m in ctx.members if not m.is_sandbox]
    if not real or any(m.limit_bytes is None for m in real):
        return None
    return sum(m.limit_bytes or 0 for m in real) + ctx.overhead_bytes


def _near(limit: int) -> int:
    """How close to its own limit a container counts as "at" it: two charge batches (per-CPU stock,
    usage read after the kill) plus 2% of the limit (the others' usage may have moved since)."""
    return 2 * CHARGE_BATCH + limit // 50


def judge_pod(
    pod_limit: int | None,
    victim_container: str | None,
    ctx: PodContext | None,
    victim_rss: int = 0,
) -> PodVerdict:
    """Judge a kill whose ``oom_memcg`` is the pod cgroup (limit ``pod_limit`` from the report).

    ``victim_container``: the victim's container ID (from ``task_memcg``); ``victim_rss``: what the
    victim held (the kill line's rss), added back to its container's usage read after the kill.

    - a pod-level limit from the spec (PodLevelResources), or a pod limit that is not the kubelet's
      sum of the container limits: the pod as a whole (``pod_level_resources``, ``not_kubelet_sum``);
    - the victim's container at its limit: its own limit is at least what the pod left it
      (``L_v ≥ P − S − Σ others' usage``, which for one container is ``L_v ≥ P − S``), or its
      usage at the kill was within ``_near`` of its limit;
    - else the container nearest its own limit, if any is within ``_near`` of it;
    - else ``none_at_limit`` (several containers outgrew the pod together, the sandbox's share being
      large), or ``unknown`` when the others' usage was not read.
    """
    if ctx is None or pod_limit is None or not ctx.members:
        return PodVerdict("unknown")
    real = [m for m in ctx.members if not m.is_sandbox]
    sandbox = sum(m.usage_bytes or 0 for m in ctx.members if m.is_sandbox)
    total = kubelet_sum(ctx)
    if ctx.pod_level_limit is not None and abs(ctx.pod_level_limit - pod_limit) <= _tolerance(0):
        return PodVerdict("pod_level_resources", kubelet_sum=total, sandbox_bytes=sandbox)
    if total is None or abs(total - pod_limit) > _tolerance(len(real)):
        return PodVerdict("not_kubelet_sum", kubelet_sum=total, sandbox_bytes=sandbox)

    def others_usage(m: Member) -> int | None:
        us = [o.usage_bytes for o in real if o is not m]
        return None if any(u is None for u in us) else sum(u or 0 for u in us)

    if len(real) == 1:
        # One container: the pod limit is its limit (plus overhead) whatever it used, and the only one
        # a user can raise. Also when a restart gave it a new ID since the kill (a live read later).
        return PodVerdict("container_at_limit", real[0], total, sandbox)
    victim = next((m for m in real if m.container_id == victim_container), None)
    if victim is not None and victim.limit_bytes is not None:
        others = others_usage(victim)
        # The rule: the pod minus the sandbox leaves no more than this container's own limit
        # (always so for one container). Else: at the kill the pod was full, so the victim's
        # container held P − S − others; at its limit if that was within _near of it.
        if victim.limit_bytes + _tolerance(len(real)) >= pod_limit - sandbox or (
            others is not None
            and victim.limit_bytes - (pod_limit - sandbox - others) <= _near(victim.limit_bytes)
        ):
            return PodVerdict("container_at_limit", victim, total, sandbox)
    headroom: list[tuple[int, Member]] = []
    for m in real:
        if m.usage_bytes is None or m.limit_bytes is None:
            continue
        used = m.usage_bytes + (victim_rss if m is victim else 0)
        headroom.append((m.limit_bytes - used, m))
    near = [(h, m) for h, m in headroom if h <= _near(m.limit_bytes or 0)]
    if near:
        return PodVerdict("container_at_limit", min(near, key=lambda x: x[0])[1], total, sandbox)
    if len(headroom) < len(real):
        return PodVerdict("unknown", kubelet_sum=total, sandbox_bytes=sandbox)
    return PodVerdict("none_at_limit", kubelet_sum=total, sandbox_bytes=sandbox)
