"""``kubectl oomsight`` end to end: the real kubectl runs the plugin against the real kube-apiserver
(hack/envtest), with a real agent reporting real OOM kills on stand-in Pods (agentkit scenes: the
kubelet's Pod + cgroup, memhog killed by the kernel), a real operator for recommendations, a real exec
credential plugin, and kubeconfigs compared with what ``kubectl config view --minify`` resolves.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from kube.agentkit import AgentProc, ensure_crds, make_scene, rest_for, wait_for
from kube.conftest import tool_path
from kube.crdkit import apply_crds
from kube.kubectlkit import (
    b64,
    exec_plugin,
    exec_user,
    kubectl_oomsight,
    load,
    minify,
    plugin_env,
    sa_token,
    with_context,
    write,
)
from kube.kubehelpers import (
    Kubectl,
    container_status,
    kubectl_binary,
    load_envtest,
    patch_pod_status,
    running_pod_status,
)
from kube.opkit import (
    MI,
    OperatorProc,
    create_deployment,
    create_node,
    create_peering,
    create_pod,
    create_statefulset,
    policy,
    profile,
    report_status,
    status_of,
    write_report,
)
from kube.opkit import wait_for as op_wait_for
from oomsight.core.policy import rfc3339
from oomsight.core.reportview import parse_time
from oomsight.kube import crd
from oomsight.kube.clientconfig import load_target
from oomsight.kube.clusterread import ApiReadError, ClusterRead

envtest = load_envtest()


def why_json(kubeconfig: Path | str, *args: str) -> Any:
    out = kubectl_oomsight(kubeconfig, "why", *args, "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def one_line(out: subprocess.CompletedProcess[str]) -> str:
    """The failure's single stderr line (no traceback, nothing else)."""
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


# --- real kills, a real agent --------------------------------------------------------------------


@pytest.mark.kube
@pytest.mark.cgroup
@pytest.mark.kmsg
@pytest.mark.slow
def test_why_shows_real_kills_of_a_main_process_and_a_child_from_the_right_sources(
    kubeconfig: Path, kubectl: Kubectl, cgroups: Any, namespace: str, tmp_path: Path
) -> None:
    rest = rest_for(kubeconfig)
    ensure_crds(rest)
    node = f"node-{uuid.uuid4().hex[:8]}"
    main = make_scene(rest, cgroups, namespace, node, name="main-0")
    child = make_scene(rest, cgroups, namespace, node, name="child-0")
    agent = AgentProc(str(kubeconfig), node, tmp_path / "state", log_path=tmp_path / "agent.log").start()
    try:
        main.oom_kill_main()
        child.oom_kill_child()

        def joined(pod: str) -> list[dict[str, Any]] | None:
            kills = why_json(kubeconfig, pod, "-n", namespace)["containers"][0]["oom_kills"]
            return kills if kills and all(set(k["sources"]) >= {"event", "report"} for k in kills) else None

        kills = wait_for(lambda: joined("child-0"), 60, "the child's kill from the Event and the report", 1)
        assert len(kills) == 1
        (k,) = kills
        assert k["reason"] == "OOMKilledChild" and k["scope"] == "container"
        assert k["container_survived"] is True and k["kubernetes_saw"] is False
        assert k["sources"] == ["event", "report"] and k["victim"]["pid"] and k["dominant"] == "anon"
        assert "kept running" in k["explanation"] and "Kubernetes will not report" in k["note"]

        incidents = kubectl.get(crd.NODE_REPORT_PLURAL, node)["status"]["incidents"]
        assert [i["dominant"] for i in incidents] == ["anon", "anon"]  # kept past the Events' 1 h TTL
        kills = wait_for(lambda: joined("main-0"), 60, "the main kill from the Event and the report", 1)
        assert len(kills) == 1 and kills[0]["reason"] == "OOMKilled" and kills[0]["kubernetes_saw"] is None
        # The kubelet then reports it (the stand-in writes what a kubelet writes): the same kill, shown once.
        finished = rfc3339((parse_time(kills[0]["time"]) or 0) + 2)
        last = {"exitCode": 137, "reason": "OOMKilled", "startedAt": "2026-01-01T00:00:00Z",
                "finishedAt": finished, "containerID": f"containerd://{main.container_id}"}  # fmt: skip
        st = container_status(main.container, cid=f"containerd://{main.container_id}", restart_count=1,
                              last_terminated=last)  # fmt: skip
        patch_pod_status(kubectl, namespace, main.name, running_pod_status([st]))
        doc = why_json(kubeconfig, "main-0", "-n", namespace)
        (k,) = doc["containers"][0]["oom_kills"]
        assert k["sources"] == ["event", "report", "kubelet"] and k["kubernetes_saw"] is True
        assert k["scope"] == "container" and k["container_survived"] is False and k["explanation"]
        c = doc["containers"][0]
        assert c["limit_bytes"] == 64 * MI and c["effective_limit_bytes"] == 64 * MI
        assert c["limit_level"] == "container" and c["working_set_bytes"] is not None
        assert doc["pod"] == {"namespace": namespace, "name": "main-0", "uid": main.uid, "node": node,
                              "phase": "Running", "workload": "Pod/main-0"}  # fmt: skip
        assert doc["node"]["report"] is True and doc["node"]["kernel"]
        assert doc["recommendation"] is None and doc["first_step"].startswith("Raise container app")

        text = kubectl_oomsight(kubeconfig, "why", "main-0", "-n", namespace)
        assert text.returncode == 0, text.stderr
        lines = text.stdout.splitlines()
        assert max(len(line) for line in lines) <= 80, text.stdout
        assert "OOMKilled" in text.stdout and "agent Event + node report + kubelet lastState" in " ".join(
            lines
        )
        assert text.stdout.count("OOMKilled") == 1  # one kill, printed once
        assert lines[-1].startswith("what to do first:") or lines[-2].startswith("what to do first:")
        # No MemoryPolicy CRD-less complaint here: the CRDs may or may not be there; the report is.
        assert "no NodeMemoryReport" not in text.stderr
    finally:
        main.stop_procs()
        child.stop_procs()
        agent.stop()


# --- a MemoryPolicy's recommendation, a Deployment resolved to its Pods ------------------------------


@pytest.mark.kube
@pytest.mark.slow
def test_why_deploy_shows_the_policy_recommendation_for_the_newest_pods(
    kubeconfig: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    apply_crds(kubectl)
    create_peering(kubectl, namespace)
    node = f"node-{uuid.uuid4().hex[:8]}"
    create_node(kubectl, node)
    labels = {"app": "web"}
    _dep, rs = create_deployment(kubectl, namespace, "web", labels)
    old = create_pod(kubectl, namespace, "web-old", node, {**labels, "pod-template-hash": "7d9f8c6b5"}, rs)
    new = create_pod(kubectl, namespace, "web-new", node, {**labels, "pod-template-hash": "7d9f8c6b5"}, rs)
    create_pod(kubectl, namespace, "other", node, {"app": "other"})
    write_report(kubectl, node, report_status([profile(p, "app", [150 * MI] * 8) for p in (old, new)]))
    kubectl.run(
        "apply", "-n", namespace, "-f", "-", stdin=json.dumps(policy("web-policy", {"matchLabels": labels}))
    )
    op = OperatorProc(kubeconfig, namespace, tmp_path / "op.log", "op-a", ["--peering", "oomsight"]).start()
    try:

        def entry() -> dict[str, Any] | None:
            for wl in status_of(kubectl, namespace, "web-policy").get("workloads") or []:
                if wl["kind"] == "Deployment" and wl["name"] == "web":
                    return dict(wl["containers"][0]) if wl["containers"][0].get("recommendedLimit") else None
            return None

        want = op_wait_for(entry, 60, "the policy's recommendation for Deployment/web")
        out = kubectl_oomsight(kubeconfig, "why", "deploy/web", "-n", namespace, "--json")
        assert out.returncode == 0, out.stderr + op.log()
        docs = json.loads(out.stdout)
        assert [d["pod"]["name"] for d in docs] == ["web-new", "web-old"]  # newest first, "other" left out
        rec = docs[0]["recommendation"]
        assert (
            rec["policy"] == "web-policy" and rec["workload"] == "Deployment/web" and rec["pending"] is False
        )
        app = rec["containers"]["app"]
        assert app["limit"] == want["recommendedLimit"] and app["request"] == want["recommendedRequest"]
        assert app["reason"] == want["reason"] and app["confidence"] == want["confidence"]
        assert docs[0]["containers"][0]["recommendation"] == app
        assert docs[0]["containers"][0]["working_set_bytes"] == 150 * MI

        text = kubectl_oomsight(kubeconfig, "why", "deploy/web", "-n", namespace, "--pods", "1")
        assert text.returncode == 0, text.stderr
        assert f"recommended (MemoryPolicy web-policy): request {want['recommendedRequest']}" in text.stdout
        assert f"{namespace}/web-new" in text.stdout and "web-old" not in text.stdout
        assert "1 more pods of deploy/web not shown" in text.stderr
        assert max(len(line) for line in text.stdout.splitlines()) <= 80

        top = kubectl_oomsight(kubeconfig, "top", "-n", namespace, "--json")
        assert top.returncode == 0, top.stderr
        rows = json.loads(top.stdout)["containers"]
        assert {(r["pod"], r["container"]) for r in rows} == {("web-old", "app"), ("web-new", "app")}
        assert all(
            r["working_set_bytes"] == 150 * MI and r["working_set_ratio"] == round(150 / 256, 4) for r in rows
        )
        elsewhere = kubectl_oomsight(kubeconfig, "top", "-A", "--node", "elsewhere", "--json")
        assert json.loads(elsewhere.stdout)["containers"] == []
        everywhere = json.loads(kubectl_oomsight(kubeconfig, "top", "-A", "--node", node, "--json").stdout)
        assert {(r["namespace"], r["pod"]) for r in everywhere["containers"]} == {
            (namespace, "web-old"), (namespace, "web-new")}  # fmt: skip
        table = kubectl_oomsight(kubeconfig, "top", "-n", namespace)
        assert table.stdout.splitlines()[0].split()[:4] == ["POD", "CONTAINER", "QOS", "WORKSET"]
        assert "web-new" in table.stdout and "150Mi" in table.stdout and "59%" in table.stdout

        nodes = kubectl_oomsight(kubeconfig, "nodes")
        assert nodes.returncode == 0, nodes.stderr
        row = next(line.split() for line in nodes.stdout.splitlines() if line.startswith(node))
        assert row[:3] == [node, "3.10.0-957.el7.x86_64", "v1"] and row[4:7] == ["enabled", "20", "none"]
    finally:
        op.stop()
        kubectl.run("delete", crd.NODE_REPORT_PLURAL, node, "--ignore-not-found", "--wait=false", check=False)
        kubectl.run("delete", "node", node, "--ignore-not-found", "--wait=false", check=False)


@pytest.mark.kube
def test_a_policy_without_an_operator_and_a_node_without_an_agent_are_reported_as_such(
    kubeconfig: Path, kubectl: Kubectl, namespace: str
) -> None:
    apply_crds(kubectl)
    node = f"node-{uuid.uuid4().hex[:8]}"
    pod = create_pod(kubectl, namespace, "lonely", node, {"app": "lonely"})
    st = container_status("app", restart_count=1, last_terminated={
        "exitCode": 137, "reason": "OOMKilled", "startedAt": "2026-01-01T00:00:00Z",
        "finishedAt": rfc3339(time.time() - 60)})  # fmt: skip
    patch_pod_status(kubectl, namespace, "lonely", running_pod_status([st]))
    kubectl.run(
        "apply", "-n", namespace, "-f", "-", stdin=json.dumps(policy("p", {"matchLabels": {"app": "lonely"}}))
    )
    out = kubectl_oomsight(kubeconfig, "why", "lonely", "-n", namespace, "--json")
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    (k,) = doc["containers"][0]["oom_kills"]
    assert k["sources"] == ["kubelet"] and k["reason"] == "OOMKilled" and k["kubernetes_saw"] is True
    assert doc["node"]["report"] is False and doc["recommendation"]["pending"] is True
    assert pod["metadata"]["uid"] == doc["pod"]["uid"]
    err = out.stderr.strip().splitlines()
    assert any(
        f"no NodeMemoryReport for node {node}: the oomsight agent is not running there" in e for e in err
    )
    assert any(
        "MemoryPolicy p selects this pod but has no recommendation" in e and "operator" in e for e in err
    )
    assert all(line.startswith("kubectl oomsight why: ") for line in err)


# --- kubeconfigs: as kubectl resolves them ----------------------------------------------------------


@pytest.mark.kube
def test_namespace_context_and_several_files_resolve_as_kubectl_does(
    kubeconfig: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    base = load(kubeconfig)
    other = f"{namespace}-b"[:63]
    kubectl.run("create", "namespace", other)
    first = write(tmp_path / "a.yaml", with_context(base, "ctx-a", namespace, "ctx-a"))
    second = write(tmp_path / "b.yaml", with_context(base, "ctx-b", other, "ctx-b"))
    no_ns = write(tmp_path / "c.yaml", with_context(base, "ctx-c", None, "ctx-c"))
    cases = [
        (f"{first}:{second}", []),
        (f"{second}:{first}", []),  # both set current-context: the first file's wins
        (f"{second}:{first}", ["--context", "ctx-a"]),
        (f"{tmp_path / 'missing.yaml'}:{first}", []),  # a missing file in the list is skipped
        (str(no_ns), []),  # no namespace in the context: default
        (f"{first}:{second}", ["-n", other]),
    ]
    for listed, flags in cases:
        env = plugin_env(listed)
        want = minify(
            kubectl.binary, env, *flags[flags.index("--context") :][:2] if "--context" in flags else ()
        )
        ctx = want["contexts"][0]
        namespace_flag = flags[flags.index("-n") + 1] if "-n" in flags else None
        got = load_target(
            context=flags[flags.index("--context") + 1] if "--context" in flags else None,
            namespace=namespace_flag,
            environ=env,
        )
        assert got.context == ctx["name"], (listed, flags)
        assert got.server == want["clusters"][0]["cluster"]["server"]
        assert got.user == ctx["context"]["user"] and got.cluster == ctx["context"]["cluster"]
        assert got.namespace == (namespace_flag or ctx["context"].get("namespace") or "default")
    # The plugin itself, through kubectl, finds a pod only in the namespace kubectl would use.
    create_pod(kubectl, other, "in-b", "node-x", {"a": "b"})
    assert kubectl_oomsight(f"{second}:{first}", "why", "in-b", "--json").returncode == 0
    missed = kubectl_oomsight(f"{first}:{second}", "why", "in-b")
    assert (
        missed.returncode == 1
        and f"pod 'in-b' not found in namespace '{namespace}' (context ctx-a)" in one_line(missed)
    )
    assert kubectl_oomsight(f"{first}:{second}", "why", "in-b", "--context", "ctx-b").returncode == 0
    assert kubectl_oomsight(f"{first}:{second}", "why", "in-b", "-n", other).returncode == 0
    assert kubectl_oomsight(None, "why", "in-b", "--kubeconfig", str(second)).returncode == 0
    bad = kubectl_oomsight(first, "why", "in-b", "--context", "nope")
    assert bad.returncode == 2 and "context 'nope' is not in" in one_line(bad) and "ctx-a" in one_line(bad)


@pytest.mark.kube
def test_an_exec_plugin_user_with_a_client_certificate_works_and_a_failing_one_gets_its_line(
    control_plane: Any, kubeconfig: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    pki = tmp_path / "pki"
    pki.mkdir()
    for name in ("ca.crt", "ca.key"):
        (pki / name).write_bytes((control_plane.pki / name).read_bytes())
    envtest._signed_cert(
        pki, "exec-user", "/O=system:masters/CN=oomsight-exec-user",
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\n"
        "extendedKeyUsage=clientAuth\n",
    )  # fmt: skip
    plugin = exec_plugin(tmp_path / "credential-plugin", pki / "exec-user.crt", pki / "exec-user.key")
    base = load(kubeconfig)
    doc = with_context(base, "exec", namespace, "exec")
    doc["users"] = [{"name": "exec-user", "user": exec_user(plugin)}]
    doc["contexts"][0]["context"]["user"] = "exec-user"
    cfg = write(tmp_path / "exec.yaml", doc)
    create_pod(kubectl, namespace, "p0", "node-x", {"a": "b"})

    out = kubectl_oomsight(cfg, "why", "p0", "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["pod"]["name"] == "p0"
    # kubectl itself accepts the same kubeconfig (the plugin's certificate is good for the API server).
    assert (
        subprocess.run(
            [kubectl.binary, "get", "pod", "p0"], env=plugin_env(cfg), capture_output=True
        ).returncode
        == 0
    )

    failing = tmp_path / "failing-plugin"
    failing.write_text("#!/bin/sh\necho 'token expired: run aws sso login' >&2\nexit 1\n")
    failing.chmod(0o755)
    doc["users"] = [{"name": "exec-user", "user": exec_user(failing)}]
    out = kubectl_oomsight(write(tmp_path / "failing.yaml", doc), "why", "p0")
    line = one_line(out)
    assert out.returncode == 2 and f"the exec plugin '{failing}'" in line and "failed" in line
    assert "token expired: run aws sso login" in line

    # A plugin that returns a bearer token (a ServiceAccount's, which has no RBAC here): the API server
    # authenticates it, and the denial names the kubeconfig user.
    token_plugin = tmp_path / "token-plugin"
    token_plugin.write_text(
        "#!/bin/sh\nprintf '%s' '" + json.dumps({"apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential", "status": {"token": sa_token(kubectl, namespace, "via-exec")}}) + "'\n"
    )  # fmt: skip
    token_plugin.chmod(0o755)
    doc["users"] = [{"name": "exec-user", "user": exec_user(token_plugin)}]
    out = kubectl_oomsight(write(tmp_path / "token.yaml", doc), "why", "p0")
    assert out.returncode == 1 and "RBAC denies get pods in namespace" in one_line(out)
    assert "user 'exec-user' of context 'exec'" in one_line(out)

    doc["users"] = [{"name": "exec-user", "user": exec_user(tmp_path / "not-installed")}]
    out = kubectl_oomsight(write(tmp_path / "absent.yaml", doc), "why", "p0")
    assert out.returncode == 2 and "not-installed" in one_line(out) and "failed" in one_line(out)


# --- bad input: one line each -----------------------------------------------------------------------


@pytest.mark.kube
def test_rbac_denials_name_the_missing_verb_and_resource(
    kubeconfig: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    token = sa_token(kubectl, namespace, "reader")
    base = load(kubeconfig)
    doc = with_context(base, "sa", namespace, "sa")
    doc["users"] = [{"name": "reader", "user": {"token": token}}]
    doc["contexts"][0]["context"]["user"] = "reader"
    cfg = write(tmp_path / "sa.yaml", doc)
    create_pod(kubectl, namespace, "p1", "node-x", {"a": "b"})

    denied = kubectl_oomsight(cfg, "why", "p1")  # a bearer token the API server accepts, no RBAC yet
    line = one_line(denied)
    assert denied.returncode == 1
    assert line.startswith("kubectl oomsight why: RBAC denies get pods in namespace " + namespace)
    assert "'sa'" in line and "granting 'get' on pods" in line

    kubectl.run("create", "role", "pods-only", "-n", namespace, "--verb=get,list", "--resource=pods")
    kubectl.run("create", "rolebinding", "reader", "-n", namespace, "--role=pods-only",
                f"--serviceaccount={namespace}:reader")  # fmt: skip

    def partial() -> subprocess.CompletedProcess[str] | None:
        out = kubectl_oomsight(cfg, "why", "p1")
        return out if out.returncode == 0 else None

    out = op_wait_for(partial, 30, "the RoleBinding to take effect")
    assert f"RBAC denies list events.events.k8s.io in namespace {namespace}" in out.stderr
    assert f"{namespace}/p1" in out.stdout  # what could be read is still shown

    nodes = kubectl_oomsight(cfg, "nodes")
    assert nodes.returncode == 1
    assert "RBAC denies list nodememoryreports.oomsight.io (cluster-wide)" in one_line(nodes)

    # The same token from a tokenFile (relative to the kubeconfig, as kubectl reads it) works too.
    (tmp_path / "token").write_text(token)
    doc["users"] = [{"name": "reader", "user": {"tokenFile": "token"}}]
    assert kubectl_oomsight(write(tmp_path / "file.yaml", doc), "why", "p1").returncode == 0
    # An OIDC id-token this API server does not trust (no --oidc-issuer-url): the loader sends it,
    # the server answers 401, and that is one line.
    claims = b64(
        json.dumps({"iss": "https://idp.example", "sub": "me", "exp": int(time.time()) + 3600}).encode()
    )
    jwt = ".".join(
        part.rstrip("=").replace("+", "-").replace("/", "_")
        for part in (b64(b'{"alg":"none"}'), claims, "c2ln")
    )
    doc["users"] = [{"name": "reader", "user": {"auth-provider": {"name": "oidc", "config": {
        "id-token": jwt, "idp-issuer-url": "https://idp.example", "client-id": "oomsight"}}}}]  # fmt: skip
    out = kubectl_oomsight(write(tmp_path / "oidc.yaml", doc), "why", "p1")
    assert (
        out.returncode == 1
        and "refused the credentials of user 'reader' of context 'sa' (401" in one_line(out)
    )


@pytest.mark.kube
def test_unknown_pod_and_workload_and_unreachable_cluster_get_one_line(
    control_plane: Any, kubeconfig: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    out = kubectl_oomsight(kubeconfig, "why", "ghost", "-n", namespace)
    assert out.returncode == 1
    assert one_line(out) == (
        f"kubectl oomsight why: pod 'ghost' not found in namespace '{namespace}' (context envtest); "
        f"list them with kubectl get pods -n {namespace}"
    )
    out = kubectl_oomsight(kubeconfig, "why", "deploy/ghost", "-n", namespace)
    assert out.returncode == 1 and "Deployment 'ghost' not found" in one_line(out)
    out = kubectl_oomsight(kubeconfig, "why", "frob/x", "-n", namespace)
    assert out.returncode == 2 and "cannot tell what 'frob/x' names" in one_line(out)
    out = kubectl_oomsight(kubeconfig, "diagnose")
    assert out.returncode == 2 and "run `oomsight diagnose`" in one_line(out)

    doc = load(kubeconfig)
    port = envtest.free_port()
    doc["clusters"][0]["cluster"]["server"] = f"https://127.0.0.1:{port}"
    out = kubectl_oomsight(write(tmp_path / "down.yaml", doc), "why", "p", "-n", namespace)
    line = one_line(out)
    assert out.returncode == 1
    assert line.startswith(f"kubectl oomsight why: cannot reach the API server at https://127.0.0.1:{port}")
    assert "cluster-info" in line
    out = kubectl_oomsight(tmp_path / "nothing-here.yaml", "why", "p")
    assert out.returncode == 2 and "no kubeconfig found" in one_line(out)


@pytest.mark.kube
def test_statefulset_and_job_names_resolve_to_their_pods_newest_first(
    kubeconfig: Path, kubectl: Kubectl, namespace: str
) -> None:
    sts = create_statefulset(kubectl, namespace, "db", {"app": "db"})
    for i in (0, 1):
        create_pod(kubectl, namespace, f"db-{i}", "node-x", {"app": "db"}, sts)
        time.sleep(1.1)  # creationTimestamp has second resolution
    job = kubectl.create({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "backup", "namespace": namespace},
        "spec": {"template": {"metadata": {"labels": {"job": "backup"}}, "spec": {
            "restartPolicy": "Never",
            "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10"}]}}},
    })  # fmt: skip
    selector = job["spec"]["selector"]["matchLabels"]
    create_pod(kubectl, namespace, "backup-x", "node-x", selector, job)
    create_pod(kubectl, namespace, "stray", "node-x", selector)  # matches the labels, owned by no one
    docs = why_json(kubeconfig, "sts/db", "-n", namespace)
    assert [d["pod"]["name"] for d in docs] == ["db-1", "db-0"]
    assert {d["pod"]["workload"] for d in docs} == {"StatefulSet/db"}
    docs = why_json(kubeconfig, "job/backup", "-n", namespace)
    assert [(d["pod"]["name"], d["pod"]["workload"]) for d in docs] == [("backup-x", "Job/backup")]
    none = kubectl_oomsight(kubeconfig, "why", "sts/db", "-n", namespace, "--pods", "1")
    assert none.returncode == 0 and "1 more pods of sts/db not shown (--pods 2)" in none.stderr


@pytest.mark.kube
@pytest.mark.slow
def test_a_cluster_without_oomsight_still_shows_what_the_kubelet_knows(tmp_path: Path) -> None:
    """A control plane of its own: the shared one has the CRDs from other tests."""
    binaries = {name: tool_path(name) for name in envtest.CONTROL_PLANE_TOOLS}
    cp = envtest.ControlPlane(tmp_path / "bare", binaries=binaries)
    try:
        cp.start()
        bare = Kubectl(cp.kubeconfig, kubectl_binary() or "kubectl")
        bare.run("create", "namespace", "shop")
        create_pod(bare, "shop", "web-0", "node-1", {"app": "web"})
        st = container_status("app", restart_count=1, last_terminated={
            "exitCode": 137, "reason": "OOMKilled", "finishedAt": rfc3339(time.time() - 30)})  # fmt: skip
        patch_pod_status(bare, "shop", "web-0", running_pod_status([st]))
        out = kubectl_oomsight(cp.kubeconfig, "why", "web-0", "-n", "shop")
        assert out.returncode == 0, out.stderr
        assert "Kubernetes saw it, from kubelet lastState" in " ".join(out.stdout.split())
        err = out.stderr.strip().splitlines()
        assert len(err) == 2 and "Traceback" not in out.stderr
        assert err[0].startswith(
            "kubectl oomsight why: oomsight is not installed in this cluster (no NodeMemoryReport"
        )
        assert err[1] == (
            "kubectl oomsight why: the oomsight operator is not installed (no MemoryPolicy CRD): "
            "no recommendation"
        )
        nodes = kubectl_oomsight(cp.kubeconfig, "nodes")
        assert nodes.returncode == 1
        assert "the cluster has no NodeMemoryReport resource" in one_line(
            nodes
        ) and "helm install" in one_line(nodes)
        top = kubectl_oomsight(cp.kubeconfig, "top", "-A")
        assert top.returncode == 1 and "oomsight's CRDs are not installed" in one_line(top)
    finally:
        cp.stop()


@pytest.mark.kube
def test_in_a_pod_the_service_account_is_used_with_its_namespace(
    control_plane: Any, kubeconfig: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    sa = tmp_path / "serviceaccount"
    sa.mkdir()
    (sa / "token").write_text(sa_token(kubectl, namespace, "in-pod"))
    (sa / "ca.crt").write_bytes(control_plane.ca_file.read_bytes())
    (sa / "namespace").write_text(namespace)
    port = str(control_plane.apiserver_port)
    env = {"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port, "HOME": str(tmp_path)}
    target = load_target(environ=env, sa_dir=sa)
    assert target.namespace == namespace and target.context is None
    assert target.server == f"https://127.0.0.1:{control_plane.apiserver_port}"
    create_pod(kubectl, namespace, "p2", "node-x", {"a": "b"})
    with pytest.raises(
        ApiReadError, match=f"RBAC denies get pods in namespace {namespace} to this ServiceAccount"
    ):
        ClusterRead(target).pod(namespace, "p2")
    kubectl.run("create", "role", "get-pods", "-n", namespace, "--verb=get", "--resource=pods")
    kubectl.run("create", "rolebinding", "in-pod", "-n", namespace, "--role=get-pods",
                f"--serviceaccount={namespace}:in-pod")  # fmt: skip
    got = op_wait_for(lambda: _try_pod(target, namespace, "p2"), 30, "the RoleBinding to take effect")
    assert got["metadata"]["name"] == "p2"
    assert load_target(namespace="other", environ=env, sa_dir=sa).namespace == "other"


def _try_pod(target: Any, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        return ClusterRead(target).pod(namespace, name)
    except ApiReadError:
        return None
