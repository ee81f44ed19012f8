"""Lens distortion: the Brown-Conrady (OpenCV) radial-tangential model, as pure functions on pixel arrays.

Wide-angle traffic cameras bend straight lane lines; a road-plane homography fitted to bent pixels is wrong by
metres at the picture's edges. A camera whose ``calibration.lens`` is given has its pixels *undistorted* (to
the ideal pinhole picture with the same focal length and principal point) before the homography maps them to
the road, and road points *distorted* after it maps them back. Coefficients follow OpenCV's
``(k1, k2, p1, p2, k3)`` so values from ``cv2.calibrateCamera`` or a camera's data sheet can be pasted in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_UNDISTORT_ITERATIONS = 20
_UNDISTORT_TOL = 1e-10  # normalised units, ~1e-7 px at f = 1000 px


@dataclass(frozen=True, slots=True)
class LensModel:
    """Intrinsics (square pixels, no skew) and distortion coefficients."""

    focal_px: float
    cx: float
    cy: float
    k1: float = 0.0
    k2: float = 0.0
    p1: float = 0.0
    p2: float = 0.0
    k3: float = 0.0

    @property
    def is_identity(self) -> bool:
        return not any((self.k1, self.k2, self.p1, self.p2, self.k3))


def _as_pixels(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def distort_normalised(xy: np.ndarray, lens: LensModel) -> np.ndarray:
    """Ideal normalised coordinates (N, 2) -> distorted normalised coordinates (the forward model)."""
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    radial = 1 + r2 * (lens.k1 + r2 * (lens.k2 + r2 * lens.k3))
    xd = x * radial + 2 * lens.p1 * x * y + lens.p2 * (r2 + 2 * x * x)
    yd = y * radial + lens.p1 * (r2 + 2 * y * y) + 2 * lens.p2 * x * y
    return np.stack([xd, yd], axis=1)


def distort_pixels(pixels: np.ndarray, lens: LensModel) -> np.ndarray:
    """Ideal (pinhole) pixels (N, 2) -> the pixels the distorting lens puts them at."""
    px = _as_pixels(pixels)
    c = np.array([lens.cx, lens.cy])
    return distort_normalised((px - c) / lens.focal_px, lens) * lens.focal_px + c


def undistort_pixels(pixels: np.ndarray, lens: LensModel) -> np.ndarray:
    """Distorted pixels (N, 2) -> ideal pinhole pixels, by fixed-point iteration of the forward model (the
    same scheme as OpenCV's ``undistortPoints``); NaN stays NaN."""
    px = _as_pixels(pixels)
    if lens.is_identity:
        return px.copy()
    c = np.array([lens.cx, lens.cy])
    target = (px - c) / lens.focal_px
    xy = target.copy()
    for _ in range(_UNDISTORT_ITERATIONS):
        x, y = xy[:, 0], xy[:, 1]
        r2 = x * x + y * y
        radial = 1 + r2 * (lens.k1 + r2 * (lens.k2 + r2 * lens.k3))
        dx = 2 * lens.p1 * x * y + lens.p2 * (r2 + 2 * x * x)
        dy = lens.p1 * (r2 + 2 * y * y) + 2 * lens.p2 * x * y
        nxt = np.stack([(target[:, 0] - dx) / radial, (target[:, 1] - dy) / radial], axis=1)
        done = not np.any(np.abs(nxt - xy) > _UNDISTORT_TOL)  # NaN compares False: NaN rows never hold it up
        xy = nxt
        if done:
            break
    return xy * lens.focal_px + c
