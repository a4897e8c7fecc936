"""The Pods bound to this node, kept current by a list+watch filtered on ``spec.nodeName``.

Like the kubelet's own pod source (pkg/kubelet/config/apiserver.go: ``fields.OneTermEqualSelector(
"spec.nodeName", nodeName)``), the agent never watches every Pod in the cluster: the API server
filters, so a 5,000-pod cluster costs each agent only its own ~100 pods.

The cache maps pod UID → ``PodInfo`` and (pod UID, container ID) → container. It keeps the last
state it saw while the API server is away; a 410 Gone (compacted resourceVersion) triggers a fresh
list. ``removed`` collects UIDs of deleted pods so the agent can drop their state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from oomsight.core.errors import ParseError
from oomsight.core.podinfo import ContainerInfo, PodInfo, pod_from_json
from oomsight.kube.rest import Rest, WatchError, resource_version

log = logging.getLogger(__name__)

WATCH_SECONDS = 240
"""Server-side ``timeoutSeconds`` of one watch; the client reconnects after it."""


class PodCache:
    def __init__(
        self,
        rest: Rest,
        node: str,
        on_error: Callable[[str, int], None] | None = None,
        backoff_max: float = 5.0,
    ) -> None:
        self.rest = rest
        self.node = node
        self.on_error = on_error or (lambda kind, code: None)
        self.backoff_max = backoff_max
        self._pods: dict[str, PodInfo] = {}
        self._lock = threading.Lock()
        self.synced = threading.Event()
        self._stop = threading.Event()
        self._removed: set[str] = set()
        self._thread: threading.Thread | None = None
        self.lists = 0
        self.changes = 0
        """Pods added, changed or removed, and relists, so far: unchanged means no new container."""
        self._last_code: int | None = None

    # ---- reads --------------------------------------------------------------------------
    def get(self, uid: str | None) -> PodInfo | None:
        if not uid:
            return None
        with self._lock:
            return self._pods.get(uid)

    def lookup(
        self, uid: str | None, container_id: str | None
    ) -> tuple[PodInfo | None, ContainerInfo | None]:
        pod = self.get(uid)
        return pod, (pod.container_by_id(container_id) if pod else None)

    def pods(self) -> list[PodInfo]:
        with self._lock:
            return list(self._pods.values())

    def take_removed(self) -> set[str]:
        with self._lock:
            gone, self._removed = self._removed, set()
        return gone

    # ---- the watch ----------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="pod-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _selector(self) -> dict[str, Any]:
        return {"fieldSelector": f"spec.nodeName={self.node}"}

    def _apply(self, obj: dict[str, Any], deleted: bool = False) -> None:
        try:
            info = pod_from_json(obj)
        except ParseError as err:
            log.warning("pods: skipped an object: %s", err)
            self.on_error("pod_parse", 0)
            return
        with self._lock:
            self.changes += 1
            if deleted:
                if self._pods.pop(info.uid, None) is not None:
                    self._removed.add(info.uid)
            else:
                self._pods[info.uid] = info

    def list_once(self) -> str | None:
        """Replace the cache with a fresh list; return its resourceVersion, None on failure."""
        resp = self.rest.request("GET", "/api/v1/pods", query=self._selector())
        if not resp.ok:
            self.on_error("pod_list", resp.status)
            self._say(f"list failed (HTTP {resp.status}): {resp.message[:200]}", resp.status)
            return None
        fresh: dict[str, PodInfo] = {}
        for obj in resp.body.get("items") or []:
            try:
                info = pod_from_json(obj)
            except ParseError:
                self.on_error("pod_parse", 0)
                continue
            fresh[info.uid] = info
        with self._lock:
            self._removed |= set(self._pods) - set(fresh)
            self._pods = fresh
            self.changes += 1
        self.lists += 1
        if self._last_code is not None:
            log.info("pods: listed %d pods of node %s again", len(fresh), self.node)
            self._last_code = None
        self.synced.set()
        return resource_version(resp.body)

    def _run(self) -> None:
        backoff = 0.2
        rv: str | None = None
        while not self._stop.is_set():
            if rv is None:
                rv = self.list_once()
                if rv is None:
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.backoff_max)
                    continue
            query = {
                **self._selector(),
                "watch": "true",
                "resourceVersion": rv,
                "allowWatchBookmarks": "true",
                "timeoutSeconds": WATCH_SECONDS,
            }
            try:
                for ev in self.rest.stream("/api/v1/pods", query, read_timeout=WATCH_SECONDS + 30):
                    backoff = 0.2
                    typ = ev.get("type")
                    obj = ev.get("object") or {}
                    if typ == "ERROR":
                        code = int(obj.get("code") or 0)
                        if code != 410:  # 410: the resourceVersion is too old, a relist is all it takes
                            self.on_error("pod_watch", code)
                        rv = None
                        break
                    new_rv = resource_version(obj)
                    if typ in ("ADDED", "MODIFIED"):
                        self._apply(obj)
                    elif typ == "DELETED":
                        self._apply(obj, deleted=True)
                    if new_rv:
                        rv = new_rv
                    if self._stop.is_set():
                        return
            except WatchError as err:
                self.on_error("pod_watch", err.status)
                self._say(f"watch failed: {err}", err.status)
                if err.status == 410:
                    rv = None
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.backoff_max)
            except Exception as err:  # noqa: BLE001 - a dropped connection mid-stream
                self.on_error("pod_watch", 0)
                self._say(f"watch interrupted: {type(err).__name__}: {err}", -1)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, self.backoff_max)

    def _say(self, message: str, code: int) -> None:
        """Log a failure when it differs from the last one (an outage is one line, not one per retry);
        403 is a warning with the fix, since no retry will cure it."""
        if code == self._last_code:
            log.debug("pods: %s", message)
            return
        self._last_code = code
        if code == 403:
            log.warning("pods: %s; the agent needs get/list/watch on pods (cluster-wide)", message)
        else:
            log.info("pods: %s", message)

    def wait_synced(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self._stop.is_set():
            if self.synced.wait(min(0.2, max(0.0, deadline - time.monotonic()))):
                return True
            if time.monotonic() >= deadline:
                return False
        return False
