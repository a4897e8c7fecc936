"""What following the kernel log through syslog(2) costs, at this machine's real ring size.

Run as root (or with CAP_SYSLOG):

    .venv/bin/python bench/bench_klogctl.py [--polls 300]

Prints, per poll of ``oomsight.host.klogctl.KlogctlReader``:

- ``READ_ALL``: the syscall alone (the kernel formats every record of the ring into our buffer);
- ``poll, nothing new``: READ_ALL plus finding our last lines in the copy (the common case);
- ``poll, 20 new lines``: the same plus parsing 20 fresh marker records (written through /dev/kmsg,
  one open each, between polls, so the write is not timed);
- and what the reader's pacing makes of it: CPU share of one core at 1 poll/s (quiet) and at
  10 polls/s (busy), against the /dev/kmsg reader, which costs nothing while nothing is logged.

CPU is this process's user+system time (``resource.getrusage``), so other load on the machine does
not inflate it; wall time is printed too. Nothing is left behind except the marker lines.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "operator"))

from oomsight.host.klogctl import FAST_SECONDS, SLOW_SECONDS, KlogctlReader, _klogctl


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(
    n: int, step: Callable[[], object], before: Callable[[], object] = lambda: None
) -> tuple[float, float]:
    """(mean CPU seconds, median wall seconds) of ``step`` over ``n`` runs, ``before`` untimed."""
    cpus, walls = [], []
    for _ in range(n):
        before()
        c0, w0 = cpu(), time.perf_counter()
        step()
        cpus.append(cpu() - c0)
        walls.append(time.perf_counter() - w0)
    # getrusage ticks are coarse for one call: the mean is the honest per-call figure for CPU
    return statistics.fmean(cpus), statistics.median(walls)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--polls", type=int, default=300)
    args = ap.parse_args()
    reader = KlogctlReader(start="now")
    ring_lines = len(reader._read_all().split(b"\n")) - 1
    print(f"ring: log_buf_len {reader.ring_bytes} bytes, {ring_lines} lines now; buffer {reader.size} bytes")

    read_all = measure(args.polls, lambda: _klogctl(3, reader._buf, reader.size))
    quiet = measure(args.polls, reader.poll)
    list(reader.read_available())
    tag = f"oomsight-bench-klogctl-{os.getpid()}"

    def write20() -> None:
        list(reader.read_available())
        for i in range(20):
            fd = os.open("/dev/kmsg", os.O_WRONLY)
            os.write(fd, f"<14>{tag} {i}\n".encode())
            os.close(fd)

    busy = measure(min(args.polls, 50), reader.poll, write20)
    rows = [("READ_ALL syscall", read_all), ("poll, nothing new", quiet), ("poll, 20 new lines", busy)]
    print(f"{'per poll':24} {'CPU ms':>8} {'wall ms':>8}")
    for name, (c, w) in rows:
        print(f"{name:24} {c * 1e3:8.3f} {w * 1e3:8.3f}")
    print(
        f"CPU share of one core: quiet ({1 / SLOW_SECONDS:g} poll/s) {quiet[0] / SLOW_SECONDS:.2%}, "
        f"busy ({1 / FAST_SECONDS:g} polls/s) {busy[0] / FAST_SECONDS:.2%}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
