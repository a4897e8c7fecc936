"""Generated MemoryPolicy objects against the real kube-apiserver's validation and the real operator.

Every generated object (hypothesis, ``tests/kube/policykit.py``: valid, boundary, wrong-typed and
unknown values for every field of ``crds/memorypolicies.oomsight.io.yaml``) is sent to the API server
with server-side dry-run (``?dryRun=All``: full validation, defaulting and CEL rules, nothing stored).
Then, for each:

- **rejected** (422): every cause must name the field (``spec.…``) in its ``field`` or message;
- **accepted**: the object as the server returned it (defaults applied) goes through the operator's own
  reading (``core.policy.parse_policy``): it must be usable (no ``error``), or the CRD lets through
  what the operator refuses.

A sample of the accepted ones (``--reconcile``) is then created for real in a namespace where a real
``oomsight operator`` runs, with one Pod; each must get a ``Ready`` condition whose reason is not one
of the operator's refusals (BadRecommendationSettings, UnsupportedSelector; SelectorMatchesNothing is
a state, not an error), and the operator's log must hold no ERROR/Traceback.

    .venv/bin/python bench/fuzz_policies.py --count 10000 --reconcile 100
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests"), str(ROOT / "hack"), str(ROOT / "operator")]

from kube import policykit  # noqa: E402
from kube.agentkit import rest_for  # noqa: E402
from nodekit import control_plane  # noqa: E402
from oomsight.core.policy import REASON_BAD_SETTINGS, REASON_SELECTOR_UNSUPPORTED  # noqa: E402
from oomsight.kube import crd  # noqa: E402

ERROR_REASONS = (REASON_BAD_SETTINGS, REASON_SELECTOR_UNSUPPORTED)
"""Ready=False reasons that mean the operator could not use the policy (the others are states such as
SelectorMatchesNothing)."""
from oomsight.kube.rest import Rest  # noqa: E402


def ensure_policy_crd(rest: Rest) -> None:
    import yaml

    body = yaml.safe_load((ROOT / "crds" / "memorypolicies.oomsight.io.yaml").read_text())
    resp = rest.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", body)
    assert resp.status in (200, 201, 409), resp
    deadline = time.monotonic() + 60
    while not rest.request("GET", f"/apis/{crd.API_VERSION}/{crd.MEMORY_POLICY_PLURAL}").ok:
        assert time.monotonic() < deadline, "the MemoryPolicy CRD was not served within 60 s"
        time.sleep(0.2)


def make_namespace(rest: Rest, prefix: str) -> str:
    ns = f"{prefix}-{uuid.uuid4().hex[:6]}"
    body = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}}
    assert rest.request("POST", "/api/v1/namespaces", body).ok
    return ns


def dry_run_all(rest: Rest, ns: str, objects: list[dict[str, Any]], jobs: int) -> list[dict[str, Any]]:
    path = f"/apis/{crd.API_VERSION}/namespaces/{ns}/{crd.MEMORY_POLICY_PLURAL}"

    def one(obj: dict[str, Any]) -> dict[str, Any]:
        for _ in range(5):
            resp = rest.request("POST", path, obj, query={"dryRun": "All", "fieldValidation": "Strict"})
            if resp.status not in (0, 429, 500, 503, 504):
                break
            time.sleep(0.5)
        return policykit.judge(obj, resp.status, resp.body)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return list(pool.map(one, objects))


def reconcile_sample(
    kubeconfig: str, rest: Rest, accepted: list[dict[str, Any]], work: Path
) -> dict[str, Any]:
    from kube.kubehelpers import Kubectl
    from kube.opkit import OperatorProc, create_peering, status_of, wait_for

    kubectl = Kubectl(Path(kubeconfig))
    ns = make_namespace(rest, "policy-fuzz-op")
    create_peering(kubectl, ns)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "target", "namespace": ns, "labels": {"app": "web"}},
        "spec": {
            "nodeName": "policy-fuzz-node",
            "containers": [
                {"name": "app", "image": "registry.k8s.io/pause:3.10",
                 "resources": {"requests": {"memory": "64Mi"}, "limits": {"memory": "128Mi"}}}
            ],
        },
    }  # fmt: skip
    assert rest.request("POST", f"/api/v1/namespaces/{ns}/pods", pod).ok
    op = OperatorProc(Path(kubeconfig), ns, work / "operator.log").start()
    names = []
    try:
        for i, obj in enumerate(accepted):
            body = json.loads(json.dumps(obj))  # apiVersion, kind and spec as the server returned them
            body["metadata"] = {"name": f"p{i:04d}", "namespace": ns}
            resp = rest.request(
                "POST", f"/apis/{crd.API_VERSION}/namespaces/{ns}/{crd.MEMORY_POLICY_PLURAL}", body
            )
            assert resp.ok, resp
            names.append(body["metadata"]["name"])
        bad: dict[str, Any] = {}
        reasons: Counter[str] = Counter()

        def settled() -> bool:
            bad.clear()
            reasons.clear()
            pending = 0
            for name in names:
                st = status_of(kubectl, ns, name)
                ready = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), None)
                if ready is None:
                    pending += 1
                    continue
                reasons[f"{ready.get('status')}/{ready.get('reason')}"] += 1
                if ready.get("reason") in ERROR_REASONS:
                    bad[name] = ready
            return pending == 0

        wait_for(settled, 600, f"a Ready condition on all {len(names)} policies", every=2.0)
        log = op.log()
        errors = [ln for ln in log.splitlines() if "ERROR" in ln or "Traceback" in ln]
        return {
            "reconciled": len(names),
            "not_ready": bad,
            "reasons": dict(reasons),
            "operator_errors": errors[:10],
            "alive": op.alive(),
        }
    finally:
        op.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kubeconfig", help="use this control plane instead of starting one")
    ap.add_argument("--count", type=int, default=10_000)
    ap.add_argument("--reconcile", type=int, default=100, help="accepted objects created for real")
    ap.add_argument("--jobs", type=int, default=8, help="concurrent dry-run requests")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    with control_plane(args.kubeconfig, "bench-policy-fuzz-") as (work, kubeconfig):
        rest = rest_for(kubeconfig)
        ensure_policy_crd(rest)
        from kube.crdkit import apply_crds
        from kube.kubehelpers import Kubectl

        apply_crds(Kubectl(Path(kubeconfig)))
        t0 = time.monotonic()
        objects = policykit.generate(args.count, args.seed)
        t1 = time.monotonic()
        ns = make_namespace(rest, "policy-fuzz")
        verdicts = dry_run_all(rest, ns, objects, args.jobs)
        t2 = time.monotonic()
        kinds = Counter(v["verdict"] for v in verdicts)
        fields = Counter(f for v in verdicts if v["verdict"] == "rejected" for f in v["fields"])
        print(
            f"policies: {len(objects)} generated in {t1 - t0:.0f} s, dry-run against kube-apiserver in "
            f"{t2 - t1:.0f} s ({len(objects) / (t2 - t1):.0f}/s)"
        )
        for k in ("accepted", "rejected", "accepted-but-operator-refuses", "rejected-without-field",
                  "server-error"):  # fmt: skip
            print(f"policies: {k:32} {kinds.get(k, 0):>6}")
        print("policies: rejections by field: " + ", ".join(f"{f} {n}" for f, n in fields.most_common(12)))
        for v in [v for v in verdicts if v["verdict"] not in ("accepted", "rejected")][:8]:
            print(f"policies: PROBLEM {v['verdict']}: {json.dumps(v['spec'])[:300]} -> {v['detail'][:300]}")
        accepted = [v["object"] for v in verdicts if v["verdict"] == "accepted"]
        rec = {"reconciled": 0, "not_ready": {}, "operator_errors": [], "alive": True}
        if args.reconcile and accepted:
            sample = accepted[:: max(1, len(accepted) // args.reconcile)][: args.reconcile]
            t3 = time.monotonic()
            rec = reconcile_sample(kubeconfig, rest, sample, work)
            print(
                f"policies: {rec['reconciled']} accepted policies reconciled by a real operator in "
                f"{time.monotonic() - t3:.0f} s: Ready {rec.get('reasons')}; "
                f"{len(rec['not_ready'])} refused, "
                f"{len(rec['operator_errors'])} operator error lines, operator alive: {rec['alive']}"
            )
            for name, cond in list(rec["not_ready"].items())[:5]:
                print(f"policies: REFUSED {name}: {cond}")
            for ln in rec["operator_errors"][:5]:
                print(f"policies: OPERATOR {ln}")
    problems = sum(n for k, n in kinds.items() if k not in ("accepted", "rejected"))
    problems += len(rec["not_ready"]) + len(rec["operator_errors"]) + (0 if rec["alive"] else 1)
    print(
        json.dumps(
            {"generated": len(objects), **kinds, "reconciled": rec["reconciled"], "problems": problems}
        )
    )
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
