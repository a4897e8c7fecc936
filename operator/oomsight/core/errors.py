"""The project's exception family.

Every failure a user can cause ends as one line: ``what went wrong`` plus ``what to do``.
Adapters translate OS and API errors into these at the boundary (see ``oomsight.host.errors``);
the CLI prints ``str(err)`` and exits non-zero, never a traceback.
"""

from __future__ import annotations


class OomsightError(Exception):
    """Base class. ``hint`` says what the user should do about it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}; {self.hint}" if self.hint else self.message


class ParseError(OomsightError):
    """Text that does not have the shape a kernel file or log is expected to have."""


class UsageError(OomsightError):
    """A bad flag, argument or configuration value."""
