"""A small JSON-over-HTTP layer on the official client's connection, auth and TLS handling.

The agent needs five calls (create/patch an Event, list/watch Pods, get/create/patch its
NodeMemoryReport). It sends and receives plain dicts through ``ApiClient.param_serialize`` (which
applies the kubeconfig's or the service account's credentials, refreshing a projected token) and
``ApiClient.call_api``; the typed models are skipped, which keeps the agent's RSS and CPU small and
lets 409/404/5xx be handled as status codes instead of exceptions.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from kubernetes import client, config
from kubernetes.config.config_exception import ConfigException

from oomsight.core.errors import UsageError

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


def load_api_client(kubeconfig: str | None) -> client.ApiClient:
    """An ApiClient from ``kubeconfig``, or the in-cluster service account when it is None."""
    cfg = client.Configuration()
    try:
        if kubeconfig:
            config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)  # type: ignore[no-untyped-call]
        else:
            config.load_incluster_config(client_configuration=cfg)  # type: ignore[no-untyped-call]
    except (ConfigException, OSError, ValueError, TypeError) as err:
        where = f"kubeconfig {kubeconfig}" if kubeconfig else "in-cluster service account"
        raise UsageError(
            f"cannot load Kubernetes credentials from the {where}: {err}",
            "pass --kubeconfig FILE (or KUBECONFIG), or run inside a pod with a service account",
        ) from err
    cfg.retries = 0  # our own backoff decides; urllib3 must not retry behind our back
    api = client.ApiClient(cfg)
    api.user_agent = "oomsight-agent"
    return api


def kubeconfig_from_env(flag: str | None) -> str | None:
    return flag or os.environ.get("KUBECONFIG") or None


class Rest:
    """``request(method, path, body)`` → Response; never raises for HTTP or network errors."""

    def __init__(self, api: client.ApiClient) -> None:
        self.api = api

    def _prepare(
        self, method: str, path: str, body: Any, query: dict[str, Any] | None, content_type: str
    ) -> tuple[str, str, dict[str, str], Any]:
        full = path + ("?" + urlencode(query) if query else "")
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        m, url, hdrs, b, _ = self.api.param_serialize(
            method=method, resource_path=full, header_params=headers, body=body, auth_settings=["BearerToken"]
        )
        return m, url, hdrs, b

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        query: dict[str, Any] | None = None,
        content_type: str = "application/json",
        timeout: tuple[float, float] = TIMEOUT,
    ) -> Response:
        try:
            m, url, hdrs, b = self._prepare(method, path, body, query, content_type)
            resp = self.api.call_api(m, url, header_params=hdrs, body=b, _request_timeout=timeout)
            resp.read()  # type: ignore[no-untyped-call]
            raw = resp.data or b""
        except Exception as err:  # noqa: BLE001 - urllib3/ssl/socket: the API is unreachable
            return Response(0, {}, f"{type(err).__name__}: {err}")
        try:
            data = json.loads(raw) if raw else {}
        except ValueError:
            data = {"message": raw[:200].decode(errors="replace")}
        if not isinstance(data, dict):
            data = {}
        return Response(int(resp.status), data)

    def stream(self, path: str, query: dict[str, Any], read_timeout: float) -> Iterator[dict[str, Any]]:
        """Yield the JSON lines of a watch; raises ``WatchError`` when it cannot start."""
        m, url, hdrs, b = self._prepare("GET", path, None, query, "application/json")
        try:
            resp = self.api.call_api(m, url, header_params=hdrs, body=b, _request_timeout=(3.0, read_timeout))
        except Exception as err:
            raise WatchError(0, f"{type(err).__name__}: {err}") from err
        raw = resp.response
        try:
            if resp.status != 200:
                resp.read()  # type: ignore[no-untyped-call]
                raise WatchError(int(resp.status), (resp.data or b"")[:300].decode(errors="replace"))
            buf = b""
            for chunk in raw.stream(65536, decode_content=True):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    if line.strip():
                        yield json.loads(line)
        finally:
            raw.release_conn()


class WatchError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
