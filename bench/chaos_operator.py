"""The operator's rows of ``bench/chaos.py``: faults while ``oomsight operator`` reconciles 5,000 Pods.

Each row runs its own control plane (hack/envtest: etcd + kube-apiserver, no kubelet) with the API
server's audit log on, builds ``bench/bench_operator.py``'s scene in it (5,000 Pods bound to fake
Nodes in 500 workloads under 20 MemoryPolicies with ``annotatePods``, 50 NodeMemoryReports with usage
peaks) and gives every 20th Pod a kubelet OOM kill (``lastState.terminated.reason=OOMKilled``,
written through the ``pods/status`` subresource), then starts the operator as the chart does
(``--all-namespaces``, ClusterKopfPeering ``oomsight``) and breaks it once it has made
``--op-kill-after`` writes.

Counted from the audit log (level Request for PATCH of pods and memorypolicies/status and for
Event creates; only requests whose User-Agent is ``oomsight-operator-*``, i.e. the operator's own
writes, each replica named by it): ``writes`` = successful PATCHes (pod annotations, policy statuses)
and Event creates; ``repeated`` = writes whose request equals the previous successful write to the
same object (a status compared without ``lastUpdateTime``; an Event by regarding, reason and note),
i.e. the same write made twice; ``both`` = objects written by two replicas; ``conflicts`` = the
operator's writes answered 409 (their resourceVersion precondition failed: another writer changed the
object since the operator's view; each is followed by one read). ``lost`` = at the end,
selected Pods without their recommendation annotation plus policies whose status does not hold
every Pod and workload (``bench_operator.converged``), i.e. writes never made. ``converged after`` =
seconds from the end of the fault until every status and annotation is there.

Rows:
  op-sigkill      the operator SIGKILLed while writing, a new replica (lower priority, as a
                  Deployment's replacement Pod may get) started 2 s later
  op-peering      two replicas (priorities 200 and 100); the active one SIGSTOPped while writing,
                  the standby takes over, the stopped one resumed (SIGCONT) for 10 s, then SIGKILLed
  op-apiserver    kube-apiserver stopped for --outage s while the operator writes, then started
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from envtest_lib import ControlPlane, find_binaries

from bench_operator import Scene, annotated, converged, parallel
from kube.crdkit import apply_crds
from kube.kubehelpers import Kubectl, container_status, running_pod_status
from kube.opkit import OperatorProc
from oomsight.kube.rest import Rest, connect

UA = "oomsight-operator-"

AUDIT_POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
  - level: Request
    verbs: ["patch", "update"]
    resources:
      - group: ""
        resources: ["pods"]
      - group: "oomsight.io"
        resources: ["memorypolicies/status"]
  - level: Request
    verbs: ["create"]
    resources:
      - group: "events.k8s.io"
        resources: ["events"]
  - level: None
"""


class AuditedControlPlane(ControlPlane):
    """hack/envtest's control plane with the API server's audit log (``audit.log`` in its directory)."""

    @property
    def audit_log(self) -> Path:
        return self.directory / "audit.log"

    def _apiserver_argv(self) -> list[str]:
        policy = self.directory / "audit-policy.yaml"
        policy.write_text(AUDIT_POLICY)
        return [*super()._apiserver_argv(), f"--audit-policy-file={policy}",
                f"--audit-log-path={self.audit_log}", "--audit-log-maxsize=0"]  # fmt: skip


def _write_key(e: dict[str, Any]) -> tuple[tuple[str, ...], str] | None:
    """(object, request as compared) of one audited write, None for what is not the operator's."""
    if e.get("stage") != "ResponseComplete" or not str(e.get("userAgent", "")).startswith(UA):
        return None
    if not 200 <= int((e.get("responseStatus") or {}).get("code") or 0) < 300:
        return None
    ref = e.get("objectRef") or {}
    req = e.get("requestObject")
    if ref.get("resource") == "events":
        req = req or {}
        reg = req.get("regarding") or {}
        obj = ("events", str(ref.get("namespace")), str(reg.get("kind")), str(reg.get("name")))
        return obj, json.dumps([req.get("reason"), req.get("note")])
    # The resourceVersion a write is fenced on is its precondition, not what it writes: two writes of
    # one value on two versions are the same write made twice.
    if ref.get("subresource") == "status" and isinstance(req, list):
        req = [
            {**op, "value": {k: v for k, v in (op.get("value") or {}).items() if k != "lastUpdateTime"}}
            for op in req
            if op.get("path") != "/metadata/resourceVersion"
        ]
    elif isinstance(req, dict) and isinstance(req.get("metadata"), dict):
        req = {**req, "metadata": {k: v for k, v in req["metadata"].items() if k != "resourceVersion"}}
    obj = (str(ref.get("resource")), str(ref.get("subresource") or ""), str(ref.get("namespace")),
           str(ref.get("name")))  # fmt: skip
    return obj, json.dumps(req, sort_keys=True)


def _conflict(e: dict[str, Any]) -> bool:
    """A write of the operator's answered 409 Conflict: its resourceVersion precondition failed (another
    writer changed the object since the operator's view); the operator then reads the object once."""
    return (
        e.get("stage") == "ResponseComplete"
        and str(e.get("userAgent", "")).startswith(UA)
        and int((e.get("responseStatus") or {}).get("code") or 0) == 409
    )


def audit_tally(path: Path) -> dict[str, Any]:
    writes: Counter[str] = Counter()
    by_writer: dict[tuple[str, ...], set[str]] = {}
    last: dict[tuple[str, ...], str] = {}
    seen_events: set[tuple[tuple[str, ...], str]] = set()
    repeated: Counter[str] = Counter()
    conflicts = 0
    examples: list[str] = []
    if not path.exists():
        return {"writes": 0, "repeated": 0, "both": 0, "conflicts": 0, "by_kind": {}, "repeated_by_kind": {},
                "examples": []}  # fmt: skip
    for line in path.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            e = json.loads(line)
            conflicts += _conflict(e)
            k = _write_key(e)
            if k is None:
                continue
            obj, req = k
            kind = obj[0] + ("/" + obj[1] if obj[0] != "events" and obj[1] else "")
            writes[kind] += 1
            by_writer.setdefault(obj, set()).add(str(e.get("userAgent", "")).split("/")[0])
            same = (obj, req) in seen_events if obj[0] == "events" else last.get(obj) == req
            if same:
                repeated[kind] += 1
                if len(examples) < 5:
                    who = e.get("userAgent", "")
                    examples.append(f"{'/'.join(obj)} by {who} at {e.get('stageTimestamp')}")
            last[obj] = req
            seen_events.add((obj, req))
    return {
        "writes": sum(writes.values()),
        "repeated": sum(repeated.values()),
        "both": sum(1 for w in by_writer.values() if len(w) > 1),
        "conflicts": conflicts,
        "by_kind": dict(writes),
        "repeated_by_kind": dict(repeated),
        "examples": examples,
    }


def count_writes(path: Path, who: str = UA) -> int:
    """Audited writes whose User-Agent starts with ``who`` (answered or not)."""
    if not path.exists():
        return 0
    n = 0
    with path.open(errors="replace") as f:
        for line in f:
            if f'"userAgent":"{who}' in line and '"ResponseComplete"' in line:
                n += 1
    return n


def paused_writes(audit: Path, logs: dict[str, Path]) -> int:
    """Writes a replica made while its log said it was paused (kopf's "Pausing operations" until its
    next "Resuming operations"): what a standby wrote although it was not the active one."""
    spans: dict[str, list[tuple[str, str]]] = {}
    for who, log in logs.items():
        start = None
        for line in log.read_text(errors="replace").splitlines():
            stamp = line[1:24].replace(" ", "T").replace(",", ".")  # kopf's local time: UTC here
            if "Pausing operations" in line and start is None:
                start = stamp
            elif "Resuming operations" in line and start is not None:
                spans.setdefault(who, []).append((start, stamp))
                start = None
        if start is not None:
            spans.setdefault(who, []).append((start, "9999"))
    n = 0
    if not audit.exists():
        return 0
    for line in audit.read_text(errors="replace").splitlines():
        with contextlib.suppress(ValueError):
            e = json.loads(line)
            if _write_key(e) is None:
                continue
            who = str(e.get("userAgent", "")).split("/")[0].removeprefix(UA)
            t = str(e.get("stageTimestamp", ""))[:23]
            n += any(a <= t < b for a, b in spans.get(who, []))
    return n


class OpScene:
    """A control plane with the audit log, bench_operator's scene in it, and kubelet OOM kills."""

    def __init__(self, work: Path, name: str, args: argparse.Namespace) -> None:
        self.work = work / f"op-{name}"
        self.work.mkdir(parents=True, exist_ok=True)
        self.cp = AuditedControlPlane(self.work / "cp", binaries=find_binaries()).start()
        self.ops: list[OperatorProc] = []
        try:
            self._build(args)
        except BaseException:
            self.cp.stop()
            raise

    def _build(self, args: argparse.Namespace) -> None:
        self.kubeconfig = self.cp.kubeconfig
        self.rest: Rest = connect(str(self.kubeconfig))
        apply_crds(Kubectl(Path(self.kubeconfig)))
        sargs = argparse.Namespace(namespaces=10, workloads=args.op_pods // 10, pods_per_workload=10,
                                   nodes=50, noise=0, threads=8)  # fmt: skip
        self.scene = Scene(self.rest, sargs)
        self.scene.build()
        self.ooms = self._kubelet_ooms(every=20)

    def _kubelet_ooms(self, every: int) -> int:
        finished = (datetime.now(UTC) - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        pods = [p for p in self.scene.pods if p["metadata"]["uid"] in self.scene.pod_workload][::every]

        def oom(p: dict[str, Any]) -> bool:
            st = container_status("app", restart_count=1, last_terminated={
                "exitCode": 137, "reason": "OOMKilled", "startedAt": "2026-01-01T00:00:00Z",
                "finishedAt": finished, "containerID": "containerd://" + "ab" * 32})  # fmt: skip
            ns, name = p["metadata"]["namespace"], p["metadata"]["name"]
            resp = self.rest.request("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}/status",
                                     {"status": running_pod_status([st])},
                                     content_type="application/merge-patch+json")  # fmt: skip
            return resp.ok

        return sum(parallel(oom, pods, 8))

    def operator(self, name: str, priority: int) -> OperatorProc:
        op = OperatorProc(Path(self.kubeconfig), "", self.work / f"operator-{name}.log", name=name,
                          extra=["--all-namespaces", "--peering", "oomsight", "--priority", str(priority),
                                 "--debounce", "1"])  # fmt: skip
        self.ops.append(op.start())
        return op

    def writes(self) -> int:
        return count_writes(self.cp.audit_log)

    def wait_writes(self, n: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            w = self.writes()
            if w >= n:
                return w
            time.sleep(0.05)
        raise RuntimeError(f"the operator made fewer than {n} writes in {timeout:.0f} s")

    def done(self) -> tuple[bool, int]:
        """(every status converged, pods without their annotation)."""
        ok = converged(self.rest, self.scene)
        return ok, len(self.scene.pod_workload) - annotated(self.rest, self.scene)

    def settle(self, since: float, timeout: float) -> tuple[int, float | None]:
        """Poll until converged: (lost, seconds since ``since``); lost = pods + policies not there."""
        deadline = time.monotonic() + timeout
        lost = -1
        while time.monotonic() < deadline:
            # bench_operator's reads exit on an HTTP error (e.g. 429 while the API server's storage
            # initializes after a restart): here that is a poll to repeat.
            with contextlib.suppress(Exception, SystemExit):
                ok, missing = self.done()
                if ok and missing == 0:
                    return 0, time.monotonic() - since
                lost = missing + (0 if ok else self.unconverged())
            time.sleep(1.0)
        return lost, None

    def unconverged(self) -> int:
        n = 0
        for ns in self.scene.namespaces:
            items = self.rest.request(
                "GET", f"/apis/oomsight.io/v1alpha1/namespaces/{ns}/memorypolicies"
            ).body.get("items", [])
            for pol in items:
                want = self.scene.expected[(ns, pol["metadata"]["name"])]
                st = pol.get("status") or {}
                got = {(w["kind"], w["name"]) for w in st.get("workloads") or []}
                n += int(st.get("podsObserved") != len(want) * 10 or got != want)
        return n

    def close(self) -> None:
        for op in self.ops:
            with contextlib.suppress(Exception):
                if op.proc is not None and op.proc.poll() is None:
                    op.proc.send_signal(signal.SIGCONT)
                op.stop(timeout=10)
        self.cp.stop()


def _row(name: str, fault: str, s: OpScene, ended: float, args: argparse.Namespace,
         settle_wait: float = 15.0) -> dict[str, Any]:  # fmt: skip
    lost, conv = s.settle(ended, args.op_settle)
    time.sleep(settle_wait)  # a write made twice after convergence shows up now
    t = audit_tally(s.cp.audit_log)
    errors = sum(ln.count("Traceback") for op in s.ops for ln in [op.log_path.read_text(errors="replace")])
    note = (
        f"{len(s.scene.pod_workload)} Pods, {len(s.scene.expected)} policies, {s.ooms} kubelet OOM kills; "
        f"writes by kind {t['by_kind']}; repeated by kind {t['repeated_by_kind'] or 0}; "
        f"objects written by two replicas {t['both']}; 409 Conflicts answered to the operator "
        f"{t['conflicts']}; writes by a paused replica "
        f"{paused_writes(s.cp.audit_log, {op.name: op.log_path for op in s.ops})}; "
        f"{errors} tracebacks in the operator logs"
        + (f"; repeated e.g. {t['examples'][:2]}" if t["examples"] else "")
    )
    return {"row": name, "fault": fault, "writes": t["writes"], "lost": lost, "dup": t["repeated"],
            "stray": 0, "kills": 0, "reported": 0, "recover_s": conv, "note": note,
            "audit": str(s.cp.audit_log)}  # fmt: skip


def with_scene(name: str, body: Callable[[OpScene], tuple[str, float]]
               ) -> Callable[[dict[str, Any], argparse.Namespace], dict[str, Any]]:  # fmt: skip
    def row(ctx: dict[str, Any], args: argparse.Namespace) -> dict[str, Any]:
        s = OpScene(Path(args.op_work) if args.op_work else ctx["work"], name, args)
        try:
            s.args = args  # type: ignore[attr-defined]
            fault, ended = body(s)
            return _row(name, fault, s, ended, args)
        finally:
            s.close()

    return row


def op_sigkill(s: OpScene) -> tuple[str, float]:
    args = s.args  # type: ignore[attr-defined]
    a = s.operator("op-a", priority=200)
    at = s.wait_writes(args.op_kill_after, 300)
    assert a.proc is not None
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    killed_at = s.writes()
    time.sleep(2)
    s.operator("op-b", priority=100)
    return (f"operator SIGKILLed after {at} writes ({killed_at} landed), restarted 2 s later "
            "(lower priority)"), time.monotonic()  # fmt: skip


def op_peering(s: OpScene) -> tuple[str, float]:
    args = s.args  # type: ignore[attr-defined]
    a = s.operator("op-a", priority=200)
    time.sleep(1)
    b = s.operator("op-b", priority=100)
    at = s.wait_writes(args.op_kill_after, 300)
    assert a.proc is not None and b.proc is not None
    a.proc.send_signal(signal.SIGSTOP)
    t_stop = time.monotonic()
    b_before = count_writes(s.cp.audit_log, UA + "op-b")
    # The standby acts once the stopped leader's peering record is older than its lifetime.
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and count_writes(s.cp.audit_log, UA + "op-b") <= b_before:
        time.sleep(0.5)
    took_over = time.monotonic() - t_stop
    time.sleep(5)
    a.proc.send_signal(signal.SIGCONT)  # the paused leader comes back while the standby acts
    time.sleep(10)
    a.proc.send_signal(signal.SIGKILL)
    a.proc.wait()
    return (f"2 replicas; active SIGSTOPped after {at} writes, standby took over in {took_over:.0f} s, "
            "stopped one resumed 10 s, then SIGKILLed"), time.monotonic()  # fmt: skip


def op_apiserver(s: OpScene) -> tuple[str, float]:
    args = s.args  # type: ignore[attr-defined]
    s.operator("op-a", priority=200)
    at = s.wait_writes(args.op_kill_after, 300)
    s.cp.stop_apiserver()
    time.sleep(args.outage)
    s.cp.start_apiserver()
    return f"kube-apiserver stopped for {args.outage:g} s after {at} operator writes", time.monotonic()


OPERATOR_ROWS: dict[str, Callable[[dict[str, Any], argparse.Namespace], dict[str, Any]]] = {
    "op-sigkill": with_scene("op-sigkill", op_sigkill),
    "op-peering": with_scene("op-peering", op_peering),
    "op-apiserver": with_scene("op-apiserver", op_apiserver),
}


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--op-work", help="keep the operator rows' audit and operator logs under this directory")
    ap.add_argument("--op-settle", type=float, default=420.0, help="seconds allowed to converge")
    ap.add_argument("--op-pods", type=int, default=5000, help="Pods of the operator rows")
    ap.add_argument("--op-kill-after", type=int, default=1500,
                    help="operator writes made before the fault")  # fmt: skip


def print_operator_table(results: list[dict[str, Any]]) -> None:
    rows = [r for r in results if "writes" in r]
    if not rows:
        return
    print()
    print(f"| {'what was tried (operator)':100} | writes | lost | repeated | converged after |")
    print(f"|{'-' * 102}|-------:|-----:|---------:|----------------:|")
    for r in rows:
        conv = "never" if r.get("recover_s") is None else f"{r['recover_s']:.1f} s"
        what = r["row"] + ": " + r["fault"]
        print(f"| {what:100} | {r['writes']:6} | {r['lost']:4} | {r['dup']:8} | {conv:>15} |")
