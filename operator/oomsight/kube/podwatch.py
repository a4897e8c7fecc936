"""List+watch the Pods of one namespace, asynchronously (aiohttp, which kopf already brings).

The operator watches Pods only in namespaces that have a MemoryPolicy: one watcher per such
namespace, started when its first policy appears and stopped with its last. It does not go through
kopf on purpose: kopf's per-object machinery (and its index readiness gate, which wakes every waiting
object on each object indexed: quadratic in the number of objects) made 5,000 Pods take minutes
instead of seconds, and a read-only cache may stay warm on a standby replica anyway (writes are what
kopf peering must pause, and those happen only in kopf handlers).

Protocol (``k8s.io/client-go/tools/cache/reflector.go``): LIST (paginated, ``limit``/``continue``)
gives the full set and a ``resourceVersion``; WATCH from it, with bookmarks, until the server ends the
request (``timeoutSeconds``) and then WATCH again from the last version seen; a ``410 Gone`` (or an
ERROR event with code 410) means that version was compacted away: LIST again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlencode

import aiohttp

from oomsight.kube.kubeconfig import Credentials
from oomsight.kube.rest import resource_version

log = logging.getLogger(__name__)

PAGE = 500
WATCH_SECONDS = 290
BACKOFF_MAX = 10.0


class PodWatch:
    """One namespace. ``on_list(items)`` replaces the namespace's pods; ``on_event(type, pod)`` updates."""

    def __init__(
        self,
        creds: Credentials,
        session: aiohttp.ClientSession,
        namespace: str,
        on_list: Callable[[list[Mapping[str, Any]]], None],
        on_event: Callable[[str, Mapping[str, Any]], None],
        user_agent: str = "oomsight-operator",
        collection: str = "/api/v1/namespaces/{ns}/pods",
        field_selector: str = "",
    ) -> None:
        """``collection``/``field_selector``: another namespaced list (e.g. the agent's Events)."""
        self.creds = creds
        self.collection = collection.format(ns=namespace)
        self.field_selector = field_selector
        self.session = session
        self.namespace = namespace
        self.on_list = on_list
        self.on_event = on_event
        self.user_agent = user_agent
        self.synced = asyncio.Event()
        self.lists = 0
        self.errors = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> PodWatch:
        self._task = asyncio.create_task(self._run(), name=f"pod-watch/{self.namespace}")
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _url(self, query: dict[str, Any]) -> str:
        if self.field_selector:
            query = {**query, "fieldSelector": self.field_selector}
        return f"{self.creds.server}{self.collection}?{urlencode(query)}"

    def _headers(self) -> dict[str, str]:
        return {"Accept": "application/json", "User-Agent": self.user_agent, **self.creds.auth_header()}

    async def _list(self) -> str:
        items: list[Mapping[str, Any]] = []
        cont = ""
        rv = ""
        while True:
            q: dict[str, Any] = {"limit": PAGE}
            if cont:
                q["continue"] = cont
            async with self.session.get(self._url(q), headers=self._headers()) as resp:
                if resp.status != 200:
                    raise _HttpError(resp.status, (await resp.text())[:300])
                body = await resp.json()
            items.extend(body.get("items") or [])
            meta = body.get("metadata") or {}
            cont = meta.get("continue") or ""
            rv = resource_version(body) or rv
            if not cont:
                break
        self.lists += 1
        self.on_list(items)
        self.synced.set()
        return rv

    async def _watch(self, rv: str) -> str | None:
        """Watch from ``rv``; returns the last version seen, or None when a LIST is needed (410)."""
        q = {
            "watch": "1",
            "resourceVersion": rv,
            "allowWatchBookmarks": "true",
            "timeoutSeconds": WATCH_SECONDS,
        }
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=WATCH_SECONDS + 30)
        async with self.session.get(self._url(q), headers=self._headers(), timeout=timeout) as resp:
            if resp.status == 410:
                return None
            if resp.status != 200:
                raise _HttpError(resp.status, (await resp.text())[:300])
            async for line in resp.content:
                if not line.strip():
                    continue
                ev = json.loads(line)
                etype, obj = ev.get("type"), ev.get("object") or {}
                if etype == "ERROR":
                    if obj.get("code") == 410:
                        return None
                    raise _HttpError(int(obj.get("code") or 0), str(obj.get("message", ""))[:300])
                rv = resource_version(obj) or rv
                if etype in ("ADDED", "MODIFIED", "DELETED"):
                    self.on_event(etype, obj)
        return rv

    async def _run(self) -> None:
        backoff = 0.5
        rv: str | None = None
        while True:
            try:
                if rv is None:
                    rv = await self._list()
                rv = await self._watch(rv)
                backoff = 0.5
            except asyncio.CancelledError:
                raise
            except (aiohttp.ClientError, TimeoutError, ValueError, _HttpError) as err:
                self.errors += 1
                if self.errors <= 3 or self.errors % 100 == 0:
                    log.warning("watch of %s: %s; retrying in %.1fs", self.collection, err, backoff)
                await asyncio.sleep(backoff)
                backoff = min(BACKOFF_MAX, backoff * 2)
                if isinstance(err, _HttpError) and err.status in (403, 404):
                    rv = None


class _HttpError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


def session_for(creds: Credentials) -> aiohttp.ClientSession:
    """An aiohttp session that trusts the cluster CA and presents the client certificate, if any."""
    connector = aiohttp.TCPConnector(
        ssl=creds.ssl_context if creds.ssl_context is not None else True, limit=64
    )
    return aiohttp.ClientSession(connector=connector)
