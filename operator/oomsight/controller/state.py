"""The operator's in-memory view of the cluster: policies, the pods they select, report evidence.

Fed by the watch handlers, read by the per-policy reconcile. Every update marks *only* the policies
it affects as dirty: a pod change touches the policies of its namespace (its selector is matched once,
here, not at reconcile time), a report change touches the policies that select a pod whose profile or
incidents changed. A reconcile then reads its own pod set (``PolicyEntry.selected``), so its cost
grows with the pods it selects and never with the rest of the cluster.

A pod that carries ``oomsight.io/warning-threshold`` but that no valid policy selects any more (a
relabel, a selector change, a deleted policy) is kept in ``stale_threshold`` (namespace → UIDs), kept
up to date by the same updates, so the operator removes the annotation without scanning pods.

Single-threaded: call it from the operator's event loop only.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from oomsight.core.noderisk import NodeRisk, risk_of
from oomsight.core.podinfo import ANNOTATION_WARNING_THRESHOLD
from oomsight.core.policy import (
    OomLog,
    PodView,
    PolicyMemory,
    PolicySpec,
    Profile,
    agent_kill,
    kubelet_ooms,
    parse_policy,
    pod_view,
    profiles_from_report,
)
from oomsight.kube.rest import resource_version

PolicyKey = tuple[str, str]


@dataclass(slots=True)
class PolicyEntry:
    spec: PolicySpec
    previous_status: dict[str, Any] | None
    """The status the object carried when first seen (seeds ``memory`` after a restart)."""
    selected: set[str] = field(default_factory=set)
    memory: PolicyMemory | None = None
    last_status: dict[str, Any] | None = None
    spec_fingerprint: str = ""
    version: str = ""
    """The policy's resourceVersion last seen: its status write is fenced on it."""


def _spec_fingerprint(body: Mapping[str, Any]) -> str:
    return repr(sorted((body.get("spec") or {}).items()))


class ClusterState:
    def __init__(self, on_dirty: Callable[[PolicyKey], None] | None = None) -> None:
        self.on_dirty = on_dirty or (lambda key: None)
        self.pods: dict[str, PodView] = {}
        self.pod_versions: dict[str, str] = {}
        """Pod UID → resourceVersion last seen (every update, relevant or not): annotation writes are
        fenced on it."""
        self.pods_by_ns: dict[str, set[str]] = {}
        self.policies: dict[PolicyKey, PolicyEntry] = {}
        self.policies_by_ns: dict[str, set[PolicyKey]] = {}
        self.pod_policies: dict[str, set[PolicyKey]] = {}
        self.profiles: dict[tuple[str, str], Profile] = {}
        self.report_keys: dict[str, set[tuple[str, str]]] = {}
        self.report_incidents: dict[str, set[str]] = {}
        self.risks: dict[str, NodeRisk] = {}
        self.ooms = OomLog()
        self.kill_signals: dict[tuple[str, str], list[float]] = {}
        """(pod UID, container) → times of the agent's OOM-kill Events (the fast rollback signal)."""
        self.stale_threshold: dict[str, set[str]] = {}
        """namespace → UIDs of pods with a warning-threshold annotation that no valid policy selects."""

    # --- helpers ---------------------------------------------------------------------------------
    def _dirty(self, keys: set[PolicyKey]) -> None:
        for k in keys:
            if k in self.policies:
                self.on_dirty(k)

    def _track_stale(self, uid: str) -> None:
        pv = self.pods.get(uid)
        if pv is None:
            return
        if pv.annotation(ANNOTATION_WARNING_THRESHOLD) is not None and not self.pod_policies.get(uid):
            self.stale_threshold.setdefault(pv.namespace, set()).add(uid)
        else:
            self._unstale(pv.namespace, uid)

    def _unstale(self, namespace: str, uid: str) -> None:
        stale = self.stale_threshold.get(namespace)
        if stale is not None:
            stale.discard(uid)
            if not stale:
                del self.stale_threshold[namespace]

    def _unselect(self, key: PolicyKey, uids: set[str]) -> None:
        """Policy ``key`` no longer selects ``uids`` (their ``pod_policies`` lose it)."""
        for uid in uids:
            keys = self.pod_policies.get(uid)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.pod_policies[uid]

    def _policies_on_node(self, node: str) -> set[PolicyKey]:
        """The policies selecting a pod on ``node``."""
        keys: set[PolicyKey] = set()
        for uid, pv in self.pods.items():
            if pv.node == node:
                keys |= self.pod_policies.get(uid, set())
        return keys

    def stale_threshold_pods(self, namespace: str) -> list[PodView]:
        """The pods of ``namespace`` whose warning-threshold annotation no policy owns any more."""
        return [self.pods[u] for u in sorted(self.stale_threshold.get(namespace, ())) if u in self.pods]

    def replace_pod_view(self, pv: PodView, version: str = "") -> None:
        """The operator's own write came back: record it without marking anything dirty."""
        if pv.uid in self.pods:
            self.pods[pv.uid] = pv
            if version:
                self.pod_versions[pv.uid] = version
            self._track_stale(pv.uid)

    @property
    def nodes_reporting(self) -> frozenset[str]:
        return frozenset(self.report_keys)

    # --- pods ------------------------------------------------------------------------------------
    def upsert_pod(self, body: Mapping[str, Any]) -> bool:
        """Record a pod (ADDED/MODIFIED); True when anything a policy uses changed."""
        pv = pod_view(body)
        if not pv.uid:
            return False
        version = resource_version(body)
        if version:
            self.pod_versions[pv.uid] = version
        old = self.pods.get(pv.uid)
        if old == pv:
            return False
        self.pods[pv.uid] = pv
        self.pods_by_ns.setdefault(pv.namespace, set()).add(pv.uid)
        for ev in kubelet_ooms(pv):
            self.ooms.add(ev)
        before = self.pod_policies.get(pv.uid, set())
        now = set()
        for key in self.policies_by_ns.get(pv.namespace, ()):
            entry = self.policies[key]
            if entry.spec.error is None and entry.spec.selector.matches(pv.label_map):
                now.add(key)
                entry.selected.add(pv.uid)
            else:
                entry.selected.discard(pv.uid)
        if now:
            self.pod_policies[pv.uid] = now
        else:
            self.pod_policies.pop(pv.uid, None)
        self._track_stale(pv.uid)
        self._dirty(before | now)
        return True

    def replace_namespace_pods(self, namespace: str, items: list[Mapping[str, Any]]) -> None:
        """A fresh LIST of a namespace: upsert every pod, forget the ones that are gone."""
        seen = set()
        for body in items:
            self.upsert_pod(body)
            seen.add(str((body.get("metadata") or {}).get("uid", "")))
        for uid in list(self.pods_by_ns.get(namespace, ())):
            if uid not in seen:
                self._delete_uid(uid)

    def drop_namespace(self, namespace: str) -> None:
        """No policy left in ``namespace``: stop keeping its pods."""
        for uid in list(self.pods_by_ns.pop(namespace, ())):
            self._delete_uid(uid)

    def delete_pod(self, body: Mapping[str, Any]) -> None:
        self._delete_uid(str((body.get("metadata") or {}).get("uid", "")))

    def _delete_uid(self, uid: str) -> None:
        self.pod_versions.pop(uid, None)
        pv = self.pods.pop(uid, None)
        if pv is None:
            return
        self.pods_by_ns.get(pv.namespace, set()).discard(uid)
        self._unstale(pv.namespace, uid)
        keys = self.pod_policies.pop(uid, set())
        for key in keys:
            entry = self.policies.get(key)
            if entry is not None:
                entry.selected.discard(uid)
        self.ooms.forget_pod(uid)
        for k in [k for k in self.kill_signals if k[0] == uid]:
            del self.kill_signals[k]
        self._dirty(keys)

    def add_agent_event(self, body: Mapping[str, Any]) -> bool:
        """An agent Event: when it reports an OOM kill of a selected pod's container, remember its time
        and mark the pod's policies dirty; True when it did."""
        kill = agent_kill(body)
        if kill is None or kill[0] not in self.pods:
            return False
        times = self.kill_signals.setdefault((kill[0], kill[1]), [])
        if kill[2] in times:
            return False
        times.append(kill[2])
        del times[:-16]
        self._dirty(self.pod_policies.get(kill[0], set()))
        return True

    # --- policies --------------------------------------------------------------------------------
    def upsert_policy(self, body: Mapping[str, Any]) -> PolicyEntry:
        """Record a policy; re-select its pods when its spec changed (status-only updates are ignored)."""
        spec = parse_policy(body)
        fp = _spec_fingerprint(body)
        entry = self.policies.get(spec.key)
        version = resource_version(body)
        if entry is not None and entry.spec_fingerprint == fp:
            entry.version = version or entry.version
            return entry
        if entry is None:
            status = dict(body.get("status") or {}) or None
            entry = PolicyEntry(spec, status, last_status=status)
            self.policies[spec.key] = entry
            self.policies_by_ns.setdefault(spec.namespace, set()).add(spec.key)
        else:
            if entry.spec.settings != spec.settings:
                entry.memory = None  # rebuilt from the last status with the new settings
                entry.previous_status = entry.last_status
            entry.spec = spec
        entry.spec_fingerprint = fp
        entry.version = version or entry.version
        old = entry.selected
        self._unselect(spec.key, old)
        entry.selected = set()
        if spec.error is None:
            for uid in self.pods_by_ns.get(spec.namespace, ()):
                if spec.selector.matches(self.pods[uid].label_map):
                    entry.selected.add(uid)
                    self.pod_policies.setdefault(uid, set()).add(spec.key)
        for uid in old | entry.selected:
            self._track_stale(uid)
        self._dirty({spec.key})
        return entry

    def delete_policy(self, namespace: str, name: str) -> None:
        key = (namespace, name)
        entry = self.policies.pop(key, None)
        if entry is None:
            return
        self.policies_by_ns.get(namespace, set()).discard(key)
        self._unselect(key, entry.selected)
        for uid in entry.selected:
            self._track_stale(uid)
        if not self.policies_by_ns.get(namespace):
            self.policies_by_ns.pop(namespace, None)

    # --- reports ---------------------------------------------------------------------------------
    def upsert_report(self, node: str, status: Mapping[str, Any] | None) -> NodeRisk:
        """Record a NodeMemoryReport's status; returns the node's desired risk flags."""
        profiles, incidents = profiles_from_report(node, status or {})
        old_keys = self.report_keys.get(node, set())
        new_keys = {(p.pod_uid, p.container) for p in profiles}
        changed_pods: set[str] = set()
        for k in old_keys - new_keys:
            self.profiles.pop(k, None)
            changed_pods.add(k[0])
        for p in profiles:
            k = (p.pod_uid, p.container)
            if self.profiles.get(k) != p:
                self.profiles[k] = p
                changed_pods.add(p.pod_uid)
        first = node not in self.report_keys
        self.report_keys[node] = new_keys
        seen = self.report_incidents.setdefault(node, set())
        for ev in incidents:
            if ev.key not in seen:
                seen.add(ev.key)
                if self.ooms.add(ev):
                    changed_pods.add(ev.pod_uid)
        if len(seen) > 200:
            self.report_incidents[node] = {ev.key for ev in incidents}
        affected: set[PolicyKey] = set()
        for uid in changed_pods:
            affected |= self.pod_policies.get(uid, set())
        if first:  # a node that starts reporting can turn a policy from kubelet-only to agents
            affected |= self._policies_on_node(node)
        self._dirty(affected)
        risk = risk_of(node, status)
        self.risks[node] = risk
        return risk

    def delete_report(self, node: str) -> NodeRisk:
        """The report is gone: its profiles go, its pods' policies may fall back to kubelet-only."""
        risk = self.upsert_report(node, None)
        self.report_keys.pop(node, None)
        self.report_incidents.pop(node, None)
        self.risks.pop(node, None)
        self._dirty(self._policies_on_node(node))
        return risk
