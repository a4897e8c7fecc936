"""The agent where ``/dev/kmsg`` does not open, as in the chart's unprivileged Pod on a real node.

runc gives an unprivileged container a device cgroup without char 1:11, so its ``open`` of a
hostPath ``/dev/kmsg`` fails with EPERM whatever its capabilities. Here the agent runs in a real
cgroup v1 ``devices`` cgroup that denies exactly that device, and its pods are real memory cgroups
with real OOM kills (tests/cgroupkit.py). Other people's kills on this machine are in the same
kernel log: every count below is of this test's own Pods' Events.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kube.agentkit import ensure_crds, sample, series_total, wait_for
from realparts import require_binary, unavailable

pytestmark = [pytest.mark.kube, pytest.mark.cgroup, pytest.mark.kmsg, pytest.mark.slow]
DEVICES = Path("/sys/fs/cgroup/devices")


@pytest.fixture
def no_kmsg_device() -> Iterator[tuple[str, ...]]:
    """A ``wrap`` for the agent: run it in a devices cgroup that denies char 1:11 (runc's EPERM)."""
    if os.geteuid() != 0 or not (DEVICES / "devices.deny").exists():
        unavailable(f"devices-cgroup test cannot run: needs root and cgroup v1 devices at {DEVICES}")
    path = DEVICES / f"oomsight-test-{uuid.uuid4().hex[:8]}"
    path.mkdir()
    (path / "devices.deny").write_text("c 1:11 rwm")
    yield ("sh", "-c", f'echo $$ > "{path}/cgroup.procs" && exec "$@"', "sh")
    deadline = time.monotonic() + 10
    while (pids := (path / "cgroup.procs").read_text().split()) and time.monotonic() < deadline:
        for pid in pids:  # only this test's agent is in this cgroup
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGKILL)
        time.sleep(0.1)
    path.rmdir()


@pytest.fixture
def no_cap_syslog() -> Iterator[tuple[str, ...]]:
    """A ``wrap`` without CAP_SYSLOG, with kernel.dmesg_restrict=1 for the test only (restored)."""
    capsh = require_binary("capsh", "Debian package libcap2-bin")
    knob = Path("/proc/sys/kernel/dmesg_restrict")
    old = knob.read_text().strip()
    knob.write_text("1")
    try:
        yield (capsh, "--drop=cap_syslog", "--", "-c", 'exec "$@"', "capsh")
    finally:
        knob.write_text(old)


def report(rest, node: str) -> dict:
    resp = rest.request("GET", f"/apis/oomsight.io/v1alpha1/nodememoryreports/{node}")
    return resp.body if resp.ok else {}


def test_without_the_device_the_agent_reads_syslog_and_reports_each_kill_once(
    rest, scenes, namespace, node, agent, no_kmsg_device, tmp_path
):
    ensure_crds(rest)
    main, child = scenes(), scenes()
    a = agent(wrap=no_kmsg_device)
    metrics = a.get("/metrics")
    assert sample(metrics, "oomsight_agent_kernel_log_source", source="syslog") == 1
    assert sample(metrics, "oomsight_agent_kernel_log_source", source="kmsg") == 0
    log = a.log()
    assert "kernel log: syslog (syslog(2) READ_ALL, polled)" in log
    assert "kmsg: permission denied to read /dev/kmsg" in log and "char 1:11" in log
    main.oom_kill_main()
    child.oom_kill_child()
    wait_for(lambda: len(main.events()) == 1 and len(child.events()) == 1, 60, "an Event for each kill")
    # How much of each report comes through depends on the kernel's machine-wide rate limit, which
    # others' kills here share (a kill line alone is placed by its cgroup's counter): only the count
    # is asserted, and that the log was read.
    assert (sample(a.get("/metrics"), "oomsight_agent_kmsg_records_total") or 0) > 0
    assert a.stop() == 0
    main.oom_kill_main()  # while the agent is down: only the ring buffer has it
    a = agent(wrap=no_kmsg_device)  # same state dir: resumes from the saved syslog cursor
    assert "resuming after record" in a.log()
    main.oom_kill_main()
    wait_for(lambda: series_total(main.events()) >= 3, 60, "the kills during and after the restart")
    time.sleep(3)  # give a duplicate (from the log replay or the counters) every chance to show up
    events = main.events()
    assert series_total(events) == 3 and len({e["metadata"]["name"] for e in events}) == len(events)
    assert series_total(child.events()) == 1
    status = wait_for(lambda: report(rest, node).get("status", {}).get("kernelLog"), 60, "the report")
    assert status["source"] == "syslog" and "kmsg:" in status["refused"]


def test_without_cap_syslog_the_counters_report_each_kill_once(
    rest, scenes, namespace, node, agent, no_kmsg_device, no_cap_syslog
):
    ensure_crds(rest)
    main, child = scenes(), scenes()
    wrap = no_kmsg_device + no_cap_syslog
    a = agent(wrap=wrap)
    assert sample(a.get("/metrics"), "oomsight_agent_kernel_log_source", source="none") == 1
    # With no log, what a counter held when the agent first saw it is history (a fresh start cannot
    # tell old kills from new): let the first sweep see the containers before killing.
    wait_for(lambda: (sample(a.get("/metrics"), "oomsight_agent_sweeps_total") or 0) >= 1, 20, "a sweep")
    why = [ln for ln in a.log().splitlines() if "kernel log: none readable" in ln]
    assert len(why) == 1, a.log()
    assert "CAP_SYSLOG" in why[0] and "syslog(2) READ_ALL denied" in why[0]
    main.oom_kill_main()
    child.oom_kill_child()
    wait_for(lambda: len(main.events()) == 1 and len(child.events()) == 1, 60, "an Event for each kill")
    note = main.events()[0]["note"]
    assert "kill 1 counted by its memory cgroup" in note and "not readable" in note
    assert a.stop() == 0
    main.oom_kill_main()  # while the agent is down: its counter keeps it
    a = agent(wrap=wrap)
    main.oom_kill_main()
    wait_for(lambda: series_total(main.events()) >= 3, 60, "the kills during and after the restart")
    time.sleep(3)  # several sweeps: a duplicate would show up
    events = main.events()
    assert series_total(events) == 3 and len({e["metadata"]["name"] for e in events}) == len(events)
    assert series_total(child.events()) == 1
    assert sample(a.get("/metrics"), "oomsight_agent_counted_kills_total", source="none") == 2  # since start
    status = wait_for(lambda: report(rest, node).get("status", {}).get("kernelLog"), 60, "the report")
    assert status["source"] == "none" and "syslog:" in status["refused"]
