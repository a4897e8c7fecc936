"""Kubernetes memory quantities and Go-style durations at the edges; bytes and seconds inside.

Suffixes follow ``k8s.io/apimachinery/pkg/api/resource/quantity.go``: binary ``Ki Mi Gi Ti Pi Ei``
(powers of 1024) and decimal ``k M G T P E`` (powers of 1000); a plain number is bytes. Durations
are Go's (``time.ParseDuration`` units ``ns us ms s m h``, combined as in ``1h30m``, which is what the
MemoryPolicy CRD's CEL rule accepts) plus ``d`` for days.
"""

from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation

from oomsight.core.errors import ParseError, UsageError

_SUFFIX = {
    "n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1),
    "k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12),
    "P": Decimal(10**15), "E": Decimal(10**18),
    "Ki": Decimal(1 << 10), "Mi": Decimal(1 << 20), "Gi": Decimal(1 << 30), "Ti": Decimal(1 << 40),
    "Pi": Decimal(1 << 50), "Ei": Decimal(1 << 60),
}  # fmt: skip
_QUANTITY = re.compile(r"^([+-]?[0-9.]+(?:[eE][+-]?[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E)?$")
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


def parse_quantity(text: str) -> int:
    """A Kubernetes quantity as whole bytes, exactly (``"512Mi"`` → 536870912, ``"100m"`` → 1).

    Fractions round up, as the API server rounds memory. Raises ParseError for anything else.
    """
    m = _QUANTITY.match(text.strip())
    if m is None:
        raise ParseError(f"not a Kubernetes quantity: {text!r}", "use a value like 512Mi or 1G")
    try:
        scaled = Decimal(m.group(1)) * _SUFFIX[m.group(2) or ""]
    except InvalidOperation as err:
        raise ParseError(f"not a Kubernetes quantity: {text!r}", "use a value like 512Mi or 1G") from err
    whole = int(scaled)
    return whole + 1 if scaled > whole else whole


def parse_bytes(text: str | int | float, what: str = "quantity") -> int:
    """``"512Mi"`` → 536870912. Fractions round up to a whole byte. Raises UsageError with a hint."""
    if isinstance(text, bool):
        raise UsageError(f"{what}: expected a memory quantity, got {text!r}", "write e.g. 512Mi or 2Gi")
    if isinstance(text, int | float):
        if text < 0 or not math.isfinite(text):
            raise UsageError(f"{what}: {text!r} is not a size", "write e.g. 512Mi or 2Gi")
        return math.ceil(text)
    try:
        n = parse_quantity(text)
    except ParseError:
        n = -1
    if n < 0 or text.strip().startswith("-"):
        raise UsageError(f"{what}: {text!r} is not a memory quantity", "write e.g. 512Mi, 2Gi or 1000000")
    return n


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


def human_bytes(n: float | None) -> str:
    """For tables and short reasons: binary units, about three significant digits: ``1.5Gi``, ``312Mi``,
    ``9.5Mi``, ``512B``; ``-`` for unknown."""
    if n is None:
        return "-"
    value, unit = float(n), "B"
    for bigger in ("Ki", "Mi", "Gi", "Ti"):
        if abs(value) < 1024:
            break
        value, unit = value / 1024, bigger
    if unit == "B":
        return f"{int(value)}B"
    return f"{value:.1f}{unit}" if abs(value) < 10 else f"{value:.0f}{unit}"


def prose_bytes(n: int | None) -> str:
    """Bytes for a sentence a person reads (Event notes, explanations): ``1.5 GiB``, ``96.0 MiB``,
    ``412 KiB``, ``12 B``; ``unknown`` for None."""
    if n is None:
        return "unknown"
    for unit, size in (("GiB", GiB), ("MiB", MiB)):
        if abs(n) >= size:
            return f"{n / size:.1f} {unit}"
    return f"{n // 1024} KiB" if abs(n) >= 1024 else f"{n} B"
