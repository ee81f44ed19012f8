"""Counting lines and the other geometry drawn on a camera: lanes and zones, and which lane a track is in.

Pure geometry plus one small stateful :class:`LineCounter` per camera. A line is the finite segment A -> B of a
:class:`trafficstream.cameras.CountingLine`, in image pixels or road-plane metres; a track's ground point (the
bottom-centre of its box, or its road-plane position) crosses it when it passes *through the segment*.

Sides, as the space is displayed (the image with y down the screen, the road plane as a map with +y up):
walking from A to B, the right-hand side is ``+1`` and the left-hand side ``-1``. The signed offset
:meth:`Line.offset` is the perpendicular distance, positive on the right. In image coordinates (y down) the
right-hand side is where the cross product (B - A) x (P - A) is positive; on the road plane (y up) where it is
negative: :data:`RIGHT_SIGN` folds that in, so a line drawn in either space names directions alike.

Counting with hysteresis (why counts do not double): a track is *armed* on a side once it has been at least
``hysteresis`` beyond the line there. Every time its path changes side, the crossing point (linear
interpolation between the two observations, in space and time) becomes the candidate. When the track then gets
``hysteresis`` beyond the line on the side opposite its armed side, the last candidate counts -- if it lies on
the segment and leads to that side -- and the track is armed on its new side. So jitter around the line (never
far enough on the other side), a vehicle stopping on the line and wiggling (one candidate survives: the last
one), or a track born next to the line (never armed) cannot count; a track counts at most once per line and
direction, so even a legitimate back-and-forth counts once each way.

The counter's state is plain lists (a ``lines`` document in the camera state of ``streaming_jobs/tracking.py``)
and bounded: tracks unseen for ``forget_after_s`` are dropped, ended tracks are evicted by the caller.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from trafficstream.models.roi import points_in_polygon
from trafficstream.models.speed import TrackId, heading_deg

if TYPE_CHECKING:
    from trafficstream.cameras import Camera, Lane

log = logging.getLogger(__name__)

XY = tuple[float, float]
RIGHT_SIGN = {"image": 1.0, "road": -1.0}  # sign of the cross product on the right-hand side, per space
LEFT_TO_RIGHT, RIGHT_TO_LEFT = 1, -1  # to_side of a crossing: +1 = it ended on the right-hand side
_STATE_VERSION = 1
_T_DIGITS, _XY_DIGITS = 6, 4  # stored precision: kept values are rounded on entry, so a restore is exact
_ON_SEGMENT_EPS = 1e-9


# -- geometry (pure) ----------------------------------------------------------------------------------------
def _finite_xy(p: Sequence[float] | np.ndarray | None) -> XY | None:
    """``p`` as a rounded (x, y), or None when absent or not finite (e.g. beyond the horizon)."""
    if p is None:
        return None
    x, y = float(p[0]), float(p[1])
    if not (math.isfinite(x) and math.isfinite(y)):
        return None
    return round(x, _XY_DIGITS), round(y, _XY_DIGITS)


def angle_between_deg(a: float, b: float) -> float:
    """Unsigned difference of two headings in degrees, in [0, 180]."""
    d = abs(float(a) - float(b)) % 360.0
    return 360.0 - d if d > 180.0 else d


def unit_of_heading(heading: float) -> XY:
    """Road-plane unit vector of a compass heading (0 = +y, 90 = +x): the inverse of ``heading_deg``."""
    r = math.radians(heading)
    return math.sin(r), math.cos(r)


def image_direction_heading(
    centre: Sequence[float],
    direction: Sequence[float],
    to_world: Callable[[np.ndarray], np.ndarray],
    step_px: float = 10,
) -> float | None:
    """Road-plane heading of the image direction ``direction`` (px, y down) taken at pixel ``centre``.

    A homography maps image lines to road lines but not image directions to one road direction: the heading
    depends on where in the image it is taken, hence at the lane's centre. None when either end of the short
    step maps beyond the horizon (``to_world`` gives NaN there, as ``RoadPlane.to_world`` does).
    """
    d = np.asarray(direction, dtype=np.float64)
    norm = float(np.hypot(d[0], d[1]))
    if norm == 0:
        return None
    c = np.asarray(centre, dtype=np.float64)
    ends = np.asarray(to_world(np.stack([c, c + d / norm * step_px])), dtype=np.float64)
    delta = ends[1] - ends[0]
    if not np.isfinite(delta).all() or float(np.hypot(*delta)) == 0:
        return None
    return heading_deg(float(delta[0]), float(delta[1]))


def side_of(offset: float) -> int:
    """+1 (right-hand side, or on the line) / -1 (left-hand side) of a signed offset."""
    return 1 if offset >= 0 else -1


@dataclass(frozen=True, slots=True)
class Line:
    """A counting line in its space, with the names of its two directions and its hysteresis (same units)."""

    id: str
    a: XY
    b: XY
    space: str = "image"
    directions: tuple[str, str] = ("left_to_right", "right_to_left")
    hysteresis: float = 1.0

    def __post_init__(self) -> None:
        if self.space not in RIGHT_SIGN:
            raise ValueError(f"line {self.id!r}: space must be one of {sorted(RIGHT_SIGN)}, got {self.space!r}")
        if not self.hysteresis > 0:
            raise ValueError(f"line {self.id!r}: hysteresis must be > 0, got {self.hysteresis}")
        if self.length <= 0:
            raise ValueError(f"line {self.id!r}: its two points are the same")

    @property
    def length(self) -> float:
        return math.hypot(self.b[0] - self.a[0], self.b[1] - self.a[1])

    def offset(self, p: Sequence[float]) -> float:
        """Signed perpendicular distance of ``p`` from the (infinite) line: > 0 on the right-hand side."""
        dx, dy = self.b[0] - self.a[0], self.b[1] - self.a[1]
        cross = dx * (p[1] - self.a[1]) - dy * (p[0] - self.a[0])
        return RIGHT_SIGN[self.space] * cross / self.length

    def along(self, p: Sequence[float]) -> float:
        """Where ``p``'s foot on the line lies: 0 at A, 1 at B (outside [0, 1]: beside the segment)."""
        dx, dy = self.b[0] - self.a[0], self.b[1] - self.a[1]
        return ((p[0] - self.a[0]) * dx + (p[1] - self.a[1]) * dy) / (dx * dx + dy * dy)

    def direction(self, to_side: int) -> str:
        """The name of a crossing that ended on ``to_side`` (+1: left to right)."""
        return self.directions[0] if to_side == LEFT_TO_RIGHT else self.directions[1]

    def params(self) -> list[Any]:
        return [self.id, self.space, list(self.a), list(self.b), list(self.directions), self.hysteresis]

    @classmethod
    def from_params(cls, v: list[Any]) -> Line:
        a, b = (float(v[2][0]), float(v[2][1])), (float(v[3][0]), float(v[3][1]))
        return cls(str(v[0]), a, b, str(v[1]), (str(v[4][0]), str(v[4][1])), float(v[5]))


def step_crossing(line: Line, p0: Sequence[float], p1: Sequence[float]) -> tuple[float, XY, bool] | None:
    """Where the step p0 -> p1 changes side of ``line``: (fraction u of the step in (0, 1], the point, whether it
    lies on the segment), or None when both ends are on the same side."""
    o0, o1 = line.offset(p0), line.offset(p1)
    if side_of(o0) == side_of(o1):
        return None
    u = o0 / (o0 - o1)
    q = (p0[0] + u * (p1[0] - p0[0]), p0[1] + u * (p1[1] - p0[1]))
    s = line.along(q)
    return u, q, -_ON_SEGMENT_EPS <= s <= 1 + _ON_SEGMENT_EPS


@dataclass(frozen=True, slots=True)
class LaneArea:
    """A lane as the detectors use it: polygon in its space and the road-plane heading of travel (None when it
    is unknown: an image lane of an uncalibrated camera)."""

    id: str
    space: str
    polygon: tuple[XY, ...]
    heading_deg: float | None

    def contains(self, point: TrackPoint) -> bool:
        return _contains(self.space, self.polygon, point)


@dataclass(frozen=True, slots=True)
class ZoneArea:
    """A zone: polygon in its space, what it is for (``queue`` / ``stopping``), the lane a queue runs along."""

    id: str
    space: str
    polygon: tuple[XY, ...]
    purpose: str = "queue"
    lane_id: str | None = None

    def contains(self, point: TrackPoint) -> bool:
        return _contains(self.space, self.polygon, point)


def _contains(space: str, polygon: tuple[XY, ...], point: TrackPoint) -> bool:
    xy = point.image_xy if space == "image" else point.road_xy
    if xy is None:
        return False
    return bool(points_in_polygon(np.asarray([xy], dtype=np.float64), np.asarray(polygon, dtype=np.float64))[0])


def lane_at(lanes: Sequence[LaneArea], point: TrackPoint) -> str | None:
    """Id of the first lane (config order) holding the track's point in the lane's space, or None."""
    for lane in lanes:
        if lane.contains(point):
            return lane.id
    return None


def lanes_at(lanes: Sequence[LaneArea], points: Sequence[TrackPoint]) -> list[str | None]:
    """:func:`lane_at` of every point of a frame, one polygon test per lane for all of them (stage 2 runs this
    on every detected frame)."""
    out: list[str | None] = [None] * len(points)
    for lane in lanes:
        todo = [i for i, lane_id in enumerate(out) if lane_id is None]
        xy = [(i, p.image_xy if lane.space == "image" else p.road_xy) for i in todo for p in (points[i],)]
        xy = [(i, q) for i, q in xy if q is not None]
        if not xy:
            continue
        inside = points_in_polygon(np.asarray([q for _, q in xy], dtype=np.float64), np.asarray(lane.polygon))
        for (i, _), hit in zip(xy, inside, strict=True):
            if hit:
                out[i] = lane.id
    return out


def lines_from_camera(camera: Camera) -> list[Line]:
    ev = camera.events
    return [
        Line(
            line.id,
            (float(line.points[0][0]), float(line.points[0][1])),
            (float(line.points[1][0]), float(line.points[1][1])),
            line.space,
            (line.directions[0], line.directions[1]),
            ev.crossing_hysteresis_px if line.space == "image" else ev.crossing_hysteresis_m,
        )
        for line in camera.lines
    ]


def lane_heading(lane: Lane, to_world: Callable[[np.ndarray], np.ndarray] | None) -> float | None:
    """A configured lane's road-plane heading of travel: its ``direction_deg`` (road lanes), or its image
    ``direction`` mapped at its centre through ``to_world`` (image lanes; None without a calibration)."""
    if lane.space == "road":
        return lane.direction_deg
    if lane.direction is None or to_world is None:
        return None
    return image_direction_heading(lane.centre(), lane.direction, to_world)


def lanes_from_camera(camera: Camera, to_world: Callable[[np.ndarray], np.ndarray] | None = None) -> list[LaneArea]:
    """The camera's lanes; ``to_world``: its road plane's pixel -> metre map (``RoadPlane.to_world``), if any."""
    return [
        LaneArea(
            lane.id, lane.space, tuple((float(x), float(y)) for x, y in lane.polygon), lane_heading(lane, to_world)
        )
        for lane in camera.lanes
    ]


def zones_from_camera(camera: Camera) -> list[ZoneArea]:
    return [
        ZoneArea(zone.id, zone.space, tuple((float(x), float(y)) for x, y in zone.polygon), zone.purpose, zone.lane)
        for zone in camera.zones
    ]


# -- observations and crossings ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TrackPoint:
    """One track on one frame, as the line counter and the event detectors see it.

    ``image_xy``: ground point of its box (bottom-centre), px. ``road_xy``: the same on the road plane, metres
    (None: uncalibrated camera, or beyond the horizon). ``speed_kmh`` / ``heading_deg``: the track's *plausible*
    speed estimate on this frame (None when flagged or absent): only these are trusted. ``lane_id``: from
    :func:`lane_at`. ``class_name``: the track's class as voted so far.
    """

    track_id: TrackId
    image_xy: XY | None = None
    road_xy: XY | None = None
    class_name: str | None = None
    lane_id: str | None = None
    speed_kmh: float | None = None
    heading_deg: float | None = None

    def xy(self, space: str) -> XY | None:
        return _finite_xy(self.image_xy if space == "image" else self.road_xy)


@dataclass(frozen=True, slots=True)
class Crossing:
    """A track crossing a counting line: once per (line, track, direction).

    ``t`` is interpolated between the two observations either side of the line (sub-frame); ``x``, ``y`` is
    where it crossed, in the line's space. ``lane_id`` / ``class_name`` / ``speed_kmh`` are the track's on the
    first observation past the line. ``t_confirmed``: the observation that got it ``hysteresis`` beyond.
    """

    line_id: str
    track_id: TrackId
    direction: str
    to_side: int  # +1: left to right (directions[0]), -1: right to left
    t: float
    x: float
    y: float
    space: str
    t_confirmed: float
    class_name: str | None = None
    lane_id: str | None = None
    speed_kmh: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "line_id": self.line_id,
            "track_id": self.track_id,
            "direction": self.direction,
            "to_side": self.to_side,
            "t": self.t,
            "x": self.x,
            "y": self.y,
            "space": self.space,
            "t_confirmed": self.t_confirmed,
            "class_name": self.class_name,
            "lane_id": self.lane_id,
            "speed_kmh": self.speed_kmh,
        }


# -- the counter --------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _Candidate:
    """The last change of side since the track was armed: where, when, towards which side, on the segment?"""

    t: float
    x: float
    y: float
    to_side: int
    on_segment: bool
    class_name: str | None
    lane_id: str | None
    speed_kmh: float | None

    def to_list(self) -> list[Any]:
        return [self.t, self.x, self.y, self.to_side, self.on_segment, self.class_name, self.lane_id, self.speed_kmh]

    @classmethod
    def from_list(cls, v: list[Any]) -> _Candidate:
        return cls(float(v[0]), float(v[1]), float(v[2]), int(v[3]), bool(v[4]), v[5], v[6], v[7])


@dataclass(slots=True)
class _LineState:
    armed: int = 0  # side the track was last at least `hysteresis` beyond; 0: not yet
    counted: int = 0  # bit 1: left-to-right counted, bit 2: right-to-left counted
    candidate: _Candidate | None = None

    def to_list(self) -> list[Any]:
        return [self.armed, self.counted, None if self.candidate is None else self.candidate.to_list()]

    @classmethod
    def from_list(cls, v: list[Any]) -> _LineState:
        return cls(int(v[0]), int(v[1]), None if v[2] is None else _Candidate.from_list(v[2]))


_Stamped = tuple[float, float, float]  # x, y, t


@dataclass(slots=True)
class _Track:
    last_t: float
    image: _Stamped | None = None  # last finite point in each space, with its time (a road point may be
    road: _Stamped | None = None  # missing on some frames: beyond the horizon)
    lines: dict[str, _LineState] = field(default_factory=dict)

    def to_list(self) -> list[Any]:
        return [
            self.last_t,
            None if self.image is None else list(self.image),
            None if self.road is None else list(self.road),
            [[line_id, st.to_list()] for line_id, st in self.lines.items()],
        ]

    @classmethod
    def from_list(cls, v: list[Any]) -> _Track:
        return cls(float(v[0]), _stamped(v[1]), _stamped(v[2]), {str(k): _LineState.from_list(s) for k, s in v[3]})


def _stamped(v: list[Any] | None) -> _Stamped | None:
    return None if v is None else (float(v[0]), float(v[1]), float(v[2]))


def _bit(to_side: int) -> int:
    return 1 if to_side == LEFT_TO_RIGHT else 2


class LineCounter:
    """Crossings of one camera's counting lines, each counted once per (line, track, direction).

    Args:
        lines: the camera's lines (:func:`lines_from_camera`), each with its hysteresis.
        forget_after_s: :meth:`update` drops tracks unseen this long (ended tracks: :meth:`evict`).
    """

    def __init__(self, lines: Sequence[Line], *, forget_after_s: float = 10.0) -> None:
        ids = [line.id for line in lines]
        if len(set(ids)) != len(ids):
            raise ValueError(f"duplicate line ids in {ids}")
        if not forget_after_s > 0:
            raise ValueError(f"forget_after_s must be > 0, got {forget_after_s}")
        self.lines = list(lines)
        self.forget_after_s = float(forget_after_s)
        self._tracks: dict[TrackId, _Track] = {}

    @classmethod
    def from_camera(cls, camera: Camera) -> LineCounter:
        return cls(lines_from_camera(camera), forget_after_s=camera.events.forget_after_s)

    # -- counting ---------------------------------------------------------------------------------------
    def update(self, t: float, points: Iterable[TrackPoint]) -> list[Crossing]:
        """One frame at time ``t`` (seconds): every track's point on it. Returns the crossings it completed,
        then forgets tracks unseen for ``forget_after_s``. A non-finite ``t`` is ignored."""
        if not math.isfinite(t):
            return []
        out = [c for p in points for c in self.update_track(t, p)]
        self.evict_older_than(t - self.forget_after_s)
        return out

    def update_track(self, t: float, point: TrackPoint) -> list[Crossing]:
        """One track's point at time ``t``. A time not after the track's previous one is ignored."""
        if not math.isfinite(t):
            return []
        t = round(float(t), _T_DIGITS)
        tr = self._tracks.get(point.track_id)
        if tr is None:
            tr = self._tracks[point.track_id] = _Track(t)
        elif t <= tr.last_t:
            log.debug("track %s: time %.6f not after %.6f, ignored", point.track_id, t, tr.last_t)
            return []
        tr.last_t = t
        image, road = point.xy("image"), point.xy("road")
        out = []
        for line in self.lines:
            p1 = image if line.space == "image" else road
            if p1 is None:
                continue
            prev = tr.image if line.space == "image" else tr.road
            st = tr.lines.setdefault(line.id, _LineState())
            p0, t0 = (None, t) if prev is None else ((prev[0], prev[1]), prev[2])
            crossing = self._step(line, st, point, p0, t0, p1, t)
            if crossing is not None:
                out.append(crossing)
        if image is not None:
            tr.image = (*image, t)
        if road is not None:
            tr.road = (*road, t)
        return out

    @staticmethod
    def _step(
        line: Line, st: _LineState, point: TrackPoint, p0: XY | None, t0: float, p1: XY, t1: float
    ) -> Crossing | None:
        """Advance one line's state by the step p0 (at t0) -> p1 (at t1); the crossing it completes, if any."""
        if p0 is not None:
            hit = step_crossing(line, p0, p1)
            if hit is not None:
                u, q, on_segment = hit
                st.candidate = _Candidate(
                    t0 + u * (t1 - t0),
                    q[0],
                    q[1],
                    side_of(line.offset(p1)),
                    on_segment,
                    point.class_name,
                    point.lane_id,
                    point.speed_kmh,
                )
        offset = line.offset(p1)
        if abs(offset) < line.hysteresis:
            return None
        side = side_of(offset)
        crossing = None
        cand = st.candidate
        if st.armed == -side and cand is not None and cand.to_side == side and cand.on_segment:
            if not st.counted & _bit(side):
                st.counted |= _bit(side)
                crossing = Crossing(
                    line_id=line.id,
                    track_id=point.track_id,
                    direction=line.direction(side),
                    to_side=side,
                    t=cand.t,
                    x=cand.x,
                    y=cand.y,
                    space=line.space,
                    t_confirmed=t1,
                    class_name=cand.class_name,
                    lane_id=cand.lane_id,
                    speed_kmh=cand.speed_kmh,
                )
        st.armed, st.candidate = side, None
        return crossing

    def counted(self, track_id: TrackId) -> dict[str, list[str]]:
        """{line id: direction names} the track has been counted in (empty when unknown)."""
        tr = self._tracks.get(track_id)
        if tr is None:
            return {}
        names = {line.id: line for line in self.lines}
        return {
            line_id: [names[line_id].directions[i] for i, bit in enumerate((1, 2)) if st.counted & bit]
            for line_id, st in tr.lines.items()
            if st.counted and line_id in names
        }

    # -- bookkeeping --------------------------------------------------------------------------------------
    def evict(self, track_id: TrackId) -> None:
        """Forget a track (it ended): a crossing not yet confirmed is dropped. Unknown ids are ignored."""
        self._tracks.pop(track_id, None)

    def evict_older_than(self, t: float) -> list[TrackId]:
        """Forget tracks last seen before ``t``; returns their ids."""
        old = [k for k, tr in self._tracks.items() if tr.last_t < t]
        for k in old:
            del self._tracks[k]
        return old

    def track_ids(self) -> list[TrackId]:
        return list(self._tracks)

    def __len__(self) -> int:
        return len(self._tracks)

    # -- state --------------------------------------------------------------------------------------------
    def params(self) -> dict[str, Any]:
        return {"lines": [line.params() for line in self.lines], "forget_after_s": self.forget_after_s}

    def to_doc(self) -> dict[str, Any]:
        """Plain-JSON state: parameters (informational) and per-track, per-line state."""
        return {
            "v": _STATE_VERSION,
            "params": self.params(),
            "tracks": [[k, tr.to_list()] for k, tr in self._tracks.items()],
        }

    @classmethod
    def from_doc(cls, doc: dict[str, Any]) -> LineCounter:
        """Restore with the lines and parameters the state was written with."""
        params = doc["params"]
        lines = [Line.from_params(v) for v in params["lines"]]
        return cls(lines, forget_after_s=float(params["forget_after_s"])).restore_tracks(doc)

    def restore_tracks(self, doc: dict[str, Any]) -> LineCounter:
        """Replace this counter's tracks with those of a :meth:`to_doc` state; its lines and parameters stay
        (a restart takes them from the current configuration). A line that was removed or redrawn since
        loses its per-track state: an armed side or a candidate means nothing against other geometry.
        Returns ``self``."""
        if doc.get("v") != _STATE_VERSION:
            raise ValueError(f"LineCounter state version {doc.get('v')!r}, expected {_STATE_VERSION}")
        old = {v[0]: v for v in doc["params"]["lines"]}
        same = {line.id for line in self.lines if old.get(line.id) == line.params()}
        tracks = {}
        for k, v in doc["tracks"]:
            tr = _Track.from_list(v)
            tr.lines = {line_id: st for line_id, st in tr.lines.items() if line_id in same}
            tracks[k] = tr
        self._tracks = tracks
        return self
