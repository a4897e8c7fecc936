"""``oomsight diagnose`` on this machine: flags, containers at risk, a kernel log it cannot read."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from cgroupkit import MIB, CgroupKit
from oomsight.cli.diagnose import parse_since, parse_threshold
from oomsight.cli.main import main
from oomsight.core.errors import UsageError
from realparts import require_binary

NOW = datetime(2026, 11, 23, 14, 0, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("30m", NOW - timedelta(minutes=30)),
        ("1h", NOW - timedelta(hours=1)),
        ("2d", NOW - timedelta(days=2)),
        ("1h30m", NOW - timedelta(hours=1, minutes=30)),
        ("90s", NOW - timedelta(seconds=90)),
        ("2026-11-23T13:00:00Z", datetime(2026, 11, 23, 13, 0, tzinfo=UTC)),
        ("2026-11-23T13:00:00", datetime(2026, 11, 23, 13, 0, tzinfo=UTC)),
        ("2026-11-23T14:00:00+01:00", datetime(2026, 11, 23, 13, 0, tzinfo=UTC)),
    ],
)
def test_parse_since(text: str, expected: datetime) -> None:
    assert parse_since(text, now=NOW) == expected


@pytest.mark.parametrize(("text", "expected"), [("0.9", 0.9), ("90", 0.9), ("85%", 0.85), ("1", 1.0)])
def test_parse_threshold(text: str, expected: float) -> None:
    assert parse_threshold(text) == pytest.approx(expected)


@pytest.mark.parametrize("text", ["yesterday", "1x", "", "-5m"])
def test_bad_since_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        parse_since(text, now=NOW)


@pytest.mark.parametrize("text", ["lots", "0", "250%", "-1"])
def test_bad_threshold_is_a_usage_error(text: str) -> None:
    with pytest.raises(UsageError):
        parse_threshold(text)


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "oomsight", "diagnose", *args], capture_output=True, text=True, check=False
    )


def test_bad_flag_value_is_one_line_not_a_traceback() -> None:
    out = run_cli("--since", "yesterday")
    assert out.returncode == 2
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert out.stderr.startswith("oomsight diagnose: --since 'yesterday'")


def diagnose_json(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()
    rc = main(["diagnose", "--json", *args])
    doc: dict[str, Any] = json.loads(capsys.readouterr().out)
    return rc, doc


@pytest.mark.cgroup
def test_container_near_its_limit_is_at_risk(
    cgroups: CgroupKit, capsys: pytest.CaptureFixture[str]
) -> None:
    pod, uid = cgroups.pod()
    near, near_id = cgroups.container(pod, limit=80 * MIB)
    calm, calm_id = cgroups.container(pod, limit=256 * MIB)
    procs = [near.spawn("--anon", "70"), calm.spawn("--anon", "16")]  # + ~5 MiB of python
    try:
        rc, doc = diagnose_json(capsys)
        rc_strict, strict = diagnose_json(capsys, "--threshold", "99%")
    finally:
        for p in procs:
            p.kill()
            p.wait()
            assert p.stdout is not None
            p.stdout.close()
    assert rc == 0 and rc_strict == 0
    prefix = f"/{cgroups.root.name}/"
    risk = [c for c in doc["at_risk"] if c["cgroup"].startswith(prefix)]
    assert [c["container_id"] for c in risk] == [near_id]
    (c,) = risk
    assert c["pod_uid"] == uid and c["limit_bytes"] == 80 * MIB and c["limit_level"] == "container"
    assert c["working_set_ratio"] >= 0.9
    # the same fields as `oomsight top --json`
    capsys.readouterr()
    assert main(["top", "--json"]) == 0
    top = json.loads(capsys.readouterr().out)
    top_row = next(r for r in top["containers"] if r["container_id"] == near_id)
    assert set(top_row) == set(c)
    assert not [c for c in strict["at_risk"] if c["cgroup"].startswith(prefix)]
    assert doc["threshold"] == 0.9 and strict["threshold"] == 0.99
    assert calm_id not in {c["container_id"] for c in doc["at_risk"]}


def test_since_in_the_future_lists_no_incident(capsys: pytest.CaptureFixture[str]) -> None:
    rc, doc = diagnose_json(capsys, "--since", "2999-01-01T00:00:00Z")
    assert rc == 0
    assert doc["incidents"] == []
    assert doc["since"] == "2999-01-01T00:00:00Z"
    assert doc["kmsg"]["records"] > 0  # the log was read, only the kills were filtered


def test_document_shape(capsys: pytest.CaptureFixture[str]) -> None:
    rc, doc = diagnose_json(capsys)
    assert rc == 0
    assert set(doc) >= {"node", "kmsg", "incidents", "at_risk", "stuck", "threshold", "since"}
    assert set(doc["kmsg"]) >= {"records", "gaps", "lost_records", "first_seq", "last_seq", "error"}
    assert doc["kmsg"]["error"] is None
    assert doc["node"]["kernel"] == Path("/proc/sys/kernel/osrelease").read_text().strip()
    assert all(set(f) == {"id", "severity", "message", "evidence", "fix"} for f in doc["node"]["findings"])
    assert main(["node", "--json"]) == 0
    node = json.loads(capsys.readouterr().out)
    assert set(doc["node"]) == set(node)  # the same document as `oomsight node --json`
    assert doc["node"]["kernel"] == node["kernel"]
    for gap in doc["kmsg"]["gaps"]:
        assert gap["lost"] == gap["next_seq"] - gap["expected_seq"] > 0


def test_unreadable_kmsg_reports_the_rest_and_says_why() -> None:
    """Root without CAP_SYSLOG (a container that did not add it): the kernel log is refused."""
    setpriv = require_binary("setpriv", "util-linux; it drops CAP_SYSLOG")
    if Path("/proc/sys/kernel/dmesg_restrict").read_text().strip() != "1":
        pytest.skip("kernel.dmesg_restrict=0: reading /dev/kmsg needs no capability here")
    out = subprocess.run(
        [setpriv, "--bounding-set=-syslog", sys.executable, "-m", "oomsight", "diagnose",
         "--json"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert out.returncode == 1
    doc = json.loads(out.stdout)
    assert "CAP_SYSLOG" in doc["kmsg"]["error"] and "dmesg_restrict=1" in doc["kmsg"]["error"]
    assert doc["incidents"] == [] and doc["node"]["kernel"]
    assert out.stderr.count("\n") == 1
    assert out.stderr.startswith("oomsight diagnose: permission denied to read /dev/kmsg;")


def test_text_output_has_every_section(capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert main(["diagnose"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("node: kernel ")
    assert "OOM kills since boot:" in out
    assert "containers at or above 90% of their limit:" in out
    assert "stuck cgroups" in out


def test_repeated_kills_of_one_cause_are_grouped_in_text() -> None:
    """A storm captured here (20 kills in 14 containers): each container's kills form one group."""
    from oomsight.cli.diagnose import group_incidents
    from oomsight.core.diagnosis import diagnose
    from oomsight.core.logtext import parse_log
    from oomsight.core.oomreport import assemble

    log = Path(__file__).parent / "fixtures/oom/captured-6.18.44-storm.log"
    _, records = parse_log(log.read_text())
    incidents = [diagnose(i).as_json() for i in assemble(records)]
    groups = group_incidents(incidents)
    assert sum(len(g) for g in groups) == len(incidents)
    assert len(groups) < len(incidents)  # the storm repeats causes
    for g in groups:
        assert len({(j["task_cgroup"], j["victim"]["comm"], j["scope"]) for j in g}) == 1
    # Ordered by each group's latest kill, as they happened.
    latest = [incidents.index(g[-1]) for g in groups]
    assert latest == sorted(latest)
