"""Counting lines, lanes, zones and event thresholds in a camera's config: defaults keep old configs working,
every mistake names its field (``cameras[0].lines[1].points``), road space needs a calibration, ids are unique,
image-space geometry must lie inside the frame."""

from __future__ import annotations

from pathlib import Path

import pytest
from camera_config_helpers import config_error as _error
from camera_config_helpers import load_config as _load

from trafficstream.cameras import Camera, EventSettings, frame_problems, image_lane_heading
from trafficstream.config import settings_from_json, settings_to_json

# A perspective calibration: the road's far end (y = 50 m) at image row 200, its horizon near row 173.
CAM = """
cameras:
  - id: cam-1
    source: "{data_dir}/videos/highway_640x360.mp4"
    speed_limit_kmh: 100
    calibration:
      image_points: [[280, 200], [360, 200], [600, 360], [40, 360]]
      world_points: [[0, 50], [3.5, 50], [3.5, 0], [0, 0]]
"""

GEOMETRY = """    lines:
      - id: stop-bar
        points: [[40, 300], [600, 300]]
        directions: [inbound, outbound]
      - id: gantry
        space: road
        points: [[-1, 30], [5, 30]]
    lanes:
      - id: lane-1
        polygon: [[160, 280], [320, 280], [320, 350], [120, 350]]
        direction: [0, -1]
      - id: lane-2
        space: road
        polygon: [[0, 0], [3.5, 0], [3.5, 50], [0, 50]]
        direction_deg: 0
    zones:
      - id: approach
        polygon: [[100, 250], [500, 250], [500, 350], [100, 350]]
        lane: lane-1
      - id: bus-stop
        space: road
        polygon: [[3.5, 10], [6, 10], [6, 25], [3.5, 25]]
        purpose: stopping
    events:
      stopped_min_s: 30
      queue_min_vehicles: 4
"""


def test_cameras_without_geometry_keep_working(tmp_path: Path) -> None:
    cam = _load(tmp_path, CAM).cameras[0]
    assert cam.lines == [] and cam.lanes == [] and cam.zones == []
    assert cam.events == EventSettings()


def test_a_full_geometry_loads_and_survives_shipping_to_spark(tmp_path: Path) -> None:
    settings = _load(tmp_path, CAM + GEOMETRY)
    cam = settings.cameras[0]
    assert [line.id for line in cam.lines] == ["stop-bar", "gantry"]
    assert cam.lines[0].directions == ("inbound", "outbound") and cam.lines[0].space == "image"
    assert cam.lines[1].directions == ("left_to_right", "right_to_left") and cam.lines[1].space == "road"
    assert cam.lanes[0].direction == (0, -1) and cam.lanes[1].direction_deg == 0
    assert cam.zones[0].lane == "lane-1" and cam.zones[1].purpose == "stopping"
    assert cam.events.stopped_min_s == 30 and cam.events.queue_min_vehicles == 4
    assert cam.events.crossing_hysteresis_px == EventSettings().crossing_hysteresis_px
    # up the screen in this view is away from the camera: +y on the road, heading ~0
    assert cam.calibration is not None
    heading = image_lane_heading(cam.calibration, cam.lanes[0])
    assert heading is not None and min(heading, 360 - heading) < 5
    assert settings_from_json(settings_to_json(settings)).cameras[0] == cam


IMAGE_LINE = "    lines:\n      - id: a\n        points: [[0, 300], [600, 300]]\n"
LANE = "    lanes:\n      - id: l\n"
ZONE = "    zones:\n      - id: z\n"
TRIANGLE = "        polygon: [[0, 300], [100, 300], [100, 350]]\n"


@pytest.mark.parametrize(
    "extra, needle",
    [
        (
            IMAGE_LINE + "      - id: b\n        points: [[0, 10], [100, -1]]\n",
            "cameras[0].lines[1].points: point 1 [100, -1]: pixel coordinates must be >= 0",
        ),
        (
            IMAGE_LINE + "      - id: b\n        points: [[5, 10], [5, 10]]\n",
            "cameras[0].lines[1].points: both points are [5, 10]: a line needs two distinct points",
        ),
        (
            "    lines:\n      - id: a\n        points: [[0, 300]]\n",
            "cameras[0].lines[0].points: List should have at least 2 items",
        ),
        (
            "    lines:\n      - id: a\n        points: [[0, 300], [600, .nan]]\n",
            "cameras[0].lines[0].points[1][1]: Input should be a finite number",
        ),
        (
            "    lines:\n      - id: 'a b'\n        points: [[0, 300], [600, 300]]\n",
            "cameras[0].lines[0].id: String should match pattern",
        ),
        (
            IMAGE_LINE + "        directions: [north, north]\n",
            "cameras[0].lines[0].directions: both directions are named 'north'",
        ),
        (
            IMAGE_LINE + "        space: sky\n",
            "cameras[0].lines[0].space: Input should be 'image' or 'road'",
        ),
        (
            LANE + "        polygon: [[0, 0], [100, 100], [100, 0], [0, 100]]\n        direction: [0, 1]\n",
            "cameras[0].lanes[0].polygon: edge 0-1 and edge 2-3 cross",
        ),
        (
            LANE + "        space: road\n        polygon: [[0, 0], [3, 0], [3, 0.01]]\n        direction_deg: 0\n",
            "cameras[0].lanes[0].polygon: the vertices are (nearly) collinear",
        ),
        (
            LANE + TRIANGLE,
            "cameras[0].lanes[0].direction: an image-space lane needs its direction of travel [dx, dy] in px",
        ),
        (
            LANE + "        space: road\n        polygon: [[0, 0], [3, 0], [3, 9]]\n",
            "cameras[0].lanes[0].direction_deg: a road-space lane needs its heading of travel",
        ),
        (
            LANE + TRIANGLE + "        direction_deg: 90\n        direction: [1, 0]\n",
            "cameras[0].lanes[0].direction_deg: an image-space lane gives its direction as a vector",
        ),
        (
            LANE + "        space: road\n        polygon: [[0, 0], [3, 0], [3, 9]]\n        direction_deg: 360\n",
            "cameras[0].lanes[0].direction_deg: Input should be less than 360",
        ),
        (
            LANE + TRIANGLE + "        direction: [0, 0]\n",
            "cameras[0].lanes[0].direction: [0, 0] has no direction",
        ),
        (
            LANE + "        polygon: [[0, 0], [100, 0], [100, 100]]\n        direction: [0, -1]\n",
            "cameras[0].lanes[0].polygon: the lane's centre [66.6667, 33.3333] lies beyond the horizon",
        ),
        (
            ZONE + TRIANGLE + "        lane: nope\n",
            "cameras[0].zones[0].lane: no lane 'nope' on this camera (lanes: none)",
        ),
        (
            ZONE + TRIANGLE + "        purpose: parking\n",
            "cameras[0].zones[0].purpose: Input should be 'queue' or 'stopping'",
        ),
        ("    events:\n      queue_min_vehicles: 1\n", "cameras[0].events.queue_min_vehicles: Input should be greater"),
        (
            "    events:\n      stopped_min_s: .inf\n",
            "cameras[0].events.stopped_min_s: Input should be a finite number",
        ),
        ("    events:\n      hysteresis: 3\n", "cameras[0].events.hysteresis: Extra inputs are not permitted"),
    ],
)
def test_geometry_mistakes_name_their_field(tmp_path: Path, extra: str, needle: str) -> None:
    msg = _error(tmp_path, CAM + extra)
    assert needle in msg, msg


def test_ids_are_unique_across_lines_lanes_and_zones(tmp_path: Path) -> None:
    extra = (
        IMAGE_LINE
        + "      - id: a\n        points: [[0, 320], [600, 320]]\n"
        + "    zones:\n      - id: a\n        polygon: [[0, 300], [100, 300], [100, 350]]\n"
    )
    msg = _error(tmp_path, CAM + extra)
    assert "cameras[0].lines[1].id: duplicate id 'a' (already lines[0])" in msg
    assert "cameras[0].zones[0].id: duplicate id 'a' (already lines[0])" in msg


def test_road_space_needs_a_calibration(tmp_path: Path) -> None:
    uncalibrated = CAM.split("    calibration:")[0]
    extra = (
        "    lines:\n      - id: a\n        space: road\n        points: [[0, 10], [4, 10]]\n"
        + LANE
        + TRIANGLE
        + "        direction: [0, -1]\n"
        + ZONE
        + "        space: road\n        polygon: [[0, 0], [3, 0], [3, 9]]\n"
    )
    msg = _error(tmp_path, uncalibrated + extra)
    assert "cameras[0].lines[0].space: 'road' (road-plane metres) needs the camera's calibration" in msg
    assert "cameras[0].zones[0].space: 'road'" in msg
    assert "lanes[0]" not in msg  # image lanes are fine without one (they split counts)


def test_image_geometry_must_lie_inside_the_frame() -> None:
    cam = Camera(
        id="cam-1",
        source="/videos/v.mp4",
        speed_limit_kmh=50,
        lines=[
            {"id": "in", "points": [[0, 10], [640, 10]]},
            {"id": "out", "points": [[0, 10], [700, 10]]},
        ],
        lanes=[{"id": "l", "polygon": [[0, 300], [100, 300], [100, 361]], "direction": [0, -1]}],
        zones=[{"id": "z", "polygon": [[0, 0], [100, 0], [100, 100]]}],
    )
    problems = frame_problems(cam, 640, 360, prefix="cameras[0].")
    assert problems == [
        "cameras[0].lines[1].points: points [1] (first [700, 10]) lie outside the 640x360 frame of v.mp4",
        "cameras[0].lanes[0].polygon: vertices [2] (first [100, 361]) lie outside the 640x360 frame of v.mp4",
    ]
