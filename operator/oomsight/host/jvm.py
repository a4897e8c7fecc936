"""Find the JVMs of a container and read their heap flags (parsing in ``oomsight.core.jvm``).

Cheap by construction: per container, its ``cgroup.procs`` is listed at first sight and then at most
every ``rescan`` seconds; per pid only ``/proc/<pid>/stat`` is read (comm and start time), and
``cmdline``/``environ`` only for a process whose comm is ``java``, once per (pid, start time). A
process that exits meanwhile is skipped; ``environ`` that cannot be read (EACCES without ptrace
read access) leaves the command line alone to speak.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from oomsight.core.jvm import JvmFlags, jvm_flags, parse_cmdline, parse_environ, parse_stat_identity
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


class JvmScanner:
    """Per-container JVM heap flags, cached (see the module doc). Not thread-safe."""

    def __init__(self, proc_root: str = "/proc", rescan: float = RESCAN_SECONDS) -> None:
        self.proc_root = proc_root
        self.rescan = rescan
        self._containers: dict[str, tuple[float, JvmFlags | None]] = {}
        self._processes: dict[tuple[int, int], JvmFlags | None] = {}
        self.cmdlines_read = 0
        """How many java command lines were parsed (a measure of the cache working)."""

    def flags(self, key: str, cgroup_dir: str, now: float) -> JvmFlags | None:
        """The heap flags of the JVM in ``cgroup_dir`` (the one with an -Xmx, else the first found);
        None when it runs no JVM, or none with heap flags. ``key``: the container's ID."""
        cached = self._containers.get(key)
        if cached is not None and now - cached[0] < self.rescan:
            return cached[1]
        found = self._scan(read_cgroup_pids(cgroup_dir))
        self._containers[key] = (now, found)
        return found

    def _scan(self, pids: Iterable[int]) -> JvmFlags | None:
        best: JvmFlags | None = None
        for pid in pids:
            stat = _read_bytes(f"{self.proc_root}/{pid}/stat", 4096)
            ident = parse_stat_identity(stat.decode("utf-8", "replace")) if stat else None
            if ident is None or ident[0] != JAVA_COMM:
                continue
            key = (pid, ident[1])
            if key not in self._processes:
                self._processes[key] = self._read_jvm(pid)
            flags = self._processes[key]
            if flags is not None and (best is None or (best.max_heap_bytes is None and flags.max_heap_bytes)):
                best = flags
        return best

    def _read_jvm(self, pid: int) -> JvmFlags | None:
        raw = _read_bytes(f"{self.proc_root}/{pid}/cmdline")
        if not raw:
            return None
        self.cmdlines_read += 1
        env = _read_bytes(f"{self.proc_root}/{pid}/environ")
        flags = jvm_flags(parse_cmdline(raw), parse_environ(env) if env else None)
        return None if flags.empty else flags

    def forget(self, live_keys: Iterable[str]) -> None:
        """Drop containers not in ``live_keys``, and process entries of pids no longer cached for any."""
        live = set(live_keys)
        for k in [k for k in self._containers if k not in live]:
            del self._containers[k]
        if len(self._processes) > 4 * max(1, len(self._containers)) + 64:
            self._processes.clear()  # bounded: re-read at the next scan, which is rare
