"""Road-plane calibration from vanishing points: a camera model instead of clicked point pairs.

A traffic camera is a pinhole with square pixels and its principal point near the picture's centre. For such a
camera, the road plane follows from two directions on the road and one known length (the approach of the
fully automatic calibrations evaluated on BrnoCompSpeed):

- lane lines (markings ``x = value``, traced over their length) meet at the vanishing point ``u`` of the road's
  direction;
- lines across the road (markings ``y = value``: stop lines, the ends of long bars) meet at ``v``, the
  vanishing point of the perpendicular direction. From ``u`` and ``v`` the focal length follows:
  ``f^2 = -(u - c)·(v - c)``. Without them, give the focal length (``--focal-px`` or the lens block); the
  horizon is then taken as level (no roll), which is how traffic cameras are mounted;
- the known positions of the markings (the lane lines' ``x``, the transverse lines' ``y``, any point pairs)
  fix the scale (the camera's height) and the origin, by least squares.

:func:`calibrate_from_markings` returns a :class:`VanishingCalibration`: the camera (focal length, tilt, roll,
height), the image->road homography, and point pairs consistent with it. ``python -m models.calibrate
--vanishing`` prints them as a ``calibration:`` block. All pixels here are *ideal* (undistorted) pixels; the
caller undistorts a lens first.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize_scalar

from trafficstream.models.homography import MarkingLine, as_points, project
from trafficstream.models.lens import LensModel, undistort_pixels

MIN_FOCAL_PX = 50.0  # below this the "vanishing points" are measurement noise, not a camera
TRACE_PX = 0.5  # how far a traced line may be off, for the focal length's sensitivity check
MAX_FOCAL_SPREAD = 0.08  # refuse to measure a focal length that half-pixel tracing errors move by more than 8 %


def fit_image_line(pixels: np.ndarray) -> np.ndarray:
    """Homogeneous line (a, b, c), a^2 + b^2 = 1, through pixels (K >= 2, 2) by total least squares."""
    pts = as_points(pixels, "line pixels")
    centre = pts.mean(axis=0)
    _, _, vt = np.linalg.svd(pts - centre)
    normal = vt[-1]  # the direction of least spread
    return np.array([normal[0], normal[1], -float(normal @ centre)])


def vanishing_point(lines: Sequence[np.ndarray]) -> np.ndarray:
    """Homogeneous point (unit norm) closest to every line (>= 2 homogeneous lines): the smallest singular
    vector of the stacked lines, so image lines that are parallel give a point at infinity (w = 0)."""
    if len(lines) < 2:
        raise ValueError("a vanishing point needs >= 2 lines")
    L = np.asarray(lines, dtype=np.float64)
    scale = max(float(np.abs(L[:, 2]).max()), 1.0)  # balance the pixel-sized offsets against the unit normals
    A = L * np.array([1.0, 1.0, 1.0 / scale])
    _, s, vt = np.linalg.svd(A)
    if len(s) > 1 and s[-2] < 1e-12:
        raise ValueError("the lines are one line: trace lines at different positions")
    p = vt[-1] * np.array([1.0, 1.0, 1.0 / scale])
    return p / np.linalg.norm(p)


def focal_from_vanishing_points(u: np.ndarray, v: np.ndarray, centre: Sequence[float]) -> float:
    """Focal length (px) of a square-pixel camera with principal point ``centre`` from the vanishing points of
    two perpendicular road directions (homogeneous). Raises ValueError when they admit no camera."""
    c = np.asarray(centre, dtype=np.float64)
    if abs(u[2]) < 1e-12 or abs(v[2]) < 1e-12:
        raise ValueError(
            "a vanishing point lies at infinity (its lines are parallel in the picture): the focal length "
            "cannot be measured; give it (--focal-px)"
        )
    du, dv = u[:2] / u[2] - c, v[:2] / v[2] - c
    f2 = -float(du @ dv)
    if not f2 > MIN_FOCAL_PX**2:
        raise ValueError(
            "the two vanishing points admit no camera with its principal point at the centre (the lines across "
            "the road are not perpendicular to the lane lines, are traced too short, or are nearly parallel in the "
            "picture, as for a camera looking straight along the road); give --focal-px"
        )
    return math.sqrt(f2)


def _nudged(line: np.ndarray, length_px: float) -> list[np.ndarray]:
    """The line shifted by +-TRACE_PX and turned by +-TRACE_PX over its traced length (about its centre)."""
    a, b, c = line
    out = [np.array([a, b, c + d]) for d in (-TRACE_PX, TRACE_PX)]
    centre = -c * np.array([a, b])  # the point of the line nearest the origin; any point of it would do
    for turn in (-TRACE_PX / length_px, TRACE_PX / length_px):
        ct, st = math.cos(turn), math.sin(turn)
        n = np.array([ct * a - st * b, st * a + ct * b])
        out.append(np.array([n[0], n[1], -float(n @ centre)]))
    return out


def focal_spread(along: Sequence[MarkingLine], across: Sequence[MarkingLine], centre: Sequence[float]) -> float:
    """Largest relative change of the measured focal length when any one traced line is off by half a pixel
    (shifted, or turned over its length): inf when such an error leaves no camera. Near 0 for lines that pin
    both vanishing points; large when one lies far out (a camera looking straight along the road has the lines
    across it parallel in the picture, and their vanishing point carries no focal length)."""
    lines = [fit_image_line(m.image_points) for m in (*along, *across)]
    lengths = [float(np.linalg.norm(np.ptp(m.image_points, axis=0))) for m in (*along, *across)]
    n = len(along)

    def focal(ls: list[np.ndarray]) -> float:
        try:
            return focal_from_vanishing_points(vanishing_point(ls[:n]), vanishing_point(ls[n:]), centre)
        except ValueError:
            return math.inf

    f0 = focal(lines)
    worst = 0.0
    for i, line in enumerate(lines):
        for alt in _nudged(line, max(lengths[i], 1.0)):
            f = focal([*lines[:i], alt, *lines[i + 1 :]])
            worst = max(worst, abs(f - f0) / f0 if math.isfinite(f) else math.inf)
    return worst


def intrinsics(focal_px: float, centre: Sequence[float]) -> np.ndarray:
    return np.array([[focal_px, 0.0, centre[0]], [0.0, focal_px, centre[1]], [0.0, 0.0, 1.0]])


def road_axes(K: np.ndarray, u: np.ndarray, v: np.ndarray | None) -> np.ndarray:
    """(3, 3) rows r_x, r_y, r_z: the road's axes in camera coordinates (x right, y down, z forward). ``r_y``
    runs along the road away from the camera (towards ``u``), ``r_x`` across it to the right, ``r_z`` up from
    the road. Without ``v`` the camera has no roll: the road's normal lies in the camera's y-z plane."""
    K_inv = np.linalg.inv(K)
    r_y = K_inv @ u
    r_y = r_y / np.linalg.norm(r_y)
    if r_y[2] < 0 or (r_y[2] == 0 and r_y[1] > 0):  # the road direction that points forward (or up the image)
        r_y = -r_y
    if v is None:
        r_z = np.cross(np.array([1.0, 0.0, 0.0]), r_y)
        if np.linalg.norm(r_z) < 1e-9:
            raise ValueError("the road runs straight across the picture: trace >= 2 lines across it (y = ...)")
        r_z = r_z / np.linalg.norm(r_z)
        if r_z[1] > 0:
            r_z = -r_z
        r_x = np.cross(r_y, r_z)
    else:
        r_x = K_inv @ v
        r_x = r_x - (r_x @ r_y) * r_y  # exactly perpendicular (a given focal length leaves a small angle)
        norm = np.linalg.norm(r_x)
        if norm < 1e-9:
            raise ValueError("the two vanishing points coincide: the lines across the road run along it")
        r_x = r_x / norm
        r_z = np.cross(r_x, r_y)
        if r_z[1] > 0:  # pointing down into the road: flip across so that z is up and x to the right
            r_x, r_z = -r_x, -r_z
    return np.stack([r_x, r_y, r_z])


def _unit_road_coords(K: np.ndarray, axes: np.ndarray, pixels: np.ndarray) -> np.ndarray:
    """(N, 2) road coordinates (x, y) of pixels for a camera 1 m above the road, origin below the camera; NaN
    for pixels at or above the horizon."""
    q = np.linalg.inv(K) @ np.column_stack([pixels, np.ones(len(pixels))]).T
    down = axes[2] @ q  # < 0 for rays that meet the road
    with np.errstate(divide="ignore", invalid="ignore"):
        xy = -(axes[:2] @ q) / down
    xy[:, down >= 0] = np.nan
    return xy.T


@dataclass(frozen=True)
class VanishingCalibration:
    """The camera and road plane found from vanishing points; ``H`` maps ideal pixels to road metres."""

    focal_px: float
    centre: tuple[float, float]
    height_m: float
    tilt_deg: float  # of the optical axis below the road plane
    roll_deg: float  # of the horizon in the picture (0: level)
    H: np.ndarray
    u: np.ndarray  # vanishing point along the road (homogeneous)
    v: np.ndarray | None  # across the road, when measured
    focal_from: str  # "vanishing points", "positions" (fitted to the markings' known positions) or "given"
    focal_spread: float = 0.0  # relative uncertainty of a measured focal length (0 when given)
    rms_m: float = 0.0  # of the markings' and pairs' known coordinates under this calibration

    @property
    def focal_measured(self) -> bool:
        return self.focal_from != "given"

    def to_world(self, pixels: np.ndarray) -> np.ndarray:
        return project(self.H, pixels)

    def pairs(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Image / road point pairs consistent with this calibration at ``pixels`` (those on the road)."""
        pts = as_points(pixels)
        world = self.to_world(pts)
        ok = np.isfinite(world).all(axis=1)
        return pts[ok], world[ok]


@dataclass(frozen=True)
class _Scale:
    height_m: float
    x0: float
    y0: float
    rms_m: float  # of the markings' and pairs' known coordinates, each marking weighted as one observation


def _scale(
    K: np.ndarray,
    axes: np.ndarray,
    markings: Sequence[MarkingLine],
    image_points: np.ndarray | None,
    world_points: np.ndarray | None,
) -> _Scale:
    """Camera height and origin by least squares, h * unit_coord - offset = known coordinate, over every
    traced pixel (each marking weighted as one observation) and every pair."""
    rows: list[np.ndarray] = []
    rhs: list[np.ndarray] = []
    weights: list[np.ndarray] = []
    for m in markings:
        coords = _unit_road_coords(K, axes, m.image_points)[:, 0 if m.axis == "x" else 1]
        if not np.isfinite(coords).all():
            raise ValueError(f"marking {m.axis} = {m.value:g} reaches above the horizon of the fitted camera")
        col = np.zeros((len(coords), 3))
        col[:, 0], col[:, 1 if m.axis == "x" else 2] = coords, -1.0
        rows.append(col)
        rhs.append(np.full(len(coords), m.value))
        weights.append(np.full(len(coords), 1 / math.sqrt(len(coords))))
    if image_points is not None and world_points is not None and len(image_points):
        unit = _unit_road_coords(K, axes, as_points(image_points))
        ok = np.isfinite(unit).all(axis=1)
        for axis in (0, 1):
            col = np.zeros((int(ok.sum()), 3))
            col[:, 0], col[:, 1 + axis] = unit[ok, axis], -1.0
            rows.append(col)
            rhs.append(as_points(world_points)[ok, axis])
            weights.append(np.ones(int(ok.sum())))
    A, y, w = np.vstack(rows), np.concatenate(rhs), np.concatenate(weights)
    known_x, known_y = set(y[A[:, 1] != 0]), set(y[A[:, 2] != 0])
    if len(known_x) < 2 and len(known_y) < 2:
        raise ValueError(
            "the markings fix no scale: give lane lines at two different x (a known lane width), lines across "
            "at two different y, or point pairs"
        )
    has_y = bool(known_y)
    if not has_y:  # y's origin is a convention: the nearest traced lane-line pixel
        A = A[:, :2]
    if np.linalg.matrix_rank(A) < A.shape[1]:
        raise ValueError("the markings fix no scale and origin: add point pairs")
    sol, *_ = np.linalg.lstsq(A * w[:, None], y * w, rcond=None)
    h, x0 = float(sol[0]), float(sol[1])
    if not h > 0:
        raise ValueError(
            f"the markings' positions contradict the picture (camera height {h:.2f} m): check the x = / y = values "
            "(x grows to the right looking along the road, y away from the camera)"
        )
    if has_y:
        y0 = float(sol[2])
    else:
        lane_pixels = np.vstack([m.image_points for m in markings if m.axis == "x"])
        y0 = h * float(np.nanmin(_unit_road_coords(K, axes, lane_pixels)[:, 1]))
    residual = (A @ sol - y) * w
    rms = math.sqrt(float(residual @ residual) / float(w @ w))
    return _Scale(h, x0, y0, rms)


FOCAL_SEARCH = (0.2, 8.0)  # focal lengths tried by the position fit, in multiples of the picture's width
PINNED = 1.5  # the position fit's focal range (where the rms stays within 1.5x + 2 cm of its best) must be this narrow


def focal_from_positions(
    u: np.ndarray,
    v: np.ndarray | None,
    centre: Sequence[float],
    markings: Sequence[MarkingLine],
    image_points: np.ndarray | None = None,
    world_points: np.ndarray | None = None,
) -> tuple[float, float, tuple[float, float]]:
    """Focal length that best fits the markings' known positions (the spacing of lines across the road at
    known y, point pairs) given the road's vanishing point: (focal px, rms m, range of focal lengths that fit
    about as well). Raises ValueError when the positions do not pin it (e.g. only two lines across)."""

    def rms(f: float) -> float:
        try:
            K = intrinsics(f, centre)
            return _scale(K, road_axes(K, u, v), markings, image_points, world_points).rms_m
        except ValueError:
            return math.inf

    width = 2 * float(centre[0])
    grid = np.geomspace(FOCAL_SEARCH[0] * width, FOCAL_SEARCH[1] * width, 120)
    errs = np.array([rms(float(f)) for f in grid])
    if not np.isfinite(errs).any():
        raise ValueError("no focal length fits the markings' positions")
    k = int(np.argmin(errs))
    lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
    best = minimize_scalar(lambda t: rms(math.exp(t)), bounds=(math.log(lo), math.log(hi)), method="bounded")
    f, e = math.exp(float(best.x)), float(best.fun)
    fits = grid[errs <= PINNED * e + 0.02]
    span = (float(fits.min()), float(fits.max())) if len(fits) else (f, f)
    if k in (0, len(grid) - 1) or span[1] / span[0] > PINNED:
        raise ValueError(
            "the markings' positions do not pin the focal length (it fits between "
            f"{span[0]:.0f} and {span[1]:.0f} px): trace >= 3 lines across the road at known y, or give --focal-px"
        )
    return f, e, span


def calibrate_from_markings(
    markings: Sequence[MarkingLine],
    centre: Sequence[float],
    *,
    focal_px: float | None = None,
    image_points: np.ndarray | None = None,
    world_points: np.ndarray | None = None,
) -> VanishingCalibration:
    """Camera and road plane from >= 2 lane lines (``x = value``), and >= 2 lines across the road
    (``y = value``) or a focal length; the markings' values and any point pairs fix scale and origin.

    Without lines across the road or pairs, y = 0 is where the nearest traced lane-line pixel lies."""
    along = [m for m in markings if m.axis == "x"]
    across = [m for m in markings if m.axis == "y"]
    if len(along) < 2:
        raise ValueError(f"vanishing-point calibration needs >= 2 lane lines (x = ...), got {len(along)}")
    u = vanishing_point([fit_image_line(m.image_points) for m in along])
    v = vanishing_point([fit_image_line(m.image_points) for m in across]) if len(across) >= 2 else None
    spread, how = 0.0, "given"
    problem = "give --focal-px"
    f = float(focal_px) if focal_px is not None else 0.0
    if focal_px is None and v is not None:
        try:
            f = focal_from_vanishing_points(u, v, centre)
            spread = focal_spread(along, across, centre)
        except ValueError as exc:
            problem, spread = str(exc), math.inf
        if spread > MAX_FOCAL_SPREAD:
            if math.isfinite(spread):
                problem = (
                    f"half a pixel of tracing error moves the focal length from the vanishing points by "
                    f"{spread * 100:.0f} % (the lines across the road are nearly parallel in the picture, as for "
                    "a camera looking straight along the road)"
                )
        else:
            how = "vanishing points"
    if focal_px is None and how == "given":  # not measured by the vanishing points: fit it to the positions
        try:
            f, _, span = focal_from_positions(u, v, centre, markings, image_points, world_points)
            spread, how = (span[1] - span[0]) / (2 * f), "positions"
        except ValueError as exc:
            raise ValueError(
                f"the focal length cannot be measured: {problem}; {exc}"
                if v is not None
                else f"vanishing-point calibration needs the focal length: {exc}"
            ) from None
    if not f > 0:
        raise ValueError(f"focal length must be > 0 px, got {f:g}")
    K = intrinsics(f, centre)
    axes = road_axes(K, u, v)
    fit = _scale(K, axes, markings, image_points, world_points)
    h, x0, y0 = fit.height_m, fit.x0, fit.y0
    shift = np.array([[1.0, 0.0, -x0], [0.0, 1.0, -y0], [0.0, 0.0, 1.0]])
    H = shift @ np.vstack([-h * axes[0], -h * axes[1], axes[2]]) @ np.linalg.inv(K)
    # camera z (optical axis) against the road plane; the horizon's angle is the roll
    tilt = math.degrees(math.asin(float(np.clip(-axes[2][2], -1, 1))))
    roll = math.degrees(math.atan2(-axes[2][0], -axes[2][1]))
    H = H / np.linalg.norm(H)  # not H[2, 2]: zero when the pixel (0, 0) lies on the horizon
    return VanishingCalibration(f, (float(centre[0]), float(centre[1])), h, tilt, roll, H, u, v, how, spread, fit.rms_m)


def pairs_from_markings(
    markings: Sequence[MarkingLine],
    centre: Sequence[float],
    lens: LensModel | None = None,
    *,
    focal_px: float | None = None,
    image_points: np.ndarray | None = None,
    world_points: np.ndarray | None = None,
) -> tuple[VanishingCalibration, np.ndarray, np.ndarray]:
    """:func:`calibrate_from_markings` of markings traced in the *raw* picture (``lens``: undistorted first),
    and the point pairs consistent with it that a calibration block holds: the markings' visible ends and any
    given pairs, each pixel once, in order, as (raw pixels, road metres); pixels beyond the horizon left out."""
    ideal = [m if lens is None else m.with_points(undistort_pixels(m.image_points, lens)) for m in markings]
    given = None if image_points is None else np.asarray(image_points, dtype=np.float64).reshape(-1, 2)
    cal = calibrate_from_markings(
        ideal,
        centre,
        focal_px=focal_px,
        image_points=given if given is None or lens is None else undistort_pixels(given, lens),
        world_points=world_points,
    )
    ends = np.vstack([*(m.ends() for m in markings), *([] if given is None else [given])])
    raw = ends[np.sort(np.unique(np.round(ends, 3), axis=0, return_index=True)[1])]
    world = cal.to_world(raw if lens is None else undistort_pixels(raw, lens))
    keep = np.isfinite(world).all(axis=1)
    return cal, raw[keep], world[keep]
