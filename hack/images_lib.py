"""Container images built on this machine, with no registry and no Docker engine.

Stdlib only (like ``envtest_lib``), so ``hack/image`` works before the project is installed and tests
load this file by path.

- The **base**: a Debian bookworm root made by ``mmdebstrap`` (``python3`` 3.11 and ``python3-venv``,
  the same Python minor as the Dockerfile's pinned ``python:3.11.x-slim-bookworm``), committed as a
  local image by buildah. Cached as a tarball, keyed on the package list and the recipe.
- The **project image** ``localhost/oomsight:dev``: the repository's own ``Dockerfile`` built by buildah
  with ``BASE`` set to that root, offline: the project's dependency wheels are fetched on the host into a
  wheelhouse (cached, keyed on ``pyproject.toml``) and handed to the build through ``PIP_FIND_LINKS`` +
  ``PIP_NO_INDEX``, with the build's network switched off. Saved as a ``docker-archive`` tarball that
  ``ctr images import`` reads, keyed on every file the build context holds, so a changed tree rebuilds
  and an unchanged one costs a hash.

Everything lives under ``~/.cache/oomsight/images/`` (``$XDG_CACHE_HOME`` respected,
``OOMSIGHT_IMAGE_CACHE`` replaces it), buildah's own storage included, so nothing here touches the
machine's ``/var/lib/containers``. buildah's storage uses the overlay driver (a working container is
mounted, not copied). Failures raise ``ImageError`` with one line saying what to do.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # hack/ is not a package; loaded by path too
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import cachedir

REPO_ROOT = Path(__file__).resolve().parent.parent
PROJECT_IMAGE = "localhost/oomsight:dev"
BASE_IMAGE = "localhost/oomsight-base"
BASE_SUITE = "bookworm"
BASE_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# mmdebstrap options that keep the root small: no documentation, manual pages or translations.
BASE_EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/locale/*", "/usr/share/info/*")
# Part of every cache key: change it whenever the way an image is made changes.
RECIPE = "mmdebstrap minbase + buildah overlay, offline wheelhouse, docker-archive v1"
DEBIAN_MIRROR = "http://deb.debian.org/debian"
# The build context, as .dockerignore admits it (tests/test_dockerfile.py checks the two agree).
CONTEXT_FILES = ("Dockerfile", ".dockerignore", "pyproject.toml", "README.md")
CONTEXT_DIRS = ("operator",)

Log = Callable[[str], None]


class ImageError(Exception):
    """An image could not be built, saved or imported; the message says what to do."""


def _stderr_log(message: str) -> None:
    print(f"image: {message}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    """``$OOMSIGHT_IMAGE_CACHE``, else ``$XDG_CACHE_HOME/oomsight/images`` (``~/.cache`` by default)."""
    return cachedir.cache_dir("images", "OOMSIGHT_IMAGE_CACHE")


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """An exclusive flock, so two test runs or sessions never build the same thing twice at once."""
    with cachedir.locked(cache_root() / f".{name}.lock"):
        yield


def _need(binary: str, package: str) -> str:
    found = shutil.which(binary)
    if found is None:
        raise ImageError(f"{binary} is not installed: apt-get install {package}")
    return found


def ensure_tools(log: Log = _stderr_log) -> None:
    """Install buildah, mmdebstrap and runc (``buildah run``'s runtime) from Debian's packages when
    missing (root only)."""
    missing = [
        pkg
        for binary, pkg in (("buildah", "buildah"), ("mmdebstrap", "mmdebstrap"), ("runc", "runc"))
        if not shutil.which(binary)
    ]
    if not missing:
        return
    if os.geteuid() != 0:
        raise ImageError(f"{', '.join(missing)} missing and not root: apt-get install {' '.join(missing)}")
    log(f"installing {' '.join(missing)} with apt-get ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd in (
        ["apt-get", "update", "-qq", "-o", "DPkg::Lock::Timeout=600"],
        ["apt-get", "install", "-y", "-qq", "-o", "DPkg::Lock::Timeout=600", *missing],
    ):
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
            raise ImageError(f"{' '.join(cmd[:2])} failed: {last[0]}; install {' '.join(missing)} by hand")


def _run(cmd: list[str], what: str, *, cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    try:
        proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise ImageError(f"cannot run {cmd[0]} ({what}): {exc.strerror}") from exc
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        tail = " | ".join(detail[-3:]) if detail else f"exit status {proc.returncode}"
        raise ImageError(f"{what} failed: {tail}")
    return proc.stdout


def buildah_cmd(*args: str) -> list[str]:
    """buildah with its own storage inside the cache (overlay: a working container costs no copy)."""
    store = cache_root() / "buildah"
    return [
        _need("buildah", "buildah"),
        "--root",
        str(store / "root"),
        "--runroot",
        str(store / "run"),
        "--storage-driver",
        "overlay",
        *args,
    ]


def _digest(*parts: bytes) -> str:
    digest = hashlib.sha256(RECIPE.encode())
    for part in parts:
        digest.update(b"\0" + part)
    return digest.hexdigest()[:16]


def base_key() -> str:
    return _digest(BASE_SUITE.encode(), " ".join(BASE_PACKAGES).encode(), " ".join(BASE_EXCLUDES).encode())


def context_files(root: Path = REPO_ROOT) -> list[Path]:
    """Every file the Dockerfile's build context admits, in a stable order (caches and bytecode left out)."""
    files = [root / name for name in CONTEXT_FILES]
    for top in CONTEXT_DIRS:
        for path in sorted((root / top).rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts and ".egg-info" not in str(path):
                files.append(path)
    return files


def project_key(root: Path = REPO_ROOT) -> str:
    parts: list[bytes] = [base_key().encode()]
    for path in context_files(root):
        parts.append(str(path.relative_to(root)).encode())
        parts.append(path.read_bytes())
    return _digest(*parts)


def _image_exists(ref: str) -> bool:
    proc = subprocess.run(buildah_cmd("inspect", "--type", "image", ref), capture_output=True, check=False)
    return proc.returncode == 0


def base_image(log: Log = _stderr_log) -> str:
    """The local bookworm base image's reference, made (and cached) when missing."""
    ref = f"{BASE_IMAGE}:{BASE_SUITE}-{base_key()}"
    with _locked("base"):
        if _image_exists(ref):
            return ref
        tarball = cache_root() / f"base-{BASE_SUITE}-{base_key()}.tar"
        if not tarball.exists():
            _need("mmdebstrap", "mmdebstrap")
            log(
                f"making a {BASE_SUITE} root with {', '.join(BASE_PACKAGES)} (mmdebstrap, about a minute) ..."
            )
            started = time.monotonic()
            partial = tarball.with_suffix(".partial.tar")
            cmd = [
                "mmdebstrap",
                "--variant=minbase",
                "--include=" + ",".join(BASE_PACKAGES),
                *(f"--dpkgopt=path-exclude={pattern}" for pattern in BASE_EXCLUDES),
                BASE_SUITE,
                str(partial),
                DEBIAN_MIRROR,
            ]
            _run(cmd, "mmdebstrap of the base root")
            partial.rename(tarball)
            log(f"base root made in {time.monotonic() - started:.0f}s ({tarball.stat().st_size >> 20} MiB)")
        container = _run(buildah_cmd("from", "scratch"), "buildah from scratch").strip()
        try:
            _run(buildah_cmd("add", container, str(tarball), "/"), "buildah add of the base root")
            _run(buildah_cmd("config", "--cmd", "python3", container), "buildah config")
            _run(buildah_cmd("commit", "--quiet", container, ref), "buildah commit of the base")
        finally:
            subprocess.run(buildah_cmd("rm", container), capture_output=True, check=False)
        log(f"base image {ref} committed")
    return ref


def wheelhouse(root: Path = REPO_ROOT, log: Log = _stderr_log) -> Path:
    """Wheels of the project's dependencies and build backend, fetched on the host (cached per pyproject)."""
    key = _digest((root / "pyproject.toml").read_bytes(), sys.version.split()[0].encode())
    target = cache_root() / f"wheels-{key}"
    with _locked("wheels"):
        if target.is_dir():
            return target
        log("fetching the dependency wheels (pip wheel on the host) ...")
        partial = Path(tempfile.mkdtemp(prefix="wheels-", dir=cache_root()))
        env = {k: v for k, v in os.environ.items() if k != "PIP_FIND_LINKS"}
        build_backend = ["setuptools>=77", "wheel"]
        _run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "-q",
                "--wheel-dir",
                str(partial),
                str(root),
                *build_backend,
            ],
            "pip wheel of the dependencies",
            env=env,
        )
        for own in partial.glob("oomsight-*.whl"):
            own.unlink()  # built inside the image from the context, never taken from here
        partial.rename(target)
    return target


def project_archive_path(root: Path = REPO_ROOT) -> Path:
    return cache_root() / f"oomsight-{project_key(root)}.tar"


def project_image(root: Path = REPO_ROOT, log: Log = _stderr_log) -> Path:
    """A ``docker-archive`` of ``localhost/oomsight:dev`` from ``root``'s Dockerfile; cached per tree."""
    archive = project_archive_path(root)
    if archive.exists():
        return archive
    ensure_tools(log)
    base = base_image(log)
    wheels = wheelhouse(root, log)
    with _locked("project"):
        if archive.exists():
            return archive
        log(f"building {PROJECT_IMAGE} from {root / 'Dockerfile'} (buildah, offline) ...")
        started = time.monotonic()
        _run(
            buildah_cmd(
                "build",
                "--quiet",
                "--layers=false",
                "--network",
                "none",
                "--isolation",
                "oci",
                "--runtime",
                _need("runc", "runc"),
                "--build-arg",
                f"BASE={base}",
                "--build-arg",
                "PIP_FIND_LINKS=/wheelhouse",
                "--build-arg",
                "PIP_NO_INDEX=1",
                "--volume",
                f"{wheels}:/wheelhouse:ro",
                "--tag",
                PROJECT_IMAGE,
                "--file",
                str(root / "Dockerfile"),
                str(root),
            ),
            "buildah build of the project image",
        )
        partial = archive.with_suffix(".partial.tar")
        partial.unlink(missing_ok=True)
        _run(
            buildah_cmd("push", "--quiet", PROJECT_IMAGE, f"docker-archive:{partial}:{PROJECT_IMAGE}"),
            "buildah push to a docker-archive",
        )
        partial.rename(archive)
        _prune_archives(keep=archive)
        size = archive.stat().st_size >> 20
        log(f"built {PROJECT_IMAGE} in {time.monotonic() - started:.0f}s ({size} MiB): {archive}")
    return archive


def _prune_archives(keep: Path, *, newest: int = 3) -> None:
    """Keep the newest few project archives (one per tree recently built), drop older ones."""
    archives = sorted(cache_root().glob("oomsight-*.tar"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in archives[newest:]:
        if old != keep:
            old.unlink(missing_ok=True)


def import_archive(archive: Path, address: str, *, namespace: str = "k8s.io", snapshotter: str = "") -> None:
    """``ctr images import`` into a containerd (the kubelet sees only the ``k8s.io`` namespace).

    The image is unpacked for ``snapshotter`` (ctr's default when empty): name the one the node's CRI
    plugin uses, so the kubelet finds the image ready to run.
    """
    ctr = _need("ctr", "containerd")
    cmd = [ctr, "--address", address, "--namespace", namespace, "images", "import"]
    if snapshotter:
        cmd += ["--snapshotter", snapshotter]
    _run([*cmd, str(archive)], f"ctr images import of {archive.name}")
