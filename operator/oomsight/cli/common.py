"""Flags and text helpers that several subcommands share (one definition, one help text)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
from pathlib import Path


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
