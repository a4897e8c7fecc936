"""A process that takes a known amount of memory of a known kind, says READY, and waits.

Usage: memhog.py [--anon MIB] [--file PATH MIB] [--shm PATH MIB] [--grow-anon-mib N]
                 [--children K --child-anon MIB] [--oom-score-adj N] [--grow-on-sigusr1]

--grow-anon-mib keeps allocating N MiB chunks until killed (to provoke the OOM killer).
--grow-on-sigusr1 holds the growth back after READY until SIGUSR1 arrives: a barrier, so that
many hogs started one after another on a slow machine reach their limits at the same moment.
Children are real fork()ed processes with their own anon memory; their pids are printed.
Runs with no third-party imports so it starts fast inside a test's cgroup.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

MIB = 1 << 20


def touch_anon(mib: int) -> bytes:
    # b"\x01" * n is a memset: every page is written, so every page is charged.
    return b"\x01" * (mib * MIB)


def fill_file(path: str, mib: int, keep_in_cache: bool = True) -> None:
    with open(path, "wb") as f:
        for _ in range(mib):
            f.write(b"\x02" * MIB)
        f.flush()
        os.fsync(f.fileno())
    if keep_in_cache:
        with open(path, "rb") as f:
            while f.read(MIB):
                pass


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--anon", type=int, default=0)
    ap.add_argument("--file", nargs=2, metavar=("PATH", "MIB"))
    ap.add_argument("--shm", nargs=2, metavar=("PATH", "MIB"))
    ap.add_argument("--grow-anon-mib", type=int, default=0)
    ap.add_argument("--children", type=int, default=0)
    ap.add_argument("--child-anon", type=int, default=0)
    ap.add_argument("--child-grow-mib", type=int, default=0)
    ap.add_argument("--oom-score-adj", type=int)
    ap.add_argument("--child-oom-score-adj", type=int)
    ap.add_argument("--grow-on-sigusr1", action="store_true")
    args = ap.parse_args()
    if args.grow_on_sigusr1:  # blocked before READY is printed, so an early signal stays pending
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})

    if args.oom_score_adj is not None:
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write(str(args.oom_score_adj))
    held = []
    if args.file:
        fill_file(args.file[0], int(args.file[1]))
    if args.shm:
        fill_file(args.shm[0], int(args.shm[1]), keep_in_cache=False)
    kids = []
    for _ in range(args.children):
        pid = os.fork()
        if pid == 0:
            if args.child_oom_score_adj is not None:
                with open("/proc/self/oom_score_adj", "w") as f:
                    f.write(str(args.child_oom_score_adj))
            mem = [touch_anon(args.child_anon)] if args.child_anon else []
            while args.child_grow_mib:
                mem.append(touch_anon(args.child_grow_mib))
            signal.pause()
            os._exit(0)
        kids.append(pid)
    if args.anon:
        held.append(touch_anon(args.anon))
    print("READY", os.getpid(), *kids, flush=True)
    if args.grow_on_sigusr1:
        signal.sigwait({signal.SIGUSR1})
    while args.grow_anon_mib:
        held.append(touch_anon(args.grow_anon_mib))
        time.sleep(0.001)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
