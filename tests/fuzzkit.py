"""Fuzz targets for the four readers of user- or kernel-supplied text, and their strategies.

Shared by ``tests/test_fuzz_inputs.py`` (a few thousand examples in the normal suite) and
``bench/fuzz.py`` (the million-input run). Every strategy starts from the real corpus in
``tests/fixtures/`` (captured kernel logs, each with its kernel and source) and cuts, splices,
garbles, re-encodes and reorders it, or builds text from the formats' own pieces.

A target returns normally, or raises the project's ``OomsightError`` with a one-line message (what
was wrong, what to do); any other exception is a crash. The kernel-log targets also check the
product's promise in reverse: no incident without a kill line (``Killed process`` or ``oom-kill:``)
behind it, and none at all from text that has no kill line.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from oomsight.cli.recommend import replay
from oomsight.core.diagnosis import diagnose
from oomsight.core.errors import OomsightError
from oomsight.core.kmsg import Record, parse_kmsg_record
from oomsight.core.logtext import detect_format, parse_log
from oomsight.core.oomreport import Incident, OomAssembler, assemble
from oomsight.core.recommend import RecommendSettings
from oomsight.core.usage_csv import OPTIONAL, REQUIRED, parse_usage_csv

FIXTURES = Path(__file__).parent / "fixtures"
CORPUS = {
    p.name: p.read_text(encoding="utf-8", errors="replace") for p in sorted((FIXTURES / "oom").glob("*.log"))
}
LINES = [ln for text in CORPUS.values() for ln in text.splitlines() if ln and not ln.startswith("#")]
KMSG_LINES = [ln for ln in LINES if re.match(r"\d+,\d+,\d+,[^;]*;", ln)]
TEXTS = [ln.split(";", 1)[1] if ";" in ln and ln[:1].isdigit() else ln for ln in LINES]
KILL_MARKERS = ("Killed process", "oom-kill:")
CSV_HEADER = (*REQUIRED, *OPTIONAL)


class Crash(AssertionError):
    """A property broken or an exception that is not the project's own."""


def has_kill(text: str) -> bool:
    return any(m in text for m in KILL_MARKERS)


def kill_lines(text: str) -> int:
    """Kill lines in ``text``: one kmsg record may hold several lines (``\\x0a`` unescaped)."""
    return sum(1 for ln in text.splitlines() if has_kill(ln))


def without_kills(text: str) -> str:
    """``text`` less every line with a kill marker (lines as ``str.splitlines`` and the readers cut them)."""
    return "\n".join(ln for ln in text.splitlines() if not has_kill(ln))


def _one_line(err: OomsightError) -> None:
    msg = str(err)
    if not msg or "\n" in msg:
        raise Crash(f"error message is not one line: {msg!r}")


def _check_incidents(incidents: list[Incident], kill_texts: int) -> None:
    if len(incidents) > kill_texts:
        raise Crash(f"{len(incidents)} incidents from {kill_texts} kill lines")
    for inc in incidents:
        if not any(has_kill(text) for _, text in inc.evidence):
            raise Crash(f"incident without a kill line in its evidence: {inc.evidence[:3]}")
        d = diagnose(inc)
        if not d.explanation:
            raise Crash("diagnosis without an explanation")
        d.as_json()


# ---------------------------------------------------------------------------------------- targets


def target_kmsg(raw: str) -> None:
    """One /dev/kmsg read: parsed or refused (None), then fed to a live assembler as the agent does."""
    r = parse_kmsg_record(raw)
    if r is None:
        return
    if not isinstance(r.text, str) or (r.seq is not None and r.seq < 0):
        raise Crash(f"bad record {r!r}")
    asm = OomAssembler()
    incidents = asm.feed(r) + asm.idle() + asm.flush()
    _check_incidents(incidents, kill_lines(r.text))


def target_logtext(text: str) -> None:
    """A whole saved log, as ``oomsight explain`` reads it; and the same log with its kill lines gone."""
    for body, expect_none in ((text, False), (without_kills(text), True)):
        lines = body.splitlines()
        detect_format(lines)
        try:
            _, records = parse_log(body, name="fuzz", year=2026)
        except OomsightError as err:
            _one_line(err)
            continue
        incidents = assemble(records)
        if expect_none and any(has_kill(r.text) for r in records):
            continue  # a paste's wrapped fragments joined back into a kill line: not "no kill line"
        if expect_none and incidents:
            raise Crash(f"{len(incidents)} incidents invented from text with no kill line")
        _check_incidents(incidents, sum(kill_lines(r.text) for r in records))


def target_records(texts: list[str]) -> None:
    """A sequence of kernel messages through the assembler, whole and with the kill lines removed."""
    records = [Record(text=t, seq=i) for i, t in enumerate(texts)]
    _check_incidents(assemble(records), sum(kill_lines(t) for t in texts))
    quiet = [r for r in records if not has_kill(r.text)]
    if assemble(quiet):
        raise Crash("incident invented from records with no kill line")


def target_csv(text: str) -> None:
    """A usage CSV as ``oomsight recommend --from-csv`` reads it, and the recommendation from it."""
    try:
        rows = parse_usage_csv(text.splitlines(), "fuzz.csv")
        if not rows:
            return
        rec, _ = replay(rows, RecommendSettings())
        now = max(r.t for r in rows)
        for key in rec.series_keys():
            rec.recommend(key, now)
    except OomsightError as err:
        _one_line(err)


# ------------------------------------------------------------------------------------- strategies


def _mutate(s: str) -> st.SearchStrategy[str]:
    n = max(len(s), 1)
    junk = st.one_of(
        st.text(max_size=12),
        st.sampled_from(
            ["\\x0a", "\\x", "\\xZZ", "\\xc3\\xa9", "\n", "\r", "\x00", ";", ",", "=", " ", "\t"]
        ),
        st.binary(max_size=8).map(lambda b: b.decode("latin-1")),
    )
    return st.one_of(
        st.just(s),
        st.integers(0, n).map(lambda i: s[:i]),
        st.integers(0, n).map(lambda i: s[i:]),
        st.tuples(st.integers(0, n), junk).map(lambda p: s[: p[0]] + p[1] + s[p[0] :]),
        st.tuples(st.integers(0, n), st.integers(0, 8), junk).map(
            lambda p: s[: p[0]] + p[2] + s[p[0] + p[1] :]
        ),
        st.tuples(st.integers(0, n), st.integers(0, n)).map(lambda p: s[: p[0]] + s[p[1] :]),
    )


_digits = st.one_of(st.integers(-5, 2**64).map(str), st.sampled_from(["", "-", "0x1", "1e3", " 1", "٣"]))
kmsg_built = st.builds(
    lambda pre, seq, usec, flags, more, text, cont: f"{pre},{seq},{usec},{flags}{more};{text}{cont}",
    _digits,
    _digits,
    _digits,
    st.sampled_from(["-", "c", "+", "", "-,caller=T1"]),
    st.sampled_from(["", ",", ",x,y"]),
    st.one_of(st.sampled_from(TEXTS).flatmap(_mutate), st.text(max_size=80)),
    st.lists(
        st.tuples(st.text(max_size=10), st.text(max_size=20)).map(lambda kv: f"\n {kv[0]}={kv[1]}"),
        max_size=3,
    ).map("".join),
)
kmsg_inputs = st.one_of(
    st.sampled_from(KMSG_LINES).flatmap(_mutate),
    kmsg_built,
    st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
)

_line = st.sampled_from(LINES).flatmap(_mutate)
log_inputs = st.one_of(
    st.sampled_from(sorted(CORPUS)).flatmap(lambda name: _mutate(CORPUS[name])),
    st.sampled_from(sorted(CORPUS)).flatmap(
        lambda name: st.permutations(CORPUS[name].splitlines()).map("\n".join)
    ),
    st.lists(_line, max_size=80).map("\n".join),
    st.tuples(st.sampled_from(sorted(CORPUS)), st.binary(max_size=60), st.integers(0, 1 << 16)).map(
        lambda p: _splice_bytes(CORPUS[p[0]], p[1], p[2])
    ),
    st.text(max_size=300),
)

record_inputs = st.one_of(
    st.lists(st.sampled_from(TEXTS).flatmap(_mutate), max_size=120),
    st.tuples(st.sampled_from(sorted(CORPUS)), st.sampled_from(sorted(CORPUS)), st.randoms()).map(
        lambda p: _interleave(p[0], p[1], p[2])
    ),
)


def _splice_bytes(text: str, junk: bytes, at: int) -> str:
    raw = text.encode()
    at = min(at, len(raw))
    return (raw[:at] + junk + raw[at:]).decode("utf-8", errors="replace")


def _interleave(a: str, b: str, rnd: Any) -> list[str]:
    """Two reports' messages merged line by line in a random order (two CPUs printing at once)."""
    ta = [ln.split(";", 1)[1] if ";" in ln and ln[:1].isdigit() else ln for ln in a.splitlines()]
    tb = [ln.split(";", 1)[1] if ";" in ln and ln[:1].isdigit() else ln for ln in b.splitlines()]
    out: list[str] = []
    while ta or tb:
        src = ta if (ta and (not tb or rnd.random() < 0.5)) else tb
        out.append(src.pop(0))
    return out


_cell = st.one_of(
    st.sampled_from(
        [
            "",
            "0",
            "1",
            "true",
            "no",
            "x",
            "-1",
            "1e400",
            "nan",
            "inf",
            "-inf",
            "3.2e+08",
            "536870912",
            "2026-11-23T10:00:00Z",
            "2026-11-23T10:00:00",
            "2026-13-40T99:00:00",
            "1700000000",
            "1e20",
            "9" * 40,
            '"a,b"',
            '"',
            "\x00",
            " 7 ",
            "0x10",
            "١٢٣",
        ]
    ),
    st.text(max_size=12),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.integers(-(2**70), 2**70).map(str),
)
csv_inputs = st.one_of(
    st.tuples(
        st.permutations(CSV_HEADER).flatmap(lambda h: st.integers(1, len(h)).map(lambda n: h[:n])),
        st.integers(1, 12),
    ).flatmap(
        lambda p: st.lists(st.lists(_cell, min_size=len(p[0]), max_size=len(p[0]) + 1), max_size=p[1]).map(
            lambda rows: "\n".join([",".join(p[0]), *(",".join(r) for r in rows)])
        )
    ),
    st.text(max_size=200).map(lambda t: ",".join(REQUIRED) + "\n" + t),
    st.text(max_size=200),
)

TARGETS: dict[str, tuple[Any, st.SearchStrategy[Any]]] = {
    # kmsg record parser (core.kmsg), log-text detector/reader (core.logtext),
    # report assembler (core.oomreport), usage CSV reader (core.usage_csv)
    "kmsg": (target_kmsg, kmsg_inputs),
    "logtext": (target_logtext, log_inputs),
    "records": (target_records, record_inputs),
    "csv": (target_csv, csv_inputs),
}
