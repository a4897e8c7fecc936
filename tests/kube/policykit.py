"""Generated MemoryPolicy objects, and the verdict on what the API server and the operator made of one.

Used by ``bench/fuzz_policies.py`` (10,000 objects, a sample reconciled by a real operator) and
``tests/kube/test_policy_fuzz.py`` (a few hundred, dry-run only). Values are chosen per field of
``crds/memorypolicies.oomsight.io.yaml``: typical, at and beyond each bound, wrong types, unknown keys.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from oomsight.core.policy import parse_policy
from oomsight.kube import crd

_numbers = st.one_of(
    st.floats(min_value=-10, max_value=2000, allow_nan=False, allow_infinity=False),
    st.integers(-5, 2000),
    st.sampled_from([0, 0.0, 1, 1.0, 0.5, 0.95, 1.0000001, 100, 100.0001, 1000, 1000.5, 10, 10.01, 1e-9]),
)
_wrong = st.one_of(
    st.sampled_from(["", "x", "90", "1e400", True, None, [], {}, [1], {"a": 1}]), st.text(max_size=8)
)
_quantity = st.one_of(
    st.sampled_from(
        [
            "64Mi",
            "16Gi",
            "0",
            "1",
            "100M",
            "1.5Gi",
            "1e3",
            "0.5Mi",
            "-1Mi",
            "1Ki",
            "1Zi",
            "9Ei",
            "123456789012",
            "1m",
            "0.001",
            "Mi",
            "64 Mi",
            "64mi",
            "1E",
            "+5Gi",
            "1e-3",
        ]
    ),
    st.integers(-(2**40), 2**63 - 1),
    st.tuples(
        st.integers(0, 99999), st.sampled_from(["", "Ki", "Mi", "Gi", "Ti", "k", "M", "G", "m", "u"])
    ).map(lambda p: f"{p[0]}{p[1]}"),
    _wrong,
)
_duration = st.one_of(
    st.sampled_from(
        [
            "24h",
            "90m",
            "192h",
            "1s",
            "1ns",
            "0s",
            "0h",
            "1d",
            "-1h",
            "1h30m",
            "99999h",
            "1.5h",
            "h",
            "24H",
            "2562047h",
            "2562048h",
            "9999999999h",
            "300ms",
        ]
    ),
    st.tuples(st.integers(0, 10**6), st.sampled_from(["ns", "us", "ms", "s", "m", "h", "d", ""])).map(
        lambda p: f"{p[0]}{p[1]}"
    ),
    _wrong,
)
_label = st.from_regex(r"\A[a-z0-9]([a-z0-9.-]{0,20}[a-z0-9])?\Z", fullmatch=True)
_expression = st.fixed_dictionaries(
    {"key": st.one_of(_label, st.text(max_size=10))},
    optional={
        "operator": st.one_of(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist", "in", "Gt"]), _wrong),
        "values": st.one_of(st.lists(st.one_of(_label, st.text(max_size=6)), max_size=4), _wrong),
    },
)
_selector = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "matchLabels": st.one_of(
                st.dictionaries(_label, st.one_of(_label, st.text(max_size=70)), max_size=4), _wrong
            ),
            "matchExpressions": st.one_of(st.lists(_expression, max_size=4), _wrong),
        },
    ),
    _wrong,
)
_recommendation = st.one_of(
    st.fixed_dictionaries(
        {},
        optional={
            "percentile": st.one_of(_numbers, _numbers, _numbers, _wrong),
            "headroomPercent": st.one_of(_numbers, _numbers, _numbers, _wrong),
            "minimum": _quantity,
            "maximum": _quantity,
            "halfLife": _duration,
            "historyWindow": _duration,
            "oomBumpRatio": st.one_of(_numbers, _numbers, _numbers, _wrong),
            "oomMinBump": _quantity,
            "headroomMax": _quantity,
        },
    ),
    _wrong,
)
_valid_selector = st.fixed_dictionaries(
    {},
    optional={
        "matchLabels": st.dictionaries(_label, _label, max_size=3),
        "matchExpressions": st.lists(
            st.one_of(
                st.fixed_dictionaries(
                    {
                        "key": _label,
                        "operator": st.sampled_from(["In", "NotIn"]),
                        "values": st.lists(_label, min_size=1, max_size=3),
                    }
                ),
                st.fixed_dictionaries(
                    {"key": _label, "operator": st.sampled_from(["Exists", "DoesNotExist"])}
                ),
            ),
            max_size=3,
        ),
    },
)
_fields = {
    "selector": _selector,
    "warningThresholdPercent": st.one_of(_numbers, _numbers, _numbers, _wrong),
    "recommendation": _recommendation,
    "actions": st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "annotatePods": st.one_of(st.booleans(), _wrong),
                "emitEvents": st.booleans(),
                "apply": st.one_of(st.sampled_from(["Off", "InPlace", "Recreate", "inplace", ""]), _wrong),
                "minConfidence": st.one_of(_numbers, _wrong),
                "maxChangePercent": st.one_of(_numbers, _wrong),
                "allowRestarts": st.one_of(st.booleans(), _wrong),
            },
        ),
        _wrong,
    ),
    "extra": st.text(max_size=5),
}
_optional = {k: v for k, v in _fields.items() if k not in ("selector", "extra")}
spec_strategy = st.one_of(
    # Mostly a usable selector, so the other fields' own rules are reached; sometimes anything at all.
    st.fixed_dictionaries({"selector": _valid_selector}, optional=_optional),
    st.fixed_dictionaries({"selector": _valid_selector}, optional=_optional),
    st.fixed_dictionaries({"selector": _selector}, optional=_optional),
    st.fixed_dictionaries({}, optional=_fields),
    st.fixed_dictionaries(
        {"selector": _valid_selector, "recommendation": st.fixed_dictionaries({"unknownKnob": st.integers()})}
    ),
)


def generate(count: int, seed_value: int = 0) -> list[dict[str, Any]]:
    """``count`` MemoryPolicy objects (names ``fuzz-<i>``), the same ones for the same seed."""
    specs: list[Any] = []

    @seed(seed_value)
    @settings(
        max_examples=count,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(spec_strategy)
    def collect(spec: Any) -> None:
        specs.append(spec)

    while len(specs) < count:
        collect()
        seed_value += 1
        collect = seed(seed_value)(collect)  # type: ignore[assignment]
    return [
        {
            "apiVersion": crd.API_VERSION,
            "kind": crd.MEMORY_POLICY_KIND,
            "metadata": {"name": f"fuzz-{i}"},
            "spec": spec,
        }
        for i, spec in enumerate(specs[:count])
    ]


def judge(obj: dict[str, Any], status: int, body: dict[str, Any]) -> dict[str, Any]:
    """``verdict``: accepted | rejected | accepted-but-operator-refuses | rejected-without-field |
    server-error; ``fields`` the rejected fields; ``object`` what the server returned when accepted."""
    out: dict[str, Any] = {"spec": obj.get("spec"), "fields": [], "detail": "", "object": None}
    if 200 <= status < 300:
        parsed = parse_policy(body)
        if parsed.error is not None:
            out.update(verdict="accepted-but-operator-refuses", detail=" ".join(parsed.error))
        else:
            accepted = {k: body[k] for k in ("apiVersion", "kind", "spec") if k in body}
            out.update(verdict="accepted", object=accepted)
        return out
    message = str(body.get("message", ""))
    if status in (400, 422):
        causes = (body.get("details") or {}).get("causes") or []
        # kube adds "<nil>: some validation rules were not checked" after schema errors: not a field.
        causes = [c for c in causes if "rules were not checked" not in str(c.get("message", ""))]
        fields = [str(c.get("field") or "") for c in causes]
        named = all(
            f.startswith("spec") or "spec." in str(c.get("message", ""))
            for f, c in zip(fields, causes, strict=True)
        )
        named = named if causes else "spec." in message
        out.update(
            verdict="rejected" if named else "rejected-without-field",
            fields=sorted({f.split("[")[0] for f in fields if f}),
            detail=message,
        )
        return out
    out.update(verdict="server-error", detail=f"HTTP {status}: {message}")
    return out
