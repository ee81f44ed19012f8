"""Stage 2 (``track_camera``) without Spark: synthetic stage-1 rows, a fake GroupState, state restored from its
blob between micro-batches exactly as Spark's state store would hand it back."""

from __future__ import annotations

import json
import math
import pickle
import time
from collections import Counter
from typing import Any

import numpy as np
import pandas as pd
import pytest

from trafficstream.messages import REASON_DUPLICATE_FRAME, REASON_PROCESSING_ERROR, REASON_UNKNOWN_CAMERA
from trafficstream.models import state_codec
from trafficstream.models.speed import FLAG_IMPLAUSIBLE_SPEED, TrackKinematics
from trafficstream.models.tracker import VehicleTracker
from trafficstream.streaming_jobs.schemas import (
    KIND_DEAD,
    KIND_FLOW,
    KIND_FRAME,
    KIND_HEALTH,
    KIND_TRACK,
    KIND_VIOLATION,
)
from trafficstream.streaming_jobs.tracking import (
    CLOCK_IDS_PER_SECOND,
    EVENT_STATE_RESET,
    MAX_ERROR_STREAK,
    RESET_CORRUPT,
    RESET_REPEATED_ERRORS,
    RESET_UNENCODABLE,
    RESET_UNKNOWN_VERSION,
    STATE_VERSION,
    CameraState,
)

CARS_KMH = (130.0, -80.0)


@pytest.fixture
def cars(synth) -> list[Any]:
    """A speeding car left to right and a truck right to left, both in view for > 100 frames."""
    return [synth.Car(0, 60, 300, CARS_KMH[0]), synth.Car(5, 1200, 500, CARS_KMH[1], class_id=7)]


def track_ids(out: pd.DataFrame, synth) -> list[int]:
    return [v["track_id"] for p in synth.payloads(out, KIND_FRAME) for v in p["vehicles"]]


def dead(out: pd.DataFrame, synth) -> list[tuple[int | None, str, str]]:
    rows = out[out.kind == KIND_DEAD]
    return [
        (None if pd.isna(fi) else int(fi), p["reason"], p["detail"])
        for fi, p in zip(rows.frame_index, synth.payloads(out, KIND_DEAD), strict=True)
    ]


def frames_of(out: pd.DataFrame) -> list[int]:
    return [int(f) for f in out.loc[out.kind == KIND_FRAME, "frame_index"]]


# -- restore ------------------------------------------------------------------------------------------


def test_batches_restored_from_the_blob_match_one_uninterrupted_batch(synth, group_state, cars) -> None:
    settings = synth.make_settings()
    rows = synth.scene_rows(cars, range(60))
    one = group_state()
    whole = synth.run_batch(settings, rows, one)
    split = group_state()
    parts = [synth.run_batch(settings, rows.iloc[k : k + 15], split) for k in range(0, 60, 15)]

    def vehicles(outs: list[pd.DataFrame]) -> list[Any]:
        return [p["vehicles"] for out in outs for p in synth.payloads(out, KIND_FRAME)]

    assert vehicles(parts) == vehicles([whole]) and len(vehicles([whole])) == 60
    assert sorted(set(track_ids(whole, synth))) == [1, 2]
    assert split.get == one.get  # byte-identical state
    assert [v for out in parts for v in synth.payloads(out, KIND_VIOLATION)] == synth.payloads(whole, KIND_VIOLATION)
    assert len(synth.payloads(whole, KIND_VIOLATION)) == 1  # the 130 km/h car, once
    state_bytes = [p.get("state_bytes") for p in synth.payloads(parts[-1], KIND_FRAME)]
    assert state_bytes[:-1] == [None] * 14 and state_bytes[-1] == len(split.get[1])


def test_a_changed_speed_limit_applies_to_violations_after_restore(synth, group_state, cars) -> None:
    state = group_state()
    first = synth.run_batch(synth.make_settings(speed_limit_kmh=200), synth.scene_rows(cars, range(20)), state)
    assert synth.payloads(first, KIND_VIOLATION) == []
    assert all(v["over_limit"] == "false" for p in synth.payloads(first, KIND_FRAME) for v in p["vehicles"])
    saved = state.get

    # restart with the limit lowered to 100: over_limit AND violations use it (the blob carries no limit)
    second = synth.run_batch(synth.make_settings(speed_limit_kmh=100), synth.scene_rows(cars, range(20, 50)), state)
    (violation,) = synth.payloads(second, KIND_VIOLATION)
    assert violation["limit_kmh"] == 100.0 and violation["track_id"] == 1
    assert violation["speed_kmh"] == pytest.approx(CARS_KMH[0], abs=0.5)
    fast = [v for p in synth.payloads(second, KIND_FRAME) for v in p["vehicles"] if v["track_id"] == 1]
    assert fast[-1]["over_limit"] == "true"
    # the same batch under the unchanged limit: no violation
    unchanged = synth.run_batch(
        synth.make_settings(speed_limit_kmh=200), synth.scene_rows(cars, range(20, 50)), group_state(saved)
    )
    assert synth.payloads(unchanged, KIND_VIOLATION) == []


def test_tracker_and_speed_parameters_come_from_the_current_config(synth, group_state, cars) -> None:
    state = group_state()
    synth.run_batch(synth.make_settings(), synth.scene_rows(cars, range(20)), state)
    changed = synth.make_settings(
        max_age_s=0.2, n_init=2, nn_budget=5, max_cosine_distance=0.25, max_plausible_kmh=120.0, speed_window_s=0.6
    )
    out = synth.run_batch(changed, synth.scene_rows(cars, range(20, 40)), state)
    _, doc = state_codec.decode(state.get[1], "camera")
    assert doc["tracker"]["params"] == {
        "max_age_frames": 5,
        "n_init": 2,
        "max_cosine_distance": 0.25,
        "max_iou_distance": 0.7,
        "nn_budget": 5,
        "gallery_cap": None,
    }
    assert doc["kinematics"]["params"]["max_plausible_kmh"] == 120.0
    assert doc["kinematics"]["params"]["window_s"] == 0.6
    assert all(len(refs) <= 5 for _, refs in doc["tracker"]["samples"])
    fast = [v for p in synth.payloads(out, KIND_FRAME) for v in p["vehicles"] if v["track_id"] == 1]
    assert len(fast) == 20 and fast[-1]["speed_flag"] == FLAG_IMPLAUSIBLE_SPEED  # 130 > 120 now
    assert sorted(set(track_ids(out, synth))) == [1, 2]  # same tracks, restored


# -- resets -------------------------------------------------------------------------------------------


def _first_batch(synth, group_state, cars) -> tuple[Any, int, tuple]:
    state = group_state()
    out = synth.run_batch(synth.make_settings(), synth.scene_rows(cars, range(20)), state)
    return state, max(track_ids(out, synth)), state.get


def _reset_event(out: pd.DataFrame, synth) -> dict[str, Any]:
    (event,) = synth.payloads(out, KIND_HEALTH)
    health = out[out.kind == KIND_HEALTH].iloc[0]
    assert pd.isna(health.frame_index) and pd.isna(health.pts_s) and health.camera_id == synth.CAMERA_ID
    assert event["event"] == EVENT_STATE_RESET
    return event


def test_a_corrupt_blob_resets_and_ids_go_on_above_the_previous_ones(synth, group_state, cars, caplog) -> None:
    _, max_id, (version, blob) = _first_batch(synth, group_state, cars)
    mark = state_codec.read_envelope(blob).next_id
    assert mark > max_id
    bad = bytearray(blob)
    bad[state_codec.ENVELOPE_SIZE + 40] ^= 0xFF  # the body, not the envelope
    state = group_state((version, bytes(bad)))
    out = synth.run_batch(synth.make_settings(), synth.scene_rows(cars, range(20, 40)), state)

    event = _reset_event(out, synth)
    assert (event["cause"], event["id_floor_from"], event["next_track_id"], event["resets"]) == (
        RESET_CORRUPT,
        "envelope",
        mark,
        1,
    )
    assert "CRC" in event["detail"] and event["state_version"] == STATE_VERSION
    assert "tracking state reset" in caplog.text
    ids = track_ids(out, synth)
    assert ids and min(ids) >= mark > max_id
    assert frames_of(out) == list(range(20, 40)) and dead(out, synth) == []  # the frames themselves are fine
    env = state_codec.read_envelope(state.get[1])
    assert env.resets == 1 and env.next_id > max(ids)
    # counted: a second reset says so
    again = group_state((STATE_VERSION, state.get[1][:-7]))
    out2 = synth.run_batch(synth.make_settings(), synth.scene_rows(cars, range(40, 50)), again)
    assert _reset_event(out2, synth)["resets"] == 2 and min(track_ids(out2, synth)) >= env.next_id


@pytest.mark.parametrize("stored", ["pickle_v1", "future_version", "garbage", "null_blob"])
def test_unusable_state_resets_with_monotonic_ids(synth, group_state, cars, stored: str) -> None:
    _, max_id, (_, blob) = _first_batch(synth, group_state, cars)
    mark = state_codec.read_envelope(blob).next_id
    value, cause, source = {
        # what the first releases stored: a pickled tuple, version 1 (no envelope: ids jump to the clock floor)
        "pickle_v1": ((1, pickle.dumps((b"tracker", {}, -1), protocol=5)), RESET_UNKNOWN_VERSION, "clock"),
        "future_version": ((STATE_VERSION + 1, blob), RESET_UNKNOWN_VERSION, "envelope"),
        "garbage": ((STATE_VERSION, b"\x00garbage"), RESET_CORRUPT, "clock"),
        "null_blob": ((STATE_VERSION, None), RESET_CORRUPT, "clock"),
    }[stored]
    before = time.time()
    out = synth.run_batch(synth.make_settings(), synth.scene_rows(cars, range(20, 40)), group_state(value))
    event = _reset_event(out, synth)
    assert (event["cause"], event["id_floor_from"], event["resets"]) == (cause, source, 1)
    floor = mark if source == "envelope" else int(before * CLOCK_IDS_PER_SECOND)
    assert event["next_track_id"] >= floor
    ids = track_ids(out, synth)
    assert ids and min(ids) >= floor > max_id and max(ids) < 2**53  # still exact in JSON / JavaScript
    assert frames_of(out) == list(range(20, 40))


def test_repeated_failures_reset_the_state_in_memory(synth, group_state, cars, monkeypatch) -> None:
    state, max_id, _ = _first_batch(synth, group_state, cars)
    real = VehicleTracker.update
    calls = {"n": 0}

    def failing(self: VehicleTracker, *args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if 3 <= calls["n"] < 3 + MAX_ERROR_STREAK:
            raise RuntimeError("tracker broke")
        return real(self, *args, **kw)

    monkeypatch.setattr(VehicleTracker, "update", failing)
    out = synth.run_batch(synth.make_settings(), synth.scene_rows(cars, range(20, 50)), state)
    failed = list(range(22, 22 + MAX_ERROR_STREAK))
    assert [d[0] for d in dead(out, synth)] == failed
    assert all(d[1] == REASON_PROCESSING_ERROR and "RuntimeError: tracker broke" in d[2] for d in dead(out, synth))
    event = _reset_event(out, synth)
    assert (event["cause"], event["id_floor_from"], event["resets"]) == (RESET_REPEATED_ERRORS, "memory", 1)
    assert event["next_track_id"] > max_id
    after = [v["track_id"] for p in synth.payloads(out, KIND_FRAME) if p["vehicles"] for v in p["vehicles"]]
    assert min(i for i in after if i > max_id) >= event["next_track_id"]
    ended = [p for p in synth.payloads(out, KIND_TRACK) if p["ended"] == "true"]
    assert sorted(p["track_id"] for p in ended) == [1, 2]  # the old tracks are closed, not left dangling
    assert frames_of(out) == [20, 21, *range(22 + MAX_ERROR_STREAK, 50)]


def test_an_unserialisable_state_is_reset_not_fatal(synth, group_state, cars, monkeypatch) -> None:
    state, max_id, _ = _first_batch(synth, group_state, cars)
    real = TrackKinematics.to_dict
    calls = {"n": 0}

    def poisoned(self: TrackKinematics) -> dict[str, Any]:
        calls["n"] += 1
        return {**real(self), "oops": math.nan} if calls["n"] == 1 else real(self)

    monkeypatch.setattr(TrackKinematics, "to_dict", poisoned)
    out = synth.run_batch(synth.make_settings(), synth.scene_rows(cars, range(20, 30)), state)
    event = _reset_event(out, synth)
    assert event["cause"] == RESET_UNENCODABLE and event["next_track_id"] > max_id
    assert frames_of(out) == list(range(20, 30))
    assert state_codec.read_envelope(state.get[1]).resets == 1
    nxt = synth.run_batch(synth.make_settings(), synth.scene_rows(cars, range(30, 40)), state)
    assert min(track_ids(nxt, synth)) >= event["next_track_id"]


def test_when_nothing_serialises_the_id_mark_still_does(synth, group_state, cars, monkeypatch) -> None:
    state, max_id, _ = _first_batch(synth, group_state, cars)

    def broken(self: CameraState) -> dict[str, Any]:
        raise RuntimeError("codec bug")

    with monkeypatch.context() as m:
        m.setattr(CameraState, "to_doc", broken)
        out = synth.run_batch(synth.make_settings(), synth.scene_rows(cars, range(20, 30)), state)
    assert _reset_event(out, synth)["cause"] == RESET_UNENCODABLE and frames_of(out) == list(range(20, 30))
    issued = max(track_ids(out, synth))
    env = state_codec.read_envelope(state.get[1])
    assert env.next_id > issued >= max_id  # a body-less blob whose envelope keeps the mark
    out = synth.run_batch(synth.make_settings(), synth.scene_rows(cars, range(30, 40)), state)
    event = _reset_event(out, synth)
    assert (event["cause"], event["id_floor_from"], event["resets"]) == (RESET_CORRUPT, "envelope", 2)
    assert min(track_ids(out, synth)) >= env.next_id


# -- per-row guards -----------------------------------------------------------------------------------


def test_a_frame_that_raises_is_dead_lettered_and_the_batch_goes_on(synth, group_state, cars, monkeypatch) -> None:
    state = group_state()
    real = VehicleTracker.update
    calls = {"n": 0}

    def flaky(self: VehicleTracker, *args: Any, **kw: Any) -> Any:
        calls["n"] += 1
        if calls["n"] == 8:
            raise RuntimeError("boom")
        return real(self, *args, **kw)

    monkeypatch.setattr(VehicleTracker, "update", flaky)
    out = synth.run_batch(synth.make_settings(), synth.scene_rows(cars, range(30)), state)
    ((fi, reason, detail),) = dead(out, synth)
    assert (fi, reason) == (7, REASON_PROCESSING_ERROR) and "RuntimeError: boom" in detail
    msg = out.loc[out.kind == KIND_DEAD, "message"].iloc[0]
    assert '"reason":"processing_error"' in msg and '"frame_index":7' in msg
    assert frames_of(out) == [f for f in range(30) if f != 7]
    assert sorted(set(track_ids(out, synth))) == [1, 2]
    _, doc = state_codec.decode(state.get[1], "camera")
    assert doc["error_streak"] == 0 and doc["last_frame_index"] == 29
    later = synth.run_batch(synth.make_settings(), synth.scene_rows(cars, range(30, 40)), state)
    assert sorted(set(track_ids(later, synth))) == [1, 2]


def test_duplicates_and_frames_not_after_the_last_one_are_dead_lettered(synth, group_state, cars) -> None:
    state = group_state()
    synth.run_batch(synth.make_settings(), synth.scene_rows(cars, range(20)), state)
    rows = synth.scene_rows(cars, range(15, 25))
    rows = pd.concat([rows, rows.iloc[[7]]], ignore_index=True)  # frame 22 twice in one batch
    stale = rows.iloc[[9]].assign(frame_index=30, pts_s=10 / 25)  # a higher index, an old timestamp
    out = synth.run_batch(synth.make_settings(), pd.concat([rows, stale], ignore_index=True), state)
    got = dead(out, synth)
    assert [(fi, reason) for fi, reason, _ in got] == [
        (15, REASON_DUPLICATE_FRAME),
        (16, REASON_DUPLICATE_FRAME),
        (17, REASON_DUPLICATE_FRAME),
        (18, REASON_DUPLICATE_FRAME),
        (19, REASON_DUPLICATE_FRAME),
        (22, REASON_DUPLICATE_FRAME),
        (30, REASON_DUPLICATE_FRAME),
    ]
    assert got[0][2] == "frame 15 <= last processed 19" and "not after last processed pts" in got[-1][2]
    assert frames_of(out) == list(range(20, 25))
    # replaying the whole first batch after a restart: all duplicates, state unchanged but for nothing new
    before = state.get
    again = synth.run_batch(synth.make_settings(), synth.scene_rows(cars, range(20)), state)
    assert len(dead(again, synth)) == 20 and frames_of(again) == []
    _, a = state_codec.decode(before[1], "camera")
    _, b = state_codec.decode(state.get[1], "camera")
    assert b["last_frame_index"] == a["last_frame_index"] == 24


def test_absurd_ok_rows_never_reach_the_state(synth, group_state, cars) -> None:
    state = group_state()
    good = synth.scene_rows(cars, range(20))
    emb = np.zeros((1, 8), np.float16).tobytes()
    box = {"boxes": [0.0, 0.0, 10.0, 10.0], "scores": [0.9], "classes": [2]}
    bad = synth.frame_df(
        [
            synth.stage1_row(20, pts_s=math.nan),
            synth.stage1_row(21, pts_s=math.inf),
            synth.stage1_row(-1),
            synth.stage1_row(2**60),  # would make every later frame a "duplicate"
            synth.stage1_row(22, capture_ts=math.nan),
            synth.stage1_row(23, boxes=[1.0, 2.0], scores=[0.5], classes=[2]),
            synth.stage1_row(24, **box, embeddings=emb, embedding_dim=64),  # 16 bytes, not 1 x 64 float16
            synth.stage1_row(25, **box, embeddings=b"", embedding_dim=0),
        ]
    )
    out = synth.run_batch(synth.make_settings(), pd.concat([good, bad], ignore_index=True), state)
    got = dead(out, synth)
    assert sorted(fi for fi, _, _ in got) == [-1, 20, 21, 22, 23, 24, 25, 2**60]
    assert all(
        reason == REASON_PROCESSING_ERROR and detail.startswith("invalid stage-1 row") for _, reason, detail in got
    )
    assert frames_of(out) == list(range(20))
    _, doc = state_codec.decode(state.get[1], "camera")
    assert doc["last_frame_index"] == 19 and doc["last_pts_s"] == pytest.approx(19 / 25)
    # the real frames 20.. are still welcome (nothing moved the camera's last frame on), on the same tracks
    later = synth.run_batch(synth.make_settings(), synth.scene_rows(cars, range(20, 30)), state)
    assert frames_of(later) == list(range(20, 30)) and sorted(set(track_ids(later, synth))) == [1, 2]


def test_nan_frame_index_among_nulls_is_handled(synth, group_state, cars) -> None:
    """Spark hands a nullable long column with nulls to pandas as floats: 12.0, NaN."""
    rows = synth.frame_df([*synth.scene_rows(cars, range(5)).to_dict("records"), synth.stage1_row(None)])
    rows["frame_index"] = rows["frame_index"].astype(float)
    out = synth.run_batch(synth.make_settings(), rows, group_state())
    assert frames_of(out) == [0, 1, 2, 3, 4]
    assert [(fi, reason) for fi, reason, _ in dead(out, synth)] == [(None, REASON_PROCESSING_ERROR)]


def test_unknown_camera_dead_letters_and_keeps_its_state(synth, group_state, cars) -> None:
    state, _, saved = _first_batch(synth, group_state, cars)
    rows = synth.scene_rows(cars, range(20, 25)).assign(camera_id="gone")
    out = synth.run_batch(synth.make_settings(), rows, state, camera_id="gone")
    assert [(fi, reason) for fi, reason, _ in dead(out, synth)] == [(f, REASON_UNKNOWN_CAMERA) for f in range(20, 25)]
    assert set(out.kind) == {KIND_DEAD} and set(out.camera_id) == {"gone"}
    assert state.get == saved and state.updates == 1


def test_stage1_dead_rows_pass_through(synth, group_state, cars) -> None:
    rows = synth.frame_df(
        [
            *synth.scene_rows(cars, range(3)).to_dict("records"),
            synth.stage1_row(
                None,
                status="dead",
                reason="source_missing",
                detail="no such file",
                payload='{"v":1}',
                pts_s=None,
                capture_ts=None,
            ),
        ]
    )
    state = group_state()
    out = synth.run_batch(synth.make_settings(), rows, state)
    assert dead(out, synth) == [(None, "source_missing", "no such file")]
    assert frames_of(out) == [0, 1, 2]
    only_dead = synth.run_batch(synth.make_settings(), rows.iloc[[3]], group_state())
    assert list(only_dead.kind) == [KIND_DEAD]


# -- counting -----------------------------------------------------------------------------------------


def test_each_confirmed_track_is_counted_once_in_its_minute(synth, group_state) -> None:
    minute = math.floor(synth.T0 / 60) * 60
    t0 = minute + 59.0  # frame 25 starts the next minute
    cars = [
        synth.Car(0, 100, 150, 60.0),
        synth.Car(8, 300, 300, 60.0, class_id=7),  # confirmed in minute 0
        synth.Car(30, 100, 450, 60.0),
        synth.Car(40, 300, 600, 60.0),
    ]  # confirmed in minute 1
    state = group_state()
    outs = [
        synth.run_batch(synth.make_settings(), synth.scene_rows(cars, frames, t0=t0), state)
        for frames in (range(20), range(20, 45), range(45, 70))
    ]
    latest: dict[tuple[float, str], int] = {}
    for out in outs:
        for p in synth.payloads(out, KIND_FLOW):
            latest[p["minute_ts"], p["class_name"]] = p["vehicles"]
    assert latest == {(minute, "car"): 1, (minute, "truck"): 1, (minute + 60, "car"): 2}
    ids = {i for out in outs for i in track_ids(out, synth)}
    assert len(ids) == 4 == sum(latest.values())  # one id per vehicle, each counted exactly once
    last = synth.payloads(outs[-1], KIND_FRAME)[-1]
    assert Counter(v["class_name"] for v in last["vehicles"]) == {"car": 3, "truck": 1}
    assert json.loads(last["flow"]) == {"minute": minute + 60.0, "car": 2}


# -- detection stride and load shedding -----------------------------------------------------------------


def _strided(rows: pd.DataFrame, stride: int, skipped: set[int] = frozenset()) -> pd.DataFrame:
    """Stage-1 rows as load shedding leaves them: every ``stride``-th frame detected, the others predicted
    (no detections, no decode), ``skipped`` frames skipped as stale."""
    rows = rows.copy()
    # as perceive_one leaves a frame it did not decode: no detection columns at all (nulls; NaN in pandas)
    empty = {"boxes": None, "scores": None, "classes": None, "embeddings": None, "embedding_dim": None}
    analysis, strides, reasons = [], [], []
    for i, fi in enumerate(rows.frame_index):
        kind = "skipped" if fi in skipped else ("detected" if fi % stride == 0 else "predicted")
        if kind != "detected":
            for k, v in empty.items():
                rows.at[rows.index[i], k] = v
            for k in ("decode_ms", "detect_ms", "embed_ms", "raw_detections"):
                rows.at[rows.index[i], k] = None
        analysis.append(kind)
        strides.append(stride)
        reasons.append("stale" if kind == "skipped" else None)
    return rows.assign(analysis=analysis, stride=strides, skip_reason=reasons)


def _messages(out: pd.DataFrame) -> dict[int, dict[str, Any]]:
    frames = out[out.kind == KIND_FRAME]
    return {int(fi): json.loads(m) for fi, m in zip(frames.frame_index, frames.message, strict=True) if m is not None}


@pytest.mark.parametrize("stride", [2, 3, 5])
def test_frames_between_detections_get_predicted_boxes_ids_and_speeds(synth, group_state, cars, stride) -> None:
    settings = synth.make_settings()
    out = synth.run_batch(settings, _strided(synth.scene_rows(cars, range(90)), stride), group_state())
    messages = _messages(out)
    assert sorted(messages) == list(range(90))  # every frame has a results message
    for fi, m in messages.items():
        assert m["analysis"] == ("detected" if fi % stride == 0 else "predicted") and m["stride"] == stride
    late = [m for fi, m in messages.items() if 12 * stride <= fi < 80]  # both confirmed, car 1 not yet gone
    assert all({v["id"] for v in m["vehicles"]} == {1, 2} for m in late)
    # predicted boxes follow the cars: centre within a few px of where the car really is
    car = cars[0]
    for fi, m in messages.items():
        if not 12 * stride <= fi < 80 or m["analysis"] != "predicted":
            continue
        (box,) = [v["box"] for v in m["vehicles"] if v["id"] == 1]
        true_x = car.x + car.px_per_frame * (fi - car.start)
        assert abs((box[0] + box[2]) / 2 - true_x) <= 3 + 0.15 * car.px_per_frame * stride
    # speeds: measured on detected frames at their true times, shown on the predicted ones
    kmh = [v["kmh"] for m in late for v in m["vehicles"] if v["id"] == 1 and v["kmh"] is not None]
    assert kmh and abs(float(np.median(kmh)) - CARS_KMH[0]) < 1.5
    frames = synth.payloads(out, KIND_FRAME)
    assert Counter(p["analysis"] for p in frames) == {
        "detected": len(range(0, 90, stride)),
        "predicted": 90 - len(range(0, 90, stride)),
    }
    assert all(p["detect_ms"] is None for p in frames if p["analysis"] == "predicted")


def test_stride_results_survive_batch_boundaries(synth, group_state, cars) -> None:
    settings = synth.make_settings()
    rows = _strided(synth.scene_rows(cars, range(60)), 3)
    one = group_state()
    whole = _messages(synth.run_batch(settings, rows, one))
    split = group_state()
    parts: dict[int, dict[str, Any]] = {}
    for k in range(0, 60, 10):  # batch boundaries inside strides (10 is not a multiple of 3)
        parts.update(_messages(synth.run_batch(settings, rows.iloc[k : k + 10], split)))

    def strip(m: dict[str, Any]) -> Any:
        return (m["analysis"], [(v["id"], v["box"], v["kmh"]) for v in m["vehicles"]])

    assert {fi: strip(m) for fi, m in parts.items()} == {fi: strip(m) for fi, m in whole.items()}


def test_skipped_frames_are_recorded_and_leave_the_tracks_alone(synth, group_state, cars) -> None:
    settings = synth.make_settings()
    skipped = set(range(30, 40))
    out = synth.run_batch(settings, _strided(synth.scene_rows(cars, range(60)), 1, skipped), group_state())
    frames = {
        int(fi): p
        for fi, p in zip(out.loc[out.kind == KIND_FRAME, "frame_index"], synth.payloads(out, KIND_FRAME), strict=True)
    }
    assert sorted(frames) == list(range(60))  # frames in = detected + predicted + skipped
    assert {fi for fi, p in frames.items() if p["analysis"] == "skipped"} == skipped
    assert all(frames[fi]["skip_reason"] == "stale" and frames[fi]["vehicles"] == [] for fi in skipped)
    assert sorted(_messages(out)) == [fi for fi in range(60) if fi not in skipped]  # no message for a skip
    assert sorted(set(track_ids(out, synth))) == [1, 2]  # a 10-frame gap keeps the identities


def test_predicted_frames_before_any_detection_are_empty_frames(synth, group_state, cars) -> None:
    """A camera whose first frames in a worker are predicted (nothing detected yet): no boxes, no failure."""
    rows = _strided(synth.scene_rows(cars, range(1, 30)), 3)  # frame 0 (the first detection) never comes
    out = synth.run_batch(synth.make_settings(), rows, group_state())
    assert dead(out, synth) == []
    assert [m["vehicles"] for fi, m in sorted(_messages(out).items()) if fi < 3] == [[], []]


def test_a_frame_message_carries_trusted_speeds_only(synth, group_state, cars) -> None:
    out = synth.run_batch(synth.make_settings(), synth.scene_rows(cars, range(40)), group_state())
    frames = out[out.kind == KIND_FRAME]
    flagged = trusted = 0
    for payload, message in zip(frames.payload, frames.message, strict=True):
        shown = {v["id"]: v["kmh"] for v in json.loads(message)["vehicles"]}
        for v in json.loads(payload)["vehicles"]:
            if v["speed_flag"] is None and v["speed_kmh"] is not None:
                trusted += 1
                assert shown[v["track_id"]] == pytest.approx(v["speed_kmh"], abs=0.06)
            elif v["speed_kmh"] is not None:  # measured but not trusted (a new track's first frames)
                flagged += 1
                assert shown[v["track_id"]] is None
    assert flagged and trusted


def test_a_box_cut_off_by_the_picture_edge_gives_no_speed(synth, group_state) -> None:
    # a car driving in from the left: while part of it is still outside, the detector's box ends at the
    # picture's edge, and its bottom-centre moves at half the car's speed (the box only grows)
    car = synth.Car(0, 0.0, 300, 60.0, w=160.0)
    rows = synth.scene_rows([car], range(60))
    rows["boxes"] = [list(np.clip(np.asarray(b, dtype=np.float64), 0.0, 1280.0)) for b in rows.boxes]
    out = synth.run_batch(synth.make_settings(), rows, group_state())
    seen = [v for p in synth.payloads(out, KIND_FRAME) for v in p["vehicles"]]
    edge = [v for v in seen if v["x1"] <= 0.015 * 720]
    inside = [v for v in seen if v["x1"] > 0.015 * 720]
    assert edge and all(v["speed_flag"] == "at_picture_edge" and v["speed_kmh"] is None for v in edge)
    trusted = [v["speed_kmh"] for v in inside if v["speed_flag"] is None and v["speed_kmh"] is not None]
    assert trusted and all(abs(k - 60.0) < 1.5 for k in trusted), trusted


def test_pysparks_padding_warning_is_silenced_and_no_other():
    """Stage 2 silences the FutureWarning of PySpark's own applyInPandasWithState padding (every micro-batch), and
    only that one."""
    import warnings

    from trafficstream.streaming_jobs import tracking

    tracking.quiet_spark_padding_warning.cache_clear()
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tracking.quiet_spark_padding_warning()
            warnings.warn(tracking.SPARK_PADDING_WARNING + ". In a future version, ...", FutureWarning, stacklevel=1)
            warnings.warn("another change ahead", FutureWarning, stacklevel=1)
            warnings.warn(tracking.SPARK_PADDING_WARNING, UserWarning, stacklevel=1)
    finally:
        tracking.quiet_spark_padding_warning.cache_clear()
    assert [(w.category, str(w.message)) for w in caught] == [
        (FutureWarning, "another change ahead"),
        (UserWarning, tracking.SPARK_PADDING_WARNING),
    ]
