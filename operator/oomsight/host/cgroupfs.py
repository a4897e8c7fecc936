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

import contextlib
import errno
import os
import resource
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from oomsight.core.errors import ParseError
from oomsight.core.kubepath import KubeRef, is_conmon, kubepods_root_driver, parse_cgroup_path
from oomsight.core.memory import (
    UNLIMITED,
    V1_FILES,
    V1_SWEEP_FILES,
    V2_FILES,
    EffectiveLimit,
    MemoryReading,
    oom_kill_count,
    parse_v1_limit,
    parse_v2_limit,
    reading_v1,
    reading_v2,
    tighter,
)
from oomsight.host.errors import (
    VANISHED_ERRNOS,
    HostAccessDenied,
    HostError,
    Vanished,
    WrongHostRoot,
    translate_oserror,
)

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
                    driver = kubepods_root_driver(e.name)
                    if driver is not None:
                        return driver, f"{rel}/{e.name}"
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


# --------------------------------------------------------------------------------------------- the walk


@dataclass(frozen=True, slots=True)
class CgroupEntry:
    """One memory cgroup found by a sweep: what it is, its reading, and the limit that applies to it.

    ``reading`` is None and ``error`` says why when a file of this cgroup could not be parsed.
    """

    path: str
    """Relative to the memory hierarchy's root, as the kernel prints it (``/kubepods/burstable/pod…/…``)."""
    kube: KubeRef | None
    """What the path says about its pod and container; None for a cgroup outside kubepods."""
    reading: MemoryReading | None
    limit: EffectiveLimit
    """The tightest limit from this cgroup up to the root, and the level it is set at."""
    error: str | None = None
    pids: tuple[int, ...] | None = None
    """The cgroup's own ``cgroup.procs``, when the sweep was asked for them."""


@dataclass(frozen=True, slots=True)
class Sweep:
    """One pass over the memory hierarchy."""

    layout: CgroupLayout
    entries: tuple[CgroupEntry, ...]
    vanished: int
    """Cgroups removed between listing and reading (skipped; normal on a busy node)."""
    errors: int
    """Cgroups whose files could not be parsed or read (listed with ``error``)."""


class _Gone(Exception):
    """The cgroup directory disappeared while being read."""


def _read_file(path: str, dir_fd: int | None = None) -> str | None:
    """The whole file, or None when it does not exist. Raises ``_Gone`` on ENODEV (removed cgroup).

    With ``dir_fd`` the name is opened relative to an open cgroup directory: one path lookup per
    cgroup instead of one per file, which is most of a sweep's cost.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dir_fd)
    except FileNotFoundError:
        return None
    try:
        data = os.read(fd, 65536)
        if len(data) == 65536:  # a file larger than one read: keep going
            chunks = [data]
            while chunk := os.read(fd, 65536):
                chunks.append(chunk)
            data = b"".join(chunks)
    except OSError as err:
        if err.errno in VANISHED_ERRNOS:
            raise _Gone from err
        if err.errno == errno.EOPNOTSUPP:
            return None  # PSI switched off at boot (psi=0): *.pressure refuses reads
        raise
    finally:
        os.close(fd)
    return data.decode("ascii", "replace")


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
_INTERFACE_PREFIXES = (
    "cgroup.", "memory.", "cpu.", "cpuset.", "cpuacct.", "io.", "blkio.", "pids.", "hugetlb.", "rdma.",
    "misc.", "irq.", "devices.", "freezer.", "net_cls.", "net_prio.", "perf_event.",
)
_INTERFACE_FILES = frozenset({"tasks", "notify_on_release", "release_agent"})


def _pread_all(fd: int) -> str:
    """Re-read a kept-open cgroup file from offset 0 (the kernel regenerates its text)."""
    data = os.pread(fd, 65536, 0)
    if len(data) == 65536:
        chunks = [data]
        while chunk := os.pread(fd, 65536, sum(len(c) for c in chunks)):
            chunks.append(chunk)
        data = b"".join(chunks)
    return data.decode("ascii", "replace")


def fd_budget(share: int = 2) -> int:
    """How many files one user may keep open: 1/``share`` of the soft RLIMIT_NOFILE headroom (64
    kept free), at most 16384. The walker takes half; the OOM notifier a quarter."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return 16384
    return max(0, min(16384, (soft - 64) // share))


class CgroupWalker:
    """Sweeps a node's memory hierarchy; keeps running totals of what it skipped, for metrics.

    ``files`` is the set of memory files read per cgroup: by default ``core.memory.V1_SWEEP_FILES``
    (v1) or ``V2_FILES`` (v2); pass ``V1_FILES`` for every v1 file the model parses.

    With ``keep_open`` (the default) the swept cgroups' files stay open between sweeps, within half
    of the soft RLIMIT_NOFILE headroom (at most 16384 fds); past that budget files are opened and
    closed at each sweep, which is correct but slower. ``close()`` (or ``with``) releases them.
    """

    def __init__(
        self, layout: CgroupLayout, files: Sequence[str] | None = None, keep_open: bool = True
    ) -> None:
        self.layout = layout
        self._root = str(layout.memory_root)
        self._v1 = layout.memory_version == "v1"
        if files is None:
            files = V1_SWEEP_FILES if self._v1 else V2_FILES
            if self._v1 and not self._root_use_hierarchy():
                files = (*files, "memory.use_hierarchy")
        self._files = tuple(files)
        self._limit_file = "memory.limit_in_bytes" if self._v1 else "memory.max"
        self._oom_file = "memory.oom_control" if self._v1 else "memory.events"
        self._oom_index = self._files.index(self._oom_file) if self._oom_file in self._files else None
        self.sweeps_total = 0
        self.errors_total = 0
        self.vanished_total = 0
        self.rediscover_every = 30
        """Sweeps between two walks of the whole hierarchy in search of ``kubepods`` trees; the sweeps
        in between list only the kubepods trees found last time (system services are not re-listed)."""
        self._kube_roots: tuple[str, ...] | None = None
        self._since_discovery = 0
        self.reuse_unchanged = True
        """Reuse last sweep's reading of a cgroup whose files read exactly the same (an idle one)."""
        self._eff: dict[str, EffectiveLimit] = {}
        self._eff_last: dict[str, tuple[EffectiveLimit, int | None, EffectiveLimit]] = {}
        """Per path: (parent's effective limit, own limit, result) as of the sweep that computed it."""
        # Open files of the cgroups read at every sweep, re-read with pread(…, 0): the kernel
        # regenerates a cgroup file's text on every read from offset 0 (seq_file), and keeping them
        # open saves the open/close, about half of a sweep's system time.
        self._open: dict[str, tuple[int, ...]] = {}
        self._last: dict[str, tuple[tuple[str, ...], MemoryReading]] = {}
        # What each path says about its pod, parsed once per path (pods and containers live long).
        self._refs: dict[str, KubeRef | None] = {}
        self._seen_refs: list[str] = []
        self._limit_fds: dict[str, int] = {}
        self._iface: set[str] = set()
        self._nfds = 0
        self._fd_budget = fd_budget() if keep_open else 0
        self._keep_listings = keep_open
        self._listed: dict[str, tuple[int, int, tuple[str, ...]]] = {}
        """Per directory walked: (inode, link count, child cgroup names) as of its last listing."""
        self._dir_fds: dict[str, int] = {}
        """Directories walked, kept open (within the fd budget) to ``fstat`` instead of ``stat``."""

    def close(self) -> None:
        """Close the files kept open between sweeps."""
        for directory in list(self._open):
            self._forget(directory)
        for rel in list(self._limit_fds):
            self._forget_limit(rel)
        for directory in list(self._dir_fds):
            self._forget_dir(directory)

    def __enter__(self) -> CgroupWalker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):
            self.close()

    def _root_use_hierarchy(self) -> bool:
        text = _read_file(f"{self._root}/memory.use_hierarchy")
        return text is None or text.strip() == "1"

    # -- public

    def sweep(self, include_all: bool = False, with_pids: bool = False, relist: bool = True) -> Sweep:
        """Every container cgroup (and with ``include_all`` every other memory cgroup), read once.

        A cgroup that vanishes mid-read is skipped and counted; one whose files do not parse is listed
        with its error and counted. Permission problems raise ``HostAccessDenied`` (one line).

        ``relist=False`` lists again only the directories whose link count (2 + child cgroups) or
        inode changed since the walker last listed them; the others' child cgroups are taken from
        that listing. A ``stat`` costs a quarter of a listing (the pod directories' listings were
        the largest part of a sweep's system time). A container removed and another made in the same
        directory between two sweeps leave its link count as it was: the caller passes ``relist``
        when something may have done that (the agent: a Pod of this node changed since its last
        sweep; each restart of a container changes its Pod). The discovery walk (``include_all``,
        or every ``rediscover_every`` sweeps) always lists.
        """
        entries: list[CgroupEntry] = []
        limits: dict[str, int | None] = {}
        self._eff = {}
        counts = [0, 0]  # vanished, errors
        roots = self._kube_roots
        listed: dict[str, tuple[int, int, tuple[str, ...]]] = {}
        if include_all or roots is None or self._since_discovery >= self.rediscover_every:
            found: list[str] = []
            self._walk("", None, include_all, with_pids, entries, limits, counts, found, True, listed)
            self._kube_roots = tuple(found)
            self._since_discovery = 0
        else:
            self._since_discovery += 1
            for root in roots:
                ref = parse_cgroup_path(root)
                if not self._walk(root, ref, False, with_pids, entries, limits, counts, [], relist, listed):
                    self._kube_roots = None  # the kubelet's tree moved: walk everything next time
        if self._keep_listings and not include_all:
            self._listed = listed
            for directory in [d for d in self._dir_fds if d not in listed]:
                self._forget_dir(directory)
        if len(self._refs) > 2 * len(self._seen_refs) + 64:
            keep = set(self._seen_refs)
            self._refs = {k: v for k, v in self._refs.items() if k in keep}
        if len(self._eff_last) > 2 * len(self._eff) + 64:
            self._eff_last = {k: v for k, v in self._eff_last.items() if k in self._eff}
        self._seen_refs = []
        for rel in [r for r in self._limit_fds if r not in limits]:
            self._forget_limit(rel)
        if self._open:
            seen = {self._root + e.path for e in entries}
            for directory in [d for d in self._open if d not in seen]:
                self._forget(directory)  # removed, or no longer swept: do not pin it
        self.sweeps_total += 1
        self.vanished_total += counts[0]
        self.errors_total += counts[1]
        return Sweep(layout=self.layout, entries=tuple(entries), vanished=counts[0], errors=counts[1])

    def read(self, path: str) -> MemoryReading:
        """One cgroup's reading with every file the model parses (``path`` relative to the root).

        Raises ``Vanished`` or ``ParseError``.
        """
        return self._read_path(path, every_file=True)

    def exists(self, path: str) -> bool:
        """Whether the cgroup ``path`` (relative to the root, as in a sweep) is still there."""
        return os.path.isdir(self._root + path)

    def oom_kills(self, path: str) -> int | None:
        """One cgroup's OOM-kill counter: only its counter file (v1 ``memory.oom_control``, v2
        ``memory.events``), through the sweep's kept-open file when there is one. A kill line without
        its report has every accounted container's counter read, so this is per kill: reading the
        sweep's other files too (``memory.stat`` above all) was most of the agent's CPU in a flood
        of other processes' kills (py-spy). None when the kernel keeps no counter.

        Raises ``Vanished`` or ``ParseError``.
        """
        directory = self._root + path
        name = self._oom_file
        fds = self._open.get(directory)
        try:
            if fds is not None and self._oom_index is not None and fds[self._oom_index] >= 0:
                text: str | None = _pread_all(fds[self._oom_index])
            else:
                text = _read_file(f"{directory}/{name}")
        except _Gone as err:
            raise Vanished(f"cgroup {path} vanished", path=directory) from err
        except OSError as err:
            if err.errno in VANISHED_ERRNOS:
                self._forget(directory)
                raise Vanished(f"cgroup {path} vanished", path=directory) from err
            raise translate_oserror(err, directory) from err
        if not text:  # absent, or a removed cgroup whose kept file reads empty
            if text is None and os.path.isdir(directory):
                return None
            raise Vanished(f"cgroup {path} vanished", path=directory)
        return oom_kill_count(name, text)

    # -- internals

    def _read_path(self, path: str, every_file: bool) -> MemoryReading:
        directory = self._root + path
        try:
            if not every_file:
                return self._read_cgroup(directory, False)[0]
            texts, _ = self._read_once(directory, V1_FILES if self._v1 else V2_FILES, False)
        except _Gone as err:
            raise Vanished(f"cgroup {path} vanished", path=directory) from err
        except OSError as err:
            raise translate_oserror(err, directory) from err
        return reading_v1(texts) if self._v1 else reading_v2(texts)

    def _read_cgroup(self, directory: str, with_pids: bool) -> tuple[MemoryReading, tuple[int, ...] | None]:
        """The cgroup's reading (and ``cgroup.procs``). Raises ``_Gone``, ``ParseError``, ``OSError``."""
        fds = self._open.get(directory)
        if fds is None and self._nfds + len(self._files) <= self._fd_budget:
            fds = self._keep(directory)
        if fds is None:
            texts, pids = self._read_once(directory, self._files, with_pids)
        else:
            texts = {}
            try:
                for name, fd in zip(self._files, fds, strict=True):
                    if fd >= 0:
                        try:
                            texts[name] = _pread_all(fd)
                        except OSError as err:
                            if err.errno != errno.EOPNOTSUPP:
                                raise
                            # PSI switched off at boot (psi=0): 5.x kernels keep memory.pressure
                            # but refuse reads with EOPNOTSUPP; read as absent.
            except OSError as err:
                if err.errno in VANISHED_ERRNOS:
                    self._forget(directory)
                    raise _Gone from err
                raise
            pids = self._pids(directory) if with_pids else None
            if not texts:
                raise _Gone
            # An idle cgroup's files read the same as last sweep: reuse that reading, skip the parse.
            key = tuple(texts.values())
            last = self._last.get(directory) if self.reuse_unchanged else None
            if last is not None and last[0] == key:
                return last[1], pids
            reading = reading_v1(texts) if self._v1 else reading_v2(texts)
            self._last[directory] = (key, reading)
            return reading, pids
        if not texts:
            raise _Gone  # a removed cgroup directory that was still open reads as empty
        return (reading_v1(texts) if self._v1 else reading_v2(texts)), pids

    def _read_once(
        self, directory: str, files: Sequence[str], with_pids: bool
    ) -> tuple[dict[str, str], tuple[int, ...] | None]:
        """Open, read and close ``files``, each relative to one directory fd."""
        try:
            dfd = os.open(directory, _DIR_FLAGS)
        except FileNotFoundError as err:
            raise _Gone from err
        try:
            texts: dict[str, str] = {}
            for name in files:
                text = _read_file(name, dfd)
                if text is not None:
                    texts[name] = text
            pids = None
            if with_pids:
                procs = _read_file("cgroup.procs", dfd)
                if procs is None:
                    raise _Gone
                pids = tuple(int(p) for p in procs.split())
        finally:
            os.close(dfd)
        return texts, pids

    def _keep(self, directory: str) -> tuple[int, ...]:
        """Open the sweep's files of ``directory`` and keep them (-1 for a file this kernel lacks)."""
        try:
            dfd = os.open(directory, _DIR_FLAGS)
        except FileNotFoundError as err:
            raise _Gone from err
        fds: list[int] = []
        try:
            for name in self._files:
                try:
                    fds.append(os.open(name, os.O_RDONLY | os.O_CLOEXEC, dir_fd=dfd))
                except FileNotFoundError:
                    fds.append(-1)
        except BaseException:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
            raise
        finally:
            os.close(dfd)
        kept = tuple(fds)
        self._open[directory] = kept
        self._nfds += sum(1 for fd in kept if fd >= 0)
        return kept

    def _forget(self, directory: str) -> None:
        self._last.pop(directory, None)
        for fd in self._open.pop(directory, ()):
            if fd >= 0:
                os.close(fd)
                self._nfds -= 1

    def _pids(self, directory: str) -> tuple[int, ...]:
        text = _read_file(f"{directory}/cgroup.procs")
        if text is None:
            raise _Gone
        return tuple(int(p) for p in text.split())

    def _own_limit(self, rel: str, limits: dict[str, int | None]) -> int | None:
        if rel in limits:
            return limits[rel]
        text = self._limit_text(rel)
        limit: int | None = None
        if text is not None:
            try:
                limit = (parse_v1_limit if self._v1 else parse_v2_limit)(self._limit_file, text)
            except ParseError:
                limit = None  # an unreadable ancestor limit is reported on the ancestor itself
        limits[rel] = limit
        return limit

    def _limit_text(self, rel: str) -> str | None:
        """An ancestor's own limit file, kept open between sweeps like the containers' files.

        None when it is absent (the v2 root) or the ancestor vanished (its children go with it).
        """
        path = f"{self._root}{rel}/{self._limit_file}"
        fd = self._limit_fds.get(rel)
        try:
            if fd is None and self._nfds < self._fd_budget:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                    self._nfds += 1
                except FileNotFoundError:
                    fd = -1
                self._limit_fds[rel] = fd
            if fd is None:
                return _read_file(path)
            return _pread_all(fd) if fd >= 0 else None
        except _Gone:
            return None
        except OSError as err:
            if err.errno in VANISHED_ERRNOS:
                self._forget_limit(rel)
                return None
            raise translate_oserror(err, path) from err

    def _forget_limit(self, rel: str) -> None:
        fd = self._limit_fds.pop(rel, -1)
        if fd >= 0:
            os.close(fd)
            self._nfds -= 1

    def _effective(self, rel: str, limits: dict[str, int | None]) -> EffectiveLimit:
        """Tightest limit from the root down to ``rel``, memoised per sweep for every ancestor."""
        cached = self._eff.get(rel)
        if cached is not None:
            return cached
        own = self._own_limit(rel, limits)
        parent = UNLIMITED if not rel else self._effective(rel.rpartition("/")[0], limits)
        # Limits rarely change: last sweep's answer stands while the parent's and the own limit do.
        last = self._eff_last.get(rel)
        if last is not None and last[0] is parent and last[1] == own:
            result = last[2]
        else:
            result = tighter(parent, rel or "/", own)
            self._eff_last[rel] = (parent, own, result)
        self._eff[rel] = result
        return result

    def _walk(
        self,
        rel: str,
        parent: KubeRef | None,
        include_all: bool,
        with_pids: bool,
        entries: list[CgroupEntry],
        limits: dict[str, int | None],
        counts: list[int],
        kube_roots: list[str],
        relist: bool = True,
        listed: dict[str, tuple[int, int, tuple[str, ...]]] | None = None,
    ) -> bool:
        """List ``rel`` and recurse; False when it is gone. Top ``kubepods`` dirs go to ``kube_roots``.

        ``listed`` (when the walker keeps listings) gets each directory's listing; with ``relist``
        False a directory whose inode and link count are unchanged is not listed again."""
        directory = self._root + rel
        try:
            names = self._children(directory, relist, listed)
        except OSError as err:
            if err.errno == errno.ENOTDIR:
                return True  # an interface file with a prefix this code does not know: not a cgroup
            if err.errno in VANISHED_ERRNOS:
                counts[0] += 1
                return False
            raise translate_oserror(err, directory, "list") from err
        refs = self._refs
        for name in names:
            child = f"{rel}/{name}"
            if parent is None and kubepods_root_driver(name):
                kube_roots.append(child)
            ref: KubeRef | None = None
            if parent is not None or "kubepods" in child:
                if child in refs:
                    ref = refs[child]
                else:
                    ref = refs[child] = parse_cgroup_path(child)
            self._seen_refs.append(child)
            container = ref is not None and ref.level == "container"
            if container or include_all:
                self._entry(child, ref, with_pids, entries, limits, counts)
            if not container or include_all:
                self._walk(
                    child, ref, include_all, with_pids, entries, limits, counts, kube_roots, relist, listed
                )
        return True

    def _children(
        self, directory: str, relist: bool, listed: dict[str, tuple[int, int, tuple[str, ...]]] | None
    ) -> tuple[str, ...]:
        """The child cgroups' names in ``directory``: listed, or last listing's while its inode and
        link count say nothing was added or removed (see ``sweep``). Raises ``OSError``."""
        st = None
        if listed is not None and self._keep_listings:
            last = self._listed.get(directory)
            fd = self._dir_fds.get(directory)
            # Through the directory kept open: no path lookup. Only for one that had child cgroups:
            # it cannot be removed before they are, which moves its link count, so a removed one is
            # then stat-ed by path below and counted as vanished as before (an open directory reads
            # as it was when removed).
            if not relist and last is not None and last[1] > 2 and fd is not None:
                fst = os.fstat(fd)
                if (fst.st_ino, fst.st_nlink) == last[:2]:
                    listed[directory] = last
                    return last[2]
            st = os.stat(directory)
            if not stat.S_ISDIR(st.st_mode):
                raise OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), directory)
            # btrfs and some others keep a directory's link count at 1: listed every time there.
            if not relist and last is not None and st.st_nlink >= 2 and last[:2] == (st.st_ino, st.st_nlink):
                listed[directory] = last
                self._keep_dir(directory, st.st_ino)
                return last[2]
        iface = self._iface
        names = []
        for name in os.listdir(directory):
            # Only the kernel creates files in cgroupfs, all named <controller>.<file> or one of a
            # few legacy names; everything else is a child cgroup (cheaper than stat-ing entries).
            # Every cgroup has the same files, so the names seen once are remembered in a set.
            if name in iface:
                continue
            if name.startswith(_INTERFACE_PREFIXES) or name in _INTERFACE_FILES:
                iface.add(name)
                continue
            if is_conmon(name):
                continue
            names.append(name)
        children = tuple(names)
        if st is not None and listed is not None:  # stat before listing: a change in between shows next time
            listed[directory] = (st.st_ino, st.st_nlink, children)
            self._keep_dir(directory, st.st_ino)
        return children

    def _keep_dir(self, directory: str, ino: int) -> None:
        """Keep ``directory`` open for the next sweep's ``fstat``, if it is the inode ``ino`` stat-ed."""
        fd = self._dir_fds.get(directory)
        if fd is not None:
            if os.fstat(fd).st_ino == ino:
                return
            self._forget_dir(directory)  # removed and made again: the open one is the old inode
        if self._nfds >= self._fd_budget:
            return
        try:
            fd = os.open(directory, _DIR_FLAGS)
        except OSError:
            return  # gone since the stat: the next sweep finds out
        self._dir_fds[directory] = fd
        self._nfds += 1

    def _forget_dir(self, directory: str) -> None:
        fd = self._dir_fds.pop(directory, -1)
        if fd >= 0:
            os.close(fd)
            self._nfds -= 1

    def _entry(
        self,
        rel: str,
        ref: KubeRef | None,
        with_pids: bool,
        entries: list[CgroupEntry],
        limits: dict[str, int | None],
        counts: list[int],
    ) -> None:
        directory = self._root + rel
        try:
            reading, pids = self._read_cgroup(directory, with_pids)
        except _Gone:
            counts[0] += 1
            return
        except ParseError as err:
            counts[1] += 1
            entries.append(CgroupEntry(rel, ref, None, self._effective(rel, limits), error=str(err)))
            return
        except OSError as err:
            if err.errno in (errno.EACCES, errno.EPERM):
                raise translate_oserror(err, directory) from err
            if err.errno == errno.ENOTDIR:
                return  # an interface file with a prefix this code does not know: not a cgroup
            counts[1] += 1
            entries.append(
                CgroupEntry(rel, ref, None, self._effective(rel, limits), error=f"{rel}: {err.strerror}")
            )
            return
        limits[rel] = reading.limit_bytes
        entries.append(CgroupEntry(rel, ref, reading, self._effective(rel, limits), pids=pids))


def sweep(host_root: Path | str = Path("/"), include_all: bool = False, with_pids: bool = False) -> Sweep:
    """Detect the layout under ``host_root`` and sweep it once (see ``CgroupWalker.sweep``)."""
    with CgroupWalker(detect_layout(host_root), keep_open=False) as walker:
        return walker.sweep(include_all=include_all, with_pids=with_pids)
