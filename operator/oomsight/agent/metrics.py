"""Prometheus ``/metrics`` and ``/healthz`` for the agent.

A custom ``Collector`` (prometheus_client's documented pattern for values owned elsewhere) builds
fresh metric families at each scrape from the latest sweep ``Snapshot`` and the agent's ``Counters``;
it keeps nothing between scrapes, so a container that vanished is gone from the next scrape.

Names follow the Prometheus conventions (base units, ``_total`` counters) and ``promtool check
metrics`` passes on the output (tests/kube/test_agent_real.py runs it).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import NamedTuple

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector

from oomsight.agent.latency import KillLatency
from oomsight.core.memory import Pressure

log = logging.getLogger(__name__)

CONTAINER_LABELS = ["namespace", "pod", "container"]
KERNEL_LOG_SOURCES = ("kmsg", "syslog", "none")


class ContainerSample(NamedTuple):
    """One container as the last sweep saw it. A named tuple: one is made per container per sweep, and
    a frozen dataclass's ``__init__`` (one ``object.__setattr__`` per field) was ~4% of a sweep."""

    namespace: str
    pod: str
    container: str
    working_set_bytes: int
    usage_bytes: int
    limit_bytes: int | None
    limit_level: str
    breakdown: tuple[tuple[str, int], ...]
    stuck: bool = False
    peak_bytes: int | None = None
    """v2 ``memory.peak`` (kernel 5.19+); None where the kernel has no such file, and on v1."""
    pressure: Pressure | None = None
    """v2 ``memory.pressure`` (PSI); None on v1 and where PSI is off."""


@dataclass(frozen=True, slots=True)
class Snapshot:
    """What the last sweep saw; replaced whole, never mutated."""

    containers: tuple[ContainerSample, ...] = ()
    sweep_seconds: float = 0.0
    taken_at: float = 0.0


@dataclass
class Counters:
    """Monotonic counters and gauges the loop and its threads update; thread-safe."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = field(default_factory=dict)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        key = (name, tuple(sorted(labels.items())))
        with self.lock:
            self.values[key] = self.values.get(key, 0.0) + amount

    def get(self, name: str, **labels: str) -> float:
        with self.lock:
            return self.values.get((name, tuple(sorted(labels.items()))), 0.0)

    def family(self, name: str) -> list[tuple[dict[str, str], float]]:
        with self.lock:
            return [(dict(lbl), v) for (n, lbl), v in self.values.items() if n == name]

    def remove(self, name: str, keep: Callable[[dict[str, str]], bool]) -> int:
        """Drop the series of ``name`` whose labels ``keep`` refuses (a deleted pod's); how many."""
        with self.lock:
            gone = [k for k in self.values if k[0] == name and not keep(dict(k[1]))]
            for k in gone:
                del self.values[k]
        return len(gone)


# name -> (help, label names). Every counter the agent increments is declared here, so it is
# exported (at 0 when it never happened: a missing series cannot be alerted on).
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "oomsight_oom_kills_total": (
        "OOM kills attributed to a container, by scope (container|pod|ancestor|node) and survival",
        ("namespace", "pod", "container", "scope", "container_survived", "reason"),
    ),
    "oomsight_agent_oom_incidents_total": ("OOM incidents read from the kernel log, attributed or not", ()),
    "oomsight_agent_unattributed_oom_kills_total": (
        "OOM kills whose cgroup did not map to a pod on this node (not a pod, or pod unknown)",
        ("why",),
    ),
    "oomsight_agent_headerless_kills_total": (
        "kill lines without their report (kernel rate limit), located by the cgroup's oom_kill counter",
        (),
    ),
    "oomsight_agent_kmsg_records_total": ("kernel log records read (/dev/kmsg or syslog(2))", ()),
    "oomsight_agent_kmsg_gaps_total": (
        "times the kernel overwrote log records before they were read (syslog(2): count unknown)",
        (),
    ),
    "oomsight_agent_counted_kills_total": (
        "OOM kills reported from a cgroup's OOM-kill counter alone, no log line explaining them, "
        "by the kernel log source in use",
        ("source",),
    ),
    "oomsight_agent_kmsg_lost_records_total": ("kmsg records overwritten before they were read", ()),
    "oomsight_agent_kmsg_malformed_total": ("kmsg records that did not parse", ()),
    "oomsight_agent_sweeps_total": ("cgroup sweeps done", ()),
    "oomsight_agent_sweep_seconds_total": ("time spent in cgroup sweeps", ()),
    "oomsight_agent_vanished_cgroups_total": ("cgroups that vanished between listing and reading", ()),
    "oomsight_agent_api_errors_total": (
        "Kubernetes API calls that failed, by operation and HTTP code (0 = unreachable)",
        ("operation", "code"),
    ),
    "oomsight_agent_events_total": ("Events delivered to the API, by reason", ("reason",)),
    "oomsight_agent_events_rejected_total": ("Events the API refused for good (400/403/404/422)", ("code",)),
    "oomsight_agent_reports_written_total": ("NodeMemoryReport writes", ()),
    "oomsight_agent_errors_total": ("failures the agent survived, by kind", ("kind",)),
}


class AgentCollector(Collector):
    """Yields the agent's families from ``snapshot()`` and ``counters`` at each scrape."""

    def __init__(
        self,
        snapshot: Callable[[], Snapshot],
        counters: Counters,
        pending: Callable[[], int],
        node: str,
        source: Callable[[], str] = lambda: "none",
        pods: Callable[[], int] = lambda: 0,
        latency: KillLatency | None = None,
    ) -> None:
        self.snapshot = snapshot
        self.latency = latency
        self.counters = counters
        self.pending = pending
        self.node = node
        self.source = source
        self.pods = pods

    def collect(self) -> Iterator[Metric]:
        snap = self.snapshot()
        ws = GaugeMetricFamily(
            "oomsight_container_working_set_bytes",
            "working set (usage minus inactive file), as the kubelet and cAdvisor compute it",
            labels=CONTAINER_LABELS,
        )
        usage = GaugeMetricFamily(
            "oomsight_container_memory_usage_bytes", "memory charged to the cgroup", labels=CONTAINER_LABELS
        )
        limit = GaugeMetricFamily(
            "oomsight_container_memory_limit_bytes",
            "effective memory limit: the tightest on the path to the root; level says where it comes from",
            labels=[*CONTAINER_LABELS, "level"],
        )
        kinds = GaugeMetricFamily(
            "oomsight_container_memory_bytes", "container memory by kind", labels=[*CONTAINER_LABELS, "kind"]
        )
        ratio = GaugeMetricFamily(
            "oomsight_container_working_set_ratio",
            "working set divided by the effective limit",
            labels=CONTAINER_LABELS,
        )
        stuck = GaugeMetricFamily(
            "oomsight_container_memory_stuck",
            "1 when the cgroup sits at under_oom with the OOM killer disabled",
            labels=CONTAINER_LABELS,
        )
        peak = GaugeMetricFamily(
            "oomsight_container_memory_peak_bytes",
            "highest memory charged to the cgroup since it was created (cgroup v2 memory.peak, kernel 5.19+)",
            labels=CONTAINER_LABELS,
        )
        stalled = CounterMetricFamily(
            "oomsight_container_memory_pressure_stalled_seconds",
            "time some (at least one) or full (all non-idle) tasks of the cgroup were stalled on memory "
            "(cgroup v2 memory.pressure total)",
            labels=[*CONTAINER_LABELS, "kind"],
        )
        avg10 = GaugeMetricFamily(
            "oomsight_container_memory_pressure_avg10_ratio",
            "share of the last 10 s that some or full tasks of the cgroup were stalled on memory "
            "(cgroup v2 memory.pressure avg10 / 100)",
            labels=[*CONTAINER_LABELS, "kind"],
        )
        for c in snap.containers:
            lbl = [c.namespace, c.pod, c.container]
            if c.peak_bytes is not None:
                peak.add_metric(lbl, c.peak_bytes)
            if c.pressure is not None:
                for kind, line in (("some", c.pressure.some), ("full", c.pressure.full)):
                    if line is not None:
                        stalled.add_metric([*lbl, kind], line.total_us / 1e6)
                        avg10.add_metric([*lbl, kind], line.avg10 / 100)
            ws.add_metric(lbl, c.working_set_bytes)
            usage.add_metric(lbl, c.usage_bytes)
            if c.limit_bytes:
                limit.add_metric([*lbl, c.limit_level], c.limit_bytes)
                ratio.add_metric(lbl, c.working_set_bytes / c.limit_bytes)
            for kind, amount in c.breakdown:
                kinds.add_metric([*lbl, kind], amount)
            stuck.add_metric(lbl, 1.0 if c.stuck else 0.0)
        yield from (ws, usage, limit, kinds, ratio, stuck, peak, stalled, avg10)

        for name, (help_text, labels) in COUNTERS.items():
            fam = CounterMetricFamily(name.removesuffix("_total"), help_text, labels=list(labels))
            rows = self.counters.family(name)
            if not rows and not labels:
                rows = [({}, 0.0)]
            for row_labels, value in rows:
                fam.add_metric([row_labels.get(k, "") for k in labels], value)
            yield fam

        in_use = self.source()
        src = GaugeMetricFamily(
            "oomsight_agent_kernel_log_source",
            "1 for the kernel log source the agent reads (kmsg: /dev/kmsg, syslog: syslog(2), none: "
            "OOM-kill counters only), 0 for the others",
            labels=["source"],
        )
        for name in KERNEL_LOG_SOURCES:
            src.add_metric([name], 1.0 if name == in_use else 0.0)
        yield src
        yield GaugeMetricFamily(
            "oomsight_agent_events_pending",
            "Events spooled on disk, not yet accepted by the API",
            value=self.pending(),
        )
        yield GaugeMetricFamily(
            "oomsight_agent_sweep_duration_seconds",
            "duration of the last cgroup sweep",
            value=snap.sweep_seconds,
        )
        yield GaugeMetricFamily(
            "oomsight_agent_last_sweep_timestamp_seconds",
            "when the last sweep finished (Unix time)",
            value=snap.taken_at,
        )
        yield GaugeMetricFamily(
            "oomsight_agent_containers", "containers seen by the last sweep", value=len(snap.containers)
        )
        yield GaugeMetricFamily(
            "oomsight_agent_pods", "Pods of this node the agent's watch holds", value=self.pods()
        )
        if self.latency is not None:
            yield from self.latency.families()


def make_registry(collector: AgentCollector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


class MetricsServer:
    """``/metrics`` (Prometheus text), ``/healthz`` = ``/livez`` (alive: the main loop turns) and
    ``/readyz`` (also: pods listed and one sweep done) on one port, in a daemon thread."""

    def __init__(
        self,
        registry: CollectorRegistry,
        healthy: Callable[[], tuple[bool, str]],
        ready: Callable[[], tuple[bool, str]],
        address: str,
        port: int,
    ) -> None:
        reg, probes = registry, {"/healthz": healthy, "/livez": healthy, "/readyz": ready}

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype, code = generate_latest(reg), CONTENT_TYPE_LATEST, 200
                elif path in probes:
                    ok, why = probes[path]()
                    body, ctype, code = (why + "\n").encode(), "text/plain; charset=utf-8", 200 if ok else 503
                else:
                    body, ctype, code = b"not found: try /metrics or /healthz\n", "text/plain", 404
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                return

        self.httpd = ThreadingHTTPServer((address, port), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="metrics", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
