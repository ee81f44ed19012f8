"""Road-plane homography: image pixels <-> metres on the (flat) road surface.

A camera's calibration pairs >= 4 image points with their positions on the road plane (metres, any metric
frame; by convention y runs along the road). :func:`fit_homography` fits the 3x3 image->world homography over
all pairs, :class:`RoadPlane` wraps it with its inverse and its reprojection error.

Pixels beyond the horizon have no place on the road plane; :meth:`RoadPlane.to_world` returns NaN for them
instead of the huge, sign-flipped coordinates a bare homography gives (one source of "1000 km/h" speeds).

Fewer pairs: road markings whose world position is known in one coordinate (:class:`MarkingLine`: a lane line
``x = 3.5``, a stop line or the end of a dash ``y = 12``) each add two constraints, so two pairs and three lane
lines of a known lane width determine the plane as well as six clicked pairs. A marking traced over its whole
visible length uses every pixel along it, and its parallels fix the vanishing point that single clicks
near the horizon get wrong.

A camera with lens distortion (``calibration.lens``, :mod:`models.lens`) is fitted on *undistorted* ("ideal")
pixels: a homography only holds for a pinhole picture. :class:`RoadPlane`'s methods still take and return the
video's own (raw, distorted) pixels; only ``H`` / ``H_inv`` work on ideal ones, so use the methods, not ``H``.
"""

from __future__ import annotations

import logging
import math
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


def _paired(image_points: PointsLike, world_points: PointsLike) -> tuple[np.ndarray, np.ndarray]:
    """Both sides as (N, 2) arrays (N may be 0): as many on each side, finite, no point twice."""
    img = as_points(image_points, "image_points") if len(image_points) else np.empty((0, 2))
    wld = as_points(world_points, "world_points") if len(world_points) else np.empty((0, 2))
    if len(img) != len(wld):
        raise ValueError(f"image_points has {len(img)} points but world_points has {len(wld)}")
    for name, pts in (("image_points", img), ("world_points", wld)):
        if not np.isfinite(pts).all():
            raise ValueError(f"{name}: contains NaN or infinite values")
        if len(np.unique(pts, axis=0)) != len(pts):
            raise ValueError(f"{name}: contains duplicate points")
    return img, wld


def _check_pairs(image_points: PointsLike, world_points: PointsLike) -> tuple[np.ndarray, np.ndarray]:
    img, wld = _paired(image_points, world_points)
    if len(img) < 4:
        raise ValueError(f"a homography needs at least 4 point pairs, got {len(img)}")
    for name, pts in (("image_points", img), ("world_points", wld)):
        centred = pts - pts.mean(axis=0)
        sv = np.linalg.svd(centred, compute_uv=False)
        if sv[1] <= 1e-9 * max(sv[0], 1e-12):
            raise ValueError(f"{name}: points are (nearly) collinear; they must span an area of the road")
    return img, wld


@dataclass(frozen=True, eq=False)
class MarkingLine:
    """A straight road marking traced in the image (>= 2 pixels along it) whose road-plane position is known in
    one coordinate: ``axis`` "x" for a line ``x = value`` (a lane line, by the y-along-the-road convention),
    "y" for ``y = value`` (a stop line, a dash's end). Where along the marking the pixels lie does not matter."""

    image_points: np.ndarray  # (K >= 2, 2)
    axis: str
    value: float

    def __post_init__(self) -> None:
        pts = as_points(self.image_points, "marking image_points")
        object.__setattr__(self, "image_points", pts)
        if self.axis not in ("x", "y"):
            raise ValueError(f"marking axis must be 'x' or 'y', got {self.axis!r}")
        if not np.isfinite(pts).all() or not math.isfinite(self.value):
            raise ValueError(f"marking {self.axis} = {self.value:g}: contains NaN or infinite values")
        if len(pts) < 2 or np.ptp(pts, axis=0).max() < 1.0:
            raise ValueError(f"marking {self.axis} = {self.value:g}: needs >= 2 image points >= 1 px apart")

    @property
    def world_line(self) -> np.ndarray:
        """(a, b, c) with a X + b Y + c = 0 on the road plane."""
        return np.array([1.0, 0.0, -self.value]) if self.axis == "x" else np.array([0.0, 1.0, -self.value])

    def with_points(self, image_points: np.ndarray) -> MarkingLine:
        return MarkingLine(image_points, self.axis, self.value)

    def ends(self) -> np.ndarray:
        """(2, 2): the two image points farthest apart, the visible extent of the marking."""
        d = np.linalg.norm(self.image_points[:, None] - self.image_points[None], axis=-1)
        i, j = np.unravel_index(int(np.argmax(d)), d.shape)
        return self.image_points[[i, j]]


def marking_residuals_px(H: np.ndarray, marking: MarkingLine) -> np.ndarray:
    """(K,) signed image distance (pixels of ``H``'s image side) of each marking pixel from where the fitted
    plane puts the world line."""
    return _line_distances(np.linalg.inv(H), marking.world_line, marking.image_points)


def _line_distances(G: np.ndarray, world_line: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    m = np.linalg.inv(G).T @ world_line  # the world line in the image (world -> image ``G``)
    return (pixels @ m[:2] + m[2]) / max(float(np.hypot(m[0], m[1])), 1e-300)


def _check_mixed(
    image_points: PointsLike, world_points: PointsLike, markings: Sequence[MarkingLine]
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs may be fewer than 4 (even none) next to markings, but together they must give >= 8 constraints."""
    img, wld = _paired(image_points, world_points)
    constraints = 2 * len(img) + 2 * len(markings)
    if constraints < 8:
        raise ValueError(
            f"{len(img)} point pairs and {len(markings)} marking lines give {constraints} constraints; a road "
            "plane needs 8 (each pair and each marking line gives 2)"
        )
    return img, wld


def _fit_with_markings(img: np.ndarray, wld: np.ndarray, markings: Sequence[MarkingLine]) -> np.ndarray:
    """World -> image homography from pairs and marking lines: a normalised DLT over both kinds of constraint
    (a pair: the usual two rows; a marking pixel p on world line l: ``l . H p = 0``, linear in the image->world
    ``H``), checked for a plane the constraints leave undetermined, then refined by Levenberg-Marquardt on
    image-side residuals (pair offsets, marking pixels' distances from the projected world line)."""
    line_px = np.vstack([m.image_points for m in markings])
    Ti = _normaliser(np.vstack([img, line_px]))
    known = [wld] if len(wld) else []
    xs = [m.value for m in markings if m.axis == "x"] + list(wld[:, 0])
    ys = [m.value for m in markings if m.axis == "y"] + list(wld[:, 1])
    x0, y0 = (float(np.mean(xs)) if xs else 0.0), (float(np.mean(ys)) if ys else 0.0)
    known += [np.array([[m.value, y0] if m.axis == "x" else [x0, m.value]]) for m in markings]
    Tw = _normaliser(np.vstack(known))

    def solve(img_: np.ndarray, lines_px: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        rows = []
        for (x, y), (u, v) in zip(project(Ti, img_), project(Tw, wld), strict=True):
            rows.append([-x, -y, -1, 0, 0, 0, u * x, u * y, u])
            rows.append([0, 0, 0, -x, -y, -1, v * x, v * y, v])
        for m, px in zip(markings, lines_px, strict=True):
            ln = np.linalg.inv(Tw).T @ m.world_line
            ln = ln / np.linalg.norm(ln)
            for p in project(Ti, px):
                rows.append(list(np.kron(ln, [p[0], p[1], 1.0])))
        _, sv, vt = np.linalg.svd(np.asarray(rows))
        return np.linalg.inv(Tw) @ vt[-1].reshape(3, 3) @ Ti, sv

    why = (
        "leave the road plane undetermined (parallel lane lines fix the road's direction and widths, not how far "
        "along the road each point lies): add a transverse marking (y = ...) or a pair off the line through the "
        "others"
    )
    undetermined = ValueError(f"the pairs and marking lines {why}")
    H, sv = solve(img, [m.image_points for m in markings])
    if len(sv) < 8 or sv[7] < 1e-9 * sv[0]:  # rank 8: one null direction, the homography
        raise undetermined
    if not np.isfinite(H).all() or abs(np.linalg.det(H)) < 1e-12 * np.abs(H).max() ** 3:
        # noise can lend an undetermined set a rank it does not have; the fit then comes out singular
        raise ValueError(f"the pairs and marking lines give a singular homography: they are off the road, or {why}")
    # Determinacy is structural, but noise hides it: rebuild the constraints from noise-free data under the
    # first fit (pairs projected, marking pixels moved onto their projected lines) and look for a second null
    # direction there.
    G = np.linalg.inv(H)
    exact_img = project(G, wld) if len(wld) else img
    exact_lines = []
    for m in markings:
        d = _line_distances(G, m.world_line, m.image_points)
        n = np.linalg.inv(G).T @ m.world_line
        exact_lines.append(m.image_points - d[:, None] * n[:2] / np.hypot(n[0], n[1]))
    _, sv = solve(exact_img, exact_lines)
    if len(sv) < 8 or sv[7] < 1e-6 * sv[0]:
        raise undetermined

    def residuals(g: np.ndarray) -> np.ndarray:
        Gp = np.append(g, 1.0).reshape(3, 3)
        parts = [(project(Gp, wld) - img).ravel()] if len(wld) else []
        parts += [_line_distances(Gp, m.world_line, m.image_points) for m in markings]
        return np.concatenate(parts)

    g0 = (G / G[2, 2]).ravel()[:8]
    with np.errstate(all="ignore"):
        res = least_squares(residuals, g0, method="lm")
    if res.success and np.isfinite(res.x).all():
        G = np.append(res.x, 1.0).reshape(3, 3)
    return G


def fit_homography(
    image_points: PointsLike, world_points: PointsLike, markings: Sequence[MarkingLine] = ()
) -> np.ndarray:
    """Fit the image->world homography (3, 3) over all >= 4 pairs (or fewer pairs plus ``markings``).

    Normalised DLT, then (with more than 4 pairs) a Levenberg-Marquardt refinement of the image-side
    residuals: clicked image points are the noisy side, world points come from road-marking standards.
    Raises ``ValueError`` for degenerate input (too few, mismatched, duplicate or collinear points).
    """
    if markings:
        img, wld = _check_mixed(image_points, world_points, markings)
        G = _fit_with_markings(img, wld, markings)
        if not np.isfinite(G).all() or abs(np.linalg.det(G)) < 1e-12 * np.abs(G).max() ** 3:
            raise ValueError("the pairs and marking lines give a singular homography")
        H = np.linalg.inv(G)
        return H / H[2, 2] if abs(H[2, 2]) > 1e-12 else H
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
        cls,
        image_points: PointsLike,
        world_points: PointsLike,
        lens: LensModel | None = None,
        markings: Sequence[MarkingLine] = (),
    ) -> RoadPlane:
        """Fit the plane to raw image points (as seen in the video) and their road positions, and to marking
        lines (raw pixels along them); with a ``lens`` every pixel is undistorted first. Raises ``ValueError``
        for unusable input.

        Each marking's two visible ends join the pairs as anchors (their known coordinate exact, the other as
        fitted), so the calibrated area, the horizon side and the reprojection error cover the markings too."""
        if markings:
            img, wld = _check_mixed(image_points, world_points, markings)
        else:
            img, wld = _check_pairs(image_points, world_points)
        lens = None if lens is None or lens.is_identity else lens  # an identity lens keeps the plain fast path
        ideal = img if lens is None else undistort_pixels(img, lens)
        bad = np.flatnonzero(~np.isfinite(ideal).all(axis=1))
        if bad.size:
            raise ValueError(
                f"image_points {bad.tolist()} lie beyond the radius where the lens model can be undistorted "
                "(its radial distortion folds back there): check lens k1, k2, k3"
            )
        if not markings:
            H = fit_homography(ideal, wld)
            return cls(H, np.linalg.inv(H), img, wld, reprojection_error(H, ideal, wld), lens, None, ideal)
        ideal_marks = [m if lens is None else m.with_points(undistort_pixels(m.image_points, lens)) for m in markings]
        for i, m in enumerate(ideal_marks):
            if not np.isfinite(m.image_points).all():
                raise ValueError(
                    f"markings[{i}] has pixels beyond the radius where the lens model can be undistorted: "
                    "check lens k1, k2, k3"
                )
        H = fit_homography(ideal, wld, ideal_marks)
        raw_ends = np.vstack([m.ends() for m in markings])
        ideal_ends = raw_ends if lens is None else undistort_pixels(raw_ends, lens)
        world_ends = project(H, ideal_ends)
        for k, m in enumerate(markings):  # the known coordinate is exact; the fit places the other
            world_ends[2 * k : 2 * k + 2, 0 if m.axis == "x" else 1] = m.value
        img_all, wld_all, ideal_all = (
            np.vstack([img, raw_ends]),
            np.vstack([wld, world_ends]),
            np.vstack([ideal, ideal_ends]),
        )
        err = reprojection_error(H, ideal_all, wld_all)
        return cls(H, np.linalg.inv(H), img_all, wld_all, err, lens, None, ideal_all)

    @classmethod
    def from_calibration(cls, calibration: Calibration) -> RoadPlane:
        markings = [MarkingLine(np.asarray(p, dtype=float), a, v) for p, a, v in calibration.marking_keys()]
        return cls.from_points(
            np.asarray(calibration.image_points, dtype=float).reshape(-1, 2),
            np.asarray(calibration.world_points, dtype=float).reshape(-1, 2),
            calibration.lens_model(),
            markings,
        )

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


# How well a detector's box edge locates a vehicle's ground contact, one sigma in the pixels of the video: the
# random part (jitter from frame to frame). Used for passage uncertainties and for the noise a windowed speed
# inherits from it.
BOX_EDGE_SIGMA_PX = 1.0


def along_metres_per_pixel(
    plane: RoadPlane, pixels: PointsLike, direction: PointsLike | Sequence[float] | None = None
) -> np.ndarray:
    """(N,) per ground pixel, metres along the road-plane ``direction`` ((N, 2) or (2,), default the road's y axis)
    that one pixel of random box-edge noise moves the ground point there (its along-track components for a pixel
    along image x and one along image y, added in quadrature). What the jitter of a box bottom does to a track's
    positions, and so to the speed fitted over them; NaN where the plane gives no point."""
    px = as_points(pixels, "pixels")
    u = np.broadcast_to(np.asarray((0.0, 1.0) if direction is None else direction, dtype=np.float64), px.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = u / np.linalg.norm(u, axis=1, keepdims=True)
        base = plane.to_world(px)
        along_x = ((plane.to_world(px + [1.0, 0.0]) - base) * u).sum(axis=1)
        along_y = ((plane.to_world(px + [0.0, 1.0]) - base) * u).sum(axis=1)
        return np.hypot(along_x, along_y)


def offset_speed_factor(
    plane: RoadPlane, pixels: PointsLike, direction: PointsLike | Sequence[float] | None = None, step_m: float = 0.5
) -> np.ndarray:
    """(N,) per ground pixel, the relative speed error that one pixel of constant downward offset of the ground
    point (a box bottom that sits one pixel low: shadow, blur, the detector's own bias) makes for a vehicle there
    moving along the road-plane ``direction`` ((N, 2) or (2,), default the road's y axis): the speed reads
    ``(1 + delta * factor)`` times the truth for an offset of ``delta`` px. The offset is a fixed number of
    pixels but not of metres: it covers more road the farther the vehicle is, so its change along the path adds
    to the displacement. ``|factor| * speed`` is the speed error per pixel of box bias (resolution). Negative
    for a camera looking down the road; NaN where the plane gives no point."""
    px = as_points(pixels, "pixels")
    u = np.broadcast_to(np.asarray((0.0, 1.0) if direction is None else direction, dtype=np.float64), px.shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        u = u / np.linalg.norm(u, axis=1, keepdims=True)
        world = plane.to_world(px)
        n = len(px)
        ends = plane.to_image(np.concatenate([world + step_m * u, world - step_m * u]))  # ahead, then behind
        probes = plane.to_world(np.concatenate([ends + (0.0, 0.5), ends - (0.0, 0.5)]))
        offset = probes[: 2 * n] - probes[2 * n :]  # road metres one pixel down moves the ground point there
        return ((offset[:n] - offset[n:]) * u).sum(axis=1) / (2.0 * step_m)
