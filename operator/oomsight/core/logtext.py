"""Read kernel logs saved as text into ``Record``s, whatever tool wrote them (pure).

Formats, detected from the first non-empty lines (``detect_format``):

- ``kmsg``: raw /dev/kmsg records ``prio,seq,usec,flags;text`` (Documentation/ABI/testing/dev-kmsg),
  continuation lines `` KEY=value`` after them;
- ``dmesg``: ``[  123.456789] text`` (util-linux dmesg, monotonic seconds since boot);
- ``dmesg-T``: ``[Mon Nov 23 13:02:08 2026] text`` (dmesg -T, local time of that machine);
- ``syslog``: ``Nov 23 13:02:08 host kernel: text`` (journalctl -k default ``short``, rsyslog),
  optionally with ``[  123.456789]`` inside; ``Nov 23 13:02:08.123456`` (``short-precise``) too;
- ``iso``: ``2026-11-23T13:02:08+0000 host kernel: text`` (journalctl ``-o short-iso`` /
  ``short-iso-precise``, rsyslog RFC 3339);
- ``bare``: the kernel's message text alone (what some issue trackers quote); accepted only when it
  holds OOM-report lines.

Lines a format does not explain are kept as plain text unless they are another program's syslog
line, which is dropped. In the timestamped formats, such a line that does not start with blank space
is the rest of the line before it, wrapped where someone pasted it (issue trackers, terminals): it is
joined back to that line. Indented lines stay separate: the kernel itself prints those (Mem-Info).
Comment lines starting with ``#`` before the first log line are a fixture's header and skipped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from oomsight.core.errors import ParseError
from oomsight.core.kmsg import Record, parse_kmsg_record

DETECT_LINES = 50

_KMSG = re.compile(r"^\d+,\d+,\d+,[^;]*;")
_DMESG = re.compile(r"^\[\s*(\d+)\.(\d+)\](?:\[ *[TC]\d+\])? ?")
"""``[  123.456789]``, with the printk caller id ``[ T1234]`` / ``[ C3]`` after it (CONFIG_PRINTK_CALLER)."""
_DMESG_T = re.compile(
    r"^\[(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) (\w{3}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2})(?:[.,](\d+))? (\d{4})\] ?"
)
_SYSLOG = re.compile(
    r"^(\w{3}) +(\d{1,2}) (\d{2}):(\d{2}):(\d{2})(?:\.(\d+))? (\S+) ([^:\s\[]+)(?:\[\d+\])?: ?"
)
_ISO = re.compile(
    r"^(\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)"
    r" (\S+) ([^:\s\[]+)(?:\[\d+\])?: ?"
)
_MONTHS = {
    m: i
    for i, m in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), start=1
    )
}
_OOM_MARKERS = (
    "invoked oom-killer",
    "Killed process ",
    "oom-kill:",
    "or sacrifice child",
    "Memory cgroup out of memory",
    "Out of memory",
)

FORMATS = ("kmsg", "dmesg", "dmesg-T", "syslog", "iso", "bare")


def _usec(sec: str, frac: str) -> int:
    return int(sec) * 1_000_000 + int((frac + "000000")[:6])


def _line_format(line: str) -> str | None:
    if _KMSG.match(line):
        return "kmsg"
    if line.startswith("["):
        if _DMESG.match(line):
            return "dmesg"
        if _DMESG_T.match(line):
            return "dmesg-T"
        return None
    if _ISO.match(line):
        return "iso"
    if _SYSLOG.match(line):
        return "syslog"
    return None


def _content_lines(lines: Iterable[str]) -> Iterator[str]:
    header = True
    for raw in lines:
        line = raw.rstrip("\r\n")
        if header:
            if not line.strip() or line.startswith("#"):
                continue
            header = False
        yield line


def detect_format(lines: Iterable[str]) -> str | None:
    """The format most of the first ``DETECT_LINES`` non-empty lines have; None if not a kernel log."""
    counts: dict[str, int] = {}
    seen = 0
    oom = False
    for line in _content_lines(lines):
        if not line.strip() or line.startswith(" "):
            continue
        fmt = _line_format(line)
        if fmt is not None:
            counts[fmt] = counts.get(fmt, 0) + 1
        elif any(m in line for m in _OOM_MARKERS):
            oom = True
        seen += 1
        if seen >= DETECT_LINES:
            break
    if counts:
        return max(counts, key=lambda k: counts[k])
    return "bare" if oom else None


class LogReader:
    """Turn lines of one saved log into ``Record``s (stateful only for years and kmsg continuations)."""

    def __init__(self, fmt: str, *, year: int | None = None) -> None:
        if fmt not in FORMATS:
            raise ValueError(fmt)
        self.fmt = fmt
        self.year = year
        """syslog lines carry no year; without one their ``wall`` stays None."""
        self.dropped = 0
        """Lines of other programs (syslog) or empty lines that were skipped."""
        self.matched = False
        """Whether the last line given to ``record`` had this format's prefix (a log line of its own)."""

    def record(self, line: str) -> Record | None:
        """One line to one record; None for lines that belong to nothing (kept count in ``dropped``)."""
        line = line.rstrip("\r\n")
        self.matched = True
        if not line.strip():
            self.dropped += 1
            return None
        if _KMSG.match(line):
            r = parse_kmsg_record(line)
            if r is not None:
                return r
        if line.startswith("["):
            m = _DMESG.match(line)
            if m is not None:
                return Record(text=line[m.end() :], usec=_usec(m.group(1), m.group(2)))
            m = _DMESG_T.match(line)
            if m is not None:
                return Record(text=line[m.end() :], wall=self._wall_t(m))
        if line[:1].isdigit() and (m := _ISO.match(line)) is not None:
            if m.group(3) != "kernel":
                self.dropped += 1
                return None
            return self._with_inner_dmesg(line[m.end() :], _iso(m.group(1)))
        if line[:1].isalpha() and (m := _SYSLOG.match(line)) is not None and m.group(1) in _MONTHS:
            if m.group(8) != "kernel":
                self.dropped += 1
                return None
            return self._with_inner_dmesg(line[m.end() :], self._wall_syslog(m))
        self.matched = False
        return Record(text=line)

    @staticmethod
    def _with_inner_dmesg(text: str, wall: datetime | None) -> Record:
        m = _DMESG.match(text)
        if m is not None:
            return Record(text=text[m.end() :], usec=_usec(m.group(1), m.group(2)), wall=wall)
        return Record(text=text, wall=wall)

    @staticmethod
    def _wall_t(m: re.Match[str]) -> datetime | None:
        return _wall(m, int(m.group(7)))

    def _wall_syslog(self, m: re.Match[str]) -> datetime | None:
        return None if self.year is None else _wall(m, self.year)


def _wall(m: re.Match[str], year: int) -> datetime | None:
    """Groups 1-6 of a ``Mon DD HH:MM:SS[.frac]`` match as a datetime in ``year`` (None if impossible)."""
    try:
        micro = int((m.group(6) or "0").ljust(6, "0")[:6])
        month, day = _MONTHS[m.group(1)], int(m.group(2))
        return datetime(year, month, day, int(m.group(3)), int(m.group(4)), int(m.group(5)), micro)
    except (KeyError, ValueError):
        return None


def _iso(stamp: str) -> datetime | None:
    s = stamp.replace(",", ".").replace(" ", "T", 1)
    if s.endswith("Z"):
        s = s[:-1] + "+00:00"
    elif len(s) > 5 and s[-5] in "+-" and s[-4:].isdigit():
        s = s[:-2] + ":" + s[-2:]
    try:
        dt = datetime.fromisoformat(s)
    except ValueError:
        return None
    return dt.astimezone(UTC) if dt.tzinfo is not None else dt


def iter_records(lines: Iterable[str], fmt: str, *, year: int | None = None) -> Iterator[Record]:
    """Records from ``lines`` read as ``fmt``. kmsg continuation lines (`` KEY=value``) join their record."""
    if fmt in _WRAPPABLE:
        yield from _unwrapped(lines, LogReader(fmt, year=year))
        return
    reader = LogReader(fmt, year=year)
    pending: Record | None = None
    extra: list[tuple[str, str]] = []
    for line in _content_lines(lines):
        if fmt == "kmsg" and pending is not None and line.startswith(" ") and "=" in line:
            k, _, v = line[1:].partition("=")
            extra.append((k, v))
            continue
        if pending is not None:
            yield _joined(pending, extra)
            pending, extra = None, []
        r = reader.record(line)
        if r is None:
            continue
        if fmt == "kmsg" and r.seq is not None:
            pending = r
        else:
            yield r
    if pending is not None:
        yield _joined(pending, extra)


_WRAPPABLE = frozenset(("dmesg", "dmesg-T", "syslog", "iso"))


def _unwrapped(lines: Iterable[str], reader: LogReader) -> Iterator[Record]:
    """Records of a timestamped log, with lines wrapped by a paste joined back (see module doc)."""
    held: Record | None = None
    for line in _content_lines(lines):
        r = reader.record(line)
        if r is None:
            continue
        if not reader.matched and held is not None and line[:1] not in (" ", "\t"):
            held = held._replace(text=held.text + line.rstrip("\r\n"))
            continue
        if held is not None:
            yield held
        held = r
    if held is not None:
        yield held


def _joined(r: Record, extra: list[tuple[str, str]]) -> Record:
    return r._replace(fields=r.fields + tuple(extra)) if extra else r


def parse_log(text: str, *, name: str = "input", year: int | None = None) -> tuple[str, list[Record]]:
    """Detect the format of a whole saved log and read it: ``(format, records)``.

    Raises ``ParseError`` (one line, with what to do) when nothing in it looks like a kernel log.
    """
    lines = text.splitlines()
    fmt = detect_format(lines)
    if fmt is None:
        raise ParseError(
            f"{name} does not look like a kernel log (dmesg, journalctl -k, syslog or /dev/kmsg)",
            "save it with `dmesg`, `dmesg -T`, `journalctl -k` or `cat /dev/kmsg` and pass that file",
        )
    return fmt, list(iter_records(lines, fmt, year=year))
