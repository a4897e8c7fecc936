"""End to end on a real node: real Deployments, the real kubelet, containerd and runc, real OOM kills,
and oomsight installed by ``helm install`` exactly as the README says (``hack/envtest up --node``).

Each test looks only at its own namespace and Pods: other people's OOM kills on this machine do not
matter, and every wait polls with a generous deadline (no timed asserts).
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from node.nodekit import (
    CHILD,
    CREEP,
    GROW,
    Chart,
    apply,
    container_status,
    create_namespace,
    deployment,
    oomsight_events,
    reasons,
    service_get,
    the_pod,
    wait_for,
)

pytestmark = [pytest.mark.node, pytest.mark.slow]

KILL_DEADLINE = 240.0  # the kubelet's back-off and a busy machine: minutes, not seconds
EVENT_DEADLINE = 120.0


def test_the_chart_runs_unprivileged_and_serves_metrics_and_healthz(chart: Chart) -> None:
    pods = chart.agent_pods()
    assert len(pods) == 1
    agent = pods[0]["spec"]["containers"][0]
    assert agent["securityContext"].get("privileged") is False
    assert "ALL" in agent["securityContext"]["capabilities"]["drop"]
    ports = chart.metrics_services()
    assert {name for name, _ in ports} == {"oomsight-agent-metrics", "oomsight-operator-metrics"}
    for name, port in ports:
        assert service_get(chart.kubectl, name, port, "/healthz").strip(), (name, port)
        metrics = service_get(chart.kubectl, name, port, "/metrics")
        assert "# TYPE " in metrics and "oomsight_" in metrics, (name, port)


def test_main_process_killed_kubelet_and_oomsight_agree(chart: Chart) -> None:
    kubectl = chart.kubectl
    ns = create_namespace(kubectl, "e2e-main")
    apply(kubectl, ns, deployment("main", [GROW], limit="64Mi", request="32Mi"))

    def killed_and_restarted() -> dict[str, Any] | None:
        pod = the_pod(kubectl, ns, "main")
        if pod is None:
            return None
        status = container_status(pod)
        last = (status.get("lastState") or {}).get("terminated") or {}
        return pod if last.get("reason") == "OOMKilled" and status["restartCount"] >= 1 else None

    pod = wait_for(killed_and_restarted, KILL_DEADLINE, "the kubelet to report OOMKilled and a restart")
    name = pod["metadata"]["name"]
    events = wait_for(
        lambda: [e for e in oomsight_events(kubectl, ns, name) if e["reason"] == "OOMKilled"],
        EVENT_DEADLINE,
        f"oomsight's OOMKilled Event on {name}",
    )
    note = events[0]["note"]
    assert events[0]["type"] == "Warning"
    assert "container hog" in note and "64.0 MiB" in note, note
    assert "OOMKilledPodLimit" not in reasons(oomsight_events(kubectl, ns, name))


def test_child_killed_pid1_lives_only_oomsight_reports_it(chart: Chart) -> None:
    kubectl = chart.kubectl
    ns = create_namespace(kubectl, "e2e-child")
    apply(kubectl, ns, deployment("child", [CHILD, "1", "0"], limit="64Mi", request="32Mi"))

    def child_died() -> dict[str, Any] | None:
        pod = the_pod(kubectl, ns, "child")
        if pod is None:
            return None
        logs = kubectl.run("logs", "-n", ns, pod["metadata"]["name"], check=False).stdout
        return pod if "child exit -9 kills 1" in logs else None

    pod = wait_for(child_died, KILL_DEADLINE, "the child process to be OOM-killed")
    name = pod["metadata"]["name"]
    events = wait_for(
        lambda: [e for e in oomsight_events(kubectl, ns, name) if e["reason"] == "OOMKilledChild"],
        EVENT_DEADLINE,
        f"oomsight's OOMKilledChild Event on {name}",
    )
    assert "kept running" in events[0]["note"], events[0]["note"]
    status = container_status(the_pod(kubectl, ns, "child") or pod)
    assert status["restartCount"] == 0 and not status.get("lastState"), json.dumps(status)
    assert "running" in status["state"]


def test_working_set_warning_comes_before_the_kill(chart: Chart) -> None:
    kubectl = chart.kubectl
    ns = create_namespace(kubectl, "e2e-warn")
    # 95% of the limit, held for 45 s (the agent sweeps every 10 s), then past the limit.
    apply(kubectl, ns, deployment("warn", [CREEP, "0.95", "45"], limit="96Mi", request="32Mi"))

    def warned() -> tuple[str, dict[str, Any]] | None:
        pod = the_pod(kubectl, ns, "warn")
        if pod is None:
            return None
        got = [e for e in oomsight_events(kubectl, ns, pod["metadata"]["name"])]
        return (pod["metadata"]["name"], pod) if "HighWorkingSet" in reasons(got) else None

    name, pod = wait_for(warned, KILL_DEADLINE, "oomsight's HighWorkingSet Event")
    assert container_status(pod)["restartCount"] == 0, "the warning came only after the kill"
    wait_for(
        lambda: {"HighWorkingSet", "OOMKilled"} <= set(reasons(oomsight_events(kubectl, ns, name))),
        KILL_DEADLINE,
        "the OOM kill after the warning",
    )
