"""The chart's Grafana dashboard without a cluster: it is a Grafana dashboard with the promised panels,
variables and advice, and every query is PromQL. Names against what oomsight really serves, the
rendered objects and the rules under promtool: tests/kube/test_dashboard.py."""

from __future__ import annotations

import re

import promql_parser as pp
import pytest

from dashboardkit import dashboard, grafana_to_promql, panels

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def test_dashboard_is_a_grafana_dashboard_with_the_promised_panels() -> None:
    dash = dashboard()
    assert 38 <= dash["schemaVersion"] <= 41
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for name in ("namespace", "pod", "node"):
        assert variables[name]["type"] == "query"
        assert variables[name]["datasource"] == DATASOURCE
    ids = [p["id"] for p in panels(dash)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    shown = [p for p in panels(dash) if p["type"] != "row"]
    for p in shown:
        assert p["datasource"] == DATASOURCE, p["title"]
        assert all(t["datasource"] == DATASOURCE for t in p["targets"]), p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        # one sentence says what the panel shows, one what to do when it is red
        assert re.search(r"\bWhen\b[^.]*:", p["description"]), f"{p['title']}: no 'When ...:' advice"
    queries = " ".join(t["expr"] for p in shown for t in p["targets"])
    for metric in (
        "oomsight_oom_kills_total",
        "oomsight_container_working_set_ratio",
        "oomsight_container_memory_bytes",
        "oomsight_container_memory_stuck",
        "oomsight_agent_sweep_duration_seconds",
        "oomsight_agent_kmsg_lost_records_total",
        "oomsight_agent_kmsg_gaps_total",
        "oomsight_agent_api_errors_total",
        "oomsight_agent_events_pending",
        "oomsight_operator_reconciles_total",
    ):
        assert metric in queries, f"no panel shows {metric}"
    assert 'container_survived="true"' in queries, "the invisible child-kill panel is missing"
    assert ">= 0.9" in queries, "the containers-at-risk panel is missing"


def test_every_query_is_promql() -> None:
    dash = dashboard()
    exprs = [(p["title"], t["expr"]) for p in panels(dash) for t in p.get("targets", [])]
    for v in dash["templating"]["list"]:
        if v["type"] == "query":
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v["definition"])
            assert m, v["definition"]
            assert v["query"] == v["definition"]
            exprs.append((f"variable {v['name']}", m[1]))
    bad = []
    for where, expr in exprs:
        try:
            pp.parse(grafana_to_promql(expr))
        except ValueError as err:
            bad.append(f"{where}: {err}: {expr}")
    assert not bad, "\n".join(bad)
    with pytest.raises(ValueError):  # the parser refuses what Prometheus would
        pp.parse(grafana_to_promql('sum by (scope) (rate(oomsight_oom_kills_total{pod=~"$pod"}))'))
