"""Write this node's NodeMemoryReport: only when it changed, at most once a minute.

The object is cluster-scoped and named after the node. It is created with ``spec`` only, then
``status`` is replaced through the status subresource with a JSON patch (``add /status`` replaces
the whole status, so fields that disappeared do not linger as they would with a merge patch).
Whether to write is decided by ``oomsight.core.report.changed`` (against the status last written)
and ``due``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from oomsight.core.report import MIN_WRITE_INTERVAL, changed, due, size_of
from oomsight.kube.crd import API_VERSION, GROUP, NODE_REPORT_KIND, NODE_REPORT_PLURAL, VERSION
from oomsight.kube.rest import Response, Rest

log = logging.getLogger(__name__)


class ReportWriter:
    def __init__(
        self,
        rest: Rest,
        node: str,
        min_interval: float = MIN_WRITE_INTERVAL,
        on_error: Callable[[str, int], None] | None = None,
    ) -> None:
        self.rest = rest
        self.node = node
        self.min_interval = min_interval
        self.on_error = on_error or (lambda op, code: None)
        self.path = f"/apis/{GROUP}/{VERSION}/{NODE_REPORT_PLURAL}/{node}"
        self._exists = False
        self.last_status: dict[str, Any] | None = None
        """The status last written; the next one is compared with it, not with the last one built."""
        self.last_write: float | None = None
        self.writes = 0
        self.last_size = 0
        self._logged: set[int] = set()

    def _fail(self, op: str, resp: Response) -> None:
        self.on_error(op, resp.status)
        if resp.status not in self._logged:
            self._logged.add(resp.status)
            log.warning(
                "report: %s of NodeMemoryReport %s failed (HTTP %s): %s",
                op,
                self.node,
                resp.status,
                resp.message[:300],
            )

    def _ensure(self) -> bool:
        if self._exists:
            return True
        body = {
            "apiVersion": API_VERSION,
            "kind": NODE_REPORT_KIND,
            "metadata": {"name": self.node, "labels": {"app.kubernetes.io/managed-by": "oomsight"}},
            "spec": {"nodeName": self.node},
        }
        resp = self.rest.request("POST", f"/apis/{GROUP}/{VERSION}/{NODE_REPORT_PLURAL}", body)
        if resp.ok or resp.status == 409:
            self._exists = True
            return True
        self._fail("create", resp)
        return False

    def maybe_write(self, status: dict[str, Any], now: float) -> bool:
        """Write ``status`` if it changed and the last write is old enough; True when written."""
        if not due(self.last_write, now, changed(self.last_status, status), self.min_interval):
            return False
        if not self._ensure():
            return False
        resp = self.rest.request(
            "PATCH",
            self.path + "/status",
            [{"op": "add", "path": "/status", "value": status}],
            content_type="application/json-patch+json",
        )
        if resp.status == 404:  # deleted behind our back: create again next time
            self._exists = False
        if not resp.ok:
            self._fail("status", resp)
            return False
        self.last_status = status
        self.last_write = now
        self.writes += 1
        self.last_size = size_of(status)
        return True
