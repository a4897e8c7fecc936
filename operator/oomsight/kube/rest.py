"""A small JSON-over-HTTPS client for the agent's few API calls (urllib3, one connection pool).

The agent makes five kinds of call (create/patch an Event, list/watch its node's Pods, create its
NodeMemoryReport and replace its status). It sends and receives plain dicts: 409/404/5xx are status
codes to act on, not exceptions, and no generated models are imported (``oomsight.kube.kubeconfig``
explains the RSS this saves). ``request`` never raises for HTTP or network errors: status 0 means the
server could not be reached (refused, timed out, TLS failure).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import urllib3

from oomsight import __version__
from oomsight.kube.kubeconfig import Credentials, load

log = logging.getLogger(__name__)

TIMEOUT = (3.0, 10.0)
"""(connect, read) seconds; a hung API server must not stall the agent."""


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    """HTTP status; 0 when the server could not be reached (connection refused, timeout, TLS)."""
    body: dict[str, Any]
    error: str = ""

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300

    @property
    def message(self) -> str:
        return self.error or str(self.body.get("message", ""))


def resource_version(obj: Mapping[str, Any]) -> str:
    """``metadata.resourceVersion`` of an object or a list as the API server sent it, "" when absent."""
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class WatchError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status


class Rest:
    """``request(method, path, body)`` → Response. Thread-safe (urllib3 pools are)."""

    def __init__(self, creds: Credentials, maxsize: int = 4) -> None:
        self.creds = creds
        kw: dict[str, Any] = {"retries": False, "maxsize": maxsize, "block": False}
        if creds.ssl_context is not None:
            kw["ssl_context"] = creds.ssl_context
        if creds.tls_server_name:
            kw["server_hostname"] = creds.tls_server_name
        self.pool = urllib3.PoolManager(**kw)

    def _headers(self, content_type: str | None) -> dict[str, str]:
        h = {"Accept": "application/json", "User-Agent": f"oomsight-agent/{__version__}"}
        if content_type:
            h["Content-Type"] = content_type
        h.update(self.creds.auth_header())
        return h

    def _url(self, path: str, query: dict[str, Any] | None) -> str:
        return self.creds.server + path + ("?" + urlencode(query) if query else "")

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: tuple[float, float] = TIMEOUT,
    ) -> Response:
        data = None if body is None else json.dumps(body).encode()
        try:
            resp = self.pool.request(
                method,
                self._url(path, query),
                body=data,
                headers=self._headers(content_type if data is not None else None),
                timeout=urllib3.Timeout(connect=timeout[0], read=timeout[1]),
                redirect=False,
            )
        except Exception as err:  # noqa: BLE001 - urllib3/ssl/socket: the API is unreachable
            return Response(0, {}, f"{type(err).__name__}: {err}")
        raw = resp.data or b""
        try:
            parsed = json.loads(raw) if raw else {}
        except ValueError:
            parsed = {"message": raw[:200].decode(errors="replace")}
        return Response(int(resp.status), parsed if isinstance(parsed, dict) else {})

    def pages(self, path: str, limit: int = 500, query: dict[str, Any] | None = None) -> Iterator[Response]:
        """A LIST, one Response per page (``limit``/``continue``); a failed page is yielded and ends it."""
        cont = ""
        while True:
            page = {**(query or {}), "limit": limit, **({"continue": cont} if cont else {})}
            resp = self.request("GET", path, query=page)
            yield resp
            cont = str((resp.body.get("metadata") or {}).get("continue") or "") if resp.ok else ""
            if not cont:
                return

    def stream(self, path: str, query: dict[str, Any], read_timeout: float) -> Iterator[dict[str, Any]]:
        """Yield the JSON lines of a watch; raises ``WatchError`` when it cannot start."""
        try:
            resp = self.pool.request(
                "GET",
                self._url(path, query),
                headers=self._headers(None),
                timeout=urllib3.Timeout(connect=3.0, read=read_timeout),
                preload_content=False,
                redirect=False,
            )
        except Exception as err:
            raise WatchError(0, f"{type(err).__name__}: {err}") from err
        try:
            if resp.status != 200:
                raise WatchError(int(resp.status), resp.read()[:300].decode(errors="replace"))
            buf = b""
            for chunk in resp.stream(65536):
                *lines, buf = (buf + chunk).split(b"\n")  # the last piece is incomplete: kept
                for line in lines:
                    if line.strip():
                        yield json.loads(line)
        finally:
            resp.release_conn()


def connect(kubeconfig: str | None, connections: int = 4) -> Rest:
    """A client for ``kubeconfig``, or the in-cluster service account when it is None, keeping up
    to ``connections`` open (more are opened when needed, and closed after their request)."""
    return Rest(load(kubeconfig), maxsize=connections)
