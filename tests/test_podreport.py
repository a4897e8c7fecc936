"""``core.podreport``: the join behind ``kubectl oomsight why``, on objects captured from a real run
(tests/fixtures/kubectl/scene-main-and-child.json records its kernel and how it was made: a real agent,
a real main-process kill and a real child kill on a stand-in Pod)."""

from __future__ import annotations

import copy
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from oomsight.core.errors import UsageError
from oomsight.core.podreport import (
    assemble,
    merge_kills,
    owned_newest_first,
    parse_target,
    selector_string,
    summary,
)
from oomsight.core.reportview import parse_report, parse_time

FIXTURE = Path(__file__).parent / "fixtures" / "kubectl" / "scene-main-and-child.json"


@pytest.fixture
def scene() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(FIXTURE.read_text())
    assert doc["kernel"] and doc["source"]
    return doc


def _kills(scene: dict[str, Any], since: float | None = None) -> list[Any]:
    report = parse_report(scene["report"])
    out = merge_kills(scene["pod"], scene["events"], report.incidents, since)
    assert set(out) == {"app"}
    return out["app"]


def test_an_event_and_an_incident_of_the_same_kill_are_one_kill_with_both_sources(scene):
    main, child = _kills(scene)
    assert (main.reason, child.reason) == ("OOMKilled", "OOMKilledChild")
    assert main.sources == child.sources == ("event", "report")
    assert main.scope == child.scope == "container"
    assert main.container_survived is False and main.kubernetes_saw is None
    assert child.container_survived is True and child.kubernetes_saw is False
    assert main.pid and child.pid and main.pid != child.pid and main.comm == "python3"
    assert main.dominant == child.dominant == "anon"  # from the Event's note (the report has no field)
    assert "Kubernetes will not report" in child.note and "kept running" in child.explanation
    what, fix = summary(child)
    assert what == child.note and fix.startswith("Fix to consider")
    # An explanation the agent cut at 1 KiB mid-word keeps whole clauses only.
    cut = replace(child, note="", explanation="It died. Fix to consider: raise it; the kubelet ra")
    assert summary(cut) == ("It died.", "Fix to consider: raise it.")


def test_each_source_alone_still_gives_every_kill_once(scene):
    report = parse_report(scene["report"])
    only_events = merge_kills(scene["pod"], scene["events"], (), None)["app"]
    only_report = merge_kills(scene["pod"], [], report.incidents, None)["app"]
    assert (
        [k.reason for k in only_events] == [k.reason for k in only_report] == ["OOMKilled", "OOMKilledChild"]
    )
    assert {k.sources for k in only_events} == {("event",)} and {k.sources for k in only_report} == {
        ("report",)
    }
    assert only_events[0].pid is None and only_report[0].pid is not None


def test_the_kubelets_lastState_joins_the_main_kill_not_the_child(scene):
    main_time = _kills(scene)[0].time
    pod = copy.deepcopy(scene["pod"])
    finished = parse_time(scene["report"]["status"]["incidents"][0]["time"])
    assert finished is not None and main_time is not None
    term = {"exitCode": 137, "reason": "OOMKilled", "finishedAt": _rfc(finished + 3)}
    pod["status"]["containerStatuses"][0]["lastState"] = {"terminated": term}
    main, child = merge_kills(pod, scene["events"], parse_report(scene["report"]).incidents, None)["app"]
    assert main.sources == ("event", "report", "kubelet") and main.kubernetes_saw is True
    assert child.sources == ("event", "report")
    # Far from any agent kill (beyond 120 s) the kubelet's termination is a kill of its own.
    term["finishedAt"] = _rfc(finished + 600)
    kills = merge_kills(pod, scene["events"], parse_report(scene["report"]).incidents, None)["app"]
    assert [k.sources for k in kills] == [("event", "report"), ("event", "report"), ("kubelet",)]
    assert kills[-1].kubernetes_saw is True and kills[-1].scope is None


def test_since_drops_older_kills(scene):
    main, child = _kills(scene)
    assert child.time is not None and main.time is not None
    assert [k.reason for k in _kills(scene, since=child.time)] == ["OOMKilledChild"]
    assert merge_kills(scene["pod"], scene["events"], (), child.time + 1) == {"app": []}


def test_events_of_another_pod_with_the_same_name_and_foreign_events_are_ignored(scene):
    events = copy.deepcopy(scene["events"])
    events[0]["regarding"]["uid"] = "00000000-0000-0000-0000-000000000000"  # the Pod's predecessor
    events[1]["reportingController"] = "kubelet"
    assert merge_kills(scene["pod"], events, (), None) == {}


def test_an_event_without_fieldPath_in_a_two_container_pod_finds_its_container_through_the_incident(scene):
    pod = copy.deepcopy(scene["pod"])
    pod["spec"]["containers"].append({"name": "sidecar", "image": "x"})
    events = copy.deepcopy(scene["events"])
    for e in events:
        e["regarding"].pop("fieldPath")
    incidents = parse_report(scene["report"]).incidents
    assert [k.sources for k in merge_kills(pod, events, incidents, None)["app"]] == [("event", "report")] * 2
    # With nothing to join, the kill is kept, under no container, not dropped.
    alone = merge_kills(pod, events, (), None)
    assert set(alone) == {""} and len(alone[""]) == 2


def test_assemble_without_agent_or_policy_shows_the_kubelets_kill_and_says_what_to_do(scene):
    pod = copy.deepcopy(scene["pod"])
    t = parse_time(scene["report"]["status"]["incidents"][0]["time"]) or 0.0
    term = {"exitCode": 137, "reason": "OOMKilled", "finishedAt": _rfc(t)}
    pod["status"]["containerStatuses"][0]["lastState"] = {"terminated": term}
    answer = assemble(pod, [], None, [], {}, None)
    (c,) = answer.containers
    assert [k.sources for k in c.kills] == [("kubelet",)] and c.working_set is None and c.limit == 64 << 20
    assert answer.first_step.startswith("Raise container app's memory limit from 64Mi")
    doc = answer.as_json()
    assert doc["node"]["report"] is False and doc["recommendation"] is None
    assert doc["containers"][0]["oom_kills"][0]["sources"] == ["kubelet"]


def test_assemble_with_everything_the_scene_has(scene):
    report = parse_report(scene["report"])
    answer = assemble(scene["pod"], scene["events"], report, [], {}, None)
    (c,) = answer.containers
    assert c.effective_limit == 64 << 20 and c.limit_level == "container" and c.working_set is not None
    assert c.peak is not None and c.peak >= c.working_set
    assert answer.first_step.endswith("so also restart it or make the app exit on it.")
    doc = answer.as_json()
    assert [k["reason"] for k in doc["containers"][0]["oom_kills"]] == ["OOMKilled", "OOMKilledChild"]
    assert doc["node"]["kernel"] == scene["kernel"] and doc["node"]["dying_memcgs"] is not None


def test_a_policy_that_selects_the_pod_gives_its_recommendation_or_says_it_is_pending(scene):
    policy = {
        "metadata": {"name": "p", "namespace": "demo"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}},
        "status": {"workloads": [{"kind": "Pod", "name": "web-0", "containers": [
            {"name": "app", "recommendedRequest": "96Mi", "recommendedLimit": "128Mi",
             "reason": "an OOM kill", "confidence": 0.05, "currentRequest": "32Mi",
             "currentLimit": "64Mi"}]}]},
    }  # fmt: skip
    assert scene["pod"]["metadata"]["labels"] == {"app": "web"}
    answer = assemble(scene["pod"], scene["events"], parse_report(scene["report"]), [policy], {}, None)
    rec = answer.containers[0].recommendation
    assert rec is not None and (rec.limit, rec.request, rec.confidence, rec.policy) == (
        "128Mi",
        "96Mi",
        0.05,
        "p",
    )
    assert answer.first_step.startswith(
        "Set container app's memory limit to 128Mi (MemoryPolicy p, confidence 0.05)"
    )
    pending = copy.deepcopy(policy)
    del pending["status"]
    other = copy.deepcopy(policy)
    other["metadata"]["name"] = "a-other"
    other["spec"]["selector"] = {"matchLabels": {"app": "db"}}
    answer = assemble(scene["pod"], [], None, [pending, other], {}, None)
    rec = answer.containers[0].recommendation
    assert rec is not None and rec.pending and rec.policy == "p"
    assert answer.as_json()["recommendation"]["pending"] is True


@pytest.mark.parametrize(
    ("text", "want"),
    [
        ("web-0", ("Pod", "web-0")),
        ("pod/web-0", ("Pod", "web-0")),
        ("deploy/web", ("Deployment", "web")),
        ("deployments.apps/web", ("Deployment", "web")),
        ("sts/db", ("StatefulSet", "db")),
        ("job/backup", ("Job", "backup")),
        ("ds/agent", ("DaemonSet", "agent")),
    ],
)
def test_targets_are_named_as_kubectl_names_them(text, want):
    assert parse_target(text) == want


@pytest.mark.parametrize("text", ["frob/x", "deploy/", "cm/x"])
def test_an_unknown_kind_is_one_usage_error(text):
    with pytest.raises(UsageError, match="cannot tell what"):
        parse_target(text)


def test_selector_and_ownership_pick_a_workloads_pods_newest_first():
    exprs = [
        {"key": "tier", "operator": "In", "values": ["x", "y"]},
        {"key": "canary", "operator": "DoesNotExist"},
    ]
    sel = {"matchLabels": {"b": "2", "a": "1"}, "matchExpressions": exprs}
    assert selector_string(sel) == "a=1,b=2,tier in (x,y),!canary"

    def pod(name: str, created: str, owner: str | None) -> dict[str, Any]:
        refs = [{"uid": owner, "controller": True, "kind": "ReplicaSet", "name": "rs"}] if owner else []
        return {"metadata": {"name": name, "creationTimestamp": created, "ownerReferences": refs}}

    pods = [pod("a", "2026-01-01T00:00:00Z", "rs1"), pod("b", "2026-01-02T00:00:00Z", "rs2"),
            pod("c", "2026-01-03T00:00:00Z", "other"), pod("d", "2026-01-04T00:00:00Z", None)]  # fmt: skip
    assert [p["metadata"]["name"] for p in owned_newest_first(pods, {"rs1", "rs2"})] == ["b", "a"]


def _rfc(t: float) -> str:
    from oomsight.core.policy import rfc3339

    return rfc3339(t)


def test_nodes_table_has_a_full_row_for_a_node_without_a_report(scene: dict[str, Any]) -> None:
    """``kubectl oomsight nodes`` with one reporting node and one Node no agent runs on."""
    from oomsight.cli.nodes import HEADER, table

    report = parse_report(scene["report"])
    lines = table([report], ["quiet-node"], now=parse_time(scene["report"]["status"]["reportTime"]) or 0.0)
    assert lines[0].split()[:2] == ["NODE", "KERNEL"]
    assert lines[1].startswith(report.node)
    last = lines[2].split()
    assert last[0] == "quiet-node" and last[-2:] == ["no", "report"]
    assert len(last) == len(HEADER) - 1 + 2  # "-" per column between the name and "no report"
    assert table([], [], now=0.0)[-1].startswith("(no NodeMemoryReport")
