"""The chart without a cluster: its CRDs are the repository's bytes, every value is documented and typed.

The API-server side (lint, install, RBAC) is in tests/kube/test_chart.py and tests/kube/test_rbac.py.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
CHART = ROOT / "charts" / "oomsight"


def test_chart_crds_are_byte_identical_to_crds_dir() -> None:
    top = {p.name: p.read_bytes() for p in (ROOT / "crds").glob("*.yaml")}
    chart = {p.name: p.read_bytes() for p in (CHART / "crds").glob("*.yaml")}
    assert top, "crds/ is empty"
    assert sorted(chart) == sorted(top), "charts/oomsight/crds/ must hold exactly the files of crds/"
    differ = [name for name in top if top[name] != chart[name]]
    assert not differ, f"copy crds/ to charts/oomsight/crds/ again: {differ} differ"


def _key_nodes(node: yaml.MappingNode) -> list[tuple[yaml.ScalarNode, yaml.Node]]:
    return [(k, v) for k, v in node.value if isinstance(k, yaml.ScalarNode)]


def _documented(lines: list[str], line: int) -> bool:
    """The comment block right above ``line`` (0-based) holds a ``# --`` line."""
    i = line - 1
    while i >= 0 and lines[i].strip().startswith("#"):
        if lines[i].strip().startswith("# --"):
            return True
        i -= 1
    return False


def _walk(node: yaml.Node, schema: dict[str, Any], path: str, lines: list[str], out: list[str]) -> None:
    """Check every key of ``node`` against ``schema``; descend where the schema lists properties."""
    assert isinstance(node, yaml.MappingNode), f"{path or 'values'} is not a mapping"
    props = schema.get("properties")
    for key_node, value_node in _key_nodes(node):
        key = key_node.value
        where = f"{path}.{key}" if path else key
        if props is None or key not in props:
            out.append(f"{where}: not in values.schema.json")
            continue
        if not _documented(lines, key_node.start_mark.line):
            out.append(f"{where}: no '# --' comment above it (line {key_node.start_mark.line + 1})")
        sub = props[key]
        if "properties" in sub:
            _walk(value_node, sub, where, lines, out)


def test_every_values_key_is_documented_and_in_the_schema() -> None:
    text = (CHART / "values.yaml").read_text()
    schema = json.loads((CHART / "values.schema.json").read_text())
    root = yaml.compose(text)
    assert root is not None
    problems: list[str] = []
    _walk(root, schema, "", text.splitlines(), problems)
    assert not problems, "\n".join(problems)


def _schema_paths(schema: dict[str, Any], path: str = "") -> list[str]:
    paths = []
    for key, sub in schema.get("properties", {}).items():
        where = f"{path}.{key}" if path else key
        paths.append(where)
        paths.extend(_schema_paths(sub, where))
    return paths


def test_every_schema_key_has_a_default_in_values() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    missing = []
    for path in _schema_paths(schema):
        if path == "global":
            continue  # Helm's own
        node: Any = values
        for part in path.split("."):
            if not isinstance(node, dict) or part not in node:
                missing.append(path)
                break
            node = node[part]
    assert not missing, f"in the schema but without a default in values.yaml: {missing}"


def _strict_objects(schema: dict[str, Any], path: str = "") -> list[str]:
    """Objects with listed properties that still accept unknown keys (typos would pass silently)."""
    loose = []
    if "properties" in schema and schema.get("additionalProperties", True) is not False:
        loose.append(path or "(root)")
    for key, sub in schema.get("properties", {}).items():
        if isinstance(sub, dict):
            loose.extend(_strict_objects(sub, f"{path}.{key}" if path else key))
    return loose


def test_schema_rejects_unknown_keys_in_every_block() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    loose = [p for p in _strict_objects(schema) if not p.endswith("tolerations")]
    assert not loose, f"set additionalProperties: false on {loose}"
    for key, sub in schema["properties"].items():
        assert sub.get("description"), f"{key} has no description in the schema"


def test_agent_security_context_is_not_privileged() -> None:
    """Static guard on the DaemonSet template; the rendered pod is checked in tests/kube/test_chart.py."""
    text = (CHART / "templates" / "agent-daemonset.yaml").read_text()
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["agent"]["privileged"] is False  # opt-in only
    assert values["agent"]["kernelLog"] == "auto"
    # privileged only inside the agent.privileged branch
    assert text.count("privileged: true") == 1
    assert "{{- if .Values.agent.privileged }}\n            privileged: true" in text
    assert "privileged: false" in text
    assert "drop: [ALL]" in text
    assert "readOnlyRootFilesystem: true" in text
