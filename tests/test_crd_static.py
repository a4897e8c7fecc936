"""The CRD YAML and oomsight.kube.crd agree, and a full NodeMemoryReport fits its size budget.

The API server's own verdicts (Established, accepted, rejected with which message) are in
tests/kube/test_crds.py; this file needs no cluster.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from oomsight.kube import crd
from reportsample import full_report

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / "crds" / name).read_text())


def test_crd_files_listed_in_the_module_exist() -> None:
    assert sorted(crd.CRD_FILES) == sorted(p.name for p in (ROOT / "crds").glob("*.yaml"))
    for name in crd.CRD_FILES:
        doc = _load(name)
        assert doc["metadata"]["name"] + ".yaml" == name


def test_names_match_the_module() -> None:
    mp = _load("memorypolicies.oomsight.io.yaml")["spec"]
    nmr = _load("nodememoryreports.oomsight.io.yaml")["spec"]
    for spec, kind, plural, short, scope in (
        (mp, crd.MEMORY_POLICY_KIND, crd.MEMORY_POLICY_PLURAL, crd.MEMORY_POLICY_SHORT, "Namespaced"),
        (nmr, crd.NODE_REPORT_KIND, crd.NODE_REPORT_PLURAL, crd.NODE_REPORT_SHORT, "Cluster"),
    ):
        assert spec["group"] == crd.GROUP
        assert [v["name"] for v in spec["versions"]] == [crd.VERSION]
        assert spec["names"]["kind"] == kind
        assert spec["names"]["plural"] == plural
        assert spec["names"]["shortNames"] == [short]
        assert spec["names"]["categories"] == [crd.CATEGORY]
        assert spec["scope"] == scope
        assert spec["versions"][0]["subresources"] == {"status": {}}


def _prop(schema: dict[str, Any], path: str) -> dict[str, Any]:
    node = schema
    for part in path.split("."):
        node = node["items"] if part == "[]" else node["properties"][part]
    return node


def test_list_bounds_match_the_module() -> None:
    nmr = _load("nodememoryreports.oomsight.io.yaml")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    mp = _load("memorypolicies.oomsight.io.yaml")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _prop(nmr, "status.containers")["maxItems"] == crd.MAX_REPORT_CONTAINERS
    assert _prop(nmr, "status.containers.[].peaks")["maxItems"] == crd.MAX_REPORT_PEAKS
    assert _prop(nmr, "status.findings")["maxItems"] == crd.MAX_REPORT_FINDINGS
    assert _prop(nmr, "status.incidents")["maxItems"] == crd.MAX_REPORT_INCIDENTS
    assert _prop(mp, "status.workloads")["maxItems"] == crd.MAX_POLICY_WORKLOADS
    assert _prop(mp, "status.workloads.[].containers")["maxItems"] == crd.MAX_POLICY_CONTAINERS_PER_WORKLOAD


def _unbounded_lists(schema: dict[str, Any], path: str = "") -> list[str]:
    found = []
    if schema.get("type") == "array" and "maxItems" not in schema:
        found.append(path)
    for key, sub in schema.get("properties", {}).items():
        found.extend(_unbounded_lists(sub, f"{path}.{key}"))
    if "items" in schema:
        found.extend(_unbounded_lists(schema["items"], f"{path}[]"))
    return found


def test_every_list_is_bounded() -> None:
    for name in ("memorypolicies.oomsight.io.yaml", "nodememoryreports.oomsight.io.yaml"):
        schema = _load(name)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
        assert not _unbounded_lists(schema), f"{name}: lists without maxItems"


def test_full_report_with_250_containers_fits_256_kib() -> None:
    """Every list at its bound, every string at a realistic worst length (see tests/reportsample.py)."""
    report = full_report("ip-10-0-113-207.eu-west-1.compute.internal")
    size = len(json.dumps(report, separators=(",", ":")))
    assert len(report["status"]["containers"]) == crd.MAX_REPORT_CONTAINERS
    assert size < crd.MAX_REPORT_BYTES, f"full report is {size} bytes"


def test_the_report_builder_caps_lists_at_the_schema_bounds() -> None:
    """oomsight.core.report (pure, so it cannot import kube.crd) must cap at the CRD's maxItems,
    or the API server rejects the agent's status writes."""
    from oomsight.core import report

    assert (report.MAX_CONTAINERS, report.MAX_PEAKS, report.MAX_FINDINGS, report.MAX_INCIDENTS) == (
        crd.MAX_REPORT_CONTAINERS,
        crd.MAX_REPORT_PEAKS,
        crd.MAX_REPORT_FINDINGS,
        crd.MAX_REPORT_INCIDENTS,
    )
    assert report.MAX_BYTES <= crd.MAX_REPORT_BYTES


def test_recommendation_schema_lists_exactly_what_the_engine_reads() -> None:
    """A field the engine reads but the schema lacks is pruned by the API server: set, yet never seen."""
    from oomsight.core.recommend import SPEC_FIELDS

    mp = _load("memorypolicies.oomsight.io.yaml")["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert set(_prop(mp, "spec.recommendation")["properties"]) == set(SPEC_FIELDS)
