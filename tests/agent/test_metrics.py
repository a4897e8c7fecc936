"""The agent's Collector: fresh families per scrape from a snapshot, declared counters always present."""

from __future__ import annotations

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
