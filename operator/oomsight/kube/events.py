"""Deliver ``events.k8s.io/v1`` Events, idempotently.

``send(spec)`` makes the API hold exactly the state ``spec`` describes: it creates the Event; a
409 Conflict means it already exists (an earlier attempt got through, or a repeat), so only the
mutable field (``series``) is patched, when there is one; a 404 on that patch means the Event expired
(``--event-ttl``), so it is created again. The outcome says what the caller should do:

- ``delivered``: forget it;
- ``rejected`` (400, 403, 404 namespace gone, 422): retrying cannot help; report and count it;
- ``retry`` (429, 5xx, timeouts, connection refused): keep it spooled and try again with backoff.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from oomsight.core.events import EventSpec
from oomsight.kube.rest import Response, Rest

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


class EventSender:
    """Creates or patches Events; one call to ``send`` per Event state."""

    def __init__(self, rest: Rest, instance: str) -> None:
        self.rest = rest
        self.instance = instance

    def _create(self, spec: EventSpec) -> Response:
        return self.rest.request("POST", _path(spec.namespace), spec.as_body(self.instance))

    def _patch(self, spec: EventSpec, patch: dict[str, object]) -> Response:
        return self.rest.request(
            "PATCH", _path(spec.namespace, spec.name), patch, content_type="application/merge-patch+json"
        )

    def send(self, spec: EventSpec) -> Result:
        resp = self._create(spec)
        if resp.status == 409:
            patch = spec.patch_body()
            if patch is None:  # it exists and there is no series to update: already delivered
                return Result("delivered", 409)
            resp = self._patch(spec, patch)
            if resp.status == 404:
                resp = self._create(spec)
        return Result(classify(resp.status), resp.status, resp.message)
