"""The memory model on captured file trees: v1 (this machine, 6.18.44), v2 (kernel 5.18-6.1 format),
an old 3.x v1 memory.stat, and broken files. Every fixture records its source (SOURCE files)."""

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

FIXTURES = Path(__file__).parent / "fixtures" / "cgroup"
V1_ROOT = next(FIXTURES.glob("v1-6.18.44*"))
V2_ROOT = FIXTURES / "v2-6.1"
FILES = FIXTURES / "files"
MIB = 1 << 20

V1_POD = "0b6c5f3e-9a51-4d47-8f0e-3c2d1b7a6e90"
V1_CID = "5f0c3a8e1b2d4c6f8a9e7d5b3c1a0f2e4d6b8a9c7e5f3d1b2a4c6e8f0a1b3c5d"
V2_POD1 = "6f1b8c1e-2d3a-4b5c-9e8f-7a6b5c4d3e2f"
V2_CID1 = "4c0b7bc1225d148f13492e3cd4061b28d803701404abddc3d80431ec92d91d93"
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


# ------------------------------------------------------------------------------------ v2, kernel format


def test_v2_tree_through_the_walker():
    layout = detect_layout(V2_ROOT)
    assert (layout.version, layout.memory_version, layout.driver) == ("v2", "v2", "systemd")
    assert layout.kubepods == "/kubepods.slice"
    sweep = CgroupWalker(layout).sweep(with_pids=True)
    by_pod = {e.kube.pod_uid: e for e in sweep.entries if e.kube}
    assert set(by_pod) == {V2_POD1, V2_POD2}

    limited = by_pod[V2_POD1]
    assert limited.kube is not None and limited.kube.container_id == V2_CID1
    assert (limited.kube.qos, limited.kube.runtime) == ("burstable", "containerd")
    # Pod and container both say 256 MiB: the closer one (the container) is the one to change.
    assert (limited.limit.limit_bytes, limited.limit.level) == (268435456, "container")
    r = limited.reading
    assert r is not None and r.version == "v2"
    assert r.working_set_bytes == 134135808  # inactive_file 0
    assert r.peak_bytes == 268435456
    assert r.events is not None and (r.events.max, r.events.oom_kill, r.events.oom_group_kill) == (214, 3, 1)
    assert r.oom_kills == 3
    assert r.oom_group is True
    assert r.pressure is not None and r.pressure.some.avg10 == 1.52
    assert r.pressure.full is not None and r.pressure.full.total_us == 1539022
    assert (r.high_bytes, r.low_bytes, r.min_bytes, r.swap_limit_bytes) == (None, 0, 0, 0)
    assert limited.pids == (48211, 48260)
    b = breakdown(r)
    assert b.as_dict() == {
        "anon": 130629632, "active_file": 0, "inactive_file": 0, "shmem": 2207744,
        "kernel": 1298432, "swap": 0, "dirty": 0, "writeback": 0,
    }

    unlimited = by_pod[V2_POD2]
    assert unlimited.kube is not None and unlimited.kube.qos == "besteffort"
    # No limit on the container, pod or QoS class: the node allocatable on kubepods.slice applies.
    assert (unlimited.limit.limit_bytes, unlimited.limit.level) == (7340032000, "kubepods")
    assert unlimited.reading is not None
    assert unlimited.reading.working_set_bytes == 52232192 - 30445568


def test_v2_kernel_parts_before_5_18():
    """Without the ``kernel`` key (kernels before 5.18) the breakdown sums its parts."""
    directory = next(V2_ROOT.rglob(f"cri-containerd-{V2_CID1}.scope"))
    files = _files(directory, V2_FILES)
    files["memory.stat"] = "".join(
        line + "\n" for line in files["memory.stat"].splitlines() if not line.startswith("kernel ")
    )
    b = breakdown(reading_v2(files))
    # kernel_stack + pagetables + percpu + sock + vmalloc + slab
    assert b.kernel == 81920 + 507904 + 62600 + 0 + 8192 + 422488
    files["memory.stat"] = files["memory.stat"].replace("slab 422488\n", "")
    assert breakdown(reading_v2(files)).kernel == 81920 + 507904 + 62600 + 0 + 8192 + 94856 + 327632


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
    broken = next(root.rglob("kubepods-besteffort-pod*.slice")).glob("cri-containerd-*.scope")
    (next(broken) / file).write_text(content)
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
    assert entry.limit.level == "kubepods"  # the limit is still known from the ancestors
    walker.sweep()
    assert walker.errors_total == 2 and walker.sweeps_total == 2

    rc = main(["top", "--json", "--host-root", str(root)])
    assert rc == 0


def test_top_json_on_v2_tree(capsys):
    assert main(["top", "--json", "--host-root", str(V2_ROOT)]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["cgroup_version"] == "v2" and doc["cgroup_driver"] == "systemd"
    first, second = doc["containers"]
    assert first["pod_uid"] == V2_POD1  # 50% of its limit, before 0.3% of the node's
    assert first["container_id"] == V2_CID1
    assert first["qos"] == "burstable"
    assert first["working_set_bytes"] == 134135808
    assert (first["limit_bytes"], first["limit_level"]) == (268435456, "container")
    assert first["breakdown"]["kernel"] == 1298432
    # cgroup.procs lists two pids; the fixture has no /proc, so both count as gone, none as read.
    assert (first["processes"]["count"], first["processes"]["vanished"]) == (0, 2)
    assert first["oom_kills"] == 3
    assert (second["pod_uid"], second["limit_level"]) == (V2_POD2, "kubepods")
    assert doc["errors"] == 0


def test_top_table_on_v2_tree(capsys):
    assert main(["top", "--host-root", str(V2_ROOT)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split()[:3] == ["POD", "UID", "or"]
    assert out[1].startswith(V2_POD1) and "128Mi" in out[1] and "256Mi" in out[1] and "50%" in out[1]
    assert out[2].startswith(V2_POD2) and "kubepods" in out[2]


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
    setpriv = shutil.which("setpriv")
    if os.geteuid() != 0 or setpriv is None:
        if os.environ.get("CI") == "true":
            pytest.fail("needs root and setpriv (util-linux) to drop the DAC capabilities")
        pytest.skip("needs root and setpriv (util-linux)")
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
