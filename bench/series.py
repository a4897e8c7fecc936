"""Deterministic per-interval memory series in the shapes production shows.

Each generator takes a ``random.Random`` and returns a ``Series``: for every interval the memory the
kernel cannot reclaim (``hard``: anon + shmem + kernel) and the active file cache on top of it
(``cache``, reclaimable: a limit trims it instead of killing). Sizes and rates are drawn from wide
ranges fixed *before* any recommender was run against them (see the module constants); nothing
here knows which contender is being scored.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

MiB = 1 << 20
STEP = 300.0  # seconds per interval (a 5-minute scrape)
PER_DAY = int(86400 / STEP)


@dataclass(frozen=True)
class Series:
    shape: str
    hard: list[int]
    cache: list[int]
    xmx: int | None = None
    """The JVM's -Xmx when the shape is a JVM (oomsight is told; the baselines cannot use it)."""


def _noise(rng: random.Random, sd: float) -> float:
    return max(-3 * sd, min(3 * sd, rng.gauss(0.0, sd)))


def steady(rng: random.Random, n: int) -> Series:
    base = rng.uniform(200, 2000) * MiB
    hard = [int(base * (1 + _noise(rng, 0.015))) for _ in range(n)]
    return Series("steady", hard, [0] * n)


def diurnal(rng: random.Random, n: int) -> Series:
    base = rng.uniform(300, 1500) * MiB
    amp = rng.uniform(0.3, 0.6)
    phase = rng.uniform(0, 2 * math.pi)
    day_amp = [
        amp * rng.uniform(0.9, 1.1) * (0.8 if d % 7 in (5, 6) else 1.0) for d in range(n // PER_DAY + 1)
    ]
    hard = []
    for i in range(n):
        day = i // PER_DAY
        x = 2 * math.pi * (i % PER_DAY) / PER_DAY + phase
        hard.append(int(base * (1 + day_amp[day] * (0.5 + 0.5 * math.sin(x))) * (1 + _noise(rng, 0.02))))
    return Series("diurnal", hard, [0] * n)


def leak(rng: random.Random, n: int) -> Series:
    """Grows a few % of its start a day; a weekly deploy restarts it."""
    base = rng.uniform(200, 800) * MiB
    rate = rng.uniform(0.01, 0.05) / PER_DAY
    restart = rng.randrange(PER_DAY * 5, PER_DAY * 8)
    hard = []
    age = rng.randrange(0, restart)
    for _ in range(n):
        age = 0 if age >= restart else age + 1
        hard.append(int(base * (1 + rate * age) * (1 + _noise(rng, 0.01))))
    return Series("leak", hard, [0] * n)


def spikes(rng: random.Random, n: int) -> Series:
    """A steady base with bursts of +50..150% lasting 5-15 minutes, about twice a day at random."""
    base = rng.uniform(300, 1000) * MiB
    hard = [int(base * (1 + _noise(rng, 0.02))) for _ in range(n)]
    i = 0
    while i < n:
        i += int(rng.expovariate(2.0 / PER_DAY)) + 1
        size = rng.uniform(0.5, 1.5)
        for j in range(i, min(n, i + rng.randint(1, 3))):
            hard[j] = int(hard[j] + base * size)
    return Series("spikes", hard, [0] * n)


def page_cache(rng: random.Random, n: int) -> Series:
    """A steady process reading files: active file cache grows (up to 4x the process), dropped at restarts."""
    base = rng.uniform(200, 800) * MiB
    growth = rng.uniform(0.5, 2.0) * base / PER_DAY
    cap = rng.uniform(2.0, 4.0) * base
    restart = rng.randrange(PER_DAY * 4, PER_DAY * 10)
    hard, cache = [], []
    c = 0.0
    for i in range(n):
        if i % restart == 0:
            c = 0.0
        c = min(cap, c + growth * rng.uniform(0.5, 1.5))
        hard.append(int(base * (1 + _noise(rng, 0.02))))
        cache.append(int(c))
    return Series("page-cache", hard, cache)


def jvm(rng: random.Random, n: int) -> Series:
    """Heap grows (lazily, over days) up to -Xmx, then a GC sawtooth just under it; off-heap constant."""
    xmx = int(rng.uniform(512, 2048)) * MiB
    offheap = rng.uniform(100, 300) * MiB
    start = rng.uniform(0.3, 0.6) * xmx
    grow_days = rng.uniform(3, 12)
    period = rng.randint(3, 24)  # intervals per GC cycle
    hard = []
    for i in range(n):
        top = min(xmx, start + (xmx - start) * i / (grow_days * PER_DAY))
        saw = 0.65 + 0.35 * ((i % period) / max(1, period - 1))
        hard.append(int(offheap * (1 + _noise(rng, 0.01)) + top * saw))
    return Series("jvm", hard, [0] * n, xmx=xmx)


SHAPES: dict[str, Callable[[random.Random, int], Series]] = {
    "steady": steady,
    "diurnal": diurnal,
    "leak": leak,
    "spikes": spikes,
    "page-cache": page_cache,
    "jvm": jvm,
}


def make(shape: str, seed: int, days: int = 21) -> Series:
    rng = random.Random(f"{shape}:{seed}")
    return SHAPES[shape](rng, days * PER_DAY)
