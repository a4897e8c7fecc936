"""Saved-log formats: the same real report read from each format a user may have saved it in."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from oomsight.core.errors import ParseError
from oomsight.core.logtext import detect_format, parse_log
from oomsight.core.oomreport import assemble

CORPUS = Path(__file__).parent / "fixtures" / "oom"
CAPTURE = CORPUS / "captured-6.18.44-child-killed.log"


def _messages() -> list[tuple[int, str]]:
    """(usec, text) of the real capture (raw /dev/kmsg records)."""
    out = []
    for line in CAPTURE.read_text().splitlines():
        if line[:1].isdigit():
            head, _, text = line.partition(";")
            out.append((int(head.split(",")[2]), text))
    return out


def _as(fmt: str) -> str:
    lines = ["# kernel: 6.18.44-fc-v657", "# source: captured on this machine, re-rendered as " + fmt]
    for usec, text in _messages():
        s, us = divmod(usec, 1_000_000)
        if fmt == "dmesg":
            lines.append(f"[{s:5d}.{us:06d}] {text}")
        elif fmt == "dmesg-T":
            lines.append(f"[Mon Nov 23 13:02:{s % 60:02d} 2026] {text}")
        elif fmt == "syslog":
            lines.append(f"Nov 23 13:02:{s % 60:02d} node-1 kernel: [{s:5d}.{us:06d}] {text}")
            lines.append("Nov 23 13:02:08 node-1 kubelet[812]: I1123 pod sync")
        elif fmt == "iso":
            lines.append(f"2026-11-23T13:02:{s % 60:02d}+0000 node-1 kernel: {text}")
        elif fmt == "bare":
            lines.append(text)
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("fmt", ["dmesg", "dmesg-T", "syslog", "iso", "bare"])
def test_every_format_gives_the_same_incident(fmt: str) -> None:
    (ref,) = assemble(parse_log(CAPTURE.read_text())[1])
    got_fmt, records = parse_log(_as(fmt), year=2026)
    assert got_fmt == fmt
    (inc,) = assemble(records)
    assert inc.victim == type(ref.victim)(
        **{
            **{f: getattr(ref.victim, f) for f in ref.victim.__slots__},
            "seq": None,
            "usec": inc.victim.usec,
            "wall": inc.victim.wall,
        }
    )
    assert (inc.oom_memcg, inc.tasks, inc.counters, inc.memcg_stats) == (
        ref.oom_memcg,
        ref.tasks,
        ref.counters,
        ref.memcg_stats,
    )


def test_times_are_read_from_each_format() -> None:
    rec = parse_log(_as("dmesg"))[1][0]
    assert rec.usec == _messages()[0][0] // 1 and rec.wall is None
    iso = parse_log(_as("iso"))[1][0]
    assert iso.wall is not None and iso.wall.tzinfo is not None and iso.wall.year == 2026
    sys_rec = parse_log(_as("syslog"), year=2025)[1][0]
    assert sys_rec.wall == datetime(2025, 11, 23, 13, 2, sys_rec.wall.second) and sys_rec.usec is not None
    assert parse_log(_as("syslog"))[1][0].wall is None  # no year given: no invented date
    assert datetime(2026, 11, 23, tzinfo=UTC) <= iso.wall


def test_syslog_lines_of_other_programs_are_dropped() -> None:
    records = parse_log(_as("syslog"), year=2026)[1]
    assert not any("kubelet" in r.text for r in records)


def test_raw_kmsg_continuation_fields_join_their_record() -> None:
    text = "6,10,100,-;usb 1-1: new device\n SUBSYSTEM=usb\n DEVICE=c189:1\n6,11,200,-;next\n"
    a, b = parse_log(text)[1]
    assert a.fields == (("SUBSYSTEM", "usb"), ("DEVICE", "c189:1")) and b.text == "next"


@pytest.mark.parametrize(
    "text",
    ["", "hello world\n", '{"json": true}\n', "# only a comment\n", "\x00\x01\x02 binary\n" * 5],
)
def test_not_a_kernel_log_is_one_clear_error(text: str) -> None:
    with pytest.raises(ParseError) as err:
        parse_log(text, name="notes.txt")
    msg = str(err.value)
    assert msg.startswith(
        "notes.txt does not look like a kernel log (dmesg, journalctl -k, syslog or /dev/kmsg)"
    )
    assert "\n" not in msg


def test_detection_looks_at_the_first_lines_only() -> None:
    assert detect_format(["[    1.000000] a"] * 60 + ["Nov 23 13:02:08 h kernel: b"] * 100) == "dmesg"


def test_printk_caller_ids_are_not_part_of_the_message() -> None:
    """CONFIG_PRINTK_CALLER adds ``[ T1234]`` (task) or ``[ C3]`` (CPU) after the timestamp."""
    fmt, records = parse_log(
        "[   37.052923][ T9185] a.out invoked oom-killer: gfp_mask=0xcc0(GFP_KERNEL), order=0,"
        " oom_score_adj=0\n"
        "[   37.132833][   T54] oom_reaper: reaped process 9188 (a.out)\n"
        "[    0.000000][    C0] Linux version 5.0.0\n"
    )
    assert fmt == "dmesg"
    assert [r.text.split()[0] for r in records] == ["a.out", "oom_reaper:", "Linux"]
    assert records[0].usec == 37_052_923


def test_lines_wrapped_by_a_paste_are_joined_back_indented_ones_are_not() -> None:
    fmt, records = parse_log(
        "[  5.1] Memory cgroup stats for /kubepods/pod1/c1: cache:507172KB rss:44\n"
        "8KB rss_huge:0KB\n"
        "[  5.2] Mem-Info:\n"
        "[  5.2] active_anon:1 inactive_anon:2\n"
        "         active_file:3 inactive_file:4\n"
        "May  8 14:05:27 host kernel: Killed process 1 (x)\n"
    )
    assert fmt == "dmesg"
    texts = [r.text for r in records]
    assert texts[0] == "Memory cgroup stats for /kubepods/pod1/c1: cache:507172KB rss:448KB rss_huge:0KB"
    assert texts[3].strip() == "active_file:3 inactive_file:4"  # the kernel's own continuation line
    assert len(texts) == 5


def test_real_wrapped_paste_reads_as_one_report() -> None:
    _, records = parse_log((CORPUS / "kubedirector-356-4.x-wrapped-dmesg.log").read_text(), year=2026)
    (inc,) = assemble(records)
    assert dict(inc.stats())["rss"] == 448 * 1024
    assert inc.victim.pid == 62769 and inc.victim.comm == "cp"  # the cut-off kill line: comm from the table
