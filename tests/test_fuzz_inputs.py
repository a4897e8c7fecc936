"""The four text readers under generated input (tests/fuzzkit.py): a few thousand examples per run.

The million-input run is ``bench/fuzz.py``; this keeps the same properties in every test run:
nothing but the project's own one-line errors escape, and no incident appears without a kill line.
"""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings

import fuzzkit

EXAMPLES = {"kmsg": 1500, "csv": 1000, "logtext": 250, "records": 250}
"""Per target: the whole-log targets cost ~1 ms an example, the others a tenth of that."""


@pytest.mark.parametrize("name", sorted(fuzzkit.TARGETS))
def test_generated_input_never_crashes_nor_invents(name: str) -> None:
    target, strategy = fuzzkit.TARGETS[name]
    n = EXAMPLES[name]

    @settings(max_examples=n, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(strategy)
    def run(value: object) -> None:
        target(value)

    run()


def test_the_corpus_feeds_every_target() -> None:
    assert len(fuzzkit.CORPUS) >= 30
    assert len(fuzzkit.KMSG_LINES) >= 100
    assert sum(1 for t in fuzzkit.TEXTS if fuzzkit.has_kill(t)) >= 30


def test_a_kill_line_is_needed_for_an_incident() -> None:
    """The targets can fail: a real report yields incidents, and the same report without kills none."""
    text = fuzzkit.CORPUS["captured-6.18.44-container-main.log"]
    _, records = fuzzkit.parse_log(text, year=2026)
    assert fuzzkit.assemble(records)
    _, quiet = fuzzkit.parse_log(fuzzkit.without_kills(text), year=2026)
    assert fuzzkit.assemble(quiet) == []
    with pytest.raises(fuzzkit.Crash):
        fuzzkit._check_incidents(fuzzkit.assemble(records), 0)
