"""Road-plane homography: exact recovery, noisy fits, horizon handling, drift composition."""

from __future__ import annotations

import numpy as np
import pytest

from trafficstream.cameras import Calibration
from trafficstream.models.homography import (
    MarkingLine,
    RoadPlane,
    fit_homography,
    marking_residuals_px,
    project,
    reprojection_error,
)


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


# -- lens distortion --------------------------------------------------------------------------------------------
def road_points(road_camera) -> tuple[np.ndarray, np.ndarray]:
    """Calibration pairs spread over the picture (edges included) and other road points to check against."""
    xs, ys = np.meshgrid([-10.0, -5.0, 0.0, 5.0, 10.0], [10.0, 16.0, 25.0, 40.0, 60.0])
    calib = road_camera.visible(np.stack([xs.ravel(), ys.ravel()], axis=1))
    xs, ys = np.meshgrid(np.arange(-11.0, 11.5, 1.5), np.arange(9.5, 75.0, 3.5))
    probe = road_camera.visible(np.stack([xs.ravel(), ys.ravel()], axis=1))
    return calib, probe


def test_a_lens_makes_a_wide_angle_camera_exact_and_ignoring_it_does_not(road_camera) -> None:
    calib, probe = road_points(road_camera)
    assert len(calib) >= 20 and len(probe) >= 150
    raw_calib, raw_probe = road_camera.raw(calib), road_camera.raw(probe)
    with_lens = RoadPlane.from_points(raw_calib, calib, road_camera.lens)
    without = RoadPlane.from_points(raw_calib, calib)
    err_lens = np.linalg.norm(with_lens.to_world(raw_probe) - probe, axis=1)
    err_none = np.linalg.norm(without.to_world(raw_probe) - probe, axis=1)
    assert err_lens.max() < 0.01  # within 1 cm everywhere on the road
    assert err_none.max() > 0.5 and np.median(err_none) > 20 * err_lens.max()  # metres off at the edges
    assert with_lens.error.rms_px < 1e-6 and without.error.rms_px > 1.0
    # back into the video's own (distorted) pixels
    np.testing.assert_allclose(with_lens.to_image(probe), raw_probe, atol=1e-4)
    # image_points stay what was configured: raw pixels; ideal_points are what H maps
    np.testing.assert_array_equal(with_lens.image_points, raw_calib)
    np.testing.assert_allclose(with_lens.ideal_points, road_camera.ideal(calib), atol=1e-6)


def test_scale_and_horizon_with_a_lens_are_in_raw_pixels(road_camera) -> None:
    calib, probe = road_points(road_camera)
    plane = RoadPlane.from_points(road_camera.raw(calib), calib, road_camera.lens)
    # metres per raw pixel: what a box edge that is 1 px off in the video costs on the road
    raw = road_camera.raw(probe[:40])
    truth_x = np.linalg.norm(plane.to_world(raw + [0.5, 0]) - plane.to_world(raw - [0.5, 0]), axis=1)
    np.testing.assert_allclose(plane.metres_per_pixel(raw)[:, 0], truth_x, rtol=0.01)
    plain = RoadPlane.from_points(road_camera.ideal(calib), calib)  # the same camera without a lens
    edge = road_camera.raw(np.array([[10.0, 12.0]]))  # barrel squeezes the picture's edge: more metres per px
    assert plane.metres_per_pixel(edge)[0, 0] > 1.1 * plain.metres_per_pixel(road_camera.ideal([[10.0, 12.0]]))[0, 0]
    sky = np.array([[640.0, 100.0], [200.0, 150.0]])  # above the horizon (row ~172)
    assert not plane.in_front(sky).any() and np.isnan(plane.to_world(sky)).all()
    assert plane.in_front(road_camera.raw(probe)).all()
    beyond_fold = np.array([[2.0, 3.0]])  # a frame corner: past where k1 = -0.15 at 700 px folds back
    assert np.isnan(plane.to_world(beyond_fold)).all() and not plane.in_front(beyond_fold).any()
    assert np.isnan(plane.to_image([[60.0, 12.0]])).all()  # far off to the side: beyond the lens model too


def test_with_drift_and_a_lens_moves_raw_pixels_before_undistorting(road_camera) -> None:
    calib, probe = road_points(road_camera)
    plane = RoadPlane.from_points(road_camera.raw(calib), calib, road_camera.lens)
    ref_px = road_camera.raw(probe)
    # The camera swayed: frame pixel = reference pixel + (3, -2); drift maps frame -> reference.
    drift = np.array([[1.0, 0, -3.0], [0, 1, 2.0], [0, 0, 1]])
    moved = plane.with_drift(drift)
    np.testing.assert_allclose(moved.to_world(ref_px + [3.0, -2.0]), probe, atol=0.01)
    np.testing.assert_allclose(moved.to_world(ref_px + [3.0, -2.0]), plane.to_world(ref_px), atol=1e-9)
    np.testing.assert_allclose(moved.to_image(probe), ref_px + [3.0, -2.0], atol=1e-4)
    np.testing.assert_allclose(moved.image_points, plane.image_points + [3.0, -2.0], atol=1e-9)
    assert moved.lens == plane.lens and moved.in_front(ref_px + [3.0, -2.0]).all()
    # composing twice is one drift of both (frame 2 -> frame 1 -> reference)
    second = np.array([[np.cos(0.01), -np.sin(0.01), 5.0], [np.sin(0.01), np.cos(0.01), -1.0], [0, 0, 1]])
    px = ref_px[:10] + [7.0, 4.0]
    np.testing.assert_allclose(
        plane.with_drift(drift).with_drift(second).to_world(px), plane.with_drift(drift @ second).to_world(px)
    )
    # the other order (undistort, then apply the drift in ideal pixels: H @ drift, right for a pinhole) is
    # centimetres off at the far end already for this 3.6 px sway, and grows with it
    folded = RoadPlane(plane.H @ drift, np.linalg.inv(drift) @ plane.H_inv, plane.image_points, calib, plane.error)
    wrong = folded.to_world(plane.ideal_pixels(ref_px + [3.0, -2.0]))
    assert np.nanmax(np.linalg.norm(wrong - probe, axis=1)) > 0.03


def test_no_lens_is_exactly_the_plain_homography() -> None:
    from trafficstream.models.lens import LensModel

    plane, _ = make_plane()
    img, wld = plane.image_points, plane.world_points
    assert plane.lens is None and plane.drift is None
    np.testing.assert_array_equal(plane.H, fit_homography(img, wld))
    np.testing.assert_array_equal(plane.ideal_points, img)
    identity = RoadPlane.from_points(img, wld, LensModel(1000.0, 640.0, 360.0))  # no coefficients: no lens
    assert identity.lens is None
    np.testing.assert_array_equal(identity.H, plane.H)
    cal = Calibration(image_points=[tuple(p) for p in img], world_points=[tuple(p) for p in wld])
    np.testing.assert_array_equal(RoadPlane.from_calibration(cal).H, plane.H)
    drift = np.array([[1.0, 0, -12.0], [0, 1, 7.0], [0, 0, 1]])
    moved = plane.with_drift(drift)
    assert moved.drift is None  # folded into H, one projection per frame as before
    np.testing.assert_array_equal(moved.H, plane.H @ drift)
    np.testing.assert_array_equal(moved.H_inv, np.linalg.inv(drift) @ plane.H_inv)
    px = img + [3.0, -4.0]
    np.testing.assert_array_equal(plane.to_world(px), project(plane.H, px))


def test_a_calibration_with_a_lens_builds_a_lens_plane(road_camera) -> None:
    calib, probe = road_points(road_camera)
    raw = road_camera.raw(calib)
    cal = Calibration.model_validate(
        {
            "image_points": raw.tolist(),
            "world_points": calib.tolist(),
            "lens": {"focal_px": 700, "center_px": [640, 360], "k1": -0.15},
        }
    )
    plane = RoadPlane.from_calibration(cal)
    assert plane.lens == road_camera.lens
    np.testing.assert_allclose(plane.to_world(road_camera.raw(probe)), probe, atol=0.01)


def test_image_points_beyond_the_lens_fold_are_refused(road_camera) -> None:
    from trafficstream.models.lens import LensModel

    calib, _ = road_points(road_camera)
    raw = road_camera.raw(calib)
    with pytest.raises(ValueError, match=r"image_points \[.*\] lie beyond the radius .* lens"):
        RoadPlane.from_points(raw, calib, LensModel(700.0, 640.0, 360.0, k1=-1.0))


# -- fewer pairs with road markings ------------------------------------------------------------------------------
def _marking(H: np.ndarray, axis: str, value: float, along: tuple[float, float] = (5.0, 60.0), n: int = 5):
    t = np.linspace(*along, n)
    world = np.column_stack([np.full(n, value), t] if axis == "x" else [t, np.full(n, value)])
    return MarkingLine(project(np.linalg.inv(H), world), axis, value)


PROBES = np.array([[1.0, 3.0], [9.0, 50.0], [3.5, 80.0], [5.0, 20.0]])


@pytest.mark.parametrize(
    "pairs, lines",
    [
        ([[0.0, 12.0], [0.0, 48.0], [7.0, 48.0]], [("x", 0.0), ("x", 3.5), ("x", 7.0)]),  # three dash ends
        ([[0.0, 48.0], [7.0, 48.0]], [("x", 0.0), ("x", 3.5), ("x", 7.0), ("y", 12.0)]),  # + a stop line
        ([], [("x", 0.0), ("x", 7.0), ("y", 0.0), ("y", 30.0)]),  # four lines, no pair at all
    ],
)
def test_markings_with_fewer_pairs_recover_the_camera_exactly(pairs, lines) -> None:
    H = camera_homography()
    world = np.asarray(pairs, dtype=float).reshape(-1, 2)
    markings = [_marking(H, a, v, (-2.0, 9.0) if a == "y" else (5.0, 60.0)) for a, v in lines]
    fitted = fit_homography(project(np.linalg.inv(H), world), world, markings)
    np.testing.assert_allclose(project(fitted, project(np.linalg.inv(H), PROBES)), PROBES, atol=1e-6)


@pytest.mark.parametrize(
    "pairs, lines, needle",
    [
        # parallel lane lines and points on one of them: where along the road the other lanes lie is free
        ([[0.0, 12.0], [0.0, 48.0]], [("x", 0.0), ("x", 3.5), ("x", 7.0)], "undetermined"),
        ([[0.0, 12.0]], [("x", 0.0), ("x", 3.5), ("x", 7.0), ("x", 10.5)], "undetermined"),
        ([[0.0, 12.0]], [("x", 0.0), ("x", 3.5)], "6 constraints; a road plane needs 8"),
    ],
)
def test_markings_that_cannot_fix_the_plane_say_why(pairs, lines, needle) -> None:
    H = camera_homography()
    world = np.asarray(pairs, dtype=float)
    with pytest.raises(ValueError, match=needle):
        fit_homography(project(np.linalg.inv(H), world), world, [_marking(H, a, v) for a, v in lines])


def test_a_marking_needs_two_separate_pixels_and_an_axis() -> None:
    with pytest.raises(ValueError, match=">= 2 image points"):
        MarkingLine(np.array([[10.0, 10.0], [10.2, 10.3]]), "x", 0.0)
    with pytest.raises(ValueError, match="'x' or 'y'"):
        MarkingLine(np.array([[10.0, 10.0], [50.0, 90.0]]), "z", 0.0)


def test_traced_markings_refine_noisy_pairs() -> None:
    """Six clicked pairs with 1 px noise, with and without the three lane lines traced (1 px noise too): over
    50 draws the markings do not make the along-road scale worse, and the marking residuals stay at the noise."""
    rng = np.random.default_rng(3)
    H = camera_homography()
    G = np.linalg.inv(H)
    a, b = project(G, np.array([[3.5, 15.0]])), project(G, np.array([[3.5, 45.0]]))
    world = np.array([[x, y] for x in (0.0, 3.5, 7.0) for y in (12.0, 48.0)])
    errors: dict[str, list[float]] = {"pairs": [], "pairs+markings": []}
    for _ in range(50):
        image = project(G, world) + rng.normal(0, 1.0, world.shape)
        markings = [_marking(H, "x", x, n=8) for x in (0.0, 3.5, 7.0)]
        markings = [m.with_points(m.image_points + rng.normal(0, 1.0, m.image_points.shape)) for m in markings]
        for key, fitted in (
            ("pairs", fit_homography(image, world)),
            ("pairs+markings", fit_homography(image, world, markings)),
        ):
            errors[key].append(np.linalg.norm(project(fitted, a) - project(fitted, b)) / 30.0 - 1.0)
        assert np.sqrt(np.mean(marking_residuals_px(fitted, markings[1]) ** 2)) < 3.0
    rms = {k: float(np.sqrt(np.mean(np.square(v)))) for k, v in errors.items()}
    assert rms["pairs+markings"] <= rms["pairs"] * 1.05, rms
    assert rms["pairs+markings"] < 0.02


def test_road_plane_with_markings_through_a_lens_keeps_the_ends_as_anchors() -> None:
    from trafficstream.models.lens import LensModel, distort_pixels

    H = camera_homography()
    lens = LensModel(1000.0, 640.0, 360.0, -0.15, 0.02)
    markings = [_marking(H, "x", x, (8.0, 40.0)) for x in (0.0, 3.5, 7.0)]
    markings = [m.with_points(distort_pixels(m.image_points, lens)) for m in markings]  # as seen in the video
    world = np.array([[0.0, 40.0], [7.0, 40.0]])
    stop = _marking(H, "y", 10.0, (-1.0, 8.0))
    stop = stop.with_points(distort_pixels(stop.image_points, lens))
    image = distort_pixels(project(np.linalg.inv(H), world), lens)
    plane = RoadPlane.from_points(image, world, lens, [*markings, stop])
    raw_probes = distort_pixels(project(np.linalg.inv(H), PROBES[:2]), lens)
    np.testing.assert_allclose(plane.to_world(raw_probes), PROBES[:2], atol=1e-5)
    # the pairs, then each marking's two visible ends, their known coordinate exact
    assert len(plane.image_points) == len(world) + 2 * 4
    np.testing.assert_allclose(plane.world_points[2:4, 0], 0.0)
    np.testing.assert_allclose(sorted(plane.world_points[2:4, 1]), [8.0, 40.0], atol=1e-5)
    np.testing.assert_allclose(plane.world_points[-2:, 1], 10.0)
    assert plane.error.max_px < 1e-5
    assert plane.outside_distance_m(np.array([[3.5, 20.0]]))[0] == 0.0  # inside the markings' area


@pytest.mark.parametrize("direction", [(0.0, 1.0), (0.0, -1.0), (0.6, 0.8)])
def test_offset_speed_factor_predicts_the_speed_error_of_a_box_bias(direction) -> None:
    from pinhole_road import camera, to_pixels

    from trafficstream.models.homography import offset_speed_factor

    P = camera(f=1000.0, height=5.0, tilt_deg=6.0, yaw_deg=3.0, roll_deg=0.0)
    grid = np.array([[x, y] for x in (-4.0, 0.0, 4.0, 8.0) for y in (8.0, 20.0, 40.0, 80.0, 120.0)])
    plane = RoadPlane.from_points(to_pixels(P, grid), grid)
    u = np.asarray(direction) / np.linalg.norm(direction)
    for start in ([2.0, 25.0], [2.0, 60.0]):
        path = np.asarray(start) + np.outer(np.linspace(-0.5, 0.5, 11), u)  # a metre of road around the point
        biased = plane.to_world(to_pixels(P, path) + [0.0, 1.0])  # its box bottom one pixel low all the way
        measured = np.linalg.norm(biased[-1] - biased[0])  # the distance it seems to cover, true distance 1 m
        factor = offset_speed_factor(plane, to_pixels(P, np.asarray([start])), u)[0]
        assert measured - 1.0 == pytest.approx(factor, rel=0.05, abs=2e-4)
    assert factor < 0  # a box bottom too low reads slow, towards the camera or away from it


@pytest.mark.parametrize("direction", [(0.0, 1.0), (1.0, 0.0), (0.6, 0.8)])
def test_along_metres_per_pixel_is_the_spread_of_a_jittered_box_edge(direction) -> None:
    from pinhole_road import camera, to_pixels

    from trafficstream.models.homography import along_metres_per_pixel

    P = camera(f=1000.0, height=5.0, tilt_deg=6.0, yaw_deg=3.0, roll_deg=0.0)
    grid = np.array([[x, y] for x in (-4.0, 0.0, 4.0, 8.0) for y in (8.0, 20.0, 40.0, 80.0, 120.0)])
    plane = RoadPlane.from_points(to_pixels(P, grid), grid)
    u = np.asarray(direction) / np.linalg.norm(direction)
    rng = np.random.default_rng(3)
    scales = []
    for point in ([2.0, 15.0], [2.0, 60.0]):
        px = to_pixels(P, np.asarray([point]))
        jittered = plane.to_world(px + rng.normal(0.0, 1.0, (4000, 2)))  # one pixel of noise on both axes
        spread = float(np.std((jittered - point) @ u))
        scale = float(along_metres_per_pixel(plane, px, u)[0])
        assert spread == pytest.approx(scale, rel=0.08)
        scales.append(scale)
    assert scales[1] > 3 * scales[0]  # a pixel covers far more road far away (across: linearly, along: faster)
