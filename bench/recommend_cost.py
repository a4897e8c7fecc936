"""What one workload costs the engine: samples in, a recommendation out, and the saved state.

    /tmp/v/bin/python bench/recommend_cost.py [--replicas 10] [--days 8]

Feeds ``--replicas`` replicas of one container a 5-minute working-set series for ``--days`` days,
then times ``add_sample``, ``recommend`` and ``to_state`` and prints the JSON state size: the
figures the operator needs to budget a reconcile over many workloads.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "operator"))

from oomsight.core.recommend import Recommender

MiB = 1 << 20


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--replicas", type=int, default=10)
    p.add_argument("--days", type=int, default=8)
    a = p.parse_args(argv)
    rng = random.Random(0)
    r = Recommender()
    n = a.days * 288
    t0 = time.perf_counter()
    for i in range(n):
        for rep in range(a.replicas):
            r.add_sample("ns/w/c", i * 300.0, int(rng.uniform(200, 900) * MiB), replica=f"p{rep}")
    add = (time.perf_counter() - t0) / (n * a.replicas)
    now = n * 300.0
    t0 = time.perf_counter()
    for _ in range(1000):
        r.recommend("ns/w/c", now)
    rec = (time.perf_counter() - t0) / 1000
    t0 = time.perf_counter()
    state = json.dumps(r.to_state(now))
    ser = time.perf_counter() - t0
    print(f"python {sys.version.split()[0]}: {a.replicas} replicas x {a.days} days of 5-min samples")
    print(f"add_sample: {add * 1e6:.1f} us each; recommend: {rec * 1e6:.0f} us;", end=" ")
    print(f"to_state+json: {ser * 1e3:.2f} ms")
    print(f"state: {len(state)} bytes of JSON for one container")
    return 0


if __name__ == "__main__":
    sys.exit(main())
