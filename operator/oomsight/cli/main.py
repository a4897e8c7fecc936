"""``oomsight``: one entry point, one module per subcommand.

Each subcommand lives in ``oomsight.cli.<name>`` and exposes ``HELP`` (one line),
``configure(parser)`` and ``run(args) -> int``. Add a subcommand by adding its module and one row to
``SUBCOMMANDS``; modules are imported only when their command runs, so ``oomsight top`` never pays for
kopf or the Kubernetes client.

Errors a user can cause (``OomsightError``) print as one line on stderr and exit 2; nothing else
the user did should ever show a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from oomsight import __version__
from oomsight.cli.common import run_parsed

# name -> one-line help. The module oomsight.cli.<name> (dashes become underscores) holds the rest.
SUBCOMMANDS: dict[str, str] = {
    "diagnose": "OOM kills since boot explained, containers near their limit, frozen cgroups, node findings",
    "top": "containers sorted by working set / effective limit, with what the memory is",
    "node": "this node's kernel and cgroup findings (kmem accounting, leaked memcgs, swap, THP)",
    "recommend": "memory requests and limits from an exported working-set series (--from-csv)",
    "agent": "run the node agent: Events on Pods for OOM kills, /metrics, NodeMemoryReport (DaemonSet)",
    "explain": "explain the OOM kills in a saved kernel log (dmesg, journalctl -k, syslog, /dev/kmsg)",
    "operator": "run the operator: MemoryPolicy recommendations, pod annotations, node risk flags (kopf, HA)",
}


def _module(name: str):  # type: ignore[no-untyped-def]
    return importlib.import_module(f"oomsight.cli.{name.replace('-', '_')}")


def build_parser(argv: Sequence[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="oomsight",
        description="Why was it OOM-killed, what is about to be, and what limit should it have.",
    )
    parser.add_argument("--version", action="version", version=f"oomsight {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    wanted = next((a for a in argv if not a.startswith("-")), None)
    for name, help_text in SUBCOMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        if name == wanted:  # only the chosen command's module is imported
            mod = _module(name)
            mod.configure(p)
            p.set_defaults(_run=mod.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    # Every error of a local command is about what it was given or found here: 2.
    return run_parsed("oomsight", build_parser(args_list), args_list, failure_status=2)


if __name__ == "__main__":
    sys.exit(main())
