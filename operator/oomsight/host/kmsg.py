"""Read the kernel log from ``/dev/kmsg``: one record per read(2), resumable, overruns made visible.

The interface (Documentation/ABI/testing/dev-kmsg, kernel/printk/printk.c ``devkmsg_*``):

- Every read(2) returns exactly one record ``prefix,seq,usec,flags;text`` plus ``KEY=value``
  continuation lines. A buffer too small for the record gets EINVAL, so we read with 16 KiB
  (records are at most ``CONSOLE_EXT_LOG_MAX`` = 8 KiB).
- A new open starts at the oldest record still in the ring. ``lseek(fd, 0, SEEK_SET)`` goes back to
  it, ``SEEK_END`` skips to the records still to come, ``SEEK_DATA`` to the first record after the
  last ``dmesg --clear`` (which equals SEEK_SET on a node nobody cleared).
- ``seq`` increases by one per record within a boot. When the ring (``log_buf_len``, 128 KiB here)
  overwrites records a reader has not read yet, its next read fails with EPIPE and the reader jumps
  to the oldest record left. We turn that into a ``Gap`` the caller receives in the stream, in order:
  the sequence numbers ``expected_seq .. next_seq - 1`` are lost, never silently.
- Readers may block on poll(2): POLLIN when a record is ready, POLLERR|POLLPRI after an overrun.
  The kernel wakes them from a lazy irq_work (``wake_up_klogd_work``), i.e. at the next timer tick.
- A record only becomes readable once the kernel finalises it (printk_ringbuffer.c): a message
  without a trailing newline stays open for continuation until the next one is stored.

Opening needs CAP_SYSLOG when ``kernel.dmesg_restrict=1`` (``check_syslog_permissions``); a pod
needs the host's ``/dev/kmsg`` mounted in. Both failures say so in one line.
"""

from __future__ import annotations

import errno
import os
import select
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from oomsight.core.kmsg import Record, parse_kmsg_record
from oomsight.host.errors import HostAccessDenied, HostError

READ_SIZE = 16384
"""Larger than one record can be (CONSOLE_EXT_LOG_MAX, 8 KiB); a short buffer gets EINVAL."""
CAP_SYSLOG = 34
"""include/uapi/linux/capability.h."""
GAPS_KEPT = 1000
"""How many gaps a reader keeps in ``gaps`` (each is also yielded when it happens)."""


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where to resume: the next sequence number wanted, valid only within one boot."""

    boot_id: str
    next_seq: int

    def to_text(self) -> str:
        """``<boot_id>:<next_seq>``, for a state file."""
        return f"{self.boot_id}:{self.next_seq}"

    @classmethod
    def from_text(cls, text: str) -> Cursor | None:
        """Inverse of ``to_text``; None for anything else (a corrupt state file starts afresh)."""
        boot_id, sep, seq = text.strip().rpartition(":")
        if not sep or not boot_id or not seq.isdigit():
            return None
        return cls(boot_id, int(seq))


@dataclass(frozen=True, slots=True)
class Gap:
    """Records the kernel overwrote before we read them: ``expected_seq .. next_seq - 1``."""

    expected_seq: int
    next_seq: int
    usec: int | None = None
    """Monotonic time of the first record after the gap (the lost ones are older)."""
    unknown: bool = False
    """How many were lost is not known (syslog(2) has no sequence numbers): ``lost`` is 0."""

    @property
    def lost(self) -> int:
        return 0 if self.unknown else self.next_seq - self.expected_seq

    def as_json(self) -> dict[str, int | None]:
        return {"expected_seq": self.expected_seq, "next_seq": self.next_seq, "lost": self.lost}


@dataclass(frozen=True, slots=True)
class WallClock:
    """Maps kmsg's monotonic microseconds to wall-clock time.

    The kernel stamps records with ``local_clock()`` (sched_clock), which counts from about the same
    instant as CLOCK_MONOTONIC and, like it, stops during suspend. We take ``time.time() -
    CLOCK_MONOTONIC`` when reading, so the result is off by (a) the constant skew between
    sched_clock and CLOCK_MONOTONIC (≈7 ms measured on this 6.18 VM: bench/bench_live_latency.py
    prints it; it grows with uptime: ~180 ms after 13 h here) and (b) any suspend or clock step since
    the record was written. Good to the second, not to the millisecond: the agent dates its kill Events
    by its own estimate of the skew instead (``oomsight.agent.latency.ClockOffset.monotonic``).
    """

    offset: float
    """``time.time() - clock_gettime(CLOCK_MONOTONIC)``, seconds."""

    @classmethod
    def now(cls) -> WallClock:
        m0 = time.clock_gettime(time.CLOCK_MONOTONIC)
        wall = time.time()
        m1 = time.clock_gettime(time.CLOCK_MONOTONIC)
        return cls(wall - (m0 + m1) / 2)

    def wall(self, usec: int) -> datetime:
        return datetime.fromtimestamp(self.offset + usec / 1e6, tz=UTC)


def read_boot_id(path: str = "/proc/sys/kernel/random/boot_id") -> str:
    """This boot's random id (drivers/char/random.c); a cursor from another boot is worthless."""
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError as err:
        raise HostError(
            f"cannot read the boot id at {path}: {err.strerror or err}",
            "mount the host's /proc (it is the same in every namespace) or pass --host-root",
            path=path,
        ) from err


def _cap_syslog_effective(status_path: str = "/proc/self/status") -> bool | None:
    try:
        with open(status_path, encoding="ascii") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_SYSLOG & 1)
    except (OSError, ValueError):
        return None
    return None


def _dmesg_restrict(proc_root: str) -> str | None:
    try:
        with open(os.path.join(proc_root, "sys/kernel/dmesg_restrict"), encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return None


def open_error(err: OSError, path: str, proc_root: str = "/proc") -> HostError:
    """Say in one line what keeps us from reading ``path``: the device, CAP_SYSLOG or dmesg_restrict."""
    if err.errno in (errno.ENOENT, errno.ENODEV, errno.ENXIO):
        return HostError(
            f"no kernel log device at {path}",
            "mount the host's /dev/kmsg into the pod (hostPath type CharDevice) or point --host-root "
            "at a root that has it",
            path=path,
        )
    if err.errno in (errno.EPERM, errno.EACCES):
        restrict = _dmesg_restrict(proc_root)
        has_cap = _cap_syslog_effective()
        if restrict == "1" and has_cap is False:
            hint = (
                "kernel.dmesg_restrict=1 and this process lacks CAP_SYSLOG: add CAP_SYSLOG to the "
                "container's securityContext.capabilities (or run as root)"
            )
        elif err.errno == errno.EACCES:
            hint = (
                f"the file mode of {path} does not let uid {os.geteuid()} read it: run as root or "
                "mount it readable"
            )
        elif has_cap:
            hint = (
                "this process has CAP_SYSLOG, so the container's device cgroup does not allow char 1:11 "
                "(runc's default for an unprivileged container) or a security module denies it; "
                "syslog(2) with CAP_SYSLOG reads the same log without the device"
            )
        else:
            hint = (
                "reading the kernel log needs CAP_SYSLOG (and kernel.dmesg_restrict decides whether "
                "unprivileged reads are allowed); a security module may also deny it"
            )
        return HostAccessDenied(f"permission denied to read {path}", hint, path=path)
    return HostError(f"cannot open {path}: {err.strerror or err}", path=path)


class KmsgReader:
    """A non-blocking reader of ``/dev/kmsg`` that yields ``Record``s and ``Gap``s in order.

    ``start="boot"`` reads everything still in the ring and reports the records lost since boot
    (sequence 0 up to the oldest one left) as a first ``Gap``; ``start="now"`` only what comes next.
    A ``cursor`` from this boot resumes after the last record read (a gap if the ring moved past it);
    a cursor from another boot is discarded (``discarded_cursor``) and reading starts as for "boot".
    Records carry ``wall`` computed with ``WallClock`` at read time.
    """

    def __init__(
        self,
        path: str = "/dev/kmsg",
        *,
        proc_root: str = "/proc",
        cursor: Cursor | None = None,
        start: Literal["boot", "now"] = "boot",
    ) -> None:
        self.path = path
        self.proc_root = proc_root
        self.boot_id = read_boot_id(os.path.join(proc_root, "sys/kernel/random/boot_id"))
        self.discarded_cursor: Cursor | None = None
        if cursor is not None and cursor.boot_id != self.boot_id:
            self.discarded_cursor, cursor = cursor, None
        try:
            self._fd: int | None = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            raise open_error(err, path, proc_root) from err
        self._expected: int | None
        if cursor is not None:
            os.lseek(self._fd, 0, os.SEEK_SET)
            self._expected = cursor.next_seq
        elif start == "now":
            os.lseek(self._fd, 0, os.SEEK_END)
            self._expected = None
        else:
            os.lseek(self._fd, 0, os.SEEK_SET)
            self._expected = 0
        self.records_read = 0
        self.malformed = 0
        """Records that did not parse (counted, skipped)."""
        self.overruns = 0
        """Times read(2) returned EPIPE."""
        self.gaps: deque[Gap] = deque(maxlen=GAPS_KEPT)
        """The last ``GAPS_KEPT`` gaps seen, also yielded in the stream (bounded: a long-running
        reader on a busy node sees one with every overrun)."""

    @classmethod
    def from_host_root(
        cls,
        host_root: str = "/",
        *,
        cursor: Cursor | None = None,
        start: Literal["boot", "now"] = "boot",
    ) -> KmsgReader:
        """``<root>/dev/kmsg`` with ``<root>/proc`` (e.g. ``/host`` in the agent's pod).

        A pod that mounts the host's / without its submounts has no ``<root>/dev/kmsg``; the kernel
        log is not namespaced, so the pod's own ``/dev/kmsg`` (a hostPath CharDevice mount) is the
        same device and is used instead.
        """
        path = os.path.join(host_root, "dev/kmsg")
        if os.path.normpath(host_root) != "/" and not os.path.exists(path) and os.path.exists("/dev/kmsg"):
            path = "/dev/kmsg"
        return cls(
            path,
            proc_root=os.path.join(host_root, "proc"),
            cursor=cursor,
            start=start,
        )

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> KmsgReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def fileno(self) -> int:
        if self._fd is None:
            raise ValueError("KmsgReader is closed")
        return self._fd

    @property
    def cursor(self) -> Cursor | None:
        """Resume point after everything read so far; None before the first record with start='now'."""
        if self._expected is None:
            return None
        return Cursor(self.boot_id, self._expected)

    # -- reading -----------------------------------------------------------------------------------
    def _read_one(self) -> bytes | None:
        """One raw record, or None when none is ready. EPIPE is counted and read past."""
        fd = self.fileno()
        while True:
            try:
                return os.read(fd, READ_SIZE)
            except BlockingIOError:
                return None
            except InterruptedError:
                continue
            except OSError as err:
                if err.errno == errno.EPIPE:
                    # The kernel moved our position to the oldest record left; the seq jump
                    # on the next record becomes the Gap.
                    self.overruns += 1
                    continue
                raise HostError(f"cannot read {self.path}: {err.strerror or err}", path=self.path) from err

    def read_available(self, limit: int | None = None) -> Iterator[Record | Gap]:
        """Yield what is ready now (at most ``limit`` records) without blocking."""
        clock = WallClock.now()
        n = 0
        while limit is None or n < limit:
            raw = self._read_one()
            if raw is None:
                return
            rec = parse_kmsg_record(raw.decode("utf-8", errors="replace").rstrip("\n"))
            if rec is None or rec.seq is None or rec.usec is None:
                self.malformed += 1
                continue
            if self._expected is not None and rec.seq < self._expected:
                continue  # resuming: already handed out before the cursor
            if self._expected is not None and rec.seq > self._expected:
                gap = Gap(self._expected, rec.seq, rec.usec)
                self.gaps.append(gap)
                yield gap
            self._expected = rec.seq + 1
            self.records_read += 1
            n += 1
            # direct construction: dataclasses.replace costs ~3x as much per record
            yield Record(
                text=rec.text,
                seq=rec.seq,
                usec=rec.usec,
                wall=clock.wall(rec.usec),
                level=rec.level,
                facility=rec.facility,
                fields=rec.fields,
            )

    def wait(self, timeout: float | None) -> bool:
        """Block until a record (or an overrun) is ready or ``timeout`` seconds pass; True if ready."""
        poller = select.poll()
        poller.register(self.fileno(), select.POLLIN | select.POLLPRI)
        ms = None if timeout is None else max(0, int(timeout * 1000))
        while True:
            try:
                return bool(poller.poll(ms))
            except InterruptedError:
                continue

    def follow(self, idle_timeout: float | None = None) -> Iterator[Record | Gap]:
        """Yield records as the kernel writes them; stop after ``idle_timeout`` seconds of silence."""
        while True:
            yield from self.read_available()
            if not self.wait(idle_timeout):
                return


def read_since_boot(host_root: str = "/") -> tuple[list[Record], list[Gap]]:
    """Everything the ring still holds for this boot, plus the gaps (records already overwritten)."""
    records: list[Record] = []
    with KmsgReader.from_host_root(host_root) as reader:
        for item in reader.read_available():
            if isinstance(item, Record):
                records.append(item)
        return records, list(reader.gaps)
