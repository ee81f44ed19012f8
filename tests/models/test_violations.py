"""Violations: sustained plausible overspeed, one per passage, conservative about doubtful estimates."""

from __future__ import annotations

import json
import pickle

import numpy as np
import pytest

from trafficstream.cameras import Camera
from trafficstream.models.speed import FLAG_IMPLAUSIBLE_SPEED, FLAG_LARGE_RESIDUAL, SpeedEstimate
from trafficstream.models.violations import Violation, ViolationRule


def est(kmh: float, flag: str | None = None) -> SpeedEstimate:
    return SpeedEstimate(
        kmh=kmh, vx=0.0, vy=kmh / 3.6, heading_deg=0.0, n_points=24, residual_m=0.05, flag=flag, span_s=0.8
    )


def run(
    rule: ViolationRule,
    speeds: list[float],
    track_id: int = 1,
    t0: float = 0.0,
    dt: float = 1 / 30,
    flags: dict[int, str] | None = None,
) -> list[Violation]:
    out = []
    for i, kmh in enumerate(speeds):
        v = rule.feed(track_id, t0 + i * dt, est(kmh, (flags or {}).get(i)))
        if v is not None:
            out.append(v)
    return out


def test_sustained_overspeed_gives_one_violation_when_due() -> None:
    rule = ViolationRule(100.0, 0.5)
    speeds = [95.0] * 10 + list(np.linspace(118, 124, 40)) + [96.0] * 10
    (v,) = run(rule, speeds)
    assert v.track_id == 1 and v.limit_kmh == 100.0
    assert v.t_start == pytest.approx(10 / 30)
    assert v.over_s >= 0.5 and v.t_detect == pytest.approx(v.t_start + 15 / 30)  # first frame >= 0.5 s
    assert 118.0 < v.speed_kmh < v.max_kmh <= 124.0


def test_brief_overspeed_is_not_a_violation() -> None:
    rule = ViolationRule(100.0, 0.5)
    assert run(rule, [95.0] * 10 + [130.0] * 12 + [95.0] * 30) == []  # 0.37 s over


def test_one_violation_per_passage() -> None:
    rule = ViolationRule(100.0, 0.5)
    speeds = [120.0] * 45 + [90.0] * 20 + [125.0] * 45
    assert len(run(rule, speeds)) == 1
    assert len(run(rule, speeds, track_id=2)) == 1  # another vehicle is another passage
    rule.evict(1)  # the track ended; the id may come back as a new passage
    assert len(run(rule, speeds, t0=100.0)) == 1


def test_flagged_estimates_never_count_and_break_the_span() -> None:
    rule = ViolationRule(100.0, 0.5)
    assert run(rule, [300.0] * 60, flags={i: FLAG_IMPLAUSIBLE_SPEED for i in range(60)}) == []
    # 0.4 s over, one doubtful estimate, 0.4 s over: never 0.5 s of trustworthy overspeed.
    speeds = [120.0] * 13 + [120.0] + [120.0] * 13
    assert run(rule, speeds, track_id=2, flags={13: FLAG_LARGE_RESIDUAL}) == []
    assert rule.feed(3, 0.0, None) is None


def test_a_gap_in_the_estimates_breaks_the_span() -> None:
    rule = ViolationRule(100.0, 0.5, max_gap_s=0.3)
    assert rule.feed(1, 0.0, est(120)) is None
    assert rule.feed(1, 0.2, est(120)) is None
    assert rule.feed(1, 0.6, est(120)) is None  # 0.4 s gap: a new span starts here
    assert rule.feed(1, 0.8, est(120)) is None
    assert rule.feed(1, 1.0, est(120)) is None
    assert rule.feed(1, 1.15, est(120)) is not None


def test_margin_and_camera_settings() -> None:
    cam = Camera(id="c1", source="x.mp4", speed_limit_kmh=80, min_violation_s=0.2)
    rule = ViolationRule.from_camera(cam, margin_kmh=5.0)
    assert rule.limit_kmh == 80 and rule.min_duration_s == 0.2
    assert run(rule, [84.0] * 30) == []
    assert len(run(rule, [86.0] * 30, track_id=2)) == 1


def test_state_round_trip_mid_span() -> None:
    rule = ViolationRule(100.0, 0.5)
    run(rule, [120.0] * 10)  # 0.3 s into an overspeed span
    run(rule, [120.0] * 30, track_id=2)  # already reported
    copies = [
        ViolationRule.from_dict(json.loads(json.dumps(rule.to_dict()))),
        ViolationRule.from_bytes(rule.to_bytes()),
        pickle.loads(pickle.dumps(rule)),
    ]
    expected = run(rule, [120.0] * 20, t0=10 / 30)
    assert len(expected) == 1 and expected[0].t_start == 0.0
    for other in copies:
        assert run(other, [120.0] * 20, t0=10 / 30) == expected
        assert run(other, [130.0] * 30, track_id=2, t0=5.0) == []
    assert rule.state_size_bytes() < 400
    with pytest.raises(ValueError, match="magic"):
        ViolationRule.from_bytes(b"xx")


def test_restore_takes_the_current_limit_and_keeps_the_passage() -> None:
    old = ViolationRule(120.0, 0.5)
    run(old, [130.0] * 10)  # 0.3 s into a span over 120
    run(old, [150.0] * 30, track_id=2)  # reported under the old limit
    state = json.loads(json.dumps(old.to_dict()))
    lowered = ViolationRule(100.0, 0.5).restore_tracks(state)
    assert lowered.limit_kmh == 100.0 and lowered.track_ids() == [1, 2]
    # the open span (all above 100 as well) continues: due 0.5 s after it started, reported at the new limit
    (v,) = run(lowered, [110.0] * 10, t0=10 / 30)
    assert v.limit_kmh == 100.0 and v.t_start == 0.0 and v.over_s == pytest.approx(0.5)
    assert run(lowered, [150.0] * 30, track_id=2, t0=5.0) == []  # still reported once per passage
    # a raised limit: the speeds kept in the span were not all over 135, so the span starts afresh
    raised = ViolationRule(135.0, 0.5).restore_tracks(state)
    (v,) = run(raised, [140.0] * 20, t0=10 / 30)
    assert v.limit_kmh == 135.0 and v.t_start == pytest.approx(10 / 30) and v.over_s == pytest.approx(0.5)
    with pytest.raises(ValueError, match="version"):
        ViolationRule(100.0).restore_tracks({**state, "v": 99})


def test_bytes_are_the_shared_state_format() -> None:
    from trafficstream.models import state_codec

    rule = ViolationRule(100.0, 0.5)
    run(rule, [120.0] * 10)
    blob = rule.to_bytes()
    assert blob == rule.to_bytes() and state_codec.read_envelope(blob).kind == "violations"
    with pytest.raises(ValueError, match="expected a violations state"):
        ViolationRule.from_bytes(state_codec.encode("kinematics", rule.to_dict()))
    with pytest.raises(ValueError, match="CRC"):
        ViolationRule.from_bytes(blob[:-3] + b"abc")
