"""Helpers for the end-to-end tests on a real node: the helm install, workloads, what the kubelet and
oomsight said about them. Everything goes through kubectl and helm, as a person would type it."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kube.kubehelpers import REPO_ROOT, Kubectl, unique_name

RELEASE = "oomsight"
SYSTEM_NS = "oomsight-system"
IMAGE = "localhost/oomsight:dev"
AGENT_CONTROLLER = "oomsight.io/agent"
MiB = 1 << 20

# Workloads: the project image's python3. Each allocates in 4 MiB steps and writes to every page, so
# the memory is really charged (a fresh bytearray is calloc'ed: untouched zero pages cost nothing).
GROW = """
import sys, time
chunks = []
while True:
    chunks.append(b"\\x01" * (4 << 20))
    time.sleep(float(sys.argv[1]) if len(sys.argv) > 1 else 0.02)
"""

# PID 1 lives; a child grows until the kernel kills it; PID 1 prints how the child ended, then sleeps.
CHILD = """
import subprocess, sys, time
kills = 0
for _ in range(int(sys.argv[1])):
    child = subprocess.run([sys.executable, "-c", GROW])
    kills += child.returncode == -9
    print(f"child exit {child.returncode} kills {kills}", flush=True)
    time.sleep(float(sys.argv[2]))
print("done", flush=True)
time.sleep(86400)
""".replace("GROW", repr(GROW))

# Creeps to ``target`` of the cgroup's limit (read inside the container), holds there, then grows on.
CREEP = """
import sys, time
def read(name):
    with open("/sys/fs/cgroup/memory/" + name) as f:
        return int(f.read())
limit = read("memory.limit_in_bytes")
target, hold = float(sys.argv[1]), float(sys.argv[2])
chunks = []
while read("memory.usage_in_bytes") < target * limit:
    chunks.append(b"\\x01" * (1 << 20))
    time.sleep(0.02)
print(f"holding at {read('memory.usage_in_bytes')} of {limit}", flush=True)
time.sleep(hold)
while True:
    chunks.append(b"\\x01" * (4 << 20))
"""


@dataclass(frozen=True)
class Chart:
    kubectl: Kubectl
    helm: Path

    def metrics_services(self) -> list[tuple[str, int]]:
        """(Service, port) of every port the chart's Services expose."""
        items = self.kubectl.json("get", "services", "-n", SYSTEM_NS)["items"]
        return sorted((s["metadata"]["name"], p["port"]) for s in items for p in s["spec"]["ports"])

    def agent_pods(self) -> list[dict[str, Any]]:
        got = self.kubectl.json("get", "pods", "-n", SYSTEM_NS, "-l", "app.kubernetes.io/component=agent")
        return list(got["items"])


def service_get(kubectl: Kubectl, service: str, port: int, path: str, *, check: bool = True) -> str:
    """GET through the API server's service proxy: the Service's own endpoints, nothing else."""
    proxy = f"/api/v1/namespaces/{SYSTEM_NS}/services/{service}:{port}/proxy{path}"
    return kubectl.run("get", "--raw", proxy, check=check).stdout


def healthz(kubectl: Kubectl, service: str, port: int) -> bool:
    return bool(service_get(kubectl, service, port, "/healthz", check=False).strip())


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 1.0) -> Any:
    """Poll until ``predicate`` returns something truthy; generous deadlines, never a timed assert."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(every)


def helm(chart: Chart | None, helm_bin: Path, kubectl: Kubectl, *args: str) -> str:
    proc = subprocess.run(
        [str(helm_bin), f"--kubeconfig={kubectl.kubeconfig}", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, f"helm {' '.join(args)}: {proc.stderr.strip()}"
    return proc.stdout


def install_chart(kubectl: Kubectl, helm_bin: Path, *, reuse: bool = False) -> Chart:
    """The README's helm command, then wait until the agent DaemonSet and the operator are Ready and
    both answer /healthz through their Services. ``reuse``: a release already installed is kept."""
    installed = reuse and RELEASE in helm(None, helm_bin, kubectl, "list", "-n", SYSTEM_NS, "-q").split()
    if not installed:
        helm(
            None,
            helm_bin,
            kubectl,
            "install",
            RELEASE,
            str(REPO_ROOT / "charts" / "oomsight"),
            "-n",
            SYSTEM_NS,
            "--create-namespace",
            "--set",
            "image.repository=localhost/oomsight",
            "--set",
            "image.tag=dev",
            "--set",
            "image.pullPolicy=Never",
        )
    chart = Chart(kubectl, helm_bin)

    def ready() -> bool:
        ds = kubectl.json("get", "daemonset", "-n", SYSTEM_NS, f"{RELEASE}-agent")["status"]
        dep = kubectl.json("get", "deployment", "-n", SYSTEM_NS, f"{RELEASE}-operator")["status"]
        rolled = bool(
            ds.get("desiredNumberScheduled")
            and ds.get("numberReady") == ds.get("desiredNumberScheduled")
            and ds.get("updatedNumberScheduled") == ds.get("desiredNumberScheduled")
            and dep.get("readyReplicas") == dep.get("replicas")
        )
        # The agent is Ready after its first sweep (/readyz). /healthz through the Services means
        # serving (an agent that cannot read what it needs exits, and its Service has no endpoint).
        return rolled and all(healthz(kubectl, service, port) for service, port in chart.metrics_services())

    try:
        wait_for(ready, 240, "the agent DaemonSet and the operator Deployment to be Ready", every=2.0)
    except AssertionError as exc:
        logs = kubectl.run("logs", "-n", SYSTEM_NS, f"daemonset/{RELEASE}-agent", "--tail=3", check=False)
        raise AssertionError(f"{exc}; agent log: {(logs.stdout or logs.stderr).strip()}") from None
    return chart


# ----------------------------------------------------------------------------------------------
# Workloads
# ----------------------------------------------------------------------------------------------


def deployment(
    name: str,
    args: list[str],
    *,
    limit: str | None = "64Mi",
    request: str | None = "32Mi",
    labels: Mapping[str, str] | None = None,
    replicas: int = 1,
) -> dict[str, Any]:
    """A Deployment of the project image running ``python3 args...`` (one replica by default)."""
    resources: dict[str, Any] = {}
    if limit:
        resources["limits"] = {"memory": limit}
    if request:
        resources["requests"] = {"memory": request}
    match = {"app": name, **(labels or {})}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": match},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": match},
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "automountServiceAccountToken": False,
                    "containers": [
                        {
                            "name": "hog",
                            "image": IMAGE,
                            "imagePullPolicy": "Never",
                            "command": ["python3", "-c", *args],
                            "resources": resources,
                        }
                    ],
                },
            },
        },
    }


def create_namespace(kubectl: Kubectl, prefix: str) -> str:
    name = unique_name(prefix, max_length=40)
    kubectl.run("create", "namespace", name)
    return name


def apply(kubectl: Kubectl, namespace: str, manifest: Mapping[str, Any]) -> None:
    kubectl.run("apply", "-n", namespace, "-f", "-", stdin=json.dumps(manifest))


def the_pod(kubectl: Kubectl, namespace: str, app: str) -> dict[str, Any] | None:
    """The one Pod of Deployment ``app`` once it has a container status, else None."""
    pods = kubectl.json("get", "pods", "-n", namespace, "-l", f"app={app}")["items"]
    live = [p for p in pods if not p["metadata"].get("deletionTimestamp")]
    if len(live) != 1 or not live[0].get("status", {}).get("containerStatuses"):
        return None
    pod: dict[str, Any] = live[0]
    return pod


def container_status(pod: Mapping[str, Any]) -> dict[str, Any]:
    status: dict[str, Any] = pod["status"]["containerStatuses"][0]
    return status


def oomsight_events(kubectl: Kubectl, namespace: str, pod: str | None = None) -> list[dict[str, Any]]:
    """The agent's Events (events.k8s.io/v1) in ``namespace``, on Pod ``pod`` when given, oldest first."""
    items = kubectl.json("get", "events.v1.events.k8s.io", "-n", namespace)["items"]
    mine = [
        e
        for e in items
        if e.get("reportingController") == AGENT_CONTROLLER
        and (pod is None or (e.get("regarding") or {}).get("name") == pod)
    ]
    return sorted(mine, key=lambda e: e.get("eventTime") or e["metadata"]["creationTimestamp"])


def reasons(events: list[dict[str, Any]]) -> list[str]:
    return [str(e["reason"]) for e in events]


def series_total(events: list[dict[str, Any]]) -> int:
    """Occurrences an Event list stands for: 1 per Event, or its series count."""
    return sum(int((e.get("series") or {}).get("count") or 1) for e in events)
