"""High-working-set warnings with hysteresis.

A container whose working set hovers around the threshold would otherwise warn at every sweep. The
warning fires when working set / effective limit reaches ``warn`` and re-arms only after the ratio
drops below ``clear`` (by default 5 points lower), the scheme Prometheus alert rules reach with
``for:`` and Kubernetes' eviction manager with ``evictionMinimumReclaim``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal

DEFAULT_WARN = 0.90
HYSTERESIS = 0.05

Transition = Literal["fired", "cleared", "none"]


@dataclass(frozen=True, slots=True)
class Watermark:
    warn: float = DEFAULT_WARN
    clear: float = DEFAULT_WARN - HYSTERESIS

    @staticmethod
    @functools.cache
    def at(warn: float | None) -> Watermark:
        """A watermark warning at ``warn`` (a fraction; None → 90%) and clearing 5 points lower.

        Asked once per container per sweep, with a handful of thresholds: made once for each."""
        w = DEFAULT_WARN if warn is None else warn
        return Watermark(w, max(0.0, w - HYSTERESIS))


def step(active: bool, ratio: float | None, mark: Watermark) -> tuple[bool, Transition]:
    """Next state of one container's warning given its working set ÷ effective limit.

    ``ratio`` None (no limit, or no reading) leaves the state as it was.
    """
    if ratio is None:
        return active, "none"
    if not active and ratio >= mark.warn:
        return True, "fired"
    if active and ratio < mark.clear:
        return False, "cleared"
    return active, "none"
