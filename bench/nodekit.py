"""What the benches that start a control plane or drive the real node (``hack/envtest up --node``)
share: a control plane for one run (or the one ``--kubeconfig`` names), the node brought up (waiting
for the machine's one node when another run holds it), the API as the admin, Pods running the project
image's python3, a watch on their status, and the kills the kernel logs in their cgroups.

The control plane is used by ``bench/bench_agent.py``, ``bench/soak.py`` and
``bench/fuzz_policies.py``; the node by ``bench/bench_node.py`` (the kubelet against oomsight's chart
on that node) and ``bench/peers.py`` (the kubelet's column: its Pod status on its own Pods' kills).
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "hack", ROOT / "tests", ROOT / "operator"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import envtest_lib  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from oomsight.core.oomreport import Incident  # noqa: E402
from oomsight.host.kmsg import KmsgReader  # noqa: E402
from oomsight.host.oomwatch import IncidentWatcher  # noqa: E402
from oomsight.kube.rest import connect  # noqa: E402

NODE = "oomsight-node"
IMAGE = "localhost/oomsight:dev"
KUBEPODS_MEMORY = Path("/sys/fs/cgroup/memory/kubepods")


@contextlib.contextmanager
def control_plane(kubeconfig: str | None, prefix: str) -> Iterator[tuple[Path, str]]:
    """A scratch directory (``prefix``..., removed on leaving) and a kubeconfig: ``kubeconfig`` when
    given (a control plane already running), else that of etcd + kube-apiserver started in the
    directory's ``cp/`` from ``hack/envtest``'s cached binaries and stopped on leaving."""
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        work = Path(tmp)
        if kubeconfig:
            yield work, kubeconfig
            return
        cp = envtest_lib.ControlPlane(work / "cp").start()
        try:
            yield work, str(cp.kubeconfig)
        finally:
            cp.stop()


def node_up(directory: Path, wait: float, log: Callable[[str], None]) -> Any:
    """``hack/envtest up --node directory``; while another run holds the machine's one node, wait
    (up to ``wait`` s, retrying every 15 s) rather than fail. Returns the ``NodeCluster``."""
    import envtest_node

    deadline = time.monotonic() + wait
    while True:
        try:
            return envtest_node.NodeCluster(directory, log=log).up()
        except envtest_lib.StartError as err:
            if "already runs on this machine" not in str(err) or time.monotonic() > deadline:
                raise
            log(f"the real node is busy ({err}); trying again in 15 s")
            time.sleep(15)


class Kills(threading.Thread):
    """Every OOM kill in /dev/kmsg from now on: (kmsg seconds, task_memcg, victim pid)."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.seen: list[tuple[float, str, int]] = []
        self.lock = threading.Lock()
        self.stop = threading.Event()

    def run(self) -> None:
        with KmsgReader(start="now") as reader:
            watcher = IncidentWatcher(reader)
            while not self.stop.is_set():
                for item in watcher.poll(0.5):
                    if isinstance(item, Incident):
                        with self.lock:
                            self.seen.append(
                                ((item.victim.usec or 0) / 1e6, item.task_memcg or "", item.victim.pid)
                            )

    def for_pod(self, uid: str, pids: set[int]) -> list[tuple[float, str, int]]:
        """Kills in the Pod's cgroups, or of one of its processes (past 10 reports in 5 s the kernel
        drops the report's header, and the kill line then names no cgroup)."""
        with self.lock:
            return [k for k in self.seen if f"pod{uid}" in k[1] or k[2] in pids]


def pod_pids(uid: str) -> set[int]:
    """Host PIDs in the Pod's memory cgroups right now."""
    pids: set[int] = set()
    for procs in KUBEPODS_MEMORY.rglob(f"pod{uid}/**/cgroup.procs"):
        try:
            pids.update(int(p) for p in procs.read_text().split())
        except (OSError, ValueError):
            continue
    return pids


class Cluster:
    """The node's API server, as its admin."""

    def __init__(self, directory: Path) -> None:
        self.cp = envtest_lib.ControlPlane(directory)
        self.rest = connect(str(self.cp.kubeconfig))

    def text(self, path: str) -> str:
        with urllib.request.urlopen(
            self.cp.server_url + path, context=self.cp.ssl_context(), timeout=20
        ) as r:
            return str(r.read().decode())

    def json(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        resp = self.rest.request(method, path, body)
        if method == "GET" and not resp.ok:
            raise RuntimeError(f"{method} {path}: {resp.status} {resp.body}")
        return dict(resp.body)

    def create(self, path: str, body: dict[str, Any], timeout: float = 60) -> dict[str, Any]:
        """POST until accepted: a new namespace's ``default`` ServiceAccount comes a moment later."""
        deadline = time.monotonic() + timeout
        while True:
            resp = self.rest.request("POST", path, body)
            if resp.ok:
                return dict(resp.body)
            if time.monotonic() > deadline:
                raise RuntimeError(f"POST {path}: {resp.status} {resp.message[:200]}")
            time.sleep(0.5)

    def samples(self, path: str, name: str) -> dict[tuple[str, str, str], float]:
        """(namespace, pod, container) -> value of metric ``name`` at ``path``."""
        out: dict[tuple[str, str, str], float] = {}
        for family in text_string_to_metric_families(self.text(path)):
            for s in family.samples:
                if s.name == name and s.labels.get("container"):
                    out[(s.labels.get("namespace", ""), s.labels.get("pod", ""), s.labels["container"])] = (
                        s.value
                    )
        return out


def pod_spec(script: str, restart: str = "Always", limit: str = "64Mi") -> dict[str, Any]:
    """One container ``hog`` running ``python3 -c script`` in the project image, ``limit`` of memory."""
    return {
        "terminationGracePeriodSeconds": 1,
        "automountServiceAccountToken": False,
        "restartPolicy": restart,
        "containers": [
            {
                "name": "hog",
                "image": IMAGE,
                "imagePullPolicy": "Never",
                "command": ["python3", "-c", script],
                "resources": {"limits": {"memory": limit}, "requests": {"memory": "32Mi"}},
            }
        ],
    }


def deployment(name: str, script: str) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec(script)},
        },
    }


def running_pod(c: Cluster, ns: str, app: str, timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        items = c.json("GET", f"/api/v1/namespaces/{ns}/pods", None).get("items") or []
        for pod in items:
            if (
                pod["metadata"]["labels"].get("app") == app
                and pod.get("status", {}).get("phase") == "Running"
            ):
                return dict(pod)
        time.sleep(0.2)
    raise RuntimeError(f"no running pod for {app} in {ns}")


def oom_killed(pod: dict[str, Any]) -> tuple[str, int] | None:
    """The kubelet's report of an OOM kill in the Pod's status: (container name, restart count), from
    ``state.terminated`` (a Pod that is not restarted) or ``lastState.terminated`` (one that is)."""
    for cs in (pod.get("status") or {}).get("containerStatuses") or []:
        for state in (cs.get("state"), cs.get("lastState")):
            if ((state or {}).get("terminated") or {}).get("reason") == "OOMKilled":
                return str(cs.get("name")), int(cs.get("restartCount") or 0)
    return None


class PodWatch(threading.Thread):
    """When a watch of the namespace first showed each Pod's status saying ``OOMKilled``."""

    def __init__(self, c: Cluster, ns: str) -> None:
        super().__init__(daemon=True)
        self.c, self.ns = c, ns
        self.reported: dict[str, tuple[float, str]] = {}
        """Pod name -> (CLOCK_MONOTONIC when seen, the container the status names)."""
        self.uids: dict[str, str] = {}
        self.ready = threading.Event()

    def run(self) -> None:
        path = f"/api/v1/namespaces/{self.ns}/pods"
        rv = self.c.json("GET", path)["metadata"]["resourceVersion"]
        self.ready.set()
        query = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": 3600}
        with contextlib.suppress(Exception):  # the node going away ends the watch
            for ev in self.c.rest.stream(path, query, 3700):
                obj = ev.get("object") or {}
                meta = obj.get("metadata") or {}
                name = meta.get("name")
                if not name:
                    continue
                self.uids[name] = meta.get("uid", "")
                got = oom_killed(obj)
                if got is not None and name not in self.reported:
                    self.reported[name] = (time.monotonic(), got[0])
