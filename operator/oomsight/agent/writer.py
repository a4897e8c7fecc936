"""The state writer thread: puts the spooled Events on disk, then saves the kernel log cursor.

The loop hands it what to save (``submit``) and goes back to the kernel log at once. In a storm the
disk is busy: a save (each Event spooled since the last one, the directory, then the cursor file and
its directory, one fsync each) took 4-20 ms on this machine's disk, and a kill read after a batch
waited for all of it. The order that makes a kill neither lost nor reported twice across restarts
(``oomsight.agent.state``) is kept here: the spool and the journal of reported kills are synced
before each cursor write, only Events spooled before the cursor's snapshot can be behind it, and the
journal is trimmed only after the cursor that covers its lines is on disk.

Only the newest submission matters: one not yet started is replaced by a newer one. A failed write
is counted and logged (``on_error``) and tried again after ``RETRY_SECONDS`` unless a newer one came.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping

from oomsight.agent.state import Cursor, StateDir

RETRY_SECONDS = 1.0


class StateWriter:
    def __init__(self, state: StateDir, on_error: Callable[[str, OSError], None]) -> None:
        self.state = state
        self.on_error = on_error
        """Called with ``"spool"``, ``"cursor"`` or ``"journal"`` and the error, on the writer's thread."""
        self._cond = threading.Condition()
        self._job: tuple[Cursor, dict[str, int], int | None] | None = None
        self._sync_only = False
        self._submitted = 0
        self._finished = 0
        self._stopping = False
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="state-writer", daemon=True)
        self._thread.start()

    def submit(
        self,
        cursor: Cursor | None,
        accounted: Mapping[str, int] | None = None,
        journal_mark: int | None = None,
    ) -> None:
        """Save ``cursor`` with the accounted counts after syncing the spool, then trim the journal of
        reported kills to ``journal_mark`` (taken with the counts); ``None``: only sync the spool
        (Events made without the cursor moving, such as a sweep's warnings)."""
        with self._cond:
            if cursor is not None:
                self._job = (cursor, dict(accounted or {}), journal_mark)
            elif self._job is None:
                self._sync_only = True
            self._submitted += 1
            self._cond.notify_all()
        if self._thread is None:  # not started (a test driving the loop's parts): written here
            self._drain_here()

    def flush(self, timeout: float) -> bool:
        """Wait until every submission so far was tried; False if ``timeout`` passed first."""
        with self._cond:
            target = self._submitted
            return self._cond.wait_for(lambda: self._finished >= target, timeout)

    def stop(self, timeout: float) -> None:
        """Write what was submitted (for up to ``timeout`` seconds), then end the thread."""
        self.flush(timeout)
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def _take(self) -> tuple[tuple[Cursor, dict[str, int], int | None] | None, bool, int]:
        job, sync_only, upto = self._job, self._sync_only, self._submitted
        self._job, self._sync_only = None, False
        return job, sync_only, upto

    def _drain_here(self) -> None:
        with self._cond:
            job, sync_only, upto = self._take()
        if job is not None or sync_only:
            self._write(job)
        with self._cond:
            self._finished = max(self._finished, upto)
            self._cond.notify_all()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._job is not None or self._sync_only or self._stopping)
                if self._job is None and not self._sync_only:
                    return
                job, _, upto = self._take()
            ok = self._write(job)
            with self._cond:
                self._finished = max(self._finished, upto)
                if not ok and job is not None and self._job is None and not self._stopping:
                    self._job = job  # tried again, after a pause, unless a newer one came
                self._cond.notify_all()
                if not ok:
                    self._cond.wait(RETRY_SECONDS)

    def _write(self, job: tuple[Cursor, dict[str, int], int | None] | None) -> bool:
        ok = True
        try:
            self.state.sync()
        except OSError as err:
            self.on_error("spool", err)  # those Events are delivered from memory; the cursor may move on
        if job is not None:
            cursor, accounted, mark = job
            try:
                self.state.save_cursor(cursor, accounted)
            except OSError as err:
                self.on_error("cursor", err)
                return False
            if mark is not None:
                try:
                    self.state.trim_journal(mark)
                except OSError as err:
                    self.on_error("journal", err)  # lines the cursor covers: read again, harmless
        return ok
