"""Where hack/ and bench/ keep slow builds, and the lock that keeps two runs from building one twice.

Every cached part lives under ``$XDG_CACHE_HOME/oomsight/<part>`` (``~/.cache`` by default), outside
the repository, so a fresh clone reuses what an earlier run built. A part may name an environment
variable that points it elsewhere (``OOMSIGHT_ENVTEST_CACHE``, ``OOMSIGHT_IMAGE_CACHE``, ...).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path


def cache_dir(part: str, override_env: str = "") -> Path:
    """``$<override_env>`` when set, else ``$XDG_CACHE_HOME/oomsight/<part>``."""
    override = os.environ.get(override_env) if override_env else None
    if override:
        return Path(override)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "oomsight" / part


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (created with its parents), so parallel runs or sessions
    never build the same cached part at once; the second one waits, then finds it built."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
