"""Overlay drawing (boxes, counting lines, lanes, zones) and MJPEG framing on real frames of the sample clips."""

from __future__ import annotations

import math
import threading

import cv2
import numpy as np
import pytest

from trafficstream.dashboards.buffers import LiveBuffers
from trafficstream.dashboards.geometry import AreaOverlay, CameraOverlay, LineOverlay
from trafficstream.dashboards.video import (
    ARROW_PX,
    GREEN,
    LANE_COLOR,
    LINE_COLOR,
    RED,
    ZONE_COLOR,
    CameraRenderer,
    draw_overlays,
    encode_jpeg,
    mjpeg_part,
    placeholder_image,
    vehicle_label,
)
from trafficstream.video import FrameReader


@pytest.fixture(scope="module")
def real_frame(data_dir) -> np.ndarray:
    reader = FrameReader(data_dir / "videos" / "highway_overpass_1280x720.mp4")
    try:
        return reader.read(60, 60 / reader.info.fps).copy()
    finally:
        reader.close()


def _changed(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.any(a != b, axis=2)


def test_drawing_changes_the_box_and_leaves_the_rest(real_frame):
    box = [400, 300, 560, 420]
    original = real_frame.copy()
    out = draw_overlays(real_frame, [{"id": 7, "cls": "car", "box": box, "kmh": 88.4, "over": False}], 100)
    assert np.array_equal(real_frame, original), "the source image must not be drawn on"
    changed = _changed(out, real_frame)
    x1, y1, x2, y2 = box
    region = changed[y1 : y2 + 1, x1 : x2 + 1]
    assert region[:, 0].mean() > 0.9 and region[:, -1].mean() > 0.9  # left and right edges drawn
    assert region[0, :].mean() > 0.9 and region[-1, :].mean() > 0.9
    assert tuple(int(c) for c in out[y2, (x1 + x2) // 2]) == GREEN
    # The label sits just above the box; everything else is untouched.
    outside = changed.copy()
    outside[y1 - 40 : y2 + 3, x1 - 2 : x2 + 3] = False
    assert not outside.any()


def test_speeding_vehicles_are_red(real_frame):
    v = {"id": 3, "cls": "truck", "box": [100, 200, 300, 330], "kmh": 131.0}
    assert tuple(int(c) for c in draw_overlays(real_frame, [v], 100)[330, 200]) == RED  # over the limit
    assert tuple(int(c) for c in draw_overlays(real_frame, [{**v, "kmh": 95.0}], 100)[330, 200]) == GREEN
    flagged = draw_overlays(real_frame, [{**v, "kmh": 95.0, "over": True}], 100)  # the job's verdict wins
    assert tuple(int(c) for c in flagged[330, 200]) == RED


def test_label_shows_track_class_and_speed():
    assert vehicle_label({"id": 3, "cls": "car", "kmh": 97.34}) == "#3 car 97 km/h"
    assert vehicle_label({"id": 4, "cls": "bus", "kmh": None}) == "#4 bus"


def test_odd_boxes_are_clipped_or_skipped():
    img = np.zeros((100, 200, 3), np.uint8)
    out = draw_overlays(
        img, [{"id": 1, "box": [-50, -20, 500, 400], "kmh": 50}, {"id": 2, "box": [1, 2]}, {"id": 3}], 100
    )
    assert out.shape == img.shape and out.any()


def test_roi_and_caption_are_drawn():
    img = np.zeros((360, 640, 3), np.uint8)
    out = draw_overlays(img, [], None, roi=[(100, 100), (500, 100), (500, 300), (100, 300)], caption="cam frame 1")
    assert out[100, 300].any()  # on the ROI polygon
    assert out[5:25, 5:100].any()  # caption top left


def test_mjpeg_part_is_a_decodable_jpeg(real_frame):
    jpeg = encode_jpeg(real_frame)
    part = mjpeg_part(jpeg, {"X-Frame-Index": "60"})
    head, _, body = part.partition(b"\r\n\r\n")
    assert head.startswith(b"--frame\r\nContent-Type: image/jpeg\r\n")
    assert f"Content-Length: {len(jpeg)}".encode() in head and b"X-Frame-Index: 60" in head
    decoded = cv2.imdecode(np.frombuffer(body[:-2], np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == real_frame.shape
    assert placeholder_image("waiting").shape == (360, 640, 3)


def test_boxes_follow_a_resized_image(real_frame):
    small = cv2.resize(real_frame, (640, 360))
    out = draw_overlays(small, [{"id": 1, "box": [400, 300, 560, 420], "kmh": 50}], 100, scale=0.5)
    changed = _changed(out, small)
    assert changed[150:211, 200].all()  # left edge at x = 400 * 0.5, from y 150 to 210
    assert not changed[250:, :].any() and not changed[:, 300:].any()


def _overlay() -> CameraOverlay:
    return CameraOverlay(
        lines=(LineOverlay("gate", (100.0, 200.0), (500.0, 200.0), (300.0, 200.0), (0.0, 1.0), ("down", "up")),),
        lanes=(AreaOverlay("l1", "lane", ((50, 50), (250, 50), (250, 150), (50, 150)), "l1", (150, 100), (1, 0)),),
        zones=(AreaOverlay("z", "zone", ((400, 250), (600, 250), (600, 340), (400, 340)), "z (queue)", (500, 295)),),
    )


def test_lines_lanes_and_zones_are_drawn():
    img = np.zeros((720, 1280, 3), np.uint8)  # 1280 wide: arrows ARROW_PX long
    out = draw_overlays(img, [], None, geometry=_overlay())
    assert tuple(int(c) for c in out[200, 150]) == LINE_COLOR  # on the line
    assert tuple(int(c) for c in out[200 + ARROW_PX // 2 - 2, 300]) == LINE_COLOR  # the "down" arrow, mid-shaft
    assert tuple(int(c) for c in out[200 - ARROW_PX // 2 + 2, 300]) == LINE_COLOR  # the "up" arrow
    assert out[200 + ARROW_PX + 6 : 200 + ARROW_PX + 30, 270:330].any()  # "down" named below its tip
    assert tuple(int(c) for c in out[50, 200]) == LANE_COLOR and out[100, 150:185].any()  # outline, heading arrow
    assert tuple(int(c) for c in out[340, 450]) == ZONE_COLOR
    assert not out[:40, 300:].any() and not out[350:, :].any() and not out[:, 620:].any()  # nothing elsewhere


def test_boxes_are_drawn_over_the_geometry_which_follows_a_resized_image():
    img = np.zeros((180, 320, 3), np.uint8)
    box = {"id": 1, "box": [200, 150, 400, 250], "kmh": 50}
    out = draw_overlays(img, [box], 100, geometry=_overlay(), scale=0.5)
    assert tuple(int(c) for c in out[100, 60]) == LINE_COLOR  # the line at y = 200 * 0.5
    assert tuple(int(c) for c in out[100, 100]) == GREEN  # where the box's left edge crosses it: the box on top


def test_geometry_with_garbage_coordinates_is_skipped():
    img = np.zeros((100, 200, 3), np.uint8)
    bad = CameraOverlay(
        lines=(LineOverlay("x", (math.nan, 1.0), (5.0, 5.0), (1.0, 1.0), (0.0, 1.0), ("a", "b")),),
        lanes=(AreaOverlay("l", "lane", ((0, 0), (1e300, 0), (5, 5)), "l", (1, 1)),),
        zones=(AreaOverlay("z", "zone", ((0, 0), (10, 0), (10, 10)), "z", (math.inf, 1)),),
    )
    assert not draw_overlays(img, [], None, geometry=bad).any()


def test_renderer_draws_its_cameras_configured_geometry(demo_settings):
    camera = demo_settings.camera("motorway-overpass")
    renderer = CameraRenderer(camera, LiveBuffers.from_settings(demo_settings), threading.Event())
    assert [line.id for line in renderer.geometry.lines] == [line.id for line in camera.lines]
    assert [lane.id for lane in renderer.geometry.lanes] == [lane.id for lane in camera.lanes]
