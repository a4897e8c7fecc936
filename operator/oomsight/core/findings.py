"""A finding: one thing worth telling a human about a node, a cgroup or an OOM kill.

Shared by the node checks (``oomsight node``), the diagnosis, the agent's Node Events and the
operator's Node conditions, so that the same problem has the same ``id`` everywhere and users can
alert on it. A finding says what is wrong (``message``, one sentence with the numbers), why we
think so (``evidence``, the raw facts it was derived from) and what to consider (``fix``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

Severity = Literal["info", "warning", "critical"]

SEVERITIES: tuple[Severity, ...] = ("info", "warning", "critical")
"""In increasing order of urgency."""

_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*$")


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding. ``id`` is stable kebab-case (users alert on it; never reword it)."""

    id: str
    severity: Severity
    message: str
    """One sentence a human can act on, with the numbers."""
    evidence: tuple[tuple[str, str], ...] = ()
    """(key, value) strings the finding was derived from, e.g. ("kernel", "3.10.0-957.el7.x86_64")."""
    fix: str = ""
    """What to consider doing about it; empty for purely informational findings."""

    def __post_init__(self) -> None:
        if not _ID.match(self.id):
            raise ValueError(f"finding id must be kebab-case, got {self.id!r}")
        if self.severity not in SEVERITIES:
            raise ValueError(f"finding severity must be one of {SEVERITIES}, got {self.severity!r}")

    @property
    def rank(self) -> int:
        """0 for info, 1 for warning, 2 for critical: sort keys and "worst of" comparisons."""
        return SEVERITIES.index(self.severity)

    def as_dict(self) -> dict[str, object]:
        """The JSON shape: ``id``, ``severity``, ``message``, ``evidence`` (an object), ``fix``."""
        return {
            "id": self.id,
            "severity": self.severity,
            "message": self.message,
            "evidence": dict(self.evidence),
            "fix": self.fix,
        }


def evidence(items: Mapping[str, object] | Iterable[tuple[str, object]]) -> tuple[tuple[str, str], ...]:
    """Build an ``evidence`` tuple from a mapping or pairs, turning every value into a string."""
    pairs = items.items() if isinstance(items, Mapping) else items
    return tuple((str(k), str(v)) for k, v in pairs)


def worst(findings: Iterable[Finding]) -> Severity | None:
    """The highest severity among ``findings``, or None when there are none."""
    ranks = [f.rank for f in findings]
    return SEVERITIES[max(ranks)] if ranks else None


def sort_findings(findings: Iterable[Finding]) -> tuple[Finding, ...]:
    """Most urgent first; ties keep their order (stable)."""
    return tuple(sorted(findings, key=lambda f: -f.rank))
