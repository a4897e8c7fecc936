"""Cost of finding JVM heap flags (oomsight.host.jvm): one pass over /proc, as the chart's agent does
once a minute when it is not in the host's pid namespace. Prints the pids seen and ms per pass.

    /tmp/v/bin/python bench/bench_jvm_scan.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

from oomsight.host.jvm import JvmScanner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--proc", default="/proc")
    args = ap.parse_args()
    pids = sum(1 for n in os.listdir(args.proc) if n.isdigit())
    scan = JvmScanner(args.proc, rescan=0.0, by_cgroup_procs=False)
    times = []
    for i in range(args.runs):
        t0 = time.perf_counter()
        scan.flags("x", "/x", float(i))
        times.append((time.perf_counter() - t0) * 1000)
    first, rest = times[0], times[1:] or times
    print(f"pids: {pids}; java command lines parsed: {scan.cmdlines_read}")
    print(
        f"full /proc pass: first {first:.1f} ms (parses java cmdlines), then median"
        f" {statistics.median(rest):.1f} ms, max {max(rest):.1f} ms over {len(rest)} passes"
    )
    print(f"at one pass a minute: {statistics.median(rest) / 60_000 * 100:.4f} % of one core")


if __name__ == "__main__":
    main()
