"""hack/vm: boot a Debian kernel under qemu (TCG) and run one command in it as root.

Python 3.11 standard library only, importable (tests load it by file path), like envtest_lib.

What a run is made of, each cached under ``~/.cache/oomsight/vm/`` (``$OOMSIGHT_VM_CACHE``) and
built or fetched only when missing:

- ``kernel/<series>/``: ``vmlinuz``, ``config`` and ``modules/`` of Debian's ``linux-image-amd64``
  of that series' suite (bullseye 5.10, bookworm 6.1, trixie 6.12), fetched with apt through a
  private sources list (``apt/<suite>/``), so the host's own apt state is never touched;
- ``busybox/busybox``: bookworm's ``busybox-static``, the initramfs' only program;
- ``initrd/<series>-<key>.cpio``: busybox, the few modules needed to reach the root disk and the
  9p shares (virtio-pci, virtio-blk, ext4, 9p), and ``/init``;
- ``root/<key>/root.img``: an ext4 image of a bookworm root made by ``mmdebstrap --variant=minbase``
  with python3, and the project's dependencies (and pytest) installed as wheels into
  ``/usr/local/lib/python3.11/dist-packages`` (the guest has no network). ``<key>`` hashes the recipe
  and the dependency list from pyproject.toml.

The working tree itself is never baked into an image: it is shared in (9p) at its own path and put
on ``PYTHONPATH``, with an ``oomsight`` wrapper on ``PATH``, so every run uses the tree as it is now.
The root disk is opened with ``snapshot=on``: a guest writes to it freely (page cache on a real block
device, reclaimable, unlike an initramfs) and nothing it writes survives the run.

The guest's PID 1 is a shell script written per run into a private control share (``/vmctl``); the
command's stdout, stderr and exit status come back through that share and are relayed as they grow.
KVM is not used: here a nested guest hangs after "Probing EDD"; TCG is slower but works.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import lzma
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

if str(Path(__file__).resolve().parent) not in sys.path:  # hack/ is not a package; loaded by path too
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import cachedir

REPO = Path(__file__).resolve().parent.parent
MIRROR = "http://deb.debian.org/debian"
ROOT_SUITE = "bookworm"
KERNELS = {"5.10": "bullseye", "6.1": "bookworm", "6.12": "trixie"}
"""Kernel series -> the Debian suite whose ``linux-image-amd64`` is that series."""
ROOT_PACKAGES = ("python3", "procps", "e2fsprogs")
GUEST_PYTHON = "3.11"
"""bookworm's python3; the wheels for the guest are picked for it."""
EXTRA_WHEELS = ("pytest>=8", "pytest-timeout>=2.3")
"""Installed in the guest beside the project's own dependencies: the real-kernel suite runs in it."""
RECIPE = "vm-recipe-4"
"""Bump when the way an image or initramfs is made changes (part of every cache key)."""
INITRD_MODULES = ("virtio_pci", "virtio_blk", "crc32c_generic", "crc32c-intel", "ext4", "9pnet_virtio", "9p")
HOST_TOOLS = {
    "qemu-system-x86_64": "qemu-system-x86",
    "mmdebstrap": "mmdebstrap",
    "mke2fs": "e2fsprogs",
    "cpio": "cpio",
    "dpkg-deb": "dpkg",
    "apt-get": "apt",
    "depmod": "kmod",
}
"""Host commands and the Debian package that provides each (installed when missing, as root)."""

Log = Callable[[str], None]


class VmError(Exception):
    """A one-line reason a VM could not be made or run (what was wrong + what to do)."""


def _stderr_log(message: str) -> None:
    print(f"vm: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Cache layout and host tools
# ----------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """``$OOMSIGHT_VM_CACHE``, else ``$XDG_CACHE_HOME/oomsight/vm`` (``~/.cache`` by default)."""
    return cachedir.cache_dir("vm", "OOMSIGHT_VM_CACHE")


@contextlib.contextmanager
def _locked(name: str) -> Iterator[None]:
    """An exclusive flock per cached part, so parallel runs never build the same part twice."""
    with cachedir.locked(cache_root() / "locks" / f"{name}.lock"):
        yield


def _key(*parts: str) -> str:
    return hashlib.sha256("\0".join((RECIPE, *parts)).encode()).hexdigest()[:16]


def _run(
    argv: Sequence[str], what: str, *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> str:
    """Run a build step; on failure raise VmError naming the step and the last line it printed."""
    proc = subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        lines = (proc.stderr.strip() or proc.stdout.strip() or f"exit status {proc.returncode}").splitlines()
        raise VmError(f"{what} failed: {lines[-1]}")
    return proc.stdout


def ensure_host_tools(log: Log = _stderr_log) -> None:
    """Install the missing host commands with apt-get (as root); else fail with one line."""
    missing = sorted({pkg for cmd, pkg in HOST_TOOLS.items() if shutil.which(cmd) is None})
    if not missing:
        return
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise VmError(
            f"missing host packages {' '.join(missing)}: install them (apt-get install {' '.join(missing)})"
        )
    log(f"installing {' '.join(missing)} with apt-get")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    _run(["apt-get", "update", "-q"], "apt-get update", env=env)
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], "apt-get install", env=env)
    still = [cmd for cmd in HOST_TOOLS if shutil.which(cmd) is None]
    if still:
        raise VmError(f"{', '.join(still)} still missing after apt-get install: install {' '.join(missing)}")


def check_tcg(qemu: str = "qemu-system-x86_64") -> None:
    """Fail with one line when qemu cannot emulate x86-64 with TCG."""
    path = shutil.which(qemu)
    if path is None:
        raise VmError(f"{qemu} is not installed: apt-get install qemu-system-x86")
    proc = subprocess.run([path, "-accel", "help"], capture_output=True, text=True, check=False)
    if "tcg" not in proc.stdout.split():
        raise VmError(
            f"{qemu} has no TCG accelerator (-accel help: {proc.stdout.split()!r}): install qemu-system-x86"
        )


# ----------------------------------------------------------------------------------------------
# Debian packages through a private apt configuration
# ----------------------------------------------------------------------------------------------


class Apt:
    """apt-get/apt-cache for one suite with its own sources list, lists and archive directory."""

    def __init__(self, suite: str) -> None:
        self.suite = suite
        self.dir = cache_root() / "apt" / suite
        self._updated = False

    def _options(self) -> list[str]:
        return [
            "-o", f"Dir::Etc::SourceList={self.dir / 'sources.list'}",
            "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={self.dir / 'lists'}",
            "-o", "Dir::State::status=/dev/null",
            "-o", f"Dir::Cache={self.dir / 'cache'}",
            "-o", "APT::Sandbox::User=root",
            "-o", "Debug::NoLocking=1",
        ]  # fmt: skip

    def update(self) -> None:
        if self._updated:
            return
        for sub in ("lists/partial", "cache/archives/partial"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        (self.dir / "sources.list").write_text(f"deb {MIRROR} {self.suite} main\n")
        _run(["apt-get", "-q", *self._options(), "update"], f"apt-get update ({self.suite})")
        self._updated = True

    def depends(self, package: str, prefix: str) -> str:
        """The first dependency of ``package`` named ``prefix…`` (what a metapackage points at)."""
        out = _run(["apt-cache", *self._options(), "depends", package], f"apt-cache depends {package}")
        for line in out.splitlines():
            name = line.strip().removeprefix("Depends:").strip()
            if line.strip().startswith("Depends:") and name.startswith(prefix):
                return name
        raise VmError(f"{self.suite}: {package} depends on no {prefix}* package")

    def download(self, package: str, dest: Path) -> Path:
        dest.mkdir(parents=True, exist_ok=True)
        _run(
            ["apt-get", "-q", *self._options(), "download", package], f"apt-get download {package}", cwd=dest
        )
        debs = sorted(dest.glob(f"{package.replace('+', '%2b')}_*.deb")) or sorted(
            dest.glob(f"{package}_*.deb")
        )
        if not debs:
            raise VmError(f"apt-get download {package} ({self.suite}) left no .deb in {dest}")
        return debs[-1]


# ----------------------------------------------------------------------------------------------
# Kernels, busybox, initramfs
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Kernel:
    series: str
    dir: Path

    @property
    def vmlinuz(self) -> Path:
        return self.dir / "vmlinuz"

    @property
    def release(self) -> str:
        return (self.dir / "release").read_text().strip()

    @property
    def package(self) -> str:
        return (self.dir / "package").read_text().strip()

    @property
    def modules(self) -> Path:
        return self.dir / "modules"

    def config(self, option: str) -> str | None:
        """``y``/``m``/a value of ``CONFIG_<option>`` in the kernel's own config; None when not set."""
        prefix = f"CONFIG_{option}="
        for line in (self.dir / "config").read_text().splitlines():
            if line.startswith(prefix):
                return line[len(prefix) :]
        return None


def kernel(series: str, log: Log = _stderr_log) -> Kernel:
    """Debian's kernel of ``series`` (5.10, 6.1, 6.12), fetched once into the cache."""
    if series not in KERNELS:
        raise VmError(f"unknown kernel {series!r}: choose one of {', '.join(KERNELS)}")
    dest = cache_root() / "kernel" / series
    if (dest / "release").is_file():
        return Kernel(series, dest)
    with _locked(f"kernel-{series}"):
        if (dest / "release").is_file():
            return Kernel(series, dest)
        suite = KERNELS[series]
        log(f"fetching Debian {suite}'s linux-image-amd64 ({series})")
        apt = Apt(suite)
        apt.update()
        package = apt.depends("linux-image-amd64", "linux-image-")
        with tempfile.TemporaryDirectory(dir=cache_root()) as tmp:
            deb = apt.download(package, Path(tmp) / "deb")
            x = Path(tmp) / "x"
            _run(["dpkg-deb", "-x", str(deb), str(x)], f"dpkg-deb -x {deb.name}")
            vmlinuz = sorted((x / "boot").glob("vmlinuz-*"))
            if not vmlinuz:
                raise VmError(f"{deb.name} holds no /boot/vmlinuz-*")
            release = vmlinuz[0].name.removeprefix("vmlinuz-")
            staging = Path(tmp) / "kernel"
            staging.mkdir()
            shutil.move(str(vmlinuz[0]), staging / "vmlinuz")
            shutil.move(str(x / "boot" / f"config-{release}"), staging / "config")
            moddir = x / "lib" / "modules" / release
            if not moddir.is_dir():
                moddir = x / "usr" / "lib" / "modules" / release
            shutil.move(str(moddir), staging / "modules")
            (staging / "package").write_text(f"{package} {deb.name}\n")
            (staging / "release").write_text(release + "\n")
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.exists():
                shutil.rmtree(dest)
            staging.rename(dest)
    return Kernel(series, dest)


def busybox(log: Log = _stderr_log) -> Path:
    """bookworm's static busybox (the initramfs' shell, insmod, mount and switch_root)."""
    dest = cache_root() / "busybox" / "busybox"
    if dest.is_file():
        return dest
    with _locked("busybox"):
        if dest.is_file():
            return dest
        log("fetching bookworm's busybox-static")
        apt = Apt(ROOT_SUITE)
        apt.update()
        with tempfile.TemporaryDirectory(dir=cache_root()) as tmp:
            deb = apt.download("busybox-static", Path(tmp))
            _run(["dpkg-deb", "-x", str(deb), str(Path(tmp) / "x")], "dpkg-deb -x busybox-static")
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(Path(tmp) / "x" / "bin" / "busybox", dest)
    return dest


def depmod(kern: Kernel) -> None:
    """Write ``modules.dep`` (Debian's package leaves it to depmod at install time)."""
    if (kern.modules / "modules.dep").is_file():
        return
    with tempfile.TemporaryDirectory(dir=cache_root()) as tmp:
        base = Path(tmp) / "lib" / "modules"
        base.mkdir(parents=True)
        (base / kern.release).symlink_to(kern.modules.resolve())
        _run(["depmod", "-b", tmp, kern.release], f"depmod {kern.release}")


def module_load_order(modules_dir: Path, names: Sequence[str]) -> list[str]:
    """Relative paths (from modules.dep) of ``names`` and their dependencies, dependencies first.

    Built-in modules and names the kernel does not have are left out."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (modules_dir / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        base = Path(path).name.split(".ko")[0]
        by_name[base] = path
        by_name[base.replace("-", "_")] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dep in reversed(deps.get(path, [])):
            visit(dep)
        order.append(path)

    for name in names:
        path = by_name.get(name) or by_name.get(name.replace("-", "_"))
        if path is not None:
            visit(path)
    return order


_INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
export PATH=/bin
mkdir -p /proc /sys /dev /newroot
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
fail() { echo "oomsight-vm: initramfs: $*" > /dev/console; poweroff -f; }
for m in $(cat /modules.list); do
  insmod "/modules/$m" || echo "oomsight-vm: insmod $m failed" > /dev/console
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 300 ]; do usleep 100000; i=$((i+1)); done
mount -t ext4 /dev/vda /newroot || fail "cannot mount the root disk /dev/vda"
mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 vmctl /newroot/vmctl \
  || fail "cannot mount the control share"
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /bin/sh /vmctl/init.sh
"""


def initrd(kern: Kernel, log: Log = _stderr_log) -> Path:
    """A small initramfs for ``kern``: busybox, the modules to reach /dev/vda and 9p, ``/init``."""
    bb = busybox(log)
    key = _key(kern.package, _INIT, " ".join(INITRD_MODULES), hashlib.sha256(bb.read_bytes()).hexdigest())
    dest = cache_root() / "initrd" / f"{kern.series}-{key}.cpio"
    if dest.is_file():
        return dest
    with _locked(f"initrd-{kern.series}"):
        if dest.is_file():
            return dest
        depmod(kern)
        order = module_load_order(kern.modules, INITRD_MODULES)
        with tempfile.TemporaryDirectory(dir=cache_root()) as tmp:
            root = Path(tmp) / "root"
            (root / "bin").mkdir(parents=True)
            (root / "modules").mkdir()
            shutil.copy2(bb, root / "bin" / "busybox")
            names = []
            for rel in order:
                src = kern.modules / rel
                name = Path(rel).name
                data = src.read_bytes()
                if name.endswith(".xz"):
                    data, name = lzma.decompress(data), name[:-3]
                elif name.endswith(".zst"):
                    raise VmError(f"{rel}: zstd-compressed modules are not supported yet")
                (root / "modules" / name).write_bytes(data)
                names.append(name)
            (root / "modules.list").write_text("\n".join(names) + "\n")
            init = root / "init"
            init.write_text(_INIT)
            init.chmod(0o755)
            files = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
            cpio = Path(tmp) / "initrd.cpio"
            with cpio.open("wb") as out:
                proc = subprocess.run(
                    ["cpio", "-o", "-H", "newc", "--quiet", "-R", "0:0"],
                    input="\n".join(files).encode(),
                    stdout=out,
                    stderr=subprocess.PIPE,
                    cwd=root,
                    check=False,
                )
            if proc.returncode != 0:
                raise VmError(f"cpio failed: {proc.stderr.decode().strip()}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            cpio.rename(dest)
    return dest


# ----------------------------------------------------------------------------------------------
# The root image
# ----------------------------------------------------------------------------------------------


def project_requirements(repo: Path = REPO) -> list[str]:
    """The project's runtime dependencies (pyproject.toml) plus what the in-guest suite needs."""
    with (repo / "pyproject.toml").open("rb") as f:
        data = tomllib.load(f)
    return [*data["project"]["dependencies"], *EXTRA_WHEELS]


def _pip() -> list[str]:
    venv = REPO / ".venv" / "bin" / "python"
    python = str(venv) if venv.is_file() else sys.executable
    return [python, "-m", "pip"]


def root_image(repo: Path = REPO, log: Log = _stderr_log) -> Path:
    """The bookworm root disk (ext4 image) with python3 and the project's dependencies."""
    reqs = project_requirements(repo)
    key = _key(ROOT_SUITE, " ".join(ROOT_PACKAGES), GUEST_PYTHON, "\n".join(reqs))
    dest = cache_root() / "root" / key / "root.img"
    if dest.is_file():
        return dest
    with _locked("root"):
        if dest.is_file():
            return dest
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
            root = Path(tmp) / "root"
            log(f"building the {ROOT_SUITE} root (mmdebstrap --variant=minbase, about a minute)")
            t0 = time.monotonic()
            _run(
                [
                    "mmdebstrap", "--mode=root", "--variant=minbase", "--quiet",
                    f"--include={','.join(ROOT_PACKAGES)}",
                    ROOT_SUITE, str(root), MIRROR,
                ],
                "mmdebstrap",
            )  # fmt: skip
            log(f"installing {len(reqs)} requirements as wheels into the root")
            site = root / "usr" / "local" / "lib" / f"python{GUEST_PYTHON}" / "dist-packages"
            _run(
                [
                    *_pip(), "install", "-q", "--disable-pip-version-check",
                    "--target", str(site), "--only-binary=:all:", "--implementation", "cp",
                    "--python-version", GUEST_PYTHON, "--platform", "manylinux2014_x86_64",
                    "--platform", "manylinux_2_28_x86_64", "--platform", "linux_x86_64", *reqs,
                ],
                "pip install --target (guest wheels)",
            )  # fmt: skip
            (root / "vmctl").mkdir()
            (root / "etc" / "hostname").write_text("oomsight-vm\n")
            for stale in ("etc/resolv.conf",):
                with contextlib.suppress(FileNotFoundError):
                    (root / stale).unlink()
            used = sum(p.lstat().st_size for p in root.rglob("*") if not p.is_symlink() and p.is_file())
            size_mb = used // (1 << 20) + 1024
            img = Path(tmp) / "root.img"
            _run(
                [
                    "mke2fs",
                    "-q",
                    "-t",
                    "ext4",
                    "-L",
                    "oomsight-root",
                    "-d",
                    str(root),
                    str(img),
                    f"{size_mb}M",
                ],
                "mke2fs -d",
            )
            manifest = {
                "suite": ROOT_SUITE,
                "packages": list(ROOT_PACKAGES),
                "requirements": reqs,
                "build_seconds": round(time.monotonic() - t0, 1),
                "recipe": RECIPE,
            }
            (dest.parent / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
            img.rename(dest)
            log(f"root image ready in {manifest['build_seconds']} s: {dest}")
    return dest


def build(series: Sequence[str], repo: Path = REPO, log: Log = _stderr_log) -> dict[str, Path]:
    """Everything ``run`` needs for each kernel in ``series``; only missing parts are made."""
    ensure_host_tools(log)
    check_tcg()
    out = {"root": root_image(repo, log)}
    for s in series:
        k = kernel(s, log)
        out[f"kernel-{s}"] = k.vmlinuz
        out[f"initrd-{s}"] = initrd(k, log)
    return out


# ----------------------------------------------------------------------------------------------
# One run
# ----------------------------------------------------------------------------------------------


PASS_ENV = ("CI",)
"""Host environment passed into the guest as is (plus every ``OOMSIGHT_*`` but the cache ones)."""


@dataclass
class RunSpec:
    series: str
    command: list[str]
    cgroup: str = "v2"
    mem: str = "2G"
    cpus: int = 2
    shares: list[Path] = field(default_factory=list)
    cwd: Path | None = None
    timeout: float = 1800.0
    env: dict[str, str] = field(default_factory=dict)


def _guest_env(spec: RunSpec, tree: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in PASS_ENV}
    env.update(
        (k, v)
        for k, v in os.environ.items()
        if k.startswith("OOMSIGHT_") and not k.startswith("OOMSIGHT_VM_")
    )
    env.update(
        PATH="/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        HOME="/root",
        LANG="C.UTF-8",
        PYTHONPATH=f"{tree}/operator",
        PYTHONPYCACHEPREFIX="/tmp/pycache",  # compiled once per boot, never into the shared tree
        OOMSIGHT_VM_KERNEL=spec.series,
        OOMSIGHT_VM_CGROUP=spec.cgroup,
        OOMSIGHT_VM_MEM=spec.mem,
    )
    env.update(spec.env)
    return env


def guest_init(spec: RunSpec, mounts: list[tuple[str, Path]], tree: Path) -> str:
    """The guest's PID 1: mounts, cgroups, the ``oomsight`` wrapper, the command, power off."""
    q = shlex.quote
    lines = [
        "#!/bin/sh",
        "mount -t proc proc /proc",
        "mount -t sysfs sysfs /sys",
        "mkdir -p /dev/pts /dev/shm",
        "mount -t devpts devpts /dev/pts",
        "mount -t tmpfs -o mode=1777,nosuid,nodev shm /dev/shm",
        "mount -t tmpfs -o mode=755 tmpfs /run",
        "hostname oomsight-vm",
        "ln -sf /proc/self/fd /dev/fd 2>/dev/null",
    ]
    if spec.cgroup == "v2":
        lines += [
            "mount -t cgroup2 -o nsdelegate cgroup2 /sys/fs/cgroup",
            # What systemd does on a v2 host: the controllers are enabled for the root's children.
            "for c in cpu memory pids io; do",
            "  echo +$c > /sys/fs/cgroup/cgroup.subtree_control 2>/dev/null",
            "done",
        ]
    else:
        lines += [
            "mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup",
            "for c in memory cpu,cpuacct cpuset pids; do",
            "  mkdir -p /sys/fs/cgroup/$c && mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c",
            "done",
            "ln -s cpu,cpuacct /sys/fs/cgroup/cpu && ln -s cpu,cpuacct /sys/fs/cgroup/cpuacct",
            # Before 5.11 a v1 child is hierarchical only if its parent's use_hierarchy is 1 (the
            # root's default is 0); systemd and runc write 1, so a pod's limit covers its containers.
            "echo 1 > /sys/fs/cgroup/memory/memory.use_hierarchy 2>/dev/null",
            # systemd's hybrid layout (its default before v247): an empty cgroup2 at unified/.
            "mkdir -p /sys/fs/cgroup/unified && mount -t cgroup2 cgroup2 /sys/fs/cgroup/unified",
        ]
    for tag, path in mounts:
        lines.append(
            f"mkdir -p {q(str(path))} && mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144"
            f" {tag} {q(str(path))} || echo 'oomsight-vm: cannot mount {tag} at {path}' > /dev/console"
        )
    wrapper = (
        "#!/bin/sh\n"
        "exec python3 -c \"import sys; from oomsight.cli.main import main; sys.argv[0] = 'oomsight';"
        ' sys.exit(main())" "$@"\n'
    )
    lines += [
        f"printf '%s' {q(wrapper)} > /usr/local/bin/oomsight && chmod 755 /usr/local/bin/oomsight",
        *(f"export {k}={q(v)}" for k, v in sorted(_guest_env(spec, tree).items())),
        f"cd {q(str(spec.cwd or '/'))} 2>/dev/null || cd /",
        f"set -- {' '.join(q(a) for a in spec.command)}",
        '"$@" < /dev/null > /vmctl/stdout 2> /vmctl/stderr',
        "echo $? > /vmctl/rc.tmp && mv /vmctl/rc.tmp /vmctl/rc",
        "sync",
        "echo o > /proc/sysrq-trigger",
        "sleep 10",
    ]
    return "\n".join(lines) + "\n"


def _mounts(spec: RunSpec, tree: Path) -> list[tuple[str, Path]]:
    paths = [p.resolve() for p in spec.shares]
    if not any(tree == p or tree.is_relative_to(p) for p in paths):
        paths.append(tree)
    unique = sorted(set(paths), key=lambda p: (len(p.parts), str(p)))
    return [(f"share{i}", p) for i, p in enumerate(unique)]


def qemu_argv(
    spec: RunSpec, kern: Kernel, initramfs: Path, root: Path, ctl: Path, mounts: list[tuple[str, Path]]
) -> list[str]:
    append = [
        "console=ttyS0",
        "loglevel=3",
        "panic=-1",
        "mitigations=off",
        "8250.nr_uarts=1",
        f"oomsight.cgroup={spec.cgroup}",
    ]
    argv = [
        "qemu-system-x86_64",
        "-accel", "tcg,thread=multi" if spec.cpus > 1 else "tcg",
        "-cpu", "max",
        "-smp", str(spec.cpus),
        "-m", spec.mem,
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-nic", "none",
        "-serial", f"file:{ctl / 'console.log'}",
        "-kernel", str(kern.vmlinuz),
        "-initrd", str(initramfs),
        "-append", " ".join(append),
        "-drive", f"file={root},if=virtio,format=raw,snapshot=on",
        "-fsdev", f"local,id=vmctl,path={ctl},security_model=none",
        "-device", "virtio-9p-pci,fsdev=vmctl,mount_tag=vmctl",
    ]  # fmt: skip
    for tag, path in mounts:
        argv += [
            "-fsdev", f"local,id={tag},path={path},security_model=none",
            "-device", f"virtio-9p-pci,fsdev={tag},mount_tag={tag}",
        ]  # fmt: skip
    return argv


class _Relay:
    """Copy what the guest appends to a file in the control share to one of our streams."""

    def __init__(self, path: Path, out: int) -> None:
        self.path, self.out, self.pos = path, out, 0

    def pump(self) -> None:
        try:
            with self.path.open("rb") as f:
                f.seek(self.pos)
                data = f.read()
        except FileNotFoundError:
            return
        if data:
            self.pos += len(data)
            os.write(self.out, data)


def check_spec(spec: RunSpec, kern: Kernel | None = None) -> None:
    """One line for a run that cannot work: checked before anything is fetched, and again with the
    kernel (``--cgroup v1`` needs its v1 memory controller)."""
    if spec.cgroup not in ("v1", "v2"):
        raise VmError(f"--cgroup {spec.cgroup!r}: choose v2 or v1")
    for p in spec.shares:
        if not p.is_dir():
            raise VmError(f"--share {p}: not a directory")
    if not re.fullmatch(r"\d+[MG]", spec.mem):
        raise VmError(f"--mem {spec.mem!r}: give a size like 512M or 2G")
    if not spec.command:
        raise VmError("no command: hack/vm run --kernel 6.1 -- COMMAND...")
    if kern is not None and spec.cgroup == "v1" and kern.config("MEMCG_V1") is None:
        # 6.11 split the v1 memory controller out behind CONFIG_MEMCG_V1 (mm/memcontrol-v1.c).
        major, minor = (int(x) for x in kern.release.split(".")[:2])
        if (major, minor) >= (6, 11):
            raise VmError(
                f"kernel {kern.release} is built without CONFIG_MEMCG_V1: it has no cgroup v1 memory"
                " controller; use --cgroup v2 or another kernel"
            )


def run(spec: RunSpec, log: Log = _stderr_log, repo: Path = REPO) -> int:
    """Boot ``spec.series``, run the command in the guest, relay its output; its exit status."""
    check_spec(spec)
    ensure_host_tools(log)
    check_tcg()
    kern = kernel(spec.series, log)
    check_spec(spec, kern)
    initramfs = initrd(kern, log)
    root = root_image(repo, log)
    tree = repo.resolve()
    mounts = _mounts(spec, tree)
    runs = cache_root() / "runs"
    runs.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=runs, prefix=f"{spec.series}-") as tmp:
        ctl = Path(tmp)
        init = ctl / "init.sh"
        init.write_text(guest_init(spec, mounts, tree))
        init.chmod(0o755)
        argv = qemu_argv(spec, kern, initramfs, root, ctl, mounts)
        (ctl / "qemu.argv").write_text(shlex.join(argv) + "\n")
        relays = [_Relay(ctl / "stdout", sys.stdout.fileno()), _Relay(ctl / "stderr", sys.stderr.fileno())]
        sys.stdout.flush()
        sys.stderr.flush()
        t0 = time.monotonic()
        qemu_err = ctl / "qemu.stderr"
        with qemu_err.open("wb") as err:
            proc = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=err, stderr=err, start_new_session=True
            )
        stop = threading.Event()

        def pump() -> None:
            while not stop.wait(0.3):
                for r in relays:
                    r.pump()

        pumper = threading.Thread(target=pump, daemon=True)
        pumper.start()
        timed_out = False
        try:
            proc.wait(timeout=spec.timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            proc.kill()
            proc.wait()
        except KeyboardInterrupt:
            proc.kill()
            proc.wait()
            raise
        finally:
            stop.set()
            pumper.join()
            for r in relays:
                r.pump()
        elapsed = time.monotonic() - t0
        rc_file = ctl / "rc"
        if os.environ.get("OOMSIGHT_VM_KEEP_CONSOLE"):
            shutil.copy2(ctl / "console.log", os.environ["OOMSIGHT_VM_KEEP_CONSOLE"])
        if timed_out:
            raise VmError(
                f"the guest ({spec.series}) did not finish within {spec.timeout:.0f} s: {_tail(ctl)}"
            )
        if not rc_file.is_file():
            qerr = qemu_err.read_text(errors="replace").strip().splitlines()
            why = qerr[-1] if qerr else _tail(ctl)
            raise VmError(
                f"the guest ({spec.series}) stopped before the command finished"
                f" (qemu exit {proc.returncode}): {why}"
            )
        log(f"kernel {kern.release}: guest ran {elapsed:.1f} s (boot + command)")
        return int(rc_file.read_text().strip() or "1")


def _tail(ctl: Path) -> str:
    try:
        lines = [ln for ln in (ctl / "console.log").read_text(errors="replace").splitlines() if ln.strip()]
    except FileNotFoundError:
        return "no console output"
    return " | ".join(lines[-3:]) or "no console output"


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="hack/vm", description="Boot a Debian kernel under qemu (TCG), run a command."
    )
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="boot a kernel and run COMMAND as root in it")
    r.add_argument("--kernel", required=True, choices=sorted(KERNELS))
    r.add_argument("--cgroup", default="v2", choices=("v2", "v1"))
    r.add_argument("--mem", default="2G")
    r.add_argument("--cpus", type=int, default=2)
    r.add_argument("--share", action="append", default=[], type=Path, metavar="DIR")
    r.add_argument("--timeout", type=float, default=1800.0, help="seconds before the guest is killed")
    r.add_argument("command", nargs=argparse.REMAINDER)
    b = sub.add_parser("build", help="fetch/build what is missing for the given kernels")
    b.add_argument("--kernel", action="append", choices=sorted(KERNELS))
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.cmd == "build":
            for name, path in build(args.kernel or sorted(KERNELS)).items():
                print(f"{name}={path}")
            return 0
        command = list(args.command)
        if command[:1] == ["--"]:
            command = command[1:]
        cwd = Path.cwd()
        spec = RunSpec(
            series=args.kernel,
            command=command,
            cgroup=args.cgroup,
            mem=args.mem,
            cpus=args.cpus,
            shares=list(args.share),
            cwd=cwd,
            timeout=args.timeout,
        )
        return run(spec)
    except VmError as e:
        print(f"vm: error: {e}", file=sys.stderr)
        return 125
    except KeyboardInterrupt:
        return 130
