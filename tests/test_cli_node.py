"""``oomsight node``: the JSON contract on this machine and on fixture host roots, and its one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from oomsight.cli.main import main
from oomsight.core.node import V2_ONLY_FINDINGS

FIXTURES = Path(__file__).parent / "fixtures" / "node"
KEYS = {
    "kernel", "cgroup_version", "memory_cgroup_version", "driver", "kmem_accounting", "kmem_usage_bytes",
    "memory_cgroups", "swap_total_bytes", "swap_free_bytes", "pod_swap", "thp", "overcommit_memory", "psi",
    "findings", "errors",
}


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, object]:
    assert main(["node", "--json", *argv]) == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def test_json_on_this_machine(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _json(capsys)
    assert set(doc) == KEYS
    assert doc["kernel"] == Path("/proc/sys/kernel/osrelease").read_text().strip()
    assert doc["cgroup_version"] == "hybrid" and doc["memory_cgroup_version"] == "v1"
    mc = doc["memory_cgroups"]
    assert isinstance(mc, dict) and mc["counted"] >= 1 and mc["live"] >= 1
    assert doc["kmem_accounting"] is True  # 6.18 without nokmem
    assert doc["errors"] == []
    findings = doc["findings"]
    assert isinstance(findings, list)
    for f in findings:
        assert set(f) == {"id", "severity", "message", "evidence", "fix"}
        assert f["severity"] in ("info", "warning", "critical")
    assert "swap-off" in {f["id"] for f in findings}
    assert doc["pod_swap"] is None  # memory on v1: no memory.swap.max to read
    assert not {f["id"] for f in findings} & V2_ONLY_FINDINGS


def test_json_on_a_fixture_host_root(capsys: pytest.CaptureFixture[str]) -> None:
    doc = _json(capsys, "--host-root", str(FIXTURES / "centos7-3.10-kmem-leak"))
    assert doc["kernel"] == "3.10.0-693.17.1.el7.x86_64"
    assert (doc["cgroup_version"], doc["driver"], doc["kmem_accounting"]) == ("v1", "cgroupfs", True)
    assert doc["memory_cgroups"] == {"counted": 64734, "live": 9, "dying": 64725}
    findings = doc["findings"]
    assert isinstance(findings, list)
    first = findings[0]
    assert (first["id"], first["severity"]) == ("kmem-leak-kernel", "critical")
    assert first["evidence"]["kernel"] == "3.10.0-693.17.1.el7.x86_64"
    assert doc["psi"] == {"available": False, "some_avg10": None, "some_avg60": None, "full_avg10": None}


def test_table_on_a_fixture(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["node", "--host-root", str(FIXTURES / "debian-5.10-v2-vm")]) == 0
    out = capsys.readouterr().out
    assert "kernel          5.10.0-32-amd64" in out
    assert "15 counted, 1 live, 14 dying" in out
    assert "info  memcg-dying" in out and "WARN  memory-pressure" in out


@pytest.mark.parametrize("make", ["missing", "empty", "only-sys"])
def test_wrong_host_root_is_one_line_and_exit_2(tmp_path: Path, make: str) -> None:
    root = tmp_path / "root"
    if make == "empty":
        root.mkdir()
    elif make == "only-sys":
        (root / "sys/fs/cgroup/memory").mkdir(parents=True)
        (root / "sys/fs/cgroup/memory/memory.usage_in_bytes").write_text("0\n")
    r = subprocess.run(
        [sys.executable, "-m", "oomsight", "node", "--json", "--host-root", str(root)],
        capture_output=True, text=True, check=False,
    )
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("oomsight node: ") and "--host-root" in lines[0]
    assert "Traceback" not in r.stderr
