"""The agent on real cgroup v2 with swap on, no API server: Debian's 5.10, 6.1 and 6.12 in hack/vm.

One guest boot per kernel runs ``tests/vm/guest_agent.py``: a swap file, three kubelet-style
containers with the ``memory.swap.max`` a kubelet writes (``max``, a LimitedSwap share, 0), the
agent's own loop with its pod cache filled as its watch would fill it, and a real OOM kill while it
runs. These tests assert on what the guest recorded: the agent's ``/metrics`` (``memory.peak``
where the kernel has it, PSI ``memory.pressure`` on all three), its spool (the Events it would
post), and ``oomsight node --json`` (the v2 swap finding from the containers' ``memory.swap.max``).

``OOMSIGHT_VM_KERNELS`` picks the kernels (default all three). Without qemu or a kernel the tests
skip with the reason, and fail under ``CI=true``.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from oomsight.core import events
from oomsight.core.node import V1_ONLY_FINDINGS
from realparts import unavailable
from vm.test_vm_v2 import KERNELS, guest_results, release_tuple

pytestmark = pytest.mark.vm

MIB = 1 << 20


@pytest.fixture(scope="module", params=KERNELS)
def guest(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    series = request.param
    out = tmp_path_factory.mktemp(f"vm-agent-{series}")
    return guest_results(series, out, "512M", "tests/vm/guest_agent.py", timeout=1200)


def samples(guest: dict[str, Any]) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(guest["metrics"]):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def lbl(pod: str, **kw: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"namespace": "vm", "pod": pod, "container": "app", **kw}.items()))


def test_psi_is_on_without_psi_1(guest: dict[str, Any]) -> None:
    """Debian builds CONFIG_PSI=y without CONFIG_PSI_DEFAULT_DISABLED: no ``psi=1`` needed."""
    assert "psi=" not in guest["cmdline"]
    assert guest["proc_pressure_memory"].startswith("some avg10=")


def test_swap_let_a_container_pass_its_limit_without_a_kill(guest: dict[str, Any]) -> None:
    """memory.swap.max 'max': 48 MiB of anon in a 32 MiB container, swapped, not killed."""
    assert guest["swap"]["swapon_rc"] == 0, guest["swap"]
    s = guest["pods"]["swapper"]
    assert guest["alive"]["swapper"]
    assert s["events"]["oom_kill"] == 0 and s["events"]["max"] > 0
    assert s["swap_max"] == "max" and s["swap_current"] >= 8 * MIB
    lim = guest["pods"]["limited"]
    assert guest["alive"]["limited"] and lim["events"]["oom_kill"] == 0
    assert 0 < lim["swap_current"] <= 16 * MIB
    n = guest["pods"]["noswap"]
    assert n["swap_max"] == "0" and n["swap_current"] == 0
    assert n["events"]["oom_kill"] >= 1 and guest["noswap_rc"] == -9


def test_node_reports_the_containers_swap_on_v2(guest: dict[str, Any]) -> None:
    node = guest["node"]["json"]
    assert guest["node"]["rc"] == 0 and node["errors"] == []
    assert node["swap_total_bytes"] > 0
    ps = node["pod_swap"]
    assert ps["behaviour"] == "unlimited"
    counts = [ps[k] for k in ("containers", "unlimited", "unlimited_with_memory_limit", "zero", "limited")]
    assert counts == [6, 4, 1, 1, 1]  # the 3 sandboxes: swap.max max without a memory limit
    assert ps["limited_bytes"] == 16 * MIB
    pods = guest["pods"]
    assert ps["used_bytes"] == pytest.approx(
        pods["swapper"]["swap_current"] + pods["limited"]["swap_current"], abs=4 * MIB
    )
    findings = {f["id"]: f for f in node["findings"]}
    assert findings["swap-unlimited"]["severity"] == "warning"
    assert findings["swap-unlimited"]["evidence"]["source"] == "https://kep.k8s.io/2400"
    assert findings["swap-on"]["severity"] == "info"
    assert "swap-off" not in findings
    assert not set(findings) & V1_ONLY_FINDINGS


def test_metrics_peak_where_the_kernel_has_it(guest: dict[str, Any]) -> None:
    """memory.peak exists from 5.19: a series on 6.1 and 6.12, none (not zero) on 5.10."""
    s = samples(guest)
    has_peak = release_tuple(guest["kernel"]) >= (5, 19)
    for pod in ("swapper", "limited"):
        got = s.get(("oomsight_container_memory_peak_bytes", lbl(pod)))
        if has_peak:
            # memory.peak only rises: the guest read the file after the scrape
            assert got is not None and 16 * MIB <= got <= int(guest["pods"][pod]["peak"])
            assert got >= s[("oomsight_container_memory_usage_bytes", lbl(pod))]
        else:
            assert guest["pods"][pod]["peak"] is None
            assert got is None
    assert "# TYPE oomsight_container_memory_peak_bytes gauge" in guest["metrics"]


def test_metrics_memory_pressure_on_every_kernel(guest: dict[str, Any]) -> None:
    """PSI per container: the swapper stalled on memory (reclaim and swap-in at its limit)."""
    s = samples(guest)
    for pod in ("swapper", "limited"):
        for kind in ("some", "full"):
            assert ("oomsight_container_memory_pressure_stalled_seconds_total", lbl(pod, kind=kind)) in s
            ratio = s[("oomsight_container_memory_pressure_avg10_ratio", lbl(pod, kind=kind))]
            assert 0.0 <= ratio <= 1.0
    stalled = s[("oomsight_container_memory_pressure_stalled_seconds_total", lbl("swapper", kind="some"))]
    assert stalled > 0
    own = int(guest["pods"]["swapper"]["pressure"].split("total=")[1].split()[0]) / 1e6
    assert stalled <= own  # scraped before the guest read the file


def test_agent_spools_the_kill_and_the_node_risk(guest: dict[str, Any]) -> None:
    spooled = guest["spooled"]
    uid = {name: p["uid"] for name, p in guest["pods"].items()}
    kills = [e for e in spooled if e["reason"].startswith("OOMKilled")]
    got = [(e["regarding"]["uid"], e["reason"]) for e in kills]
    assert got == [(uid["noswap"], events.REASON_OOM_CONTAINER)]
    risk = [e for e in spooled if e["reason"] == events.REASON_NODE_FINDING]
    assert any("swap-unlimited" in json.dumps(e) for e in risk), [e["reason"] for e in spooled]
    high = [e for e in spooled if e["reason"] == events.REASON_HIGH_WORKING_SET]
    swapper = [e for e in high if e["regarding"]["uid"] == uid["swapper"]]
    assert len(swapper) == 1 and "the kernel swaps its memory out" in swapper[0]["note"], swapper
    s = samples(guest)
    key = ("oomsight_oom_kills_total", lbl("noswap", scope="container", container_survived="false",
                                          reason=events.REASON_OOM_CONTAINER))  # fmt: skip
    assert s[key] == 1
    assert s[("oomsight_agent_api_errors_total", (("code", "0"), ("operation", "pod_list")))] >= 1


def test_agent_reads_its_v2_files_without_errors(guest: dict[str, Any]) -> None:
    s = samples(guest)
    assert s.get(("oomsight_agent_errors_total", (("kind", "cgroup_read"),)), 0) == 0
    assert s.get(("oomsight_agent_errors_total", (("kind", "sweep"),)), 0) == 0
    assert s[("oomsight_agent_containers", ())] == 3  # the killed container's cgroup stays (empty)


def test_node_fixture_was_captured(guest: dict[str, Any]) -> None:
    fx = Path(guest["out"]) / "node-fixture"
    assert (fx / "proc/meminfo").read_text().count("SwapTotal") == 1
    swapper = fx / "sys/fs/cgroup" / guest["pods"]["swapper"]["cgroup"].lstrip("/")
    assert (swapper / "memory.swap.max").read_text().strip() == "max"


def test_metrics_pass_promtool(guest: dict[str, Any]) -> None:
    from kube.kubehelpers import load_envtest

    envtest = load_envtest()
    try:
        promtool = envtest.find_binary("promtool")
    except envtest.EnvtestError as exc:
        unavailable(f"promtool unavailable: {exc}")
    argv = [str(promtool), "check", "metrics"]
    out = subprocess.run(argv, input=guest["metrics"], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stdout + out.stderr
