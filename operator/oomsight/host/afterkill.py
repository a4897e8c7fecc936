"""Read the cgroups around an OOM kill right after it (judged in ``oomsight.core.aftermath`` and
``oomsight.core.podscope``).

Two readings, both cheap (a handful of small files), made once per kill:

- the pod's container cgroups, for a kill at the pod cgroup: each child's own limit
  (``memory.limit_in_bytes`` / ``memory.max``) and usage (``memory.usage_in_bytes`` /
  ``memory.current``);
- the processes left in the victim's container cgroup, with ``NSpid`` and ``State`` from
  ``/proc/<pid>/status``. In the host's pid namespace (the CLI on a node, an agent with ``hostPID``)
  the cgroup's ``cgroup.procs`` lists them; in a pid namespace of its own (the chart's agent, with the
  host's ``/proc`` under ``--host-root``) ``cgroup.procs`` shows none of them, so ``<host root>/proc``
  is scanned for processes whose memory cgroup ends in the container's leaf (see ``oomsight.host.jvm``).

A cgroup or process that vanishes while being read is normal right after a kill: it counts as gone.
Permission problems raise ``HostAccessDenied`` (one line).
"""

from __future__ import annotations

import os
import time

from oomsight.core.aftermath import RECENT_SECONDS, Aftermath, ProcEntry, first_process_alive, parse_status_ns
from oomsight.core.errors import ParseError
from oomsight.core.jvm import memory_cgroup_leaf
from oomsight.core.kubepath import parse_cgroup_path
from oomsight.core.memory import parse_int, parse_v1_limit, parse_v2_limit
from oomsight.core.oomreport import Incident
from oomsight.core.podinfo import PodInfo
from oomsight.core.podscope import Member, PodContext, with_spec
from oomsight.host.cgroupfs import CgroupLayout
from oomsight.host.errors import HostAccessDenied, Vanished, translate_oserror
from oomsight.host.jvm import same_pid_namespace


def _read(path: str) -> str | None:
    """A small file's text; None when it (or its cgroup/process) is gone."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as err:
        e = translate_oserror(err, path)
        if isinstance(e, HostAccessDenied):
            raise e from err
        return None
    try:
        return os.read(fd, 65536).decode("ascii", "replace")
    except OSError as err:
        e = translate_oserror(err, path)
        if isinstance(e, HostAccessDenied):
            raise e from err
        return None
    finally:
        os.close(fd)


def kill_age_seconds(usec: int | None) -> float | None:
    """How long ago a kernel log record stamped ``usec`` (since boot) was written, by this kernel's
    CLOCK_MONOTONIC; None without a stamp."""
    if usec is None:
        return None
    return time.clock_gettime(time.CLOCK_MONOTONIC) - usec / 1e6


SCAN_REUSE_SECONDS = 5.0
"""How long one pass over ``/proc`` (own pid namespace only) serves the kills that follow it."""


class AfterKill:
    """Reads what ``oomsight.core.diagnosis.diagnose`` takes as ``aftermath`` for one kill."""

    def __init__(self, layout: CgroupLayout, proc_root: str | None = None) -> None:
        self.root = str(layout.memory_root)
        self.v1 = layout.memory_version == "v1"
        self.proc_root = proc_root if proc_root is not None else str(layout.host_root / "proc")
        self.by_cgroup_procs = same_pid_namespace(self.proc_root)
        self._leaves: dict[str, list[int]] | None = None
        self._leaves_at = 0.0

    # -- the pod's containers

    def members(self, pod_path: str, pod: PodInfo | None = None) -> tuple[Member, ...]:
        """The container cgroups inside ``pod_path`` with their own limits and usage now."""
        try:
            names = os.listdir(self.root + pod_path)
        except OSError as err:
            e = translate_oserror(err, self.root + pod_path, "list")
            if isinstance(e, Vanished):
                return ()
            raise e from err
        out: list[Member] = []
        for name in sorted(names):
            ref = parse_cgroup_path(f"{pod_path}/{name}")
            if ref is None or ref.level != "container" or ref.container_id is None:
                continue
            limit_text = _read(
                f"{self.root}{pod_path}/{name}/" + ("memory.limit_in_bytes" if self.v1 else "memory.max")
            )
            usage_text = _read(
                f"{self.root}{pod_path}/{name}/" + ("memory.usage_in_bytes" if self.v1 else "memory.current")
            )
            if limit_text is None:
                continue  # removed meanwhile
            try:
                limit = (parse_v1_limit if self.v1 else parse_v2_limit)("limit", limit_text)
                usage = parse_int("usage", usage_text) if usage_text is not None else None
            except ParseError:
                continue
            out.append(Member(ref.container_id, limit, usage))
        if pod is None:
            return tuple(out)
        return with_spec(tuple(out), tuple((c.name, c.container_id, c.limit_bytes) for c in pod.containers))

    # -- the victim's container

    def procs(self, container_path: str) -> tuple[ProcEntry, ...] | None:
        """The processes in the container cgroup now; None when the cgroup is gone."""
        directory = self.root + container_path
        if self.by_cgroup_procs:
            text = _read(f"{directory}/cgroup.procs")
            if text is None:
                return None
            pids = [int(p) for p in text.split() if p.isdigit()]
        else:
            if not os.path.isdir(directory):
                return None
            pids = self._scan(container_path.rstrip("/").rsplit("/", 1)[-1])
        out = []
        for pid in pids:
            status = _read(f"{self.proc_root}/{pid}/status")
            if status is None:
                continue  # exited meanwhile
            nspid, state = parse_status_ns(status)
            out.append(ProcEntry(pid, nspid, state))
        return tuple(out)

    def _scan(self, leaf: str) -> list[int]:
        """The pids whose memory cgroup ends in ``leaf``, from one pass over ``/proc`` kept for
        ``SCAN_REUSE_SECONDS`` (a storm of kills costs one pass, not one each). A kept pass is sound
        here: a process gone since shows as gone when its ``status`` is read, and one started since
        cannot be the first process of a container the pass already saw; a container it did not see
        is looked for in a fresh pass."""
        now = time.monotonic()
        if self._leaves is None or now - self._leaves_at > SCAN_REUSE_SECONDS or leaf not in self._leaves:
            self._leaves = self._scan_all()
            self._leaves_at = now
        return self._leaves.get(leaf, [])

    def _scan_all(self) -> dict[str, list[int]]:
        try:
            names = os.listdir(self.proc_root)
        except OSError as err:
            raise translate_oserror(err, self.proc_root, "list") from err
        leaves: dict[str, list[int]] = {}
        for name in names:
            if not name.isdigit():
                continue
            text = _read(f"{self.proc_root}/{name}/cgroup")
            leaf = memory_cgroup_leaf(text) if text is not None else None
            if leaf:
                leaves.setdefault(leaf, []).append(int(name))
        return leaves

    # -- both

    def read(
        self, inc: Incident, pod: PodInfo | None = None, age: float | None = None, later_kill: bool = False
    ) -> Aftermath:
        """The aftermath of ``inc``: the pod's containers when its pod cgroup's limit was hit, and
        whether the victim's container lives on (``age``: seconds since the kill, see
        ``oomsight.core.aftermath.RECENT_SECONDS``; None: unknown, not recent). ``later_kill``:
        another kill in the same container followed this one (then a first process found gone may have
        died in that later kill, so only "still there" is said)."""
        oom = parse_cgroup_path(inc.oom_memcg) if inc.oom_memcg else None
        task = parse_cgroup_path(inc.task_memcg) if inc.task_memcg else None
        ctx = None
        if oom is not None and oom.level == "pod" and inc.oom_memcg:
            ctx = PodContext(
                self.members(inc.oom_memcg, pod),
                pod_level_limit=pod.pod_limit_bytes if pod else None,
                overhead_bytes=(pod.overhead_bytes or 0) if pod else 0,
                source="pod" if pod else "cgroups",
            )
        survived: bool | None = None
        if task is not None and task.level == "container" and inc.task_memcg and not inc.group_kill:
            alive = first_process_alive(self.procs(inc.task_memcg), [v.pid for v in inc.victims])
            # A first process older than the victim and still there survived it, however long ago;
            # "gone" says something only right after the kill.
            if alive or (not later_kill and age is not None and age <= RECENT_SECONDS):
                survived = alive
        return Aftermath(pod=ctx, container_survived=survived)
