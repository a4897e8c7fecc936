"""Deliver ``events.k8s.io/v1`` Events, idempotently.

``send(spec)`` makes the API hold the state ``spec`` describes: it creates the Event; a 409 Conflict
means it already exists (an earlier attempt got through, or a repeat), so only the mutable field
(``series``) is raised to ours, when there is one, and never lowered: read, compare, then patched on the
``resourceVersion`` read (a late older write must not undo a newer count); a 404 means the Event
expired (``--event-ttl``), so it is created again. The sender remembers the count and
``resourceVersion`` of each Event it wrote last: the next state of that Event (a kill storm raises a
series many times a second) is one patch on that version instead of create, 409, read and patch; a 409
there (someone else wrote it since) falls back to the read. The outcome says what the caller should do:

- ``delivered``: forget it;
- ``rejected`` (400, 403, 404 namespace gone, 422): retrying cannot help; report and count it;
- ``retry`` (429, 5xx, timeouts, connection refused): keep it spooled and try again with backoff.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Literal

from oomsight.core.events import EventSpec
from oomsight.kube.rest import Response, Rest, resource_version

Outcome = Literal["delivered", "rejected", "retry"]


@dataclass(frozen=True, slots=True)
class Result:
    outcome: Outcome
    code: int
    """HTTP status of the deciding response; 0 for a connection error or timeout."""
    detail: str = ""


def classify(code: int) -> Outcome:
    """What an HTTP status means for an Event that could not be written."""
    if 200 <= code < 300:
        return "delivered"
    if code in (0, 408, 429) or code >= 500:
        return "retry"
    return "rejected"


def _path(namespace: str, name: str | None = None) -> str:
    base = f"/apis/events.k8s.io/v1/namespaces/{namespace}/events"
    return f"{base}/{name}" if name else base


KNOWN_MAX = 4096
"""Events whose last written count and version the sender remembers (the oldest are forgotten)."""


class EventSender:
    """Creates or patches Events; one call to ``send`` per Event state. Several threads may send at
    once, never two states of one Event (the caller's rule: ``oomsight.agent.delivery``)."""

    def __init__(self, rest: Rest, instance: str) -> None:
        self.rest = rest
        self.instance = instance
        self._lock = threading.Lock()
        self._known: OrderedDict[str, tuple[int, str]] = OrderedDict()
        """Event name → (series count, resourceVersion) of this sender's last successful write."""

    def _create(self, spec: EventSpec) -> Response:
        return self.rest.request("POST", _path(spec.namespace), spec.as_body(self.instance))

    def _patch(self, spec: EventSpec, patch: dict[str, object]) -> Response:
        return self.rest.request(
            "PATCH", _path(spec.namespace, spec.name), patch, content_type="application/merge-patch+json"
        )

    def _remember(self, name: str, count: int, resp: Response) -> None:
        version = resource_version(resp.body)
        if not version:
            with self._lock:
                self._known.pop(name, None)
            return
        self._remember_known(name, (count, version))

    def _remember_known(self, name: str, known: tuple[int, str]) -> None:
        with self._lock:
            self._known[name] = known
            self._known.move_to_end(name)
            if len(self._known) > KNOWN_MAX:
                self._known.popitem(last=False)

    def send(self, spec: EventSpec) -> Result:
        with self._lock:
            known = self._known.pop(spec.name, None)
        patch = spec.patch_body()
        if known is not None:
            count, version = known
            if spec.count <= count:  # an older state than this sender already wrote
                self._remember_known(spec.name, known)
                return Result("delivered", 200)
            assert patch is not None  # count > count it wrote >= 1: a series
            resp = self._patch(spec, {**patch, "metadata": {"resourceVersion": version}})
            if resp.ok:
                self._remember(spec.name, spec.count, resp)
                return Result("delivered", resp.status)
            if resp.status == 409:  # written by someone else since: read it, compare, patch
                return self._raise_series(spec, patch)
            if resp.status != 404:  # 404: expired (--event-ttl), created again below
                return Result(classify(resp.status), resp.status, resp.message)
        resp = self._create(spec)
        if resp.status != 409:
            if resp.ok:
                self._remember(spec.name, spec.count, resp)
            return Result(classify(resp.status), resp.status, resp.message)
        if patch is None:  # it exists and there is no series to update: already delivered
            return Result("delivered", 409)
        return self._raise_series(spec, patch)

    def _raise_series(self, spec: EventSpec, patch: dict[str, object]) -> Result:
        """The Event exists: raise its ``series`` to ours, never lower it.

        A plain merge patch is last-writer-wins, and the last write to arrive is not always the newest:
        a request the agent gave up on (timeout while etcd or the API server was slow) can still be
        applied afterwards, and an agent Pod being replaced flushes its spool while its successor
        sends newer states of the same Events. Applied after a newer count, an older one silently
        loses kills. So: read the Event, stop when it already counts as many, else patch on the
        ``resourceVersion`` read; a conflict (someone wrote in between) is retried."""
        cur = self.rest.request("GET", _path(spec.namespace, spec.name))
        if cur.status == 404:  # expired (--event-ttl) since the create's 409: create it again
            resp = self._create(spec)
            if resp.status == 409:
                return Result("retry", 409, "created meanwhile by another write; patched on the next try")
            if resp.ok:
                self._remember(spec.name, spec.count, resp)
            return Result(classify(resp.status), resp.status, resp.message)
        if not cur.ok:
            return Result(classify(cur.status), cur.status, cur.message)
        have = int((cur.body.get("series") or {}).get("count") or 1)
        if have >= spec.count:
            self._remember(spec.name, have, cur)
            return Result("delivered", cur.status)
        version = resource_version(cur.body)
        resp = self._patch(spec, {**patch, "metadata": {"resourceVersion": version}})
        if resp.status in (404, 409):  # changed or expired since the read: read again
            return Result("retry", resp.status, resp.message)
        if resp.ok:
            self._remember(spec.name, spec.count, resp)
        return Result(classify(resp.status), resp.status, resp.message)
