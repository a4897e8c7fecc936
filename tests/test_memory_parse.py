"""The memory model on captured file trees: v1 (this machine, 6.18.44), v2 (two public OOM-time captures,
Ubuntu 5.15 and Debian 6.1, arranged as kubelet pods), an old 3.x v1 memory.stat, and broken files.
Every fixture records its source (SOURCE files)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from oomsight.cli.main import main
from oomsight.core.errors import ParseError
from oomsight.core.memory import (
    V1_FILES,
    V2_FILES,
    breakdown,
    effective_limit,
    parse_flat_keyed,
    parse_int,
    parse_pressure,
    parse_v1_limit,
    parse_v2_limit,
    reading_v1,
    reading_v2,
)
from oomsight.host.cgroupfs import CgroupWalker, detect_layout
from realparts import require_binary, unavailable

FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"
V1_ROOT = next(FIXTURES.glob("v1-6.18.44*"))
V2_ROOT = FIXTURES / "v2-5.15-6.1"
FILES = FIXTURES / "files"
MIB = 1 << 20

V1_POD = "0b6c5f3e-9a51-4d47-8f0e-3c2d1b7a6e90"
V1_CID = "5f0c3a8e1b2d4c6f8a9e7d5b3c1a0f2e4d6b8a9c7e5f3d1b2a4c6e8f0a1b3c5d"
V2_POD1 = "6f1b8c1e-2d3a-4b5c-9e8f-7a6b5c4d3e2f"
V2_CID1 = "3193584578ea07bf5ee503289e7fe7b69f20e60ad236b2b5ce2274419856f8f3"
V2_POD2 = "a0c4e2f6-8b1d-4e3f-a5c7-9d1b3f5e7a9c"


def _files(directory: Path, names: tuple[str, ...]) -> dict[str, str]:
    return {n: (directory / n).read_text() for n in names if (directory / n).exists()}


def _stat(text: str) -> dict[str, int]:
    return {k: int(v) for k, v in (line.split() for line in text.splitlines())}


# ------------------------------------------------------------------------------------ v1, captured here


def test_v1_captured_tree_through_the_walker():
    layout = detect_layout(V1_ROOT)
    assert (layout.version, layout.memory_version, layout.driver) == ("v1", "v1", "cgroupfs")
    sweep = CgroupWalker(layout).sweep()
    assert (sweep.vanished, sweep.errors) == (0, 0)
    [entry] = sweep.entries
    assert entry.kube is not None
    assert (entry.kube.pod_uid, entry.kube.container_id, entry.kube.qos) == (V1_POD, V1_CID, "burstable")
    # The pod's 192 MiB is tighter than the container's 256 MiB.
    assert entry.limit.limit_bytes == 192 * MIB
    assert entry.limit.level == "pod"
    assert entry.limit.path is not None and entry.limit.path.endswith(f"pod{V1_POD}")

    directory = layout.memory_root / entry.path.lstrip("/")
    stat = _stat((directory / "memory.stat").read_text())
    usage = int((directory / "memory.usage_in_bytes").read_text())
    assert stat["hierarchical_memory_limit"] == entry.limit.limit_bytes  # the kernel agrees
    reading = entry.reading
    assert reading is not None
    assert reading.working_set_bytes == usage - stat["total_inactive_file"]
    b = breakdown(reading)
    assert b.anon == stat["total_rss"] and b.anon >= 48 * MIB
    assert b.shmem == 16 * MIB  # memhog --shm 16
    assert b.inactive_file is not None and b.active_file is not None
    assert b.inactive_file + b.active_file >= 24 * MIB  # memhog --file 24, read back into the cache
    assert b.kernel == int((directory / "memory.kmem.usage_in_bytes").read_text())
    assert (b.swap, b.dirty, b.writeback) == (0, 0, 0)
    assert reading.oom_control is not None and reading.oom_control.oom_kill == 0
    assert reading.oom_kills == 0
    assert reading.use_hierarchy is True
    assert reading.memsw_limit_bytes is None  # 9223372036854771712 = unlimited


# ------------------------------------------------------------------------------- v2, captured (5.15 and 6.1)


def test_v2_tree_through_the_walker():
    """Two real v2 OOM-time captures (tests/fixtures/cgroup/v2-5.15-6.1/SOURCE) arranged as kubelet pods."""
    layout = detect_layout(V2_ROOT)
    assert (layout.version, layout.memory_version, layout.driver) == ("v2", "v2", "systemd")
    assert layout.kubepods == "/kubepods.slice"
    sweep = CgroupWalker(layout).sweep(with_pids=True)
    assert (sweep.vanished, sweep.errors) == (0, 0)
    by_pod = {e.kube.pod_uid: e for e in sweep.entries if e.kube}
    assert set(by_pod) == {V2_POD1, V2_POD2}

    # A: Ubuntu 5.15.0-107, a docker scope limited to 8 MiB, read at its OOM kill.
    a = by_pod[V2_POD1]
    assert a.kube is not None and a.kube.container_id == V2_CID1
    assert (a.kube.qos, a.kube.runtime) == ("burstable", "docker")
    # No memory.max above the scope in the capture: the container's own 8 MiB is the limit.
    assert (a.limit.limit_bytes, a.limit.level) == (8388608, "container")
    r = a.reading
    assert r is not None and r.version == "v2"
    assert r.usage_bytes == 8192 * 1024  # "memory: usage 8192kB"
    assert r.working_set_bytes == 8388608 - 8192  # inactive_file 8192
    # 5.15 has no memory.peak (5.19+); memory.events/pressure were not captured.
    assert (r.peak_bytes, r.events, r.events_local, r.pressure, r.oom_kills) == (None, None, None, None, None)
    assert r.oom_group is False  # memory.oom.group 0
    assert (r.high_bytes, r.low_bytes, r.min_bytes) == (None, None, None)  # high "max"; low/min not captured
    # "swap: usage 8192kB, limit 8192kB"
    assert (r.swap_usage_bytes, r.swap_limit_bytes) == (8388608, 8388608)
    assert a.pids == (3920, 3974)
    b = breakdown(r)
    # 5.15 prints no ``kernel`` key: kernel_stack + pagetables + percpu + sock + slab (no vmalloc key either).
    assert b.as_dict() == {
        "anon": 7688192, "active_file": 4096, "inactive_file": 8192, "shmem": 0,
        "kernel": 32768 + 110592 + 144 + 0 + 189840, "swap": 8388608, "dirty": 0, "writeback": 0,
    }

    # B: Debian 6.1.90, a 20 MiB cgroup read at its OOM kill, arranged as a guaranteed pod's container.
    g = by_pod[V2_POD2]
    assert g.kube is not None and (g.kube.qos, g.kube.runtime) == ("guaranteed", "containerd")
    assert (g.limit.limit_bytes, g.limit.level) == (20971520, "container")
    assert g.reading is not None
    assert g.reading.working_set_bytes == 20480 * 1024  # inactive_file 0: all of "memory: usage 20480kB"
    assert g.reading.oom_group is None  # not captured
    assert (g.reading.swap_usage_bytes, g.reading.swap_limit_bytes) == (0, 0)
    assert g.pids == (3713, 4045)
    assert breakdown(g.reading).as_dict() == {
        "anon": 20705280, "active_file": 0, "inactive_file": 0, "shmem": 0,
        "kernel": 188416, "swap": 0, "dirty": 0, "writeback": 0,
    }
    # The 6.1 keys the parser has no use for are kept as printed.
    assert {k: g.reading.stat[k] for k in ("sec_pagetables", "zswap", "zswapped", "zswpin")} == dict.fromkeys(
        ("sec_pagetables", "zswap", "zswapped", "zswpin"), 0
    )
    assert g.reading.stat["anon_thp"] == 18874368


def test_v2_kernel_parts_before_5_18():
    """Without the ``kernel`` key (the real 5.15 capture) the breakdown sums its parts; before 5.9 there is
    no ``slab`` key either, only its two halves (simulated here by dropping the line from the capture)."""
    directory = next(V2_ROOT.rglob(f"docker-{V2_CID1}.scope"))
    files = _files(directory, V2_FILES)
    assert "\nkernel " not in files["memory.stat"]
    # kernel_stack + pagetables + percpu + sock + slab
    assert breakdown(reading_v2(files)).kernel == 32768 + 110592 + 144 + 0 + 189840
    files["memory.stat"] = files["memory.stat"].replace("slab 189840\n", "")
    # slab_reclaimable + slab_unreclaimable = 84384 + 105456 = the 189840 the kernel printed as slab
    assert breakdown(reading_v2(files)).kernel == 32768 + 110592 + 144 + 0 + 84384 + 105456


def test_v2_6_1_kernel_key_wins_over_parts():
    """With ``kernel`` (5.18+) the breakdown takes it as printed: 188416 in the 6.1 capture, more than
    its listed parts (16384 + 81920 + 0 + 0 + 0 + 18752): kmem charges whole pages for objects the
    per-kind counters count in bytes."""
    directory = next(V2_ROOT.rglob("cri-containerd-*.scope"))
    files = _files(directory, V2_FILES)
    assert breakdown(reading_v2(files)).kernel == 188416


# ------------------------------------------------------------------------------------ old v1 kernels


def test_v1_3x_memory_stat_from_docker_docs():
    text = (FILES / "v1-3.x-docker-docs.memory.stat").read_text()
    stat = _stat(text)
    # memory.usage_in_bytes is not in the capture; rss + cache is the exact v1 figure.
    usage = stat["total_rss"] + stat["total_cache"]
    files = {
        "memory.usage_in_bytes": f"{usage}\n",
        "memory.limit_in_bytes": "9223372036854775807\n",  # LLONG_MAX: "no limit" before 3.19
        "memory.stat": text,
        "memory.oom_control": (FILES / "v1-pre-4.13.memory.oom_control").read_text(),
    }
    r = reading_v1(files)
    assert r.limit_bytes is None
    assert parse_v1_limit("hierarchical_memory_limit", str(stat["hierarchical_memory_limit"])) is None
    assert r.working_set_bytes == usage - 7003344896
    b = breakdown(r)
    assert (b.anon, b.active_file, b.inactive_file) == (1930993664, 4489052160, 7003344896)
    # That kernel printed no shmem/dirty/writeback keys, and there is no kmem file in the capture.
    assert (b.shmem, b.dirty, b.writeback, b.kernel) == (None, None, None, None)
    assert b.swap == 0
    assert r.oom_control is not None and r.oom_control.oom_kill is None and r.oom_kills is None
    assert r.oom_control.oom_kill_disable is False and r.oom_control.under_oom is False


def test_v2_pre_5_17_files_from_a_raspberry_pi():
    """Real v2 files of a kernel older than 5.17 (files/SOURCE): memory.events without ``oom_group_kill``,
    memory.stat without ``kernel`` and ``pagetables``."""
    files = {
        "memory.current": (FILES / "v2-rpi-pre-5.17.memory.current").read_text(),
        "memory.stat": (FILES / "v2-rpi-pre-5.17.memory.stat").read_text(),
        "memory.events": (FILES / "v2-rpi-pre-5.17.memory.events").read_text(),
    }
    r = reading_v2(files)
    assert r.events is not None
    assert (r.events.low, r.events.high, r.events.max, r.events.oom, r.events.oom_kill) == (0, 0, 4878, 4, 2)
    assert r.events.oom_group_kill is None  # the line did not exist yet
    assert r.oom_kills == 2
    assert r.working_set_bytes == 954368  # inactive_file 0
    b = breakdown(r)
    # kernel_stack + percpu + sock + slab; no pagetables key on that kernel
    assert (b.anon, b.kernel, b.shmem, b.inactive_file) == (405504, 40960 + 0 + 0 + 0, 0, 0)
    assert b.swap is None  # no memory.swap.current read


@pytest.mark.parametrize(
    ("use_hierarchy", "drop_total", "expected_inactive"),
    [
        ("1\n", False, 7003344896),   # hierarchical: total_inactive_file
        ("0\n", False, 7003344896),   # not hierarchical: the local inactive_file (same value here)
        ("1\n", True, 7003344896),    # no total_* keys: fall back to the local key
    ],
)
def test_v1_inactive_file_choice(use_hierarchy, drop_total, expected_inactive):
    text = (FILES / "v1-3.x-docker-docs.memory.stat").read_text()
    # Make local and total differ so the choice is visible.
    text = text.replace("\ninactive_file 7003344896", "\ninactive_file 1000")
    if drop_total:
        text = "".join(line + "\n" for line in text.splitlines() if not line.startswith("total_"))
        expected_inactive = 1000
    elif use_hierarchy == "0\n":
        expected_inactive = 1000
    files = {
        "memory.usage_in_bytes": "13423558656\n",
        "memory.limit_in_bytes": "9223372036854771712\n",
        "memory.stat": text,
        "memory.use_hierarchy": use_hierarchy,
    }
    r = reading_v1(files)
    assert r.inactive_file_bytes == expected_inactive
    assert r.working_set_bytes == 13423558656 - expected_inactive


def test_working_set_clamps_at_zero():
    files = {"memory.current": "4096\n", "memory.stat": "anon 0\ninactive_file 8192\n"}
    assert reading_v2(files).working_set_bytes == 0


# ------------------------------------------------------------------------------------ limits


@pytest.mark.parametrize(
    ("chain", "limit", "level"),
    [
        ([("/", None), ("/kubepods", 8 << 30), ("/kubepods/burstable", None),
          ("/kubepods/burstable/pod6f1b8c1e-2d3a-4b5c-9e8f-7a6b5c4d3e2f", 100 * MIB),
          (f"/kubepods/burstable/pod6f1b8c1e-2d3a-4b5c-9e8f-7a6b5c4d3e2f/{V1_CID}", 200 * MIB)],
         100 * MIB, "pod"),
        ([("/", None), ("/kubepods", 8 << 30), ("/kubepods/burstable", 64 * MIB),
          ("/kubepods/burstable/pod6f1b8c1e-2d3a-4b5c-9e8f-7a6b5c4d3e2f", None),
          (f"/kubepods/burstable/pod6f1b8c1e-2d3a-4b5c-9e8f-7a6b5c4d3e2f/{V1_CID}", None)],
         64 * MIB, "qos"),
        ([("/", None), ("/kubepods.slice", 7 << 30), ("/kubepods.slice/kubepods-besteffort.slice", None),
          ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-poda0c4e2f6_8b1d_4e3f_a5c7_9d1b3f5e7a9c.slice",
           None)],
         7 << 30, "kubepods"),
        ([("/", None), ("/docker/abc", 1 * MIB), ("/docker/abc/kubepods", 8 << 30)], 1 * MIB, "other"),
        ([("/", None), ("/system.slice", None)], None, None),
    ],
)
def test_effective_limit(chain, limit, level):
    eff = effective_limit(chain)
    assert (eff.limit_bytes, eff.level) == (limit, level)


# ------------------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("parse", "name", "text"),
    [
        (parse_int, "memory.usage_in_bytes", "max\n"),
        (parse_int, "memory.current", "max\n"),
        (parse_int, "memory.current", ""),
        (parse_int, "memory.current", "12\x0034"),
        (parse_v2_limit, "memory.max", "256Mi\n"),
        (parse_v1_limit, "memory.limit_in_bytes", "-1\n"),
        (parse_flat_keyed, "memory.stat", "cache 41943040\nrss 56672256\ntotal_inactive_fi"),
        (parse_flat_keyed, "memory.stat", "cache 41943040\nrss max\n"),
        (parse_flat_keyed, "memory.stat", ""),
        (parse_flat_keyed, "memory.events", "\x00\x00\x00"),
        (parse_pressure, "memory.pressure", "some avg10=0.00 avg60=\n"),
        (parse_pressure, "memory.pressure", "full avg10=0.00 avg60=0.00 avg300=0.00 total=0\n"),
    ],
)
def test_bad_file_raises_parse_error_naming_it(parse, name, text):
    with pytest.raises(ParseError) as err:
        parse(name, text)
    assert str(err.value).startswith((f"{name}: expected", f"{name}: truncated"))
    assert "\n" not in str(err.value)


def test_missing_required_file():
    with pytest.raises(ParseError, match=r"^memory\.stat is missing"):
        reading_v2({"memory.current": "1\n"})
    with pytest.raises(ParseError, match="oom_kill_disable"):
        reading_v1({"memory.usage_in_bytes": "1", "memory.limit_in_bytes": "1", "memory.stat": "rss 1\n",
                    "memory.oom_control": "oom_kill 3\n"})


@pytest.mark.parametrize(
    ("file", "content", "message"),
    [
        ("memory.stat", "anon 8949760\nfile 41984000\nkernel 1298", None),  # truncated mid-line
        ("memory.current", "max\n", "memory.current: expected one integer, got 'max'"),
        ("memory.events", "low 0\nhigh 0\n", "memory.events: expected the key 'max'"),
    ],
)
def test_sweep_lists_a_broken_cgroup_and_goes_on(tmp_path, file, content, message):
    root = tmp_path / "host"
    shutil.copytree(V2_ROOT, root)
    broken = next(root.rglob("kubepods-pod*.slice")).glob("cri-containerd-*.scope")
    (next(broken) / file).write_text(content)  # B, the 6.1 capture; memory.events is new there
    walker = CgroupWalker(detect_layout(root))
    sweep = walker.sweep()
    assert sweep.errors == 1
    good = [e for e in sweep.entries if e.reading is not None]
    bad = [e for e in sweep.entries if e.reading is None]
    assert [e.kube.pod_uid for e in good if e.kube] == [V2_POD1]
    [entry] = bad
    assert entry.kube is not None and entry.kube.pod_uid == V2_POD2
    assert entry.error is not None and entry.error.startswith(file)
    if message:
        assert message in entry.error
    # The limit is still known: memory.max is read apart from the broken file.
    assert (entry.limit.limit_bytes, entry.limit.level) == (20971520, "container")
    walker.sweep()
    assert walker.errors_total == 2 and walker.sweeps_total == 2

    rc = main(["top", "--json", "--host-root", str(root)])
    assert rc == 0


def test_top_json_on_v2_tree(capsys):
    assert main(["top", "--json", "--host-root", str(V2_ROOT)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cgroup_version"] == "v2" and doc["cgroup_driver"] == "systemd"
    first, second = doc["containers"]
    # B uses 100% of its limit (inactive_file 0), A 99.9% (8380416 of 8388608): B first.
    assert first["pod_uid"] == V2_POD2 and first["qos"] == "guaranteed"
    assert (first["working_set_bytes"], first["limit_bytes"], first["limit_level"]) == (
        20971520, 20971520, "container")
    assert first["working_set_ratio"] == 1.0
    assert first["breakdown"]["kernel"] == 188416
    assert second["pod_uid"] == V2_POD1
    assert second["container_id"] == V2_CID1
    assert (second["qos"], second["runtime"]) == ("burstable", "docker")
    assert (second["working_set_bytes"], second["usage_bytes"]) == (8380416, 8388608)
    assert second["working_set_ratio"] == 0.999
    assert (second["limit_bytes"], second["limit_level"]) == (8388608, "container")
    assert second["breakdown"]["kernel"] == 333344
    assert second["breakdown"]["swap"] == 8388608
    # cgroup.procs lists two pids; the fixture has no /proc, so both count as gone, none as read.
    assert (second["processes"]["count"], second["processes"]["vanished"]) == (0, 2)
    assert first["oom_kills"] is None and second["oom_kills"] is None  # no memory.events captured
    assert doc["errors"] == 0


def test_top_table_on_v2_tree(capsys):
    assert main(["top", "--host-root", str(V2_ROOT)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["POD", "UID", "or"]
    row1, row2 = out[1].split(), out[2].split()
    assert row1[:8] == [V2_POD2, "9e2a6d4c8b0f", "guaranteed", "20Mi", "20Mi", "container", "100%", "20Mi"]
    assert row2[:8] == [V2_POD1, V2_CID1[:12], "burstable", "8.0Mi", "8.0Mi", "container", "100%", "7.3Mi"]


def test_wrong_host_root_is_one_line(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "oomsight", "top", "--host-root", str(tmp_path)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2
    assert proc.stdout == ""
    lines = proc.stderr.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith(f"oomsight top: no cgroup filesystem at {tmp_path}/sys/fs/cgroup")
    assert "--host-root" in lines[0]


def test_permission_denied_is_one_line(tmp_path):
    """A real EACCES: root without CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH, on a tree it does not own."""
    if os.geteuid() != 0:
        unavailable("needs root, to drop the DAC capabilities")
    setpriv = require_binary("setpriv", "util-linux; it drops the DAC capabilities")
    root = tmp_path / "host"
    shutil.copytree(V2_ROOT, root)
    os.chown(root / "sys/fs/cgroup", 65534, 65534)
    os.chmod(root / "sys/fs/cgroup", 0o700)
    drop = "-dac_override,-dac_read_search"
    proc = subprocess.run(
        [setpriv, f"--bounding-set={drop}", f"--inh-caps={drop}",
         sys.executable, "-m", "oomsight", "top", "--host-root", str(root)],
        capture_output=True, text=True, check=False,
    )
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1, proc.stderr
    assert "permission denied" in lines[0] and "run as root" in lines[0]


def test_v1_files_cover_the_captured_tree():
    directory = next(V1_ROOT.rglob(V1_CID))
    assert set(_files(directory, V1_FILES)) == set(V1_FILES)  # this kernel has every file we read


def test_agent_v2_files_a_missing_peak_or_pressure_is_looked_for_once_per_cgroup(tmp_path):
    """The agent reads memory.peak (5.19+) and memory.pressure where they exist; a file its kernel
    lacks is remembered as absent per cgroup (no open per sweep), so older kernels cost nothing."""
    from oomsight.agent.loop import AGENT_V2_FILES

    root = tmp_path / "host"
    shutil.copytree(V2_ROOT, root)
    walker = CgroupWalker(detect_layout(root), AGENT_V2_FILES)
    by_pod = {e.kube.pod_uid: e for e in walker.sweep().entries if e.kube}
    assert by_pod[V2_POD1].reading is not None and by_pod[V2_POD1].reading.peak_bytes is None
    scope = root / "sys/fs/cgroup" / by_pod[V2_POD2].path.lstrip("/")
    (scope / "memory.peak").write_text("23068672\n")
    (scope / "memory.pressure").write_text(
        "some avg10=1.00 avg60=0.50 avg300=0.10 total=1500\n"
        "full avg10=0.50 avg60=0.20 avg300=0.00 total=900\n"
    )
    again = {e.kube.pod_uid: e.reading for e in walker.sweep().entries if e.kube}
    b = again[V2_POD2]
    assert b is not None and (b.peak_bytes, b.pressure) == (None, None)
    other = CgroupWalker(detect_layout(root), AGENT_V2_FILES)
    fresh = {e.kube.pod_uid: e.reading for e in other.sweep().entries if e.kube}
    r = fresh[V2_POD2]
    assert r is not None and r.peak_bytes == 23068672
    assert r.pressure is not None and r.pressure.full is not None and r.pressure.full.total_us == 900
    assert fresh[V2_POD1] is not None and fresh[V2_POD1].peak_bytes is None
