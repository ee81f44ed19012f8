"""Vanishing-point calibration against exact pinhole cameras of many poses: lane lines and lines across the road
(traced with pixel noise) give back the focal length, the camera's height and the road plane, and bad
inputs are refused with a reason."""

from __future__ import annotations

import math

import numpy as np
import pytest
from pinhole_road import CENTRE, camera, in_view, to_pixels

from trafficstream.models.homography import MarkingLine, project
from trafficstream.models.vanishing import (
    calibrate_from_markings,
    fit_image_line,
    focal_from_vanishing_points,
    vanishing_point,
)


def traced(P: np.ndarray, axis: str, value: float, span: tuple[float, float], rng, noise_px: float) -> MarkingLine:
    s = np.linspace(*span, 40)
    xy = np.column_stack([np.full_like(s, value), s]) if axis == "x" else np.column_stack([s, np.full_like(s, value)])
    px = to_pixels(P, xy)
    px = px[in_view(px)]
    assert len(px) >= 10, "the test scene must show the marking"
    return MarkingLine(px + rng.normal(0, noise_px, px.shape), axis, value)


def road_markings(
    P: np.ndarray,
    rng,
    noise_px: float,
    lanes: tuple[float, ...] = (0.0, 7.0),
    across: tuple[float, ...] = (30.0, 50.0),
    along_span: tuple[float, float] = (25.0, 100.0),
    across_span: tuple[float, float] = (-2.0, 9.0),
) -> list[MarkingLine]:
    """Lane lines at ``lanes`` (x) and lines across the road at ``across`` (y), traced with pixel noise."""
    return [traced(P, "x", x, along_span, rng, noise_px) for x in lanes] + [
        traced(P, "y", y, across_span, rng, noise_px) for y in across
    ]


POSES = [  # f, height, tilt, yaw, roll
    (1000.0, 8.0, 15.0, 6.0, 0.0),
    (800.0, 12.0, 25.0, 15.0, 1.5),
    (1500.0, 6.0, 8.0, -10.0, -2.0),
    (700.0, 20.0, 35.0, 25.0, 0.5),
]


@pytest.mark.parametrize("pose", POSES)
def test_two_lane_lines_and_two_lines_across_recover_the_camera_and_the_road(pose):
    f, height, tilt, yaw, roll = pose
    P = camera(f, height, tilt, yaw, roll)
    rng = np.random.default_rng(7)
    near = height / math.tan(math.radians(tilt + 20))  # the picture's bottom row is roughly this far out
    markings = [
        traced(P, "x", 0.0, (near, near + 80), rng, 0.3),
        traced(P, "x", 7.0, (near, near + 80), rng, 0.3),
        traced(P, "y", near + 5, (-2.0, 9.0), rng, 0.3),
        traced(P, "y", near + 25, (-2.0, 9.0), rng, 0.3),
    ]
    cal = calibrate_from_markings(markings, CENTRE)
    assert cal.focal_measured
    assert cal.focal_px == pytest.approx(f, rel=0.05)
    assert cal.height_m == pytest.approx(height, rel=0.05)
    assert cal.tilt_deg == pytest.approx(tilt, abs=1.5)
    # the road where vehicles are measured: within 2 % of the distance from the first marking
    grid = np.array([(x, y) for x in (0.0, 3.5, 7.0) for y in np.linspace(near, near + 40, 9)])
    px = to_pixels(P, grid)
    got = cal.to_world(px[in_view(px)])
    want = grid[in_view(px)]
    err = np.linalg.norm(got - want, axis=1)
    assert np.max(err / (want[:, 1] - near + 5)) < 0.02
    # what speeds depend on: distances between points 20 m apart along a lane
    a, b = cal.to_world(to_pixels(P, np.array([[3.5, near + 2.0], [3.5, near + 22.0]])))
    assert np.linalg.norm(b - a) == pytest.approx(20.0, rel=0.02)


def test_two_lane_lines_and_a_focal_length_suffice_for_a_level_camera():
    f, height, tilt = 900.0, 10.0, 18.0
    P = camera(f, height, tilt, yaw_deg=12.0, roll_deg=0.0)
    rng = np.random.default_rng(3)
    near = height / math.tan(math.radians(tilt + 20))
    markings = [traced(P, "x", 0.0, (near, near + 90), rng, 0.3), traced(P, "x", 3.5, (near, near + 90), rng, 0.3)]
    cal = calibrate_from_markings(markings, CENTRE, focal_px=f)
    assert not cal.focal_measured and cal.v is None
    assert cal.height_m == pytest.approx(height, rel=0.03)
    assert abs(cal.roll_deg) < 1e-6
    # the origin along the road is a convention (the nearest traced pixel): compare distances, not positions
    pts = to_pixels(P, np.array([[1.75, near + 3.0], [1.75, near + 33.0], [0.0, near + 10.0], [3.5, near + 10.0]]))
    w = cal.to_world(pts)
    assert np.linalg.norm(w[1] - w[0]) == pytest.approx(30.0, rel=0.02)
    assert np.linalg.norm(w[3] - w[2]) == pytest.approx(3.5, rel=0.02)
    assert w[2][0] == pytest.approx(0.0, abs=0.05)  # x from the lane lines' own positions


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_camera_looking_straight_along_the_road_gets_its_focal_length_from_the_marking_positions(seed):
    # lines across the road are horizontal in its picture: their vanishing point says nothing about f, but
    # their known spacing against the lane width does
    P = camera(1000.0, 8.0, 15.0, 0.0, 0.0)
    rng = np.random.default_rng(seed)
    markings = road_markings(P, rng, 0.3)
    cal = calibrate_from_markings(markings, CENTRE)
    assert cal.focal_from == "positions"
    assert cal.focal_px == pytest.approx(1000.0, rel=0.03)
    assert cal.height_m == pytest.approx(8.0, rel=0.03)
    a, b = cal.to_world(to_pixels(P, np.array([[3.5, 30.0], [3.5, 50.0]])))
    assert b[1] - a[1] == pytest.approx(20.0, rel=0.01)
    assert a[1] == pytest.approx(30.0, abs=0.3)
    # one line across gives no spacing along the road: nothing pins f, and the refusal says what to add
    with pytest.raises(ValueError, match="needs the focal length.*--focal-px"):
        calibrate_from_markings(markings[:3], CENTRE)
    assert calibrate_from_markings(markings[:3], CENTRE, focal_px=1000.0).height_m == pytest.approx(8.0, rel=0.03)


def test_pairs_are_consistent_with_the_homography():
    P = camera(1000.0, 8.0, 15.0, 15.0, 0.0)
    rng = np.random.default_rng(1)
    markings = road_markings(
        P, rng, 0.0, lanes=(0.0, 3.5), across=(30.0, 60.0), along_span=(20, 100), across_span=(-1, 8)
    )
    cal = calibrate_from_markings(markings, CENTRE)
    img, world = cal.pairs(np.vstack([m.ends() for m in markings]))
    assert len(img) == 8
    np.testing.assert_allclose(project(cal.H, img), world)
    np.testing.assert_allclose(world[:2, 0], 0.0, atol=0.02)  # the first lane line's ends lie at x = 0
    np.testing.assert_allclose(sorted(world[4:6, 1]), [30.0, 30.0], atol=0.05)


def test_vanishing_point_of_lines_through_one_pixel_and_of_parallel_lines():
    lines = [fit_image_line(np.array([[0.0, 700], [600, 100]])), fit_image_line(np.array([[1200.0, 700], [600, 100]]))]
    p = vanishing_point(lines)
    np.testing.assert_allclose(p[:2] / p[2], [600, 100], atol=1e-6)
    parallel = [fit_image_line(np.array([[0.0, 0], [10, 10]])), fit_image_line(np.array([[5.0, 0], [15, 10]]))]
    assert abs(vanishing_point(parallel)[2]) < 1e-9  # at infinity, not a far-off pixel
    with pytest.raises(ValueError, match="at infinity"):
        focal_from_vanishing_points(vanishing_point(parallel), vanishing_point(lines), CENTRE)


def test_refuses_what_cannot_calibrate():
    P = camera(1000.0, 8.0, 15.0, 0.0, 0.0)
    rng = np.random.default_rng(0)
    one = [traced(P, "x", 0.0, (20, 100), rng, 0.0)]
    with pytest.raises(ValueError, match=">= 2 lane lines"):
        calibrate_from_markings(one, CENTRE, focal_px=1000)
    two = one + [traced(P, "x", 3.5, (20, 100), rng, 0.0)]
    with pytest.raises(ValueError, match="needs the focal length"):
        calibrate_from_markings(two, CENTRE)
    same_x = [one[0], MarkingLine(two[1].image_points, "x", 0.0)]
    with pytest.raises(ValueError, match="no scale"):
        calibrate_from_markings(same_x, CENTRE, focal_px=1000)
    swapped = [MarkingLine(one[0].image_points, "x", 3.5), MarkingLine(two[1].image_points, "x", 0.0)]
    with pytest.raises(ValueError, match="contradict"):
        calibrate_from_markings(swapped, CENTRE, focal_px=1000)
