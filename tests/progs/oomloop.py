"""Get children OOM-killed one after another in the cgroup this runs in, as fast as the kernel kills them.

Usage: oomloop.py KILLS [--grow-mib N] [--seconds S]

The parent forks one child at a time; the child sets oom_score_adj 1000 (raising needs no privilege,
lowering does) and allocates N MiB chunks until the kernel kills it: it is both the largest and the
most expendable task in the cgroup, so the kernel picks it and the parent lives on. The parent
prints ``CHILD <pid>`` before it lets each child grow and ``DONE <kills> <other exits>`` at the
end (after KILLS kills or S seconds). A storm of kills, each with its own kill line, from one process.
No third-party imports, so it starts fast.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time

MIB = 1 << 20


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("kills", type=int)
    ap.add_argument("--grow-mib", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=60.0)
    args = ap.parse_args()
    kills = others = 0
    deadline = time.monotonic() + args.seconds
    print("READY", os.getpid(), flush=True)
    while kills < args.kills and time.monotonic() < deadline:
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            os.close(w)
            with open("/proc/self/oom_score_adj", "w") as f:
                f.write("1000")
            os.read(r, 1)  # wait until the parent has printed the pid
            held = []
            while True:
                held.append(b"\x01" * (args.grow_mib * MIB))
        os.close(r)
        print("CHILD", pid, flush=True)
        os.write(w, b"g")
        os.close(w)
        _, status = os.waitpid(pid, 0)
        if os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL:
            kills += 1
        else:
            others += 1
    print("DONE", kills, others, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
