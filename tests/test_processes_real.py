"""Per-container processes, read from real processes in real memory cgroups on this machine.

Every number is checked against what the processes really did (memhog allocates known anon memory),
against psutil's own reading of the same pids, and against the kernel's real OOM kill.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from cgroupkit import MIB, PROGS, Cgroup, CgroupKit
from oomsight.core.errors import ParseError
from oomsight.core.processes import ProcessInfo, parse_stat_state, predict_victim, summarize
from oomsight.host.errors import HostError
from oomsight.host.processes import read_cgroup_pids, read_process, read_processes

pytestmark = pytest.mark.cgroup

PY_BASE = 40 * MIB
"""What a bare Python interpreter running memhog maps on top of what it allocates (measured ~10 MiB)."""


def _spawn(cg: Cgroup, prog: str, *args: str) -> tuple[subprocess.Popen[str], list[int]]:
    """Run tests/progs/PROG inside ``cg`` (joined before exec) and wait for its READY line."""
    script = f'echo $$ > "{cg.path}/cgroup.procs" && exec "$@"'
    proc = subprocess.Popen(
        ["sh", "-c", script, "sh", sys.executable, str(PROGS / prog), *args],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("READY"), line
    return proc, [int(x) for x in line.split()[1:]]


def _stop(*procs: subprocess.Popen[str]) -> None:
    for p in procs:
        with contextlib.suppress(ProcessLookupError):
            p.kill()
        p.wait()
        if p.stdout is not None:
            p.stdout.close()


def test_rss_uss_children_and_oom_score_adj(cgroups: CgroupKit) -> None:
    """Negative oom_score_adj (the kubelet's -997 for Guaranteed pods) needs CAP_SYS_RESOURCE, which this
    sandbox's root lacks (EACCES): only values >= 0 are set for real here."""
    pod, _ = cgroups.pod()
    ctr, _ = cgroups.container(pod)
    proc = ctr.spawn(
        "--anon", "96", "--children", "2", "--child-anon", "24",
        "--oom-score-adj", "500", "--child-oom-score-adj", "100",
    )
    parent, *kids = proc.ready_pids  # type: ignore[attr-defined]
    try:
        pids = read_cgroup_pids(ctr.path)
        assert sorted(pids) == sorted([parent, *kids])

        s = read_processes(pids, uss=True)
        assert (s.count, s.zombies, s.dstate, s.vanished) == (3, 0, 0, 0)
        by_pid = {p.pid: p for p in s.processes}
        p = by_pid[parent]
        assert 96 * MIB <= p.rss_bytes <= 96 * MIB + PY_BASE
        assert p.oom_score_adj == 500
        assert p.uss_bytes is not None and 96 * MIB <= p.uss_bytes <= p.rss_bytes
        for k in kids:
            c = by_pid[k]
            assert 24 * MIB <= c.rss_bytes <= 24 * MIB + PY_BASE
            assert c.oom_score_adj == 100
            # the child shares the interpreter's pages with its parent (copy-on-write): USS < RSS
            assert c.uss_bytes is not None and 24 * MIB <= c.uss_bytes < c.rss_bytes
        # same pids through psutil: RSS agrees to the page (processes are idle)
        for pid, info in by_pid.items():
            assert abs(psutil.Process(pid).memory_info().rss - info.rss_bytes) <= 64 * 1024
            assert abs(psutil.Process(pid).memory_full_info().uss - (info.uss_bytes or 0)) <= 64 * 1024
        assert s.rss_bytes == sum(x.rss_bytes for x in s.processes)
        assert s.uss_bytes == sum(x.uss_bytes or 0 for x in s.processes)
        # oom_score_adj 500 on the largest process: it is the next victim either way
        assert s.next_victim is not None and s.next_victim.pid == parent
        assert read_processes(pids, limit_bytes=256 * MIB).next_victim.pid == parent  # type: ignore[union-attr]
        # the kernel's own view: adj 500 puts the parent above the adj-100 children
        assert p.oom_score > by_pid[kids[0]].oom_score
        # without uss=True nothing reads smaps
        assert read_processes(pids).uss_bytes is None
    finally:
        _stop(proc)


def test_zombies_are_counted_and_never_the_victim(cgroups: CgroupKit) -> None:
    pod, _ = cgroups.pod()
    ctr, _ = cgroups.container(pod)
    proc, (parent, *zombies) = _spawn(ctr, "zombie.py", "--zombies", "3")
    try:
        # cgroup v1 lists zombies in cgroup.procs until they are reaped
        pids = read_cgroup_pids(ctr.path)
        s = read_processes([parent, *zombies])
        assert s.count == 4 and s.zombies == 3
        for z in zombies:
            info = next(p for p in s.processes if p.pid == z)
            assert (info.state, info.rss_bytes) == ("Z", 0)
        assert s.next_victim is not None and s.next_victim.pid == parent
        assert set(pids) <= {parent, *zombies}
    finally:
        _stop(proc)


def test_dstate_under_oom_with_the_killer_disabled(cgroups: CgroupKit) -> None:
    """A real D-state: with oom_kill_disable=1 a task over the limit waits in mem_cgroup_oom_synchronize
    (TASK_KILLABLE, which /proc shows as 'D (disk sleep)') until memory frees or it is killed."""
    pod, _ = cgroups.pod()
    ctr, _ = cgroups.container(pod, limit=48 * MIB)
    (ctr.path / "memory.oom_control").write_text("1")
    proc = ctr.spawn("--anon", "128", ready=False)
    try:
        # wait for the cgroup to be under OOM (a task can also be in D briefly during reclaim before)
        deadline = time.monotonic() + 20
        while "under_oom 1" not in ctr.read("memory.oom_control") and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "under_oom 1" in ctr.read("memory.oom_control")
        time.sleep(0.2)
        s = read_processes([proc.pid])
        assert s.dstate == 1 and s.processes[0].state == "D"
    finally:
        _stop(proc)


PROC_FIXTURES = Path(__file__).parent / "fixtures" / "proc"


@pytest.mark.parametrize(
    ("name", "state"),
    [("stat-dstate-memcg-oom-6.18.44.txt", "D"), ("stat-zombie-6.18.44.txt", "Z")],
)
def test_parse_stat_state_captured(name: str, state: str) -> None:
    """Captured /proc/<pid>/stat (tests/fixtures/proc/SOURCE): a task waiting under memcg OOM, a zombie."""
    line = (PROC_FIXTURES / name).read_text()
    pid, comm, got = parse_stat_state(line)
    assert (comm, got) == ("python3", state) and pid == int(line.split()[0])


def test_parse_stat_state_odd_comm() -> None:
    # comm may hold spaces and ')' (prctl PR_SET_NAME): the state follows the LAST ')'
    assert parse_stat_state("77 (a) (b)) Z 1 77 77 0") == (77, "a) (b)", "Z")


@pytest.mark.parametrize("bad", ["", "garbage", "12 (x) Q 1", "x (y) S 1"])
def test_parse_stat_state_rejects(bad: str) -> None:
    with pytest.raises(ParseError):
        parse_stat_state(bad)


def _kmsg_tail() -> int:
    fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    os.lseek(fd, 0, os.SEEK_END)
    return fd


def _kmsg_read(fd: int) -> list[str]:
    out = []
    while True:
        try:
            rec = os.read(fd, 8192)
        except BlockingIOError:
            return out
        except BrokenPipeError:  # records overwritten while we read: keep going
            continue
        out.append(rec.decode("utf-8", "replace").split(";", 1)[-1])


def test_predicted_victim_is_the_one_the_kernel_kills(cgroups: CgroupKit) -> None:
    """Memcg badness, not oom_score, predicts the kill.

    big: 150 MiB, adj 0. small: 20 MiB with an adj chosen so that adj·RAM/1000 > 200 MiB (oom_score,
    scaled to RAM + swap, ranks small first) while adj·limit/1000 stays a few MiB (the memcg OOM,
    scaled to the 256 MiB limit, ranks big first). Then a grower pushes the cgroup over its limit.
    """
    limit = 256 * MIB
    ram = psutil.virtual_memory().total + psutil.swap_memory().total
    adj = min(999, 200 * MIB * 1000 // ram + 1)
    assert adj * limit // 1000 < 20 * MIB, "machine too small for this scenario"
    pod, _ = cgroups.pod()
    ctr, _ = cgroups.container(pod, limit=limit)
    big = ctr.spawn("--anon", "150")
    small = ctr.spawn("--anon", "20", "--oom-score-adj", str(adj))
    grower = None
    kmsg = _kmsg_tail()
    try:
        pids = read_cgroup_pids(ctr.path)
        by_score = read_processes(pids)
        predicted = read_processes(pids, limit_bytes=limit)
        assert by_score.next_victim is not None and by_score.next_victim.pid == small.pid
        assert predicted.next_victim is not None and predicted.next_victim.pid == big.pid
        assert predicted.victim_basis == "badness"

        oom_before = int(ctr.read("memory.oom_control").split("oom_kill ")[1].split()[0])
        grower = ctr.spawn("--grow-anon-mib", "1")
        big.wait(timeout=60)
        assert big.returncode == -9
        assert small.poll() is None and grower.poll() is None
        oom_after = int(ctr.read("memory.oom_control").split("oom_kill ")[1].split()[0])
        assert oom_after == oom_before + 1
        lines: list[str] = []
        deadline = time.monotonic() + 5
        while not any(f"Killed process {big.pid} " in ln for ln in lines) and time.monotonic() < deadline:
            lines += _kmsg_read(kmsg)
            time.sleep(0.05)
        assert any(f"Killed process {big.pid} " in ln for ln in lines), lines[-5:]
    finally:
        os.close(kmsg)
        _stop(*(p for p in (grower, small, big) if p is not None))


def test_vanished_pids_are_skipped_and_counted() -> None:
    p = subprocess.Popen(["sleep", "30"])
    p.kill()
    p.wait()
    s = read_processes([os.getpid(), p.pid, os.getpid()])
    assert (s.count, s.vanished) == (1, 1)
    assert read_cgroup_pids(Path("/nonexistent/cgroup")) == []


def test_summary_json_and_pure_prediction() -> None:
    a = ProcessInfo(1, "init", "S", 100 * MIB, None, 10, -1000)
    b = ProcessInfo(2, "app", "S", 50 * MIB, None, 700, 0)
    z = ProcessInfo(3, "dead", "Z", 0, None, 0, 999)
    assert predict_victim([a, z]) is None  # -1000 exempt, zombie has no mm
    s = summarize([a, b, z], vanished=2)
    d = s.as_dict()
    assert d["count"] == 3 and d["zombies"] == 1 and d["vanished"] == 2 and d["uss_bytes"] is None
    assert d["errors"] == 0
    assert d["next_victim"] == b.as_dict()
    assert [p["pid"] for p in d["processes"]] == [1, 2, 3]  # type: ignore[attr-defined]


def test_configurable_proc_root(tmp_path: Path) -> None:
    """A pod reads the host's processes under /host/proc: the same files copied under another root."""
    pid = os.getpid()
    d = tmp_path / "proc" / str(pid)
    d.mkdir(parents=True)
    for name in ("status", "oom_score", "oom_score_adj"):
        (d / name).write_text(Path(f"/proc/{pid}/{name}").read_text())
    s = read_processes([pid, 99999999], proc_root=tmp_path / "proc")
    assert (s.count, s.vanished) == (1, 1)
    assert s.processes[0].comm == Path(f"/proc/{pid}/comm").read_text().strip()
    (d / "status").write_text("garbage\n")
    with pytest.raises(HostError, match="Name/State"):
        read_process(pid, proc_root=tmp_path / "proc")
    s = read_processes([pid], proc_root=tmp_path / "proc")  # a sweep skips it and counts it
    assert (s.count, s.errors, s.vanished) == (0, 1, 0)
