"""Least privilege, checked by the real RBAC authorizer after a real ``helm install``: each component
may do exactly what it needs (kubectl auth can-i --as=system:serviceaccount:<ns>:<sa>)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from kube.crdkit import CHART, helm
from kube.kubehelpers import Kubectl, unique_name
from realparts import unavailable

pytestmark = pytest.mark.kube

# (verb, resource, namespaced?) — "pods" etc. are checked in another namespace than the release's,
# because the roles are cluster-wide on purpose (the agent's pods and the operator's policies live
# in every namespace).
AGENT_ALLOWED = [
    ("get", "pods"),
    ("list", "pods"),
    ("watch", "pods"),
    ("get", "events.events.k8s.io"),
    ("create", "events.events.k8s.io"),
    ("patch", "events.events.k8s.io"),
    ("create", "events"),
    ("patch", "events"),
    ("get", "nodememoryreports.oomsight.io"),
    ("create", "nodememoryreports.oomsight.io"),
    ("update", "nodememoryreports.oomsight.io"),
    ("patch", "nodememoryreports.oomsight.io"),
    ("update", "nodememoryreports.oomsight.io/status"),
    ("patch", "nodememoryreports.oomsight.io/status"),
    ("get", "nodes"),
]
AGENT_DENIED = [
    ("patch", "nodes"),
    ("update", "nodes"),
    ("patch", "nodes/status"),
    ("list", "nodes"),
    ("get", "secrets"),
    ("list", "secrets"),
    ("watch", "secrets"),
    ("patch", "pods"),
    ("patch", "pods/resize"),
    ("update", "pods/resize"),
    ("patch", "deployments.apps"),
    ("delete", "pods"),
    ("create", "pods"),
    ("delete", "nodememoryreports.oomsight.io"),
    ("list", "memorypolicies.oomsight.io"),
    ("patch", "memorypolicies.oomsight.io/status"),
    ("get", "configmaps"),
    ("create", "clusterkopfpeerings.kopf.dev"),
]
OPERATOR_ALLOWED = [
    *[(v, "memorypolicies.oomsight.io") for v in ("get", "list", "watch", "patch")],
    ("patch", "memorypolicies.oomsight.io/status"),
    ("update", "memorypolicies.oomsight.io/status"),
    *[(v, "nodememoryreports.oomsight.io") for v in ("get", "list", "watch")],
    *[(v, "pods") for v in ("get", "list", "watch", "patch")],
    ("patch", "pods/resize"),
    *[("patch", f"{r}.apps") for r in ("deployments", "statefulsets", "daemonsets")],
    *[
        (v, f"{r}.apps")
        for r in ("replicasets", "deployments", "statefulsets", "daemonsets")
        for v in ("get", "list", "watch")
    ],
    *[(v, f"{r}.batch") for r in ("jobs", "cronjobs") for v in ("get", "list", "watch")],
    *[(v, "nodes") for v in ("get", "list", "watch", "patch")],
    ("patch", "nodes/status"),
    ("create", "events"),
    ("patch", "events"),
    ("create", "events.events.k8s.io"),
    ("patch", "events.events.k8s.io"),
    ("list", "events.events.k8s.io"),
    ("watch", "events.events.k8s.io"),
    *[
        (v, f"{r}.kopf.dev")
        for r in ("clusterkopfpeerings", "kopfpeerings")
        for v in ("get", "list", "watch", "patch", "create")
    ],
    *[(v, "customresourcedefinitions.apiextensions.k8s.io") for v in ("get", "list", "watch")],
    ("list", "namespaces"),
    ("watch", "namespaces"),
]
OPERATOR_DENIED = [
    ("get", "secrets"),
    ("list", "secrets"),
    ("watch", "secrets"),
    ("delete", "pods"),
    ("create", "pods"),
    ("update", "pods"),
    ("delete", "nodes"),
    ("create", "nodes"),
    ("create", "nodememoryreports.oomsight.io"),
    ("patch", "nodememoryreports.oomsight.io"),
    ("delete", "memorypolicies.oomsight.io"),
    ("create", "memorypolicies.oomsight.io"),
    ("update", "deployments.apps"),
    ("delete", "deployments.apps"),
    ("patch", "replicasets.apps"),
    ("update", "pods/resize"),
    ("patch", "pods/status"),
    ("patch", "jobs.batch"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("delete", "clusterkopfpeerings.kopf.dev"),
    ("create", "namespaces"),
    ("get", "configmaps"),
    ("delete", "events.events.k8s.io"),
]


@pytest.fixture(scope="module")
def release(control_plane: object, helm_bin: Path) -> Iterator[tuple[str, str, Kubectl, Path]]:
    """One install shared by the module: (release, namespace, kubectl, kubeconfig)."""
    from kube.kubehelpers import kubectl_binary

    kubeconfig: Path = control_plane.kubeconfig  # type: ignore[attr-defined]
    binary = kubectl_binary()
    if binary is None:
        unavailable("kubectl not found")
    kubectl = Kubectl(kubeconfig, binary)
    name = unique_name("rbac", max_length=30)
    ns = unique_name("t-rbac", max_length=40)
    kubectl.run("create", "namespace", ns)
    helm(
        helm_bin,
        kubeconfig,
        "install",
        name,
        str(CHART),
        "--namespace",
        ns,
        "--set",
        f"operator.peering.name={name}",
    )
    try:
        yield name, ns, kubectl, kubeconfig
    finally:
        helm(helm_bin, kubeconfig, "uninstall", name, "--namespace", ns, check=False)
        kubectl.run("delete", "namespace", ns, "--wait=false", check=False)


def can_i(kubectl: Kubectl, sa: str, verb: str, resource: str, namespace: str = "elsewhere") -> bool:
    # "nodes/status" would mean the node *named* status; a subresource needs its own flag.
    resource, _, sub = resource.partition("/")
    extra = [f"--subresource={sub}"] if sub else []
    result = kubectl.run(
        "auth", "can-i", verb, resource, *extra, f"--as={sa}", "--namespace", namespace, check=False
    )
    answer = result.stdout.strip()
    assert answer in ("yes", "no"), result.stderr
    return answer == "yes"


def _sa(release: tuple[str, str, Kubectl, Path], component: str) -> str:
    name, ns, _, _ = release
    return f"system:serviceaccount:{ns}:{name}-oomsight-{component}"


@pytest.mark.parametrize(("verb", "resource"), AGENT_ALLOWED, ids=[f"{v}-{r}" for v, r in AGENT_ALLOWED])
def test_agent_may(release: tuple[str, str, Kubectl, Path], verb: str, resource: str) -> None:
    assert can_i(release[2], _sa(release, "agent"), verb, resource)


@pytest.mark.parametrize(("verb", "resource"), AGENT_DENIED, ids=[f"{v}-{r}" for v, r in AGENT_DENIED])
def test_agent_may_not(release: tuple[str, str, Kubectl, Path], verb: str, resource: str) -> None:
    assert not can_i(release[2], _sa(release, "agent"), verb, resource)
    assert not can_i(release[2], _sa(release, "agent"), verb, resource, namespace=release[1])


@pytest.mark.parametrize(
    ("verb", "resource"), OPERATOR_ALLOWED, ids=[f"{v}-{r}" for v, r in OPERATOR_ALLOWED]
)
def test_operator_may(release: tuple[str, str, Kubectl, Path], verb: str, resource: str) -> None:
    assert can_i(release[2], _sa(release, "operator"), verb, resource)


@pytest.mark.parametrize(("verb", "resource"), OPERATOR_DENIED, ids=[f"{v}-{r}" for v, r in OPERATOR_DENIED])
def test_operator_may_not(release: tuple[str, str, Kubectl, Path], verb: str, resource: str) -> None:
    assert not can_i(release[2], _sa(release, "operator"), verb, resource)
    assert not can_i(release[2], _sa(release, "operator"), verb, resource, namespace=release[1])


def test_an_unrelated_service_account_gets_nothing(release: tuple[str, str, Kubectl, Path]) -> None:
    """The bindings name the two service accounts only; the namespace's default SA gains nothing."""
    sa = f"system:serviceaccount:{release[1]}:default"
    assert not can_i(release[2], sa, "list", "pods")
    assert not can_i(release[2], sa, "create", "nodememoryreports.oomsight.io")
    assert not can_i(release[2], sa, "patch", "pods/resize")
    assert not can_i(release[2], sa, "patch", "deployments.apps")
