"""Benchmark metrics against hand-built ground truth: each test perturbs perfect pipeline output in one
known way and checks that exactly that is measured."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from trafficstream.bench.metrics import evaluate, load_ground_truth, match_frame, trailing_mean_speed
from trafficstream.config import PROJECT_ROOT

FPS = 25.0
N_FRAMES = 50


def _ground_truth() -> dict:
    """Two cars side by side for 50 frames: #1 at a steady 90 km/h, #2 accelerating from 60 km/h at 2 m/s^2.
    Box heights grow as they approach; #3 is a tiny far-away car (never worth counting)."""
    frames = []
    for f in range(N_FRAMES):
        t = f / FPS
        grow = 2 * f
        vehicles = [
            {
                "vehicle_id": 1,
                "class_name": "car",
                "box": [100.0, 200.0 + f, 180.0 + grow, 260.0 + f + grow],
                "visibility": 1.0,
                "in_roi": True,
                "world_x": 1.75,
                "world_y": 80 - 25 * t,
                "speed_kmh": 90.0,
            },
            {
                "vehicle_id": 2,
                "class_name": "truck",
                "box": [400.0, 150.0 + f, 500.0 + grow, 280.0 + f + grow],
                "visibility": 1.0,
                "in_roi": True,
                "world_x": 5.25,
                "world_y": 90 - 16.7 * t - t * t,
                "speed_kmh": 60.0 + 2.0 * 3.6 * t,
            },
            {
                "vehicle_id": 3,
                "class_name": "car",
                "box": [600.0, 40.0, 608.0, 48.0],
                "visibility": 1.0,
                "in_roi": True,
                "world_x": 1.75,
                "world_y": 150.0,
                "speed_kmh": 100.0,
            },
        ]
        frames.append({"frame_index": f, "pts_s": t, "vehicles": vehicles})
    return {"camera_id": "synthetic", "fps": FPS, "n_frames": N_FRAMES, "frames": frames, "vehicles": []}


GT = _ground_truth()


def _perfect(window_s: float = 0.8) -> pl.DataFrame:
    """What an ideal pipeline reports: every countable box, one id per vehicle, the window-mean true speed."""
    gt = load_ground_truth(GT)
    ref = {
        vid: trailing_mean_speed(g["frame_index"].to_numpy(), g["speed_kmh"].to_numpy(), round(window_s * FPS))
        for (vid,), g in gt.speeds.partition_by("vehicle_id", as_dict=True).items()
    }
    rows = [
        {
            "camera_id": "synthetic",
            "frame_index": r["frame_index"],
            "track_id": 10 * r["vehicle_id"],
            "x1": r["x1"],
            "y1": r["y1"],
            "x2": r["x2"],
            "y2": r["y2"],
            "speed_kmh": ref[r["vehicle_id"]][r["frame_index"]],
            "speed_flag": None,
            "class_name": r["class_name"],
        }
        for r in gt.boxes.to_dicts()
        if r["vehicle_id"] != 3
    ]
    return pl.DataFrame(rows)


def test_perfect_tracking_scores_perfectly() -> None:
    m = evaluate(GT, _perfect())
    assert m["mean_abs_speed_error_kmh"] == pytest.approx(0, abs=1e-9)
    assert m["median_abs_speed_error_kmh"] == pytest.approx(0, abs=1e-9)
    assert m["share_within_3kmh"] == 1.0
    assert m["true_vehicles"] == 2  # the 8 px car is below min_height_px: don't care
    assert m["vehicles_with_one_id"] == 2 and m["id_switches"] == 0
    assert m["idf1"] == 1.0 and m["mota"] == 1.0
    assert m["recall"] == 1.0 and m["precision"] == 1.0
    assert m["speed_samples"] == 2 * N_FRAMES
    assert m["true_by_class"] == {"car": 1, "truck": 1} == m["tracked_by_class"]
    assert m["class_accuracy"] == 1.0


def test_id_switch_is_counted() -> None:
    dets = _perfect().with_columns(
        pl.when((pl.col("track_id") == 10) & (pl.col("frame_index") >= 20))
        .then(pl.lit(11))
        .otherwise(pl.col("track_id"))
        .alias("track_id")
    )
    m = evaluate(GT, dets)
    assert m["id_switches"] == 1
    assert m["vehicles_with_one_id"] == 1
    assert m["recall"] == 1.0 and m["mota"] == pytest.approx(1 - 1 / 100)
    # IDF1: vehicle 1 keeps its longer id (30 of its 50 frames), vehicle 2 all 50: 2 * 80 / (100 + 100).
    assert m["idf1"] == pytest.approx(0.8)
    assert m["tracks"] == 3


def test_switching_back_counts_twice_but_one_id_pair() -> None:
    middle = (pl.col("frame_index") >= 20) & (pl.col("frame_index") < 30)
    dets = _perfect().with_columns(
        pl.when((pl.col("track_id") == 10) & middle).then(pl.lit(11)).otherwise(pl.col("track_id")).alias("track_id")
    )
    m = evaluate(GT, dets)
    assert m["id_switches"] == 2
    assert m["idf1"] == pytest.approx(2 * 90 / 200)


def test_speed_bias_is_measured() -> None:
    dets = _perfect().with_columns(pl.col("speed_kmh") + 5.0)
    m = evaluate(GT, dets)
    assert m["mean_abs_speed_error_kmh"] == pytest.approx(5.0)
    assert m["median_abs_speed_error_kmh"] == pytest.approx(5.0)
    assert m["mean_speed_error_kmh"] == pytest.approx(5.0)
    assert m["share_within_3kmh"] == 0.0 and m["share_within_5kmh"] == 1.0
    slow = evaluate(GT, _perfect().with_columns(pl.col("speed_kmh") - 5.0))
    assert slow["mean_speed_error_kmh"] == pytest.approx(-5.0) and slow["mean_abs_speed_error_kmh"] == pytest.approx(5)


def test_speed_reference_is_the_estimator_window_mean() -> None:
    # Reporting the instantaneous speed of the accelerating truck lags nothing, so against the 0.8 s window
    # mean it reads high by half the speed gained over the window: 2 m/s^2 * 0.4 s = 2.88 km/h once warmed up.
    instantaneous = _perfect(window_s=0.0)
    m = evaluate(GT, instantaneous, window_s=0.8)
    truck = next(v for v in m["per_vehicle"] if v["vehicle_id"] == 2)
    assert truck["mean_speed_error_kmh"] > 2.0
    assert next(v for v in m["per_vehicle"] if v["vehicle_id"] == 1)["mean_abs_speed_error_kmh"] == pytest.approx(0)
    assert evaluate(GT, instantaneous, window_s=0.0)["mean_abs_speed_error_kmh"] == pytest.approx(0, abs=1e-9)
    late = trailing_mean_speed(np.arange(50), np.arange(50, dtype=float), 20)
    assert late[49] == pytest.approx(np.mean(np.arange(29, 50))) and late[0] == 0.0 and late[5] == 2.5


def test_missing_and_misplaced_boxes_lower_recall_and_precision() -> None:
    perfect = _perfect()
    odd_truck = (pl.col("track_id") == 20) & (pl.col("frame_index") % 2 == 1)
    m = evaluate(GT, perfect.filter(~odd_truck))
    assert m["recall"] == pytest.approx(0.75) and m["precision"] == 1.0
    # The truck's boxes are >= 130 px tall: all its misses land in the top bin.
    assert m["recall_by_height"]["40-80px"] == 1.0 and m["recall_by_height"][">=80px"] < 1.0
    assert m["vehicles_with_one_id"] == 2 and m["id_switches"] == 0  # gaps are not switches
    shifted = perfect.with_columns(
        pl.when(odd_truck).then(pl.col("x1") + 80).otherwise(pl.col("x1")).alias("x1"),
        pl.when(odd_truck).then(pl.col("x2") + 80).otherwise(pl.col("x2")).alias("x2"),
    )
    m = evaluate(GT, shifted)  # IoU ~0.2: a miss and a false positive each
    assert m["recall"] == pytest.approx(0.75) and m["precision"] == pytest.approx(0.75)
    assert m["false_positives"] == 25 and m["false_negatives"] == 25
    assert m["speed_samples"] == 75


def test_dont_care_boxes_neither_count_nor_punish() -> None:
    gt = json.loads(json.dumps(GT))
    for frame in gt["frames"]:
        frame["vehicles"][1]["visibility"] = 0.3  # the truck is mostly hidden behind something
    perfect = _perfect()
    assert evaluate(gt, perfect)["precision"] == 1.0  # detecting it anyway is no false positive
    m = evaluate(gt, perfect.filter(pl.col("track_id") != 20))  # nor is missing it a miss
    assert m["recall"] == 1.0 and m["true_vehicles"] == 1 and m["ignored_detections"] == 0
    assert evaluate(gt, perfect)["ignored_detections"] == N_FRAMES


def test_other_cameras_pandas_input_and_null_columns() -> None:
    perfect = _perfect()
    noise = perfect.with_columns(pl.lit("elsewhere").alias("camera_id"), pl.col("x1") + 300, pl.col("x2") + 300)
    both = pl.concat([perfect, noise])
    assert evaluate(GT, both)["precision"] == 1.0
    as_pandas = evaluate(GT, both.to_pandas())
    as_polars = evaluate(GT, both)
    assert as_pandas == as_polars
    bare = perfect.select("frame_index", "x1", "y1", "x2", "y2")  # detector-only output: no ids, no speeds
    m = evaluate(GT, bare)
    assert m["recall"] == 1.0 and m["speed_samples"] == 0 and m["mean_abs_speed_error_kmh"] is None
    assert m["idf1"] == 0.0 and m["vehicles_with_one_id"] == 0
    with pytest.raises(ValueError, match="x2"):
        evaluate(GT, perfect.drop("x2"))


def test_flagged_speeds_can_be_left_out() -> None:
    dets = _perfect().with_columns(
        pl.when(pl.col("frame_index") < 10).then(pl.col("speed_kmh") + 50).otherwise(pl.col("speed_kmh")),
        pl.when(pl.col("frame_index") < 10).then(pl.lit("implausible")).otherwise(None).alias("speed_flag"),
    )
    assert evaluate(GT, dets)["mean_abs_speed_error_kmh"] == pytest.approx(10.0)
    m = evaluate(GT, dets, exclude_flagged=True)
    assert m["mean_abs_speed_error_kmh"] == pytest.approx(0, abs=1e-9) and m["speed_samples"] == 80
    assert m["speed_flags"] == {"implausible": 20}


def test_hungarian_matching_finds_the_most_matches() -> None:
    def boxes(*spans: tuple[float, float]) -> np.ndarray:
        return np.array([[a, 0, b, 10] for a, b in spans], dtype=float)

    gt = boxes((0, 10), (3, 13))
    det = boxes((1, 11), (-3, 7))
    # Greedy takes the best pair first (gt 0 - det 0, IoU .82) and strands gt 1 (IoU .25 with det 1);
    # the assignment pairs gt 0 - det 1 (.54) and gt 1 - det 0 (.67) instead.
    assert sorted(match_frame(gt, det, 0.5)) == [(0, 1), (1, 0)]
    assert match_frame(gt, det[:0], 0.5) == []
    assert match_frame(gt, boxes((40, 50)), 0.5) == []


def test_cli_on_a_parquet_file(tmp_path: Path) -> None:
    (tmp_path / "gt.json").write_text(json.dumps(GT))
    _perfect().write_parquet(tmp_path / "rows.parquet")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trafficstream.bench.metrics",
            "--ground-truth",
            str(tmp_path / "gt.json"),
            "--detections",
            str(tmp_path / "rows.parquet"),
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["idf1"] == 1.0 and result["true_vehicles"] == 2 and "per_vehicle" not in result
