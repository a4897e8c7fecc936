"""Explain one OOM ``Incident`` in plain language (pure).

``diagnose()`` first reduces the incident to ``Facts`` (scope, limit, what was charged, who died and
why), then runs the ``RULES`` table: each rule is a name, a test on the facts and the sentence it
adds. Add a rule by adding a row; nothing else needs to change.

Where the facts come from:

- where the limit was hit (``limit_level``): ``oom_memcg`` (the cgroup whose limit was hit) against
  ``task_memcg`` (the victim's) in the ``oom-kill:`` summary (≥4.19) or ``Task in X killed as a result
  of limit of Y`` (older); a global OOM has ``oom_memcg`` absent (``global_oom``) and prints ``Out of
  memory:``. Kubernetes levels come from ``oomsight.core.kubepath.parse_cgroup_path``.
- scope, the limit a user can change: a kill at the pod cgroup whose limit is the kubelet's sum of
  the container limits is the container's (``oomsight.core.podscope.judge_pod``), when a live host
  told the containers' limits (``Aftermath``); otherwise the level where it was hit.
- charged memory: the OOM memcg's stats block. cgroup v1 (Documentation/admin-guide/cgroup-v1/
  memory.rst): ``rss`` (anon, incl. THP), ``cache`` (page cache incl. tmpfs/shmem), ``shmem``;
  kernel memory from the ``kmem:`` usage line. v2 (cgroup-v2.rst ``memory.stat``): ``anon``,
  ``file`` (incl. ``shmem``), ``shmem``, ``kernel`` (≥5.18; else ``kernel_stack + pagetables +
  percpu + sock + vmalloc + slab``). ``file`` below always excludes shmem, so the four add up.
- who is killed: ``oom_badness`` (mm/oom_kill.c) = rss + swap entries + page tables / PAGE_SIZE, plus
  ``oom_score_adj × totalpages / 1000``; -1000 exempts a task.
- before 5.1, ``Kill process N .. or sacrifice child`` names the task chosen and ``Killed process M``
  the one killed. The memcg walk visits threads, not only processes (3.10 ``mem_cgroup_out_of_memory``
  iterates every task), and the kill takes ``find_lock_task_mm()`` of the victim: M != N may be a
  child of N or just another thread of the same process. The task table lists processes only
  (``dump_tasks``): N in it means a real child was sacrificed; N absent means a thread was picked.
- the ``kubepods`` cgroup's limit is set by the kubelet to node capacity minus kube-reserved and
  system-reserved (pkg/kubelet/cm/node_container_manager_linux.go, enforceNodeAllocatable "pods"):
  hitting it means all pods together outgrew the node, whatever their own limits.
- a page-fault OOM (``gfp_mask=0x0()``, ``pagefault_out_of_memory``) runs the node-wide OOM killer
  after an allocation failed somewhere else (a v1 kmem limit, a memcg charge), whatever memory is
  free; 5.16 stopped that ("mm, oom: do not trigger out_of_memory from the #PF").
- which limit was hit on cgroup v1 with swap accounting: ``try_charge`` (mm/memcontrol.c) charges
  ``memsw`` first and only then ``memory``; when ``memory+swap`` is full the OOM comes from that
  counter while ``memory`` may sit below its own limit. The report prints both lines at OOM time:
  the one with less headroom is the one that failed. (v2 keeps swap apart: ``memory.swap.max``
  never starts the OOM killer.)
- ``order=-1`` in the header is the SysRq-f OOM (drivers/tty/sysrq.c ``moom_callback``; mm/oom_kill.c
  ``is_sysrq_oom``): someone asked for a kill, no allocation failed, and the task with the highest
  score dies whatever memory is free.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC
from typing import Any, Literal

from oomsight.core.aftermath import Aftermath
from oomsight.core.kubepath import KubeRef, parse_cgroup_path
from oomsight.core.oomreport import Incident, MemcgCounter, TaskRow, Victim
from oomsight.core.podscope import Member, PodVerdict, judge_pod
from oomsight.core.quantity import prose_bytes

Scope = Literal["container", "pod", "ancestor", "node"]
Kind = Literal["anon", "file", "shmem", "kernel"]
KINDS: tuple[Kind, ...] = ("anon", "file", "shmem", "kernel")
PAGE = 4096
UNLIMITED = 1 << 60  # v1 prints 9007199254740988kB (PAGE_COUNTER_MAX) for "no limit"
KNOWN_CONSTRAINTS = frozenset(
    ("CONSTRAINT_NONE", "CONSTRAINT_CPUSET", "CONSTRAINT_MEMORY_POLICY", "CONSTRAINT_MEMCG")
)
"""mm/oom_kill.c ``oom_constraint_text``; anything else was named by whoever started the OOM killer
(e.g. a BPF OOM policy's ``CONSTRAINT_BPF*``), not by a limit being reached."""

KIND_WORDS: dict[Kind, str] = {
    "anon": "anonymous memory (heap, stacks: what the processes allocated)",
    "file": "page cache (file contents read or written)",
    "shmem": "shmem/tmpfs (files in an emptyDir with medium: Memory, /dev/shm, shared memory)",
    "kernel": "kernel memory (slab, page tables, kernel stacks, sockets)",
}


@dataclass(frozen=True, slots=True)
class Charged:
    """Memory charged to the cgroup that hit its limit (or the node), bytes; None when not printed."""

    anon: int | None = None
    file: int | None = None
    shmem: int | None = None
    kernel: int | None = None
    swap: int | None = None
    dirty: int | None = None
    """Page cache written but not yet on disk (v1 ``dirty``, v2 ``file_dirty``); part of ``file``."""

    def get(self, kind: Kind) -> int | None:
        return getattr(self, kind)  # type: ignore[no-any-return]

    @property
    def total(self) -> int:
        return sum(self.get(k) or 0 for k in KINDS)


@dataclass(frozen=True, slots=True)
class Facts:
    """What the report establishes, before any wording."""

    incident: Incident
    victim: Victim
    scope: Scope | None
    oom_ref: KubeRef | None
    task_ref: KubeRef | None
    limit_bytes: int | None
    usage_bytes: int | None
    charged: Charged
    dominant: Kind | None
    container_survived: bool | None
    survivors: tuple[TaskRow, ...]
    chosen_by_oom_score_adj: bool
    bigger: TaskRow | None
    """With ``chosen_by_oom_score_adj``: the bigger process that was spared."""
    victim_row: TaskRow | None
    child_of_selected: bool
    """≤5.0: the chosen process lives on and a child of it was killed (checked against the task table)."""
    thread_or_child: bool
    """≤5.0: chosen and killed pids differ and no task table says whether it was a child or a thread."""
    node_free_bytes: int | None
    """Global OOM: free memory in Mem-Info (``free:`` pages)."""
    arena_mappings: int | None
    limit_counter: str | None = None
    """Which ``memory:`` / ``memory+swap:`` line ``limit_bytes`` and ``usage_bytes`` come from."""
    limit_level: str | None = None
    """Where the limit was hit: ``container``, ``pod``, ``qos``, ``kubepods``, ``other`` (a cgroup not
    under kubepods), ``node`` (global OOM); None when the report does not say."""
    pod_verdict: PodVerdict | None = None
    """For a kill at the pod cgroup: whose limit it really was (``oomsight.core.podscope``)."""
    survival_live: bool = False
    """``container_survived`` was read from the live container cgroup, not judged from the task table."""

    @property
    def responsible(self) -> Member | None:
        """The container judged responsible for a kill at the pod cgroup (at, or nearest, its limit)."""
        return self.pod_verdict.responsible if self.pod_verdict is not None else None

    @property
    def via_pod(self) -> bool:
        """A container-level kill that the kernel reported at the pod cgroup (the kubelet's sum)."""
        return self.responsible is not None

    @property
    def node_not_out_of_memory(self) -> bool:
        """A node-wide OOM kill while at least a tenth of RAM was free (a page-fault OOM)."""
        ram = self.limit_bytes
        free = self.node_free_bytes
        return self.scope == "node" and free is not None and ram is not None and free * 10 >= ram

    @property
    def unlimited(self) -> bool:
        """The OOM cgroup's ``memory:`` line says it has no limit."""
        mem = self.incident.counter("memory")
        return mem is not None and mem.limit_bytes >= UNLIMITED

    @property
    def policy_kill(self) -> bool:
        """Started by something other than the kernel's own limits (an unknown ``constraint=``)."""
        c = self.incident.constraint
        return c is not None and c not in KNOWN_CONSTRAINTS

    @property
    def kube(self) -> bool:
        return self.task_ref is not None or self.oom_ref is not None

    @property
    def pagefault(self) -> bool:
        trig = self.incident.trigger
        return trig is not None and trig.gfp_mask.startswith("0x0(")

    @property
    def manual(self) -> bool:
        """SysRq-f (``order=-1``): the OOM killer was run by hand, not by a failed allocation."""
        trig = self.incident.trigger
        return trig is not None and trig.order == -1

    @property
    def memsw(self) -> bool:
        return self.limit_counter == "memory+swap"


@dataclass(frozen=True, slots=True)
class Diagnosis:
    """The answer for one incident; ``as_json()`` is the documented ``incidents[]`` item."""

    facts: Facts
    explanation: str
    advice: tuple[str, ...]
    rules: tuple[str, ...]
    """Names of the rules that fired, for tests and for grouping."""

    @property
    def scope(self) -> Scope | None:
        return self.facts.scope

    @property
    def dominant(self) -> Kind | None:
        return self.facts.dominant

    @property
    def container_survived(self) -> bool | None:
        return self.facts.container_survived

    @property
    def chosen_by_oom_score_adj(self) -> bool:
        return self.facts.chosen_by_oom_score_adj

    @property
    def pod_uid(self) -> str | None:
        ref = self.facts.task_ref or self.facts.oom_ref
        return ref.pod_uid if ref else None

    @property
    def container_id(self) -> str | None:
        ref = self.facts.task_ref
        if ref is None and self.facts.scope == "container":
            ref = self.facts.oom_ref  # only the OOM memcg was printed, and it is the container
        return ref.container_id if ref else None

    def responsible_json(self) -> dict[str, Any] | None:
        """The ``responsible_container`` field: the container whose limit to change, or None."""
        f = self.facts
        m = f.responsible
        if m is not None:
            return {"container_id": m.container_id, "name": m.name, "limit_bytes": m.limit_bytes}
        if f.scope == "container" and self.container_id:
            return {"container_id": self.container_id, "name": None, "limit_bytes": f.limit_bytes}
        return None

    def as_json(self) -> dict[str, Any]:
        f = self.facts
        inc, v = f.incident, f.victim
        wall = inc.wall
        time: str | None = None
        if wall is not None:
            time = (
                wall.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                if wall.tzinfo is not None
                else wall.isoformat()
            )
        return {
            "time": time,
            "seq": inc.seq,
            "monotonic_usec": inc.usec,
            "scope": f.scope,
            "limit_level": f.limit_level,
            "responsible_container": self.responsible_json(),
            "pod_judgement": f.pod_verdict.judgement if f.pod_verdict is not None else None,
            "oom_cgroup": inc.oom_memcg,
            "task_cgroup": inc.task_memcg,
            "pod_uid": self.pod_uid,
            "container_id": self.container_id,
            "victim": {
                "pid": v.pid,
                "comm": v.comm,
                "anon_rss_bytes": v.anon_rss_bytes,
                "file_rss_bytes": v.file_rss_bytes,
                "shmem_rss_bytes": v.shmem_rss_bytes,
                "oom_score_adj": _victim_adj(f),
                "total_vm_bytes": v.total_vm_bytes,
                "uid": v.uid,
            },
            "also_killed": [{"pid": o.pid, "comm": o.comm} for o in inc.victims[1:]],
            "limit_bytes": f.limit_bytes,
            "usage_bytes": f.usage_bytes,
            "limit_counter": f.limit_counter,
            "charged": {k: f.charged.get(k) for k in KINDS},
            "dominant": f.dominant,
            "container_survived": f.container_survived,
            "chosen_by_oom_score_adj": f.chosen_by_oom_score_adj,
            "group_kill": inc.group_kill,
            "explanation": self.explanation,
            "advice": list(self.advice),
            "rules": list(self.rules),
            "kernel": {
                "release": inc.kernel,
                "constraint": inc.constraint,
                "trigger": inc.trigger.comm if inc.trigger else None,
                "gfp_mask": inc.trigger.gfp_mask if inc.trigger else None,
                "order": inc.trigger.order if inc.trigger else None,
                "header_missing": inc.header_missing,
            },
            "evidence": [text for _, text in inc.evidence if not text.startswith("[")][:40],
        }


def _victim_adj(f: Facts) -> int | None:
    if f.victim.oom_score_adj is not None:
        return f.victim.oom_score_adj
    return f.victim_row.oom_score_adj if f.victim_row else None


# --- facts ---------------------------------------------------------------------------------------


def _scope(inc: Incident, oom_ref: KubeRef | None, task_ref: KubeRef | None) -> Scope | None:
    if inc.node_wide:
        return "node"
    oom, task = inc.oom_memcg, inc.task_memcg
    if oom is None:
        return None
    if oom == "/" and inc.constraint != "CONSTRAINT_MEMCG":
        return "node"
    if task is None or oom == task:
        if oom_ref is not None and oom_ref.level == "pod":
            return "pod"
        return "container" if oom_ref is None or oom_ref.level == "container" else "ancestor"
    if oom_ref is not None and oom_ref.level == "pod":
        return "pod"
    return "ancestor"


def _charged(inc: Incident) -> Charged:
    kmem = inc.counter("kmem")
    kernel_v1 = kmem.usage_bytes if kmem else None
    if not inc.memcg_stats:
        if inc.meminfo:
            mi = dict(inc.meminfo)
            anon = (mi.get("active_anon", 0) + mi.get("inactive_anon", 0)) * PAGE
            shmem = mi.get("shmem", 0) * PAGE
            file = max((mi.get("active_file", 0) + mi.get("inactive_file", 0)) * PAGE - shmem, 0)
            kern = (
                mi.get("slab_reclaimable", 0) + mi.get("slab_unreclaimable", 0) + mi.get("pagetables", 0)
            ) * PAGE
            return Charged(anon=max(anon - shmem, 0), file=file, shmem=shmem, kernel=kern)
        return Charged(kernel=kernel_v1)
    first = dict(inc.memcg_stats[0][1])
    if inc.stats_format == "v2" or ("anon" in first and "rss" not in first):
        shmem = first.get("shmem", 0)
        kernel = first.get("kernel", kernel_v1)  # 5.3..6.4 v1 prints these keys and a kmem: line
        if kernel is None:
            kernel = sum(
                first.get(k, 0) for k in ("kernel_stack", "pagetables", "percpu", "sock", "vmalloc", "slab")
            )
        return Charged(
            anon=first.get("anon"),
            file=max(first.get("file", 0) - shmem, 0),
            shmem=shmem,
            kernel=kernel,
            swap=first.get("swap"),
            dirty=first.get("file_dirty"),
        )
    if "total_rss" in first:
        stats = {k[6:]: v for k, v in first.items() if k.startswith("total_")}
    elif inc.stats_format == "v1-line":
        # One line per cgroup of the subtree, each with its own (local) numbers: sum them.
        stats = {}
        for _, kv in inc.memcg_stats:
            for k, v in kv:
                stats[k] = stats.get(k, 0) + v
    else:
        stats = first
    shmem_v = stats.get("shmem")
    cache = stats.get("cache")
    file_v = None if cache is None else max(cache - (shmem_v or 0), 0)
    return Charged(
        anon=stats.get("rss"),
        file=file_v,
        shmem=shmem_v,
        kernel=kernel_v1,
        swap=stats.get("swap"),
        dirty=stats.get("dirty"),
    )


def _dominant(c: Charged) -> Kind | None:
    present = [(c.get(k) or 0, k) for k in KINDS]
    best = max(present)
    return best[1] if best[0] > 0 else None


def _victim_row(inc: Incident) -> TaskRow | None:
    return next((t for t in inc.tasks if t.pid == inc.victim.pid), None)


def _survival(
    inc: Incident, table_is_container: bool, row: TaskRow | None
) -> tuple[bool | None, tuple[TaskRow, ...]]:
    """Did the victim's container live on? True when other tasks of it remained (a child was killed)."""
    if inc.group_kill:
        return False, ()
    killed = {v.pid for v in inc.victims}
    if inc.selected_pid is not None and inc.selected_pid not in killed:
        # ≤5.0: the kernel chose N and killed M. N in the task table (processes only): M was its
        # child and N lives on. N not in it: N was a thread of a process; judge by the table below.
        if not inc.tasks:
            return None, ()
        alive = tuple(t for t in inc.tasks if t.pid == inc.selected_pid)
        if alive:
            return True, alive
    if not inc.tasks:
        return None, ()
    # The pause container's process is never the workload; it does not keep a container alive.
    others = tuple(t for t in inc.tasks if t.pid not in killed and t.name != "pause")
    if not table_is_container:
        # The table lists the whole OOM cgroup, other containers included: only "alone" is sure.
        return (False, ()) if not others else (None, ())
    if not others:
        return False, ()
    # The container's first process (its PID 1) is the oldest: if it was killed the container dies.
    victim_pid = inc.victim.pid
    older = tuple(t for t in others if t.pid < victim_pid)
    if row is not None and not older:
        return False, others
    return True, others


def _score_adj_choice(inc: Incident, row: TaskRow | None) -> tuple[bool, TaskRow | None]:
    if row is None or row.oom_score_adj is None:
        return False, None
    bigger = [
        t
        for t in inc.tasks
        if t.pid != row.pid
        and t.oom_score_adj is not None
        and t.oom_score_adj != -1000
        and t.badness_pages > row.badness_pages
        and t.oom_score_adj < row.oom_score_adj
    ]
    if not bigger:
        return False, None
    return True, max(bigger, key=lambda t: t.badness_pages)


def _counter_hit(inc: Incident) -> MemcgCounter | None:
    """The ``memory:`` line, or ``memory+swap:`` when that one had less headroom (it failed first)."""
    mem, memsw = inc.counter("memory"), inc.counter("memory+swap")
    if (
        mem is not None
        and memsw is not None
        and memsw.limit_bytes < UNLIMITED
        and memsw.limit_bytes - memsw.usage_bytes < mem.limit_bytes - mem.usage_bytes
    ):
        return memsw
    return mem


def _limit_level(inc: Incident, scope: Scope | None, oom_ref: KubeRef | None) -> str | None:
    if scope == "node":
        return "node"
    if oom_ref is not None:
        return oom_ref.level
    return "other" if inc.oom_memcg else None


def _victim_rss(v: Victim) -> int:
    return sum(x or 0 for x in (v.anon_rss_bytes, v.file_rss_bytes, v.shmem_rss_bytes))


def facts(
    incident: Incident, *, arena_mappings: int | None = None, aftermath: Aftermath | None = None
) -> Facts:
    oom_ref = parse_cgroup_path(incident.oom_memcg) if incident.oom_memcg else None
    task_ref = parse_cgroup_path(incident.task_memcg) if incident.task_memcg else None
    scope = _scope(incident, oom_ref, task_ref)
    level = _limit_level(incident, scope, oom_ref)
    mem = _counter_hit(incident)
    limit: int | None = None
    usage: int | None = None
    if mem is not None and scope != "node":
        limit = mem.limit_bytes if mem.limit_bytes < UNLIMITED else None
        usage = mem.usage_bytes
    elif scope == "node":
        ram = dict(incident.meminfo).get("totalram_pages")
        limit = ram * PAGE if ram else None
    charged = _charged(incident)
    row = _victim_row(incident)
    verdict: PodVerdict | None = None
    kernel_limit = incident.constraint is None or incident.constraint in KNOWN_CONSTRAINTS
    if scope == "pod" and oom_ref is not None and oom_ref.level == "pod" and kernel_limit:
        verdict = judge_pod(
            limit,
            task_ref.container_id if task_ref is not None else None,
            aftermath.pod if aftermath is not None else None,
            _victim_rss(incident.victim),
        )
        if verdict.container_level:
            scope = "container"
    table_is_container = (oom_ref is not None and oom_ref.level == "container") or (
        oom_ref is None and scope == "container"
    )
    survived, survivors = _survival(incident, table_is_container, row)
    live = aftermath is not None and aftermath.container_survived is not None
    if live and aftermath is not None:
        survived = aftermath.container_survived
    by_adj, bigger = _score_adj_choice(incident, row)
    differs = incident.selected_pid is not None and incident.selected_pid != incident.victim.pid
    free = dict(incident.meminfo).get("free")
    return Facts(
        incident=incident,
        victim=incident.victim,
        scope=scope,
        oom_ref=oom_ref,
        task_ref=task_ref,
        limit_bytes=limit,
        usage_bytes=usage,
        charged=charged,
        dominant=_dominant(charged),
        container_survived=survived,
        survivors=survivors,
        chosen_by_oom_score_adj=by_adj,
        bigger=bigger,
        victim_row=row,
        child_of_selected=differs and any(t.pid == incident.selected_pid for t in incident.tasks),
        thread_or_child=differs and not incident.tasks,
        node_free_bytes=free * PAGE if free is not None and scope == "node" else None,
        arena_mappings=arena_mappings,
        limit_counter=mem.name if mem is not None and scope != "node" else None,
        limit_level=level,
        pod_verdict=verdict,
        survival_live=live,
    )


# --- wording -------------------------------------------------------------------------------------


def _who(f: Facts) -> str:
    v = f.victim
    if v.comm == "?":  # a kill line cut short and no task table to name it
        return f"pid {v.pid} (its name is not in this log)"
    return f"{v.comm} (pid {v.pid})"


def _cgroup_name(ref: KubeRef | None, path: str | None) -> str:
    if ref is not None and ref.level == "container" and ref.container_id:
        return f"container {ref.container_id[:12]} of pod {ref.pod_uid}"
    if ref is not None and ref.level == "pod":
        return f"pod {ref.pod_uid}"
    if ref is not None:
        return f"the {ref.level} cgroup {path}"
    return f"cgroup {path}" if path else "an unnamed cgroup"


def _headline(f: Facts) -> str:
    inc = f.incident
    limit = prose_bytes(f.limit_bytes) if f.limit_bytes is not None else "unknown size (not in this log)"
    if f.policy_kill:
        where = _cgroup_name(f.oom_ref, inc.oom_memcg) if inc.oom_memcg else "the node"
        why = (
            "a BPF program started the OOM killer"
            if (inc.constraint or "").startswith("CONSTRAINT_BPF")
            else "something other than a memory limit started the OOM killer"
        )
        return f"{_who(f)} was killed in {where} because {why} (constraint {inc.constraint})" + (
            ": no memory limit was reached, the cgroup has none." if f.unlimited else "."
        )
    if f.manual:
        return (
            f"{_who(f)} was killed because the OOM killer was run by hand (SysRq-f, order=-1): no "
            "allocation failed and no limit was reached; the kernel killed the process with the "
            "highest OOM score on the machine."
        )
    if f.node_not_out_of_memory:
        return (
            f"{_who(f)} was killed by the node-wide OOM killer although the node was not out of memory: "
            f"{prose_bytes(f.node_free_bytes)} of {prose_bytes(f.limit_bytes)} of RAM was free."
        )
    if f.scope == "node" and not inc.meminfo:
        return (
            f"{_who(f)} was killed by the node-wide OOM killer: no cgroup limit was hit, the kernel "
            "picked the process with the highest OOM score on the machine."
        )
    if f.scope == "node":
        ram = f" ({prose_bytes(f.limit_bytes)} of RAM)" if f.limit_bytes else ""
        return (
            f"{_who(f)} was killed because the whole node ran out of memory{ram}: no cgroup limit was hit, "
            "the kernel picked the process with the highest OOM score on the machine."
        )
    where = _cgroup_name(f.oom_ref, inc.oom_memcg)
    lim = "memory+swap limit" if f.memsw else "limit"
    victim_in = _cgroup_name(f.task_ref, inc.task_memcg)
    if f.via_pod:
        return _via_pod_headline(f, limit)
    if f.scope == "container":
        return (
            f"{_who(f)} was killed because {where} reached its own "
            f"{lim if f.memsw else 'memory limit'} of {limit}."
        )
    if f.scope == "pod":
        why = _POD_WHY[f.pod_verdict.judgement if f.pod_verdict else "unknown"]
        return (
            f"{_who(f)} in {victim_in} was killed because the pod-level {lim} of {limit} was reached "
            f"({where}): {why}"
        )
    if f.scope == "ancestor" and f.oom_ref is not None and f.oom_ref.level == "kubepods":
        return (
            f"{_who(f)} in {victim_in} was killed because all pods on this node together reached the "
            f"{lim} of {limit} on {inc.oom_memcg}, the node allocatable limit: the kubelet sets it to the "
            "node's capacity minus kube-reserved and system-reserved, so no pod's or container's own "
            "limit was hit."
        )
    if f.scope == "ancestor" and f.oom_ref is not None and f.oom_ref.level == "qos":
        qos = f.oom_ref.qos or "QoS"
        share = (
            "N% of the Guaranteed pods' memory requests"
            if qos == "burstable"
            else "N% of the Guaranteed and Burstable pods' memory requests"
        )
        return (
            f"{_who(f)} in {victim_in} was killed because the {qos.capitalize()} pods together reached "
            f"the {lim} of {limit} on their QoS cgroup {inc.oom_memcg}, a QoS reservation: the kubelet "
            f"limits it only with --qos-reserved=memory=N% (feature gate QOSReserved), to node "
            f"allocatable minus {share}, so no pod's or container's own limit was hit."
        )
    if f.scope == "ancestor":
        return (
            f"{_who(f)} in {victim_in} was killed because an ancestor cgroup ({inc.oom_memcg}) reached "
            f"its {lim} of {limit}: a limit set above the victim's own cgroup, not on it, was hit."
        )
    if inc.header_missing:
        return f"{_who(f)} was killed by the kernel's OOM killer; this log does not say whose limit was hit."
    return f"{_who(f)} was killed by the kernel's OOM killer."


_POD_WHY = {
    "pod_level_resources": (
        "the Pod's own spec.resources.limits.memory (PodLevelResources) caps its containers together, "
        "and together they used more, even if each stayed under its own limit."
    ),
    "not_kubelet_sum": (
        "that limit is not the kubelet's sum of the container limits (a pod-level limit set some other "
        "way), and the containers together used more than it allows."
    ),
    "none_at_limit": (
        "the kubelet sets it to the sum of the container limits, but no container was at its own limit: "
        "the containers together with what is charged to the pod outside them (the sandbox) used more."
    ),
    "unknown": (
        "the kubelet sets a pod's limit to the sum of its containers' limits, and its sandbox (pause) is "
        "charged there too, so this is usually one container at its own limit (with one container, "
        "always); with several, they may instead have outgrown the pod together."
    ),
}
"""Why a kill at the pod cgroup is the pod's, per ``PodVerdict.judgement`` (``unknown``: no live host)."""


def _via_pod_headline(f: Facts, limit: str) -> str:
    m = f.responsible
    v = f.pod_verdict
    assert m is not None and v is not None
    name = f"container {m.name}" if m.name else f"container {m.container_id[:12]}"
    pod = f.oom_ref.pod_uid if f.oom_ref is not None else None
    victim_own = f.task_ref is not None and f.task_ref.container_id == m.container_id
    where = "its container" if victim_own else f"{_cgroup_name(f.task_ref, f.incident.task_memcg)}"
    sandbox = f"pause, {prose_bytes(v.sandbox_bytes)} here" if v.sandbox_bytes else "pause"
    return (
        f"{_who(f)} in {where} was killed because {name} of pod {pod} reached its own memory limit of "
        f"{prose_bytes(m.limit_bytes)}. The kernel reports the pod's limit of {limit}: the kubelet sets "
        f"it to the sum of the containers' limits, and the pod's sandbox ({sandbox}) is charged "
        "there too, so the pod's limit is reached a little before the container's own."
    )


def _breakdown(f: Facts) -> str:
    c = f.charged
    if c.total <= 0:
        return ""
    parts = [f"{prose_bytes(c.get(k))} {k}" for k in KINDS if c.get(k) is not None]
    dom = f.dominant
    share = (c.get(dom) or 0) * 100 // max(c.total, 1) if dom else 0
    where = "on the node" if f.scope == "node" else "charged to that cgroup"
    if f.node_free_bytes is not None:
        parts.append(f"{prose_bytes(f.node_free_bytes)} free")
    text = f"Memory {where}: {', '.join(parts)}."
    if dom is not None:
        of = "of the memory in use" if f.node_free_bytes is not None else "of it"
        text += f" {share}% {of} was {KIND_WORDS[dom]}."
    return text


def _victim_line(f: Facts) -> str:
    v = f.victim
    if v.anon_rss_bytes is None:
        return ""
    bits = [f"{prose_bytes(v.anon_rss_bytes)} anon"]
    if v.file_rss_bytes is not None:
        bits.append(f"{prose_bytes(v.file_rss_bytes)} file")
    if v.shmem_rss_bytes is not None:
        bits.append(f"{prose_bytes(v.shmem_rss_bytes)} shmem")
    adj = _victim_adj(f)
    adj_s = f", oom_score_adj {adj}" if adj is not None else ""
    return f"The victim held {', '.join(bits)} resident{adj_s}."


@dataclass(frozen=True, slots=True)
class Rule:
    """One diagnosis rule: when ``applies(facts)``, add ``say(facts)`` and maybe ``advise(facts)``."""

    name: str
    applies: Callable[[Facts], bool]
    say: Callable[[Facts], str]
    advise: Callable[[Facts], str] | None = None


def _responsible_name(f: Facts) -> str:
    m = f.responsible
    if m is None:
        return "the container"
    return f"container {m.name}" if m.name else f"container {m.container_id[:12]}"


def _pod_advice(f: Facts) -> str:
    judgement = f.pod_verdict.judgement if f.pod_verdict is not None else "unknown"
    if judgement == "pod_level_resources":
        return "raise the Pod's spec.resources.limits.memory, or lower its containers' usage"
    if judgement == "unknown":
        return (
            "raise the memory limit of the container that was at its own limit (one container: its "
            "limit); the kubelet derives the pod's limit from the containers' limits"
        )
    if judgement == "not_kubelet_sum":
        return (
            "raise the pod's own limit (spec.resources.limits.memory with PodLevelResources, or whatever "
            "set it), or lower what its containers use together"
        )
    return (
        "raise the memory limits of the containers that grew (the pod's limit follows them), or "
        "lower what they use together"
    )


def _missing(f: Facts) -> str:
    """What a report without its start leaves unknown, in words."""
    inc = f.incident
    gone = []
    if f.limit_bytes is None:
        gone.append("the limit")
    if f.charged.total <= 0:
        gone.append("the memory breakdown")
    if not inc.tasks:
        gone.append("the task table")
    if len(gone) > 1:
        return ", ".join(gone[:-1]) + " and " + gone[-1]
    return gone[0] if gone else ""


def _are(subject: str) -> str:
    return "are" if " and " in subject else "is"


def _pct(part: int | None, whole: int) -> int:
    return (part or 0) * 100 // whole if whole > 0 else 0


RULES: tuple[Rule, ...] = (
    Rule(
        "child_killed",
        lambda f: f.container_survived is True,
        lambda f: (
            "Other processes of the container kept running"
            + (f" (e.g. {f.survivors[0].name}, pid {f.survivors[0].pid})" if f.survivors else "")
            + ": a child process was killed, not the container's main process, so Kubernetes will not "
            "report this kill (no OOMKilled status, no restart) and the container may now be half-broken."
            if f.kube
            else "Other processes in its cgroup kept running"
            + (f" (e.g. {f.survivors[0].name}, pid {f.survivors[0].pid})" if f.survivors else "")
            + ": a child process was killed, not the first one, so whatever started them may not notice."
        ),
        lambda f: (
            "make the main process notice its child's death (or run one process per container) "
            "so the container fails visibly"
        ),
    ),
    Rule(
        "container_died",
        lambda f: f.container_survived is False and not f.incident.group_kill,
        lambda f: (
            "It was the only (or the first) process of its container, so the container exits and "
            "Kubernetes reports OOMKilled."
            if f.kube
            else "It was the only (or the first) process in its cgroup, so what ran there is gone."
        ),
    ),
    Rule(
        "group_kill",
        lambda f: f.incident.group_kill,
        lambda f: (
            f"memory.oom.group is set on {f.incident.group_cgroup}, so the kernel killed its "
            f"{len(f.incident.victims)} processes together (all but those with oom_score_adj -1000)"
            + (
                ": Kubernetes 1.28+ on cgroup v2 sets this on every container, so one process over the "
                "limit takes the whole container down."
                if parse_cgroup_path(f.incident.group_cgroup or "") is not None
                else "."
            )
        ),
    ),
    Rule(
        "score_adj",
        lambda f: f.chosen_by_oom_score_adj and f.bigger is not None,
        lambda f: (
            f"oom_score_adj decided who died: {f.bigger.name} (pid {f.bigger.pid}) was bigger "  # type: ignore[union-attr]
            f"({prose_bytes(f.bigger.badness_pages * PAGE)} vs "  # type: ignore[union-attr]
        f"{prose_bytes(f.victim_row.badness_pages * PAGE)}) "  # type: ignore[union-attr]
            f"but its oom_score_adj {f.bigger.oom_score_adj} is lower than the victim's "  # type: ignore[union-attr]
            f"{f.victim_row.oom_score_adj}, so the smaller process was sacrificed."  # type: ignore[union-attr]
        ),
        lambda f: (
            "check the QoS class and oom_score_adj of the processes "
            + ("on this node " if f.scope == "node" else "sharing this limit ")
            + "(Kubernetes sets 1000 for BestEffort, -997 for Guaranteed)"
        ),
    ),
    Rule(
        "sacrifice_child",
        lambda f: f.child_of_selected,
        lambda f: (
            f"The kernel chose {f.incident.selected_comm} (pid {f.incident.selected_pid}, score "
            f"{f.incident.selected_score}) and killed its child {f.victim.comm} (pid {f.victim.pid}) "
            "instead (kernels before 5.1 sacrifice a child first)."
        ),
    ),
    Rule(
        "thread_or_child",
        lambda f: f.thread_or_child,
        lambda f: (
            f"The kernel chose {f.incident.selected_comm} (pid {f.incident.selected_pid}, score "
            f"{f.incident.selected_score}) but killed pid {f.victim.pid} ({f.victim.comm}): either a child "
            "process of it (kernels before 5.1 sacrifice a child first) or another thread of the same "
            "process. The task table is not in this log, so it is unknown which, and whether the "
            "chosen process lives on."
        ),
    ),
    Rule(
        "memsw",
        lambda f: f.memsw,
        lambda f: (
            "The memory+swap limit (memory.memsw.limit_in_bytes) was reached, not the memory limit"
            + (
                f" ({prose_bytes(mem.usage_bytes)} of {prose_bytes(mem.limit_bytes)} in memory)"
                if (mem := f.incident.counter("memory")) is not None and mem.limit_bytes < UNLIMITED
                else ""
            )
            + (f": {prose_bytes(f.charged.swap)} was swapped out and counts too." if f.charged.swap else ".")
        ),
        lambda f: "raise the memory+swap limit with the memory limit (docker --memory-swap), or swap less",
    ),
    Rule(
        "manual",
        lambda f: f.manual,
        lambda f: (
            "order=-1 marks the SysRq-f OOM: someone (an admin, a watchdog, a tool writing f to "
            "/proc/sysrq-trigger) asked the kernel to kill one process."
        ),
        lambda f: "find what triggers SysRq-f on this node; the memory figures are not the cause",
    ),
    Rule(
        "shmem",
        lambda f: not f.manual and (f.dominant == "shmem" or _pct(f.charged.shmem, f.charged.total) >= 30),
        lambda f: (
            f"{prose_bytes(f.charged.shmem)} was shmem/tmpfs: files in a memory-backed emptyDir or /dev/shm "
            "count against the limit and cannot be reclaimed without swap."
        ),
        lambda f: (
            "move the emptyDir off `medium: Memory` (or give it a sizeLimit) and delete files "
            "you no longer need from /dev/shm"
        ),
    ),
    Rule(
        "dirty_page_cache",
        lambda f: not f.manual and f.dominant == "file" and _pct(f.charged.dirty, f.charged.file or 0) >= 50,
        lambda f: (
            f"Page cache dominated and {prose_bytes(f.charged.dirty)} of it was dirty: written by the "
            "processes but not yet on disk. Dirty pages cannot be dropped until written back, so writes "
            "faster than the disk (or a slow network filesystem) filled the limit."
        ),
        lambda f: (
            "write less at once, or to a faster volume, or fsync as you go; a higher limit only buys time"
        ),
    ),
    Rule(
        "page_cache",
        lambda f: (
            f.dominant == "file"
            and not f.node_not_out_of_memory
            and not f.manual
            and _pct(f.charged.dirty, f.charged.file or 0) < 50
        ),
        lambda f: (
            "Page cache dominated. Clean page cache is reclaimable, so an OOM with mostly file pages means "
            "something pinned it: dirty pages waiting for slow writeback, mlocked or mapped files in use."
        ),
        lambda f: "look for heavy writes (dirty pages) or mmap'd files; a higher limit only buys time",
    ),
    Rule(
        "kernel",
        lambda f: (
            not f.node_not_out_of_memory
            and not f.manual
            and (f.dominant == "kernel" or _pct(f.charged.kernel, f.charged.total) >= 30)
        ),
        lambda f: (
            f"{prose_bytes(f.charged.kernel)} was kernel memory (slab: dentries/inodes, sockets, page "
            "tables): it counts against the limit but no process shows it in its RSS."
        ),
        lambda f: (
            "look for many open files, sockets or processes; on RHEL 7 kernels, kmem accounting "
            "switched on by runc leaks slab"
        ),
    ),
    Rule(
        "anon",
        lambda f: (
            f.dominant == "anon"
            and f.scope in ("container", "pod", "ancestor")
            and not f.policy_kill
            and not f.unlimited
        ),
        lambda f: "Anonymous memory (what the processes allocated) filled the limit.",
        lambda f: (
            _pod_advice(f)
            if f.scope == "pod"
            else f"raise the memory limit of {_responsible_name(f)} above its real peak, or cut its heap "
            "(for a JVM: -Xmx/MaxRAMPercentage leave room for off-heap memory); the kubelet raises the "
            "pod's limit with it"
            if f.via_pod
            else "lower the Burstable/BestEffort pods' memory use, or the kubelet's --qos-reserved "
            "memory percentage; give the pods memory limits that fit what the node has left"
            if f.oom_ref is not None and f.oom_ref.level == "qos"
            else "set memory requests to what the pods really use, so the scheduler stops packing more "
            "onto this node than it holds, and give every pod a limit; the kubelet's memory eviction "
            "threshold should act before this limit is reached"
            if f.oom_ref is not None and f.oom_ref.level == "kubepods"
            else f"raise the limit on {f.incident.oom_memcg}"
            if f.scope == "ancestor"
            else "raise the container's memory limit above its real peak, or cut its heap "
            "(for a JVM: -Xmx/MaxRAMPercentage leave room for off-heap memory)"
        ),
    ),
    Rule(
        "policy_kill",
        lambda f: f.policy_kill,
        lambda f: (
            f"The constraint {f.incident.constraint} is not one the kernel sets itself (NONE, CPUSET, "
            "MEMORY_POLICY, MEMCG): a user-space or BPF OOM policy chose this cgroup, typically on "
            "memory pressure (PSI), before any limit was hit."
        ),
        lambda f: "check the thresholds of the OOM policy (BPF program or daemon) that acts on this cgroup",
    ),
    Rule(
        "arenas",
        lambda f: (f.arena_mappings or 0) >= 8,
        lambda f: (
            f"{f.arena_mappings} glibc malloc arenas of 64 MiB were mapped in the victim: glibc makes up to "
            "8 per CPU core of the host, not of the container's quota."
        ),
        lambda f: "cap glibc arenas with MALLOC_ARENA_MAX=2 (or use jemalloc/tcmalloc)",
    ),
    Rule(
        "pagefault_oom",
        lambda f: f.scope == "node" and f.pagefault,
        lambda f: (
            "The OOM killer was started by a page fault (gfp_mask=0x0: pagefault_out_of_memory), not by a "
            "lack of free pages: an allocation failed elsewhere first, on cgroup v1 typically a container's "
            "kernel-memory (kmem) limit or memory limit, and the fault fell back to the node-wide OOM "
            "killer, which may pick any process on the node. Kernels from 5.16 no longer do this."
        ),
        lambda f: (
            "remove kernel-memory (kmem) limits from containers (docker --kernel-memory) and find the "
            "container whose allocations failed (its slab or charge failures come just before this report)"
        ),
    ),
    Rule(
        "node",
        lambda f: f.scope == "node" and not f.node_not_out_of_memory and not f.manual,
        lambda f: (
            "No cgroup limit protected the node: the sum of what runs there exceeded its RAM."
            if f.incident.meminfo
            else "Usually the processes on the node together needed more than its RAM; the report's "
            "Mem-Info is not in this log to confirm it (a page-fault OOM after a failed kernel-memory "
            "allocation prints the same kill line)."
        ),
        lambda f: (
            "set memory limits on every pod (and requests that match), reserve memory for the system "
            "(kubelet --system-reserved / --kube-reserved) and check for overcommitted nodes"
        ),
    ),
    Rule(
        "rate_limited",
        lambda f: f.incident.header_missing,
        lambda f: (
            "The start of the report (the `invoked oom-killer` line) is not in this log: the log starts "
            "mid-report, or the kernel rate-limited the report during an OOM storm"
            + (f", so {_missing(f)} {_are(_missing(f))} unknown." if _missing(f) else ".")
        ),
    ),
)


def diagnose(
    incident: Incident, *, arena_mappings: int | None = None, aftermath: Aftermath | None = None
) -> Diagnosis:
    """Explain ``incident``. ``arena_mappings``: 64 MiB glibc arena mappings counted in the victim's
    smaps by a live reader (only then is MALLOC_ARENA_MAX advised). ``aftermath``: what a live host
    read right after the kill (the pod's container limits, whether the container lives on)."""
    f = facts(incident, arena_mappings=arena_mappings, aftermath=aftermath)
    sentences = [_headline(f)]
    if f.usage_bytes is not None and f.limit_bytes is not None and f.scope != "node":
        sentences.append(f"Usage was {prose_bytes(f.usage_bytes)} of {prose_bytes(f.limit_bytes)}.")
    elif f.usage_bytes is not None and f.unlimited and not f.policy_kill:
        sentences.append(f"Usage was {prose_bytes(f.usage_bytes)}; this cgroup itself has no limit.")
    for s in (_breakdown(f), _victim_line(f)):
        if s:
            sentences.append(s)
    fired: list[str] = []
    advice: list[str] = []
    for rule in RULES:
        if rule.applies(f):
            fired.append(rule.name)
            sentences.append(rule.say(f))
            if rule.advise is not None:
                advice.append(rule.advise(f))
    if advice:
        sentences.append("Fix to consider: " + "; ".join(advice) + ".")
    return Diagnosis(facts=f, explanation=" ".join(sentences), advice=tuple(advice), rules=tuple(fired))
