"""The calibration checker CLI on the real configs and clips."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

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
    # the demo camera's section is printed by the CLI
    assert main(["--config", str(PROJECT_ROOT / "infra/config/demo.yaml"), "--camera", "motorway-overpass"]) == 0
    assert "section stretch: 24.0 m, +-" in capsys.readouterr().out
