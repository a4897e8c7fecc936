"""Fixtures backed by a real etcd + kube-apiserver (hack/envtest_lib.py), one per test session.

Binaries come from ``TEST_ASSET_*``/``KUBEBUILDER_ASSETS`` or the cache ``hack/envtest build`` fills;
set ``OOMSIGHT_ENVTEST_BUILD=1`` to let the session build missing ones (slow the first time). When the
control plane cannot be had, tests skip with the reason, or fail with it when ``CI=true``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kube.agentkit import AgentProc, make_scene, rest_for
from kube.kubehelpers import Kubectl, kubectl_binary, load_envtest, unique_name
from realparts import unavailable

envtest = load_envtest()


def tool_path(name: str) -> Path:
    """A pinned binary (kube-apiserver, etcd, helm, promtool), or skip/fail when it is missing."""
    try:
        if os.environ.get("OOMSIGHT_ENVTEST_BUILD") == "1":
            path: Path = envtest.build([name])[name]
        else:
            path = envtest.find_binary(name)
    except envtest.EnvtestError as exc:
        problem = str(exc)
    else:
        return path
    unavailable(f"{name} unavailable: {problem}")


@pytest.fixture(scope="session")
def control_plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A running ``envtest.ControlPlane`` shared by the session; stopped at the end."""
    binaries = {name: tool_path(name) for name in envtest.CONTROL_PLANE_TOOLS}
    cp = envtest.ControlPlane(tmp_path_factory.mktemp("envtest"), binaries=binaries)
    try:
        cp.start()
    except envtest.EnvtestError as exc:
        with contextlib.suppress(envtest.EnvtestError):
            cp.stop()
        problem = str(exc)
    else:
        problem = ""
    if problem:
        unavailable(f"kube control plane did not start: {problem}")
    try:
        yield cp
    finally:
        cp.stop()


@pytest.fixture
def kubeconfig(control_plane: Any) -> Path:
    """The admin kubeconfig; brings kube-apiserver back first if an earlier test left it stopped."""
    if not control_plane.apiserver_running():
        control_plane.start_apiserver()
    path: Path = control_plane.kubeconfig
    return path


@pytest.fixture
def kubectl(kubeconfig: Path) -> Kubectl:
    binary = kubectl_binary()
    if binary is None:
        unavailable("kubectl not found (set KUBECTL or put it on PATH)")
    return Kubectl(kubeconfig, binary)


@pytest.fixture
def namespace(kubectl: Kubectl, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace named after the test; deletion is issued afterwards (it never completes
    without a controller-manager, which is fine: names are unique)."""
    name = unique_name(f"t-{request.node.name}", max_length=50)
    kubectl.run("create", "namespace", name)
    try:
        yield name
    finally:
        kubectl.run("delete", "namespace", name, "--wait=false", "--ignore-not-found", check=False)


@pytest.fixture(scope="session")
def helm_bin() -> Path:
    return tool_path("helm")


@pytest.fixture(scope="session")
def promtool_bin() -> Path:
    return tool_path("promtool")


# ---- the agent's scenes (tests/kube/test_agent_*.py): a node name, Pods with cgroups, the agent ----


@pytest.fixture
def node() -> str:
    return f"node-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def rest(kubeconfig):
    return rest_for(kubeconfig)


@pytest.fixture
def scenes(rest, cgroups, namespace, node):
    """``scenes()`` builds a Pod + cgroup scene; its processes are stopped after the test."""
    made = []

    def make(**kw):
        made.append(make_scene(rest, cgroups, namespace, node, **kw))
        return made[-1]

    yield make
    for s in made:
        s.stop_procs()


@pytest.fixture
def agent(kubeconfig, node, tmp_path):
    procs: list[AgentProc] = []

    def start(
        state_dir: Path | None = None, host_root: str = "/", wrap: tuple[str, ...] = (), interval: float = 1.0
    ) -> AgentProc:
        a = AgentProc(
            str(kubeconfig),
            node,
            state_dir or tmp_path / "state",
            log_path=tmp_path / "agent.log",
            host_root=host_root,
            wrap=wrap,
            interval=interval,
        )
        procs.append(a.start())
        return a

    yield start
    for a in procs:
        a.kill()
