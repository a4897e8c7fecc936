"""The sender thread: drains the on-disk spool into the API, oldest first (an Event spooled during a
pass goes ahead of the rest of it), a few writes at once, with backoff.

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
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor

from oomsight.agent.metrics import Counters
from oomsight.agent.state import StateDir
from oomsight.core.events import EventSpec
from oomsight.kube.events import EventSender, Result

log = logging.getLogger(__name__)

SENDS_AT_ONCE = 4
"""Event writes under way at once. One at a time, a storm's kill waited behind every Event queued
before it, and behind any write the API server was slow to answer (35-47 ms of 3-5 typical, here)."""


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
        self._executor: ThreadPoolExecutor | None = None
        self._progress = threading.Event()
        """Set when a send finished or an Event was spooled: the pass looks again."""
        self._fresh: deque[str] = deque(maxlen=4096)
        """Events spooled since the pass began (a dropped name loses its turn only, not its delivery)."""
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

    def kick(self, name: str | None = None) -> None:
        """Wake the thread; ``name``, an Event just spooled, goes out before the rest of a pass
        already under way (a storm's kill waited behind the warnings a sweep had spooled)."""
        if name is not None:
            self._fresh.append(name)
            self._progress.set()
        self._wake.set()

    def stop(self, flush_seconds: float) -> int:
        """Stop the thread, then try once more to deliver for up to ``flush_seconds``; return what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=flush_seconds + 12)
        deadline = time.monotonic() + flush_seconds
        self.drain(deadline)
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        return self.state.count()

    def drain(self, deadline: float | None = None) -> bool:
        """One pass over the spool, oldest first, with the Events spooled meanwhile ahead of the
        rest (``kick``), up to ``SENDS_AT_ONCE`` at a time but never two states of one Event; False
        when the API asked us to back off (the sends already under way are waited for)."""
        self._fresh.clear()  # listed now, in their turn
        items = deque(self.state.pending_with_rev())
        self.pending = len(items)
        pool = self._pool()
        inflight: dict[Future[Result], tuple[EventSpec, int]] = {}
        ok = True
        while True:
            self._progress.clear()
            for fut in [f for f in inflight if f.done()]:
                spec, rev = inflight.pop(fut)
                try:
                    result = fut.result()
                except Exception as err:  # noqa: BLE001 - a bug in one send must not stop the others
                    log.warning("events: sending Event %s/%s failed: %s", spec.namespace, spec.name, err)
                    result = Result("retry", 0, str(err))
                ok = self._outcome(spec, rev, result) and ok
            while ok and len(inflight) < SENDS_AT_ONCE:
                if deadline is not None and time.monotonic() > deadline:
                    ok = False
                    break
                item = self._next(items, {spec.name for spec, _ in inflight.values()})
                if item is None:
                    break
                fut = pool.submit(self.sender.send, item[0])
                fut.add_done_callback(lambda _: self._progress.set())
                inflight[fut] = item
            if not inflight:
                break
            self._progress.wait()
        if ok:
            self.pending = self.state.count()
        return ok

    def _next(self, items: deque[tuple[EventSpec, int]], busy: set[str]) -> tuple[EventSpec, int] | None:
        """The next Event state to send: one spooled since the pass began first, then the pass's;
        one whose Event has a send under way waits for the next pass (its kick woke the thread)."""
        while self._fresh:
            name = self._fresh.popleft()
            latest = None if name in busy else self.state.latest(name)
            if latest is not None:
                return latest
        while items:
            spec, rev = items.popleft()
            if spec.name not in busy and self.state.is_current(spec.name, rev):
                return spec, rev
        return None

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(SENDS_AT_ONCE, thread_name_prefix="event-send")
        return self._executor

    def _outcome(self, spec: EventSpec, rev: int, result: Result) -> bool:
        """Account one send's result; False when the pass should stop (retry later)."""
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
