"""Counting lines, lanes and zones mapped into the image for the live video (dashboards.geometry)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trafficstream.cameras import Calibration, Camera
from trafficstream.dashboards.geometry import MAX_PROJECTED_PX, CameraOverlay, camera_overlay, road_to_image

# Image (x, y) px <-> road (x / 10, 10 - y / 10) m: 10 px a metre, the road's +y up the screen (away from the
# camera), as the calibrations of the sample cameras are drawn.
CALIBRATION = Calibration(
    image_points=[[0, 0], [100, 0], [100, 100], [0, 100]], world_points=[[0, 10], [10, 10], [10, 0], [0, 0]]
)


def camera(**kw) -> Camera:
    return Camera(id="cam", source="/videos/cam.mp4", speed_limit_kmh=50, calibration=CALIBRATION, **kw)


def test_image_line_arrow_points_to_the_first_directions_side():
    # Drawn left to right across the image: vehicles moving down the screen are directions[0].
    cam = camera(lines=[{"id": "gate", "points": [[10, 50], [90, 50]], "directions": ["down", "up"]}])
    (line,) = camera_overlay(cam).lines
    assert (line.a, line.b, line.mid) == ((10.0, 50.0), (90.0, 50.0), (50.0, 50.0))
    assert line.towards_first == pytest.approx((0.0, 1.0))
    assert line.directions == ("down", "up")
    flipped = camera(lines=[{"id": "gate", "points": [[90, 50], [10, 50]], "directions": ["down", "up"]}])
    assert camera_overlay(flipped).lines[0].towards_first == pytest.approx((0.0, -1.0))


def test_road_line_is_projected_with_the_same_direction_names():
    # West to east on the road plane: vehicles heading +y (up the screen here) are directions[1].
    cam = camera(lines=[{"id": "gate", "space": "road", "points": [[1, 5], [9, 5]], "directions": ["south", "north"]}])
    (line,) = camera_overlay(cam).lines
    assert line.a == pytest.approx((10.0, 50.0)) and line.b == pytest.approx((90.0, 50.0))
    assert line.towards_first == pytest.approx((0.0, 1.0))  # directions[0] ("south") goes down the screen


def test_lanes_and_zones_in_either_space():
    cam = camera(
        lanes=[
            {"id": "l1", "space": "road", "direction_deg": 180, "polygon": [[0, 0], [5, 0], [5, 10], [0, 10]]},
            {"id": "l2", "polygon": [[50, 0], [100, 0], [100, 100], [50, 100]], "direction": [0, -3]},
        ],
        zones=[{"id": "q", "space": "road", "polygon": [[0, 0], [4, 0], [4, 4], [0, 4]], "purpose": "queue"}],
    )
    overlay = camera_overlay(cam)
    l1, l2 = overlay.lanes
    assert np.allclose(l1.polygon, [(0, 100), (50, 100), (50, 0), (0, 0)])
    assert l1.anchor == pytest.approx((25, 50)) and l1.heading == pytest.approx((0, 1))  # heading 180: down
    assert l2.heading == pytest.approx((0, -1)) and l2.label == "l2"
    (zone,) = overlay.zones
    assert zone.kind == "zone" and zone.label == "q (queue)" and zone.anchor == pytest.approx((20, 80))
    assert overlay and overlay.skipped == ()


def test_what_cannot_be_projected_is_skipped():
    cam = camera(
        lines=[
            {"id": "img", "points": [[10, 50], [90, 50]]},
            {"id": "road", "space": "road", "points": [[1, 5], [9, 5]]},
        ],
        lanes=[{"id": "l1", "space": "road", "direction_deg": 0, "polygon": [[0, 0], [5, 0], [5, 10], [0, 10]]}],
    )
    behind = camera_overlay(cam, to_image=lambda pts: np.full_like(pts, np.nan))  # behind the camera
    assert [line.id for line in behind.lines] == ["img"] and behind.lanes == () and behind.skipped == ("road", "l1")
    horizon = camera_overlay(cam, to_image=lambda pts: pts * (MAX_PROJECTED_PX * 10))  # near the horizon
    assert horizon.skipped == ("road", "l1")


def test_a_camera_without_geometry_draws_nothing():
    overlay = camera_overlay(Camera(id="cam", source="/videos/cam.mp4", speed_limit_kmh=50))
    assert overlay == CameraOverlay() and not overlay
    assert road_to_image(Camera(id="cam", source="/videos/cam.mp4", speed_limit_kmh=50)) is None


def test_demo_cameras_lines_and_lanes_land_in_their_frames(demo_settings):
    sizes = {"motorway-overpass": (1280, 720), "dual-carriageway": (640, 360)}
    for cam in demo_settings.cameras:
        overlay = camera_overlay(cam)
        assert len(overlay.lines) == len(cam.lines) and len(overlay.lanes) == len(cam.lanes) and not overlay.skipped
        width, height = sizes[cam.id]
        for line in overlay.lines:
            for x, y in (line.a, line.b, line.mid):
                assert 0 <= x <= width and 0 <= y <= height, (cam.id, line)
            # Traffic comes towards the camera (down the screen): the "towards_camera" arrow points down.
            assert line.directions[0] == "towards_camera" and line.towards_first[1] > 0.5
            assert math.hypot(*line.towards_first) == pytest.approx(1.0)
        for lane in overlay.lanes:
            assert lane.heading is not None and lane.heading[1] > 0.5  # heading 180: towards the camera
