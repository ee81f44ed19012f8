"""Lens distortion model: round trips over the whole picture, OpenCV's convention, the fold, NaN."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from trafficstream.models.lens import (
    LensModel,
    distort_pixels,
    in_model_range,
    max_distorted_radius_px,
    monotonic_radius,
    undistort_pixels,
)

LENSES = {
    "mild barrel": LensModel(800.0, 640.0, 360.0, k1=-0.12),
    "strong barrel": LensModel(700.0, 640.0, 360.0, k1=-0.3, k2=0.1),
    "pincushion": LensModel(900.0, 640.0, 360.0, k1=0.2),
    "tangential": LensModel(700.0, 652.0, 349.0, k1=-0.3, k2=0.1, p1=0.01, p2=-0.015, k3=0.01),
    "off-centre, all terms": LensModel(1100.0, 600.0, 380.0, k1=-0.25, k2=0.08, p1=-0.004, p2=0.006, k3=-0.01),
}


def frame_grid(step: float = 16.0) -> np.ndarray:
    xs, ys = np.meshgrid(np.arange(0.0, 1280.0 + 1e-9, step), np.arange(0.0, 720.0 + 1e-9, step))
    return np.stack([xs.ravel(), ys.ravel()], axis=1)


@pytest.mark.parametrize("name", list(LENSES))
def test_undistort_then_distort_gives_back_every_pixel_of_the_frame(name: str) -> None:
    lens = LENSES[name]
    raw = frame_grid()
    ideal = undistort_pixels(raw, lens)
    assert np.isfinite(ideal).all()  # none of these lenses folds inside a 1280 x 720 frame
    np.testing.assert_allclose(distort_pixels(ideal, lens), raw, atol=1e-6)
    moved = np.linalg.norm(ideal - raw, axis=1)
    assert moved.max() > 20  # the test is not vacuous: the corners move by tens of pixels


@pytest.mark.parametrize("name", list(LENSES))
def test_distort_then_undistort_gives_back_ideal_points(name: str) -> None:
    lens = LENSES[name]
    ideal = frame_grid(40.0) * 0.8 + [128.0, 72.0]  # the middle of the picture, well inside any fold
    np.testing.assert_allclose(undistort_pixels(distort_pixels(ideal, lens), lens), ideal, atol=1e-6)


def test_barrel_pulls_the_edges_in_and_the_centre_stays() -> None:
    lens = LENSES["strong barrel"]
    raw = np.array([[640.0, 360.0], [1270.0, 360.0], [640.0, 10.0]])
    ideal = undistort_pixels(raw, lens)
    np.testing.assert_allclose(ideal[0], raw[0], atol=1e-9)
    assert ideal[1, 0] > raw[1, 0] + 50 and ideal[2, 1] < raw[2, 1] - 20  # undistorting pushes the edges out


@pytest.mark.parametrize("name", list(LENSES))
def test_same_convention_as_opencv(name: str) -> None:
    lens = LENSES[name]
    K = np.array([[lens.focal_px, 0, lens.cx], [0, lens.focal_px, lens.cy], [0, 0, 1]])
    dist = np.array([lens.k1, lens.k2, lens.p1, lens.p2, lens.k3])
    ideal = frame_grid(64.0) * 0.9 + [64.0, 36.0]
    # cv2.projectPoints of camera-frame rays (no rotation, no translation) is the distortion model itself
    rays = np.column_stack([(ideal - [lens.cx, lens.cy]) / lens.focal_px, np.ones(len(ideal))])
    projected, _ = cv2.projectPoints(rays, np.zeros(3), np.zeros(3), K, dist)
    np.testing.assert_allclose(distort_pixels(ideal, lens), projected.reshape(-1, 2), atol=1e-6)


def test_nan_stays_nan_and_does_not_spoil_the_others() -> None:
    lens = LENSES["tangential"]
    raw = np.array([[100.0, 100.0], [np.nan, 300.0], [900.0, np.nan], [1200.0, 700.0]])
    ideal = undistort_pixels(raw, lens)
    assert np.isnan(ideal[1:3]).all() and np.isfinite(ideal[[0, 3]]).all()
    np.testing.assert_allclose(distort_pixels(ideal[[0, 3]], lens), raw[[0, 3]], atol=1e-6)
    assert np.isnan(distort_pixels(raw, lens)[1:3]).all()


def test_identity_lens_changes_nothing() -> None:
    lens = LensModel(700.0, 640.0, 360.0)
    raw = frame_grid(100.0)
    assert lens.is_identity and monotonic_radius(lens) == math.inf
    np.testing.assert_array_equal(undistort_pixels(raw, lens), raw)
    np.testing.assert_array_equal(distort_pixels(raw, lens), raw)


def test_the_fold_of_a_too_strong_barrel() -> None:
    # k1 alone: r_d = r (1 + k1 r^2) peaks at r = 1 / sqrt(-3 k1), where r_d = 2/3 of that
    lens = LensModel(700.0, 640.0, 360.0, k1=-0.5)
    rc = 1 / math.sqrt(1.5)
    assert monotonic_radius(lens) == pytest.approx(rc)
    assert max_distorted_radius_px(lens) == pytest.approx(700 * rc * 2 / 3)
    limit = max_distorted_radius_px(lens)
    raw = np.array([[640.0 + limit - 1, 360.0], [640.0 + limit + 1, 360.0], [640.0, 360.0 - limit - 5]])
    ideal = undistort_pixels(raw, lens)
    assert np.isfinite(ideal[0]).all() and np.isnan(ideal[1:]).all()  # beyond the fold: no ideal point
    np.testing.assert_allclose(distort_pixels(ideal[:1], lens), raw[:1], atol=1e-6)
    assert in_model_range(ideal[:1], lens).all()
    assert not in_model_range(np.array([[640.0 + 700 * rc * 1.01, 360.0]]), lens).any()


def test_strong_barrel_where_fixed_point_iteration_fails() -> None:
    # near its fold the plain fixed-point scheme stalls (20 steps: 0.2 px off; cv2.undistortPoints: 5 px off);
    # the bracketed Newton solver still inverts the model exactly
    lens = LensModel(700.0, 640.0, 360.0, k1=-0.35, k2=0.02)
    limit = max_distorted_radius_px(lens)
    angles = np.linspace(0, 2 * np.pi, 17)
    raw = np.column_stack([640 + 0.995 * limit * np.cos(angles), 360 + 0.995 * limit * np.sin(angles)])
    ideal = undistort_pixels(raw, lens)
    assert np.isfinite(ideal).all()
    np.testing.assert_allclose(distort_pixels(ideal, lens), raw, atol=1e-6)
