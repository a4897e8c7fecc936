"""``oomsight agent`` flags: each has an env equivalent; a bad value is one clear line, exit 2."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from oomsight.agent.settings import configure, from_args
from oomsight.core.errors import UsageError
from oomsight.kube.events import classify


def parse(argv, monkeypatch, env=None):
    for k in (
        "NODE_NAME",
        "KUBECONFIG",
        "OOMSIGHT_HOST_ROOT",
        "OOMSIGHT_STATE_DIR",
        "OOMSIGHT_INTERVAL",
        "OOMSIGHT_METRICS_PORT",
        "OOMSIGHT_WARN_THRESHOLD",
        "OOMSIGHT_KERNEL_LOG",
    ):
        monkeypatch.delenv(k, raising=False)
    for k, v in (env or {}).items():
        monkeypatch.setenv(k, v)
    p = argparse.ArgumentParser()
    configure(p)
    return from_args(p.parse_args(argv))


def test_flags(monkeypatch, tmp_path):
    kc = tmp_path / "kc"
    kc.write_text("apiVersion: v1\n")
    s = parse(
        [
            "--node-name",
            "n1",
            "--kubeconfig",
            str(kc),
            "--host-root",
            str(tmp_path),
            "--state-dir",
            str(tmp_path / "st"),
            "--interval",
            "2.5",
            "--metrics-port",
            "9100",
            "--warn-threshold",
            "80",
        ],
        monkeypatch,
    )
    assert (s.node_name, s.kubeconfig, s.host_root, s.interval, s.metrics_port) == (
        "n1",
        str(kc),
        tmp_path,
        2.5,
        9100,
    )
    assert s.state_dir == tmp_path / "st" and s.warn_threshold == 0.8


def test_env_equivalents(monkeypatch, tmp_path):
    s = parse(
        [],
        monkeypatch,
        {
            "NODE_NAME": "n2",
            "OOMSIGHT_HOST_ROOT": str(tmp_path),
            "OOMSIGHT_INTERVAL": "7",
            "OOMSIGHT_METRICS_PORT": "0",
            "OOMSIGHT_STATE_DIR": "/x",
        },
    )
    assert (s.node_name, s.host_root, s.interval, s.metrics_port, str(s.state_dir)) == (
        "n2",
        tmp_path,
        7.0,
        0,
        "/x",
    )
    assert s.kubeconfig is None  # in-cluster


def test_flag_beats_env(monkeypatch):
    assert parse(["--node-name", "flag"], monkeypatch, {"NODE_NAME": "env"}).node_name == "flag"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "no node name"),
        (["--node-name", "n", "--interval", "often"], "--interval='often' is not a number"),
        (["--node-name", "n", "--interval", "0"], "--interval=0 is out of range"),
        (["--node-name", "n", "--metrics-port", "70000"], "--metrics-port=70000 is out of range"),
        (["--node-name", "n", "--host-root", "/nonexistent-root"], "is not a directory"),
        (["--node-name", "n", "--kubeconfig", "/nonexistent/kc"], "does not exist"),
        (["--node-name", "n", "--kernel-log", "dmesg"], "--kernel-log='dmesg' is not a kernel log source"),
    ],
)
def test_bad_flags(argv, message, monkeypatch):
    with pytest.raises(UsageError, match=message):
        parse(argv, monkeypatch)


def test_cli_prints_one_line_and_exits_2():
    out = subprocess.run(
        [sys.executable, "-m", "oomsight", "agent", "--node-name", "n", "--interval", "x"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("oomsight agent: --interval='x' is not a number")


def test_unreadable_kubeconfig_is_one_line(tmp_path):
    kc = tmp_path / "kc"
    kc.write_text("not: a kubeconfig\n")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "oomsight",
            "agent",
            "--node-name",
            "n",
            "--kubeconfig",
            str(kc),
            "--state-dir",
            str(tmp_path / "s"),
            "--metrics-port",
            "0",
        ],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2, out.stderr
    assert "cannot load Kubernetes credentials" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (201, "delivered"),
        (0, "retry"),
        (429, "retry"),
        (500, "retry"),
        (503, "retry"),
        (400, "rejected"),
        (403, "rejected"),
        (404, "rejected"),
        (422, "rejected"),
    ],
)
def test_api_status_classification(code, outcome):
    assert classify(code) == outcome


def test_kernel_log_choice_from_flag_or_env(monkeypatch):
    assert parse(["--node-name", "n"], monkeypatch).kernel_log == "auto"
    assert parse(["--node-name", "n", "--kernel-log", "syslog"], monkeypatch).kernel_log == "syslog"
    assert parse(["--node-name", "n"], monkeypatch, env={"OOMSIGHT_KERNEL_LOG": "none"}).kernel_log == "none"


def test_settings_choices_are_the_host_layers():
    from oomsight.agent.settings import KERNEL_LOG_CHOICES
    from oomsight.host.kernlog import CHOICES

    assert KERNEL_LOG_CHOICES == CHOICES
