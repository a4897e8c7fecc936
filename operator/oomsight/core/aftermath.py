"""What a live host adds to a kernel OOM report, read right after the kill (pure).

The kernel's report cannot always say whether the victim's container lives on: when the limit hit
was the pod's, its task table mixes the pod's containers, and a saved log has nothing more. On a live
host the victim's container cgroup can be looked at instead (``oomsight.host.afterkill`` reads it):

- the container lives on when its first process is still there. In a container with its own pid
  namespace that is the process whose innermost pid (``NSpid``'s last field, /proc/<pid>/status,
  since 4.1) is 1; without one (hostPID, a shared process namespace, or a test's bare cgroup) it is
  the oldest process, i.e. one with a smaller pid than the victim's (pids are handed out in
  increasing order until they wrap at ``pid_max``, 4194304 on 64-bit kernels);
- a container with no process left (or whose cgroup is gone) right after the kill was ended by it.
  "Right after" matters: much later, a container may have stopped for any reason, so a caller passes
  no processes (``None``) unless the kill is recent.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from oomsight.core.podscope import PodContext

RECENT_SECONDS = 30.0
"""A kill this recent (kernel log time against now) is judged from the live container cgroup.
Wide enough for the kernel log's clock and CLOCK_MONOTONIC drifting apart by seconds (measured 3 s
on this machine's 6.18 VM kernel), short enough that the container is still the one that was hit."""


@dataclass(frozen=True, slots=True)
class ProcEntry:
    """One process found in the victim's container cgroup after the kill."""

    pid: int
    """In the namespace of the procfs that was read (the host's, with ``--host-root``)."""
    nspid: tuple[int, ...] = ()
    """``NSpid`` from that namespace down to the process's own; one entry: no namespace of its own."""
    state: str = "R"
    """``State`` letter; ``Z`` (zombie) and ``X`` (dead) are gone already."""


@dataclass(frozen=True, slots=True)
class Aftermath:
    """Live facts about one kill, read on the host right after it."""

    pod: PodContext | None = None
    """The pod's container cgroups (own limits and usage), for a kill at the pod cgroup."""
    container_survived: bool | None = None
    """From the victim's container cgroup (``container_survived``); None when it was not looked at."""


def parse_status_ns(text: str) -> tuple[tuple[int, ...], str]:
    """``NSpid`` and ``State`` from /proc/<pid>/status; ``()`` when the kernel has no NSpid (< 4.1)."""
    nspid: tuple[int, ...] = ()
    state = "R"
    for line in text.splitlines():
        if line.startswith("NSpid:"):
            nspid = tuple(int(x) for x in line[6:].split() if x.isdigit())
        elif line.startswith("State:"):
            state = line[6:].strip()[:1] or "R"
    return nspid, state


def first_process_alive(procs: Iterable[ProcEntry] | None, victims: Iterable[int]) -> bool:
    """Did the container's first process survive the kill of ``victims``? ``procs``: what its cgroup
    holds now; None when the cgroup is gone. See the module doc for "first process"."""
    killed = set(victims)
    live = [p for p in procs or () if p.pid not in killed and p.state not in ("Z", "X")]
    if not live:
        return False
    if any(len(p.nspid) > 1 and p.nspid[-1] == 1 for p in live):
        return True
    first_victim = min(killed) if killed else None
    return first_victim is not None and min(p.pid for p in live) < first_victim
