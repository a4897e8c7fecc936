"""Write node risk flags: labels (merge patch on the Node), the condition (strategic merge patch on
``nodes/status``, merged by ``type`` so the kubelet's own conditions are untouched) and Events.

Only the operator writes to Nodes (the agent's RBAC cannot patch them).
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime
from typing import Any

from oomsight.core.noderisk import NodePatch
from oomsight.kube.crd import OPERATOR_CONTROLLER
from oomsight.kube.rest import Response, Rest

log = logging.getLogger(__name__)


def get_node(rest: Rest, name: str) -> Response:
    return rest.request("GET", f"/api/v1/nodes/{name}")


def apply_node_patch(rest: Rest, name: str, patch: NodePatch, instance: str) -> list[Response]:
    """Apply ``patch``; returns the failed responses (empty when everything was written)."""
    failed = []
    if patch.labels:
        resp = rest.request("PATCH", f"/api/v1/nodes/{name}", {"metadata": {"labels": patch.labels}},
                            content_type="application/merge-patch+json")  # fmt: skip
        if not resp.ok:
            failed.append(resp)
    if patch.condition is not None:
        resp = rest.request(
            "PATCH",
            f"/api/v1/nodes/{name}/status",
            {"status": {"conditions": [patch.condition]}},
            content_type="application/strategic-merge-patch+json",
        )
        if not resp.ok:
            failed.append(resp)
    if patch.event is not None:
        etype, reason, note = patch.event
        resp = post_event(rest, "default", {"apiVersion": "v1", "kind": "Node", "name": name, "uid": name},
                          etype, reason, note, instance)  # fmt: skip
        if not resp.ok:
            failed.append(resp)
    for resp in failed:
        log.warning("node %s: write failed (HTTP %s): %s", name, resp.status, resp.message[:300])
    return failed


def micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def post_event(
    rest: Rest, namespace: str, regarding: dict[str, Any], etype: str, reason: str, note: str, instance: str,
    action: str = "Reconcile",
) -> Response:  # fmt: skip
    """Create one ``events.k8s.io/v1`` Event (reportingController ``oomsight.io/operator``)."""
    name = f"{regarding.get('name', 'x')}.{secrets.token_hex(8)}"[:253]
    body = {
        "apiVersion": "events.k8s.io/v1",
        "kind": "Event",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": {"app.kubernetes.io/managed-by": "oomsight"},
        },
        "eventTime": micro_now(),
        "reportingController": OPERATOR_CONTROLLER,
        "reportingInstance": instance[:128],
        "action": action,
        "reason": reason,
        "note": note[:1000],
        "type": etype,
        "regarding": regarding,
    }
    return rest.request("POST", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events", body)
