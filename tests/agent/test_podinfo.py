"""Pod JSON → PodInfo, and Kubernetes quantities → bytes."""

from __future__ import annotations

import pytest

from oomsight.core.errors import ParseError
from oomsight.core.podinfo import (
    ANNOTATION_WARNING_THRESHOLD,
    parse_quantity,
    parse_threshold,
    pod_from_json,
)
from oomsight.core.quantity import prose_bytes as format_bytes


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("512Mi", 512 << 20),
        ("1Gi", 1 << 30),
        ("128974848", 128974848),
        ("129e6", 129_000_000),
        ("129M", 129_000_000),
        ("123Ki", 123 * 1024),
        ("1.5Gi", 3 << 29),
        ("100m", 1),
    ],
)
def test_parse_quantity(text, expected):
    assert parse_quantity(text) == expected


@pytest.mark.parametrize("bad", ["", "12XB", "Mi", "1..2Gi"])
def test_bad_quantity_is_one_clear_error(bad):
    with pytest.raises(ParseError, match="not a Kubernetes quantity"):
        parse_quantity(bad)


def test_pod_from_json_maps_container_ids_and_resources():
    pod = {
        "metadata": {"name": "web", "namespace": "shop", "uid": "0f6a2b4c-1111-4222-8333-944445555666"},
        "spec": {
            "nodeName": "node-a",
            "initContainers": [{"name": "init"}],
            "containers": [
                {"name": "app", "resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "128Mi"}}},
                {"name": "side"},
            ],
        },
        "status": {"containerStatuses": [{"name": "app", "containerID": "containerd://" + "ab" * 32}]},
    }
    info = pod_from_json(pod)
    assert (info.namespace, info.name, info.node_name) == ("shop", "web", "node-a")
    app = info.container_by_id("ab" * 32)
    assert app is not None and app.name == "app"
    assert (app.request_bytes, app.limit_bytes) == (64 << 20, 128 << 20)
    side = info.container_by_name("side")
    assert side is not None and side.container_id is None and side.limit_bytes is None
    assert info.container_by_name("init").init


def test_pod_without_uid_is_rejected():
    with pytest.raises(ParseError):
        pod_from_json({"metadata": {"name": "x"}})


def test_format_bytes():
    assert format_bytes(64 << 20) == "64.0 MiB"
    assert format_bytes(512) == "512 B"
    assert format_bytes(None) == "unknown"


@pytest.mark.parametrize(
    ("value", "expected"),
    [("75", 0.75), ("50.5", 0.505), ("100", 1.0), (" 90 ", 0.9), ("80%", 0.8),
     ("0", None), ("-5", None), ("101", None), ("nan", None), ("high", None), ("", None), (None, None)],
)  # fmt: skip
def test_parse_threshold(value, expected):
    assert parse_threshold(value) == expected


def test_pod_from_json_reads_the_policy_threshold_annotation():
    meta = {"name": "web", "namespace": "shop", "uid": "u1"}
    assert pod_from_json({"metadata": meta}).policy_threshold is None
    meta["annotations"] = {ANNOTATION_WARNING_THRESHOLD: "60", "other": "x"}
    assert pod_from_json({"metadata": meta}).policy_threshold == 0.6


def test_pod_from_json_reads_the_pod_level_limit_and_overhead():
    """What the kubelet adds to (``spec.overhead``) or puts instead of (``spec.resources``,
    PodLevelResources) the sum of the container limits for the pod cgroup."""
    pod = pod_from_json(
        {
            "metadata": {"uid": "u1", "name": "p", "namespace": "n"},
            "spec": {
                "resources": {"limits": {"memory": "48Mi"}},
                "overhead": {"memory": "120Mi", "cpu": "250m"},
                "containers": [{"name": "a", "resources": {"limits": {"memory": "32Mi"}}}],
            },
        }
    )
    assert (pod.pod_limit_bytes, pod.overhead_bytes) == (48 << 20, 120 << 20)
    plain = pod_from_json({"metadata": {"uid": "u2"}, "spec": {"containers": [{"name": "a"}]}})
    assert (plain.pod_limit_bytes, plain.overhead_bytes) == (None, None)
