"""Real-node rows of ``bench/chaos.py``: OOM storms on ``hack/envtest up --node`` with node faults.

The node is a real single-node cluster (kubelet v1.36.4, Debian's containerd + runc,
``hack/envtest_node.py``), the agent is the chart's DaemonSet with the project image, installed by
helm exactly as ``tests/node`` does (``tests/node/nodekit.py``). A storm: one Deployment of
``--node-pods`` Pods with a 64 MiB memory limit; in each, PID 1 lives and starts a child that grows
until the kernel kills it, ``--node-kills`` times (``nodekit.CHILD``): real kills through the
kubelet's cgroups. During it, one fault:

  node-agent-pod     the agent's Pod deleted (the DaemonSet makes a new one; the state directory is a
                     hostPath, /var/lib/oomsight, so the cursor and the spool survive)
  node-containerd    containerd stopped and started again 2 s later (the containers' shims live on)
  node-kubelet       the kubelet stopped and started again 2 s later

Truth is our own ``/dev/kmsg`` reader, started before the Pods: every ``Killed process PID`` line
whose PID ran in a container cgroup of a storm Pod (a poller reads their ``cgroup.procs`` every
50 ms) or whose ``oom-kill:...task_memcg=`` line names one. The kernel's own per-cgroup counters
(``memory.oom_control`` ``oom_kill``) are printed beside it as a cross-check. Reported = the agent's
OOM Events on the Pod (new ones plus ``series`` counts).

The node is one per machine (guarded by ``hack/envtest``): these rows bring it up, wait for another
one to go, and always bring it down.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import re
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import envtest_node  # hack/, tests/ and operator/ are on sys.path: bench/chaos.py puts them there

from kube.kubehelpers import Kubectl, kubectl_binary
from node.nodekit import (
    AGENT_CONTROLLER,
    CHILD,
    SYSTEM_NS,
    apply,
    create_namespace,
    deployment,
    install_chart,
)
from oomsight.core.events import OOM_REASONS

MEMORY = Path("/sys/fs/cgroup/memory")
_KILLED = re.compile(r"Killed process (\d+) ")
_OOM_KILL = re.compile(r"oom-kill:.*task_memcg=([^,]*),task=[^,]*,pid=(\d+)")
_POD_UID = re.compile(r"pod([0-9a-f_-]{36})")


class KillTruth:
    """Kills of the storm's Pods, from /dev/kmsg read from now on."""

    def __init__(self) -> None:
        self.uids: set[str] = set()
        self.pid_uid: dict[int, str] = {}
        self.memcg_pid: dict[int, str] = {}
        self.killed: list[int] = []
        self.overruns = 0
        self._stop = threading.Event()
        self._fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self._fd, 0, os.SEEK_END)
        self._threads = [threading.Thread(target=f, daemon=True) for f in (self._read, self._poll)]
        for t in self._threads:
            t.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                rec = os.read(self._fd, 8192).decode(errors="replace")
            except BlockingIOError:
                self._stop.wait(0.02)
                continue
            except OSError as err:
                if err.errno == errno.EPIPE:  # the ring overran us: records lost (counted, shown)
                    self.overruns += 1
                    continue
                raise
            msg = rec.split(";", 1)[-1].split("\n", 1)[0]
            if m := _KILLED.search(msg):
                self.killed.append(int(m.group(1)))
            elif (m := _OOM_KILL.search(msg)) and (u := _POD_UID.search(m.group(1))):
                self.memcg_pid[int(m.group(2))] = u.group(1).replace("_", "-")

    def _poll(self) -> None:
        while not self._stop.is_set():
            for uid in list(self.uids):
                for procs in container_cgroups(uid, "cgroup.procs"):
                    with contextlib.suppress(OSError, ValueError):
                        for line in procs.read_text().split():
                            self.pid_uid.setdefault(int(line), uid)
            self._stop.wait(0.05)

    def per_pod(self) -> Counter[str]:
        out: Counter[str] = Counter()
        for pid in self.killed:
            uid = self.memcg_pid.get(pid) or self.pid_uid.get(pid)
            if uid in self.uids:
                out[uid] += 1
        return out

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)
        os.close(self._fd)


def container_cgroups(uid: str, name: str) -> list[Path]:
    """``name`` in each container cgroup of Pod ``uid`` (v1 memory, kubelet cgroupfs naming)."""
    pod = f"pod{uid}"
    found: list[Path] = []
    for qos in (MEMORY / "kubepods", MEMORY / "kubepods" / "burstable", MEMORY / "kubepods" / "besteffort"):
        found += [p for p in (qos / pod).glob(f"*/{name}")]
    return found


def kernel_counts(uids: set[str]) -> int:
    """The kernel's own OOM-kill counters over the storm Pods' container cgroups (sandbox included)."""
    total = 0
    for uid in uids:
        for f in container_cgroups(uid, "memory.oom_control"):
            with contextlib.suppress(OSError, ValueError):
                total += int(dict(ln.split() for ln in f.read_text().splitlines()).get("oom_kill", 0))
    return total


class Node:
    """The real node and the chart on it, for every node row of one run."""

    def __init__(self, work: Path, wait_for_node: float) -> None:
        self.cluster = envtest_node.NodeCluster(work / "node", log=lambda m: print(f"node: {m}", flush=True))
        deadline = time.monotonic() + wait_for_node
        while True:  # one node per machine: another helper may hold it for a while
            try:
                self.cluster.up()
                break
            except envtest_node.EnvtestError as err:
                if "already runs on this machine" not in str(err) or time.monotonic() > deadline:
                    raise
                print(f"node: waiting: {str(err).splitlines()[0]}", flush=True)
                time.sleep(15)
        kubectl = kubectl_binary()
        if kubectl is None:
            raise RuntimeError("kubectl not found (set KUBECTL or put it on PATH)")
        self.kubectl = Kubectl(self.cluster.kubeconfig, kubectl, timeout=120)
        helm = envtest_node.envtest_lib.build(["helm"], log=lambda _m: None)["helm"]
        install_chart(self.kubectl, helm)

    def agent_pods(self) -> list[dict[str, Any]]:
        got = self.kubectl.json("get", "pods", "-n", SYSTEM_NS, "-l", "app.kubernetes.io/component=agent")
        return list(got["items"])

    def agent_ready(self) -> bool:
        pods = [p for p in self.agent_pods() if not p["metadata"].get("deletionTimestamp")]
        return len(pods) == 1 and all(
            c.get("ready") for c in pods[0].get("status", {}).get("containerStatuses") or [{}]
        )

    def agent_log(self) -> str:
        out = self.kubectl.run("logs", "-n", SYSTEM_NS, "-l", "app.kubernetes.io/component=agent",
                               "--tail=-1", check=False)  # fmt: skip
        return out.stdout

    def restart(self, name: str) -> None:
        """Stop ``containerd`` or ``kubelet`` (SIGTERM), start it again 2 s later as ``up`` does."""
        self.cluster._stop(name)
        time.sleep(2)
        if name == "kubelet":
            self.cluster._start_kubelet()
        else:
            self.cluster._start(name, [self.cluster.binary(name), "--config",
                                       str(self.cluster.directory / "containerd.toml")])  # fmt: skip
            self.cluster._wait(name, lambda: self.cluster.ctr("version", check=False).returncode == 0, 60)

    def down(self) -> None:
        self.cluster.down()


def events_by_pod(kubectl: Kubectl, ns: str) -> Counter[str] | None:
    try:
        items = kubectl.json("get", "events.v1.events.k8s.io", "-n", ns)["items"]
    except Exception:
        return None
    out: Counter[str] = Counter()
    for e in items:
        if e.get("reportingController") == AGENT_CONTROLLER and e.get("reason") in OOM_REASONS:
            out[(e.get("regarding") or {}).get("uid", "")] += int((e.get("series") or {}).get("count") or 1)
    return out


def node_row(
    ctx: dict[str, Any], args: argparse.Namespace, name: str, fault: str, inject: Callable[[Node], None]
) -> dict[str, Any]:
    node: Node = ctx["node"]
    kubectl = node.kubectl
    truth = KillTruth()
    try:
        ns = create_namespace(kubectl, f"chaos-{name}")
        app = "storm"
        apply(kubectl, ns, deployment(app, [CHILD, str(args.node_kills), "0.5"], limit="64Mi",
                                      request="32Mi", replicas=args.node_pods))  # fmt: skip

        def pod_uids() -> set[str]:
            items = kubectl.json("get", "pods", "-n", ns, "-l", f"app={app}")["items"]
            return {p["metadata"]["uid"] for p in items}

        deadline = time.monotonic() + 300
        while len(truth.uids) < args.node_pods and time.monotonic() < deadline:
            truth.uids |= pod_uids()
            time.sleep(1)
        # the fault lands once the storm is well under way
        while sum(truth.per_pod().values()) < args.node_pods * args.node_kills * 0.3:
            if time.monotonic() > deadline:
                break
            time.sleep(0.5)
        inject(node)
        fault_done = time.monotonic()

        def storm_over() -> bool:
            logs = kubectl.run("logs", "-n", ns, "-l", f"app={app}", "--tail=1", "--max-log-requests=50",
                               check=False).stdout  # fmt: skip
            return logs.count("done") >= args.node_pods

        while not storm_over() and time.monotonic() < deadline + 600:
            time.sleep(2)
        time.sleep(1)  # the last kill lines reach the reader
        kills = truth.per_pod()
        ended = max(fault_done, time.monotonic())
        recover: float | None = None
        reported: Counter[str] = Counter()
        settle_end = time.monotonic() + args.settle
        while time.monotonic() < settle_end:
            got = events_by_pod(kubectl, ns)
            if got is not None:
                reported = got
                if all(reported[u] >= kills[u] for u in truth.uids):
                    recover = max(0.0, time.monotonic() - ended)
                    time.sleep(5)  # anything written twice shows up now
                    reported = events_by_pod(kubectl, ns) or reported
                    break
            time.sleep(1)
        uids = truth.uids
        lost = sum(max(0, kills[u] - reported[u]) for u in uids)
        dup = sum(max(0, reported[u] - kills[u]) for u in uids)
        stray = sum(n for u, n in reported.items() if u not in uids)
        log = node.agent_log()
        errors = [ln for ln in log.splitlines() if "Traceback" in ln or " ERROR " in ln]
        note = (
            f"{len(uids)} Pods; the kernel's counters say {kernel_counts(uids)} kills; kmsg reader "
            f"overruns {truth.overruns}; agent log (current Pod): "
            + (f"{len(errors)} error lines" if errors else "clean")
        )
        kubectl.run("delete", "namespace", ns, "--wait=false", check=False)
        return {"row": name, "fault": fault, "kills": sum(kills[u] for u in uids),
                "reported": sum(reported[u] for u in uids), "events": sum(reported.values()), "lost": lost,
                "dup": dup, "stray": stray, "recover_s": recover, "note": note}  # fmt: skip
    finally:
        truth.close()


def _delete_agent_pod(node: Node) -> None:
    node.kubectl.run("delete", "pods", "-n", SYSTEM_NS, "-l", "app.kubernetes.io/component=agent",
                     "--wait=false")  # fmt: skip
    deadline = time.monotonic() + 240
    time.sleep(2)
    while not node.agent_ready() and time.monotonic() < deadline:
        time.sleep(1)


def row_agent_pod(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    return node_row(ctx, args, "node-agent-pod",
                    "real node: the agent's Pod deleted mid-storm (DaemonSet recreates it)",
                    _delete_agent_pod)  # fmt: skip


def row_containerd(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    return node_row(ctx, args, "node-containerd", "real node: containerd stopped mid-storm, back 2 s later",
                    lambda n: n.restart("containerd"))  # fmt: skip


def row_kubelet(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    def restart(node: Node) -> None:
        node.restart("kubelet")
        node.cluster.wait_node_ready()

    return node_row(ctx, args, "node-kubelet", "real node: kubelet stopped mid-storm, started 2 s later",
                    restart)  # fmt: skip


ROWS: dict[str, Callable[[dict[str, Any], argparse.Namespace], dict[str, Any]]] = {
    "node-agent-pod": row_agent_pod,
    "node-containerd": row_containerd,
    "node-kubelet": row_kubelet,
}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--node-pods", type=int, default=10, help="storm Pods on the real node")
    ap.add_argument("--node-kills", type=int, default=10, help="kills in each of them")
    ap.add_argument("--node-wait", type=float, default=900.0, help="seconds to wait for another node to go")


@contextlib.contextmanager
def real_node(ctx: dict[str, Any], args: argparse.Namespace, rows: list[str]) -> Any:
    """The node for the node rows among ``rows``; always brought down."""
    if not any(r in ROWS for r in rows):
        yield
        return
    work = Path(tempfile.mkdtemp(prefix="bench-chaos-node-"))
    node: Node | None = None
    try:
        node = Node(work, args.node_wait)
        ctx["node"] = node
        yield
    finally:
        if node is not None:
            node.down()
        else:
            with contextlib.suppress(Exception):
                envtest_node.NodeCluster(work / "node", log=lambda _m: None).down()
        print(f"node: down; logs in {work / 'node'}", flush=True)
