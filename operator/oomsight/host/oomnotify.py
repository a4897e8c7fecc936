"""Which container memory cgroups went OOM lately, told by the kernel rather than found by reading.

A kill line whose report the kernel rate-limited names only the process, so the agent looks for the
cgroup whose OOM-kill counter moved (``oomsight.core.oomcount``): one file per accounted container,
for every such line. On a shared node most such lines are other processes' (a flood outside
Kubernetes), and those reads were most of the agent's CPU there. cgroup v1 tells which memcgs went
OOM: an eventfd registered on ``memory.oom_control`` through ``cgroup.event_control``
(Documentation/admin-guide/cgroup-v1/memory.rst, "OOM Control") is signalled by
``mem_cgroup_oom_notify`` for the memcg that hit its limit and every memcg below it, before the
kill (``memcg1_oom_prepare``, mm/memcontrol-v1.c), and also when the cgroup is removed. A kill at
a container's own limit, its pod's, or kubepods' (node allocatable) thus signals the container's
eventfd; a global OOM (``Out of memory:``, no memcg at its limit) signals none.

v2 has no such registration (``memory.events`` is watched with inotify instead, not done here):
``OomNotifier.open`` gives None there, and every counter is read as before.
"""

from __future__ import annotations

import contextlib
import os
import select
import time
from collections.abc import Iterable

from oomsight.host.cgroupfs import CgroupLayout, fd_budget


class OomNotifier:
    """One eventfd per watched cgroup, all in one epoll; ``fired`` drains them without blocking."""

    def __init__(self, memory_root: str) -> None:
        self._root = memory_root
        self._ep = select.epoll()
        self._fd: dict[str, int] = {}
        self._path: dict[int, str] = {}
        self._last: dict[str, float] = {}
        """Per watched path: monotonic time its eventfd last fired."""
        self._since: dict[str, float] = {}
        """Per watched path: monotonic time it was registered (it tells nothing of OOMs before)."""
        self._budget = fd_budget(4)  # a quarter: the walker keeps files open too
        self.failed = 0
        """Registrations the kernel refused (e.g. a cgroup removed meanwhile); such paths stay unwatched."""

    @classmethod
    def open(cls, layout: CgroupLayout) -> OomNotifier | None:
        """A notifier for a v1 memory hierarchy; None on v2 (no ``cgroup.event_control``)."""
        if layout.memory_version != "v1" or not hasattr(os, "eventfd"):
            return None
        return cls(str(layout.memory_root))

    def watch(self, paths: Iterable[str]) -> None:
        """Watch exactly ``paths`` (relative to the hierarchy root): new ones added, gone ones dropped."""
        want = set(paths)
        for path in [p for p in self._fd if p not in want]:
            self._drop(path)
        for path in want:
            if path not in self._fd and len(self._fd) < self._budget:
                self._add(path)

    def watched(self, path: str) -> bool:
        return path in self._fd

    def may_have_oomed(self, paths: Iterable[str], since: float) -> list[str]:
        """Those of ``paths`` that went OOM at or after ``since`` (monotonic; seen when the pending
        signals are drained, so never later than it happened), or that are not watched, or were
        watched only after ``since`` (an OOM before the registration signalled nothing: a storm's
        kill in a container the sweep had just begun to watch was dropped so, bench/peers.py)."""
        self._drain()
        last, watched_since = self._last, self._since
        return [
            p
            for p in paths
            if p not in self._fd or watched_since[p] > since or last.get(p, float("-inf")) >= since
        ]

    def oomed_since(self, path: str, since: float) -> bool:
        """Whether ``path`` is watched and went OOM after ``since`` as far as the signals drained by
        then tell (a signal still pending at ``since`` counts as later: call ``drain`` first)."""
        self._drain()
        return path in self._fd and self._last.get(path, float("-inf")) > since

    def drain(self) -> None:
        """Take the pending signals now, so that each is timed no later than this call."""
        self._drain()

    def close(self) -> None:
        for path in list(self._fd):
            self._drop(path)
        self._ep.close()

    def _drain(self) -> None:
        now = time.monotonic()
        for fd, _ in self._ep.poll(0):
            with contextlib.suppress(BlockingIOError):
                os.eventfd_read(fd)
            path = self._path.get(fd)
            if path is not None:
                self._last[path] = now

    def _add(self, path: str) -> None:
        directory = self._root + path
        efd = os.eventfd(0, os.EFD_CLOEXEC | os.EFD_NONBLOCK)
        try:
            ofd = os.open(f"{directory}/memory.oom_control", os.O_RDONLY | os.O_CLOEXEC)
            try:
                cfd = os.open(f"{directory}/cgroup.event_control", os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(cfd, f"{efd} {ofd}".encode())
                finally:
                    os.close(cfd)
            finally:
                os.close(ofd)  # the kernel keeps the eventfd, not this file
        except OSError:
            os.close(efd)
            self.failed += 1
            return
        self._ep.register(efd, select.EPOLLIN)
        self._since[path] = time.monotonic()
        self._fd[path] = efd
        self._path[efd] = path

    def _drop(self, path: str) -> None:
        efd = self._fd.pop(path)
        self._path.pop(efd, None)
        self._last.pop(path, None)
        self._since.pop(path, None)
        self._ep.unregister(efd)
        os.close(efd)
