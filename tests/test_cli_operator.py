"""``oomsight operator``: bad flags and an unusable cluster end in one line (exit 2), before kopf starts."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oomsight", "operator", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO / "operator")},
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def kubeconfig(tmp_path: Path, server: str) -> Path:
    p = tmp_path / "kubeconfig"
    p.write_text(
        "apiVersion: v1\nkind: Config\ncurrent-context: c\n"
        f"clusters: [{{name: k, cluster: {{server: '{server}', insecure-skip-tls-verify: true}}}}]\n"
        "users: [{name: u, user: {token: abc}}]\n"
        "contexts: [{name: c, context: {cluster: k, user: u}}]\n"
    )
    return p


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--kubeconfig", "/nonexistent/kubeconfig"], "--kubeconfig /nonexistent/kubeconfig is not a file"),
        (
            ["--standalone", "--peering", "x", "--kubeconfig", "/dev/null"],
            "--standalone and --peering exclude",
        ),
        (["--metrics-port", "http", "--kubeconfig", "/dev/null"], "metrics port 'http' is not a port number"),
        (["--kubeconfig", "/dev/null"], "kubeconfig"),
    ],
)
def test_bad_flags_are_one_line(args: list[str], words: str) -> None:
    r = run(*args)
    assert r.returncode == 2, r
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("oomsight operator: "), r.stderr
    assert words in lines[0]
    assert "Traceback" not in r.stderr


def test_an_unreachable_api_server_is_one_line(tmp_path: Path) -> None:
    r = run("--kubeconfig", str(kubeconfig(tmp_path, f"https://127.0.0.1:{closed_port()}")))
    assert r.returncode == 2
    (line,) = r.stderr.strip().splitlines()
    assert "cannot reach the Kubernetes API server" in line and "check --kubeconfig" in line


def test_namespace_and_all_namespaces_exclude_each_other() -> None:
    r = run("--namespace", "a", "--all-namespaces")
    assert r.returncode == 2 and "not allowed with argument" in r.stderr
