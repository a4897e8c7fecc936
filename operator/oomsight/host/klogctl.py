"""Read the kernel log with syslog(2) (glibc ``klogctl``), where ``/dev/kmsg`` does not open.

Why: under runc an unprivileged container cannot open a hostPath ``/dev/kmsg`` (char 1:11 is not in
runc's device allow-list: EPERM whatever the capabilities), while syslog(2) needs no device, only
CAP_SYSLOG when ``kernel.dmesg_restrict=1`` (and containerd's default seccomp profile allows the
call when CAP_SYSLOG is granted).

The interface (kernel/printk/printk.c ``do_syslog``, ``syslog_print_all``, ``record_print_text``):

- ``SYSLOG_ACTION_READ_ALL`` (3) copies the whole ring, oldest first, without consuming anything;
  ``SYSLOG_ACTION_SIZE_BUFFER`` (10) is the ring's size. Actions 2 and 4 and ``/proc/kmsg`` consume
  what they read (another reader would lose it): never used here.
- Every line is ``<prio>[ secs.usecs] text``; a record with embedded newlines gives one line per
  embedded line, each with the record's prefix (seen on 6.18 here). There is no sequence number
  and no way to wait: we poll.
- The time prefix exists only with ``printk.time=Y`` (the default); without it records cannot be
  placed, and this source refuses to start (one line, what to do).

Resuming without sequence numbers. Each line gets a *pseudo sequence number*,
``usec * 1000 + n`` (``n`` counts earlier lines with the same microsecond, e.g. the lines of one
multi-line record), raised to the previous line's plus one where a CPU stamped a record slightly
earlier than the one stored before it. It is computed from the ring's contents alone, so a restart
that reads the same ring gives the same numbers: the agent's cursor, its ``floor`` and the Event
names (boot ID + sequence) work as with ``/dev/kmsg``.

Following. Between polls the reader keeps the last ``TAIL_LINES`` lines it handed out, verbatim; the
next ``READ_ALL`` is searched (from the end, in C: ``bytes.rfind``) for that block, and only what
follows it is parsed. When the block is gone, the ring moved past it between two polls: a ``Gap``
whose size is unknown (``Gap.lost`` is 0, ``unknown`` is True), unless the ring is far from full,
which means someone cleared it (``dmesg -C``) and nothing was lost. The OOM-kill counters of the
cgroups cover kills whose lines were lost either way.

Polling rate (``Pacer``): every ``SLOW_SECONDS`` when the log is quiet, ``FAST_SECONDS`` after new
lines, and ``SETTLE_SECONDS`` after lines that may be the start of an OOM report (so that the rest
of it, printed in the same kernel call, is read before the report is assembled). One poll copies
and formats the whole ring in the kernel: bench/bench_klogctl.py measures it.
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import re
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from oomsight.core.kmsg import Record
from oomsight.host.errors import HostAccessDenied, HostError
from oomsight.host.kmsg import GAPS_KEPT, Cursor, Gap, WallClock, read_boot_id

SYSLOG_ACTION_READ_ALL = 3
SYSLOG_ACTION_SIZE_BUFFER = 10
TAIL_LINES = 4
"""Lines remembered verbatim to find our place in the next copy of the ring (µs stamps: unique)."""
SLOW_SECONDS = 1.0
FAST_SECONDS = 0.1
SETTLE_SECONDS = 0.005
FULL_RATIO = 0.75
"""A ring filled less than this cannot have overwritten anything: a lost anchor means it was cleared."""
_OOM_HINTS = (b"oom", b"Killed process", b"Memory cgroup", b"Out of memory")

_LINE = re.compile(rb"<(\d+)>\[\s*(\d+)\.(\d+)\](?:\[ *[TC]\d+\])? ?")
"""``<prio>[ secs.usecs]``, with the printk caller id ``[ T123]`` after it (CONFIG_PRINTK_CALLER)."""


@functools.cache
def _libc_klogctl() -> Any:
    """glibc's (or musl's) ``klogctl(type, buf, len)`` through ctypes, loaded once."""
    fn = ctypes.CDLL(None, use_errno=True).klogctl
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def _klogctl(action: int, buf: ctypes.Array[ctypes.c_char] | None, size: int) -> int:
    klogctl = _libc_klogctl()
    while True:
        n = int(klogctl(action, buf, size))
        if n >= 0:
            return n
        err = ctypes.get_errno()
        if err != errno.EINTR:
            raise OSError(err, os.strerror(err))


def syslog_error(err: OSError, proc_root: str = "/proc") -> HostError:
    """One line on why syslog(2) is refused: CAP_SYSLOG, dmesg_restrict or a seccomp profile."""
    if err.errno in (errno.EPERM, errno.EACCES):
        return HostAccessDenied(
            "syslog(2) READ_ALL denied (EPERM)",
            "add CAP_SYSLOG to the container's securityContext.capabilities (kernel.dmesg_restrict=1 "
            "requires it, and containerd's default seccomp profile allows syslog only with it)",
            path="syslog(2)",
        )
    if err.errno == errno.ENOSYS:
        return HostError("syslog(2) is not available (ENOSYS)", "a seccomp profile may block it")
    return HostError(f"syslog(2) failed: {err.strerror or err}", path="syslog(2)")


@dataclass
class Pacer:
    """When to poll next: slow when quiet, fast after news, at once after what may be an OOM report."""

    slow: float = SLOW_SECONDS
    fast: float = FAST_SECONDS
    settle: float = SETTLE_SECONDS
    next_at: float = 0.0

    def polled(self, now: float, new_bytes: bytes) -> None:
        if not new_bytes:
            gap = self.slow
        elif any(h in new_bytes for h in _OOM_HINTS):
            gap = self.settle
        else:
            gap = self.fast
        self.next_at = now + gap


class KlogctlReader:
    """Follows the kernel log through syslog(2) ``READ_ALL``; yields ``Record``s and ``Gap``s in order.

    The same surface as ``oomsight.host.kmsg.KmsgReader`` (``read_available``, ``wait``, ``cursor``,
    ``records_read``, ``malformed``, ``gaps``), with pseudo sequence numbers (module docstring).
    ``cursor``: resume after the line numbered ``cursor.next_seq - 1`` (of this boot), replaying the
    ``rewind`` lines before it so a report cut by a restart is read whole; without one, start at the
    oldest line in the ring (``start="boot"``) or after the newest (``start="now"``).
    """

    source = "syslog"

    def __init__(
        self,
        *,
        proc_root: str = "/proc",
        cursor: Cursor | None = None,
        rewind: int = 0,
        start: str = "boot",
        pacer: Pacer | None = None,
    ) -> None:
        self.proc_root = proc_root
        self.boot_id = read_boot_id(os.path.join(proc_root, "sys/kernel/random/boot_id"))
        self.discarded_cursor: Cursor | None = None
        if cursor is not None and cursor.boot_id != self.boot_id:
            self.discarded_cursor, cursor = cursor, None
        try:
            ring = _klogctl(SYSLOG_ACTION_SIZE_BUFFER, None, 0)
        except OSError as err:
            raise syslog_error(err, proc_root) from err
        # Formatted lines are longer than the ring's records (the prefix): room for all of them.
        self.size = 2 * max(ring, 4096)
        self.ring_bytes = ring
        self._buf = ctypes.create_string_buffer(self.size)
        self.pacer = pacer or Pacer()
        self.records_read = 0
        self.malformed = 0
        self.overruns = 0
        self.polls = 0
        self.gaps: deque[Gap] = deque(maxlen=GAPS_KEPT)
        self._tail: list[bytes] = []
        self._last_seq = -1
        self._last_usec = -1
        self._same_usec = 0
        self._handed = -1
        """Pseudo sequence number of the last line handed out by ``read_available``."""
        self._pending: deque[Record | Gap] = deque()
        data = self._read_all()
        lines = data.split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        if lines and _LINE.match(lines[-1]) is None:
            raise HostError(
                "syslog(2) lines carry no [seconds.micros] time stamp (printk.time is off)",
                "set it with `echo Y > /sys/module/printk/parameters/time` on the node (or boot with "
                "printk.time=1): without it the log cannot be followed, and only the OOM-kill counters "
                "are used",
            )
        records = self._parse(lines)
        if cursor is not None:
            idx = next((i for i, r in enumerate(records) if (r.seq or 0) >= cursor.next_seq), len(records))
            if idx == 0 and records and len(data) >= FULL_RATIO * self.ring_bytes:
                # The line we stopped after is gone from a full ring: lines after it may be too.
                self._gap(cursor.next_seq, records[0].seq or cursor.next_seq, records[0].usec)
            self._pending += records[max(0, idx - rewind) :]
        elif start == "boot":
            self._pending += records
        self._tail = lines[-TAIL_LINES:]
        self.pacer.polled(time.monotonic(), b"")

    @classmethod
    def from_host_root(cls, host_root: str = "/", **kw: object) -> KlogctlReader:
        return cls(proc_root=os.path.join(host_root, "proc"), **kw)  # type: ignore[arg-type]

    # -- lifecycle (nothing to close: no descriptor) -------------------------------------------------
    def close(self) -> None:
        self._pending.clear()

    def __enter__(self) -> KlogctlReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def cursor(self) -> Cursor | None:
        """Resume point after everything handed out so far (None before the first line)."""
        return Cursor(self.boot_id, self._handed + 1) if self._handed >= 0 else None

    # -- reading -------------------------------------------------------------------------------------
    def _read_all(self) -> bytes:
        try:
            n = _klogctl(SYSLOG_ACTION_READ_ALL, self._buf, self.size)
        except OSError as err:
            raise syslog_error(err, self.proc_root) from err
        self.polls += 1
        return ctypes.string_at(self._buf, n)  # copies n bytes (``.raw`` would copy the whole buffer)

    def _gap(self, expected: int, nxt: int, usec: int | None) -> None:
        gap = Gap(expected, nxt, usec, unknown=True)
        self.gaps.append(gap)
        self.overruns += 1
        self._pending.append(gap)

    def _parse(self, lines: list[bytes]) -> list[Record]:
        out: list[Record] = []
        clock = WallClock.now()
        for raw in lines:
            m = _LINE.match(raw)
            if m is None:
                self.malformed += 1
                continue
            usec = int(m.group(2)) * 1_000_000 + int((m.group(3) + b"000000")[:6])
            if usec == self._last_usec:
                self._same_usec += 1
            else:
                self._last_usec, self._same_usec = usec, 0
            seq = max(usec * 1000 + self._same_usec, self._last_seq + 1)
            self._last_seq = seq
            prio = int(m.group(1))
            text = raw[m.end() :].decode("utf-8", errors="replace")
            out.append(Record(text, seq, usec, clock.wall(usec), prio & 7, prio >> 3, ()))
        return out

    def _after_tail(self, data: bytes) -> bytes | None:
        """What follows our last lines in ``data``; None when they are gone. The whole remembered
        block is tried first, then the last line alone (the block's oldest line may just have been
        overwritten while the newest is still there)."""
        for k in (len(self._tail), 1):
            block = b"\n".join(self._tail[-k:]) + b"\n"
            at = data.rfind(block)
            if at == 0 or (at > 0 and data[at - 1 : at] == b"\n"):
                return data[at + len(block) :]
        return None

    def poll(self) -> bool:
        """Copy the ring now and queue what is new since the last copy; True if anything is queued."""
        data = self._read_all()
        new = data
        if self._tail:
            after = self._after_tail(data)
            if after is not None:
                new = after
            elif len(data) >= FULL_RATIO * self.ring_bytes:
                # Our last lines were overwritten between two polls: lines lost, how many is unknown.
                first = _LINE.match(data)
                usec = None
                if first is not None:
                    usec = int(first.group(2)) * 1_000_000 + int((first.group(3) + b"000000")[:6])
                self._gap(self._last_seq + 1, max(self._last_seq + 1, (usec or 0) * 1000), usec)
            # else: a ring far from full without our lines was cleared (dmesg -C): all of it is new.
        self.pacer.polled(time.monotonic(), new)
        if new:
            lines = new.split(b"\n")
            if lines[-1] == b"":
                lines.pop()
            self._pending += self._parse(lines)
            self._tail = (self._tail + lines)[-TAIL_LINES:]
        return bool(self._pending)

    def read_available(self, limit: int | None = None) -> Iterator[Record | Gap]:
        """Yield what the polls so far found (at most ``limit`` records), without polling."""
        n = 0
        while self._pending and (limit is None or n < limit):
            item = self._pending.popleft()
            if isinstance(item, Record):
                self.records_read += 1
                n += 1
                self._handed = item.seq if item.seq is not None else self._handed
            yield item

    def wait(self, timeout: float | None) -> bool:
        """Poll when due within ``timeout`` seconds (``0``: poll now); True when lines are queued."""
        if self._pending:
            return True
        now = time.monotonic()
        if timeout == 0:
            return self.poll()
        deadline = None if timeout is None else now + timeout
        while True:
            due = self.pacer.next_at
            if deadline is not None and due > deadline:
                time.sleep(max(0.0, deadline - now))
                return False
            if due > now:
                time.sleep(due - now)
            if self.poll():
                return True
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
