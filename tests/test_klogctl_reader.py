"""The syslog(2) reader and the source chain, against this machine's real kernel log.

Markers are written through /dev/kmsg (one fresh open each: the write rate limit is per open file)
and looked for by a unique tag, so other tests' records and real OOM kills meanwhile never confuse
a test. The device-cgroup tests put a child process in a real cgroup v1 ``devices`` cgroup that
denies char 1:11, which is exactly what runc does to an unprivileged container (open → EPERM).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from oomsight.core.kmsg import Record
from oomsight.host.klogctl import KlogctlReader, Pacer
from oomsight.host.kmsg import Gap, KmsgReader
from realparts import require_binary, unavailable

pytestmark = pytest.mark.kmsg
KMSG = "/dev/kmsg"
DEVICES = Path("/sys/fs/cgroup/devices")
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def tag() -> str:
    if os.geteuid() != 0 or not os.access(KMSG, os.R_OK | os.W_OK):
        unavailable("real-kernel-log test cannot run: needs root and a writable /dev/kmsg")
    return f"oomsight-klogtest-{uuid.uuid4().hex[:10]}"


def write_marker(text: str) -> None:
    fd = os.open(KMSG, os.O_WRONLY)
    try:
        os.write(fd, f"<14>{text}\n".encode())
    finally:
        os.close(fd)


def mine(items: list[Record | Gap], tag: str) -> list[Record]:
    return [r for r in items if isinstance(r, Record) and tag in r.text]


def drain(reader: KlogctlReader, timeout: float = 3.0) -> list[Record | Gap]:
    out: list[Record | Gap] = []
    if reader.wait(timeout):
        out += reader.read_available()
    while reader.wait(0):
        out += reader.read_available()
    return out


def test_pacer_is_slow_when_quiet_fast_after_news_and_settles_after_an_oom_line() -> None:
    p = Pacer(slow=1.0, fast=0.1, settle=0.005)
    p.polled(100.0, b"")
    assert p.next_at == 101.0
    p.polled(100.0, b"<6>[  1.000000] eth0: link up\n")
    assert p.next_at == 100.1
    p.polled(100.0, b"<4>[  1.000000] python invoked oom-killer: gfp_mask=0xcc0\n")
    assert p.next_at == 100.005


def test_follows_new_records_once_each_in_order(tag: str) -> None:
    reader = KlogctlReader(start="now", pacer=Pacer(slow=0.05, fast=0.05))
    assert list(reader.read_available()) == []
    got: list[Record | Gap] = []
    for i in range(6):
        write_marker(f"{tag} {i}")
        if i % 2:
            got += drain(reader)
    got += drain(reader)
    assert [r.text for r in mine(got, tag)] == [f"{tag} {i}" for i in range(6)]
    seqs = [r.seq for r in got if isinstance(r, Record)]
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    assert not [g for g in got if isinstance(g, Gap)]
    rec = mine(got, tag)[0]
    assert rec.facility == 1 and rec.level == 6 and rec.usec is not None
    assert rec.seq is not None and rec.seq // 1000 == rec.usec


def test_a_multi_line_record_is_one_line_each_with_its_stamp(tag: str) -> None:
    reader = KlogctlReader(start="now")
    write_marker(f"{tag} first\n{tag} second\n  {tag} third")
    lines = mine(drain(reader), tag)
    # syslog(2) prints each embedded line with the record's own prefix (seen on 6.18 here)
    assert [r.text for r in lines] == [f"{tag} first", f"{tag} second", f"  {tag} third"]
    assert len({r.usec for r in lines}) == 1
    assert [r.seq for r in lines] == [lines[0].seq + i for i in range(3)]  # type: ignore[operator]


def test_pseudo_sequence_numbers_are_the_same_for_another_reader(tag: str) -> None:
    write_marker(f"{tag} stable")
    a = mine(list(KlogctlReader().read_available()), tag)
    b = mine(list(KlogctlReader().read_available()), tag)
    assert len(a) == 1 and [r.seq for r in a] == [r.seq for r in b]


def test_resume_from_cursor_with_rewind(tag: str) -> None:
    first = KlogctlReader(start="now")
    for i in range(3):
        write_marker(f"{tag} a{i}")
    part1 = drain(first)
    cursor = first.cursor
    assert cursor is not None and [r.text for r in mine(part1, tag)] == [f"{tag} a{i}" for i in range(3)]
    for i in range(3):
        write_marker(f"{tag} b{i}")
    second = KlogctlReader(cursor=cursor)
    part2 = list(second.read_available())
    assert [r.text for r in mine(part2, tag)] == [f"{tag} b{i}" for i in range(3)]
    assert min(r.seq for r in part2 if isinstance(r, Record)) >= cursor.next_seq  # type: ignore[type-var]
    # rewind: the lines before the cursor come again (a report cut by a restart is read whole). As
    # many as lie between a2 and the cursor: other tests' kernel lines may have come in between
    # (CI, 16:40 UTC: a kill storm alongside put more than 200 there).
    a2 = next(r for r in mine(part1, tag) if r.text.endswith(" a2"))
    back = cursor.next_seq - a2.seq  # type: ignore[operator]
    third = KlogctlReader(cursor=cursor, rewind=back)
    texts = [r.text for r in mine(list(third.read_available()), tag)]
    assert texts == [f"{tag} a2"] + [f"{tag} b{i}" for i in range(3)]
    fourth = KlogctlReader(cursor=cursor, rewind=back - 1)  # one less: a2 stays behind
    assert [r.text for r in mine(list(fourth.read_available()), tag)] == [f"{tag} b{i}" for i in range(3)]


@pytest.mark.slow
def test_ring_overwritten_between_two_polls_is_a_gap_of_unknown_size(tag: str) -> None:
    """Overwrite the whole ring between two polls (a quick burst of about twice log_buf_len,
    as tests/test_kmsg_reader.py does for /dev/kmsg)."""
    reader = KlogctlReader(start="now")
    write_marker(f"{tag} before")
    drain(reader)
    line = 900
    count = 2 * reader.ring_bytes // line + 10
    for i in range(count):
        write_marker(f"{tag} {i:06d} " + "x" * (line - len(tag) - 8))
    items = drain(reader)
    gaps = [g for g in items if isinstance(g, Gap)]
    assert len(gaps) == 1 and gaps[0].unknown and gaps[0].lost == 0 and items[0] is gaps[0]
    found = [int(r.text.split()[1]) for r in mine(items, tag)]
    assert found == list(range(found[0], count)) and found[0] > 0
    # and the next poll continues after the flood without a new gap
    write_marker(f"{tag} after")
    later = drain(reader)
    assert [r.text for r in mine(later, tag)] == [f"{tag} after"]
    assert not [g for g in later if isinstance(g, Gap)]


# ---- the chain, in a real devices cgroup ------------------------------------------------------------

CHILD = """
import json, sys
from oomsight.host.kernlog import open_kernel_log
o = open_kernel_log("/", choice=sys.argv[1])
print(json.dumps({"source": o.source, "refused": o.refused}))
"""


@pytest.fixture
def deny_kmsg() -> Iterator[Path]:
    """A devices cgroup that denies char 1:11 (as runc's allow-list does), removed afterwards."""
    if os.geteuid() != 0 or not (DEVICES / "devices.deny").exists():
        unavailable(f"devices-cgroup test cannot run: needs root and cgroup v1 devices at {DEVICES}")
    path = DEVICES / f"oomsight-test-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    try:
        (path / "devices.deny").write_text("c 1:11 rwm")
        yield path
    finally:
        for pid in (path / "cgroup.procs").read_text().split():
            subprocess.run(["kill", "-9", pid], check=False)
        path.rmdir()


def run_chain(prefix: list[str], choice: str = "auto") -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(REPO / "operator")}
    out = subprocess.run(
        [*prefix, sys.executable, "-c", CHILD, choice], capture_output=True, text=True, env=env, check=True
    )
    return dict(json.loads(out.stdout))


def in_cgroup(path: Path) -> list[str]:
    return ["sh", "-c", f'echo $$ > "{path}/cgroup.procs" && exec "$@"', "sh"]


def test_kmsg_denied_by_the_device_cgroup_falls_back_to_syslog(deny_kmsg: Path) -> None:
    assert run_chain([])["source"] == "kmsg"  # outside: the device opens
    got = run_chain(in_cgroup(deny_kmsg))
    assert got["source"] == "syslog"
    ((src, why),) = got["refused"]  # type: ignore[misc]
    assert src == "kmsg"
    assert "permission denied to read /dev/kmsg" in why and "char 1:11" in why


@pytest.fixture
def dmesg_restricted() -> Iterator[None]:
    """kernel.dmesg_restrict=1 for the test only; the old value is put back."""
    knob = Path("/proc/sys/kernel/dmesg_restrict")
    old = knob.read_text().strip()
    knob.write_text("1")
    try:
        yield
    finally:
        knob.write_text(old)


def test_without_cap_syslog_nothing_opens_and_each_source_says_why(
    deny_kmsg: Path, dmesg_restricted: None
) -> None:
    capsh = require_binary("capsh", "Debian package libcap2-bin")
    drop = [capsh, "--drop=cap_syslog", "--", "-c", 'exec "$@"', "capsh"]
    got = run_chain(in_cgroup(deny_kmsg) + drop)
    assert got["source"] == "none"
    refused = dict(got["refused"])  # type: ignore[call-overload]
    assert set(refused) == {"kmsg", "syslog"}
    assert "CAP_SYSLOG" in refused["kmsg"] and "dmesg_restrict=1" in refused["kmsg"]
    assert "syslog(2) READ_ALL denied (EPERM)" in refused["syslog"] and "CAP_SYSLOG" in refused["syslog"]
    # --kernel-log syslog skips the device entirely
    got = run_chain(drop, "syslog")
    assert got["source"] == "none" and [s for s, _ in got["refused"]] == ["syslog"]  # type: ignore[attr-defined]


def test_kmsg_reader_and_syslog_reader_see_the_same_records(tag: str) -> None:
    write_marker(f"{tag} both")
    with KmsgReader() as k:
        via_kmsg = mine(list(k.read_available()), tag)
    via_syslog = mine(list(KlogctlReader().read_available()), tag)
    assert [(r.text, r.usec, r.level, r.facility) for r in via_kmsg] == [
        (r.text, r.usec, r.level, r.facility) for r in via_syslog
    ]
