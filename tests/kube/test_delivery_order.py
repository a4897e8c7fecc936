"""The sender thread against the real API server: an Event spooled during a pass goes ahead of the
rest of it, several writes go at once but never two states of one Event, and every Event ends with
its newest count (oomsight.agent.delivery)."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from kube.eventkit import KILL_DIAG, series_count
from oomsight.agent.delivery import SENDS_AT_ONCE, Deliverer
from oomsight.agent.metrics import Counters
from oomsight.agent.state import StateDir
from oomsight.core.eventspecs import EventSpec, oom_event
from oomsight.core.podinfo import ContainerInfo, PodInfo
from oomsight.kube.events import EventSender, Result

pytestmark = pytest.mark.kube



def _pod(namespace: str, name: str) -> PodInfo:
    return PodInfo(uid=str(uuid.uuid4()), namespace=namespace, name=name, node_name="node-a",
                   containers=(ContainerInfo("app", "ab" * 32, 64 << 20, 128 << 20),))  # fmt: skip


class _WatchedSender(EventSender):
    """The real sender, noting which Events are being written at each moment."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.lock = threading.Lock()
        self.inflight: list[str] = []
        self.most_at_once = 0
        self.same_event_at_once: list[str] = []

    def send(self, spec: EventSpec) -> Result:
        with self.lock:
            if spec.name in self.inflight:
                self.same_event_at_once.append(spec.name)
            self.inflight.append(spec.name)
            self.most_at_once = max(self.most_at_once, len(self.inflight))
        try:
            return super().send(spec)
        finally:
            with self.lock:
                self.inflight.remove(spec.name)



def test_an_event_spooled_during_a_pass_is_sent_ahead_of_the_rest_of_it(
    rest: Any, namespace: str, tmp_path: Path
) -> None:
    """A storm's kill waited behind every Event the pass had listed before it (a sweep's warnings)."""
    boot, t0 = str(uuid.uuid4()), datetime.now(UTC) - timedelta(minutes=1)
    state = StateDir(tmp_path / "state")
    order: list[str] = []
    late = t0 + timedelta(seconds=59)
    kill = oom_event(KILL_DIAG, _pod(namespace, "late"), "app", "node-a", boot, 999, late)
    deliverer: Deliverer

    def delivered(name: str) -> None:
        order.append(name)
        if len(order) == 1:  # the pass is under way: a kill is spooled, as the loop does
            state.put(kill)
            deliverer.kick(kill.name)

    sender = _WatchedSender(rest, "node-a")
    deliverer = Deliverer(state, sender, Counters(), on_delivered=delivered)
    pods = [_pod(namespace, f"p{i}") for i in range(30)]
    earlier = [oom_event(KILL_DIAG, pod, "app", "node-a", boot, i, t0) for i, pod in enumerate(pods)]
    for spec in earlier:
        state.put(spec)
    assert deliverer.drain()
    assert kill.name in order, "sent in the same pass"
    assert order.index(kill.name) < 2 * SENDS_AT_ONCE, order.index(kill.name)  # behind those under way
    assert sorted(order) == sorted([s.name for s in earlier] + [kill.name])  # each once
    assert state.count() == 0
    assert 1 < sender.most_at_once <= SENDS_AT_ONCE


def test_several_writes_at_once_never_two_states_of_one_event_and_each_ends_with_its_newestseries_count(
    rest: Any, namespace: str, tmp_path: Path
) -> None:
    boot, t0 = str(uuid.uuid4()), datetime.now(UTC) - timedelta(minutes=1)
    state = StateDir(tmp_path / "state")
    sender = _WatchedSender(rest, "node-a")
    newest: dict[str, EventSpec] = {}
    raised = 0
    deliverer: Deliverer

    def delivered(name: str) -> None:
        nonlocal raised
        if raised < 40:  # newer states of Events already sent or still listed, spooled mid-pass
            raised += 1
            spec = newest[sorted(newest)[raised % len(newest)]]
            newest[spec.name] = spec.repeated(spec.last_observed + timedelta(seconds=1))
            state.put(newest[spec.name])
            deliverer.kick(spec.name)

    deliverer = Deliverer(state, sender, Counters(), on_delivered=delivered)
    for i in range(12):
        spec = oom_event(KILL_DIAG, _pod(namespace, f"q{i}"), "app", "node-a", boot, i, t0)
        newest[spec.name] = spec
        state.put(spec)
    for _ in range(10):
        if deliverer.drain() and state.count() == 0:
            break
    assert state.count() == 0
    assert raised == 40
    assert sender.same_event_at_once == []
    assert sender.most_at_once > 1
    for name, spec in newest.items():
        assert series_count(rest, namespace, name) == spec.count, name
