"""The Helm chart with the pinned helm against the real kube-apiserver: lint, a server-side dry run
of the rendered objects, a real install that creates every object, and schema errors for bad values."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

from kube.crdkit import CHART, apply_crds, helm
from kube.kubehelpers import Kubectl, unique_name

pytestmark = pytest.mark.kube

NON_DEFAULT = [
    "--set",
    "operator.replicas=3",
    "--set",
    "agent.processInspection=false",
    "--set",
    "agent.priorityClassName=",
    "--set",
    "agent.serviceAccount.name=custom-agent",
    "--set",
    "operator.serviceAccount.create=false",
    "--set",
    "operator.serviceAccount.name=default",
    "--set",
    "operator.logLevel=debug",
    "--set-json",  # --set keeps 2.5 a string; the schema wants a number
    "agent.interval=2.5",
    "--set",
    "agent.maxUnavailable=1",
    "--set",
    "agent.extraArgs={--metrics-address=0.0.0.0}",
    "--set",
    "metrics.service.type=NodePort",
    "--set",
    "image.tag=0.1.0-rc1",
    "--set",
    "image.pullSecrets={regcred}",
]


def peering(release: str) -> list[str]:
    """Each test release gets its own ClusterKopfPeering (cluster-scoped names must not collide)."""
    return ["--set", f"operator.peering.name={release}"]


@pytest.fixture
def crds(kubectl: Kubectl) -> Kubectl:
    apply_crds(kubectl)
    return kubectl


def template(
    helm_bin: Path, kubeconfig: Path, release: str, namespace: str, extra: Sequence[str] = ()
) -> str:
    """``helm template`` of the chart as YAML text."""
    args = ["template", release, str(CHART), "--namespace", namespace, *peering(release), *extra]
    return helm(helm_bin, kubeconfig, *args).stdout


def rendered(
    helm_bin: Path, kubeconfig: Path, release: str, namespace: str, extra: Sequence[str] = ()
) -> list[Any]:
    text = template(helm_bin, kubeconfig, release, namespace, extra)
    return [doc for doc in yaml.safe_load_all(text) if doc]


@pytest.mark.parametrize("values", [[], NON_DEFAULT], ids=["defaults", "non-default"])
def test_helm_lint_passes(helm_bin: Path, kubeconfig: Path, values: list[str]) -> None:
    result = helm(helm_bin, kubeconfig, "lint", "--strict", str(CHART), *values)
    assert "0 chart(s) failed" in result.stdout


@pytest.mark.parametrize(
    "values",
    [[], NON_DEFAULT, ["--set", "serviceMonitor.enabled=false", "--set", "agent.enabled=false"]],
    ids=["defaults", "non-default", "operator-only"],
)
def test_rendered_objects_pass_a_server_side_dry_run(
    helm_bin: Path, kubeconfig: Path, crds: Kubectl, namespace: str, values: list[str]
) -> None:
    out = template(helm_bin, kubeconfig, unique_name("dry", max_length=30), namespace, values)
    result = crds.run("apply", "--dry-run=server", "--namespace", namespace, "-f", "-", stdin=out)
    assert "created (server dry run)" in result.stdout


def test_service_monitor_renders_for_both_metrics_services(helm_bin: Path, kubeconfig: Path) -> None:
    """The ServiceMonitor CRD (prometheus-operator) is not in the test cluster: checked as rendered."""
    docs = rendered(
        helm_bin,
        kubeconfig,
        "sm",
        "mon",
        ["--set", "serviceMonitor.enabled=true", "--set", "serviceMonitor.labels.release=kps"],
    )
    monitors = [d for d in docs if d["kind"] == "ServiceMonitor"]
    assert len(monitors) == 1
    mon = monitors[0]
    assert mon["apiVersion"] == "monitoring.coreos.com/v1"
    assert mon["metadata"]["labels"]["release"] == "kps"
    services = [d for d in docs if d["kind"] == "Service"]
    assert len(services) == 2
    for svc in services:  # the monitor's selector picks both metrics Services
        labels = svc["metadata"]["labels"]
        assert all(labels.get(k) == v for k, v in mon["spec"]["selector"]["matchLabels"].items())
        assert [p["name"] for p in svc["spec"]["ports"]] == [mon["spec"]["endpoints"][0]["port"]]
    assert not [d for d in rendered(helm_bin, kubeconfig, "sm", "mon") if d["kind"] == "ServiceMonitor"]


def test_config_change_rolls_the_pods(helm_bin: Path, kubeconfig: Path) -> None:
    def checksums(extra: list[str]) -> set[str]:
        docs = rendered(helm_bin, kubeconfig, "ck", "ns", extra)
        return {
            d["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            for d in docs
            if d["kind"] in ("DaemonSet", "Deployment")
        }

    before = checksums([])
    after = checksums(["--set", "agent.interval=30"])
    assert len(before) == 1 and len(after) == 1 and before != after


EXPECTED = [
    ("serviceaccount", "{r}-oomsight-agent"),
    ("serviceaccount", "{r}-oomsight-operator"),
    ("clusterrole", "{r}-oomsight-agent"),
    ("clusterrole", "{r}-oomsight-operator"),
    ("clusterrolebinding", "{r}-oomsight-agent"),
    ("clusterrolebinding", "{r}-oomsight-operator"),
    ("configmap", "{r}-oomsight-config"),
    ("daemonset", "{r}-oomsight-agent"),
    ("deployment", "{r}-oomsight-operator"),
    ("service", "{r}-oomsight-agent-metrics"),
    ("service", "{r}-oomsight-operator-metrics"),
    ("clusterkopfpeering", "{r}"),
]


def test_helm_install_creates_every_object(
    helm_bin: Path, kubeconfig: Path, kubectl: Kubectl, namespace: str
) -> None:
    release = unique_name("inst", max_length=30)
    helm(helm_bin, kubeconfig, "install", release, str(CHART), "--namespace", namespace, *peering(release))
    try:
        for kind in (
            "customresourcedefinition/memorypolicies.oomsight.io",
            "customresourcedefinition/nodememoryreports.oomsight.io",
            "customresourcedefinition/clusterkopfpeerings.kopf.dev",
        ):
            kubectl.run("get", kind)
        for kind, name in EXPECTED:
            kubectl.run("get", kind, name.format(r=release), "--namespace", namespace)

        ds = kubectl.get("daemonset", f"{release}-oomsight-agent", namespace)
        pod = ds["spec"]["template"]["spec"]
        (agent,) = pod["containers"]
        sc = agent["securityContext"]
        assert sc["privileged"] is False and sc["readOnlyRootFilesystem"] is True
        assert sc["allowPrivilegeEscalation"] is False and sc["runAsUser"] == 0
        assert sc["capabilities"] == {"drop": ["ALL"], "add": ["SYSLOG", "SYS_PTRACE"]}
        assert agent["args"][0] == "agent"
        env = {e["name"]: e for e in agent["env"]}
        assert env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
        mounts = {m["mountPath"]: m for m in agent["volumeMounts"]}
        for path in ("/host/sys/fs/cgroup", "/host/proc", "/host/dev/kmsg"):
            assert mounts[path]["readOnly"] is True, path
        assert not mounts["/var/lib/oomsight"].get("readOnly")
        host_paths = {
            v["hostPath"]["path"]: v["hostPath"].get("type") for v in pod["volumes"] if "hostPath" in v
        }
        assert host_paths == {
            "/sys/fs/cgroup": "Directory",
            "/proc": "Directory",
            "/dev/kmsg": "CharDevice",
            "/var/lib/oomsight": "DirectoryOrCreate",
        }
        assert pod["tolerations"] == [{"operator": "Exists"}]
        assert pod["priorityClassName"] == "system-node-critical"
        assert agent["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert agent["readinessProbe"]["httpGet"]["path"] == "/readyz"  # pods listed, one sweep done
        assert not pod.get("hostPID") and not pod.get("hostNetwork")

        dep = kubectl.get("deployment", f"{release}-oomsight-operator", namespace)
        assert dep["spec"]["replicas"] == 2
        op_pod = dep["spec"]["template"]["spec"]
        assert op_pod["securityContext"]["runAsNonRoot"] is True
        assert op_pod["containers"][0]["args"][0] == "operator"
        config = kubectl.get("configmap", f"{release}-oomsight-config", namespace)["data"]
        assert config["OOMSIGHT_PEERING"] == release
        assert config["OOMSIGHT_HOST_ROOT"] == "/host"
        assert config["OOMSIGHT_KERNEL_LOG"] == "auto"  # kmsg where it opens, else syslog(2), else counters
        assert config["OOMSIGHT_METRICS_GRACE"] == "300"  # deleted pods' kill counters linger

        notes = helm(helm_bin, kubeconfig, "get", "notes", release, "--namespace", namespace).stdout
        assert "kubectl get memorypolicies" in notes and f'ClusterKopfPeering "{release}"' in notes
    finally:
        helm(helm_bin, kubeconfig, "uninstall", release, "--namespace", namespace, check=False)


def test_privileged_is_opt_in_and_renders_a_valid_security_context(helm_bin: Path, kubeconfig: Path) -> None:
    def agent_sc(extra: Sequence[str]) -> dict[str, Any]:
        docs = rendered(helm_bin, kubeconfig, "priv", "oomsight-system", extra)
        (ds,) = [d for d in docs if d["kind"] == "DaemonSet"]
        return dict(ds["spec"]["template"]["spec"]["containers"][0]["securityContext"])

    sc = agent_sc([])
    assert sc["privileged"] is False and sc["allowPrivilegeEscalation"] is False
    sc = agent_sc(["--set", "agent.privileged=true", "--set", "agent.kernelLog=kmsg"])
    # the API server refuses privileged with allowPrivilegeEscalation=false: it must be left out
    assert sc["privileged"] is True and "allowPrivilegeEscalation" not in sc
    assert sc["capabilities"]["drop"] == ["ALL"]


BAD_VALUES = [
    (["--set", "agent.interval=fast"], ["agent", "interval", "number"]),
    (["--set", "operator.replicas=two"], ["operator", "replicas", "integer"]),
    (["--set", "image.pullPolicy=Sometimes"], ["image", "pullPolicy"]),
    (["--set", "agent.intervall=5"], ["intervall"]),
    (["--set", "metrics.agentPort=70000"], ["agentPort", "maximum", "65,535"]),
    (["--set", "agent.reportInterval=5"], ["reportInterval", "60"]),
    (["--set", "agent.kernelLog=dmesg"], ["kernelLog", "auto", "syslog"]),
    (["--set", "agent.metricsGrace=-1"], ["metricsGrace", "minimum"]),
]


@pytest.mark.parametrize(("values", "fragments"), BAD_VALUES, ids=[v[0][1] for v in BAD_VALUES])
def test_wrong_values_fail_install_through_the_schema(
    helm_bin: Path, kubeconfig: Path, namespace: str, values: list[str], fragments: list[str]
) -> None:
    release = unique_name("bad", max_length=30)
    result = helm(
        helm_bin,
        kubeconfig,
        "install",
        release,
        str(CHART),
        "--namespace",
        namespace,
        *peering(release),
        *values,
        check=False,
    )
    assert result.returncode != 0
    assert "values don't meet the specifications of the schema" in result.stderr, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr, f"{fragment!r} not in {result.stderr!r}"
