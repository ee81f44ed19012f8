from __future__ import annotations

import cv2
import numpy as np
import pytest

from trafficstream.models.roi import at_picture_edge, bottom_centre, points_in_polygon


def test_bottom_centre() -> None:
    xyxy = np.array([[10, 20, 30, 60], [0, 0, 1, 1]], dtype=np.float32)
    np.testing.assert_allclose(bottom_centre(xyxy), [[20, 60], [0.5, 1]])
    assert bottom_centre(np.empty((0, 4))).shape == (0, 2)


def test_no_polygon_means_everything_is_in() -> None:
    assert points_in_polygon(np.zeros((3, 2)), None).tolist() == [True, True, True]


def test_square_with_edges_and_corners_inside() -> None:
    square = np.array([[0, 0], [10, 0], [10, 10], [0, 10]])
    points = np.array([[5, 5], [0, 5], [10, 10], [5, 0], [10.01, 5], [-1, -1], [5, 11]])
    assert points_in_polygon(points, square).tolist() == [True, True, True, True, False, False, False]


def test_concave_road_polygon_matches_opencv() -> None:
    # An L-shaped region, the kind drawn around a curved carriageway.
    poly = np.array([[100, 700], [600, 700], [600, 500], [300, 500], [300, 100], [100, 100]], dtype=np.float32)
    rng = np.random.default_rng(0)
    points = rng.uniform(0, 800, (500, 2)).astype(np.float32)
    expected = [cv2.pointPolygonTest(poly.reshape(-1, 1, 2), (float(x), float(y)), False) >= 0 for x, y in points]
    assert points_in_polygon(points, poly).tolist() == expected
    assert points_in_polygon(np.array([[450, 300]]), poly).tolist() == [False]  # in the notch
    assert points_in_polygon(np.array([[450, 600]]), poly).tolist() == [True]


def test_rejects_degenerate_polygon() -> None:
    with pytest.raises(ValueError, match="K >= 3"):
        points_in_polygon(np.zeros((1, 2)), np.array([[0, 0], [1, 1]]))


def test_picture_edge_boxes() -> None:
    boxes = np.array([[100, 100, 200, 150], [0, 100, 80, 150], [1200, 100, 1279, 150], [100, 600, 200, 715]], float)
    assert at_picture_edge(boxes, 1280, 720).tolist() == [False, True, True, True]
    assert at_picture_edge(np.array([[100, 0, 200, 50]], float), 1280, 720).tolist() == [False]  # top: far away
    assert at_picture_edge(boxes, None, None).tolist() == [False] * 4
