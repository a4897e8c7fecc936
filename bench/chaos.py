"""Try hard to make ``oomsight agent`` lose or repeat an OOM kill, and print one table of what was lost.

Every row is a storm of real OOM kills: Pods on the real kube-apiserver (hack/envtest) with
kubelet-style cgroups on this machine's v1 memory controller (as bench/bench_agent.py builds them),
a ``tail /dev/zero`` started in a container cgroup until the kernel kills it. The agent watches the
(stand-in) node. After the storm, and after the fault is over, the OOM Events in the namespace are
counted: a new Event counts 1, a ``series`` counts its ``count``; per Pod (``regarding.uid``) that
must equal the kills made in that Pod. ``lost`` = kills never reported, ``dup`` = reports beyond the
kills, ``stray`` = OOM Events on a Pod of no storm. ``recover`` = seconds from the end of the fault
until every kill was reported.

Rows:
  storm             --storm-kills kills in --storm-seconds over --storm-pods Pods, no fault; p50/p99
                    latency (kernel kill line -> Event on a watch), agent peak RSS and CPU
  agent-sigkill     the agent SIGKILLed mid-storm, restarted 5 s later on the same state directory
  apiserver-60s     kube-apiserver stopped for 60 s mid-storm (hack/envtest stop-/start-apiserver)
  etcd-restart      etcd stopped and started again mid-storm
  state-full-ro     the state directory (a 256 KiB tmpfs) filled to ENOSPC, then remounted read-only
  kmsg-overrun      a printk flood (lines written to /dev/kmsg) overruns the ring under the reader
  cgroup-removed    cgroups created and removed as fast as possible while the agent sweeps them
  op-sigkill, op-peering, op-apiserver
                    the operator's faults with 5,000 Pods: see bench/chaos_operator.py

The printk flood writes into the machine's one kernel ring: other readers of /dev/kmsg on this
machine lose those records too (as on a real node in a printk storm). Run as root with cgroup v1.

    .venv/bin/python bench/chaos.py                          # the README's table
    .venv/bin/python bench/chaos.py --only storm --storm-kills 200 --storm-pods 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from bench_agent import EventWatch, namespace, parse_time, pct, proc_cpu_seconds, proc_status

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "hack"), str(ROOT / "operator")]

import chaos_node  # noqa: E402
from cgroupkit import CgroupKit, _rmdir  # noqa: E402
from chaos_operator import OPERATOR_ROWS, add_arguments, print_operator_table  # noqa: E402
from kube.agentkit import AgentProc, PodScene, ensure_crds, make_scene, rest_for  # noqa: E402
from oomsight.core.events import OOM_REASONS  # noqa: E402
from oomsight.kube.rest import Rest  # noqa: E402

MIB = 1 << 20
LIMIT = 24 * MIB


class Storm:
    """Pods with a container cgroup each, and real OOM kills in them, counted per Pod."""

    def __init__(self, rest: Rest, kit: CgroupKit, pods: int, tag: str) -> None:
        self.rest, self.kit = rest, kit
        self.ns = namespace(rest)
        self.node = f"chaos-{tag}-{uuid.uuid4().hex[:5]}"
        burstable = kit.root / "kubepods" / "burstable"
        if not burstable.exists():
            kit.mkdir(burstable)  # once, before the threads: each would try to create it
        with ThreadPoolExecutor(max_workers=4) as pool:
            self.pods: list[PodScene] = list(
                pool.map(
                    lambda i: make_scene(rest, kit, self.ns, self.node, limit=LIMIT, name=f"{tag}-{i:03d}"),
                    range(pods),
                )
            )
        self.kills: Counter[str] = Counter()
        self.pids: list[tuple[str, int]] = []
        self.failed = 0
        self._lock = threading.Lock()

    def kill(self, scene: PodScene) -> None:
        p = scene.cgroup.run("tail", "/dev/zero")  # reads forever without a newline: grows until killed
        rc = p.wait(timeout=120)
        with self._lock:
            if rc == -signal.SIGKILL:
                self.kills[scene.uid] += 1
                self.pids.append((scene.uid, p.pid))
            else:
                self.failed += 1

    def run(self, kills: int, seconds: float, during: Callable[[float], None] | None = None) -> float:
        """``kills`` kills spread evenly over ``seconds``, round-robin over the Pods; ``during(elapsed)``
        is called about every 0.2 s from another thread (the fault). Returns the storm's wall time."""
        stop = threading.Event()
        t0 = time.monotonic()

        def fault_loop() -> None:
            while not stop.is_set():
                assert during is not None
                during(time.monotonic() - t0)
                stop.wait(0.2)

        th = threading.Thread(target=fault_loop, daemon=True) if during else None
        if th:
            th.start()
        with ThreadPoolExecutor(max_workers=12) as pool:
            for i in range(kills):
                delay = t0 + i * seconds / kills - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                pool.submit(self.kill, self.pods[i % len(self.pods)])
        wall = time.monotonic() - t0
        stop.set()
        if th:
            th.join()
        return wall

    def events(self) -> list[dict[str, Any]] | None:
        resp = self.rest.request("GET", f"/apis/events.k8s.io/v1/namespaces/{self.ns}/events")
        if not resp.ok:
            return None
        return [e for e in resp.body.get("items", []) if e.get("reason") in OOM_REASONS]

    def tally(self) -> dict[str, int] | None:
        events = self.events()
        if events is None:
            return None
        reported: Counter[str] = Counter()
        for e in events:
            reported[(e.get("regarding") or {}).get("uid", "")] += int(
                (e.get("series") or {}).get("count") or 1
            )
        uids = {p.uid for p in self.pods}
        lost = sum(max(0, self.kills[u] - reported[u]) for u in uids)
        dup = sum(max(0, reported[u] - self.kills[u]) for u in uids)
        stray = sum(n for u, n in reported.items() if u not in uids)
        return {
            "kills": sum(self.kills.values()),
            "reported": sum(reported[u] for u in uids),
            "events": len(events),
            "lost": lost,
            "dup": dup,
            "stray": stray,
        }

    def settle(self, since: float, timeout: float) -> tuple[dict[str, int], float | None]:
        """Poll until every kill is reported (or ``timeout``): the tally, and seconds since ``since``."""
        deadline = time.monotonic() + timeout
        last: dict[str, int] | None = None
        while time.monotonic() < deadline:
            t = self.tally()
            if t is not None:
                last = t
                if t["lost"] == 0:
                    recovered = time.monotonic() - since
                    time.sleep(3)  # anything written twice shows up now
                    return self.tally() or t, recovered
            time.sleep(0.5)
        return last or {"kills": sum(self.kills.values()), "reported": 0, "events": 0, "lost": -1, "dup": 0,
                        "stray": 0}, None  # fmt: skip


def agent_for(kubeconfig: str, storm: Storm, state: Path, work: Path, interval: float) -> AgentProc:
    return AgentProc(
        kubeconfig, storm.node, state, interval=interval, log_path=work / f"agent-{storm.node}.log"
    )


def agent_health(agent: AgentProc) -> str:
    errors = [ln for ln in agent.log().splitlines() if "Traceback" in ln or " ERROR " in ln]
    return f"{len(errors)} error lines" if errors else "clean log"


# ------------------------------------------------------------------------------------------- rows


def row_storm(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    rest, kit, work = ctx["rest"], ctx["kit"], ctx["work"]
    storm = Storm(rest, kit, args.storm_pods, "storm")
    agent = agent_for(ctx["kubeconfig"], storm, work / "state-storm", work, 10.0).start()
    watch = EventWatch(rest, storm.ns)
    watch.start()
    watch.ready.wait(10)
    time.sleep(2)
    assert agent.proc is not None
    pid = agent.proc.pid
    c0 = proc_cpu_seconds(pid)
    wall = storm.run(args.storm_kills, args.storm_seconds)
    end = time.monotonic()
    tally, recover = storm.settle(end, 180)
    cpu = proc_cpu_seconds(pid) - c0
    lat = [
        seen - parse_time((obj.get("series") or {}).get("lastObservedTime") or obj["eventTime"])
        for seen, obj in list(watch.seen.values())
        if obj.get("reason", "") in OOM_REASONS
    ]
    note = (
        f"{tally['kills']} kills in {wall:.0f} s over {args.storm_pods} Pods -> {tally['events']} Events; "
        f"latency p50 {pct(lat, 0.5) * 1000:.0f} ms p99 {pct(lat, 0.99) * 1000:.0f} ms ({len(lat)} writes); "
        f"agent peak RSS {proc_status(pid, 'VmHWM') / MIB:.0f} MiB, CPU {cpu:.1f} s "
        f"({cpu / (wall + (recover or 0)) * 100:.0f}% of a core); {agent_health(agent)}"
    )
    agent.stop()
    return {
        "row": "storm",
        "fault": "none",
        **tally,
        "recover_s": recover,
        "note": note,
        "failed": storm.failed,
    }


def fault_row(
    ctx: dict[str, Any],
    args: argparse.Namespace,
    name: str,
    fault: str,
    inject: Callable[[Storm, AgentProc, float], None],
    fault_end: Callable[[], float],
    interval: float = 10.0,
    state: Path | None = None,
    seconds: float | None = None,
) -> dict[str, Any]:
    rest, kit, work = ctx["rest"], ctx["kit"], ctx["work"]
    storm = Storm(rest, kit, args.fault_pods, name)
    agent = agent_for(ctx["kubeconfig"], storm, state or work / f"state-{name}", work, interval).start()
    ctx["agent"] = agent
    time.sleep(2)
    storm.run(args.fault_kills, seconds or args.fault_seconds, lambda el: inject(storm, agent, el))
    ended = fault_end() or time.monotonic()
    tally, recover = storm.settle(ended, args.settle)
    agent = ctx["agent"]  # the fault may have replaced it
    out = {"row": name, "fault": fault, **tally, "recover_s": recover, "failed": storm.failed}
    out["note"] = agent_health(agent) + ("" if agent.proc and agent.proc.poll() is None else "; agent exited")
    with contextlib.suppress(Exception):
        agent.stop()
    agent.kill()
    return out


class Once:
    """Run each step once when the storm's elapsed time passes its mark; remember when the last ran."""

    def __init__(self, steps: list[tuple[float, Callable[[], None]]]) -> None:
        self.steps = sorted(steps, key=lambda s: s[0])
        self.done = 0
        self.ended = 0.0

    def __call__(self, elapsed: float) -> None:
        while self.done < len(self.steps) and elapsed >= self.steps[self.done][0]:
            self.steps[self.done][1]()
            self.done += 1
            self.ended = time.monotonic()

    def finish(self) -> float:
        self(1e9)
        return self.ended


def row_agent_sigkill(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    state = ctx["work"] / "state-sigkill"

    def kill_it() -> None:
        ctx["agent"].proc.send_signal(signal.SIGKILL)
        ctx["agent"].proc.wait()

    def restart() -> None:
        old: AgentProc = ctx["agent"]
        new = AgentProc(old.kubeconfig, old.node, old.state_dir, interval=old.interval, log_path=old.log_path)
        ctx["agent"] = new.start()

    once = Once([(args.fault_seconds * 0.4, kill_it), (args.fault_seconds * 0.4 + 5, restart)])
    return fault_row(
        ctx, args, "agent-sigkill", "agent SIGKILLed mid-storm, restarted after 5 s (same state dir)",
        lambda s, a, el: once(el), once.finish, state=state,
    )  # fmt: skip


def row_apiserver(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    cp = ctx["cp"]
    down = args.outage
    once = Once([(2.0, cp.stop_apiserver), (2.0 + down, cp.start_apiserver)])
    return fault_row(
        ctx, args, "apiserver-60s", f"kube-apiserver stopped for {down:g} s mid-storm",
        lambda s, a, el: once(el), once.finish, seconds=max(args.fault_seconds, down + 10),
    )  # fmt: skip


def row_etcd(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    cp = ctx["cp"]

    def restart() -> None:
        cp._etcd.stop(str(cp.binary("etcd")), cp.stop_timeout)
        time.sleep(2)
        cp._start_etcd()

    once = Once([(args.fault_seconds * 0.4, restart)])
    return fault_row(
        ctx, args, "etcd-restart", "etcd stopped mid-storm, started again 2 s later",
        lambda s, a, el: once(el), once.finish,
    )  # fmt: skip


def row_state_full(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    mnt = ctx["work"] / "state-tmpfs"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "oomsight-chaos", str(mnt)], check=True)
    filler = mnt / "filler"

    def fill() -> None:
        with contextlib.suppress(OSError), open(filler, "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()

    def read_only() -> None:
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)

    def clear() -> None:
        subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)
        filler.unlink(missing_ok=True)

    third = args.fault_seconds / 3
    once = Once([(third * 0.5, fill), (third * 1.5, read_only), (third * 2.5, clear)])
    try:
        return fault_row(
            ctx, args, "state-full-ro", "state dir (256 KiB tmpfs) full, then read-only, then cleared",
            lambda s, a, el: once(el), once.finish, state=mnt / "state",
        )  # fmt: skip
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def row_kmsg_overrun(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    line = ("oomsight-chaos printk flood " + "x" * 900 + "\n").encode()
    flood_bytes = args.flood_mib * MIB

    def flood() -> None:
        fd = os.open("/dev/kmsg", os.O_WRONLY)
        try:
            for _ in range(flood_bytes // len(line)):
                os.write(fd, line)
        finally:
            os.close(fd)

    once = Once([(args.fault_seconds * 0.3, flood)])
    return fault_row(
        ctx, args, "kmsg-overrun", f"{args.flood_mib} MiB of printk written to /dev/kmsg mid-storm",
        lambda s, a, el: once(el), once.finish,
    )  # fmt: skip


def row_cgroup_removed(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
    kit: CgroupKit = ctx["kit"]
    made = [0]

    def churn(storm: Storm, agent: AgentProc, elapsed: float) -> None:
        # Cgroups appear and vanish under the sweep (interval 1 s), a few dozen per call.
        for _ in range(20):
            pod, _uid = kit.pod(qos="besteffort")
            cg, _cid = kit.container(pod, limit=LIMIT)
            made[0] += 1
            _rmdir(cg.path)
            _rmdir(pod.path)

    out = fault_row(
        ctx, args, "cgroup-removed", "container+pod cgroups created and removed ~100/s under a 1 s sweep",
        churn, time.monotonic, interval=1.0,
    )  # fmt: skip
    out["fault"] = f"{made[0]} container+pod cgroups created and removed under a 1 s sweep"
    return out


ROWS: dict[str, Callable[[dict[str, Any], argparse.Namespace], dict[str, Any]]] = {
    "storm": row_storm,
    "agent-sigkill": row_agent_sigkill,
    "apiserver-60s": row_apiserver,
    "etcd-restart": row_etcd,
    "state-full-ro": row_state_full,
    "kmsg-overrun": row_kmsg_overrun,
    "cgroup-removed": row_cgroup_removed,
    **OPERATOR_ROWS,  # bench/chaos_operator.py: op-sigkill, op-peering, op-apiserver
    **chaos_node.ROWS,  # the real node's faults (hack/envtest up --node): bench/chaos_node.py
}


def print_table(results: list[dict[str, Any]]) -> None:
    print_operator_table(results)
    results = [r for r in results if "writes" not in r]
    if not results:
        return
    print()
    print(f"| {'what was tried':70} | kills | reported | lost | dup | stray | recover |")
    print(f"|{'-' * 72}|------:|---------:|-----:|----:|------:|--------:|")
    for r in results:
        rec = "-" if r.get("recover_s") is None else f"{r['recover_s']:.1f} s"
        what = r["row"] + ": " + r["fault"]
        print(
            f"| {what:70} | {r['kills']:5} | {r['reported']:8} | {r['lost']:4} | {r['dup']:3} | "
            f"{r['stray']:5} | {rec:>7} |"
        )
    print()
    for r in results:
        if r.get("note"):
            print(f"{r['row']}: {r['note']}")
        if r.get("failed"):
            print(f"{r['row']}: {r['failed']} kill attempts ended otherwise than by SIGKILL (not counted)")
        if r.get("error"):
            print(f"{r['row']}: ERROR {r['error']}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", help="comma-separated rows: " + ",".join(ROWS))
    ap.add_argument("--storm-kills", type=int, default=1000)
    ap.add_argument("--storm-pods", type=int, default=100)
    ap.add_argument("--storm-seconds", type=float, default=60.0)
    ap.add_argument("--fault-kills", type=int, default=100)
    ap.add_argument("--fault-pods", type=int, default=20)
    ap.add_argument("--fault-seconds", type=float, default=20.0)
    ap.add_argument("--outage", type=float, default=60.0, help="seconds the API server is down")
    ap.add_argument("--flood-mib", type=int, default=8)
    ap.add_argument("--settle", type=float, default=180.0, help="seconds to wait for every kill's Event")
    ap.add_argument("--json", help="write the rows here")
    add_arguments(ap)
    ap.add_argument("--keep-logs", help="copy the agents' logs (and the control plane's) to this directory")
    chaos_node.add_arguments(ap)
    args = ap.parse_args()
    rows = [r.strip() for r in (args.only or ",".join(ROWS)).split(",") if r.strip()]
    unknown = [r for r in rows if r not in ROWS]
    if unknown:
        print(f"chaos: unknown row(s) {', '.join(unknown)}; choose from {', '.join(ROWS)}")
        return 2
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-chaos-") as tmp:
        work = Path(tmp)
        from envtest_lib import ControlPlane

        cp = ControlPlane(work / "cp").start()
        kit = CgroupKit()
        ctx: dict[str, Any] = {"cp": cp, "kubeconfig": str(cp.kubeconfig), "work": work, "kit": kit}
        stack = contextlib.ExitStack()
        try:
            ctx["rest"] = rest_for(cp.kubeconfig)
            ensure_crds(ctx["rest"])
            stack.enter_context(chaos_node.real_node(ctx, args, rows))  # down again whatever happens
            for name in rows:
                print(f"chaos: {name} ...", flush=True)
                try:
                    results.append(ROWS[name](ctx, args))
                except Exception as err:  # one row failing is a row of the table, not the end of the run
                    error = f"{type(err).__name__}: {err}"
                    results.append(
                        {"row": name, "fault": "(failed to run)", "kills": 0, "reported": 0, "lost": -1,
                         "dup": -1, "stray": 0, "error": error}
                    )  # fmt: skip
                    with contextlib.suppress(Exception):
                        if not cp.apiserver_running():
                            cp.start_apiserver()
                with contextlib.suppress(Exception):
                    ctx.get("agent") and ctx["agent"].kill()
                print(f"chaos: {name}: {json.dumps({k: v for k, v in results[-1].items() if k != 'note'})}",
                      flush=True)  # fmt: skip
        finally:
            stack.close()
            kit.cleanup()
            cp.stop()
            if args.keep_logs:
                keep = Path(args.keep_logs)
                keep.mkdir(parents=True, exist_ok=True)
                for log in work.rglob("*.log"):
                    shutil.copy(log, keep / f"{log.parent.name}-{log.name}")
    print_table(results)
    print(json.dumps({"kernel": os.uname().release, "rows": results}))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all(r["lost"] == 0 and r["dup"] == 0 and r["stray"] == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
