"""Side by side: oomsight's agent, node-problem-detector, standalone cAdvisor and the kubelet, in one run.

All tools run at once, as children of this process, on one set of real kubelet-layout cgroups
(cgroup v1, cgroupfs driver: ``kubepods/burstable/pod<uid>/<container-id>``) and see the same real
OOM kills. Peers are pinned releases built from source into ``~/.cache/oomsight/peers/`` by
``bench/peerbuild.py`` (node-problem-detector v1.36.0, cAdvisor v0.60.5); the control plane for the
agent's Events is ``hack/envtest``'s real kube-apiserver. A tool that cannot run is reported as
``{"error": "..."}`` (one line on stderr says why), never left out.

1. Detection: ``--kills`` real OOM kills of each kind, each kind in its own Pod:
   ``main`` (the container's process), ``child`` (a child; the container lives on), ``pod`` (the pod
   cgroup's limit, below the container's), ``node`` (the ``kubepods`` limit, node allocatable), then
   a ``storm``: ``--storm`` kills in about 10 s from 10 Pods at once (``tests/progs/oomloop.py``), past
   the kernel's 10-reports-per-5-s limit, so most kill lines come without their report. The truth
   is this bench's own /dev/kmsg reader: every kill line whose pid is one of the processes it grew.
   Per tool: kills seen, attributed to the right Pod and container, child kills seen, where the
   report lands, and the latency from the kernel's kill line (kmsg timestamp, corrected for the
   local_clock/CLOCK_MONOTONIC skew) to the moment this bench, as a client, sees the report:
   oomsight's Event on a watch, cAdvisor's OOM event on ``/api/v1.3/events?stream=true`` (its
   ``container_oom_events_total`` is bumped in the same step), NPD's ``New status generated`` log
   line (its ``problem_counter{reason="OOMKilling"}`` is bumped in the same step; a Node Event too
   when its Kubernetes exporter is on, which this bench leaves off).
2. Cost: for each of ``--sizes`` containers (Pods with one container cgroup each in memory, cpu,
   cpuacct and pids, one sleeping process in it) and the same 10 s interval (the agent's
   ``--interval``, cAdvisor's ``--housekeeping_interval``), CPU time of each tool's process (its
   threads' scheduler time, in ns) over ``--measure`` s after ``--warmup`` s, as % of one core, and
   RSS: steady (VmRSS at the end) and peak (VmHWM, reset through ``clear_refs`` before the
   containers of that size are added).
3. Accuracy: working set per container, oomsight's ``oomsight_container_working_set_bytes`` against
   cAdvisor's ``container_memory_working_set_bytes``, on containers holding 4-40 MiB.
4. The kubelet, last (its node would weigh on the cost windows): it reports only on containers it
   runs, so it gets its own kills on the real node (``hack/envtest up --node``, brought up and down
   here, or ``--node-dir`` for one already up; while another run holds the machine's one node this
   waits up to ``--node-wait`` s): ``--kills`` Pods of each kind, ``main`` and ``child``. Its report
   is the Pod status ``OOMKilled``, timed when a watch shows it; a killed child is never in it.

Needs root, the cgroup v1 memory controller and /dev/kmsg. The whole run takes ~10 min with the
defaults (peers and the node's binaries built already; first builds: NPD ~2 min, cAdvisor ~5 min on a
busy 2-core machine; the node's project image ~1 min for each new tree).

    .venv/bin/python bench/peers.py [--kills 5] [--storm 100] [--sizes 50,200,1000] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "hack"), str(ROOT / "operator"), str(ROOT / "bench")]

import nodekit  # noqa: E402
import peerbuild  # noqa: E402
from bench_agent import EventWatch, namespace, pct, proc_cpu_seconds, proc_status  # noqa: E402
from bench_live_latency import measure_skew  # noqa: E402
from cgroupkit import MIB, PROGS, Cgroup, CgroupKit, require_cgroup_v1  # noqa: E402
from kube.agentkit import AgentProc, PodScene, ensure_crds, free_port, make_scene, rest_for  # noqa: E402
from oomsight.core.events import OOM_REASONS  # noqa: E402
from oomsight.core.kmsg import Record  # noqa: E402
from oomsight.host.kmsg import KmsgReader  # noqa: E402
from oomsight.kube.rest import Rest  # noqa: E402

INTERVAL = 10.0
KINDS = ("main", "child", "pod", "node", "storm")
CONTROLLERS = ("cpu", "cpuacct", "pids")  # besides memory, as a kubelet's cgroupfs driver creates them
KILL_LINE = re.compile(r"Killed process (\d+) \(")
HEADER_LINE = re.compile(r"^oom-kill:.*\btask_memcg=([^,]*),.*,pid=(\d+),")
NPD_KILL = re.compile(r"Reason:OOMKilling Message:[^}]*?Killed process (\d+) \(")


def say(msg: str) -> None:
    print(f"peers: {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------------ ground truth


class KernelLog(threading.Thread):
    """This bench's own /dev/kmsg reader: each kill line's pid -> its kmsg time (CLOCK_MONOTONIC s)."""

    def __init__(self, skew: float) -> None:
        super().__init__(daemon=True)
        self.skew = skew
        self.kills: dict[int, float] = {}
        self.headers: set[int] = set()
        self.memcgs: dict[int, str] = {}
        """Kill pid -> the victim's memory cgroup, from its report (when the kernel printed one)."""
        self.gaps = 0
        self.records = 0
        self.kill_lines = 0
        self.stop = threading.Event()
        self.reader = KmsgReader(start="now")

    def run(self) -> None:
        with self.reader:
            while not self.stop.is_set():
                self.reader.wait(0.5)
                for rec in self.reader.read_available():
                    if not isinstance(rec, Record):
                        self.gaps += 1
                        continue
                    self.records += 1
                    if m := KILL_LINE.search(rec.text):
                        self.kill_lines += 1
                        self.kills.setdefault(int(m.group(1)), (rec.usec or 0) / 1e6 + self.skew)
                    elif m := HEADER_LINE.search(rec.text):
                        self.headers.add(int(m.group(2)))
                        self.memcgs[int(m.group(2))] = m.group(1)


@dataclass
class Kill:
    kind: str
    scene: PodScene
    pid: int


# ------------------------------------------------------------------------------------ the peers


class Npd:
    """node-problem-detector, standalone (no API server), its kernel monitor on /dev/kmsg."""

    def __init__(self, binary: Path, node: str, work: Path) -> None:
        self.config = binary.parent / "src" / "config" / "kernel-monitor.json"
        self.metrics_port = free_port()
        self.seen: dict[int, float] = {}
        self.tail: list[str] = []
        self.proc = subprocess.Popen(
            [
                str(binary),
                f"--config.system-log-monitor={self.config}",
                "--enable-k8s-exporter=false",
                f"--hostname-override={node}",
                "--address=127.0.0.1",
                f"--port={free_port()}",
                "--prometheus-address=127.0.0.1",
                f"--prometheus-port={self.metrics_port}",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        wait_http(
            f"http://127.0.0.1:{self.metrics_port}/metrics", self.proc, "node-problem-detector", self.tail
        )

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            now = time.monotonic()
            self.tail = [*self.tail[-30:], line.rstrip()]
            for m in NPD_KILL.finditer(line):
                self.seen.setdefault(int(m.group(1)), now)

    def oom_counter(self) -> float:
        text = http_get(f"http://127.0.0.1:{self.metrics_port}/metrics")
        return sum(
            float(ln.rsplit(None, 1)[1])
            for ln in text.splitlines()
            if ln.startswith("problem_counter") and 'reason="OOMKilling"' in ln
        )


class Cadvisor:
    """Standalone cAdvisor on loopback, collecting the kubepods trees (what the agent sweeps)."""

    def __init__(self, binary: Path, prefixes: list[str], work: Path) -> None:
        self.port = free_port()
        self.log = work / "cadvisor.log"
        self.events: list[tuple[float, str]] = []  # (monotonic receipt, container name) of OOM events
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    str(binary),
                    "--listen_ip=127.0.0.1",
                    f"--port={self.port}",
                    f"--housekeeping_interval={INTERVAL:g}s",
                    "--docker_only=true",  # with the whitelist: only the kubepods trees (and "/")
                    "--raw_cgroup_prefix_whitelist=" + ",".join(prefixes),
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        wait_http(f"http://127.0.0.1:{self.port}/healthz", self.proc, "cAdvisor", None, self.log)
        threading.Thread(target=self._stream, daemon=True).start()

    def _stream(self) -> None:
        url = f"http://127.0.0.1:{self.port}/api/v1.3/events?oom_events=true&stream=true&subcontainers=true"
        with contextlib.suppress(Exception), urllib.request.urlopen(url, timeout=3600) as resp:
            decoder = json.JSONDecoder()
            buf = ""
            while chunk := resp.read1(65536).decode():
                buf += chunk
                while buf.strip():
                    try:
                        obj, end = decoder.raw_decode(buf.lstrip())
                    except ValueError:
                        break
                    buf = buf.lstrip()[end:]
                    self.events.append((time.monotonic(), obj.get("container_name", "")))

    def metrics(self) -> str:
        return http_get(f"http://127.0.0.1:{self.port}/metrics", timeout=60)


def http_get(url: str, timeout: float = 10) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return str(r.read().decode())


def wait_http(
    url: str, proc: subprocess.Popen[Any], what: str, tail: list[str] | None, log: Path | None = None
) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            last = tail[-3:] if tail is not None else (log.read_text().splitlines()[-3:] if log else [])
            raise RuntimeError(f"{what} exited with {proc.returncode}: {' | '.join(last)}")
        with contextlib.suppress(OSError):
            http_get(url, timeout=2)
            return
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {url} within 60 s")


def stop(proc: subprocess.Popen[Any] | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# ------------------------------------------------------------------------------------ cgroups


class Mirror:
    """The cpu, cpuacct and pids twins of memory cgroups (the kubelet creates a cgroup in each)."""

    def __init__(self) -> None:
        self.made: list[Path] = []
        self.lock = threading.Lock()

    def twins(self, cg: Cgroup) -> list[Path]:
        rel = cg.path.relative_to(cg.mount)
        paths = [cg.mount.parent / c / rel for c in CONTROLLERS if (cg.mount.parent / c).is_dir()]
        for p in paths:
            missing = [q for q in (p, *p.parents) if not q.exists()][::-1]
            for q in missing:
                q.mkdir(exist_ok=True)
                with self.lock:
                    self.made.append(q)
        return paths

    def run(self, cg: Cgroup, *argv: str, stdout: int = subprocess.DEVNULL) -> subprocess.Popen[str]:
        """``argv`` in ``cg`` and its twins (joined before exec)."""
        joins = " && ".join(f'echo $$ > "{p}/cgroup.procs"' for p in [cg.path, *self.twins(cg)])
        return subprocess.Popen(
            ["sh", "-c", joins + ' && exec "$@"', "sh", *argv],
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def cleanup(self) -> None:
        for p in sorted(set(self.made), key=lambda p: -len(p.parts)):
            for _ in range(50):
                try:
                    p.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.05)


# ------------------------------------------------------------------------------------ detection


NICE = ("nice", "-n", "19")
"""The processes that get killed run at the lowest priority: the bench measures the tools, not how
a saturated 2-core machine schedules them (the storm alone would take all of it)."""


def in_cgroup(cg: Cgroup, *argv: str) -> subprocess.Popen[str]:
    """``nice -n 19 argv`` inside ``cg`` (joined before exec; the pid is the program's), stdout piped."""
    script = f'echo $$ > "{cg.path}/cgroup.procs" && exec "$@"'
    return subprocess.Popen(["sh", "-c", script, "sh", *NICE, *argv], stdout=subprocess.PIPE, text=True)


def grow_until_killed(scene: PodScene) -> int:
    """memhog grows in the container until the kernel kills it; its pid."""
    p = in_cgroup(scene.cgroup, sys.executable, str(PROGS / "memhog.py"), "--grow-anon-mib", "8")
    p.communicate(timeout=60)
    return p.pid


def child_killed(scene: PodScene) -> int:
    """memhog's child grows until the kernel kills it; the parent (the container) lives on. Its pid."""
    p = in_cgroup(
        scene.cgroup, sys.executable, str(PROGS / "memhog.py"),
        "--children", "1", "--child-grow-mib", "8", "--child-oom-score-adj", "1000",
    )  # fmt: skip
    scene.procs.append(p)
    assert p.stdout is not None
    child = int(p.stdout.readline().split()[2])  # READY <parent> <child>
    deadline = time.monotonic() + 60
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        with contextlib.suppress(OSError, IndexError):
            if Path(f"/proc/{child}/stat").read_text().split(") ", 1)[1].startswith("Z"):
                break
        time.sleep(0.01)
    return child


def make_kills(
    rest: Rest, kit: CgroupKit, node_kit: CgroupKit, ns: str, node: str, n: int, storm: int, kernel: KernelLog
) -> list[Kill]:
    kills: list[Kill] = []
    scenes = {
        # main and child: exactly the kubelet's layout (pod limit = the container's, a pause-like
        # process in the sandbox), so the kernel hits the pod cgroup as it does on a real node
        kind: make_scene(
            rest,
            kit if kind != "node" else node_kit,
            ns,
            node,
            name=f"oom-{kind}",
            kubelet=kind in ("main", "child"),
        )
        for kind in ("main", "child", "pod", "node")
    }
    scenes["pod"].pod_cgroup.set_limit(48 * MIB)  # below the container's 64 MiB: the pod's limit is hit
    node_kit.kubepods.set_limit(48 * MIB)  # node allocatable
    for kind in ("main", "child", "pod", "node"):
        scene = scenes[kind]
        for _ in range(n):
            pid = child_killed(scene) if kind == "child" else grow_until_killed(scene)
            kills.append(Kill(kind, scene, pid))
            time.sleep(1.0)  # the kernel prints at most 10 reports per 5 s: keep these under it
            for p in scene.procs:  # a child's parent lived on past its report; make room for the next
                p.kill()
                p.wait()
                if p.stdout is not None:
                    p.stdout.close()
            scene.procs.clear()
    say(f"detection: {len(kills)} single kills made; storm of {storm} next")
    time.sleep(6)  # let the report rate limit recover, so the storm starts with a full budget
    per = 10
    storm_scenes = [
        make_scene(rest, kit, ns, node, limit=24 * MIB, name=f"oom-storm-{i}", kubelet=True)
        for i in range(per)
    ]
    procs = []
    for i, scene in enumerate(storm_scenes):
        share = storm // per + (1 if i < storm % per else 0)
        script = f'echo $$ > "{scene.cgroup.path}/cgroup.procs" && exec "$@"'
        procs.append(
            (
                scene,
                subprocess.Popen(
                    [
                        "sh",
                        "-c",
                        script,
                        "sh",
                        *NICE,
                        sys.executable,
                        str(PROGS / "oomloop.py"),
                        str(share),
                        "--seconds",
                        "30",
                    ],
                    stdout=subprocess.PIPE,
                    text=True,
                ),
            )
        )
    for scene, p in procs:
        out, _ = p.communicate(timeout=90)
        for line in out.splitlines():
            if line.startswith("CHILD "):
                kills.append(Kill("storm", scene, int(line.split()[1])))
    storm_times = [kernel.kills[k.pid] for k in kills if k.kind == "storm" and k.pid in kernel.kills]
    if storm_times:
        say(f"detection: storm: {len(storm_times)} kill lines in {max(storm_times) - min(storm_times):.1f} s")
    return kills


def latency_by_count(
    kills: list[Kill], truth: dict[int, float], seen: dict[str, list[tuple[float, int]]], key: Any
) -> tuple[list[float], dict[int, bool]]:
    """Reports that only count (an Event's series, a counter): kill i of a key is reported when the
    key's count first reaches i+1. Returns latencies (s) and which kill pids were reported."""
    by_key: dict[str, list[Kill]] = defaultdict(list)
    for k in kills:
        by_key[key(k)].append(k)
    lat: list[float] = []
    reported: dict[int, bool] = {}
    for k_key, ks in by_key.items():
        ks.sort(key=lambda k: truth.get(k.pid, float("inf")))
        obs = sorted(seen.get(k_key, []))
        for i, k in enumerate(ks):
            t = next((t for t, count in obs if count >= i + 1), None)
            reported[k.pid] = t is not None
            if t is not None and k.pid in truth:
                lat.append(t - truth[k.pid])
    return lat, reported


def detection_summary(
    kills: list[Kill],
    reported: dict[int, bool],
    attributed: dict[int, bool],
    lat: dict[str, list[float]],
    lands: str,
) -> dict[str, Any]:
    all_lat = [x for v in lat.values() for x in v]
    out: dict[str, Any] = {
        "kills_total": len(kills),
        "kills_seen": sum(reported.get(k.pid, False) for k in kills),
        "kills_attributed": sum(attributed.get(k.pid, False) for k in kills),
        "child_kills_seen": sum(reported.get(k.pid, False) for k in kills if k.kind == "child"),
        "latency_p50_ms": round(pct(all_lat, 0.5) * 1000, 1) if all_lat else None,
        "latency_p99_ms": round(pct(all_lat, 0.99) * 1000, 1) if all_lat else None,
        "lands": lands,
        "by_kind": {},
    }
    for kind in KINDS:
        ks = [k for k in kills if k.kind == kind]
        if not ks:
            continue
        kl = lat.get(kind, [])
        out["by_kind"][kind] = {
            "kills": len(ks),
            "seen": sum(reported.get(k.pid, False) for k in ks),
            "attributed": sum(attributed.get(k.pid, False) for k in ks),
            "latency_p50_ms": round(pct(kl, 0.5) * 1000, 1) if kl else None,
            "latency_p99_ms": round(pct(kl, 0.99) * 1000, 1) if kl else None,
        }
    return out


def judge_oomsight(kills: list[Kill], truth: dict[int, float], watch: EventWatch) -> dict[str, Any]:
    """Events on the Pod: seen = counted by the Events (series included) of the kill's Pod,
    attributed = and the Event names that container."""
    counts: dict[str, dict[str, int]] = defaultdict(dict)  # pod uid -> event name -> count
    seen: dict[str, list[tuple[float, int]]] = defaultdict(list)
    seen_named: dict[str, list[tuple[float, int]]] = defaultdict(list)
    named: dict[str, dict[str, int]] = defaultdict(dict)
    to_mono = time.monotonic() - time.time()  # EventWatch stamps wall-clock time
    for (name, count), (wall, obj) in sorted(watch.seen.items(), key=lambda kv: kv[1][0]):
        t = wall + to_mono
        if obj.get("reason") not in OOM_REASONS:
            continue
        uid = (obj.get("regarding") or {}).get("uid", "")
        counts[uid][name] = max(count, counts[uid].get(name, 0))
        seen[uid].append((t, sum(counts[uid].values())))
        if "container app" in (obj.get("note") or "").lower():
            named[uid][name] = max(count, named[uid].get(name, 0))
            seen_named[uid].append((t, sum(named[uid].values())))
    lat: dict[str, list[float]] = {}
    reported: dict[int, bool] = {}
    attributed: dict[int, bool] = {}
    for kind in KINDS:
        ks = [k for k in kills if k.kind == kind]
        lat[kind], rep = latency_by_count(ks, truth, seen, lambda k: k.scene.uid)
        _, att = latency_by_count(ks, truth, seen_named, lambda k: k.scene.uid)
        reported.update(rep)
        attributed.update(att)
    out = detection_summary(kills, reported, attributed, lat, "Pod Event")
    # Kills the Events count, Pod by Pod: above a Pod's kills is a kill reported twice (or a kill of
    # another Pod given to this one), which "seen" alone cannot show.
    made: dict[str, int] = defaultdict(int)
    for k in kills:
        made[k.scene.uid] += 1
    totals = {uid: sum(counts[uid].values()) for uid in made}
    out["kills_reported"] = sum(totals.values())
    out["kills_over_reported"] = sum(max(0, totals[uid] - n) for uid, n in made.items())
    # Each Event state names one killed pid: one of another Pod's kills is a kill line placed in the
    # wrong container (the counters give each container its kills, not the lines); its note should
    # say that the line may be another's.
    pod_of = {k.pid: k.scene.uid for k in kills}
    elsewhere = flagged = 0
    for _, obj in watch.seen.values():
        uid = (obj.get("regarding") or {}).get("uid", "")
        note = obj.get("note") or ""
        m = re.search(r"\(pid (\d+),", note)
        if uid in made and m and pod_of.get(int(m.group(1)), uid) != uid:
            elsewhere += 1
            flagged += "or another of the kill lines" in note
    out["notes_naming_another_pods_kill"] = elsewhere
    out["notes_naming_another_pods_kill_saying_so"] = flagged
    return out


STAGES = ("read", "assembled", "attributed", "spooled", "delivered")
STAGE_METRIC = "oomsight_agent_kill_report_latency_seconds"


def stage_figures(metrics: str) -> dict[str, Any]:
    """The agent's own per-stage histogram (kill line → read, assembled, attributed, spooled,
    delivered): per stage the kills timed, the share within 100 ms (exact: 0.1 is a bucket bound)
    and p50/p99 interpolated within a bucket as PromQL's histogram_quantile does. read and assembled
    count every kill line on the machine (other sessions' too); the later stages only this node's."""
    from prometheus_client.parser import text_string_to_metric_families

    buckets: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for fam in text_string_to_metric_families(metrics):
        for smp in fam.samples:
            if smp.name == STAGE_METRIC + "_bucket":
                buckets[smp.labels["stage"]].append((float(smp.labels["le"]), smp.value))
    if not buckets:
        return {"error": f"no {STAGE_METRIC} on the agent's /metrics (an older agent)"}

    def quantile(rows: list[tuple[float, float]], q: float) -> float | None:
        total = rows[-1][1]
        if not total:
            return None
        rank, lo, below = q * total, 0.0, 0.0
        for le, n in rows:
            if n >= rank:
                if le == float("inf"):
                    return lo
                return lo + (le - lo) * (rank - below) / max(n - below, 1e-9)
            lo, below = le, n
        return lo

    out: dict[str, Any] = {}
    for stage in STAGES:
        rows = sorted(buckets.get(stage, []))
        if not rows or not rows[-1][1]:
            out[stage] = {"kills": 0}
            continue
        within = next(n for le, n in rows if le >= 0.1)
        p50, p99 = quantile(rows, 0.5), quantile(rows, 0.99)
        out[stage] = {
            "kills": int(rows[-1][1]),
            "within_100ms": round(within / rows[-1][1], 3),
            "p50_ms": round(p50 * 1000, 1) if p50 is not None else None,
            "p99_ms": round(p99 * 1000, 1) if p99 is not None else None,
        }
    return out


def judge_cadvisor(kills: list[Kill], truth: dict[int, float], cad: Cadvisor) -> dict[str, Any]:
    """cAdvisor names the task's memcg (from the report's ``oom-kill:`` line): attributed = that is
    the kill's container cgroup. A kill whose report the kernel dropped is invisible to it."""
    seen: dict[str, list[tuple[float, int]]] = defaultdict(list)
    counts: dict[str, int] = defaultdict(int)
    for t, name in cad.events:
        counts[name] += 1
        seen[name].append((t, counts[name]))
    lat: dict[str, list[float]] = {}
    reported: dict[int, bool] = {}
    for kind in KINDS:
        ks = [k for k in kills if k.kind == kind]
        lat[kind], rep = latency_by_count(ks, truth, seen, lambda k: k.scene.cgroup.rel)
        reported.update(rep)
    return detection_summary(kills, reported, dict(reported), lat, "metric only (container_oom_events_total)")


def judge_npd(kills: list[Kill], truth: dict[int, float], npd: Npd) -> dict[str, Any]:
    """NPD's status names the killed pid and nothing else: seen = its pid, never attributed."""
    lat: dict[str, list[float]] = defaultdict(list)
    reported = {k.pid: k.pid in npd.seen for k in kills}
    for k in kills:
        if k.pid in npd.seen and k.pid in truth:
            lat[k.kind].append(npd.seen[k.pid] - truth[k.pid])
    return detection_summary(
        kills, reported, {}, lat, "metric only (problem_counter; a Node Event, no Pod, with its exporter on)"
    )


# ------------------------------------------------------------------------------------ cost


@dataclass
class CostPods:
    rest: Rest
    kit: CgroupKit
    mirror: Mirror
    ns: str
    node: str
    scenes: list[PodScene] = field(default_factory=list)
    procs: list[subprocess.Popen[str]] = field(default_factory=list)
    held: dict[str, int] = field(default_factory=dict)  # pod name -> MiB held by memhog

    def grow_to(self, n: int) -> None:
        t0 = time.monotonic()
        start = len(self.scenes)

        def one(i: int) -> PodScene:
            return make_scene(self.rest, self.kit, self.ns, self.node, limit=256 * MIB, name=f"cost-{i:04d}")

        with ThreadPoolExecutor(8) as pool:
            new = list(pool.map(one, range(start, n)))
        for i, scene in enumerate(new, start):
            self.scenes.append(scene)
            if i < 50 and i % 5 == 0:  # containers holding memory, for the working-set comparison
                mib = 4 + 4 * (i // 5)
                p = self.mirror.run(
                    scene.cgroup,
                    sys.executable,
                    str(PROGS / "memhog.py"),
                    "--anon",
                    str(mib),
                    stdout=subprocess.PIPE,
                )
                assert p.stdout is not None
                if not p.stdout.readline().startswith("READY"):
                    raise RuntimeError(f"memhog did not start in {scene.cgroup.path}")
                self.held[scene.name] = mib
            else:
                p = self.mirror.run(scene.cgroup, "sleep", "100000")
            self.procs.append(p)
        say(
            f"cost: {n} containers ({n - start} new Pods, cgroups and processes "
            f"in {time.monotonic() - t0:.0f} s)"
        )


def reset_peak(pid: int) -> None:
    with contextlib.suppress(OSError):
        Path(f"/proc/{pid}/clear_refs").write_text("5")


def measure(
    pids: dict[str, int], warmup: float, duration: float, kernel: KernelLog
) -> tuple[dict[str, dict[str, float]], dict[str, int]]:
    """CPU % of one core and RSS of each process over one window, and the kernel log's traffic in it
    (the log every kmsg reader shares: other sessions' kills cost each of them CPU)."""
    time.sleep(warmup)
    c0 = {t: threads_cpu_seconds(p) for t, p in pids.items()}
    r0, k0 = kernel.records, kernel.kill_lines
    w0 = time.monotonic()
    time.sleep(duration)
    w1 = time.monotonic()
    figures = {
        t: {
            "cpu_percent": round((threads_cpu_seconds(p) - c0[t]) / (w1 - w0) * 100, 3),
            "rss_bytes": proc_status(p, "VmRSS"),
            "rss_peak_bytes": proc_status(p, "VmHWM"),
        }
        for t, p in pids.items()
    }
    return figures, {"kmsg_records": kernel.records - r0, "kill_lines": kernel.kill_lines - k0}


def threads_cpu_seconds(pid: int) -> float:
    """CPU time of a process's threads from the scheduler's own count (ns, the first field of each
    ``/proc/<pid>/task/<tid>/schedstat``), not ``/proc/<pid>/stat``'s clock ticks: the agent, sweeping
    every 10 s, uses ~11 ticks in a 60 s window at 200 containers, so a tick at either end moved its
    figure by up to 18% (two idle runs gave 8.5x and 6.8x less than cAdvisor). A thread that ends
    within the window takes its time with it: the peers keep theirs, and nothing scrapes the agent
    during a window. Falls back to the ticks where the kernel keeps no schedstat."""
    total, found = 0, False
    with contextlib.suppress(FileNotFoundError):
        for task in os.scandir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError, IndexError, ValueError):
                total += int(Path(task.path, "schedstat").read_text().split()[0])
                found = True
    return total / 1e9 if found else proc_cpu_seconds(pid)


def machine_containers() -> int:
    """Container cgroups in every kubepods tree on this machine: what oomsight's agent sweeps."""
    from oomsight.host.cgroupfs import sweep

    return sum(1 for e in sweep().entries if e.kube is not None and e.kube.level == "container")


def cadvisor_containers(text: str) -> int:
    """Container-level cgroups (kubelet layout) in cAdvisor's metrics: what it keeps for those."""
    from oomsight.core.kubepath import parse_cgroup_path

    ids = set(re.findall(r'^container_memory_working_set_bytes\{[^}]*\bid="([^"]+)"', text, re.MULTILINE))
    return sum(1 for i in ids if (ref := parse_cgroup_path(i)) is not None and ref.level == "container")


def working_sets(agent_metrics: str, cad_metrics: str, pods: CostPods) -> dict[str, Any]:
    """Per memhog container: oomsight vs cAdvisor working set, % difference relative to cAdvisor."""
    from prometheus_client.parser import text_string_to_metric_families

    ours: dict[str, float] = {}
    for fam in text_string_to_metric_families(agent_metrics):
        for s in fam.samples:
            if s.name == "oomsight_container_working_set_bytes" and s.labels.get("namespace") == pods.ns:
                ours[s.labels["pod"]] = s.value
    theirs: dict[str, float] = {}
    for fam in text_string_to_metric_families(cad_metrics):
        for s in fam.samples:
            if s.name == "container_memory_working_set_bytes":
                theirs[s.labels.get("id", "")] = s.value
    rows = []
    for scene in pods.scenes:
        if scene.name in pods.held and scene.name in ours and scene.cgroup.rel in theirs:
            a, b = ours[scene.name], theirs[scene.cgroup.rel]
            rows.append(
                {
                    "pod": scene.name,
                    "held_mib": pods.held[scene.name],
                    "oomsight_bytes": a,
                    "cadvisor_bytes": b,
                    "diff_percent": round((a - b) / b * 100, 2) if b else None,
                }
            )
    diffs = [abs(r["diff_percent"]) for r in rows if r["diff_percent"] is not None]
    return {
        "containers": len(rows),
        "median_abs_diff_percent": round(pct(diffs, 0.5), 2) if diffs else None,
        "max_abs_diff_percent": round(max(diffs), 2) if diffs else None,
        "rows": rows,
    }


# ------------------------------------------------------------------------------------ run


@dataclass
class NodeKill:
    kind: str
    pod: str
    pid: int


NODE_GROW = "import time\nx = []\nwhile True:\n    x.append(b'1' * (4 << 20))\n    time.sleep(0.05)"
"""Grows 80 MiB/s: a bit slower than it could, so the bench sees the process in the Pod's cgroup."""


def node_script(kind: str, delay: float) -> str:
    """Sleep ``delay`` s (the Pod starts, the bench finds its processes), then grow until killed:
    ``main`` as the container's own process, ``child`` in a child while PID 1 waits and lives on."""
    if kind == "main":
        return f"import time\ntime.sleep({delay:g})\n{NODE_GROW}"
    return (
        f"import subprocess, sys, time\ntime.sleep({delay:g})\n"
        f"subprocess.run([sys.executable, '-c', {NODE_GROW!r}])\ntime.sleep(86400)"
    )


def judge_kubelet(args: argparse.Namespace, kernel: KernelLog, work: Path) -> dict[str, Any]:
    """The kubelet's report of its own Pods' kills on the real node: ``--kills`` Pods of each kind
    (``main``, ``child``), 64 Mi limit, ``restartPolicy: Never``, python3 of the project image, started
    one after another, each growing 3 s after it runs. Its
    report is the Pod status ``OOMKilled`` (``state``/``lastState.terminated.reason``), timed when a
    watch shows it; the kill is this bench's kmsg kill line whose pid was in the Pod's cgroups, or
    whose report names the Pod's cgroup. A killed child is never in the status: counted as not seen."""
    node = None
    if args.node_dir:
        node_dir = Path(args.node_dir)
    else:
        node_dir = work / "node"
        try:
            node = nodekit.node_up(node_dir, args.node_wait, lambda m: say(f"kubelet: {m}"))
        except Exception as err:  # any failure to bring the node up is the reason
            why = str(err).strip().splitlines()[-1] if str(err).strip() else type(err).__name__
            return {"error": f"the real node (hack/envtest up --node) did not come up: {why}"}
    try:
        c = nodekit.Cluster(node_dir)
        ns = f"peers-kubelet-{uuid.uuid4().hex[:6]}"
        c.create("/api/v1/namespaces", {"metadata": {"name": ns}})
        watch = nodekit.PodWatch(c, ns)
        watch.start()
        watch.ready.wait(10)
        pods: list[tuple[str, str]] = []
        pids: dict[str, set[int]] = defaultdict(set)
        victim: dict[str, int] = {}

        def track() -> None:
            """The Pods' processes as they come, and each Pod's kill once the kernel logged it."""
            for _, name in pods:
                uid = watch.uids.get(name)
                if not uid or name in victim:
                    continue
                pids[name] |= nodekit.pod_pids(uid)
                mine = [
                    (t, pid)
                    for pid, t in list(kernel.kills.items())
                    if pid in pids[name] or f"pod{uid}" in kernel.memcgs.get(pid, "")
                ]
                if mine:
                    victim[name] = min(mine)[1]

        # One Pod at a time, each started once the one before runs (containerd on a loaded 2-core
        # machine missed the kubelet's deadline creating ten at once); each grows 3 s after it starts.
        for i in range(args.kills):
            for kind in ("main", "child"):
                name = f"oom-{kind}-{i}"
                c.create(
                    f"/api/v1/namespaces/{ns}/pods",
                    {"metadata": {"name": name}, "spec": nodekit.pod_spec(node_script(kind, 3), "Never")},
                )
                pods.append((kind, name))
                started = time.monotonic() + 180
                while time.monotonic() < started:
                    track()
                    pod = c.json("GET", f"/api/v1/namespaces/{ns}/pods/{name}")
                    if (pod.get("status") or {}).get("phase") in ("Running", "Succeeded", "Failed"):
                        break
                    time.sleep(0.2)
        say(f"kubelet: {len(pods)} Pods started on the real node, one after another")
        deadline = time.monotonic() + 120
        done_at: float | None = None
        while time.monotonic() < deadline:
            track()
            mains_reported = all(n in watch.reported for k, n in pods if k == "main")
            if len(victim) == len(pods) and mains_reported:
                done_at = done_at or time.monotonic()
                if time.monotonic() - done_at > 15:  # a child's report would have come by now
                    break
            time.sleep(0.2)
        kills = [NodeKill(kind, name, victim[name]) for kind, name in pods if name in victim]
        if len(kills) < len(pods):
            say(f"kubelet: {len(pods) - len(kills)} of {len(pods)} Pods' kills not found in the kernel log")
        reported = {k.pid: k.pod in watch.reported for k in kills}
        attributed = {k.pid: watch.reported.get(k.pod, (0.0, ""))[1] == "hog" for k in kills}
        lat: dict[str, list[float]] = defaultdict(list)
        for k in kills:
            if k.pod in watch.reported and k.pid in kernel.kills:
                lat[k.kind].append(watch.reported[k.pod][0] - kernel.kills[k.pid])
        out = detection_summary(
            kills,  # type: ignore[arg-type]
            reported,
            attributed,
            lat,
            "Pod status (state/lastState.terminated.reason OOMKilled)",
        )
        out["kills_total"] = len(pods)
        out["scope"] = (
            f"its own {len(pods)} Pods on the real node (kubelet v1.36.4, containerd 1.6.20), not this "
            "bench's cgroups"
        )
        out["cost"] = {}
        c.json("DELETE", f"/api/v1/namespaces/{ns}")
        return out
    except Exception as err:  # the other tools' results stand
        return {"error": f"kubelet: {str(err).strip().splitlines()[-1] if str(err).strip() else err!r}"}
    finally:
        if node is not None:
            with contextlib.suppress(Exception):
                node.down()


def run(args: argparse.Namespace) -> dict[str, Any]:
    tools: dict[str, dict[str, Any]] = {}
    binaries: dict[str, Path] = {}
    for name in ("npd", "cadvisor"):
        if name not in args.tools:
            tools[name] = {"error": "not run (left out of --tools)"}
            continue
        try:
            binaries[name] = peerbuild.build(name, log=say)
        except peerbuild.PeerError as err:
            say(f"error: {err}")
            tools[name] = {"error": str(err)}
    if "kubelet" not in args.tools:
        tools["kubelet"] = {"error": "not run (left out of --tools)"}

    import envtest_lib

    skew, _ = measure_skew()
    kernel = KernelLog(skew)
    kernel.start()
    kit, node_kit, mirror = CgroupKit(), CgroupKit(), Mirror()
    # cAdvisor watches every cgroup; the agent every kubepods tree. Both get the same set: every
    # kubepods tree on the machine (this bench's, other sessions' test trees, a real node's).
    prefixes = ["/oomsight-", "/kubepods"]
    procs: dict[str, Any] = {}
    cost_pods: CostPods | None = None
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        work = Path(args.workdir or tmp)
        work.mkdir(parents=True, exist_ok=True)
        cp = None
        agent: AgentProc | None = None
        try:
            try:
                cp = envtest_lib.ControlPlane(work / "cp").start()
            except envtest_lib.EnvtestError as err:
                say(f"error: oomsight: {err}")
                tools["oomsight"] = {"error": f"no control plane for the agent's Events: {err}"}
            rest = None
            node = f"peers-node-{uuid.uuid4().hex[:6]}"
            if cp is not None:
                rest = rest_for(cp.kubeconfig)
                ensure_crds(rest)
                agent = AgentProc(
                    str(cp.kubeconfig),
                    node,
                    work / "state",
                    interval=INTERVAL,
                    log_path=work / "agent.log",
                    extra=("--report-interval", "60"),
                )
                agent.start()
                assert agent.proc is not None
                procs["oomsight"] = agent.proc
            if "cadvisor" in binaries:
                try:
                    procs["cadvisor"] = cad = Cadvisor(binaries["cadvisor"], prefixes, work)
                except RuntimeError as err:
                    say(f"error: cadvisor: {err}")
                    tools["cadvisor"] = {"error": str(err)}
            if "npd" in binaries:
                try:
                    procs["npd"] = npd = Npd(binaries["npd"], node, work)
                except RuntimeError as err:
                    say(f"error: npd: {err}")
                    tools["npd"] = {"error": str(err)}
            if rest is None:
                raise RuntimeError("no API server: the Pods this bench kills in cannot be made")

            # -- detection
            ns = namespace(rest)
            watch = EventWatch(rest, ns)
            watch.start()
            watch.ready.wait(10)
            time.sleep(3)  # every tool past its start-up (cAdvisor's first housekeeping, NPD's lookback)
            npd_before = npd.oom_counter() if "npd" in procs else 0.0
            load_before = os.getloadavg()
            kills = make_kills(rest, kit, node_kit, ns, node, args.kills, args.storm, kernel)
            say(
                "detection: load average before the kills "
                + "/".join(f"{x:.1f}" for x in load_before)
                + ", after "
                + "/".join(f"{x:.1f}" for x in os.getloadavg())
            )
            say(f"detection: waiting {args.settle:g} s for the reports")
            time.sleep(args.settle)
            truth = dict(kernel.kills)
            missing = [k.pid for k in kills if k.pid not in truth]
            headerless = sum(1 for k in kills if k.pid in truth and k.pid not in kernel.headers)
            say(
                f"detection: {len(kills)} kills, {headerless} kill lines without their report, "
                f"{len(missing)} not read by this bench's kmsg reader, {kernel.gaps} kmsg gaps"
            )
            (work / "kills.json").write_text(
                json.dumps(
                    [
                        {
                            "kind": k.kind,
                            "pod": k.scene.name,
                            "uid": k.scene.uid,
                            "pid": k.pid,
                            "kmsg_mono": truth.get(k.pid),
                            "header": k.pid in kernel.headers,
                        }
                        for k in kills
                    ],
                    indent=1,
                )
            )
            (work / "events.json").write_text(
                json.dumps(
                    [{"seen_wall": t, "count": c, "event": obj} for (_, c), (t, obj) in watch.seen.items()],
                    indent=1,
                )
            )
            if "oomsight" in procs:
                tools["oomsight"] = judge_oomsight(kills, truth, watch)
                assert agent is not None
                stages = tools["oomsight"]["stages"] = stage_figures(agent.get("/metrics"))
                for stage, f in stages.items():
                    if isinstance(f, dict) and f.get("kills"):
                        say(
                            f"detection: oomsight stage {stage}: {f['kills']} kills, p50 {f['p50_ms']} ms, "
                            f"p99 {f['p99_ms']} ms, {f['within_100ms'] * 100:.0f}% within 100 ms "
                            "(the agent's histogram)"
                        )
                    elif stage == "error":
                        say(f"detection: oomsight stages: {f}")
            if "cadvisor" in procs:
                tools["cadvisor"] = judge_cadvisor(kills, truth, cad)
            if "npd" in procs:
                tools["npd"] = judge_npd(kills, truth, npd)
                tools["npd"]["problem_counter_delta"] = npd.oom_counter() - npd_before
            for t in procs:
                tools[t]["kills_headerless"] = headerless

            # -- cost
            cost_ns = namespace(rest)
            cost_pods = CostPods(rest, kit, mirror, cost_ns, node)
            pids = {t: p.pid if isinstance(p, subprocess.Popen) else p.proc.pid for t, p in procs.items()}
            for t in procs:
                tools[t]["cost"] = {}
            for size in args.sizes:
                for p in pids.values():
                    reset_peak(p)
                cost_pods.grow_to(size)
                figures, traffic = measure(pids, args.warmup, args.measure, kernel)
                for t, f in figures.items():
                    tools[t]["cost"][str(size)] = {**f, **traffic}
                # Both sweep every kubepods tree on the machine (other sessions' too): count them.
                machine = machine_containers()
                for t in figures:
                    tools[t]["cost"][str(size)]["containers"] = machine
                if "cadvisor" in procs:
                    cad_text = cad.metrics()
                    tools["cadvisor"]["cost"][str(size)]["containers"] = cadvisor_containers(cad_text)
                    if size == args.sizes[0] and agent is not None:
                        acc = working_sets(agent.get("/metrics"), cad_text, cost_pods)
                        tools["oomsight"]["working_set_vs_cadvisor"] = acc
                say(
                    "cost: "
                    + ", ".join(
                        f"{t} {f['cpu_percent']:.2f}% {f['rss_bytes'] / MIB:.1f} MiB "
                        f"({tools[t]['cost'][str(size)]['containers']} containers)"
                        for t, f in figures.items()
                    )
                    + f" with {size} of this bench's (load {os.getloadavg()[0]:.1f}; kernel log: "
                    f"{traffic['kmsg_records']} records, {traffic['kill_lines']} kill lines in the window)"
                )
            if agent is not None:
                tools["oomsight"]["log_warnings"] = sum(
                    1 for ln in agent.log().splitlines() if "WARNING" in ln or "ERROR" in ln
                )
            # -- the kubelet, last: its node's containerd and kubelet would weigh on the cost windows
            if "kubelet" in args.tools:
                kit.cleanup(cost_pods.procs)  # the cost's 1000 processes out of the node's way
                cost_pods.procs.clear()
                tools["kubelet"] = judge_kubelet(args, kernel, work)
                if "error" in tools["kubelet"]:
                    say(f"error: kubelet: {tools['kubelet']['error']}")
        finally:
            if agent is not None:
                agent.kill()
            for t, p in procs.items():
                if t != "oomsight":
                    stop(p.proc)
            kernel.stop.set()
            kit.cleanup(cost_pods.procs if cost_pods else [])
            node_kit.cleanup()
            mirror.cleanup()
            if cp is not None:
                cp.stop()
    return {
        "kernel": os.uname().release,
        "tools": {t: tools.get(t, {"error": "not run"}) for t in ("oomsight", "cadvisor", "npd", "kubelet")},
    }


# ------------------------------------------------------------------------------------ table


def table(result: dict[str, Any], args: argparse.Namespace) -> str:
    tools = result["tools"]
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [f"kernel {result['kernel']}, {when}, load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"]
    lines.append("")
    lines.append(
        "| detection | seen | attributed | reported (over) | child seen | storm seen | p50 ms | p99 ms "
        "| storm p99 ms | lands |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|")
    for t in ("oomsight", "cadvisor", "npd", "kubelet"):
        d = tools[t]
        if "error" in d:
            lines.append(f"| {t} | error: {d['error']} |||||||||")
            continue
        bk = d["by_kind"]
        storm = bk.get("storm", {})
        child_total = bk.get("child", {}).get("kills", 0)
        lines.append(
            f"| {t} | {d['kills_seen']}/{d['kills_total']} | {d['kills_attributed']} | "
            f"{reported_cell(d)} | {d['child_kills_seen']}/{child_total} | "
            f"{str(storm.get('seen', 0)) + '/' + str(storm['kills']) if storm else '-'} | "
            f"{fmt(d['latency_p50_ms'])} | {fmt(d['latency_p99_ms'])} | {fmt(storm.get('latency_p99_ms'))} | "
            f"{d['lands']} |"
        )
    o = tools["oomsight"]
    if "notes_naming_another_pods_kill" in o:
        lines.append("")
        lines.append(
            f"oomsight Event states whose note names another Pod's killed pid (a kill line without its "
            f"report placed in the wrong one of several containers ahead): "
            f"{o['notes_naming_another_pods_kill']}, of them saying the line may be another's: "
            f"{o['notes_naming_another_pods_kill_saying_so']}"
        )
    lines.append("")
    kinds = [k for k in KINDS if any(k in tools[t].get("by_kind", {}) for t in tools)]
    lines.append("| seen by kind | " + " | ".join(kinds) + " |")
    lines.append("|---|" + "---|" * len(kinds))
    for t in ("oomsight", "cadvisor", "npd", "kubelet"):
        bk = tools[t].get("by_kind")
        if bk:
            cells = (f"{bk[k]['seen']}/{bk[k]['kills']}" if k in bk else "-" for k in kinds)
            lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines.append("")
    sizes = [str(s) for s in args.sizes]
    lines.append(
        "| cost (CPU % of one core, RSS MiB steady/peak) | "
        + " | ".join(f"{s} containers" for s in sizes)
        + " | CPU per 1000 more containers swept, by step |"
    )
    lines.append("|---|" + "---|" * (len(sizes) + 1))
    ref = next((tools[t]["cost"] for t in ("oomsight", "npd", "cadvisor") if tools[t].get("cost")), {})
    if ref:
        lines.append(
            "| container cgroups swept (all kubepods trees on the machine) | "
            + " | ".join(str(ref[s].get("containers", "-")) if s in ref else "-" for s in sizes)
            + " | |"
        )
        lines.append(
            "| kernel log in the window: records / kill lines | "
            + " | ".join(
                f"{ref[s]['kmsg_records']} / {ref[s]['kill_lines']}" if s in ref else "-" for s in sizes
            )
            + " | |"
        )
    for t in ("oomsight", "cadvisor", "npd"):
        cost = tools[t].get("cost")
        if not cost:
            continue
        cells = [
            f"{cost[s]['cpu_percent']:.2f}% "
            f"{cost[s]['rss_bytes'] / MIB:.1f}/{cost[s]['rss_peak_bytes'] / MIB:.1f}"
            if s in cost
            else "-"
            for s in sizes
        ]
        steps = []
        for a, b in itertools.pairwise(sizes):
            if a in cost and b in cost:
                na, nb = cost[a].get("containers", int(a)), cost[b].get("containers", int(b))
                slope = (cost[b]["cpu_percent"] - cost[a]["cpu_percent"]) / max(1, nb - na) * 1000
                steps.append(f"{a}->{b}: {slope:.2f}%")
        lines.append(f"| {t} | " + " | ".join(cells) + " | " + ", ".join(steps) + " |")
    o, c = tools["oomsight"].get("cost", {}), tools["cadvisor"].get("cost", {})
    ratios = [
        f"{s}: CPU {c[s]['cpu_percent'] / o[s]['cpu_percent']:.1f}x less, "
        f"RSS {o[s]['rss_bytes'] / c[s]['rss_bytes']:.2f} of cAdvisor's"
        for s in sizes
        if s in o and s in c and o[s]["cpu_percent"] > 0
    ]
    if ratios:
        lines.append("")
        lines.append("agent vs cAdvisor: " + "; ".join(ratios))
    acc = tools["oomsight"].get("working_set_vs_cadvisor")
    if acc:
        lines.append(
            f"working set, oomsight vs cAdvisor on {acc['containers']} containers holding 4-40 MiB: "
            f"median |diff| {fmt(acc['median_abs_diff_percent'])}%, max {fmt(acc['max_abs_diff_percent'])}%"
        )
    return "\n".join(lines)


def reported_cell(d: dict[str, Any]) -> str:
    """Kills the tool's reports count in all (and how many more than were made), where it says."""
    if "kills_reported" not in d:
        return "-"
    return f"{d['kills_reported']} ({d['kills_over_reported']})"


def fmt(v: Any) -> str:
    return "-" if v is None else f"{v:g}" if isinstance(v, float) else str(v)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=5, help="kills of each single kind (default 5)")
    ap.add_argument("--storm", type=int, default=100, help="kills in the storm (default 100)")
    ap.add_argument(
        "--sizes", default="50,200,1000", help="container counts for the cost (default 50,200,1000)"
    )
    ap.add_argument("--warmup", type=float, default=20.0, help="seconds before each cost window (default 20)")
    ap.add_argument("--measure", type=float, default=60.0, help="seconds of each cost window (default 60)")
    ap.add_argument("--settle", type=float, default=25.0, help="seconds to wait for reports (default 25)")
    ap.add_argument(
        "--tools", default="oomsight,cadvisor,npd,kubelet", help="tools to run (default all four)"
    )
    ap.add_argument(
        "--node-dir", help="a real node already up (hack/envtest up --node DIR); default: bring one up"
    )
    ap.add_argument(
        "--node-wait",
        type=float,
        default=1800.0,
        help="seconds to wait for the machine's one real node while another run holds it (default 1800)",
    )
    ap.add_argument("--workdir", help="keep logs, kills.json and events.json here (default: a temp dir)")
    ap.add_argument("--json", action="store_true", help="print the JSON result (the table goes to stderr)")
    args = ap.parse_args()
    try:
        args.sizes = sorted({int(s) for s in args.sizes.split(",") if s.strip()})
    except ValueError:
        print(f"peers: error: --sizes takes comma-separated numbers, not {args.sizes!r}", file=sys.stderr)
        return 2
    args.tools = {t.strip() for t in args.tools.split(",")}
    try:
        require_cgroup_v1()
    except BaseException as err:
        print(f"peers: error: {err}", file=sys.stderr)
        return 2
    try:
        result = run(args)
    except (RuntimeError, OSError) as err:
        print(f"peers: error: {err}", file=sys.stderr)
        return 1
    text = table(result, args)
    if args.json:
        print(text, file=sys.stderr)
        print(json.dumps(result, indent=2))
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
