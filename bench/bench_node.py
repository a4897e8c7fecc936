"""Side by side with the kubelet on a real node: which OOM kills each one reports, how long after the
kernel's kill line, and oomsight's working set against cAdvisor's for the same containers.

Needs a node and the chart (README, "Trying it all on one machine"), then as root:

    hack/envtest up --node /tmp/node && helm install oomsight charts/oomsight ... (as the README says)
    .venv/bin/python bench/bench_node.py --node-dir /tmp/node [--rounds 3]

Each round runs one Deployment per kind (64 MiB limit, the project image's python3):
- ``main``:  PID 1 grows past the limit; the container dies and the kubelet restarts it;
- ``child``: PID 1 starts a child that grows past the limit; the child dies, PID 1 lives on.

The bench reads the kill itself from /dev/kmsg (``oomsight.host.oomwatch``; the victim's cgroup names
the Pod). The kubelet "reports" a kill when the Pod's status shows ``lastState.terminated.reason:
OOMKilled``; cAdvisor's ``container_oom_events_total`` (the kubelet's ``/metrics/cadvisor``) is read at
the end of the round. oomsight reports it with its Event on the Pod. latency = CLOCK_MONOTONIC when the
bench first saw the report (polling the API every ``--poll`` seconds, so ± that) − the kill line's kmsg
stamp (kmsg's clock runs a few ms from CLOCK_MONOTONIC: see bench_live_latency.py).

Working set: a steady Pod (about 40 MiB, no kill) and the agent's ``oomsight_container_working_set_bytes``
against cAdvisor's ``container_memory_working_set_bytes``, both read within the same second, a few times.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from nodekit import NODE, Cluster, Kills, deployment, pod_pids, running_pod

AGENT_SERVICE = "oomsight-system/services/oomsight-agent-metrics:9808"
GROW = "x = []\nwhile True: x.append(b'1' * (4 << 20))"
CHILD = f"import subprocess, sys, time\nsubprocess.run([sys.executable, '-c', {GROW!r}])\ntime.sleep(86400)"
STEADY = "import time\nx = [b'1' * (4 << 20) for _ in range(8)]\ntime.sleep(86400)"
KINDS = {"main": GROW, "child": CHILD}


def one_kill(c: Cluster, kills: Kills, ns: str, kind: str, poll: float, wait: float) -> dict[str, Any]:
    c.json("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    c.json("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment(kind, KINDS[kind]))
    pod = running_pod(c, ns, kind)
    name, uid = pod["metadata"]["name"], pod["metadata"]["uid"]
    row: dict[str, Any] = {"kind": kind, "pod": name, "kill": None, "kubelet": None, "oomsight": None}
    deadline = time.monotonic() + wait
    pids: set[int] = set()
    while time.monotonic() < deadline:
        now = time.clock_gettime(time.CLOCK_MONOTONIC)
        pids |= pod_pids(uid)
        mine = kills.for_pod(uid, pids)
        if mine and row["kill"] is None:
            row["kill"] = mine[0][0]
        if row["kubelet"] is None:
            status = c.json("GET", f"/api/v1/namespaces/{ns}/pods/{name}")["status"]
            for cs in status.get("containerStatuses") or []:
                last = (cs.get("lastState") or {}).get("terminated") or {}
                if last.get("reason") == "OOMKilled":
                    row["kubelet"] = now
                    row["restarts"] = cs.get("restartCount")
        if row["oomsight"] is None:
            events = c.json("GET", f"/apis/events.k8s.io/v1/namespaces/{ns}/events").get("items") or []
            got = [
                e
                for e in events
                if e.get("reportingController") == "oomsight.io/agent"
                and (e.get("regarding") or {}).get("name") == name
                and str(e.get("reason", "")).startswith("OOMKilled")
            ]
            if got:
                row["oomsight"], row["reason"] = now, got[0]["reason"]
        done_kubelet = row["kubelet"] is not None or (kind == "child" and row["oomsight"] is not None)
        # The child's kill is invisible to the kubelet: give it 15 s more anyway.
        grace_over = kind == "main" or (row["oomsight"] is not None and now - row["oomsight"] > 15)
        if row["kill"] is not None and row["oomsight"] is not None and done_kubelet and grace_over:
            break
        time.sleep(poll)
    cadvisor = c.samples(f"/api/v1/nodes/{NODE}/proxy/metrics/cadvisor", "container_oom_events_total")
    row["cadvisor_oom_events"] = cadvisor.get((ns, name, "hog"))
    c.json("DELETE", f"/api/v1/namespaces/{ns}")
    return row


def working_sets(c: Cluster, samples: int) -> list[tuple[float, float]]:
    ns = f"bench-steady-{int(time.time())}"
    c.json("POST", "/api/v1/namespaces", {"metadata": {"name": ns}})
    c.json("POST", f"/apis/apps/v1/namespaces/{ns}/deployments", deployment("steady", STEADY))
    pod = running_pod(c, ns, "steady")["metadata"]["name"]
    key = (ns, pod, "hog")
    time.sleep(30)  # past its start-up allocation and a cAdvisor housekeeping round (10-15 s)
    pairs: list[tuple[float, float]] = []
    deadline = time.monotonic() + 180
    while len(pairs) < samples and time.monotonic() < deadline:
        ours = c.samples(
            f"/api/v1/namespaces/{AGENT_SERVICE}/proxy/metrics", "oomsight_container_working_set_bytes"
        )
        theirs = c.samples(
            f"/api/v1/nodes/{NODE}/proxy/metrics/cadvisor", "container_memory_working_set_bytes"
        )
        if key in ours and key in theirs:
            pairs.append((ours[key], theirs[key]))
        time.sleep(5)
    c.json("DELETE", f"/api/v1/namespaces/{ns}")
    return pairs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--node-dir", type=Path, required=True, help="the DIR of hack/envtest up --node DIR")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--poll", type=float, default=0.2, help="seconds between API polls")
    ap.add_argument("--wait", type=float, default=120.0, help="seconds to wait for one kill's reports")
    args = ap.parse_args()
    c = Cluster(args.node_dir)
    kills = Kills()
    kills.start()
    rows = []
    stamp = int(time.time())
    for i in range(args.rounds):
        for kind in KINDS:
            rows.append(one_kill(c, kills, f"bench-{kind}-{stamp}-{i}", kind, args.poll, args.wait))
    kills.stop.set()

    def lat(row: dict[str, Any], who: str) -> str:
        if row["kill"] is None or row[who] is None:
            return "-"
        return f"{row[who] - row['kill']:.2f} s"

    print(
        "| kind | kernel kill seen | kubelet: status reason (restarts) | cAdvisor container_oom_events_total "
        "| kubelet latency | oomsight: Event reason | oomsight latency |"
    )
    print("|---|---|---|---|---|---|---|")
    for row in rows:
        kubelet = f"OOMKilled ({row.get('restarts')})" if row["kubelet"] is not None else "nothing"
        print(
            f"| {row['kind']} | {'yes' if row['kill'] is not None else 'no'} | {kubelet} "
            f"| {row['cadvisor_oom_events'] if row['cadvisor_oom_events'] is not None else '-'} "
            f"| {lat(row, 'kubelet')} | {row.get('reason', 'nothing')} | {lat(row, 'oomsight')} |"
        )
    pairs = working_sets(c, 6)
    if pairs:
        diffs = [100.0 * (ours - theirs) / theirs for ours, theirs in pairs if theirs]
        print(
            f"\nworking set, steady 40 MiB container, {len(pairs)} samples: oomsight − cAdvisor = "
            f"median {statistics.median(diffs):+.2f} %, range {min(diffs):+.2f} % .. {max(diffs):+.2f} % "
            f"(oomsight {statistics.median(p[0] for p in pairs) / 2**20:.1f} MiB, "
            f"cAdvisor {statistics.median(p[1] for p in pairs) / 2**20:.1f} MiB)"
        )
    else:
        print("\nworking set: no sample had both numbers")
    return 0


if __name__ == "__main__":
    sys.exit(main())
