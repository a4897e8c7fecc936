"""``resource_version``: the version an object (or a list) carries, as the fenced writes send it back."""

from __future__ import annotations

from typing import Any

import pytest

from oomsight.kube.rest import resource_version


@pytest.mark.parametrize(
    ("obj", "want"),
    [
        ({"metadata": {"name": "p", "resourceVersion": "4711"}}, "4711"),
        ({"kind": "PodList", "metadata": {"resourceVersion": "90", "continue": ""}, "items": []}, "90"),
        ({"metadata": {"resourceVersion": 12}}, "12"),  # a number, as a hand-built body might hold
        ({"metadata": {"name": "p"}}, ""),
        ({"metadata": {"resourceVersion": None}}, ""),
        ({"metadata": {"resourceVersion": ""}}, ""),
        ({"metadata": None}, ""),
        ({}, ""),
    ],
)
def test_resource_version(obj: dict[str, Any], want: str) -> None:
    assert resource_version(obj) == want


def test_empty_version_leaves_room_for_a_fallback() -> None:
    """An answer without a version keeps the one known before (``or``), one with a version replaces it."""
    assert (resource_version({"metadata": {}}) or "41") == "41"
    assert (resource_version({"metadata": {"resourceVersion": "42"}}) or "41") == "42"
