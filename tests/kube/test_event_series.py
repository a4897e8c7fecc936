"""A kill Event's ``series`` count on the real API server is raised, never lowered, across an etcd
restart: a late older write (a request given up on while etcd was down, an outgoing agent Pod's
flush) must not undo a newer count, or kills are lost without a trace (oomsight.kube.events). A
conflict with another write of the same Event is retried and said as such, not as an outage."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kube.eventkit import KILL_DIAG, series_count
from oomsight.agent.delivery import Deliverer
from oomsight.agent.metrics import Counters
from oomsight.agent.state import StateDir
from oomsight.core.eventspecs import EventSpec, oom_event
from oomsight.core.podinfo import ContainerInfo, PodInfo
from oomsight.kube.events import EventSender
from oomsight.kube.rest import Response, Rest

pytestmark = pytest.mark.kube




def test_a_late_older_series_write_after_an_etcd_restart_does_not_lower_theseries_count(
    control_plane: Any, rest: Any, namespace: str
) -> None:
    pod = PodInfo(uid=str(uuid.uuid4()), namespace=namespace, name="hog", node_name="node-a",
                  containers=(ContainerInfo("app", "ab" * 32, 64 << 20, 128 << 20),))  # fmt: skip
    t0 = datetime.now(UTC)
    first = oom_event(KILL_DIAG, pod, "app", "node-a", str(uuid.uuid4()), 7, t0)
    second = first.repeated(t0 + timedelta(seconds=1))
    third = second.repeated(t0 + timedelta(seconds=2))
    sender = EventSender(rest, "node-a")
    assert sender.send(first).outcome == "delivered"
    assert sender.send(second).outcome == "delivered"
    assert series_count(rest, namespace, first.name) == 2

    control_plane._etcd.stop(str(control_plane.binary("etcd")), control_plane.stop_timeout)
    try:
        down = sender.send(third)  # the API server cannot reach etcd: kept, to be retried
        assert down.outcome == "retry", down
    finally:
        control_plane._start_etcd()
    for _ in range(30):  # the API server reconnects to etcd: retried as the agent's sender would
        if (result := sender.send(third)).outcome == "delivered":
            break
    assert result.outcome == "delivered", result
    assert series_count(rest, namespace, first.name) == 3

    # The older state arrives after the newer one (the write given up on during the outage, or an
    # agent Pod being replaced flushing its spool while the new one sends): it must change nothing.
    late = sender.send(second)
    assert late.outcome == "delivered", late
    assert series_count(rest, namespace, first.name) == 3

    fourth = third.repeated(t0 + timedelta(seconds=3))
    assert sender.send(fourth).outcome == "delivered"
    assert series_count(rest, namespace, first.name) == 4


class _CountingRest(Rest):
    """The real client, counting its requests by method."""

    def __init__(self, rest: Rest) -> None:
        super().__init__(rest.creds)
        self.calls: list[str] = []

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Response:
        self.calls.append(method)
        return super().request(method, path, body, **kw)


def test_each_further_state_of_an_event_this_sender_wrote_is_one_patch(rest: Any, namespace: str) -> None:
    """A storm raises a series many times a second: each raise after the first write is one patch on
    the version the last write returned, not create, 409, read and patch. A write by someone else in
    between (another agent Pod's flush) is found by that version: read, compared, never lowered."""
    pod = PodInfo(uid=str(uuid.uuid4()), namespace=namespace, name="hog", node_name="node-a",
                  containers=(ContainerInfo("app", "ab" * 32, 64 << 20, 128 << 20),))  # fmt: skip
    t0 = datetime.now(UTC)
    states = [oom_event(KILL_DIAG, pod, "app", "node-a", str(uuid.uuid4()), 7, t0)]
    for i in range(1, 6):
        states.append(states[-1].repeated(t0 + timedelta(seconds=i)))
    counting = _CountingRest(rest)
    sender = EventSender(counting, "node-a")
    for spec in states[:4]:
        assert sender.send(spec).outcome == "delivered"
    assert counting.calls == ["POST", "PATCH", "PATCH", "PATCH"]
    assert series_count(rest, namespace, states[0].name) == 4

    # Another writer raises it past ours: our next, lower state is read, compared, and dropped.
    other = EventSender(rest, "node-b")
    assert other.send(states[5]).outcome == "delivered"
    counting.calls.clear()
    assert sender.send(states[4]).outcome == "delivered"
    assert counting.calls == ["PATCH", "GET"]  # the version it knew was stale: 409, then read
    assert series_count(rest, namespace, states[0].name) == 6
    counting.calls.clear()
    assert sender.send(states[3]).outcome == "delivered"  # older than what it wrote or read: no call
    assert counting.calls == []
    assert series_count(rest, namespace, states[0].name) == 6


class _RacedSender(EventSender):
    """The sender, with another writer of the same Event (an outgoing agent Pod flushing its spool)
    changing it just before each of this sender's first two patches: the patch on the version it
    remembers from its create, and the patch on the version it then read, are both answered 409."""

    races = 2

    def _patch(self, spec: EventSpec, patch: dict[str, object]) -> Response:
        if self.races > 0:
            self.races -= 1
            other = self.rest.request(
                "PATCH",
                f"/apis/events.k8s.io/v1/namespaces/{spec.namespace}/events/{spec.name}",
                {"metadata": {"annotations": {"test.oomsight.io/other-writer": str(self.races)}}},
                content_type="application/merge-patch+json",
            )
            assert other.ok, other.message
        return super()._patch(spec, patch)


def test_a_conflict_between_read_and_patch_is_one_line_saying_so_not_api_unavailable(
    rest: Any, namespace: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    pod = PodInfo(uid=str(uuid.uuid4()), namespace=namespace, name="hog", node_name="node-a",
                  containers=(ContainerInfo("app", "ab" * 32, 64 << 20, 128 << 20),))  # fmt: skip
    t0 = datetime.now(UTC)
    first = oom_event(KILL_DIAG, pod, "app", "node-a", str(uuid.uuid4()), 7, t0)
    state = StateDir(tmp_path / "state")
    sender = _RacedSender(rest, "node-a")
    deliverer = Deliverer(state, sender, Counters())
    state.put(first)
    assert deliverer.drain(), "the first state is a plain create"
    state.put(first.repeated(t0 + timedelta(seconds=1)))

    with caplog.at_level(logging.INFO, logger="oomsight.agent.delivery"):
        assert not deliverer.drain(), "the raced patch is retried"
        assert deliverer.drain(), "read again and patched"

    assert sender.races == 0
    assert series_count(rest, namespace, first.name) == 2
    lines = [r.getMessage() for r in caplog.records]
    assert not any("unavailable" in ln or "reachable again" in ln for ln in lines), lines
    conflict = [ln for ln in lines if "409" in ln]
    assert len(conflict) == 1, lines
    assert f"Event {namespace}/{first.name} was changed by another write" in conflict[0], conflict
