"""Scene families (bench/synthetic/families.py) and what they vary: every family renders for the test seeds,
the default scene carries nothing new, and the geometry of a distorting lens, a road grade, a bend and a
swaying camera is consistent between the picture, the ground truth and the camera's calibration; light,
calibration noise, motion blur and motorcycles do what they say."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
import yaml

from trafficstream.bench.synthetic import (
    EVAL_SEEDS,
    FAMILIES,
    TEST_SEEDS,
    PinholeCamera,
    SceneParams,
    SyntheticClip,
    family_scene,
    generate,
)
from trafficstream.bench.synthetic.__main__ import main as cli_main
from trafficstream.bench.synthetic.camera import Optics
from trafficstream.bench.synthetic.clip import FAMILY_FIELDS
from trafficstream.bench.synthetic.renderer import paste_sprite
from trafficstream.bench.synthetic.road import RoadCourse
from trafficstream.bench.synthetic.scenario import camera_geometry
from trafficstream.bench.synthetic.sprites import Sprite
from trafficstream.bench.synthetic.traffic import DIMENSIONS, plan_vehicles
from trafficstream.cameras import Calibration
from trafficstream.config import load_settings
from trafficstream.models.detector import YoloOnnxDetector
from trafficstream.models.lens import LensModel, distort_pixels, undistort_pixels

SHORT_S = 1.0  # every family for the test seeds, this long (at its 25 frames/s)
SEED = TEST_SEEDS[0]
LENS_SCHEMA = "lens" in Calibration.model_fields  # the config schema's calibration.lens (cameras.py)


def _project(H: np.ndarray, xy: np.ndarray) -> np.ndarray:
    p = np.column_stack([xy, np.ones(len(xy))]) @ np.asarray(H).T
    return p[:, :2] / p[:, 2:]


def _contact(v: dict) -> np.ndarray:
    x1, _, x2, y2 = v["full_box"]
    return np.array([(x1 + x2) / 2, y2])


def _camera_yaml(clip: SyntheticClip) -> dict:
    (camera,) = yaml.safe_load(clip.config_path.read_text())["cameras"]
    return camera


def _frames_of(clip: SyntheticClip, wanted: set[int]) -> dict[int, np.ndarray]:
    out = {}
    with av.open(str(clip.video_path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                out[index] = frame.to_ndarray(format="bgr24")
    return out


@pytest.fixture(scope="module")
def clips(data_dir: Path, tmp_path_factory) -> Callable[[str], tuple[SyntheticClip, dict]]:
    """(clip, ground truth) of a family for the first test seed, rendered SHORT_S long, once per module."""
    made: dict[str, tuple[SyntheticClip, dict]] = {}

    def get(name: str) -> tuple[SyntheticClip, dict]:
        if name not in made:
            out = tmp_path_factory.mktemp(f"family-{name}")
            clip = generate(out, family_scene(name, duration_s=SHORT_S), SEED, data_dir=data_dir, progress=False)
            made[name] = clip, json.loads(clip.ground_truth_path.read_text())
        return made[name]

    return get


# -- the families ---------------------------------------------------------------------------------------------
def test_the_families_and_their_seeds() -> None:
    assert list(FAMILIES) == [
        "motorway",
        "high_mast",
        "low_wide",
        "urban",
        "grade_curve",
        "dense_lane_change",
        "dusk_compressed",
        "night",
        "sway_blur",
        "stop_and_go",
    ]
    assert FAMILIES["motorway"].params == SceneParams()
    assert not set(EVAL_SEEDS) & set(TEST_SEEDS)
    for name, family in FAMILIES.items():
        assert family.name == name and family.description and "\n" not in family.description
        assert family.params.n_frames == 300  # 12 s at 25 frames/s: short enough to evaluate them all
    assert family_scene("night", duration_s=2.0) == replace(FAMILIES["night"].params, duration_s=2.0)
    with pytest.raises(KeyError, match="motorway, high_mast"):
        family_scene("rainy")
    with pytest.raises(ValueError, match="colour"):
        family_scene("night", colour="blue")
    with pytest.raises(ValueError, match="light in"):
        family_scene("night", light="noon")


def test_new_scene_parameters_are_validated() -> None:
    with pytest.raises(ValueError, match="monotonic"):
        SceneParams(lens_k1=-0.5)  # folds the picture onto itself within the frame
    with pytest.raises(ValueError, match="grade_pct"):
        SceneParams(grade_pct=20.0)
    with pytest.raises(ValueError, match="curve_radius_m"):
        SceneParams(curve_radius_m=20.0)
    with pytest.raises(ValueError, match="motorcycle_share"):
        SceneParams(heavy_share=0.8, motorcycle_share=0.3)
    with pytest.raises(ValueError, match="sway_px"):
        SceneParams(sway_px=-1.0)


@pytest.mark.parametrize("name", list(FAMILIES))
def test_every_family_renders_for_the_test_seeds(name: str, clips) -> None:
    clip, gt = clips(name)
    scene = family_scene(name, duration_s=SHORT_S)
    assert gt["n_frames"] == len(gt["frames"]) == scene.n_frames and gt["seed"] == SEED
    boxes = [v for f in gt["frames"] for v in f["vehicles"] if v["box"] is not None]
    assert len(boxes) >= 3 * scene.n_frames, "the clip should show traffic"
    with av.open(str(clip.video_path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == gt["n_frames"]
    roi = np.asarray(gt["roi"])
    assert roi[:, 0].min() >= 0 and roi[:, 0].max() <= scene.width and roi[:, 1].max() <= scene.height
    camera = _camera_yaml(clip)
    assert camera["roi"] == gt["roi"] and len(camera["calibration"]["image_points"]) >= 6
    if scene.lens is None or LENS_SCHEMA:
        (cam,) = load_settings(clip.config_path, environ={}).cameras
        assert cam.register_frames == (scene.sway_px > 0)


def test_the_default_scene_carries_nothing_new(clips) -> None:
    clip, gt = clips("motorway")
    assert family_scene("motorway", duration_s=SHORT_S) == SceneParams(duration_s=SHORT_S)
    assert not {"lens", "sway", "scene_notes"} & set(gt)
    assert set(gt["scene"]) == {k for k in asdict(SceneParams()) if k not in FAMILY_FIELDS}
    camera = _camera_yaml(clip)
    assert set(camera["calibration"]) == {"image_points", "world_points"} and "register_frames" not in camera


# -- lens distortion ------------------------------------------------------------------------------------------
def test_a_distorting_lens_moves_boxes_roi_and_calibration_into_the_distorted_picture(clips) -> None:
    clip, gt = clips("low_wide")
    scene = family_scene("low_wide")
    lens = LensModel(scene.focal, scene.width / 2, scene.height / 2, scene.lens_k1, scene.lens_k2)
    assert gt["lens"] == {"focal_px": lens.focal_px, "center_px": [lens.cx, lens.cy], "k1": -0.12, "k2": 0.02}
    H = np.asarray(gt["homography_world_to_image"])  # the ideal pinhole homography
    checked, shifts = 0, []
    for frame in gt["frames"]:
        for v in frame["vehicles"]:
            ideal = _project(H, np.array([[v["world_x"], v["world_y"]]]))
            assert np.allclose(_contact(v), distort_pixels(ideal, lens)[0], atol=2e-3)
            shifts.append(np.abs(distort_pixels(ideal, lens) - ideal).max())
            checked += 1
    assert checked > 100 and max(shifts) > 0.5  # the lens does move them (far more near the edges)
    # The calibration: distorted pixels (as clicked on the video) that the lens undistorts onto the ideal
    # homography's image of the world points.
    calibration = _camera_yaml(clip)["calibration"]
    assert calibration["lens"] == gt["lens"]
    image, world = np.asarray(calibration["image_points"]), np.asarray(calibration["world_points"])
    H_inv = np.asarray(gt["homography"])
    assert np.abs(_project(H_inv, undistort_pixels(image, lens)) - world).max() < 0.05
    assert np.abs(_project(H_inv, image) - world).max() > 0.2  # ... which the raw pixels are not
    if LENS_SCHEMA:
        (cam,) = load_settings(clip.config_path, environ={}).cameras
        assert cam.calibration is not None and cam.calibration.lens is not None
        assert cam.calibration.lens.k1 == scene.lens_k1


def test_the_distorted_picture_shows_the_vehicles_where_the_boxes_are(clips) -> None:
    _, gt = clips("low_wide")
    whole = [v for f in gt["frames"] for v in f["vehicles"] if v["box"] is not None and v["visibility"] > 0.999]
    assert len(whole) > 50
    # The visible box is traced from the picture's own pixels: it agrees with the mapped box to the pixel.
    assert max(np.abs(np.subtract(v["box"], v["full_box"])).max() for v in whole) <= 1.5
    # And the resampling itself: a dot in the ideal picture lands where the lens model puts it.
    scene = family_scene("low_wide", width=320, height=180, focal_px=0.55 * 320)
    optics = Optics.of(PinholeCamera.looking_down_road(scene), scene)
    assert optics.lens is not None and optics.maps is not None and min(optics.pad) > 2
    ideal = np.zeros((optics.canvas.height, optics.canvas.width), np.float32)
    u, v = 290.0, 160.0  # near a corner, where barrel distortion is strongest
    ideal[int(v) + optics.pad[1], int(u) + optics.pad[0]] = 1.0  # covers [u, u + 1] x [v, v + 1]
    picture = cv2.remap(ideal, *optics.maps, cv2.INTER_LINEAR)
    rows, cols = np.nonzero(picture)
    seen = np.average(np.column_stack([cols, rows]) + 0.5, axis=0, weights=picture[rows, cols])
    assert np.allclose(seen, distort_pixels(np.array([[u + 0.5, v + 0.5]]), optics.lens)[0], atol=0.3)


# -- grade and bend -------------------------------------------------------------------------------------------
def test_on_a_grade_calibration_and_truth_are_measured_along_the_slope(clips) -> None:
    clip, gt = clips("grade_curve")
    scene = family_scene("grade_curve")
    calibration = _camera_yaml(clip)["calibration"]
    H, _ = cv2.findHomography(np.asarray(calibration["image_points"]), np.asarray(calibration["world_points"]))
    contacts = np.array([_contact(v) for f in gt["frames"] for v in f["vehicles"]])
    world = np.array([[v["world_x"], v["world_y"]] for f in gt["frames"] for v in f["vehicles"]])
    assert len(world) > 100 and np.abs(_project(H, contacts) - world).max() < 0.03
    # The road frame: the camera stands camera_height_m above the level ground at y = 0, and looks down at
    # pitch_deg below the horizontal; the road climbs away from it.
    theta = math.atan(scene.grade_pct / 100)
    Q = np.array([[1, 0, 0], [0, math.cos(theta), -math.sin(theta)], [0, math.sin(theta), math.cos(theta)]])
    assert np.allclose(Q @ np.asarray(gt["camera"]["center"]), [scene.camera_x, 0.0, scene.camera_height_m])
    forward_level = Q @ np.asarray(gt["camera"]["R"])[2]
    assert math.degrees(math.asin(-forward_level[2])) == pytest.approx(scene.pitch_deg)


def test_on_a_bend_vehicles_follow_their_lane_at_their_true_speed(clips) -> None:
    clip, gt = clips("grade_curve")
    scene = family_scene("grade_curve")
    course = RoadCourse.of(scene)
    R, s0, x_ref = scene.curve_radius_m, scene.curve_start_m, scene.road_width_m / 2
    assert R is not None
    lanes = {v["vehicle_id"]: v for v in gt["vehicles"] if v["lane_change"] is None}
    tracks: dict[int, list[tuple[int, float, float, float]]] = {}
    for frame in gt["frames"]:
        for v in frame["vehicles"]:
            tracks.setdefault(v["vehicle_id"], []).append(
                (frame["frame_index"], v["world_x"], v["world_y"], v["speed_kmh"])
            )
    on_bend = 0
    for vid, rows in tracks.items():
        a = np.asarray(rows)
        step = np.hypot(np.diff(a[:, 1]), np.diff(a[:, 2])) * gt["fps"] * 3.6
        assert np.allclose(step, (a[1:, 3] + a[:-1, 3]) / 2, atol=0.3)  # the speed is the path's derivative
        if vid not in lanes:
            continue
        centre = (lanes[vid]["lane"] + 0.5) * scene.lane_width_m
        bend = a[:, 2] > s0
        radius = np.hypot(a[bend, 1] - (x_ref + R), a[bend, 2] - s0)
        assert np.allclose(radius, R - (centre - x_ref), atol=2e-3)  # on the lane centre's circle
        assert np.allclose(a[~bend, 1], centre, atol=1e-3)
        on_bend += int(bend.sum())
    assert on_bend > 100
    # Everything on the road inside the region of interest's stretch is in it: the region follows the bend.
    near = PinholeCamera.looking_down_road(scene).ground_distance_at_row(scene.height)
    for frame in gt["frames"]:
        for v in frame["vehicles"]:
            x, s = course.to_lane(v["world_x"], v["world_y"])
            u, w = _contact(v)
            if near + 1 < s < scene.roi_far_m - 3 and 1 < u < scene.width - 1 and w < scene.height - 1:
                assert v["in_roi"], (v, float(s))
    # Counting lines across the bend span the carriageway where it is.
    geo = camera_geometry(replace(scene, line_ys_m=(20.0, 80.0)))
    for line, y in zip(geo["lines"], (20.0, 80.0), strict=True):
        (xl, yl), (xr, yr) = line["points"]
        lane_xl, _ = course.to_lane(xl, yl)
        lane_xr, _ = course.to_lane(xr, yr)
        assert yl == yr == y and lane_xl == pytest.approx(-1.0, abs=1e-3)
        assert lane_xr == pytest.approx(scene.road_width_m + 2.5, abs=1e-3)


def test_road_course_maps_lane_coordinates_and_back() -> None:
    for radius in (400.0, -250.0):
        course = RoadCourse(5.25, 30.0, radius)
        x, s = np.meshgrid(np.linspace(-1, 13, 8), np.linspace(0.5, 160.5, 17))  # not at the bend's start
        px, py = course.to_plane(x, s)
        back = course.to_lane(px, py)
        assert np.allclose(back[0], x) and np.allclose(back[1], s)
        # The tangent is the unit derivative along s; a metre of s is path_scale metres of path.
        dpx, dpy = course.to_plane(x, s + 1e-4)
        tx, ty = course.tangent(x, s)
        length = np.hypot(dpx - px, dpy - py) / 1e-4
        assert np.allclose(length, course.path_scale(x, s), atol=1e-6)
        assert np.allclose((dpx - px) / 1e-4 / length, tx, atol=1e-5)
        assert np.allclose((dpy - py) / 1e-4 / length, ty, atol=1e-5)
        assert np.allclose(course.x_at(13.0, py[:, -1]), px[:, -1])
    assert np.sign(RoadCourse(5.25, 30.0, 400.0).to_plane(5.25, 150.0)[0] - 5.25) > 0  # a right bend bends right


# -- camera sway, motion blur -----------------------------------------------------------------------------------
def test_a_swaying_camera_moves_picture_and_truth_but_not_frame_0(clips) -> None:
    clip, gt = clips("sway_blur")
    still_clip, still = clips("motorway")  # the same scene and traffic, without sway and blur
    sway = np.asarray(gt["sway"])
    assert sway[0].tolist() == [0.0, 0.0, 0.0]
    assert np.abs(sway[:, :2]).max() <= 3.0 and np.abs(sway[1:, :2]).max() > 0.1
    camera = _camera_yaml(clip)
    assert camera["register_frames"] is True and camera["calibration"]["reference_frame"] == 0
    assert camera["calibration"] == _camera_yaml(still_clip)["calibration"] | {"reference_frame": 0}
    assert [v["full_box"] for v in gt["frames"][0]["vehicles"]] == [
        v["full_box"] for v in still["frames"][0]["vehicles"]
    ]
    for frame, still_frame, (dx, dy, deg) in zip(gt["frames"], still["frames"], sway, strict=True):
        a = math.radians(deg)
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        centre = np.array([640.0, 360.0])
        mine = {v["vehicle_id"]: _contact(v) for v in frame["vehicles"]}
        for v in still_frame["vehicles"]:
            if v["vehicle_id"] in mine:
                expected = rot @ (_contact(v) - centre) + centre + [dx, dy]
                assert np.allclose(mine[v["vehicle_id"]], expected, atol=3e-3)
    # The picture moved by the sway: register the swayed frame on the still one (their road is the same).
    last = len(sway) - 1
    swayed, still_img = _frames_of(clip, {last})[last], _frames_of(still_clip, {last})[last]
    sky_and_road = (slice(0, 300), slice(0, 1280))  # above the traffic's near part, where vehicles differ
    (du, dv), _ = cv2.phaseCorrelate(
        cv2.cvtColor(still_img[sky_and_road], cv2.COLOR_BGR2GRAY).astype(np.float64),
        cv2.cvtColor(swayed[sky_and_road], cv2.COLOR_BGR2GRAY).astype(np.float64),
    )
    assert np.hypot(du - sway[last, 0], dv - sway[last, 1]) < 0.5


def test_motion_blur_smears_a_sprite_but_not_its_box() -> None:
    sprite = np.full((40, 40, 3), 250, np.uint8)
    box = np.array([50.3, 20.0, 90.3, 60.0])
    sharp, blurred = np.zeros((100, 160, 3), np.uint8), np.zeros((100, 160, 3), np.uint8)
    sharp_labels, blurred_labels = np.zeros((100, 160), np.int32), np.zeros((100, 160), np.int32)
    paste_sprite(sharp, sharp_labels, sprite, box, 1)
    paste_sprite(blurred, blurred_labels, sprite, box, 1, blur=(12.0, 0.0))
    extent = [np.argwhere(labels == 1)[[0, -1]] for labels in (sharp_labels, blurred_labels)]
    assert np.abs(extent[0] - extent[1]).max() <= 1  # the half-covered edge stays where the sharp one is
    row = blurred[40, :, 0].astype(int)
    ramp = np.flatnonzero((row > 10) & (row < 240))
    assert 16 <= len(ramp) <= 28  # two ~12 px ramps instead of two hard edges
    assert np.isclose(blurred[40].astype(float).sum(), sharp[40].astype(float).sum(), rtol=0.02)  # light kept


# -- light, calibration noise, motorcycles --------------------------------------------------------------------
def test_dusk_and_night_are_darker_and_night_vehicles_have_their_headlights_on(clips) -> None:
    day_clip, _ = clips("motorway")
    (dusk_clip, _), (night_clip, night_gt) = clips("dusk_compressed"), clips("night")
    day, dusk, night = (_frames_of(c, {12})[12].astype(float) for c in (day_clip, dusk_clip, night_clip))
    assert night.mean() < 0.5 * dusk.mean() < 0.5 * day.mean()
    lit = 0
    for v in night_gt["frames"][12]["vehicles"]:
        x1, y1, x2, y2 = np.round(v["full_box"]).astype(int)
        if v["visibility"] > 0.99 and y2 - y1 >= 20:
            lit += int(night[max(y1, 0) : y2, max(x1, 0) : x2].max() > 230)
    assert lit >= 2


def test_the_detector_still_finds_most_vehicles_at_dusk(data_dir: Path, tmp_path: Path) -> None:
    # Long enough for traffic to come near (at 5 frames/s to stay quick): most countable vehicles are near ones.
    scene = family_scene("dusk_compressed", duration_s=6.0, fps=5.0)
    clip = generate(tmp_path / "dusk", scene, SEED, data_dir=data_dir, progress=False)
    gt = json.loads(clip.ground_truth_path.read_text())

    def countable(v: dict) -> bool:
        return v["box"] is not None and v["visibility"] >= 0.99 and v["box"][3] - v["box"][1] >= 40

    frames = sorted(gt["frames"], key=lambda f: -sum(countable(v) for v in f["vehicles"]))[:10]
    images = _frames_of(clip, {f["frame_index"] for f in frames})
    detector = YoloOnnxDetector(data_dir / "models" / "yolov8n.onnx")
    hits = total = 0
    for frame in frames:
        dets = detector(images[frame["frame_index"]])
        for v in filter(countable, frame["vehicles"]):
            total += 1
            box = np.asarray(v["box"])
            lt, rb = np.maximum(dets.xyxy[:, :2], box[:2]), np.minimum(dets.xyxy[:, 2:], box[2:])
            inter = (rb - lt).clip(0).prod(axis=1)
            union = (dets.xyxy[:, 2:] - dets.xyxy[:, :2]).prod(axis=1) + (box[2:] - box[:2]).prod() - inter
            hits += int(len(dets) > 0 and (inter / union).max() >= 0.5)
    assert total >= 12 and hits / total >= 0.8, f"recall {hits}/{total}"


def test_calibration_points_are_clicked_with_noise(clips) -> None:
    clip, gt = clips("high_mast")
    calibration = _camera_yaml(clip)["calibration"]
    image, world = np.asarray(calibration["image_points"]), np.asarray(calibration["world_points"])
    exact = _project(np.asarray(gt["homography_world_to_image"]), world)
    off = np.hypot(*(image - exact).T)
    assert len(image) >= 6 and off.min() > 0.0 and 0.2 < off.mean() < 2.5  # sigma 0.7 px per axis
    assert np.all(world == np.round(world, 3))  # the world points are what a map gives: exact


def test_motorcycles_are_drawn_only_from_motorcycle_sprites(clips) -> None:
    _, gt = clips("urban")
    assert any("motorcycle" in note for note in gt["scene_notes"])  # the sample clips give none
    cars = [Sprite(np.zeros((30, 40, 3), np.uint8), 2, "fake", i, 0.9) for i in range(4)]
    bikes = [Sprite(np.zeros((40, 20, 3), np.uint8), 3, "fake", 9, 0.9)]
    scene = SceneParams(n_vehicles=12, motorcycle_share=0.5)
    camera = PinholeCamera.looking_down_road(scene)
    without = plan_vehicles(scene, np.random.default_rng(3), cars, camera)
    assert without == plan_vehicles(replace(scene, motorcycle_share=0.0), np.random.default_rng(3), cars, camera)
    plans = plan_vehicles(scene, np.random.default_rng(3), cars + bikes, camera)
    motorcycles = [p for p in plans if p.class_name == "motorcycle"]
    assert 2 <= len(motorcycles) <= 10 and all(p.sprite == 4 and p.class_id == 3 for p in motorcycles)
    (lo, hi), _, _ = DIMENSIONS["motorcycle"]
    assert all(lo <= p.body.length_m <= hi for p in motorcycles)


# -- command line -----------------------------------------------------------------------------------------------
def test_cli_lists_and_renders_families(data_dir: Path, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setattr("trafficstream.bench.synthetic.__main__.setup_logging", lambda level: None)  # pytest's
    assert cli_main(["--list-families"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == list(FAMILIES)
    out = tmp_path / "night"
    args = ["--out", str(out), "--family", "night", "--seed", str(SEED), "--duration", "0.4", "--vehicles", "3"]
    assert cli_main([*args, "--data-dir", str(data_dir), "--no-progress", "--log-level", "WARNING"]) == 0
    gt = json.loads((out / "ground_truth.json").read_text())
    assert gt["scene"]["light"] == "night" and gt["n_frames"] == 10 and gt["scene"]["n_vehicles"] == 3
