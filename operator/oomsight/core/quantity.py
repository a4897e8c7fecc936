"""Kubernetes memory quantities and Go-style durations at the edges; bytes and seconds inside.

Suffixes follow ``k8s.io/apimachinery/pkg/api/resource/quantity.go``: binary ``Ki Mi Gi Ti Pi Ei``
(powers of 1024) and decimal ``k M G T P E`` (powers of 1000); a plain number is bytes. Durations
are Go's (``time.ParseDuration`` units ``ns us ms s m h``, combined as in ``1h30m``, which is what the
MemoryPolicy CRD's CEL rule accepts) plus ``d`` for days.
"""

from __future__ import annotations

import math
import re

from oomsight.core.errors import UsageError

_SUFFIX = {
    "": 1,
    "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
    "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60,
}  # fmt: skip
_QUANTITY = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?(?:[eE][0-9]+)?)\s*([kMGTPE]i?|Ki)?\s*$")
_DURATION = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ns|us|µs|ms|s|m|h|d)")
_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
    "d": 86400.0,
}

MiB = 1 << 20
GiB = 1 << 30


def parse_bytes(text: str | int | float, what: str = "quantity") -> int:
    """``"512Mi"`` → 536870912. Fractions round up to a whole byte. Raises UsageError with a hint."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: expected a memory quantity, got {text!r}", "write e.g. 512Mi or 2Gi")
    if isinstance(text, int | float):
        if text < 0 or not math.isfinite(text):
            raise UsageError(f"{what}: {text!r} is not a size", "write e.g. 512Mi or 2Gi")
        return math.ceil(text)
    m = _QUANTITY.match(text)
    if not m or (m.group(2) or "") not in _SUFFIX:
        raise UsageError(f"{what}: {text!r} is not a memory quantity", "write e.g. 512Mi, 2Gi or 1000000")
    return math.ceil(float(m.group(1)) * _SUFFIX[m.group(2) or ""])


def parse_seconds(text: str | int | float, what: str = "duration") -> float:
    """``"24h"`` → 86400.0, ``"1h30m"`` → 5400.0; a bare number is seconds."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        if text <= 0:
            raise UsageError(f"{what}: {text!r} must be positive", "write e.g. 24h or 8d")
        return float(text)
    s = str(text).strip()
    try:
        value = float(s)
    except ValueError:
        parts = _DURATION.findall(s)
        if not parts or "".join(n + u for n, u in parts) != s:
            raise UsageError(
                f"{what}: {text!r} is not a duration", "write e.g. 90s, 30m, 24h or 8d"
            ) from None
        value = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if value <= 0:
        raise UsageError(f"{what}: {text!r} must be positive", "write e.g. 24h or 8d")
    return value


def format_bytes(n: int) -> str:
    """Shortest exact binary form: 536870912 → ``512Mi``, 1610612736 → ``1536Mi``; else plain bytes."""
    for suffix, size in (("Gi", GiB), ("Mi", MiB), ("Ki", 1 << 10)):
        if n and n % size == 0:
            return f"{n // size}{suffix}"
    return str(n)


def human_bytes(n: float) -> str:
    """For people: ``1.5Gi``, ``300Mi``, ``12Ki`` (one decimal above 1 Gi)."""
    if n >= GiB:
        return f"{n / GiB:.1f}Gi"
    if n >= MiB:
        return f"{n / MiB:.0f}Mi"
    return f"{n / 1024:.0f}Ki"
