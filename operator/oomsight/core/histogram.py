"""A decaying histogram with exponentially growing buckets: the recommender's memory of past peaks.

The idea is the VPA recommender's (kubernetes/autoscaler, ``vertical-pod-autoscaler/pkg/recommender/
util/histogram.go`` and ``util/decaying_histogram.go``): each sample adds its weight to one bucket;
bucket ``i`` starts at ``first * (growth**i - 1) / (growth - 1)``, so every bucket is ``growth`` times
wider than the one before and the relative error is bounded; a sample taken at time ``t`` is stored
with weight ``w * 2**((t - ref) / half_life)``, so that relative to a sample taken now it has lost half
its importance per half-life (only relative weights matter, so nothing is ever rewritten; ``ref`` moves
forward, and all weights are scaled down, when the exponent grows large). A percentile is the *end* of
the bucket where the cumulative weight reaches it, so it never under-estimates by more than a bucket.

What differs from VPA: buckets are sparse (a dict), so a 1 MiB first bucket and 2% growth cost nothing
for sizes nobody uses (VPA: 10 MB and 5%, i.e. a 25 MB bucket around 300 MB, which is 8% of pure
rounding before any margin); and ``percentile(..., now=, window=)`` can ignore buckets whose weight is
too small to hold even one sample younger than the history window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oomsight.core.errors import ParseError

MAX_EXPONENT = 64.0
"""Re-base ``ref`` when a new sample's exponent exceeds this many half-lives (2**64 still fits a float
comfortably); VPA's ``maxDecayExponent`` is 100."""

PRUNE = 1e-9
"""On re-basing, drop buckets lighter than this share of the total: they cannot move a percentile."""
_NO_WEIGHT_REACHES = 1000.0
"""A bucket's weight stays below ``2**MAX_EXPONENT`` times its sample count, far below ``2**1000``."""


@dataclass(frozen=True, slots=True)
class Buckets:
    """Exponential bucketing: ``first`` bytes wide at first, each next bucket ``growth`` times wider."""

    first: float = float(1 << 20)
    growth: float = 1.02

    def index(self, value: float) -> int:
        if value < self.first:
            return 0
        i = math.floor(math.log1p(value * (self.growth - 1.0) / self.first) / math.log(self.growth))
        # Guard against float error at exact boundaries.
        while self.start(i) > value:
            i -= 1
        while self.start(i + 1) <= value:
            i += 1
        return i

    def start(self, i: int) -> float:
        if i <= 0:
            return 0.0
        return self.first * (self.growth**i - 1.0) / (self.growth - 1.0)

    def end(self, i: int) -> float:
        return self.start(i + 1)


VPA_BUCKETS = Buckets(first=1e7, growth=1.05)
"""VPA's memory bucketing (``model/aggregations_config.go``: smallest bucket 10 MB, 5% growth)."""


class DecayingHistogram:
    """Weighted samples in exponential buckets, each losing half its weight per ``half_life`` seconds."""

    __slots__ = ("buckets", "half_life", "ref", "total", "weights")

    def __init__(self, half_life: float, buckets: Buckets = Buckets(), ref: float | None = None) -> None:
        if half_life <= 0:
            raise ValueError("half_life must be positive")
        self.buckets = buckets
        self.half_life = float(half_life)
        self.ref: float | None = ref
        self.weights: dict[int, float] = {}
        self.total = 0.0

    def __len__(self) -> int:
        return len(self.weights)

    @property
    def empty(self) -> bool:
        return self.total <= 0.0

    def _factor(self, t: float) -> float:
        if self.ref is None:
            self.ref = t
        exponent = (t - self.ref) / self.half_life
        if exponent > MAX_EXPONENT:
            self._rebase(t)
            exponent = (t - self.ref) / self.half_life
        return math.pow(2.0, exponent)

    def _rebase(self, new_ref: float) -> None:
        assert self.ref is not None
        scale = 2.0 ** ((self.ref - new_ref) / self.half_life)
        self.ref = new_ref
        self.weights = {i: w * scale for i, w in self.weights.items()}
        self.total *= scale
        floor = self.total * PRUNE
        for i in [i for i, w in self.weights.items() if w < floor]:
            self.total -= self.weights.pop(i)

    def add(self, value: float, t: float, weight: float = 1.0) -> None:
        """Add one sample of ``value`` taken at ``t`` (seconds) with ``weight`` (as if taken now)."""
        if weight < 0 or value < 0:
            raise ValueError("value and weight must be non-negative")
        w = weight * self._factor(t)
        i = self.buckets.index(value)
        self.weights[i] = self.weights.get(i, 0.0) + w
        self.total += w

    def weight_at(self, now: float) -> float:
        """Total weight expressed in "samples taken at ``now``" (e.g. 3 samples one half-life ago → 1.5)."""
        if self.ref is None:
            return 0.0
        return self.total * math.pow(2.0, (self.ref - now) / self.half_life)

    def merge(self, other: DecayingHistogram) -> None:
        """Add every sample of ``other`` (same buckets and half-life) into this histogram."""
        if other.buckets != self.buckets or other.half_life != self.half_life:
            raise ValueError("can only merge histograms with the same buckets and half-life")
        if other.ref is None:
            return
        scale = 2.0 ** ((other.ref - self._ref_for(other.ref)) / self.half_life)
        for i, w in other.weights.items():
            self.weights[i] = self.weights.get(i, 0.0) + w * scale
        self.total += other.total * scale

    def _ref_for(self, t: float) -> float:
        self._factor(t)  # sets ref, re-bases if t is far ahead
        assert self.ref is not None
        return self.ref

    def copy(self) -> DecayingHistogram:
        h = DecayingHistogram(self.half_life, self.buckets, self.ref)
        h.weights = dict(self.weights)
        h.total = self.total
        return h

    def percentile(self, p: float, now: float | None = None, window: float | None = None) -> float:
        """The end of the bucket where the cumulative weight reaches ``p`` (0 < p <= 1); 0.0 when empty.

        With ``now`` and ``window``, buckets whose whole weight is less than one sample taken ``window``
        seconds before ``now`` are left out: nothing in them can be younger than the window.
        """
        if self.total <= 0.0 or self.ref is None:
            return 0.0
        items = sorted(self.weights.items())
        if now is not None and window is not None:
            exponent = (now - window - self.ref) / self.half_life
            if exponent > _NO_WEIGHT_REACHES:
                return 0.0  # every sample is older than the window (and 2.0**exponent would overflow)
            cutoff = 2.0**exponent * (1.0 - 1e-9)
            items = [(i, w) for i, w in items if w >= cutoff]
            if not items:
                return 0.0
        total = sum(w for _, w in items)
        threshold = p * total
        running = 0.0
        for i, w in items:
            running += w
            if running >= threshold * (1.0 - 1e-12):
                return self.buckets.end(i)
        return self.buckets.end(items[-1][0])

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state: ``{"ref": t, "halfLife": s, "first": b, "growth": g, "weights": {"i": w}}``."""
        return {
            "ref": self.ref,
            "halfLife": self.half_life,
            "first": self.buckets.first,
            "growth": self.buckets.growth,
            "weights": {str(i): w for i, w in sorted(self.weights.items())},
        }

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> DecayingHistogram:
        try:
            h = DecayingHistogram(
                float(data["halfLife"]),
                Buckets(float(data["first"]), float(data["growth"])),
                None if data.get("ref") is None else float(data["ref"]),
            )
            h.weights = {int(k): float(v) for k, v in dict(data.get("weights", {})).items()}
        except (KeyError, TypeError, ValueError) as err:
            raise ParseError(
                f"histogram state is malformed ({err})", "rebuild it from samples or drop the saved state"
            ) from None
        if any(w < 0 for w in h.weights.values()):
            raise ParseError("histogram state has a negative weight", "drop the saved state")
        h.total = sum(h.weights.values())
        return h
