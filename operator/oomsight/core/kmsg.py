"""One kernel log record, whatever it was read from.

``/dev/kmsg`` hands out one record per read(2) (Documentation/ABI/testing/dev-kmsg)::

    <prefix>,<seq>,<usec>,<flags>[,<more>];<message>\\n
     KEY=value\\n            (zero or more continuation lines, each starting with a space)

``prefix`` is ``facility << 3 | level``; ``usec`` is CLOCK_MONOTONIC microseconds since boot;
``flags`` is ``-`` or ``c`` (a continuation fragment). Non-printable bytes in the message are
escaped as ``\\xNN``.

Text logs saved elsewhere (``dmesg``, ``dmesg -T``, journald, syslog) carry less: maybe a time,
never a sequence number. ``Record`` holds what is known and leaves the rest ``None``, so the OOM
assembly downstream works the same on both.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import NamedTuple

_ESCAPE = re.compile(r"\\x([0-9a-fA-F]{2})")


class Record(NamedTuple):
    """A kernel log message with whatever metadata its source carried.

    A NamedTuple rather than a frozen dataclass: a node in an OOM storm emits hundreds of thousands
    of these, and a tuple is built about five times faster (bench/bench_parser.py).
    """

    text: str
    seq: int | None = None
    """/dev/kmsg sequence number; strictly increasing within a boot."""
    usec: int | None = None
    """Monotonic microseconds since boot (``[  123.456789]`` in dmesg)."""
    wall: datetime | None = None
    """Wall-clock time when the source says it (dmesg -T, journald, syslog) or it was computed."""
    level: int | None = None
    """Syslog level 0 (emerg) .. 7 (debug)."""
    facility: int | None = None
    fields: tuple[tuple[str, str], ...] = ()
    """Continuation ``KEY=value`` dictionary, e.g. SUBSYSTEM and DEVICE."""


def unescape(text: str) -> str:
    """Undo /dev/kmsg's ``\\xNN`` escaping of bytes outside printable ASCII."""
    if "\\x" not in text:
        return text
    raw = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    # The escaped bytes are UTF-8 sequences split into latin-1 code points; rejoin them.
    try:
        return raw.encode("latin-1").decode("utf-8", errors="replace")
    except UnicodeEncodeError:
        return raw


def parse_kmsg_record(raw: str) -> Record | None:
    """Parse one /dev/kmsg record (what one read(2) returns). None when it is not one."""
    semi = raw.find(";")
    if semi < 0:
        return None
    meta = raw[:semi].split(",", 3)
    if len(meta) < 3:
        return None
    try:
        prefix = int(meta[0])
        seq = int(meta[1])
        usec = int(meta[2])
    except ValueError:
        return None
    if prefix < 0 or seq < 0 or usec < 0:
        return None
    nl = raw.find("\n", semi)
    if nl < 0:  # the common case: no continuation dictionary
        text = raw[semi + 1 :]
        if "\\x" in text:
            text = unescape(text)
        return Record(text, seq, usec, None, prefix & 7, prefix >> 3, ())
    text = unescape(raw[semi + 1 : nl])
    fields = tuple(
        (k, unescape(v))
        for k, _, v in (ln[1:].partition("=") for ln in raw[nl + 1 :].split("\n") if ln.startswith(" "))
    )
    return Record(text, seq, usec, None, prefix & 7, prefix >> 3, fields)
