"""The project image, built for real: buildah runs the repository's Dockerfile offline on a local base.

``hack/image`` (``hack/images_lib.py``) makes a bookworm root with mmdebstrap, builds the Dockerfile
with that root as ``BASE`` and the dependency wheels passed in (no network inside the build), and saves
a ``docker-archive`` that containerd imports. These tests run what came out of it: the entry point,
the user, and that the runtime stage carries no build tools.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from realparts import unavailable

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _load_images_lib():
    spec = importlib.util.spec_from_file_location("images_lib", ROOT / "hack" / "images_lib.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["images_lib"] = module
    spec.loader.exec_module(module)
    return module


images_lib = _load_images_lib()


@pytest.fixture(scope="module")
def archive() -> Path:
    try:
        # What hack/image installs (apt-get, as root): on a fresh machine this module runs before the
        # real-node step that would otherwise have installed them.
        images_lib.ensure_tools(log=lambda _m: None)
    except images_lib.ImageError as exc:
        unavailable(f"hack/image could not install its tools: {exc}")
    try:
        return images_lib.project_image(log=lambda _m: None)
    except images_lib.ImageError as exc:
        pytest.fail(f"hack/image could not build the project image: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def container(archive: Path) -> Iterator[str]:
    """A working container of the built image (buildah from), removed afterwards."""
    name = subprocess.run(
        images_lib.buildah_cmd("from", "--quiet", "--pull-never", images_lib.PROJECT_IMAGE),
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    yield name
    subprocess.run(images_lib.buildah_cmd("rm", name), capture_output=True, check=False)


def _run_in(container: str, *command: str, user: str = "") -> subprocess.CompletedProcess[str]:
    extra = ["--user", user] if user else []
    return subprocess.run(
        images_lib.buildah_cmd(
            "run", "--runtime", shutil.which("runc") or "runc", *extra, container, "--", *command
        ),
        capture_output=True,
        text=True,
        check=False,
    )


def test_entrypoint_runs_the_cli_as_the_nonroot_user(archive: Path, container: str) -> None:
    from oomsight import __version__

    config = json.loads(
        subprocess.run(
            images_lib.buildah_cmd("inspect", "--type", "image", images_lib.PROJECT_IMAGE),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )["OCIv1"]["config"]
    assert config["Entrypoint"] == ["oomsight"]
    assert config["User"] == "65532:65532"
    proc = _run_in(container, *config["Entrypoint"], "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"oomsight {__version__}"
    whoami = _run_in(container, "id", "-u")
    assert whoami.stdout.strip() == "65532"
    # kopf (the operator) names its peering identity with getpass.getuser(): the uid needs a name.
    user = _run_in(container, "python3", "-c", "import getpass; print(getpass.getuser())", user="65532:65532")
    assert user.returncode == 0, user.stderr
    assert user.stdout.strip() == "nonroot"


def test_the_image_runs_this_trees_code_and_a_real_subcommand(container: str) -> None:
    """The installed package is the tree's (same version of a module), and ``explain`` works in it."""
    source = (ROOT / "operator" / "oomsight" / "core" / "oomreport.py").read_bytes()
    proc = _run_in(
        container,
        "python3",
        "-c",
        "import hashlib, oomsight.core.oomreport as m;"
        "print(hashlib.sha256(open(m.__file__, 'rb').read()).hexdigest())",
    )
    assert proc.returncode == 0, proc.stderr
    import hashlib

    assert proc.stdout.strip() == hashlib.sha256(source).hexdigest()
    bad = _run_in(container, "oomsight", "explain", "/nonexistent.log")
    assert bad.returncode != 0
    # buildah adds its own "Error: while running runtime: exit status N" after the program's output.
    ours = [
        line
        for line in bad.stderr.splitlines()
        if line and not line.startswith("Error: while running runtime")
    ]
    assert "Traceback" not in bad.stderr
    assert len(ours) == 1 and ours[0].startswith("oomsight explain: "), bad.stderr


def test_runtime_stage_has_no_build_tools(container: str) -> None:
    proc = _run_in(container, "sh", "-c", "ls /opt/oomsight/bin; test -e /build && echo HAS_BUILD || true")
    assert proc.returncode == 0, proc.stderr
    names = proc.stdout.split()
    assert "oomsight" in names and "kubectl-oomsight" in names
    assert not any(n.startswith("pip") for n in names), names
    assert "HAS_BUILD" not in names


def test_cache_key_follows_the_build_context(tmp_path: Path) -> None:
    """Same tree, same key; a changed source file, a changed Dockerfile: a new key (a rebuild)."""
    tree = tmp_path / "tree"
    for name in images_lib.CONTEXT_FILES:
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, tree / name)
    shutil.copytree(
        ROOT / "operator", tree / "operator", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
    )
    key = images_lib.project_key(tree)
    assert images_lib.project_key(tree) == key
    (tree / "operator" / "oomsight" / "__pycache__").mkdir(exist_ok=True)
    (tree / "operator" / "oomsight" / "__pycache__" / "x.pyc").write_bytes(b"bytecode")
    assert images_lib.project_key(tree) == key, "bytecode is not part of the build context"
    with (tree / "operator" / "oomsight" / "core" / "quantity.py").open("a") as f:
        f.write("\n# changed\n")
    changed = images_lib.project_key(tree)
    assert changed != key
    with (tree / "Dockerfile").open("a") as f:
        f.write("\n# changed\n")
    assert images_lib.project_key(tree) not in (key, changed)
