"""Live OOM incidents: a ``KmsgReader`` feeding an ``OomAssembler``, handing out each incident once.

The assembler holds an incident until the record after its kill line, or until told the source is
idle. The kernel writes one report as a burst (``oom-kill:`` summary, then the ``Killed process``
line tens of microseconds later, mm/oom_kill.c ``__oom_kill_process``), so a reader that wakes in the
middle of the burst must not declare the source idle at once: it waits ``settle`` seconds for more
records first. That wait is the price of never splitting a report; 2 ms by default.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from oomsight.core.kmsg import Record
from oomsight.core.oomreport import Incident, OomAssembler
from oomsight.host.kmsg import Gap, KmsgReader

SETTLE_SECONDS = 0.002


@dataclass
class IncidentWatcher:
    """Pull ``Incident``s (and ``Gap``s, so lost records are never silent) from a live reader."""

    reader: KmsgReader
    settle: float = SETTLE_SECONDS
    assembler: OomAssembler | None = None

    def __post_init__(self) -> None:
        if self.assembler is None:
            self.assembler = OomAssembler()

    def _drain(self) -> tuple[list[Incident | Gap], bool]:
        asm = self.assembler
        assert asm is not None
        out: list[Incident | Gap] = []
        got = False
        for item in self.reader.read_available():
            got = True
            if isinstance(item, Record):
                out += asm.feed(item)
            else:
                out.append(item)
        return out, got

    def poll(self, timeout: float | None) -> list[Incident | Gap]:
        """Wait up to ``timeout`` seconds for records; return the incidents and gaps they completed."""
        asm = self.assembler
        assert asm is not None
        out: list[Incident | Gap] = []
        if not self.reader.wait(timeout):
            return out
        while True:
            items, got = self._drain()
            out += items
            if got and self.reader.wait(self.settle):
                continue
            out += asm.idle()
            return out

    def __iter__(self) -> Iterator[Incident | Gap]:
        """Forever: incidents as they happen."""
        while True:
            yield from self.poll(None)
