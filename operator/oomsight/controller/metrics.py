"""The operator's ``/metrics`` and ``/healthz`` (aiohttp, on the operator's own event loop).

A custom ``Collector`` (prometheus_client's pattern for values owned elsewhere) reads the operator's
``Stats`` and state sizes at each scrape. ``/healthz`` answers from the same event loop as the kopf
handlers, so an answer means the loop is not blocked; it says 503 while a pod watch has not listed.
The chart's liveness probe and ServiceMonitor use this port (``OOMSIGHT_METRICS_PORT``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector


class OperatorCollector(Collector):
    def __init__(self, snapshot: Callable[[], dict[str, float]]) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        s = self.snapshot()
        yield CounterMetricFamily(
            "oomsight_operator_reconciles", "MemoryPolicy reconciles run.", value=s["reconciles"]
        )
        writes = CounterMetricFamily(
            "oomsight_operator_writes", "Objects written to the API server, by what.", labels=["kind"]
        )
        for kind in ("status", "annotation", "event", "node", "resize", "template"):
            writes.add_metric([kind], s[f"writes_{kind}"])
        yield writes
        yield CounterMetricFamily(
            "oomsight_operator_rollbacks",
            "Applied memory changes put back after an OOM kill (spec.actions.apply).",
            value=s["rollbacks"],
        )
        conflicts = CounterMetricFamily(
            "oomsight_operator_write_conflicts",
            "409 Conflicts on a status or pod-annotation write (written on the resourceVersion it was "
            "computed from), by what followed: held = the object read back already held the value, "
            "rewritten = written on the version read back, failed = given up (the next reconcile retries).",
            labels=["outcome"],
        )
        for outcome in ("held", "rewritten", "failed"):
            conflicts.add_metric([outcome], s[f"conflicts_{outcome}"])
        yield conflicts
        yield CounterMetricFamily(
            "oomsight_operator_pod_watch_errors", "Pod list/watch errors (retried).", value=s["watch_errors"]
        )
        yield GaugeMetricFamily("oomsight_operator_policies", "MemoryPolicies known.", value=s["policies"])
        yield GaugeMetricFamily(
            "oomsight_operator_pods", "Pods cached (namespaces with a policy).", value=s["pods"]
        )
        yield GaugeMetricFamily("oomsight_operator_reports", "NodeMemoryReports known.", value=s["reports"])
        yield GaugeMetricFamily(
            "oomsight_operator_last_reconcile_seconds",
            "Duration of the last reconcile.",
            value=s["last_reconcile"],
        )


def app(
    snapshot: Callable[[], dict[str, float]], healthy: Callable[[], tuple[bool, dict[str, Any]]]
) -> web.Application:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(OperatorCollector(snapshot))

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        ok, detail = healthy()
        detail["time"] = time.time()
        return web.Response(
            status=200 if ok else 503, text=json.dumps(detail), content_type="application/json"
        )

    a = web.Application()
    a.router.add_get("/metrics", metrics)
    a.router.add_get("/healthz", healthz)
    return a


async def serve(application: web.Application, port: int, host: str = "0.0.0.0") -> web.AppRunner:
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
