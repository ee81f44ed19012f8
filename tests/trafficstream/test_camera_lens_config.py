"""A camera's ``calibration.lens``: loads, ships to Spark, reaches the road plane; every mistake names its field
(``cameras[0].calibration.lens.focal_px``); a model that folds back over the calibration points or the ROI
fails at load; the homography checks run on the undistorted points."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from camera_config_helpers import config_error as _error
from camera_config_helpers import load_config as _load

from trafficstream.cameras import Camera, frame_problems, homography_problem
from trafficstream.config import settings_from_json, settings_to_json
from trafficstream.models.lens import LensModel

# The 640 x 360 highway clip, calibrated in perspective (far end y = 50 m at row 200), with a wide-angle lens.
CAM = """
cameras:
  - id: cam-1
    source: "{data_dir}/videos/highway_640x360.mp4"
    speed_limit_kmh: 100
    calibration:
      image_points: [[280, 200], [360, 200], [600, 340], [40, 340]]
      world_points: [[0, 50], [3.5, 50], [3.5, 0], [0, 0]]
      lens: {focal_px: 400, center_px: [320, 180], k1: -0.1, k2: 0.01}
"""
LENS = "lens: {focal_px: 400, center_px: [320, 180], k1: -0.1, k2: 0.01}"


def test_a_lens_loads_ships_to_spark_and_reaches_the_road_plane(tmp_path: Path) -> None:
    from trafficstream.models.homography import RoadPlane

    settings = _load(tmp_path, CAM)
    cal = settings.cameras[0].calibration
    assert cal is not None and cal.lens is not None
    assert cal.lens.k1 == -0.1 and cal.lens.p1 == cal.lens.p2 == cal.lens.k3 == 0.0  # defaults
    assert cal.lens_model() == LensModel(400.0, 320.0, 180.0, -0.1, 0.01)
    shipped = settings_from_json(settings_to_json(settings)).cameras[0]
    assert shipped == settings.cameras[0] and shipped.calibration is not None
    plane = RoadPlane.from_calibration(shipped.calibration)
    assert plane.lens == cal.lens_model()
    np.testing.assert_allclose(plane.to_world(np.asarray(cal.image_points)), cal.world_points, atol=1e-6)


def test_without_a_lens_nothing_changes(tmp_path: Path) -> None:
    from trafficstream.models.homography import RoadPlane, fit_homography

    cal = _load(tmp_path, CAM.replace("      " + LENS + "\n", "")).cameras[0].calibration
    assert cal is not None and cal.lens is None and cal.lens_model() is None
    plane = RoadPlane.from_calibration(cal)
    assert plane.lens is None
    np.testing.assert_array_equal(plane.H, fit_homography(cal.image_points, cal.world_points))


@pytest.mark.parametrize(
    "lens, needle",
    [
        ("{focal_px: 0, center_px: [320, 180]}", "cameras[0].calibration.lens.focal_px: Input should be greater"),
        ("{center_px: [320, 180], k1: -0.1}", "cameras[0].calibration.lens.focal_px: Field required"),
        ("{focal_px: 400, k1: -0.1}", "cameras[0].calibration.lens.center_px: Field required"),
        ("{focal_px: .nan, center_px: [320, 180]}", "cameras[0].calibration.lens.focal_px: Input should be a finite"),
        ("{focal_px: 400, center_px: [320, 180], k1: 9}", "cameras[0].calibration.lens.k1: Input should be less"),
        ("{focal_px: 400, center_px: [320, 180], k3: -6}", "cameras[0].calibration.lens.k3: Input should be greater"),
        ("{focal_px: 400, center_px: [320, 180], p2: 0.8}", "cameras[0].calibration.lens.p2: Input should be less"),
        ("{focal_px: 400, center_px: [320, 180], k4: 0.1}", "cameras[0].calibration.lens.k4: Extra inputs"),
        (
            "{focal_px: 400, center_px: [-5, 180]}",
            "cameras[0].calibration.lens.center_px: [-5, 180]: pixel coordinates must be >= 0",
        ),
        ("{focal_px: 400, center_px: [320]}", "cameras[0].calibration.lens.center_px"),
    ],
)
def test_lens_mistakes_name_the_field(tmp_path: Path, lens: str, needle: str) -> None:
    assert needle in _error(tmp_path, CAM.replace(LENS, f"lens: {lens}"))


def test_a_lens_that_folds_over_the_calibration_points_fails_at_load(tmp_path: Path) -> None:
    # k1 = -3 at 400 px: r_d peaks 89 px from the centre; the near calibration points lie farther out
    err = _error(tmp_path, CAM.replace(LENS, "lens: {focal_px: 400, center_px: [320, 180], k1: -3}"))
    assert "cameras[0].calibration.lens: image_points [2, 3] (first [600, 340], 322 px from center_px)" in err
    assert "lie beyond 89 px, where this distortion model folds back (d r_d / d r <= 0)" in err
    assert "check the signs and sizes of k1, k2, k3" in err


def test_a_lens_that_folds_inside_the_roi_fails_at_load(tmp_path: Path) -> None:
    # k1 = -0.5 at 400 px folds 218 px from the centre: past the calibration points, inside the frame's corners
    text = CAM.replace(LENS, "lens: {focal_px: 400, center_px: [320, 180], k1: -0.5}")
    text = text.replace("[600, 340], [40, 340]", "[460, 300], [180, 300]")
    assert _load(tmp_path, text).cameras[0].calibration is not None
    roi = "    roi: [[0, 0], [640, 0], [640, 360], [0, 360]]\n"
    err = _error(tmp_path, text + roi)
    assert "cameras[0].calibration.lens: roi vertices [0, 1, 2, 3] (first [0, 0], 367 px from center_px)" in err
    assert _load(tmp_path, text + "    roi: [[160, 120], [480, 120], [480, 300], [160, 300]]\n").cameras[0].roi


def test_the_homography_checks_run_on_the_undistorted_points(tmp_path: Path) -> None:
    swapped = CAM.replace("[[0, 50], [3.5, 50], [3.5, 0], [0, 0]]", "[[0, 50], [3.5, 50], [0, 0], [3.5, 0]]")
    err = _error(tmp_path, swapped)
    assert "cameras[0].calibration: image_points [0, 1] (undistorted by lens) map beyond the horizon" in err
    # three points on a line through the principal point: the lens keeps them collinear, the fit is singular
    img, wld = [(320, 180), (370, 180), (420, 180), (320, 280)], [(0, 0), (1, 0), (0, 1), (1, 1)]
    lens = LensModel(400.0, 320.0, 180.0, -0.1)
    problem = homography_problem(img, wld, lens)
    assert problem is not None and problem.startswith("homography fit (undistorted by lens) failed")


def test_center_px_outside_the_frame_is_a_start_up_error(tmp_path: Path) -> None:
    cam: Camera = _load(tmp_path, CAM).cameras[0]
    assert frame_problems(cam, 640, 360) == []
    off = _load(tmp_path, CAM.replace("center_px: [320, 180], k1: -0.1", "center_px: [900, 180], k1: -0.01"))
    problems = frame_problems(off.cameras[0], 640, 360, prefix="cameras[0].")
    assert problems == [
        "cameras[0].calibration.lens.center_px: [900, 180] lies outside the 640x360 frame of highway_640x360.mp4 "
        "(the principal point is usually the frame's centre, [320, 180])"
    ]
