"""Find the JVMs of a container and read their heap flags (parsing in ``oomsight.core.jvm``).

Cheap by construction: per pid only ``/proc/<pid>/stat`` is read (comm and start time), and
``cmdline``/``environ`` only for a process whose comm is ``java``, once per (pid, start time). A
process that exits meanwhile is skipped; ``environ`` that cannot be read (EACCES without ptrace read
access) leaves the command line alone to speak.

Two ways to find a container's processes, picked once:

- **in the host's pid namespace** (the CLI on a node, an agent with ``hostPID``): the container's
  ``cgroup.procs``, listed at first sight and then at most every ``rescan`` seconds;
- **in a pid namespace of its own** (the chart's agent: no ``hostPID``, the host's ``/proc`` mounted
  at ``<host root>/proc``): ``cgroup.procs`` lists only the tasks visible in the reader's namespace
  (``kernel/cgroup/cgroup-v1.c`` ``pidlist_array_load`` skips pid 0), i.e. none. Then every
  ``rescan`` seconds one pass over ``<host root>/proc`` reads each pid's ``stat``, and for ``java``
  processes their ``cgroup`` file, which names the container's cgroup by its leaf.

The namespace test: ``<host root>/proc/self`` resolves to the reader's pid *in the namespace that
procfs was mounted from*; it equals ``os.getpid()`` only when that is the reader's own.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from oomsight.core.jvm import (
    JvmFlags,
    jvm_flags,
    memory_cgroup_leaf,
    parse_cmdline,
    parse_environ,
    parse_stat_identity,
)
from oomsight.host.processes import read_cgroup_pids

JAVA_COMM = "java"
"""The launcher's executable name, which the kernel keeps as comm (``/proc/<pid>/comm``)."""
RESCAN_SECONDS = 60.0


def _read_bytes(path: str, limit: int = 1 << 20) -> bytes | None:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks: list[bytes] = []
        size = 0
        while size < limit and (chunk := os.read(fd, 65536)):
            chunks.append(chunk)
            size += len(chunk)
        return b"".join(chunks)
    except OSError:
        return None  # ESRCH: it exited after open
    finally:
        os.close(fd)


def same_pid_namespace(proc_root: str) -> bool:
    """Whether ``proc_root`` shows this process's own pid namespace (see the module doc)."""
    try:
        return int(os.readlink(f"{proc_root}/self")) == os.getpid()
    except (OSError, ValueError):
        return True


def _better(best: JvmFlags | None, flags: JvmFlags) -> bool:
    return best is None or (best.max_heap_bytes is None and flags.max_heap_bytes is not None)


class JvmScanner:
    """Per-container JVM heap flags, cached (see the module doc). Not thread-safe."""

    def __init__(
        self, proc_root: str = "/proc", rescan: float = RESCAN_SECONDS, by_cgroup_procs: bool | None = None
    ) -> None:
        self.proc_root = proc_root
        self.rescan = rescan
        self.by_cgroup_procs = same_pid_namespace(proc_root) if by_cgroup_procs is None else by_cgroup_procs
        self._containers: dict[str, tuple[float, JvmFlags | None]] = {}
        self._processes: dict[tuple[int, int], JvmFlags | None] = {}
        self._leaves: dict[str, JvmFlags] = {}
        self._leaves_at: float | None = None
        self.cmdlines_read = 0
        """How many java command lines were parsed (a measure of the cache working)."""

    def flags(self, key: str, cgroup_dir: str, now: float) -> JvmFlags | None:
        """The heap flags of the JVM in ``cgroup_dir`` (the one with an -Xmx, else the first found);
        None when it runs no JVM, or none with heap flags. ``key``: names the container (its path)."""
        if not self.by_cgroup_procs:
            if self._leaves_at is None or now - self._leaves_at >= self.rescan:
                self._leaves = self._scan_all()
                self._leaves_at = now
            return self._leaves.get(cgroup_dir.rstrip("/").rsplit("/", 1)[-1])
        cached = self._containers.get(key)
        if cached is not None and now - cached[0] < self.rescan:
            return cached[1]
        found = self._scan(read_cgroup_pids(cgroup_dir))
        self._containers[key] = (now, found)
        return found

    def _java(self, pid: int) -> tuple[int, int] | None:
        stat = _read_bytes(f"{self.proc_root}/{pid}/stat", 4096)
        ident = parse_stat_identity(stat.decode("utf-8", "replace")) if stat else None
        if ident is None or ident[0] != JAVA_COMM:
            return None
        key = (pid, ident[1])
        if key not in self._processes:
            self._processes[key] = self._read_jvm(pid)
        return key

    def _scan(self, pids: Iterable[int]) -> JvmFlags | None:
        best: JvmFlags | None = None
        for pid in pids:
            key = self._java(pid)
            flags = self._processes.get(key) if key else None
            if flags is not None and _better(best, flags):
                best = flags
        return best

    def _scan_all(self) -> dict[str, JvmFlags]:
        try:
            names = os.listdir(self.proc_root)
        except OSError:
            return {}
        leaves: dict[str, JvmFlags] = {}
        live: set[tuple[int, int]] = set()
        for name in names:
            if not name.isdigit():
                continue
            key = self._java(int(name))
            if key is None:
                continue
            live.add(key)
            flags = self._processes.get(key)
            raw = _read_bytes(f"{self.proc_root}/{name}/cgroup", 65536) if flags is not None else None
            leaf = memory_cgroup_leaf(raw.decode("utf-8", "replace")) if raw else None
            if flags is not None and leaf and _better(leaves.get(leaf), flags):
                leaves[leaf] = flags
        for k in [k for k in self._processes if k not in live]:
            del self._processes[k]  # exited: the full pass saw every live java process
        return leaves

    def _read_jvm(self, pid: int) -> JvmFlags | None:
        raw = _read_bytes(f"{self.proc_root}/{pid}/cmdline")
        if not raw:
            return None
        self.cmdlines_read += 1
        env = _read_bytes(f"{self.proc_root}/{pid}/environ")
        flags = jvm_flags(parse_cmdline(raw), parse_environ(env) if env else None)
        return None if flags.empty else flags

    def forget(self, live_keys: Iterable[str]) -> None:
        """Drop containers not in ``live_keys``; the per-process cache stays bounded."""
        live = set(live_keys)
        for k in [k for k in self._containers if k not in live]:
            del self._containers[k]
        if self.by_cgroup_procs and len(self._processes) > 4 * len(self._containers) + 64:
            self._processes.clear()  # re-read at the next scan, which is rare
