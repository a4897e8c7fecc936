"""The state directory on a real filesystem: spool round trip, revisions, cursor resume, corruption."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from oomsight.agent.state import Cursor, StateDir
from oomsight.core.eventspecs import oom_event
from oomsight.core.podinfo import ContainerInfo, PodInfo
from realparts import unavailable

BOOT = "5b0e6f3c-2a34-4c1e-9d0b-0a1b2c3d4e5f"
T0 = datetime(2026, 11, 23, 13, 0, tzinfo=UTC)
POD = PodInfo(
    "0f6a2b4c-1111-4222-8333-944445555666", "shop", "web", "n", (ContainerInfo("app", "ab" * 32, None, None),)
)
DIAG = {
    "scope": "container",
    "victim": {"pid": 1, "comm": "x"},
    "limit_bytes": 1 << 20,
    "container_survived": False,
}


def spec(seq, when=T0):
    return oom_event(DIAG, POD, "app", "n", BOOT, seq, when)


def test_spool_round_trip_survives_a_new_instance(tmp_path):
    st = StateDir(tmp_path)
    a, b = spec(10, T0 + timedelta(seconds=1)), spec(11, T0)
    st.put(a)
    st.put(b)
    again = StateDir(tmp_path)  # a restarted agent
    assert again.pending() == [b, a]  # oldest event first
    assert again.count() == 2


def test_done_removes_only_the_delivered_revision(tmp_path):
    st = StateDir(tmp_path)
    s = spec(10)
    rev1 = st.put(s)
    rev2 = st.put(s.repeated(T0 + timedelta(seconds=5)))  # a repeat arrives while sending rev1
    assert not st.done(s.name, rev1)
    assert st.pending()[0].count == 2
    assert st.done(s.name, rev2)
    assert st.pending() == []


def test_no_temp_files_left_and_files_are_json(tmp_path):
    st = StateDir(tmp_path)
    st.put(spec(3))
    st.save_cursor(Cursor(BOOT, 42))
    names = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert names == ["cursor.json", f"{spec(3).name}.json"]
    saved = json.loads((tmp_path / "cursor.json").read_text())
    assert saved == {"boot_id": BOOT, "seq": 42, "source": "kmsg"}


def test_cursor_keeps_its_source_and_older_files_mean_kmsg(tmp_path):
    st = StateDir(tmp_path)
    st.save_cursor(Cursor(BOOT, 7_000_000_123, "syslog"), {"/kubepods/pod1/c1": 2})
    assert st.load_cursor() == Cursor(BOOT, 7_000_000_123, "syslog")
    assert st.resume_cursor(BOOT) == Cursor(BOOT, 7_000_000_123, "syslog")
    assert st.load_oom_accounted(BOOT) == {"/kubepods/pod1/c1": 2}
    (tmp_path / "cursor.json").write_text(json.dumps({"boot_id": BOOT, "seq": 5}))  # before sources
    assert st.load_cursor() == Cursor(BOOT, 5, "kmsg")


def test_resume_cursor_resumes_at_the_save_and_names_the_last_spooled_kill_for_this_boot(tmp_path):
    st = StateDir(tmp_path)
    st.put(spec(31))  # spooled before any cursor was saved: nothing saved to add to, resume after it
    assert st.resume_cursor(BOOT) == Cursor(BOOT, 31)
    st.save_cursor(Cursor(BOOT, 40), {"/kubepods/pod1/c1": 2})
    assert st.resume_cursor(BOOT) == Cursor(BOOT, 40)  # 31 is behind the save
    st.put(spec(57))  # spooled, then the agent died before saving the cursor and the accounting
    # Read again from 41, not after 57: the kills up to 57 are accounted again (no new Events).
    assert st.resume_cursor(BOOT) == Cursor(BOOT, 40, spooled=57)
    assert st.load_oom_accounted(BOOT) == {"/kubepods/pod1/c1": 2}
    assert json.loads((tmp_path / "cursor.json").read_text())["seq"] == 40  # never saved
    assert st.resume_cursor("another-boot") is None


def test_kills_reported_after_the_last_save_are_skipped_and_accounted_on_resume_though_delivered(tmp_path):
    """The spool cannot say which kills were reported after the last save: a delivered Event leaves
    it, and a container's 6th kill raises the count of the 5th's Event. A restart read those kills
    again and reported them under new names (13 kills for 12 in a SIGKILL during a storm); the
    journal names each one and the count its cgroup had with it."""
    c1, c2 = "/kubepods/burstable/pod1/c1", "/kubepods/burstable/pod2/c2"
    st = StateDir(tmp_path)
    st.save_cursor(Cursor(BOOT, 40), {c1: 2})
    st.note_reported(BOOT, 57, c1, 3)
    rev = st.put(spec(57))
    assert st.done(spec(57).name, rev)  # delivered: gone from the spool
    st.note_reported(BOOT, 61, c1, 4)  # folded into 57's Event (a series): no Event of its own
    st.note_reported(BOOT, None, c2, 7)  # counted from c2's counter: no kernel log line
    st.note_reported("another-boot", 99, c1, 50)
    # The agent is SIGKILLed before the writer saves the cursor; the next one reads the state.
    again = StateDir(tmp_path)
    assert again.resume_cursor(BOOT) == Cursor(BOOT, 40, reported=frozenset({57, 61}))
    assert again.load_oom_accounted(BOOT) == {c1: 4, c2: 7}
    assert again.pending() == []


def test_a_cursor_save_trims_the_journal_to_the_kills_reported_after_its_snapshot(tmp_path):
    """The mark is taken with the accounting the cursor saves: lines written while the writer was
    saving stay; lines the saved cursor covers go, and the file with them."""
    c1 = "/kubepods/burstable/pod1/c1"
    st = StateDir(tmp_path)
    st.note_reported(BOOT, 57, c1, 3)
    mark = st.journal_mark()
    st.note_reported(BOOT, 61, c1, 4)  # after the snapshot
    assert st.unsynced()
    st.sync()
    st.save_cursor(Cursor(BOOT, 60), {c1: 3})
    st.trim_journal(mark)
    assert StateDir(tmp_path).resume_cursor(BOOT) == Cursor(BOOT, 60, reported=frozenset({61}))
    st.save_cursor(Cursor(BOOT, 61), {c1: 4})
    st.trim_journal(st.journal_mark())
    assert not (tmp_path / "reported.jsonl").exists()
    assert StateDir(tmp_path).resume_cursor(BOOT) == Cursor(BOOT, 61)


def test_a_line_torn_by_a_kill_in_its_write_is_skipped(tmp_path):
    c1 = "/kubepods/burstable/pod1/c1"
    st = StateDir(tmp_path)
    st.save_cursor(Cursor(BOOT, 40), {c1: 2})
    st.note_reported(BOOT, 57, c1, 3)
    with open(tmp_path / "reported.jsonl", "ab") as f:
        f.write(b'{"boot":"' + BOOT.encode() + b'","seq":6')  # SIGKILL mid-write
    again = StateDir(tmp_path)
    assert again.resume_cursor(BOOT) == Cursor(BOOT, 40, reported=frozenset({57}))
    assert again.load_oom_accounted(BOOT) == {c1: 3}


def test_corrupt_files_are_moved_aside_and_counted(tmp_path):
    st = StateDir(tmp_path)
    (tmp_path / "cursor.json").write_text("{not json")
    (tmp_path / "spool" / "broken.json").write_text('{"rev": 1}')
    assert st.load_cursor() is None
    assert st.pending() == []
    assert st.corrupt == 2
    assert (tmp_path / "spool" / "broken.corrupt").exists()


def test_leftover_temp_files_from_a_crash_are_removed(tmp_path):
    (tmp_path / "spool").mkdir()
    (tmp_path / "spool" / ".x.json.1.2.tmp").write_text("half")
    StateDir(tmp_path)
    assert not list(tmp_path.rglob("*.tmp"))


def test_cursor_keeps_the_accounted_oom_counts_of_its_boot(tmp_path):
    st = StateDir(tmp_path)
    st.save_cursor(Cursor(BOOT, 9), {"/kubepods/burstable/podx/abc": 4})
    assert StateDir(tmp_path).load_oom_accounted(BOOT) == {"/kubepods/burstable/podx/abc": 4}
    assert st.load_oom_accounted("another-boot") == {}
    assert st.load_cursor() == Cursor(BOOT, 9)


def test_an_event_that_cannot_be_spooled_is_still_pending_until_delivered(tmp_path):
    """Found by bench/chaos.py: with the state directory full or read-only the agent dropped the
    Event of every kill it could not spool. A real read-only bind mount of the spool directory here."""
    import subprocess

    st = StateDir(tmp_path)
    old = spec(9)
    rev_old = st.put(old)
    spool = tmp_path / "spool"
    if subprocess.run(["mount", "--bind", str(spool), str(spool)], check=False).returncode != 0:
        unavailable("needs root to bind-mount the spool read-only")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(spool)], check=True)
        s = spec(10)
        with pytest.raises(OSError):
            st.put(s)
        assert [p.seq for p in st.pending()] == [9, 10] and st.count() == 2
        newer = old.repeated(T0 + timedelta(seconds=5))
        with pytest.raises(OSError):
            st.put(newer)  # a newer state of a spooled Event: memory wins over the file
        assert [(p.seq, p.count) for p in st.pending()] == [(9, 2), (10, 1)]
        assert not st.done(old.name, rev_old)
        rev = next(r for p, r in st.pending_with_rev() if p.name == s.name)
        assert st.done(s.name, rev)
        assert [p.seq for p in st.pending()] == [9]
    finally:
        subprocess.run(["umount", str(spool)], check=False)


def test_a_spooled_event_is_in_place_at_once_and_on_disk_before_the_cursor_passes_it(tmp_path):
    """A storm's kills waited in turn for each other's fsyncs; now an Event is renamed into place at
    once (the sender may read it) and synced by the state writer before it saves the cursor."""
    from oomsight.agent.writer import StateWriter

    st = StateDir(tmp_path)
    s = spec(12)
    rev = st.put(s)
    assert (tmp_path / "spool" / f"{s.name}.json").exists()
    assert st.unsynced() and st.latest(s.name) == (s, rev) and st.is_current(s.name, rev)
    errors: list[tuple[str, OSError]] = []
    writer = StateWriter(st, lambda what, err: errors.append((what, err)))
    writer.start()
    writer.submit(Cursor(BOOT, 12), {"/kubepods/pod1/c1": 1})
    assert writer.flush(5.0)
    assert not st.unsynced() and not errors
    assert StateDir(tmp_path).load_cursor() == Cursor(BOOT, 12)
    assert st.done(s.name, rev)
    assert st.latest(s.name) is None and not st.is_current(s.name, rev)
    writer.stop(1.0)


def test_the_state_writer_keeps_the_newest_cursor_it_could_not_save_and_saves_it_once_it_can(tmp_path):
    """A real read-only bind mount of the state directory: the failed save is reported once per
    try (the agent counts and logs it), and the cursor is saved when the directory is writable again."""
    import subprocess
    import time

    from oomsight.agent.writer import StateWriter

    root = tmp_path / "state"
    st = StateDir(root)
    st.save_cursor(Cursor(BOOT, 5))
    if subprocess.run(["mount", "--bind", str(root), str(root)], check=False).returncode != 0:
        unavailable("needs root to bind-mount the state directory read-only")
    errors: list[str] = []
    writer = StateWriter(st, lambda what, err: errors.append(what))
    writer.start()
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", str(root)], check=True)
        writer.submit(Cursor(BOOT, 9))
        writer.submit(Cursor(BOOT, 11))  # the newer one replaces it, if not started yet
        assert writer.flush(5.0)
        assert "cursor" in errors
        assert st.load_cursor() == Cursor(BOOT, 5)
    finally:
        subprocess.run(["umount", str(root)], check=False)
    deadline = time.monotonic() + 10
    while st.load_cursor() != Cursor(BOOT, 11) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert st.load_cursor() == Cursor(BOOT, 11)
    writer.stop(1.0)
