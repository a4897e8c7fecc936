"""Whose limit a kill at the pod cgroup really was (oomsight.core.podscope), from real captured reports.

The ``captured-6.18.44-kubelet-*`` fixtures are real kills on this machine's kernel (6.18.44, cgroup v1)
in kubelet-exact layouts made by ``tests/fixtures/oom/capture.py kubelet_*`` (``cgroupkit.kubelet_pod``:
pod limit = the sum of the container limits, ``sleep`` in a sandbox cgroup). Each records, in its
``# live:`` header, what the capture read from the cgroups right after the kill: the pod's container
cgroups (own limit, usage, sandbox) and whether the victim's container still had its first process.
Those are the ``Aftermath`` a live host would add; the judgement is checked with and without them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from oomsight.core.aftermath import Aftermath, ProcEntry, first_process_alive, parse_status_ns
from oomsight.core.diagnosis import diagnose
from oomsight.core.eventspecs import oom_event, oom_note, oom_reason
from oomsight.core.logtext import parse_log
from oomsight.core.oomreport import Incident, assemble
from oomsight.core.podinfo import ContainerInfo, PodInfo
from oomsight.core.podscope import Member, PodContext, judge_pod, with_spec

CORPUS = Path(__file__).parent / "fixtures" / "oom"
MIB = 1 << 20


def _capture(name: str) -> tuple[list[Incident], dict[str, Any]]:
    text = (CORPUS / name).read_text()
    live = next((json.loads(line[8:]) for line in text.splitlines() if line.startswith("# live: ")), {})
    _, records = parse_log(text, name=name, year=2026)
    return assemble(records), live


def _aftermath(live: dict[str, Any], names: dict[str, str] | None = None) -> Aftermath:
    members = tuple(
        Member(
            m["container_id"],
            m["limit"],
            m["usage"],
            name=(names or {}).get(m["container_id"]),
            sandbox=m["sandbox"],
        )
        for m in live["members"]
    )
    return Aftermath(PodContext(members), live["container_survived"])


# (fixture, incident index, with live facts?, scope, limit_level, pod_judgement, responsible?, survived,
#  Event reason, words the advice must hold)
CASES = [
    ("kubelet-single-main", 0, True, "container", "pod", "container_at_limit", True, False, "OOMKilled",
     "raise the memory limit of container"),
    ("kubelet-single-main", 0, False, "pod", "pod", "unknown", False, None, "OOMKilledPodLimit",
     "the container that was at its own limit"),
    ("kubelet-single-child", 0, True, "container", "pod", "container_at_limit", True, True, "OOMKilledChild",
     "raise the memory limit of container"),
    ("kubelet-single-child", 0, False, "pod", "pod", "unknown", False, None, "OOMKilledPodLimit",
     "the container that was at its own limit"),
    # The pair outgrew a pod-level limit (48 MiB < 2 × 32 MiB): the pod's, whoever asks.
    ("kubelet-pair", 0, True, "pod", "pod", "not_kubelet_sum", False, False, "OOMKilledPodLimit",
     "raise the pod's own limit"),
    # Then the grower alone hit its own 32 MiB at its container: a plain container kill.
    ("kubelet-pair", 1, False, "container", "container", None, True, False, "OOMKilled",
     "raise the container's memory limit"),
    # Burstable QoS cgroup limited (--qos-reserved): a QoS reservation, named as such.
    ("kubelet-qos-reserved", 0, False, "ancestor", "qos", None, False, None, "OOMKilledAncestorLimit",
     "--qos-reserved"),
]


@pytest.mark.parametrize(
    ("fixture", "index", "with_live", "scope", "level", "judgement", "responsible", "survived", "reason",
     "advice"),
    CASES,
    ids=[f"{c[0]}-{c[1]}-{'live' if c[2] else 'log'}" for c in CASES],
)
def test_captured_kill_is_judged_by_the_limit_a_user_can_change(
    fixture: str,
    index: int,
    with_live: bool,
    scope: str,
    level: str,
    judgement: str | None,
    responsible: bool,
    survived: bool | None,
    reason: str,
    advice: str,
) -> None:
    incidents, live = _capture(f"captured-6.18.44-{fixture}.log")
    inc = incidents[index]
    d = diagnose(inc, aftermath=_aftermath(live) if with_live else None).as_json()
    assert (d["scope"], d["limit_level"], d["pod_judgement"]) == (scope, level, judgement)
    assert d["oom_cgroup"] == inc.oom_memcg  # the fact stays
    assert d["container_survived"] is survived
    assert oom_reason(d["scope"], d["container_survived"]) == reason
    assert any(advice in a for a in d["advice"]), d["advice"]
    if responsible:
        assert d["responsible_container"]["container_id"] == d["container_id"]
        assert d["responsible_container"]["limit_bytes"] == 32 * MIB
    else:
        assert d["responsible_container"] is None


def test_a_child_killed_at_the_pod_limit_is_the_containers_child_kill_in_the_event() -> None:
    """The issue's case: one container (32 MiB) with sh as PID 1, dd killed at the pod cgroup."""
    (inc,), live = _capture("captured-6.18.44-kubelet-single-child.log")
    cid = live["victim_container"]
    d = diagnose(inc, aftermath=_aftermath(live, {cid: "app"})).as_json()
    assert d["responsible_container"] == {"container_id": cid, "name": "app", "limit_bytes": 32 * MIB}
    assert "the pod-level limit" not in d["explanation"]
    assert "container app of pod" in d["explanation"] and "sum of the containers' limits" in d["explanation"]
    assert not any("pod-level" in a for a in d["advice"])
    pod = PodInfo("uid", "demo", "web-0", "node-1", (ContainerInfo("app", cid, 16 * MIB, 32 * MIB),))
    ev = oom_event(d, pod, "app", "node-1", "boot", inc.seq or 0, inc.wall or _now())
    assert ev.reason == "OOMKilledChild"
    assert "container app's own limit of 32.0 MiB" in ev.note and "kept running" in ev.note


def _now():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime.now(UTC)


def test_kubepods_kill_is_named_node_allocatable() -> None:
    _, records = parse_log((CORPUS / "captured-6.18.44-node-allocatable.log").read_text(), year=2026)
    (inc,) = assemble(records)
    d = diagnose(inc).as_json()
    assert (d["scope"], d["limit_level"]) == ("ancestor", "kubepods")
    assert "node allocatable" in d["explanation"]
    assert "at node allocatable" in oom_note(d, "app")
    assert oom_reason(d["scope"], d["container_survived"]) == "OOMKilledAncestorLimit"


def test_qos_kill_says_it_is_a_qos_reservation() -> None:
    (inc, _), _ = _capture("captured-6.18.44-kubelet-qos-reserved.log")
    d = diagnose(inc).as_json()
    assert "QoS reservation" in d["explanation"] and "QOSReserved" in d["explanation"]
    assert "at a QoS reservation" in oom_note(d, "app")


# ---------------------------------------------------------------------------------------- judge_pod

SANDBOX = Member("s" * 64, None, 200 * 1024)


def _m(cid: str, limit_mib: int, usage_mib: float | None) -> Member:
    return Member(cid * 64, limit_mib * MIB, None if usage_mib is None else int(usage_mib * MIB))


# (pod limit MiB, victim container, members, pod-level limit MiB, overhead MiB, judgement, responsible)
JUDGE = [
    # one container: its limit is the pod's, whatever it used
    (32, "a", [_m("a", 32, 0.1)], None, 0, "container_at_limit", "a"),
    (32, "a", [_m("a", 32, None)], None, 0, "container_at_limit", "a"),
    # the kubelet adds spec.overhead (RuntimeClass) to the sum
    (48, "a", [_m("a", 32, 0.1)], None, 16, "container_at_limit", "a"),
    # two containers at the kubelet's sum; the victim's container held the rest of the pod
    (64, "a", [_m("a", 32, 0.2), _m("b", 32, 31.9)], None, 0, "container_at_limit", "a"),
    # the victim is the sidecar's big process, but the app was at its own limit
    (96, "b", [_m("a", 64, 63.9), _m("b", 32, 2)], None, 0, "container_at_limit", "b"),
    # 16 MiB charged to the pod outside the containers: neither was near its own limit
    (64, "a", [_m("a", 32, 1), _m("b", 32, 24), Member("c" * 64, None, 16 * MIB)], None, 0,
     "none_at_limit", None),
    # the others' usage unknown and not one container: cannot tell
    (64, "a", [_m("a", 32, None), _m("b", 32, None)], None, 0, "unknown", None),
    # a pod-level limit from the spec (PodLevelResources) is the pod's even if it equals the sum
    (32, "a", [_m("a", 32, 0.1)], 32, 0, "pod_level_resources", None),
    # a pod limit below the sum (pod-level limit seen through cgroups alone)
    (48, "a", [_m("a", 32, 1), _m("b", 32, 20)], None, 0, "not_kubelet_sum", None),
    # a container without a limit: the kubelet would set no pod limit
    (32, "a", [_m("a", 32, 1), Member("b" * 64, None, 1, sandbox=False)], None, 0, "not_kubelet_sum", None),
]


@pytest.mark.parametrize(("pod", "victim", "members", "level", "overhead", "judgement", "who"), JUDGE)
def test_judge_pod(
    pod: int,
    victim: str,
    members: list[Member],
    level: int | None,
    overhead: int,
    judgement: str,
    who: str | None,
) -> None:
    ctx = PodContext((SANDBOX, *members), level * MIB if level else None, overhead * MIB)
    v = judge_pod(pod * MIB, victim * 64, ctx, victim_rss=30 * MIB if who == victim else 0)
    assert v.judgement == judgement
    assert (v.responsible.container_id[0] if v.responsible else None) == who
    assert v.sandbox_bytes == sum(m.usage_bytes or 0 for m in ctx.members if m.is_sandbox)


def test_judge_pod_tolerates_the_kernels_page_rounding() -> None:
    ctx = PodContext((SANDBOX, Member("a" * 64, 32 * MIB - 4096, 0)))
    assert judge_pod(32 * MIB - 8192, "a" * 64, ctx).judgement == "container_at_limit"
    assert judge_pod(40 * MIB, "a" * 64, ctx).judgement == "not_kubelet_sum"


def test_without_live_facts_the_judgement_is_unknown() -> None:
    assert judge_pod(32 * MIB, "a", None).judgement == "unknown"


# ---------------------------------------------------------------------------------------- survival

STATUS_IN_CONTAINER = "Name:\tsh\nState:\tS (sleeping)\nTgid:\t4242\nPid:\t4242\nNSpid:\t4242\t1\n"
"""/proc/<pid>/status of a container's PID 1 as the host sees it (fs/proc/array.c: NSpid, 4.1+)."""


def test_parse_status_ns() -> None:
    assert parse_status_ns(STATUS_IN_CONTAINER) == ((4242, 1), "S")
    assert parse_status_ns("Name:\tx\nState:\tZ (zombie)\n") == ((), "Z")


@pytest.mark.parametrize(
    ("procs", "victims", "alive"),
    [
        ([ProcEntry(4242, (4242, 1))], [4300], True),  # PID 1 of its namespace lives
        ([ProcEntry(4300, (4300, 7))], [4242], False),  # PID 1 killed, a child not yet reaped
        ([ProcEntry(100)], [200], True),  # no namespace: an older process lives on
        ([ProcEntry(300)], [200], False),  # no namespace: only younger ones are left
        ([ProcEntry(100, state="Z")], [200], False),  # a zombie is gone already
        ([ProcEntry(200)], [200], False),  # the victim itself, not yet reaped
        ([], [200], False),
        (None, [200], False),  # the cgroup is gone
    ],
)
def test_first_process_alive(procs: list[ProcEntry] | None, victims: list[int], alive: bool) -> None:
    assert first_process_alive(procs, victims) is alive


# The real node (tests/node, CI run of 2026-12-04): a one-container Pod's main process killed at the
# pod cgroup, read right after the kill. containerd had already removed the container's cgroup, or the
# kubelet had restarted it under a new ID, so the live cgroups alone showed only the sandbox (or an ID
# the Pod did not name yet), and 2 of 3 such kills were judged OOMKilledPodLimit.
MI = 1 << 20
SANDBOX = Member("f00d", None, 200 * 1024)


@pytest.mark.parametrize(
    "live",
    [
        (SANDBOX,),  # the killed container's cgroup is gone
        (SANDBOX, Member("beef-restarted", 64 * MI, 3 * MI)),  # back under a new ID
        (SANDBOX, Member("c0ffee", 64 * MI, 1 * MI)),  # still there
    ],
)
def test_a_one_container_pods_main_kill_is_the_containers_whatever_the_live_cgroups_show(live):
    members = with_spec(live, (("app", "c0ffee", 64 * MI),))
    verdict = judge_pod(64 * MI, "c0ffee", PodContext(members, source="pod"), victim_rss=63 * MI)
    assert verdict.judgement == "container_at_limit"
    assert verdict.responsible is not None and verdict.responsible.name == "app"
    assert verdict.kubelet_sum == 64 * MI


def test_with_spec_takes_each_containers_live_reading_and_the_sandbox_once():
    live = (SANDBOX, Member("a", 64 * MI, 30 * MI), Member("b", 96 * MI, 20 * MI))
    members = with_spec(live, (("a", "a", 64 * MI), ("b", "b", 64 * MI)))
    assert [(m.name, m.limit_bytes, m.usage_bytes) for m in members if not m.is_sandbox] == [
        ("a", 64 * MI, 30 * MI),
        ("b", 96 * MI, 20 * MI),  # resized in place: the live limit, not the spec's
    ]
    assert [m.usage_bytes for m in members if m.is_sandbox] == [200 * 1024]


def test_a_kill_line_placed_among_several_containers_says_its_details_may_be_anothers() -> None:
    """A storm's kill line without its report, placed by the OOM-kill counters while two or more
    containers ran ahead: the count is each container's own, the line's pid and sizes a guess."""
    _, records = parse_log((CORPUS / "captured-6.18.44-storm.log").read_text(), year=2026)
    bare = next(i for i in assemble(records) if i.task_memcg is None and i.oom_memcg is None)
    d = diagnose(bare).as_json()
    own = oom_note({**d, "scope": "container", "limit_bytes": 24 << 20}, "app")
    assert f"pid {bare.victim.pid}" in own and "another of the kill lines" not in own
    guessed = oom_note({**d, "scope": "container", "limit_bytes": 24 << 20, "placed_among": 3}, "app")
    assert f"pid {bare.victim.pid}" in guessed
    assert "or another of the kill lines the kernel logged without their reports in 3 containers" in guessed
