"""Placing kill lines that came without their report, from per-cgroup OOM-kill counters."""

from __future__ import annotations

import pytest

from oomsight.core.oomcount import Lead, leading, place_unreported, refused, unexplained

A, B, C = "/kubepods/pod-a/c1", "/kubepods/pod-b/c1", "/kubepods/pod-c/c1"


@pytest.mark.parametrize(
    ("accounted", "counters", "n", "expected"),
    [
        ({A: 3, B: 1}, {A: 4, B: 1}, 1, [A]),  # A ran ahead by one
        ({A: 3, B: 1}, {A: 4, B: 3}, 3, [B, A, B]),  # biggest surplus first, then ties by path
        ({A: 3}, {A: 3}, 1, [None]),  # nothing ahead: a kill outside the known cgroups
        ({A: 3, B: 0}, {A: 5}, 3, [A, A, None]),  # B vanished (no counter); only two unplaced in A
        ({A: 0, B: 0, C: 0}, {A: 1, B: 1, C: 1}, 3, [A, B, C]),
        ({}, {A: 9}, 1, [None]),  # a cgroup never accounted is not guessed at
    ],
)
def test_place_unreported(accounted, counters, n, expected):
    assert place_unreported(accounted, counters, n) == expected


@pytest.mark.parametrize(
    ("accounted", "counters", "expected"),
    [
        ({A: 3, B: 1}, {A: 4, B: 1}, [A]),  # one cgroup ahead: its kill line is its own
        ({A: 3, B: 1}, {A: 5, B: 1}, [A]),  # two kills, one cgroup: still certain
        ({A: 0, B: 0, C: 0}, {A: 1, B: 1, C: 0}, [A, B]),  # two ahead: which line is whose is a guess
        ({A: 3, B: 0}, {A: 4}, [A]),  # B vanished (no counter)
        ({A: 3}, {A: 2}, []),  # behind (a group kill counted once per task): not ahead
    ],
)
def test_leading_names_the_cgroups_a_line_may_belong_to(accounted, counters, expected):
    assert leading(accounted, counters) == expected


def test_does_not_change_its_inputs():
    accounted = {A: 1}
    place_unreported(accounted, {A: 3}, 2)
    assert accounted == {A: 1}


def test_unexplained_are_the_cgroups_whose_counter_runs_ahead():
    counters = {"/a": 3, "/b": 2, "/c": None, "/d": 0, "/e": 1}
    reported = {"/a": 1, "/b": 2, "/e": 2, "/gone": 4}
    # /b and /e are fully explained (a report more than counted: a cgroup recreated at the same path);
    # /c has no counter (v1 before 4.13); /gone no longer exists to count.
    assert unexplained(counters, reported) == {"/a": (3, 1)}
    assert unexplained({"/x": 2}, {}) == {"/x": (2, 0)}


def test_a_lead_refuses_later_kill_lines_until_the_accounting_reaches_it():
    leads = {A: Lead(since=100.0, counter=5), B: Lead(since=100.0, counter=2)}
    # A sweep at 100 s read A's counter at 5 with 4 accounted: a kill line logged after it is not A's
    # lost kill (nor B's); one logged before it may be.
    assert refused({A: 4, B: 1, C: 0}, leads, 100.5) == {A, B}
    assert refused({A: 4, B: 1, C: 0}, leads, 99.9) == set()
    # A's lead was a storm's kill whose line came after the sweep: placed, it explains the lead
    # (and more kills since do not bring it back); B's is still unexplained.
    assert refused({A: 5, B: 1}, leads, 100.5) == {B}
    assert refused({A: 7, B: 2}, leads, 100.5) == set()
    # A cgroup the kernel signalled an OOM in since its lead was found is still going OOM: not refused.
    assert refused({A: 4, B: 1}, leads, 100.5, active={A}) == {B}
