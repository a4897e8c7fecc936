"""Map a cgroup path to the Kubernetes object it belongs to.

The kubelet names pod cgroups in one of two ways (pkg/kubelet/cm/cgroup_manager_linux.go,
pod_container_manager_linux.go):

- cgroupfs driver: ``/kubepods/<burstable|besteffort>/pod<uid>/<container-id>``; Guaranteed pods sit
  directly at ``/kubepods/pod<uid>``. CRI-O names the leaf ``crio-<id>``.
- systemd driver: ``/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice/
  cri-containerd-<id>.scope`` (``crio-<id>.scope``, ``docker-<id>.scope``), with the UID's dashes turned
  into underscores. Guaranteed pods: ``/kubepods.slice/kubepods-pod<uid_>.slice/...``.

Anything may stand above ``kubepods``: kind nests the tree under the node container's docker scope
and runs the kubelet with ``--cgroup-root=/kubelet``, which the systemd driver spells
``kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-burstable.slice/...`` (a slice's name carries
its parents' names). CRI-O's ``crio-conmon-<id>.scope`` holds the monitor, not the container.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

Qos = Literal["guaranteed", "burstable", "besteffort"]
Level = Literal["kubepods", "qos", "pod", "container"]

_UID = r"[0-9a-fA-F]{8}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{4}[-_][0-9a-fA-F]{12}"
_POD_CGROUPFS = re.compile(rf"^pod(?P<uid>{_UID})$")
# systemd slice names spell their whole path ("a-b.slice" lives in "a.slice"), so a kubelet run with
# --cgroup-root=/kubelet (kind does this) names them "kubelet-kubepods-burstable-pod<uid>.slice".
_ROOT_SYSTEMD = re.compile(r"^(?:.+-)?kubepods\.slice$")
_POD_SYSTEMD = re.compile(rf"^(?:.+-)?kubepods(?:-(?P<qos>burstable|besteffort))?-pod(?P<uid>{_UID})\.slice$")
_QOS_SYSTEMD = re.compile(r"^(?:.+-)?kubepods-(?P<qos>burstable|besteffort)\.slice$")
_CONTAINER = re.compile(
    r"^(?:(?P<prefix>cri-containerd|crio|docker|containerd|cri-o)-)?(?P<id>[0-9a-f]{64})(?:\.scope)?$"
)
_QOS: dict[str, Qos] = {"burstable": "burstable", "besteffort": "besteffort"}
"""The QoS classes a cgroup name spells (Guaranteed pods have no QoS cgroup)."""
_RUNTIME_BY_PREFIX = {
    "cri-containerd": "containerd",
    "containerd": "containerd",
    "crio": "cri-o",
    "cri-o": "cri-o",
    "docker": "docker",
}


@dataclass(frozen=True, slots=True)
class KubeRef:
    """What a cgroup path says about the Kubernetes object that owns it."""

    level: Level
    qos: Qos | None = None
    pod_uid: str | None = None
    container_id: str | None = None
    runtime: str | None = None
    """``containerd``, ``cri-o`` or ``docker`` when the leaf name says so; None for a bare id."""


def kubepods_root_driver(name: str) -> Literal["cgroupfs", "systemd"] | None:
    """The kubelet's cgroup driver if ``name`` is its top cgroup (``kubepods``, ``*kubepods.slice``)."""
    if name == "kubepods":
        return "cgroupfs"
    if _ROOT_SYSTEMD.match(name):
        return "systemd"
    return None


def is_conmon(name: str) -> bool:
    """CRI-O's per-container monitor scope: a sibling of the container, never the container."""
    return name.startswith(("crio-conmon-", "conmon-"))


def parse_cgroup_path(path: str) -> KubeRef | None:
    """Return what ``path`` (relative to the hierarchy root, any prefix) tells about its pod.

    None when the path is not under a ``kubepods`` cgroup, or is a CRI-O conmon scope.
    Paths deeper than the container (a process's own sub-cgroup) map to that container.
    """
    parts = [p for p in path.split("/") if p]
    start = next((i for i, p in enumerate(parts) if kubepods_root_driver(p)), None)
    if start is None:
        return None
    rest = parts[start + 1 :]
    if not rest:
        return KubeRef(level="kubepods", qos=None)
    qos: Qos | None = None
    head = rest[0]
    if head in _QOS:
        qos = _QOS[head]
        rest = rest[1:]
    elif m := _QOS_SYSTEMD.match(head):
        qos = _QOS[m.group("qos")]
        rest = rest[1:]
    if not rest:
        return KubeRef(level="qos", qos=qos)
    pod = rest[0]
    uid: str | None = None
    if m := _POD_CGROUPFS.match(pod):
        uid = m.group("uid")
    elif m := _POD_SYSTEMD.match(pod):
        uid = m.group("uid")
        if m.group("qos") and qos is None:
            qos = _QOS[m.group("qos")]
    if uid is None:
        return None
    uid = uid.replace("_", "-").lower()
    if qos is None:
        qos = "guaranteed"
    rest = rest[1:]
    if not rest:
        return KubeRef(level="pod", qos=qos, pod_uid=uid)
    leaf = rest[0]
    if is_conmon(leaf):
        return None
    m = _CONTAINER.match(leaf)
    if m is None:
        return None
    prefix = m.group("prefix")
    return KubeRef(
        level="container",
        qos=qos,
        pod_uid=uid,
        container_id=m.group("id"),
        runtime=_RUNTIME_BY_PREFIX.get(prefix) if prefix else None,
    )


def container_id_from_status(container_id: str) -> tuple[str | None, str]:
    """Split a ``status.containerStatuses[].containerID`` (``containerd://<id>``) into (runtime, id)."""
    runtime, sep, cid = container_id.partition("://")
    if not sep:
        return None, container_id
    return runtime, cid
