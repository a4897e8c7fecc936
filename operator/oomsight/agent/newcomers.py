"""Container cgroups made since the last sweep, brought into the OOM accounting when a kill needs them.

A kill line whose report the kernel rate-limited names the process, not its cgroup; the agent places
it by the OOM-kill counters of the container cgroups it accounts (``oomsight.core.oomcount``), which
are those the last sweep found. A container made since (a new Pod, or a restart: each restart is a
new cgroup) is not among them, so without this a storm in it waits for the next sweep (the interval,
plus the time the log gets to explain a counter's lead) and is then reported from the counter alone.

``Newcomers.adopt`` walks the hierarchy and adds the container cgroups the last sweep did not list.
Such a cgroup was made after that sweep, so its counter holds only kills since then: its account
starts from the kills the log already explained in it by name. A cgroup the last sweep listed is
never taken here (an unmatched one's counter may hold history the first sweep did not account).

The walk is as costly as a sweep, so it is made only when a Pod of this node changed since the last
sweep or walk (a new container comes with a Pod change; the rate-limited kill lines of processes
outside Kubernetes, common on a shared node, then cost nothing) and at most once a second.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from oomsight.host.cgroupfs import CgroupWalker

MIN_GAP_SECONDS = 1.0
"""At most one walk a second, however many kill lines find no cgroup."""


class Newcomers:
    """``swept`` after each sweep; ``adopt`` when a kill line without its report found no cgroup."""

    def __init__(self, walker: CgroupWalker, pod_changes: Callable[[], int]) -> None:
        self.walker = walker
        self.pod_changes = pod_changes
        """A count that moves whenever a Pod of this node is added, changed, removed or relisted."""
        self._listed: frozenset[str] = frozenset()
        """Container cgroups the last sweep listed, matched to a Pod or not."""
        self._mark: int | None = None
        """``pod_changes()`` as of the last sweep or walk; None before the first sweep."""
        self._last_walk = -MIN_GAP_SECONDS
        self.walks = 0

    def swept(self, mark: int, paths: Iterable[str]) -> None:
        """A sweep listed ``paths``; ``mark`` is ``pod_changes()`` read before its walk began."""
        self._listed = frozenset(paths)
        self._mark = mark

    def adopt(self, accounted: dict[str, int], explained: dict[str, int]) -> list[str]:
        """Add each container cgroup made since the last sweep to ``accounted``, counted from the
        kills ``explained`` holds for it (taken out of it). Returns the cgroups added."""
        now = time.monotonic()
        changes = self.pod_changes()
        if self._mark is None or changes == self._mark or now - self._last_walk < MIN_GAP_SECONDS:
            return []
        self._mark, self._last_walk = changes, now
        self.walks += 1
        added = []
        for e in self.walker.sweep().entries:
            if e.path in self._listed or e.path in accounted:
                continue
            if e.kube is None or e.kube.level != "container" or e.reading is None:
                continue
            if e.reading.oom_kills is None:
                continue  # no counter (v1 before 4.13): nothing to place by
            accounted[e.path] = explained.pop(e.path, 0)
            added.append(e.path)
        return added
