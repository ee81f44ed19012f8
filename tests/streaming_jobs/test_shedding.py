"""Load shedding decisions of stage 1 (streaming_jobs/shedding.py): stride, adaptation, stale skips."""

from __future__ import annotations

import pytest

from trafficstream.streaming_jobs.shedding import DETECTED, PREDICTED, SKIP_STALE, SKIPPED, LoadShedder


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
