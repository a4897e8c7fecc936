"""``oomsight recommend --from-csv``: CSV in, table or JSON out; bad CSV is one line and exit 2."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest

from oomsight.cli.main import main
from oomsight.core.errors import ParseError
from oomsight.core.usage_csv import parse_usage_csv

MiB = 1 << 20

# Two days of a 2-replica API (one OOM kill at a 400 MiB limit) and a sidecar whose working set is
# mostly page cache (anon_bytes given), ISO and epoch timestamps mixed.
GOOD = """timestamp,workload,container,pod,working_set_bytes,limit_bytes,oom_killed,anon_bytes
2026-11-20T00:00:00Z,shop/api,app,api-1,314572800,419430400,0,
2026-11-20T12:00:00Z,shop/api,app,api-2,356515840,419430400,false,
2026-11-21T03:00:00+00:00,shop/api,app,api-1,419430400,419430400,1,
2026-11-21T12:00:00Z,shop/api,app,api-1,335544320,419430400,0,
1795219200,shop/api,log,api-1,943718400,,,104857600
1795262400,shop/api,log,api-1,1048576000,,,104857600
"""


def run(
    argv: list[str], capsys: pytest.CaptureFixture[str], stdin: str | None = None
) -> tuple[int, str, str]:
    if stdin is not None:
        old = sys.stdin
        sys.stdin = io.StringIO(stdin)
        try:
            code = main(argv)
        finally:
            sys.stdin = old
    else:
        code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_json_from_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "series.csv"
    f.write_text(GOOD)
    code, out, err = run(["recommend", "--from-csv", str(f), "--json"], capsys)
    assert (code, err) == (0, "")
    body = json.loads(out)
    recs = {(r["workload"], r["container"]): r for r in body["recommendations"]}
    assert set(recs) == {("shop/api", "app"), ("shop/api", "log")}
    app, log = recs["shop/api", "app"], recs["shop/api", "log"]
    assert app["oomKills"] == 1 and app["limitBytes"] >= 480 * MiB  # 400 MiB x 1.2 after the kill
    assert app["requestBytes"] <= app["limitBytes"]
    assert app["samples"] == 4 and 0 < app["confidence"] < 1
    assert app["limit"].endswith("Mi") and "OOM" in app["reason"]
    assert log["limitBytes"] < 300 * MiB and "page-cache" in log["notes"]  # 100 MiB anon, not 1000 MiB cache
    assert log["maxBytes"] >= 1000 * MiB


def test_table_from_stdin_with_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["recommend", "--from-csv", "-", "--minimum", "2Gi"], capsys, stdin=GOOD)
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["WORKLOAD", "CONTAINER", "REQUEST", "LIMIT"]
    assert len(lines) == 3
    assert all(" 2.0Gi " in line for line in lines[1:])
    assert all("minimum" in line for line in lines[1:])


@pytest.mark.parametrize(
    ("csv_text", "expect"),
    [
        ("timestamp,workload,container\n1,a,b\n", "line 1: missing column(s) working_set_bytes"),
        ("timestamp,workload,container,working_set_bytes\n1,a,b,10\n2,a,b,ten\n",
         "line 3, column working_set_bytes: 'ten' is not a number of bytes"),
        ("timestamp,workload,container,working_set_bytes\nyesterday,a,b,10\n",
         "line 2, column timestamp: 'yesterday' is not a time"),
        # Found by bench/fuzz.py: float() reads these as inf/nan, and the replay died on them.
        ("timestamp,workload,container,working_set_bytes\n1703.2e+0800,a,b,10\n",
         "line 2, column timestamp: '1703.2e+0800' is not a time"),
        ("timestamp,workload,container,working_set_bytes\nnan,a,b,10\n", "'nan' is not a time"),
        ("timestamp,workload,container,working_set_bytes\n1e13,a,b,10\n", "'1e13' is not a time"),
        ("timestamp,workload,container,working_set_bytes,oom_killed\n1,a,b,10,maybe\n",
         "line 2, column oom_killed: 'maybe' is not a boolean"),
        ("timestamp,workload,container,working_set_bytes\n1,,b,10\n", "line 2, column workload: empty"),
        ("timestamp,workload,container,working_set_bytes\n1,a,b,-5\n", "column working_set_bytes: '-5'"),
        ("", "empty file"),
        ("timestamp,workload,container,working_set_bytes\n", "no rows"),
    ],
)  # fmt: skip
def test_bad_csv_is_one_line_exit_2(csv_text: str, expect: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["recommend", "--from-csv", "-"], capsys, stdin=csv_text)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and expect in err and "Traceback" not in err


def test_unreadable_file_and_bad_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["recommend", "--from-csv", str(tmp_path / "nope.csv")], capsys)
    assert code == 2 and "cannot read" in err and err.count("\n") == 1
    f = tmp_path / "s.csv"
    f.write_text(GOOD)
    code, _, err = run(["recommend", "--from-csv", str(f), "--half-life", "soon"], capsys)
    assert code == 2 and "--half-life" in err and "not a duration" in err


def test_now_leaves_out_later_rows(capsys: pytest.CaptureFixture[str]) -> None:
    """The real vm-311 rows: as of the cut, the day after it is unknown; without --now, it counts."""
    fixture = Path(__file__).parent / "fixtures" / "recommend" / "bitbrains-2013-8-vm-311.csv"
    rows = parse_usage_csv(fixture.read_text().splitlines())
    cut = rows[0].t + 8 * 86400  # 2013-08-08T22:02:56Z
    argv = ["recommend", "--from-csv", str(fixture), "--json"]
    code, out, _ = run([*argv, "--now", "2013-08-08T22:02:56Z"], capsys)
    (as_of_cut,) = json.loads(out)["recommendations"]
    code2, out, _ = run(argv, capsys)
    (as_of_last,) = json.loads(out)["recommendations"]
    assert code == code2 == 0
    assert as_of_cut["samples"] == sum(1 for r in rows if r.t <= cut) < as_of_last["samples"] == len(rows)
    code, out, err = run([*argv, "--now", "2013-07-01T00:00:00Z"], capsys)
    assert code == 2 and out == "" and "no rows at or before --now" in err and err.count("\n") == 1


def test_parse_rows() -> None:
    rows = parse_usage_csv(GOOD.splitlines(), "g.csv")
    assert len(rows) == 6
    oom = rows[2]
    assert (oom.line, oom.oom_killed, oom.limit_bytes, oom.pod) == (4, True, 400 * MiB, "api-1")
    assert (rows[0].t, oom.t) == (1795132800.0, 1795219200.0 + 3 * 3600)  # ISO, with and without Z
    assert rows[4].anon_bytes == 100 * MiB and rows[4].limit_bytes is None
    with pytest.raises(ParseError, match="more cells"):
        parse_usage_csv(["timestamp,workload,container,working_set_bytes", "1,a,b,2,3"])


def test_a_workload_last_seen_years_before_the_newest_row(capsys: pytest.CaptureFixture[str]) -> None:
    """Found by bench/fuzz.py: one workload's readings end ~3 years before another's. Its window
    cut-off (2 ** (age / half-life)) overflowed a float and the CLI died with an OverflowError."""
    csv_text = (
        "timestamp,workload,container,working_set_bytes\n"
        "1700000000,old,app,320000000\n"
        "2026-11-23T10:00:00Z,new,app,1000\n"
    )
    code, out, err = run(["recommend", "--from-csv", "-", "--json"], capsys, stdin=csv_text)
    assert code == 0, err
    body = json.loads(out)
    assert {r["workload"] for r in body["recommendations"]} == {"old", "new"}
