"""A camera's counting lines, lanes and zones as the live video draws them: in source pixels (pure).

Image-space geometry is used as configured; road-space geometry (metres on the calibrated road plane) is mapped
into the image with the inverse of the camera's homography (:meth:`RoadPlane.to_image`). What cannot be
projected (a point behind the camera, or so close to the horizon that it lands absurdly far outside the frame)
is left out and named in :attr:`CameraOverlay.skipped` rather than drawn wrong.

A line's direction names follow :class:`trafficstream.cameras.CountingLine`: ``directions[0]`` names crossings
from the left-hand to the right-hand side of A -> B. The side is decided in the line's own space with
:meth:`models.lines.Line.offset` (the counter's own rule), then mapped into the image, so the arrow drawn for
``directions[0]`` points the way those vehicles go whatever the calibration's handedness.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from trafficstream.cameras import Camera, CountingLine, Lane, Zone
from trafficstream.models.lines import Line, lines_from_camera, unit_of_heading

log = logging.getLogger(__name__)

XY = tuple[float, float]
ToImage = Callable[[np.ndarray], np.ndarray]  # (N, 2) road metres -> (N, 2) pixels, NaN where impossible
MAX_PROJECTED_PX = 20_000.0  # a projected point further out than this is near the horizon: not drawn
STEP = {"image": 10.0, "road": 0.5}  # px / m: a short step in a space, to map a direction into the image


@dataclass(frozen=True, slots=True)
class LineOverlay:
    """A counting line in source pixels: A, B, its midpoint, and the unit image vector at the midpoint that
    points to the side ``directions[0]`` crossings end on (its opposite: ``directions[1]``)."""

    id: str
    a: XY
    b: XY
    mid: XY
    towards_first: XY
    directions: tuple[str, str]


@dataclass(frozen=True, slots=True)
class AreaOverlay:
    """A lane or zone in source pixels: its outline, where its label goes, and (lanes) the unit image vector of
    the direction of travel at that point (None: unknown)."""

    id: str
    kind: str  # lane | zone
    polygon: tuple[XY, ...]
    label: str
    anchor: XY
    heading: XY | None = None


@dataclass(frozen=True, slots=True)
class CameraOverlay:
    lines: tuple[LineOverlay, ...] = ()
    lanes: tuple[AreaOverlay, ...] = ()
    zones: tuple[AreaOverlay, ...] = ()
    skipped: tuple[str, ...] = ()  # ids of what could not be projected into the image

    def __bool__(self) -> bool:
        return bool(self.lines or self.lanes or self.zones)


def _points(points: np.ndarray | Sequence[Sequence[float]], space: str, to_image: ToImage | None) -> np.ndarray | None:
    """(N, 2) source pixels of points drawn in ``space``, or None when any of them cannot be placed."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if space == "road":
        if to_image is None:
            return None
        with np.errstate(all="ignore"):
            pts = np.asarray(to_image(pts), dtype=np.float64).reshape(-1, 2)
    if not np.isfinite(pts).all() or (np.abs(pts) > MAX_PROJECTED_PX).any():
        return None
    return pts


def _unit(v: np.ndarray) -> XY | None:
    n = float(np.hypot(v[0], v[1]))
    if not math.isfinite(n) or n < 1e-9:
        return None
    return float(v[0] / n), float(v[1] / n)


def _image_direction(origin: np.ndarray, vector: np.ndarray, space: str, to_image: ToImage | None) -> XY | None:
    """Unit image vector of ``vector`` (in ``space``) taken at ``origin`` (in ``space``)."""
    unit = _unit(vector)
    if unit is None:
        return None
    ends = _points(np.stack([origin, origin + np.asarray(unit) * STEP[space]]), space, to_image)
    return None if ends is None else _unit(ends[1] - ends[0])


def line_overlay(line: Line, to_image: ToImage | None) -> LineOverlay | None:
    """The line in source pixels (None: it cannot be projected)."""
    a, b = np.asarray(line.a, dtype=np.float64), np.asarray(line.b, dtype=np.float64)
    ends = _points(np.stack([a, b]), line.space, to_image)
    if ends is None:
        return None
    mid = (a + b) / 2
    d = b - a
    normal = np.array([-d[1], d[0]])  # either side; Line.offset says which is the right-hand one
    if line.offset(mid + normal) < 0:
        normal = -normal
    towards = _image_direction(mid, normal, line.space, to_image)
    mid_px = _points(mid[None], line.space, to_image)
    if towards is None or mid_px is None:
        return None
    (ax, ay), (bx, by), (mx, my) = ends[0], ends[1], mid_px[0]
    return LineOverlay(
        line.id, (float(ax), float(ay)), (float(bx), float(by)), (float(mx), float(my)), towards, line.directions
    )


def _centroid(polygon: np.ndarray) -> np.ndarray:
    x, y = polygon[:, 0], polygon[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    a = cross.sum() / 2
    if abs(a) < 1e-12:
        return polygon.mean(axis=0)
    return np.array([((x + xn) * cross).sum() / (6 * a), ((y + yn) * cross).sum() / (6 * a)])


def area_overlay(
    id: str,
    kind: str,
    polygon: Sequence[Sequence[float]],
    space: str,
    to_image: ToImage | None,
    label: str | None = None,
    direction: Sequence[float] | None = None,
) -> AreaOverlay | None:
    """A lane or zone in source pixels (None: it cannot be projected). ``direction``: of travel, in ``space``
    (a road lane: the unit vector of its heading; an image lane: its ``direction`` in px)."""
    poly = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    px = _points(poly, space, to_image)
    if px is None:
        return None
    centre = _centroid(poly)
    anchor = _points(centre[None], space, to_image)
    if anchor is None:
        return None
    heading = None if direction is None else _image_direction(centre, np.asarray(direction, float), space, to_image)
    return AreaOverlay(
        id,
        kind,
        tuple((float(x), float(y)) for x, y in px),
        label or id,
        (float(anchor[0][0]), float(anchor[0][1])),
        heading,
    )


def road_to_image(camera: Camera) -> ToImage | None:
    """The camera's road-plane -> pixel map (None: no calibration, or none that fits)."""
    if camera.calibration is None:
        return None
    from trafficstream.models.homography import RoadPlane  # cv2 / scipy: loaded when a camera needs them

    try:
        return RoadPlane.from_calibration(camera.calibration).to_image
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        log.warning("camera %s: road-plane geometry not drawn: %s", camera.id, exc)
        return None


def camera_overlay(camera: Camera, to_image: ToImage | None = None) -> CameraOverlay:
    """The camera's lines, lanes and zones in source pixels. ``to_image``: its road-plane -> pixel map
    (default: from its calibration); road-space geometry without one is skipped."""
    configured: list[CountingLine | Lane | Zone] = [*camera.lines, *camera.lanes, *camera.zones]
    if to_image is None and any(g.space == "road" for g in configured):
        to_image = road_to_image(camera)
    skipped: list[str] = []
    lines = []
    for line in lines_from_camera(camera):
        drawn = line_overlay(line, to_image)
        if drawn is None:
            skipped.append(line.id)
        else:
            lines.append(drawn)
    lanes = []
    for lane in camera.lanes:
        direction = (
            unit_of_heading(lane.direction_deg)
            if lane.space == "road" and lane.direction_deg is not None
            else lane.direction
        )
        drawn_area = area_overlay(lane.id, "lane", lane.polygon, lane.space, to_image, direction=direction)
        if drawn_area is None:
            skipped.append(lane.id)
        else:
            lanes.append(drawn_area)
    zones = []
    for zone in camera.zones:
        drawn_area = area_overlay(zone.id, "zone", zone.polygon, zone.space, to_image, f"{zone.id} ({zone.purpose})")
        if drawn_area is None:
            skipped.append(zone.id)
        else:
            zones.append(drawn_area)
    if skipped:
        log.info("camera %s: not drawn on the video (cannot be projected into the image): %s", camera.id, skipped)
    return CameraOverlay(tuple(lines), tuple(lanes), tuple(zones), tuple(skipped))
