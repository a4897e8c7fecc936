"""Soak ``oomsight agent``: an hour of container churn and periodic real OOM kills; does it leak?

``--containers`` Pods (kubelet-style cgroups on the real v1 memory controller, a sleeping process in
each, the Pod on the real kube-apiserver) are kept alive while the oldest one is deleted and a new
one created every ``--churn`` seconds, so every container lives about ``containers × churn`` seconds.
Every ``--kill-every`` seconds one of the younger half is OOM-killed for real (memhog grows until the
kernel kills it). The agent's RSS (VmRSS, with RssAnon and RssFile) and open file descriptors
(``/proc/<pid>/fd``) are sampled every ``--sample`` seconds; after ``--warmup`` seconds a least-squares
line is fitted to each and its slope printed in MiB per hour and fds per hour. The fds are split: the
agent keeps each swept container cgroup's files open between sweeps, and it sweeps every container
cgroup on the node (on a shared machine, others' too), so that part follows the node's cgroup count;
the rest (sockets, kmsg, state files) is what would show a leak. RSS is also fitted over the second
half alone and over the samples after the node's peak cgroup count (a high-water mark, not growth).
At the end the OOM Events in the namespace (new Events plus ``series`` counts) are compared with the
kills made, and the deleted pods' ``oomsight_oom_kills_total`` series left on /metrics are counted.

    .venv/bin/python bench/soak.py --minutes 60            # the README's figures
    .venv/bin/python bench/soak.py --minutes 3 --warmup 30 --sample 10    # a smoke run

Runs its own control plane (hack/envtest) unless ``--kubeconfig`` is given. Needs root and cgroup v1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import time
import uuid
from collections import deque
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from bench_agent import namespace, proc_cpu_seconds, proc_status
from nodekit import control_plane

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "hack"), str(ROOT / "operator")]

from cgroupkit import CgroupKit, _rmdir  # noqa: E402
from kube.agentkit import AgentProc, PodScene, ensure_crds, make_scene, rest_for, series_total  # noqa: E402
from oomsight.core.events import OOM_REASONS  # noqa: E402
from oomsight.kube.rest import Rest  # noqa: E402

MIB = 1 << 20
CGROUP_MOUNT = "/sys/fs/cgroup/"


class Churn:
    """A fixed-size pool of live scenes: ``replace_oldest`` deletes one and creates a new one."""

    def __init__(self, rest: Rest, kit: CgroupKit, ns: str, node: str) -> None:
        self.rest, self.kit, self.ns, self.node = rest, kit, ns, node
        self.live: deque[PodScene] = deque()
        self.created = self.deleted = 0

    def add(self) -> PodScene:
        scene = make_scene(self.rest, self.kit, self.ns, self.node, name=f"soak-{self.created:06d}")
        scene.procs.append(scene.cgroup.run("sleep", "100000"))  # type: ignore[arg-type]
        self.live.append(scene)
        self.created += 1
        return scene

    def remove(self, scene: PodScene) -> None:
        scene.stop_procs()
        for pid in scene.cgroup.procs():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        _rmdir(scene.cgroup.path)
        _rmdir(scene.pod_cgroup.path)
        self.rest.request(
            "DELETE", f"/api/v1/namespaces/{self.ns}/pods/{scene.name}", {"gracePeriodSeconds": 0}
        )
        self.deleted += 1

    def replace_oldest(self) -> None:
        self.remove(self.live.popleft())
        self.add()

    def young(self) -> PodScene:
        half = list(self.live)[len(self.live) // 2 :]
        return random.choice(half)


def slope_per_hour(samples: list[tuple[float, float]]) -> float:
    if len(samples) < 3:
        return float("nan")
    xs = [t / 3600 for t, _ in samples]
    ys = [v for _, v in samples]
    return statistics.linear_regression(xs, ys).slope


def fd_split(pid: int, own_root: str) -> dict[str, int]:
    """The agent's open fds, split: cgroup files (kept open between sweeps by design, about 5 per
    container cgroup on the node, this soak's and everyone else's, plus one per ancestor's limit)
    and the rest (sockets, the kmsg fd, state files). Only the rest says whether fds leak."""
    cgroup = other = 0
    held: set[str] = set()
    for name in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{name}")
        except OSError:
            continue  # closed meanwhile
        if target.startswith(CGROUP_MOUNT):
            cgroup += 1
            held.add(os.path.dirname(target))
        else:
            other += 1
    own = sum(1 for d in held if d.startswith(own_root))
    return {"fds": cgroup + other, "fds_cgroup": cgroup, "fds_other": other, "cgroups_held": len(held),
            "cgroups_held_own": own}


def soak(rest: Rest, kubeconfig: str, args: argparse.Namespace, work: Path) -> dict:
    ns = namespace(rest)
    node = f"soak-node-{uuid.uuid4().hex[:6]}"
    kit = CgroupKit()
    agent = AgentProc(kubeconfig, node, work / "state", interval=args.interval, log_path=work / "agent.log")
    churn = Churn(rest, kit, ns, node)
    samples: list[dict] = []
    kills = 0
    try:
        t0 = time.monotonic()
        for _ in range(args.containers):
            churn.add()
        print(f"soak: {args.containers} pods + cgroups + processes set up in {time.monotonic() - t0:.0f} s")
        agent.start()
        agent.extra = ()
        assert agent.proc is not None
        pid = agent.proc.pid
        start = time.monotonic()
        end = start + args.minutes * 60
        next_churn = next_kill = next_sample = start
        cpu0 = proc_cpu_seconds(pid)
        while time.monotonic() < end:
            now = time.monotonic()
            if now >= next_sample:
                s = {
                    "t": round(now - start, 1),
                    "rss_mib": proc_status(pid, "VmRSS") / MIB,
                    "rss_anon_mib": proc_status(pid, "RssAnon") / MIB,
                    "rss_file_mib": proc_status(pid, "RssFile") / MIB,
                    **fd_split(pid, str(kit.root)),
                    "cpu_s": proc_cpu_seconds(pid) - cpu0,
                    "created": churn.created,
                    "kills": kills,
                }
                samples.append(s)
                print(
                    f"soak: t={s['t']:6.0f}s rss={s['rss_mib']:.1f} MiB (anon {s['rss_anon_mib']:.1f}, "
                    f"file {s['rss_file_mib']:.1f}) fds={s['fds']} (cgroup files {s['fds_cgroup']} in "
                    f"{s['cgroups_held']} cgroups, {s['cgroups_held_own']} of them this soak's; "
                    f"other {s['fds_other']}) cpu={s['cpu_s']:.1f}s containers_created={s['created']} "
                    f"kills={kills}",
                    flush=True,
                )
                next_sample += args.sample
            if now >= next_kill:
                churn.young().oom_kill_main()
                kills += 1
                next_kill += args.kill_every
            if now >= next_churn:
                churn.replace_oldest()
                next_churn += args.churn
            time.sleep(max(0.0, min(next_sample, next_kill, next_churn) - time.monotonic()))
        if agent.proc.poll() is not None:
            raise SystemExit(f"soak: the agent exited with {agent.proc.returncode}:\n{agent.log()[-3000:]}")
        time.sleep(max(5.0, 2 * args.interval))  # the last kill's Event is written
        resp = rest.request("GET", f"/apis/events.k8s.io/v1/namespaces/{ns}/events")
        events = [e for e in resp.body.get("items", []) if e.get("reason") in OOM_REASONS]
        reported = series_total(events)
        # Every kill is in a pod that is deleted a few minutes later: the deleted pods' series must
        # leave /metrics (after the agent's --metrics-grace, 300 s by default).
        live_names = {sc.name for sc in churn.live}
        kill_series = [
            smp.labels.get("pod", "")
            for fam in text_string_to_metric_families(agent.get("/metrics"))
            for smp in fam.samples
            if smp.name == "oomsight_oom_kills_total"
        ]
        gone_series = sum(1 for pod in kill_series if pod not in live_names)
        steady = [s for s in samples if s["t"] >= args.warmup]
        rss_slope = slope_per_hour([(s["t"], s["rss_mib"]) for s in steady])
        # A one-time step early on (code pages faulted in, allocator arenas) against steady growth:
        # the same line fitted to the second half of the run alone.
        late = [s for s in samples if s["t"] >= samples[-1]["t"] / 2]
        rss_slope_late = slope_per_hour([(s["t"], s["rss_mib"]) for s in late])
        anon_slope = slope_per_hour([(s["t"], s["rss_anon_mib"]) for s in steady])
        # The agent reads every container cgroup on the node, not only this soak's: others' storms on a
        # shared machine raise its RSS to a high-water mark that stays (freed memory is kept by the
        # allocators). The line fitted to the samples after the node's peak count of cgroups alone:
        peak_i = max(range(len(samples)), key=lambda i: (samples[i]["cgroups_held"], i))
        after_peak = [s for s in samples[peak_i + 1 :] if s["t"] >= args.warmup]
        peak_slope = slope_per_hour([(s["t"], s["rss_mib"]) for s in after_peak])
        fd_slope = slope_per_hour([(s["t"], s["fds"]) for s in steady])
        other_fd_slope = slope_per_hour([(s["t"], s["fds_other"]) for s in steady])
        last = samples[-1]
        result = {
            "minutes": args.minutes,
            "containers_live": args.containers,
            "containers_created": churn.created,
            "containers_deleted": churn.deleted,
            "kills": kills,
            "kills_reported": reported,
            "kill_series_on_metrics": len(kill_series),
            "kill_series_of_deleted_pods": gone_series,
            "samples": len(samples),
            "samples_fitted": len(steady),
            "rss_mib_first": round(steady[0]["rss_mib"], 1) if steady else None,
            "rss_mib_last": round(last["rss_mib"], 1),
            "rss_mib_peak": round(proc_status(pid, "VmHWM") / MIB, 1),
            "rss_slope_mib_per_h": round(rss_slope, 2),
            "rss_slope_late_half_mib_per_h": round(rss_slope_late, 2),
            "rss_anon_slope_mib_per_h": round(anon_slope, 2),
            "node_cgroups_peak": samples[peak_i]["cgroups_held"],
            "node_cgroups_peak_t": samples[peak_i]["t"],
            "rss_slope_after_node_peak_mib_per_h": round(peak_slope, 2) if len(after_peak) >= 10 else None,
            "samples_after_node_peak": len(after_peak),
            "fds_first": steady[0]["fds"] if steady else None,
            "fds_last": last["fds"],
            "fd_slope_per_h": round(fd_slope, 2),
            "fds_other_first": steady[0]["fds_other"] if steady else None,
            "fds_other_last": last["fds_other"],
            "fds_other_slope_per_h": round(other_fd_slope, 2),
            "cgroups_held_last": last["cgroups_held"],
            "cgroups_held_own_last": last["cgroups_held_own"],
            "cpu_percent": round(last["cpu_s"] / max(last["t"], 1) * 100, 2),
            "kernel": os.uname().release,
        }
        print(
            f"soak: {args.minutes:g} min, {churn.created} containers created / {churn.deleted} deleted "
            f"({args.containers} live), {kills} kills -> {reported} reported; kill series on /metrics "
            f"{len(kill_series)}, {gone_series} of them of deleted pods; "
            f"RSS {result['rss_mib_first']} -> {result['rss_mib_last']} MiB, slope {rss_slope:+.2f} MiB/h "
            f"(anon {anon_slope:+.2f}; second half alone {rss_slope_late:+.2f}; after the node's peak of "
            f"{samples[peak_i]['cgroups_held']} cgroups at t={samples[peak_i]['t']:.0f}s "
            f"{peak_slope:+.2f} over {len(after_peak)} samples); "
            f"fds {result['fds_first']} -> {result['fds_last']}, slope {fd_slope:+.2f} fds/h, of which "
            f"cgroup files held open for the node's {last['cgroups_held']} swept cgroups "
            f"({last['cgroups_held_own']} this soak's); other fds {result['fds_other_first']} -> "
            f"{result['fds_other_last']}, slope {other_fd_slope:+.2f} fds/h; "
            f"CPU {result['cpu_percent']}% of one core"
        )
        agent.stop()
        return {"result": result, "samples": samples}
    finally:
        agent.kill()
        for scene in churn.live:
            scene.stop_procs()
        kit.cleanup()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kubeconfig", help="use this control plane instead of starting one")
    ap.add_argument("--minutes", type=float, default=60.0)
    ap.add_argument("--containers", type=int, default=200)
    ap.add_argument("--churn", type=float, default=3.0, help="seconds between one delete+create")
    ap.add_argument("--kill-every", type=float, default=30.0)
    ap.add_argument("--sample", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=300.0, help="seconds left out of the fit")
    ap.add_argument("--interval", type=float, default=10.0, help="the agent's sweep interval")
    ap.add_argument("--json", help="write the samples and the result here")
    args = ap.parse_args()
    with control_plane(args.kubeconfig, "bench-soak-") as (work, kubeconfig):
        rest = rest_for(kubeconfig)
        ensure_crds(rest)
        out = soak(rest, kubeconfig, args, work)
    print(json.dumps(out["result"]))
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
