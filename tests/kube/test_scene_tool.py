"""``hack/scene``, the README's stand-in kubelet: its Pod and cgroup are what the agent needs to put real
OOM kills on that Pod, and ``down`` leaves nothing behind."""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from cgroupkit import require_cgroup_v1
from kube.agentkit import AgentProc, ensure_crds, rest_for, wait_for
from kube.kubehelpers import REPO_ROOT
from oomsight.core.events import OOM_REASONS

pytestmark = [pytest.mark.kube, pytest.mark.cgroup, pytest.mark.kmsg, pytest.mark.slow]

SCENE = REPO_ROOT / "hack" / "scene"


def scene(kubeconfig: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(
        [sys.executable, str(SCENE), *args, "--kubeconfig", str(kubeconfig)],
        capture_output=True,
        text=True,
        timeout=90,
    )
    if check:
        assert out.returncode == 0, out.stdout + out.stderr
    return out


def test_scene_up_oom_down_with_a_real_agent(kubeconfig: Path, namespace: str, tmp_path: Path) -> None:
    require_cgroup_v1()
    rest = rest_for(kubeconfig)
    ensure_crds(rest)
    node, pod = f"node-{uuid.uuid4().hex[:8]}", "web-0"
    where = ("-n", namespace, "--name", pod)
    made = scene(kubeconfig, "up", *where, "--node", node, "--limit", "64Mi", "--label", "app=web")
    cgroup = Path(made.stdout.split("cgroup ", 1)[1].strip())
    agent = AgentProc(str(kubeconfig), node, tmp_path / "state", log_path=tmp_path / "agent.log").start()
    try:
        assert cgroup.is_dir() and (cgroup / "memory.limit_in_bytes").read_text().strip() == str(64 << 20)
        body = rest.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}").body
        assert body["metadata"]["labels"] == {"app": "web"} and body["spec"]["nodeName"] == node
        assert "OOM-killed" in scene(kubeconfig, "oom", *where).stdout
        assert "keeps running" in scene(kubeconfig, "oom", *where, "--child").stdout

        def reasons() -> list[str] | None:
            resp = rest.request("GET", f"/apis/events.k8s.io/v1/namespaces/{namespace}/events")
            got = sorted(
                e["reason"]
                for e in resp.body.get("items", [])
                if e["regarding"]["name"] == pod and e["reason"] in OOM_REASONS  # not HighWorkingSet
            )
            return got if len(got) >= 2 else None

        assert wait_for(reasons, 30, "two OOM Events on the pod") == ["OOMKilled", "OOMKilledChild"]
    finally:
        agent.stop()
        gone = scene(kubeconfig, "down", *where)
    assert "removed" in gone.stdout and not cgroup.exists() and not cgroup.parent.exists()
    assert rest.request("GET", f"/api/v1/namespaces/{namespace}/pods/{pod}").status == 404
    missing = scene(kubeconfig, "oom", *where, check=False)
    assert missing.returncode == 1 and missing.stderr.count("\n") == 1 and "not found" in missing.stderr
