"""``oomsight.agent.newcomers`` on real cgroup v1 memory cgroups: which containers join the OOM
accounting between sweeps, from what count, and when the walk is made at all."""

from __future__ import annotations

from pathlib import Path

import pytest

from oomsight.agent.newcomers import Newcomers
from oomsight.host.cgroupfs import CgroupWalker, detect_layout

pytestmark = pytest.mark.cgroup


def test_only_containers_made_since_the_sweep_join_and_only_after_a_pod_change(cgroups):
    walker = CgroupWalker(detect_layout(Path("/")))
    changes = [0]
    newcomers = Newcomers(walker, lambda: changes[0])
    pod, _ = cgroups.pod()
    old, _ = cgroups.container(pod)
    stale, _ = cgroups.container(pod)  # listed by the sweep, matched to no Pod: its counter may be history
    ours = cgroups.root.name

    def mine(paths):
        return sorted(p for p in paths if ours in p)

    changes[0] += 1
    assert newcomers.adopt({}, {}) == []  # before the first sweep nothing is new
    assert newcomers.walks == 0
    swept = walker.sweep()
    newcomers.swept(changes[0], [e.path for e in swept.entries])
    accounted = {old.rel: 3}  # what the sweep matched and accounted
    new, _ = cgroups.container(pod)
    explained = {new.rel: 2, "/elsewhere/c1": 1}  # kills the log named in a cgroup not accounted yet

    assert newcomers.adopt(accounted, explained) == []  # no Pod changed since the sweep: no walk
    assert newcomers.walks == 0

    changes[0] += 1
    assert mine(newcomers.adopt(accounted, explained)) == [new.rel]
    assert newcomers.walks == 1
    assert accounted[new.rel] == 2  # counted from the kills already explained there, taken from them
    assert accounted[old.rel] == 3 and stale.rel not in accounted
    assert explained == {"/elsewhere/c1": 1}
    assert newcomers.adopt(accounted, explained) == []  # the same Pod change: no second walk
    assert newcomers.walks == 1
