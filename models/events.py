"""Traffic events from track kinematics: wrong-way driving, stopped vehicles, queues.

Pure, stateful per camera (:class:`EventDetector`), fed one frame at a time with every track's
:class:`models.lines.TrackPoint` (road-plane position, plausible speed and heading, lane). Kinematics are on
the road plane (metres, km/h, headings 0 = +y / 90 = +x as in ``models/speed.py``), so the events need a
calibrated camera; lanes and zones may be drawn in image pixels all the same (membership is tested in the
space they are drawn in).

* ``wrong_way``: a track in a lane whose plausible heading is against the lane's direction (more than
  90 degrees + ``tolerance`` off) over a stretch in which it got ``wrong_way_min_m`` further *against* the lane
  (net displacement, so jitter adds nothing) with at least ``wrong_way_min_estimates`` such estimates. A
  plausible heading with the lane ends the stretch; headings across the lane, slower-than-standstill
  estimates and frames without an estimate are neutral. Once per track, reported closed (``end_ts`` = when
  it became certain).
* ``stopped_vehicle``: a track in a lane (not inside a ``stopping`` zone) slower than ``stopped_speed_kmh``
  for ``stopped_min_s``, staying within ``stopped_radius_m`` of where it stopped. Not while it queues behind
  another slow vehicle in its lane (within ``queue_max_gap_m`` ahead): the first vehicle of a queue behind a
  breakdown is reported, the queue is a ``queue`` event. Reported once when due (open, ``end_ts`` None) and
  again, same ``event_id``, with its duration when the stop ends.
* ``queue``: per ``queue`` zone, >= ``queue_min_vehicles`` vehicles slower than ``queue_speed_kmh`` in one
  chain (consecutive vehicles at most ``queue_max_gap_m`` apart along the queue's axis: the zone's lane
  direction, else the vehicles' main axis), for ``queue_hold_s``; it ends when that has not held for
  ``queue_hold_s``. Length: front to tail of the chain plus the tail vehicle's length. Reported when it opens
  and again, same ``event_id``, when it closes, with its maximum length and vehicle count.

Every event has a deterministic ``event_id`` (camera, type, track or zone, start time): a replayed
micro-batch produces the same ids, so sinks can upsert on it (exactly once). Conservative like the speeding
rule: a doubtful estimate (flagged: ``speed_kmh`` None) never advances a wrong-way stretch or a queue.
The state is plain lists (an ``events`` document in the camera state) and bounded: tracks unseen for
``forget_after_s`` are dropped (closing their open stop), ended tracks are evicted by the caller.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

import numpy as np

from trafficstream.models.lines import (
    LaneArea,
    TrackPoint,
    ZoneArea,
    angle_between_deg,
    lanes_from_camera,
    unit_of_heading,
    zones_from_camera,
)
from trafficstream.models.speed import TrackId

if TYPE_CHECKING:
    from trafficstream.cameras import Camera

log = logging.getLogger(__name__)

WRONG_WAY = "wrong_way"
STOPPED_VEHICLE = "stopped_vehicle"
QUEUE = "queue"
EVENT_TYPES = (WRONG_WAY, STOPPED_VEHICLE, QUEUE)  # stable: tables and dashboards filter on them

# Typical lengths for a queue's tail vehicle; anything else counts as a car.
VEHICLE_LENGTH_M = {"car": 4.5, "motorcycle": 2.2, "bicycle": 1.8, "bus": 12.0, "truck": 10.0}
DEFAULT_VEHICLE_LENGTH_M = 4.5
_STATE_VERSION = 1
_SAME_LANE_DIRECTION_DEG = 45.0  # a wrong-way stretch survives a lane change between lanes this parallel


def event_id(camera_id: str, event_type: str, subject: str, start_ts: float) -> str:
    """Deterministic id of an event: the same camera, type, subject (``track:17`` / ``zone:z1``) and start time
    (to the millisecond) give the same id, whichever process computes it, on a replay too."""
    key = f"{camera_id}|{event_type}|{subject}|{round(float(start_ts) * 1000)}"
    return hashlib.sha1(key.encode("utf-8")).hexdigest()[:20]


def vehicle_length_m(class_name: str | None) -> float:
    return VEHICLE_LENGTH_M.get(class_name or "", DEFAULT_VEHICLE_LENGTH_M)


@dataclass(frozen=True, slots=True)
class Event:
    """One traffic event, in the one shape every type shares (unused value fields are None).

    ``start_ts``: when the behaviour began (the wrong-way stretch, the stop, the queue forming); ``detect_ts``:
    when it became certain and was first reported; ``end_ts``: when it ended, None while it lasts (an open
    event is reported again with the same ``event_id`` when it closes). ``duration_s`` is up to ``end_ts``, or
    to ``detect_ts`` while open. ``x_m`` / ``y_m``: road-plane position at detection (a queue: its front).
    """

    event_id: str
    type: str
    camera_id: str
    track_id: TrackId | None
    lane_id: str | None
    zone_id: str | None
    start_ts: float
    detect_ts: float
    end_ts: float | None
    duration_s: float | None = None
    distance_m: float | None = None
    max_length_m: float | None = None
    max_vehicles: int | None = None
    speed_kmh: float | None = None
    heading_deg: float | None = None
    lane_heading_deg: float | None = None
    x_m: float | None = None
    y_m: float | None = None
    class_name: str | None = None

    @property
    def is_open(self) -> bool:
        return self.end_ts is None

    def to_dict(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}

    def to_list(self) -> list[Any]:
        return [getattr(self, name) for name in self.__dataclass_fields__]

    @classmethod
    def from_list(cls, v: list[Any]) -> Event:
        return cls(*v)


# -- pure helpers -------------------------------------------------------------------------------------------
def along(p: Sequence[float], heading: float) -> float:
    """Position of road point ``p`` along the direction ``heading`` (metres)."""
    ux, uy = unit_of_heading(heading)
    return float(p[0]) * ux + float(p[1]) * uy


def main_axis_heading(points: np.ndarray) -> float:
    """Heading of the principal axis of road points (N >= 2, not all equal); one of its two senses."""
    centred = points - points.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    return float(math.degrees(math.atan2(vt[0, 0], vt[0, 1])) % 360.0)


@dataclass(frozen=True, slots=True)
class QueueChain:
    """The queue found on one frame: member track ids front first, its length and front position."""

    track_ids: tuple[TrackId, ...]
    length_m: float
    front: tuple[float, float]


def queue_chain(
    points: Sequence[TrackPoint], heading: float | None, max_gap_m: float, min_vehicles: int = 2
) -> QueueChain | None:
    """The queue among slow vehicles' road points.

    The points are sorted along the queue's axis and split into chains wherever two consecutive vehicles are
    more than ``max_gap_m`` apart. With a ``heading`` (the direction of travel) the queue is the front-most
    chain of at least ``min_vehicles`` (a queue builds back from its head; slow vehicles further back that are
    not yet joined to it are not part of it). Without one, the axis is the points' main axis, which has no
    front, and the queue is the chain with the most vehicles. Length: front to tail plus the tail vehicle's
    length. None when no point has a road position.
    """
    pts = [p for p in points if p.road_xy is not None]
    if not pts:
        return None
    xy = np.asarray([p.road_xy for p in pts], dtype=np.float64)
    axis = heading
    if axis is None:
        axis = main_axis_heading(xy) if len(pts) > 1 and np.ptp(xy, axis=0).max() > 0 else 0.0
    s = np.asarray([along(p, axis) for p in xy])
    order = np.argsort(-s, kind="stable")  # front (furthest along the direction) first
    groups: list[list[int]] = [[int(order[0])]]
    for prev, cur in zip(order[:-1], order[1:], strict=True):
        if s[prev] - s[cur] <= max_gap_m:
            groups[-1].append(int(cur))
        else:
            groups.append([int(cur)])
    biggest = max(groups, key=len)  # the first of the biggest: the front-most
    chain = next((g for g in groups if len(g) >= min_vehicles), biggest) if heading is not None else biggest
    front, tail = chain[0], chain[-1]
    length = float(s[front] - s[tail]) + vehicle_length_m(pts[tail].class_name)
    return QueueChain(tuple(pts[i].track_id for i in chain), length, (float(xy[front, 0]), float(xy[front, 1])))


# -- state --------------------------------------------------------------------------------------------------
@dataclass(slots=True)
class _WrongWay:
    """An open stretch against the lane: where and when it started, the lane's heading, estimates so far."""

    start_t: float
    x: float
    y: float
    lane_id: str
    lane_heading: float
    n: int
    last_t: float

    def to_list(self) -> list[Any]:
        return [self.start_t, self.x, self.y, self.lane_id, self.lane_heading, self.n, self.last_t]

    @classmethod
    def from_list(cls, v: list[Any]) -> _WrongWay:
        return cls(float(v[0]), float(v[1]), float(v[2]), str(v[3]), float(v[4]), int(v[5]), float(v[6]))


@dataclass(slots=True)
class _Stop:
    """An open standstill: start, anchor position, lane, last time it was confirmed, its event once reported."""

    start_t: float
    x: float
    y: float
    lane_id: str
    last_t: float
    event: Event | None = None

    def to_list(self) -> list[Any]:
        return [
            self.start_t,
            self.x,
            self.y,
            self.lane_id,
            self.last_t,
            None if self.event is None else self.event.to_list(),
        ]

    @classmethod
    def from_list(cls, v: list[Any]) -> _Stop:
        return cls(
            float(v[0]),
            float(v[1]),
            float(v[2]),
            str(v[3]),
            float(v[4]),
            None if v[5] is None else Event.from_list(v[5]),
        )


@dataclass(slots=True)
class _TrackEvents:
    last_t: float
    wrong_way: _WrongWay | None = None
    wrong_way_reported: bool = False
    stop: _Stop | None = None

    def to_list(self) -> list[Any]:
        return [
            self.last_t,
            None if self.wrong_way is None else self.wrong_way.to_list(),
            self.wrong_way_reported,
            None if self.stop is None else self.stop.to_list(),
        ]

    @classmethod
    def from_list(cls, v: list[Any]) -> _TrackEvents:
        return cls(
            float(v[0]),
            None if v[1] is None else _WrongWay.from_list(v[1]),
            bool(v[2]),
            None if v[3] is None else _Stop.from_list(v[3]),
        )


@dataclass(slots=True)
class _Queue:
    """A queue episode of one zone: pending until it held ``hold_s``, then open (its event) until dissolved."""

    start_t: float
    last_ok_t: float
    max_length_m: float
    max_vehicles: int
    front: tuple[float, float]
    event: Event | None = None

    def to_list(self) -> list[Any]:
        return [
            self.start_t,
            self.last_ok_t,
            self.max_length_m,
            self.max_vehicles,
            list(self.front),
            None if self.event is None else self.event.to_list(),
        ]

    @classmethod
    def from_list(cls, v: list[Any]) -> _Queue:
        return cls(
            float(v[0]),
            float(v[1]),
            float(v[2]),
            int(v[3]),
            (float(v[4][0]), float(v[4][1])),
            None if v[5] is None else Event.from_list(v[5]),
        )


class EventDetector:
    """Wrong-way, stopped-vehicle and queue events of one camera. Thresholds: see ``cameras.EventSettings``.

    ``lanes`` / ``zones``: the camera's geometry (:func:`models.lines.lanes_from_camera` /
    ``zones_from_camera``); the points fed in carry their lane (:func:`models.lines.lane_at`).
    """

    def __init__(
        self,
        camera_id: str,
        lanes: Sequence[LaneArea] = (),
        zones: Sequence[ZoneArea] = (),
        *,
        wrong_way_min_m: float = 15.0,
        wrong_way_min_estimates: int = 5,
        wrong_way_tolerance_deg: float = 20.0,
        stopped_min_s: float = 20.0,
        stopped_speed_kmh: float = 5.0,
        stopped_radius_m: float = 3.0,
        queue_speed_kmh: float = 10.0,
        queue_min_vehicles: int = 3,
        queue_max_gap_m: float = 15.0,
        queue_hold_s: float = 3.0,
        max_gap_s: float = 2.0,
        forget_after_s: float = 10.0,
    ) -> None:
        if not 0 <= wrong_way_tolerance_deg < 90:
            raise ValueError(f"wrong_way_tolerance_deg must be in [0, 90), got {wrong_way_tolerance_deg}")
        if queue_min_vehicles < 2 or wrong_way_min_estimates < 1:
            raise ValueError("queue_min_vehicles must be >= 2 and wrong_way_min_estimates >= 1")
        for name, value in (("stopped_min_s", stopped_min_s), ("forget_after_s", forget_after_s)):
            if not value > 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.camera_id = camera_id
        self.lanes = {lane.id: lane for lane in lanes}
        self.zones = list(zones)
        self.wrong_way_min_m = float(wrong_way_min_m)
        self.wrong_way_min_estimates = int(wrong_way_min_estimates)
        self.wrong_way_tolerance_deg = float(wrong_way_tolerance_deg)
        self.stopped_min_s = float(stopped_min_s)
        self.stopped_speed_kmh = float(stopped_speed_kmh)
        self.stopped_radius_m = float(stopped_radius_m)
        self.queue_speed_kmh = float(queue_speed_kmh)
        self.queue_min_vehicles = int(queue_min_vehicles)
        self.queue_max_gap_m = float(queue_max_gap_m)
        self.queue_hold_s = float(queue_hold_s)
        self.max_gap_s = float(max_gap_s)
        self.forget_after_s = float(forget_after_s)
        self._tracks: dict[TrackId, _TrackEvents] = {}
        self._queues: dict[str, _Queue] = {}
        self._last_t: float | None = None  # the last frame's time: a frame not after it is a repeat

    @classmethod
    def from_camera(cls, camera: Camera, to_world: Callable[[np.ndarray], np.ndarray] | None = None) -> EventDetector:
        """The camera's detector; ``to_world`` (``RoadPlane.to_world``) maps image lanes' directions."""
        ev = camera.events
        return cls(
            camera.id,
            lanes_from_camera(camera, to_world),
            zones_from_camera(camera),
            wrong_way_min_m=ev.wrong_way_min_m,
            wrong_way_min_estimates=ev.wrong_way_min_estimates,
            wrong_way_tolerance_deg=ev.wrong_way_tolerance_deg,
            stopped_min_s=ev.stopped_min_s,
            stopped_speed_kmh=ev.stopped_speed_kmh,
            stopped_radius_m=ev.stopped_radius_m,
            queue_speed_kmh=ev.queue_speed_kmh,
            queue_min_vehicles=ev.queue_min_vehicles,
            queue_max_gap_m=ev.queue_max_gap_m,
            queue_hold_s=ev.queue_hold_s,
            max_gap_s=ev.max_gap_s,
            forget_after_s=ev.forget_after_s,
        )

    # -- per frame ----------------------------------------------------------------------------------------
    def update(self, t: float, points: Iterable[TrackPoint]) -> list[Event]:
        """One frame at time ``t`` with every track on it. Returns the events that opened, closed or were
        detected on it (an open event again when it closes), then forgets tracks unseen ``forget_after_s``."""
        if not math.isfinite(t) or (self._last_t is not None and t <= self._last_t):
            log.debug("camera %s: frame at %s not after %s, ignored", self.camera_id, t, self._last_t)
            return []
        t = self._last_t = float(t)
        frame = list(points)
        out: list[Event] = []
        for p in frame:
            tr = self._tracks.setdefault(p.track_id, _TrackEvents(t))
            tr.last_t = t
            out += self._wrong_way(tr, p, t)
            out += self._stopped(tr, p, t, frame)
        out += self._queues_on(t, frame)
        out += self.evict_older_than(t - self.forget_after_s)
        return out

    def _lane(self, p: TrackPoint) -> LaneArea | None:
        return None if p.lane_id is None else self.lanes.get(p.lane_id)

    def _plausible(self, p: TrackPoint) -> bool:
        return p.speed_kmh is not None and math.isfinite(p.speed_kmh) and p.road_xy is not None

    def _wrong_way(self, tr: _TrackEvents, p: TrackPoint, t: float) -> list[Event]:
        if tr.wrong_way_reported:
            return []
        ww = tr.wrong_way
        if ww is not None and t - ww.last_t > self.max_gap_s:
            ww = tr.wrong_way = None  # a gap in the evidence: start over
        lane = self._lane(p)
        if (
            lane is None
            or lane.heading_deg is None
            or not self._plausible(p)
            or p.heading_deg is None
            or p.speed_kmh is None
            or p.speed_kmh < self.stopped_speed_kmh  # a standing vehicle's heading is noise
        ):
            return []
        off = angle_between_deg(p.heading_deg, lane.heading_deg)
        if off < 90.0 - self.wrong_way_tolerance_deg:
            tr.wrong_way = None  # with the traffic: the stretch is over
            return []
        if off <= 90.0 + self.wrong_way_tolerance_deg:
            return []  # across the lane: neither evidence nor counter-evidence
        assert p.road_xy is not None
        x, y = p.road_xy
        if ww is None or angle_between_deg(ww.lane_heading, lane.heading_deg) > _SAME_LANE_DIRECTION_DEG:
            ww = tr.wrong_way = _WrongWay(t, x, y, lane.id, lane.heading_deg, 0, t)
        ww.n += 1
        ww.last_t = t
        distance = -along((x - ww.x, y - ww.y), ww.lane_heading)  # net progress against the lane
        if distance < self.wrong_way_min_m or ww.n < self.wrong_way_min_estimates:
            return []
        tr.wrong_way, tr.wrong_way_reported = None, True
        event = Event(
            event_id=event_id(self.camera_id, WRONG_WAY, f"track:{p.track_id}", ww.start_t),
            type=WRONG_WAY,
            camera_id=self.camera_id,
            track_id=p.track_id,
            lane_id=ww.lane_id,
            zone_id=None,
            start_ts=ww.start_t,
            detect_ts=t,
            end_ts=t,
            duration_s=t - ww.start_t,
            distance_m=distance,
            speed_kmh=p.speed_kmh,
            heading_deg=p.heading_deg,
            lane_heading_deg=ww.lane_heading,
            x_m=x,
            y_m=y,
            class_name=p.class_name,
        )
        log.info(
            "camera %s: track %s wrong way for %.1f m in lane %s", self.camera_id, p.track_id, distance, ww.lane_id
        )
        return [event]

    def _in_stopping_zone(self, p: TrackPoint) -> bool:
        return any(z.purpose == "stopping" and z.contains(p) for z in self.zones)

    def _queued_behind(self, p: TrackPoint, frame: Sequence[TrackPoint]) -> bool:
        """Whether a slow vehicle stands at most ``queue_max_gap_m`` ahead of ``p`` in its lane."""
        lane = self._lane(p)
        if lane is None or lane.heading_deg is None or p.road_xy is None:
            return False
        s = along(p.road_xy, lane.heading_deg)
        for q in frame:
            if q.track_id == p.track_id or q.lane_id != p.lane_id or q.road_xy is None or q.speed_kmh is None:
                continue
            if (
                q.speed_kmh < self.queue_speed_kmh
                and 0 < along(q.road_xy, lane.heading_deg) - s <= self.queue_max_gap_m
            ):
                return True
        return False

    def _stopped(self, tr: _TrackEvents, p: TrackPoint, t: float, frame: Sequence[TrackPoint]) -> list[Event]:
        stop = tr.stop
        in_lane = p.lane_id is not None and p.road_xy is not None and not self._in_stopping_zone(p)
        moving = p.speed_kmh is not None and p.speed_kmh >= self.stopped_speed_kmh
        if stop is not None:
            moved = p.road_xy is not None and math.dist(p.road_xy, (stop.x, stop.y)) > self.stopped_radius_m
            if moving or moved or t - stop.last_t > self.max_gap_s:
                tr.stop = None
                out = self._end_stop(stop)
                return out + (self._stopped(tr, p, t, frame) if not moving else [])
            if not in_lane:
                return []  # neutral: outside the lane only ends the stop if it lasts (the gap above)
            stop.last_t = t
        elif in_lane and p.speed_kmh is not None and not moving:
            assert p.road_xy is not None and p.lane_id is not None
            stop = tr.stop = _Stop(t, p.road_xy[0], p.road_xy[1], p.lane_id, t)
        if stop is None or stop.event is not None:
            return []
        if self._queued_behind(p, frame):
            # Standing in a queue is not a stop: its clock starts when the vehicle ahead has gone (else every
            # vehicle still standing when a queue moves off would be a "stopped vehicle" at once).
            stop.start_t = t
            return []
        if t - stop.start_t < self.stopped_min_s:
            return []
        stop.event = Event(
            event_id=event_id(self.camera_id, STOPPED_VEHICLE, f"track:{p.track_id}", stop.start_t),
            type=STOPPED_VEHICLE,
            camera_id=self.camera_id,
            track_id=p.track_id,
            lane_id=stop.lane_id,
            zone_id=None,
            start_ts=stop.start_t,
            detect_ts=t,
            end_ts=None,
            duration_s=t - stop.start_t,
            speed_kmh=p.speed_kmh,
            x_m=stop.x,
            y_m=stop.y,
            class_name=p.class_name,
        )
        log.info("camera %s: track %s stopped in lane %s", self.camera_id, p.track_id, stop.lane_id)
        return [stop.event]

    @staticmethod
    def _end_stop(stop: _Stop) -> list[Event]:
        """The closing report of a stop that was reported (a shorter one leaves no trace)."""
        if stop.event is None:
            return []
        return [replace(stop.event, end_ts=stop.last_t, duration_s=stop.last_t - stop.start_t)]

    def _queues_on(self, t: float, frame: Sequence[TrackPoint]) -> list[Event]:
        out: list[Event] = []
        for zone in self.zones:
            if zone.purpose != "queue":
                continue
            slow = [
                p
                for p in frame
                if self._plausible(p)
                and p.speed_kmh is not None
                and p.speed_kmh < self.queue_speed_kmh
                and zone.contains(p)
            ]
            lane = self.lanes.get(zone.lane_id) if zone.lane_id else None
            heading = None if lane is None else lane.heading_deg
            chain = None
            if len(slow) >= self.queue_min_vehicles:
                chain = queue_chain(slow, heading, self.queue_max_gap_m, self.queue_min_vehicles)
            ok = chain is not None and len(chain.track_ids) >= self.queue_min_vehicles
            q = self._queues.get(zone.id)
            if ok:
                assert chain is not None
                if q is None:
                    q = self._queues[zone.id] = _Queue(t, t, chain.length_m, len(chain.track_ids), chain.front)
                q.last_ok_t = t
                if chain.length_m > q.max_length_m:
                    q.max_length_m, q.front = chain.length_m, chain.front
                q.max_vehicles = max(q.max_vehicles, len(chain.track_ids))
                if q.event is None and t - q.start_t >= self.queue_hold_s:
                    q.event = self._queue_event(zone, q, t)
                    out.append(q.event)
            elif q is not None and (q.event is None or t - q.last_ok_t >= self.queue_hold_s):
                del self._queues[zone.id]  # a pending queue that did not hold; or a dissolved one
                if q.event is not None:
                    out.append(self._queue_event(zone, q, t, closed=True))
        return out

    def _queue_event(self, zone: ZoneArea, q: _Queue, t: float, *, closed: bool = False) -> Event:
        detect = t if q.event is None else q.event.detect_ts
        end = q.last_ok_t if closed else None
        return Event(
            event_id=event_id(self.camera_id, QUEUE, f"zone:{zone.id}", q.start_t),
            type=QUEUE,
            camera_id=self.camera_id,
            track_id=None,
            lane_id=zone.lane_id,
            zone_id=zone.id,
            start_ts=q.start_t,
            detect_ts=detect,
            end_ts=end,
            duration_s=(end if end is not None else detect) - q.start_t,
            max_length_m=q.max_length_m,
            max_vehicles=q.max_vehicles,
            x_m=q.front[0],
            y_m=q.front[1],
        )

    # -- bookkeeping --------------------------------------------------------------------------------------
    def evict(self, track_id: TrackId) -> list[Event]:
        """Forget a track (it ended); returns the closing report of its open stop, if any."""
        tr = self._tracks.pop(track_id, None)
        return [] if tr is None or tr.stop is None else self._end_stop(tr.stop)

    def evict_older_than(self, t: float) -> list[Event]:
        """Forget tracks last seen before ``t``; returns the closing reports of their open stops."""
        out: list[Event] = []
        for k in [k for k, tr in self._tracks.items() if tr.last_t < t]:
            out += self.evict(k)
        return out

    def open_events(self) -> list[Event]:
        """Events reported open and not closed yet (stops and queues), as first reported."""
        stops = [tr.stop.event for tr in self._tracks.values() if tr.stop is not None and tr.stop.event is not None]
        return stops + [q.event for q in self._queues.values() if q.event is not None]

    def track_ids(self) -> list[TrackId]:
        return list(self._tracks)

    def __len__(self) -> int:
        return len(self._tracks)

    # -- state --------------------------------------------------------------------------------------------
    def params(self) -> dict[str, float | int]:
        return {
            "wrong_way_min_m": self.wrong_way_min_m,
            "wrong_way_min_estimates": self.wrong_way_min_estimates,
            "wrong_way_tolerance_deg": self.wrong_way_tolerance_deg,
            "stopped_min_s": self.stopped_min_s,
            "stopped_speed_kmh": self.stopped_speed_kmh,
            "stopped_radius_m": self.stopped_radius_m,
            "queue_speed_kmh": self.queue_speed_kmh,
            "queue_min_vehicles": self.queue_min_vehicles,
            "queue_max_gap_m": self.queue_max_gap_m,
            "queue_hold_s": self.queue_hold_s,
            "max_gap_s": self.max_gap_s,
            "forget_after_s": self.forget_after_s,
        }

    def to_doc(self) -> dict[str, Any]:
        """Plain-JSON state: parameters (informational), per-track and per-zone episodes. Not the geometry,
        which comes from the camera config."""
        return {
            "v": _STATE_VERSION,
            "params": self.params(),
            "tracks": [[k, tr.to_list()] for k, tr in self._tracks.items()],
            "queues": [[zone_id, q.to_list()] for zone_id, q in self._queues.items()],
            "last_t": self._last_t,
        }

    @classmethod
    def from_doc(
        cls, doc: dict[str, Any], camera_id: str, lanes: Sequence[LaneArea] = (), zones: Sequence[ZoneArea] = ()
    ) -> EventDetector:
        """Restore with the parameters the state was written with, on the given geometry."""
        return cls(camera_id, lanes, zones, **doc["params"]).restore_tracks(doc)

    def restore_tracks(self, doc: dict[str, Any]) -> EventDetector:
        """Replace this detector's episodes with those of a :meth:`to_doc` state; parameters and geometry stay
        this instance's (a restart takes them from the current configuration). Queue episodes of zones that are
        no longer queue zones are dropped. Returns ``self``."""
        if doc.get("v") != _STATE_VERSION:
            raise ValueError(f"EventDetector state version {doc.get('v')!r}, expected {_STATE_VERSION}")
        self._tracks = {k: _TrackEvents.from_list(v) for k, v in doc["tracks"]}
        queue_zones = {z.id for z in self.zones if z.purpose == "queue"}
        self._queues = {str(z): _Queue.from_list(v) for z, v in doc["queues"] if z in queue_zones}
        self._last_t = None if doc["last_t"] is None else float(doc["last_t"])
        return self
