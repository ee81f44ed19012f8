"""The synthetic known-speed clip generator: determinism, geometry, the video container, the deployment
config, that the real detector sees the vehicles it draws, and the staged traffic events with the crossings
and events they imply (checked against the camera's own line counter and event detector fed the truth)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from trafficstream.bench.events_metrics import evaluate_events, ideal_pipeline, ideal_tracks
from trafficstream.bench.synthetic import PinholeCamera, SceneParams, SyntheticClip, generate
from trafficstream.bench.synthetic.sprites import Sprite
from trafficstream.bench.synthetic.traffic import (
    QUEUE_MIN_GAP_M,
    STANDSTILL_GAP_M,
    Body,
    LaneChange,
    VehiclePlan,
    lateral,
    longitudinal,
    plan_vehicles,
)
from trafficstream.config import PROJECT_ROOT, load_settings
from trafficstream.models.detector import YoloOnnxDetector

# Small scenes keep the module fast; the main clip keeps the default camera and image size, so its vehicles
# are exactly as large as in a full-size benchmark clip.
TINY = SceneParams(n_vehicles=5, duration_s=1.0, width=640, height=360)
MAIN = SceneParams(n_vehicles=10, duration_s=4.0, fps=25.0, lane_change_share=0.5, accelerating_share=0.5)
# Traffic events at the full image size (the 40 px rule is in 720p pixels), at 10 frames/s to stay quick: a
# wrong-way vehicle, a stop of 4.5 s with two cars queueing behind it; and the same stop lasting to the end.
EVENTS = SceneParams(
    n_vehicles=3,
    duration_s=10.0,
    fps=10.0,
    wrong_way_vehicles=1,
    stopped_vehicles=1,
    queue_vehicles=2,
    stop_start_s=2.0,
    stop_duration_s=4.5,
)
STAYS = replace(EVENTS, stop_duration_s=None)


def _project(H: np.ndarray, xy: np.ndarray) -> np.ndarray:
    p = np.column_stack([xy, np.ones(len(xy))]) @ np.asarray(H).T
    return p[:, :2] / p[:, 2:]


@pytest.fixture(scope="module")
def clip_factory(data_dir: Path, tmp_path_factory) -> Callable[[SceneParams, int], SyntheticClip]:
    made: dict[tuple[SceneParams, int], SyntheticClip] = {}

    def make(scene: SceneParams, seed: int) -> SyntheticClip:
        if (scene, seed) not in made:
            out = tmp_path_factory.mktemp(f"synthetic-{seed}")
            made[scene, seed] = generate(out, scene, seed, data_dir=data_dir, progress=False)
        return made[scene, seed]

    return make


@pytest.fixture(scope="module")
def main_clip(clip_factory) -> SyntheticClip:
    return clip_factory(MAIN, 7)


@pytest.fixture(scope="module")
def main_gt(main_clip: SyntheticClip) -> dict:
    return json.loads(main_clip.ground_truth_path.read_text())


def test_same_seed_same_ground_truth_and_other_seeds_differ(data_dir: Path, tmp_path: Path, clip_factory) -> None:
    first = json.loads(clip_factory(TINY, 1).ground_truth_path.read_text())
    again = json.loads(
        generate(tmp_path / "again", TINY, 1, data_dir=data_dir, progress=False).ground_truth_path.read_text()
    )
    other = json.loads(clip_factory(TINY, 2).ground_truth_path.read_text())
    assert first == again
    assert first["vehicles"] != other["vehicles"]
    assert [v["initial_speed_kmh"] for v in first["vehicles"]] != [v["initial_speed_kmh"] for v in other["vehicles"]]


def test_scene_parameters_are_respected(main_gt: dict) -> None:
    vehicles = main_gt["vehicles"]
    assert len(vehicles) == MAIN.n_vehicles
    assert main_gt["n_frames"] == len(main_gt["frames"]) == 100
    assert all(MAIN.min_kmh <= v["initial_speed_kmh"] <= MAIN.max_kmh for v in vehicles)
    assert {v["class_name"] for v in vehicles} <= {"car", "truck", "bus"}
    assert any(v["accel_mps2"] != 0 for v in vehicles) and any(v["accel_mps2"] == 0 for v in vehicles)
    changers = [v for v in vehicles if v["lane_change"]]
    assert changers and all(abs(v["lane_end"] - v["lane"]) == 1 for v in changers)
    assert all(0 <= v["lane"] < MAIN.lanes and 0 <= v["lane_end"] < MAIN.lanes for v in vehicles)


def test_boxes_sit_on_the_projected_contact_points(main_gt: dict) -> None:
    H = np.asarray(main_gt["homography_world_to_image"])
    assert np.allclose(np.linalg.inv(H) / np.linalg.inv(H)[2, 2], main_gt["homography"], atol=1e-9)
    checked = 0
    for frame in main_gt["frames"]:
        for v in frame["vehicles"]:
            uv = _project(H, np.array([[v["world_x"], v["world_y"]]]))[0]
            full = np.asarray(v["full_box"])
            assert np.allclose(uv, [(full[0] + full[2]) / 2, full[3]], atol=1e-3)
            if v["box"] is None or v["visibility"] < 0.999:
                continue
            box = np.asarray(v["box"])  # the visible box of an unhidden vehicle: the same, to the pixel
            assert abs((box[0] + box[2]) / 2 - uv[0]) <= 1.0 and abs(box[3] - uv[1]) <= 1.0
            checked += 1
    assert checked > 100


def test_true_speeds_match_the_world_trajectories(main_gt: dict) -> None:
    fps = main_gt["fps"]
    tracks: dict[int, list[tuple[int, float, float, float]]] = {}
    for frame in main_gt["frames"]:
        for v in frame["vehicles"]:
            tracks.setdefault(v["vehicle_id"], []).append(
                (frame["frame_index"], v["world_x"], v["world_y"], v["speed_kmh"])
            )
    for rows in tracks.values():
        a = np.asarray(rows)
        assert np.all(np.diff(a[:, 0]) == 1)  # a vehicle stays in the picture once it is there
        assert np.all(np.diff(a[:, 2]) < 0)  # towards the camera
        step = np.hypot(np.diff(a[:, 1]), np.diff(a[:, 2])) * fps * 3.6  # km/h between frames
        mid = (a[1:, 3] + a[:-1, 3]) / 2
        assert np.allclose(step, mid, atol=0.3)


def test_video_decodes_with_every_frame_at_constant_pts(main_clip: SyntheticClip, main_gt: dict) -> None:
    times = []
    with av.open(str(main_clip.video_path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == Fraction(25)
        for frame in container.decode(stream):
            assert (frame.width, frame.height) == (MAIN.width, MAIN.height)
            times.append(float(frame.pts * frame.time_base))
    assert len(times) == main_gt["n_frames"] == 100
    assert times[0] == 0.0
    assert np.allclose(np.diff(times), 1 / 25, atol=1e-6)
    assert [f["pts_s"] for f in main_gt["frames"]] == pytest.approx(times, abs=1e-6)


def test_camera_yaml_is_a_loadable_deployment_calibrated_by_the_homography(
    main_clip: SyntheticClip, main_gt: dict
) -> None:
    settings = load_settings(main_clip.config_path, environ={})
    (cam,) = settings.cameras
    assert cam.id == main_gt["camera_id"] == "synthetic"
    assert cam.source_path() == main_clip.video_path
    assert any(main_clip.video_path.is_relative_to(root) for root in settings.allowed_roots)
    calib = cam.calibration
    assert calib is not None and len(calib.image_points) >= 6
    H = np.asarray(main_gt["homography_world_to_image"])
    assert np.allclose(_project(H, np.asarray(calib.world_points)), calib.image_points, atol=0.01)
    roi = np.asarray(cam.roi)
    assert roi[:, 0].min() >= 0 and roi[:, 0].max() <= MAIN.width and roi[:, 1].max() <= MAIN.height
    assert cam.speed_limit_kmh == MAIN.speed_limit_kmh


def test_real_detector_finds_the_visible_vehicles(main_clip: SyntheticClip, main_gt: dict, data_dir: Path) -> None:
    """Fully visible vehicles at least 40 px tall in a 720p frame (20 px at the 384x640 network input)."""
    min_h = 40 * MAIN.height / 720

    def countable(v: dict) -> bool:
        return v["box"] is not None and v["visibility"] >= 0.99 and v["box"][3] - v["box"][1] >= min_h

    # The eight frames showing the most such vehicles.
    frames = sorted(main_gt["frames"], key=lambda f: -sum(countable(v) for v in f["vehicles"]))[:8]
    wanted = {f["frame_index"]: f for f in frames}
    detector = YoloOnnxDetector(data_dir / "models" / "yolov8n.onnx")  # pipeline defaults: 384x640, conf 0.25
    hits, total, classes = 0, 0, []
    with av.open(str(main_clip.video_path)) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index not in wanted:
                continue
            dets = detector(frame.to_ndarray(format="bgr24"))
            for v in filter(countable, wanted[index]["vehicles"]):
                total += 1
                if len(dets) == 0:
                    continue
                box = np.asarray(v["box"])
                lt = np.maximum(dets.xyxy[:, :2], box[:2])
                rb = np.minimum(dets.xyxy[:, 2:], box[2:])
                inter = (rb - lt).clip(0).prod(axis=1)
                union = (dets.xyxy[:, 2:] - dets.xyxy[:, :2]).prod(axis=1) + (box[2:] - box[:2]).prod() - inter
                best = int(np.argmax(inter / union))
                if inter[best] / union[best] >= 0.5:
                    hits += 1
                    classes.append(dets.class_names[best])
    assert total >= 15, "the scene should show enough vehicles to measure recall"
    assert hits / total >= 0.9, f"recall {hits}/{total}"
    assert set(classes) <= {"car", "truck", "bus", "motorcycle"}


def test_motion_model_is_exact() -> None:
    plan = VehiclePlan(
        1,
        "car",
        0,
        Body(4.5, 1.8, 1.5),
        lane=0,
        entry_s=0.0,
        speed0_mps=20.0,
        accel_mps2=2.0,
        speed_min_mps=10.0,
        speed_max_mps=30.0,
        lane_change=LaneChange(1.0, 2.0, 1),
    )
    dist, speed = longitudinal(plan, np.array([0.0, 2.0, 5.0, 7.0]))
    assert speed.tolist() == [20.0, 24.0, 30.0, 30.0]  # reaches its bound after 5 s
    assert dist.tolist() == pytest.approx([0.0, 44.0, 125.0, 185.0])
    x, vx = lateral(plan, np.array([0.0, 1.0, 2.0, 3.0, 4.0]), 3.5)
    assert x.tolist() == pytest.approx([1.75, 1.75, 3.5, 5.25, 5.25])
    assert vx[2] == pytest.approx(3.5 * np.pi / 4) and vx[0] == vx[-1] == 0


def test_invalid_scene_parameters_are_rejected() -> None:
    with pytest.raises(ValueError, match="min_kmh"):
        SceneParams(min_kmh=120, max_kmh=80)
    with pytest.raises(ValueError, match="even width"):
        SceneParams(width=641)
    with pytest.raises(ValueError, match="queue_vehicles need a stopped vehicle"):
        SceneParams(queue_vehicles=2)
    with pytest.raises(ValueError, match="stopped_vehicles in"):
        SceneParams(stopped_vehicles=2)
    with pytest.raises(ValueError, match="stop_lane"):
        SceneParams(stopped_vehicles=1, stop_lane=3)
    with pytest.raises(ValueError, match="line_ys_m"):
        SceneParams(line_ys_m=(16.0, 200.0))


def test_stopping_motion_is_exact() -> None:
    # 20 m/s, brakes at 4 m/s² from 1 s (stands at 6 s, 60 m on), moves off at 8 s with 2 m/s² up to 10 m/s.
    phases = ((0.0, 0.0), (1.0, -4.0), (6.0, 0.0), (8.0, 2.0), (13.0, 0.0))
    plan = VehiclePlan(1, "car", 0, Body(4.5, 1.8, 1.5), 0, 0.0, 20.0, 0.0, 0.0, 20.0, None, phases=phases)
    dist, speed = longitudinal(plan, np.array([0.0, 1.0, 3.5, 6.0, 7.0, 8.0, 10.0, 13.0, 14.0]))
    assert speed.tolist() == pytest.approx([20, 20, 10, 0, 0, 0, 4, 10, 10])
    assert dist.tolist() == pytest.approx([0, 20, 57.5, 70, 70, 70, 74, 95, 105])
    with pytest.raises(ValueError, match="backwards"):
        longitudinal(replace(plan, phases=((0.0, 0.0), (1.0, -4.0), (7.0, 0.0))), np.array([0.0]))


def test_scenes_without_events_draw_what_they_always_drew() -> None:
    sprites = [
        Sprite(np.zeros((30, 40, 3), np.uint8), class_id, "fake", i, 0.9)
        for i, class_id in enumerate((2, 2, 2, 2, 7, 5))
    ]
    camera = PinholeCamera.looking_down_road(MAIN)
    plans = plan_vehicles(MAIN, np.random.default_rng(3), sprites, camera)
    assert plans == plan_vehicles(MAIN, np.random.default_rng(3), sprites, camera, events_rng=np.random.default_rng(9))
    assert {p.behaviour for p in plans} == {"normal"} and all(p.direction == -1 and not p.phases for p in plans)
    staged = plan_vehicles(EVENTS, np.random.default_rng(3), sprites, camera, events_rng=np.random.default_rng(9))
    assert [p.behaviour for p in staged] == ["normal"] * 3 + ["stopped", "queued", "queued", "wrong_way"]
    assert [p.vehicle_id for p in staged] == [1, 2, 3, 4, 5, 6, 7]


def test_a_scene_without_events_has_no_counting_geometry(main_clip: SyntheticClip, main_gt: dict) -> None:
    assert not {"geometry", "crossings", "crossing_sets", "events"} & set(main_gt)
    assert {v["behaviour"] for v in main_gt["vehicles"]} == {"normal"}
    (cam,) = load_settings(main_clip.config_path, environ={}).cameras
    assert cam.lines == [] and cam.lanes == [] and cam.zones == []


@pytest.fixture(scope="module")
def events_clip(clip_factory) -> SyntheticClip:
    return clip_factory(EVENTS, 5)


@pytest.fixture(scope="module")
def events_gt(events_clip: SyntheticClip) -> dict:
    return json.loads(events_clip.ground_truth_path.read_text())


def _tracks(gt: dict) -> dict[int, np.ndarray]:
    """Per vehicle: rows (frame, world_x, world_y, speed_kmh)."""
    rows: dict[int, list[tuple[float, float, float, float]]] = {}
    for frame in gt["frames"]:
        for v in frame["vehicles"]:
            rows.setdefault(v["vehicle_id"], []).append(
                (frame["frame_index"], v["world_x"], v["world_y"], v["speed_kmh"])
            )
    return {vid: np.asarray(r) for vid, r in rows.items()}


def test_staged_vehicles_stop_queue_and_drive_the_wrong_way(events_gt: dict) -> None:
    fps, tracks = events_gt["fps"], _tracks(events_gt)
    by = {v["vehicle_id"]: v for v in events_gt["vehicles"]}
    (head,) = [v for v in by.values() if v["behaviour"] == "stopped"]
    queued = sorted((v for v in by.values() if v["behaviour"] == "queued"), key=lambda v: v["stop_s"])
    (ghost,) = [v for v in by.values() if v["behaviour"] == "wrong_way"]
    assert len(queued) == EVENTS.queue_vehicles and head["lane"] == EVENTS.stop_lane
    assert (head["stop_s"], head["move_off_s"]) == (2.0, 6.5)
    # Standing exactly where and while the script says, then moving off towards the camera.
    a = tracks[head["vehicle_id"]]
    standing = (a[:, 0] >= 2.0 * fps) & (a[:, 0] <= 6.5 * fps)
    assert np.all(a[standing, 3] == 0) and np.allclose(a[standing, 2], EVENTS.stop_at_m)
    assert np.all(a[~standing, 3] > 0) and np.all(np.diff(a[:, 2]) <= 0)
    # Each queued car stands 2-3 m behind the one ahead, never closer on the way, and moves off after it.
    ahead = head
    for car in queued:
        b, f = tracks[ahead["vehicle_id"]], tracks[car["vehicle_id"]]
        assert car["lane"] == head["lane"] and ahead["stop_s"] < car["stop_s"] < ahead["move_off_s"]
        assert car["move_off_s"] - ahead["move_off_s"] >= 1.0
        common, ib, jf = np.intersect1d(b[:, 0], f[:, 0], return_indices=True)
        gap = f[jf, 2] - (b[ib, 2] + ahead["length_m"])
        assert gap.min() >= QUEUE_MIN_GAP_M
        both_stand = (common >= car["stop_s"] * fps) & (common <= ahead["move_off_s"] * fps)
        assert both_stand.any() and np.all(gap[both_stand] >= STANDSTILL_GAP_M[0] - 1e-6)
        assert np.all(gap[both_stand] <= STANDSTILL_GAP_M[1] + 1e-6)
        ahead = car
    # The wrong-way vehicle drives away from the camera at a constant speed, against lanes heading 180.
    g = tracks[ghost["vehicle_id"]]
    assert ghost["heading_deg"] == 0.0 and ghost["lane"] != EVENTS.stop_lane
    assert np.all(np.diff(g[:, 2]) > 0) and np.allclose(g[:, 3], ghost["initial_speed_kmh"], atol=1e-3)
    assert {v["behaviour"] for v in by.values()} == {"normal", "stopped", "queued", "wrong_way"}


def test_ground_truth_lists_the_events_and_crossings(events_gt: dict) -> None:
    by = {v["behaviour"]: v for v in events_gt["vehicles"]}
    queue_ids = sorted(v["vehicle_id"] for v in events_gt["vehicles"] if v["behaviour"] in ("stopped", "queued"))
    kinds = {e["type"]: e for e in events_gt["events"]}
    assert list(kinds) == ["wrong_way", "stopped_vehicle", "queue"] and len(events_gt["events"]) == 3
    assert all(e["observable"] for e in events_gt["events"])
    stop = kinds["stopped_vehicle"]
    assert stop["vehicle_ids"] == [by["stopped"]["vehicle_id"]] and (stop["start_s"], stop["end_s"]) == (2.0, 6.5)
    assert stop["lane_id"] == f"lane_{EVENTS.stop_lane}" and stop["y_m"] == pytest.approx(EVENTS.stop_at_m)
    queue = kinds["queue"]
    assert queue["vehicle_ids"] == queue_ids and queue["max_vehicles"] == 3 and queue["zone_id"] == "queue_zone"
    assert 2.0 < queue["start_s"] < queue["end_s"] < 10.0
    ww = kinds["wrong_way"]
    assert ww["vehicle_ids"] == [by["wrong_way"]["vehicle_id"]] and ww["distance_m"] >= 15.0
    # Crossings: exactly the vehicles whose true contact point passes each line, the right way round; demanded
    # (crossing_sets) where the clip shows them get a hysteresis beyond it (near the lines every vehicle is large).
    tracks = _tracks(events_gt)
    for line in events_gt["geometry"]["lines"]:
        y_line = line["points"][0][1]
        towards = {v for v, a in tracks.items() if a[0, 2] > y_line > a[-1, 2]}
        away = {v for v, a in tracks.items() if a[0, 2] < y_line < a[-1, 2]}
        mine = [c for c in events_gt["crossings"] if c["line_id"] == line["id"]]
        assert {c["vehicle_id"] for c in mine if c["direction"] == "towards_camera"} == towards
        assert {c["vehicle_id"] for c in mine if c["direction"] == "away_from_camera"} == away
        sets = events_gt["crossing_sets"][line["id"]]
        for direction in ("towards_camera", "away_from_camera"):
            demanded = sorted(c["vehicle_id"] for c in mine if c["direction"] == direction and c["countable"])
            assert sets[direction] == demanded
        assert by["wrong_way"]["vehicle_id"] in sets["away_from_camera"]
    assert all(c["countable"] == c["confirmable"] and c["height_px"] >= 40 for c in events_gt["crossings"])
    assert sum(c["countable"] for c in events_gt["crossings"]) >= 6


def test_events_camera_config_has_lines_lanes_and_a_queue_zone(events_clip: SyntheticClip) -> None:
    (cam,) = load_settings(events_clip.config_path, environ={}).cameras
    assert [(line.id, line.space, line.points[0][1]) for line in cam.lines] == [
        ("line_0", "road", 16.0),
        ("line_1", "road", 22.0),
    ]
    assert [(lane.id, lane.direction_deg) for lane in cam.lanes] == [(f"lane_{k}", 180.0) for k in range(3)]
    (zone,) = cam.zones
    assert zone.purpose == "queue" and zone.lane == "lane_0"
    ys = [p[1] for p in zone.polygon]
    assert min(ys) < EVENTS.stop_at_m < max(ys)
    assert cam.events.stopped_min_s == 3.0 and cam.events.queue_hold_s == 2.0


def _ideal(clip: SyntheticClip) -> dict:
    gt = json.loads(clip.ground_truth_path.read_text())
    (cam,) = load_settings(clip.config_path, environ={}).cameras
    crossings, events = ideal_pipeline(gt, cam)
    return evaluate_events(gt, crossings, events, tracks=ideal_tracks(gt))


def test_detectors_fed_the_truth_report_exactly_the_true_crossings_and_events(clip_factory) -> None:
    result = _ideal(clip_factory(STAYS, 5))
    c = result["crossings"]
    assert c["exact"] and c["true"] == c["measured"] > 0 and c["max_abs_time_error_s"] < 1e-3
    for kind in ("wrong_way", "stopped_vehicle", "queue"):
        assert (result["events"][kind]["precision"], result["events"][kind]["recall"]) == (1.0, 1.0), kind


def test_detectors_fed_the_truth_when_the_queue_moves_off(events_clip: SyntheticClip) -> None:
    result = _ideal(events_clip)
    assert result["crossings"]["exact"]
    ev = result["events"]
    assert (ev["wrong_way"]["precision"], ev["wrong_way"]["recall"]) == (1.0, 1.0)
    assert (ev["queue"]["precision"], ev["queue"]["recall"]) == (1.0, 1.0)
    assert ev["stopped_vehicle"]["recall"] == 1.0


def test_queued_cars_are_not_stopped_vehicles_when_the_queue_moves_off(events_clip: SyntheticClip) -> None:
    assert _ideal(events_clip)["events"]["stopped_vehicle"]["precision"] == 1.0


def test_cli_prints_the_three_paths(data_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "cli"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "trafficstream.bench.synthetic",
            "--out",
            str(out),
            "--seed",
            "3",
            "--vehicles",
            "2",
            "--duration",
            "0.4",
            "--width",
            "320",
            "--height",
            "180",
            "--data-dir",
            str(data_dir),
            "--no-progress",
        ],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    paths = json.loads(done.stdout.strip().splitlines()[-1])
    assert paths == {
        "video": str(out / "clip.mp4"),
        "ground_truth": str(out / "ground_truth.json"),
        "config": str(out / "camera.yaml"),
    }
    assert json.loads((out / "ground_truth.json").read_text())["n_frames"] == 10
