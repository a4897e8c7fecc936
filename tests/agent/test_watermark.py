"""HighWorkingSet hysteresis: fire at the threshold, re-arm only below threshold − 5 points."""

from __future__ import annotations

from oomsight.core.watermark import Watermark, step


def run(ratios, mark=None):
    mark = mark or Watermark()
    active, out = False, []
    for r in ratios:
        active, t = step(active, r, mark)
        out.append(t)
    return out


def test_fires_once_while_hovering_around_the_threshold():
    assert run([0.5, 0.9, 0.89, 0.91, 0.88, 0.95]) == ["none", "fired", "none", "none", "none", "none"]


def test_rearms_below_clear_and_fires_again():
    assert run([0.92, 0.84, 0.86, 0.9]) == ["fired", "cleared", "none", "fired"]


def test_unknown_ratio_keeps_state():
    assert run([0.95, None, 0.95]) == ["fired", "none", "none"]


def test_policy_threshold():
    mark = Watermark.at(0.8)
    assert (mark.warn, round(mark.clear, 2)) == (0.8, 0.75)
    assert run([0.79, 0.81], mark) == ["none", "fired"]


def test_threshold_from_a_pod_annotation_fires_and_rearms_five_points_lower():
    from oomsight.core.podinfo import pod_from_json

    pod = pod_from_json(
        {"metadata": {"uid": "u1", "annotations": {"oomsight.io/warning-threshold": "50"}}, "spec": {}}
    )
    mark = Watermark.at(pod.policy_threshold)
    assert run([0.49, 0.65, 0.46, 0.44, 0.52], mark) == ["none", "fired", "none", "cleared", "fired"]
    assert run([0.65, 0.7]) == ["none", "none"]  # the 90% default stays quiet at the same ratios
