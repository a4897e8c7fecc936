"""Writes of ``spec.actions.apply``: a Pod's ``resize`` subresource, a workload's Pod template, the Pod's
``MemoryResized`` Event. Strategic merge patches keyed on the container name, so the other containers
and the other resources (CPU) are left as they are."""

from __future__ import annotations

from typing import Any

from oomsight.core.apply import Resize, TemplatePatch
from oomsight.core.quantity import format_bytes
from oomsight.kube.nodes import post_event
from oomsight.kube.rest import Response, Rest

SMP = "application/strategic-merge-patch+json"
_TEMPLATE_PATHS = {
    "Deployment": "/apis/apps/v1/namespaces/{ns}/deployments/{name}",
    "StatefulSet": "/apis/apps/v1/namespaces/{ns}/statefulsets/{name}",
    "DaemonSet": "/apis/apps/v1/namespaces/{ns}/daemonsets/{name}",
}
REASON_POD_RESIZED = "MemoryResized"


def _resources(request: int | None, limit: int) -> dict[str, Any]:
    res: dict[str, Any] = {"limits": {"memory": format_bytes(limit)}}
    if request is not None:
        res["requests"] = {"memory": format_bytes(request)}
    return res


def resize_pod(rest: Rest, namespace: str, w: Resize) -> Response:
    """PATCH ``pods/<name>/resize`` (in-place resize, GA in Kubernetes 1.35)."""
    body = {"spec": {"containers": [{"name": w.container, "resources": _resources(w.request, w.limit)}]}}
    return rest.request(
        "PATCH", f"/api/v1/namespaces/{namespace}/pods/{w.pod}/resize", body, content_type=SMP
    )


def patch_template(rest: Rest, namespace: str, w: TemplatePatch) -> Response:
    """PATCH the workload's ``spec.template`` (the next rollout, which this starts, uses the values)."""
    body = {"spec": {"template": {"spec": {"containers": [
        {"name": w.container, "resources": _resources(w.request, w.limit)}]}}}}  # fmt: skip
    return rest.request(
        "PATCH", _TEMPLATE_PATHS[w.kind].format(ns=namespace, name=w.name), body, content_type=SMP
    )


def pod_resized_event(
    rest: Rest, namespace: str, pod: dict[str, Any], w: Resize, policy: str, why: str, instance: str
) -> Response:
    """The Pod's ``MemoryResized`` Event: the policy, old and new values, and the reason."""
    meta = pod.get("metadata") or {}
    regarding = {"apiVersion": "v1", "kind": "Pod", "namespace": namespace, "name": w.pod,
                 "uid": str(meta.get("uid", "")),
                 "fieldPath": f"spec.containers{{{w.container}}}"}  # fmt: skip

    def q(n: int | None) -> str:
        return "unset" if n is None else format_bytes(n)

    note = (
        f"MemoryPolicy {policy} resized container {w.container} in place: memory limit {q(w.old_limit)} → "
        f"{q(w.limit)}, request {q(w.old_request)} → {q(w.request)}. {why}"
    )
    etype = "Warning" if why.startswith("Rolled back") else "Normal"
    return post_event(rest, namespace, regarding, etype, REASON_POD_RESIZED, note, instance, action="Resize")
