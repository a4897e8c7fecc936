"""Who owns a ReplicaSet or a Job: one GET each, cached (owners never change for a given name+UID).

A Deployment's Pods point at their ReplicaSet and a CronJob's at their Job; the workload is that
object's own controller owner (``metav1.GetControllerOf``). The operator resolves only the names its
selected Pods point at, so a cluster's unrelated ReplicaSets cost nothing, and it never watches them.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor

from oomsight.kube.rest import Rest

log = logging.getLogger(__name__)

_PATHS = {"ReplicaSet": "/apis/apps/v1/namespaces/{ns}/replicasets/{name}",
          "Job": "/apis/batch/v1/namespaces/{ns}/jobs/{name}"}  # fmt: skip
_LISTS = {
    "ReplicaSet": "/apis/apps/v1/namespaces/{ns}/replicasets",
    "Job": "/apis/batch/v1/namespaces/{ns}/jobs",
}
LIST_THRESHOLD = 20
"""More missing names than this in one namespace and kind: one paginated LIST instead of a GET each."""
MAX_ENTRIES = 20000


class OwnerResolver:
    """(namespace, kind, name) → the controller owner (kind, name), or None (no owner, or gone)."""

    def __init__(self, rest: Rest, workers: int = 8) -> None:
        self.rest = rest
        self.workers = workers
        self._cache: dict[tuple[str, str, str], tuple[str, str] | None] = {}
        self._lock = threading.Lock()
        self.lookups = 0

    def known(self) -> dict[tuple[str, str, str], tuple[str, str] | None]:
        with self._lock:
            return dict(self._cache)

    def _one(self, key: tuple[str, str, str]) -> None:
        ns, kind, name = key
        resp = self.rest.request("GET", _PATHS[kind].format(ns=ns, name=name))
        self.lookups += 1
        if resp.status == 404:
            owner = None
        elif not resp.ok:
            log.warning("owner lookup of %s %s/%s failed (HTTP %s): %s", kind, ns, name, resp.status,
                        resp.message[:200])  # fmt: skip
            return  # not cached: retried at the next reconcile
        else:
            owner = self._controller(resp.body)
        with self._lock:
            if len(self._cache) >= MAX_ENTRIES:
                self._cache.clear()
            self._cache[key] = owner

    @staticmethod
    def _controller(obj: dict[str, object]) -> tuple[str, str] | None:
        meta = obj.get("metadata")
        refs = meta.get("ownerReferences") if isinstance(meta, dict) else None
        for ref in refs or []:
            if ref.get("controller"):
                return (str(ref.get("kind", "")), str(ref.get("name", "")))
        return None

    def _list(self, ns: str, kind: str) -> None:
        found: dict[tuple[str, str, str], tuple[str, str] | None] = {}
        for resp in self.rest.pages(_LISTS[kind].format(ns=ns), limit=500):
            self.lookups += 1
            if not resp.ok:
                log.warning(
                    "listing %ss in %s failed (HTTP %s): %s", kind, ns, resp.status, resp.message[:200]
                )
                return
            for item in resp.body.get("items") or []:
                found[(ns, kind, str(item["metadata"]["name"]))] = self._controller(item)
        with self._lock:
            if len(self._cache) + len(found) >= MAX_ENTRIES:
                self._cache.clear()
            self._cache.update(found)

    def resolve(
        self, keys: Iterable[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], tuple[str, str] | None]:
        """Look up what is not cached yet (in parallel); returns the whole cache for ``keys``."""
        wanted = {k for k in keys if k[1] in _PATHS}
        with self._lock:
            missing = [k for k in wanted if k not in self._cache]
        by_group: dict[tuple[str, str], list[tuple[str, str, str]]] = {}
        for k in missing:
            by_group.setdefault((k[0], k[1]), []).append(k)
        singles = []
        for (ns, kind), ks in by_group.items():
            if len(ks) > LIST_THRESHOLD:
                self._list(ns, kind)
                with self._lock:
                    singles += [k for k in ks if k not in self._cache]  # created after the LIST
            else:
                singles += ks
        if singles:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(singles))) as pool:
                list(pool.map(self._one, singles))
        with self._lock:
            return {k: self._cache[k] for k in wanted if k in self._cache}

    def forget(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._cache.pop(key, None)
