"""core.policy: selectors, owner-chain workloads, OOM evidence and the MemoryPolicy status, on objects
captured from the real API server (tests/fixtures/operator/SOURCE)."""

from __future__ import annotations

import copy
import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from oomsight.core.errors import UsageError
from oomsight.core.policy import (
    ANNOTATION_LAST_OOM,
    ANNOTATION_RECOMMENDATION,
    ANNOTATION_WARNING_THRESHOLD,
    OomEvent,
    OomLog,
    PodView,
    Workload,
    annotation_owner,
    kubelet_ooms,
    memory_for,
    owner_lookups,
    parse_policy,
    parse_selector,
    parse_time,
    pod_view,
    profiles_from_report,
    reconcile,
    status_changed,
    threshold_owner,
    workload_of,
)

FIX = Path(__file__).parent / "fixtures" / "operator"
MI = 1 << 20
NOW = parse_time("2026-11-23T14:30:00Z") or 0.0


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIX / name).read_text())
    return data


# --- selectors: the apimachinery semantics, one row per operator ------------------------------------

LABELS = {"app": "web", "tier": "front"}


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ({}, True),
        ({"matchLabels": {"app": "web"}}, True),
        ({"matchLabels": {"app": "db"}}, False),
        ({"matchLabels": {"app": "web", "tier": "back"}}, False),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["web", "api"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "In", "values": ["api"]}]}, False),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["api"]}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "NotIn", "values": ["web"]}]}, False),
        # NotIn matches a pod that does not have the key at all (apimachinery selector.go).
        ({"matchExpressions": [{"key": "canary", "operator": "NotIn", "values": ["true"]}]}, True),
        ({"matchExpressions": [{"key": "tier", "operator": "Exists"}]}, True),
        ({"matchExpressions": [{"key": "canary", "operator": "Exists"}]}, False),
        ({"matchExpressions": [{"key": "canary", "operator": "DoesNotExist"}]}, True),
        ({"matchExpressions": [{"key": "app", "operator": "DoesNotExist"}]}, False),
        # matchLabels AND matchExpressions
        (
            {
                "matchLabels": {"app": "web"},
                "matchExpressions": [{"key": "tier", "operator": "In", "values": ["back"]}],
            },
            False,
        ),
    ],
)
def test_selector_semantics(selector: dict[str, Any], matches: bool) -> None:
    assert parse_selector(selector).matches(LABELS) is matches


@pytest.mark.parametrize(
    ("selector", "words"),
    [
        ({"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]}, "operator 'Gt'"),
        ({"matchExpressions": [{"key": "app", "operator": "In"}]}, "has no values"),
        ({"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]}, "takes no values"),
        ({"matchFields": {"a": "b"}}, "unsupported field(s) matchFields"),
        (None, "spec.selector is missing"),
    ],
)
def test_selectors_that_cannot_be_matched_say_why(selector: Any, words: str) -> None:
    with pytest.raises(UsageError) as err:
        parse_selector(selector)
    assert words in str(err.value)
    assert err.value.hint


def test_parse_policy_from_the_api_server() -> None:
    p = parse_policy(load("memorypolicy.json"))
    assert (p.namespace, p.name, p.generation) == ("capture", "shop", 1)
    assert p.error is None
    assert p.annotate_pods and p.emit_events
    assert p.threshold_percent == 90  # the CRD default, filled in by the API server
    assert p.settings.maximum == 4 << 30
    assert p.settings.headroom_percent == 15
    assert p.selector.matches({"team": "shop", "app": "db"})
    assert not p.selector.matches({"team": "shop", "app": "debug"})


def test_a_bad_policy_becomes_an_error_not_an_exception() -> None:
    obj = load("memorypolicy.json")
    obj["spec"]["selector"]["matchExpressions"][0]["operator"] = "Gt"
    p = parse_policy(obj)
    assert p.error is not None and p.error[0] == "UnsupportedSelector"
    assert not p.selector.matches({"team": "shop", "app": "db"})  # selects nothing
    obj = load("memorypolicy.json")
    obj["spec"]["recommendation"]["bogus"] = 1
    p = parse_policy(obj)
    assert p.error is not None and p.error[0] == "BadRecommendationSettings"
    assert "bogus" in p.error[1]


# --- pods and workloads -----------------------------------------------------------------------------


def test_pod_view_reads_resources_owner_and_the_kubelet_oom() -> None:
    pv = pod_view(load("pod-replicaset-oomkilled.json"))
    assert pv.namespace == "capture" and pv.node == "node-a"
    assert pv.owner == ("ReplicaSet", "checkout-7d9f8c6b5")
    (c,) = pv.containers
    assert (c.name, c.request, c.limit, c.restart_count) == ("app", 256 * MI, 512 * MI, 1)
    assert c.last_oom == parse_time("2026-11-23T14:20:00Z")
    (ev,) = kubelet_ooms(pv)
    assert ev.source == "kubelet" and ev.limit == 512 * MI
    assert kubelet_ooms(pod_view(load("pod-statefulset.json"))) == []


def test_workloads_through_the_owner_chain() -> None:
    rs_pod = pod_view(load("pod-replicaset-oomkilled.json"))
    sts_pod = pod_view(load("pod-statefulset.json"))
    bare = pod_view(load("pod-bare.json"))
    assert owner_lookups([rs_pod, sts_pod, bare]) == {("capture", "ReplicaSet", "checkout-7d9f8c6b5")}
    rs = load("replicaset.json")
    ref = rs["metadata"]["ownerReferences"][0]
    owners = {("capture", "ReplicaSet", "checkout-7d9f8c6b5"): (ref["kind"], ref["name"])}
    assert workload_of(rs_pod, owners) == Workload("Deployment", "checkout")
    assert workload_of(rs_pod, {}) == Workload("ReplicaSet", "checkout-7d9f8c6b5")  # not looked up (yet)
    assert workload_of(sts_pod, owners) == Workload("StatefulSet", "db")
    assert workload_of(bare, owners) == Workload("Pod", "debug")
    job_pod = PodView("ns", "nightly-29100-abc", "u1", "n", (), ("Job", "nightly-29100"), ())
    assert workload_of(job_pod, {("ns", "Job", "nightly-29100"): ("CronJob", "nightly")}) == Workload(
        "CronJob", "nightly"
    )
    assert workload_of(job_pod, {("ns", "Job", "nightly-29100"): None}) == Workload("Job", "nightly-29100")
    ds_pod = PodView("ns", "agent-x", "u2", "n", (), ("DaemonSet", "agent"), ())
    assert workload_of(ds_pod, {}) == Workload("DaemonSet", "agent")


def test_profiles_and_incidents_from_a_report() -> None:
    report = load("nodememoryreport.json")
    profiles, incidents = profiles_from_report("node-a", report["status"])
    by_pod = {p.pod_uid: p for p in profiles}
    pod = load("pod-replicaset-oomkilled.json")
    p = by_pod[pod["metadata"]["uid"]]
    assert p.peaks[-1] == (1795442400 + 900, 380 * MI)
    assert p.limit == 512 * MI and p.breakdown is not None and p.breakdown.anon == int(380 * MI * 0.9)
    (inc,) = incidents
    assert inc.key.endswith("/40211") and inc.victim == "java" and inc.limit == 512 * MI


def test_oom_log_counts_a_kill_once_whoever_saw_it() -> None:
    log = OomLog()
    t = NOW - 100
    kubelet = OomEvent("u", "app", t + 3, "kubelet/u/app/x", "kubelet", limit=512 * MI)
    agent = OomEvent("u", "app", t, "boot/7", "agent", victim="java", limit=512 * MI)
    assert log.add(kubelet)
    assert log.add(agent)  # the agent's record replaces the kubelet's twin
    assert not log.add(kubelet)
    assert not log.add(agent)
    assert [e.source for e in log.of("u", "app")] == ["agent"]
    assert log.add(OomEvent("u", "app", t + 3600, "boot/9", "agent"))  # a later kill is another kill
    assert len(log.of("u", "app")) == 2
    log.prune(NOW + 86400 * 30, keep=86400 * 8)
    assert log.of("u", "app") == []


# --- reconcile ----------------------------------------------------------------------------------------


def scene(policy_obj: dict[str, Any] | None = None) -> dict[str, Any]:
    policy = parse_policy(policy_obj or load("memorypolicy.json"))
    pods = [
        pod_view(load(n)) for n in ("pod-replicaset-oomkilled.json", "pod-statefulset.json", "pod-bare.json")
    ]
    selected = [p for p in pods if policy.selector.matches(p.label_map)]
    owners = {("capture", "ReplicaSet", "checkout-7d9f8c6b5"): ("Deployment", "checkout")}
    workloads = {p.uid: workload_of(p, owners) for p in selected}
    report = load("nodememoryreport.json")
    profiles, incidents = profiles_from_report("node-a", report["status"])
    log = OomLog()
    for p in selected:
        for ev in kubelet_ooms(p):
            log.add(ev)
    for ev in incidents:
        log.add(ev)
    return {
        "policy": policy,
        "pods": selected,
        "workloads": workloads,
        "profiles": {(p.pod_uid, p.container): p for p in profiles},
        "ooms": log,
        "nodes": frozenset({"node-a"}),
    }


def run(s: dict[str, Any], previous: dict[str, Any] | None = None, now: float = NOW, mem: Any = None) -> Any:
    mem = mem or memory_for(s["policy"], previous)
    return reconcile(
        s["policy"], s["pods"], s["workloads"], s["profiles"], s["ooms"], s["nodes"], mem, previous, now
    )


def entry(status: dict[str, Any], kind: str, name: str) -> dict[str, Any]:
    wl = next(w for w in status["workloads"] if (w["kind"], w["name"]) == (kind, name))
    c: dict[str, Any] = wl["containers"][0]
    return c


def test_status_of_a_policy_with_agents() -> None:
    s = scene()
    res = run(s)
    st = res.status
    assert st["podsObserved"] == 2  # debug has no app label: In [checkout, db] does not match it
    assert st["mode"] == "agents"
    assert [(w["kind"], w["name"]) for w in st["workloads"]] == [
        ("Deployment", "checkout"),
        ("StatefulSet", "db"),
    ]
    co = entry(st, "Deployment", "checkout")
    assert co["currentRequest"] == "256Mi" and co["currentLimit"] == "512Mi"
    # One kill, seen by both the agent (14:19:58) and the kubelet (14:20:00): counted once.
    assert co["oomKills"] == 1 and co["lastOOM"] == "2026-11-23T14:19:58Z"
    # OOM = censored demand: the limit is at least 512Mi x 1.2 (the CRD's default oomBumpRatio).
    assert int(co["recommendedLimit"].removesuffix("Mi")) >= 615
    assert "OOM" in co["reason"]
    assert co["workingSet"]["max"].endswith("Mi") and 419 <= int(co["workingSet"]["max"][:-2]) <= 430
    db = entry(st, "StatefulSet", "db")
    assert db["oomKills"] == 0 and "lastOOM" not in db
    assert st["atRisk"] == 1 and st["oomKills24h"] == 1
    cond = {c["type"]: c for c in st["conditions"]}
    assert cond["Ready"]["status"] == "True" and cond["Invalid"]["status"] == "False"
    assert cond["Degraded"]["status"] == "False" and cond["Degraded"]["reason"] == "AgentsReporting"
    # Annotations: both selected pods get the recommendation; the OOM-killed one also its last OOM.
    assert set(res.annotations) == {"checkout-7d9f8c6b5-x2x9q", "db-0"}
    rec = json.loads(res.annotations["checkout-7d9f8c6b5-x2x9q"][ANNOTATION_RECOMMENDATION])
    assert rec == {
        "policy": "shop",
        "containers": {
            "app": {
                "request": co["recommendedRequest"],
                "limit": co["recommendedLimit"],
                "confidence": co["confidence"],
            }
        },
    }
    last = json.loads(res.annotations["checkout-7d9f8c6b5-x2x9q"][ANNOTATION_LAST_OOM])
    assert last == {
        "time": "2026-11-23T14:19:58Z",
        "container": "app",
        "scope": "container",
        "victim": "java",
        "source": "agent",
    }
    assert ANNOTATION_LAST_OOM not in res.annotations["db-0"]
    assert res.changes == ()  # a first recommendation is not a change


def carrying(pods: list[PodView], patches: dict[str, dict[str, str | None]]) -> list[PodView]:
    """The pods as they are after the annotation patches were applied (None removes a key)."""
    return [
        dataclasses.replace(
            p, annotations=tuple(sorted((k, v) for k, v in patches.get(p.name, {}).items() if v is not None))
        )
        for p in pods
    ]


def test_annotations_are_patched_only_when_they_change() -> None:
    s = scene()
    res = run(s)
    s["pods"] = carrying(s["pods"], res.annotations)
    assert run(s).annotations == {}


def test_kubelet_only_mode() -> None:
    s = scene()
    s["profiles"], s["nodes"] = {}, frozenset()
    log = OomLog()
    for p in s["pods"]:
        for ev in kubelet_ooms(p):
            log.add(ev)
    s["ooms"] = log
    st = run(s).status
    assert st["mode"] == "kubelet-only"
    deg = next(c for c in st["conditions"] if c["type"] == "Degraded")
    assert deg["status"] == "True" and deg["reason"] == "KubeletOnly"
    co = entry(st, "Deployment", "checkout")
    assert co["oomKills"] == 1 and "workingSet" not in co
    assert int(co["recommendedLimit"].removesuffix("Mi")) >= 615  # the OOM floor needs no agent
    db = entry(st, "StatefulSet", "db")
    assert "recommendedLimit" not in db and "NodeMemoryReport" in db["reason"]


def test_invalid_policies() -> None:
    obj = load("memorypolicy.json")
    obj["spec"]["selector"] = {"matchLabels": {"app": "ghost"}}
    st = run(scene(obj)).status
    inv = next(c for c in st["conditions"] if c["type"] == "Invalid")
    assert (inv["status"], inv["reason"]) == ("True", "SelectorMatchesNothing")
    assert "capture" in inv["message"]
    assert next(c for c in st["conditions"] if c["type"] == "Ready")["status"] == "False"

    obj = load("memorypolicy.json")
    obj["spec"]["recommendation"]["maximum"] = "512Mi"  # db peaks at 950Mi
    st = run(scene(obj)).status
    inv = next(c for c in st["conditions"] if c["type"] == "Invalid")
    assert (inv["status"], inv["reason"]) == ("True", "MaximumBelowObservedPeak")
    assert "StatefulSet/db" in inv["message"] and "512Mi" in inv["message"]
    assert entry(st, "StatefulSet", "db")["recommendedLimit"] == "512Mi"


def test_restart_rebuilds_from_the_previous_status_and_loses_nothing() -> None:
    s = scene()
    first = run(s).status
    # A restart after the report's incident and the kubelet's lastState are gone (a new pod replaced it).
    s2 = scene()
    s2["ooms"] = OomLog()
    again = run(s2, previous=first, now=NOW + 600).status
    a, b = entry(first, "Deployment", "checkout"), entry(again, "Deployment", "checkout")
    assert b["oomKills"] == a["oomKills"] == 1
    assert b["lastOOM"] == a["lastOOM"]
    # The persisted peaks of intervals the reports still hold are not counted again: the same inputs
    # give the same recommendation, so a restart rewrites no annotation.
    for k in ("recommendedRequest", "recommendedLimit", "confidence", "workingSet"):
        assert b[k] == a[k], k
    # A restart after the reports lost every peak (agents restarted; 80 minutes of peaks): the status's
    # history still holds them, so the recommendation survives instead of falling to "no data".
    s3 = scene()
    s3["ooms"], s3["profiles"] = OomLog(), {}
    again = run(s3, previous=first, now=NOW + 600).status
    for kind, name in (("Deployment", "checkout"), ("StatefulSet", "db")):
        a, b = entry(first, kind, name), entry(again, kind, name)
        assert b["workingSet"]["max"] == a["workingSet"]["max"], (a, b)
        assert b["recommendedLimit"] == a["recommendedLimit"], (a, b)
        assert b["history"] == a["history"]
    (row,) = entry(first, "StatefulSet", "db")["history"]["peaks"]
    assert row[0] == 1795392000 and row[1] == 950 * MI and row[2] < row[1]  # 24h interval; demand < ws
    # and the evidence coming back (the agent's incident is still in the report) is not counted twice
    again = run(scene(), previous=first, now=NOW + 600).status
    assert entry(again, "Deployment", "checkout")["oomKills"] == 1
    # Conditions keep their transition times across reconciles that change nothing.
    assert [c["lastTransitionTime"] for c in again["conditions"]] == [
        c["lastTransitionTime"] for c in first["conditions"]
    ]


def test_a_material_change_is_reported_once() -> None:
    s = scene()
    mem = memory_for(s["policy"], None)
    run(s, mem=mem)
    assert run(s, mem=mem).changes == ()  # same inputs: nothing to say
    later = NOW + 3600
    s["ooms"].add(OomEvent(s["pods"][1].uid, "app", later - 10, "boot/77", "agent", limit=2 << 30))
    res = run(s, mem=mem, now=later)
    (ch,) = res.changes
    assert ch.workload == Workload("StatefulSet", "db")
    assert ch.new[1] >= int((2 << 30) * 1.2)
    assert "StatefulSet/db container app" in ch.message()
    assert run(s, mem=mem, now=later + 1).changes == ()


def test_status_changed_ignores_the_update_time() -> None:
    st = run(scene()).status
    other = copy.deepcopy(st)
    other["lastUpdateTime"] = "2030-01-01T00:00:00Z"
    assert not status_changed(other, st)
    other["podsObserved"] = 99
    assert status_changed(other, st)
    assert status_changed(None, st)


def test_overlapping_policies_annotate_through_one_owner_and_take_theirs_back() -> None:
    s = scene()
    a = s["policy"]
    other = load("memorypolicy.json")
    other["metadata"]["name"] = "zz-other"
    b = parse_policy(other)
    assert annotation_owner([b, a]) == ("capture", "shop")
    uids = {p.uid for p in s["pods"]}
    assert run_with(s, b, annotate=set()).annotations == {}  # not the owner: never writes
    res = run_with(s, a, annotate=uids)
    assert set(res.annotations) == {"checkout-7d9f8c6b5-x2x9q", "db-0"}
    # the pods now carry shop's annotations; shop stops annotating (annotatePods: false): it removes them
    annotated = carrying(s["pods"], res.annotations)
    off = load("memorypolicy.json")
    off["spec"]["actions"]["annotatePods"] = False
    s["pods"] = annotated
    removed = run_with(s, parse_policy(off), annotate=uids).annotations
    assert removed == {
        p.name: {ANNOTATION_RECOMMENDATION: None, ANNOTATION_LAST_OOM: None} for p in annotated
    }
    # ... but never another policy's
    assert run_with(s, b, annotate=set()).annotations == {}


def run_with(s: dict[str, Any], policy: Any, annotate: set[str]) -> Any:
    return reconcile(
        policy,
        s["pods"],
        s["workloads"],
        s["profiles"],
        s["ooms"],
        s["nodes"],
        memory_for(policy, None),
        None,
        NOW,
        annotate=annotate,
        threshold_pods=annotate,
    )


def test_history_older_than_the_window_is_no_data() -> None:
    s = scene()
    st = run(s, now=NOW + 30 * 86400).status  # a month later: the peaks and the OOM are out of the window
    db = entry(st, "StatefulSet", "db")
    assert "recommendedLimit" not in db and "workingSet" not in db, db
    co = entry(st, "Deployment", "checkout")
    assert co["oomKills"] == 0 and "recommendedLimit" not in co


def test_a_node_wide_oom_is_counted_but_does_not_bump_the_limit() -> None:
    s = scene()
    base = entry(run(s).status, "StatefulSet", "db")
    db_uid = next(p.uid for p in s["pods"] if p.name == "db-0")
    s2 = scene()
    s2["ooms"].add(
        OomEvent(
            db_uid, "app", NOW - 60, "boot/500", "agent", scope="node", victim="postgres", limit=16 << 30
        )
    )
    st = run(s2).status
    db = entry(st, "StatefulSet", "db")
    assert db["oomKills"] == 1 and db["lastOOM"] == "2026-11-23T14:29:00Z"
    assert db["recommendedLimit"] == base["recommendedLimit"]  # the node ran out, not the container
    s3 = scene()
    s3["ooms"].add(OomEvent(db_uid, "app", NOW - 60, "boot/501", "agent", scope="container", limit=2 << 30))
    assert entry(run(s3).status, "StatefulSet", "db")["recommendedLimit"] != base["recommendedLimit"]


def test_a_kill_at_the_pod_limit_bumps_the_container_that_was_at_its_own_limit() -> None:
    """db-0 with a sidecar: the app's process was killed at the pod's limit, but the agent judged the
    sidecar (at its own limit) responsible. The sidecar's limit is raised, the app's is not."""

    def two_container_scene() -> dict[str, Any]:
        s = scene()
        raw = load("pod-statefulset.json")
        side = copy.deepcopy(raw["spec"]["containers"][0])
        side["name"] = "sidecar"
        raw["spec"]["containers"].append(side)
        statuses = raw["status"].get("containerStatuses") or []
        if statuses:
            st = copy.deepcopy(statuses[0])
            st["name"], st["containerID"] = "sidecar", "containerd://" + "5" * 64
            st.pop("lastState", None)
            statuses.append(st)
        s["pods"] = [pod_view(raw) if p.name == "db-0" else p for p in s["pods"]]
        return s

    def containers(st: dict[str, Any]) -> dict[str, dict[str, Any]]:
        wl = next(w for w in st["workloads"] if (w["kind"], w["name"]) == ("StatefulSet", "db"))
        return {c["name"]: c for c in wl["containers"]}

    base = containers(run(two_container_scene()).status)
    uid = next(p.uid for p in two_container_scene()["pods"] if p.name == "db-0")
    s = two_container_scene()
    report = {"incidents": [{
        "time": "2026-11-23T14:29:00Z", "namespace": "shop", "pod": "db-0", "podUID": uid,
        "container": "app", "responsibleContainer": "sidecar", "scope": "pod",
        "victim": {"pid": 4242, "comm": "postgres", "rss": 1 << 30}, "limit": 4 << 30,
        "bootID": "boot", "seq": 900,
    }]}  # fmt: skip
    (ev,) = profiles_from_report("node-a", report)[1]
    assert (ev.container, ev.responsible) == ("app", "sidecar")
    s["ooms"].add(ev)
    after = containers(run(s).status)
    assert after["app"]["oomKills"] == 1  # its process was the one killed
    assert after["app"]["recommendedLimit"] == base["app"]["recommendedLimit"]
    assert "recommendedLimit" not in base["sidecar"]  # no samples of it: nothing to say before
    assert after["sidecar"]["recommendedLimit"] == "2496Mi"  # its own 2Gi limit x 1.2, rounded up
    assert "OOM kill(s) at a limit of 2.0Gi" in after["sidecar"]["reason"]
    # Without the judgement (responsibleContainer absent), the victim's container is bumped as before.
    s2 = two_container_scene()
    del report["incidents"][0]["responsibleContainer"]
    s2["ooms"].add(profiles_from_report("node-a", report)[1][0])
    plain = containers(run(s2).status)
    assert plain["app"]["recommendedLimit"] != base["app"]["recommendedLimit"]
    assert "recommendedLimit" not in plain["sidecar"]


def test_warning_threshold_goes_on_selected_pods_even_without_annotate_pods() -> None:
    s = scene()
    body = load("memorypolicy.json")
    body["spec"]["warningThresholdPercent"] = 75
    body["spec"]["actions"]["annotatePods"] = False
    policy = parse_policy(body)
    uids = {p.uid for p in s["pods"]}
    res = run_with(s, policy, annotate=uids)
    assert res.annotations == {p.name: {ANNOTATION_WARNING_THRESHOLD: "75"} for p in s["pods"]}
    s["pods"] = carrying(s["pods"], res.annotations)
    assert run_with(s, policy, annotate=uids).annotations == {}  # unchanged: no patch
    body["spec"]["warningThresholdPercent"] = 50.5
    res = run_with(s, parse_policy(body), annotate=uids)
    assert {n: a[ANNOTATION_WARNING_THRESHOLD] for n, a in res.annotations.items()} == {
        p.name: "50.5" for p in s["pods"]
    }
    assert run_with(s, parse_policy(body), annotate=set()).annotations == {}  # not the owner


def test_threshold_owner_is_the_most_cautious_policy() -> None:
    low, high, broken = load("memorypolicy.json"), load("memorypolicy.json"), load("memorypolicy.json")
    low["metadata"]["name"], low["spec"]["warningThresholdPercent"] = "zz-low", 60
    high["metadata"]["name"], high["spec"]["warningThresholdPercent"] = "aa-high", 95
    broken["metadata"]["name"], broken["spec"]["warningThresholdPercent"] = "broken", 10
    broken["spec"]["selector"] = {"matchExpressions": [{"key": "app", "operator": "Gt", "values": ["1"]}]}
    specs = [parse_policy(b) for b in (high, low, broken)]
    assert specs[2].error is not None
    assert threshold_owner(specs) == ("capture", "zz-low")
    assert threshold_owner([specs[2]]) is None


def test_report_jvm_flags_become_the_recommenders_jvm_heap() -> None:
    from oomsight.core.recommend import JvmHeap

    def prof(**extra: Any) -> Any:
        c = {"podUID": "u1", "container": "app", "workingSet": 300 << 20, **extra}
        (p,), _ = profiles_from_report("node-a", {"containers": [c]})
        return p

    assert prof().jvm is None
    assert prof(xmx=512 << 20).jvm == JvmHeap(max_heap_bytes=512 << 20)
    assert prof(maxRAMPercentage=75.0).jvm == JvmHeap(max_ram_percentage=75.0)
    assert prof(xmx=512 << 20, maxRAMPercentage=75.0).jvm == JvmHeap(max_heap_bytes=512 << 20)  # HotSpot
    assert prof(maxRAMPercentage=100).jvm is None  # the whole limit is heap: no floor to add
    assert prof(maxRAMPercentage="75").jvm is None  # not a number: ignored, never raised
