"""Helpers for tests against the real kube-apiserver from ``hack/envtest``.

Everything goes through ``kubectl`` with the control plane's kubeconfig, so a helper does exactly
what a person would type. There is no kubelet and no controller-manager: a Pod is "scheduled" by
setting ``spec.nodeName`` and "runs" when a test writes its status through the status subresource.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
ENVTEST_LIB = REPO_ROOT / "hack" / "envtest_lib.py"
_ENVTEST_MODULE = "oomsight_hack_envtest_lib"

DEFAULT_IMAGE = "registry.k8s.io/pause:3.10"


def load_envtest() -> ModuleType:
    """``hack/envtest_lib.py`` as a module (it is not on sys.path; loaded once by file path)."""
    loaded = sys.modules.get(_ENVTEST_MODULE)
    if loaded is not None:
        return loaded
    spec = importlib.util.spec_from_file_location(_ENVTEST_MODULE, ENVTEST_LIB)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {ENVTEST_LIB}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[_ENVTEST_MODULE] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


def kubectl_binary() -> str | None:
    """``$KUBECTL``, else ``kubectl`` on PATH; None when neither exists."""
    return os.environ.get("KUBECTL") or shutil.which("kubectl")


def unique_name(prefix: str, max_length: int = 63) -> str:
    """A DNS-1123 label: ``prefix`` squeezed to [a-z0-9-] plus a random suffix."""
    suffix = secrets.token_hex(3)
    base = re.sub(r"[^a-z0-9-]+", "-", prefix.lower()).strip("-") or "t"
    return f"{base[: max_length - len(suffix) - 1].rstrip('-')}-{suffix}"


class KubectlError(RuntimeError):
    def __init__(self, args: Sequence[str], result: subprocess.CompletedProcess[str]) -> None:
        self.result = result
        super().__init__(
            f"kubectl {' '.join(args)} exited {result.returncode}: {(result.stderr or result.stdout).strip()}"
        )


@dataclass(frozen=True)
class Kubectl:
    """``kubectl --kubeconfig <kubeconfig>`` with text in and text or JSON out."""

    kubeconfig: Path
    binary: str = "kubectl"
    timeout: float = 60.0

    def run(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [self.binary, f"--kubeconfig={self.kubeconfig}", "--request-timeout=20s", *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=self.timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise KubectlError(args, result)
        return result

    def json(self, *args: str, stdin: str | None = None) -> Any:
        return json.loads(self.run(*args, "-o", "json", stdin=stdin).stdout)

    def create(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """``kubectl create -f -``; returns the object as the API server stored it."""
        created: dict[str, Any] = self.json("create", "-f", "-", stdin=json.dumps(manifest))
        return created

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any]:
        scope = ["--namespace", namespace] if namespace else []
        obj: dict[str, Any] = self.json("get", kind, name, *scope)
        return obj


def pod_manifest(
    name: str,
    node_name: str,
    *,
    containers: Sequence[str] = ("app",),
    image: str = DEFAULT_IMAGE,
    memory_limit: str | None = None,
    labels: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """A Pod already bound to ``node_name`` (no scheduler needed)."""
    resources: dict[str, Any] = {}
    if memory_limit is not None:
        resources = {"limits": {"memory": memory_limit}, "requests": {"memory": memory_limit}}
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": dict(labels or {})},
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": c, "image": image, "resources": resources} for c in containers],
        },
    }


def create_pod(
    kubectl: Kubectl,
    namespace: str,
    name: str,
    node_name: str,
    **manifest_options: Any,
) -> dict[str, Any]:
    """Create a Pod with ``spec.nodeName`` set; returns the stored Pod."""
    manifest = pod_manifest(name, node_name, **manifest_options)
    manifest["metadata"]["namespace"] = namespace
    return kubectl.create(manifest)


def container_id(runtime: str = "containerd") -> str:
    """A container ID the way the kubelet reports it: ``<runtime>://<64 hex digits>``."""
    return f"{runtime}://{secrets.token_hex(32)}"


def container_status(
    name: str,
    *,
    image: str = DEFAULT_IMAGE,
    cid: str | None = None,
    ready: bool = True,
    restart_count: int = 0,
    started_at: str = "2024-01-01T00:00:00Z",
    last_terminated: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """A running container's status entry; ``last_terminated`` fills ``lastState.terminated``."""
    status: dict[str, Any] = {
        "name": name,
        "image": image,
        "imageID": f"{image}@sha256:{'0' * 64}",
        "containerID": cid or container_id(),
        "ready": ready,
        "started": True,
        "restartCount": restart_count,
        "state": {"running": {"startedAt": started_at}},
        "lastState": {},
    }
    if last_terminated is not None:
        status["lastState"] = {"terminated": dict(last_terminated)}
    return status


def running_pod_status(
    containers: Sequence[Mapping[str, Any]], *, pod_ip: str = "10.244.0.10", host_ip: str = "192.0.2.10"
) -> dict[str, Any]:
    """A ``status`` for a Running Pod whose containers are ``containers`` (see container_status)."""
    ready = "True" if all(c.get("ready") for c in containers) else "False"
    return {
        "phase": "Running",
        "hostIP": host_ip,
        "podIP": pod_ip,
        "startTime": "2024-01-01T00:00:00Z",
        "conditions": [
            {"type": "PodScheduled", "status": "True"},
            {"type": "Initialized", "status": "True"},
            {"type": "ContainersReady", "status": ready},
            {"type": "Ready", "status": ready},
        ],
        "containerStatuses": [dict(c) for c in containers],
    }


def patch_pod_status(
    kubectl: Kubectl, namespace: str, name: str, status: Mapping[str, Any]
) -> dict[str, Any]:
    """Merge-patch ``status`` through the pods/status subresource, as a kubelet would; returns the Pod."""
    patched: dict[str, Any] = kubectl.json(
        "patch",
        "pod",
        name,
        "--namespace",
        namespace,
        "--subresource=status",
        "--type=merge",
        "-p",
        json.dumps({"status": dict(status)}),
    )
    return patched


def mark_pod_running(kubectl: Kubectl, namespace: str, pod: Mapping[str, Any]) -> dict[str, Any]:
    """Give every container of ``pod`` a running status with a fresh container ID; returns the Pod."""
    statuses = [container_status(c["name"], image=c["image"]) for c in pod["spec"]["containers"]]
    return patch_pod_status(kubectl, namespace, pod["metadata"]["name"], running_pod_status(statuses))
