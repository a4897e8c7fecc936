"""Scenes for the operator's real tests: owner chains without a controller-manager, reports as the agent
writes them, Nodes, and ``oomsight operator`` as a subprocess.

No controller-manager runs, so a Deployment never makes its ReplicaSet: tests create the Deployment,
a ReplicaSet owned by it and Pods owned by the ReplicaSet, exactly as the Deployment controller would
(``ownerReferences`` with ``controller: true`` and the owner's UID, ``pod-template-hash`` label).
NodeMemoryReports are created with ``spec`` only and their status is replaced through the status
subresource with a JSON patch, as ``oomsight.kube.reports.ReportWriter`` does.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from kube.kubehelpers import REPO_ROOT, Kubectl, container_status, running_pod_status
from oomsight.kube import crd

MI = 1 << 20


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r:.800})")


def owner(obj: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": obj["apiVersion"],
        "kind": obj["kind"],
        "name": obj["metadata"]["name"],
        "uid": obj["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


def template(labels: Mapping[str, str]) -> dict[str, Any]:
    return {
        "metadata": {"labels": dict(labels)},
        "spec": {"containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]},
    }


def create_deployment(kubectl: Kubectl, ns: str, name: str, labels: Mapping[str, str]) -> tuple[dict, dict]:
    """A Deployment and the ReplicaSet the Deployment controller would have made for it."""
    dep = kubectl.create(
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": {"replicas": 2, "selector": {"matchLabels": dict(labels)}, "template": template(labels)},
        }
    )
    h = "7d9f8c6b5"
    rs_labels = {**labels, "pod-template-hash": h}
    rs = kubectl.create(
        {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {
                "name": f"{name}-{h}",
                "namespace": ns,
                "labels": rs_labels,
                "ownerReferences": [owner(dep)],
            },
            "spec": {"replicas": 2, "selector": {"matchLabels": rs_labels}, "template": template(rs_labels)},
        }
    )
    return dep, rs


def create_statefulset(kubectl: Kubectl, ns: str, name: str, labels: Mapping[str, str]) -> dict:
    return kubectl.create(
        {
            "apiVersion": "apps/v1",
            "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "serviceName": name,
                "replicas": 2,
                "selector": {"matchLabels": dict(labels)},
                "template": template(labels),
            },
        }
    )


def create_pod(
    kubectl: Kubectl,
    ns: str,
    name: str,
    node: str,
    labels: Mapping[str, str],
    owned_by: Mapping[str, Any] | None = None,
    request: str = "128Mi",
    limit: str = "256Mi",
    containers: Sequence[str] = ("app",),
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": dict(labels)}
    if owned_by is not None:
        meta["ownerReferences"] = [owner(owned_by)]
    pod = kubectl.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {
                "nodeName": node,
                "containers": [
                    {
                        "name": c,
                        "image": "registry.k8s.io/pause:3.10",
                        "resources": {"requests": {"memory": request}, "limits": {"memory": limit}},
                    }
                    for c in containers
                ],
            },
        }
    )
    return pod


def set_oom_killed(kubectl: Kubectl, ns: str, pod: Mapping[str, Any], container: str, finished: str) -> None:
    """The kubelet's report of a container restarted after an OOM kill (lastState.terminated)."""
    st = container_status(
        container,
        restart_count=1,
        last_terminated={
            "exitCode": 137,
            "reason": "OOMKilled",
            "startedAt": "2026-01-01T00:00:00Z",
            "finishedAt": finished,
            "containerID": "containerd://" + "ab" * 32,
        },
    )
    body = json.dumps({"status": running_pod_status([st])})
    kubectl.run(
        "patch", "pod", pod["metadata"]["name"], "-n", ns, "--subresource=status", "--type=merge", "-p", body
    )


def create_node(kubectl: Kubectl, name: str) -> dict[str, Any]:
    return kubectl.create(
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "labels": {"t": "op"}}}
    )


def profile(
    pod: Mapping[str, Any],
    container: str,
    peaks: Sequence[int],
    limit: int = 256 * MI,
    request: int = 128 * MI,
    t0: int | None = None,
    anon_share: float = 0.9,
) -> dict[str, Any]:
    """A container profile as the agent writes it: peaks per 5-minute interval, oldest first."""
    t0 = t0 if t0 is not None else int(time.time() // 300 * 300) - 300 * (len(peaks) - 1)
    ws = peaks[-1]
    return {
        "namespace": pod["metadata"]["namespace"],
        "pod": pod["metadata"]["name"],
        "podUID": pod["metadata"]["uid"],
        "container": container,
        "containerID": "containerd://" + "cd" * 32,
        "request": request,
        "limit": limit,
        "limitLevel": "container",
        "workingSet": ws,
        "peaks": [{"t": t0 + 300 * i, "bytes": b} for i, b in enumerate(peaks)],
        "breakdown": {
            "anon": int(ws * anon_share),
            "activeFile": int(ws * (1 - anon_share)),
            "inactiveFile": 0,
            "shmem": 0,
            "kernel": 0,
            "swap": 0,
        },
        "oomKills": 0,
    }


def incident(pod: Mapping[str, Any], container: str, when: str, limit: int, seq: int) -> dict[str, Any]:
    return {
        "time": when,
        "namespace": pod["metadata"]["namespace"],
        "pod": pod["metadata"]["name"],
        "podUID": pod["metadata"]["uid"],
        "container": container,
        "scope": "container",
        "victim": {"pid": 4242, "comm": "java", "rss": limit - 4 * MI, "containerSurvived": False},
        "limit": limit,
        "explanation": "the container's own limit was hit",
        "bootID": "6a5b1c2d-3e4f-4a5b-8c9d-0e1f2a3b4c5d",
        "seq": seq,
    }


def report_status(
    containers: Sequence[Mapping[str, Any]] = (),
    incidents: Sequence[Mapping[str, Any]] = (),
    findings: Sequence[Mapping[str, Any]] = (),
    kmem: str = "enabled",
    cgroup: str = "v1",
) -> dict[str, Any]:
    worst = "none"
    for f in findings:
        if f["severity"] == "critical" or (f["severity"] == "warning" and worst == "none"):
            worst = f["severity"]
    return {
        "reportTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "agentVersion": "0.1.0",
        "bootID": "6a5b1c2d-3e4f-4a5b-8c9d-0e1f2a3b4c5d",
        "node": {
            "kernel": "3.10.0-957.el7.x86_64",
            "cgroupVersion": cgroup,
            "memoryController": "v1",
            "cgroupDriver": "systemd",
            "kmemAccounting": kmem,
            "memTotal": 16 << 30,
            "memoryCgroups": {"counted": 400, "live": 380},
            "swap": {"total": 0, "used": 0},
            "thp": "madvise",
        },
        "risk": worst,
        "findings": list(findings),
        "oomKills24h": len(incidents),
        "containersObserved": len(containers),
        "containers": list(containers),
        "incidents": list(incidents),
    }


KMEM_FINDING = {
    "id": "kmem-leak-kernel",
    "severity": "critical",
    "message": "Kernel 3.10.0-957.el7.x86_64 is a RHEL/CentOS 7 3.10 kernel older than 1062.el7 with kmem "
    "accounting on: it leaks slab and memory-cgroup IDs.",
    "evidence": {"kernel": "3.10.0-957.el7.x86_64"},
    "fix": "boot with cgroup.memory=nokmem",
}


def write_report(kubectl: Kubectl, node: str, status: Mapping[str, Any]) -> None:
    """Create the node's report if needed, then replace its status (as the agent's ReportWriter does)."""
    kubectl.run(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": crd.API_VERSION,
                "kind": crd.NODE_REPORT_KIND,
                "metadata": {"name": node},
                "spec": {"nodeName": node},
            }
        ),
    )
    kubectl.run(
        "patch",
        crd.NODE_REPORT_PLURAL,
        node,
        "--subresource=status",
        "--type=json",
        "-p",
        json.dumps([{"op": "add", "path": "/status", "value": dict(status)}]),
    )


def create_peering(kubectl: Kubectl, ns: str, name: str = "oomsight") -> None:
    kubectl.run(
        "apply",
        "-f",
        "-",
        stdin=json.dumps(
            {
                "apiVersion": "kopf.dev/v1",
                "kind": "KopfPeering",
                "metadata": {"name": name, "namespace": ns},
            }
        ),
    )


class OperatorProc:
    """``oomsight operator`` as a subprocess with its log in a file."""

    def __init__(
        self, kubeconfig: Path, namespace: str, log_path: Path, name: str = "op", extra: Sequence[str] = ()
    ) -> None:
        self.kubeconfig = kubeconfig
        self.namespace = namespace
        self.log_path = log_path
        self.name = name
        self.extra = list(extra)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> OperatorProc:
        env = {**os.environ, "POD_NAME": self.name, "PYTHONPATH": str(REPO_ROOT / "operator")}
        env.pop("OOMSIGHT_METRICS_PORT", None)
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "oomsight",
                "operator",
                "--kubeconfig",
                str(self.kubeconfig),
                *(() if "--all-namespaces" in self.extra else ("--namespace", self.namespace)),
                "--debounce",
                "0.3",
                *self.extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
        return self.proc.returncode


def policy(
    name: str, selector: Mapping[str, Any], annotate: bool = True, **recommendation: Any
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "selector": dict(selector),
        "actions": {"annotatePods": annotate, "emitEvents": True},
    }
    if recommendation:
        spec["recommendation"] = recommendation
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.MEMORY_POLICY_KIND,
        "metadata": {"name": name},
        "spec": spec,
    }


def status_of(kubectl: Kubectl, ns: str, name: str) -> dict[str, Any]:
    return kubectl.get(crd.MEMORY_POLICY_PLURAL, name, ns).get("status") or {}


def condition(status: Mapping[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c["type"] == ctype), {})


def container_entry(
    status: Mapping[str, Any], kind: str, name: str, container: str = "app"
) -> dict[str, Any]:
    for wl in status.get("workloads") or []:
        if wl["kind"] == kind and wl["name"] == name:
            for c in wl.get("containers") or []:
                if c["name"] == container:
                    return dict(c)
    return {}
