"""The agent's kubeconfig/in-cluster loader: what it accepts, and one clear line for what it does not."""

from __future__ import annotations

import subprocess

import pytest
import yaml

from oomsight.core.errors import UsageError
from oomsight.kube.kubeconfig import load_incluster, load_kubeconfig


def write(tmp_path, user, server="https://127.0.0.1:6443", cluster_extra=None):
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [{"name": "k", "cluster": {"server": server, **(cluster_extra or {})}}],
        "users": [{"name": "u", "user": user}],
    }
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def test_token_user_and_insecure_cluster(tmp_path):
    creds = load_kubeconfig(
        write(tmp_path, {"token": "abc"}, cluster_extra={"insecure-skip-tls-verify": True})
    )
    assert creds.server == "https://127.0.0.1:6443"
    assert creds.auth_header() == {"Authorization": "Bearer abc"}


def test_token_file_is_relative_to_the_kubeconfig_and_reread(tmp_path):
    (tmp_path / "tok").write_text("first\n")
    creds = load_kubeconfig(write(tmp_path, {"tokenFile": "tok"}, server="http://127.0.0.1:8080"))
    assert creds.auth_header() == {"Authorization": "Bearer first"}
    (tmp_path / "tok").write_text("second\n")
    creds._read_at = 0.0  # a minute later
    assert creds.auth_header() == {"Authorization": "Bearer second"}


def test_client_certificate_files_load(tmp_path):
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-keyout",
            str(tmp_path / "k.pem"),
            "-out",
            str(tmp_path / "c.pem"),
            "-days",
            "1",
            "-subj",
            "/CN=admin/O=system:masters",
        ],
        check=True,
        capture_output=True,
    )
    creds = load_kubeconfig(
        write(
            tmp_path,
            {"client-certificate": "c.pem", "client-key": "k.pem"},
            cluster_extra={"certificate-authority": "c.pem"},
        )
    )
    assert creds.ssl_context is not None and creds.auth_header() == {}


@pytest.mark.parametrize(
    ("user", "message"),
    [
        ({"exec": {"command": "aws"}}, "exec plugins and auth providers are not supported"),
        (
            {"client-certificate": "missing.pem", "client-key": "missing.pem"},
            "cannot read client-certificate",
        ),
        ({"client-certificate-data": "!!notbase64", "client-key-data": "x"}, "not base64"),
    ],
)
def test_unsupported_or_broken_users(tmp_path, user, message):
    with pytest.raises(UsageError, match=message):
        load_kubeconfig(write(tmp_path, user))


def test_not_a_kubeconfig(tmp_path):
    (tmp_path / "x").write_text("- a list\n")
    with pytest.raises(UsageError, match="not a kubeconfig"):
        load_kubeconfig(str(tmp_path / "x"))
    with pytest.raises(UsageError, match=r"(?i)no such file"):
        load_kubeconfig(str(tmp_path / "missing"))


def test_incluster_outside_a_pod_says_so(monkeypatch, tmp_path):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(UsageError, match="not running in a pod"):
        load_incluster(tmp_path)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.96.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", "443")
    with pytest.raises(UsageError, match="no token"):
        load_incluster(tmp_path)
