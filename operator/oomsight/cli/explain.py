"""``oomsight explain FILE``: explain every OOM kill in a kernel log saved from any machine.

Reads ``dmesg``, ``dmesg -T``, ``journalctl -k`` (short or short-iso), syslog or raw ``/dev/kmsg``
text (``-`` for standard input), assembles each OOM report and prints why each process died.
"""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from oomsight.cli.common import print_json, wrap
from oomsight.core.diagnosis import Diagnosis, diagnose
from oomsight.core.errors import UsageError
from oomsight.core.logtext import parse_log
from oomsight.core.oomreport import assemble
from oomsight.core.quantity import prose_bytes

HELP = "explain the OOM kills in a saved kernel log (dmesg, journalctl -k, syslog, /dev/kmsg)"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="the saved kernel log, or - for standard input")
    parser.add_argument("--json", action="store_true", help='print {"incidents": [...]} as JSON')
    parser.add_argument(
        "--year",
        type=int,
        default=None,
        help="year of syslog/journalctl lines, which carry none (default: this year)",
    )


def _read(path: str) -> str:
    try:
        if path == "-":
            data = sys.stdin.buffer.read()
        else:
            with open(path, "rb") as f:
                data = f.read()
    except FileNotFoundError:
        raise UsageError(
            f"{path}: no such file", "pass the path of a saved kernel log, or - for stdin"
        ) from None
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory", "pass one saved kernel log file") from None
    except PermissionError:
        raise UsageError(f"{path}: permission denied", "run as a user who can read it") from None
    except OSError as err:
        raise UsageError(f"{path}: {err.strerror}", "pass a readable saved kernel log") from None
    return data.decode("utf-8", errors="replace")


def _text(d: Diagnosis, n: int) -> str:
    j = d.as_json()
    v = j["victim"]
    when = j["time"] or (
        f"+{j['monotonic_usec'] / 1e6:.6f}s after boot" if j["monotonic_usec"] else "time unknown"
    )
    lines = [
        f"#{n}  {when}  {v['comm']} (pid {v['pid']}) killed — scope: {j['scope'] or 'unknown'}",
    ]
    if j["pod_uid"]:
        lines.append(
            f"    pod {j['pod_uid']}" + (f"  container {j['container_id']}" if j["container_id"] else "")
        )
    if j["oom_cgroup"]:
        lines.append(f"    limit hit: {j['oom_cgroup']}  ({prose_bytes(j['limit_bytes'])})")
    charged = {k: val for k, val in j["charged"].items() if val is not None}
    if charged:
        lines.append(
            "    charged: "
            + ", ".join(f"{k} {prose_bytes(val)}" for k, val in charged.items())
            + (f"  (dominant: {j['dominant']})" if j["dominant"] else "")
        )
    lines.append("")
    lines += wrap(d.explanation, 96, "    ")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    name = "standard input" if args.file == "-" else args.file
    text = _read(args.file)
    year = args.year if args.year is not None else datetime.now(UTC).year
    fmt, records = parse_log(text, name=name, year=year)
    diagnoses = [diagnose(i) for i in assemble(records)]
    if args.json:
        print_json({"format": fmt, "records": len(records), "incidents": [d.as_json() for d in diagnoses]})
        return 0
    if not diagnoses:
        print(f"{name}: {len(records)} kernel log lines ({fmt}), no OOM kill in them.")
        return 0
    print(f"{name}: {len(diagnoses)} OOM kill(s) in {len(records)} kernel log lines ({fmt})\n")
    print("\n\n".join(_text(d, n) for n, d in enumerate(diagnoses, start=1)))
    return 0
