"""Memory quantities (apimachinery suffixes) and Go-style durations, as MemoryPolicy fields carry them."""

from __future__ import annotations

import pytest

from oomsight.core.errors import UsageError
from oomsight.core.quantity import format_bytes, human_bytes, parse_bytes, parse_seconds


@pytest.mark.parametrize(
    ("text", "n"),
    [("512Mi", 512 << 20), ("2Gi", 2 << 30), ("1.5Gi", 3 << 29), ("500M", 500_000_000), ("1k", 1000),
     ("64Ki", 65536), ("123", 123), ("1e3", 1000), (" 8Mi ", 8 << 20), (1024, 1024), (0.5, 1)],
)  # fmt: skip
def test_parse_bytes(text: str | int | float, n: int) -> None:
    assert parse_bytes(text) == n


@pytest.mark.parametrize("bad", ["12X", "ki", "-1Mi", "Mi", "", "1 0Mi", True, -3])
def test_parse_bytes_rejects(bad: str | int | bool) -> None:
    with pytest.raises(UsageError, match=r"e\.g\. 512Mi"):
        parse_bytes(bad, "minimum")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("24h", 86400.0), ("192h", 691200.0), ("1h30m", 5400.0), ("90m", 5400.0), ("1500ms", 1.5),
     ("8d", 691200.0), ("45", 45.0), (30, 30.0)],
)  # fmt: skip
def test_parse_seconds(text: str | int, seconds: float) -> None:
    assert parse_seconds(text) == pytest.approx(seconds)


@pytest.mark.parametrize("bad", ["soon", "1x", "h", "24h ago", "-5", "0s", 0])
def test_parse_seconds_rejects(bad: str | int) -> None:
    with pytest.raises(UsageError, match="halfLife"):
        parse_seconds(bad, "halfLife")


@pytest.mark.parametrize(
    ("n", "exact", "human"),
    [
        (512 << 20, "512Mi", "512Mi"),
        (3 << 29, "1536Mi", "1.5Gi"),
        (2 << 30, "2Gi", "2.0Gi"),
        (1000, "1000", "1000B"),
        (9_961_472, "9728Ki", "9.5Mi"),
        (327_155_712, "312Mi", "312Mi"),
        (3 << 40, "3072Gi", "3.0Ti"),
    ],
)
def test_format(n: int, exact: str, human: str) -> None:
    assert (format_bytes(n), human_bytes(n)) == (exact, human)


def test_human_bytes_of_unknown_is_a_dash() -> None:
    assert human_bytes(None) == "-"
