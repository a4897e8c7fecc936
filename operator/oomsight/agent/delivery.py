"""The sender thread: drains the on-disk spool into the API, oldest first, with backoff.

Outcomes (``oomsight.kube.events``): delivered → removed from the spool; rejected (403, 422...) →
logged once per code, counted, removed (retrying cannot help); retry (5xx, unreachable: "API
unavailable"; 409/404: the Event changed or expired between the read and the write, one line each)
→ stays, and the thread waits 0.25 s doubling to ``backoff_max`` before the next attempt. New Events wake the
thread at once unless it is backing off.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from oomsight.agent.metrics import Counters
from oomsight.agent.state import StateDir
from oomsight.kube.events import EventSender

log = logging.getLogger(__name__)


class Deliverer:
    def __init__(
        self,
        state: StateDir,
        sender: EventSender,
        counters: Counters,
        backoff_max: float = 5.0,
        on_delivered: Callable[[str], None] = lambda name: None,
    ) -> None:
        self.state = state
        self.on_delivered = on_delivered
        """Called with the Event's name once the API acknowledged it (the kill latency's last stage)."""
        self.sender = sender
        self.counters = counters
        self.backoff_max = backoff_max
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._logged_codes: set[int] = set()
        self.backoff = 0.0
        self._unavailable = False
        """The "API unavailable" line was logged: the recovery gets its line too."""
        self.pending = state.count()
        self.last_ok = time.monotonic()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="event-sender", daemon=True)
        self._wake.set()  # Events spooled by an earlier run go out at once
        self._thread.start()

    def kick(self) -> None:
        self._wake.set()

    def stop(self, flush_seconds: float) -> int:
        """Stop the thread, then try once more to deliver for up to ``flush_seconds``; return what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=flush_seconds + 12)
        deadline = time.monotonic() + flush_seconds
        self.drain(deadline)
        return self.state.count()

    def drain(self, deadline: float | None = None) -> bool:
        """One pass over the spool; False when the API asked us to back off."""
        items = self.state.pending_with_rev()
        self.pending = len(items)
        for spec, rev in items:
            if deadline is not None and time.monotonic() > deadline:
                return False
            result = self.sender.send(spec)
            if result.outcome == "delivered":
                self.on_delivered(spec.name)
                self.state.done(spec.name, rev)
                self.counters.inc("oomsight_agent_events_total", reason=spec.reason)
                self.last_ok = time.monotonic()
            elif result.outcome == "rejected":
                self.counters.inc("oomsight_agent_api_errors_total", operation="event", code=str(result.code))
                self.counters.inc("oomsight_agent_events_rejected_total", code=str(result.code))
                if result.code not in self._logged_codes:
                    self._logged_codes.add(result.code)
                    hint = (
                        "grant the agent create/patch on events.events.k8s.io"
                        if result.code == 403
                        else "the Event was not valid for this API server; please report it"
                    )
                    log.error(
                        "events: the API refused Event %s/%s (HTTP %s): %s; dropping it (%s)",
                        spec.namespace,
                        spec.name,
                        result.code,
                        result.detail[:300],
                        hint,
                    )
                self.state.done(spec.name, rev)
            elif result.code in (404, 409):
                # Not an outage: the Event changed (another write of it, e.g. an outgoing agent Pod's
                # flush) or expired between the sender's read and its write. The next try reads again.
                self.counters.inc("oomsight_agent_api_errors_total", operation="event", code=str(result.code))
                what = "was changed by another write" if result.code == 409 else "expired"
                log.info(
                    "events: Event %s/%s %s between its read and its write (HTTP %s); reading it again "
                    "and retrying",
                    spec.namespace,
                    spec.name,
                    what,
                    result.code,
                )
                self.pending = self.state.count()
                return False
            else:
                self.counters.inc("oomsight_agent_api_errors_total", operation="event", code=str(result.code))
                if self.backoff == 0:
                    self._unavailable = True
                    log.warning(
                        "events: API unavailable (%s %s); spooling and retrying",
                        result.code,
                        result.detail[:200],
                    )
                self.pending = self.state.count()
                return False
        self.pending = self.state.count()
        return True

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(timeout=30.0 if self.backoff == 0 else self.backoff)
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                ok = self.drain()
            except Exception as err:
                log.exception("events: sender failed: %s", err)
                self.counters.inc("oomsight_agent_errors_total", kind="sender")
                ok = False
            if ok:
                if self._unavailable:
                    log.info("events: API reachable again; spool drained")
                    self._unavailable = False
                self.backoff = 0.0
            else:
                self.backoff = min(self.backoff_max, max(0.25, self.backoff * 2))
                self._stop.wait(self.backoff)  # new Events do not cut a backoff short
                self._wake.set()
