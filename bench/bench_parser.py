"""Parser throughput: an OOM storm of 1,000 incidents interleaved with noise, as /dev/kmsg records.

The storm is built from real reports (tests/fixtures/oom/captured-6.18.44-*.log, raw kmsg records
captured on this machine), replayed with fresh sequence numbers, each report followed by unrelated
kernel messages (network, audit, USB) so that noise makes up about half of the stream.

    /tmp/v/bin/python bench/bench_parser.py [--incidents 1000] [--noise 80] [--repeat 5]

Prints records/second for the assembler alone (Record objects in hand, what a live reader feeds)
and for parse_kmsg_record + assembler (raw text in). Target: >= 200,000 records/s on one core.
Times are CPU time of this process (time.process_time), so a busy machine does not skew them.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "operator"))

from oomsight.core.kmsg import parse_kmsg_record  # noqa: E402
from oomsight.core.oomreport import OomAssembler  # noqa: E402

NOISE = (
    "6,{seq},{usec},-;IPv6: ADDRCONF(NETDEV_CHANGE): veth{n:x}: link becomes ready",
    "6,{seq},{usec},-;cni0: port {n}(veth{n:x}) entered forwarding state",
    '5,{seq},{usec},-;audit: type=1400 audit({n}.123:42): apparmor="STATUS" operation="profile_load"',
    "6,{seq},{usec},-;usb 1-1: new high-speed USB device number {n} using xhci_hcd",
    "4,{seq},{usec},-;TCP: request_sock_TCP: Possible SYN flooding on port {n}. Sending cookies.",
    "6,{seq},{usec},-;EXT4-fs (sda1): mounted filesystem with ordered data mode. Quota mode: none.",
    "6,{seq},{usec},-;device veth{n:x} entered promiscuous mode",
    "3,{seq},{usec},-;nfs: server 10.0.0.{m} not responding, still trying",
)


def report_texts() -> list[list[str]]:
    """Each captured report as its list of kmsg message texts (header + report + kill line)."""
    reports: list[list[str]] = []
    for path in sorted((ROOT / "tests/fixtures/oom").glob("captured-6.18.44-*.log")):
        current: list[str] = []
        for line in path.read_text().splitlines():
            if line.startswith("#") or ";" not in line or line.startswith(" "):
                continue
            text = line.split(";", 1)[1]
            if "invoked oom-killer" in text and current:
                current = []
            current.append(text)
            if "Killed process" in text and "invoked oom-killer" in current[0]:
                reports.append(current)
                current = []
    return reports


def storm(incidents: int, noise_per: int) -> list[str]:
    reports = report_texts()
    out: list[str] = []
    seq, usec = 1000, 10_000_000
    for i in range(incidents):
        for text in reports[i % len(reports)]:
            out.append(f"4,{seq},{usec},-;{text}")
            seq += 1
            usec += 7
        for k in range(noise_per):
            out.append(NOISE[(i + k) % len(NOISE)].format(seq=seq, usec=usec, n=i * 7 + k, m=k % 250))
            seq += 1
            usec += 13
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--incidents", type=int, default=1000)
    ap.add_argument("--noise", type=int, default=80, help="noise records after each report")
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    raw = storm(args.incidents, args.noise)
    records = [r for r in (parse_kmsg_record(x) for x in raw) if r is not None]
    print(f"storm: {len(records)} records, {args.incidents} incidents, {args.noise} noise records after each")
    best_asm = best_full = best_parse = float("inf")
    found = 0
    for _ in range(args.repeat):
        asm = OomAssembler()
        t0 = time.process_time()
        n = 0
        for r in records:
            n += len(asm.feed(r))
        n += len(asm.flush())
        best_asm = min(best_asm, time.process_time() - t0)
        found = n
        asm = OomAssembler()
        t0 = time.process_time()
        for x in raw:
            r = parse_kmsg_record(x)
            if r is not None:
                asm.feed(r)
        asm.flush()
        best_full = min(best_full, time.process_time() - t0)
        t0 = time.process_time()
        for x in raw:
            parse_kmsg_record(x)
        best_parse = min(best_parse, time.process_time() - t0)
    assert found == args.incidents, f"assembled {found} incidents, expected {args.incidents}"
    print(f"incidents assembled: {found}")
    print(f"assembler only:        {len(records) / best_asm:12,.0f} records/s  (best of {args.repeat})")
    print(f"parse_kmsg_record only: {len(raw) / best_parse:11,.0f} records/s  (best of {args.repeat})")
    print(f"parse_kmsg + assemble: {len(raw) / best_full:12,.0f} records/s  (best of {args.repeat})")


if __name__ == "__main__":
    main()
