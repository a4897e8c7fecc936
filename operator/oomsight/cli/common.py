"""Flags and text helpers that several subcommands share (one definition, one help text)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from oomsight.core.errors import OomsightError, UsageError


def run_parsed(prog: str, parser: argparse.ArgumentParser, argv: Sequence[str], failure_status: int) -> int:
    """Parse ``argv`` and run the chosen command's ``_run``, turning what it raises into one line on
    stderr and an exit status: help and 2 without a command, 2 for a ``UsageError`` (bad input),
    ``failure_status`` for any other ``OomsightError``, 130 on Ctrl-C, 0 when the reader of stdout
    left (``oomsight top | head``)."""
    args = parser.parse_args(list(argv))
    if not getattr(args, "_run", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except UsageError as err:
        print(f"{prog} {args.command}: {err}", file=sys.stderr)
        return 2
    except OomsightError as err:
        print(f"{prog} {args.command}: {err}", file=sys.stderr)
        return failure_status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        sys.stderr.close()
        return 0


def add_host_root(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--host-root",
        type=Path,
        default=Path("/"),
        help="where the host's / is mounted: / on a node (default), /host in a pod",
    )


def add_json(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print the JSON document (see README)")


def print_json(doc: object) -> None:
    """A ``--json`` document on stdout: indented by 2, one newline at the end."""
    json.dump(doc, sys.stdout, indent=2)
    sys.stdout.write("\n")


def add_log_level(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--log-level",
        default=os.environ.get("OOMSIGHT_LOG_LEVEL", "info"),
        choices=["debug", "info", "warning", "error"],
        help="log verbosity (env OOMSIGHT_LOG_LEVEL)",
    )


def wrap(text: str, width: int, indent: str) -> list[str]:
    """``text`` as lines of at most ``width`` characters, each starting with ``indent``."""
    return textwrap.wrap(
        text, width + len(indent), initial_indent=indent, subsequent_indent=indent, break_long_words=False
    )
