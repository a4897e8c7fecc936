"""Smoke kernels (``OOMSIGHT_VM_SMOKE``) run only the smoke scenarios: the other (kernel, scenario)
tests are deselected, not skipped, so a run never reports a skip for a scenario it chose not to run."""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from vm.test_vm_v2 import SMOKE, SMOKE_KERNELS

    if not SMOKE_KERNELS:
        return
    keep, drop = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        params = callspec.params if callspec is not None else {}
        series = params.get("guest")
        in_v2 = item.module is not None and item.module.__name__.endswith("test_vm_v2")
        if in_v2 and series in SMOKE_KERNELS:
            name = params.get("name")
            uses = [name] if name else list(getattr(item.function, "scenarios", ()))
            if any(n not in SMOKE for n in uses):
                drop.append(item)
                continue
        keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
