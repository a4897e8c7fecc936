"""``oomsight agent``: the node agent (DaemonSet) — Events on Pods, /metrics, NodeMemoryReport.

Runs until SIGTERM, then flushes the Event spool and exits 0. Every flag has an environment variable
(see ``oomsight.agent.settings``), so the DaemonSet only sets ``NODE_NAME`` from the downward API.
"""

from __future__ import annotations

import argparse
import logging

from oomsight.cli.common import add_log_level

HELP = "run the node agent: Events on Pods for OOM kills, /metrics, NodeMemoryReport (DaemonSet)"


def configure(parser: argparse.ArgumentParser) -> None:
    from oomsight.agent.settings import configure as add_flags

    add_flags(parser)
    add_log_level(parser)


def run(args: argparse.Namespace) -> int:
    from oomsight.agent.settings import from_args

    settings = from_args(args)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper()),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    from oomsight.agent.loop import run as run_agent

    return run_agent(settings)
