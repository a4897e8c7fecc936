"""Place OOM kills the kernel logged without their report, using per-cgroup OOM-kill counters.

``oom_kill_process`` (mm/oom_kill.c) prints the report header and the ``oom-kill:`` summary line
under a rate limit (``oom_rs``: 10 per 5 s) but the ``Killed process`` line always; that line names
the process, not its cgroup. Each memory cgroup also counts its kills: v1 ``memory.oom_control``
``oom_kill`` (4.13+), v2 ``memory.events`` ``oom_kill`` (incremented right after the kill line,
``memcg_memory_event_mm(mm, MEMCG_OOM_KILL)``). A cgroup whose counter runs ahead of the kills
already placed in it holds the unreported ones.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import NamedTuple


class Lead(NamedTuple):
    """A container cgroup's OOM-kill counter found ahead of the kills accounted in it, by a sweep."""

    since: float
    """When the sweep found it (CLOCK_MONOTONIC seconds)."""
    counter: int
    """The counter the sweep read: kills up to this one happened before ``since``."""


def place_unreported(
    accounted: Mapping[str, int], counters: Mapping[str, int | None], n: int
) -> list[str | None]:
    """Assign ``n`` unreported kills, in order, to the cgroups whose counter exceeds ``accounted``.

    The cgroup with the largest surplus goes first (ties: the path, for a stable answer); a kill
    for which no cgroup has a surplus left gets None (it happened outside the cgroups we know).
    """
    surplus = {p: (counters.get(p) or 0) - a for p, a in accounted.items() if counters.get(p) is not None}
    out: list[str | None] = []
    for _ in range(n):
        best = min((p for p, k in surplus.items() if k > 0), key=lambda p: (-surplus[p], p), default=None)
        out.append(best)
        if best is not None:
            surplus[best] -= 1
    return out


def leading(accounted: Mapping[str, int], counters: Mapping[str, int | None]) -> list[str]:
    """The cgroups whose counter is ahead of their accounted kills: with two or more, which
    unreported kill line is whose is a guess (``place_unreported`` gets the counts right, not the
    lines: a line carries the victim's pid and sizes, not its cgroup)."""
    return [p for p, a in accounted.items() if (counters.get(p) or 0) > a]


def unexplained(
    counters: Mapping[str, int | None], reported: Mapping[str, int]
) -> dict[str, tuple[int, int]]:
    """The cgroups whose OOM-kill counter is ahead of the kills a log explains in them.

    ``counters``: each cgroup's own counter (kills since the cgroup was made; None where the kernel has
    none, before 4.13 on v1). ``reported``: kills whose report names the cgroup as the victim's
    (``task_memcg``; a group kill counts each victim). Returns ``{cgroup: (counted, reported)}`` for
    each cgroup with more counted than reported: their reports were rate-limited or overwritten.
    """
    out: dict[str, tuple[int, int]] = {}
    for path, counted in counters.items():
        if counted is not None and counted > reported.get(path, 0):
            out[path] = (counted, reported.get(path, 0))
    return out


def refused(
    accounted: Mapping[str, int], leads: Mapping[str, Lead], logged_at: float, active: Collection[str] = ()
) -> set[str]:
    """The cgroups a kill line without its report, logged at ``logged_at``, must not be placed in.

    ``accounted``: kills accounted per cgroup now; ``leads``: the counters sweeps found ahead of it;
    ``active``: cgroups known to have gone OOM again since their lead was found. A lead found before
    the line was logged is made of kills older than it: while the kills accounted since have not
    reached the counter the sweep read and the cgroup stayed quiet, they are kills whose lines were
    lost, and a kill line of another cgroup (one of no pod here, whose report was rate-limited)
    must not be taken for one of them. Once the accounting reached that counter, the lead was only
    kills whose lines came after the sweep read it (a storm: the kernel counts a kill, then logs its
    line) and refuses nothing: the storm's later lines are placed there again. A cgroup still going
    OOM is not refused either: its lead may be a storm's line placed in another cgroup with the same
    lead (which one was whose is a guess), and the line now may be its own new kill.
    """
    return {
        path
        for path, lead in leads.items()
        if lead.since < logged_at and accounted.get(path, 0) < lead.counter and path not in active
    }
