"""The few facts about a Pod the agent needs, read from the Pod's JSON.

Attribution follows the kubelet: a container's cgroup is named after the pod UID and the runtime's
container ID, and the Pod reports that ID as ``status.containerStatuses[].containerID``
(``containerd://<64 hex>``; pkg/kubelet/kuberuntime/kuberuntime_container.go ``toKubeContainerStatus``).
Requests and limits come from ``spec.containers[].resources``; quantities are converted to bytes
here, at the edge (k8s.io/apimachinery/pkg/api/resource/quantity.go suffixes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from oomsight.core.errors import ParseError
from oomsight.core.kubepath import container_id_from_status
from oomsight.core.quantity import parse_quantity

ANNOTATION_WARNING_THRESHOLD = "oomsight.io/warning-threshold"
"""Pod annotation the operator writes from the selecting MemoryPolicy's ``warningThresholdPercent``
(a number in (0, 100], e.g. ``"75"``); the agent warns (HighWorkingSet) at that share of the limit."""



@dataclass(frozen=True, slots=True)
class ContainerInfo:
    name: str
    container_id: str | None
    """The runtime's ID without the ``containerd://`` scheme; None before the container started."""
    request_bytes: int | None
    limit_bytes: int | None
    init: bool = False


@dataclass(frozen=True, slots=True)
class PodInfo:
    uid: str
    namespace: str
    name: str
    node_name: str
    containers: tuple[ContainerInfo, ...]
    policy_threshold: float | None = None
    """Working-set warning threshold (fraction of the limit) from a MemoryPolicy, when one applies."""
    pod_limit_bytes: int | None = None
    """``spec.resources.limits.memory``: a pod-level limit (PodLevelResources, KEP-2837)."""
    overhead_bytes: int | None = None
    """``spec.overhead.memory`` (set from the RuntimeClass); the kubelet adds it to the pod's limit."""

    def container_by_id(self, container_id: str | None) -> ContainerInfo | None:
        if not container_id:
            return None
        for c in self.containers:  # one or two: a loop, not a dict (called per container per sweep)
            if c.container_id == container_id:
                return c
        return None

    def container_by_name(self, name: str) -> ContainerInfo | None:
        return next((c for c in self.containers if c.name == name), None)


def parse_threshold(text: object) -> float | None:
    """``"75"`` (percent, from ``ANNOTATION_WARNING_THRESHOLD``) → 0.75; None when absent or not a
    number in (0, 100] (a hand-edited annotation must not silence or flood the warnings)."""
    if text is None:
        return None
    try:
        percent = float(str(text).strip().removesuffix("%"))
    except ValueError:
        return None
    if not 0 < percent <= 100:  # also rejects NaN
        return None
    return percent / 100.0


def memory_resources(container: Mapping[str, Any]) -> tuple[int | None, int | None]:
    """A container spec's memory (request, limit) in bytes; None where unset or not a valid quantity
    (the API server validates them, so an unparsable one is left out rather than raised)."""
    res = container.get("resources") or {}

    def one(kind: str) -> int | None:
        value = (res.get(kind) or {}).get("memory")
        if value is None:
            return None
        try:
            return parse_quantity(str(value))
        except ParseError:
            return None

    return one("requests"), one("limits")


def _memory(resources: Mapping[str, Any] | None) -> int | None:
    value = (resources or {}).get("memory")
    if value is None:
        return None
    try:
        return parse_quantity(str(value))
    except ParseError:
        return None


def pod_from_json(pod: Mapping[str, Any]) -> PodInfo:
    """Build a PodInfo from a Pod's JSON (as the API returns it)."""
    meta = pod.get("metadata") or {}
    spec = pod.get("spec") or {}
    status = pod.get("status") or {}
    uid = meta.get("uid")
    if not uid:
        raise ParseError("pod without metadata.uid", "this is not a Pod object from the API server")
    ids: dict[str, str] = {}
    for key in ("containerStatuses", "initContainerStatuses", "ephemeralContainerStatuses"):
        for cs in status.get(key) or []:
            raw = cs.get("containerID")
            if cs.get("name") and raw:
                ids[cs["name"]] = container_id_from_status(str(raw))[1]
    containers: list[ContainerInfo] = []
    for key, init in (("containers", False), ("initContainers", True)):
        for c in spec.get(key) or []:
            name = str(c.get("name", ""))
            request, limit = memory_resources(c)
            containers.append(ContainerInfo(name, ids.get(name), request, limit, init))
    return PodInfo(
        uid=str(uid),
        namespace=str(meta.get("namespace", "")),
        name=str(meta.get("name", "")),
        node_name=str(spec.get("nodeName") or ""),
        containers=tuple(containers),
        policy_threshold=parse_threshold((meta.get("annotations") or {}).get(ANNOTATION_WARNING_THRESHOLD)),
        pod_limit_bytes=_memory((spec.get("resources") or {}).get("limits")),
        overhead_bytes=_memory(spec.get("overhead")),
    )
