"""Memory cgroups frozen at their limit because their OOM killer is switched off (cgroup v1).

With ``memory.oom_control`` ``oom_kill_disable 1`` (mm/memcontrol-v1.c, Documentation/admin-guide/
cgroup-v1/memory.rst §10 "OOM Control"), a cgroup that hits its limit kills nobody: every task that
needs a page sleeps on the memcg's OOM wait queue, and ``under_oom`` reads 1 until memory is freed
or the limit is raised. Nothing is logged and Kubernetes sees a container that is running but
does nothing. ``under_oom`` is set on the whole subtree (``mem_cgroup_mark_under_oom`` walks the
descendants), so a pod frozen by its own limit shows ``under_oom 1`` in its containers too: we report
the cgroup where the OOM killer is disabled and list the frozen cgroups below it.

cgroup v2 has no ``oom_kill_disable``; there the question does not arise.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from oomsight.core.kubepath import parse_cgroup_path
from oomsight.core.memory import V1_UNLIMITED_MIN, MemoryReading


@dataclass(frozen=True, slots=True)
class StuckCgroup:
    """A cgroup whose tasks sleep at its limit because its OOM killer is disabled."""

    cgroup: str
    """Path relative to the memory hierarchy root, as the kernel prints it (``/kubepods/...``)."""
    pod_uid: str | None
    container_id: str | None
    usage_bytes: int
    limit_bytes: int | None
    """This cgroup's own limit (None: unlimited)."""
    effective_limit_bytes: int | None
    """v1 ``hierarchical_memory_limit``: the tightest limit from here up (None: unlimited)."""
    frozen_below: tuple[str, ...] = ()
    """Descendant cgroups also at ``under_oom 1`` because of this one (e.g. a pod's containers)."""

    @property
    def explanation(self) -> str:
        eff = self.effective_limit_bytes
        if self.limit_bytes is not None and (eff is None or self.limit_bytes <= eff):
            lim = f"its limit of {self.limit_bytes // 2**20} MiB"
        elif eff is not None:
            lim = f"the limit of {eff // 2**20} MiB set on a parent cgroup"
        else:
            lim = "a limit"
        return (
            f"{self.cgroup} is at {lim} (usage {self.usage_bytes // 2**20} MiB) with the OOM killer "
            "disabled (memory.oom_control oom_kill_disable 1): its processes are frozen until memory is "
            "freed; raise the limit, write 0 to memory.oom_control, or kill a process in it"
        )

    def as_json(self) -> dict[str, object]:
        return {
            "cgroup": self.cgroup,
            "pod_uid": self.pod_uid,
            "container_id": self.container_id,
            "usage_bytes": self.usage_bytes,
            "limit_bytes": self.limit_bytes,
            "effective_limit_bytes": self.effective_limit_bytes,
            "frozen_below": list(self.frozen_below),
            "explanation": self.explanation,
        }


def _effective(r: MemoryReading) -> int | None:
    value = r.stat.get("hierarchical_memory_limit")
    if value is None:
        return r.limit_bytes
    return None if value >= V1_UNLIMITED_MIN else value


def _is_below(path: str, ancestor: str) -> bool:
    return ancestor == "/" or path.startswith(ancestor.rstrip("/") + "/")


def find_stuck(readings: Iterable[tuple[str, MemoryReading]]) -> list[StuckCgroup]:
    """The cgroups at ``under_oom 1`` with ``oom_kill_disable 1``, given ``(path, reading)`` pairs.

    Readings without ``oom_control`` (cgroup v2, or a v1 file that could not be read) are never stuck.
    A stuck cgroup below another stuck cgroup is still reported on its own (its own switch is off
    too); ``frozen_below`` collects every descendant at ``under_oom 1``.
    """
    items = list(readings)
    under = [p for p, r in items if r.oom_control is not None and r.oom_control.under_oom]
    out: list[StuckCgroup] = []
    for path, r in items:
        oc = r.oom_control
        if oc is None or not (oc.under_oom and oc.oom_kill_disable):
            continue
        ref = parse_cgroup_path(path)
        out.append(
            StuckCgroup(
                cgroup=path,
                pod_uid=ref.pod_uid if ref else None,
                container_id=ref.container_id if ref else None,
                usage_bytes=r.usage_bytes,
                limit_bytes=r.limit_bytes,
                effective_limit_bytes=_effective(r),
                frozen_below=tuple(sorted(p for p in under if p != path and _is_below(p, path))),
            )
        )
    return sorted(out, key=lambda s: s.cgroup)
