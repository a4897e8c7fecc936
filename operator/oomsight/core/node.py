"""A node's kernel and cgroup facts, parsed from /proc text, and the checks that turn them into findings.

Pure: every function takes the text of a kernel file and returns frozen dataclasses; ``node_findings``
takes a ``NodeFacts`` (which ``oomsight.host.nodeinfo`` reads under a host root) and returns
``Finding``s, most urgent first. Files and where their formats come from:

- ``/proc/version`` and ``uname -r``: ``MAJOR.MINOR.PATCH[-EXTRA]``; RHEL/CentOS builds look like
  ``3.10.0-1062.4.1.el7.x86_64`` (the number after the first dash is Red Hat's build).
- ``/proc/cmdline``: space-separated ``key`` or ``key=value`` (Documentation/admin-guide/kernel-parameters).
- ``/proc/cgroups``: ``#subsys_name hierarchy num_cgroups enabled`` (kernel/cgroup/cgroup-v1.c,
  ``proc_cgroupstats_show``). ``num_cgroups`` is ``root->nr_cgrps``: it is decremented only when a
  cgroup is freed, so a removed cgroup whose pages are still charged (a *dying* cgroup) stays counted.
- ``/proc/meminfo``: ``Key:  N kB``.
- ``/sys/kernel/mm/transparent_hugepage/enabled``: ``always [madvise] never``, the brackets mark the mode.
- ``/proc/sys/vm/overcommit_memory``: 0 heuristic, 1 always, 2 never (Documentation/mm/overcommit-accounting).
- ``/proc/pressure/memory``: ``some avg10=0.00 avg60=0.00 avg300=0.00 total=N`` and a ``full`` line
  (Documentation/accounting/psi.rst; 4.20+, ``psi=1`` when built with CONFIG_PSI_DEFAULT_DISABLED).
- v2 container cgroups' ``memory.swap.max`` (a number or ``max``) and ``memory.swap.current``
  (Documentation/admin-guide/cgroup-v2.rst; absent without swap accounting, e.g. ``swapaccount=0``).
- v2 ``cgroup.stat``: ``nr_descendants``, ``nr_dying_descendants`` (4.14+) and, on recent kernels
  ("cgroup: Show # of subsystem CSSes in cgroup.stat", posted July 2024; present on 6.18),
  ``nr_subsys_<ss>`` / ``nr_dying_subsys_<ss>`` per controller (Documentation/admin-guide/cgroup-v2.rst).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from oomsight.core.errors import ParseError
from oomsight.core.findings import Finding, evidence, sort_findings
from oomsight.core.memory import Pressure
from oomsight.core.memory import parse_pressure as parse_memory_pressure
from oomsight.core.quantity import prose_bytes

MEMCG_ID_MAX = 65535
"""Memory cgroup IDs are 16 bits: ``MEM_CGROUP_ID_MAX`` is ``USHRT_MAX`` (include/linux/memcontrol.h;
swap_cgroup records store the ID in an ``unsigned short``). When every ID is taken, ``mkdir`` of a
memory cgroup fails with ENOSPC ("no space left on device", kubernetes#61937, moby#29638), even though
only a few hundred directories may be visible: dying cgroups keep their IDs."""

RHEL7_KMEM_FIX_BUILD = 1075
"""Red Hat reported the kmem/memcg leak fixed in kernel-3.10.0-1075.el7 (bugzilla 1507149, as quoted in
https://github.com/docker/for-linux/issues/841). Reported, not verified here: treat as a lead."""

KIB = 1024

CgroupVersion = Literal["v1", "v2", "hybrid"]


# --------------------------------------------------------------------------------------------- parsers


@dataclass(frozen=True, slots=True)
class KernelVersion:
    """A kernel release string, split into what the checks compare."""

    release: str
    """As ``uname -r`` prints it: ``6.18.44-fc-v657``, ``3.10.0-1062.4.1.el7.x86_64``."""
    major: int
    minor: int
    patch: int
    rhel_build: int | None = None
    """Red Hat's build number (``1062`` in ``3.10.0-1062.4.1.el7``) for ``.elN`` kernels, else None."""
    el: int | None = None
    """The RHEL major release from ``.elN`` (7 for ``el7``), else None."""

    def at_least(self, major: int, minor: int) -> bool:
        return (self.major, self.minor) >= (major, minor)

    def __str__(self) -> str:
        return self.release


_RELEASE = re.compile(r"(?P<maj>\d+)\.(?P<min>\d+)(?:\.(?P<patch>\d+))?(?P<extra>[-+~.\w]*)")
_EL = re.compile(r"^-(?P<build>\d+)(?:\.[\w]+)*?\.el(?P<el>\d+)")


def parse_kernel_release(text: str) -> KernelVersion:
    """Parse ``uname -r`` output or a whole ``/proc/version`` line ("Linux version 5.15.0-91-generic ...")."""
    s = text.strip()
    if s.startswith("Linux version "):
        s = s[len("Linux version ") :]
    token = s.split()[0] if s.split() else ""
    m = _RELEASE.fullmatch(token)
    if not m:
        raise ParseError(
            f"kernel release {token or text.strip()!r} is not MAJOR.MINOR[.PATCH][-EXTRA]",
            "pass the output of `uname -r` or the text of /proc/version",
        )
    extra = m.group("extra") or ""
    build = el = None
    if em := _EL.match(extra):
        build, el = int(em.group("build")), int(em.group("el"))
    return KernelVersion(
        release=token,
        major=int(m.group("maj")),
        minor=int(m.group("min")),
        patch=int(m.group("patch") or 0),
        rhel_build=build,
        el=el,
    )


@dataclass(frozen=True, slots=True)
class Cmdline:
    """The kernel command line as (key, value) pairs; value None for a bare flag."""

    params: tuple[tuple[str, str | None], ...]

    def values(self, key: str) -> tuple[str | None, ...]:
        return tuple(v for k, v in self.params if k == key)

    def has(self, key: str, value: str | None = None) -> bool:
        vals = self.values(key)
        return bool(vals) if value is None else value in vals

    @property
    def nokmem(self) -> bool:
        """``cgroup.memory=nokmem`` (comma lists allowed: ``cgroup.memory=nosocket,nokmem``)."""
        return any(v and "nokmem" in v.split(",") for v in self.values("cgroup.memory"))


def parse_cmdline(text: str) -> Cmdline:
    """Parse ``/proc/cmdline``. Stops at ``--`` (what follows goes to init, not to the kernel)."""
    params: list[tuple[str, str | None]] = []
    for word in text.split():
        if word == "--":
            break
        key, sep, value = word.partition("=")
        params.append((key, value if sep else None))
    return Cmdline(tuple(params))


@dataclass(frozen=True, slots=True)
class CgroupSubsys:
    """One row of ``/proc/cgroups``."""

    name: str
    hierarchy: int
    """0 when the controller is on the v2 (unified) hierarchy or not mounted."""
    num_cgroups: int
    enabled: bool


def parse_proc_cgroups(text: str) -> tuple[CgroupSubsys, ...]:
    """Parse ``/proc/cgroups``; raise ``ParseError`` on a row that is not name + three integers."""
    rows: list[CgroupSubsys] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 4 or not all(p.isdigit() for p in parts[1:]):
            raise ParseError(
                f"/proc/cgroups line {n} is {line.strip()!r}, expected 'name hierarchy num_cgroups enabled'",
                "pass the unmodified text of /proc/cgroups",
            )
        rows.append(CgroupSubsys(parts[0], int(parts[1]), int(parts[2]), parts[3] == "1"))
    return tuple(rows)


def parse_meminfo(text: str) -> dict[str, int]:
    """``/proc/meminfo`` as ``{key: bytes}`` (``kB`` values scaled; ``HugePages_*`` counts kept as is)."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        key, sep, rest = line.partition(":")
        parts = rest.split()
        if not sep or not parts or not parts[0].isdigit():
            continue
        out[key.strip()] = int(parts[0]) * (KIB if len(parts) > 1 and parts[1] == "kB" else 1)
    return out


def parse_thp_mode(text: str) -> str:
    """The bracketed mode of ``transparent_hugepage/enabled`` (``always [madvise] never`` -> ``madvise``)."""
    m = re.search(r"\[(\w[\w+]*)\]", text)
    if not m:
        raise ParseError(
            f"transparent_hugepage/enabled is {text.strip()!r}, expected the mode in brackets",
            "pass the text of /sys/kernel/mm/transparent_hugepage/enabled",
        )
    return m.group(1)


def parse_overcommit(text: str) -> int:
    """``vm.overcommit_memory``: 0 (heuristic), 1 (always), 2 (never/strict)."""
    s = text.strip()
    if s not in ("0", "1", "2"):
        raise ParseError(
            f"vm.overcommit_memory is {s!r}, expected 0, 1 or 2", "pass /proc/sys/vm/overcommit_memory"
        )
    return int(s)


def parse_pressure(text: str) -> Pressure:
    """``/proc/pressure/memory`` (the same format as a v2 ``memory.pressure``; one parser for both)."""
    return parse_memory_pressure("/proc/pressure/memory", text)


def parse_cgroup_stat(text: str) -> dict[str, int]:
    """v2 ``cgroup.stat`` as ``{key: int}`` (``nr_descendants``, ``nr_dying_descendants``, ...)."""
    out: dict[str, int] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            raise ParseError(
                f"cgroup.stat line {n} is {line.strip()!r}, expected 'key N'", "pass cgroup.stat"
            )
        out[parts[0]] = int(parts[1])
    return out


def dying_memcgs_v2(stat: dict[str, int]) -> int | None:
    """Dying memory cgroups from the root ``cgroup.stat``.

    ``nr_dying_subsys_memory`` (recent kernels: memory cgroups only) when present, else
    ``nr_dying_descendants`` (all dying cgroups; an upper bound for memory)."""
    if "nr_dying_subsys_memory" in stat:
        return stat["nr_dying_subsys_memory"]
    return stat.get("nr_dying_descendants")


# --------------------------------------------------------------------------------------------- facts


@dataclass(frozen=True, slots=True)
class PodSwap:
    """cgroup v2: what the container cgroups under ``kubepods`` say about swap.

    FACTS (the kubelet's swap settings, KEP-2400 NodeSwap; https://kep.k8s.io/2400,
    https://kubernetes.io/docs/concepts/cluster-administration/swap-memory-management/,
    pkg/kubelet/kuberuntime/kuberuntime_container_linux.go ``swapConfigurationHelper``):

    - on cgroup v2 the kubelet passes ``memory.swap.max`` to the runtime for every container it starts
      (``LinuxContainerResources.Unified``); nothing at the pod, QoS or ``kubepods`` level;
    - ``NoSwap`` (added as the default in 1.30, KEP-2400 beta 2): ``memory.swap.max`` = 0 in every
      container;
    - ``LimitedSwap``: a Burstable container whose memory request differs from its limit gets
      ``request / node memory × node swap``; every other container (Guaranteed, BestEffort, request =
      limit, node-critical) gets 0;
    - a container started with no swap setting (a kubelet before NodeSwap or with the gate off, or
      ``UnlimitedSwap``, the default of 1.28 and 1.29 per kubernetes/website#42166, removed in
      1.30) keeps the kernel default ``max``: with swap on the node, its memory limit no longer
      means an OOM kill: at ``memory.max`` the kernel swaps its anonymous memory out instead (the
      container slows down), up to all of the node's swap.
    - cgroup v1 has no per-container swap limit the kubelet sets for NodeSwap (swap is v2 only,
      kubernetes#119427); these facts are read on v2 only.

    Sandbox (pause) cgroups sit next to the containers under the pod and look like them, but the
    kubelet sets no swap for them: containerd writes only ``cpu.shares`` into the pause container's
    spec (the pod's limits go into annotations; google/gvisor#13777 quotes such a spec), so they keep
    ``memory.max`` and ``memory.swap.max`` at ``max`` on every node. That is why ``max`` counts as a
    risk only together with a finite ``memory.max``, and why the behaviour is read from the others.
    """

    containers: int
    """Container cgroups with swap accounting (``memory.swap.current`` present)."""
    unlimited: int
    """Of those, ``memory.swap.max`` = ``max``."""
    unlimited_with_limit: int
    """Of the unlimited ones, those with a finite ``memory.max`` (a limit that will not OOM-kill)."""
    zero: int
    """``memory.swap.max`` = 0: the container cannot swap."""
    limited: int
    """``memory.swap.max`` > 0 and finite: LimitedSwap's share."""
    limited_bytes: int
    """Sum of the finite, non-zero ``memory.swap.max``."""
    used_bytes: int
    """Sum of ``memory.swap.current``: swapped out now."""

    @property
    def behaviour(self) -> str:
        """``unlimited`` (a container with a memory limit may swap without one, or no cgroup has any
        swap setting: a kubelet that sets none), else ``LimitedSwap`` (some have a share) or
        ``NoSwap``; ``none`` without container cgroups with swap accounting. Cgroups with neither a
        memory limit nor a swap setting (sandboxes) do not decide it."""
        if not self.containers:
            return "none"
        if self.unlimited_with_limit or not (self.zero or self.limited):
            return "unlimited"
        return "LimitedSwap" if self.limited else "NoSwap"


def pod_swap(containers: Iterable[tuple[int | None, int | None, int | None]]) -> PodSwap | None:
    """Sum up (``memory.max``, ``memory.swap.max``, ``memory.swap.current``) of container cgroups,
    None meaning ``max`` for the two limits and "no swap accounting" for ``swap.current`` (that
    container is not counted). None when no container had swap accounting."""
    n = unlimited = with_limit = zero = limited = limited_bytes = used = 0
    for mem_max, swap_max, swap_current in containers:
        if swap_current is None:
            continue
        n += 1
        used += swap_current
        if swap_max is None:
            unlimited += 1
            with_limit += mem_max is not None
        elif swap_max == 0:
            zero += 1
        else:
            limited += 1
            limited_bytes += swap_max
    if not n:
        return None
    return PodSwap(n, unlimited, with_limit, zero, limited, limited_bytes, used)


@dataclass(frozen=True, slots=True)
class MemoryCgroups:
    """Memory cgroups the kernel counts against those a walk of the hierarchy finds."""

    counted: int | None
    """``/proc/cgroups`` memory ``num_cgroups`` (v1; on v2 the whole unified tree), dying ones included."""
    live: int | None
    """Directories in the memory hierarchy, its root included."""
    dying: int | None = None
    """v2: from root ``cgroup.stat``; v1: ``counted - live`` when both are known."""

    @property
    def ids_used(self) -> int | None:
        if self.counted is not None:
            return self.counted
        if self.live is not None and self.dying is not None:
            return self.live + self.dying
        return None


@dataclass(frozen=True, slots=True)
class NodeFacts:
    """What ``oomsight.host.nodeinfo`` read on a node. None means unknown (see ``errors``)."""

    kernel: KernelVersion | None
    cgroup_version: CgroupVersion | None
    memory_version: Literal["v1", "v2"] | None
    driver: str | None
    cmdline: Cmdline | None
    memory_cgroups: MemoryCgroups
    kmem_usage_bytes: int | None = None
    """v1 ``memory.kmem.usage_in_bytes`` of ``kubepods`` (or of the hierarchy root without one)."""
    kmem_slabinfo_readable: bool | None = None
    """v1 ``memory.kmem.slabinfo`` of the same cgroup reads without error (3.10: kmem is active there)."""
    swap_total_bytes: int | None = None
    swap_free_bytes: int | None = None
    pod_swap: PodSwap | None = None
    """v2: the containers' ``memory.swap.max``/``swap.current`` under kubepods; None on v1 or when unknown."""
    mem_total_bytes: int | None = None
    thp: str | None = None
    overcommit: int | None = None
    psi_available: bool | None = None
    pressure: Pressure | None = None
    errors: tuple[str, ...] = ()
    """One line per file that could not be read or parsed; each made a fact unknown."""

    @property
    def kmem_accounting(self) -> bool | None:
        """Whether kernel memory is charged to memory cgroups; None when it cannot be told.

        - ``cgroup.memory=nokmem``: off (kernel/cgroup and mm/memcontrol.c ``cgroup_memory_nokmem``).
        - 4.6+: always on otherwise; v2 and v1 alike (mm/memcontrol.c, "mm: memcontrol: enable kmem
          accounting for all cgroups in the legacy hierarchy", v4.6).
        - older (RHEL 7's 3.10): only in cgroups where a kmem limit was once written (runc #1350 wrote
          1 then -1); seen as ``memory.kmem.usage_in_bytes`` > 0 or a readable ``memory.kmem.slabinfo``.
        """
        if self.cmdline is not None and self.cmdline.nokmem:
            return False
        if self.kernel is None:
            return None
        if self.kernel.at_least(4, 6):
            return True if self.cmdline is not None else None
        if (self.kmem_usage_bytes or 0) > 0 or self.kmem_slabinfo_readable:
            return True
        if self.kmem_usage_bytes == 0 and self.kmem_slabinfo_readable is False:
            return False
        return None


# --------------------------------------------------------------------------------------------- rules

DYING_INFO_MIN = 1
DYING_WARN_MIN = 500
DYING_WARN_RATIO = 2.0
ID_WARN_FRACTION = 0.5
ID_CRIT_FRACTION = 0.9
PSI_WARN_SOME_AVG60 = 10.0
PSI_CRIT_FULL_AVG10 = 10.0


def _kernel_findings(f: NodeFacts) -> list[Finding]:
    k = f.kernel
    out: list[Finding] = []
    if k is None:
        return out
    kmem = f.kmem_accounting
    if k.el == 7 and (k.major, k.minor) == (3, 10) and kmem is not False:
        ev = evidence(
            {
                "kernel": k.release,
                "rhel_build": k.rhel_build,
                "kmem_accounting": "unknown" if kmem is None else "on",
                "kmem_usage_bytes": f.kmem_usage_bytes,
                "nokmem": False if f.cmdline is None else f.cmdline.nokmem,
            }
        )
        fix = (
            "boot with cgroup.memory=nokmem (grubby --update-kernel=ALL --args=cgroup.memory=nokmem; "
            "reboot), or use runc/kubelet built with the nokmem tag"
        )
        reboot = "; a node already out of memcg IDs needs a reboot"
        if k.rhel_build is not None and k.rhel_build >= RHEL7_KMEM_FIX_BUILD:
            out.append(
                Finding(
                    "kmem-leak-kernel",
                    "info",
                    f"Kernel {k.release} is at or after build {RHEL7_KMEM_FIX_BUILD}.el7, where Red Hat "
                    "reported the kmem accounting leak of slab and memory-cgroup IDs fixed (reported, not "
                    "verified upstream).",
                    (*ev, ("source", "https://github.com/docker/for-linux/issues/841")),
                    "if `mkdir` of memory cgroups still fails with ENOSPC, " + fix + reboot,
                )
            )
        else:
            out.append(
                Finding(
                    "kmem-leak-kernel",
                    "critical" if kmem else "warning",
                    f"Kernel {k.release} is a RHEL/CentOS 7 3.10 kernel older than "
                    f"{RHEL7_KMEM_FIX_BUILD}.el7 with kmem accounting {'on' if kmem else 'possibly on'}: "
                    "it leaks slab and memory-cgroup "
                    f"IDs until new pods fail with 'no space left on device' at {MEMCG_ID_MAX} cgroups.",
                    (
                        *ev,
                        ("source", "https://github.com/kubernetes/kubernetes/issues/61937"),
                        ("source_runc", "https://github.com/opencontainers/runc/issues/1725"),
                    ),
                    fix + f", or upgrade to kernel 3.10.0-{RHEL7_KMEM_FIX_BUILD}.el7 or later" + reboot,
                )
            )
    if not k.at_least(4, 3):
        out.append(
            Finding(
                "kernel-old-memcg",
                "warning",
                f"Kernel {k.release} is older than 4.3: no cgroup v2 memory controller and no memory.events, "
                "no oom_kill counter in memory.oom_control (4.13), no PSI (4.20).",
                evidence({"kernel": k.release}),
                "upgrade the node's kernel (4.19 or later) before relying on memory limits and OOM reporting",
            )
        )
    return out


def _kmem_findings(f: NodeFacts) -> list[Finding]:
    kmem = f.kmem_accounting
    if not kmem or f.kernel is None:
        return []
    ev = evidence(
        {
            "kernel": f.kernel.release,
            "nokmem": False if f.cmdline is None else f.cmdline.nokmem,
            "kmem_usage_bytes": f.kmem_usage_bytes,
            "kmem_slabinfo_readable": f.kmem_slabinfo_readable,
        }
    )
    if f.kernel.at_least(4, 6):
        usage = f" ({f.kmem_usage_bytes / (1 << 20):.0f} MiB now)" if f.kmem_usage_bytes else ""
        return [
            Finding(
                "kmem-accounting-on",
                "info",
                f"Kernel memory (slab, stacks, page tables) is charged to containers{usage}: "
                "it counts toward their limits and working set, so a container can be OOM-killed "
                "by dentries or sockets.",
                ev,
                "size limits with headroom for kernel memory; cgroup.memory=nokmem turns the charging off "
                "node-wide (and with it the protection against a container exhausting slab)",
            )
        ]
    return [
        Finding(
            "kmem-accounting-on",
            "warning",
            f"Kernel memory accounting is active on {f.kernel.release} (kmem usage "
            f"{prose_bytes(f.kmem_usage_bytes)}): before 4.6 it is "
            "experimental, cannot reclaim slab and leaks memory cgroups.",
            ev,
            "boot with cgroup.memory=nokmem or use a runc built without kmem accounting",
        )
    ]


def _memcg_findings(f: NodeFacts) -> list[Finding]:
    """Dying memory cgroups and the memcg ID space.

    Thresholds:
    - ``memcg-id-limit`` warning at 50% of the 65535 IDs (half the space is gone: at tens of containers
      per hour the rest goes in days), critical at 90% (about 6,500 IDs left; each pod takes at least
      two, its own and its containers', so a busy node is hours from ENOSPC).
    - ``memcg-dying`` warning when dying cgroups outnumber twice the live ones and are at least 500 (a
      healthy node keeps a few hundred while their charged page cache is reclaimed; twice the live
      tree, sustained, is a leak or memory that is never reclaimed); info for any other dying count.
    """
    mc = f.memory_cgroups
    out: list[Finding] = []
    used = mc.ids_used
    ev = evidence(
        {
            "counted": mc.counted,
            "live": mc.live,
            "dying": mc.dying,
            "memcg_id_max": MEMCG_ID_MAX,
            "cgroup_version": f.cgroup_version,
        }
    )
    fix_leak = (
        "find what pins removed cgroups (page cache of deleted pods, kmem on old kernels: "
        "cgroup.memory=nokmem); `echo 1 > /proc/sys/vm/drop_caches` releases cached pages and lets "
        "dying cgroups go; a node at the limit needs a reboot"
    )
    if used is not None:
        frac = used / MEMCG_ID_MAX
        if frac >= ID_WARN_FRACTION:
            out.append(
                Finding(
                    "memcg-id-limit",
                    "critical" if frac >= ID_CRIT_FRACTION else "warning",
                    f"The kernel holds {used} memory cgroups, {frac:.0%} of the {MEMCG_ID_MAX} memcg ID "
                    f"limit ({MEMCG_ID_MAX - used} left); at the limit new pods fail with "
                    "'no space left on device'.",
                    ev,
                    fix_leak,
                )
            )
    dying = mc.dying
    if dying is not None and dying >= DYING_INFO_MIN:
        live = mc.live or 0
        bad = dying >= DYING_WARN_MIN and dying > DYING_WARN_RATIO * live
        out.append(
            Finding(
                "memcg-dying",
                "warning" if bad else "info",
                f"{dying} memory cgroups are removed but still held by the kernel (dying), against {live} "
                f"live ones" + ("; they keep memcg IDs and slow reclaim." if bad else "."),
                ev,
                fix_leak if bad else "",
            )
        )
    return out


SWAP_SOURCES = (
    ("source", "https://kep.k8s.io/2400"),
    ("source_docs", "https://kubernetes.io/docs/concepts/cluster-administration/swap-memory-management/"),
)


def _swap_findings(f: NodeFacts) -> list[Finding]:
    if f.swap_total_bytes is None:
        return []
    ev = evidence({"swap_total_bytes": f.swap_total_bytes, "swap_free_bytes": f.swap_free_bytes})
    if f.swap_total_bytes == 0:
        return [
            Finding(
                "swap-off",
                "info",
                "Swap is off: anonymous and shmem/tmpfs memory cannot be paged out, so a container at its "
                "limit is OOM-killed rather than slowed.",
                ev,
            )
        ]
    v1 = f.memory_version == "v1"
    ps = f.pod_swap if not v1 else None
    on = (
        f"Swap is on ({prose_bytes(f.swap_total_bytes)}, {prose_bytes(f.swap_free_bytes or 0)} free): "
        "the kubelet refuses to start unless failSwapOn=false"
    )
    if ps is None:
        what = (
            ", and only the NodeSwap feature (cgroup v2, LimitedSwap) lets Burstable pods use it"
            + ("; on cgroup v1 NodeSwap is not supported." if v1 else ".")
        )
    elif ps.behaviour == "NoSwap":
        what = (
            f"; {ps.zero} of the {ps.containers} container cgroups have memory.swap.max 0 (the kubelet's "
            "NoSwap), the others neither a memory limit nor a swap setting (sandboxes): pods cannot swap."
            if ps.unlimited
            else f"; every one of the {ps.containers} container cgroups has memory.swap.max 0 "
            "(the kubelet's NoSwap): pods cannot swap."
        )
    elif ps.behaviour == "LimitedSwap":
        what = (
            f"; {ps.limited} of the {ps.containers} container cgroups may swap, "
            f"{prose_bytes(ps.limited_bytes)} in all (the kubelet's LimitedSwap), "
            f"{prose_bytes(ps.used_bytes)} swapped out now: such a container is OOM-killed only when its "
            "swap share is full too."
        )
    else:
        what = f"; {ps.unlimited} of the {ps.containers} container cgroups may swap without a swap limit."
    out = [
        Finding(
            "swap-on",
            "warning" if v1 else "info",
            on + what,
            (*ev, *_pod_swap_evidence(ps)),
            "turn swap off (swapoff -a) or set failSwapOn=false with memorySwap.swapBehavior=LimitedSwap "
            "on a cgroup v2 node" if v1 or ps is None else "",
        )
    ]
    if ps is not None and ps.unlimited_with_limit:
        out.append(
            Finding(
                "swap-unlimited",
                "warning",
                f"{ps.unlimited_with_limit} of the {ps.containers} container cgroups have a memory limit "
                f"and memory.swap.max 'max' on a node with "
                f"{prose_bytes(f.swap_total_bytes)} of swap: at its memory limit such a container swaps "
                "instead of being OOM-killed (it slows down), and together they can fill the node's swap; "
                f"{prose_bytes(ps.used_bytes)} is swapped out now.",
                (*ev, *_pod_swap_evidence(ps), *SWAP_SOURCES),
                "run a kubelet ≥ 1.30 with memorySwap.swapBehavior NoSwap (its default) or LimitedSwap "
                "(it writes memory.swap.max for every container), or turn swap off (swapoff -a)",
            )
        )
    return out


def _pod_swap_evidence(ps: PodSwap | None) -> tuple[tuple[str, str], ...]:
    if ps is None:
        return ()
    return evidence(
        {
            "swap_behaviour": ps.behaviour,
            "containers": ps.containers,
            "swap_max_unlimited": ps.unlimited,
            "swap_max_unlimited_with_memory_limit": ps.unlimited_with_limit,
            "swap_max_zero": ps.zero,
            "swap_max_limited": ps.limited,
            "swap_max_limited_bytes": ps.limited_bytes,
            "swap_current_bytes": ps.used_bytes,
        }
    )


def _thp_findings(f: NodeFacts) -> list[Finding]:
    if f.thp != "always":
        return []
    return [
        Finding(
            "thp-always",
            "info",
            "Transparent hugepages are 'always': a process touching one byte of a 2 MiB region gets the "
            "whole huge page, which inflates RSS and the working set of sparse heaps (Go, JVM, Redis).",
            evidence({"thp_enabled": f.thp}),
            "set /sys/kernel/mm/transparent_hugepage/enabled to madvise (transparent_hugepage=madvise)",
        )
    ]


def _overcommit_findings(f: NodeFacts) -> list[Finding]:
    if f.overcommit == 2:
        return [
            Finding(
                "overcommit-never",
                "warning",
                "vm.overcommit_memory is 2 (strict): allocations fail with ENOMEM at the commit limit before "
                "any cgroup limit, so containers see malloc failures, not OOM kills.",
                evidence({"vm.overcommit_memory": 2}),
                "use vm.overcommit_memory=0 or 1 on Kubernetes nodes (the kubelet sets 1 when "
                "protectKernelDefaults is off)",
            )
        ]
    if f.overcommit == 1:
        return [
            Finding(
                "overcommit-always",
                "info",
                "vm.overcommit_memory is 1 (always): allocations never fail up front; memory limits are "
                "enforced only by the OOM killer.",
                evidence({"vm.overcommit_memory": 1}),
            )
        ]
    return []


def _psi_findings(f: NodeFacts) -> list[Finding]:
    if f.psi_available is False:
        return [
            Finding(
                "psi-unavailable",
                "info",
                "Pressure stall information (/proc/pressure/memory) is not available: memory stalls "
                "before an OOM kill cannot be measured.",
                evidence({"kernel": f.kernel.release if f.kernel else None}),
                "use a 4.20+ kernel with CONFIG_PSI and boot with psi=1 if it is built default-off",
            )
        ]
    p = f.pressure
    if p is None:
        return []
    full10 = p.full.avg10 if p.full else 0.0
    ev = evidence({"some_avg10": p.some.avg10, "some_avg60": p.some.avg60, "full_avg10": full10})
    if full10 >= PSI_CRIT_FULL_AVG10:
        sev: Literal["warning", "critical"] = "critical"
    elif p.some.avg60 >= PSI_WARN_SOME_AVG60:
        sev = "warning"
    else:
        return []
    return [
        Finding(
            "memory-pressure",
            sev,
            f"The node is stalling on memory: some tasks waited {p.some.avg60:.1f}% of the last minute, "
            f"all tasks {full10:.1f}% of the last 10 s.",
            ev,
            "find the containers under pressure (oomsight top); reduce their memory or add node memory",
        )
    ]


V1_ONLY_FINDINGS = frozenset({"kmem-leak-kernel", "kernel-old-memcg"})
"""Findings that cannot hold on a cgroup v2 host: a RHEL 7 3.10 kernel and a kernel before 4.3 have
no cgroup v2 memory controller."""
V2_ONLY_FINDINGS = frozenset({"swap-unlimited"})
"""Findings read from cgroup v2 files only (the containers' ``memory.swap.max``)."""


def node_findings(facts: NodeFacts) -> tuple[Finding, ...]:
    """Every node check, most urgent first."""
    out: list[Finding] = []
    for rule in (
        _kernel_findings,
        _kmem_findings,
        _memcg_findings,
        _swap_findings,
        _thp_findings,
        _overcommit_findings,
        _psi_findings,
    ):
        out += rule(facts)
    return sort_findings(out)
