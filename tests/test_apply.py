"""core.apply: what a MemoryPolicy with ``spec.actions.apply`` changes, when, and when it undoes it.

Table-driven over the pure decision; the same rules run for real against a kubelet in
tests/node/test_apply_node.py."""

from __future__ import annotations

from dataclasses import replace

import pytest

from oomsight.core.apply import (
    Applied,
    ApplyRecord,
    ApplySettings,
    PodContainer,
    Resize,
    RolledBack,
    TemplatePatch,
    decide,
    record_from_status,
    record_to_status,
)
from oomsight.core.policy import agent_kill, parse_policy, parse_time, pod_view
from oomsight.core.quantity import parse_quantity

Mi = 1 << 20
H = 3600.0
NOW = 1_800_000_000.0
WINDOW = 8 * 24 * H
INPLACE = ApplySettings("InPlace", 0.5, 50.0, False, H)
POD = PodContainer("web-1", 512 * Mi, 512 * Mi, usage=40 * Mi)
REC = (70 * Mi, 80 * Mi, 0.9)
EMPTY = ApplyRecord()


def run(
    settings: ApplySettings = INPLACE,
    rec: tuple[int, int, float] | None = REC,
    peak: int | None = 42 * Mi,
    pods: tuple[PodContainer, ...] = (POD,),
    record: ApplyRecord = EMPTY,
    ooms: tuple[float, ...] = (),
    kind: str = "Deployment",
) -> object:
    return decide(settings, kind, "web", "app", rec, peak, pods, record, ooms, NOW, WINDOW)


def test_in_place_step_is_bounded_by_max_change_percent_and_keeps_requests_equal_to_limits() -> None:
    d = run()
    assert d.writes == (Resize("web-1", "app", 256 * Mi, 256 * Mi, 512 * Mi, 512 * Mi),)
    assert d.event == "applied" and "512Mi → 256Mi" in d.message and "InPlace" in d.message
    assert d.record.applied == Applied(
        256 * Mi, 256 * Mi, 512 * Mi, 512 * Mi, NOW, "InPlace", d.record.applied.reason
    )


def test_burstable_request_moves_on_its_own_and_never_above_the_limit() -> None:
    pod = replace(POD, request=100 * Mi)
    d = run(settings=replace(INPLACE, max_change_percent=90), pods=(pod,))
    (w,) = d.writes
    assert w.limit == 80 * Mi and w.request == 70 * Mi


@pytest.mark.parametrize(
    ("peak", "usage", "floor"),
    [
        (150 * Mi, 40 * Mi, 150 * Mi),  # the peak in the window
        (42 * Mi, 300 * Mi, 300 * Mi),  # current usage (the kubelet refuses a limit at or below it)
    ],
)
def test_never_below_the_peak_nor_the_current_usage(peak: int, usage: int, floor: int) -> None:
    d = run(settings=replace(INPLACE, max_change_percent=100), peak=peak, pods=(replace(POD, usage=usage),))
    (w,) = d.writes
    assert w.limit > floor and w.limit - floor <= Mi
    assert "observed peak" in d.record.applied.reason


def test_no_change_below_min_confidence_or_without_a_recommendation() -> None:
    assert run(rec=(70 * Mi, 80 * Mi, 0.3)).writes == ()
    assert "below minConfidence 0.5" in run(rec=(70 * Mi, 80 * Mi, 0.3)).note
    assert run(settings=replace(INPLACE, min_confidence=0.0), rec=(70 * Mi, 80 * Mi, 0.0)).writes
    assert run(rec=None).note == "no recommendation yet"


def test_off_writes_nothing_even_with_a_confident_recommendation() -> None:
    d = run(settings=ApplySettings())
    assert d.writes == () and d.event == "" and d.record == ApplyRecord()


def test_one_change_per_interval() -> None:
    before = ApplyRecord(Applied(256 * Mi, 256 * Mi, 512 * Mi, 512 * Mi, NOW - H / 2, "InPlace", ""))
    pod = replace(POD, request=256 * Mi, limit=256 * Mi)
    d = run(pods=(pod,), record=before)
    assert d.writes == () and "next at" in d.note
    later = replace(before, applied=replace(before.applied, time=NOW - H - 1))
    assert run(pods=(pod,), record=later).writes == (
        Resize("web-1", "app", 128 * Mi, 128 * Mi, 256 * Mi, 256 * Mi),
    )


def test_oom_after_the_apply_rolls_back_at_once_and_holds_for_the_window() -> None:
    before = ApplyRecord(Applied(256 * Mi, 256 * Mi, 512 * Mi, 512 * Mi, NOW - 60, "InPlace", ""))
    pod = replace(POD, request=256 * Mi, limit=256 * Mi)
    d = run(pods=(pod,), record=before, ooms=(NOW - 3600, NOW - 5))
    assert d.event == "rolledBack"
    assert d.writes == (Resize("web-1", "app", 512 * Mi, 512 * Mi, 256 * Mi, 256 * Mi),)
    assert d.record.rolled_back == RolledBack(NOW, 512 * Mi, 512 * Mi, 256 * Mi, NOW - 5, NOW + WINDOW)
    assert "256Mi → 512Mi" in d.message
    # The next reconcile: nothing again (no loop), held even when the interval has passed.
    pod_back = replace(POD)
    again = decide(INPLACE, "Deployment", "web", "app", REC, 42 * Mi, (pod_back,), d.record, (NOW - 5,),
                   NOW + 2 * H, WINDOW)  # fmt: skip
    assert again.writes == () and again.event == "" and "held after the rollback" in again.note
    after_window = decide(INPLACE, "Deployment", "web", "app", REC, 42 * Mi, (pod_back,), d.record,
                          (NOW - 5,), NOW + WINDOW + 1, WINDOW)  # fmt: skip
    assert after_window.event == "applied"


def test_an_oom_before_the_apply_is_no_reason_to_roll_back() -> None:
    before = ApplyRecord(Applied(256 * Mi, 256 * Mi, 512 * Mi, 512 * Mi, NOW - 60, "InPlace", ""))
    d = run(pods=(replace(POD, limit=256 * Mi, request=256 * Mi),), record=before, ooms=(NOW - 600,))
    assert d.event == "" and d.writes == ()


def test_rollback_in_recreate_patches_the_template_back() -> None:
    before = ApplyRecord(Applied(256 * Mi, 256 * Mi, 512 * Mi, 512 * Mi, NOW - 60, "Recreate", ""))
    d = run(settings=replace(INPLACE, mode="Recreate"), record=before, ooms=(NOW - 1,))
    assert d.writes == (TemplatePatch("Deployment", "web", "app", 512 * Mi, 512 * Mi),)


def test_recreate_patches_the_template_of_deployments_only_not_bare_pods() -> None:
    rc = replace(INPLACE, mode="Recreate")
    assert run(settings=rc).writes == (TemplatePatch("Deployment", "web", "app", 256 * Mi, 256 * Mi),)
    d = run(settings=rc, kind="Pod")
    assert d.writes == () and "not a Pod" in d.note


def test_restart_container_resize_policy_needs_allow_restarts() -> None:
    pod = replace(POD, restart_policy="RestartContainer")
    d = run(pods=(pod,))
    assert d.writes == () and "RestartContainer" in d.note
    assert run(settings=replace(INPLACE, allow_restart=True), pods=(pod,)).writes


@pytest.mark.parametrize("reason", ["Infeasible", "Deferred"])
def test_infeasible_or_deferred_is_recorded_and_not_retried(reason: str) -> None:
    pod = replace(POD, pending=(reason, "Node didn't have enough capacity"))
    d = run(pods=(pod,))
    assert d.writes == () and reason in d.note
    assert d.record.pending == (reason, "Node didn't have enough capacity", NOW)
    # Still pending later: the first time seen is kept, still no write.
    d2 = decide(INPLACE, "Deployment", "web", "app", REC, 42 * Mi, (pod,), d.record, (), NOW + 5 * H, WINDOW)
    assert d2.writes == () and d2.record.pending == d.record.pending
    # The kubelet is done: the record forgets it.
    d3 = decide(INPLACE, "Deployment", "web", "app", REC, 42 * Mi, (POD,), d2.record, (), NOW + 6 * H, WINDOW)
    assert d3.record.pending is None


def test_in_progress_waits_and_small_changes_are_not_made() -> None:
    assert run(pods=(replace(POD, in_progress=True),)).writes == ()
    d = run(rec=(500 * Mi, 500 * Mi, 0.9))
    assert d.writes == () and d.note == "already at the recommendation"


def test_containers_without_a_limit_are_left_alone() -> None:
    d = run(pods=(replace(POD, limit=None, request=None),))
    assert d.writes == () and d.note == "no memory limit to resize"


def test_the_record_survives_the_status_round_trip() -> None:
    rec = ApplyRecord(
        Applied(256 * Mi, 256 * Mi, 512 * Mi, 512 * Mi, NOW, "InPlace", "why"),
        RolledBack(NOW + 60, 512 * Mi, 512 * Mi, 256 * Mi, NOW + 55, NOW + 60 + WINDOW),
        ("Infeasible", "too big", NOW + 70),
    )
    status = record_to_status(rec)
    assert status["applied"]["limit"] == "256Mi" and status["rolledBack"]["limit"] == "512Mi"
    assert record_from_status(status, parse_quantity, parse_time) == rec
    assert record_from_status({"applied": {"limit": "junk"}}, parse_quantity, parse_time) == ApplyRecord()


def test_policy_and_pod_parsing() -> None:
    actions = {"apply": "InPlace", "minConfidence": 0, "maxChangePercent": 20}
    spec = parse_policy(
        {"metadata": {"name": "p", "namespace": "n"}, "spec": {"selector": {}, "actions": actions}}
    )
    assert spec.error is None and spec.apply == ApplySettings("InPlace", 0.0, 20.0, False)
    bad = parse_policy(
        {"metadata": {"name": "p"}, "spec": {"selector": {}, "actions": {"apply": "Sometimes"}}}
    )
    assert bad.error is not None and "spec.actions.apply" in bad.error[1]
    pv = pod_view({
        "metadata": {"name": "w", "namespace": "n", "uid": "u"},
        "spec": {"containers": [{"name": "app", "resources": {"limits": {"memory": "64Mi"}},
                                 "resizePolicy": [{"resourceName": "memory",
                                                   "restartPolicy": "RestartContainer"}]}]},
        "status": {"conditions": [{"type": "PodResizePending", "status": "True", "reason": "Infeasible",
                                   "message": "Node didn't have enough capacity"}]},
    })  # fmt: skip
    assert pv.containers[0].restart_policy == "RestartContainer"
    assert pv.resize_pending == ("Infeasible", "Node didn't have enough capacity")


def test_the_agents_kill_event_is_a_rollback_signal() -> None:
    ev = {
        "reportingController": "oomsight.io/agent",
        "reason": "OOMKilledChild",
        "type": "Warning",
        "eventTime": "2026-12-04T08:52:21.507123Z",
        "regarding": {"kind": "Pod", "name": "web-1", "uid": "u-1", "fieldPath": "spec.containers{app}"},
    }
    assert agent_kill(ev) == ("u-1", "app", parse_time("2026-12-04T08:52:21.507123Z"))
    repeated = {**ev, "series": {"count": 3, "lastObservedTime": "2026-12-04T09:00:00.000001Z"}}
    assert agent_kill(repeated) == ("u-1", "app", parse_time("2026-12-04T09:00:00.000001Z"))
    assert agent_kill({**ev, "reason": "HighWorkingSet"}) is None
    assert agent_kill({**ev, "reason": "OOMKilledNode"}) is None  # not this container's limit
    assert agent_kill({**ev, "reportingController": "kubelet"}) is None
    assert agent_kill({**ev, "regarding": {**ev["regarding"], "fieldPath": ""}}) is None
