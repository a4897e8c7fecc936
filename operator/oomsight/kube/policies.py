"""Writes of the operator's MemoryPolicy reconcile: status, pod annotations, policy Events."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from oomsight.kube.crd import API_VERSION, GROUP, MEMORY_POLICY_KIND, MEMORY_POLICY_PLURAL, VERSION
from oomsight.kube.kubeconfig import load
from oomsight.kube.nodes import post_event
from oomsight.kube.rest import Response, Rest


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


def patch_policy_status(rest: Rest, namespace: str, name: str, status: Mapping[str, Any]) -> Response:
    """Replace the whole status (JSON patch ``add /status``: fields that went away do not linger)."""
    return rest.request(
        "PATCH",
        f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{MEMORY_POLICY_PLURAL}/{name}/status",
        [{"op": "add", "path": "/status", "value": dict(status)}],
        content_type="application/json-patch+json",
    )


def patch_pod_annotations(
    rest: Rest, namespace: str, pod: str, annotations: Mapping[str, str | None]
) -> Response:
    return rest.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/{pod}",
        {"metadata": {"annotations": dict(annotations)}},
        content_type="application/merge-patch+json",
    )


def policy_event(
    rest: Rest, namespace: str, name: str, uid: str, etype: str, reason: str, note: str, instance: str
) -> Response:
    regarding = {"apiVersion": API_VERSION, "kind": MEMORY_POLICY_KIND, "namespace": namespace, "name": name,
                 "uid": uid}  # fmt: skip
    return post_event(rest, namespace, regarding, etype, reason, note, instance)
