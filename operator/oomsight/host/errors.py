"""The host adapters' exception family: OS errors translated once, at the boundary.

psutil's model: a small family that says what was wrong and what to do. Callers that sweep many
cgroups or processes catch ``Vanished`` per item, skip it and count it (a cgroup removed or a process
exited between listing and reading is normal on a busy node, never an error to show); the others stop
the command with one line.
"""

from __future__ import annotations

import errno

from oomsight.core.errors import OomsightError


class HostError(OomsightError):
    """Something on this node could not be read. ``path`` names what, when a file is to blame."""

    def __init__(self, message: str, hint: str = "", path: str | None = None) -> None:
        super().__init__(message, hint)
        self.path = path


class HostAccessDenied(HostError):
    """Permission denied: the message names the file, the hint the privilege or mount that is needed."""


class Vanished(HostError):
    """A cgroup or process disappeared between listing and reading it (ENOENT/ENODEV/ESRCH)."""


class WrongHostRoot(HostError):
    """The configured host root does not look like a Linux root (no cgroup or /proc mount under it)."""


VANISHED_ERRNOS = frozenset({errno.ENOENT, errno.ENODEV, errno.ESRCH})
"""Errnos that mean "it is gone": a removed cgroup directory returns ENOENT or ENODEV on read."""


def translate_oserror(err: OSError, path: str, what: str = "read") -> HostError:
    """Map an ``OSError`` raised while touching ``path`` to the project's exception for it."""
    if err.errno in VANISHED_ERRNOS:
        return Vanished(f"{path} vanished", "it was removed while being read; this is normal", path=path)
    if err.errno in (errno.EACCES, errno.EPERM):
        return HostAccessDenied(
            f"permission denied to {what} {path}",
            "run as root, or in a pod with the host's /sys/fs/cgroup and /proc mounted read-only "
            "under --host-root (e.g. /host) and CAP_DAC_READ_SEARCH",
            path=path,
        )
    return HostError(f"cannot {what} {path}: {err.strerror or err}", path=path)
