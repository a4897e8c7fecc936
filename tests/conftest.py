"""Shared fixtures. Real components only: see cgroupkit.py (cgroups) and kube/conftest.py (API server)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from cgroupkit import CgroupKit, require_cgroup_v1


@pytest.fixture
def cgroups() -> Iterator[CgroupKit]:
    """A private kubelet-style tree on the real v1 memory controller, removed after the test."""
    require_cgroup_v1()
    kit = CgroupKit()
    try:
        yield kit
    finally:
        kit.cleanup()
