"""The synthetic known-speed clip generator: determinism, geometry, the video container, the deployment
config, and that the real detector sees the vehicles it draws."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from trafficstream.bench.synthetic import SceneParams, SyntheticClip, generate
from trafficstream.bench.synthetic.traffic import Body, LaneChange, VehiclePlan, lateral, longitudinal
from trafficstream.config import PROJECT_ROOT, load_settings
from trafficstream.models.detector import YoloOnnxDetector

# Small scenes keep the module fast; the main clip keeps the default camera and image size, so its vehicles
# are exactly as large as in a full-size benchmark clip.
TINY = SceneParams(n_vehicles=5, duration_s=1.0, width=640, height=360)
MAIN = SceneParams(n_vehicles=10, duration_s=4.0, fps=25.0, lane_change_share=0.5, accelerating_share=0.5)


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
