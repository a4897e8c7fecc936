"""A real single-node Kubernetes cluster on this machine: ``hack/envtest up --node DIR``.

On top of envtest_lib's etcd + kube-apiserver it runs kube-controller-manager, kube-scheduler, a
kubelet and kube-proxy (all from the pinned ``k8s.io/kubernetes``), and containerd + runc + the CNI
plugins from Debian's packages, each with its own files under ``DIR`` (never the system containerd).

Networking stays on this machine: Pods sit on the bridge ``oomsight0`` (``10.244.0.0/24``, no
masquerade, a FORWARD rule that drops whatever would leave the bridge), and the API server listens
on the bridge's own address, which the Pods' network namespaces reach through their default route.

Stdlib only, like envtest_lib (which it imports: run it through ``hack/envtest``).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import envtest_lib
from envtest_lib import EnvtestError, StartError, _Proc, _signed_cert, _tail, free_port, kubeconfig_text

NODE_NAME = "oomsight-node"
BRIDGE = "oomsight0"
POD_CIDR = "10.244.0.0/24"
GATEWAY = "10.244.0.1"  # the bridge's address: the API server, the kubelet and kube-proxy bind here
PAUSE_IMAGE = "localhost/oomsight-pause:1"
PROJECT_IMAGE = "localhost/oomsight:dev"
K8S_NAMESPACE = "k8s.io"  # the containerd namespace the kubelet (CRI) uses
CGROUP_ROOT = Path("/sys/fs/cgroup")
KUBEPODS = "kubepods"
NETNS_DIR = Path("/run/netns")
# One node per machine: the bridge, its address and the kubepods cgroups are machine-wide.
OWNER_FILE = Path("/run/oomsight-envtest-node")
HACK_NODE = envtest_lib.REPO_ROOT / "hack" / "node"
DEFAULT_ALLOCATABLE = 4 << 30  # the kubepods (node allocatable) memory limit unless a test asks
READY_TIMEOUT = 180.0
PAUSE_RECIPE = "gcc -static -Os pause.c; buildah from scratch, /pause, docker-archive v1"

Log = Callable[[str], None]


def node_cache_root() -> Path:
    """``~/.cache/oomsight/node`` (next to envtest's binaries; ``OOMSIGHT_NODE_CACHE`` moves it)."""
    override = os.environ.get("OOMSIGHT_NODE_CACHE")
    if override:
        return Path(override)
    return envtest_lib.cache_root().parent / "node"


def _run(
    cmd: list[str], what: str, *, check: bool = True, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    except OSError as exc:
        raise StartError(f"{what}: cannot run {cmd[0]}: {exc.strerror}") from exc
    if check and proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        raise StartError(f"{what} failed: {detail[-1] if detail else f'exit status {proc.returncode}'}")
    return proc


# ----------------------------------------------------------------------------------------------
# Host packages (containerd, runc, CNI plugins, buildah) from Debian
# ----------------------------------------------------------------------------------------------

# command -> Debian package. containerd 1.6.20 is bookworm's; it lacks the RuntimeConfig CRI call, so
# kubelet 1.36 logs a warning and uses its own cgroupDriver (k/k #136846), which is what we set.
PACKAGES = {
    "containerd": "containerd",
    "ctr": "containerd",
    "runc": "runc",
    "buildah": "buildah",
    "gcc": "gcc",
    "iptables": "iptables",
    "conntrack": "conntrack",
    "dnsmasq": "dnsmasq-base",
}
CNI_BIN_DIR = Path("/usr/lib/cni")
CNI_PLUGINS = ("bridge", "host-local", "loopback")


def ensure_packages(log: Log) -> None:
    """``apt-get install`` whatever of containerd, runc, the CNI plugins, buildah, gcc is missing."""
    missing = sorted({pkg for cmd, pkg in PACKAGES.items() if shutil.which(cmd) is None})
    if any(not (CNI_BIN_DIR / p).exists() for p in CNI_PLUGINS):
        missing.append("containernetworking-plugins")
    if not missing:
        return
    if os.environ.get("OOMSIGHT_NODE_NO_APT"):
        raise StartError(f"missing Debian packages {' '.join(missing)} (apt-get install them)")
    log(f"apt-get install {' '.join(missing)} ...")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    update = _run(["apt-get", "update", "-q"], "apt-get update", check=False, env=env)
    if update.returncode != 0:
        log("apt-get update failed; trying the install anyway")
    _run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing], "apt-get install", env=env)


# ----------------------------------------------------------------------------------------------
# The pause image (our own hack/node/pause.c, static, in an image built from scratch by buildah)
# ----------------------------------------------------------------------------------------------


def pause_image(log: Log) -> Path:
    """A docker-archive of ``localhost/oomsight-pause:1``, cached under the node cache by its inputs."""
    source = HACK_NODE / "pause.c"
    key = hashlib.sha256(PAUSE_RECIPE.encode() + b"\0" + source.read_bytes()).hexdigest()[:16]
    archive = node_cache_root() / f"pause-{key}.tar"
    if archive.exists():
        return archive
    archive.parent.mkdir(parents=True, exist_ok=True)
    log("building the pause image (gcc -static, buildah from scratch) ...")
    with tempfile.TemporaryDirectory(prefix="oomsight-pause-") as tmp:
        work = Path(tmp)
        _run(["gcc", "-static", "-Os", "-Wall", "-o", str(work / "pause"), str(source)], "gcc pause.c")
        storage = ["--root", str(work / "storage"), "--runroot", str(work / "run"), "--storage-driver", "vfs"]
        buildah = ["buildah", *storage]
        ctr = _run([*buildah, "from", "scratch"], "buildah from scratch").stdout.strip()
        _run([*buildah, "copy", "--chmod", "0755", ctr, str(work / "pause"), "/pause"], "buildah copy")
        _run(
            [*buildah, "config", "--entrypoint", '["/pause"]', "--user", "65535:65535", ctr],
            "buildah config",
        )
        _run([*buildah, "commit", "--quiet", ctr, PAUSE_IMAGE], "buildah commit")
        partial = archive.with_suffix(".partial")
        _run([*buildah, "push", PAUSE_IMAGE, f"docker-archive:{partial}:{PAUSE_IMAGE}"], "buildah push")
        _run([*buildah, "rm", "--all"], "buildah rm", check=False)
        _run([*buildah, "rmi", "--all", "--force"], "buildah rmi", check=False)
        partial.rename(archive)
    return archive


def project_image(log: Log) -> Path | None:
    """The project's image archive from hack/images_lib.py (built from the Dockerfile), when present."""
    lib = envtest_lib.REPO_ROOT / "hack" / "images_lib.py"
    if not lib.exists():
        return None
    import importlib.util

    spec = importlib.util.spec_from_file_location("oomsight_hack_images_lib", lib)
    if spec is None or spec.loader is None:
        return None
    module = importlib.util.module_from_spec(spec)
    import sys

    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    try:
        path: Path = module.project_image(log=log)
    except module.ImageError as exc:
        raise StartError(f"project image: {exc}") from exc
    return path


# ----------------------------------------------------------------------------------------------
# Files the node's components read
# ----------------------------------------------------------------------------------------------


def containerd_config(d: Path) -> str:
    c = d / "containerd"
    return f"""version = 2
root = "{c / "root"}"
state = "{c / "state"}"
oom_score = 0

[grpc]
  address = "{c / "containerd.sock"}"

[ttrpc]
  address = "{c / "containerd.sock.ttrpc"}"

[debug]
  level = "warn"

[plugins]
  [plugins."io.containerd.internal.v1.opt"]
    path = "{c / "opt"}"
  [plugins."io.containerd.grpc.v1.cri"]
    sandbox_image = "{PAUSE_IMAGE}"
    stream_server_address = "127.0.0.1"
    stream_server_port = "0"
    enable_selinux = false
    [plugins."io.containerd.grpc.v1.cri".containerd]
      snapshotter = "overlayfs"
      default_runtime_name = "runc"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
        runtime_type = "io.containerd.runc.v2"
        [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
          BinaryName = "{d / "bin" / "runc"}"
          Root = "{c / "runc"}"
          SystemdCgroup = false
    [plugins."io.containerd.grpc.v1.cri".cni]
      bin_dir = "{CNI_BIN_DIR}"
      conf_dir = "{d / "cni" / "net.d"}"
"""


def cni_config(d: Path) -> str:
    return json.dumps(
        {
            "cniVersion": "1.0.0",
            "name": "oomsight",
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": BRIDGE,
                    "isGateway": True,
                    "isDefaultGateway": True,
                    "ipMasq": False,  # nothing leaves this machine, so nothing needs translating
                    "hairpinMode": True,
                    "ipam": {
                        "type": "host-local",
                        "ranges": [[{"subnet": POD_CIDR, "gateway": GATEWAY}]],
                        "dataDir": str(d / "cni" / "ipam"),
                    },
                }
            ],
        },
        indent=2,
    )


def kubelet_config(d: Path, state: NodeState) -> str:
    return f"""apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
address: {GATEWAY}
port: {state.kubelet_port}
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: {state.kubelet_healthz_port}
authentication:
  anonymous: {{enabled: false}}
  webhook: {{enabled: true}}
  x509: {{clientCAFile: {d / "pki" / "ca.crt"}}}
authorization: {{mode: Webhook}}
containerRuntimeEndpoint: unix://{d / "containerd" / "containerd.sock"}
cgroupDriver: cgroupfs
cgroupRoot: /
failCgroupV1: false
failSwapOn: false
oomScoreAdj: 0
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard:
  memory.available: "1Mi"
  nodefs.available: "1%"
  imagefs.available: "1%"
  nodefs.inodesFree: "1%"
enforceNodeAllocatable: [pods]
kubeReserved: {{memory: "{state.kube_reserved}"}}
systemReserved: {{memory: "{state.system_reserved}"}}
clusterDomain: cluster.local
clusterDNS: ["{GATEWAY}"]
resolvConf: /etc/resolv.conf
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
registerNode: true
syncFrequency: 10s
nodeStatusReportFrequency: 20s
"""


def kube_proxy_config(d: Path, state: NodeState) -> str:
    return f"""apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {{kubeconfig: {d / "kubeconfig"}}}
hostnameOverride: {NODE_NAME}
mode: iptables
clusterCIDR: {POD_CIDR}
nodePortAddresses: ["{GATEWAY}/32"]
iptables:
  masqueradeAll: true
  localhostNodePorts: false
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
healthzBindAddress: 127.0.0.1:{state.proxy_healthz_port}
metricsBindAddress: 127.0.0.1:{state.proxy_metrics_port}
oomScoreAdj: 0
"""


@dataclass
class NodeState:
    """What ``DIR/node.json`` remembers between ``hack/envtest`` invocations."""

    kubelet_port: int = 0
    kubelet_healthz_port: int = 0
    proxy_healthz_port: int = 0
    proxy_metrics_port: int = 0
    kube_reserved: str = "0"
    system_reserved: str = "0"
    ip_forward: str = "0"  # /proc/sys/net/ipv4/ip_forward before up, restored by down
    cgroup_made_shared: bool = False  # up made /sys/fs/cgroup a shared mount; down makes it private again
    netns_before: list[str] = field(default_factory=list)  # /run/netns entries not ours


# ----------------------------------------------------------------------------------------------
# The cluster
# ----------------------------------------------------------------------------------------------


class NodeCluster:
    """etcd + kube-apiserver (envtest_lib.ControlPlane) plus everything a single real node needs.

    >>> node = NodeCluster(tmpdir).up()      # doctest: +SKIP
    >>> node.kubeconfig                       # doctest: +SKIP
    >>> node.set_allocatable(300 << 20)       # doctest: +SKIP  (restarts the kubelet)
    >>> node.down()                           # doctest: +SKIP
    """

    COMPONENTS = (
        "dnsmasq",
        "containerd",
        "kube-controller-manager",
        "kube-scheduler",
        "kubelet",
        "kube-proxy",
    )

    def __init__(self, directory: Path | str, *, log: Log = envtest_lib._stderr_log) -> None:
        self.directory = Path(directory).resolve()
        self.log = log
        self.cp = envtest_lib.ControlPlane(self.directory, host=GATEWAY, node=True)
        self.procs = {
            name: _Proc(name, self.directory / f"{name}.pid", self.directory / f"{name}.log")
            for name in self.COMPONENTS
        }
        self.state = self._load()

    # -- facts ------------------------------------------------------------------------------

    @property
    def kubeconfig(self) -> Path:
        return self.directory / "kubeconfig"

    @property
    def containerd_socket(self) -> Path:
        return self.directory / "containerd" / "containerd.sock"

    def binary(self, name: str) -> str:
        if name in ("containerd", "dnsmasq"):
            return shutil.which(name) or f"/usr/sbin/{name}"
        return str(self.cp.binary(name))

    def running(self, name: str) -> bool:
        return self.procs[name].running(self.binary(name))

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``ctr --address <our socket> -n k8s.io ARGS``."""
        return _run(
            ["ctr", "--address", str(self.containerd_socket), "-n", K8S_NAMESPACE, *args],
            f"ctr {args[0]}",
            check=check,
            timeout=300,
        )

    # -- lifecycle ----------------------------------------------------------------------------

    def up(self, *, allocatable: int = DEFAULT_ALLOCATABLE) -> NodeCluster:
        """Start every part; return once the Node is Ready. On failure, tear down what started."""
        if self.cp.started and (self.cp.apiserver_running() or self.cp.etcd_running()):
            raise StartError(f"a cluster is already running in {self.directory}; hack/envtest down it first")
        other = _read(OWNER_FILE)
        if other and other != str(self.directory) and NodeCluster(other).anything_running():
            raise StartError(f"a node already runs on this machine from {other}; hack/envtest down {other}")
        ensure_packages(self.log)
        binaries = envtest_lib.build(
            (*envtest_lib.CONTROL_PLANE_TOOLS, *envtest_lib.NODE_TOOLS), log=self.log
        )
        pause = pause_image(self.log)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.state = NodeState(
            ip_forward=_read(Path("/proc/sys/net/ipv4/ip_forward")) or "0",
            netns_before=sorted(p.name for p in NETNS_DIR.glob("*")) if NETNS_DIR.exists() else [],
        )
        self._reserve(allocatable)
        self._save()
        OWNER_FILE.write_text(str(self.directory))
        try:
            self._cgroup_mount_shared()
            self._bridge_up()
            self.cp = envtest_lib.ControlPlane(self.directory, binaries=binaries, host=GATEWAY, node=True)
            self.cp.start()
            self._write_files()
            self._start("dnsmasq", self._dnsmasq_argv())
            self._start(
                "containerd", [self.binary("containerd"), "--config", str(self.directory / "containerd.toml")]
            )
            self._wait("containerd", lambda: self.ctr("version", check=False).returncode == 0, 60)
            self.import_image(pause)
            project = project_image(self.log)
            if project is not None:
                self.import_image(project)
            for extra in os.environ.get("OOMSIGHT_NODE_IMAGES", "").split(":"):
                if extra:  # more image archives (docker-archive or OCI) for the node, e.g. a workload
                    self.import_image(Path(extra))
            self._start_controllers()
            self._start_kubelet()
            self._start_kube_proxy()
            self.wait_node_ready()
        except BaseException:
            self.log("up failed; tearing down what was started")
            with contextlib.suppress(Exception):
                self.down()
            raise
        return self

    def down(self) -> None:
        """Stop every part, remove the Pods' containers, cgroups, mounts, netns and iptables rules."""
        errors: list[str] = []

        def attempt(what: str, action: Callable[[], object]) -> None:
            try:
                action()
            except Exception as exc:  # noqa: BLE001 - down goes on and reports every failure
                errors.append(f"{what}: {exc}")

        # Nothing new may be scheduled or recreated while the Pods go away.
        for name in ("kube-scheduler", "kube-controller-manager"):
            attempt(f"stop {name}", lambda name=name: self._stop(name))
        if self.running("kubelet") and self.cp.started and self.cp.apiserver_running():
            attempt("delete pods", self._delete_all_pods)
        for name in ("kubelet", "kube-proxy", "dnsmasq"):
            attempt(f"stop {name}", lambda name=name: self._stop(name))
        if self.running("containerd"):
            attempt("remove containers", self._remove_containers)
        attempt("stop containerd", lambda: self._stop("containerd"))
        attempt("kill leftover pod processes", _kill_kubepods)
        attempt("remove kubepods cgroups", _remove_kubepods)
        attempt("unmount", self._unmount_all)
        attempt("remove netns", self._remove_netns)
        attempt("iptables", self._iptables_cleanup)
        attempt("bridge", self._bridge_down)
        if self.state.cgroup_made_shared:
            attempt("cgroup mount", lambda: _run(["mount", "--make-rprivate", str(CGROUP_ROOT)], "mount"))
        if self.cp.started:
            attempt("control plane", self.cp.stop)
        for sub in ("containerd", "kubelet", "cni"):
            shutil.rmtree(self.directory / sub, ignore_errors=True)
        if _read(OWNER_FILE) == str(self.directory):
            OWNER_FILE.unlink(missing_ok=True)
        if errors:
            raise EnvtestError("down: " + "; ".join(errors))

    def anything_running(self) -> bool:
        """True while any process of this node (or its control plane) still runs."""
        if self.cp.started and (self.cp.etcd_running() or self.cp.apiserver_running()):
            return True
        return any(self.running(name) for name in self.COMPONENTS)

    def wait_node_ready(self, timeout: float = READY_TIMEOUT) -> None:
        def ready() -> bool:
            node = self.kubectl_json("get", "node", NODE_NAME, check=False)
            conditions = (node or {}).get("status", {}).get("conditions", [])
            return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)

        self._wait("kubelet", ready, timeout, what=f"Node {NODE_NAME} Ready")

    def set_allocatable(self, memory: int) -> None:
        """Restart the kubelet with systemReserved grown so the kubepods limit is about ``memory``."""
        self._stop("kubelet")
        self._reserve(memory)
        self._save()
        self._write_kubelet_config()
        self._start_kubelet()
        self.wait_node_ready()

    def import_image(self, archive: Path) -> None:
        """``ctr -n k8s.io images import`` (the kubelet sees only that namespace)."""
        self.log(f"importing {archive.name} into containerd ({K8S_NAMESPACE}) ...")
        self.ctr("images", "import", "--no-unpack", str(archive))

    def kubectl_json(self, *args: str, check: bool = True) -> dict[str, Any] | None:
        proc = _run(
            ["kubectl", f"--kubeconfig={self.kubeconfig}", "--request-timeout=10s", *args, "-o", "json"],
            "kubectl",
            check=check,
            timeout=60,
        )
        if proc.returncode != 0:
            return None
        loaded: dict[str, Any] = json.loads(proc.stdout)
        return loaded

    # -- internals: set-up --------------------------------------------------------------------

    def _reserve(self, allocatable: int) -> None:
        """systemReserved = capacity - ``allocatable``: the kubelet sets the kubepods cgroup's memory
        limit to capacity minus the reservations, so kubepods' limit is ``allocatable``."""
        self.state.kube_reserved = "0"
        self.state.system_reserved = str(max(0, _mem_total() - allocatable))

    def _cgroup_mount_shared(self) -> None:
        """Make ``/sys/fs/cgroup`` a shared mount, as systemd leaves every mount on a real node.

        The chart mounts it into the agent with ``mountPropagation: HostToContainer``, which the runtime
        refuses ("is not a shared or slave mount") on a host whose mounts are private, as in a container.
        """
        if _propagation(str(CGROUP_ROOT)) == "private":
            _run(["mount", "--make-rshared", str(CGROUP_ROOT)], "mount --make-rshared /sys/fs/cgroup")
            self.state.cgroup_made_shared = True
            self._save()

    def _bridge_up(self) -> None:
        if not Path(f"/sys/class/net/{BRIDGE}").exists():
            _run(["ip", "link", "add", BRIDGE, "type", "bridge"], "ip link add")
        addrs = _run(["ip", "-4", "-o", "addr", "show", "dev", BRIDGE], "ip addr").stdout
        if f"{GATEWAY}/" not in addrs:
            _run(["ip", "addr", "add", f"{GATEWAY}/24", "dev", BRIDGE], "ip addr add")
        _run(["ip", "link", "set", BRIDGE, "up"], "ip link set up")
        # The bridge plugin turns ip_forward on (isGateway). Nothing may leave the bridge for another
        # interface, in either direction: Pods talk to this host and to each other only.
        for rule in self._forward_rules():
            if _run(["iptables", "-C", *rule], "iptables -C", check=False).returncode != 0:
                _run(["iptables", "-I", *rule], "iptables -I")

    @staticmethod
    def _forward_rules() -> list[list[str]]:
        comment = ["-m", "comment", "--comment", "oomsight envtest node: pods stay on this machine"]
        return [
            ["FORWARD", "-i", BRIDGE, "!", "-o", BRIDGE, *comment, "-j", "DROP"],
            ["FORWARD", "!", "-i", BRIDGE, "-o", BRIDGE, *comment, "-j", "DROP"],
        ]

    def _write_files(self) -> None:
        d = self.directory
        pki = d / "pki"
        if not (pki / "kubelet.crt").exists():
            _signed_cert(
                pki,
                "kubelet",
                f"/O=system:nodes/CN=system:node:{NODE_NAME}",
                "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
                "extendedKeyUsage=clientAuth\n",
            )
        (d / "kubelet.kubeconfig").write_text(
            kubeconfig_text(self.cp.server_url, pki, cert="kubelet", user=f"system:node:{NODE_NAME}")
        )
        (d / "kubelet.kubeconfig").chmod(0o600)
        for sub in ("bin", "cni/net.d", "cni/ipam", "containerd", "kubelet"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        shim = d / "bin" / "runc"
        shutil.copyfile(HACK_NODE / "runc-shim", shim)
        shim.chmod(0o755)
        (d / "containerd.toml").write_text(containerd_config(d))
        (d / "cni" / "net.d" / "10-oomsight.conflist").write_text(cni_config(d))
        st = self.state
        st.kubelet_port, st.kubelet_healthz_port, st.proxy_healthz_port, st.proxy_metrics_port = _ports(4)
        self._save()
        self._write_kubelet_config()
        (d / "kube-proxy.yaml").write_text(kube_proxy_config(d, st))

    def _write_kubelet_config(self) -> None:
        (self.directory / "kubelet.yaml").write_text(kubelet_config(self.directory, self.state))

    def _dnsmasq_argv(self) -> list[str]:
        """Cluster DNS, the part of it the chart needs: ``kubernetes.default.svc`` (kopf's in-cluster
        login uses that name). dnsmasq (Debian's dnsmasq-base) on the bridge address only, authoritative
        for cluster.local, no upstream servers: no query ever leaves this machine."""
        service_ip = envtest_lib.SERVICE_CLUSTER_IP_RANGE.rsplit(".", 1)[0] + ".1"
        return [
            self.binary("dnsmasq"),
            "--keep-in-foreground",
            "--log-facility=-",
            "--conf-file=/dev/null",
            "--pid-file=",
            "--user=root",
            "--no-resolv",
            "--no-hosts",
            "--no-poll",
            f"--listen-address={GATEWAY}",
            "--bind-interfaces",
            "--port=53",
            "--local=/cluster.local/",
            f"--host-record=kubernetes.default.svc.cluster.local,{service_ip}",
        ]

    def _start_controllers(self) -> None:
        d, pki = self.directory, self.directory / "pki"
        self._start(
            "kube-controller-manager",
            [
                self.binary("kube-controller-manager"),
                f"--kubeconfig={d / 'kubeconfig'}",
                f"--authentication-kubeconfig={d / 'kubeconfig'}",
                f"--authorization-kubeconfig={d / 'kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--service-account-private-key-file={pki / 'sa.key'}",
                f"--root-ca-file={pki / 'ca.crt'}",
                f"--cluster-signing-cert-file={pki / 'ca.crt'}",
                f"--cluster-signing-key-file={pki / 'ca.key'}",
                f"--service-cluster-ip-range={envtest_lib.SERVICE_CLUSTER_IP_RANGE}",
                "--allocate-node-cidrs=false",
                "--v=1",
            ],
        )
        self._start(
            "kube-scheduler",
            [
                self.binary("kube-scheduler"),
                f"--kubeconfig={d / 'kubeconfig'}",
                f"--authentication-kubeconfig={d / 'kubeconfig'}",
                f"--authorization-kubeconfig={d / 'kubeconfig'}",
                "--bind-address=127.0.0.1",
                f"--secure-port={free_port()}",
                "--leader-elect=false",
                "--v=1",
            ],
        )

    def _start_kubelet(self) -> None:
        d = self.directory
        self._start(
            "kubelet",
            [
                self.binary("kubelet"),
                f"--config={d / 'kubelet.yaml'}",
                f"--kubeconfig={d / 'kubelet.kubeconfig'}",
                f"--root-dir={d / 'kubelet'}",
                f"--cert-dir={d / 'kubelet' / 'pki'}",
                f"--hostname-override={NODE_NAME}",
                f"--node-ip={GATEWAY}",
                # cAdvisor (inside the kubelet) finds containers' names, Pods and namespaces through
                # containerd at this socket; without it /metrics/cadvisor has unlabelled cgroups only.
                f"--containerd={d / 'containerd' / 'containerd.sock'}",
                "--v=1",
            ],
        )

    def _start_kube_proxy(self) -> None:
        self._start(
            "kube-proxy",
            [self.binary("kube-proxy"), f"--config={self.directory / 'kube-proxy.yaml'}", "--v=1"],
        )

    def _start(self, name: str, argv: list[str]) -> None:
        if self.running(name):
            raise StartError(f"{name} is already running in {self.directory}")
        self.procs[name].start(argv)
        time.sleep(0.5)
        if not self.running(name):
            log = self.procs[name].log_file
            raise StartError(f"{name} exited at once; last lines of {log}:\n{_tail(log)}")

    def _stop(self, name: str) -> None:
        self.procs[name].stop(self.binary(name), 20.0)

    def _wait(self, name: str, probe: Callable[[], bool], timeout: float, *, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not probe():
            if not self.running(name):
                log = self.procs[name].log_file
                raise StartError(f"{name} exited during start-up; last lines of {log}:\n{_tail(log)}")
            if time.monotonic() > deadline:
                log = self.procs[name].log_file
                raise StartError(
                    f"{what or name} not ready after {timeout:.0f}s; last lines of {log}:\n{_tail(log)}"
                )
            time.sleep(1.0)

    # -- internals: tear-down -----------------------------------------------------------------

    def _delete_all_pods(self) -> None:
        """Force-delete every Pod and give the kubelet time to stop its containers and sandboxes."""
        _run(
            [
                "kubectl",
                f"--kubeconfig={self.kubeconfig}",
                "--request-timeout=20s",
                "delete",
                "pods",
                "--all",
                "--all-namespaces",
                "--grace-period=0",
                "--force",
                "--wait=false",
            ],
            "kubectl delete pods",
            check=False,
            timeout=60,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not _pod_cgroups():
                return
            time.sleep(1.0)

    def _remove_containers(self) -> None:
        tasks = self.ctr("tasks", "ls", "-q", check=False).stdout.split()
        for task in tasks:
            self.ctr("tasks", "kill", "-s", "SIGKILL", task, check=False)
        for task in tasks:
            for _ in range(20):
                if self.ctr("tasks", "delete", "-f", task, check=False).returncode == 0:
                    break
                time.sleep(0.25)
        for container in self.ctr("containers", "ls", "-q", check=False).stdout.split():
            self.ctr("containers", "delete", container, check=False)

    def _unmount_all(self) -> None:
        """Unmount everything mounted below DIR (rootfs, shm, volumes), deepest first."""
        prefix = str(self.directory) + "/"
        for mount_point in sorted(_mount_points(), key=len, reverse=True):
            if not mount_point.startswith(prefix):
                continue
            if _run(["umount", mount_point], "umount", check=False).returncode != 0:
                _run(["umount", "-l", mount_point], "umount -l", check=False)

    def _remove_netns(self) -> None:
        """Pod network namespaces the CRI made (``/run/netns/cni-*``) that were not there before up."""
        if not NETNS_DIR.exists():
            return
        before = set(self.state.netns_before)
        mounts = set(_mount_points())
        for entry in NETNS_DIR.glob("cni-*"):
            if entry.name in before:
                continue
            if str(entry) in mounts:
                _run(["umount", str(entry)], "umount netns", check=False)
            entry.unlink(missing_ok=True)

    def _iptables_cleanup(self) -> None:
        if self.cp.started:
            with contextlib.suppress(EnvtestError):
                _run(
                    [self.binary("kube-proxy"), "--cleanup"], "kube-proxy --cleanup", check=False, timeout=60
                )
        _remove_kube_chains()
        for rule in self._forward_rules():
            while _run(["iptables", "-D", *rule], "iptables -D", check=False).returncode == 0:
                pass
        with contextlib.suppress(OSError):
            Path("/proc/sys/net/ipv4/ip_forward").write_text(self.state.ip_forward or "0")

    def _bridge_down(self) -> None:
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            _run(["ip", "link", "delete", BRIDGE], "ip link delete")

    # -- state ----------------------------------------------------------------------------------

    def _load(self) -> NodeState:
        path = self.directory / "node.json"
        try:
            return NodeState(**json.loads(path.read_text()))
        except FileNotFoundError:
            return NodeState()
        except (OSError, ValueError, TypeError) as exc:
            raise EnvtestError(f"unreadable {path}: {exc}") from exc

    def _save(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        (self.directory / "node.json").write_text(json.dumps(asdict(self.state), indent=2) + "\n")


def is_node_dir(directory: Path | str) -> bool:
    """True when ``hack/envtest up --node`` made ``directory``."""
    return (Path(directory) / "node.json").exists()


# ----------------------------------------------------------------------------------------------
# Host helpers
# ----------------------------------------------------------------------------------------------


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _mem_total() -> int:
    match = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.MULTILINE)
    if match is None:
        raise EnvtestError("no MemTotal in /proc/meminfo")
    return int(match.group(1)) * 1024


def _ports(count: int) -> list[int]:
    ports: list[int] = []
    for _ in range(count):
        ports.append(free_port(ports))
    return ports


def _mount_points() -> list[str]:
    points = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if len(fields) > 4:
            points.append(fields[4].replace("\\040", " "))
    return points


def _propagation(mount_point: str) -> str:
    """``shared``, ``slave`` or ``private``: the propagation of a mount point (/proc/self/mountinfo)."""
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if len(fields) > 6 and fields[4] == mount_point:
            optional = fields[6 : fields.index("-")]
            if any(f.startswith("shared:") for f in optional):
                return "shared"
            if any(f.startswith("master:") for f in optional):
                return "slave"
            return "private"
    return "private"


def _remove_kube_chains() -> None:
    """Delete the KUBE-* chains (and the jumps to them) that the kubelet and kube-proxy made.

    ``kube-proxy --cleanup`` removes kube-proxy's own, but not the kubelet's (KUBE-FIREWALL, which
    drops non-loopback packets to 127.0.0.0/8, and the KUBE-KUBELET-CANARY chains) in either family.
    """
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            listed = _run([tool, "-t", table, "-S"], f"{tool} -S", check=False).stdout.splitlines()
            chains = [line.split()[1] for line in listed if line.startswith("-N KUBE-")]
            for line in listed:
                rule = shlex.split(line)
                if rule[:1] != ["-A"] or rule[1].startswith("KUBE-") or "-j" not in rule:
                    continue
                target = rule[rule.index("-j") + 1]
                if target.startswith("KUBE-"):
                    _run([tool, "-t", table, "-D", *rule[1:]], f"{tool} -D", check=False)
            for flag in ("-F", "-X"):
                for chain in chains:
                    _run([tool, "-t", table, flag, chain], f"{tool} {flag}", check=False)


def _kubepods_dirs() -> Iterator[Path]:
    """``/sys/fs/cgroup/<hierarchy>/kubepods`` for every mounted hierarchy that has one."""
    if not CGROUP_ROOT.exists():
        return
    for hierarchy in sorted(CGROUP_ROOT.iterdir()):
        candidate = hierarchy / KUBEPODS
        if candidate.is_dir():
            yield candidate


def _pod_cgroups() -> list[Path]:
    """Pod cgroups still present in the memory hierarchy (``kubepods/.../pod<uid>``)."""
    memory = CGROUP_ROOT / "memory" / KUBEPODS
    if not memory.is_dir():
        return []
    return [p for p in memory.rglob("pod*") if p.is_dir() and re.fullmatch(r"pod[0-9a-f-]{36}", p.name)]


def _kill_kubepods() -> None:
    """SIGKILL every process left in a kubepods cgroup (a Pod the kubelet could not stop)."""
    for _round in range(10):
        pids: set[int] = set()
        for top in _kubepods_dirs():
            for procs in top.rglob("cgroup.procs"):
                with contextlib.suppress(OSError, ValueError):
                    pids.update(int(p) for p in procs.read_text().split())
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.5)


def _remove_kubepods() -> None:
    """rmdir the kubepods trees in every hierarchy, leaves first."""
    for top in list(_kubepods_dirs()):
        dirs = sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True)
        for path in [*dirs, top]:
            for _ in range(20):
                try:
                    path.rmdir()
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    time.sleep(0.1)
