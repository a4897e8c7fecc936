"""Build the peers ``bench/peers.py`` compares oomsight with, pinned, into ``~/.cache/oomsight/peers/<key>/``.

Each peer is a release tag of a public Git repository, built with Go from a local Git directory of
that repository (a bare clone is enough). Nothing of their code is kept in this repository: the tag
is unpacked (``git archive``) into the cache and built there, once per pin.

- node-problem-detector ``v1.36.0``: ``CGO_ENABLED=0 go build -mod=vendor ./cmd/nodeproblemdetector``
  (its module tree is vendored; the Go module proxy does not serve ``k8s.io/node-problem-detector``).
- cAdvisor ``v0.60.5``: the ``cmd`` module (it ``replace``s the library with ``../``), built with
  ``CGO_ENABLED=0 GOFLAGS=-mod=mod go build`` in ``cmd/``; its dependencies come from the Go proxy.

Where the source comes from, first match wins: ``$OOMSIGHT_PEER_SRC_<NAME>`` (``NPD``, ``CADVISOR``), a
Git directory; ``~/.cache/oomsight/peers/src/<name>.git``; ``/work/.mirror/<owner>+<repo>/repo`` (a
snapshot fetched by the project's search tool). On a fresh machine::

    cd ~/.cache/oomsight/peers/src   # mkdir -p it first
    git clone --bare https://github.com/kubernetes/node-problem-detector node-problem-detector.git
    git clone --bare https://github.com/google/cadvisor cadvisor.git

``<key>`` hashes the tag, its commit, the build recipe and ``go version``, so a binary is rebuilt
only when one of them changes. Builds run ``nice``d under a file lock (the envtest lock helper),
and ``<key>/build.json`` records what was built, from where, and how long it took.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "hack") not in sys.path:
    sys.path.insert(0, str(ROOT / "hack"))  # hack/envtest_lib.py: go_command; hack/cachedir.py

import cachedir  # noqa: E402
import envtest_lib  # noqa: E402


class PeerError(Exception):
    """A peer cannot be built or found; the message is one line that says what to do."""


@dataclass(frozen=True)
class Peer:
    name: str  # the binary's name and the env suffix
    repo: str  # owner/name on GitHub
    tag: str
    commit: str  # what the tag points to (checked, so a moved tag is noticed)
    module_dir: str  # where ``go build`` runs, inside the unpacked tree
    package: str
    env: dict[str, str]  # build environment on top of os.environ
    flags: tuple[str, ...]

    @property
    def env_name(self) -> str:
        return "OOMSIGHT_PEER_SRC_" + self.name.upper().replace("-", "_")

    def recipe(self) -> str:
        env = " ".join(f"{k}={v}" for k, v in sorted(self.env.items()))
        return f"{env} go build {' '.join(self.flags)} -o {self.name} {self.package} (in {self.module_dir})"


PEERS = {
    "npd": Peer(
        name="npd",
        repo="kubernetes/node-problem-detector",
        tag="v1.36.0",
        commit="19d58b0eded3a60a999ad0ffa8d69deed0bc94d0",
        module_dir=".",
        package="./cmd/nodeproblemdetector",
        env={"CGO_ENABLED": "0"},
        flags=(
            "-mod=vendor",
            "-trimpath",
            "-ldflags=-s -w -X k8s.io/node-problem-detector/pkg/version.version=v1.36.0",
        ),
    ),
    "cadvisor": Peer(
        name="cadvisor",
        repo="google/cadvisor",
        tag="v0.60.5",
        commit="44b8e3062d678022939d40b2a2e9b259b07ebab0",
        module_dir="cmd",
        package=".",
        env={"CGO_ENABLED": "0", "GOFLAGS": "-mod=mod"},
        flags=("-trimpath", "-ldflags=-s -w -X github.com/google/cadvisor/lib/version.Version=v0.60.5"),
    ),
}


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/oomsight/peers`` (``~/.cache`` by default)."""
    return cachedir.cache_dir("peers")


def source_dir(peer: Peer) -> Path:
    """The Git directory holding ``peer``'s history; PeerError (with the fetch command) when none."""
    owner, repo = peer.repo.split("/")
    candidates = [Path(p) for p in [os.environ.get(peer.env_name, "")] if p] + [
        cache_root() / "src" / f"{repo}.git",
        Path("/work/.mirror") / f"{owner}+{repo}" / "repo",
    ]
    for cand in candidates:
        if (cand / "HEAD").exists() or (cand / ".git").exists():
            return cand
    raise PeerError(
        f"{peer.name}: no Git source of {peer.repo}; run "
        f"`git clone --bare https://github.com/{peer.repo} {cache_root() / 'src' / (repo + '.git')}` "
        f"(or set {peer.env_name}=<git dir>)"
    )


def _git(src: Path, *args: str) -> str:
    git_dir = src / ".git" if (src / ".git").exists() else src
    proc = subprocess.run(["git", "--git-dir", str(git_dir), *args], capture_output=True, check=False)
    if proc.returncode != 0:
        raise PeerError(f"git {' '.join(args)} in {src} failed: {proc.stderr.decode().strip()[:200]}")
    return proc.stdout.decode()


def go_version() -> str:
    out = subprocess.run([envtest_lib.go_command(), "version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def cache_key(peer: Peer) -> str:
    digest = hashlib.sha256(f"{peer.repo}@{peer.tag}={peer.commit}\0{peer.recipe()}\0{go_version()}".encode())
    return digest.hexdigest()[:16]


def _stderr_log(message: str) -> None:
    print(f"peers: {message}", file=sys.stderr, flush=True)


def build(name: str, log=_stderr_log) -> Path:  # type: ignore[no-untyped-def]
    """The path of ``name``'s binary, built into the cache first when it is not there."""
    peer = PEERS[name]
    try:
        dest = cache_root() / cache_key(peer)
    except (OSError, subprocess.CalledProcessError, envtest_lib.EnvtestError) as exc:
        raise PeerError(f"{name}: no working Go toolchain ({exc}); install Go or set GO=/path/to/go") from exc
    binary = dest / peer.name
    if os.access(binary, os.X_OK):
        return binary
    with cachedir.locked(dest / ".lock"):
        if os.access(binary, os.X_OK):
            return binary
        src = source_dir(peer)
        commit = _git(src, "rev-parse", f"{peer.tag}^{{commit}}").strip()
        if commit != peer.commit:
            raise PeerError(f"{name}: tag {peer.tag} in {src} is {commit}, the pin is {peer.commit}")
        tree = dest / "src"
        if not (tree / ".unpacked").exists():
            log(f"unpacking {peer.repo} {peer.tag} from {src} into {tree}")
            tree.mkdir(parents=True, exist_ok=True)
            archive = subprocess.Popen(
                [
                    "git",
                    "--git-dir",
                    str(src / ".git" if (src / ".git").exists() else src),
                    "archive",
                    peer.tag,
                ],
                stdout=subprocess.PIPE,
            )
            subprocess.run(["tar", "-x", "-C", str(tree)], stdin=archive.stdout, check=True)
            if archive.wait() != 0:
                raise PeerError(f"{name}: git archive {peer.tag} failed in {src}")
            (tree / ".unpacked").write_text(peer.commit + "\n")
        log(f"building {name} ({peer.repo} {peer.tag}): {peer.recipe()} ...")
        started = time.monotonic()
        partial = dest / f".{peer.name}.partial"
        cmd = [
            "nice",
            "-n",
            "10",
            envtest_lib.go_command(),
            "build",
            *peer.flags,
            "-o",
            str(partial),
            peer.package,
        ]
        proc = subprocess.run(
            cmd,
            cwd=tree / peer.module_dir,
            env={**os.environ, **peer.env},
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.monotonic() - started
        if proc.returncode != 0:
            last = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or [f"exit {proc.returncode}"]
            raise PeerError(f"{name}: go build failed: {last[0]}")
        partial.rename(binary)
        record = {
            "repo": peer.repo,
            "tag": peer.tag,
            "commit": peer.commit,
            "source": str(src),
            "recipe": peer.recipe(),
            "go": go_version(),
            "build_seconds": round(seconds, 1),
        }
        (dest / "build.json").write_text(json.dumps(record, indent=2) + "\n")
        log(f"built {name} in {seconds:.0f} s -> {binary}")
    return binary


if __name__ == "__main__":
    for peer_name in sys.argv[1:] or list(PEERS):
        try:
            print(build(peer_name))
        except PeerError as err:
            sys.exit(f"peers: error: {err}")
