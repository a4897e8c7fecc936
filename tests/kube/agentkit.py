"""Run ``oomsight agent`` as a real process against the test control plane, and read what it wrote.

A scene is: a Pod bound to a (fake) node name with its container ID in ``status.containerStatuses``,
the matching kubelet-style cgroup on this machine's real memory controller, and the agent watching
that node with ``--host-root /``. OOM kills are real (memhog grows until the kernel kills it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cgroupkit import Cgroup, CgroupKit, KubeletPod, kubelet_pod, shell_with_oom_child, wait_for_report_budget
from oomsight.core.events import OOM_REASONS
from oomsight.kube.rest import Rest, connect

MIB = 1 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rest_for(kubeconfig: str | Path) -> Rest:
    return connect(str(kubeconfig))


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)


@dataclass
class PodScene:
    rest: Rest
    namespace: str
    node: str
    name: str
    uid: str
    container: str
    container_id: str
    pod_cgroup: Cgroup
    cgroup: Cgroup
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    kubelet: KubeletPod | None = None
    """With ``make_scene(kubelet=True)``: the pod laid out exactly as the kubelet does (pod limit = the
    container's, a pause-like process in the sandbox cgroup)."""

    def oom_kill_main(self, timeout: float = 30.0) -> int:
        """Run a process that grows until the kernel OOM-kills it (the container's main process);
        return its pid (``sh`` execs memhog, so the kill line names this pid)."""
        wait_for_report_budget()
        p = self.cgroup.spawn("--grow-anon-mib", "8", ready=False)
        p.wait(timeout=timeout)
        if p.stdout is not None:
            p.stdout.close()
        assert p.returncode == -signal.SIGKILL, f"memhog ended with {p.returncode}, not an OOM kill"
        return p.pid

    def oom_kill_child(self, timeout: float = 30.0) -> subprocess.Popen[str]:
        """A child grows until it is killed; the parent (the "container") keeps running."""
        wait_for_report_budget()
        p = self.cgroup.spawn("--children", "1", "--child-grow-mib", "8", "--child-oom-score-adj", "1000")
        self.procs.append(p)
        child = p.ready_pids[1]  # type: ignore[attr-defined]
        wait_for(
            lambda: not Path(f"/proc/{child}").exists() or _zombie(child), timeout, "the child to be killed"
        )
        assert p.poll() is None, "the parent should still run after its child was killed"
        return p

    def oom_kill_shell_child(self, timeout: float = 30.0) -> subprocess.Popen[str]:
        """The container's first process is ``sh``; its child ``dd`` needs twice the limit and is
        OOM-killed, sh lives on (``cgroupkit.shell_with_oom_child``)."""
        limit = self.cgroup.limit() or 64 * MIB
        wait_for_report_budget()
        sh, dd = shell_with_oom_child(self.cgroup, 2 * limit, timeout)
        self.procs.append(sh)
        wait_for(lambda: not Path(f"/proc/{dd}").exists() or _zombie(dd), timeout, "dd to be killed")
        assert sh.poll() is None, "sh should still run after its child was killed"
        return sh

    def events(self, reasons: frozenset[str] | None = OOM_REASONS) -> list[dict[str, Any]]:
        resp = self.rest.request("GET", f"/apis/events.k8s.io/v1/namespaces/{self.namespace}/events")
        assert resp.ok, resp
        return [
            e
            for e in resp.body.get("items", [])
            if (e.get("regarding") or {}).get("uid") == self.uid
            and (reasons is None or e.get("reason") in reasons)
        ]

    def stop_procs(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()
            if p.stdout is not None:
                p.stdout.close()
        self.procs.clear()
        if self.kubelet is not None:
            self.kubelet.stop()


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def make_scene(
    rest: Rest,
    kit: CgroupKit,
    namespace: str,
    node: str,
    limit: int = 64 * MIB,
    name: str | None = None,
    container: str = "app",
    kubelet: bool = False,
) -> PodScene:
    """Create the Pod (bound to ``node``), set its container ID, and build its cgroups. ``kubelet``:
    lay them out exactly as the kubelet does (``cgroupkit.kubelet_pod``: pod limit = the container's
    limit, a pause-like process in a sandbox cgroup); else the pod cgroup has no limit."""
    name = name or f"memhog-{uuid.uuid4().hex[:6]}"
    cid = uuid.uuid4().hex + uuid.uuid4().hex
    body = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "nodeName": node,
            "containers": [
                {
                    "name": container,
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"memory": f"{limit // 2}"}, "limits": {"memory": f"{limit}"}},
                }
            ],
        },
    }
    sa = {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "default"}}
    rest.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", sa)  # no controller-manager here
    resp = rest.request("POST", f"/api/v1/namespaces/{namespace}/pods", body)
    assert resp.ok, resp
    uid = resp.body["metadata"]["uid"]
    status = {
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {
                    "name": container,
                    "containerID": f"containerd://{cid}",
                    "image": "registry.k8s.io/pause:3.10",
                    "imageID": "",
                    "ready": True,
                    "restartCount": 0,
                    "started": True,
                    "state": {"running": {"startedAt": "2026-11-23T12:00:00Z"}},
                }
            ],
        }
    }
    resp = rest.request(
        "PATCH",
        f"/api/v1/namespaces/{namespace}/pods/{name}/status",
        status,
        content_type="application/merge-patch+json",
    )
    assert resp.ok, resp
    if kubelet:
        kp = kubelet_pod(kit, [limit], uid=uid, container_ids=[cid])
        return PodScene(rest, namespace, node, name, uid, container, cid, kp.pod, kp.container, kubelet=kp)
    pod_cg, _ = kit.pod(qos="burstable", uid=uid)
    cg, _ = kit.container(pod_cg, limit=limit, container_id=cid)
    return PodScene(rest, namespace, node, name, uid, container, cid, pod_cg, cg)


@dataclass
class AgentProc:
    kubeconfig: str
    node: str
    state_dir: Path
    metrics_port: int = field(default_factory=free_port)
    interval: float = 1.0
    log_path: Path | None = None
    proc: subprocess.Popen[bytes] | None = None
    extra: tuple[str, ...] = ()
    host_root: str = "/"
    wrap: tuple[str, ...] = ()
    """A command the agent runs under (it must exec its arguments): a cgroup move, capsh."""

    def start(self, wait: bool = True) -> AgentProc:
        self.log_path = self.log_path or self.state_dir.parent / f"agent-{self.node}.log"
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            [
                *self.wrap,
                sys.executable,
                "-m",
                "oomsight",
                "agent",
                "--node-name",
                self.node,
                "--kubeconfig",
                self.kubeconfig,
                "--host-root",
                self.host_root,
                "--state-dir",
                str(self.state_dir),
                "--metrics-port",
                str(self.metrics_port),
                "--metrics-address",
                "127.0.0.1",
                "--interval",
                str(self.interval),
                "--report-interval",
                "1",
                *self.extra,
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        log.close()
        if not wait:
            return self
        # /readyz: pods listed and the first sweep done. A fresh agent reads the whole ring buffer
        # before its first sweep, which takes each counter as history: a kill before it whose report
        # the kernel rate-limited could not be placed.
        wait_for(self.ready, 60, "the agent's /readyz to say ok (pods listed, first sweep done)")
        return self

    def alive(self) -> bool:
        """True while the process runs; AssertionError with its log once it has exited."""
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"agent exited with {self.proc.returncode}:\n{self.log()}")
        return True

    def ready(self) -> bool:
        self.alive()
        try:
            body = self.get("/readyz")
        except OSError:
            return False
        return body.strip() == "ok"

    def wait_swept(self, containers: int, timeout: float = 60.0) -> None:
        """Until a sweep has matched ``containers`` containers: their OOM-kill counters have a baseline.
        /healthz says ok once pods are listed; on a fresh start the first sweep may come later (the
        whole ring buffer is read first), and it takes a counter as history."""
        wait_for(
            lambda: (sample(self.get("/metrics"), "oomsight_agent_containers") or 0) >= containers,
            timeout,
            f"a sweep to see {containers} containers",
        )

    def get(self, path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=5) as r:
            return r.read().decode()

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path and self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"agent did not exit on SIGTERM within {timeout}s:\n{self.log()}") from None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            self.proc.wait()


def series_total(events: list[dict[str, Any]]) -> int:
    """Occurrences an Event list stands for: 1 per Event, or its series count."""
    return sum(int((e.get("series") or {}).get("count") or 1) for e in events)


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels`` in a /metrics text."""
    from prometheus_client.parser import text_string_to_metric_families

    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()):
                return float(s.value)
    return None


def ensure_crds(rest: Rest) -> None:
    """Apply the repository's NodeMemoryReport CRD (idempotent) and wait until it is served."""
    import yaml

    root = Path(__file__).resolve().parents[2]
    crd = yaml.safe_load((root / "crds" / "nodememoryreports.oomsight.io.yaml").read_text())
    resp = rest.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
    assert resp.status in (200, 201, 409), resp
    wait_for(
        lambda: rest.request("GET", "/apis/oomsight.io/v1alpha1/nodememoryreports").ok,
        30,
        "the CRD to be served",
    )
