"""The shared Finding type: id and severity are validated, JSON shape is stable."""

from __future__ import annotations

import pytest

from oomsight.core.findings import Finding, evidence, sort_findings, worst


def test_as_dict_shape() -> None:
    f = Finding("swap-on", "info", "Swap is on: 2.0 GiB.", evidence({"swap_total_bytes": 2 << 30}), "x")
    assert f.as_dict() == {
        "id": "swap-on",
        "severity": "info",
        "message": "Swap is on: 2.0 GiB.",
        "evidence": {"swap_total_bytes": str(2 << 30)},
        "fix": "x",
    }


@pytest.mark.parametrize("bad", ["Swap", "swap_on", "-swap", "swap--on", ""])
def test_id_must_be_kebab(bad: str) -> None:
    with pytest.raises(ValueError, match="kebab-case"):
        Finding(bad, "info", "m")


def test_severity_checked() -> None:
    with pytest.raises(ValueError, match="severity"):
        Finding("a", "fatal", "m")  # type: ignore[arg-type]


def test_worst_and_sort() -> None:
    a, b, c = Finding("a", "info", "m"), Finding("b", "critical", "m"), Finding("c", "warning", "m")
    assert worst([a, b, c]) == "critical"
    assert worst([]) is None
    assert [f.id for f in sort_findings([a, b, c])] == ["b", "c", "a"]
