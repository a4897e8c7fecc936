"""The kopf operator: thin watch handlers over ``ClusterState``, one debounced reconcile per policy.

Watches (nothing else): MemoryPolicies and NodeMemoryReports through kopf, in the served namespaces
(``--namespace``) or cluster-wide, and Pods only in namespaces that have a policy, with one plain
list+watch per such namespace (``kube.podwatch``; why not kopf for them: see there). ReplicaSets and
Jobs are never watched: their owners are looked up once per name (``kube.owners``). The reports are
listed once at start-up, and each daemon waits for its namespace's pod list, so the first reconcile
already sees every pod and report.

Each MemoryPolicy has a kopf daemon that waits for its dirty flag, sleeps ``debounce`` seconds to
coalesce a burst of pod/report changes, and reconciles once (``core.policy.reconcile``); it also
reconciles every ``resync`` seconds so that time windows (OOMs in 24 h) move on. Writes: the status
when it changed, pod annotations when their value changed, Events on material changes.

HA: with kopf peering only the highest-priority replica processes events; kopf stops the daemons of a
paused replica and disconnects its watches, so a standby neither reconciles nor writes. When it takes
over it re-lists everything (the handlers and pod watches rebuild this state) and each policy's memory
is seeded from its last status (``core.policy.memory_for``: OOM kills, recommendations, per-interval
peaks), so nothing the status said is lost. Pod watches are read-only and may run on a standby.
kopf peering has no fencing (a leader frozen mid-reconcile resumes while its successor writes; two
replicas starting together both act for a few seconds), so the status and annotation writes are
fenced on the resourceVersion they were computed from (``kube.policies``): the same write is not
made twice, and a conflict with another value is resolved by reading the object back.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import aiohttp
import kopf
from aiohttp import web

from oomsight.controller.metrics import app, serve
from oomsight.controller.state import ClusterState, PolicyKey
from oomsight.core.apply import DEFAULT_RESIZE_INTERVAL, ApplyRecord, Resize, TemplatePatch
from oomsight.core.events import REPORTING_CONTROLLER
from oomsight.core.noderisk import NodeRisk, plan
from oomsight.core.podinfo import ANNOTATION_WARNING_THRESHOLD
from oomsight.core.policy import (
    ApplyOutcome,
    PolicyMemory,
    annotation_owner,
    memory_for,
    owner_lookups,
    pod_view,
    reconcile,
    rfc3339,
    set_apply_fields,
    status_changed,
    threshold_owner,
    workload_of,
)
from oomsight.kube.crd import DEFAULT_PEERING_NAME, GROUP, MEMORY_POLICY_PLURAL, NODE_REPORT_PLURAL, VERSION
from oomsight.kube.nodes import apply_node_patch, get_node
from oomsight.kube.owners import OwnerResolver
from oomsight.kube.podwatch import PodWatch, session_for
from oomsight.kube.policies import (
    OperatorRest,
    Write,
    policy_event,
    write_pod_annotations,
    write_policy_status,
)
from oomsight.kube.resize import patch_template, pod_resized_event, resize_pod
from oomsight.kube.rest import resource_version

log = logging.getLogger("oomsight.operator")

FINALIZER = "oomsight.io/operator"


@dataclass(frozen=True, slots=True)
class OperatorConfig:
    namespaces: tuple[str, ...] = ()
    """Empty: cluster-wide."""
    peering: str | None = None
    """Peering object name (mandatory when given); None: the default name if it exists."""
    default_peering: str = DEFAULT_PEERING_NAME
    standalone: bool = False
    priority: int = 0
    liveness: str | None = None
    instance: str = "oomsight-operator"
    debounce: float = 1.0
    resync: float = 60.0
    peering_lifetime: int = 60
    writers: int = 8
    in_cluster: bool = False
    metrics_port: int | None = None
    """Serve /metrics and /healthz on this port (None: not at all)."""
    resize_interval: float = DEFAULT_RESIZE_INTERVAL
    """At most one applied change per container this often (``--resize-interval``)."""

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
    resizes: int = 0
    templates: int = 0
    rollbacks: int = 0
    conflicts_held: int = 0
    """409s on a fenced write after which the object read back already held the value."""
    conflicts_rewritten: int = 0
    """409s on a fenced write after which the value was written on the version read back."""
    conflicts_failed: int = 0
    last_reconcile_seconds: float = 0.0

    def count(self, w: Write) -> None:
        if w.conflicts:
            if w.outcome == "held":
                self.conflicts_held += w.conflicts
            elif w.outcome == "rewritten":
                self.conflicts_rewritten += w.conflicts
            else:
                self.conflicts_failed += w.conflicts


class Operator:
    """Holds the state and the kopf registry; ``run()`` blocks until SIGTERM/SIGINT."""

    def __init__(self, cfg: OperatorConfig, rest: OperatorRest) -> None:
        self.cfg = cfg
        self.rest = rest
        self.state = ClusterState(on_dirty=self._mark)
        self.resolver = OwnerResolver(rest, workers=cfg.writers)
        self.flags: dict[PolicyKey, asyncio.Event] = {}
        self.applied_risk: dict[str, NodeRisk] = {}
        self.stats = Stats()
        self._pruned = 0.0
        self._missing_nodes: set[str] = set()
        self._clearing: set[str] = set()
        self.watches: dict[str, PodWatch] = {}
        self.event_watches: dict[str, PodWatch] = {}
        """The agent's OOM-kill Events per watched namespace: the rollback's fast signal."""
        self.metrics_runner: web.AppRunner | None = None
        self.session: aiohttp.ClientSession | None = None
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

        @kopf.on.startup(registry=reg)
        async def load_reports(**_: Any) -> None:
            # The reports as they are now, before any policy reconciles (kopf's own listing of them
            # arrives concurrently with the policies' and would leave a first reconcile short of data).
            # Paginated: a report can be ~100 KiB, a cluster can have thousands.
            pages = self.rest.pages(f"/apis/{GROUP}/{VERSION}/{NODE_REPORT_PLURAL}", limit=100)
            while (resp := await self._io(next, pages, None)) is not None:
                if not resp.ok:
                    raise kopf.TemporaryError(f"cannot list NodeMemoryReports (HTTP {resp.status})", delay=2)
                for item in resp.body.get("items") or []:
                    state.upsert_report(str(item["metadata"]["name"]), dict(item.get("status") or {}))
            self.session = session_for(self.rest.creds)

        @kopf.on.startup(registry=reg)
        async def start_metrics(**_: Any) -> None:
            if cfg.metrics_port is not None:
                self.metrics_runner = await serve(app(self.snapshot, self.healthy), cfg.metrics_port)
                log.info("serving /metrics and /healthz on port %d", cfg.metrics_port)

        @kopf.on.cleanup(registry=reg)
        async def stop_watches(**_: Any) -> None:
            if self.metrics_runner is not None:
                await self.metrics_runner.cleanup()
            for w in [*self.watches.values(), *self.event_watches.values()]:
                await w.stop()
            if self.session is not None:
                await self.session.close()

        @kopf.on.event(GROUP, VERSION, MEMORY_POLICY_PLURAL, registry=reg)
        async def policy_event_handler(
            type: str, name: str, namespace: str | None, body: kopf.Body, **_: Any
        ) -> None:
            if not namespace:
                return
            if type == "DELETED":
                state.delete_policy(namespace, name)
                self.flags.pop((namespace, name), None)
                if namespace in self.watches:
                    await self.clear_stale_thresholds(namespace)
                elif not state.policies_by_ns.get(namespace):
                    # Deleted while this operator was down (the finalizer held it until now): the
                    # namespace's pods were never listed here, so ask the API which carry a threshold.
                    await self.clear_orphaned_thresholds(namespace)
                await self._unwatch_if_unused(namespace)
            elif not (body.get("metadata") or {}).get("deletionTimestamp"):
                state.upsert_policy(body)
                self._watch(namespace)

        @kopf.daemon(GROUP, VERSION, MEMORY_POLICY_PLURAL, registry=reg, cancellation_timeout=5.0)
        async def policy_daemon(
            name: str, namespace: str | None, body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any
        ) -> None:
            key = (namespace or "", name)
            state.upsert_policy(body)
            watch = self._watch(key[0])
            flag = self._flag(key)
            flag.set()
            await watch.synced.wait()  # every pod of the namespace is known before the first reconcile
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

        @kopf.on.event(GROUP, VERSION, NODE_REPORT_PLURAL, registry=reg)
        async def report_event(type: str, name: str, body: kopf.Body, **_: Any) -> None:
            if type == "DELETED":
                risk = state.delete_report(name)
            else:
                risk = state.upsert_report(name, dict(body.get("status") or {}))
            await self.sync_node(name, risk)

    def _prune(self, now: float) -> None:
        """Forget what is older than every policy's history window (at most every 10 minutes)."""
        if now - self._pruned < 600:
            return
        self._pruned = now
        windows = [e.spec.settings.history_window for e in self.state.policies.values()]
        keep = max(windows, default=8 * 86400.0)
        self.state.ooms.prune(now, keep)
        for e in self.state.policies.values():
            if e.memory is not None:
                e.memory.recommender.prune(now)
                w = e.spec.settings.history_window
                for k, ts in list(e.memory.oom_times.items()):
                    e.memory.oom_times[k] = [t for t in ts if now - t <= w]

    # --- metrics -----------------------------------------------------------------------------------
    def snapshot(self) -> dict[str, float]:
        st = self.stats
        return {
            "reconciles": st.reconciles,
            "writes_status": st.status_writes,
            "writes_annotation": st.annotation_writes,
            "writes_event": st.events,
            "writes_node": st.node_writes,
            "writes_resize": st.resizes,
            "writes_template": st.templates,
            "rollbacks": st.rollbacks,
            "conflicts_held": st.conflicts_held,
            "conflicts_rewritten": st.conflicts_rewritten,
            "conflicts_failed": st.conflicts_failed,
            "watch_errors": sum(w.errors for w in [*self.watches.values(), *self.event_watches.values()]),
            "policies": len(self.state.policies),
            "pods": len(self.state.pods),
            "reports": len(self.state.report_keys),
            "last_reconcile": st.last_reconcile_seconds,
        }

    def healthy(self) -> tuple[bool, dict[str, Any]]:
        unsynced = sorted(ns for ns, w in self.watches.items() if not w.synced.is_set())
        return not unsynced, {"instance": self.cfg.instance, "unsyncedNamespaces": unsynced}

    # --- pod watches -------------------------------------------------------------------------------
    def _watch(self, namespace: str) -> PodWatch:
        w = self.watches.get(namespace)
        if w is None:
            assert self.session is not None, "the startup handler opens the session"
            w = PodWatch(
                self.rest.creds,
                self.session,
                namespace,
                on_list=lambda items: self.state.replace_namespace_pods(namespace, items),
                on_event=self._pod_event,
                user_agent=self.rest.user_agent,
            )
            self.watches[namespace] = w.start()
            log.info("watching pods in namespace %s", namespace)
            self.event_watches[namespace] = PodWatch(
                self.rest.creds,
                self.session,
                namespace,
                on_list=self._agent_events,
                on_event=self._agent_event,
                user_agent=self.rest.user_agent,
                collection="/apis/events.k8s.io/v1/namespaces/{ns}/events",
                field_selector=f"reportingController={REPORTING_CONTROLLER},type=Warning",
            ).start()
        return w

    def _agent_events(self, items: list[Mapping[str, Any]]) -> None:
        for body in items:
            self.state.add_agent_event(body)

    def _agent_event(self, etype: str, body: Mapping[str, Any]) -> None:
        if etype != "DELETED":
            self.state.add_agent_event(body)

    def _pod_event(self, etype: str, body: Mapping[str, Any]) -> None:
        if etype == "DELETED":
            self.state.delete_pod(body)
        else:
            self.state.upsert_pod(body)

    async def _unwatch_if_unused(self, namespace: str) -> None:
        if self.state.policies_by_ns.get(namespace):
            return
        w = self.watches.pop(namespace, None)
        if w is not None:
            await w.stop()
        ew = self.event_watches.pop(namespace, None)
        if ew is not None:
            await ew.stop()
            self.state.drop_namespace(namespace)
            log.info("stopped watching pods in namespace %s (no policy left)", namespace)

    # --- node flags --------------------------------------------------------------------------------
    async def sync_node(self, node: str, risk: NodeRisk) -> None:
        """Converge the Node's condition, labels and Event to ``risk`` (only what differs is written)."""
        if self.applied_risk.get(node) == risk:
            return
        resp = await self._io(get_node, self.rest, node)
        if resp.status == 404:
            if node not in self._missing_nodes:
                self._missing_nodes.add(node)
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
                patch.labels or "unchanged",
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
        self._prune(now)

        policies_of = {  # each pod's selecting policies: who owns its annotations is decided among them
            p.uid: [state.policies[k].spec for k in state.pod_policies.get(p.uid, ()) if k in state.policies]
            for p in pods
        }
        annotate = {uid for uid, specs in policies_of.items() if annotation_owner(specs) == key}
        threshold_pods = {uid for uid, specs in policies_of.items() if threshold_owner(specs) == key}
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
            annotate=annotate,
            threshold_pods=threshold_pods,
            resize_interval=self.cfg.resize_interval,
            kill_signals=state.kill_signals,
        )
        self.stats.reconciles += 1
        ns, name = key
        writes: list[Any] = []
        for outcome in result.applies:  # before the status, so that the status says what happened
            writes += await self.apply(key, entry.spec.uid, entry.memory, outcome)
        if status_changed(entry.last_status, result.status):
            body = {**result.status, "lastUpdateTime": rfc3339(now)}
            w: Write = await self._io(write_policy_status, self.rest, ns, name, body, entry.version)
            self.stats.count(w)
            resp = w.response
            if w.ok:
                entry.last_status = dict(resp.body.get("status") or body)
                entry.version = resource_version(resp.body) or entry.version
            if w.wrote:
                self.stats.status_writes += 1
                writes.append("status")
            elif w.ok:
                log.info("MemoryPolicy %s/%s: the status already said this (another writer wrote it "
                         "meanwhile): not written again", ns, name)  # fmt: skip
            elif not w.ok and resp.status != 404:
                log.warning("status of MemoryPolicy %s/%s not written (HTTP %s): %s", ns, name, resp.status,
                            resp.message[:300])  # fmt: skip
        if result.annotations:
            version = {p.name: state.pod_versions.get(p.uid, "") for p in pods}
            outcomes: list[Write] = await asyncio.gather(
                *(
                    self._io(write_pod_annotations, self.rest, ns, pod, ann, version.get(pod, ""))
                    for pod, ann in result.annotations.items()
                )
            )
            done = held = 0
            for (pod, _), w in zip(result.annotations.items(), outcomes, strict=True):
                self.stats.count(w)
                resp = w.response
                if w.ok:  # our own write (or what another replica wrote) must not look like a change
                    done += w.wrote
                    held += not w.wrote
                    state.replace_pod_view(pod_view(resp.body), resource_version(resp.body))
                elif resp.status != 404:
                    log.warning("annotations of pod %s/%s not written (HTTP %s): %s", ns, pod, resp.status,
                                resp.message[:200])  # fmt: skip
            self.stats.annotation_writes += done
            if done:
                writes.append(f"{done} pod annotations")
            if held:
                log.info("MemoryPolicy %s/%s: %d pod(s) already had these annotations (another writer made "
                         "them meanwhile): not written again", ns, name, held)  # fmt: skip
        if entry.spec.emit_events:
            for ch in result.changes:
                resp = await self._io(
                    policy_event, self.rest, ns, name, entry.spec.uid, "Normal", "RecommendationChanged",
                    ch.message(), self.cfg.instance,
                )  # fmt: skip
                if resp.ok:
                    self.stats.events += 1
                    writes.append("event")
        await self.clear_stale_thresholds(ns)
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

    async def apply(self, key: PolicyKey, uid: str, mem: PolicyMemory, out: ApplyOutcome) -> list[str]:
        """Carry out one apply decision: the resizes (or the template patch), the Pod's and the policy's
        Events. A write that fails puts the record back as it was (tried again at the next reconcile)
        and says why in the status; a Pod that is gone (404) is skipped."""
        ns, name = key
        d = out.decision
        rollback = d.event == "rolledBack"
        why = d.message if rollback else (d.record.applied.reason if d.record.applied else d.message)
        failed: list[str] = []
        resized = 0
        for w in d.writes:
            if isinstance(w, Resize):
                resp = await self._io(resize_pod, self.rest, ns, w)
                if resp.ok:
                    resized += 1
                    note = f"Rolled back after an OOM kill: {why}" if rollback else why
                    ev = await self._io(
                        pod_resized_event, self.rest, ns, resp.body, w, name, note, self.cfg.instance
                    )
                    self.stats.events += int(ev.ok)
            else:
                assert isinstance(w, TemplatePatch)
                resp = await self._io(patch_template, self.rest, ns, w)
                self.stats.templates += int(resp.ok)
            if not resp.ok and resp.status != 404:
                target = f"pod {w.pod}" if isinstance(w, Resize) else f"{w.kind} {w.name}"
                failed.append(f"{target}: HTTP {resp.status} {resp.message[:200]}")
        if failed:
            what = "rollback" if rollback else "resize"
            log.warning("MemoryPolicy %s/%s: %s of %s container %s failed: %s", ns, name, what,
                        out.workload, out.container, "; ".join(failed))  # fmt: skip
            if out.before == ApplyRecord():
                mem.applies.pop(out.key, None)
            else:
                mem.applies[out.key] = out.before
            why = f"{'rollback' if rollback else 'change'} failed: {failed[0]}"
            set_apply_fields(out.entry, out.before, why)
            mem.apply_failures[out.key] = (time.time(), why[:400])
            return []
        mem.apply_failures.pop(out.key, None)
        self.stats.resizes += resized
        self.stats.rollbacks += int(rollback)
        reason, etype = ("ResizeRolledBack", "Warning") if rollback else ("ResourcesApplied", "Normal")
        resp = await self._io(
            policy_event, self.rest, ns, name, uid, etype, reason, d.message, self.cfg.instance
        )
        self.stats.events += int(resp.ok)
        log.info("MemoryPolicy %s/%s: %s", ns, name, d.message)
        return [f"{reason} ({len(d.writes)} writes)"]

    async def clear_stale_thresholds(self, namespace: str) -> None:
        """Remove ``oomsight.io/warning-threshold`` from the pods of ``namespace`` that no policy selects
        any more (``ClusterState.stale_threshold``: no pod scan), once per pod: a pod already being
        cleared by another reconcile is skipped."""
        pods = [p for p in self.state.stale_threshold_pods(namespace) if p.uid not in self._clearing]
        if not pods:
            return
        self._clearing.update(p.uid for p in pods)
        try:
            outcomes: list[Write] = await asyncio.gather(
                *(
                    self._io(write_pod_annotations, self.rest, namespace, p.name,
                             {ANNOTATION_WARNING_THRESHOLD: None}, self.state.pod_versions.get(p.uid, ""))
                    for p in pods
                )
            )  # fmt: skip
        finally:
            self._clearing.difference_update(p.uid for p in pods)
        done = 0
        for p, w in zip(pods, outcomes, strict=True):
            self.stats.count(w)
            resp = w.response
            if w.ok:
                done += w.wrote
                self.state.replace_pod_view(pod_view(resp.body), resource_version(resp.body))
            elif resp.status != 404:
                log.warning("stale warning threshold of pod %s/%s not removed (HTTP %s): %s", namespace,
                            p.name, resp.status, resp.message[:200])  # fmt: skip
        self.stats.annotation_writes += done
        if done:
            log.info("removed the unowned warning threshold of %d pod(s) in %s", done, namespace)

    async def clear_orphaned_thresholds(self, namespace: str) -> None:
        """Remove the warning threshold from every pod of ``namespace``, a namespace with no MemoryPolicy
        left whose pods are not watched (one paginated list of its pods, then one patch per annotated pod)."""
        pages = self.rest.pages(f"/api/v1/namespaces/{namespace}/pods")
        names: list[tuple[str, str]] = []
        while (resp := await self._io(next, pages, None)) is not None:
            if not resp.ok:
                log.warning("cannot list pods of %s to remove stale warning thresholds (HTTP %s): %s",
                            namespace, resp.status, resp.message[:200])  # fmt: skip
                return
            names += [
                (str(p["metadata"]["name"]), resource_version(p))
                for p in resp.body.get("items") or []
                if ANNOTATION_WARNING_THRESHOLD in ((p.get("metadata") or {}).get("annotations") or {})
            ]
        outcomes: list[Write] = await asyncio.gather(
            *(self._io(write_pod_annotations, self.rest, namespace, n, {ANNOTATION_WARNING_THRESHOLD: None},
                       v)
              for n, v in names)
        )  # fmt: skip
        for w in outcomes:
            self.stats.count(w)
        done = sum(1 for w in outcomes if w.wrote)
        self.stats.annotation_writes += done
        if done:
            log.info("removed the unowned warning threshold of %d pod(s) in %s", done, namespace)

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
