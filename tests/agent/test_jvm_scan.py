"""A real JVM in a kubelet-style cgroup, found both ways ``oomsight.host.jvm`` knows (see there):
through ``cgroup.procs`` (host pid namespace) and through one pass over /proc (the chart's agent)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from oomsight.host.jvm import JvmScanner, same_pid_namespace
from realparts import require_binary

pytestmark = [pytest.mark.cgroup]

HOLD = Path(__file__).resolve().parent.parent / "progs" / "Hold.java"
MI = 1 << 20


def _java() -> str:
    return require_binary("java", "OpenJDK 11 or later")


@pytest.fixture
def jvm_scene(cgroups) -> Iterator[tuple[str, str]]:
    """(container cgroup dir running `java -Xmx96m`, an empty sibling container's dir)."""
    java = _java()
    pod, _ = cgroups.pod(qos="burstable")
    cg, _ = cgroups.container(pod, limit=256 * MI)
    idle, _ = cgroups.container(pod, limit=64 * MI)
    env = {k: v for k, v in os.environ.items() if not k.endswith("JAVA_OPTIONS")}
    env["JAVA_TOOL_OPTIONS"] = "-XX:MaxRAMPercentage=50"  # ignored by the consumer: -Xmx wins
    p = subprocess.Popen(
        ["sh", "-c", f'echo $$ > "{cg.path}/cgroup.procs" && exec "$@"', "sh", java, "-Xmx96m", str(HOLD)],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        assert p.stdout is not None
        assert p.stdout.readline().startswith("READY")
        yield str(cg.path), str(idle.path)
    finally:
        p.kill()
        p.wait()
        if p.stdout is not None:
            p.stdout.close()


@pytest.mark.parametrize("by_cgroup_procs", [True, False])
def test_scanner_finds_the_xmx_of_a_real_jvm(jvm_scene, by_cgroup_procs):
    java_dir, idle_dir = jvm_scene
    scan = JvmScanner("/proc", rescan=60, by_cgroup_procs=by_cgroup_procs)
    flags = scan.flags(java_dir, java_dir, now=0.0)
    assert flags is not None
    assert (flags.max_heap_bytes, flags.max_ram_percentage) == (96 * MI, 50.0)
    assert scan.flags(idle_dir, idle_dir, now=0.0) is None
    for t in (1.0, 30.0, 61.0):  # cached, then rescanned: the command line is parsed once
        assert scan.flags(java_dir, java_dir, now=t) == flags
    assert scan.cmdlines_read == 1


def test_pid_namespace_check():
    assert same_pid_namespace("/proc")
    assert same_pid_namespace("/nonexistent")  # unknown: cgroup.procs is tried


def test_from_another_pid_namespace_the_proc_pass_finds_it(jvm_scene):
    # The chart's agent: its own pid namespace, the host's /proc mounted (here: the same /proc, seen
    # from a child pid namespace made by unshare(1)). cgroup.procs is empty from there; the pass is not.
    java_dir, _ = jvm_scene
    code = (
        "import os, sys; from oomsight.host.jvm import JvmScanner; from oomsight.host.processes import "
        "read_cgroup_pids as r; s = JvmScanner('/proc'); d = sys.argv[1]; f = s.flags(d, d, 0.0); "
        "print(s.by_cgroup_procs, len(r(d)), f.max_heap_bytes if f else None)"
    )
    out = subprocess.run(
        ["unshare", "--pid", "--fork", sys.executable, "-c", code, java_dir],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "0", str(96 * MI)]
