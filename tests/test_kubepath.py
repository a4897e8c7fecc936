"""Cgroup path -> pod/container, for both kubelet cgroup drivers and the runtimes' leaf names."""

from __future__ import annotations

import pytest

from oomsight.core.kubepath import container_id_from_status, parse_cgroup_path

CID = "4f1c0a9e2b7d4c3a8e6f5d2c1b0a9e8f7d6c5b4a3e2d1c0b9a8f7e6d5c4b3a21"
UID = "8d5a1a3c-2b7e-4f1a-9c3d-0e5f6a7b8c9d"
US = UID.replace("-", "_")


@pytest.mark.parametrize(
    ("path", "level", "qos", "uid", "cid", "runtime"),
    [
        (f"/kubepods/burstable/pod{UID}/{CID}", "container", "burstable", UID, CID, None),
        (f"/kubepods/besteffort/pod{UID}/crio-{CID}", "container", "besteffort", UID, CID, "cri-o"),
        (f"/kubepods/pod{UID}/{CID}", "container", "guaranteed", UID, CID, None),
        (f"/kubepods/pod{UID}", "pod", "guaranteed", UID, None, None),
        ("/kubepods/burstable", "qos", "burstable", None, None, None),
        ("/kubepods", "kubepods", None, None, None, None),
        (
            f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{US}.slice/cri-containerd-{CID}.scope",
            "container", "burstable", UID, CID, "containerd",
        ),
        (
            f"/kubepods.slice/kubepods-pod{US}.slice/crio-{CID}.scope",
            "container", "guaranteed", UID, CID, "cri-o",
        ),
        (
            f"/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod{US}.slice/docker-{CID}.scope",
            "container", "besteffort", UID, CID, "docker",
        ),
        # kind: the node container's docker scope, and --cgroup-root=/kubelet spelled the systemd way.
        (
            f"/system.slice/docker-{CID}.scope/kubelet.slice/kubelet-kubepods.slice/"
            f"kubelet-kubepods-burstable.slice/kubelet-kubepods-burstable-pod{US}.slice/cri-containerd-{CID}.scope",
            "container", "burstable", UID, CID, "containerd",
        ),
        (
            f"/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-pod{US}.slice/cri-containerd-{CID}.scope",
            "container", "guaranteed", UID, CID, "containerd",
        ),
        ("/kubelet.slice/kubelet-kubepods.slice/kubelet-kubepods-besteffort.slice", "qos", "besteffort",
         None, None, None),
        (f"/docker/{CID}/kubepods/burstable/pod{UID}/{CID}", "container", "burstable", UID, CID, None),
    ],
)
def test_kubelet_paths(path, level, qos, uid, cid, runtime):
    ref = parse_cgroup_path(path)
    assert ref is not None
    assert (ref.level, ref.qos, ref.pod_uid, ref.container_id, ref.runtime) == (level, qos, uid, cid, runtime)


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/system.slice/containerd.service",
        "/user.slice/user-0.slice/session-1.scope",
        f"/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{US}.slice/crio-conmon-{CID}.scope",
        "/kubepods/burstable/not-a-pod",
        f"/kubepods/burstable/pod{UID}/not-a-container",
    ],
)
def test_not_a_container(path):
    ref = parse_cgroup_path(path)
    assert ref is None or ref.container_id is None


def test_deeper_cgroups_belong_to_their_container():
    ref = parse_cgroup_path(f"/kubepods/burstable/pod{UID}/{CID}/inner")
    assert ref is not None and ref.container_id == CID


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (f"containerd://{CID}", ("containerd", CID)),
        (f"cri-o://{CID}", ("cri-o", CID)),
        (f"docker://{CID}", ("docker", CID)),
        (CID, (None, CID)),
    ],
)
def test_container_id_from_status(status, expected):
    assert container_id_from_status(status) == expected
