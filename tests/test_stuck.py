"""find_stuck on real v1 cgroup files captured while a pod sat frozen at its limit (see fixtures/stuck_v1)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from oomsight.core.memory import MemoryReading, reading_v1
from oomsight.core.stuck import find_stuck

CAPTURE = json.loads((Path(__file__).parent / "fixtures/stuck_v1/capture.json").read_text())
POD = "/oomsight-test-capture/kubepods/burstable/poda5503374-85da-4714-ad65-36a7949def8c"
CONTAINER = POD + "/f97d1dbdc7704c319c5ed590cfe9d38d0347668d36d14a7898da5fda1c9bcd4d"


def readings(state: str) -> list[tuple[str, MemoryReading]]:
    return [(path, reading_v1(files)) for path, files in CAPTURE[state].items()]


def test_capture_records_its_kernel() -> None:
    assert CAPTURE["meta"]["kernel"].startswith("6.18")
    assert CAPTURE["meta"]["grower_state"] == ["D", "mem_cgroup_oom_synchronize"]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("before", []),  # killer disabled but below the limit: not stuck
        ("after", [POD, CONTAINER]),  # the pod hit its limit; its container inherited the switch
    ],
)
def test_find_stuck(state: str, expected: list[str]) -> None:
    assert [s.cgroup for s in find_stuck(readings(state))] == expected


def test_stuck_entries_carry_pod_container_and_limit() -> None:
    pod, container = find_stuck(readings("after"))
    assert pod.pod_uid == "a5503374-85da-4714-ad65-36a7949def8c" and pod.container_id is None
    assert container.pod_uid == pod.pod_uid
    assert container.container_id == CONTAINER.rsplit("/", 1)[1]
    assert pod.limit_bytes == 64 << 20 and container.limit_bytes is None
    assert pod.effective_limit_bytes == container.effective_limit_bytes == 64 << 20
    assert "limit of 64 MiB set on a parent cgroup" in container.explanation
    assert "its limit of 64 MiB" in pod.explanation
    assert pod.usage_bytes >= (64 << 20) - (1 << 20)
    assert pod.frozen_below == (CONTAINER,)
    assert container.frozen_below == ()
    doc = pod.as_json()
    assert doc["cgroup"] == POD and doc["pod_uid"] == pod.pod_uid and doc["container_id"] is None
    assert "64 MiB" in pod.explanation and "oom_kill_disable 1" in pod.explanation


def test_v2_readings_are_never_stuck() -> None:
    # a reading without memory.oom_control (what a v2 walk yields) cannot be stuck
    path, r = readings("after")[1]
    from dataclasses import replace

    assert find_stuck([(path, replace(r, oom_control=None))]) == []
