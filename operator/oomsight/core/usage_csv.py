"""The exported working-set series that ``oomsight recommend --from-csv`` reads.

One row per reading, with a header. Required columns: ``timestamp`` (ISO 8601, e.g.
``2026-11-23T10:00:00Z``, naive = UTC; or epoch seconds), ``workload``, ``container``,
``working_set_bytes``. Optional: ``pod`` (replica; peaks are taken per replica, then merged),
``limit_bytes``, ``oom_killed`` (``0/1/true/false/yes/no``, empty = 0: the container was OOM-killed
at this time, under ``limit_bytes`` if given), ``anon_bytes`` with ``shmem_bytes`` and
``kernel_bytes`` (the non-reclaimable breakdown; with it, page cache stops ratcheting the limit), and
``jvm_max_heap_bytes`` (``-Xmx``). Byte columns take whole numbers or decimals (``3.2e+08``, as
Prometheus exports them). Extra columns are ignored. Any bad cell is one ``ParseError`` naming the
line and the column.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from oomsight.core.errors import ParseError

REQUIRED = ("timestamp", "workload", "container", "working_set_bytes")
OPTIONAL = (
    "pod", "limit_bytes", "oom_killed", "anon_bytes", "shmem_bytes", "kernel_bytes", "jvm_max_heap_bytes",
)  # fmt: skip
_EPOCH_LIMIT = 253402300800.0
"""Epoch seconds of 10000-01-01: the end of what ISO 8601 timestamps (and ``datetime``) can say."""
_TRUE = {"1", "true", "yes", "y", "t"}
_FALSE = {"0", "false", "no", "n", "f", ""}


@dataclass(frozen=True, slots=True)
class UsageRow:
    line: int
    t: float
    workload: str
    container: str
    working_set_bytes: int
    pod: str = ""
    limit_bytes: int | None = None
    oom_killed: bool = False
    anon_bytes: int | None = None
    shmem_bytes: int | None = None
    kernel_bytes: int | None = None
    jvm_max_heap_bytes: int | None = None


def _where(source: str, line: int, column: str) -> str:
    return f"{source}: line {line}, column {column}"


def parse_timestamp(text: str, source: str, line: int) -> float:
    s = text.strip()
    bad = ParseError(
        f"{_where(source, line, 'timestamp')}: {text!r} is not a time",
        "use ISO 8601 (2026-11-23T10:00:00Z) or epoch seconds",
    )
    try:
        epoch = float(s)
    except ValueError:
        pass
    else:
        # inf, nan and seconds past year 9999 are no time (float("1e999") is inf, not an error).
        if not math.isfinite(epoch) or abs(epoch) >= _EPOCH_LIMIT:
            raise bad
        return epoch
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        raise bad from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


def parse_size(text: str, source: str, line: int, column: str) -> int:
    try:
        value = float(text.strip())
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise ParseError(
            f"{_where(source, line, column)}: {text!r} is not a number of bytes",
            "write a non-negative number such as 536870912",
        )
    return round(value)


def _bool(text: str, source: str, line: int) -> bool:
    v = text.strip().lower()
    if v in _TRUE:
        return True
    if v in _FALSE:
        return False
    raise ParseError(
        f"{_where(source, line, 'oom_killed')}: {text!r} is not a boolean", "write 0, 1, true or false"
    )


def parse_usage_csv(lines: Iterable[str], source: str = "<csv>") -> list[UsageRow]:
    """Rows in file order. Raises ParseError (one line: where and what) on the first bad cell."""
    reader = csv.DictReader(lines)
    header = [h.strip() for h in (reader.fieldnames or [])]
    if not header:
        raise ParseError(
            f"{source}: empty file, no header", f"the first line must name {', '.join(REQUIRED)}"
        )
    reader.fieldnames = header
    missing = [c for c in REQUIRED if c not in header]
    if missing:
        raise ParseError(
            f"{source}: line 1: missing column(s) {', '.join(missing)}",
            f"the header must name {', '.join(REQUIRED)} (optional: {', '.join(OPTIONAL)})",
        )
    rows: list[UsageRow] = []
    for rec in reader:
        line = reader.line_num
        if None in rec:
            raise ParseError(
                f"{source}: line {line}: more cells than header columns", "quote cells with commas"
            )
        cells = {k: (v or "").strip() for k, v in rec.items()}
        for c in REQUIRED:
            if not cells.get(c):
                raise ParseError(
                    f"{_where(source, line, c)}: empty", f"every row needs {', '.join(REQUIRED)}"
                )

        def size(column: str, cells: dict[str, str] = cells, line: int = line) -> int | None:
            v = cells.get(column, "")
            return parse_size(v, source, line, column) if v else None

        ws = size("working_set_bytes")
        assert ws is not None
        rows.append(
            UsageRow(
                line=line,
                t=parse_timestamp(cells["timestamp"], source, line),
                workload=cells["workload"],
                container=cells["container"],
                working_set_bytes=ws,
                pod=cells.get("pod", ""),
                limit_bytes=size("limit_bytes") or None,
                oom_killed=_bool(cells.get("oom_killed", ""), source, line),
                anon_bytes=size("anon_bytes"),
                shmem_bytes=size("shmem_bytes"),
                kernel_bytes=size("kernel_bytes"),
                jvm_max_heap_bytes=size("jvm_max_heap_bytes") or None,
            )
        )
    return rows
