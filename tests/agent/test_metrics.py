"""The agent's Collector: fresh families per scrape from a snapshot, declared counters always present."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from oomsight.agent.metrics import (
    COUNTERS,
    AgentCollector,
    ContainerSample,
    Counters,
    Snapshot,
    make_registry,
)

SWAPPER = (
    Path(__file__).parent.parent / "fixtures/node/debian-6.1-v2-vm-swap/sys/fs/cgroup/oomsight-test-625bde26"
    / "kubepods.slice/kubepods-burstable.slice"
    / "kubepods-burstable-podbc3fd38d_9c33_4d12_92cb_0e817c2f8cc0.slice"
    / "cri-containerd-a729d6861ddb43a98226feb2296916fa68aca091f92e4fec9af4eee718efc3d8.scope"
)


def scrape(snapshot, counters, pending=0):
    reg = make_registry(AgentCollector(lambda: snapshot, counters, lambda: pending, "node-a"))
    text = generate_latest(reg).decode()
    samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return text, samples


SAMPLE = ContainerSample(
    "shop",
    "web",
    "app",
    60 << 20,
    70 << 20,
    64 << 20,
    "container",
    (("anon", 50 << 20), ("shmem", 4 << 20)),
    stuck=True,
)


def lbl(**kw):
    return tuple(sorted({"namespace": "shop", "pod": "web", "container": "app", **kw}.items()))


def test_container_families_from_the_snapshot():
    _, s = scrape(Snapshot((SAMPLE,), 0.012, 1.7e9), Counters())
    assert s[("oomsight_container_working_set_bytes", lbl())] == 60 << 20
    assert s[("oomsight_container_memory_usage_bytes", lbl())] == 70 << 20
    assert s[("oomsight_container_memory_limit_bytes", lbl(level="container"))] == 64 << 20
    assert s[("oomsight_container_memory_bytes", lbl(kind="shmem"))] == 4 << 20
    assert s[("oomsight_container_memory_stuck", lbl())] == 1
    assert abs(s[("oomsight_container_working_set_ratio", lbl())] - 60 / 64) < 1e-9
    assert s[("oomsight_agent_sweep_duration_seconds", ())] == 0.012


def test_a_vanished_container_is_gone_at_the_next_scrape():
    snap = Snapshot((SAMPLE,))
    holder = [snap]
    reg = make_registry(AgentCollector(lambda: holder[0], Counters(), lambda: 0, "n"))
    assert b'pod="web"' in generate_latest(reg)
    holder[0] = Snapshot(())
    assert b'pod="web"' not in generate_latest(reg)


def test_counters_export_with_total_suffix_and_unlabelled_ones_at_zero():
    c = Counters()
    c.inc(
        "oomsight_oom_kills_total",
        namespace="shop",
        pod="web",
        container="app",
        scope="container",
        container_survived="true",
        reason="OOMKilledChild",
    )
    c.inc("oomsight_agent_api_errors_total", operation="event", code="503")
    c.inc("oomsight_agent_api_errors_total", operation="event", code="503")
    text, s = scrape(Snapshot(), c, pending=7)
    assert (
        s[
            (
                "oomsight_oom_kills_total",
                lbl(scope="container", container_survived="true", reason="OOMKilledChild"),
            )
        ]
        == 1
    )
    assert s[("oomsight_agent_api_errors_total", (("code", "503"), ("operation", "event")))] == 2
    assert s[("oomsight_agent_kmsg_gaps_total", ())] == 0
    assert s[("oomsight_agent_events_pending", ())] == 7
    for name, (_, labels) in COUNTERS.items():
        if not labels:  # labelled ones appear with their first sample
            assert f"# TYPE {name} counter" in text
            assert (name, ()) in s


def test_peak_and_pressure_series_only_where_the_kernel_has_the_files():
    """memory.peak (5.19+) and memory.pressure (v2 PSI): a series where read, none (not 0) where not."""
    from oomsight.core.memory import parse_pressure

    # a real 6.1 guest's container (tests/fixtures/node/debian-6.1-v2-vm-swap/SOURCE, swapper)
    psi = parse_pressure("memory.pressure", (SWAPPER / "memory.pressure").read_text())
    assert psi.full is not None and psi.some.total_us == psi.full.total_us == 462344
    v2 = ContainerSample("shop", "web", "app", 1, 2, None, "node", (), peak_bytes=48 << 20, pressure=psi)
    old = ContainerSample("shop", "old", "app", 1, 2, None, "node", ())  # 5.10 without PSI, or v1
    text, s = scrape(Snapshot((v2, old)), Counters())
    assert s[("oomsight_container_memory_peak_bytes", lbl())] == 48 << 20
    for kind in ("some", "full"):
        assert s[("oomsight_container_memory_pressure_stalled_seconds_total", lbl(kind=kind))] == 0.462344
        assert s[("oomsight_container_memory_pressure_avg10_ratio", lbl(kind=kind))] == 0.0059
    assert not [k for k in s if dict(k[1]).get("pod") == "old" and ("peak" in k[0] or "pressure" in k[0])]
    assert "# TYPE oomsight_container_memory_pressure_stalled_seconds_total counter" in text


def test_kill_latency_is_a_histogram_per_stage_on_the_corrected_clock():
    from oomsight.agent.latency import KillLatency

    lat = KillLatency()
    lat.start(1, 50_000_000, 51.0)  # no record read yet: the offset is unknown, nothing is timed
    # local_clock runs 0.2 s ahead of CLOCK_MONOTONIC: a record stamped 100.2 s was read at 100.0005,
    # another one, stamped 100.3, at 100.4 (it waited): the offset is the smallest difference
    lat.offset.observe(100.0005, 100_200_000)
    lat.offset.observe(100.4, 100_300_000)
    assert abs(lat.offset.value() - (-0.1995)) < 1e-9
    lat.start(7, 101_200_000, 101.0205)  # killed at 101.0005 (monotonic), read 20 ms later
    lat.mark(7, "assembled", 101.09)
    lat.delivered("not-timed")  # an Event of no timed kill (a warning, a replayed kill)
    reg = make_registry(AgentCollector(Snapshot, Counters(), lambda: 0, "node-a", latency=lat))
    samples = {}
    for fam in text_string_to_metric_families(generate_latest(reg).decode()):
        for s in fam.samples:
            samples[(s.name, s.labels.get("stage"), s.labels.get("le"))] = s.value
    name = "oomsight_agent_kill_report_latency_seconds"
    assert samples[(name + "_bucket", "read", "0.01")] == 0
    assert samples[(name + "_bucket", "read", "0.025")] == 1
    assert samples[(name + "_bucket", "assembled", "0.075")] == 0
    assert samples[(name + "_bucket", "assembled", "0.1")] == 1
    assert samples[(name + "_bucket", "assembled", "+Inf")] == 1
    assert abs(samples[(name + "_sum", "read", None)] - 0.02) < 1e-6
    for stage in ("attributed", "spooled", "delivered"):
        assert samples[(name + "_count", stage, None)] == 0
