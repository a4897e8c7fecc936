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
            owner = None
            for ref in (resp.body.get("metadata") or {}).get("ownerReferences") or []:
                if ref.get("controller"):
                    owner = (str(ref.get("kind", "")), str(ref.get("name", "")))
                    break
        with self._lock:
            if len(self._cache) >= MAX_ENTRIES:
                self._cache.clear()
            self._cache[key] = owner

    def resolve(
        self, keys: Iterable[tuple[str, str, str]]
    ) -> dict[tuple[str, str, str], tuple[str, str] | None]:
        """Look up what is not cached yet (in parallel); returns the whole cache for ``keys``."""
        wanted = {k for k in keys if k[1] in _PATHS}
        with self._lock:
            missing = [k for k in wanted if k not in self._cache]
        if missing:
            with ThreadPoolExecutor(max_workers=min(self.workers, len(missing))) as pool:
                list(pool.map(self._one, missing))
        with self._lock:
            return {k: self._cache[k] for k in wanted if k in self._cache}

    def forget(self, key: tuple[str, str, str]) -> None:
        with self._lock:
            self._cache.pop(key, None)
