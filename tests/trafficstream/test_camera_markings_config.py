"""A camera's ``calibration.markings``: fewer pairs plus road markings of known position load, ship to Spark and
reach the road plane the job builds; every mistake names its field."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from camera_config_helpers import config_error, load_config

from trafficstream.config import settings_from_json, settings_to_json
from trafficstream.models.homography import RoadPlane, fit_homography, project

# The 640 x 360 highway clip's perspective calibration (far end y = 50 m at row 200) as the truth.
IMAGE = [[280, 200], [360, 200], [600, 340], [40, 340]]
WORLD = [[0, 50], [3.5, 50], [3.5, 0], [0, 0]]
TRUTH = fit_homography(IMAGE, WORLD)


def _px(world: list[list[float]]) -> str:
    return str(np.round(project(np.linalg.inv(TRUTH), np.asarray(world, dtype=float)), 3).tolist())


def _camera(calibration: str) -> str:
    return f"""
cameras:
  - id: cam-1
    source: "{{data_dir}}/videos/highway_640x360.mp4"
    speed_limit_kmh: 100
    calibration:
{calibration}
"""


# Two pairs on the far row, the road's edges and centre line traced, and a transverse line 10 m out.
FEW = f"""      image_points: {_px([[0, 50], [3.5, 50]])}
      world_points: [[0, 50], [3.5, 50]]
      markings:
        - {{x: 0, image_points: {_px([[0, 5], [0, 25], [0, 45]])}}}
        - {{x: 1.75, image_points: {_px([[1.75, 2], [1.75, 48]])}}}
        - {{x: 3.5, image_points: {_px([[3.5, 4], [3.5, 30], [3.5, 49]])}}}
        - {{y: 10, image_points: {_px([[-0.5, 10], [4, 10]])}}}"""


def test_markings_load_ship_to_spark_and_reach_the_road_plane(tmp_path: Path) -> None:
    settings = load_config(tmp_path, _camera(FEW))
    cal = settings.cameras[0].calibration
    assert cal is not None and len(cal.image_points) == 2 and len(cal.markings) == 4
    assert cal.markings[0].x == 0 and cal.markings[0].y is None and cal.markings[3].y == 10
    shipped = settings_from_json(settings_to_json(settings)).cameras[0].calibration
    assert shipped == cal and shipped is not None
    plane = RoadPlane.from_calibration(shipped)
    probes = np.array([[320.0, 300.0], [300.0, 220.0], [100.0, 330.0]])
    np.testing.assert_allclose(plane.to_world(probes), project(TRUTH, probes), atol=1e-3)


def test_pairs_alone_still_need_four(tmp_path: Path) -> None:
    calibration = (
        "      image_points: [[280, 200], [360, 200], [600, 340]]\n      world_points: [[0, 50], [3.5, 50], [3.5, 0]]"
    )
    msg = config_error(tmp_path, _camera(calibration))
    assert "cameras[0].calibration.image_points: List should have at least 4 items" in msg
    assert "or add markings" in msg


def test_each_marking_mistake_names_its_field(tmp_path: Path) -> None:
    both = FEW.replace("{x: 1.75,", "{x: 1.75, y: 3,")
    assert "cameras[0].calibration.markings[1]: " in (msg := config_error(tmp_path, _camera(both)))
    assert "exactly one of x" in msg
    neither = FEW.replace("{x: 1.75,", "{")
    assert "cameras[0].calibration.markings[1]: " in config_error(tmp_path, _camera(neither))
    one_pixel = FEW.replace(f"{{y: 10, image_points: {_px([[-0.5, 10], [4, 10]])}}}", "{y: 10, image_points: [[5, 5]]}")
    assert "cameras[0].calibration.markings[3].image_points" in config_error(tmp_path, _camera(one_pixel))
    negative = FEW.replace(
        f"{{y: 10, image_points: {_px([[-0.5, 10], [4, 10]])}}}", "{y: 10, image_points: [[-5, 5], [9, 9]]}"
    )
    assert "pixel coordinates must be >= 0" in config_error(tmp_path, _camera(negative))


def test_markings_that_leave_the_plane_undetermined_fail_at_load(tmp_path: Path) -> None:
    # without the transverse line and with both pairs on the far row, nothing says how far along the road it is
    undetermined = FEW.rsplit("\n", 1)[0]
    msg = config_error(tmp_path, _camera(undetermined))
    assert "cameras[0].calibration.markings: " in msg and "undetermined" in msg, msg
