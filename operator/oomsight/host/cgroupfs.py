"""The cgroup filesystem of a node: which layout it has, and every memory cgroup with its reading.

Layout detection looks at files, not at ``statfs`` (a pod sees the host's tree through a bind mount
at ``/host``, and files are what the walker will read anyway):

- v2 (unified): ``<root>/sys/fs/cgroup/cgroup.controllers`` exists and lists ``memory``.
- v1: ``<root>/sys/fs/cgroup/memory/memory.usage_in_bytes`` exists (the memory controller's mount).
- hybrid: v1 controllers plus a cgroup2 mount at ``<root>/sys/fs/cgroup/unified`` (systemd's hybrid
  mode). The memory controller still lives in v1 there unless the unified tree lists it.

The kubelet's cgroup driver shows in the names (pkg/kubelet/cm/cgroup_manager_linux.go): ``kubepods``
directories for cgroupfs, ``kubepods.slice`` for systemd.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from oomsight.host.errors import HostAccessDenied, HostError, WrongHostRoot, translate_oserror

LayoutVersion = Literal["v1", "v2", "hybrid"]
MemoryVersion = Literal["v1", "v2"]
Driver = Literal["cgroupfs", "systemd", "unknown"]

CGROUP_MOUNT = "sys/fs/cgroup"
_DRIVER_SEARCH_DEPTH = 6
"""kind nests kubepods under ``/system.slice/docker-<id>.scope/kubelet.slice/kubelet-kubepods.slice``."""
_DRIVER_SEARCH_DIRS = 2000


@dataclass(frozen=True, slots=True)
class CgroupLayout:
    """How cgroups are mounted under a host root."""

    host_root: Path
    version: LayoutVersion
    """``v1``, ``v2`` or ``hybrid`` (v1 controllers plus an unified cgroup2 mount)."""
    memory_version: MemoryVersion
    """The hierarchy the memory controller is in (``v1`` on a hybrid host, unless unified lists it)."""
    memory_root: Path
    """The memory hierarchy's mount: ``<root>/sys/fs/cgroup/memory`` (v1) or ``<root>/sys/fs/cgroup`` (v2)."""
    driver: Driver
    """The kubelet's cgroup driver as the names show it; ``unknown`` when no kubepods cgroup exists."""
    kubepods: str | None = None
    """The first ``kubepods``/``kubepods.slice`` cgroup found, relative to ``memory_root`` ("/kubepods")."""


def _exists(path: str) -> bool:
    try:
        os.stat(path)
    except FileNotFoundError:
        return False
    except PermissionError as err:
        raise translate_oserror(err, path, "stat") from err
    except OSError:
        return False
    return True


def _read_small(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError as err:
        raise translate_oserror(err, path) from err
    try:
        return os.read(fd, 4096).decode("ascii", "replace")
    except OSError as err:
        raise translate_oserror(err, path) from err
    finally:
        os.close(fd)


def _find_kubepods(memory_root: str) -> tuple[Driver, str | None]:
    """Breadth-first search for the kubelet's top cgroup, bounded in depth and in directories visited."""
    level = [""]
    seen = 0
    for _ in range(_DRIVER_SEARCH_DEPTH):
        nxt: list[str] = []
        for rel in level:
            try:
                entries = os.scandir(memory_root + rel)
            except OSError:
                continue
            with entries:
                for e in entries:
                    if not e.is_dir(follow_symlinks=False):
                        continue
                    if e.name == "kubepods":
                        return "cgroupfs", f"{rel}/{e.name}"
                    if e.name == "kubepods.slice":
                        return "systemd", f"{rel}/{e.name}"
                    nxt.append(f"{rel}/{e.name}")
                    seen += 1
            if seen > _DRIVER_SEARCH_DIRS:
                return "unknown", None
        level = nxt
    return "unknown", None


def detect_layout(host_root: Path | str = Path("/")) -> CgroupLayout:
    """Detect the cgroup layout under ``host_root`` (``/`` on a node, ``/host`` in a pod).

    Raises ``WrongHostRoot`` when no cgroup filesystem is there, ``HostAccessDenied`` when it cannot be
    read, ``HostError`` when cgroups are mounted but without a memory controller.
    """
    root = Path(host_root)
    base = os.path.join(str(root), CGROUP_MOUNT)
    if not os.path.isdir(str(root)):
        raise WrongHostRoot(
            f"host root {root} does not exist",
            "pass --host-root the directory where the host's / is mounted (/ on a node, /host in a pod)",
            path=str(root),
        )
    if not os.path.isdir(base):
        raise WrongHostRoot(
            f"no cgroup filesystem at {base}",
            "pass --host-root the directory where the host's / is mounted (/ on a node, /host in a pod), "
            "with the host's /sys/fs/cgroup inside it",
            path=base,
        )
    if not os.access(base, os.R_OK | os.X_OK):
        raise HostAccessDenied(
            f"permission denied to list {base}",
            "run as root, or mount the host's /sys/fs/cgroup read-only into the pod",
            path=base,
        )
    v1_memory = os.path.join(base, "memory")
    unified = os.path.join(base, "unified")
    version: LayoutVersion
    memory_version: MemoryVersion
    if _exists(os.path.join(base, "cgroup.controllers")):
        controllers = _read_small(os.path.join(base, "cgroup.controllers")).split()
        if "memory" not in controllers:
            raise HostError(
                f"cgroup v2 at {base} has no memory controller "
                f"(controllers: {' '.join(controllers) or 'none'})",
                "boot without cgroup_disable=memory so the kernel accounts memory per cgroup",
                path=base,
            )
        version, memory_version, memory_root = "v2", "v2", base
    elif _exists(os.path.join(v1_memory, "memory.usage_in_bytes")):
        memory_version, memory_root = "v1", v1_memory
        version = "hybrid" if _exists(os.path.join(unified, "cgroup.controllers")) else "v1"
    elif _exists(os.path.join(unified, "cgroup.controllers")) and "memory" in _read_small(
        os.path.join(unified, "cgroup.controllers")
    ).split():
        version, memory_version, memory_root = "hybrid", "v2", unified
    else:
        raise WrongHostRoot(
            f"no memory cgroup controller under {base} (neither cgroup v2 nor a v1 memory mount)",
            "pass --host-root the directory where the host's / is mounted, with /sys/fs/cgroup inside it",
            path=base,
        )
    driver, kubepods = _find_kubepods(memory_root)
    return CgroupLayout(
        host_root=root,
        version=version,
        memory_version=memory_version,
        memory_root=Path(memory_root),
        driver=driver,
        kubepods=kubepods,
    )
