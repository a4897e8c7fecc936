"""Benchmark ``oomsight operator`` at scale against a real kube-apiserver.

Load (defaults): 5,000 Pods in 500 workloads (400 Deployments through their ReplicaSets, 100
StatefulSets; 10 Pods each) in 10 namespaces, under 20 MemoryPolicies (2 per namespace, 25 workloads
each, all with ``annotatePods``), on 50 Nodes with one NodeMemoryReport each (100 container profiles,
8 peaks). ``--noise N`` adds N Pods that no policy selects (in the same namespaces), to show that
they do not slow reconciles. Objects are created through the API with a few threads.

Figures:
  1. converge after start: seconds from starting the operator until every policy's status holds all
     its pods and a recommendation for every workload (and until every pod carries its annotation);
  2. converge after one report changes: one node's report gets new peaks; seconds until every
     affected workload's status shows them;
  3. operator RSS (VmRSS at the end, VmHWM peak) and CPU seconds used.

Runs its own control plane (hack/envtest) unless ``--kubeconfig`` is given.

    /tmp/v/bin/python bench/bench_operator.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "hack"), str(ROOT / "operator")]

import envtest_lib  # noqa: E402

from kube.crdkit import apply_crds  # noqa: E402
from kube.kubehelpers import Kubectl  # noqa: E402
from kube.opkit import owner as owner_ref  # noqa: E402
from oomsight.kube import crd  # noqa: E402
from oomsight.kube.rest import Response, Rest, connect  # noqa: E402

MI = 1 << 20


def must(resp: Response, what: str) -> dict[str, Any]:
    if not resp.ok and resp.status != 409:
        raise SystemExit(f"bench: {what} failed (HTTP {resp.status}): {resp.message[:300]}")
    return resp.body


def parallel(fn: Callable[[Any], Any], items: list[Any], threads: int) -> list[Any]:
    with ThreadPoolExecutor(max_workers=threads) as pool:
        return list(pool.map(fn, items))


class Scene:
    def __init__(self, rest: Rest, args: argparse.Namespace) -> None:
        self.rest = rest
        self.args = args
        self.namespaces = [f"bench-{i}" for i in range(args.namespaces)]
        self.nodes = [f"bench-node-{i}" for i in range(args.nodes)]
        self.pods: list[dict[str, Any]] = []  # created pod objects
        self.pod_workload: dict[str, tuple[str, str, str, str]] = {}  # uid -> (ns, policy, kind, name)
        self.expected: dict[tuple[str, str], set[tuple[str, str]]] = {}  # policy -> workloads

    def build(self) -> None:
        a = self.args
        t0 = time.monotonic()
        for ns in self.namespaces:
            must(self.rest.request("POST", "/api/v1/namespaces", {"metadata": {"name": ns}}), "namespace")
        parallel(
            lambda n: must(self.rest.request("POST", "/api/v1/nodes", {"metadata": {"name": n}}), "node"),
            self.nodes,
            a.threads,
        )
        must(
            self.rest.request(
                "POST",
                f"/apis/{crd.PEERING_GROUP}/{crd.PEERING_VERSION}/clusterkopfpeerings",
                {"apiVersion": "kopf.dev/v1", "kind": "ClusterKopfPeering", "metadata": {"name": "oomsight"}},
            ),
            "peering",
        )
        per_policy = a.workloads // (len(self.namespaces) * 2)
        specs = []  # (ns, policy, kind, name, index)
        for ns in self.namespaces:
            for pol in ("a", "b"):
                self.expected[(ns, f"pol-{pol}")] = set()
                for w in range(per_policy):
                    kind = "StatefulSet" if w % 5 == 4 else "Deployment"
                    specs.append((ns, f"pol-{pol}", kind, f"{pol}-{kind[0].lower()}{w}"))
        owners = parallel(self._workload, specs, a.threads)
        pod_specs = []
        i = 0
        for (ns, pol, kind, name), owner in zip(specs, owners, strict=True):
            self.expected[(ns, pol)].add((kind, name))
            for r in range(a.pods_per_workload):
                pod_specs.append(
                    (
                        ns,
                        pol,
                        kind,
                        name,
                        f"{owner['metadata']['name']}-{r}",
                        owner,
                        self.nodes[i % len(self.nodes)],
                        True,
                    )
                )
                i += 1
        for n in range(a.noise):
            ns = self.namespaces[n % len(self.namespaces)]
            pod_specs.append(
                (ns, "", "Pod", f"noise-{n}", f"noise-{n}", None, self.nodes[n % len(self.nodes)], False)
            )
        self.pods = [p for p in parallel(self._pod, pod_specs, a.threads) if p is not None]
        for p, spec in zip(self.pods, pod_specs, strict=True):
            if spec[7]:
                self.pod_workload[p["metadata"]["uid"]] = (spec[0], spec[1], spec[2], spec[3])
        print(
            f"created {len(self.namespaces)} namespaces, {len(self.nodes)} nodes, {len(specs)} workloads, "
            f"{len(self.pods)} pods ({a.noise} unselected) in {time.monotonic() - t0:.1f}s",
            flush=True,
        )
        t1 = time.monotonic()
        self.write_reports(scale=1.0)
        for ns in self.namespaces:
            for pol in ("a", "b"):
                body = {
                    "apiVersion": crd.API_VERSION,
                    "kind": crd.MEMORY_POLICY_KIND,
                    "metadata": {"name": f"pol-{pol}", "namespace": ns},
                    "spec": {"selector": {"matchLabels": {"group": pol}}, "actions": {"annotatePods": True}},
                }
                must(
                    self.rest.request(
                        "POST", f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{ns}/memorypolicies", body
                    ),
                    "policy",
                )
        print(
            f"wrote {len(self.nodes)} NodeMemoryReports and {len(self.expected)} MemoryPolicies in "
            f"{time.monotonic() - t1:.1f}s",
            flush=True,
        )

    def _workload(self, spec: tuple[str, str, str, str]) -> dict[str, Any]:
        ns, pol, kind, name = spec
        labels = {"group": pol[-1], "wl": name}
        tmpl = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "app", "image": "pause"}]}}
        sel = {"matchLabels": labels}
        if kind == "StatefulSet":
            body = {
                "apiVersion": "apps/v1",
                "kind": "StatefulSet",
                "metadata": {"name": name},
                "spec": {"serviceName": name, "selector": sel, "template": tmpl},
            }
            return must(self.rest.request("POST", f"/apis/apps/v1/namespaces/{ns}/statefulsets", body), "sts")
        dep = must(
            self.rest.request(
                "POST",
                f"/apis/apps/v1/namespaces/{ns}/deployments",
                {
                    "apiVersion": "apps/v1",
                    "kind": "Deployment",
                    "metadata": {"name": name},
                    "spec": {"selector": sel, "template": tmpl},
                },
            ),
            "deployment",
        )
        rs = {
            "apiVersion": "apps/v1",
            "kind": "ReplicaSet",
            "metadata": {"name": f"{name}-5f7c9d8b6", "ownerReferences": [owner_ref(dep)]},
            "spec": {"selector": sel, "template": tmpl},
        }
        return must(self.rest.request("POST", f"/apis/apps/v1/namespaces/{ns}/replicasets", rs), "replicaset")

    def _pod(self, spec: tuple[Any, ...]) -> dict[str, Any] | None:
        ns, pol, _kind, wl, name, owner, node, _ = spec
        labels = {"group": pol[-1], "wl": wl} if pol else {"group": "none"}
        meta: dict[str, Any] = {"name": name, "labels": labels}
        if owner is not None:
            meta["ownerReferences"] = [owner_ref(owner)]
        body = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "spec": {
                "nodeName": node,
                "containers": [
                    {
                        "name": "app",
                        "image": "pause",
                        "resources": {"requests": {"memory": "256Mi"}, "limits": {"memory": "512Mi"}},
                    }
                ],
            },
        }
        return must(self.rest.request("POST", f"/api/v1/namespaces/{ns}/pods", body), "pod")

    def report_body(self, node: str, scale: float) -> dict[str, Any]:
        now = int(time.time() // 300 * 300)
        containers = []
        for p in self.pods:
            if p["spec"]["nodeName"] != node:
                continue
            seed = sum(map(ord, p["metadata"]["name"])) % 200
            peaks = [int((150 + seed + 5 * k) * MI * scale) for k in range(8)]
            ws = peaks[-1]
            containers.append(
                {
                    "namespace": p["metadata"]["namespace"],
                    "pod": p["metadata"]["name"],
                    "podUID": p["metadata"]["uid"],
                    "container": "app",
                    "request": 256 * MI,
                    "limit": 512 * MI,
                    "limitLevel": "container",
                    "workingSet": ws,
                    "peaks": [{"t": now - 300 * (7 - k), "bytes": b} for k, b in enumerate(peaks)],
                    "breakdown": {
                        "anon": int(ws * 0.8),
                        "activeFile": int(ws * 0.2),
                        "inactiveFile": 0,
                        "shmem": 0,
                        "kernel": 0,
                        "swap": 0,
                    },
                    "oomKills": 0,
                }
            )
        return {
            "reportTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "agentVersion": "bench",
            "bootID": "b",
            "node": {"kernel": "6.18.44", "cgroupVersion": "hybrid", "kmemAccounting": "enabled"},
            "risk": "none",
            "findings": [],
            "containersObserved": len(containers),
            "containers": containers[: crd.MAX_REPORT_CONTAINERS],
            "incidents": [],
        }

    def write_report(self, node: str, scale: float) -> None:
        base = f"/apis/{crd.GROUP}/{crd.VERSION}/{crd.NODE_REPORT_PLURAL}"
        must(
            self.rest.request(
                "POST",
                base,
                {
                    "apiVersion": crd.API_VERSION,
                    "kind": crd.NODE_REPORT_KIND,
                    "metadata": {"name": node},
                    "spec": {"nodeName": node},
                },
            ),
            "report",
        )
        must(
            self.rest.request(
                "PATCH",
                f"{base}/{node}/status",
                [{"op": "add", "path": "/status", "value": self.report_body(node, scale)}],
                content_type="application/json-patch+json",
            ),
            "report status",
        )

    def write_reports(self, scale: float) -> None:
        parallel(lambda n: self.write_report(n, scale), self.nodes, self.args.threads)


def policies(rest: Rest, ns: str) -> list[dict[str, Any]]:
    return must(
        rest.request("GET", f"/apis/{crd.GROUP}/{crd.VERSION}/namespaces/{ns}/memorypolicies"), "list"
    )["items"]


def converged(
    rest: Rest, scene: Scene, min_max: int = 0, only: set[tuple[str, str, str]] | None = None
) -> bool:
    for ns in scene.namespaces:
        for pol in policies(rest, ns):
            key = (ns, pol["metadata"]["name"])
            st = pol.get("status") or {}
            want = scene.expected[key]
            if st.get("podsObserved") != len(want) * scene.args.pods_per_workload:
                return False
            got = {(w["kind"], w["name"]): w for w in st.get("workloads") or []}
            if set(got) != want:
                return False
            for kn, w in got.items():
                c = w["containers"][0]
                if not c.get("recommendedLimit"):
                    return False
                if only is not None and (ns, pol["metadata"]["name"], kn[1]) in only:
                    mx = c.get("workingSet", {}).get("max", "0Mi")
                    if int(str(mx).removesuffix("Mi")) * MI < min_max:
                        return False
    return True


def annotated(rest: Rest, scene: Scene) -> int:
    n = 0
    for ns in scene.namespaces:
        items = must(rest.request("GET", f"/api/v1/namespaces/{ns}/pods"), "pods")["items"]
        n += sum(
            1 for p in items if crd.ANNOTATION_RECOMMENDATION in (p["metadata"].get("annotations") or {})
        )
    return n


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        k, _, v = line.partition(":")
        if k in ("VmRSS", "VmHWM"):
            out[k] = int(v.split()[0]) * 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    out["cpu_ticks"] = int(fields[11]) + int(fields[12])
    return out


def wait(pred: Callable[[], bool], timeout: float, every: float = 0.25) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return time.monotonic() - t0
        time.sleep(every)
    return None


def run(args: argparse.Namespace, kubeconfig: str, work: Path) -> None:
    rest = connect(kubeconfig)
    apply_crds(Kubectl(Path(kubeconfig)))
    scene = Scene(rest, args)
    scene.build()
    log = open(work / "operator.log", "wb")  # noqa: SIM115
    env = {**os.environ, "POD_NAME": "bench", "PYTHONPATH": str(ROOT / "operator")}
    t_start = time.monotonic()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "oomsight",
            "operator",
            "--kubeconfig",
            kubeconfig,
            "--all-namespaces",
            "--peering",
            "oomsight",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        t_conv = wait(lambda: converged(rest, scene), args.timeout, every=0.5)
        t_conv_total = None if t_conv is None else time.monotonic() - t_start
        expected_ann = len(scene.pod_workload)
        t_ann = wait(lambda: annotated(rest, scene) >= expected_ann, args.timeout, every=1.0)
        t_ann_total = None if t_ann is None else time.monotonic() - t_start
        print(
            f"converge after start: every status {fmt(t_conv_total)} s; all {expected_ann} pods annotated "
            f"{fmt(t_ann_total)} s (target: status <= 30 s)",
            flush=True,
        )
        time.sleep(3)
        # One report changes: node 0's containers double their peaks.
        node = scene.nodes[0]
        only = {
            (ns, pol, wl)
            for p in scene.pods
            if p["spec"]["nodeName"] == node
            for ns, pol, _, wl in [scene.pod_workload.get(p["metadata"]["uid"], ("", "", "", ""))]
            if pol
        }
        scene.write_report(node, scale=3.0)
        t_one = wait(lambda: converged(rest, scene, min_max=450 * MI, only=only), 60, every=0.1)
        print(
            f"converge after one report changes ({len(only)} workloads affected): {fmt(t_one)} s "
            f"(target <= 5 s)",
            flush=True,
        )
        st = proc_status(proc.pid)
        cpu = st["cpu_ticks"] / os.sysconf("SC_CLK_TCK")
        print(
            f"operator RSS {st['VmRSS'] / MI:.0f} MiB (peak {st['VmHWM'] / MI:.0f} MiB; target <= 300 MiB), "
            f"CPU {cpu:.1f} s over {time.monotonic() - t_start:.0f} s",
            flush=True,
        )
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        print(f"operator log: {work / 'operator.log'}")


def fmt(t: float | None) -> str:
    return "TIMEOUT" if t is None else f"{t:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kubeconfig", help="use this cluster instead of starting a control plane")
    ap.add_argument("--namespaces", type=int, default=10)
    ap.add_argument("--workloads", type=int, default=500)
    ap.add_argument("--pods-per-workload", type=int, default=10)
    ap.add_argument("--nodes", type=int, default=50)
    ap.add_argument("--noise", type=int, default=0, help="extra pods no policy selects")
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--timeout", type=float, default=180.0)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-operator-"))
    if args.kubeconfig:
        run(args, args.kubeconfig, work)
        return 0
    cp = envtest_lib.ControlPlane(work / "cp", binaries=envtest_lib.find_binaries())
    cp.start()
    try:
        run(args, str(cp.kubeconfig), work)
    finally:
        cp.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
