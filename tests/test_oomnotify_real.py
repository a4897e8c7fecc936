"""``oomsight.host.oomnotify`` on real cgroup v1 memory cgroups and real OOM kills: the kernel signals
the containers that went OOM (at their own limit or their pod's), and no other."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from cgroupkit import MIB, PROGS, Cgroup, CgroupKit
from oomsight.host.cgroupfs import detect_layout
from oomsight.host.oomnotify import OomNotifier

pytestmark = pytest.mark.cgroup


def _oom_kill_in(cg: Cgroup) -> None:
    hog = cg.run(sys.executable, str(PROGS / "memhog.py"), "--grow-anon-mib", "4")
    assert hog.wait(60) == -9


def test_the_kernel_signals_the_containers_that_went_oom_and_no_other(cgroups: CgroupKit):
    notifier = OomNotifier.open(detect_layout(Path("/")))
    assert notifier is not None  # v1 here
    pod, _ = cgroups.pod()
    hit, _ = cgroups.container(pod, limit=32 * MIB)
    calm, _ = cgroups.container(pod, limit=32 * MIB)
    other_pod, _ = cgroups.pod(limit=32 * MIB)
    below, _ = cgroups.container(other_pod)  # no limit of its own: its pod's is hit
    unwatched, _ = cgroups.container(other_pod)
    watched = [hit.rel, calm.rel, below.rel]
    notifier.watch(watched)
    assert notifier.failed == 0 and all(notifier.watched(p) for p in watched)
    since = time.monotonic()
    everyone = [*watched, unwatched.rel]
    assert notifier.may_have_oomed(everyone, since) == [unwatched.rel]  # unwatched: cannot tell

    _oom_kill_in(hit)
    assert notifier.may_have_oomed(everyone, since) == [hit.rel, unwatched.rel]
    assert notifier.may_have_oomed(everyone, time.monotonic() + 1) == [unwatched.rel]  # not since then

    _oom_kill_in(below)  # the pod cgroup's limit: every container below it is signalled
    assert notifier.may_have_oomed(everyone, since) == [hit.rel, below.rel, unwatched.rel]

    notifier.watch([calm.rel])  # the others dropped: cannot tell any more
    assert not notifier.watched(hit.rel)
    assert notifier.may_have_oomed([hit.rel, calm.rel], since) == [hit.rel]
    notifier.close()


def test_a_cgroup_watched_only_after_the_time_asked_about_may_have_gone_oom(cgroups: CgroupKit):
    """The eventfd tells nothing of an OOM before it was registered: a storm's kill in a container
    the sweep had just begun to watch must not be ruled out (bench/peers.py lost such kill lines)."""
    notifier = OomNotifier.open(detect_layout(Path("/")))
    assert notifier is not None  # v1 here
    pod, _ = cgroups.pod()
    late, _ = cgroups.container(pod, limit=32 * MIB)
    since = time.monotonic()
    _oom_kill_in(late)  # before it is watched: nothing signalled
    notifier.watch([late.rel])
    assert notifier.watched(late.rel)
    assert notifier.may_have_oomed([late.rel], since) == [late.rel]  # watched after since: cannot tell
    assert notifier.may_have_oomed([late.rel], time.monotonic()) == []  # watched since then: no OOM
    notifier.close()
