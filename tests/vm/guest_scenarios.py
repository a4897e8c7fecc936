"""Real OOM scenarios on a hack/vm guest's cgroup v2, run in one boot; results as JSON for the host.

    hack/vm run --kernel 6.1 --mem 1G --share OUT -- python3 tests/vm/guest_scenarios.py OUT [NAME ...]

Each scenario lays out kubelet-style cgroups (``tests/cgroupkit.py``: the systemd or the cgroupfs
driver, ``memory.max``, ``memory.oom.group`` as a kubelet ≥ 1.28 sets it), lets the kernel act on
``tests/progs/memhog.py`` processes, and records what the kernel did (``memory.events``, the kmsg
records written meanwhile, raw) and what was expected. Cgroups and surviving processes stay until
the end, when ``oomsight diagnose --json``, ``oomsight top --json`` and the agent's own detection
path (``KmsgReader`` + ``OomAssembler`` + ``diagnose``, ``CgroupWalker`` with the agent's v2 files)
look at all of them at once. ``OUT/results.json`` holds everything; ``tests/vm/test_vm_v2.py``
asserts on it on the host. Nothing here judges: it only records.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TESTS))

from cgroupkit import MIB, Cgroup, CgroupKit, kubelet_pod  # noqa: E402

WAIT = 180.0
"""Generous: TCG is slow and the host is shared."""


class Kmsg:
    """/dev/kmsg from now on, read without blocking, records kept exactly as read(2) returned them."""

    def __init__(self) -> None:
        self.fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
        os.lseek(self.fd, 0, os.SEEK_END)

    def drain(self) -> list[str]:
        out: list[str] = []
        while True:
            try:
                out.append(os.read(self.fd, 65536).decode("utf-8", "replace").rstrip("\n"))
            except BlockingIOError:
                return out
            except BrokenPipeError:
                continue


def events(cg: Cgroup) -> dict[str, int]:
    return {k: int(v) for k, v in (ln.split() for ln in cg.read("memory.events").splitlines())}


def wait_for(what: str, check: Callable[[], bool], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def wait_dead(proc: subprocess.Popen[str], timeout: float = WAIT) -> int:
    return proc.wait(timeout)


def spawn(cg: Cgroup, *args: str, ready: bool = True) -> subprocess.Popen[str]:
    return cg.spawn(*args, ready=ready, timeout=WAIT)


class Run:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.kmsg = Kmsg()
        self.kit = CgroupKit(Path("/sys/fs/cgroup"), "v2")
        self.kits = [self.kit]
        self.procs: list[subprocess.Popen[str]] = []
        self.results: dict[str, Any] = {
            "kernel": platform.release(),
            "scenarios": {},
            "prefix": "/" + self.kit.root.name,
        }

    def keep(self, proc: subprocess.Popen[str]) -> subprocess.Popen[str]:
        self.procs.append(proc)
        return proc

    def record(self, name: str, started: float, **fields: Any) -> None:
        raw = self.kmsg.drain()
        (self.out / f"{name}.kmsg").write_text("\n".join(raw) + "\n" if raw else "")
        fields["seconds"] = round(time.monotonic() - started, 1)
        fields["doc"] = " ".join((getattr(type(self), name).__doc__ or "").split())
        self.results["scenarios"][name] = fields

    # ---- scenarios ------------------------------------------------------------------------

    def node_wide(self) -> None:
        """A BestEffort pod with no limit grows until the whole (small) guest is out of memory."""
        t0 = time.monotonic()
        pod, uid = self.kit.pod(qos="besteffort")
        c, cid = self.kit.container(pod, oom_group=True)
        p = spawn(c, "--oom-score-adj", "1000", "--grow-anon-mib", "8", ready=False)
        rc = wait_dead(p)
        self.record(
            "node_wide",
            t0,
            pod_uid=uid,
            container_id=cid,
            cgroup=c.rel,
            rc=rc,
            events=events(c),
            expect={"scope": "node", "survived": False, "dominant": "anon"},
        )

    def main_killed(self) -> None:
        """systemd driver, oom.group=1 (the kubelet default on v2): the container's only process dies."""
        t0 = time.monotonic()
        pod, uid = self.kit.pod(qos="burstable", driver="systemd")
        c, cid = self.kit.container(pod, limit=64 * MIB, oom_group=True)
        p = spawn(c, "--grow-anon-mib", "4", ready=False)
        rc = wait_dead(p)
        self.record(
            "main_killed",
            t0,
            pod_uid=uid,
            container_id=cid,
            cgroup=c.rel,
            rc=rc,
            events=events(c),
            expect={
                "scope": "container",
                "limit": 64 * MIB,
                "survived": False,
                "dominant": "anon",
                "group_kill": True,
            },
        )

    def child_killed(self) -> None:
        """cgroupfs driver, oom.group=0 (singleProcessOOMKill): a child dies, the main process lives on."""
        t0 = time.monotonic()
        pod, uid = self.kit.pod(qos="burstable")
        c, cid = self.kit.container(pod, limit=96 * MIB, oom_group=False)
        p = self.keep(spawn(c, "--children", "1", "--child-grow-mib", "4"))
        wait_for("child_killed: oom_kill", lambda: events(c).get("oom_kill", 0) >= 1)
        time.sleep(1)
        self.record(
            "child_killed",
            t0,
            pod_uid=uid,
            container_id=cid,
            cgroup=c.rel,
            main_pid=p.pid,
            main_alive=p.poll() is None,
            events=events(c),
            expect={
                "scope": "container",
                "limit": 96 * MIB,
                "survived": True,
                "dominant": "anon",
                "group_kill": False,
            },
        )

    def group_kill(self) -> None:
        """systemd driver, oom.group=1, three processes: the kernel kills all of them together."""
        t0 = time.monotonic()
        pod, uid = self.kit.pod(qos="burstable", driver="systemd")
        c, cid = self.kit.container(pod, limit=96 * MIB, oom_group=True)
        p = spawn(c, "--children", "2", "--child-anon", "8")
        kids = p.ready_pids[1:]  # type: ignore[attr-defined]
        # The main process grows only after READY: a second memhog in the same container does that.
        g = spawn(c, "--grow-anon-mib", "4", ready=False)
        wait_dead(g)
        wait_dead(p)
        wait_for("group_kill: every process gone", lambda: not c.procs())
        self.record(
            "group_kill",
            t0,
            pod_uid=uid,
            container_id=cid,
            cgroup=c.rel,
            pids=[p.pid, g.pid, *kids],
            events=events(c),
            expect={
                "scope": "container",
                "limit": 96 * MIB,
                "survived": False,
                "dominant": "anon",
                "group_kill": True,
                "killed_at_least": 4,
            },
        )

    def pod_limit(self) -> None:
        """Two containers (100 MiB each) outgrow their pod's own 128 MiB limit together."""
        t0 = time.monotonic()
        kp = kubelet_pod(self.kit, [100 * MIB, 100 * MIB], pod_limit=128 * MIB)
        for cg in kp.containers:
            cg.set_oom_group(True)
        self.keep(spawn(kp.containers[0], "--anon", "56"))
        g = spawn(kp.containers[1], "--grow-anon-mib", "4", ready=False)
        wait_for("pod_limit: oom_kill at the pod", lambda: events(kp.pod).get("oom_kill", 0) >= 1)
        time.sleep(1)
        self.record(
            "pod_limit",
            t0,
            pod_uid=kp.uid,
            container_ids=kp.ids,
            cgroup=kp.pod.rel,
            grower_alive=g.poll() is None,
            events=events(kp.pod),
            expect={"scope": "pod", "limit": 128 * MIB, "dominant": "anon"},
        )
        kp.stop()

    def kubepods_limit(self) -> None:
        """Two pods fill the node-allocatable (kubepods) limit, 160 MiB, each far below its own.
        A kubepods of its own (a second kit), so the other scenarios' pods are not under it."""
        t0 = time.monotonic()
        kit = CgroupKit(Path("/sys/fs/cgroup"), "v2")
        self.kits.append(kit)
        kubepods = kit.kubepods
        kubepods.set_limit(160 * MIB)
        a = kubelet_pod(kit, [128 * MIB])
        b = kubelet_pod(kit, [128 * MIB])
        self.keep(spawn(a.container, "--anon", "56"))  # less than the grower reaches: it dies
        spawn(b.container, "--grow-anon-mib", "4", ready=False)
        wait_for("kubepods: oom_kill", lambda: events(kubepods).get("oom_kill", 0) >= 1)
        time.sleep(1)
        self.record(
            "kubepods_limit",
            t0,
            pod_uids=[a.uid, b.uid],
            container_ids=[*a.ids, *b.ids],
            cgroup=kubepods.rel,
            events=events(kubepods),
            expect={"scope_in": ["ancestor", "node"], "limit": 160 * MIB, "dominant": "anon"},
        )
        a.stop()
        b.stop()

    def shmem(self) -> None:
        """70 MiB written to a tmpfs, then anon grows: shmem dominates the 96 MiB limit."""
        t0 = time.monotonic()
        pod, uid = self.kit.pod(qos="burstable")
        c, cid = self.kit.container(pod, limit=96 * MIB, oom_group=True)
        path = f"/dev/shm/oomsight-{cid[:8]}"
        p = spawn(c, "--shm", path, "70", "--grow-anon-mib", "2", ready=False)
        rc = wait_dead(p)
        shm = os.path.getsize(path)
        self.record(
            "shmem",
            t0,
            pod_uid=uid,
            container_id=cid,
            cgroup=c.rel,
            rc=rc,
            shm_bytes=shm,
            events=events(c),
            expect={"scope": "container", "limit": 96 * MIB, "survived": False, "dominant": "shmem"},
        )
        os.unlink(path)

    def page_cache(self) -> None:
        """A 64 MiB container writes and reads 160 MiB of file on the root disk: page cache, no OOM."""
        t0 = time.monotonic()
        pod, uid = self.kit.pod(qos="burstable", driver="systemd")
        c, cid = self.kit.container(pod, limit=64 * MIB, oom_group=True)
        path = f"/var/tmp/oomsight-{cid[:8]}"
        p = self.keep(spawn(c, "--file", path, "160"))
        stat = dict(ln.split() for ln in c.read("memory.stat").splitlines())
        self.record(
            "page_cache",
            t0,
            pod_uid=uid,
            container_id=cid,
            cgroup=c.rel,
            alive=p.poll() is None,
            events=events(c),
            file_bytes=int(stat["file"]),
            current=int(c.read("memory.current")),
            expect={"incident": False, "limit": 64 * MIB},
        )

    def memory_high(self) -> None:
        """memory.high 32 MiB and no max: 40 MiB of anon is throttled (events 'high'), never killed."""
        t0 = time.monotonic()
        pod, uid = self.kit.pod(qos="burstable")
        c, cid = self.kit.container(pod, oom_group=True)
        (c.path / "memory.high").write_text(str(32 * MIB))
        p = self.keep(spawn(c, "--anon", "40"))
        time.sleep(2)
        self.record(
            "memory_high",
            t0,
            pod_uid=uid,
            container_id=cid,
            cgroup=c.rel,
            alive=p.poll() is None,
            events=events(c),
            pressure=c.read("memory.pressure"),
            expect={"incident": False},
        )

    # ---- the looks at everything --------------------------------------------------------------

    def oomsight(self, *args: str) -> dict[str, Any]:
        t0 = time.monotonic()
        proc = subprocess.run(["oomsight", *args], capture_output=True, text=True, check=False)
        name = "-".join(a.strip("-") for a in args)
        (self.out / f"{name}.stdout").write_text(proc.stdout)
        (self.out / f"{name}.stderr").write_text(proc.stderr)
        self.results.setdefault("seconds", {})[name] = round(time.monotonic() - t0, 1)
        return {"rc": proc.returncode, "json": json.loads(proc.stdout) if proc.stdout.strip() else None}

    def agent_path(self) -> dict[str, Any]:
        """What the agent's code sees without an API server: its kmsg reader and assembler, and its
        cgroup walker with the v2 files it reads every sweep (memory.events, peak, pressure)."""
        from oomsight.agent.loop import AGENT_V2_FILES
        from oomsight.core.diagnosis import diagnose
        from oomsight.core.oomreport import OomAssembler
        from oomsight.host.cgroupfs import CgroupWalker, detect_layout
        from oomsight.host.kmsg import read_since_boot

        records, gaps = read_since_boot("/")
        asm = OomAssembler()
        incidents = []
        for r in records:
            incidents += asm.feed(r)
        incidents += asm.flush()
        walker = CgroupWalker(detect_layout("/"), AGENT_V2_FILES)
        sweep = walker.sweep()
        cgroups = {}
        for e in sweep.entries:
            r = e.reading
            full = walker.read(e.path)  # every file the model knows (what `oomsight top` reads)
            cgroups[e.path] = {
                "oom_kills": walker.oom_kills(e.path),
                "events": None if r is None or r.events is None else vars_of(r.events),
                "peak_bytes": full.peak_bytes,
                "pressure": None if full.pressure is None else vars_of(full.pressure),
                "oom_group": full.oom_group,
            }
        diags = [diagnose(i).as_json() for i in incidents]
        return {
            "records": len(records),
            "gaps": len(gaps),
            "incidents": diags,
            "cgroups": cgroups,
            "spooled": self.spool(incidents, diags),
        }

    def spool(self, incidents: list[Any], diags: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The Events the agent would post, written to its own spool (``agent.state.StateDir``), for
        the pods the scenarios made (what the API server would have listed on this node)."""
        from datetime import UTC, datetime

        from oomsight.agent.state import StateDir
        from oomsight.core.eventspecs import oom_event
        from oomsight.core.podinfo import ContainerInfo, PodInfo
        from oomsight.host.kmsg import read_boot_id

        pods: dict[str, PodInfo] = {}
        for name, s in self.results["scenarios"].items():
            uids = s.get("pod_uids") or ([s["pod_uid"]] if "pod_uid" in s else [])
            cids = s.get("container_ids") or ([s["container_id"]] if "container_id" in s else [])
            for n, uid in enumerate(uids):
                containers = tuple(ContainerInfo(f"c{j}", cid, None, None) for j, cid in enumerate(cids))
                pods[uid] = PodInfo(uid, "vm", f"{name.replace('_', '-')}-{n}", "oomsight-vm", containers)
        state = StateDir(self.out / "agent-state")
        boot_id = read_boot_id()
        for inc, diag in zip(incidents, diags, strict=True):
            pod = pods.get(diag.get("pod_uid") or "")
            if pod is None:
                continue
            cont = next((c.name for c in pod.containers if c.container_id == diag.get("container_id")), None)
            seq = inc.seq if inc.seq is not None else 0
            state.put(oom_event(diag, pod, cont, "oomsight-vm", boot_id, seq, datetime.now(UTC)))
        return [spec.to_json() for spec in state.pending()]


def capture_node(out: Path) -> None:
    """The files ``oomsight.host.nodeinfo`` reads, as a fixture host root (tests/fixtures/node): the
    same /proc and /sys files as tests/fixtures/node/capture.py, and the cgroup2 tree's directories
    (each with an empty ``cgroup.procs``) with the root's ``cgroup.controllers`` and ``cgroup.stat``."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("node_capture", TESTS / "fixtures" / "node" / "capture.py")
    assert spec is not None and spec.loader is not None
    cap = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(cap)
    for rel in cap.FILES:
        src = Path("/") / rel
        if src.exists():
            (out / rel).parent.mkdir(parents=True, exist_ok=True)
            (out / rel).write_text(src.read_text())
    (out / "proc/cmdline").write_text(Path("/proc/cmdline").read_text())
    root = Path("/sys/fs/cgroup")
    for d, _, _ in os.walk(root):
        target = out / "sys/fs/cgroup" / Path(d).relative_to(root)
        target.mkdir(parents=True, exist_ok=True)
        (target / "cgroup.procs").write_text("")
    for name in ("cgroup.controllers", "cgroup.stat", "cgroup.subtree_control"):
        (out / "sys/fs/cgroup" / name).write_text((root / name).read_text())


def vars_of(obj: Any) -> Any:
    if hasattr(obj, "__dataclass_fields__"):
        return {k: vars_of(getattr(obj, k)) for k in obj.__dataclass_fields__}
    return obj


ORDER = (
    "node_wide",
    "main_killed",
    "child_killed",
    "group_kill",
    "pod_limit",
    "kubepods_limit",
    "shmem",
    "page_cache",
    "memory_high",
)


def main() -> int:
    out = Path(sys.argv[1])
    names = sys.argv[2:] or list(ORDER)
    run = Run(out)
    t0 = time.monotonic()
    try:
        for name in ORDER:
            if name not in names:
                continue
            try:
                getattr(run, name)()
                print(f"scenario {name}: done", flush=True)
            except Exception as err:
                run.results["scenarios"][name] = {"error": f"{type(err).__name__}: {err}"}
                traceback.print_exc()
        run.results["diagnose"] = run.oomsight("diagnose", "--json")
        run.results["top"] = run.oomsight("top", "--json")
        run.results["node"] = run.oomsight("node", "--json")
        run.results["agent"] = run.agent_path()
        dmesg = subprocess.run(["dmesg"], capture_output=True, text=True, check=False).stdout
        (out / "dmesg.txt").write_text(dmesg)
    finally:
        run.results["seconds"] = {**run.results.get("seconds", {}), "total": round(time.monotonic() - t0, 1)}
        (out / "results.json").write_text(json.dumps(run.results, indent=1, default=str) + "\n")
        for kit in run.kits:
            kit.cleanup(run.procs if kit is run.kit else ())
        # After the teardown: the removed cgroups that still hold page cache are dying memcgs.
        capture_node(out / "node")
    return 0


if __name__ == "__main__":
    sys.exit(main())
