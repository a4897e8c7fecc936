"""Turn one guest run of tests/vm/guest_scenarios.py into corpus fixtures (run by hand, on the host).

    python3 tests/vm/make_fixtures.py OUT SERIES SCENARIO...

``OUT`` is the directory the run wrote (``results.json``, ``<scenario>.kmsg``, ``dmesg.txt``,
``node/``). For each SCENARIO it writes ``tests/fixtures/oom/vm-<series>-v2-<scenario>-kmsg.log``
(the raw /dev/kmsg records read during it, from the ``invoked oom-killer`` line on, exactly as
read(2) returned them) and ``...-dmesg.log`` (the same records as the guest's ``dmesg`` printed
them), each behind a header naming the kernel and how it was made. ``node/`` becomes
``tests/fixtures/node/debian-<series>-v2-vm/`` with its SOURCE note.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SUITES = {"5.10": "bullseye", "6.1": "bookworm", "6.12": "trixie"}
_STAMP = re.compile(r"^\[\s*(\d+)\.(\d+)\]")


def header(results: dict, series: str, scenario: str, fmt: str) -> str:
    doc = (results["scenarios"][scenario].get("doc") or "").strip()
    return (
        f"# kernel: {results['kernel']} (Debian {SUITES[series]} linux-image-amd64,"
        " qemu TCG guest, cgroup v2)\n"
        f"# source: captured on this machine in a hack/vm guest: hack/vm run --kernel {series} --mem 1G"
        f" --share OUT -- python3 tests/vm/guest_scenarios.py OUT, scenario {scenario}"
        f" (tests/vm/make_fixtures.py)\n"
        + (f"# scenario: {doc}\n" if doc else "")
        + f"# format: {fmt}\n"
    )


def main() -> None:
    out, series, scenarios = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    results = json.loads((out / "results.json").read_text())
    dmesg = (out / "dmesg.txt").read_text().splitlines()
    for name in scenarios:
        raw = (out / f"{name}.kmsg").read_text().splitlines()
        start = next(i for i, line in enumerate(raw) if "invoked oom-killer" in line)
        raw = raw[start:]
        usecs = [int(line.split(",")[2]) for line in raw if re.match(r"^\d+,\d+,\d+,", line)]
        lo, hi = min(usecs), max(usecs)
        kept, keep = [], False
        for line in dmesg:
            m = _STAMP.match(line)
            if m:
                usec = int(m.group(1)) * 1_000_000 + int(m.group(2)[:6].ljust(6, "0"))
                keep = lo <= usec <= hi
            if keep:
                kept.append(line)
        base = FIXTURES / "oom" / f"vm-{series}-v2-{name.replace('_', '-')}"
        fmt = "raw /dev/kmsg records (multi-line records escaped as \\x0a, as read(2) gives them)"
        Path(f"{base}-kmsg.log").write_text(header(results, series, name, fmt) + "\n".join(raw) + "\n")
        fmt = "dmesg (util-linux 2.38.1 in the guest; a multi-line record's later lines indented, no stamp)"
        Path(f"{base}-dmesg.log").write_text(header(results, series, name, fmt) + "\n".join(kept) + "\n")
    node = out / "node"
    if node.is_dir():
        dest = FIXTURES / "node" / f"debian-{series}-v2-vm"
        if dest.exists():
            shutil.rmtree(dest)
        shutil.copytree(node, dest)
        (dest / "SOURCE").write_text(
            f"kernel: {results['kernel']} (Debian {SUITES[series]} linux-image-amd64), cgroup v2 (cgroup2 on"
            " /sys/fs/cgroup, controllers enabled for the root's children as systemd does), no swap\n"
            f"source: captured on this machine in a hack/vm guest (qemu TCG, --mem 1G) by"
            " tests/vm/guest_scenarios.py (capture_node), after its scenarios ran and their cgroups were"
            " removed: the removed cgroups still holding page cache are the dying memcgs\n"
            "edits: none (the /proc and /sys files the node checks read, and the cgroup tree's directories"
            " with empty cgroup.procs)\n"
        )


if __name__ == "__main__":
    main()
