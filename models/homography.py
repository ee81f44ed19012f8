"""Road-plane homography: image pixels <-> metres on the (flat) road surface.

A camera's calibration pairs >= 4 image points with their positions on the road plane (metres, any metric
frame; by convention y runs along the road). :func:`fit_homography` fits the 3x3 image->world homography over
all pairs, :class:`RoadPlane` wraps it with its inverse and its reprojection error.

Pixels beyond the horizon have no place on the road plane; :meth:`RoadPlane.to_world` returns NaN for them
instead of the huge, sign-flipped coordinates a bare homography gives (one source of "1000 km/h" speeds).

A camera with lens distortion (``calibration.lens``, :mod:`models.lens`) is fitted on *undistorted* ("ideal")
pixels: a homography only holds for a pinhole picture. :class:`RoadPlane`'s methods still take and return the
video's own (raw, distorted) pixels; only ``H`` / ``H_inv`` work on ideal ones, so use the methods, not ``H``.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import cv2
import numpy as np
from scipy.optimize import least_squares

from trafficstream.models.lens import LensModel, distort_pixels, in_model_range, undistort_pixels

if TYPE_CHECKING:
    from trafficstream.cameras import Calibration

log = logging.getLogger(__name__)

PointsLike = np.ndarray | Sequence[Sequence[float]]

# |w| below this (relative to the calibration points' |w|) counts as "at the horizon".
_HORIZON_EPS = 1e-6


@dataclass(frozen=True, slots=True)
class ReprojectionError:
    """How well a homography maps the calibration pairs: world-side error in metres (image points mapped
    to the road) and image-side error in pixels (world points mapped into the image)."""

    rms_m: float
    max_m: float
    rms_px: float
    max_px: float


def as_points(points: PointsLike, name: str = "points") -> np.ndarray:
    """Coerce to a float64 (N, 2) array; raise ``ValueError`` naming ``name`` otherwise."""
    arr = np.asarray(points, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 2:
        arr = arr.reshape(1, 2)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"{name}: expected (N, 2) points, got shape {arr.shape}")
    return arr


def project(H: np.ndarray, points: PointsLike) -> np.ndarray:
    """Apply the homography ``H`` to (N, 2) points. Points mapped to infinity (w == 0) come back NaN."""
    pts = as_points(points)
    homo = np.hstack([pts, np.ones((len(pts), 1))]) @ np.asarray(H, dtype=np.float64).T
    w = homo[:, 2:3]
    with np.errstate(divide="ignore", invalid="ignore"):
        out = homo[:, :2] / w
    out[np.abs(w[:, 0]) < 1e-12] = np.nan
    return out


def _normaliser(pts: np.ndarray) -> np.ndarray:
    """Hartley normalisation: centroid to the origin, mean distance sqrt(2). Makes the DLT well conditioned."""
    centroid = pts.mean(axis=0)
    dist = np.sqrt(((pts - centroid) ** 2).sum(axis=1)).mean()
    s = np.sqrt(2) / dist if dist > 0 else 1.0
    return np.array([[s, 0, -s * centroid[0]], [0, s, -s * centroid[1]], [0, 0, 1]])


def _dlt(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Normalised direct linear transform src -> dst (algebraic least squares over all pairs)."""
    Ts, Td = _normaliser(src), _normaliser(dst)
    s = project(Ts, src)
    d = project(Td, dst)
    rows = []
    for (x, y), (u, v) in zip(s, d, strict=True):
        rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
        rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
    _, _, vt = np.linalg.svd(np.asarray(rows))
    Hn = vt[-1].reshape(3, 3)
    H = np.linalg.inv(Td) @ Hn @ Ts
    return H / H[2, 2] if abs(H[2, 2]) > 1e-12 else H / np.linalg.norm(H)


def _check_pairs(image_points: PointsLike, world_points: PointsLike) -> tuple[np.ndarray, np.ndarray]:
    img = as_points(image_points, "image_points")
    wld = as_points(world_points, "world_points")
    if len(img) != len(wld):
        raise ValueError(f"image_points has {len(img)} points but world_points has {len(wld)}")
    if len(img) < 4:
        raise ValueError(f"a homography needs at least 4 point pairs, got {len(img)}")
    for name, pts in (("image_points", img), ("world_points", wld)):
        if not np.isfinite(pts).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
        if len(np.unique(pts, axis=0)) != len(pts):
            raise ValueError(f"{name}: contains duplicate points")
        centred = pts - pts.mean(axis=0)
        sv = np.linalg.svd(centred, compute_uv=False)
        if sv[1] <= 1e-9 * max(sv[0], 1e-12):
            raise ValueError(f"{name}: points are (nearly) collinear; they must span an area of the road")
    return img, wld


def fit_homography(image_points: PointsLike, world_points: PointsLike) -> np.ndarray:
    """Fit the image->world homography (3, 3) over all >= 4 pairs.

    Normalised DLT, then (with more than 4 pairs) a Levenberg-Marquardt refinement of the image-side
    residuals: clicked image points are the noisy side, world points come from road-marking standards.
    Raises ``ValueError`` for degenerate input (too few, mismatched, duplicate or collinear points).
    """
    img, wld = _check_pairs(image_points, world_points)
    G = _dlt(wld, img)  # world -> image
    if len(img) > 4:

        def residuals(h: np.ndarray) -> np.ndarray:
            return (project(np.append(h, 1.0).reshape(3, 3), wld) - img).ravel()

        g0 = (G / G[2, 2]).ravel()[:8]
        res = least_squares(residuals, g0, method="lm")
        if res.success and np.isfinite(res.x).all():
            G = np.append(res.x, 1.0).reshape(3, 3)
    if not np.isfinite(G).all() or abs(np.linalg.det(G)) < 1e-12 * np.abs(G).max() ** 3:
        raise ValueError("the point pairs give a singular homography; check that they are on the road plane")
    H = np.linalg.inv(G)
    return H / H[2, 2] if abs(H[2, 2]) > 1e-12 else H


def reprojection_error(H: np.ndarray, image_points: PointsLike, world_points: PointsLike) -> ReprojectionError:
    """Residuals of the pairs under ``H`` (image->world): metres on the road and pixels in the image."""
    img, wld = as_points(image_points, "image_points"), as_points(world_points, "world_points")
    err_m = np.linalg.norm(project(H, img) - wld, axis=1)
    err_px = np.linalg.norm(project(np.linalg.inv(H), wld) - img, axis=1)
    return ReprojectionError(
        rms_m=float(np.sqrt(np.mean(err_m**2))),
        max_m=float(err_m.max()),
        rms_px=float(np.sqrt(np.mean(err_px**2))),
        max_px=float(err_px.max()),
    )


def _w(H: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Homogeneous scale of points under ``H``: its sign tells which side of the horizon they are on."""
    return np.hstack([pts, np.ones((len(pts), 1))]) @ H[2]


def _distance_outside_convex(points: np.ndarray, hull: np.ndarray) -> np.ndarray:
    """Distance of each point outside a convex polygon (0 inside). ``hull`` is (M, 2), M >= 3, any winding."""
    a = hull
    b = np.roll(hull, -1, axis=0)
    ab = b - a  # (M, 2)
    ap = points[:, None, :] - a[None, :, :]  # (N, M, 2)
    t = np.clip((ap * ab).sum(-1) / np.maximum((ab * ab).sum(-1), 1e-12), 0.0, 1.0)
    closest = a[None] + t[..., None] * ab[None]
    edge_dist = np.linalg.norm(points[:, None, :] - closest, axis=-1).min(axis=1)
    cross = ab[None, :, 0] * ap[..., 1] - ab[None, :, 1] * ap[..., 0]
    inside = (cross >= 0).all(axis=1) | (cross <= 0).all(axis=1)
    return np.where(inside, 0.0, edge_dist)


@dataclass(frozen=True, eq=False)
class RoadPlane:
    """A fitted road plane between the video's pixels and world metres.

    Every method takes and returns *raw* pixels: the frame as decoded, lens distortion and camera drift
    included. Internally a raw pixel goes frame -> ``drift`` -> reference frame -> undistorted by ``lens`` ->
    ``H`` -> metres. Without a lens, ``drift`` is folded into ``H`` (``drift`` stays None) and ``H`` maps raw
    pixels directly, exactly as before lenses existed; with one, ``H`` / ``H_inv`` map *ideal* (undistorted,
    reference-frame) pixels, so code must not apply ``H`` to raw pixels itself (:meth:`ideal_pixels` /
    :meth:`raw_pixels` convert).

    ``image_points`` are the calibration image points in raw pixels of this plane's frame (as configured; moved
    by :meth:`with_drift`), ``ideal_points`` the same points as ``H`` maps them (undistorted, reference frame;
    ``image_points`` without a lens), ``world_points`` their road positions, whose convex hull is "the
    calibrated area" that :meth:`outside_distance_m` measures against. ``error`` is the fit's reprojection
    error on the ideal points (metres, and ideal pixels).
    """

    H: np.ndarray
    H_inv: np.ndarray
    image_points: np.ndarray
    world_points: np.ndarray
    error: ReprojectionError
    lens: LensModel | None = None
    drift: np.ndarray | None = None  # with a lens only: frame -> reference raw pixels, applied before undistorting
    ideal_points: np.ndarray = None  # type: ignore[assignment]  # filled in by __post_init__

    def __post_init__(self) -> None:
        if self.ideal_points is None:
            object.__setattr__(self, "ideal_points", self.image_points)

    @classmethod
    def from_points(
        cls, image_points: PointsLike, world_points: PointsLike, lens: LensModel | None = None
    ) -> RoadPlane:
        """Fit the plane to raw image points (as seen in the video) and their road positions; with a ``lens``
        the image points are undistorted first. Raises ``ValueError`` for unusable pairs."""
        img, wld = _check_pairs(image_points, world_points)
        lens = None if lens is None or lens.is_identity else lens  # an identity lens keeps the plain fast path
        ideal = img if lens is None else undistort_pixels(img, lens)
        bad = np.flatnonzero(~np.isfinite(ideal).all(axis=1))
        if bad.size:
            raise ValueError(
                f"image_points {bad.tolist()} lie beyond the radius where the lens model can be undistorted "
                "(its radial distortion folds back there): check lens k1, k2, k3"
            )
        H = fit_homography(ideal, wld)
        return cls(H, np.linalg.inv(H), img, wld, reprojection_error(H, ideal, wld), lens, None, ideal)

    @classmethod
    def from_calibration(cls, calibration: Calibration) -> RoadPlane:
        return cls.from_points(calibration.image_points, calibration.world_points, calibration.lens_model())

    def ideal_pixels(self, pixels: PointsLike) -> np.ndarray:
        """Raw pixels of this plane's frame -> the pixels ``H`` maps (drift removed, undistorted); NaN where
        the lens model cannot undistort."""
        px = as_points(pixels, "pixels")
        if self.lens is None:
            return px
        if self.drift is not None:
            px = project(self.drift, px)
        return undistort_pixels(px, self.lens)

    def raw_pixels(self, ideal: PointsLike) -> np.ndarray:
        """The inverse of :meth:`ideal_pixels`; NaN beyond the lens model's fold, where it means nothing."""
        px = as_points(ideal, "ideal")
        if self.lens is None:
            return px
        out = distort_pixels(px, self.lens)
        out[~in_model_range(px, self.lens)] = np.nan
        return out if self.drift is None else project(np.linalg.inv(self.drift), out)

    def _in_front_ideal(self, ideal: np.ndarray) -> np.ndarray:
        w = _w(self.H, ideal)
        ref = _w(self.H, self.ideal_points)
        return w * np.sign(np.median(ref)) > _HORIZON_EPS * np.abs(ref).min()  # NaN compares False

    def in_front(self, pixels: PointsLike) -> np.ndarray:
        """(N,) bool: True where a pixel lies below the horizon, on the same side as the calibration points
        (and, with a lens, where it can be undistorted)."""
        return self._in_front_ideal(self.ideal_pixels(pixels))

    def to_world(self, pixels: PointsLike) -> np.ndarray:
        """Pixels (N, 2) -> road-plane metres (N, 2); NaN for pixels at or beyond the horizon."""
        ideal = self.ideal_pixels(pixels)
        out = project(self.H, ideal)
        out[~self._in_front_ideal(ideal)] = np.nan
        return out

    def to_image(self, world: PointsLike) -> np.ndarray:
        """Road-plane metres (N, 2) -> pixels (N, 2); NaN for points behind the camera (or, with a lens,
        beyond the lens model's fold)."""
        wld = as_points(world, "world")
        out = project(self.H_inv, wld)
        out[_w(self.H_inv, wld) * np.sign(np.median(_w(self.H_inv, self.world_points))) <= 0] = np.nan
        return self.raw_pixels(out)

    def with_drift(self, drift: np.ndarray) -> RoadPlane:
        """The plane of a frame whose pixels ``drift`` (3x3, frame -> reference raw pixels, from
        :mod:`models.registration`) maps onto the reference frame the calibration was made on."""
        D = np.asarray(drift, dtype=np.float64).reshape(3, 3)
        moved = project(np.linalg.inv(D), self.image_points)
        if self.lens is None:  # distortion-free: the drift folds into H, the per-frame path stays one projection
            return RoadPlane(self.H @ D, np.linalg.inv(D) @ self.H_inv, moved, self.world_points, self.error)
        # The drift acts on raw pixels, before the lens is undone: it cannot fold into H, so it is kept apart.
        total = D if self.drift is None else self.drift @ D
        return replace(self, image_points=moved, drift=total)

    def outside_distance_m(self, world: PointsLike) -> np.ndarray:
        """(N,) metres by which world points lie outside the calibrated area (0 inside, inf for NaN)."""
        pts = as_points(world, "world")
        hull = cv2.convexHull(self.world_points.astype(np.float32)).reshape(-1, 2).astype(np.float64)
        finite = np.isfinite(pts).all(axis=1)
        out = np.full(len(pts), np.inf)
        if finite.any():
            out[finite] = _distance_outside_convex(pts[finite], hull)
        return out

    def metres_per_pixel(self, pixels: PointsLike) -> np.ndarray:
        """(N, 2) local scale: metres on the road per pixel moved along image x and along image y."""
        px = as_points(pixels, "pixels")
        base = self.to_world(px)
        dx = self.to_world(px + [1.0, 0.0]) - base
        dy = self.to_world(px + [0.0, 1.0]) - base
        return np.stack([np.linalg.norm(dx, axis=1), np.linalg.norm(dy, axis=1)], axis=1)
