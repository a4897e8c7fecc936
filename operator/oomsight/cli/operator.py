"""``oomsight operator``: the kopf operator (MemoryPolicy status, pod annotations, node risk flags).

Flags have environment equivalents for the chart: ``KUBECONFIG``, ``OOMSIGHT_PEERING`` (the peering
object to join when it exists), ``OOMSIGHT_LOG_LEVEL``, ``OOMSIGHT_METRICS_PORT`` (``/metrics`` and
``/healthz`` on that port), ``POD_NAME`` (this replica's name in logs, Events and
``managedFields``). Before starting, it checks what would otherwise make kopf retry silently forever:
credentials, the API server, the CRDs, and the named peering object.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import random
import socket

from oomsight.cli.common import add_log_level
from oomsight.core.errors import UsageError
from oomsight.core.quantity import parse_seconds

HELP = "run the operator: MemoryPolicy recommendations, pod annotations, node risk flags (kopf, HA)"


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be positive")
    return v


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else in-cluster)")
    scope = parser.add_mutually_exclusive_group()
    scope.add_argument(
        "--namespace",
        "-n",
        action="append",
        default=[],
        metavar="NS",
        help="serve only this namespace (repeatable); peering then uses a KopfPeering in each",
    )
    scope.add_argument("--all-namespaces", "-A", action="store_true", help="serve every namespace (default)")
    parser.add_argument(
        "--peering",
        metavar="NAME",
        help="kopf peering object to coordinate replicas through; it must exist (default: "
        "$OOMSIGHT_PEERING, which must exist too; else 'oomsight' when it exists, standalone when not)",
    )
    parser.add_argument("--standalone", action="store_true", help="no peering: this process always acts")
    parser.add_argument(
        "--priority",
        type=int,
        help="peering priority; the highest live one acts (default: random, so replicas never tie)",
    )
    parser.add_argument(
        "--liveness",
        metavar="URL",
        help="also serve kopf's own liveness probe at this URL, e.g. http://0.0.0.0:8081/healthz",
    )
    parser.add_argument(
        "--metrics-port",
        help="serve /metrics and /healthz on this port (env OOMSIGHT_METRICS_PORT; the chart sets it)",
    )
    parser.add_argument("--debounce", type=_positive, default=1.0, help="seconds to coalesce changes (1)")
    parser.add_argument("--resync", type=_positive, default=60.0, help="seconds between full reconciles (60)")
    parser.add_argument(
        "--resize-interval",
        help="at most one memory change per container this often when a MemoryPolicy applies its "
        "recommendations (env OOMSIGHT_RESIZE_INTERVAL; default 1h; e.g. 30m, 2h, or seconds)",
    )
    parser.add_argument(
        "--peering-lifetime",
        type=int,
        default=60,
        help="seconds a replica's peering record lives without a heartbeat (60): a killed leader is "
        "replaced after at most this long",
    )
    add_log_level(parser)


def _check_cluster(rest: object, namespaces: list[str], peering: str | None, clusterwide: bool) -> None:
    from oomsight.kube.crd import (
        CLUSTER_PEERING_PLURAL,
        GROUP,
        PEERING_GROUP,
        PEERING_PLURAL,
        PEERING_VERSION,
        VERSION,
    )
    from oomsight.kube.rest import Rest

    assert isinstance(rest, Rest)
    resp = rest.request("GET", f"/apis/{GROUP}/{VERSION}")
    if resp.status == 0:
        raise UsageError(
            f"cannot reach the Kubernetes API server ({resp.error})", "check --kubeconfig and the network"
        )
    if resp.status == 404:
        raise UsageError(
            f"the API server does not serve {GROUP}/{VERSION}: the oomsight CRDs are not installed",
            "kubectl apply -f crds/ (or install the Helm chart)",
        )
    if resp.status in (401, 403):
        raise UsageError(
            f"the API server refused the credentials (HTTP {resp.status})", "check --kubeconfig/RBAC"
        )
    for ns in namespaces:
        r = rest.request("GET", f"/api/v1/namespaces/{ns}")
        if r.status == 404:
            raise UsageError(f"--namespace {ns}: no such namespace", "create it or fix the name")
    if peering is not None:
        if clusterwide:
            paths = [f"/apis/{PEERING_GROUP}/{PEERING_VERSION}/{CLUSTER_PEERING_PLURAL}/{peering}"]
            what = f"ClusterKopfPeering {peering}"
        else:
            paths = [
                f"/apis/{PEERING_GROUP}/{PEERING_VERSION}/namespaces/{ns}/{PEERING_PLURAL}/{peering}"
                for ns in namespaces
            ]
            what = f"KopfPeering {peering} in namespace(s) {', '.join(namespaces)}"
        for path in paths:
            if rest.request("GET", path).status == 404:
                raise UsageError(
                    f"peering {peering} (--peering or OOMSIGHT_PEERING): the {what} does not exist",
                    "create it (apiVersion kopf.dev/v1; the chart does) or run with --standalone",
                )


def run(args: argparse.Namespace) -> int:
    from oomsight.kube.policies import OperatorRest

    if args.standalone and args.peering:
        raise UsageError("--standalone and --peering exclude each other", "pick one")
    port = args.metrics_port if args.metrics_port is not None else os.environ.get("OOMSIGHT_METRICS_PORT")
    metrics_port = None
    if port not in (None, ""):
        if not str(port).isdigit() or not 0 < int(port) < 65536:
            raise UsageError(f"metrics port {port!r} is not a port number", "pass --metrics-port 8080")
        metrics_port = int(port)
    resize_interval = parse_seconds(
        args.resize_interval or os.environ.get("OOMSIGHT_RESIZE_INTERVAL") or "1h", "--resize-interval"
    )
    namespaces = sorted(set(args.namespace))
    clusterwide = not namespaces
    kubeconfig = args.kubeconfig or os.environ.get("KUBECONFIG") or None
    if kubeconfig and not os.path.isfile(kubeconfig):
        raise UsageError(f"--kubeconfig {kubeconfig} is not a file", "pass the path of a kubeconfig")
    instance = os.environ.get("POD_NAME") or f"{socket.gethostname()}-{os.getpid()}"
    rest = OperatorRest(kubeconfig, instance)
    # An explicit peering (flag, or OOMSIGHT_PEERING as the chart sets it) must exist: without it kopf
    # would fall back to standalone and every replica would act.
    peering = None if args.standalone else (args.peering or os.environ.get("OOMSIGHT_PEERING") or None)
    _check_cluster(rest, namespaces, peering, clusterwide)
    if kubeconfig:
        os.environ["KUBECONFIG"] = kubeconfig  # kopf logs in through the kubernetes client's loader

    import asyncio

    import kopf

    from oomsight.controller.operator import Operator, OperatorConfig
    from oomsight.kube.crd import DEFAULT_PEERING_NAME

    kopf.configure(verbose=args.log_level == "debug", quiet=args.log_level in ("warning", "error"))
    logging.getLogger("oomsight").setLevel(getattr(logging, str(args.log_level).upper()))
    if args.log_level != "debug":  # kopf logs every handler call on every pod at INFO
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    priority = args.priority if args.priority is not None else random.randint(1, 1_000_000)  # noqa: S311
    cfg = OperatorConfig(
        namespaces=tuple(namespaces),
        peering=peering,
        default_peering=os.environ.get("OOMSIGHT_PEERING") or DEFAULT_PEERING_NAME,
        standalone=bool(args.standalone),
        priority=priority,
        liveness=args.liveness,
        metrics_port=metrics_port,
        instance=instance,
        debounce=args.debounce,
        resync=args.resync,
        peering_lifetime=args.peering_lifetime,
        in_cluster=not kubeconfig,
        resize_interval=resize_interval,
    )
    op = Operator(cfg, rest)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(op.run_async())
    return 0
