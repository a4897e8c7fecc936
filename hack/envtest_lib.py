"""A real Kubernetes control plane (etcd + kube-apiserver) for tests, built from pinned Go modules.

Stdlib only (plus the ``go`` toolchain to build and the ``openssl`` CLI to make certificates), so the
``hack/envtest`` command works before the project is installed and pytest can import this file with
importlib (``tests/kube/conftest.py`` does).

Binaries come from, in this order (the same rules as controller-runtime's envtest):

1. ``TEST_ASSET_<NAME>`` (``TEST_ASSET_KUBE_APISERVER``, ``TEST_ASSET_ETCD``, ``TEST_ASSET_KUBELET``, ...);
2. ``KUBEBUILDER_ASSETS`` (a directory holding ``kube-apiserver`` and ``etcd``);
3. the build cache ``~/.cache/oomsight/envtest/<key>/``, where ``<key>`` hashes the ``go.mod`` and
   ``go.sum`` of the binary's own module under ``hack/envtest-go`` together with the build recipe, so
   only a change of that module's pins rebuilds. ``OOMSIGHT_ENVTEST_CACHE`` moves the cache root.

The control plane: etcd on loopback (no fsync), kube-apiserver on loopback with TLS from a private CA,
RBAC authorization, service-account signing keys, and an admin client certificate in
``system:masters``. Every file lives in one directory, so a stopped API server can be started again on
the same port with the same certificates and kubeconfig (API-server outage tests).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TextIO

if str(Path(__file__).resolve().parent) not in sys.path:  # hack/ is not a package; loaded by path too
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import cachedir

REPO_ROOT = Path(__file__).resolve().parent.parent
GO_ROOT = REPO_ROOT / "hack" / "envtest-go"

# Part of the cache key: change it whenever the way binaries are built changes.
BUILD_RECIPE = "CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags=-s -w +version stamps v1"

DEFAULT_STARTUP_TIMEOUT = 90.0
DEFAULT_STOP_TIMEOUT = 15.0
ADMIN_USER = "oomsight-envtest-admin"
SERVICE_CLUSTER_IP_RANGE = "10.0.0.0/24"
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"


class EnvtestError(Exception):
    """Something in the test control plane could not be built, found, started or stopped."""


class BuildError(EnvtestError):
    """``go build`` of a pinned binary failed, or no Go toolchain was found."""


class MissingBinaryError(EnvtestError):
    """A binary is neither overridden by the environment nor in the build cache."""


class StartError(EnvtestError):
    """etcd or kube-apiserver did not come up (exited early or not ready in time)."""


@dataclass(frozen=True)
class Tool:
    """One binary built from one pinned Go module under ``hack/envtest-go``."""

    name: str
    module_dir: str
    package: str
    env_var: str
    in_kubebuilder_assets: bool
    tags: tuple[str, ...] = ()
    """Go build tags (part of the module's cache key)."""


TOOLS: dict[str, Tool] = {
    t.name: t
    for t in (
        Tool(
            "kube-apiserver", ".", "k8s.io/kubernetes/cmd/kube-apiserver", "TEST_ASSET_KUBE_APISERVER", True
        ),
        # The rest of a single-node cluster (hack/envtest up --node), from the same k8s.io/kubernetes pin.
        Tool(
            "kube-controller-manager",
            ".",
            "k8s.io/kubernetes/cmd/kube-controller-manager",
            "TEST_ASSET_KUBE_CONTROLLER_MANAGER",
            False,
        ),
        Tool(
            "kube-scheduler", ".", "k8s.io/kubernetes/cmd/kube-scheduler", "TEST_ASSET_KUBE_SCHEDULER", False
        ),
        Tool("kubelet", ".", "k8s.io/kubernetes/cmd/kubelet", "TEST_ASSET_KUBELET", False),
        Tool("kube-proxy", ".", "k8s.io/kubernetes/cmd/kube-proxy", "TEST_ASSET_KUBE_PROXY", False),
        Tool("etcd", "etcd", "go.etcd.io/etcd/server/v3", "TEST_ASSET_ETCD", True),
        Tool("helm", "helm", "helm.sh/helm/v3/cmd/helm", "TEST_ASSET_HELM", False),
        # remove_all_sd: Prometheus' own build tags (plugins/plugin_*.go) that leave out every
        # service-discovery SDK (AWS, Azure, GCE, ...). promtool's check metrics/rules and test rules
        # need none of them, and the cold build takes about a third of the CPU time without them.
        Tool(
            "promtool",
            "promtool",
            "github.com/prometheus/prometheus/cmd/promtool",
            "TEST_ASSET_PROMTOOL",
            False,
            tags=("remove_all_sd",),
        ),
    )
}
CONTROL_PLANE_TOOLS = ("kube-apiserver", "etcd")
NODE_TOOLS = ("kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy")
# What `hack/envtest build` builds by default: everything but the node's binaries (``up --node``
# builds those), so a run that needs no node does not pay for them.
DEFAULT_TOOLS = tuple(name for name in TOOLS if name not in NODE_TOOLS)

Log = Callable[[str], None]


def _stderr_log(message: str) -> None:
    print(f"envtest: {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------------------
# Binaries: cache key, lookup, build
# ----------------------------------------------------------------------------------------------


def cache_root() -> Path:
    """``$OOMSIGHT_ENVTEST_CACHE``, else ``$XDG_CACHE_HOME/oomsight/envtest`` (``~/.cache`` by default)."""
    return cachedir.cache_dir("envtest", "OOMSIGHT_ENVTEST_CACHE")


def pin_files(go_root: Path = GO_ROOT, module_dir: str = ".") -> list[Path]:
    """The go.mod and go.sum of one pinned module (``module_dir`` under ``go_root``)."""
    module = go_root / module_dir
    files = [module / name for name in ("go.mod", "go.sum") if (module / name).is_file()]
    if not files:
        raise BuildError(f"no go.mod in {module}")
    return files


def cache_key(go_root: Path = GO_ROOT, module_dir: str = ".") -> str:
    """A short hash of one module's pins (its go.mod/go.sum) and the build recipe.

    One key per module, so moving one pin (or adding a command to one module) rebuilds only the
    binaries of that module: a new node binary in the root module leaves etcd, helm and promtool cached.
    """
    digest = hashlib.sha256(BUILD_RECIPE.encode())
    digest.update(b"\0" + module_dir.encode() + b"\0")
    for tool in TOOLS.values():
        if tool.module_dir == module_dir and tool.tags:
            digest.update(f"\0{tool.name} -tags {','.join(tool.tags)}\0".encode())
    for path in pin_files(go_root, module_dir):
        digest.update(b"\0" + path.name.encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def cache_dir(go_root: Path = GO_ROOT, module_dir: str = ".") -> Path:
    """Where the binaries of one pinned module are cached."""
    return cache_root() / cache_key(go_root, module_dir)


def tool_cache_dir(name: str) -> Path:
    """Where the binary ``name`` is cached (the directory of its module's key)."""
    return cache_dir(GO_ROOT, TOOLS[name].module_dir)


def override_path(tool: Tool, environ: Mapping[str, str] | None = None) -> Path | None:
    """The binary the environment names for ``tool``, or None when it names none."""
    env = os.environ if environ is None else environ
    explicit = env.get(tool.env_var)
    if explicit:
        return Path(explicit)
    assets = env.get("KUBEBUILDER_ASSETS")
    if assets and tool.in_kubebuilder_assets:
        return Path(assets) / tool.name
    return None


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def find_binary(name: str, *, environ: Mapping[str, str] | None = None) -> Path:
    """The path of a ready binary (override or cache); raises MissingBinaryError otherwise."""
    tool = TOOLS[name]
    overridden = override_path(tool, environ)
    if overridden is not None:
        if not _is_executable(overridden):
            source = tool.env_var if (environ or os.environ).get(tool.env_var) else "KUBEBUILDER_ASSETS"
            raise MissingBinaryError(f"{name}: {overridden} (from {source}) is not an executable file")
        return overridden
    cached = tool_cache_dir(name) / name
    if not _is_executable(cached):
        raise MissingBinaryError(f"{name}: not built yet (expected {cached}); run hack/envtest build")
    return cached


def find_binaries(names: Iterable[str] = CONTROL_PLANE_TOOLS) -> dict[str, Path]:
    return {name: find_binary(name) for name in names}


def go_command() -> str:
    """The Go toolchain: ``$GO``, else ``go`` on PATH, else /usr/local/go/bin/go."""
    explicit = os.environ.get("GO")
    if explicit:
        return explicit
    found = shutil.which("go")
    if found:
        return found
    fallback = Path("/usr/local/go/bin/go")
    if _is_executable(fallback):
        return str(fallback)
    raise BuildError("no Go toolchain: put go on PATH or set GO=/path/to/go")


def required_version(go_mod: Path, module: str) -> str:
    """The version ``go_mod`` requires of ``module`` (``v1.2.3``)."""
    pattern = rf"^\s*(?:require\s+)?{re.escape(module)}\s+(v\S+)"
    match = re.search(pattern, go_mod.read_text(), re.MULTILINE)
    if match is None:
        raise BuildError(f"{go_mod} does not require {module}")
    return match.group(1)


def version_ldflags(tool: Tool, go_root: Path = GO_ROOT) -> list[str]:
    """``-X`` flags that stamp the release version, as each project's own build does.

    Without them kube-apiserver reports v0.0.0-master, helm assumes Kubernetes 1.20 for
    ``.Capabilities.KubeVersion`` and promtool prints an empty version.
    """
    go_mod = go_root / tool.module_dir / "go.mod"
    flags: list[str] = []
    if tool.module_dir == "." and tool.package.startswith("k8s.io/kubernetes/"):
        version = required_version(go_mod, "k8s.io/kubernetes")
        major, minor = version.lstrip("v").split(".")[:2]
        for pkg in ("k8s.io/component-base/version", "k8s.io/client-go/pkg/version"):
            flags += [
                f"-X {pkg}.gitVersion={version}",
                f"-X {pkg}.gitMajor={major}",
                f"-X {pkg}.gitMinor={minor}",
                f"-X {pkg}.gitTreeState=clean",
            ]
    elif tool.name == "helm":
        version = required_version(go_mod, "helm.sh/helm/v3")
        client_go = required_version(go_mod, "k8s.io/client-go").lstrip("v").split(".")
        k8s_major, k8s_minor = (
            str(int(client_go[0]) + 1),
            client_go[1],
        )  # client-go v0.37.x is Kubernetes 1.37
        flags += [
            f"-X helm.sh/helm/v3/internal/version.version={version}",
            "-X helm.sh/helm/v3/internal/version.gitTreeState=clean",
        ]
        for pkg in ("helm.sh/helm/v3/pkg/chartutil", "helm.sh/helm/v3/pkg/lint/rules"):
            flags += [f"-X {pkg}.k8sVersionMajor={k8s_major}", f"-X {pkg}.k8sVersionMinor={k8s_minor}"]
    elif tool.name == "promtool":
        # Prometheus 3.x is published as Go module v0.MMP.x: v0.316.0 is Prometheus 3.16.0.
        module_version = required_version(go_mod, "github.com/prometheus/prometheus").lstrip("v")
        _, combined, patch = module_version.split("-")[0].split(".")
        version = f"{int(combined) // 100}.{int(combined) % 100}.{patch}"
        flags += [
            f"-X github.com/prometheus/common/version.Version={version}",
            f"-X github.com/prometheus/common/version.Revision=v{module_version}",
            "-X github.com/prometheus/common/version.Branch=HEAD",
        ]
    return flags


def _build_one(tool: Tool, dest_dir: Path, log: Log) -> float:
    """``go build`` one tool into ``dest_dir`` atomically; returns the wall-clock seconds."""
    module = GO_ROOT / tool.module_dir
    env = dict(os.environ)
    env["CGO_ENABLED"] = "0"
    tmp = dest_dir / f".{tool.name}.partial"
    cmd = [
        go_command(),
        "build",
        "-mod=readonly",
        "-trimpath",
        *(["-tags", ",".join(tool.tags)] if tool.tags else []),
        "-ldflags=" + " ".join(["-s", "-w", *version_ldflags(tool)]),
        "-o",
        str(tmp),
        tool.package,
    ]
    log(f"building {tool.name} from {tool.package} (module {module.relative_to(REPO_ROOT)}) ...")
    started = time.monotonic()
    try:
        proc = subprocess.run(cmd, cwd=module, env=env, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise BuildError(f"cannot run {cmd[0]}: {exc.strerror}") from exc
    elapsed = time.monotonic() - started
    if proc.returncode != 0:
        tmp.unlink(missing_ok=True)
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        last = detail[-1] if detail else f"exit status {proc.returncode}"
        raise BuildError(f"go build of {tool.name} failed: {last}")
    tmp.rename(dest_dir / tool.name)
    log(f"built {tool.name} in {elapsed:.0f}s")
    return elapsed


def build(names: Iterable[str] = DEFAULT_TOOLS, *, log: Log = _stderr_log) -> dict[str, Path]:
    """Make every named binary available; build into the cache only what is neither overridden nor cached.

    Build times are recorded in ``<cache>/<key>/build-times.json``.
    """
    result: dict[str, Path] = {}
    for name in names:
        tool = TOOLS[name]
        dest = tool_cache_dir(name)
        if override_path(tool) is not None:
            result[name] = find_binary(name)
            log(f"{name}: using {result[name]} from the environment")
            continue
        with cachedir.locked(dest / ".lock"):
            target = dest / name
            if not _is_executable(target):
                seconds = _build_one(tool, dest, log)
                times_file = dest / "build-times.json"
                times = json.loads(times_file.read_text()) if times_file.exists() else {}
                times[name] = round(seconds, 1)
                times_file.write_text(json.dumps(times, indent=2, sort_keys=True) + "\n")
            else:
                log(f"{name}: cached at {target}")
        result[name] = target
    return result


# ----------------------------------------------------------------------------------------------
# Certificates and keys (openssl CLI)
# ----------------------------------------------------------------------------------------------


def _openssl(*args: str, cwd: Path) -> None:
    try:
        proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True, check=False)
    except OSError as exc:
        raise StartError(f"cannot run openssl (needed for the test certificates): {exc.strerror}") from exc
    if proc.returncode != 0:
        raise StartError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


def _ec_key(path: Path) -> None:
    _openssl(
        "genpkey",
        "-algorithm",
        "EC",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-out",
        str(path),
        cwd=path.parent,
    )
    path.chmod(0o600)


def _signed_cert(pki: Path, name: str, subject: str, extensions: str) -> None:
    """``name.key`` + ``name.crt`` signed by ``ca.crt``/``ca.key`` in ``pki``."""
    _ec_key(pki / f"{name}.key")
    _openssl("req", "-new", "-key", f"{name}.key", "-subj", subject, "-out", f"{name}.csr", cwd=pki)
    (pki / f"{name}.ext").write_text(extensions)
    _openssl(
        "x509",
        "-req",
        "-in",
        f"{name}.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "3650",
        "-sha256",
        "-extfile",
        f"{name}.ext",
        "-out",
        f"{name}.crt",
        cwd=pki,
    )
    (pki / f"{name}.csr").unlink()
    (pki / f"{name}.ext").unlink()


def make_pki(pki: Path, extra_ips: Iterable[str] = ()) -> None:
    """CA, API-server serving cert (127.0.0.1/localhost and ``extra_ips``), admin client cert,
    service-account key pair.

    Existing files are kept, so a restarted API server keeps presenting the same identity.
    """
    pki.mkdir(parents=True, exist_ok=True)
    if (pki / "admin.crt").exists():
        return
    _ec_key(pki / "ca.key")
    _openssl(
        "req",
        "-x509",
        "-new",
        "-key",
        "ca.key",
        "-subj",
        "/CN=oomsight-envtest-ca",
        "-days",
        "3650",
        "-sha256",
        "-addext",
        "basicConstraints=critical,CA:TRUE",
        "-addext",
        "keyUsage=critical,keyCertSign,cRLSign,digitalSignature",
        "-out",
        "ca.crt",
        cwd=pki,
    )
    _signed_cert(
        pki,
        "apiserver",
        "/CN=kube-apiserver",
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=serverAuth\n"
        "subjectAltName=IP:127.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
        "DNS:kubernetes.default.svc,IP:10.0.0.1" + "".join(f",IP:{ip}" for ip in extra_ips) + "\n",
    )
    _signed_cert(
        pki,
        "admin",
        f"/O=system:masters/CN={ADMIN_USER}",
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n",
    )
    _ec_key(pki / "sa.key")
    _openssl("pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)


def _b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


def kubeconfig_text(server: str, pki: Path, cert: str = "admin", user: str = ADMIN_USER) -> str:
    """A kubeconfig with the CA and a client certificate (``pki/<cert>.crt``, the admin's by default)."""
    return (
        "apiVersion: v1\n"
        "kind: Config\n"
        "clusters:\n"
        "- name: envtest\n"
        "  cluster:\n"
        f"    server: {server}\n"
        f"    certificate-authority-data: {_b64(pki / 'ca.crt')}\n"
        "users:\n"
        f"- name: {ADMIN_USER}\n"
        "  user:\n"
        f"    client-certificate-data: {_b64(pki / f'{cert}.crt')}\n"
        f"    client-key-data: {_b64(pki / f'{cert}.key')}\n"
        "contexts:\n"
        "- name: envtest\n"
        "  context:\n"
        "    cluster: envtest\n"
        f"    user: {ADMIN_USER}\n"
        "    namespace: default\n"
        "current-context: envtest\n"
    )


# ----------------------------------------------------------------------------------------------
# Processes
# ----------------------------------------------------------------------------------------------


def _ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999


def free_port(taken: Iterable[int] = ()) -> int:
    """A free loopback TCP port below the kernel's ephemeral range.

    Outgoing connections take their local ports from the ephemeral range, so a port picked below it
    stays free while a stopped API server is down and can be bound again on restart.
    """
    avoid = set(taken)
    low, _ = _ephemeral_range()
    lo, hi = (20000, low - 1) if low > 21000 else (1025, 65535)
    for _ in range(200):
        port = random.randint(lo, hi)  # noqa: S311 - not security relevant
        if port in avoid:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise StartError("no free loopback port found")


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, port)) == 0


def _pid_alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _pid_runs(pid: int, binary: str) -> bool:
    """True when ``pid`` is alive and its command line is ``binary`` (guards against PID reuse)."""
    if not _pid_alive(pid):
        return False
    try:
        argv0 = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0", 1)[0].decode()
    except OSError:
        return False
    return Path(argv0).name == Path(binary).name


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:])


@dataclass
class _Proc:
    """One managed process: its argv, log and PID file; the Popen only when this process started it."""

    name: str
    pid_file: Path
    log_file: Path
    popen: subprocess.Popen[bytes] | None = None

    def pid(self) -> int | None:
        if self.popen is not None:
            return self.popen.pid
        try:
            return int(self.pid_file.read_text().strip())
        except (OSError, ValueError):
            return None

    def running(self, binary: str) -> bool:
        if self.popen is not None:
            return self.popen.poll() is None
        pid = self.pid()
        return pid is not None and _pid_runs(pid, binary)

    def start(self, argv: list[str]) -> None:
        with self.log_file.open("ab") as log:
            log.write(f"\n=== {time.strftime('%Y-%m-%dT%H:%M:%S')} {' '.join(argv)}\n".encode())
            log.flush()
            try:
                self.popen = subprocess.Popen(
                    argv,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise StartError(f"cannot run {argv[0]}: {exc.strerror}") from exc
        self.pid_file.write_text(f"{self.popen.pid}\n")

    def stop(self, binary: str, timeout: float) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; always reaps a child of ours."""
        pid = self.pid()
        if pid is not None and (self.popen is not None or _pid_runs(pid, binary)):
            _signal(pid, signal.SIGTERM)
            if not self._wait(pid, timeout):
                _signal(pid, signal.SIGKILL)
                if not self._wait(pid, 10.0):
                    raise EnvtestError(f"{self.name} (pid {pid}) survived SIGKILL")
        self.popen = None
        self.pid_file.unlink(missing_ok=True)

    def _wait(self, pid: int, timeout: float) -> bool:
        if self.popen is not None:
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                return False
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not _pid_alive(pid):
                return True
            time.sleep(0.1)
        return False


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signum)


@dataclass
class _State:
    """What ``DIR/state.json`` remembers between ``hack/envtest`` invocations."""

    etcd_client_port: int
    etcd_peer_port: int
    apiserver_port: int
    binaries: dict[str, str] = field(default_factory=dict)
    # The address kube-apiserver binds and advertises; ``node`` switches on what a kubelet needs.
    host: str = "127.0.0.1"
    node: bool = False


class ControlPlane:
    """etcd + kube-apiserver in one directory.

    >>> cp = ControlPlane(tmpdir).start()   # doctest: +SKIP
    >>> cp.kubeconfig                        # doctest: +SKIP
    >>> cp.stop_apiserver(); cp.start_apiserver(); cp.stop()   # doctest: +SKIP

    Layout of ``directory``: ``pki/`` (CA, certs, service-account keys), ``etcd-data/``,
    ``kubeconfig``, ``state.json`` (ports, binaries), ``etcd.pid``/``kube-apiserver.pid`` and
    ``etcd.log``/``kube-apiserver.log``. A ControlPlane made for a directory another process started
    (``ControlPlane(dir)`` after ``hack/envtest up dir``) picks up its ports and PIDs from these files.
    """

    def __init__(
        self,
        directory: Path | str,
        *,
        binaries: Mapping[str, Path] | None = None,
        startup_timeout: float = DEFAULT_STARTUP_TIMEOUT,
        stop_timeout: float = DEFAULT_STOP_TIMEOUT,
        host: str = "127.0.0.1",
        node: bool = False,
    ) -> None:
        """``host`` and ``node`` apply to start(): the API server's address, and with ``node`` the
        set-up a real kubelet needs (Node authorizer, the admission plugins a real cluster runs,
        kubelet client certificates). A directory already started keeps what it recorded."""
        self.directory = Path(directory).resolve()
        self._host = host
        self._node = node
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout
        self._binaries = {k: Path(v) for k, v in (binaries or {}).items()}
        self._state: _State | None = self._load_state()
        self._etcd = _Proc("etcd", self.directory / "etcd.pid", self.directory / "etcd.log")
        self._apiserver = _Proc(
            "kube-apiserver", self.directory / "kube-apiserver.pid", self.directory / "kube-apiserver.log"
        )

    # -- public read-only facts ---------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def pki(self) -> Path:
        return self.directory / "pki"

    @property
    def etcd_data_dir(self) -> Path:
        return self.directory / "etcd-data"

    @property
    def apiserver_port(self) -> int:
        return self._require_state().apiserver_port

    @property
    def server_url(self) -> str:
        return f"https://{self._require_state().host}:{self.apiserver_port}"

    @property
    def etcd_url(self) -> str:
        return f"http://127.0.0.1:{self._require_state().etcd_client_port}"

    @property
    def ca_file(self) -> Path:
        return self.pki / "ca.crt"

    @property
    def started(self) -> bool:
        """True once start() has recorded ports in this directory (by this or another process)."""
        return self._state is not None

    def binary(self, name: str) -> Path:
        if name not in self._binaries:
            recorded = self._state.binaries.get(name) if self._state else None
            self._binaries[name] = Path(recorded) if recorded else find_binary(name)
        return self._binaries[name]

    def etcd_running(self) -> bool:
        return self._etcd.running(str(self.binary("etcd")))

    def apiserver_running(self) -> bool:
        return self._apiserver.running(str(self.binary("kube-apiserver")))

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> ControlPlane:
        """Start etcd and kube-apiserver on fresh loopback ports; return once ``/readyz`` is ok."""
        if self._state is not None and (self.etcd_running() or self.apiserver_running()):
            raise StartError(f"a control plane is already running in {self.directory}")
        binaries = {name: self.binary(name) for name in CONTROL_PLANE_TOOLS}
        self.directory.mkdir(parents=True, exist_ok=True)
        make_pki(self.pki, [self._host] if self._host != "127.0.0.1" else [])
        last_error: StartError | None = None
        for _attempt in range(3):  # a picked port can be taken before the server binds it
            ports: list[int] = []
            for _ in range(3):
                ports.append(free_port(ports))
            self._state = _State(
                ports[0],
                ports[1],
                ports[2],
                {k: str(v) for k, v in binaries.items()},
                host=self._host,
                node=self._node,
            )
            self._save_state()
            self.kubeconfig.write_text(kubeconfig_text(self.server_url, self.pki))
            self.kubeconfig.chmod(0o600)
            shutil.rmtree(self.etcd_data_dir, ignore_errors=True)
            try:
                self._start_etcd()
                self.start_apiserver()
            except StartError as exc:
                last_error = exc
                self._stop_all(remove_data=True)
                if "address already in use" not in str(exc):
                    raise
                continue
            return self
        assert last_error is not None
        raise last_error

    def stop(self) -> None:
        """Stop kube-apiserver and etcd (SIGTERM, SIGKILL after ``stop_timeout``); remove etcd's data."""
        self._stop_all(remove_data=True)

    def stop_apiserver(self) -> None:
        """Stop only kube-apiserver; etcd, certificates, port and kubeconfig stay."""
        self._apiserver.stop(str(self.binary("kube-apiserver")), self.stop_timeout)

    def start_apiserver(self) -> None:
        """(Re)start kube-apiserver on its recorded port against the running etcd; wait for ``/readyz``."""
        if self.apiserver_running():
            raise StartError(f"kube-apiserver is already running (pid {self._apiserver.pid()})")
        if not self.etcd_running():
            raise StartError(f"etcd is not running in {self.directory}; use start()")
        port = self.apiserver_port
        deadline = time.monotonic() + 10.0
        # A previous server may still be closing its listener.
        while _port_open(port, self._require_state().host):
            if time.monotonic() > deadline:
                raise StartError(f"port {port} is still in use by another process")
            time.sleep(0.2)
        self._apiserver.start(self._apiserver_argv())
        self._wait_ready(
            self._apiserver, str(self.binary("kube-apiserver")), self.readyz, "kube-apiserver /readyz"
        )

    def restart_apiserver(self) -> None:
        self.stop_apiserver()
        self.start_apiserver()

    def readyz(self) -> bool:
        """True when ``GET /readyz`` answers 200 ``ok`` (as the admin user)."""
        return self._get(f"{self.server_url}/readyz") == (200, "ok")

    def ssl_context(self) -> ssl.SSLContext:
        """Trusts the control plane's CA and presents the admin client certificate."""
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return context

    def __enter__(self) -> ControlPlane:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # -- internals ----------------------------------------------------------------------------

    def _require_state(self) -> _State:
        if self._state is None:
            raise EnvtestError(f"no control plane has been started in {self.directory}")
        return self._state

    def _load_state(self) -> _State | None:
        path = self.directory / "state.json"
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise EnvtestError(f"unreadable {path}: {exc}") from exc
        return _State(**data)

    def _save_state(self) -> None:
        (self.directory / "state.json").write_text(json.dumps(asdict(self._require_state()), indent=2) + "\n")

    def _etcd_argv(self) -> list[str]:
        state = self._require_state()
        client = f"http://127.0.0.1:{state.etcd_client_port}"
        peer = f"http://127.0.0.1:{state.etcd_peer_port}"
        return [
            str(self.binary("etcd")),
            "--name=envtest",
            f"--data-dir={self.etcd_data_dir}",
            f"--listen-client-urls={client}",
            f"--advertise-client-urls={client}",
            f"--listen-peer-urls={peer}",
            f"--initial-advertise-peer-urls={peer}",
            f"--initial-cluster=envtest={peer}",
            "--initial-cluster-state=new",
            "--unsafe-no-fsync=true",
            "--log-level=warn",
        ]

    def _apiserver_argv(self) -> list[str]:
        state = self._require_state()
        pki = self.pki
        if state.node:
            # What a real cluster runs: the Node authorizer for the kubelet's system:node identity,
            # the default admission plugins (ServiceAccount included: kube-controller-manager creates
            # the "default" ServiceAccounts) plus NodeRestriction, and a client certificate for the
            # API server's own calls to the kubelet (logs, exec, proxy).
            access = [
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                f"--kubelet-client-certificate={pki / 'admin.crt'}",
                f"--kubelet-client-key={pki / 'admin.key'}",
                "--kubelet-preferred-address-types=InternalIP",
            ]
        else:
            access = [
                "--authorization-mode=RBAC",
                # No controller-manager runs, so nothing would create the "default" ServiceAccount.
                "--disable-admission-plugins=ServiceAccount",
            ]
        return [
            str(self.binary("kube-apiserver")),
            f"--etcd-servers=http://127.0.0.1:{state.etcd_client_port}",
            f"--secure-port={state.apiserver_port}",
            f"--bind-address={state.host}",
            f"--advertise-address={state.host}",
            f"--cert-dir={self.directory / 'apiserver-certs'}",
            f"--tls-cert-file={pki / 'apiserver.crt'}",
            f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
            f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            *access,
            "--allow-privileged=true",
            "--enable-priority-and-fairness=false",
            "--profiling=false",
            "--v=1",
        ]

    def _start_etcd(self) -> None:
        self._etcd.start(self._etcd_argv())
        self._wait_ready(self._etcd, str(self.binary("etcd")), self._etcd_healthy, "etcd /health")

    def _etcd_healthy(self) -> bool:
        answer = self._get(f"{self.etcd_url}/health", tls=False)
        if answer is None or answer[0] != 200:
            return False
        try:
            return bool(json.loads(answer[1]).get("health") == "true")
        except ValueError:
            return False

    def _get(self, url: str, *, tls: bool = True) -> tuple[int, str] | None:
        context = self.ssl_context() if tls else None
        try:
            with urllib.request.urlopen(url, timeout=2.0, context=context) as response:  # noqa: S310
                return response.status, response.read().decode(errors="replace").strip()
        except urllib.error.HTTPError as exc:
            with exc:
                return exc.code, exc.read().decode(errors="replace").strip()
        except (OSError, ssl.SSLError):
            return None

    def _wait_ready(self, proc: _Proc, binary: str, probe: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if not proc.running(binary):
                raise StartError(
                    f"{proc.name} exited during start-up; last lines of {proc.log_file}:\n"
                    f"{_tail(proc.log_file)}"
                )
            if probe():
                return
            if time.monotonic() > deadline:
                raise StartError(
                    f"{what} not ok after {self.startup_timeout:.0f}s; last lines of {proc.log_file}:\n"
                    f"{_tail(proc.log_file)}"
                )
            time.sleep(0.25)

    def _stop_all(self, *, remove_data: bool) -> None:
        errors: list[str] = []
        for proc in (self._apiserver, self._etcd):
            try:
                proc.stop(str(self.binary(proc.name)), self.stop_timeout)
            except EnvtestError as exc:
                errors.append(str(exc))
        if remove_data:
            shutil.rmtree(self.etcd_data_dir, ignore_errors=True)
            shutil.rmtree(self.directory / "apiserver-certs", ignore_errors=True)
        if errors:
            raise EnvtestError("; ".join(errors))


# ----------------------------------------------------------------------------------------------
# Command line (hack/envtest)
# ----------------------------------------------------------------------------------------------

USAGE = """usage: hack/envtest COMMAND [ARGS]

  build [--print-env] [--node]
                           build or reuse the pinned binaries; print NAME=path lines
                           (--print-env: 'export KUBEBUILDER_ASSETS=...' and 'export TEST_ASSET_*=...'
                           lines instead, for eval "$(hack/envtest build --print-env)";
                           --node: also the node's kube-controller-manager, kube-scheduler, kubelet,
                           kube-proxy)
  up DIR                   start etcd + kube-apiserver in DIR; print KUBECONFIG=DIR/kubeconfig
  up --node DIR            a real single-node cluster (hack/envtest_node.py): the control plane plus
                           kube-controller-manager, kube-scheduler, containerd, kubelet, kube-proxy;
                           returns when the Node is Ready
  down DIR                 stop everything started in DIR and remove its data (for a node also its
                           Pods' containers, cgroups, mounts, netns and iptables rules)
  stop-apiserver DIR       stop only kube-apiserver
  start-apiserver DIR      start kube-apiserver again on the same port
  restart-apiserver DIR    stop-apiserver + start-apiserver
  status DIR               print what is running in DIR
"""


def _print_paths(paths: Mapping[str, Path], out: TextIO, *, as_env: bool) -> None:
    """``NAME=path`` lines, or with ``as_env`` ``export VAR=path`` lines a shell can ``eval``."""
    if not as_env:
        for name, path in paths.items():
            print(f"{name}={path}", file=out)
        return
    apiserver, etcd = paths.get("kube-apiserver"), paths.get("etcd")
    if apiserver and etcd and apiserver.parent == etcd.parent:
        print(f"export KUBEBUILDER_ASSETS={shlex.quote(str(apiserver.parent))}", file=out)
    for name, path in paths.items():
        print(f"export {TOOLS[name].env_var}={shlex.quote(str(path))}", file=out)


def main(argv: list[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE, end="", file=out if args else sys.stderr)
        return 0 if args else 2
    command, rest = args[0], args[1:]
    try:
        if command == "build":
            extra = [a for a in rest if a not in ("--print-env", "--node")]
            if extra:
                raise EnvtestError(f"build: unexpected arguments {extra}")
            names = (*DEFAULT_TOOLS, *NODE_TOOLS) if "--node" in rest else DEFAULT_TOOLS
            _print_paths(build(names), out, as_env="--print-env" in rest)
            return 0
        node = command in ("up", "down", "status") and "--node" in rest
        rest = [a for a in rest if a != "--node"] if node else rest
        if len(rest) != 1:
            print(USAGE, end="", file=sys.stderr)
            return 2
        directory = Path(rest[0])
        if node or (command in ("down", "status") and (directory / "node.json").exists()):
            return _node_main(command, directory, out)
        if command == "up":
            binaries = build(CONTROL_PLANE_TOOLS)
            cp = ControlPlane(directory, binaries=binaries).start()
            print(f"KUBECONFIG={cp.kubeconfig}", file=out)
            print(f"APISERVER={cp.server_url}", file=out)
            return 0
        cp = ControlPlane(directory)
        if command == "down":
            if not cp.started:
                _stderr_log(f"nothing was started in {cp.directory}")
                return 0
            cp.stop()
        elif command == "stop-apiserver":
            cp.stop_apiserver()
        elif command == "start-apiserver":
            cp.start_apiserver()
            print(f"KUBECONFIG={cp.kubeconfig}", file=out)
        elif command == "restart-apiserver":
            cp.restart_apiserver()
            print(f"KUBECONFIG={cp.kubeconfig}", file=out)
        elif command == "status":
            print(f"etcd={'running' if cp.etcd_running() else 'stopped'} {cp.etcd_url}", file=out)
            state = "running" if cp.apiserver_running() else "stopped"
            print(f"kube-apiserver={state} {cp.server_url}", file=out)
        else:
            print(USAGE, end="", file=sys.stderr)
            return 2
    except EnvtestError as exc:
        first, *_more = str(exc).splitlines() or [type(exc).__name__]
        _stderr_log(f"error: {first}")
        if _more:
            print("\n".join(_more), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


def _node_main(command: str, directory: Path, out: TextIO) -> int:
    """``up --node`` / ``down`` / ``status`` of a node directory (hack/envtest_node.py)."""
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import envtest_node

    cluster = envtest_node.NodeCluster(directory)
    if command == "up":
        started = time.monotonic()
        cluster.up()
        _stderr_log(f"node {envtest_node.NODE_NAME} Ready after {time.monotonic() - started:.0f}s")
        print(f"KUBECONFIG={cluster.kubeconfig}", file=out)
        print(f"APISERVER={cluster.cp.server_url}", file=out)
    elif command == "down":
        cluster.down()
    else:
        for name in ("etcd", "kube-apiserver"):
            running = cluster.cp.etcd_running() if name == "etcd" else cluster.cp.apiserver_running()
            print(f"{name}={'running' if running else 'stopped'}", file=out)
        for name in cluster.COMPONENTS:
            print(f"{name}={'running' if cluster.running(name) else 'stopped'}", file=out)
    return 0


__all__ = [
    "CONTROL_PLANE_TOOLS",
    "DEFAULT_TOOLS",
    "NODE_TOOLS",
    "TOOLS",
    "BuildError",
    "ControlPlane",
    "EnvtestError",
    "MissingBinaryError",
    "StartError",
    "Tool",
    "build",
    "cache_dir",
    "cache_key",
    "cache_root",
    "find_binaries",
    "find_binary",
    "free_port",
    "kubeconfig_text",
    "main",
    "make_pki",
    "tool_cache_dir",
]
