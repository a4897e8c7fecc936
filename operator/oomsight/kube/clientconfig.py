"""A laptop's view of a cluster: whatever kubeconfig kubectl accepts, through the official client.

``kubectl oomsight`` runs where people run kubectl, so it must take what kubectl takes: several files
in ``KUBECONFIG``, ``--kubeconfig``, ``--context``, the context's namespace, client certificates,
bearer tokens and token files, exec plugins (``aws eks get-token``, ``gke-gcloud-auth-plugin``,
``kubelogin``) and the ``oidc``/``gcp`` auth providers. The official ``kubernetes`` package's loader
(``kubernetes.config.kube_config``) does all of that; this module only picks the files the way
kubectl does, fixes the one merge rule where the library differs, and turns its failures into one
line each. The agent keeps its lean client (``oomsight.kube.kubeconfig``/``rest``): it needs only a
ServiceAccount, and importing ``kubernetes.client`` costs it ~35 MiB of its RSS budget.

kubectl's rules (``k8s.io/client-go/tools/clientcmd/loader.go``, ``kubectl config --help``):

* ``--kubeconfig FILE``: that file only, and it must exist.
* else ``$KUBECONFIG``: a ``:``-separated list; missing files are skipped; the files are merged, the
  first file to define a cluster, user or context by name wins, and so does the first non-empty
  ``current-context``. The library merges names the same way but lets the *last* ``current-context``
  win; ``_first_current_context`` restores kubectl's rule.
* else ``~/.kube/config``; else, in a pod, the ServiceAccount (``POD_NAMESPACE`` or the
  ServiceAccount's namespace file, as clientcmd's in-cluster config).
* namespace: ``-n``, else the context's ``namespace``, else ``default``.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.config import incluster_config as _incluster_config
from kubernetes.config import kube_config as _kube_config
from kubernetes.config.config_exception import ConfigException

from oomsight.core.errors import UsageError

kube_config: Any = _kube_config  # the library is untyped; Any keeps mypy from flagging each call
incluster_config: Any = _incluster_config

SA_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")
REQUEST_TIMEOUT = (5.0, 30.0)
"""(connect, read) seconds for each API read: an unreachable cluster answers in seconds, not minutes."""


@dataclass(frozen=True)
class ClusterTarget:
    """Where the commands go: the resolved context, its namespace and a ready API client."""

    api: client.ApiClient
    server: str
    namespace: str
    context: str | None
    """None in a pod (in-cluster ServiceAccount)."""
    cluster: str | None
    user: str | None
    files: tuple[str, ...]
    exec_command: str | None = None
    """The user's exec plugin command, when it has one (named in failures)."""


def kubeconfig_files(flag: str | None, environ: dict[str, str] | None = None) -> tuple[list[str], str]:
    """The files kubectl would read, and a phrase naming where they came from (for error lines)."""
    env = os.environ if environ is None else environ
    if flag:
        path = os.path.expanduser(flag)
        if not os.path.isfile(path):
            raise UsageError(f"--kubeconfig {flag}: no such file", "pass the path of a kubeconfig file")
        return [path], f"--kubeconfig {flag}"
    listed = env.get("KUBECONFIG", "")
    if listed:
        paths = [os.path.expanduser(p) for p in listed.split(os.pathsep) if p]
        return [p for p in paths if os.path.isfile(p)], f"KUBECONFIG={listed}"
    home = os.path.join(env.get("HOME") or os.path.expanduser("~"), ".kube", "config")
    return ([home] if os.path.isfile(home) else []), "~/.kube/config"


def _first_current_context(merger: Any) -> str | None:
    """kubectl's rule: the first file (in KUBECONFIG order) with a non-empty current-context wins."""
    for path in merger.paths:
        value = (merger.config_files.get(path) or {}).get("current-context")
        if value:
            return str(value)
    return None


class _Captured(logging.Handler):
    """The library logs (root logger) and goes on when an exec plugin fails; keep those lines."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@contextlib.contextmanager
def _capture_errors() -> Iterator[_Captured]:
    handler = _Captured()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


def _configuration() -> client.Configuration:
    cfg = client.Configuration()
    cfg.retries = False  # urllib3 would retry a refused connection 3 times before we can say so
    return cfg


def load_target(
    kubeconfig: str | None = None,
    context: str | None = None,
    namespace: str | None = None,
    environ: dict[str, str] | None = None,
    sa_dir: Path = SA_DIR,
) -> ClusterTarget:
    """Resolve the kubeconfig as kubectl does and build an API client; ``UsageError`` (one line) else."""
    env = os.environ if environ is None else environ
    files, origin = kubeconfig_files(kubeconfig, dict(env))
    if not files:
        if env.get("KUBERNETES_SERVICE_HOST") and not kubeconfig and not env.get("KUBECONFIG"):
            return _in_cluster(namespace, env, sa_dir)
        raise UsageError(
            f"no kubeconfig found ({origin} names no existing file)",
            "pass --kubeconfig FILE or set KUBECONFIG, as for kubectl",
        )
    try:
        merger = kube_config.KubeConfigMerger(os.pathsep.join(files))
    except (OSError, ValueError, ConfigException) as err:  # yaml errors are ValueErrors
        raise UsageError(f"cannot read {origin}: {err}", "check the file with `kubectl config view`") from err
    merged = merger.config
    if merged is None:
        raise UsageError(f"{origin} holds no configuration", "check the file with `kubectl config view`")
    current = _first_current_context(merger)
    if current is not None:
        merged.value["current-context"] = current
    ctx_name = context or current
    if not ctx_name:
        raise UsageError(
            f"{origin} has no current-context", "pass --context NAME (kubectl config get-contexts lists them)"
        )
    names = [_plain(c).get("name") for c in merged.value.get("contexts") or []]
    if ctx_name not in names:
        raise UsageError(
            f"context {ctx_name!r} is not in {origin}",
            f"pick one of {', '.join(map(str, names)) or 'none'} (kubectl config get-contexts)",
        )
    try:
        loader = kube_config.KubeConfigLoader(
            config_dict=merged, active_context=ctx_name, config_base_path=None
        )
    except ConfigException as err:
        raise UsageError(
            f"context {ctx_name!r} in {origin} is incomplete: {err}", "fix it or pick another"
        ) from err
    ctx = _plain(loader.current_context).get("context") or {}
    user = loader._user  # the library's resolved user entry (a ConfigNode) or None
    exec_cfg = user.safe_get("exec") if user is not None else None
    exec_command = str(exec_cfg["command"]) if exec_cfg is not None and "command" in exec_cfg else None
    cfg = _configuration()
    with _capture_errors() as captured:
        try:
            loader.load_and_set(cfg)
        except (ConfigException, OSError, ValueError, KeyError) as err:
            raise UsageError(
                f"cannot use the credentials of context {ctx_name!r}: {err}",
                "check the user entry with `kubectl config view --minify`",
            ) from err
    if exec_command and not _has_credentials(loader):
        why = "; ".join(line.strip() for line in captured.lines) or "it returned no token or certificate"
        raise UsageError(
            f"the exec plugin {exec_command!r} of context {ctx_name!r} failed: {why}",
            "run the plugin by hand (or log in again) until it prints an ExecCredential",
        )
    return ClusterTarget(
        api=client.ApiClient(cfg),
        server=cfg.host,
        namespace=namespace or str(ctx.get("namespace") or "default"),
        context=ctx_name,
        cluster=str(ctx.get("cluster")) if ctx.get("cluster") else None,
        user=str(ctx.get("user")) if ctx.get("user") else None,
        files=tuple(files),
        exec_command=exec_command,
    )


def _plain(node: Any) -> Any:
    """The library wraps merged entries in ``ConfigNode`` (its ``value`` is the dict)."""
    return getattr(node, "value", node)


def _has_credentials(loader: Any) -> bool:
    return "token" in loader.__dict__ or bool(loader.__dict__.get("cert_file"))


def _in_cluster(namespace: str | None, env: Any, sa_dir: Path) -> ClusterTarget:
    cfg = _configuration()
    try:
        incluster_config.InClusterConfigLoader(
            token_filename=str(sa_dir / "token"), cert_filename=str(sa_dir / "ca.crt"), environ=env
        ).load_and_set(cfg)
    except ConfigException as err:
        raise UsageError(f"in-cluster configuration: {err}", "pass --kubeconfig FILE") from err
    ns = namespace or env.get("POD_NAMESPACE")
    if not ns:
        try:
            ns = (sa_dir / "namespace").read_text().strip()
        except OSError:
            ns = "default"
    return ClusterTarget(
        api=client.ApiClient(cfg),
        server=cfg.host,
        namespace=ns or "default",
        context=None,
        cluster=None,
        user=None,
        files=(),
    )
