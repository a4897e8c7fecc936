"""Run ``kubectl oomsight`` the way a user does: the real kubectl finds the ``kubectl-oomsight`` plugin on
``PATH`` (this interpreter's scripts directory, where ``pip install -e .`` put it) and passes the rest of
the command line and the environment through. Kubeconfigs for the tests: extra contexts, a user that is
an exec plugin, a ServiceAccount's bearer token.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from kube.kubehelpers import Kubectl, kubectl_binary
from realparts import unavailable

SCRIPTS = Path(sys.executable).parent


def plugin_env(kubeconfig: Path | str | None, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    env["PATH"] = f"{SCRIPTS}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = env.get("HOME", "/root")
    if kubeconfig is not None:
        env["KUBECONFIG"] = str(kubeconfig)
    env.update(extra or {})
    return env


def kubectl_oomsight(
    kubeconfig: Path | str | None, *args: str, env: Mapping[str, str] | None = None, timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """``kubectl oomsight ARGS`` with ``KUBECONFIG`` (``None``: unset) through the real kubectl."""
    binary = kubectl_binary()
    if binary is None:
        unavailable("kubectl not found (set KUBECTL or put it on PATH)")
    if not (SCRIPTS / "kubectl-oomsight").exists():
        unavailable(f"kubectl-oomsight is not installed in {SCRIPTS}: pip install -e .")
    return subprocess.run(
        [binary, "oomsight", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=plugin_env(kubeconfig, env),
    )


def minify(kubectl_bin: str, env: Mapping[str, str], *args: str) -> dict[str, Any]:
    """``kubectl config view --minify -o json [ARGS]``: the context kubectl would use."""
    out = subprocess.run(
        [kubectl_bin, "config", "view", "--minify", "--raw", "-o", "json", *args],
        capture_output=True,
        text=True,
        env=dict(env),
        check=True,
    )
    doc: dict[str, Any] = json.loads(out.stdout)
    return doc


def load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = yaml.safe_load(path.read_text())
    return doc


def write(path: Path, doc: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(doc)))
    path.chmod(0o600)
    return path


def with_context(
    base: Mapping[str, Any], name: str, namespace: str | None, current: str | None
) -> dict[str, Any]:
    """A kubeconfig holding ``base``'s cluster and user under a context ``name`` (optional namespace)."""
    ctx: dict[str, Any] = {"cluster": base["clusters"][0]["name"], "user": base["users"][0]["name"]}
    if namespace:
        ctx["namespace"] = namespace
    doc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": base["clusters"],
        "users": base["users"],
        "contexts": [{"name": name, "context": ctx}],
    }
    if current:
        doc["current-context"] = current
    return doc


def exec_plugin(path: Path, cert: Path, key: Path) -> Path:
    """A real exec credential plugin: a script that prints an ExecCredential with a client certificate
    (``client.authentication.k8s.io/v1``, KEP-541), after checking the request kubectl/clients send it."""
    path.write_text(
        "#!/usr/bin/env python3\n"
        "import json, os, sys\n"
        "info = json.loads(os.environ.get('KUBERNETES_EXEC_INFO') or '{}')\n"
        "if info.get('kind') != 'ExecCredential':\n"
        "    sys.exit('no ExecCredential request in KUBERNETES_EXEC_INFO')\n"
        "json.dump({'apiVersion': 'client.authentication.k8s.io/v1', 'kind': 'ExecCredential',\n"
        f"           'status': {{'clientCertificateData': open({str(cert)!r}).read(),\n"
        f"                      'clientKeyData': open({str(key)!r}).read()}}}}, sys.stdout)\n"
    )
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def exec_user(command: Path, args: tuple[str, ...] = ()) -> dict[str, Any]:
    return {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(command),
            "args": list(args),
            "interactiveMode": "Never",
        }
    }


def sa_token(kubectl: Kubectl, namespace: str, name: str) -> str:
    """A ServiceAccount's bound token (TokenRequest), as a bearer token for a kubeconfig user."""
    kubectl.run("create", "serviceaccount", name, "-n", namespace)
    return kubectl.run("create", "token", name, "-n", namespace, "--duration=1h").stdout.strip()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
