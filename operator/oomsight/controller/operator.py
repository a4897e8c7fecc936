"""The kopf operator: thin watch handlers over ``ClusterState``, one debounced reconcile per policy.

Watches (nothing else): MemoryPolicies, NodeMemoryReports and Pods, in the served namespaces
(``--namespace``) or cluster-wide. ReplicaSets and Jobs are never watched: their owners are looked up
once per name (``kube.owners``). State updates run in kopf *indexers*, which kopf calls before any
handler and completes for the initial listing of every watched kind before it starts any handler or
daemon, so the first reconcile already sees every pod and report.

Each MemoryPolicy has a kopf daemon that waits for its dirty flag, sleeps ``debounce`` seconds to
coalesce a burst of pod/report changes, and reconciles once (``core.policy.reconcile``); it also
reconciles every ``resync`` seconds so that time windows (OOMs in 24 h) move on. Writes: the status
when it changed, pod annotations when their value changed, Events on material changes.

HA: with kopf peering only the highest-priority replica processes events; kopf stops the daemons of a
paused replica and disconnects its watches, so a standby neither reconciles nor writes. When it takes
over it re-lists everything (the indexers rebuild this state) and each policy's memory is seeded from
its last status (``core.policy.memory_for``), so nothing the status said is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kopf

from oomsight.controller.state import ClusterState, PolicyKey
from oomsight.core.noderisk import NodeRisk, plan, risk_of
from oomsight.core.policy import (
    memory_for,
    owner_lookups,
    pod_view,
    reconcile,
    rfc3339,
    status_changed,
    workload_of,
)
from oomsight.kube.crd import GROUP, MEMORY_POLICY_PLURAL, NODE_REPORT_PLURAL, VERSION
from oomsight.kube.nodes import apply_node_patch, get_node
from oomsight.kube.owners import OwnerResolver
from oomsight.kube.policies import patch_pod_annotations, patch_policy_status, policy_event
from oomsight.kube.rest import Rest

log = logging.getLogger("oomsight.operator")

FINALIZER = "oomsight.io/operator"


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()
    """Empty: cluster-wide."""
    peering: str | None = None
    """Peering object name (mandatory when given); None: the default name if it exists."""
    default_peering: str = "oomsight"
    standalone: bool = False
    priority: int = 0
    liveness: str | None = None
    instance: str = "oomsight-operator"
    debounce: float = 1.0
    resync: float = 60.0
    peering_lifetime: int = 60
    writers: int = 8
    in_cluster: bool = False

    @property
    def clusterwide(self) -> bool:
        return not self.namespaces


@dataclass(slots=True)
class Stats:
    reconciles: int = 0
    status_writes: int = 0
    annotation_writes: int = 0
    events: int = 0
    node_writes: int = 0
    last_reconcile_seconds: float = 0.0
    started: float = field(default_factory=time.monotonic)


class Operator:
    """Holds the state and the kopf registry; ``run()`` blocks until SIGTERM/SIGINT."""

    def __init__(self, cfg: OperatorConfig, rest: Rest) -> None:
        self.cfg = cfg
        self.rest = rest
        self.state = ClusterState(on_dirty=self._mark)
        self.resolver = OwnerResolver(rest, workers=cfg.writers)
        self.flags: dict[PolicyKey, asyncio.Event] = {}
        self.applied_risk: dict[str, NodeRisk] = {}
        self.stats = Stats()
        self.pool = ThreadPoolExecutor(max_workers=cfg.writers, thread_name_prefix="oomsight-write")
        self.registry = kopf.OperatorRegistry()
        self._register()

    # --- dirty flags -------------------------------------------------------------------------------
    def _flag(self, key: PolicyKey) -> asyncio.Event:
        ev = self.flags.get(key)
        if ev is None:
            ev = self.flags[key] = asyncio.Event()
        return ev

    def _mark(self, key: PolicyKey) -> None:
        self._flag(key).set()

    async def _io(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self.pool, fn, *args)

    # --- handlers ----------------------------------------------------------------------------------
    def _register(self) -> None:
        reg = self.registry
        cfg = self.cfg
        state = self.state

        @kopf.on.startup(registry=reg)
        def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
            settings.persistence.finalizer = FINALIZER
            settings.posting.level = logging.WARNING
            settings.peering.lifetime = cfg.peering_lifetime
            settings.peering.clusterwide = cfg.clusterwide
            if cfg.peering is None and not cfg.standalone:
                settings.peering.name = cfg.default_peering
            settings.watching.server_timeout = 300
            settings.watching.client_timeout = 330
            log.info(
                "operator %s starting: %s, peering %s, priority %d",
                cfg.instance,
                "all namespaces" if cfg.clusterwide else "namespaces " + ",".join(cfg.namespaces),
                "off (standalone)" if cfg.standalone else (cfg.peering or cfg.default_peering),
                cfg.priority,
            )

        @kopf.on.login(registry=reg)
        def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
            # kopf's own readers (no kubernetes client import): the service account in a pod,
            # else $KUBECONFIG (the CLI sets it from --kubeconfig).
            if cfg.in_cluster:
                return kopf.login_with_service_account(**kwargs)
            return kopf.login_with_kubeconfig(**kwargs)

        @kopf.on.cleanup(registry=reg)
        def cleanup(**_: Any) -> None:
            self.pool.shutdown(wait=False, cancel_futures=True)

        @kopf.index("pods", registry=reg)
        def pods_index(body: kopf.Body, **_: Any) -> None:
            state.upsert_pod(body)

        @kopf.on.event("pods", registry=reg)
        def pod_event(type: str, body: kopf.Body, **_: Any) -> None:
            if type == "DELETED":
                state.delete_pod(body)

        @kopf.index(GROUP, VERSION, MEMORY_POLICY_PLURAL, registry=reg)
        def policies_index(body: kopf.Body, **_: Any) -> None:
            if not (body.get("metadata") or {}).get("deletionTimestamp"):
                state.upsert_policy(body)

        @kopf.on.event(GROUP, VERSION, MEMORY_POLICY_PLURAL, registry=reg)
        def policy_event_handler(type: str, name: str, namespace: str | None, **_: Any) -> None:
            if type == "DELETED" and namespace:
                state.delete_policy(namespace, name)
                self.flags.pop((namespace, name), None)

        @kopf.daemon(GROUP, VERSION, MEMORY_POLICY_PLURAL, registry=reg, cancellation_timeout=5.0)
        async def policy_daemon(
            name: str, namespace: str | None, body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any
        ) -> None:
            key = (namespace or "", name)
            state.upsert_policy(body)
            flag = self._flag(key)
            flag.set()
            while not stopped:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(flag.wait(), timeout=cfg.resync)
                if stopped or key not in state.policies:
                    break
                await asyncio.sleep(cfg.debounce)  # coalesce a burst into one reconcile
                flag.clear()
                try:
                    await self.reconcile(key)
                except Exception:  # one bad reconcile must not end the daemon
                    log.exception("reconcile of MemoryPolicy %s/%s failed; retrying", namespace, name)
                    await asyncio.sleep(min(cfg.resync, 5.0))
                    flag.set()

        @kopf.index(GROUP, VERSION, NODE_REPORT_PLURAL, registry=reg)
        def reports_index(name: str, body: kopf.Body, **_: Any) -> None:
            state.upsert_report(name, dict(body.get("status") or {}))

        @kopf.on.event(GROUP, VERSION, NODE_REPORT_PLURAL, registry=reg)
        async def report_event(type: str, name: str, **_: Any) -> None:
            risk = (
                state.delete_report(name) if type == "DELETED" else state.risks.get(name, risk_of(name, None))
            )
            await self.sync_node(name, risk)

    # --- node flags --------------------------------------------------------------------------------
    async def sync_node(self, node: str, risk: NodeRisk) -> None:
        """Converge the Node's condition, labels and Event to ``risk`` (only what differs is written)."""
        if self.applied_risk.get(node) == risk:
            return
        resp = await self._io(get_node, self.rest, node)
        if resp.status == 404:
            log.warning("node %s has a NodeMemoryReport but no Node object; flags not written", node)
            return
        if not resp.ok:
            log.warning("cannot read node %s (HTTP %s): %s", node, resp.status, resp.message[:200])
            return
        patch = plan(risk, resp.body, rfc3339(time.time()))
        if not patch.empty:
            failed = await self._io(apply_node_patch, self.rest, node, patch, self.cfg.instance)
            self.stats.node_writes += 1
            if failed:
                return
            log.info(
                "node %s: risk %s (%s); labels %s",
                node,
                risk.severity,
                risk.reason,
                {k: v for k, v in patch.labels.items()} or "unchanged",
            )
        self.applied_risk[node] = risk

    # --- policies ----------------------------------------------------------------------------------
    async def reconcile(self, key: PolicyKey) -> None:
        entry = self.state.policies.get(key)
        if entry is None:
            return
        t0 = time.monotonic()
        state = self.state
        pods = [state.pods[u] for u in entry.selected if u in state.pods]
        lookups = owner_lookups(pods)
        owners = await self._io(self.resolver.resolve, lookups) if lookups else {}
        entry = self.state.policies.get(key)
        if entry is None:
            return
        if entry.memory is None:
            entry.memory = memory_for(entry.spec, entry.previous_status)
        workloads = {p.uid: workload_of(p, owners) for p in pods}
        now = time.time()
        result = reconcile(
            entry.spec,
            pods,
            workloads,
            state.profiles,
            state.ooms,
            state.nodes_reporting,
            entry.memory,
            entry.last_status,
            now,
        )
        self.stats.reconciles += 1
        ns, name = key
        writes: list[Any] = []
        if status_changed(entry.last_status, result.status):
            body = {**result.status, "lastUpdateTime": rfc3339(now)}
            resp = await self._io(patch_policy_status, self.rest, ns, name, body)
            if resp.ok:
                entry.last_status = body
                self.stats.status_writes += 1
                writes.append("status")
            elif resp.status != 404:
                log.warning("status of MemoryPolicy %s/%s not written (HTTP %s): %s", ns, name, resp.status,
                            resp.message[:300])  # fmt: skip
        if result.annotations:
            by_name = {p.name: p for p in pods}
            outcomes = await asyncio.gather(
                *(
                    self._io(patch_pod_annotations, self.rest, ns, pod, ann)
                    for pod, ann in result.annotations.items()
                )
            )
            done = 0
            for (pod, _), resp in zip(result.annotations.items(), outcomes, strict=True):
                if resp.ok:
                    done += 1
                    pv = pod_view(resp.body)
                    if pv.uid in state.pods and pod in by_name:
                        state.pods[pv.uid] = pv  # our own write must not look like a change
                elif resp.status != 404:
                    log.warning("annotations of pod %s/%s not written (HTTP %s): %s", ns, pod, resp.status,
                                resp.message[:200])  # fmt: skip
            self.stats.annotation_writes += done
            if done:
                writes.append(f"{done} pod annotations")
        if entry.spec.emit_events:
            for ch in result.changes:
                resp = await self._io(
                    policy_event, self.rest, ns, name, entry.spec.uid, "Normal", "RecommendationChanged",
                    ch.message(), self.cfg.instance,
                )  # fmt: skip
                if resp.ok:
                    self.stats.events += 1
                    writes.append("event")
        self.stats.last_reconcile_seconds = time.monotonic() - t0
        if writes:
            log.info(
                "reconciled MemoryPolicy %s/%s: %d pods, %d workloads, mode %s; wrote %s (%.0f ms)",
                ns,
                name,
                result.status["podsObserved"],
                len(result.status["workloads"]),
                result.status["mode"],
                ", ".join(writes),
                self.stats.last_reconcile_seconds * 1000,
            )

    # --- running -----------------------------------------------------------------------------------
    async def run_async(self, stop_flag: asyncio.Event | None = None) -> None:
        cfg = self.cfg
        await kopf.operator(
            registry=self.registry,
            clusterwide=cfg.clusterwide,
            namespaces=list(cfg.namespaces),
            standalone=cfg.standalone,
            priority=cfg.priority,
            peering_name=cfg.peering,
            liveness_endpoint=cfg.liveness,
            stop_flag=stop_flag,
        )


def status_summary(status: Mapping[str, Any]) -> str:
    """One line for logs: pods, at risk, OOMs, mode."""
    return (
        f"{status.get('podsObserved', 0)} pods, {status.get('atRisk', 0)} at risk, "
        f"{status.get('oomKills24h', 0)} OOMs/24h, mode {status.get('mode')}"
    )
