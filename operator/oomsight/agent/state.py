"""The agent's state directory: where kmsg reading resumes, and the Events not yet delivered.

Layout (``--state-dir``, a hostPath in the DaemonSet so it survives pod restarts)::

    cursor.json            {"boot_id": ..., "seq": N, "source": "kmsg|syslog|none",
                            "oom_accounted": {cgroup: kills}}  last kernel log record fully
                            processed (seq -1: none), and each container's OOM-kill count accounted
    spool/<event>.json     the full desired state of one Event not yet acknowledged by the API
    reported.jsonl         the kills reported since the cursor was last saved, one line each:
                           {"boot": ..., "seq": N or null, "cg": cgroup, "acc": kills accounted}

Every file is written to a temporary name, fsync'd, renamed over the old one and the directory
fsync'd (the rename(2) atomicity POSIX guarantees), so a crash leaves either the old or the new
content, never a torn file. A spooled Event is the exception to "fsync'd before the rename": it is
renamed into place at once, so that the sender can deliver it while the disk catches up, and made
durable by ``StateDir.sync``, which the agent calls before it saves the cursor (one journal commit
for a batch of kills, not two per Event: a storm's kills waited in turn for each other's fsyncs,
up to 20 ms each with the node's disk busy). The cursor never passes a kill whose Event is not on
disk; only a power loss within those milliseconds can lose a spooled Event, and with it that boot's
kernel log. The order is: spool the Event, then advance the cursor; on restart the
cursor is the larger of the saved one and the highest kmsg sequence already spooled, so a kill is
neither lost (it is in the spool or after the cursor) nor duplicated (the Event's name is derived
from boot ID and sequence, and delivery is create-or-patch).

The spool alone cannot say which kills were reported after the last save: a delivered Event leaves
it at once, and the 6th and later kills of a container within the series window raise the count of
an earlier kill's Event, named after that kill. A restart re-read those kills and reported them
again under new names (a SIGKILL during a storm: 13 kills for 12). So each kill's report is also
appended to ``reported.jsonl`` before its Event is spooled, with the accounted kill count of its
cgroup; on restart those kills are skipped and the counts taken, and each cursor save drops the
lines it covers (``journal_mark``, ``trim_journal``). Like the spool, the journal is synced before
the cursor is saved.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from oomsight.core.errors import UsageError
from oomsight.core.events import EventSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Cursor:
    boot_id: str
    seq: int
    source: str = "kmsg"
    """The kernel log source whose sequence numbers ``seq`` counts (host.kernlog); older files: kmsg."""
    handled: int = -1
    """Every incident up to this sequence number was handled, except those in ``unresolved``: reading
    resumes at ``seq`` (held back for them) without handling the others again."""
    unresolved: tuple[int, ...] = ()
    """Incidents (first sequence number) between ``seq`` and ``handled`` still waiting for their pod."""
    reported: frozenset[int] = frozenset()
    """On resuming only: the kills (sequence numbers) an earlier run of this boot reported after its
    last save (``reported.jsonl``): neither reported nor accounted again."""
    spooled: int = -1
    """On resuming only: the highest sequence number among this boot's spooled Events, when above
    ``handled``. Their kills were handled (their Events made) after the last save, so the accounted
    counts saved with it do not hold them: reading resumes at ``seq`` and accounts the kills up to
    here again without making their Events again (never saved; ``resume_cursor`` fills it in, for a
    state directory without ``reported.jsonl``, written by an agent before it)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes, durable: bool = True) -> None:
    """Replace ``path`` with ``data`` atomically; with ``durable``, on disk when it returns (else
    the caller fsyncs the file and its directory later: ``StateDir.sync``)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, data)
        if durable:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    if durable:
        _fsync_dir(path.parent)


class StateDir:
    """Cursor and spool under one directory. Thread-safe: the loop writes, the sender drains."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.spool_dir = root / "spool"
        try:
            self.spool_dir.mkdir(parents=True, exist_ok=True)
            for stale in root.glob(".*.tmp"):
                stale.unlink()
            for stale in self.spool_dir.glob(".*.tmp"):
                stale.unlink()
        except OSError as err:
            raise UsageError(
                f"cannot use state directory {root}: {err.strerror}",
                "pass --state-dir (or OOMSIGHT_STATE_DIR) pointing at a writable directory",
            ) from err
        self._lock = threading.Lock()
        self._revs: dict[str, int] = {}
        self._unwritten: dict[str, tuple[EventSpec, int]] = {}
        """Events whose spool write failed (disk full, read-only): delivered from memory."""
        self._latest: dict[str, tuple[EventSpec, int]] = {}
        """The newest state of each Event this process spooled, until delivered (``latest``)."""
        self._unsynced: set[str] = set()
        """Events spooled since the last ``sync``: renamed into place, not yet fsync'd."""
        self.corrupt = 0
        """Spool or cursor files that could not be read (counted, moved aside, never fatal)."""
        self._journal_path = root / "reported.jsonl"
        self._journal_fd: int | None = None
        self._journal_lines: list[bytes] = []
        """The journal's lines not yet trimmed, in order (those of an earlier run first)."""
        self._journal_trimmed = 0
        """Lines trimmed so far: ``journal_mark`` counts from the first line this object read or wrote."""
        self._journal_loaded = False
        """The file an earlier run left was read into ``_journal_lines`` (once, at the first use)."""
        self._journal_unsynced = False
        self._journal_relinked = False
        """The journal file was created or replaced since the last ``sync``: its directory is synced too."""

    # ---- cursor -------------------------------------------------------------------------
    def load_cursor(self) -> Cursor | None:
        path = self.root / "cursor.json"
        try:
            data = json.loads(path.read_text())
            return Cursor(
                str(data["boot_id"]),
                int(data["seq"]),
                str(data.get("source") or "kmsg"),
                int(data.get("handled", -1)),
                tuple(int(x) for x in data.get("unresolved") or ()),
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("state: unreadable cursor %s (%s); starting from the ring buffer's start", path, err)
            self.corrupt += 1
            return None

    def save_cursor(self, cursor: Cursor, oom_accounted: Mapping[str, int] | None = None) -> None:
        """Save where reading resumes, with each container cgroup's accounted OOM-kill count at that
        point (so that kills the kernel logged without their report while the agent was down can
        still be placed by their cgroup's counter)."""
        data: dict[str, Any] = {"boot_id": cursor.boot_id, "seq": cursor.seq, "source": cursor.source}
        if cursor.handled > cursor.seq:
            data["handled"] = cursor.handled
            data["unresolved"] = list(cursor.unresolved)
        if oom_accounted:
            data["oom_accounted"] = dict(oom_accounted)
        atomic_write(self.root / "cursor.json", json.dumps(data).encode())

    def load_oom_accounted(self, boot_id: str) -> dict[str, int]:
        """The accounted OOM-kill counts of this boot (empty otherwise): those saved with the cursor,
        raised to those of the kills reported after it (``reported.jsonl``)."""
        try:
            data = json.loads((self.root / "cursor.json").read_text())
            saved = (
                {str(k): int(v) for k, v in (data.get("oom_accounted") or {}).items()}
                if data.get("boot_id") == boot_id
                else {}
            )
        except (OSError, ValueError, TypeError, AttributeError):
            saved = {}
        for entry in self._journal_entries(boot_id):
            cg, acc = entry.get("cg"), entry.get("acc")
            if isinstance(cg, str) and isinstance(acc, int):
                saved[cg] = max(saved.get(cg, 0), acc)
        return saved

    # ---- journal of the kills reported since the last cursor save ----------------------
    def _journal_entries(self, boot_id: str) -> list[dict[str, Any]]:
        """This boot's lines of ``reported.jsonl`` as left by an earlier run (read once; a torn last
        line, from a kill in the middle of its write, is skipped)."""
        with self._lock:
            if not self._journal_loaded:
                self._journal_loaded = True
                try:
                    raw = self._journal_path.read_bytes()
                except FileNotFoundError:
                    raw = b""
                except OSError as err:
                    log.warning("state: unreadable %s (%s); kills reported after the last save may be "
                                "reported again", self._journal_path, err)
                    raw = b""
                self._journal_lines = [line + b"\n" for line in raw.splitlines() if line.strip()]
            lines = list(self._journal_lines)
        out = []
        for line in lines:
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            if isinstance(entry, dict) and entry.get("boot") == boot_id:
                out.append(entry)
        return out

    def journal_exists(self) -> bool:
        return bool(self._journal_lines) or self._journal_fd is not None or self._journal_path.exists()

    def note_reported(self, boot_id: str, seq: int | None, cgroup: str | None, accounted: int | None) -> None:
        """Append one kill's report (before its Event is spooled): its kmsg sequence number, if any,
        and the kills accounted in its cgroup with it. On page cache at once, on disk at ``sync``.
        Raises OSError (the caller logs and counts it: only a restart can then report it twice)."""
        entry = {"boot": boot_id, "seq": seq, "cg": cgroup, "acc": accounted}
        line = json.dumps(entry, separators=(",", ":")).encode() + b"\n"
        with self._lock:
            self._journal_loaded = True  # what an earlier run left was read at start, or is not wanted
            if self._journal_fd is None:
                self._journal_fd = os.open(self._journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
                self._journal_relinked = True
            os.write(self._journal_fd, line)
            self._journal_lines.append(line)
            self._journal_unsynced = True

    def journal_mark(self) -> int:
        """Where the journal stands now: after the cursor saved with the accounting of this moment,
        ``trim_journal`` of this mark drops the lines it covers."""
        with self._lock:
            return self._journal_trimmed + len(self._journal_lines)

    def trim_journal(self, mark: int) -> None:
        """Drop the lines before ``mark`` (the cursor saved since covers them). A crash before the
        rewrite lands leaves lines the cursor covers: their kills are at or before it, and their
        counts are at most those saved with it, so reading them again changes nothing."""
        with self._lock:
            n = mark - self._journal_trimmed
            if n <= 0:
                return
            self._journal_lines = self._journal_lines[n:]
            self._journal_trimmed = mark
            if self._journal_fd is not None:
                os.close(self._journal_fd)
                self._journal_fd = None
            if self._journal_lines:
                atomic_write(self._journal_path, b"".join(self._journal_lines), durable=False)
                self._journal_unsynced = self._journal_relinked = True
            else:
                with contextlib.suppress(FileNotFoundError):
                    self._journal_path.unlink()

    def resume_cursor(self, boot_id: str) -> Cursor | None:
        """Where to resume on this boot: the saved cursor, with ``spooled`` set when an Event was
        spooled after it; with no cursor saved for this boot, after the highest spooled Event."""
        saved = self.load_cursor()
        spooled = max(
            (s.seq for s in self.pending() if s.boot_id == boot_id and s.seq is not None), default=None
        )
        journal = self.journal_exists()
        reported = frozenset(
            e["seq"] for e in self._journal_entries(boot_id) if isinstance(e.get("seq"), int)
        )
        if saved is None or saved.boot_id != boot_id:
            last = max([x for x in (spooled, max(reported, default=None)) if x is not None], default=None)
            return None if last is None else Cursor(boot_id, last)
        if reported:
            saved = replace(saved, reported=frozenset(x for x in reported if x > saved.seq))
        if journal or spooled is None or spooled <= max(saved.seq, saved.handled):
            return saved
        # Not "resume after it": the kills between were accounted after the save, and skipping them
        # left their cgroups' counters ahead, reported again as counted kills (bench: 13 for 12).
        return replace(saved, spooled=spooled)

    # ---- spool --------------------------------------------------------------------------
    def put(self, spec: EventSpec) -> int:
        """Spool ``spec`` (replacing an older state of the same Event); return its revision. The
        file is in place for the sender at once, and on disk after the next ``sync``."""
        path = self.spool_dir / f"{spec.name}.json"
        with self._lock:
            rev = self._revs.get(spec.name, 0) + 1
            self._revs[spec.name] = rev
            payload: dict[str, Any] = {"rev": rev, "event": spec.to_json()}
            try:
                atomic_write(path, json.dumps(payload).encode(), durable=False)
            except OSError:
                # Full or read-only: the Event is still delivered from memory (only a restart before
                # delivery loses it); the caller logs and counts the failed write.
                self._unwritten[spec.name] = (spec, rev)
                raise
            finally:
                self._latest[spec.name] = (spec, rev)
            self._unwritten.pop(spec.name, None)
            self._unsynced.add(spec.name)
        return rev

    def sync(self) -> None:
        """Put the Events spooled since the last sync on disk: each file, then the directory once;
        and the journal of reported kills. One whose file cannot be synced (a full disk shows here,
        with delayed allocation) is delivered from memory, like one whose write failed; the first
        such error is raised."""
        failed: OSError | None = None
        with self._lock:
            todo = [(name, self._latest[name]) for name in self._unsynced if name in self._latest]
            self._unsynced = set()
            journal, self._journal_unsynced = self._journal_unsynced, False
            relinked, self._journal_relinked = self._journal_relinked, False
        if journal:
            try:
                fd = os.open(self._journal_path, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
                if relinked:
                    _fsync_dir(self.root)
            except FileNotFoundError:
                pass  # trimmed to nothing meanwhile
            except OSError as err:
                failed = err
        if not todo:
            if failed is not None:
                raise failed
            return
        for name, (spec, rev) in todo:
            try:
                fd = os.open(self.spool_dir / f"{name}.json", os.O_RDONLY)
            except FileNotFoundError:
                continue  # delivered and removed meanwhile
            except OSError as err:
                failed = failed or err
                continue
            try:
                os.fsync(fd)
            except OSError as err:
                failed = failed or err
                with self._lock:
                    if self._revs.get(name) == rev:
                        self._unwritten[name] = (spec, rev)
            finally:
                os.close(fd)
        try:
            _fsync_dir(self.spool_dir)
        except OSError as err:
            failed = failed or err
        if failed is not None:
            raise failed

    def unsynced(self) -> bool:
        """Whether Events were spooled (or kills journaled) since the last ``sync``."""
        return bool(self._unsynced) or self._journal_unsynced

    def latest(self, name: str) -> tuple[EventSpec, int] | None:
        """The newest state (and revision) of an Event this process spooled and is not delivered."""
        with self._lock:
            return self._latest.get(name)

    def is_current(self, name: str, rev: int) -> bool:
        """Whether ``rev`` is still the Event's newest state, not delivered (a listed state may be
        stale by the time the sender reaches it: delivered already, or superseded)."""
        with self._lock:
            return self._revs.get(name) == rev

    def pending(self) -> list[EventSpec]:
        """Spooled Events, oldest first."""
        return [spec for spec, _ in self.pending_with_rev()]

    def pending_with_rev(self) -> list[tuple[EventSpec, int]]:
        out: list[tuple[float, EventSpec, int]] = []
        for path in self.spool_dir.glob("*.json"):
            try:
                data = json.loads(path.read_text())
                spec = EventSpec.from_json(data["event"])
                rev = int(data.get("rev", 0))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, KeyError, TypeError) as err:
                log.warning("state: unreadable spool file %s (%s); moved aside", path, err)
                self.corrupt += 1
                with contextlib.suppress(OSError):
                    path.rename(path.with_suffix(".corrupt"))
                continue
            with self._lock:
                self._revs[spec.name] = max(self._revs.get(spec.name, 0), rev)
                if spec.name in self._unwritten:
                    continue  # a newer state of it lives in memory only
            out.append((spec.event_time.timestamp(), spec, rev))
        with self._lock:
            out += [(spec.event_time.timestamp(), spec, rev) for spec, rev in self._unwritten.values()]
        out.sort(key=lambda t: (t[0], t[1].seq or 0, t[1].name))
        return [(s, r) for _, s, r in out]

    def done(self, name: str, rev: int) -> bool:
        """Drop a delivered Event unless a newer state was spooled meanwhile (then it is sent too)."""
        path = self.spool_dir / f"{name}.json"
        with self._lock:
            if self._revs.get(name, 0) != rev:
                return False
            self._unwritten.pop(name, None)
            self._unsynced.discard(name)
            self._latest.pop(name, None)
            with contextlib.suppress(FileNotFoundError, OSError):
                path.unlink()  # an older state on a read-only spool stays; it is sent again after a restart
            self._revs.pop(name, None)
        return True

    def count(self) -> int:
        with self._lock:
            unwritten = set(self._unwritten)
        return sum(1 for p in self.spool_dir.glob("*.json") if p.stem not in unwritten) + len(unwritten)
