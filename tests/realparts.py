"""Real components a test needs (a binary, a capability, a kernel interface) and what happens without one.

On a developer's machine a missing part skips the test with the reason; under ``CI=true`` it fails it,
so CI never passes by silently skipping the real-kernel or real-API tests.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

import pytest


def in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() == "true"


def unavailable(what: str) -> NoReturn:
    """Skip with ``what`` (the missing part and how to get it); fail instead under ``CI=true``."""
    if in_ci():
        pytest.fail(f"{what}; CI=true requires it", pytrace=False)
    pytest.skip(what)


def require_binary(name: str, hint: str) -> str:
    """The path of executable ``name``, or unavailable with ``hint`` (what provides it)."""
    path = shutil.which(name)
    if path is None:
        unavailable(f"{name} is not installed ({hint})")
    return path
