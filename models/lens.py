"""Lens distortion: the Brown-Conrady (OpenCV) radial-tangential model, as pure functions on pixel arrays.

Wide-angle traffic cameras bend straight lane lines; a road-plane homography fitted to bent pixels is wrong by
metres at the picture's edges. A camera whose ``calibration.lens`` is given has its pixels *undistorted* (to
the ideal pinhole picture with the same focal length and principal point) before the homography maps them to
the road, and road points *distorted* after it maps them back. Coefficients follow OpenCV's
``(k1, k2, p1, p2, k3)`` so values from ``cv2.calibrateCamera`` or a camera's data sheet can be pasted in.

The radial model ``r_d = r (1 + k1 r^2 + k2 r^4 + k3 r^6)`` only describes a lens while ``r_d`` grows with
``r``: past :func:`monotonic_radius` it folds back (two ideal points land on one pixel) and means nothing.
:func:`undistort_pixels` solves on the increasing branch only and gives NaN for pixels beyond the fold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

_UNDISTORT_ITERATIONS = 50  # safeguarded Newton: ~5 steps in practice, bisection fallback bounds the worst case
_UNDISTORT_TOL = 1e-12  # normalised units, ~1e-9 px at f = 1000 px
_RESIDUAL_TOL = 1e-9  # a solution must reproduce its pixel to ~1e-6 px at f = 1000 px


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

    @property
    def centre(self) -> np.ndarray:
        return np.array([self.cx, self.cy], dtype=np.float64)


def _as_pixels(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float64).reshape(-1, 2)


def _radial(r2: np.ndarray, lens: LensModel) -> np.ndarray:
    return 1 + r2 * (lens.k1 + r2 * (lens.k2 + r2 * lens.k3))


def distort_normalised(xy: np.ndarray, lens: LensModel) -> np.ndarray:
    """Ideal normalised coordinates (N, 2) -> distorted normalised coordinates (the forward model)."""
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    radial = _radial(r2, lens)
    xd = x * radial + 2 * lens.p1 * x * y + lens.p2 * (r2 + 2 * x * x)
    yd = y * radial + lens.p1 * (r2 + 2 * y * y) + 2 * lens.p2 * x * y
    return np.stack([xd, yd], axis=1)


def distort_pixels(pixels: np.ndarray, lens: LensModel) -> np.ndarray:
    """Ideal (pinhole) pixels (N, 2) -> the pixels the distorting lens puts them at."""
    px = _as_pixels(pixels)
    if lens.is_identity:
        return px.copy()
    c = lens.centre
    return distort_normalised((px - c) / lens.focal_px, lens) * lens.focal_px + c


@lru_cache(maxsize=64)  # np.roots is an eigen-solve: once per lens, not once per frame
def monotonic_radius(lens: LensModel) -> float:
    """Ideal normalised radius where the radial map ``r -> r_d`` stops increasing (``inf``: it never does).

    ``d r_d / d r = 1 + 3 k1 s + 5 k2 s^2 + 7 k3 s^3`` with ``s = r^2``: its smallest positive root is the fold.
    """
    roots = np.roots([7 * lens.k3, 5 * lens.k2, 3 * lens.k1, 1.0])  # leading zeros are dropped by np.roots
    real = [float(z.real) for z in roots if abs(z.imag) <= 1e-9 * max(1.0, abs(z)) and z.real > 0]
    return math.sqrt(min(real)) if real else math.inf


@lru_cache(maxsize=64)
def max_distorted_radius(lens: LensModel) -> float:
    """Largest distorted normalised radius on the increasing branch: farther pixels have no undistortion."""
    rc = monotonic_radius(lens)
    return math.inf if math.isinf(rc) else rc * float(_radial(np.array([rc * rc]), lens)[0])


def max_distorted_radius_px(lens: LensModel) -> float:
    """:func:`max_distorted_radius` in pixels from the principal point."""
    return max_distorted_radius(lens) * lens.focal_px


def in_model_range(ideal_pixels: np.ndarray, lens: LensModel) -> np.ndarray:
    """(N,) bool: ideal pixels inside the fold (where :func:`distort_pixels` describes the lens); NaN -> False."""
    px = _as_pixels(ideal_pixels)
    r = np.linalg.norm((px - lens.centre) / lens.focal_px, axis=1)
    return r < monotonic_radius(lens)


def _undistort_radius(rd: np.ndarray, lens: LensModel) -> np.ndarray:
    """Ideal radius of each distorted radius ``rd`` (>= 0), on the increasing branch; NaN beyond the fold.

    Newton safeguarded by a bracket: the branch is increasing on [0, fold), so the root is bracketed and a
    step leaving the bracket is replaced by bisection (plain fixed-point iteration diverges for strong barrel).
    """
    rc = monotonic_radius(lens)
    reachable = rd < max_distorted_radius(lens)  # False for NaN too
    rd = np.where(reachable, rd, 0.0)

    def f(r: np.ndarray) -> np.ndarray:
        return r * _radial(r * r, lens)

    lo = np.zeros_like(rd)
    if math.isinf(rc):  # r_d grows without bound: double an upper end until it brackets
        hi = np.maximum(rd, 1e-12)
        for _ in range(64):
            short = f(hi) < rd
            if not short.any():
                break
            hi = np.where(short, hi * 2, hi)
    else:
        hi = np.full_like(rd, rc)
    r = np.clip(rd / _radial(rd * rd, lens), lo, hi)  # one fixed-point step: Newton then needs ~3 more
    for _ in range(_UNDISTORT_ITERATIONS):
        g = f(r) - rd
        if not (np.abs(g) > _UNDISTORT_TOL).any():
            break
        lo = np.where(g < 0, r, lo)
        hi = np.where(g > 0, r, hi)
        s = r * r
        slope = 1 + s * (3 * lens.k1 + s * (5 * lens.k2 + s * 7 * lens.k3))
        with np.errstate(divide="ignore", invalid="ignore"):
            nxt = r - g / slope
        outside = ~((nxt >= lo) & (nxt <= hi))  # NaN / inf steps fall back to bisection too
        nxt = np.where(outside, (lo + hi) / 2, nxt)
        r = nxt
    return np.where(reachable, r, np.nan)


def _jacobian(xy: np.ndarray, lens: LensModel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """d(distorted)/d(ideal), symmetric: (dxd/dx, dxd/dy = dyd/dx, dyd/dy)."""
    x, y = xy[:, 0], xy[:, 1]
    r2 = x * x + y * y
    radial = _radial(r2, lens)
    dradial = lens.k1 + r2 * (2 * lens.k2 + r2 * 3 * lens.k3)  # d radial / d r2
    a = radial + 2 * x * x * dradial + 2 * lens.p1 * y + 6 * lens.p2 * x
    b = 2 * x * y * dradial + 2 * lens.p1 * x + 2 * lens.p2 * y
    d = radial + 2 * y * y * dradial + 6 * lens.p1 * y + 2 * lens.p2 * x
    return a, b, d


def undistort_normalised(xy_d: np.ndarray, lens: LensModel) -> np.ndarray:
    """Distorted normalised coordinates (N, 2) -> ideal ones; NaN where there is no solution inside the fold."""
    rd = np.hypot(xy_d[:, 0], xy_d[:, 1])
    r = _undistort_radius(rd, lens)
    with np.errstate(divide="ignore", invalid="ignore"):
        scale = np.where(rd > 0, r / rd, 1.0)
    xy = xy_d * scale[:, None]  # exact for a radial-only lens
    if lens.p1 or lens.p2:  # tangential terms are small next to the radial ones: Newton from the radial answer
        for _ in range(_UNDISTORT_ITERATIONS):
            res = distort_normalised(xy, lens) - xy_d
            a, b, d = _jacobian(xy, lens)
            det = a * d - b * b
            with np.errstate(divide="ignore", invalid="ignore"):
                step = np.stack([(d * res[:, 0] - b * res[:, 1]) / det, (a * res[:, 1] - b * res[:, 0]) / det], axis=1)
            xy = xy - step
            if not (np.abs(step) > _UNDISTORT_TOL).any():
                break
        a, b, d = _jacobian(xy, lens)
        ok = np.linalg.norm(distort_normalised(xy, lens) - xy_d, axis=1) < _RESIDUAL_TOL
        ok &= np.hypot(xy[:, 0], xy[:, 1]) < monotonic_radius(lens)
        ok &= a * d - b * b > 0  # the tangential terms did not fold the picture here either
        xy[~ok] = np.nan
    return xy


def undistort_pixels(pixels: np.ndarray, lens: LensModel) -> np.ndarray:
    """Distorted pixels (N, 2) -> ideal pinhole pixels (the inverse of :func:`distort_pixels`).

    NaN stays NaN, and a pixel beyond the model's fold (no ideal point inside it maps there) comes back NaN.
    """
    px = _as_pixels(pixels)
    if lens.is_identity:
        return px.copy()
    c = lens.centre
    return undistort_normalised((px - c) / lens.focal_px, lens) * lens.focal_px + c
