"""The agent's settings: one flag each, each with an environment variable for the DaemonSet."""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

from oomsight.core.errors import UsageError

DEFAULT_STATE_DIR = "/var/lib/oomsight"
DEFAULT_INTERVAL = 10.0
DEFAULT_METRICS_PORT = 9808
REPORT_MIN_INTERVAL = 60.0
DEFAULT_METRICS_GRACE = 300.0
KERNEL_LOG_CHOICES = ("auto", "kmsg", "syslog", "none")
"""oomsight.host.kernlog.CHOICES (the agent's settings do not import the host layer)."""


@dataclass(frozen=True, slots=True)
class Settings:
    node_name: str
    """``--node-name``/``NODE_NAME``: the Node this agent runs on (downward API ``spec.nodeName``)."""
    kubeconfig: str | None
    """``--kubeconfig``/``KUBECONFIG``; None means the in-cluster service account."""
    host_root: Path
    """``--host-root``/``OOMSIGHT_HOST_ROOT``: the host's /sys, /proc and /dev (``/host`` in a pod)."""
    state_dir: Path
    """``--state-dir``/``OOMSIGHT_STATE_DIR``: kmsg cursor and undelivered Events (a hostPath)."""
    interval: float
    """``--interval``/``OOMSIGHT_INTERVAL``: seconds between cgroup sweeps."""
    metrics_port: int
    """``--metrics-port``/``OOMSIGHT_METRICS_PORT``: serves /metrics and /healthz; 0 disables."""
    metrics_address: str = ""
    """``--metrics-address``/``OOMSIGHT_METRICS_ADDRESS``: bind address (all interfaces when empty)."""
    warn_threshold: float = 0.90
    """``--warn-threshold``/``OOMSIGHT_WARN_THRESHOLD``: working set ÷ limit that raises HighWorkingSet."""
    report_interval: float = REPORT_MIN_INTERVAL
    """``--report-interval``: minimum seconds between NodeMemoryReport writes (at least 60 in a cluster)."""
    metrics_grace: float = DEFAULT_METRICS_GRACE
    """``--metrics-grace``/``OOMSIGHT_METRICS_GRACE``: seconds a deleted pod's kill counters stay on
    /metrics (so that a scrape sees its last kill), then its series are removed."""
    kernel_log: str = "auto"
    """``--kernel-log``/``OOMSIGHT_KERNEL_LOG``: the first kernel log source to try (``auto`` = kmsg,
    then syslog, then none; ``none`` = the OOM-kill counters alone). oomsight.host.kernlog."""


ENV = {
    "node_name": "NODE_NAME",
    "kubeconfig": "KUBECONFIG",
    "host_root": "OOMSIGHT_HOST_ROOT",
    "state_dir": "OOMSIGHT_STATE_DIR",
    "interval": "OOMSIGHT_INTERVAL",
    "metrics_port": "OOMSIGHT_METRICS_PORT",
    "metrics_address": "OOMSIGHT_METRICS_ADDRESS",
    "warn_threshold": "OOMSIGHT_WARN_THRESHOLD",
    "report_interval": "OOMSIGHT_REPORT_INTERVAL",
    "kernel_log": "OOMSIGHT_KERNEL_LOG",
    "metrics_grace": "OOMSIGHT_METRICS_GRACE",
}


def configure(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--node-name", help="this node's name (env NODE_NAME; required)")
    add("--kubeconfig", help="kubeconfig file (env KUBECONFIG); in-cluster service account when absent")
    add("--host-root", help="the host's root as mounted here (env OOMSIGHT_HOST_ROOT; default /)")
    add(
        "--state-dir",
        help=f"cursor and spool directory (env OOMSIGHT_STATE_DIR; default {DEFAULT_STATE_DIR})",
    )
    add(
        "--interval",
        help=f"seconds between cgroup sweeps (env OOMSIGHT_INTERVAL; default {DEFAULT_INTERVAL:g})",
    )
    add(
        "--metrics-port",
        help=f"port for /metrics and /healthz, 0 = off (env OOMSIGHT_METRICS_PORT; "
        f"default {DEFAULT_METRICS_PORT})",
    )
    add("--metrics-address", help="bind address for metrics (env OOMSIGHT_METRICS_ADDRESS; default all)")
    add(
        "--warn-threshold",
        help="HighWorkingSet threshold, percent of the effective limit "
        "(env OOMSIGHT_WARN_THRESHOLD; default 90)",
    )
    add("--report-interval", help="minimum seconds between NodeMemoryReport writes (default 60)")
    add(
        "--metrics-grace",
        help="seconds a deleted pod's oomsight_oom_kills_total series stay on /metrics before they are "
        f"removed (env OOMSIGHT_METRICS_GRACE; default {DEFAULT_METRICS_GRACE:g})",
    )
    add(
        "--kernel-log",
        help="first kernel log source to try: auto (= kmsg), kmsg (/dev/kmsg), syslog (syslog(2), "
        "needs CAP_SYSLOG), none (OOM-kill counters only); each falls back to the next "
        "(env OOMSIGHT_KERNEL_LOG; default auto)",
    )


def _pick(args: argparse.Namespace, field: str) -> str | None:
    value = getattr(args, field, None)
    if value is None or value == "":
        value = os.environ.get(ENV[field]) or None
    return value


def _number(args: argparse.Namespace, field: str, default: float, lo: float, hi: float) -> float:
    raw = _pick(args, field)
    if raw is None:
        return default
    flag = "--" + field.replace("_", "-")
    try:
        value = float(raw)
    except ValueError:
        raise UsageError(
            f"{flag}={raw!r} is not a number",
            f"give a number between {lo:g} and {hi:g} (or set {ENV[field]})",
        ) from None
    if not lo <= value <= hi:
        raise UsageError(f"{flag}={raw} is out of range", f"give a number between {lo:g} and {hi:g}")
    return value


def from_args(args: argparse.Namespace) -> Settings:
    """Flags first, then the environment, then defaults; a bad value is one ``UsageError`` line."""
    node = _pick(args, "node_name")
    if not node:
        raise UsageError(
            "no node name", "pass --node-name or set NODE_NAME (the DaemonSet sets it from spec.nodeName)"
        )
    host_root = Path(_pick(args, "host_root") or "/")
    if not host_root.is_dir():
        raise UsageError(
            f"--host-root {host_root} is not a directory", "point it at the host's / as mounted here"
        )
    port = _number(args, "metrics_port", DEFAULT_METRICS_PORT, 0, 65535)
    if port != int(port):
        raise UsageError(f"--metrics-port={port} is not a whole number", "give a port between 1 and 65535")
    threshold = _number(args, "warn_threshold", 90.0, 1, 100)
    kernel_log = _pick(args, "kernel_log") or "auto"
    if kernel_log not in KERNEL_LOG_CHOICES:
        raise UsageError(
            f"--kernel-log={kernel_log!r} is not a kernel log source",
            f"give one of {', '.join(KERNEL_LOG_CHOICES)} (or set OOMSIGHT_KERNEL_LOG)",
        )
    kubeconfig = _pick(args, "kubeconfig")
    if kubeconfig and not Path(kubeconfig).is_file():
        raise UsageError(f"--kubeconfig {kubeconfig} does not exist", "give the path of a kubeconfig file")
    return Settings(
        node_name=node,
        kubeconfig=kubeconfig,
        host_root=host_root,
        state_dir=Path(_pick(args, "state_dir") or DEFAULT_STATE_DIR),
        interval=_number(args, "interval", DEFAULT_INTERVAL, 0.1, 3600),
        metrics_port=int(port),
        metrics_address=_pick(args, "metrics_address") or "",
        warn_threshold=threshold / 100.0,
        report_interval=_number(args, "report_interval", REPORT_MIN_INTERVAL, 1, 86400),
        kernel_log=kernel_log,
        metrics_grace=_number(args, "metrics_grace", DEFAULT_METRICS_GRACE, 0, 86400),
    )
