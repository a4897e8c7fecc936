"""Pick the kernel log source: ``/dev/kmsg`` where it opens, else syslog(2), else none.

=========== ============================================== ==========================================
source      needs                                          gives
=========== ============================================== ==========================================
``kmsg``    the host's ``/dev/kmsg`` (hostPath CharDevice) records with sequence numbers, woken by
            and a device cgroup that allows char 1:11      poll(2) within a tick
            (privileged, or a runtime that adds the
            device); CAP_SYSLOG when dmesg_restrict=1
``syslog``  CAP_SYSLOG (dmesg_restrict=1, and containerd's the same records, polled: every 1 s when
            default seccomp profile only allows syslog     quiet, 0.1 s when not (host.klogctl)
            with it); no device
``none``    nothing                                        the OOM-kill counter of each container
                                                           cgroup (v1 memory.oom_control, v2
                                                           memory.events): each kill, without who
                                                           died or which limit
=========== ============================================== ==========================================

The counters are read in every case: they are the floor under the log (a kill whose report was
rate-limited or overwritten is still counted). Under runc an unprivileged container's ``open`` of
``/dev/kmsg`` fails with EPERM (char 1:11 is not in runc's device list), which is why the chart's
default Pod uses syslog(2).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Literal

from oomsight.host.errors import HostError
from oomsight.host.klogctl import KlogctlReader
from oomsight.host.kmsg import Cursor, KmsgReader

SOURCES = ("kmsg", "syslog", "none")
Choice = Literal["auto", "kmsg", "syslog", "none"]
CHOICES = ("auto", "kmsg", "syslog", "none")


@dataclass
class Opened:
    """The source in use (``reader`` None for ``none``) and why each one tried before it failed."""

    source: str
    reader: KmsgReader | KlogctlReader | None
    refused: list[tuple[str, str]] = field(default_factory=list)
    """``(source, one line: what was wrong and what to do)`` for each source that did not open."""

    def why(self) -> str:
        return "; ".join(f"{src}: {msg}" for src, msg in self.refused)


def _line(err: HostError) -> str:
    return f"{err.message} ({err.hint})" if err.hint else err.message


def open_kernel_log(
    host_root: str = "/",
    *,
    choice: Choice = "auto",
    cursor: Cursor | None = None,
    rewind: int = 0,
    source_of_cursor: str | None = None,
) -> Opened:
    """Open the first source that works, starting at ``choice`` (``auto``: kmsg).

    ``cursor`` (with the ``source_of_cursor`` it was saved by) resumes reading; a cursor of another
    source means nothing here (their sequence numbers differ), so reading starts after the newest
    record and the OOM-kill counters account for what happened in between.
    """
    order = SOURCES[SOURCES.index("kmsg" if choice == "auto" else choice) :]
    refused: list[tuple[str, str]] = []
    for source in order:
        if source == "none":
            break
        mine = cursor if source_of_cursor in (None, source) else None
        start: Literal["boot", "now"] = "now" if cursor is not None and mine is None else "boot"
        try:
            if source == "kmsg":
                kmsg_cursor = mine
                if mine is not None:
                    kmsg_cursor = Cursor(mine.boot_id, max(0, mine.next_seq - rewind))
                return Opened(
                    source, KmsgReader.from_host_root(host_root, cursor=kmsg_cursor, start=start), refused
                )
            return Opened(
                source,
                KlogctlReader(
                    proc_root=os.path.join(host_root, "proc"), cursor=mine, rewind=rewind, start=start
                ),
                refused,
            )
        except HostError as err:
            refused.append((source, _line(err)))
    return Opened("none", None, refused)
