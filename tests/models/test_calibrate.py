"""The calibration checker CLI on the real configs and clips."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml

from trafficstream.config import PROJECT_ROOT, load_settings
from trafficstream.models.calibrate import main, parse_points

DEMO = PROJECT_ROOT / "infra" / "config" / "demo.yaml"
SAMPLES = PROJECT_ROOT / "infra" / "config" / "samples.yaml"
SQUARE = "100,400:0,0;300,400:4,0;260,200:4,20;140,200:0,20"


def test_demo_camera_writes_a_png(tmp_path: Path, capsys) -> None:
    out = tmp_path / "overpass.png"
    assert main(["--config", str(DEMO), "--camera", "motorway-overpass", "--png", str(out)]) == 0
    image = cv2.imread(str(out))
    assert image is not None and image.shape == (720, 1280, 3)
    text = capsys.readouterr().out
    assert "reprojection error: rms" in text and "m/px" in text and str(out) in text


def test_drifting_camera_is_registered_before_drawing(tmp_path: Path, capsys) -> None:
    out = tmp_path / "late.png"
    assert main(["--config", str(DEMO), "--camera", "motorway-overpass", "--frame", "300", "--png", str(out)]) == 0
    assert "registered onto reference frame 0" in capsys.readouterr().out
    assert out.is_file()


@pytest.mark.parametrize("camera", ["motorway-overpass", "dual-carriageway", "urban-cctv"])
def test_sample_calibrations_are_tight(camera: str) -> None:
    from trafficstream.models.homography import RoadPlane

    cam = load_settings(SAMPLES).camera(camera)
    assert cam.calibration is not None and cam.roi is not None
    plane = RoadPlane.from_calibration(cam.calibration)
    assert plane.error.rms_px < 4.0 and plane.error.rms_m < 0.6
    # Every ROI corner lies on the road side of the horizon, so every detection in it has a road position.
    assert np.isfinite(plane.to_world(np.asarray(cam.roi))).all()


def test_ad_hoc_points_without_a_config(capsys) -> None:
    assert main(["--points", SQUARE]) == 0
    assert "4 point pairs" in capsys.readouterr().out
    image, world = parse_points(SQUARE)
    assert image.shape == world.shape == (4, 2)


@pytest.mark.parametrize(
    ("points", "message"),
    [
        ("1,2:3", "pair 1"),
        ("1,2:3,4;5,6:7,8;9,10:11,12", "at least 4 pairs"),
        ("0,0:0,0;1,1:1,1;2,2:2,2;3,3:3,3", "collinear"),
        ("100,400:0,0;300,400:4,0;260,200:4,x;140,200:0,20", "pair 3"),
    ],
)
def test_bad_points_give_a_clear_error(points: str, message: str, capsys) -> None:
    assert main(["--points", points]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --points") and message in err


def test_config_errors_name_the_field(tmp_path: Path, capsys) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("cameras:\n  - id: cam-a\n    source: x.mp4\n    speed_limit_kmh: 50\n")
    assert main(["--config", str(config), "--camera", "cam-a"]) == 2
    assert "cameras[0].calibration (cam-a): missing" in capsys.readouterr().err
    assert main(["--config", str(config), "--camera", "nope"]) == 2
    assert "unknown camera 'nope'" in capsys.readouterr().err
    assert main(["--points", SQUARE, "--png", str(tmp_path / "x.png")]) == 2
    assert "--png needs a frame" in capsys.readouterr().err


def test_uncertainty_grows_with_distance_and_warns_where_enforcement_fails(capsys) -> None:
    from trafficstream.models.calibrate import uncertainty_by_distance, uncertainty_lines
    from trafficstream.models.homography import RoadPlane

    # a camera looking down a road: 0-60 m along it from the bottom of a 1280 x 720 frame to near the top
    plane = RoadPlane.from_points([(440, 700), (840, 700), (600, 200), (680, 200)], [(0, 0), (7, 0), (0, 60), (7, 60)])
    rows = uncertainty_by_distance(plane, section_m=20, kmh=100)
    assert [r.y_m for r in rows][:3] == [0.0, 5.0, 10.0] and rows[-1].y_m <= 50
    assert all(b.metres_per_px > a.metres_per_px for a, b in zip(rows, rows[1:], strict=False))
    assert all(b.uncertainty_kmh > a.uncertainty_kmh for a, b in zip(rows, rows[1:], strict=False))
    limit = (rows[0].uncertainty_kmh + rows[-1].uncertainty_kmh) / 2
    text = uncertainty_lines(plane, [("s", (3.5, 0.0), (3.5, 40.0))], 20, 100, limit)
    assert any("cannot support enforcement" in line for line in text)
    assert any(line.startswith("warning: beyond Y =") for line in text)
    assert any(line.startswith("section s: 40.0 m, +-") for line in text)
    # windowed speeds: jitter grows with distance, and fewer frames in the window make it worse
    assert all(b.windowed_noise_kmh > a.windowed_noise_kmh for a, b in zip(rows, rows[1:], strict=False))
    at_10fps = uncertainty_by_distance(plane, section_m=20, kmh=100, fps=10.0)
    assert all(b.windowed_noise_kmh > 1.5 * a.windowed_noise_kmh for a, b in zip(rows, at_10fps, strict=True))
    noise_limit = (rows[0].windowed_noise_kmh + rows[-1].windowed_noise_kmh) / 2
    text = uncertainty_lines(plane, [], 20, 100, limit, max_noise_kmh=noise_limit)
    assert any(line.startswith("note: beyond Y =") and "low_resolution" not in line for line in text)
    assert any("<- windowed speeds flagged low_resolution" in line for line in text)
    unlimited = uncertainty_lines(plane, [], 20, 100, limit, max_noise_kmh=None)
    assert not any(line.startswith("note:") for line in unlimited)
    # the demo camera's section is printed by the CLI
    assert main(["--config", str(PROJECT_ROOT / "infra/config/demo.yaml"), "--camera", "motorway-overpass"]) == 0
    out = capsys.readouterr().out
    assert "section stretch: 24.0 m, +-" in out
    assert "0.8 s window at 29.79 fps" in out  # the clip's own frame rate, the tracker's window


# -- lens distortion --------------------------------------------------------------------------------------------
def _wide_angle_pairs(road_camera) -> tuple[np.ndarray, np.ndarray]:
    xs, ys = np.meshgrid([-10.0, -5.0, 0.0, 5.0, 10.0], [10.0, 16.0, 25.0, 40.0, 60.0])
    world = road_camera.visible(np.stack([xs.ravel(), ys.ravel()], axis=1))
    return road_camera.raw(world), world


def _points_arg(image: np.ndarray, world: np.ndarray) -> str:
    return ";".join(f"{x:.4f},{y:.4f}:{X:g},{Y:g}" for (x, y), (X, Y) in zip(image, world, strict=True))


def _true_to_world(road_camera, raw: np.ndarray) -> np.ndarray:
    """The camera's exact raw pixel -> road map: undistort, then the inverse of K [r1 r2 t]."""
    from trafficstream.models.homography import project
    from trafficstream.models.lens import undistort_pixels

    G = road_camera.K @ np.column_stack([road_camera.R[:, 0], road_camera.R[:, 1], road_camera.t])
    return project(np.linalg.inv(G), undistort_pixels(raw, road_camera.lens))


def test_a_lens_is_honoured_and_reported_on_undistorted_points(road_camera, capsys) -> None:
    image, world = _wide_angle_pairs(road_camera)
    points = _points_arg(image, world)
    assert main(["--points", points]) == 0
    plain = capsys.readouterr().out
    assert main(["--points", points, "--lens", "700,640,360,-0.15"]) == 0
    out = capsys.readouterr().out
    assert "lens: focal 700 px, center [640, 360], k1 -0.15" in out
    assert "(errors below: on the undistorted points)" in out
    assert "reprojection error: rms 0.000 m (max 0.000 m), rms 0.00 px" in out
    rms_plain = float(plain.split("reprojection error: rms ")[1].split(" m")[0])
    assert rms_plain > 0.1  # ignoring the lens: decimetres off on the calibration points themselves
    assert main(["--points", points, "--lens", "700,640"]) == 2
    assert "--lens: '700,640': expected 3 or 4 or 5 or 6 or 7 or 8 finite numbers" in capsys.readouterr().err


def test_uncertainty_table_with_a_lens_is_in_the_videos_pixels(road_camera) -> None:
    from trafficstream.models.calibrate import uncertainty_by_distance
    from trafficstream.models.homography import RoadPlane

    image, world = _wide_angle_pairs(road_camera)
    with_lens = RoadPlane.from_points(image, world, road_camera.lens)
    without = RoadPlane.from_points(image, world)

    def true_mpp(y: float) -> float:  # metres per raw pixel at (x, y), the larger of image x and y
        px = road_camera.raw(np.array([[float(world[:, 0].mean()), y]]))
        base = _true_to_world(road_camera, px)
        steps = [_true_to_world(road_camera, px + d) - base for d in ([1.0, 0.0], [0.0, 1.0])]
        return max(float(np.linalg.norm(s)) for s in steps)

    rows = uncertainty_by_distance(with_lens, section_m=20, kmh=100)
    assert len(rows) >= 8
    for r in rows:
        assert r.metres_per_px == pytest.approx(true_mpp(r.y_m), rel=1e-3)
    off = [abs(r.metres_per_px / true_mpp(r.y_m) - 1) for r in uncertainty_by_distance(without, 20, 100)]
    assert max(off) > 0.03  # without the lens the far end's scale is several per cent wrong
    assert all(b.uncertainty_kmh > a.uncertainty_kmh for a, b in zip(rows, rows[1:], strict=False))


def test_fit_k1_recovers_the_lens(road_camera, capsys) -> None:
    from trafficstream.models.calibrate import fit_k1

    image, world = _wide_angle_pairs(road_camera)
    fit = fit_k1(image, world, 700.0, (640.0, 360.0))
    assert fit.lens.k1 == pytest.approx(-0.15, abs=1e-3)
    assert fit.rms_px_with < 0.01 < 1.0 < fit.rms_px_without
    # with click noise it still lands near, and says what to paste
    rng = np.random.default_rng(3)
    noisy = _points_arg(image + rng.normal(0, 0.5, image.shape), world)
    assert main(["--points", noisy, "--fit-k1", "--focal-px", "700", "--center-px", "640,360"]) == 0
    out = capsys.readouterr().out
    line = next(x for x in out.splitlines() if x.strip().startswith("lens: {focal_px: 700, center_px: [640, 360]"))
    assert float(line.split("k1: ")[1].rstrip("}")) == pytest.approx(-0.15, abs=0.01)
    assert "suggested calibration block:" in out and "px without a lens model ->" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--points", SQUARE, "--fit-k1", "--focal-px", "700", "--center-px", "640,360"], "at least 5 point pairs"),
        (["--fit-k1", "--center-px", "640,360"], "--fit-k1 needs the focal length: give --focal-px"),
        (["--fit-k1", "--focal-px", "700"], "--fit-k1 needs the principal point: give --center-px"),
        (["--fit-k1", "--focal-px", "700", "--center-px", "640"], "--center-px: '640': expected 2 finite numbers"),
    ],
)
def test_fit_k1_mistakes_are_named(road_camera, args: list[str], message: str, capsys) -> None:
    image, world = _wide_angle_pairs(road_camera)
    argv = args if "--points" in args else ["--points", _points_arg(image, world), *args]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_a_configured_lens_is_used_and_drawn(road_camera, tmp_path: Path, capsys) -> None:
    from trafficstream.models.calibrate import draw_calibration
    from trafficstream.models.homography import RoadPlane

    image, world = _wide_angle_pairs(road_camera)
    config = tmp_path / "c.yaml"
    config.write_text(
        "cameras:\n  - id: wide\n    source: x.mp4\n    speed_limit_kmh: 80\n    calibration:\n"
        f"      image_points: {np.round(image, 4).tolist()}\n      world_points: {world.tolist()}\n"
        "      lens: {focal_px: 700, center_px: [640, 360], k1: -0.15}\n"
    )
    assert main(["--config", str(config), "--camera", "wide", "--fit-k1"]) == 0
    out = capsys.readouterr().out
    assert "lens: focal 700 px" in out and "rms 0.00 px" in out
    assert "k1 fitted over 25 pairs (focal 700 px, principal point [640, 360])" in out  # the lens's own
    plane = RoadPlane.from_points(image, world, road_camera.lens)
    drawn = draw_calibration(np.zeros((720, 1280, 3), np.uint8), plane)
    assert drawn.shape == (720, 1280, 3) and drawn.any()


# The overpass camera's own clicks, used the way a user with fewer known points would: two pairs, both lane lines
# traced through the other dash ends (their distance along the road unused), and the two rows of dash ends at
# Y = 0 and 24 m as transverse lines.
FEW_PAIRS = "962.1,711.0:10.5,-9;577.2,176.6:3.5,24"
MARKINGS = (
    "x=10.5:851.8,403.8,832.3,350.1,789.8,246.4,781.7,223.2,757.5,172.8,753.5,160.3;"
    "x=3.5:468.0,418.6,492.1,363.1,542.9,256.1,553.1,232.1,582.6,163.8;"
    "y=0:851.8,403.8,468.0,418.6;y=24:757.5,172.8,577.2,176.6"
)


def test_two_pairs_and_markings_calibrate_the_real_camera_like_thirteen_pairs(capsys) -> None:
    from trafficstream.models.calibrate import parse_markings
    from trafficstream.models.homography import RoadPlane

    argv = ["--config", str(DEMO), "--camera", "motorway-overpass", "--points", FEW_PAIRS, "--markings", MARKINGS]
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "2 point pairs, 4 markings" in text and "x = 10.50" in text and "px traced, rms" in text
    cal = load_settings(DEMO).camera("motorway-overpass").calibration
    assert cal is not None
    full = RoadPlane.from_calibration(cal)
    image, world = parse_points(FEW_PAIRS, min_pairs=0)
    few = RoadPlane.from_points(image, world, cal.lens_model(), parse_markings(MARKINGS))
    probes = np.array([[660.0, 200.0], [665.0, 390.0], [657.0, 700.0], [800.0, 300.0]])
    np.testing.assert_allclose(few.metres_per_pixel(probes), full.metres_per_pixel(probes), rtol=0.03)
    span = np.linalg.norm(np.diff(few.to_world(probes[:2]), axis=0))
    assert span == pytest.approx(float(np.linalg.norm(np.diff(full.to_world(probes[:2]), axis=0))), rel=0.01)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--points", "962.1,711.0:10.5,-9", "--markings", "x=10.5:851.8,403.8,753.5,160.3"], "needs 8"),
        (["--points", FEW_PAIRS, "--markings", "z=1:1,2,3,4"], "marking 1"),
        (["--points", FEW_PAIRS, "--markings", "x=1:1,2,3"], "marking 1"),
        (["--points", FEW_PAIRS, "--markings", MARKINGS.split(";y=0")[0]], "undetermined"),
    ],
)
def test_bad_markings_name_the_option(argv, message, capsys) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--markings" in err and message in err, err


def test_vanishing_calibrates_from_lane_lines_and_lines_across(capsys) -> None:
    # the same road as the vanishing-point tests: a camera 8 m up, looking 15 deg down and 15 deg across the road
    from pinhole_road import CENTRE, camera, to_pixels

    P = camera(1000.0, 8.0, 15.0, 15.0, 0.0)

    def marking(axis: str, value: float, span: tuple[float, float]) -> str:
        s = np.linspace(*span, 6)
        xy = np.column_stack([np.full_like(s, value), s] if axis == "x" else [s, np.full_like(s, value)])
        return f"{axis}={value}:" + ",".join(f"{v:.2f}" for v in to_pixels(P, xy).ravel())

    m = ";".join(
        [marking("x", 0.0, (20, 80)), marking("x", 3.5, (20, 80)), marking("y", 25, (-1, 6)), marking("y", 50, (-1, 6))]
    )
    assert main(["--markings", m, "--vanishing", "--center-px", f"{CENTRE[0]},{CENTRE[1]}"]) == 0
    out = capsys.readouterr().out
    assert "focal 1000 px (from the vanishing points" in out
    assert "height 8.00 m above the road" in out
    world = out.split("world_points: ")[1].splitlines()[0]
    pairs = np.array(yaml.safe_load(world))
    assert len(pairs) == 8 and np.isin(np.round(pairs[:, 0], 2), [0.0, 3.5, -1.0, 6.0]).all()
    # without lines across and without a focal length, it says what is missing
    lanes_only = ";".join(m.split(";")[:2])
    assert main(["--markings", lanes_only, "--vanishing", "--center-px", "640,360"]) == 2
    assert "needs the focal length" in capsys.readouterr().err
