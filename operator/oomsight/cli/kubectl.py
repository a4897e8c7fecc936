"""``kubectl oomsight``: the cluster verbs, as a kubectl plugin (the ``kubectl-oomsight`` executable).

kubectl runs ``kubectl-oomsight`` from ``PATH`` for ``kubectl oomsight ...`` and passes the rest of the
command line and the environment (``KUBECONFIG``) through. Its verbs read the cluster, never this
machine: ``why`` (one Pod), ``top`` (containers nearest their limit, cluster-wide), ``nodes``. The
local verbs (``diagnose``, ``top``, ``node``, ``explain``, ``recommend``, ``agent``, ``operator``) stay
with ``oomsight``; asked here, they get one line saying so.

Each verb is a module ``oomsight.cli.<module>`` with ``HELP``, ``configure(parser)``, ``run(args)``.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from oomsight import __version__
from oomsight.cli.common import run_parsed
from oomsight.cli.main import SUBCOMMANDS as LOCAL_COMMANDS

PROG = "kubectl oomsight"
VERBS: dict[str, tuple[str, str]] = {
    "why": ("why", "why a Pod's containers were OOM-killed: agent, kubelet, operator and node, joined"),
    "top": ("clustertop", "the cluster's containers sorted by working set / effective limit"),
    "nodes": ("nodes", "one row per node: kernel, cgroup, kmem accounting, dying memcgs, risk, OOMs in 24 h"),
}


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG, description="oomsight for a cluster: what the agents, the kubelet and the operator know."
    )
    parser.add_argument("--version", action="version", version=f"oomsight {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, (module, help_text) in VERBS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:
            mod = importlib.import_module(f"oomsight.cli.{module}")
            mod.configure(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    wanted = next((a for a in args_list if not a.startswith("-")), None)
    if wanted is not None and wanted not in VERBS and wanted in LOCAL_COMMANDS:
        print(
            f"{PROG}: {wanted!r} reads this machine, not the cluster: run `oomsight {wanted}` "
            f"(cluster verbs: {', '.join(VERBS)})",
            file=sys.stderr,
        )
        return 2
    # A cluster that cannot be reached or answers badly is not the user's input: 1.
    return run_parsed(PROG, build_parser(args_list), args_list, failure_status=1)


if __name__ == "__main__":
    sys.exit(main())
