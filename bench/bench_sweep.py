"""Sweep benchmark: 200 real container cgroups, kubelet layout, on the cgroup v1 memory controller.

Creates 100 pods x 2 containers (half cgroupfs driver, half systemd; Guaranteed, Burstable and
BestEffort; limits on pods and containers), starts processes holding memory in some of them, then
measures in a separate process pinned to one CPU:

- wall time (median, p95) and CPU time (``time.process_time``: user + system) per
  ``CgroupWalker.sweep()`` over ``--sweeps`` sweeps, in five modes: ``sweep`` (the defaults: a full
  walk every 30 sweeps, the kubepods trees only in between; an idle cgroup's unchanged files are not
  parsed again), ``no-reuse`` (every reading parsed, as if every cgroup changed), ``sweep+pids`` (plus
  ``cgroup.procs``, what ``oomsight top`` reads), ``full-walk`` (the whole hierarchy every sweep, no
  reuse) and ``all-files`` (every v1 file the model parses, ``V1_FILES``, no reuse);
- that process's RSS (psutil) after the sweeps, and its peak RSS (getrusage).

A sweep lists every kubepods tree on the machine, so cgroups that other tests create meanwhile are
swept too: the output says how many were listed and scales the median to ``--containers``.

Targets (issue #2): <= 20 ms per sweep of 200 containers on one core; RSS <= 40 MiB.
Everything it creates is removed at the end.

    sudo /tmp/v/bin/python bench/bench_sweep.py [--containers 200] [--sweeps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "operator")]


MODES = (
    # label, with cgroup.procs, rediscover_every, files ("all" = V1_FILES), reuse unchanged readings
    ("sweep", False, 30, "sweep", True),
    ("no-reuse", False, 30, "sweep", False),
    ("sweep+pids", True, 30, "sweep", True),
    ("full-walk", False, 0, "sweep", False),
    ("all-files", False, 30, "all", False),
)


def child(args: argparse.Namespace) -> None:
    """Runs in its own process: import, sweep, report figures as JSON on stdout."""
    import resource

    import psutil

    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    from oomsight.core.memory import V1_FILES
    from oomsight.host.cgroupfs import CgroupWalker, detect_layout

    layout = detect_layout(Path("/"))
    figures: dict[str, object] = {"cpu": min(os.sched_getaffinity(0))}
    for label, with_pids, rediscover, file_set, reuse in MODES:
        files = V1_FILES if file_set == "all" else None
        walker = CgroupWalker(layout, files=files)
        walker.rediscover_every = rediscover
        walker.reuse_unchanged = reuse
        walker.sweep(with_pids=with_pids)  # warm the dentry cache and the interpreter
        wall: list[float] = []
        cpu: list[float] = []
        entries = 0
        for _ in range(args.sweeps):
            w0, c0 = time.perf_counter(), time.process_time()
            result = walker.sweep(with_pids=with_pids)
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
            entries = sum(1 for e in result.entries if e.kube is not None and e.kube.pod_uid in args.uids)
        walker.close()
        wall.sort()
        cpu.sort()
        figures[label] = {
            "containers_found": entries,
            "cgroups_listed": len(result.entries),
            "wall_median_ms": statistics.median(wall) * 1e3,
            "wall_p95_ms": wall[int(0.95 * (len(wall) - 1))] * 1e3,
            "cpu_median_ms": statistics.median(cpu) * 1e3,
            "cpu_p95_ms": cpu[int(0.95 * (len(cpu) - 1))] * 1e3,
            "cpu_min_ms": cpu[0] * 1e3,
            "errors_total": walker.errors_total,
            "vanished_total": walker.vanished_total,
        }
    figures["rss_mib"] = psutil.Process().memory_info().rss / 2**20
    figures["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(figures))


def build(kit, containers: int) -> tuple[list[str], list]:  # type: ignore[no-untyped-def]
    from cgroupkit import MIB

    uids: list[str] = []
    procs = []
    qos_cycle = ("burstable", "besteffort", "guaranteed")
    for i in range(containers // 2):
        driver = "cgroupfs" if i % 2 == 0 else "systemd"
        qos = qos_cycle[i % 3]
        pod, uid = kit.pod(qos=qos, driver=driver, limit=(256 * MIB if qos != "besteffort" else None))
        uids.append(uid)
        for j in range(2):
            runtime = ("containerd", "cri-o", "docker")[(i + j) % 3]
            limit = 128 * MIB if qos == "guaranteed" else (512 * MIB if j == 0 else None)
            container, _ = kit.container(pod, runtime=runtime, limit=limit)
            if i % 10 == 0 and j == 0:  # a process holding memory in one container of every tenth pod
                procs.append(container.spawn("--anon", "4"))
    return uids, procs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--containers", type=int, default=200)
    ap.add_argument("--sweeps", type=int, default=200)
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--uids", nargs="*", default=[], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return

    from cgroupkit import CgroupKit, require_cgroup_v1

    try:
        require_cgroup_v1()
    except BaseException as err:  # pytest's skip/fail outcomes
        sys.exit(f"bench_sweep: {err}")
    kit = CgroupKit()
    procs = []
    try:
        t0 = time.perf_counter()
        uids, procs = build(kit, args.containers)
        print(f"built {args.containers} container cgroups in {len(uids)} pods under {kit.root} "
              f"with {len(procs)} processes ({time.perf_counter() - t0:.1f} s)")
        out = subprocess.run(
            [sys.executable, __file__, "--child", "--sweeps", str(args.sweeps), "--uids", *uids],
            capture_output=True, text=True, check=True,
        ).stdout
        figures = json.loads(out)
    finally:
        kit.cleanup(procs)

    print(f"python {sys.version.split()[0]}, kernel {os.uname().release}, pinned to cpu {figures['cpu']}, "
          f"{args.sweeps} sweeps each")
    print(f"load average before the sweeps: {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    for label, *_ in MODES:
        f = figures[label]
        print(
            f"{label:<11} found {f['containers_found']}/{args.containers} containers "
            f"({f['cgroups_listed']} listed): wall median {f['wall_median_ms']:.2f} ms, "
            f"p95 {f['wall_p95_ms']:.2f} ms; cpu median {f['cpu_median_ms']:.2f} ms, "
            f"p95 {f['cpu_p95_ms']:.2f} ms, min {f['cpu_min_ms']:.2f} ms "
            f"(= {f['cpu_median_ms'] * args.containers / max(1, f['cgroups_listed']):.2f} ms median "
            f"per {args.containers} listed); errors {f['errors_total']}, vanished {f['vanished_total']}"
        )
    print(f"RSS of the sweeping process: {figures['rss_mib']:.1f} MiB "
          f"(peak {figures['peak_rss_mib']:.1f} MiB)")
    print("targets: <= 20 ms per sweep on one core, RSS <= 40 MiB")


if __name__ == "__main__":
    main()
