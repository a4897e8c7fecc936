"""Real cgroup v2 on Debian's 5.10, 6.1 and 6.12 kernels: OOM scenarios in a hack/vm guest.

One guest boot per kernel runs every scenario of ``tests/vm/guest_scenarios.py`` (TCG is slow), and
these tests assert on what it recorded: for each real kill, ``oomsight diagnose --json`` and the
agent's detection path (its kmsg reader, assembler and cgroup walker) name the right pod,
container, scope, limit, survival and dominant memory, and report the kill exactly once; where the
kernel killed nothing (page cache, memory.high throttling) nothing is reported; ``oomsight top
--json`` shows the live containers as the kernel accounts them.

``OOMSIGHT_VM_KERNELS`` picks the kernels (default all three). Without qemu or a kernel the tests
skip with the reason, and fail under ``CI=true``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from oomsight.core import events
from oomsight.core.node import V1_ONLY_FINDINGS
from realparts import unavailable

pytestmark = pytest.mark.vm

REPO = Path(__file__).resolve().parent.parent.parent
KERNELS = os.environ.get("OOMSIGHT_VM_KERNELS", "5.10 6.1 6.12").split()
SMOKE_KERNELS = set(os.environ.get("OOMSIGHT_VM_SMOKE", "").split())
"""Kernels that run only ``SMOKE`` (when CI time is short: the full matrix on one kernel)."""
MIB = 1 << 20
KILLS = ("node_wide", "main_killed", "child_killed", "group_kill", "pod_limit", "kubepods_limit", "shmem")
QUIET = ("page_cache", "memory_high")
SMOKE = ("main_killed", "child_killed", "shmem", "page_cache")


def uses(*names: str) -> Any:
    """Name the scenarios a test reads (tests/vm/conftest.py deselects it on a smoke kernel without them)."""

    def mark(fn: Any) -> Any:
        fn.scenarios = names
        return fn

    return mark


def ran(guest: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` this guest ran (all of them, but on a smoke kernel)."""
    return [n for n in names if n in guest["scenarios"]]


def vm_lib() -> ModuleType:
    """hack/vm_lib.py, loaded by path (hack/ is not a package)."""
    if "vm_lib" in sys.modules:
        return sys.modules["vm_lib"]
    spec = importlib.util.spec_from_file_location("vm_lib", REPO / "hack" / "vm_lib.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["vm_lib"] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


def release_tuple(release: str) -> tuple[int, int]:
    major, minor = release.split(".")[:2]
    return int(major), int(minor)


def guest_results(
    series: str, out: Path, mem: str, script: str, *args: str, timeout: float
) -> dict[str, Any]:
    """Boot ``series`` once with ``out`` shared, run ``python3 <script> <out> <args>`` as root there,
    and return the ``results.json`` it wrote (plus ``out`` and ``series``); a missing qemu or kernel
    is ``unavailable`` (a failure under CI=true), a failed guest run an assertion with its output."""
    vm = vm_lib()
    try:
        vm.ensure_host_tools()
        vm.check_tcg()
    except vm.VmError as err:
        unavailable(f"hack/vm cannot run: {err}")
    build = subprocess.run(
        [str(REPO / "hack" / "vm"), "build", "--kernel", series], capture_output=True, text=True, check=False
    )
    if build.returncode != 0:
        unavailable(f"hack/vm build --kernel {series} failed: {build.stderr.strip().splitlines()[-1:]}")
    proc = subprocess.run(
        [
            str(REPO / "hack" / "vm"), "run", "--kernel", series, "--mem", mem, "--share", str(out),
            "--", "python3", script, str(out), *args,
        ],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=timeout,
    )  # fmt: skip
    tail = f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert proc.returncode == 0, f"{script} on {series} failed:\n{tail}"
    results: dict[str, Any] = json.loads((out / "results.json").read_text())
    assert "error" not in results, f"{series}: {results['error']}\n{tail}"
    results["out"] = out
    results["series"] = series
    return results


@pytest.fixture(scope="module", params=KERNELS)
def guest(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Boot the kernel once, run every scenario, return ``results.json`` (plus ``out``: its dir)."""
    series = request.param
    out = tmp_path_factory.mktemp(f"vm-{series}")
    smoke = SMOKE if series in SMOKE_KERNELS else ()
    return guest_results(series, out, "1G", "tests/vm/guest_scenarios.py", *smoke, timeout=1800)


def scenario(guest: dict[str, Any], name: str) -> dict[str, Any]:
    s: dict[str, Any] = guest["scenarios"][name]
    assert "error" not in s, f"{guest['series']}: scenario {name}: {s.get('error')}"
    return s


def pods_of(s: dict[str, Any]) -> set[str]:
    return set(s.get("pod_uids") or [s["pod_uid"]])


def incidents_for(incidents: list[dict[str, Any]], s: dict[str, Any]) -> list[dict[str, Any]]:
    return [i for i in incidents if i["pod_uid"] in pods_of(s)]


def test_the_guest_is_the_kernel_asked_for_on_cgroup_v2(guest: dict[str, Any]) -> None:
    assert guest["kernel"].startswith(guest["series"] + ".")
    node = guest["node"]["json"]
    assert guest["node"]["rc"] == 0
    assert node["cgroup_version"] == "v2"
    assert node["memory_cgroup_version"] == "v2"
    assert node["kernel"] == guest["kernel"]


@pytest.mark.parametrize("name", KILLS)
def test_each_kill_happened_for_real(guest: dict[str, Any], name: str) -> None:
    s = scenario(guest, name)
    assert s["events"]["oom_kill"] >= 1, s["events"]


@pytest.mark.parametrize("name", KILLS)
def test_diagnose_explains_each_kill_once(guest: dict[str, Any], name: str) -> None:
    s = scenario(guest, name)
    doc = guest["diagnose"]["json"]
    assert doc["kmsg"]["error"] is None and doc["kmsg"]["gaps"] == []
    found = incidents_for(doc["incidents"], s)
    assert len(found) == 1, [(i["scope"], i["victim"]) for i in found]
    (inc,) = found
    exp = s["expect"]
    if "scope_in" in exp:
        assert inc["scope"] in exp["scope_in"]
    else:
        assert inc["scope"] == exp["scope"]
    if "limit" in exp:
        assert inc["limit_bytes"] == exp["limit"]
    if "survived" in exp:
        assert inc["container_survived"] is exp["survived"]
    assert inc["dominant"] == exp["dominant"]
    charged = inc["charged"]
    assert all(isinstance(charged[k], int) for k in ("anon", "file", "shmem", "kernel")), charged
    assert inc["kernel"]["release"] == guest["kernel"]
    if "container_id" in s:
        assert inc["container_id"] == s["container_id"]
    if "group_kill" in exp:
        assert inc["group_kill"] is exp["group_kill"]
    if "killed_at_least" in exp:
        assert 1 + len(inc["also_killed"]) >= exp["killed_at_least"]


@uses("shmem")
def test_the_charged_breakdown_is_the_kernels_own(guest: dict[str, Any]) -> None:
    """The report's memory.stat (one printk record on 5.10/6.1) fills charged: the 70 MiB written to
    /dev/shm is shmem, to within the per-CPU stat batching (5.10 printed one page less)."""
    s = scenario(guest, "shmem")
    (inc,) = incidents_for(guest["diagnose"]["json"]["incidents"], s)
    assert s["shm_bytes"] == 70 * MIB
    assert 70 * MIB - 64 * 4096 <= inc["charged"]["shmem"] <= 70 * MIB
    assert inc["charged"]["anon"] > 0


@uses("pod_limit")
def test_pod_limit_names_the_pod_and_the_grower(guest: dict[str, Any]) -> None:
    s = scenario(guest, "pod_limit")
    (inc,) = incidents_for(guest["diagnose"]["json"]["incidents"], s)
    assert inc["oom_cgroup"] == s["cgroup"]
    assert inc["container_id"] in s["container_ids"]


@uses("kubepods_limit")
def test_kubepods_limit_is_the_node_allocatable_cgroup(guest: dict[str, Any]) -> None:
    s = scenario(guest, "kubepods_limit")
    (inc,) = incidents_for(guest["diagnose"]["json"]["incidents"], s)
    assert inc["oom_cgroup"] == s["cgroup"]
    assert inc["limit_level"] == "kubepods"


@uses("child_killed")
def test_child_killed_leaves_the_container_running(guest: dict[str, Any]) -> None:
    s = scenario(guest, "child_killed")
    assert s["main_alive"] and s["events"]["oom_kill"] == 1
    top = {c["container_id"]: c for c in guest["top"]["json"]["containers"]}
    live = top[s["container_id"]]
    assert live["oom_kills"] == 1
    assert live["limit_bytes"] == 96 * MIB and live["limit_level"] == "container"
    assert live["processes"]["count"] >= 1


@pytest.mark.parametrize("name", QUIET)
def test_no_incident_where_the_kernel_killed_nothing(guest: dict[str, Any], name: str) -> None:
    s = scenario(guest, name)
    assert s["alive"]
    assert s["events"]["oom"] == 0 and s["events"]["oom_kill"] == 0
    assert incidents_for(guest["diagnose"]["json"]["incidents"], s) == []
    assert incidents_for(guest["agent"]["incidents"], s) == []


@uses("page_cache")
def test_page_cache_fills_the_limit_without_a_kill(guest: dict[str, Any]) -> None:
    s = scenario(guest, "page_cache")
    assert s["events"]["max"] > 0  # it hit memory.max, and reclaim freed page cache each time
    top = {c["container_id"]: c for c in guest["top"]["json"]["containers"]}
    live = top[s["container_id"]]
    cache = live["breakdown"]["active_file"] + live["breakdown"]["inactive_file"]
    assert cache > 32 * MIB
    assert live["working_set_bytes"] < live["usage_bytes"]


@uses("memory_high")
def test_memory_high_throttles_without_a_kill(guest: dict[str, Any]) -> None:
    s = scenario(guest, "memory_high")
    assert s["events"]["high"] > 0
    assert int(s["pressure"].split("total=")[1].split()[0]) > 0
    path = s["cgroup"]
    agent = guest["agent"]["cgroups"][path]
    assert agent["pressure"]["some"]["total_us"] > 0
    top = {c["container_id"]: c for c in guest["top"]["json"]["containers"]}
    live = top[s["container_id"]]
    assert live["pressure"]["some"]["stalled_seconds"] > 0  # `oomsight top --json` says so too
    assert 0 <= live["pressure"]["some"]["avg10_ratio"] <= 1
    if release_tuple(guest["kernel"]) >= (5, 19):
        assert live["peak_bytes"] >= 30 * MIB  # memory.peak: throttled near memory.high (32 MiB)
    else:
        assert live["peak_bytes"] is None  # no memory.peak before 5.19


def test_agent_detection_path_agrees_with_diagnose(guest: dict[str, Any]) -> None:
    agent = guest["agent"]
    assert agent["gaps"] == 0
    for name in ran(guest, KILLS):
        s = scenario(guest, name)
        (a,) = incidents_for(agent["incidents"], s)
        (d,) = incidents_for(guest["diagnose"]["json"]["incidents"], s)
        for key in ("scope", "pod_uid", "container_id", "limit_bytes", "dominant", "charged", "group_kill"):
            assert a[key] == d[key], (name, key)


def test_agent_counters_are_the_kernels_memory_events(guest: dict[str, Any]) -> None:
    cgroups = guest["agent"]["cgroups"]
    at_least_5_17 = release_tuple(guest["kernel"]) >= (5, 17)
    at_least_5_19 = release_tuple(guest["kernel"]) >= (5, 19)
    for name in ran(guest, ("main_killed", "child_killed", "group_kill", "shmem")):
        s = scenario(guest, name)
        c = cgroups[s["cgroup"]]
        assert c["oom_kills"] == s["events"]["oom_kill"]
        assert c["events"]["oom"] == s["events"]["oom"] == 1
        assert (c["events"]["oom_group_kill"] is not None) is at_least_5_17
        assert (c["peak_bytes"] is not None) is at_least_5_19
        assert c["oom_group"] is (name != "child_killed")
    if at_least_5_17 and "group_kill" in guest["scenarios"]:
        assert cgroups[scenario(guest, "group_kill")["cgroup"]]["events"]["oom_group_kill"] == 1
    if at_least_5_19:
        assert cgroups[scenario(guest, "shmem")["cgroup"]]["peak_bytes"] >= 90 * MIB


def test_node_reports_dying_memcgs_psi_and_swap_on_v2(guest: dict[str, Any]) -> None:
    node = guest["node"]["json"]
    assert node["memory_cgroups"]["dying"] is not None
    assert node["psi"]["available"] is True
    assert node["swap_total_bytes"] == 0
    ids = {f["id"] for f in node["findings"]}
    assert "swap-off" in ids
    assert not ids & V1_ONLY_FINDINGS  # the v1 / 3.10-only findings
    assert node["pod_swap"] is not None and node["pod_swap"]["containers"] >= 1  # swap accounting on
    assert "swap-unlimited" not in ids  # the containers' swap.max is max, but the node has no swap


def test_agent_spools_one_event_per_kill_with_the_right_reason(guest: dict[str, Any]) -> None:
    """The Events the agent would post for the scenarios' pods, from its own spool (agent.state)."""
    reasons = {
        "node_wide": events.REASON_OOM_NODE,
        "main_killed": events.REASON_OOM_CONTAINER,
        "child_killed": events.REASON_OOM_CHILD,
        "group_kill": events.REASON_OOM_CONTAINER,
        "pod_limit": events.REASON_OOM_POD,
        "kubepods_limit": events.REASON_OOM_ANCESTOR,
        "shmem": events.REASON_OOM_CONTAINER,
    }
    spooled = guest["agent"]["spooled"]
    for name, reason in reasons.items():
        if name not in guest["scenarios"]:
            continue  # a smoke kernel
        s = scenario(guest, name)
        mine = [e for e in spooled if e["regarding"]["uid"] in pods_of(s)]
        assert [e["reason"] for e in mine] == [reason], (name, [e["reason"] for e in mine])
        assert mine[0]["type"] == "Warning" and mine[0]["regarding"]["field_path"]
    for name in ran(guest, QUIET):
        assert not [e for e in spooled if e["regarding"]["uid"] in pods_of(scenario(guest, name))]
