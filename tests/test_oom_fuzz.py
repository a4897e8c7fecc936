"""Fuzz the log reader and the OOM assembler with real reports cut, garbled, interleaved, mis-encoded.

Two properties, whatever the input: nothing raises, and no incident appears without a kill line
(``Killed process``) or an ``oom-kill:`` summary behind it.
"""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oomsight.core.diagnosis import diagnose
from oomsight.core.errors import ParseError
from oomsight.core.kmsg import Record, parse_kmsg_record
from oomsight.core.logtext import parse_log
from oomsight.core.oomreport import OomAssembler, assemble

CORPUS = Path(__file__).parent / "fixtures" / "oom"
REPORTS = {p.name: p.read_text(encoding="utf-8", errors="replace") for p in sorted(CORPUS.glob("*.log"))}
LINES = [ln for text in REPORTS.values() for ln in text.splitlines() if not ln.startswith("#")]
TEXTS = [ln.split(";", 1)[1] if ";" in ln and ln[:1].isdigit() else ln for ln in LINES]
KILL_MARKERS = ("Killed process", "oom-kill:")

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _is_kill(text: str) -> bool:
    return any(m in text for m in KILL_MARKERS)


def _run(texts: list[str]) -> list:  # type: ignore[type-arg]
    incidents = assemble([Record(text=t, seq=i) for i, t in enumerate(texts)])
    for inc in incidents:
        d = diagnose(inc)
        assert d.explanation
        d.as_json()
    return incidents


garble = st.sampled_from(
    TEXTS
).flatmap(
    lambda t: st.one_of(
        st.just(t),
        st.integers(0, max(len(t), 1)).map(lambda n: t[:n]),  # truncated
        st.integers(0, max(len(t), 1)).map(lambda n: t[n:]),  # head lost
        st.tuples(st.integers(0, max(len(t), 1)), st.text(max_size=8)).map(
            lambda p: t[: p[0]] + p[1] + t[p[0] :]
        ),  # garbled
    )
)


@FUZZ
@given(st.lists(garble, max_size=120))
def test_garbled_reports_never_raise_and_never_invent(texts: list[str]) -> None:
    incidents = _run(texts)
    kills = sum(1 for t in texts if _is_kill(t))
    assert len(incidents) <= kills
    for inc in incidents:
        assert any(_is_kill(text) for _, text in inc.evidence)


@FUZZ
@given(st.sampled_from(sorted(REPORTS)), st.lists(st.text(max_size=60), max_size=40), st.randoms())
def test_interleaved_noise_keeps_the_same_kills(name: str, noise: list[str], rnd) -> None:  # type: ignore[no-untyped-def]
    records = parse_log(REPORTS[name], name=name, year=2026)[1]
    texts = [r.text for r in records]
    clean = [i.victim.pid for i in _run(texts)]
    noise = [n for n in noise if not _is_kill(n) and "oom" not in n and "Kill" not in n and "[" not in n]
    mixed = list(texts)
    for n in noise:
        mixed.insert(rnd.randrange(len(mixed) + 1), n)
    assert [i.victim.pid for i in _run(mixed)] == clean


@FUZZ
@given(st.sampled_from(sorted(REPORTS)))
def test_without_kill_lines_there_is_no_incident(name: str) -> None:
    records = parse_log(REPORTS[name], name=name, year=2026)[1]
    assert _run([r.text for r in records if not _is_kill(r.text)]) == []


@FUZZ
@given(st.binary(max_size=400))
def test_non_utf8_bytes_never_raise(data: bytes) -> None:
    text = data.decode("utf-8", errors="replace")
    try:
        parse_log(text)
    except ParseError as err:
        assert "does not look like a kernel log" in str(err)
    r = parse_kmsg_record(data.decode("latin-1"))
    if r is not None:
        OomAssembler().feed(r)


@FUZZ
@given(st.sampled_from(sorted(REPORTS)), st.binary(max_size=40), st.integers(0, 2000))
def test_bytes_spliced_into_a_saved_log_never_raise(name: str, junk: bytes, at: int) -> None:
    raw = REPORTS[name].encode()
    at = min(at, len(raw))
    text = (raw[:at] + junk + raw[at:]).decode("utf-8", errors="replace")
    try:
        records = parse_log(text, name=name, year=2026)[1]
    except ParseError:
        return
    _run([r.text for r in records])
