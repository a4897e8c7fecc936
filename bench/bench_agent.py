"""Benchmark ``oomsight agent``: detection latency of real OOM kills, and the agent's cost.

1. Latency: Pods with kubelet-style cgroups (64 MiB limit); memhog grows until the kernel kills it,
   ``--kills`` times, round-robin over enough Pods that every kill is a new Event (the agent folds
   a 6th kill within 10 minutes into a series). Latency = the moment a watch on the namespace
   delivers the Event minus its ``eventTime``, which the agent takes from the kernel's own timestamp
   of the kill line (kmsg monotonic µs converted to wall time). p50/p99/max are printed.
2. Cost: ``--containers`` Pods with one container cgroup each (a sleeping process inside), the agent
   sweeping every ``--interval`` s. After a warm-up, CPU time (utime+stime of the agent process) over
   ``--duration`` s as % of one core, and RSS (VmRSS at the end, VmHWM peak).

Runs its own control plane (hack/envtest; binaries built by ``hack/envtest build``) unless
``--kubeconfig`` is given. Needs root and the cgroup v1 memory controller, like the tests.

    /tmp/v/bin/python bench/bench_agent.py --kills 20 --containers 200 --duration 180
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "hack"), str(ROOT / "operator")]

from cgroupkit import CgroupKit  # noqa: E402
from kube.agentkit import AgentProc, ensure_crds, make_scene, rest_for, series_total  # noqa: E402
from nodekit import control_plane  # noqa: E402
from oomsight.core.events import OOM_BURST  # noqa: E402
from oomsight.kube.rest import Rest  # noqa: E402

MIB = 1 << 20


def namespace(rest: Rest) -> str:
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    resp = rest.request(
        "POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    )
    assert resp.ok, resp
    return ns


def parse_time(text: str) -> float:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class EventWatch(threading.Thread):
    """Records when each Event (by name) is first seen on a watch of the namespace."""

    def __init__(self, rest: Rest, ns: str) -> None:
        super().__init__(daemon=True)
        self.rest, self.ns = rest, ns
        self.seen: dict[tuple[str, int], tuple[float, dict]] = {}
        self.ready = threading.Event()

    def run(self) -> None:
        path = f"/apis/events.k8s.io/v1/namespaces/{self.ns}/events"
        rv = self.rest.request("GET", path).body["metadata"]["resourceVersion"]
        self.ready.set()
        query = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": 3600}
        with contextlib.suppress(Exception):  # the control plane going away ends the watch
            for ev in self.rest.stream(path, query, 3700):
                obj = ev.get("object") or {}
                name = (obj.get("metadata") or {}).get("name")
                # A kill is a new Event (ADDED) or, past the burst limit, one more in a series (MODIFIED).
                count = int((obj.get("series") or {}).get("count") or 1)
                if name and (name, count) not in self.seen and ev.get("type") in ("ADDED", "MODIFIED"):
                    self.seen[(name, count)] = (time.time(), obj)


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def bench_latency(rest: Rest, kubeconfig: str, kills: int, work: Path) -> None:
    ns = namespace(rest)
    node = f"bench-node-{uuid.uuid4().hex[:6]}"
    kit = CgroupKit()
    agent = AgentProc(
        kubeconfig, node, work / "state-latency", interval=10.0, log_path=work / "agent-latency.log"
    )
    try:
        pods = [make_scene(rest, kit, ns, node) for _ in range((kills + OOM_BURST - 1) // OOM_BURST)]
        watch = EventWatch(rest, ns)
        watch.start()
        watch.ready.wait(10)
        agent.start()
        time.sleep(3)  # the agent's first sweep and ring-buffer replay are done
        for i in range(kills):
            before = len(watch.seen)
            pods[i % len(pods)].oom_kill_main()
            deadline = time.monotonic() + 10
            while len(watch.seen) == before and time.monotonic() < deadline:
                time.sleep(0.01)
        lat = [
            seen - parse_time((obj.get("series") or {}).get("lastObservedTime") or obj["eventTime"])
            for seen, obj in watch.seen.values()
            if obj.get("reason", "").startswith("OOMKilled")
        ]
        print(f"latency: {len(lat)} Event writes (new Events or series updates) for {kills} real OOM kills")
        if lat:
            print(
                f"latency: kernel kill line -> Event on a watch: p50 {pct(lat, 0.5) * 1000:.0f} ms, "
                f"p99 {pct(lat, 0.99) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms, "
                f"mean {statistics.mean(lat) * 1000:.0f} ms"
            )
        time.sleep(2)
        headerless = next(
            (
                ln.split()[-1]
                for ln in agent.get("/metrics").splitlines()
                if ln.startswith("oomsight_agent_headerless")
            ),
            "?",
        )
        print(f"latency: {headerless} of the kill lines came without their report (kernel rate limit)")
        listed = [e for p in pods for e in p.events()]
        print(
            f"latency: listed afterwards: {len(listed)} OOM Events standing for {series_total(listed)} kills"
        )
        if series_total(listed) != kills:
            print(
                "\n".join(line for line in agent.log().splitlines() if "WARNING" in line or "ERROR" in line)
            )
        agent.stop()
    finally:
        agent.kill()
        kit.cleanup()


def proc_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_status(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def bench_cost(
    rest: Rest, kubeconfig: str, containers: int, interval: float, duration: float, work: Path
) -> None:
    ns = namespace(rest)
    node = f"bench-node-{uuid.uuid4().hex[:6]}"
    kit = CgroupKit()
    agent = AgentProc(
        kubeconfig, node, work / "state-cost", interval=interval, log_path=work / "agent-cost.log"
    )
    agent.extra = ("--report-interval", "60")
    procs = []
    try:
        t0 = time.monotonic()
        for i in range(containers):
            scene = make_scene(rest, kit, ns, node, limit=256 * MIB, name=f"pod-{i:03d}")
            procs.append(scene.cgroup.spawn("--anon", "1"))
        print(f"cost: {containers} pods + cgroups + processes set up in {time.monotonic() - t0:.1f} s")
        agent.start()
        agent.extra = ()
        warm = max(2 * interval, 20.0)
        time.sleep(warm)
        assert agent.proc is not None
        pid = agent.proc.pid
        c0, w0 = proc_cpu_seconds(pid), time.monotonic()
        time.sleep(duration)
        c1, w1 = proc_cpu_seconds(pid), time.monotonic()
        metrics = agent.get("/metrics")
        sweeps = next(
            (
                line.split()[-1]
                for line in metrics.splitlines()
                if line.startswith("oomsight_agent_sweep_duration_seconds ")
            ),
            "?",
        )
        seen = next(
            (
                line.split()[-1]
                for line in metrics.splitlines()
                if line.startswith("oomsight_agent_containers ")
            ),
            "?",
        )
        cpu = (c1 - c0) / (w1 - w0) * 100
        print(
            f"cost: {seen} containers, sweep every {interval:g} s, over {w1 - w0:.0f} s: "
            f"CPU {cpu:.2f}% of one core, RSS {proc_status(pid, 'VmRSS') / MIB:.1f} MiB "
            f"(peak {proc_status(pid, 'VmHWM') / MIB:.1f} MiB), "
            f"last sweep {float(sweeps) * 1000:.1f} ms"
        )
        agent.stop()
    finally:
        agent.kill()
        for p in procs:
            with contextlib.suppress(Exception):
                p.kill()
                p.wait()
        kit.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kubeconfig", help="use this control plane instead of starting one")
    ap.add_argument("--kills", type=int, default=20)
    ap.add_argument("--containers", type=int, default=200)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--duration", type=float, default=180.0)
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--skip-cost", action="store_true")
    args = ap.parse_args()
    with control_plane(args.kubeconfig, "bench-agent-") as (work, kubeconfig):
        rest = rest_for(kubeconfig)
        ensure_crds(rest)
        if not args.skip_latency:
            bench_latency(rest, kubeconfig, args.kills, work)
        if not args.skip_cost:
            bench_cost(rest, kubeconfig, args.containers, args.interval, args.duration, work)
    print(json.dumps({"kernel": os.uname().release}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
