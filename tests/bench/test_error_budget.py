"""Speed error budget against hand-built ground truth: each test breaks one link of the chain in a known way (box
bottom offset, calibration scale, clock rate, identity) and checks that the budget puts the error in that link and
nowhere else, and that the links reconcile with the observed error."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import yaml

from trafficstream.bench import error_budget as eb
from trafficstream.bench.metrics import evaluate
from trafficstream.config import TrackerSettings
from trafficstream.models.homography import RoadPlane, project
from trafficstream.models.roi import bottom_centre
from trafficstream.models.speed import TrackKinematics

FPS = 25.0
N_FRAMES = 50
CAMERA = "cam"
FOCAL, HEIGHT_M, PITCH_DEG = 998.4, 9.0, 16.0


def _world_to_image() -> np.ndarray:
    """A pinhole camera 9 m above x = 5.25, looking down the road (+y) at 16 degrees: road metres -> pixels."""
    pitch = math.radians(PITCH_DEG)
    forward = np.array([0.0, math.cos(pitch), -math.sin(pitch)])
    right = np.array([1.0, 0.0, 0.0])
    R = np.stack([right, np.cross(forward, right), forward])
    K = np.array([[FOCAL, 0, 640.0], [0, FOCAL, 360.0], [0, 0, 1.0]])
    centre = np.array([5.25, 0.0, HEIGHT_M])
    return K @ np.column_stack([R[:, 0], R[:, 1], -R @ centre])


G = _world_to_image()
H_TRUE = np.linalg.inv(G) / np.linalg.inv(G)[2, 2]
GRID = np.array([[x, y] for y in (20.0, 45.0, 70.0, 95.0) for x in (0.0, 3.5, 7.0, 10.5)])


def _plane(scale_y: float = 1.0) -> RoadPlane:
    """The calibrated plane from exact pairs, their world y scaled by ``scale_y`` (a mis-measured calibration)."""
    return RoadPlane.from_points(project(G, GRID), GRID * [1.0, scale_y])


def _ground_truth(speeds_kmh: tuple[float, ...] = (90.0, 120.0)) -> dict:
    """Vehicles driving towards the camera at constant speeds, one per lane, from y = 75 m; boxes 40 x 60 px whose
    bottom-centre is the contact point."""
    frames = []
    for f in range(N_FRAMES):
        vehicles = []
        for i, kmh in enumerate(speeds_kmh):
            x, y = 1.75 + 3.5 * i, 75.0 - kmh / 3.6 * f / FPS
            u, v = project(G, [[x, y]])[0]
            box = [u - 20.0, v - 60.0, u + 20.0, v]
            vehicles.append(
                {
                    "vehicle_id": i + 1,
                    "class_name": "car",
                    "box": box,
                    "full_box": box,
                    "visibility": 1.0,
                    "in_roi": True,
                    "world_x": x,
                    "world_y": y,
                    "speed_kmh": kmh,
                }
            )
        frames.append({"frame_index": f, "pts_s": f / FPS, "vehicles": vehicles})
    return {
        "camera_id": CAMERA,
        "fps": FPS,
        "n_frames": N_FRAMES,
        "width": 1280,
        "height": 720,
        "homography": H_TRUE.tolist(),
        "vehicles": [{"vehicle_id": i + 1, "heading_deg": 180.0} for i in range(len(speeds_kmh))],
        "frames": frames,
    }


def _job(
    gt: dict,
    plane: RoadPlane,
    *,
    dy_px: float = 0.0,
    pts_scale: float = 1.0,
    switch_at: int | None = None,
) -> pl.DataFrame:
    """The detections table a job would write: each true box moved down by ``dy_px``, timestamps ``pts_scale`` x
    the true ones, speeds from the job's estimator on the calibrated ``plane``; with ``switch_at``, vehicle 1's track
    id changes at that frame (an identity switch)."""
    kin = TrackKinematics.from_settings(TrackerSettings(), plane=plane)
    rows = []
    for frame in gt["frames"]:
        f = frame["frame_index"]
        for v in frame["vehicles"]:
            box = np.asarray(v["full_box"], dtype=np.float32) + np.float32([0, dy_px, 0, dy_px])
            track = v["vehicle_id"] if switch_at is None or v["vehicle_id"] != 1 or f < switch_at else 101
            t = f / FPS * pts_scale
            wx, wy = plane.to_world(bottom_centre(box))[0]
            est = kin.update(track, t, (wx, wy))
            rows.append(
                {
                    "camera_id": CAMERA,
                    "frame_index": f,
                    "pts_s": t,
                    "track_id": track,
                    "x1": float(box[0]),
                    "y1": float(box[1]),
                    "x2": float(box[2]),
                    "y2": float(box[3]),
                    "world_x_m": round(float(wx), 3),
                    "world_y_m": round(float(wy), 3),
                    "speed_kmh": None if est is None else round(est.kmh, 2),
                    "speed_flag": None if est is None else est.flag,
                }
            )
    return pl.DataFrame(rows, schema_overrides={"speed_kmh": pl.Float64, "speed_flag": pl.String})


def _budget(gt: dict, dets: pl.DataFrame, plane: RoadPlane, *, fixes: bool = False, **kwargs) -> dict:
    return eb.error_budget(gt, dets, plane, min_height_px=0.0, fixes=fixes, **kwargs)


def _link(result: dict, name: str) -> float:
    return result["links"][name]["mean"]


def _assert_reconciles(result: dict) -> None:
    rec = result["reconciliation"]
    parts = rec["sum_of_links_kmh"] + rec["interaction_kmh"] + rec["replay_residual_kmh"] + rec["not_replayable_kmh"]
    assert parts == pytest.approx(rec["observed_mean_error_kmh"], abs=2e-3)
    assert abs(rec["replay_residual_kmh"]) < 0.01  # the replay is the job: same estimator, same inputs
    assert rec["readings_common"] == rec["readings"] > 0


def test_perfect_chain_has_an_empty_budget() -> None:
    gt = _ground_truth()
    plane = _plane()
    r = _budget(gt, _job(gt, plane), plane)
    for name in eb.LINKS:
        assert abs(_link(r, name)) < 0.02, name
    assert abs(r["observed"]["mean"]) < 0.02
    assert r["box_bottom"]["dy_px"]["mean"] == pytest.approx(0.0, abs=1e-3)
    _assert_reconciles(r)


def test_box_bottom_offset_is_the_box_link_only() -> None:
    """A box bottom 2 px above the contact point (as a detector drawing its boxes high) makes speeds read fast, the
    more the further away: it shows in ``box_bottom`` and nowhere else, and a constant offset predicts it."""
    gt = _ground_truth()
    plane = _plane()
    r = _budget(gt, _job(gt, plane, dy_px=-2.0), plane, fixes=True)
    box = _link(r, "box_bottom")
    assert box > 0.5  # km/h, reads too fast
    for name in ("homography", "timestamps", "truth_windowed", "gt_rounding"):
        assert abs(_link(r, name)) < 0.02, name
    assert r["observed"]["mean"] == pytest.approx(box, abs=0.02)
    _assert_reconciles(r)
    assert abs(r["reconciliation"]["unexplained_kmh"]) < 0.02

    detail = r["box_bottom"]
    assert detail["dy_px"]["mean"] == pytest.approx(-2.0, abs=1e-3)
    assert detail["dx_px"]["mean"] == pytest.approx(0.0, abs=1e-3)
    assert detail["along_road_m"]["mean"] > 0  # measured further down the road than the truth
    # constant in pixels, not a share of the box height; the metres it makes grow with distance, and so does the bias
    assert detail["dy_px_vs_height_px"]["slope"] is None or abs(detail["dy_px_vs_height_px"]["slope"]) < 1e-6
    bands = [b for b in detail["by_distance"] if b["readings"]]
    assert len(bands) >= 2
    assert [b["mean_along_road_m"] for b in bands] == sorted(b["mean_along_road_m"] for b in bands)
    assert bands[-1]["box_bottom_kmh"] > bands[0]["box_bottom_kmh"]
    assert detail["constant_offset_model"]["predicted_kmh"] == pytest.approx(box, rel=0.15)

    # Moving the contact point back down by the measured 2 px cancels it (the fix the budget estimates).
    fix = r["fix"]
    assert fix["measured_mean_offset_px"] == pytest.approx(2.0, abs=1e-3)
    assert fix["zero_bias_px"] == pytest.approx(2.0, abs=0.1)
    at_two = next(s for s in fix["constant_px"] if s["offset_px"] == pytest.approx(2.0))
    assert abs(at_two["mean"]) < 0.02


def test_calibration_error_is_the_homography_link_only() -> None:
    """A calibration whose world distances along the road are 2 % long reads every speed 2 % fast."""
    gt = _ground_truth()
    plane = _plane(scale_y=1.02)
    r = _budget(gt, _job(gt, plane), plane)
    hom = _link(r, "homography")
    mean_true = r["box_bottom"]["mean_true_speed_kmh"]
    assert hom == pytest.approx(0.02 * mean_true, rel=0.05)
    for name in ("box_bottom", "timestamps", "truth_windowed"):
        assert abs(_link(r, name)) < 0.02, name
    assert r["homography"]["pairs_world_error_m"]["mean"] > 0.3
    _assert_reconciles(r)


def test_clock_rate_is_the_timestamp_link_only() -> None:
    """Timestamps running 1 % fast (a pts clock that is not the frame rate) read speeds 1 % slow."""
    gt = _ground_truth()
    plane = _plane()
    r = _budget(gt, _job(gt, plane, pts_scale=1.01), plane)
    ts = _link(r, "timestamps")
    mean_true = r["box_bottom"]["mean_true_speed_kmh"]
    assert ts == pytest.approx(mean_true * (1 / 1.01 - 1), rel=0.05)
    for name in ("box_bottom", "homography", "truth_windowed"):
        assert abs(_link(r, name)) < 0.02, name
    assert r["timestamps"]["pts_vs_frame_slope"]["slope"] == pytest.approx(1.01, abs=1e-6)
    _assert_reconciles(r)


def test_links_add_up_when_several_are_broken() -> None:
    gt = _ground_truth()
    plane = _plane(scale_y=0.99)
    r = _budget(gt, _job(gt, plane, dy_px=-1.5, pts_scale=1.005), plane)
    assert _link(r, "box_bottom") > 0.3
    assert _link(r, "homography") < -0.5
    assert _link(r, "timestamps") < -0.3
    _assert_reconciles(r)
    # one link at a time, the interactions are second order
    assert abs(r["reconciliation"]["interaction_kmh"]) < 0.05


def test_observed_error_is_bench_metrics_figure() -> None:
    """The budget scores the readings bench/metrics.py scores (trusted, matched, care) against the same true speed."""
    gt = _ground_truth()
    plane = _plane()
    dets = _job(gt, plane, dy_px=-1.0)
    r = _budget(gt, dets, plane)
    m = evaluate(gt, dets, exclude_flagged=True, min_height_px=0.0)
    assert r["observed"]["readings"] == m["speed_samples"]
    assert r["reconciliation"]["observed_mean_error_kmh"] == pytest.approx(m["mean_speed_error_kmh"], abs=1e-4)
    assert r["observed"]["mean_abs"] == pytest.approx(m["mean_abs_speed_error_kmh"], abs=1e-4)


def test_truth_windowed_lags_under_acceleration_only_against_the_instantaneous_speed() -> None:
    """A braking vehicle: the fit is exact at the window's mean time, which is what the trailing-mean reference of
    bench/metrics.py compares with; against the instantaneous speed it lags (reads fast while braking)."""
    gt = _ground_truth(speeds_kmh=(90.0,))
    accel = -3.0  # m/s^2
    for frame in gt["frames"]:
        t = frame["frame_index"] / FPS
        v = frame["vehicles"][0]
        y = 75.0 - (25.0 * t + 0.5 * accel * t * t)
        u, px_v = project(G, [[v["world_x"], y]])[0]
        box = [u - 20.0, px_v - 60.0, u + 20.0, px_v]
        v.update(world_y=y, speed_kmh=(25.0 + accel * t) * 3.6, box=box, full_box=box)
    plane = _plane()
    r = _budget(gt, _job(gt, plane), plane)
    fit = r["truth_windowed"]
    assert abs(fit["vs_trailing_mean"]["mean"]) < 0.05
    assert abs(fit["vs_window_mean_time"]["mean"]) < 0.05
    assert fit["vs_instantaneous"]["mean"] > 1.0  # ~ -accel * 0.4 s * 3.6 = 4.3 km/h at a full window
    _assert_reconciles(r)


def test_identity_switch_is_reported_under_tracking() -> None:
    gt = _ground_truth()
    plane = _plane()
    r = _budget(gt, _job(gt, plane, switch_at=25), plane)
    tracking = r["tracking"]
    assert tracking["tracks_per_vehicle"] == pytest.approx(1.5)  # vehicle 1 has two tracks, vehicle 2 one
    assert tracking["flags_on_matched_care_rows"].get("insufficient_history", 0) > 0
    assert tracking["speed_coverage"] < 1.0
    assert tracking["mixed_identity_windows"] == 0  # the new track starts afresh: no window mixes vehicles
    _assert_reconciles(r)


def test_directions_and_regions() -> None:
    gt = _ground_truth()
    plane = _plane()
    r = _budget(gt, _job(gt, plane, dy_px=-1.0), plane, detect_tiles=[(0, 0, 1280, 250)])
    assert set(r["by_direction"]) == {"towards_camera"}
    regions = {x["region"]: x for x in r["box_bottom"]["by_region"]}
    assert set(regions) == {"full_frame", "tile_0"}  # far boxes lie in the far-field tile
    assert sum(x["boxes"] for x in regions.values()) == r["box_bottom"]["boxes"]


def test_letterbox_geometry_of_the_eval_clip() -> None:
    """1280x720 into the 384x640 detector input: scale 0.5, 12 rows of padding, no rounding of the resized size."""
    geo = eb._letterbox_geometry(1280, 720, (384, 640))
    assert geo["scale"] == 0.5
    assert geo["pad_xy"] == [0, 12]
    assert geo["max_edge_shift_px"] == [0.0, 0.0]
    assert eb._letterbox_geometry(1920, 1080, (384, 640))["input_hw"] == [384, 640]


def test_min_height_is_make_evals() -> None:
    from trafficstream.bench.evaluate import MIN_HEIGHT_PX

    assert eb.MIN_HEIGHT_PX == MIN_HEIGHT_PX


def test_cli_writes_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    gt = _ground_truth()
    plane = _plane()
    clip, run = tmp_path / "clip", tmp_path / "run"
    clip.mkdir()
    run.mkdir()
    (clip / "ground_truth.json").write_text(json.dumps(gt))
    img = project(G, GRID)
    config = {
        "cameras": [
            {
                "id": CAMERA,
                "source": str(clip / "clip.mp4"),
                "speed_limit_kmh": 100,
                "calibration": {"image_points": img.round(4).tolist(), "world_points": GRID.tolist()},
            }
        ]
    }
    (clip / "camera.yaml").write_text(yaml.safe_dump(config))
    _job(gt, plane, dy_px=-1.0).write_parquet(run / "detections.parquet")
    out = tmp_path / "budget.json"
    assert (
        eb.main(
            [
                "--clip",
                str(clip),
                "--run",
                str(run / "detections.parquet"),
                "--out",
                str(out),
                "--min-height-px",
                "0",
                "--log-level",
                "WARNING",
            ]
        )
        == 0
    )
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed == json.loads(out.read_text())
    assert printed["links"]["box_bottom"]["mean"] > 0.2
    assert printed["box_bottom"]["letterbox"]["scale"] == 0.5
    assert "box_bottom" in eb.format_table(printed)
