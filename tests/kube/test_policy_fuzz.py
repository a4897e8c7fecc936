"""Generated MemoryPolicy objects against the real kube-apiserver (server-side dry-run).

Every object is either accepted, and then usable by the operator's own reading of it, or rejected with
every cause naming its field. ``bench/fuzz_policies.py`` runs 10,000 and reconciles a sample through a
real operator; this runs a few hundred in every test run.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from kube import policykit
from kube.agentkit import rest_for
from kube.crdkit import apply_crds
from kube.kubehelpers import Kubectl
from oomsight.kube import crd

pytestmark = [pytest.mark.kube]


def test_generated_policies_are_accepted_and_usable_or_rejected_naming_the_field(
    kubeconfig: Path, kubectl: Kubectl, namespace: str
) -> None:
    apply_crds(kubectl)
    rest = rest_for(kubeconfig)
    path = f"/apis/{crd.API_VERSION}/namespaces/{namespace}/{crd.MEMORY_POLICY_PLURAL}"
    verdicts = []
    for obj in policykit.generate(300, 7):
        resp = rest.request("POST", path, obj, query={"dryRun": "All", "fieldValidation": "Strict"})
        verdicts.append(policykit.judge(obj, resp.status, resp.body))
    kinds = Counter(v["verdict"] for v in verdicts)
    problems = [
        (v["verdict"], v["spec"], v["detail"])
        for v in verdicts
        if v["verdict"] not in ("accepted", "rejected")
    ]
    assert problems == []
    assert kinds["accepted"] >= 20 and kinds["rejected"] >= 20, kinds


def test_the_verdict_can_fail() -> None:
    """A rejection that names no field, and an accepted spec the operator cannot use, are problems."""
    obj = policykit.generate(1, 0)[0]
    assert (
        policykit.judge(obj, 422, {"message": "invalid", "details": {"causes": [{"message": "bad"}]}})[
            "verdict"
        ]
        == "rejected-without-field"
    )
    body = {
        "metadata": {"name": "x"},
        "spec": {"selector": {"matchExpressions": [{"key": "a", "operator": "In"}]}},
    }
    assert policykit.judge(obj, 201, body)["verdict"] == "accepted-but-operator-refuses"
