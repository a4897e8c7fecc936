"""A parent that leaves K children unreaped (zombies), says READY with all pids, and waits.

Usage: zombie.py [--zombies K]

Each child exits at once; the parent never calls wait(), so the kernel keeps each child as a zombie
(state Z, no memory map) until the parent dies. No third-party imports: it starts fast in a cgroup.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--zombies", type=int, default=1)
    args = ap.parse_args()
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # SIG_IGN would let the kernel reap them
    kids = []
    for _ in range(args.zombies):
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        kids.append(pid)
    # wait until every child has really exited (is a zombie) before saying READY
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        states = []
        for pid in kids:
            with open(f"/proc/{pid}/stat") as f:
                states.append(f.read().rsplit(")", 1)[1].split()[0])
        if all(s == "Z" for s in states):
            break
        time.sleep(0.01)
    print("READY", os.getpid(), *kids, flush=True)
    while True:
        signal.pause()


if __name__ == "__main__":
    sys.exit(main())
