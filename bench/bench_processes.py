"""Cost of ``oomsight.host.processes.read_processes`` and ``oomsight.host.nodeinfo.read_node_facts``.

Starts N real processes (``--procs``, default 200) in one kubelet-style container cgroup: half of them
``sleep`` (small), half ``memhog.py --anon 8`` (a Python heap with 8 MiB touched), and times, per call
over ``--rounds``:

- ``read_processes(pids)``            status + oom_score + oom_score_adj per pid (the default);
- ``read_processes(pids, uss=True)``  plus smaps_rollup per pid (USS);
- psutil for comparison: ``Process.memory_info()`` per pid, and ``memory_full_info()`` (USS via
  psutil, which reads smaps_rollup when the kernel has it, else every VMA in smaps);
- ``read_node_facts("/")`` (``oomsight node``'s reading).

Prints min / median / max milliseconds per call and per pid. Needs root and the v1 memory controller.

    /tmp/v/bin/python bench/bench_processes.py --procs 200 --rounds 20
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "operator")]

import psutil  # noqa: E402

from cgroupkit import CgroupKit  # noqa: E402
from oomsight.host.nodeinfo import read_node_facts  # noqa: E402
from oomsight.host.processes import read_cgroup_pids, read_processes  # noqa: E402


def timeit(fn: Callable[[], object], rounds: int) -> list[float]:
    fn()  # warm
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--procs", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    kit = CgroupKit()
    procs: list[subprocess.Popen[str]] = []
    try:
        pod, _ = kit.pod()
        ctr, _ = kit.container(pod)
        script = f'echo $$ > "{ctr.path}/cgroup.procs" && exec "$@"'
        for i in range(args.procs):
            if i % 2:
                procs.append(ctr.spawn("--anon", "8"))
            else:
                procs.append(subprocess.Popen(["sh", "-c", script, "sh", "sleep", "3600"], text=True))
        time.sleep(0.5)
        pids = read_cgroup_pids(ctr.path)
        n = len(pids)
        s = read_processes(pids, uss=True)
        uss = (s.uss_bytes or 0) / 2**20
        print(f"{n} pids in one container cgroup: RSS {s.rss_bytes / 2**20:.0f} MiB, USS {uss:.0f} MiB")

        def ps_rss() -> None:
            for p in pids:
                psutil.Process(p).memory_info()

        def ps_uss() -> None:
            for p in pids:
                psutil.Process(p).memory_full_info()

        rows = [
            ("read_processes(pids)", lambda: read_processes(pids)),
            ("read_processes(pids, uss=True)", lambda: read_processes(pids, uss=True)),
            ("psutil memory_info() x pids", ps_rss),
            ("psutil memory_full_info() x pids", ps_uss),
            ("read_node_facts('/')", lambda: read_node_facts("/")),
        ]
        print(f"{'what':<36} {'min ms':>8} {'median':>8} {'max':>8} {'µs/pid':>8}")
        for name, fn in rows:
            t = timeit(fn, args.rounds)
            per = statistics.median(t) * 1000 / n if "node" not in name else float("nan")
            print(f"{name:<36} {min(t):8.2f} {statistics.median(t):8.2f} {max(t):8.2f} {per:8.1f}")
    finally:
        kit.cleanup(procs)


if __name__ == "__main__":
    main()
