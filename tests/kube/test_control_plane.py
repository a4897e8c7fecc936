"""The test control plane itself: a real kube-apiserver with TLS, RBAC and a status subresource that
tests can write, that survives an API-server restart; plus the pinned helm and promtool."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from kube.kubehelpers import (
    REPO_ROOT,
    Kubectl,
    KubectlError,
    container_id,
    container_status,
    create_pod,
    load_envtest,
    patch_pod_status,
    running_pod_status,
)

envtest = load_envtest()
ENVTEST_CLI = REPO_ROOT / "hack" / "envtest"


@pytest.mark.kube
def test_readyz_answers_ok_over_tls_with_the_admin_certificate(control_plane: Any) -> None:
    context = control_plane.ssl_context()
    with urllib.request.urlopen(f"{control_plane.server_url}/readyz?verbose", context=context) as response:
        body = response.read().decode()
    assert response.status == 200
    assert "[+]etcd ok" in body
    assert body.rstrip().endswith("readyz check passed")
    assert control_plane.server_url.startswith("https://127.0.0.1:")


@pytest.mark.kube
def test_kubectl_with_the_kubeconfig_lists_the_system_namespaces(kubectl: Kubectl) -> None:
    names = {ns["metadata"]["name"] for ns in kubectl.json("get", "namespaces")["items"]}
    assert {"default", "kube-system", "kube-public"} <= names


def pinned(tool: str, binary: Path) -> str | None:
    """The version hack/envtest-go pins for ``tool`` when ``binary`` is the cached build of it
    (None for a binary the environment supplied, which may be any release)."""
    if binary.parent != envtest.tool_cache_dir(tool):
        return None
    module = {"kube-apiserver": "k8s.io/kubernetes", "helm": "helm.sh/helm/v3"}[tool]
    go_mod = envtest.GO_ROOT / envtest.TOOLS[tool].module_dir / "go.mod"
    version: str = envtest.required_version(go_mod, module)
    return version


@pytest.mark.kube
def test_server_reports_a_release_version(control_plane: Any, kubectl: Kubectl) -> None:
    server = kubectl.json("version")["serverVersion"]
    assert server["major"] == "1"
    expected = pinned("kube-apiserver", control_plane.binary("kube-apiserver"))
    if expected is not None:
        assert server["gitVersion"] == expected


@pytest.mark.kube
def test_kubeconfig_user_is_a_system_masters_member(kubectl: Kubectl) -> None:
    review = kubectl.json(
        "create",
        "-f",
        "-",
        stdin=json.dumps({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    )
    user = review["status"]["userInfo"]
    assert user["username"] == envtest.ADMIN_USER
    assert "system:masters" in user["groups"]


@pytest.mark.kube
def test_rbac_denies_an_unbound_service_account_until_a_role_binds_it(
    kubectl: Kubectl, namespace: str
) -> None:
    who = f"--as=system:serviceaccount:{namespace}:nobody"
    denied = kubectl.run("auth", "can-i", "list", "pods", "--namespace", namespace, who, check=False)
    assert (denied.returncode, denied.stdout.strip()) == (1, "no")

    kubectl.run("create", "role", "pod-reader", "--verb=list", "--resource=pods", "--namespace", namespace)
    kubectl.run(
        "create",
        "rolebinding",
        "nobody-reads-pods",
        "--role=pod-reader",
        f"--serviceaccount={namespace}:nobody",
        "--namespace",
        namespace,
    )
    allowed = kubectl.run("auth", "can-i", "list", "pods", "--namespace", namespace, who, check=False)
    assert (allowed.returncode, allowed.stdout.strip()) == (0, "yes")
    elsewhere = kubectl.run("auth", "can-i", "list", "pods", "--namespace", "default", who, check=False)
    assert elsewhere.stdout.strip() == "no"


@pytest.mark.kube
def test_pod_bound_to_a_node_gets_its_status_through_the_status_subresource(
    kubectl: Kubectl, namespace: str
) -> None:
    created = create_pod(
        kubectl, namespace, "web", "node-a", containers=("app", "sidecar"), memory_limit="64Mi"
    )
    assert created["spec"]["nodeName"] == "node-a"
    assert created["status"]["phase"] == "Pending"
    assert created["spec"]["containers"][0]["resources"]["limits"]["memory"] == "64Mi"

    app_id, sidecar_id = container_id(), container_id("cri-o")
    oom = {
        "exitCode": 137,
        "reason": "OOMKilled",
        "startedAt": "2024-01-01T00:00:00Z",
        "finishedAt": "2024-01-01T00:05:00Z",
        "containerID": container_id(),
    }
    status = running_pod_status(
        [
            container_status("app", cid=app_id, restart_count=1, last_terminated=oom),
            container_status("sidecar", cid=sidecar_id),
        ]
    )
    patch_pod_status(kubectl, namespace, "web", status)

    stored = kubectl.get("pod", "web", namespace)
    assert stored["status"]["phase"] == "Running"
    by_name = {c["name"]: c for c in stored["status"]["containerStatuses"]}
    assert by_name["app"]["containerID"] == app_id
    assert by_name["sidecar"]["containerID"] == sidecar_id
    assert by_name["app"]["restartCount"] == 1
    assert by_name["app"]["lastState"]["terminated"]["reason"] == "OOMKilled"


@pytest.mark.kube
def test_status_written_through_the_main_resource_is_ignored(kubectl: Kubectl, namespace: str) -> None:
    create_pod(kubectl, namespace, "plain", "node-b")
    kubectl.run(
        "patch",
        "pod",
        "plain",
        "--namespace",
        namespace,
        "--type=merge",
        "-p",
        '{"status":{"phase":"Failed"}}',
    )
    assert kubectl.get("pod", "plain", namespace)["status"]["phase"] == "Pending"


@pytest.mark.kube
def test_apiserver_restarts_on_the_same_port_and_the_kubeconfig_still_works(
    control_plane: Any, kubectl: Kubectl, namespace: str
) -> None:
    kubectl.run("create", "configmap", "survivor", "--from-literal=k=v", "--namespace", namespace)
    port, kubeconfig_bytes = control_plane.apiserver_port, control_plane.kubeconfig.read_bytes()

    control_plane.stop_apiserver()
    try:
        assert not control_plane.apiserver_running()
        assert control_plane.etcd_running()
        assert not control_plane.readyz()
        with pytest.raises(KubectlError, match="refused"):
            kubectl.run("get", "configmap", "survivor", "--namespace", namespace)
    finally:
        control_plane.start_apiserver()

    assert control_plane.apiserver_port == port
    assert control_plane.kubeconfig.read_bytes() == kubeconfig_bytes
    assert control_plane.readyz()
    restored = kubectl.get("configmap", "survivor", namespace)
    assert restored["data"] == {"k": "v"}


@pytest.mark.kube
def test_cli_up_stop_start_down_in_a_directory(tmp_path: Path, control_plane: Any) -> None:
    """The hack/envtest command runs a second, detached control plane with the same code."""
    kubectl_bin = shutil.which("kubectl")
    assert kubectl_bin is not None
    env = {
        **os.environ,
        "TEST_ASSET_KUBE_APISERVER": str(control_plane.binary("kube-apiserver")),
        "TEST_ASSET_ETCD": str(control_plane.binary("etcd")),
    }
    workdir = tmp_path / "cp"

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, str(ENVTEST_CLI), *args, str(workdir)],
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )

    up = cli("up")
    try:
        assert up.returncode == 0, up.stderr
        assert f"KUBECONFIG={workdir.resolve() / 'kubeconfig'}" in up.stdout.splitlines()
        pids = {name: int((workdir / f"{name}.pid").read_text()) for name in ("etcd", "kube-apiserver")}
        assert all(Path(f"/proc/{pid}").exists() for pid in pids.values())
        assert os.getsid(pids["etcd"]) == pids["etcd"]  # detached: leads its own session
        assert (workdir / "kube-apiserver.log").stat().st_size > 0

        other = Kubectl(workdir / "kubeconfig", kubectl_bin)
        assert other.json("get", "namespace", "default")["status"]["phase"] == "Active"

        assert cli("stop-apiserver").returncode == 0
        assert "kube-apiserver=stopped" in cli("status").stdout
        started = cli("start-apiserver")
        assert started.returncode == 0, started.stderr
        assert "kube-apiserver=running" in cli("status").stdout
        assert other.json("get", "namespace", "default")["metadata"]["name"] == "default"
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert not (workdir / "etcd-data").exists()
    assert not (workdir / "etcd.pid").exists()
    assert not (workdir / "kube-apiserver.pid").exists()


def test_helm_version_reports_the_pinned_v3_release(helm_bin: Path, tmp_path: Path) -> None:
    env = {
        **os.environ,
        "HELM_CACHE_HOME": str(tmp_path),
        "HELM_CONFIG_HOME": str(tmp_path),
        "HELM_DATA_HOME": str(tmp_path),
    }
    result = subprocess.run(
        [str(helm_bin), "version", "--short"], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.startswith("v3.")
    expected = pinned("helm", helm_bin)
    if expected is not None:
        assert result.stdout.strip() == expected


def test_promtool_version_and_metrics_lint(promtool_bin: Path) -> None:
    version = subprocess.run(
        [str(promtool_bin), "--version"], capture_output=True, text=True, check=True, timeout=60
    )
    assert (version.stdout + version.stderr).startswith("promtool, version 3.")
    if promtool_bin.parent == envtest.tool_cache_dir("promtool"):
        stamp = next(f for f in envtest.version_ldflags(envtest.TOOLS["promtool"]) if ".Version=" in f)
        assert version.stdout.startswith(f"promtool, version {stamp.split('=', 1)[1]} ")

    good = (
        "# HELP oomsight_ooms_total OOM kills seen.\n# TYPE oomsight_ooms_total counter\n"
        "oomsight_ooms_total 3\n"
    )
    checked = subprocess.run(
        [str(promtool_bin), "check", "metrics"],
        input=good,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr

    bad = "# HELP oomsight_ooms OOM kills seen.\n# TYPE oomsight_ooms counter\noomsight_ooms 3\n"
    linted = subprocess.run(
        [str(promtool_bin), "check", "metrics"],
        input=bad,
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert linted.returncode != 0
    assert 'counter metrics should have "_total" suffix' in linted.stdout + linted.stderr


def test_an_override_naming_a_missing_file_is_reported_not_built(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("TEST_ASSET_ETCD", str(tmp_path / "no-such-etcd"))
    with pytest.raises(envtest.MissingBinaryError, match="TEST_ASSET_ETCD"):
        envtest.find_binary("etcd")
    with pytest.raises(envtest.MissingBinaryError, match="TEST_ASSET_ETCD"):
        envtest.build(["etcd"], log=lambda _msg: None)


def test_kubebuilder_assets_supplies_apiserver_and_etcd_but_not_helm(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("kube-apiserver", "etcd", "helm"):
        exe = tmp_path / name
        exe.write_text("#!/bin/sh\n")
        exe.chmod(0o755)
    for tool in envtest.TOOLS.values():
        monkeypatch.delenv(tool.env_var, raising=False)
    monkeypatch.setenv("KUBEBUILDER_ASSETS", str(tmp_path))
    assert envtest.find_binary("kube-apiserver") == tmp_path / "kube-apiserver"
    assert envtest.find_binary("etcd") == tmp_path / "etcd"
    assert envtest.override_path(envtest.TOOLS["helm"]) is None
    monkeypatch.setenv("TEST_ASSET_ETCD", str(tmp_path / "helm"))  # the explicit variable wins
    assert envtest.find_binary("etcd") == tmp_path / "helm"


def test_cache_key_changes_when_a_pin_changes_and_only_then(tmp_path: Path) -> None:
    copy = tmp_path / "envtest-go"
    shutil.copytree(envtest.GO_ROOT, copy)
    key = envtest.cache_key(copy, "helm")
    root_key = envtest.cache_key(copy, ".")
    assert key == envtest.cache_key(envtest.GO_ROOT, "helm")
    assert key != root_key  # one key per module
    (copy / "helm" / "tools.go").write_text("//go:build tools\n\npackage tools\n")
    assert envtest.cache_key(copy, "helm") == key  # not a pin
    with (copy / "helm" / "go.sum").open("a") as go_sum:
        go_sum.write("example.com/m v1.0.0 h1:AAAA=\n")
    assert envtest.cache_key(copy, "helm") != key
    assert envtest.cache_key(copy, ".") == root_key  # another module's pin leaves this one cached
