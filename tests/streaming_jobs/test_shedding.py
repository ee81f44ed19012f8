"""Load shedding decisions of stage 1 (streaming_jobs/shedding.py): stride, adaptation, stale skips."""

from __future__ import annotations

import pytest

from trafficstream.streaming_jobs.shedding import (
    ADJUST_EVERY_S,
    DETECTED,
    LOWER_AT,
    PREDICTED,
    RAISE_AT,
    SKIP_FLOOR,
    SKIP_SPREAD,
    SKIP_STALE,
    SKIPPED,
    LoadShedder,
    Steer,
    StrideController,
    batch_lateness,
    decode_steering,
    encode_steering,
)


def _run(shedder: LoadShedder, n: int, *, age: float = 0.0, fps: float = 30.0, t0: float = 1000.0) -> list:
    """n frames arriving at fps, each ``age`` seconds old when stage 1 reaches it (nothing else waiting)."""
    out = []
    for i in range(n):
        capture = t0 + i / fps
        out.append(shedder.decide(i, capture, capture + age, newest_capture_ts=capture))
    return out


@pytest.mark.parametrize("stride", [1, 2, 3, 5])
def test_fixed_stride_detects_every_kth_frame(stride):
    decisions = _run(LoadShedder(stride, 8, budget_s=2.0), 30)
    detected = [i for i, d in enumerate(decisions) if d.analysis == DETECTED]
    assert detected == list(range(0, 30, stride))
    assert all(d.analysis in (DETECTED, PREDICTED) and d.stride == stride for d in decisions)


def test_late_frames_raise_the_stride_then_fresh_frames_bring_it_back():
    shedder = LoadShedder(1, 4, budget_s=2.0)
    late = _run(shedder, 300, age=1.5)  # 10 s of frames 1.5 s late (> half the budget)
    assert late[-1].stride == 4  # one step a second, capped at max_detect_every
    assert late[0].stride == late[29].stride == 2  # one step per second, not at once
    detected = sum(d.analysis == DETECTED for d in late[-60:])
    assert 14 <= detected <= 16  # every 4th frame at the cap
    fresh = _run(shedder, 300, age=0.1, t0=2000.0)  # load gone: frames fresh again
    assert fresh[-1].stride == 1
    assert all(d.analysis == DETECTED for d in fresh[-30:])
    assert not any(d.analysis == SKIPPED for d in late + fresh)  # nothing newer was waiting


def test_stale_frame_skipped_only_for_much_fresher_ones():
    shedder = LoadShedder(1, 4, budget_s=2.0)
    stale = shedder.decide(0, 1000.0, 1003.0, newest_capture_ts=1002.5)
    assert (stale.analysis, stale.skip_reason) == (SKIPPED, SKIP_STALE)
    # the newest frame of the camera is analysed even when late: results keep coming
    assert shedder.decide(1, 1002.5, 1003.0 + 2.0, newest_capture_ts=1002.5).analysis != SKIPPED
    # late, but within half the budget of the newest frame waiting: the platform's own delay, not a backlog
    assert shedder.decide(2, 1002.6, 1006.0, newest_capture_ts=1003.2).analysis != SKIPPED


def test_shedding_off_never_skips_or_changes_the_stride():
    shedder = LoadShedder(2, 6, budget_s=1.0, enabled=False)
    decisions = [shedder.decide(i, 1000.0, 1100.0, newest_capture_ts=1090.0) for i in range(20)]
    assert {d.analysis for d in decisions} == {DETECTED, PREDICTED}
    assert {d.stride for d in decisions} == {2}


def test_detections_follow_the_frame_numbers_across_tasks_and_workers():
    """A micro-batch split into tasks, run by two workers in any order: the frames detected are the same as
    one worker seeing them all in order (no extra detection at each task's first frame)."""
    one = LoadShedder(3, 3, budget_s=2.0)
    reference = [one.decide(i, 0, 0, 0).analysis for i in range(30)]
    a, b = LoadShedder(3, 3, budget_s=2.0), LoadShedder(3, 3, budget_s=2.0)
    slices = [range(0, 7), range(7, 16), range(16, 22), range(22, 30)]
    split: dict[int, str] = {}
    for worker, frames in zip([a, b, b, a], [slices[1], slices[0], slices[3], slices[2]], strict=True):
        split.update({i: worker.decide(i, 0, 0, 0).analysis for i in frames})
    assert [split[i] for i in range(30)] == reference
    assert [i for i, d in enumerate(reference) if d == DETECTED] == list(range(0, 30, 3))


def test_a_reference_queued_behind_a_backlog_is_skipped_without_a_fresher_one_in_its_task():
    shedder = LoadShedder(1, 4, budget_s=2.0)
    # 3 s old, nothing fresher in the task, but it waited 1.5 s in Kafka before its micro-batch started
    queued = shedder.decide(0, 1000.0, 1003.0, newest_capture_ts=1000.0, queued_s=1.5)
    assert (queued.analysis, queued.skip_reason) == (SKIPPED, SKIP_STALE)
    # as old, but taken by the first micro-batch after it was published: analysed
    assert shedder.decide(1, 1000.0, 1003.0, newest_capture_ts=1000.0, queued_s=0.4).analysis != SKIPPED
    # queued long but still within the budget: analysed
    assert shedder.decide(2, 1002.0, 1003.5, newest_capture_ts=1002.0, queued_s=1.2).analysis != SKIPPED


def test_bad_parameters_refused():
    with pytest.raises(ValueError):
        LoadShedder(0, 3, 2.0)
    with pytest.raises(ValueError):
        LoadShedder(1, 3, 0.0)


def test_a_retried_task_detects_the_same_frames_again():
    """Spark retries a failed task in the same Python worker: the frames it sees again must be analysed as
    the first time (detected), not taken for frames between detections."""
    shedder = LoadShedder(1, 6, 2.0, enabled=False)
    first = [shedder.decide(i, 0, 0, 0).analysis for i in range(4)]
    again = [shedder.decide(i, 0, 0, 0).analysis for i in range(4)]
    assert first == again == [DETECTED] * 4
    assert shedder.decide(3, 0, 0, 0).analysis == DETECTED  # the very last frame, replayed alone


# -- the driver's stride per camera --------------------------------------------------------------------------


def _steer(ctl: StrideController, lateness: float, seconds: float, t0: float = 1000.0, every: float = 0.5) -> list:
    """A batch every ``every`` s for ``seconds``, each ``lateness`` s late: the stride after each."""
    return [ctl.observe(lateness, t0 + k * every) for k in range(int(seconds / every))]


def test_driver_controller_raises_the_stride_while_batches_are_late_and_lowers_it_when_fresh():
    budget = 2.0
    ctl = StrideController(2, 8, budget)
    late = _steer(ctl, (RAISE_AT + 0.05) * budget, 4.0)  # 8 batches over 4 s, each late
    assert late[0] == 3 and late[-1] == 2 + int(4.0 / ADJUST_EVERY_S)  # one step a second, not one a batch
    assert _steer(ctl, (RAISE_AT + 0.05) * budget, 10.0, t0=1010.0)[-1] == 8  # capped at max_detect_every
    held = _steer(ctl, (RAISE_AT + LOWER_AT) / 2 * budget, 5.0, t0=1030.0)
    assert set(held) == {8}  # between the thresholds: the stride holds
    fresh = _steer(ctl, (LOWER_AT - 0.05) * budget, 10.0, t0=1040.0)
    assert fresh[-1] == 2  # back to the camera's own stride, never below


def test_driver_controller_steps_twice_as_fast_past_the_whole_budget_and_ignores_nan():
    ctl = StrideController(1, 10, 2.0)
    assert ctl.observe(2.5, 0.0) == 3
    assert ctl.observe(float("nan"), 5.0) == 3
    assert ctl.observe(1.7, 6.0) == 4


def test_batch_lateness_is_the_oldest_frame_with_a_result_per_camera():
    rows = [
        {"kind": "frame", "camera_id": "a", "capture_ts": 100.0, "analysis": "skipped"},
        {"kind": "frame", "camera_id": "a", "capture_ts": 101.0, "analysis": "predicted"},
        {"kind": "frame", "camera_id": "a", "capture_ts": 101.5, "analysis": "detected"},
        {"kind": "frame", "camera_id": "b", "capture_ts": 99.0, "analysis": "skipped"},  # all shed: still late
        {"kind": "crossing", "camera_id": "a", "capture_ts": 50.0},
        {"kind": "dead", "camera_id": "c", "capture_ts": 10.0},
        {"kind": "frame", "camera_id": "d", "capture_ts": None},
        {"kind": "frame", "camera_id": "e", "capture_ts": float("nan")},
    ]
    assert batch_lateness(rows, 102.0) == {"a": 1.0, "b": 3.0}


def test_steering_travels_as_json_and_anything_malformed_reads_as_none():
    steering = {"b": Steer(3, 1.25), "a": Steer(1, 2.0)}
    assert decode_steering(encode_steering(steering)) == steering
    for bad in (None, "", "{", "[1]", '{"a": 3}', '{"a": [0, 1.0]}', '{"a": [true, 1.0]}', '{"a": ["3", 1.0]}'):
        assert decode_steering(bad) == {}
    assert decode_steering('{"a": [2, NaN], "b": [2, 1.5, 0], "c": [4, 1]}') == {"c": Steer(4, 1.0)}


def test_every_worker_uses_the_drivers_stride_whatever_the_age_of_its_slice():
    """Two workers, one given the older half of each batch and one the newer: with the driver's stride they
    decide alike (each adjusting its own, they drifted apart)."""
    old_half, new_half = LoadShedder(1, 8, 2.0), LoadShedder(1, 8, 2.0)
    steer = Steer(4, 2.0)
    for k in range(20):  # 20 s of batches
        t = 1000.0 + k
        a = [old_half.decide(i, t - 1.5, t, t - 1.0, steer=steer) for i in range(30 * k, 30 * k + 15)]
        b = [new_half.decide(i, t - 0.1, t, t - 0.1, steer=steer) for i in range(30 * k + 15, 30 * k + 30)]
        assert {d.stride for d in a + b} == {4}
        assert [d.analysis == DETECTED for d in a + b] == [i % 4 == 0 for i in range(30 * k, 30 * k + 30)]
    assert old_half.stride == new_half.stride == 1  # their own controllers were left alone
    # the driver's stride is kept within the camera's own stride and the cap
    assert old_half.decide(0, 0, 0, 0, steer=Steer(50, 2.0)).stride == 8
    assert LoadShedder(3, 8, 2.0).decide(0, 0, 0, 0, steer=Steer(1, 2.0)).stride == 3
    # shedding off: the camera's own stride whatever the driver says
    assert LoadShedder(2, 8, 2.0, enabled=False).decide(1, 0, 9, 0, steer=Steer(5, 0.5)).stride == 2


def test_skip_age_is_the_budget_less_a_batch_and_skips_what_can_no_longer_make_it():
    budget = 2.0
    ctl = StrideController(1, 10, budget)
    assert ctl.skip_after_s == budget  # no batch seen yet: what has missed the budget
    ctl.observe(0.5, 0.0, batch_s=0.8)
    assert ctl.skip_after_s == pytest.approx(1.2)
    rising = StrideController(1, 10, budget)
    rising.observe(0.5, 0.0, batch_s=1.8)  # slow batches, stride still under its cap
    assert rising.skip_after_s == pytest.approx(SKIP_SPREAD * budget)  # fewer detections first: half the budget
    for k in range(30):
        ctl.observe(3.0, 1.0 + k, batch_s=1.8)  # overloaded: batches of 1.8 s
    assert ctl.stride == 10
    assert ctl.skip_after_s == pytest.approx(SKIP_FLOOR * budget)  # at the cap: down to the floor, not under
    shedder = LoadShedder(1, 10, budget)
    late = Steer(10, 1.2)
    # 1.5 s old, queued 1.1 s behind a backlog: it would reach the results after the budget
    assert shedder.decide(0, 100.0, 101.5, 100.0, queued_s=1.1, steer=late).analysis == SKIPPED
    assert shedder.decide(0, 100.0, 101.5, 100.0, queued_s=1.1).analysis != SKIPPED  # by itself: not yet
    # as old, but no backlog (the platform's own delay): analysed, else every frame would be skipped
    assert shedder.decide(10, 100.0, 101.5, 100.0, queued_s=0.3, steer=late).analysis == DETECTED
    # an overloaded camera (skip age under half the budget): a shorter wait in Kafka is a backlog too
    overloaded = Steer(10, 0.5)
    assert shedder.decide(0, 100.0, 100.8, 100.0, queued_s=0.6, steer=overloaded).analysis == SKIPPED
    assert shedder.decide(10, 100.0, 100.8, 100.0, queued_s=0.3, steer=overloaded).analysis == DETECTED
    # a driver asking for less than the floor is held to it
    assert shedder.decide(0, 100.0, 100.45, 100.0, queued_s=1.1, steer=Steer(10, 0.1)).analysis != SKIPPED
    assert shedder.decide(0, 100.0, 100.55, 100.0, queued_s=1.1, steer=Steer(10, 0.1)).analysis == SKIPPED
