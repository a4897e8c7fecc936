"""Read a node's kernel and cgroup facts under a host root (``/`` on a node, ``/host`` in a pod).

Every file is optional: one that is missing, unreadable or garbled makes its fact unknown and adds a
line to ``NodeFacts.errors``; only a host root with no cgroup filesystem at all stops the command
(``WrongHostRoot`` from ``detect_layout``, one line).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from oomsight.core.errors import ParseError
from oomsight.core.node import (
    MemoryCgroups,
    NodeFacts,
    PodSwap,
    dying_memcgs_v2,
    parse_cgroup_stat,
    parse_cmdline,
    parse_kernel_release,
    parse_meminfo,
    parse_overcommit,
    parse_pressure,
    parse_proc_cgroups,
    parse_thp_mode,
    pod_swap,
)
from oomsight.host.cgroupfs import CgroupLayout, CgroupWalker, detect_layout
from oomsight.host.errors import HostError, Vanished, WrongHostRoot, translate_oserror

T = TypeVar("T")

_MAX_READ = 1 << 20


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read(_MAX_READ).decode("utf-8", "replace")
    except OSError as err:
        raise translate_oserror(err, path) from err


class _Reader:
    """Reads files under the host root; failures become ``None`` plus one line in ``errors``."""

    def __init__(self, host_root: Path) -> None:
        self.root = str(host_root)
        self.errors: list[str] = []

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel.lstrip("/"))

    def parse(self, rel: str, parser: Callable[[str], T], *, optional: bool = False) -> T | None:
        """Parse ``rel`` (under the host root; an absolute path already under it is taken as is)."""
        path = rel if rel.startswith(self.root.rstrip("/") + "/") else self.path(rel)
        try:
            return parser(_read(path))
        except Vanished:
            if not optional:
                self.errors.append(f"{path} is missing")
            return None
        except HostError as err:
            self.errors.append(str(err))
            return None
        except ParseError as err:
            self.errors.append(f"{path}: {err}")
            return None


def count_live_cgroups(root: str) -> int:
    """Directories in a cgroup hierarchy, ``root`` included (as /proc/cgroups counts the root too).

    A directory removed during the walk is simply not counted.
    """
    n = 0
    stack = [root]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                n += 1
                for e in it:
                    try:
                        if e.is_dir(follow_symlinks=False):
                            stack.append(e.path)
                    except OSError:
                        continue
        except OSError:
            continue
    return n


def _int(text: str) -> int:
    s = text.strip()
    if not s.isdigit():
        raise ParseError(f"expected a number, got {s[:40]!r}", "")
    return int(s)


def _kmem_probe(r: _Reader, layout: CgroupLayout) -> tuple[int | None, bool | None]:
    """v1 kmem usage and slabinfo readability of ``kubepods`` (or the hierarchy root)."""
    if layout.memory_version != "v1":
        return None, None
    base = str(layout.memory_root) + (layout.kubepods or "")
    usage: int | None = None
    for attempt in (base, str(layout.memory_root)):
        base = attempt
        usage_path = os.path.join(base, "memory.kmem.usage_in_bytes")
        try:
            usage = _int(_read(usage_path))
            break
        except Vanished:
            if os.path.isdir(base):  # the file is missing (kernel without kmem files), not the cgroup
                r.errors.append(f"{usage_path} is missing")
                break
            continue  # kubepods went away since detection: read the hierarchy root instead
        except (HostError, ParseError) as err:
            r.errors.append(f"{usage_path}: {err}")
            break
    slab_path = os.path.join(base, "memory.kmem.slabinfo")
    readable: bool | None
    try:
        with open(slab_path, "rb") as f:
            f.read(4096)
        readable = True
    except FileNotFoundError:
        readable = None  # kernels built without CONFIG_SLUB_DEBUG / removed in 5.x+ v1
    except OSError:
        readable = False  # 3.10: EIO when kmem accounting was never activated in this cgroup
    return usage, readable


POD_SWAP_FILES = ("memory.current", "memory.max", "memory.stat", "memory.swap.current", "memory.swap.max")
"""What the swap check reads per container cgroup (v2 only; ``memory.current``/``stat`` make a reading)."""


def _pod_swap(r: _Reader, layout: CgroupLayout) -> PodSwap | None:
    """v2: every container cgroup's ``memory.max``, ``memory.swap.max`` and ``memory.swap.current``
    under the kubepods trees; None on v1, without kubepods, or without swap accounting."""
    if layout.memory_version != "v2" or layout.kubepods is None:
        return None
    try:
        with CgroupWalker(layout, POD_SWAP_FILES, keep_open=False) as walker:
            entries = walker.sweep().entries
    except HostError as err:
        r.errors.append(str(err))
        return None
    return pod_swap(
        (e.reading.limit_bytes, e.reading.swap_limit_bytes, e.reading.swap_usage_bytes)
        for e in entries
        if e.reading is not None and e.kube is not None and e.kube.level == "container"
    )


def read_node_facts(host_root: Path | str = Path("/")) -> NodeFacts:
    """Read everything ``oomsight.core.node.node_findings`` needs under ``host_root``.

    Raises ``WrongHostRoot`` (one line) when ``host_root`` has no cgroup filesystem or ``/proc``.
    """
    root = Path(host_root)
    layout = detect_layout(root)
    if not os.path.exists(os.path.join(str(root), "proc", "cgroups")):
        raise WrongHostRoot(
            f"no /proc under host root {root} ({os.path.join(str(root), 'proc', 'cgroups')} is missing)",
            "pass --host-root the directory where the host's / is mounted, with the host's /proc inside it "
            "(hostPID or a hostPath mount of /proc)",
            path=str(root),
        )
    r = _Reader(root)
    kernel = r.parse("proc/sys/kernel/osrelease", parse_kernel_release, optional=True) or r.parse(
        "proc/version", parse_kernel_release
    )
    cmdline = r.parse("proc/cmdline", parse_cmdline)
    subsys = r.parse("proc/cgroups", parse_proc_cgroups)
    counted = None
    if subsys is not None:
        mem = next((s for s in subsys if s.name == "memory"), None)
        counted = mem.num_cgroups if mem else None
    live = count_live_cgroups(str(layout.memory_root))
    dying: int | None
    if layout.memory_version == "v2":
        stat = r.parse(os.path.join(str(layout.memory_root), "cgroup.stat"), parse_cgroup_stat)
        dying = dying_memcgs_v2(stat) if stat is not None else None
    else:
        dying = max(counted - live, 0) if counted is not None else None
    kmem_usage, slab_readable = _kmem_probe(r, layout)
    meminfo = r.parse("proc/meminfo", parse_meminfo) or {}
    psi_path = r.path("proc/pressure/memory")
    psi_available = os.path.exists(psi_path)
    pressure = r.parse("proc/pressure/memory", parse_pressure) if psi_available else None
    return NodeFacts(
        kernel=kernel,
        cgroup_version=layout.version,
        memory_version=layout.memory_version,
        driver=layout.driver,
        cmdline=cmdline,
        memory_cgroups=MemoryCgroups(counted=counted, live=live, dying=dying),
        kmem_usage_bytes=kmem_usage,
        kmem_slabinfo_readable=slab_readable,
        swap_total_bytes=meminfo.get("SwapTotal"),
        swap_free_bytes=meminfo.get("SwapFree"),
        pod_swap=_pod_swap(r, layout),
        mem_total_bytes=meminfo.get("MemTotal"),
        thp=r.parse("sys/kernel/mm/transparent_hugepage/enabled", parse_thp_mode),
        overcommit=r.parse("proc/sys/vm/overcommit_memory", parse_overcommit),
        psi_available=psi_available,
        pressure=pressure,
        errors=tuple(r.errors),
    )
