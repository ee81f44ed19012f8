"""Camera configuration: where a camera's video comes from and how its pixels map onto the road.

A deployment lists its cameras in the ``cameras:`` section of its config file (see ``infra/config/``).
Everything checkable without the video is checked when the settings load (finite numbers, distinct
calibration points, a homography that fits -- on the undistorted points when a ``lens`` is given, whose model
must be invertible out to the calibration points and the ROI --, a simple polygon as ROI, counting lines /
lanes / zones with unique ids, drawn on the road plane only when there is one);
:func:`check_cameras_against_sources` (trafficstream.config) reads each video's header at start-up and checks
ROI, tiles, calibration points, the lens's principal point and the image-space lines / lanes / zones against
the frame size.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlparse

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from trafficstream.messages import CAMERA_ID_PATTERN

if TYPE_CHECKING:
    from trafficstream.models.lens import LensModel

Point = tuple[FiniteFloat, FiniteFloat]  # NaN / inf would pass every geometric test and poison every fit
_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)
# Where a line, lane or zone is drawn: "image" = source pixels (x right, y down the screen), "road" = road-plane
# metres of the camera's calibration (what tracks carry: world_x_m / world_y_m; immune to camera drift).
Space = Literal["image", "road"]
# Ids of lines, lanes and zones (and direction names) end up in table keys and event ids: same shape as camera ids.
GeometryId = Annotated[str, Field(pattern=CAMERA_ID_PATTERN.pattern)]
_MIN_AREA = {"image": (1.0, "px²"), "road": (0.1, "m²")}


# -- geometry (pure) ----------------------------------------------------------------------------------------
def _fmt(p: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(c):g}" for c in p) + "]"


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def duplicate_points(pts: np.ndarray, tol: float = 1e-9) -> tuple[int, int] | None:
    """First pair (i, j) of points closer than ``tol`` (relative to the points' magnitude), else None."""
    scale = max(1.0, float(np.abs(pts).max(initial=0.0)))
    for i in range(len(pts)):
        d = np.linalg.norm(pts[i + 1 :] - pts[i], axis=1)
        close = np.flatnonzero(d <= tol * scale)
        if close.size:
            return i, i + 1 + int(close[0])
    return None


def _max_non_collinear_area(pts: np.ndarray) -> float:
    """Largest triangle area among the points: ~0 when they all lie on one line."""
    best = 0.0
    for i in range(len(pts)):
        for j in range(i + 1, len(pts)):
            for k in range(j + 1, len(pts)):
                best = max(best, abs(_cross(pts[i], pts[j], pts[k])) / 2)
    return best


def polygon_area(pts: np.ndarray) -> float:
    """Unsigned shoelace area (meaningful for simple polygons)."""
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def polygon_centroid(pts: np.ndarray) -> tuple[float, float]:
    """Area centroid of a simple polygon (the vertex mean when it has no area)."""
    x, y = pts[:, 0], pts[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    a = cross.sum() / 2
    if abs(a) < 1e-12:
        return float(x.mean()), float(y.mean())
    return float(((x + xn) * cross).sum() / (6 * a)), float(((y + yn) * cross).sum() / (6 * a))


def _on_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray, eps: float) -> bool:
    return (
        abs(_cross(a, b, p)) <= eps
        and min(a[0], b[0]) - 1e-9 <= p[0] <= max(a[0], b[0]) + 1e-9
        and min(a[1], b[1]) - 1e-9 <= p[1] <= max(a[1], b[1]) + 1e-9
    )


def segments_touch(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, eps: float = 1e-9) -> bool:
    """True when segments ab and cd cross or touch (an endpoint on the other segment counts)."""

    def opposite(u: float, v: float) -> bool:
        return (u > eps and v < -eps) or (u < -eps and v > eps)

    if opposite(_cross(c, d, a), _cross(c, d, b)) and opposite(_cross(a, b, c), _cross(a, b, d)):
        return True
    return (
        _on_segment(a, c, d, eps) or _on_segment(b, c, d, eps) or _on_segment(c, a, b, eps) or _on_segment(d, a, b, eps)
    )


def polygon_problem(pts: np.ndarray, min_area: float = 1.0, unit: str = "px²") -> str | None:
    """Why ``pts`` is not a usable simple polygon (None when it is): repeated vertices, (near) zero area,
    edges that cross, touch or fold back on each other."""
    n = len(pts)
    dup = duplicate_points(pts)
    if dup is not None:
        return f"vertices {dup[0]} and {dup[1]} are the same point {_fmt(pts[dup[0]])}"
    if _max_non_collinear_area(pts) < min_area:
        return "the vertices are (nearly) collinear: the polygon has no area"
    eps = 1e-9 * max(1.0, float(np.abs(pts).max())) ** 2
    for i in range(n):  # an edge doubling back along the previous one: a zero-width spike
        a, b, c = pts[i - 1], pts[i], pts[(i + 1) % n]
        if abs(_cross(a, b, c)) <= eps and np.dot(b - a, c - b) < 0:
            return f"the edges at vertex {i} {_fmt(b)} fold back on each other"
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # adjacent through the closing edge
            if segments_touch(pts[i], pts[(i + 1) % n], pts[j], pts[(j + 1) % n], eps):
                return (
                    f"edge {i}-{(i + 1) % n} and edge {j}-{(j + 1) % n} cross: the polygon must not "
                    "intersect itself (list the vertices in order around the region)"
                )
    area = polygon_area(pts)
    if area < min_area:
        return f"the polygon has (nearly) zero area ({area:g} {unit})"
    return None


def lens_problem(points: Sequence[Sequence[float]], lens: LensModel, what: str = "image_points") -> str | None:
    """Why ``lens`` cannot undistort ``points`` (raw pixels), or None: the radial model must keep increasing
    (``d r_d / d r > 0``) out to the farthest of them, else the picture folds and undistortion is ambiguous."""
    from trafficstream.models.lens import max_distorted_radius_px, undistort_pixels  # lazy, like the fit

    pts = np.asarray(points, dtype=float).reshape(-1, 2)
    with np.errstate(all="ignore"):
        bad = np.flatnonzero(~np.isfinite(undistort_pixels(pts, lens)).all(axis=1))
    if not bad.size:
        return None
    i = int(bad[0])
    r = float(np.hypot(*(pts[i] - (lens.cx, lens.cy))))
    return (
        f"{what} {bad.tolist()} (first {_fmt(pts[i])}, {r:.0f} px from center_px) lie beyond "
        f"{max_distorted_radius_px(lens):.0f} px, where this distortion model folds back (d r_d / d r <= 0): "
        "undistortion is undefined there; check the signs and sizes of k1, k2, k3 (and focal_px)"
    )


# A marking as the road-plane fit takes it, hashable for the caches: (image points, axis, value).
MarkingKey = tuple[tuple[Point, ...], str, float]


def homography_problem(
    image_points: Sequence[Point],
    world_points: Sequence[Point],
    lens: LensModel | None = None,
    markings: Sequence[MarkingKey] = (),
) -> str | None:
    """Fit the road plane exactly as the job will (models.homography; on the undistorted image points when
    there is a ``lens``) and say why it is unusable, or None."""
    return _homography_problem(tuple(map(tuple, image_points)), tuple(map(tuple, world_points)), lens, tuple(markings))


def marking_lines(markings: Sequence[MarkingKey]) -> list[Any]:
    """The fit's :class:`trafficstream.models.homography.MarkingLine` objects of the keys."""
    from trafficstream.models.homography import MarkingLine  # lazy, like the fit

    return [MarkingLine(np.asarray(pts, dtype=float), axis, value) for pts, axis, value in markings]


@lru_cache(maxsize=256)  # every Spark task re-validates the settings it is shipped: fit each calibration once
def _homography_problem(
    image_points: tuple[Point, ...],
    world_points: tuple[Point, ...],
    lens: LensModel | None,
    markings: tuple[MarkingKey, ...] = (),
) -> str | None:
    # Imported here: cv2 / scipy load only when a calibration is validated.
    from trafficstream.models.homography import RoadPlane

    img, wld = np.asarray(image_points, dtype=float), np.asarray(world_points, dtype=float)
    undistorted = " (undistorted by lens)" if lens is not None and not lens.is_identity else ""
    try:
        with np.errstate(all="ignore"):
            plane = RoadPlane.from_points(img.reshape(-1, 2), wld.reshape(-1, 2), lens, marking_lines(markings))
            img = plane.image_points  # the markings' ends too: they must lie in front of the camera as well
            finite = np.isfinite(plane.H).all() and np.isfinite(plane.H_inv).all()
            in_front = plane.in_front(img) if finite else np.zeros(len(img), bool)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        return f"homography fit{undistorted} failed: {exc}"
    if not finite:
        return "the point pairs give a singular homography (non-finite); check that they are on the road plane"
    if not in_front.all():
        bad = [int(i) for i in np.flatnonzero(~in_front)]
        return (
            f"image_points {bad}{undistorted} map beyond the horizon of the fitted road plane: the pairs are not "
            "consistent with one plane (check that image_points[i] and world_points[i] are the same point)"
        )
    return None


def image_lane_heading(calibration: Calibration, lane: Lane) -> float | None:
    """Road-plane heading (0 = +y, 90 = +x) of an image-space lane's ``direction`` at its centre, or None when the
    centre lies beyond the calibration's horizon (or the lane has no image direction)."""
    from trafficstream.models.lines import image_direction_heading  # lazy, like the homography fit

    if lane.direction is None:
        return None
    plane = _road_plane(
        tuple(map(tuple, calibration.image_points)),
        tuple(map(tuple, calibration.world_points)),
        calibration.lens_model(),
        calibration.marking_keys(),
    )
    return image_direction_heading(lane.centre(), lane.direction, plane.to_world)


@lru_cache(maxsize=64)
def _road_plane(
    image_points: tuple[Point, ...],
    world_points: tuple[Point, ...],
    lens: LensModel | None,
    markings: tuple[MarkingKey, ...] = (),
) -> Any:
    from trafficstream.models.homography import RoadPlane

    return RoadPlane.from_points(
        np.asarray(image_points, dtype=float).reshape(-1, 2),
        np.asarray(world_points, dtype=float).reshape(-1, 2),
        lens,
        marking_lines(markings),
    )


# -- models ---------------------------------------------------------------------------------------------------
class Lens(BaseModel):
    """Lens distortion of the video: the Brown-Conrady radial-tangential model in OpenCV's convention.

    Paste ``fx`` (or the mean of ``fx``, ``fy``), ``cx``, ``cy`` and ``dist_coeffs`` ``(k1, k2, p1, p2, k3)``
    from ``cv2.calibrateCamera`` or the camera's data sheet, in pixels *of the video* (a camera matrix found at
    another resolution scales with it). Image points are undistorted with it before the road-plane homography
    is fitted and applied (models/lens.py), so barrel distortion no longer bends positions and speeds at the
    edges of a wide-angle view. ``python -m trafficstream.models.calibrate --fit-k1`` suggests k1 from >= 5
    calibration pairs when nothing better is known.
    """

    model_config = _MODEL_CONFIG

    focal_px: float = Field(gt=0, le=100_000, description="focal length, pixels of the video")
    center_px: Point = Field(description="[cx, cy] principal point, pixels of the video (usually its centre)")
    k1: float = Field(default=0.0, ge=-5, le=5, description="radial r^2 coefficient (< 0: barrel distortion)")
    k2: float = Field(default=0.0, ge=-5, le=5, description="radial r^4 coefficient")
    p1: float = Field(default=0.0, ge=-0.5, le=0.5, description="tangential coefficient")
    p2: float = Field(default=0.0, ge=-0.5, le=0.5, description="tangential coefficient")
    k3: float = Field(default=0.0, ge=-5, le=5, description="radial r^6 coefficient")

    @field_validator("center_px")
    @classmethod
    def _centre(cls, v: Point) -> Point:
        if min(v) < 0:
            raise ValueError(f"{_fmt(v)}: pixel coordinates must be >= 0 (usually the frame's centre)")
        return v

    def model(self) -> LensModel:
        """The distortion model the road plane applies (:class:`trafficstream.models.lens.LensModel`)."""
        from trafficstream.models.lens import LensModel  # lazy: models/ loads only when a camera is used

        return LensModel(self.focal_px, *self.center_px, self.k1, self.k2, self.p1, self.p2, self.k3)


class Marking(BaseModel):
    """A straight road marking traced in the video whose road-plane position is known in one coordinate: a lane
    line ``x: 3.5`` (its offset across the road), or a transverse line ``y: 12`` (a stop line, the end of a
    dash). Give exactly one of ``x`` and ``y``; trace >= 2 pixels anywhere along its visible length."""

    model_config = _MODEL_CONFIG

    image_points: list[Point] = Field(min_length=2, description="pixels along the marking, as seen in the video")
    x: FiniteFloat | None = Field(default=None, description="the marking is the road-plane line x = this (m)")
    y: FiniteFloat | None = Field(default=None, description="the marking is the road-plane line y = this (m)")

    @field_validator("image_points")
    @classmethod
    def _pixels(cls, v: list[Point]) -> list[Point]:
        pts = np.asarray(v, dtype=float)
        neg = np.flatnonzero((pts < 0).any(axis=1))
        if neg.size:
            raise ValueError(f"point {int(neg[0])} {_fmt(pts[neg[0]])}: pixel coordinates must be >= 0")
        if np.ptp(pts, axis=0).max() < 1.0:
            raise ValueError("the points are less than 1 px apart: trace the marking over its visible length")
        return v

    @model_validator(mode="after")
    def _one_axis(self) -> Marking:
        if (self.x is None) == (self.y is None):
            raise ValueError("give exactly one of x (a lane line x = ...) and y (a transverse line y = ...)")
        return self

    def key(self) -> MarkingKey:
        axis, value = ("x", self.x) if self.x is not None else ("y", self.y)
        return tuple((float(u), float(v)) for u, v in self.image_points), axis, float(value or 0.0)


class Calibration(BaseModel):
    """Road-plane calibration: >= 4 image-pixel <-> world-metre point pairs on the road surface, or fewer pairs
    with road ``markings`` of known position (each pair and each marking gives 2 of the 8 constraints a plane
    needs; three lane lines, a transverse line and a pair, for example).

    World axes: any right-handed metric frame on the road plane; by convention y runs along the road. Image
    points are pixels as seen in the video; with ``lens`` they are undistorted before the homography is fitted.
    """

    model_config = _MODEL_CONFIG

    image_points: list[Point] = Field(default_factory=list)
    world_points: list[Point] = Field(default_factory=list)
    # Lane lines / transverse lines of known position: fewer clicks, and a whole marking's pixels in the fit.
    markings: list[Marking] = Field(
        default_factory=list, description="road markings of known position (lane lines x = ..., lines y = ...)"
    )
    # Optional reference frame for registration against camera drift (frame index in the source).
    reference_frame: int | None = Field(default=None, ge=0)
    # A still of the calibrated view (PNG/JPEG): the registration reference of a live camera, whose stream
    # has no fixed frame to go back to.
    reference_image: str | None = Field(default=None, min_length=1)
    # Wide-angle cameras: without it a homography fitted to barrel-distorted pixels is off by metres at the edges.
    lens: Lens | None = Field(default=None, description="lens distortion of the video (absent: a pinhole view)")

    @field_validator("image_points", "world_points")
    @classmethod
    def _points(cls, v: list[Point], info: ValidationInfo) -> list[Point]:
        pts = np.asarray(v, dtype=float)
        if info.field_name == "image_points":
            neg = np.flatnonzero((pts < 0).any(axis=1))
            if neg.size:
                raise ValueError(f"point {int(neg[0])} {_fmt(pts[neg[0]])}: pixel coordinates must be >= 0")
        dup = duplicate_points(pts)
        if dup is not None:
            raise ValueError(
                f"points {dup[0]} and {dup[1]} are the same point {_fmt(pts[dup[0]])}: "
                "every pair must be a distinct point on the road"
            )
        return v

    @model_validator(mode="after")
    def _pairs(self) -> Calibration:
        if len(self.image_points) != len(self.world_points):
            message = (
                f"image_points has {len(self.image_points)} points but world_points has "
                f"{len(self.world_points)}; they must pair up one to one"
            )
            _raise_at("Calibration", [(("image_points",), message, self.image_points)])
        if not self.markings:
            if len(self.image_points) < 4:
                _raise_at(
                    "Calibration",
                    [
                        (
                            ("image_points",),
                            f"List should have at least 4 items (pairs), got {len(self.image_points)}; or add "
                            "markings (lane lines / transverse lines of known position)",
                            self.image_points,
                        )
                    ],
                )
            for name in ("image_points", "world_points"):
                if _max_non_collinear_area(np.asarray(getattr(self, name), dtype=float)) < 1e-6:
                    _raise_at(
                        "Calibration",
                        [
                            (
                                (name,),
                                "points are (nearly) collinear: a homography needs 4 points spanning an area",
                                None,
                            )
                        ],
                    )
        lens = self.lens_model()
        if lens is not None and (problem := lens_problem(self.image_points, lens)):
            _raise_at("Calibration", [(("lens",), problem, self.lens)])
        for i, marking in enumerate(self.markings):
            if lens is not None and (problem := lens_problem(marking.image_points, lens, "image_points")):
                _raise_at("Calibration", [(("markings", i, "image_points"), problem, marking.image_points)])
        problem = homography_problem(self.image_points, self.world_points, lens, self.marking_keys())
        if problem and self.markings:  # the markings are what made it fit or fail: name them
            _raise_at("Calibration", [(("markings",), problem, None)])
        if problem:
            raise ValueError(problem)
        return self

    def marking_keys(self) -> tuple[MarkingKey, ...]:
        """The markings as the road-plane fit takes them (hashable)."""
        return tuple(m.key() for m in self.markings)

    def lens_model(self) -> LensModel | None:
        """The lens distortion model, or None for a pinhole (undistorted) view."""
        return self.lens.model() if self.lens is not None else None


def _raise_at(title: str, problems: list[tuple[tuple[str | int, ...], str, Any]]) -> None:
    """Raise the ``(loc, message, input)`` problems as one ValidationError located *inside* the model being
    validated: pydantic prefixes the model's own location, so the message names the exact field
    (``cameras[0].lines[1].space: ...``) rather than the whole camera."""
    if problems:
        raise ValidationError.from_exception_data(
            title,
            [
                InitErrorDetails(
                    type=PydanticCustomError("value_error", "{message}", {"message": message}), loc=loc, input=value
                )
                for loc, message, value in problems
            ],
        )


def _space_of(info: ValidationInfo) -> str | None:
    """The ``space`` of the model being validated (declared before its points; None when itself invalid)."""
    space = info.data.get("space")
    return space if isinstance(space, str) else None


def _negative_pixel_problem(pts: np.ndarray, what: str = "point") -> str | None:
    neg = np.flatnonzero((pts < 0).any(axis=1))
    if neg.size:
        return f"{what} {int(neg[0])} {_fmt(pts[neg[0]])}: pixel coordinates must be >= 0"
    return None


def _checked_polygon(v: list[Point], info: ValidationInfo) -> list[Point]:
    """A lane's or zone's polygon: a simple polygon with an area, in non-negative pixels for image space."""
    pts = np.asarray(v, dtype=float)
    space = _space_of(info)
    if space == "image" and (problem := _negative_pixel_problem(pts, "vertex")):
        raise ValueError(problem)
    min_area, unit = _MIN_AREA.get(space or "image", _MIN_AREA["image"])
    problem = polygon_problem(pts, min_area, unit)
    if problem:
        raise ValueError(problem)
    return v


class CountingLine(BaseModel):
    """A counting line: the finite segment from ``points[0]`` (A) to ``points[1]`` (B).

    A track crosses it when its ground point passes *through the segment* (passing beside an end does not
    count), having been at least the hysteresis distance on the old side and reaching as far on the new one
    (``events.crossing_hysteresis_px`` / ``_m``): jitter on the line never counts twice.

    Direction names: walk from A to B over the space drawn the usual way up -- the image as displayed (y down
    the screen), the road plane as a map with +y (heading 0) up and +x (heading 90) to the right.
    ``directions[0]`` names crossings from your left to your right, ``directions[1]`` from your right to your
    left. E.g. a line drawn left to right across the image counts vehicles moving down the screen as
    ``directions[0]``; one drawn from west (-x) to east (+x) on the road plane counts vehicles heading 0 (+y)
    as ``directions[1]``. With a calibration whose +y runs away from the camera, the same line drawn in either
    space gives the same names.
    """

    model_config = _MODEL_CONFIG

    id: GeometryId
    space: Space = Field(default="image", description="image px, or road-plane metres (needs a calibration)")
    points: list[Point] = Field(min_length=2, max_length=2, description="[[xA, yA], [xB, yB]]")
    directions: tuple[GeometryId, GeometryId] = Field(
        default=("left_to_right", "right_to_left"), description="[left-to-right name, right-to-left name]"
    )

    @field_validator("points")
    @classmethod
    def _points(cls, v: list[Point], info: ValidationInfo) -> list[Point]:
        pts = np.asarray(v, dtype=float)
        if _space_of(info) == "image" and (problem := _negative_pixel_problem(pts)):
            raise ValueError(problem)
        if duplicate_points(pts, tol=1e-6) is not None:
            raise ValueError(f"both points are {_fmt(pts[0])}: a line needs two distinct points")
        return v

    @field_validator("directions")
    @classmethod
    def _directions(cls, v: tuple[str, str]) -> tuple[str, str]:
        if v[0] == v[1]:
            raise ValueError(f"both directions are named {v[0]!r}: each direction needs its own name")
        return v


class Lane(BaseModel):
    """A traffic lane: a polygon and the direction traffic is expected to move in it.

    Road space: ``polygon`` in road-plane metres and ``direction_deg`` the heading of travel as tracks carry it
    (``direction_deg`` of the tracks table, models.speed: compass-like, 0 = +y, 90 = +x). Image space:
    ``polygon`` in source pixels and ``direction`` a vector in pixels (y down the screen: ``[0, -1]`` is up
    the screen), mapped onto the road plane at the lane's centre when the camera is calibrated. A track is in
    the first lane (in this order) whose polygon holds its ground point. Wrong-way and stopped-vehicle events
    need road-plane speeds, i.e. a calibrated camera; without one, lanes only split counts.
    """

    model_config = _MODEL_CONFIG

    id: GeometryId
    space: Space = "image"
    polygon: list[Point] = Field(min_length=3)
    direction_deg: float | None = Field(default=None, ge=0, lt=360, description="road lanes: heading of travel")
    direction: Point | None = Field(default=None, description="image lanes: [dx, dy] of travel, px")

    _polygon = field_validator("polygon")(_checked_polygon)

    @model_validator(mode="after")
    def _direction_matches_space(self) -> Lane:
        road = self.space == "road"
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        if road and self.direction_deg is None:
            problems.append(
                (("direction_deg",), "a road-space lane needs its heading of travel (0 = +y, 90 = +x)", None)
            )
        if road and self.direction is not None:
            problems.append((("direction",), "a road-space lane gives its direction as direction_deg", self.direction))
        if not road and self.direction is None:
            problems.append((("direction",), "an image-space lane needs its direction of travel [dx, dy] in px", None))
        if not road and self.direction_deg is not None:
            problems.append(
                (
                    ("direction_deg",),
                    "an image-space lane gives its direction as a vector: direction",
                    self.direction_deg,
                )
            )
        if not road and self.direction is not None and float(np.hypot(*self.direction)) < 1e-9:
            problems.append((("direction",), "[0, 0] has no direction", self.direction))
        _raise_at("Lane", problems)
        return self

    def centre(self) -> tuple[float, float]:
        """The polygon's area centroid (where an image direction is mapped onto the road plane)."""
        return polygon_centroid(np.asarray(self.polygon, dtype=float))


class Zone(BaseModel):
    """A polygon for queues (and later dwell times).

    ``purpose: queue``: queue episodes are measured here, their length along ``lane``'s direction when the zone
    names a lane (else along the queued vehicles' own main axis). ``purpose: stopping``: vehicles may stop
    here (a bus stop, a parking bay, the waiting area before a signal): no stopped-vehicle events inside and
    no queue episodes.
    """

    model_config = _MODEL_CONFIG

    id: GeometryId
    space: Space = "image"
    polygon: list[Point] = Field(min_length=3)
    purpose: Literal["queue", "stopping"] = "queue"
    lane: GeometryId | None = Field(default=None, description="id of the lane whose direction a queue runs along")

    _polygon = field_validator("polygon")(_checked_polygon)


class Section(BaseModel):
    """A measured stretch between two of the camera's road-space counting lines: a vehicle that crosses both
    gets a passage (section) speed = distance between its crossing points / time between the crossings (both
    interpolated between frames), with its uncertainty. Either line may be crossed first (both directions)."""

    model_config = _MODEL_CONFIG

    id: GeometryId
    lines: tuple[GeometryId, GeometryId] = Field(description="ids of two road-space counting lines")

    @field_validator("lines")
    @classmethod
    def _distinct(cls, v: tuple[str, str]) -> tuple[str, str]:
        if v[0] == v[1]:
            raise ValueError(f"both ends are line {v[0]!r}: a section needs two distinct lines")
        return v


class EventSettings(BaseModel):
    """Thresholds of counting lines and traffic events, per camera.

    Per camera rather than deployment-wide: they depend on the scene -- a pixel hysteresis on the image scale,
    stop and queue figures on whether the road is a motorway or a signalled junction. The defaults suit a
    calibrated urban or motorway camera; an absent ``events:`` section keeps them.
    """

    model_config = _MODEL_CONFIG

    crossing_hysteresis_px: float = Field(default=8.0, gt=0, le=500, description="beyond the line, image lines")
    crossing_hysteresis_m: float = Field(default=1.0, gt=0, le=50, description="beyond the line, road lines")
    wrong_way_min_m: float = Field(default=15.0, gt=0, le=1000, description="wrong-way travel before an event")
    wrong_way_min_estimates: int = Field(default=5, ge=1, le=1000, description="plausible speeds against the lane")
    wrong_way_tolerance_deg: float = Field(default=20.0, ge=0, lt=90, description="against = angle > 90 + this")
    stopped_min_s: float = Field(default=20.0, gt=0, le=3600, description="standstill in a lane before an event")
    stopped_speed_kmh: float = Field(default=5.0, gt=0, le=50, description="below this a vehicle stands still")
    stopped_radius_m: float = Field(default=3.0, gt=0, le=50, description="a stop ends when it moves this far")
    queue_speed_kmh: float = Field(default=10.0, gt=0, le=60, description="below this a vehicle is queueing")
    queue_min_vehicles: int = Field(default=3, ge=2, le=1000, description="slow vehicles that make a queue")
    queue_max_gap_m: float = Field(default=15.0, gt=0, le=200, description="spacing that still joins a queue")
    queue_hold_s: float = Field(default=3.0, ge=0, le=600, description="a queue must form / dissolve this long")
    max_gap_s: float = Field(default=2.0, gt=0, le=60, description="a track unseen this long breaks a stretch")
    forget_after_s: float = Field(default=10.0, gt=0, le=3600, description="state of a track unseen this long")


class Camera(BaseModel):
    """One camera of a deployment."""

    model_config = _MODEL_CONFIG

    id: Annotated[str, Field(pattern=CAMERA_ID_PATTERN.pattern)]
    source: str = Field(
        min_length=1, description="video file path or file:// URI; live: rtsp(s)://, http(s):// (HLS), /dev/videoN"
    )
    name: str | None = None
    fps: float | None = Field(default=None, gt=0, le=240, description="override when the container lies")
    speed_limit_kmh: float = Field(gt=0, le=300)
    roi: list[Point] | None = Field(default=None, min_length=3, description="region of interest polygon, px")
    calibration: Calibration | None = None
    min_violation_s: float = Field(default=0.5, ge=0, le=30, description="sustained overspeed before a violation")
    register_frames: bool = Field(default=False, description="compensate camera drift against the reference frame")
    # Register one frame per this many seconds and interpolate the frames between (sway is slow next to the
    # frame rate: ~2 px/s on the overpass clip); 0 registers every frame.
    register_every_s: float = Field(default=0.2, ge=0, le=5, description="registration interval, s")
    # Extra detector passes over these [x0, y0, x1, y1] source-pixel boxes (the far end of the road), batched
    # with the full frame: small distant vehicles are found and tracked earlier.
    detect_tiles: list[tuple[int, int, int, int]] = Field(default_factory=list, max_length=4)
    # Detect on every k-th frame; the tracker predicts the frames between (boxes and ids on every frame).
    detect_every: int = Field(default=1, ge=1, le=30, description="detection stride in frames")
    # Capture -> result budget of this camera (default: live.latency_budget_s); load is shed to hold it.
    latency_budget_s: float | None = Field(default=None, gt=0, le=3600)
    # Counting lines, lanes and zones (issue 12): none by default. Their ids share one namespace per camera
    # (crossings and events name them); "road" space needs the calibration above (declared before them).
    lines: list[CountingLine] = Field(default_factory=list, max_length=64)
    lanes: list[Lane] = Field(default_factory=list, max_length=64)
    zones: list[Zone] = Field(default_factory=list, max_length=64)
    events: EventSettings = Field(default_factory=EventSettings)
    # Passage speeds (enforcement): with sections, violations come from passage speeds only, raised when the
    # speed less its uncertainty exceeds the limit by more than the tolerance.
    sections: list[Section] = Field(default_factory=list, max_length=16)
    speed_tolerance_kmh: float = Field(default=0.0, ge=0, le=50, description="enforcement tolerance on passages")

    @field_validator("detect_tiles")
    @classmethod
    def _tiles(cls, v: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
        for i, (x0, y0, x1, y1) in enumerate(v):
            if x1 - x0 < 32 or y1 - y0 < 32 or min(x0, y0) < 0:
                raise ValueError(f"detect_tiles[{i}] = {[x0, y0, x1, y1]}: need x0,y0 >= 0 and a box >= 32x32 px")
        return v

    @field_validator("roi")
    @classmethod
    def _roi(cls, v: list[Point] | None) -> list[Point] | None:
        if v is None:
            return v
        pts = np.asarray(v, dtype=float)
        neg = np.flatnonzero((pts < 0).any(axis=1))
        if neg.size:
            raise ValueError(f"vertex {int(neg[0])} {_fmt(pts[neg[0]])}: pixel coordinates must be >= 0")
        problem = polygon_problem(pts)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("source")
    @classmethod
    def _source_scheme(cls, v: str) -> str:
        scheme = urlparse(v).scheme.lower()
        if scheme not in ("", "file", *LIVE_SCHEMES) and len(scheme) > 1:  # len>1: keep Windows drive letters
            raise ValueError(
                f"unsupported source scheme {scheme!r}: a video file (path or file://) or a live stream "
                f"({', '.join(s + '://' for s in LIVE_SCHEMES)}, /dev/videoN)"
            )
        return v

    @model_validator(mode="after")
    def _live_registration(self) -> Camera:
        if self.is_live and self.register_frames and not (self.calibration and self.calibration.reference_image):
            raise ValueError(
                "register_frames: a live camera registers against calibration.reference_image "
                "(a still of the calibrated view); set it or turn register_frames off"
            )
        return self

    @model_validator(mode="after")
    def _geometry(self) -> Camera:
        """Checks across the camera's lines, lanes and zones, each located at the field at fault."""
        problems: list[tuple[tuple[str | int, ...], str, Any]] = []
        seen: dict[str, str] = {}
        lane_ids = {lane.id for lane in self.lanes}
        drawn: list[tuple[str, Sequence[CountingLine | Lane | Zone]]] = [
            ("lines", self.lines),
            ("lanes", self.lanes),
            ("zones", self.zones),
        ]
        for kind, items in drawn:
            for i, item in enumerate(items):
                if item.id in seen:
                    problems.append(
                        (
                            (kind, i, "id"),
                            f"duplicate id {item.id!r} (already {seen[item.id]}): the lines, lanes and zones of a "
                            "camera need distinct ids",
                            item.id,
                        )
                    )
                else:
                    seen[item.id] = f"{kind}[{i}]"
                if item.space == "road" and self.calibration is None:
                    problems.append(
                        (
                            (kind, i, "space"),
                            "'road' (road-plane metres) needs the camera's calibration; draw it in 'image' space "
                            "(pixels) or calibrate the camera",
                            item.space,
                        )
                    )
        road_lines = {line.id: line.space == "road" for line in self.lines}
        for i, section in enumerate(self.sections):
            if section.id in seen:
                problems.append(
                    (("sections", i, "id"), f"duplicate id {section.id!r} (already {seen[section.id]})", section.id)
                )
            seen.setdefault(section.id, f"sections[{i}]")
            for j, line_id in enumerate(section.lines):
                if line_id not in road_lines:
                    known = ", ".join(sorted(road_lines)) or "none"
                    problems.append(
                        (("sections", i, "lines", j), f"no line {line_id!r} on this camera (lines: {known})", line_id)
                    )
                elif not road_lines[line_id]:
                    problems.append(
                        (
                            ("sections", i, "lines", j),
                            f"line {line_id!r} is drawn in image space: a section measures road metres, draw its "
                            "lines in 'road' space",
                            line_id,
                        )
                    )
        for i, zone in enumerate(self.zones):
            if zone.lane is not None and zone.lane not in lane_ids:
                known = ", ".join(sorted(lane_ids)) or "none"
                problems.append(
                    (("zones", i, "lane"), f"no lane {zone.lane!r} on this camera (lanes: {known})", zone.lane)
                )
        lens = self.calibration.lens_model() if self.calibration is not None else None
        if lens is not None and self.roi and (problem := lens_problem(self.roi, lens, "roi vertices")):
            problems.append((("calibration", "lens"), problem, self.calibration.lens if self.calibration else None))
        if self.calibration is not None:
            for i, lane in enumerate(self.lanes):
                if lane.space == "image" and lane.direction is not None:
                    heading = image_lane_heading(self.calibration, lane)
                    if heading is None:
                        problems.append(
                            (
                                ("lanes", i, "polygon"),
                                f"the lane's centre {_fmt(lane.centre())} lies beyond the horizon of the calibration: "
                                "its direction cannot be mapped onto the road",
                                lane.polygon,
                            )
                        )
        _raise_at("Camera", problems)
        return self

    @property
    def is_live(self) -> bool:
        """A stream (RTSP, HTTP/HLS, a V4L2 device) rather than a file: recorded into segments by ingest."""
        return is_live_source(self.source)

    def source_path(self) -> Path:
        """The local path of a file source (a live camera has none: its frames live in segments)."""
        if self.is_live:
            raise ValueError(f"camera {self.id!r} is a live source ({redact_url(self.source)}), not a file")
        parsed = urlparse(self.source)
        return Path(parsed.path if parsed.scheme == "file" else self.source)

    def source_uri(self) -> str:
        """Canonical URI carried in frame references (absolute ``file://`` URI)."""
        return self.source_path().resolve().as_uri()

    @property
    def source_label(self) -> str:
        """The source as logs may show it (credentials of a stream URL removed)."""
        return redact_url(self.source)


LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "srt", "udp")


def is_live_source(source: str) -> bool:
    scheme = urlparse(source).scheme.lower()
    return scheme in LIVE_SCHEMES or (scheme == "" and source.startswith("/dev/video"))


def redact_url(url: str) -> str:
    """``url`` without its user info (``rtsp://user:pass@host/`` -> ``rtsp://***@host/``): safe for logs."""
    parsed = urlparse(url)
    if parsed.username is None and parsed.password is None:
        return url
    host = parsed.hostname or ""
    netloc = f"***@{host}" + (f":{parsed.port}" if parsed.port else "")
    return parsed._replace(netloc=netloc).geturl()


# -- start-up check against the video ----------------------------------------------------------------------
def frame_problems(
    camera: Camera, width: int, height: int, frame_count: int | None = None, prefix: str = ""
) -> list[str]:
    """What of ``camera`` lies outside a ``width`` x ``height`` frame, as ``field: message`` lines."""
    out: list[str] = []
    size = f"the {width}x{height} frame of {camera.source_path().name}"

    def outside(points: Sequence[Sequence[float]]) -> list[int]:
        return [i for i, (x, y) in enumerate(points) if not (0 <= x <= width and 0 <= y <= height)]

    if camera.roi:
        bad = outside(camera.roi)
        if bad:
            out.append(f"{prefix}roi: vertices {bad} (first {_fmt(camera.roi[bad[0]])}) lie outside {size}")
    for i, (x0, y0, x1, y1) in enumerate(camera.detect_tiles):
        if x1 > width or y1 > height:
            out.append(f"{prefix}detect_tiles[{i}]: {[x0, y0, x1, y1]} reaches outside {size}")
    drawn: list[tuple[str, Sequence[Sequence[float]], str]] = [
        *(
            (f"lines[{i}].points", line.points, "points")
            for i, line in enumerate(camera.lines)
            if line.space == "image"
        ),
        *(
            (f"lanes[{i}].polygon", lane.polygon, "vertices")
            for i, lane in enumerate(camera.lanes)
            if lane.space == "image"
        ),
        *(
            (f"zones[{i}].polygon", zone.polygon, "vertices")
            for i, zone in enumerate(camera.zones)
            if zone.space == "image"
        ),
    ]
    for name, points, what in drawn:
        bad = outside(points)
        if bad:
            out.append(f"{prefix}{name}: {what} {bad} (first {_fmt(points[bad[0]])}) lie outside {size}")
    cal = camera.calibration
    if cal is not None:
        bad = outside(cal.image_points)
        if bad:
            out.append(
                f"{prefix}calibration.image_points: points {bad} (first {_fmt(cal.image_points[bad[0]])}) "
                f"lie outside {size}"
            )
        if cal.lens is not None and not (0 <= cal.lens.center_px[0] <= width and 0 <= cal.lens.center_px[1] <= height):
            out.append(
                f"{prefix}calibration.lens.center_px: {_fmt(cal.lens.center_px)} lies outside {size} (the principal "
                f"point is usually the frame's centre, [{width / 2:g}, {height / 2:g}])"
            )
        if cal.reference_frame is not None and frame_count and cal.reference_frame >= frame_count:
            out.append(
                f"{prefix}calibration.reference_frame: {cal.reference_frame} is past the last frame "
                f"({frame_count} frames in {camera.source_path().name})"
            )
    return out


def probe_frame_size(path: Path) -> tuple[int, int, int | None]:
    """(width, height, frame count or None) of a video file, from its header (no frame is decoded).

    Raises ``ValueError`` with the reason when the file cannot be opened or has no video stream.
    """
    import av  # lazy: only the processes that check their sources need PyAV

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            frames = int(stream.frames or 0) or None
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    if not width or not height:
        raise ValueError("the video stream has no frame size")
    return int(width), int(height), frames
