"""Credentials for the API server: a kubeconfig file, or the pod's service account (in-cluster).

Only what a node agent needs, read the way client-go's ``clientcmd`` and ``rest.InClusterConfig``
read it: the current context's cluster (``server``, ``certificate-authority[-data]``,
``insecure-skip-tls-verify``, ``tls-server-name``) and user (``client-certificate[-data]`` +
``client-key[-data]``, ``token``, ``tokenFile``, ``username``/``password``). Exec plugins and auth
providers are refused with one line (a DaemonSet uses its service account). In-cluster, the
projected token is re-read every minute: bound tokens rotate (about hourly, KEP-1205).

This replaces the official client's loader for the agent: importing ``kubernetes.client`` costs about
35 MiB of RSS (its generated models), more than half of the agent's 60 MiB budget.
"""

from __future__ import annotations

import base64
import contextlib
import os
import ssl
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from oomsight.core.errors import UsageError

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
TOKEN_REFRESH_SECONDS = 60.0


@dataclass
class Credentials:
    server: str
    ssl_context: ssl.SSLContext | None
    token: str | None = None
    token_file: str | None = None
    basic: tuple[str, str] | None = None
    source: str = ""
    tls_server_name: str | None = None
    """Name to verify the server certificate against, when it differs from the URL's host."""
    _read_at: float = 0.0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def auth_header(self) -> dict[str, str]:
        if self.token_file:
            with self._lock:
                if time.monotonic() - self._read_at > TOKEN_REFRESH_SECONDS or not self.token:
                    with contextlib.suppress(OSError):
                        self.token = Path(self.token_file).read_text().strip()
                    self._read_at = time.monotonic()
        if self.token:
            return {"Authorization": f"Bearer {self.token}"}
        if self.basic:
            raw = base64.b64encode(f"{self.basic[0]}:{self.basic[1]}".encode()).decode()
            return {"Authorization": f"Basic {raw}"}
        return {}


def _bad(source: str, what: str) -> UsageError:
    return UsageError(
        f"cannot load Kubernetes credentials from {source}: {what}",
        "pass --kubeconfig FILE (or KUBECONFIG) with a cluster and a client certificate or token, or run "
        "in a pod with a service account",
    )


def _material(entry: dict[str, Any], key: str, base: Path, source: str) -> bytes | None:
    """``<key>-data`` (base64) or ``<key>`` (a path relative to the kubeconfig's directory)."""
    data = entry.get(f"{key}-data")
    if data:
        try:
            return base64.b64decode(data)
        except ValueError as err:
            raise _bad(source, f"{key}-data is not base64") from err
    path = entry.get(key)
    if path:
        full = Path(path) if os.path.isabs(path) else base / path
        try:
            return full.read_bytes()
        except OSError as err:
            raise _bad(source, f"cannot read {key} {full}: {err.strerror}") from err
    return None


def _context(
    ca: bytes | None, insecure: bool, cert: bytes | None, key: bytes | None, source: str
) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif ca:
        ctx = ssl.create_default_context(cadata=ca.decode(errors="replace"))
    if cert and key:
        # load_cert_chain reads files only: write both to a private temp dir, load, remove.
        with tempfile.TemporaryDirectory(prefix="oomsight-tls-") as tmp:
            cpath, kpath = Path(tmp) / "c.pem", Path(tmp) / "k.pem"
            cpath.write_bytes(cert)
            kpath.touch(mode=0o600)
            kpath.write_bytes(key)
            try:
                ctx.load_cert_chain(str(cpath), str(kpath))
            except ssl.SSLError as err:
                raise _bad(source, f"client certificate or key does not load: {err.reason}") from err
    return ctx


def _named(items: list[dict[str, Any]] | None, name: str, what: str, source: str) -> dict[str, Any]:
    for item in items or []:
        if item.get("name") == name:
            return dict(item.get(what) or {})
    raise _bad(source, f"no {what} named {name!r}")


def load_kubeconfig(path: str, context: str | None = None) -> Credentials:
    source = f"kubeconfig {path}"
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except OSError as err:
        raise _bad(source, err.strerror or str(err)) from err
    except yaml.YAMLError as err:
        raise _bad(source, "not YAML") from err
    if not isinstance(doc, dict):
        raise _bad(source, "not a kubeconfig (no clusters, users, contexts)")
    ctx_name = context or doc.get("current-context")
    if not ctx_name:
        raise _bad(source, "no current-context")
    ctx = _named(doc.get("contexts"), ctx_name, "context", source)
    cluster = _named(doc.get("clusters"), str(ctx.get("cluster")), "cluster", source)
    user = _named(doc.get("users"), str(ctx.get("user")), "user", source) if ctx.get("user") else {}
    if "exec" in user or "auth-provider" in user:
        raise _bad(source, "exec plugins and auth providers are not supported by the agent")
    server = str(cluster.get("server") or "")
    if not server.startswith(("https://", "http://")):
        raise _bad(source, f"cluster server {server!r} is not an http(s) URL")
    base = Path(path).resolve().parent
    ssl_ctx = None
    if server.startswith("https://"):
        ssl_ctx = _context(
            _material(cluster, "certificate-authority", base, source),
            bool(cluster.get("insecure-skip-tls-verify")),
            _material(user, "client-certificate", base, source),
            _material(user, "client-key", base, source),
            source,
        )
    token_file = user.get("tokenFile")
    basic = (str(user["username"]), str(user.get("password", ""))) if user.get("username") else None
    return Credentials(
        server=server.rstrip("/"),
        ssl_context=ssl_ctx,
        token=user.get("token"),
        token_file=str(base / token_file) if token_file and not os.path.isabs(token_file) else token_file,
        basic=basic,
        source=source,
        tls_server_name=cluster.get("tls-server-name"),
    )


def load_incluster(sa_dir: Path = SA_DIR) -> Credentials:
    source = "the in-cluster service account"
    host, port = os.environ.get("KUBERNETES_SERVICE_HOST"), os.environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise _bad(source, "KUBERNETES_SERVICE_HOST/PORT are not set (not running in a pod)")
    token = sa_dir / "token"
    if not token.exists():
        raise _bad(source, f"no token at {token} (automountServiceAccountToken false?)")
    try:
        ca = (sa_dir / "ca.crt").read_bytes()
    except OSError as err:
        raise _bad(source, f"cannot read {sa_dir / 'ca.crt'}: {err.strerror}") from err
    if ":" in host:
        host = f"[{host}]"
    return Credentials(
        server=f"https://{host}:{port}",
        ssl_context=_context(ca, False, None, None, source),
        token_file=str(token),
        source=source,
    )


def load(kubeconfig: str | None) -> Credentials:
    return load_kubeconfig(kubeconfig) if kubeconfig else load_incluster()
