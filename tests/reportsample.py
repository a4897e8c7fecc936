"""A NodeMemoryReport with every list at its schema bound, as the agent would write it at worst.

Strings take realistic worst-case lengths (a 63-character pod name, a containerd ID, a 300-character
explanation), numbers take 10-11 digits. Used to check the 256 KiB budget (tests/test_crd_static.py)
and that the API server accepts such an object (tests/kube/test_crds.py).
"""

from __future__ import annotations

from typing import Any

from oomsight.kube import crd

GIB = 1 << 30


def container(i: int) -> dict[str, Any]:
    pod = f"checkout-frontend-payments-gateway-7d9f8c6b5-{i:05d}x"[:63].ljust(63, "z")
    return {
        "namespace": f"team-payments-production-{i % 7:02d}",
        "pod": pod,
        "podUID": f"{i:08x}-1c2d-4e5f-8a9b-0c1d2e3f4a5b",
        "container": f"payments-gateway-sidecar-{i % 3}",
        "containerID": "containerd://" + f"{i:064x}",
        "request": 2 * GIB,
        "limit": 4 * GIB,
        "limitLevel": "container",
        "workingSet": 3 * GIB + i,
        "peaks": [
            {"t": 1_763_900_000 + 300 * k, "bytes": 3 * GIB + 1_000_003 * k}
            for k in range(crd.MAX_REPORT_PEAKS)
        ],
        "breakdown": {
            "anon": 2 * GIB + i,
            "activeFile": 700_000_000 + i,
            "inactiveFile": 120_000_000 + i,
            "shmem": 64_000_000 + i,
            "kernel": 48_000_000 + i,
            "swap": 0,
        },
        "oomKills": 3,
        "xmx": 2 * GIB,
    }


def full_report(node: str) -> dict[str, Any]:
    return {
        "apiVersion": crd.API_VERSION,
        "kind": crd.NODE_REPORT_KIND,
        "metadata": {"name": node},
        "spec": {"nodeName": node},
        "status": {
            "reportTime": "2026-11-23T14:00:00Z",
            "agentVersion": "0.1.0",
            "bootID": "6a5b1c2d-3e4f-4a5b-8c9d-0e1f2a3b4c5d",
            "node": {
                "kernel": "3.10.0-1160.119.1.el7.x86_64",
                "cgroupVersion": "v1",
                "memoryController": "v1",
                "cgroupDriver": "systemd",
                "kmemAccounting": "enabled",
                "memTotal": 64 * GIB,
                "memoryCgroups": {"counted": 65_000, "live": 412},
                "swap": {"total": 0, "used": 0},
                "thp": "always",
            },
            "risk": "critical",
            "findings": [
                {
                    "id": f"kmem-accounting-leak-{k}",
                    "severity": "critical",
                    "message": "m" * 240,
                    "evidence": {f"key{j}": "v" * 40 for j in range(4)},
                    "fix": "f" * 200,
                }
                for k in range(crd.MAX_REPORT_FINDINGS)
            ],
            "oomKills24h": 31,
            "containersObserved": 330,
            "containers": [container(i) for i in range(crd.MAX_REPORT_CONTAINERS)],
            "incidents": [
                {
                    "time": "2026-11-23T13:59:58Z",
                    "namespace": "team-payments-production-01",
                    "pod": container(k)["pod"],
                    "podUID": container(k)["podUID"],
                    "container": "payments-gateway-sidecar-1",
                    "scope": "pod",
                    "victim": {
                        "pid": 4_194_301,
                        "comm": "java-gc-worker1",
                        "rss": 3 * GIB,
                        "containerSurvived": True,
                    },
                    "limit": 4 * GIB,
                    "explanation": "e" * 300,
                    "bootID": "6a5b1c2d-3e4f-4a5b-8c9d-0e1f2a3b4c5d",
                    "seq": 12_345_678 + k,
                }
                for k in range(crd.MAX_REPORT_INCIDENTS)
            ],
        },
    }
