"""Build kubelet-style memory cgroups on a real memory controller (this machine's cgroup v1).

Tests create pods and containers the way a kubelet lays them out, under a unique prefix (the way
kind nests ``kubepods`` under a docker scope), run real processes in them and let the kernel
account and OOM-kill them. Everything is torn down afterwards, processes first.

``CgroupKit(mount, version)`` takes any memory hierarchy: ``/sys/fs/cgroup/memory`` with ``"v1"``
(the default), or a cgroup2 mount with ``"v2"`` (``memory.max``; ``+memory`` is written to each
parent's ``cgroup.subtree_control``). ``kubelet_pod`` lays out a pod exactly as the kubelet does,
pod limit = the sum of the container limits, with a pause-like process in a sibling sandbox cgroup.

With ``CI=true`` a machine without a writable v1 memory controller fails the test loudly;
elsewhere it skips with the reason.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from realparts import unavailable

MEMORY_MOUNT = Path("/sys/fs/cgroup/memory")
PROGS = Path(__file__).parent / "progs"
MIB = 1 << 20


def require_cgroup_v1() -> None:
    """Fail (CI) or skip (elsewhere) unless the real v1 memory controller is writable here."""
    reason = None
    if os.geteuid() != 0:
        reason = "needs root to create memory cgroups"
    elif not (MEMORY_MOUNT / "memory.limit_in_bytes").exists():
        reason = f"no cgroup v1 memory controller at {MEMORY_MOUNT}"
    elif not os.access(MEMORY_MOUNT, os.W_OK):
        reason = f"{MEMORY_MOUNT} is not writable"
    if reason:
        unavailable(f"real-cgroup test cannot run: {reason}")


REPORT_BURST = 10
REPORT_WINDOW = 5.0
"""The kernel prints an OOM kill's full report (``dump_header``) at most 10 times per 5 s, machine-wide
(mm/oom_kill.c ``oom_rs``: DEFAULT_RATELIMIT_BURST, DEFAULT_RATELIMIT_INTERVAL); its kill line always."""


def _recent_kill_lines(window: float) -> list[float]:
    """CLOCK_MONOTONIC times (the kernel's stamps, close enough here) of the kill lines of the last
    ``window`` seconds still in the ring, whoever caused them."""
    now = time.clock_gettime(time.CLOCK_MONOTONIC)
    out = []
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    try:
        while True:
            try:
                raw = os.read(fd, 8192)
            except BlockingIOError:
                break
            except BrokenPipeError:  # overwritten while read: go on with the next record
                continue
            head, _, text = raw.decode(errors="replace").partition(";")
            fields = head.split(",")
            if len(fields) > 2 and ("Killed process" in text or " killed process " in text.lower()):
                t = int(fields[2]) / 1e6
                if now - t <= window:
                    out.append(t)
    finally:
        os.close(fd)
    return out


def wait_for_report_budget(timeout: float = 120.0, spare: int = 3) -> None:
    """Before a kill whose test needs the kernel's full report: wait (up to ``timeout``) until the
    last window's kill lines leave at least ``spare`` reports of the burst, so kills elsewhere on the
    machine (other tests' storms, other users) do not leave this one with a bare kill line. Any fixed
    5 s window of the kernel's lies within the last 5.5 s, so counting those is enough."""
    deadline = time.monotonic() + timeout
    while True:
        recent = _recent_kill_lines(REPORT_WINDOW + 0.5)
        if len(recent) <= REPORT_BURST - spare or time.monotonic() > deadline:
            return
        oldest_leaves = min(recent) + REPORT_WINDOW + 0.5 - time.clock_gettime(time.CLOCK_MONOTONIC)
        time.sleep(min(max(oldest_leaves, 0.1), 1.0))


def _write(path: Path, value: str | int) -> None:
    path.write_text(str(value))


def _pids(directory: Path) -> list[int]:
    pids: list[int] = []
    for procs in directory.rglob("cgroup.procs"):
        try:
            pids += [int(p) for p in procs.read_text().split()]
        except OSError:
            continue
    return pids


@dataclass
class Cgroup:
    path: Path
    mount: Path = MEMORY_MOUNT
    version: str = "v1"

    @property
    def rel(self) -> str:
        """The path as the kernel prints it (relative to the hierarchy root, leading slash)."""
        return "/" + str(self.path.relative_to(self.mount))

    @property
    def name(self) -> str:
        return self.path.name

    def set_limit(self, limit_bytes: int) -> None:
        _write(self.path / ("memory.max" if self.version == "v2" else "memory.limit_in_bytes"), limit_bytes)

    def limit(self) -> int | None:
        """Its own limit as the kernel keeps it (rounded down to a page); None for no limit."""
        text = self.read("memory.max" if self.version == "v2" else "memory.limit_in_bytes").strip()
        return None if text == "max" or int(text) >= 1 << 60 else int(text)

    def set_oom_group(self, on: bool) -> None:
        """v2 ``memory.oom.group``: a kubelet ≥ 1.28 sets it to 1 per container (unless
        ``singleProcessOOMKill``), so the kernel kills the container's processes together."""
        _write(self.path / "memory.oom.group", int(on))

    def usage(self) -> int:
        return int(self.read("memory.current" if self.version == "v2" else "memory.usage_in_bytes"))

    def procs(self) -> list[int]:
        return [int(p) for p in self.read("cgroup.procs").split()]

    def read(self, name: str) -> str:
        return (self.path / name).read_text()

    def run(self, *argv: str) -> subprocess.Popen[str]:
        """Start ``argv`` inside this cgroup (it joins before exec), output discarded."""
        script = f'echo $$ > "{self.path}/cgroup.procs" && exec "$@"'
        return subprocess.Popen(
            ["sh", "-c", script, "sh", *argv],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            text=True,
        )

    def spawn(self, *args: str, ready: bool = True, timeout: float = 30.0) -> subprocess.Popen[str]:
        """Start ``memhog.py ARGS`` inside this cgroup; with ``ready`` wait for its READY line."""
        # The child joins the cgroup before exec, so every page it ever touches is charged here.
        script = f'echo $$ > "{self.path}/cgroup.procs" && exec "$@"'
        proc = subprocess.Popen(
            ["sh", "-c", script, "sh", sys.executable, str(PROGS / "memhog.py"), *args],
            stdout=subprocess.PIPE,
            text=True,
        )
        if ready:
            line = _readline(proc, timeout)
            if not line.startswith("READY"):
                proc.kill()
                raise RuntimeError(f"memhog did not start in {self.path}: {line!r}")
            proc.ready_pids = [int(x) for x in line.split()[1:]]  # type: ignore[attr-defined]
        return proc


def release_together(procs: Iterable[subprocess.Popen[str]], timeout: float = 120.0) -> None:
    """A barrier for memhogs started with ``--grow-on-sigusr1``: wait until every one has said READY
    (however slowly a loaded machine starts them), then let them all grow at once."""
    procs = list(procs)
    deadline = time.monotonic() + timeout
    for proc in procs:
        line = _readline(proc, max(0.0, deadline - time.monotonic()))
        if not line.startswith("READY"):
            raise RuntimeError(f"memhog {proc.pid} did not say READY within {timeout}s: {line!r}")
        proc.ready_pids = [int(x) for x in line.split()[1:]]  # type: ignore[attr-defined]
    for proc in procs:
        proc.send_signal(signal.SIGUSR1)


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    import selectors

    assert proc.stdout is not None
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    if not sel.select(timeout):
        return ""
    return proc.stdout.readline()


@dataclass
class CgroupKit:
    """A private tree ``<mount>/oomsight-test-<id>/kubepods`` torn down by ``cleanup()``.

    ``version``: ``v1`` (a v1 memory mount) or ``v2`` (a cgroup2 mount with the memory controller)."""

    mount: Path = MEMORY_MOUNT
    version: str = "v1"
    root: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = self.mount / f"oomsight-test-{uuid.uuid4().hex[:8]}"
        self.mkdir(self.root)
        self.mkdir(self.root / "kubepods")

    def mkdir(self, path: Path) -> None:
        """Create ``path`` and its missing parents; on v2 enable the memory controller for each."""
        missing = [p for p in (path, *path.parents) if not p.exists()][::-1]
        for p in missing:
            if self.version == "v2":
                with contextlib.suppress(OSError):  # already enabled, or the mount's root
                    _write(p.parent / "cgroup.subtree_control", "+memory")
            p.mkdir()
        if not missing:
            raise FileExistsError(path)

    def cgroup(self, path: Path) -> Cgroup:
        return Cgroup(path, self.mount, self.version)

    @property
    def kubepods(self) -> Cgroup:
        return self.cgroup(self.root / "kubepods")

    def pod(
        self,
        qos: str = "burstable",
        driver: str = "cgroupfs",
        uid: str | None = None,
        limit: int | None = None,
    ) -> tuple[Cgroup, str]:
        """Create a pod cgroup; return it and the pod UID."""
        uid = uid or str(uuid.uuid4())
        if driver == "cgroupfs":
            parent = self.root / "kubepods"
            if qos != "guaranteed":
                parent = parent / qos
            path = parent / f"pod{uid}"
        elif driver == "systemd":
            parent = self.root / "kubepods.slice"
            us = uid.replace("-", "_")
            if qos == "guaranteed":
                path = parent / f"kubepods-pod{us}.slice"
            else:
                parent = parent / f"kubepods-{qos}.slice"
                path = parent / f"kubepods-{qos}-pod{us}.slice"
        else:
            raise ValueError(driver)
        self.mkdir(path)
        cg = self.cgroup(path)
        if limit is not None:
            cg.set_limit(limit)
        return cg, uid

    def container(
        self,
        pod: Cgroup,
        runtime: str = "containerd",
        limit: int | None = None,
        container_id: str | None = None,
        oom_group: bool | None = None,
    ) -> tuple[Cgroup, str]:
        """Create a container cgroup in ``pod``, named as that runtime and driver name it;
        ``oom_group`` (v2) sets its ``memory.oom.group``."""
        cid = container_id or uuid.uuid4().hex + uuid.uuid4().hex
        systemd = pod.path.name.endswith(".slice")
        if systemd:
            prefix = {"containerd": "cri-containerd", "cri-o": "crio", "docker": "docker"}[runtime]
            name = f"{prefix}-{cid}.scope"
        else:
            name = {"containerd": cid, "cri-o": f"crio-{cid}", "docker": cid}[runtime]
        path = pod.path / name
        self.mkdir(path)
        cg = self.cgroup(path)
        if limit is not None:
            cg.set_limit(limit)
        if oom_group is not None:
            cg.set_oom_group(oom_group)
        return cg, cid

    def cleanup(self, procs: Iterable[subprocess.Popen[str]] = ()) -> None:
        """Kill every process in the test's cgroups (and reap ``procs``, the ones this run started), then
        remove the cgroups, deepest first."""
        for p in procs:
            p.kill()
            p.wait()
            if p.stdout:
                p.stdout.close()
        deadline = time.monotonic() + 10
        while (pids := _pids(self.root)) and time.monotonic() < deadline:
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.05)
        for d in sorted((p for p in self.root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            _rmdir(d)
        _rmdir(self.root)


def _rmdir(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"could not remove test cgroup {path}")


# --------------------------------------------------------------------------------- kubelet-exact pods


@dataclass
class KubeletPod:
    """A pod laid out as the kubelet does: ``pod`` limited to the sum of ``containers``' limits, and a
    ``sandbox`` container cgroup (no limit of its own) holding a sleeping, pause-like process."""

    pod: Cgroup
    uid: str
    sandbox: Cgroup
    sandbox_id: str
    containers: list[Cgroup]
    ids: list[str]
    pause: subprocess.Popen[str] | None

    @property
    def container(self) -> Cgroup:
        return self.containers[0]

    def stop(self) -> None:
        """Stop the pause-like process (``CgroupKit.cleanup`` kills everything else)."""
        if self.pause is not None and self.pause.poll() is None:
            self.pause.kill()
            self.pause.wait()


def kubelet_pod(
    kit: CgroupKit,
    limits: list[int],
    *,
    qos: str = "burstable",
    pod_limit: int | str | None = "sum",
    uid: str | None = None,
    container_ids: list[str] | None = None,
    pause: bool = True,
) -> KubeletPod:
    """Create a pod with one container cgroup per entry of ``limits`` (bytes), as the kubelet's
    cgroupfs driver names them (``kubepods/<qos>/pod<uid>/<container id>``; Guaranteed pods directly
    under ``kubepods``), the sandbox first. ``pod_limit``: ``"sum"`` (what the kubelet writes,
    pkg/kubelet/cm/helpers_linux.go ``ResourceConfigForPod``), a number (a pod-level limit such as
    PodLevelResources), or None. ``pause``: start ``sleep`` in the sandbox cgroup, which charges the
    pod a few hundred KiB as the real pause container does."""
    total = sum(limits) if pod_limit == "sum" else pod_limit
    assert total is None or isinstance(total, int)
    pod, uid = kit.pod(qos=qos, uid=uid, limit=total)
    sandbox, sandbox_id = kit.container(pod)
    pause_proc = sandbox.run("sleep", "100000") if pause else None
    if pause_proc is not None:
        deadline = time.monotonic() + 10
        while not sandbox.procs():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the pause-like process did not join {sandbox.path}")
            time.sleep(0.01)
    ids = list(container_ids or [])
    containers = []
    for i, limit in enumerate(limits):
        cg, cid = kit.container(pod, limit=limit, container_id=ids[i] if i < len(ids) else None)
        containers.append(cg)
        if i >= len(ids):
            ids.append(cid)
    return KubeletPod(pod, uid, sandbox, sandbox_id, containers, ids, pause_proc)


def shell_with_oom_child(
    cg: Cgroup, buffer_bytes: int, timeout: float = 30.0
) -> tuple[subprocess.Popen[str], int]:
    """The issue's container: ``sh`` as its first process runs ``dd`` with a ``buffer_bytes`` buffer
    (more than the limit, so the kernel kills dd), then sleeps on. Returns sh and dd's pid."""
    mib = max(1, buffer_bytes >> 20)
    inner = f"dd if=/dev/zero of=/dev/null bs={mib}M count=1 2>/dev/null & echo $!; wait $!; sleep 100000"
    sh = subprocess.Popen(
        ["sh", "-c", f'echo $$ > "{cg.path}/cgroup.procs" && exec sh -c "$0"', inner],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    line = _readline(sh, timeout)
    if not line.strip().isdigit():
        sh.kill()
        sh.wait()
        raise RuntimeError(f"dd did not start in {cg.path}: {line!r}")
    return sh, int(line)
