"""Event naming, aggregation and the events.k8s.io/v1 body: pure rules, no API server."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest

from oomsight.core.events import (
    NOTE_LIMIT_BYTES,
    OOM_BURST,
    Aggregator,
    EventSpec,
    clip_note,
    keyed_event_name,
    kill_event_name,
    micro_time,
)
from oomsight.core.eventspecs import (
    container_of_field_path,
    dominant_in_note,
    high_working_set_event,
    node_finding_event,
    oom_event,
    oom_reason,
    stuck_event,
)
from oomsight.core.podinfo import ContainerInfo, PodInfo

BOOT = "5b0e6f3c-2a34-4c1e-9d0b-0a1b2c3d4e5f"
T0 = datetime(2026, 11, 23, 13, 0, 0, 123456, tzinfo=UTC)
POD = PodInfo(
    uid="0f6a2b4c-1111-4222-8333-944445555666",
    namespace="shop",
    name="web-7d9f8-abcde",
    node_name="node-a",
    containers=(ContainerInfo("app", "ab" * 32, 64 << 20, 128 << 20),),
)
# The shape oomsight.core.diagnosis.Diagnosis.as_json() documents (README, issue 3).
DIAG_CHILD = {
    "scope": "container",
    "victim": {
        "pid": 4242,
        "comm": "memhog",
        "anon_rss_bytes": 40 << 20,
        "file_rss_bytes": 0,
        "shmem_rss_bytes": 0,
        "oom_score_adj": 0,
    },
    "limit_bytes": 64 << 20,
    "charged": {"anon": 60 << 20, "file": 1 << 20, "shmem": 0, "kernel": 2 << 20},
    "dominant": "anon",
    "container_survived": True,
}
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def test_kill_event_name_is_deterministic_and_valid():
    a = kill_event_name("web-7d9f8-abcde", BOOT, 1234)
    assert a == kill_event_name("web-7d9f8-abcde", BOOT, 1234)
    assert a != kill_event_name("web-7d9f8-abcde", BOOT, 1235)
    assert a != kill_event_name("web-7d9f8-abcde", "ffffffff-2a34-4c1e-9d0b-0a1b2c3d4e5f", 1234)
    assert a == "web-7d9f8-abcde.oom-5b0e6f3c2a34-1234"
    assert DNS_SUBDOMAIN.match(a)


@pytest.mark.parametrize("name", ["x" * 253, "Weird_Name", "a..b", "-lead"])
def test_names_stay_dns_subdomains_within_253(name):
    for n in (kill_event_name(name, BOOT, 99999999), keyed_event_name(name, BOOT, "HighWorkingSet|u|c")):
        assert len(n) <= 253
        assert DNS_SUBDOMAIN.match(n), n


@pytest.mark.parametrize(
    ("scope", "survived", "reason"),
    [
        ("container", False, "OOMKilled"),
        ("container", None, "OOMKilled"),
        ("container", True, "OOMKilledChild"),
        ("pod", False, "OOMKilledPodLimit"),
        ("pod", True, "OOMKilledChild"),
        ("ancestor", None, "OOMKilledAncestorLimit"),
        ("node", False, "OOMKilledNode"),
    ],
)
def test_oom_reason_table(scope, survived, reason):
    assert oom_reason(scope, survived) == reason


def test_child_kill_note_says_container_kept_running_with_numbers():
    spec = oom_event(DIAG_CHILD, POD, "app", "node-a", BOOT, 77, T0)
    assert spec.reason == "OOMKilledChild"
    assert "kept running" in spec.note
    assert "64.0 MiB" in spec.note and "memhog" in spec.note and "4242" in spec.note
    assert "anonymous memory" in spec.note
    assert spec.note.count(".") >= 1 and "\n" not in spec.note


def test_body_has_regarding_pod_related_node_and_reporting_fields():
    body = oom_event({**DIAG_CHILD, "container_survived": False}, POD, "app", "node-a", BOOT, 77, T0).as_body(
        "node-a"
    )
    assert body["apiVersion"] == "events.k8s.io/v1"
    assert body["reportingController"] == "oomsight.io/agent"
    assert body["reportingInstance"] == "node-a"
    assert body["regarding"] == {
        "apiVersion": "v1",
        "kind": "Pod",
        "name": POD.name,
        "namespace": "shop",
        "uid": POD.uid,
        "fieldPath": "spec.containers{app}",
    }
    assert container_of_field_path(body["regarding"]["fieldPath"]) == "app"
    assert dominant_in_note(body["note"]) == "anon"
    assert body["related"] == {"apiVersion": "v1", "kind": "Node", "name": "node-a"}
    assert body["reason"] == "OOMKilled" and body["type"] == "Warning" and body["action"] == "OOMKill"
    assert body["eventTime"] == "2026-11-23T13:00:00.123456Z"
    assert "series" not in body


def test_oom_kills_get_own_events_up_to_burst_then_aggregate():
    agg = Aggregator()
    names = []
    for i in range(OOM_BURST + 3):
        spec = oom_event(DIAG_CHILD, POD, "app", "node-a", BOOT, 100 + i, T0 + timedelta(seconds=i))
        names.append(agg.occur(spec))
    distinct = {s.name for s in names}
    assert len(distinct) == OOM_BURST
    last = names[-1]
    assert last.name == names[OOM_BURST - 1].name
    assert last.count == 4  # the 5th kill plus 3 repeats
    body = last.as_body("node-a")
    assert body["series"] == {
        "count": 4,
        "lastObservedTime": micro_time(T0 + timedelta(seconds=OOM_BURST + 2)),
    }


def test_oom_burst_window_slides():
    agg = Aggregator(oom_burst=2, oom_window=60)
    out = [
        agg.occur(oom_event(DIAG_CHILD, POD, "app", "n", BOOT, i, T0 + timedelta(seconds=40 * i)))
        for i in range(5)
    ]
    # kills 40 s apart: never more than 2 within 60 s, so every kill is its own Event
    assert len({s.name for s in out}) == 5


def test_keyed_events_repeat_into_series_and_expire():
    agg = Aggregator(series_window=3600)

    def warn(working_set: int, when: datetime) -> EventSpec:
        return agg.occur(
            high_working_set_event(
                POD, "app", "n", BOOT, working_set, 64 << 20, "container", {"anon": 50 << 20}, 0.9, when
            )
        )

    first = warn(60 << 20, T0)
    again = warn(61 << 20, T0 + timedelta(minutes=10))
    assert again.name == first.name and again.count == 2
    assert again.patch_body()["series"]["count"] == 2
    later = warn(61 << 20, T0 + timedelta(hours=3))
    assert later.count == 1  # outside the window: a fresh occurrence of the same-named Event


def test_forget_drops_state_of_a_vanished_pod():
    agg = Aggregator()
    agg.occur(oom_event(DIAG_CHILD, POD, "app", "n", BOOT, 1, T0))
    agg.occur(stuck_event(POD, "app", "n", BOOT, "/kubepods/x", 1 << 20, T0))
    assert len(agg) == 2
    assert agg.forget(POD.uid) == 2
    assert len(agg) == 0


def test_high_working_set_note_has_ratio_limit_and_dominant():
    spec = high_working_set_event(
        POD,
        "app",
        "n",
        BOOT,
        58 << 20,
        64 << 20,
        "pod",
        {"anon": 10 << 20, "shmem": 40 << 20, "file": 8 << 20},
        0.9,
        T0,
    )
    assert spec.reason == "HighWorkingSet"
    assert "91%" in spec.note and "64.0 MiB pod limit" in spec.note and "shmem/tmpfs" in spec.note


def test_node_finding_event_goes_on_the_node_in_default():
    spec = node_finding_event("node-a", BOOT, "kmem-accounting-leak", "critical", "kmem leaks", T0)
    body = spec.as_body("node-a")
    assert body["metadata"]["namespace"] == "default"
    assert body["regarding"] == {"apiVersion": "v1", "kind": "Node", "name": "node-a"}
    assert body["reason"] == "NodeMemoryRisk" and body["type"] == "Warning"


def test_note_is_clipped_to_one_kib_on_a_character_boundary():
    note = "é" * 2000
    clipped = clip_note(note)
    assert len(clipped.encode()) <= NOTE_LIMIT_BYTES
    assert clipped.endswith("...")


def test_spec_json_round_trip():
    spec = oom_event(DIAG_CHILD, POD, "app", "n", BOOT, 5, T0).repeated(T0 + timedelta(seconds=3))
    assert EventSpec.from_json(spec.to_json()) == spec


def test_kill_at_the_memory_swap_limit_says_so_in_the_note():
    # RHEL 8 4.18 (cgroup v1): memory 31 of 32 GiB, memory+swap full at 34 GiB; that limit was hit.
    from pathlib import Path

    from oomsight.core.diagnosis import diagnose
    from oomsight.core.logtext import parse_log
    from oomsight.core.oomreport import assemble

    log = Path(__file__).parents[1] / "fixtures" / "oom" / "sming56-rhel8-4.18.0-147-memsw-shmem.log"
    diag = diagnose(assemble(parse_log(log.read_text())[1])[0]).as_json()
    assert diag["limit_counter"] == "memory+swap"
    note = oom_event(diag, POD, "app", "node-a", BOOT, 1, T0).note
    assert "at its own memory+swap limit of 34.0 GiB" in note, note
    note = oom_event({**diag, "limit_counter": "memory"}, POD, "app", "node-a", BOOT, 1, T0).note
    assert "at its own limit of 34.0 GiB" in note, note


def test_high_working_set_note_says_swap_and_memory_stalls_when_there_are():
    """A real 6.1 guest's container (tests/fixtures/node/debian-6.1-v2-vm-swap/SOURCE, swapper):
    memory.swap.max max, 22.3 MiB swapped out, its tasks stalled on memory: at its limit it swaps."""
    from agent.test_metrics import SWAPPER
    from oomsight.core.memory import breakdown, parse_pressure, reading_v2

    files = {f.name: f.read_text() for f in SWAPPER.iterdir() if f.name.startswith("memory.")}
    r = reading_v2(files)
    bd = breakdown(r).as_dict()
    assert r.pressure is not None and r.swap_limit_bytes is None and bd["swap"] == 23371776
    spec = high_working_set_event(
        POD, "app", "n", BOOT, r.working_set_bytes, 32 << 20, "container", bd, 0.9, T0, pressure=r.pressure
    )
    assert "swaps its memory out (22.3 MiB already)" in spec.note
    assert "OOM-kills a process in it only when it may swap no more" in spec.note
    assert not spec.note.endswith("(PSI memory.pressure).")  # some avg10 0.59 %: under 1 %, not said
    stalled = parse_pressure("p", "some avg10=1.62 avg60=0.57 avg300=0.13 total=462344\n")
    spec = high_working_set_event(
        POD, "app", "n", BOOT, r.working_set_bytes, 32 << 20, "container", bd, 0.9, T0, pressure=stalled
    )
    assert spec.note.endswith("stalled on memory 1.6% of the last 10 s (PSI memory.pressure).")
    calm = parse_pressure("p", "some avg10=0.20 avg60=0 avg300=0 total=9\n")
    quiet = high_working_set_event(
        POD, "app", "n", BOOT, 60 << 20, 64 << 20, "container", {"anon": 60 << 20}, 0.9, T0, pressure=calm
    )
    assert quiet.note.endswith("at 100% the kernel OOM-kills a process in it.")
