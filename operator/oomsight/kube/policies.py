"""Writes of the operator's MemoryPolicy reconcile: status, pod annotations, policy Events.

The status and the pod annotations are fenced writes (``write_policy_status``,
``write_pod_annotations``): each carries the ``metadata.resourceVersion`` of the object the decision
was computed from, so the API server answers 409 Conflict when the object changed since. kopf
peering has no fencing: a leader that was frozen (SIGSTOP, a long GC pause, a node that stalled)
can come back and finish a reconcile while its successor is already writing, and two replicas
starting together both act until each sees the other's peering record. With the precondition, the
second of two writers of the same value gets a 409 instead of writing it again. On a 409 the writer
reads the object once: when it already holds the value, nothing is written (``held``); otherwise the
value is written on the version just read (``rewritten``), so a write is never lost to a conflict.
In steady state this adds no request (the precondition rides on the patch); a 409 costs one GET and
at most one more PATCH. Pods' versions move with every kubelet status update, so a pod written from
a view a status update behind conflicts too: the read-and-compare path is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from oomsight.kube.crd import API_VERSION, GROUP, MEMORY_POLICY_KIND, MEMORY_POLICY_PLURAL, VERSION
from oomsight.kube.kubeconfig import load
from oomsight.kube.nodes import post_event
from oomsight.kube.rest import Response, Rest, resource_version


class OperatorRest(Rest):
    """The shared client with the operator's User-Agent: the API server records its first segment as
    the field manager, so ``managedFields`` show which replica wrote (``oomsight-operator-<pod>``)."""

    def __init__(self, kubeconfig: str | None, instance: str, maxsize: int = 32) -> None:
        super().__init__(load(kubeconfig), maxsize=maxsize)
        self.user_agent = f"oomsight-operator-{instance}"[:100]

    def _headers(self, content_type: str | None) -> dict[str, str]:
        h = super()._headers(content_type)
        h["User-Agent"] = self.user_agent
        return h


FENCE_ATTEMPTS = 3
"""Patches of one fenced write at most: the first, and one per conflict (a pod the kubelet keeps
updating can conflict again between the read and the patch)."""

Fenced = Literal["written", "held", "rewritten", "failed"]


@dataclass(frozen=True, slots=True)
class Write:
    """What a fenced write did. ``response`` is the last answer: the patched object, or on ``held`` the
    object read back (it already held the value), or the error."""

    response: Response
    outcome: Fenced
    """``written``: patched at the first try; ``held``: a 409, and the object read back already held
    the value (nothing written); ``rewritten``: a 409, then written on the version read back;
    ``failed``: not written (the response says why; 404 when the object is gone)."""
    conflicts: int = 0

    @property
    def ok(self) -> bool:
        return self.outcome != "failed"

    @property
    def wrote(self) -> bool:
        return self.outcome in ("written", "rewritten")


def _fenced(
    rest: Rest,
    path: str,
    patch: Callable[[str], Response],
    holds: Callable[[Mapping[str, Any]], bool],
    version: str,
) -> Write:
    """Patch on ``version``; on each 409 read ``path`` and stop when ``holds`` it, else patch again on
    the version read (``FENCE_ATTEMPTS`` patches at most). An empty ``version``: an unfenced patch."""
    conflicts = 0
    resp = patch(version)
    while resp.status == 409 and conflicts < FENCE_ATTEMPTS - 1:
        conflicts += 1
        cur = rest.request("GET", path)
        if not cur.ok:
            return Write(cur, "failed", conflicts)
        if holds(cur.body):
            return Write(cur, "held", conflicts)
        resp = patch(resource_version(cur.body))
    if resp.ok:
        return Write(resp, "rewritten" if conflicts else "written", conflicts)
    return Write(resp, "failed", conflicts + int(resp.status == 409))


def _status_path(namespace: str, name: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{MEMORY_POLICY_PLURAL}/{name}"


def patch_policy_status(
    rest: Rest, namespace: str, name: str, status: Mapping[str, Any], version: str = ""
) -> Response:
    """Replace the whole status (JSON patch ``add /status``: fields that went away do not linger); on
    ``version`` when given (409 Conflict when the policy is at another)."""
    ops: list[dict[str, Any]] = [{"op": "add", "path": "/status", "value": dict(status)}]
    if version:
        ops.insert(0, {"op": "replace", "path": "/metadata/resourceVersion", "value": version})
    return rest.request(
        "PATCH", _status_path(namespace, name) + "/status", ops, content_type="application/json-patch+json"
    )


def _same_status(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Equal but for ``lastUpdateTime`` (the time of the write, not part of what was decided)."""
    return {k: v for k, v in a.items() if k != "lastUpdateTime"} == {
        k: v for k, v in b.items() if k != "lastUpdateTime"
    }


def write_policy_status(
    rest: Rest, namespace: str, name: str, status: Mapping[str, Any], version: str
) -> Write:
    """The status, fenced on ``version`` (the policy's resourceVersion the status was computed from)."""
    return _fenced(
        rest,
        _status_path(namespace, name),
        lambda v: patch_policy_status(rest, namespace, name, status, v),
        lambda live: _same_status(live.get("status") or {}, status),
        version,
    )


def patch_pod_annotations(
    rest: Rest, namespace: str, pod: str, annotations: Mapping[str, str | None], version: str = ""
) -> Response:
    """Set (None: remove) ``annotations``; on ``version`` when given (409 when the pod is at another)."""
    meta: dict[str, Any] = {"annotations": dict(annotations)}
    if version:
        meta["resourceVersion"] = version
    return rest.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/{pod}",
        {"metadata": meta},
        content_type="application/merge-patch+json",
    )


def holds_annotations(pod: Mapping[str, Any], annotations: Mapping[str, str | None]) -> bool:
    """Whether ``pod`` already carries ``annotations`` (a None value: the key is absent)."""
    have = (pod.get("metadata") or {}).get("annotations") or {}
    return all(have.get(k) == v for k, v in annotations.items())


def write_pod_annotations(
    rest: Rest, namespace: str, pod: str, annotations: Mapping[str, str | None], version: str
) -> Write:
    """The annotations, fenced on ``version`` (the pod's resourceVersion they were computed from)."""
    return _fenced(
        rest,
        f"/api/v1/namespaces/{namespace}/pods/{pod}",
        lambda v: patch_pod_annotations(rest, namespace, pod, annotations, v),
        lambda live: holds_annotations(live, annotations),
        version,
    )


def policy_event(
    rest: Rest, namespace: str, name: str, uid: str, etype: str, reason: str, note: str, instance: str
) -> Response:
    regarding = {"apiVersion": API_VERSION, "kind": MEMORY_POLICY_KIND, "namespace": namespace, "name": name,
                 "uid": uid}  # fmt: skip
    return post_event(rest, namespace, regarding, etype, reason, note, instance)
