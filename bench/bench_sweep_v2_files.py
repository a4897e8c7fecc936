"""What ``memory.peak`` and ``memory.pressure`` cost the agent's v2 sweep: 200 real container cgroups.

Run inside a hack/vm guest (cgroup v2; this machine's memory controller is on v1):

    hack/vm run --kernel 6.12 -- python3 bench/bench_sweep_v2_files.py [--containers 200] [--sweeps 100]

Creates ``--containers`` kubelet-style container cgroups (``tests/cgroupkit.py``, 2 per pod), a
process holding 1 MiB in every tenth, then times ``CgroupWalker.sweep()`` (CPU time of this
process, ``time.process_time``) over ``--sweeps`` sweeps with the agent's v2 files before this
change (``memory.current/max/stat/swap.current/events``) and with ``AGENT_V2_FILES`` (plus
``memory.peak`` and ``memory.pressure``), alternating the two in rounds so that the machine's load
falls on both alike. Two modes: ``reuse`` (the agent's default: an idle cgroup's unchanged files are
not parsed again) and ``no-reuse`` (every reading parsed). Under TCG absolute times are several
times a real machine's and the host's load shows through (two runs at load 10 and 30 gave 1.2× and
2.5× for ``reuse``): the in-guest figures are rough.

``--psi-read`` measures on this machine's own kernel instead, where it has a cgroup2 mount: the CPU
time to ``pread`` (and parse) ``memory.pressure`` of 200 fresh cgroup2 directories (a core cgroup2
file, there without the memory controller, e.g. under systemd's hybrid ``/sys/fs/cgroup/unified``),
next to ``memory.stat`` of 200 fresh v1 memory cgroups, with kept-open files as the agent reads them.

    sudo .venv/bin/python bench/bench_sweep_v2_files.py --psi-read [--unified /sys/fs/cgroup/unified]

Prints JSON.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "operator")]

BEFORE = ("memory.current", "memory.max", "memory.stat", "memory.swap.current", "memory.events")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=200)
    ap.add_argument("--sweeps", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--psi-read", action="store_true")
    ap.add_argument("--unified", default="/sys/fs/cgroup/unified")
    args = ap.parse_args()
    if args.psi_read:
        psi_read(Path(args.unified), args.containers)
        return

    from cgroupkit import MIB, CgroupKit
    from oomsight.agent.loop import AGENT_V2_FILES
    from oomsight.host.cgroupfs import CgroupWalker, detect_layout

    kit = CgroupKit(Path("/sys/fs/cgroup"), "v2")
    procs = []
    try:
        for i in range(args.containers // 2):
            pod, _ = kit.pod(qos="burstable", driver="systemd" if i % 2 else "cgroupfs", limit=256 * MIB)
            for j in range(2):
                c, _ = kit.container(pod, limit=128 * MIB, oom_group=True)
                if (2 * i + j) % 10 == 0:
                    procs.append(c.spawn("--anon", "1", timeout=180))
        layout = detect_layout("/")
        per_sweep: dict[str, list[float]] = {}
        containers = 0
        for _ in range(args.rounds):
            for label, files in (("before", BEFORE), ("agent", AGENT_V2_FILES)):
                for mode, reuse in (("reuse", True), ("no-reuse", False)):
                    with CgroupWalker(layout, files) as walker:
                        walker.reuse_unchanged = reuse
                        walker.sweep()  # first sweep: the full walk, files opened
                        t0 = time.process_time()
                        for _ in range(args.sweeps):
                            sweep = walker.sweep()
                        cpu = (time.process_time() - t0) / args.sweeps
                        containers = sum(1 for e in sweep.entries if e.kube and e.kube.level == "container")
                    per_sweep.setdefault(f"{label}/{mode}", []).append(cpu)
        med = {k: statistics.median(v) * 1000 for k, v in per_sweep.items()}
        print(json.dumps({
            "kernel": platform.release(),
            "containers_swept": containers,
            "sweeps_per_round": args.sweeps,
            "rounds": args.rounds,
            "cpu_ms_per_sweep_median": {k: round(v, 2) for k, v in med.items()},
            "agent_over_before": {
                mode: round(med[f"agent/{mode}"] / med[f"before/{mode}"], 3) for mode in ("reuse", "no-reuse")
            },
        }, indent=1))  # fmt: skip
    finally:
        kit.cleanup(procs)


def psi_read(unified: Path, n: int) -> None:
    import os
    import uuid

    from oomsight.core.memory import parse_flat_keyed, parse_pressure

    made: list[Path] = []
    fds: dict[str, list[int]] = {"memory.pressure": [], "memory.stat": []}
    try:
        for mount, name in ((unified, "memory.pressure"), (Path("/sys/fs/cgroup/memory"), "memory.stat")):
            base = mount / f"oomsight-bench-{uuid.uuid4().hex[:8]}"
            base.mkdir()
            made.append(base)
            for i in range(n):
                (base / f"c{i}").mkdir()
                made.append(base / f"c{i}")
                fds[name].append(os.open(base / f"c{i}" / name, os.O_RDONLY))
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
        parsers = {"memory.pressure": parse_pressure, "memory.stat": parse_flat_keyed}
        us: dict[str, float] = {}
        for name, opened in fds.items():
            for parse in (False, True):
                passes = []
                for _ in range(30):
                    t0 = time.process_time()
                    for fd in opened:
                        text = os.pread(fd, 65536, 0).decode()
                        if parse:
                            parsers[name](name, text)
                    passes.append((time.process_time() - t0) * 1e6 / len(opened))
                us[f"{name} {'read+parse' if parse else 'read'}"] = round(statistics.median(passes), 2)
        doc = {"kernel": platform.release(), "cgroups": n, "cpu_us_per_cgroup_median": us}
        print(json.dumps(doc, indent=1))
    finally:
        for opened in fds.values():
            for fd in opened:
                os.close(fd)
        for d in reversed(made):
            d.rmdir()


if __name__ == "__main__":
    main()
