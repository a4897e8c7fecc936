"""Cost of what the agent reads right after each OOM kill (oomsight.host.afterkill): the pod's
container cgroups and the victim container's processes, for a kill at the pod cgroup of a
kubelet-exact pod (tests/cgroupkit.kubelet_pod: one container + a pause-like sandbox) with a shell
left running in it. Both ways of finding the processes: cgroup.procs (host pid namespace) and the
/proc scan (the chart's agent, in a pid namespace of its own; one pass serves the kills of the next
5 s, so the first read pays for it). Needs root and cgroup v1.

    .venv/bin/python bench/bench_afterkill.py [--runs 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from cgroupkit import MIB, CgroupKit, kubelet_pod
from oomsight.core.oomreport import Incident, Victim
from oomsight.host.afterkill import AfterKill
from oomsight.host.cgroupfs import detect_layout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=200)
    args = ap.parse_args()
    kit = CgroupKit()
    try:
        kp = kubelet_pod(kit, [32 * MIB])
        sh = kp.container.run("sleep", "100000")
        while not kp.container.procs():
            time.sleep(0.01)
        inc = Incident(
            victims=(Victim(pid=sh.pid + 1, comm="dd"),), oom_memcg=kp.pod.rel, task_memcg=kp.container.rel
        )
        after = AfterKill(detect_layout("/"))
        pids = sum(1 for n in os.listdir("/proc") if n.isdigit())
        for mode in (True, False):
            after.by_cgroup_procs = mode
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                am = after.read(inc, age=0.1)
                times.append((time.perf_counter() - t0) * 1e6)
            assert am.container_survived is True and am.pod is not None
            how = "cgroup.procs" if mode else f"/proc scan ({pids} pids)"
            print(
                f"after-kill read, {how}: first {times[0]:.0f} us, then median "
                f"{statistics.median(times[1:]):.0f} us, max {max(times[1:]):.0f} us "
                f"over {args.runs - 1} reads"
            )
        sh.kill()
        sh.wait()
        kp.stop()
    finally:
        kit.cleanup()


if __name__ == "__main__":
    main()
