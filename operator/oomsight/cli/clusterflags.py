"""Flags every ``kubectl oomsight`` verb takes, spelled as kubectl spells them, and the connection.

``oomsight.kube.clientconfig`` (and with it the official ``kubernetes`` client) is imported only when
a cluster verb runs, so the local ``oomsight`` commands never pay for it.
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from oomsight.kube.clusterread import ClusterRead


def add_cluster_flags(parser: argparse.ArgumentParser, namespaced: bool = True) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)")
    parser.add_argument("--context", help="the kubeconfig context to use (default: its current-context)")
    if namespaced:
        parser.add_argument(
            "-n", "--namespace", help="namespace (default: the context's namespace, else default)"
        )


def connect(args: argparse.Namespace) -> ClusterRead:
    from oomsight.kube.clientconfig import load_target
    from oomsight.kube.clusterread import ClusterRead

    return ClusterRead(load_target(args.kubeconfig, args.context, getattr(args, "namespace", None)))


def notice(command: str, line: str) -> None:
    """One line on stderr about a source that could not be read; the command goes on without it."""
    print(f"kubectl oomsight {command}: {line}", file=sys.stderr)
