"""The chart's Grafana dashboard and PrometheusRule against what oomsight really exposes.

Metric and label names are not listed here: they are read from the ``/metrics`` of a real
``oomsight agent`` (real cgroups, a real OOM kill of a main process and of a child, a real API server)
and of a real ``oomsight operator``. Every PromQL expression is parsed with ``promql_parser`` (the
Prometheus grammar); every selector must name a metric that was served, every label in a matcher,
``by``/``on``/``group_left``, a legend or an alert annotation must be on those series or be a target
label the chart's ServiceMonitor gives them. The rules pass ``promtool check rules`` and, with
``promtool test rules``, fire on the series the agent really writes.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import promql_parser as pp
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from dashboardkit import dashboard, grafana_to_promql, panels
from kube.agentkit import AgentProc, free_port, make_scene, rest_for, wait_for
from kube.crdkit import CHART, apply_crds
from kube.kubehelpers import Kubectl
from kube.opkit import OperatorProc, create_peering
from oomsight.agent.metrics import COUNTERS

ALL_ON = [
    "--set",
    "grafana.dashboards.enabled=true",
    "--set",
    "prometheusRule.enabled=true",
    "--set",
    "serviceMonitor.enabled=true",
]
PROMETHEUS_SERIES = {"up"}
"""Series Prometheus itself writes for every target (not served by oomsight)."""
OPERATOR_TARGET_LABELS = {"job", "instance", "namespace", "service", "pod", "container", "endpoint"}
"""Target labels prometheus-operator puts on every series a ServiceMonitor endpoint scrapes (its
generated relabel_configs; ``instance`` is Prometheus' own). The ServiceMonitor's relabelings add more."""
CLOSED_LABELS = ("kind", "container_survived")
"""Labels whose every value the scene below makes the agent emit: a literal matcher on them must use those."""


# ---- what oomsight serves ---------------------------------------------------------------------


@dataclass
class Catalog:
    """Served sample names -> label names, and the values seen per (sample, label)."""

    labels: dict[str, set[str]] = field(default_factory=dict)
    values: dict[tuple[str, str], set[str]] = field(default_factory=dict)

    def add_exposition(self, text: str) -> None:
        for fam in text_string_to_metric_families(text):
            name = fam.name + "_total" if fam.type == "counter" else fam.name
            self.labels.setdefault(name, set())
            for s in fam.samples:
                self.labels.setdefault(s.name, set()).update(s.labels)
                for k, v in s.labels.items():
                    self.values.setdefault((s.name, k), set()).add(v)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=5) as r:
        body: str = r.read().decode()
        return body


@pytest.fixture
def served(kubeconfig: Path, kubectl: Kubectl, cgroups, namespace: str, tmp_path: Path) -> Iterator[Catalog]:
    """The metrics of a real agent that saw a main-process kill and a child kill, and of a real operator."""
    cat = Catalog()
    node = f"node-dash-{uuid.uuid4().hex[:8]}"
    scene = make_scene(rest_for(kubeconfig), cgroups, namespace, node)
    agent = AgentProc(str(kubeconfig), node, tmp_path / "state", log_path=tmp_path / "agent.log")
    apply_crds(kubectl)
    create_peering(kubectl, namespace, "dash")
    port = free_port()
    op = OperatorProc(
        kubeconfig,
        namespace,
        tmp_path / "op.log",
        "op-dash",
        ["--peering", "dash", "--metrics-port", str(port)],
    )
    try:
        agent.start()
        scene.oom_kill_main()
        scene.oom_kill_child()

        def complete() -> str | None:
            text = agent.get("/metrics")
            want = (
                'container_survived="true"',
                'container_survived="false"',
                "oomsight_container_memory_bytes{",
            )
            return text if all(w in text for w in want) and f'pod="{scene.name}"' in text else None

        cat.add_exposition(wait_for(complete, 30, "both kills and a sweep sample on /metrics"))
        op.start()
        url = f"http://127.0.0.1:{port}/metrics"

        def op_metrics() -> str | None:
            if not op.alive():
                raise AssertionError(f"operator exited:\n{op.log()}")
            try:
                return scrape(url)
            except OSError:
                return None

        cat.add_exposition(wait_for(op_metrics, 45, "the operator's /metrics"))
        yield cat
    finally:
        op.stop()
        agent.kill()
        scene.stop_procs()


# ---- the chart --------------------------------------------------------------------------------


def helm_template(helm_bin: Path, tmp_path: Path, *args: str) -> list[dict[str, Any]]:
    env = {
        **os.environ,
        **{k: str(tmp_path / k.lower()) for k in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME")},
    }
    out = subprocess.run(
        [str(helm_bin), "template", "dash", str(CHART), "--namespace", "mon", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"{len(found)} {kind} rendered"
    return found[0]


def target_labels(docs: list[dict[str, Any]]) -> set[str]:
    mon = one(docs, "ServiceMonitor")
    (endpoint,) = mon["spec"]["endpoints"]
    # without honorLabels Prometheus renames the agent's namespace/pod/container to exported_*
    assert endpoint.get("honorLabels") is True
    return OPERATOR_TARGET_LABELS | {r["targetLabel"] for r in endpoint.get("relabelings", [])}


# ---- PromQL -----------------------------------------------------------------------------------


@dataclass
class Usage:
    selectors: list[tuple[str, dict[str, str], dict[str, str]]] = field(default_factory=list)
    """(metric, {label: matcher op}, {label: literal value}) per vector selector."""
    grouping: list[tuple[set[str], set[str]]] = field(default_factory=list)
    """(labels named in by/on/group_left, metrics under that node)."""


def walk(node: Any, use: Usage) -> set[str]:
    """Record selectors and groupings; return the metric names under ``node``."""
    if isinstance(node, pp.VectorSelector):
        ms = node.matchers.matchers
        name = node.name or next((m.value for m in ms if m.name == "__name__"), None)
        assert name, f"selector without a metric name: {node}"
        ops = {m.name: str(m.op) for m in ms if m.name != "__name__"}
        vals = {m.name: m.value for m in ms if m.name != "__name__"}
        use.selectors.append((name, ops, vals))
        return {name}
    if isinstance(node, pp.MatrixSelector):
        return walk(node.vector_selector, use)
    if isinstance(node, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
        return walk(node.expr, use)
    if isinstance(node, pp.Call):
        return set().union(*(walk(a, use) for a in node.args)) if node.args else set()
    if isinstance(node, pp.AggregateExpr):
        metrics = walk(node.expr, use)
        if node.modifier is not None:
            use.grouping.append((set(node.modifier.labels), metrics))
        return metrics
    if isinstance(node, pp.BinaryExpr):
        metrics = walk(node.lhs, use) | walk(node.rhs, use)
        mod = node.modifier
        if mod is not None:
            named = set(mod.matching.labels) if mod.matching is not None else set()
            use.grouping.append((named | set(mod.group_labels or ()), metrics))
        return metrics
    return set()


def is_scalar(node: Any) -> bool:
    if isinstance(node, pp.ParenExpr):
        return is_scalar(node.expr)
    return isinstance(node, pp.NumberLiteral) or (
        isinstance(node, pp.Call) and str(node.func.return_type).endswith("Scalar")
    )


def output_labels(node: Any, cat: Catalog, targets: set[str]) -> set[str]:
    """Label names the result of ``node`` can carry (for legends and alert annotations)."""
    if isinstance(node, pp.VectorSelector):
        return cat.labels.get(node.name, set()) | targets
    if isinstance(node, pp.MatrixSelector):
        return output_labels(node.vector_selector, cat, targets)
    if isinstance(node, pp.ParenExpr | pp.UnaryExpr | pp.SubqueryExpr):
        return output_labels(node.expr, cat, targets)
    if isinstance(node, pp.Call):
        vec = [a for a in node.args if not isinstance(a, pp.NumberLiteral | pp.StringLiteral)]
        return output_labels(vec[0], cat, targets) if vec else set()
    if isinstance(node, pp.AggregateExpr):
        inner = output_labels(node.expr, cat, targets)
        if node.modifier is None:
            return inner if str(node.op) in ("topk", "bottomk") else set()
        if str(node.modifier.type).endswith("By"):
            return set(node.modifier.labels)
        return inner - set(node.modifier.labels)
    if isinstance(node, pp.BinaryExpr):
        lhs, rhs = output_labels(node.lhs, cat, targets), output_labels(node.rhs, cat, targets)
        if is_scalar(node.lhs):
            return rhs
        if str(node.op) == "or":
            return lhs | rhs
        return lhs | set(node.modifier.group_labels or ()) if node.modifier is not None else lhs
    return set()


def check_expr(expr: str, where: str, cat: Catalog, targets: set[str]) -> tuple[Any, list[str]]:
    """Parse ``expr`` and list every name in it that oomsight (or the scrape) does not provide."""
    try:
        ast = pp.parse(grafana_to_promql(expr))
    except (ValueError, SyntaxError) as err:
        return None, [f"{where}: does not parse ({err}): {expr}"]
    use = Usage()
    walk(ast, use)
    problems = []
    known = set(cat.labels) | PROMETHEUS_SERIES
    for metric, ops, vals in use.selectors:
        if metric not in known:
            problems.append(f"{where}: metric {metric} is not served")
            continue
        have = cat.labels.get(metric, set()) | targets
        for label in ops:
            if label not in have:
                problems.append(f"{where}: {metric} has no label {label} (it has {sorted(have)})")
        for label in CLOSED_LABELS:
            seen = cat.values.get((metric, label))
            if label in vals and seen and "$" not in vals[label]:
                for alt in vals[label].split("|"):
                    if alt not in seen:
                        problems.append(
                            f"{where}: {metric}{{{label}}} is never {alt!r} (seen {sorted(seen)})"
                        )
    for named, metrics in use.grouping:
        have = set().union(*(cat.labels.get(m, set()) for m in metrics)) | targets
        for label in named - have:
            problems.append(f"{where}: groups by {label}, which none of {sorted(metrics)} has")
    return ast, problems


# ---- tests ------------------------------------------------------------------------------------


def test_every_query_uses_names_oomsight_really_serves(
    served: Catalog, helm_bin: Path, tmp_path: Path
) -> None:
    # the agent's counters are declared with their label names; a counter that did not happen
    # in this scene has no sample to show them, so the declaration fills in (and must agree)
    for name, (_help, labels) in COUNTERS.items():
        assert name in served.labels, f"{name} declared but not served"
        assert served.labels[name] <= set(labels), name
        served.labels[name] |= set(labels)
    docs = helm_template(helm_bin, tmp_path, *ALL_ON)
    targets = target_labels(docs)
    problems: list[str] = []
    dash = dashboard()
    for p in panels(dash):
        for t in p.get("targets", []):
            where = f"panel {p['title']!r} {t['refId']}"
            ast, found = check_expr(t["expr"], where, served, targets)
            problems += found
            if ast is not None and t.get("legendFormat") not in (None, "__auto"):
                out = output_labels(ast, served, targets)
                for label in re.findall(r"\{\{\s*(\w+)\s*\}\}", t["legendFormat"]):
                    if label not in out:
                        problems.append(f"{where}: legend uses {label}, the result has {sorted(out)}")
    for v in dash["templating"]["list"]:
        if v["type"] != "query":
            continue
        m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", v["definition"])
        assert m, v["definition"]
        ast, found = check_expr(m[1], f"variable {v['name']}", served, targets)
        problems += found
        if ast is not None and m[2] not in output_labels(ast, served, targets):
            problems.append(f"variable {v['name']}: {m[1]} has no label {m[2]}")
    rule = one(docs, "PrometheusRule")
    for group in rule["spec"]["groups"]:
        for r in group["rules"]:
            where = f"alert {r['alert']}"
            ast, found = check_expr(r["expr"], where, served, targets)
            problems += found
            if ast is None:
                continue
            out = output_labels(ast, served, targets)
            for text in r["annotations"].values():
                for label in re.findall(r"\$labels\.(\w+)", text):
                    if label not in out:
                        problems.append(
                            f"{where}: annotation uses $labels.{label}, the alert has {sorted(out)}"
                        )
    assert not problems, "\n".join(problems)


def test_queries_are_checked_for_real(served: Catalog, helm_bin: Path, tmp_path: Path) -> None:
    """The checker above must catch a wrong metric, a wrong label and a wrong label value."""
    targets = target_labels(helm_template(helm_bin, tmp_path, *ALL_ON))
    ok = 'sum by (scope) (increase(oomsight_oom_kills_total{container_survived="true"}[5m]))'
    assert check_expr(ok, "ok", served, targets)[1] == []
    bad = {
        "oomsight_oom_kill_total": "is not served",
        'oomsight_oom_kills_total{survived="true"}': "has no label survived",
        'oomsight_container_memory_bytes{kind="rss"}': "is never 'rss'",
        "sum by (level) (oomsight_container_working_set_ratio)": "groups by level",
        "sum by (scope) (oomsight_oom_kills_total{": "does not parse",
    }
    for expr, why in bad.items():
        problems = check_expr(expr, "bad", served, targets)[1]
        assert problems and why in problems[0], (expr, problems)


def test_both_objects_render_only_when_asked(helm_bin: Path, tmp_path: Path) -> None:
    assert not {d["kind"] for d in helm_template(helm_bin, tmp_path)} & {"PrometheusRule"}
    assert not [d for d in helm_template(helm_bin, tmp_path) if d["metadata"]["name"].endswith("-dashboard")]
    docs = helm_template(
        helm_bin,
        tmp_path,
        *ALL_ON,
        "--set",
        "grafana.dashboards.namespace=grafana",
        "--set",
        "grafana.dashboards.annotations.grafana_folder=oomsight",
        "--set",
        "prometheusRule.labels.release=kps",
        "--set",
        "prometheusRule.additionalLabels.team=platform",
    )
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard"))
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["namespace"] == "grafana"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "oomsight"}
    assert json.loads(cm["data"]["oomsight.json"]) == dashboard()
    rule = one(docs, "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert rule["metadata"]["labels"]["release"] == "kps"
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) >= {
        "OomsightContainerOOMKilled",
        "OomsightChildProcessOOMKilled",
        "OomsightContainerNearLimit",
        "OomsightMemoryCgroupStuck",
        "OomsightKmsgRecordsLost",
        "OomsightKernelLogUnreadable",
        "OomsightAgentDown",
    }
    assert alerts["OomsightContainerNearLimit"]["for"] == "10m"
    assert 'up{job="dash-oomsight-agent-metrics"}' in alerts["OomsightAgentDown"]["expr"]
    svc = [d["metadata"]["name"] for d in docs if d["kind"] == "Service"]
    assert "dash-oomsight-agent-metrics" in svc, "OomsightAgentDown's job is the agent Service's name"
    for a in alerts.values():
        assert a["labels"]["team"] == "platform"
        assert {"summary", "description"} <= set(a["annotations"]), a["alert"]


def test_values_schema_rejects_a_bad_dashboard_or_rule_value(helm_bin: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HELM_CACHE_HOME": str(tmp_path / "c"), "HELM_CONFIG_HOME": str(tmp_path / "g")}
    for bad, key in (
        (["--set", "prometheusRule.nearLimitFor=ten minutes"], "nearLimitFor"),
        (["--set", "grafana.dashboards.enabled=yes"], "enabled"),
        (["--set", "prometheusRule.colour=red"], "colour"),
    ):
        out = subprocess.run(
            [str(helm_bin), "template", "dash", str(CHART), *bad],
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
        assert out.returncode != 0 and key in out.stderr, (bad, out.stderr)


def rules_file(helm_bin: Path, tmp_path: Path, *extra: str) -> Path:
    rule = one(helm_template(helm_bin, tmp_path, *ALL_ON, *extra), "PrometheusRule")
    path = tmp_path / "oomsight.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def test_rules_pass_promtool_check(helm_bin: Path, promtool_bin: Path, tmp_path: Path) -> None:
    path = rules_file(helm_bin, tmp_path)
    out = subprocess.run(
        [str(promtool_bin), "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "SUCCESS: 8 rules found" in out.stdout


WHERE = {"namespace": "shop", "pod": "web-0", "container": "app", "node": "n1"}
KILL = (
    'oomsight_oom_kills_total{{namespace="shop", pod="web-0", container="app", node="n1", '
    'scope="container", container_survived="{s}", reason="{r}"}}'
)
CHILD_SUMMARY = "A process in container app of pod shop/web-0 was OOM-killed and the container kept running"
CHILD_DESCRIPTION = (
    "1 child process(es) of container app in pod shop/web-0 on node n1 were OOM-killed in 5m while the "
    "main process survived (limit at container level): Kubernetes reports no OOMKilled status and no "
    "restart for this. kubectl describe pod -n shop web-0 shows the OOMKilledChild Event with the victim."
)
KILLED_DESCRIPTION = (
    "1 OOM kill(s) in 5m of container app in pod shop/web-0 on node n1; the limit hit was at container "
    "level (Event reason OOMKilled). kubectl describe pod -n shop web-0 shows the oomsight Event naming "
    "what filled the memory."
)
NEAR_DESCRIPTION = (
    "The working set of container app in pod shop/web-0 on node n1 is 95% of its effective memory "
    "limit; the kernel OOM-kills at 100%. kubectl get memorypolicies -n shop shows the recommended limit."
)


def expect(at: str, alert: str, *fired: tuple[dict[str, str], str, str]) -> dict[str, Any]:
    """One alert_rule_test entry: ``fired`` holds (labels, summary, description) per alert."""
    alerts = [
        {"exp_labels": lbl, "exp_annotations": {"summary": summ, "description": desc}}
        for lbl, summ, desc in fired
    ]
    return {"eval_time": at, "alertname": alert, "exp_alerts": alerts}


def test_alerts_fire_on_the_series_the_agent_writes(
    helm_bin: Path, promtool_bin: Path, tmp_path: Path
) -> None:
    """promtool test rules: a container's first kill (its counter series is born at 1) fires at once,
    a child kill fires only the child alert, a near-limit container waits its 10 minutes."""
    path = rules_file(helm_bin, tmp_path)
    ratio = 'oomsight_container_working_set_ratio{namespace="shop", pod="web-0", container="app", node="n1"}'
    warn = {**WHERE, "severity": "warning"}
    kill = {**warn, "scope": "container"}
    test = {
        "rule_files": [str(path)],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [
                    # absent for 3 minutes, then born at 1: the agent's first child kill of this container
                    {"series": KILL.format(s="true", r="OOMKilledChild"), "values": "_x3 1x10"},
                    {"series": KILL.format(s="false", r="OOMKilled"), "values": "_x8 1 1 2x10"},
                    {"series": ratio, "values": "0.5 0.95x20"},
                ],
                "alert_rule_test": [
                    expect("2m", "OomsightChildProcessOOMKilled"),
                    expect(
                        "4m",
                        "OomsightChildProcessOOMKilled",
                        ({**kill, "reason": "OOMKilledChild"}, CHILD_SUMMARY, CHILD_DESCRIPTION),
                    ),
                    expect("4m", "OomsightContainerOOMKilled"),
                    expect("12m", "OomsightChildProcessOOMKilled"),
                    expect(
                        "9m",
                        "OomsightContainerOOMKilled",
                        (
                            {**kill, "reason": "OOMKilled"},
                            "Container app of pod shop/web-0 was OOM-killed",
                            KILLED_DESCRIPTION,
                        ),
                    ),
                    expect("10m", "OomsightContainerNearLimit"),
                    expect(
                        "12m",
                        "OomsightContainerNearLimit",
                        (
                            warn,
                            "Container app of pod shop/web-0 is close to its memory limit",
                            NEAR_DESCRIPTION,
                        ),
                    ),
                ],
            }
        ],
    }
    spec = tmp_path / "test.yaml"
    spec.write_text(yaml.safe_dump(test, sort_keys=False))
    out = subprocess.run(
        [str(promtool_bin), "test", "rules", str(spec)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def query(title: str, ref: str = "A", **variables: str) -> str:
    """A dashboard query as Grafana sends it: every variable at All (``.*``) unless given."""
    (panel,) = [p for p in panels(dashboard()) if p["title"] == title]
    (target,) = [t for t in panel["targets"] if t["refId"] == ref]
    expr = re.sub(r"\$__rate_interval\b", "5m", target["expr"])
    expr = re.sub(r"\$__range\b", "1h", expr)
    return re.sub(r"\$\{?(\w+)\}?", lambda m: variables.get(m[1], ".*"), expr)


def test_dashboard_queries_answer_on_the_agents_series(promtool_bin: Path, tmp_path: Path) -> None:
    """Dashboard queries evaluated by promtool's PromQL engine on series shaped like the agent's:
    a first kill shows at once, only the container over 90% is at risk, the breakdown has its kinds."""
    web = 'namespace="shop", pod="web-0", container="app", node="n1"'
    db = 'namespace="shop", pod="db-0", container="app", node="n1"'
    series = [
        (KILL.format(s="true", r="OOMKilledChild"), "_x3 1x10"),
        (KILL.format(s="false", r="OOMKilled"), "_x8 1 1 2x10"),
        (f"oomsight_container_working_set_ratio{{{web}}}", "0.95x12"),
        (f"oomsight_container_working_set_ratio{{{db}}}", "0.5x12"),
        (f'oomsight_container_memory_limit_bytes{{{web}, level="pod"}}', "100000000x12"),
        (f'oomsight_container_memory_limit_bytes{{{db}, level="container"}}', "200000000x12"),
        (f"oomsight_container_memory_stuck{{{web}}}", "0x12"),
        (f"oomsight_container_memory_stuck{{{db}}}", "0x12"),
    ]
    for kind, amount in (
        ("anon", 80),
        ("active_file", 10),
        ("inactive_file", 30),
        ("shmem", 4),
        ("kernel", 1),
    ):
        series.append((f'oomsight_container_memory_bytes{{{web}, kind="{kind}"}}', f"{amount}x12"))
    web_labels = {"namespace": "shop", "pod": "web-0", "container": "app"}
    cases: list[tuple[str, str, list[tuple[dict[str, str], float]]]] = [
        # the child's series is born at 3m: at 4m only "unless offset" sees it
        ("4m", query("Invisible kills: the container survived", "A"), [({"container_survived": "true"}, 1)]),
        ("4m", query("OOM kills by scope"), [({"scope": "container"}, 1)]),
        # at 10m: the child's kill is older than the window, the container's two kills are new
        ("10m", query("OOM kills by scope"), [({"scope": "container"}, 2)]),
        (
            "10m",
            query("Invisible kills: the container survived", "B"),
            [({"container_survived": "false"}, 2)],
        ),
        (
            "10m",
            query("Containers at risk (≥ 90% of the limit)", "A"),
            [({**web_labels, "node": "n1"}, 0.95)],
        ),
        (
            "10m",
            query("Containers at risk (≥ 90% of the limit)", "B"),
            [({**web_labels, "level": "pod"}, 1e8)],
        ),
        (
            "10m",
            query("Top containers: working set ÷ effective limit"),
            [(web_labels, 0.95), ({**web_labels, "pod": "db-0"}, 0.5)],
        ),
        (
            "10m",
            query("Working set breakdown: $pod", "A", pod="web-0"),
            [
                ({"container": "app", "kind": k}, v)
                for k, v in (("anon", 80), ("active_file", 10), ("shmem", 4), ("kernel", 1))
            ],
        ),
        ("10m", query("Stuck memory cgroups"), [({}, 0)]),
    ]
    test = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": [{"series": s, "values": v} for s, v in series],
                "promql_expr_test": [
                    {
                        "expr": expr,
                        "eval_time": at,
                        "exp_samples": [
                            {
                                "labels": "{" + ", ".join(f'{k}="{v}"' for k, v in lbl.items()) + "}",
                                "value": val,
                            }
                            for lbl, val in want
                        ],
                    }
                    for at, expr, want in cases
                ],
            }
        ],
    }
    spec = tmp_path / "dashboard-test.yaml"
    spec.write_text(yaml.safe_dump(test, sort_keys=False))
    out = subprocess.run(
        [str(promtool_bin), "test", "rules", str(spec)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_dashboard_configmap_is_accepted_by_the_api_server(
    helm_bin: Path, kubectl: Kubectl, namespace: str, tmp_path: Path
) -> None:
    """The rendered ConfigMap is created for real (size and names validated) and reads back whole."""
    docs = helm_template(
        helm_bin,
        tmp_path,
        "--set",
        "grafana.dashboards.enabled=true",
        "--set",
        f"grafana.dashboards.namespace={namespace}",
    )
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard"))
    kubectl.run("create", "-f", "-", stdin=json.dumps(cm))
    got = kubectl.get("configmap", cm["metadata"]["name"], namespace)
    assert got["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(got["data"]["oomsight.json"]) == dashboard()
