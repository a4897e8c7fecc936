"""`oomsight explain` end to end, as a user runs it (a real subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

CORPUS = Path(__file__).parent / "fixtures" / "oom"


def _run(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oomsight", "explain", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_json_contract() -> None:
    p = _run(str(CORPUS / "captured-6.18.44-child-killed.log"), "--json")
    assert p.returncode == 0, p.stderr
    (inc,) = json.loads(p.stdout)["incidents"]
    assert inc["scope"] == "container"
    assert inc["pod_uid"] == "c6dee986-2dfb-4b28-9d49-a361817ba456"
    assert inc["container_id"].startswith("dc44d5da18ef")
    assert set(inc["victim"]) >= {
        "pid",
        "comm",
        "anon_rss_bytes",
        "file_rss_bytes",
        "shmem_rss_bytes",
        "oom_score_adj",
    }
    assert inc["limit_bytes"] == 96 << 20
    assert set(inc["charged"]) == {"anon", "file", "shmem", "kernel"} and inc["dominant"] == "anon"
    assert inc["container_survived"] is True and inc["chosen_by_oom_score_adj"] is False
    assert "Kubernetes will not report" in inc["explanation"]
    assert inc["time"] is None  # raw kmsg carries monotonic time only


def test_text_from_stdin() -> None:
    p = _run("-", stdin=(CORPUS / "cadvisor-4.8-docker-two-kills.log").read_text())
    assert p.returncode == 0, p.stderr
    assert "2 OOM kill(s)" in p.stdout and "gunpowder-memho (pid 1667)" in p.stdout


def test_not_a_kernel_log_is_one_line_exit_2() -> None:
    p = _run("-", stdin="just some notes\nnothing here\n")
    assert p.returncode == 2
    assert p.stderr.count("\n") == 1 and "does not look like a kernel log" in p.stderr
    assert "Traceback" not in p.stderr


def test_missing_file_is_one_line_exit_2() -> None:
    p = _run("/nonexistent/kern.log")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "no such file" in p.stderr
