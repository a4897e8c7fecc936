"""``oomsight.host.afterkill`` on real cgroups: what it reads around a real kill in a kubelet-exact pod.

Both ways of finding a container's processes are exercised: ``cgroup.procs`` (the host's pid
namespace) and the scan of ``/proc/*/cgroup`` the chart's agent uses from its own pid namespace.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cgroupkit import MIB, CgroupKit, kubelet_pod, shell_with_oom_child
from oomsight.core.oomreport import Incident, Victim
from oomsight.host.afterkill import AfterKill
from oomsight.host.cgroupfs import detect_layout

pytestmark = [pytest.mark.cgroup, pytest.mark.slow]


@pytest.fixture
def procs() -> Iterator[list[subprocess.Popen[str]]]:
    started: list[subprocess.Popen[str]] = []
    yield started
    for p in started:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        p.wait(30)
        if p.stdout is not None:
            p.stdout.close()


def _gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


@pytest.mark.parametrize("by_cgroup_procs", [True, False], ids=["cgroup.procs", "proc-scan"])
def test_reads_the_pod_and_the_surviving_shell(
    cgroups: CgroupKit, procs: list[subprocess.Popen[str]], by_cgroup_procs: bool
) -> None:
    kp = kubelet_pod(cgroups, [32 * MIB])
    try:
        sh, dd = shell_with_oom_child(kp.container, 64 * MIB)
        procs.append(sh)
        deadline = time.monotonic() + 30
        while not _gone(dd):
            assert time.monotonic() < deadline, "dd was not killed"
            time.sleep(0.05)
        after = AfterKill(detect_layout("/"))
        after.by_cgroup_procs = by_cgroup_procs
        found = after.procs(kp.container.rel)
        assert found is not None and sh.pid in {p.pid for p in found}
        assert dd not in {p.pid for p in found if p.state != "Z"}
        members = {m.container_id: m for m in after.members(kp.pod.rel)}
        assert set(members) == {kp.sandbox_id, kp.ids[0]}
        assert members[kp.sandbox_id].limit_bytes is None and members[kp.sandbox_id].is_sandbox
        assert (members[kp.sandbox_id].usage_bytes or 0) > 0  # the pause-like sleep is charged
        assert members[kp.ids[0]].limit_bytes == 32 * MIB and not members[kp.ids[0]].is_sandbox
        inc = Incident(
            victims=(Victim(pid=dd, comm="dd"),), oom_memcg=kp.pod.rel, task_memcg=kp.container.rel
        )
        am = after.read(inc, age=1.0)
        assert am.container_survived is True
        assert am.pod is not None and len(am.pod.members) == 2
        sh.kill()
        sh.wait(30)
        # Its first process gone: right after, the container is over; long after, nobody can say.
        assert after.read(inc, age=1.0).container_survived is False
        assert after.read(inc, age=3600.0).container_survived is None
        # A later kill in the same container may have taken the first process: not this kill's doing.
        assert after.read(inc, age=1.0, later_kill=True).container_survived is None
    finally:
        kp.stop()


def test_a_vanished_container_is_gone_not_an_error(cgroups: CgroupKit) -> None:
    after = AfterKill(detect_layout("/"))
    assert after.procs(f"/{cgroups.root.name}/kubepods/burstable/podx/" + "0" * 64) is None
    assert after.members(f"/{cgroups.root.name}/kubepods/burstable/pod-gone") == ()
