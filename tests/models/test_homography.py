"""Road-plane homography: exact recovery, noisy fits, horizon handling, drift composition."""

from __future__ import annotations

import numpy as np
import pytest

from trafficstream.cameras import Calibration
from trafficstream.models.homography import RoadPlane, fit_homography, project, reprojection_error


def camera_homography(
    f: float = 1000.0,
    height: float = 8.0,
    pitch_deg: float = 12.0,
    yaw_deg: float = 4.0,
    size: tuple[int, int] = (1280, 720),
) -> np.ndarray:
    """Image->world homography of a real pinhole camera looking down a road (y along the road, z up)."""
    p, y = np.radians(pitch_deg), np.radians(yaw_deg)
    base = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # world -> camera for a level view along +y
    pitch = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    yaw = np.array([[np.cos(y), np.sin(y), 0], [-np.sin(y), np.cos(y), 0], [0, 0, 1]])
    R = pitch @ base @ yaw
    C = np.array([1.5, -10.0, height])
    K = np.array([[f, 0, size[0] / 2], [0, f, size[1] / 2], [0, 0, 1]])
    G = K @ np.column_stack([R[:, 0], R[:, 1], -R @ C])  # world (x, y, 1) -> image
    H = np.linalg.inv(G)
    return H / H[2, 2]


def road_grid() -> np.ndarray:
    xs, ys = np.meshgrid([0.0, 3.5, 7.0, 10.5], [0.0, 6.0, 12.0, 24.0, 36.0])
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


def test_fit_recovers_a_camera_homography_exactly() -> None:
    H = camera_homography()
    world = road_grid()
    image = project(np.linalg.inv(H), world)
    fitted = fit_homography(image, world)
    probe = project(np.linalg.inv(H), np.array([[1.0, 3.0], [9.0, 50.0], [-3.0, 80.0]]))
    np.testing.assert_allclose(project(fitted, probe), project(H, probe), atol=1e-6)
    err = reprojection_error(fitted, image, world)
    assert err.rms_m < 1e-7 and err.max_px < 1e-6


def test_four_pairs_are_enough_and_exact() -> None:
    H = camera_homography()
    world = np.array([[0.0, 0.0], [7.0, 0.0], [7.0, 30.0], [0.0, 30.0]])
    image = project(np.linalg.inv(H), world)
    fitted = fit_homography(image, world)
    assert reprojection_error(fitted, image, world).max_m < 1e-8


def test_noisy_pairs_fit_within_the_noise() -> None:
    rng = np.random.default_rng(7)
    H = camera_homography()
    world = road_grid()
    image = project(np.linalg.inv(H), world) + rng.normal(0, 0.5, (len(world), 2))
    fitted = fit_homography(image, world)
    err = reprojection_error(fitted, image, world)
    assert 0.2 < err.rms_px < 0.8  # ~0.5 px * sqrt(2) * sqrt((N - 4) / N)
    # Positions anywhere on the calibrated road come out within a few centimetres.
    clean = project(np.linalg.inv(H), road_grid() + [1.0, 2.0])
    assert np.abs(project(fitted, clean) - (road_grid() + [1.0, 2.0])).max() < 0.15


@pytest.mark.parametrize(
    ("image", "world", "message"),
    [
        ([[0, 0], [1, 0], [2, 0], [3, 0]], [[0, 0], [1, 0], [0, 1], [1, 1]], "collinear"),
        ([[0, 0], [1, 0], [0, 1]], [[0, 0], [1, 0], [0, 1]], "at least 4"),
        ([[0, 0], [1, 0], [0, 1], [1, 1]], [[0, 0], [1, 0], [0, 1]], "world_points has 3"),
        ([[0, 0], [1, 0], [0, 1], [0, 1]], [[0, 0], [1, 0], [0, 1], [1, 1]], "duplicate"),
        ([[0, 0], [1, 0], [0, 1], [1, np.nan]], [[0, 0], [1, 0], [0, 1], [1, 1]], "NaN"),
    ],
)
def test_degenerate_pairs_are_refused_with_a_reason(image, world, message) -> None:
    with pytest.raises(ValueError, match=message):
        fit_homography(image, world)


def test_project_maps_points_at_infinity_to_nan() -> None:
    H = np.array([[1.0, 0, 0], [0, 1, 0], [0, 1, -10]])  # w = y - 10
    out = project(H, [[5.0, 10.0], [5.0, 20.0]])
    assert np.isnan(out[0]).all() and np.isfinite(out[1]).all()


def make_plane() -> tuple[RoadPlane, np.ndarray]:
    H = camera_homography()
    world = road_grid()
    return RoadPlane.from_points(project(np.linalg.inv(H), world), world), H


def test_road_plane_round_trip_and_calibration_model() -> None:
    plane, H = make_plane()
    cal = Calibration(
        image_points=[tuple(p) for p in plane.image_points], world_points=[tuple(p) for p in plane.world_points]
    )
    same = RoadPlane.from_calibration(cal)
    world = np.array([[2.0, 5.0], [8.0, 30.0]])
    np.testing.assert_allclose(same.to_world(same.to_image(world)), world, atol=1e-6)
    assert plane.error.rms_px < 1e-6


def test_pixels_beyond_the_horizon_have_no_road_position() -> None:
    plane, H = make_plane()
    horizon_y = -(H[2, 0] * 640 + H[2, 2]) / H[2, 1]  # image row where w = 0 at the centre column
    px = np.array([[640.0, horizon_y + 40], [640.0, horizon_y - 40], [640.0, horizon_y - 400]])
    world = plane.to_world(px)
    assert np.isfinite(world[0]).all() and world[0, 1] > 100  # just below the horizon: far away
    assert np.isnan(world[1:]).all()  # above it: the sky, not a sign-flipped road point
    assert np.isnan(plane.to_image([[3.0, -200.0]])).all()  # behind the camera


def test_outside_distance_and_scale() -> None:
    plane, _ = make_plane()
    d = plane.outside_distance_m([[5.0, 10.0], [5.0, 46.0], [-2.0, 10.0], [np.nan, 0.0]])
    np.testing.assert_allclose(d[:3], [0.0, 10.0, 2.0], atol=1e-9)
    assert d[3] == np.inf
    mpp = plane.metres_per_pixel(plane.to_image([[5.0, 5.0], [5.0, 35.0]]))
    assert (mpp > 0).all() and mpp[1, 1] > mpp[0, 1]  # a pixel covers more road further away


def test_with_drift_follows_a_shifted_frame() -> None:
    plane, _ = make_plane()
    # The camera moved: frame pixel = reference pixel + (12, -7); drift maps frame -> reference.
    drift = np.array([[1.0, 0, -12.0], [0, 1, 7.0], [0, 0, 1]])
    world = np.array([[1.0, 4.0], [9.0, 33.0]])
    frame_px = plane.to_image(world) + [12.0, -7.0]
    moved = plane.with_drift(drift)
    np.testing.assert_allclose(moved.to_world(frame_px), world, atol=1e-6)
    np.testing.assert_allclose(moved.to_image(world), frame_px, atol=1e-6)
