"""Session fixtures for the end-to-end tests on a real node (``hack/envtest up --node``).

``node``: one real single-node cluster for the whole session (kubelet, containerd, runc, CNI, the
control plane), always torn down at the end, even when a test failed. ``chart``: the chart installed by
``helm install`` exactly as the README says, with the project image imported into containerd. A part
that cannot be had skips the tests with one line, or fails them under ``CI=true``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kube.kubehelpers import REPO_ROOT, Kubectl, kubectl_binary
from node.nodekit import Chart, install_chart
from realparts import unavailable

sys.path.insert(0, str(REPO_ROOT / "hack"))
# hack/ is not a package, and envtest_node imports envtest_lib by that name.
import envtest_node


def _why_no_node() -> str | None:
    """The first missing precondition of a real node here, or None."""
    if os.geteuid() != 0:
        return "the real node needs root (kubelet, containerd, cgroups, iptables)"
    if not Path("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists():
        return "the real node tests need the cgroup v1 memory controller at /sys/fs/cgroup/memory"
    if kubectl_binary() is None:
        return "kubectl not found (set KUBECTL or put it on PATH)"
    return None


@pytest.fixture(scope="session")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Ready single-node cluster; ``down`` runs at the end whatever happened.

    ``OOMSIGHT_NODE_DIR=DIR`` uses the node ``hack/envtest up --node DIR`` already runs instead (and
    leaves it running): quick iterations on the tests themselves.
    """
    problem = _why_no_node()
    if problem:
        unavailable(problem)
    existing = os.environ.get("OOMSIGHT_NODE_DIR")
    if existing:
        running = envtest_node.NodeCluster(existing)
        if not running.running("kubelet"):
            unavailable(f"OOMSIGHT_NODE_DIR={existing}: no kubelet runs there (hack/envtest up --node it)")
        yield running
        return
    cluster = envtest_node.NodeCluster(tmp_path_factory.mktemp("node"), log=lambda _msg: None)
    try:
        cluster.up()
    except envtest_node.EnvtestError as exc:
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        unavailable(f"hack/envtest up --node failed: {first} (logs in {cluster.directory})")
    try:
        yield cluster
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def admin(node: Any) -> Kubectl:
    return Kubectl(node.kubeconfig, kubectl_binary() or "kubectl", timeout=120)


@pytest.fixture(scope="session")
def chart(node: Any, admin: Kubectl) -> Chart:
    """The chart as shipped, installed by helm with the locally built image; Ready or the tests fail."""
    images = node.ctr("images", "ls", "-q", check=False).stdout.split()
    if envtest_node.PROJECT_IMAGE not in images:
        unavailable(
            f"{envtest_node.PROJECT_IMAGE} is not in the node's containerd "
            "(hack/images_lib.py builds it; up --node imports it)"
        )
    try:
        helm = envtest_node.envtest_lib.build(["helm"], log=lambda _msg: None)["helm"]
    except envtest_node.EnvtestError as exc:
        unavailable(f"helm unavailable: {exc}")
    return install_chart(admin, helm, reuse=bool(os.environ.get("OOMSIGHT_NODE_DIR")))
