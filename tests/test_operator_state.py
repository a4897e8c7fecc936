"""controller.state: what a change marks dirty, and that a policy's inputs are only the pods it selects
(the operator's scale property), on objects captured from the real API server."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from oomsight.controller.state import ClusterState
from oomsight.core.policy import pod_view

FIX = Path(__file__).parent / "fixtures" / "operator"


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIX / name).read_text())
    return data


def pod_like(base: str, name: str, uid: str, namespace: str = "capture", **labels: str) -> dict[str, Any]:
    obj = copy.deepcopy(load(base))
    obj["metadata"].update({"name": name, "uid": uid, "namespace": namespace})
    obj["metadata"]["labels"] = labels
    return obj


def fresh() -> tuple[ClusterState, list[tuple[str, str]]]:
    dirty: list[tuple[str, str]] = []
    return ClusterState(on_dirty=dirty.append), dirty


def test_only_selected_pods_are_inputs_and_only_their_changes_mark_dirty() -> None:
    st, dirty = fresh()
    st.upsert_policy(load("memorypolicy.json"))  # team=shop, app In [checkout, db]
    key = ("capture", "shop")
    assert dirty == [key]
    dirty.clear()
    st.upsert_pod(pod_like("pod-statefulset.json", "db-0", "u-db", team="shop", app="db"))
    assert dirty == [key] and st.policies[key].selected == {"u-db"}
    dirty.clear()
    # 1,000 pods no policy selects: same namespace other labels, or another namespace.
    for i in range(500):
        st.upsert_pod(pod_like("pod-bare.json", f"n{i}", f"u-n{i}", team="other"))
        st.upsert_pod(
            pod_like("pod-bare.json", f"m{i}", f"u-m{i}", namespace="elsewhere", team="shop", app="db")
        )
    assert dirty == []
    assert st.policies[key].selected == {"u-db"}
    # A relabel that makes a pod match (and later unmatch) dirties the policy both times.
    st.upsert_pod(pod_like("pod-bare.json", "n1", "u-n1", team="shop", app="checkout"))
    assert dirty == [key] and st.policies[key].selected == {"u-db", "u-n1"}
    dirty.clear()
    st.upsert_pod(pod_like("pod-bare.json", "n1", "u-n1", team="other"))
    assert dirty == [key] and st.policies[key].selected == {"u-db"}
    dirty.clear()
    # The same object again (e.g. a resync) is no change at all.
    st.upsert_pod(pod_like("pod-statefulset.json", "db-0", "u-db", team="shop", app="db"))
    assert dirty == []
    st.delete_pod({"metadata": {"uid": "u-db"}})
    assert dirty == [key] and st.policies[key].selected == set()


def test_a_report_dirties_only_the_policies_whose_pods_changed() -> None:
    st, dirty = fresh()
    pol = load("memorypolicy.json")
    other = copy.deepcopy(pol)
    other["metadata"]["name"] = "other"
    other["spec"]["selector"] = {"matchLabels": {"team": "other"}}
    st.upsert_policy(pol)
    st.upsert_policy(other)
    pod = load("pod-replicaset-oomkilled.json")
    st.upsert_pod(pod)
    st.upsert_pod(pod_like("pod-bare.json", "x", "u-x", team="other"))
    dirty.clear()
    report = load("nodememoryreport.json")
    risk = st.upsert_report("node-a", report["status"])
    assert risk.at_risk and risk.reason == "KmemLeakKernel"
    # A node's first report also dirties "other": u-x is on node-a, which now reports, so "other" moves
    # from kubelet-only to agents mode even though the report has no profile for u-x.
    assert set(dirty) == {("capture", "shop"), ("capture", "other")}
    dirty.clear()
    st.upsert_report("node-a", report["status"])
    assert dirty == []  # the same report again changes nothing
    changed = copy.deepcopy(report["status"])
    for c in changed["containers"]:
        if c["podUID"] == pod["metadata"]["uid"]:
            c["peaks"].append({"t": c["peaks"][-1]["t"] + 300, "bytes": 500 << 20})
    st.upsert_report("node-a", changed)
    assert dirty == [("capture", "shop")]
    dirty.clear()
    st.delete_report("node-a")
    assert ("capture", "shop") in dirty and "node-a" not in st.nodes_reporting


def test_a_spec_change_reselects_and_a_status_write_does_not() -> None:
    st, dirty = fresh()
    pol = load("memorypolicy.json")
    st.upsert_policy(pol)
    st.upsert_pod(pod_like("pod-bare.json", "d", "u-d", team="shop"))
    assert st.policies[("capture", "shop")].selected == set()
    dirty.clear()
    with_status = copy.deepcopy(pol)
    with_status["status"] = {"podsObserved": 0}
    st.upsert_policy(with_status)
    assert dirty == []  # our own status write comes back as an event: ignored
    changed = copy.deepcopy(pol)
    changed["spec"]["selector"] = {"matchLabels": {"team": "shop"}}
    st.upsert_policy(changed)
    assert dirty == [("capture", "shop")] and st.policies[("capture", "shop")].selected == {"u-d"}
    st.delete_policy("capture", "shop")
    assert st.policies == {} and st.pod_policies == {} and "capture" not in st.policies_by_ns


def test_a_warning_threshold_no_policy_selects_is_indexed_as_stale() -> None:
    st, dirty = fresh()
    key = ("capture", "shop")
    policy = load("memorypolicy.json")  # team=shop, app In [checkout, db]
    st.upsert_policy(policy)

    def annotated(name: str, uid: str, **labels: str) -> dict[str, Any]:
        obj = pod_like("pod-bare.json", name, uid, **labels)
        obj["metadata"]["annotations"] = {"oomsight.io/warning-threshold": "70"}
        return obj

    st.upsert_pod(annotated("db-0", "u-db", team="shop", app="db"))
    st.upsert_pod(annotated("x", "u-x", team="other"))  # annotated earlier, selected by nothing now
    st.upsert_pod(pod_like("pod-bare.json", "plain", "u-plain", team="other"))  # no annotation: not ours
    st.upsert_pod(annotated("far", "u-far", namespace="elsewhere", team="shop", app="db"))
    assert [p.name for p in st.stale_threshold_pods("capture")] == ["x"]
    assert [p.name for p in st.stale_threshold_pods("elsewhere")] == ["far"]
    # A relabel out of the selector: stale, and the policy that lost it is dirtied (its reconcile clears).
    dirty.clear()
    st.upsert_pod(annotated("db-0", "u-db", team="shop", app="web"))
    assert dirty == [key]
    assert [p.name for p in st.stale_threshold_pods("capture")] == ["db-0", "x"]
    # Our own write that removed the annotation takes it out of the index without dirtying anything.
    dirty.clear()
    st.replace_pod_view(pod_view(pod_like("pod-bare.json", "x", "u-x", team="other")))
    assert dirty == [] and [p.name for p in st.stale_threshold_pods("capture")] == ["db-0"]
    # Relabel back in: selected again, not stale.
    st.upsert_pod(annotated("db-0", "u-db", team="shop", app="db"))
    assert st.stale_threshold_pods("capture") == []
    # A selector change that drops it, then the policy's deletion after it selects it again.
    changed = copy.deepcopy(policy)
    changed["spec"]["selector"] = {"matchLabels": {"team": "nobody"}}
    st.upsert_policy(changed)
    assert [p.name for p in st.stale_threshold_pods("capture")] == ["db-0"]
    st.upsert_policy(policy)
    assert st.stale_threshold_pods("capture") == []
    st.delete_policy(*key)
    assert [p.name for p in st.stale_threshold_pods("capture")] == ["db-0"]
    # A deleted pod leaves the index.
    st.delete_pod({"metadata": {"uid": "u-db"}})
    assert st.stale_threshold_pods("capture") == [] and "capture" not in st.stale_threshold
