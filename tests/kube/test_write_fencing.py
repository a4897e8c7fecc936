"""The operator's fenced writes on the real kube-apiserver (``oomsight.kube.policies``).

Two replicas can act at once: kopf peering has no fencing, so a leader frozen mid-reconcile (SIGSTOP,
a long pause) comes back and finishes it while its successor writes, and two replicas starting
together both act until each sees the other's peering record (bench/chaos.py's op-peering row). Each
write carries the resourceVersion its decision was computed from: the second writer of the same value
gets a 409 and, having read the object back, writes nothing; a writer of another value writes it on
the version read back (no write lost). Every request of each writer is counted as the API server
answered it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kube.crdkit import apply_crds
from kube.kubehelpers import Kubectl, unique_name
from kube.opkit import create_pod, policy, set_oom_killed
from oomsight.kube import crd
from oomsight.kube.policies import OperatorRest, Write, write_pod_annotations, write_policy_status
from oomsight.kube.rest import Response

pytestmark = pytest.mark.kube

ANN = "oomsight.io/memory-recommendation"


class CountingRest(OperatorRest):
    """A replica's client that counts its requests by (method, HTTP status) as the API server answered."""

    def __init__(self, kubeconfig: Path, instance: str) -> None:
        super().__init__(str(kubeconfig), instance)
        self.calls: Counter[tuple[str, int]] = Counter()

    def request(self, method: str, path: str, body: Any = None, **kw: Any) -> Response:
        resp = super().request(method, path, body, **kw)
        self.calls[(method, resp.status)] += 1
        return resp


def _version(obj: dict[str, Any]) -> str:
    return str(obj["metadata"]["resourceVersion"])


def _pod(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    return create_pod(kubectl, ns, unique_name("fenced"), unique_name("node-fence"), {"app": "fenced"})


def _annotation(kubectl: Kubectl, ns: str, name: str) -> str | None:
    return (kubectl.get("pod", name, ns)["metadata"].get("annotations") or {}).get(ANN)


@dataclass(frozen=True)
class TwoReplicas:
    """Two replicas' clients and the object (with the version) both computed their decision from: ``a``
    writes first, ``b`` second (the resumed frozen leader, or the second of two starting together)."""

    namespace: str
    name: str
    seen: str
    a: CountingRest
    b: CountingRest

    def write(self, write: Callable[..., Write], first: Any, second: Any) -> tuple[Write, Write]:
        """``a`` writes ``first``, then ``b`` writes ``second``, both fenced on ``seen``."""
        return (
            write(self.a, self.namespace, self.name, first, self.seen),
            write(self.b, self.namespace, self.name, second, self.seen),
        )


def _replicas(kubeconfig: Path, obj: dict[str, Any]) -> TwoReplicas:
    meta = obj["metadata"]
    a, b = CountingRest(kubeconfig, "a"), CountingRest(kubeconfig, "b")
    return TwoReplicas(meta["namespace"], meta["name"], _version(obj), a, b)


@pytest.fixture
def on_pod(kubeconfig: Path, kubectl: Kubectl, namespace: str) -> TwoReplicas:
    """Two replicas about to write the annotations of a fresh pod, from its first version."""
    return _replicas(kubeconfig, _pod(kubectl, namespace))


def test_two_writers_of_one_value_from_one_pod_version_write_it_once(
    kubectl: Kubectl, namespace: str, on_pod: TwoReplicas
) -> None:
    first, second = on_pod.write(write_pod_annotations, {ANN: "512Mi"}, {ANN: "512Mi"})

    assert (first.outcome, first.conflicts) == ("written", 0), first
    assert (second.outcome, second.conflicts) == ("held", 1), second
    assert not second.wrote
    assert on_pod.a.calls == {("PATCH", 200): 1}
    assert on_pod.b.calls == {("PATCH", 409): 1, ("GET", 200): 1}, (
        "the second writer read back instead of writing"
    )
    assert _annotation(kubectl, namespace, on_pod.name) == "512Mi"
    assert second.response.body["metadata"]["annotations"][ANN] == "512Mi"  # what it read back


def test_a_conflict_with_another_value_writes_it_on_the_version_read_back(
    kubectl: Kubectl, namespace: str, on_pod: TwoReplicas
) -> None:
    first, second = on_pod.write(write_pod_annotations, {ANN: "512Mi"}, {ANN: "640Mi"})

    assert first.outcome == "written", first
    assert (second.outcome, second.conflicts) == ("rewritten", 1), second
    assert on_pod.b.calls == {("PATCH", 409): 1, ("GET", 200): 1, ("PATCH", 200): 1}
    assert _annotation(kubectl, namespace, on_pod.name) == "640Mi", "a conflict must not lose the write"


def test_a_kubelet_status_update_since_the_view_costs_one_read_and_loses_nothing(
    kubeconfig: Path, kubectl: Kubectl, namespace: str
) -> None:
    pod = _pod(kubectl, namespace)
    name, seen = pod["metadata"]["name"], _version(pod)
    set_oom_killed(kubectl, namespace, pod, "app", "2026-01-01T00:01:00Z")  # the pod's version moves on
    w = CountingRest(kubeconfig, "a")

    done = write_pod_annotations(w, namespace, name, {ANN: "512Mi"}, seen)

    assert (done.outcome, done.conflicts) == ("rewritten", 1), done
    assert w.calls == {("PATCH", 409): 1, ("GET", 200): 1, ("PATCH", 200): 1}
    assert _annotation(kubectl, namespace, name) == "512Mi"


def test_a_removal_already_made_by_another_writer_is_not_made_again(
    kubeconfig: Path, kubectl: Kubectl, namespace: str
) -> None:
    pod = _pod(kubectl, namespace)
    name = pod["metadata"]["name"]
    a, b = CountingRest(kubeconfig, "a"), CountingRest(kubeconfig, "b")
    put = write_pod_annotations(a, namespace, name, {ANN: "512Mi"}, _version(pod))
    seen = _version(put.response.body)

    first = write_pod_annotations(a, namespace, name, {ANN: None}, seen)
    second = write_pod_annotations(b, namespace, name, {ANN: None}, seen)

    assert (first.outcome, second.outcome) == ("written", "held"), (first, second)
    assert b.calls == {("PATCH", 409): 1, ("GET", 200): 1}
    assert _annotation(kubectl, namespace, name) is None


def _policy(kubectl: Kubectl, ns: str) -> dict[str, Any]:
    apply_crds(kubectl)
    return kubectl.create({**policy(unique_name("fenced"), {"matchLabels": {"app": "fenced"}}),
                           "metadata": {"name": unique_name("fenced"), "namespace": ns}})  # fmt: skip


def _status(workloads: int, when: str) -> dict[str, Any]:
    return {"podsObserved": workloads, "workloads": [], "mode": "agents", "lastUpdateTime": when}


CONFLICT, READ = ("PATCH", 409), ("GET", 200)


@pytest.mark.parametrize(
    ("pods", "outcome", "calls", "live"),
    [
        # The same decision made a second later: only lastUpdateTime differs, so it is the same write.
        (3, "held", {CONFLICT: 1, READ: 1}, (3, "2026-12-04T10:00:00Z")),
        # Another value: written on the version read back.
        (4, "rewritten", {CONFLICT: 1, READ: 1, ("PATCH", 200): 1}, (4, "2026-12-04T10:00:01Z")),
    ],
    ids=["same-status-held", "other-status-rewritten"],
)
def test_a_second_status_write_from_the_same_policy_version(
    kubeconfig: Path,
    kubectl: Kubectl,
    namespace: str,
    pods: int,
    outcome: str,
    calls: dict[tuple[str, int], int],
    live: tuple[int, str],
) -> None:
    r = _replicas(kubeconfig, _policy(kubectl, namespace))

    first, second = r.write(
        write_policy_status, _status(3, "2026-12-04T10:00:00Z"), _status(pods, "2026-12-04T10:00:01Z")
    )

    assert (first.outcome, second.outcome, second.conflicts) == ("written", outcome, 1), (first, second)
    assert r.b.calls == calls
    status = kubectl.get(crd.MEMORY_POLICY_PLURAL, r.name, namespace)["status"]
    assert (status["podsObserved"], status["lastUpdateTime"]) == live, status
