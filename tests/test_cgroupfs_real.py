"""The cgroupfs walker on real cgroup v1 memory cgroups built the way a kubelet builds them.

Processes take known amounts of anon memory, page cache and /dev/shm (tmpfs); the kernel accounts
them; the sweep must attribute them to the right pod/container and find the limit that applies.
The working set is checked against cAdvisor's formula computed here, independently, from the files.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cgroupkit import MIB, PROGS, CgroupKit
from oomsight.cli.main import main
from oomsight.core.memory import breakdown
from oomsight.host.cgroupfs import CgroupEntry, CgroupWalker, Sweep, detect_layout
from oomsight.host.errors import Vanished

pytestmark = pytest.mark.cgroup

HOST = Path("/")


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.kill()
    proc.wait(timeout=10)
    if proc.stdout is not None:
        proc.stdout.close()


def _walker() -> CgroupWalker:
    return CgroupWalker(detect_layout(HOST))


def _find(sweep: Sweep, container_id: str) -> CgroupEntry:
    found = [e for e in sweep.entries if e.kube and e.kube.container_id == container_id]
    assert len(found) == 1, [e.path for e in sweep.entries]
    return found[0]


def cadvisor_working_set(directory: Path) -> int:
    """cAdvisor setMemoryStats on v1, written out here from the raw files."""
    usage = int((directory / "memory.usage_in_bytes").read_text())
    stat = dict(line.split() for line in (directory / "memory.stat").read_text().splitlines())
    inactive = int(stat["total_inactive_file"])
    return usage - inactive if usage > inactive else 0


def _assert_working_set(entry: CgroupEntry, directory: Path) -> None:
    assert entry.reading is not None
    expected = cadvisor_working_set(directory)
    assert abs(entry.reading.working_set_bytes - expected) <= 0.02 * expected, (
        entry.reading.working_set_bytes, expected,
    )


@pytest.mark.parametrize(
    ("driver", "qos", "runtime"),
    [
        ("cgroupfs", "burstable", "containerd"),
        ("cgroupfs", "guaranteed", "cri-o"),
        ("systemd", "burstable", "containerd"),
        ("systemd", "besteffort", "cri-o"),
        ("systemd", "guaranteed", "docker"),
    ],
)
def test_anon_memory_is_attributed(cgroups: CgroupKit, driver, qos, runtime):
    pod, uid = cgroups.pod(qos=qos, driver=driver)
    container, cid = cgroups.container(pod, runtime=runtime, limit=512 * MIB)
    proc = container.spawn("--anon", "64")
    try:
        entry = _find(_walker().sweep(with_pids=True), cid)
        assert entry.kube is not None
        assert (entry.kube.pod_uid, entry.kube.container_id, entry.kube.qos) == (uid, cid, qos)
        expected_runtime = {"containerd": "containerd", "cri-o": "cri-o", "docker": "docker"}[runtime]
        if driver == "cgroupfs" and runtime == "containerd":
            expected_runtime = None  # a bare id says nothing about the runtime
        assert entry.kube.runtime == expected_runtime
        assert entry.path == container.rel
        assert (entry.limit.limit_bytes, entry.limit.level, entry.limit.path) == (
            512 * MIB, "container", container.rel,
        )
        r = entry.reading
        assert r is not None and r.version == "v1"
        b = breakdown(r)
        assert b.anon is not None
        # 64 MiB of touched anon, plus the interpreter's own heap (well under 32 MiB).
        assert 64 * MIB <= b.anon <= 96 * MIB
        assert r.usage_bytes >= b.anon
        _assert_working_set(entry, container.path)
        assert entry.pids == (proc.pid,)
    finally:
        _stop(proc)


def test_page_cache_is_file_memory_and_inactive_file_leaves_the_working_set(cgroups: CgroupKit, tmp_path):
    assert os.statvfs(tmp_path).f_blocks  # a disk file system, not tmpfs
    pod, _ = cgroups.pod()
    container, cid = cgroups.container(pod)
    data = tmp_path / f"cache-{uuid.uuid4().hex}"
    proc = container.spawn("--file", str(data), "64")
    try:
        entry = _find(_walker().sweep(), cid)
        assert entry.reading is not None
        b = breakdown(entry.reading)
        assert b.active_file is not None and b.inactive_file is not None
        assert b.active_file + b.inactive_file >= 60 * MIB
        assert b.inactive_file > 0
        assert entry.reading.working_set_bytes == max(0, entry.reading.usage_bytes - b.inactive_file)
        assert entry.reading.working_set_bytes < entry.reading.usage_bytes
        _assert_working_set(entry, container.path)
    finally:
        _stop(proc)
        data.unlink(missing_ok=True)


def test_tmpfs_in_dev_shm_is_shmem_and_stays_in_the_working_set(cgroups: CgroupKit):
    pod, _ = cgroups.pod(driver="systemd")
    container, cid = cgroups.container(pod)
    shm = Path(f"/dev/shm/oomsight-test-{uuid.uuid4().hex}")
    proc = container.spawn("--shm", str(shm), "48")
    try:
        entry = _find(_walker().sweep(), cid)
        assert entry.reading is not None
        b = breakdown(entry.reading)
        # memory.stat counters are batched per CPU (mm/memcontrol.c MEMCG_CHARGE_BATCH, 64 pages):
        # Debian's 5.10 in a hack/vm guest showed the 48 MiB written 12 pages short.
        slack = 64 * 4096 * (os.cpu_count() or 1)
        assert b.shmem is not None and b.shmem >= 48 * MIB - slack
        # shmem is on the anon LRU: never in inactive_file, so the working set keeps all of it.
        assert entry.reading.working_set_bytes >= 48 * MIB - slack
        _assert_working_set(entry, container.path)
    finally:
        _stop(proc)
        shm.unlink(missing_ok=True)


@pytest.mark.parametrize("driver", ["cgroupfs", "systemd"])
def test_pod_limit_tighter_than_the_container(cgroups: CgroupKit, driver):
    pod, _ = cgroups.pod(driver=driver, limit=96 * MIB)
    container, cid = cgroups.container(pod, limit=256 * MIB)
    _, sid = cgroups.container(pod, limit=64 * MIB)
    proc = container.spawn("--anon", "32")
    try:
        sweep = _walker().sweep()
        entry = _find(sweep, cid)
        assert (entry.limit.limit_bytes, entry.limit.level, entry.limit.path) == (96 * MIB, "pod", pod.rel)
        assert entry.reading is not None and entry.reading.limit_bytes == 256 * MIB
        # The kernel's own view of the ancestors' limit agrees.
        assert entry.reading.stat["hierarchical_memory_limit"] == 96 * MIB
        other = _find(sweep, sid)
        assert (other.limit.limit_bytes, other.limit.level) == (64 * MIB, "container")
        _assert_working_set(entry, container.path)
    finally:
        _stop(proc)


def test_qos_and_kubepods_levels(cgroups: CgroupKit):
    (cgroups.kubepods.path / "memory.limit_in_bytes").write_text(str(900 * MIB))
    pod, _ = cgroups.pod(qos="besteffort")
    (pod.path.parent / "memory.limit_in_bytes").write_text(str(300 * MIB))
    container, cid = cgroups.container(pod)
    gpod, _ = cgroups.pod(qos="guaranteed")
    gcontainer, gcid = cgroups.container(gpod)
    sweep = _walker().sweep()
    assert (_find(sweep, cid).limit.limit_bytes, _find(sweep, cid).limit.level) == (300 * MIB, "qos")
    assert (_find(sweep, gcid).limit.limit_bytes, _find(sweep, gcid).limit.level) == (900 * MIB, "kubepods")
    assert container.rel and gcontainer.rel


def test_conmon_is_skipped_and_other_cgroups_listed_by_path(cgroups: CgroupKit):
    pod, _ = cgroups.pod(driver="systemd")
    container, cid = cgroups.container(pod, runtime="cri-o")
    conmon = pod.path / f"crio-conmon-{cid}.scope"
    conmon.mkdir()
    service = cgroups.root / "system.slice" / "containerd.service"
    service.mkdir(parents=True)
    (service / "memory.limit_in_bytes").write_text(str(128 * MIB))
    sweep = _walker().sweep(include_all=True)
    paths = {e.path for e in sweep.entries}
    assert container.rel in paths
    assert not any("conmon" in p for p in paths)
    rel_service = "/" + str(service.relative_to(cgroups.mount))
    [svc] = [e for e in sweep.entries if e.path == rel_service]
    assert svc.kube is None
    assert (svc.limit.limit_bytes, svc.limit.level) == (128 * MIB, "other")
    # Without --all only containers are listed.
    assert all(e.kube and e.kube.level == "container" for e in _walker().sweep().entries)


def test_a_cgroup_removed_mid_sweep_is_skipped_and_counted(cgroups: CgroupKit):
    pod, _ = cgroups.pod()
    doomed, doomed_id = cgroups.container(pod)
    kept, kept_id = cgroups.container(pod)

    class RacingWalker(CgroupWalker):
        """Removes the real cgroup right after it was listed, before its files are read."""

        def _read_cgroup(self, directory, with_pids):  # type: ignore[no-untyped-def]
            if directory.endswith(doomed_id):
                os.rmdir(directory)
            return super()._read_cgroup(directory, with_pids)

    walker = RacingWalker(detect_layout(HOST))
    sweep = walker.sweep()
    assert sweep.vanished == 1 and walker.vanished_total == 1
    assert sweep.errors == 0
    ids = {e.kube.container_id for e in sweep.entries if e.kube}
    assert kept_id in ids and doomed_id not in ids
    with pytest.raises(Vanished):
        walker.read(doomed.rel)
    assert kept.rel


def test_kubepods_trees_are_found_again_after_rediscover_every_sweeps(cgroups: CgroupKit):
    walker = _walker()
    walker.rediscover_every = 2

    def ids() -> set[str | None]:
        return {e.kube.container_id for e in walker.sweep().entries if e.kube}

    ids()  # walks everything, remembers the kubepods trees
    pod, _ = cgroups.pod()
    _, cid = cgroups.container(pod)
    assert cid in ids()  # a new container in a known tree shows at once
    other = CgroupKit()
    try:
        pod2, _ = other.pod(driver="systemd")
        _, cid2 = other.container(pod2)
        assert cid2 not in ids()  # a new kubepods tree elsewhere waits for the next full walk...
        assert cid2 in ids()  # ...which comes after rediscover_every sweeps
        other.cleanup()
        assert cid2 not in ids() and cid in ids()  # a removed tree triggers a walk of everything
        assert cid in ids()
    finally:
        other.cleanup()


def test_without_relist_a_directory_is_listed_again_only_when_its_link_count_moves(cgroups: CgroupKit):
    walker = _walker()
    pod, _ = cgroups.pod()
    first, first_id = cgroups.container(pod)

    def ids(relist: bool) -> set[str | None]:
        return {e.kube.container_id for e in walker.sweep(relist=relist).entries if e.kube}

    assert first_id in ids(True)
    _, second_id = cgroups.container(pod)  # one more child cgroup: the pod's link count moves
    assert {first_id, second_id} <= ids(False)
    # One removed and one made between two sweeps: the link count is as it was, the last listing
    # stands (the agent passes relist when a Pod changed, which a new container comes with)...
    os.rmdir(first.path)
    _, third_id = cgroups.container(pod)
    swept = ids(False)
    assert third_id not in swept and first_id not in swept and second_id in swept
    assert walker.vanished_total >= 1  # the removed one is read, found gone, counted
    assert third_id in ids(True)  # ...and relist finds it
    assert third_id in ids(False)
    # A pod directory removed and made again under the same name is a new inode: listed again.
    for child in [p for p in pod.path.iterdir() if p.is_dir()]:
        child.rmdir()
    pod.path.rmdir()
    cgroups.mkdir(pod.path)
    _, fourth_id = cgroups.container(pod)
    cgroups.container(pod)
    assert fourth_id in ids(False)
    assert fourth_id in ids(False)  # now through the directory kept open (fstat)

    def pod_fds() -> int:
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            with contextlib.suppress(OSError):
                n += os.readlink(f"/proc/self/fd/{fd}").startswith(str(pod.path))
        return n

    assert pod_fds() > 0
    for child in [p for p in pod.path.iterdir() if p.is_dir()]:
        child.rmdir()
    pod.path.rmdir()
    assert fourth_id not in ids(False)  # the pod went: not pinned by the walker's open files
    assert pod_fds() == 0
    walker.close()


def test_files_kept_open_follow_the_cgroups(cgroups: CgroupKit):
    """Between sweeps the walker keeps each container's files open and re-reads them (pread at 0):
    the values must be fresh, and a removed cgroup's files must be closed, not pinned."""
    pod, _ = cgroups.pod()
    container, cid = cgroups.container(pod)
    gone, gone_id = cgroups.container(pod)
    def cgroup_fds() -> int:
        n = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                n += os.readlink(f"/proc/self/fd/{fd}").startswith(str(cgroups.root))
            except OSError:
                continue
        return n

    assert cgroup_fds() == 0
    with _walker() as walker:
        first = _find(walker.sweep(), cid)
        assert first.reading is not None and first.reading.usage_bytes < 8 * MIB
        again = _find(walker.sweep(), cid)
        assert again.reading is first.reading  # idle: the same text, the parse is skipped
        proc = container.spawn("--anon", "24")
        try:
            second = _find(walker.sweep(), cid)
            assert second.reading is not None and second.reading.usage_bytes >= 24 * MIB  # not stale
        finally:
            _stop(proc)
        kept = cgroup_fds()
        assert kept >= 2 * 5  # two containers, five files each
        os.rmdir(gone.path)
        sweep = walker.sweep()
        assert gone_id not in {e.kube.container_id for e in sweep.entries if e.kube}
        assert cgroup_fds() == kept - 5  # the removed cgroup's files were closed
        full = walker.read(container.rel)  # every file the model parses, not the sweep's subset
        assert full.peak_bytes is not None and full.peak_bytes >= 24 * MIB
        assert full.failcnt == 0
    assert cgroup_fds() == 0


def test_top_json_shows_the_kubelet_tree(cgroups: CgroupKit, capsys):
    pod, uid = cgroups.pod(qos="burstable", driver="systemd", limit=128 * MIB)
    container, cid = cgroups.container(pod, limit=256 * MIB)
    _stop(container.spawn("--anon", "72"))  # gone, but the cgroup's peak keeps it
    proc = container.spawn("--anon", "40")
    try:
        assert main(["top", "--json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        [c] = [c for c in doc["containers"] if c["container_id"] == cid]
        assert c["cgroup"] == container.rel
        assert (c["pod_uid"], c["qos"]) == (uid, "burstable")
        assert (c["limit_bytes"], c["limit_level"]) == (128 * MIB, "pod")
        expected = cadvisor_working_set(container.path)
        assert abs(c["working_set_bytes"] - expected) <= 0.02 * expected
        assert c["breakdown"]["anon"] >= 40 * MIB
        assert set(c["breakdown"]) == {
            "anon", "active_file", "inactive_file", "shmem", "kernel", "swap", "dirty", "writeback",
        }
        procs = c["processes"]
        assert procs["count"] == 1
        assert procs["rss_bytes"] >= 40 * MIB
        assert procs["next_victim"]["pid"] == proc.pid
        assert doc["cgroup_version"] == "hybrid" and doc["memory_cgroup_version"] == "v1"
        assert c["peak_bytes"] >= 72 * MIB > c["working_set_bytes"]  # memory.max_usage_in_bytes
        assert c["pressure"] is None  # PSI is per cgroup on v2 only
    finally:
        _stop(proc)


def test_oom_kills_reads_the_counter_of_a_real_kill_kept_open_or_not(cgroups: CgroupKit):
    """The counter alone (``memory.oom_control``), read through the sweep's kept-open file or, for a
    cgroup no sweep has opened, from its path; a removed cgroup is Vanished."""
    pod, _ = cgroups.pod()
    cg, _ = cgroups.container(pod, limit=32 * MIB)
    walker = _walker()
    assert walker.oom_kills(cg.rel) == 0  # never swept: read from the path
    hog = cg.run(sys.executable, str(PROGS / "memhog.py"), "--grow-anon-mib", "4")
    assert hog.wait(60) == -9
    assert walker.oom_kills(cg.rel) == 1
    walker.sweep()  # now kept open
    hog = cg.run(sys.executable, str(PROGS / "memhog.py"), "--grow-anon-mib", "4")
    assert hog.wait(60) == -9
    assert walker.oom_kills(cg.rel) == 2
    assert _find(walker.sweep(), cg.name).reading.oom_kills == 2  # the same as the full reading
    cg.path.rmdir()
    with pytest.raises(Vanished):
        walker.oom_kills(cg.rel)
