"""The camera geometry of a synthetic scene and the ground truth it implies for counting and traffic events.

:func:`camera_geometry`: the ``lines``, ``lanes``, ``zones`` and ``events`` sections of the synthetic camera
(cameras.Camera), all in road-plane metres (the synthetic camera is calibrated): one counting line across the
road (carriageway and shoulders) at each ``SceneParams.line_ys_m``, drawn from -x to +x so that traffic
towards the camera counts as ``towards_camera`` and wrong-way traffic as ``away_from_camera``; one lane per
traffic lane (``lane_0`` at x = 0 ..), heading 180 (towards the camera); with a stopped vehicle, a ``queue`` zone
over its lane from just before the stop to well behind the queue; event thresholds for a clip of seconds.

The ground truth, from the rendered frames (true positions, boxes and speeds) and the vehicles' scripts:

* :func:`true_crossings`: every (line, vehicle, direction) whose contact point passes through a line segment
  between two frames, with the sub-frame time, where, and how tall the vehicle's visible box is there; it is
  ``countable`` when that box is >= ``min_height_px`` (the eval's 40 px: smaller vehicles are found too
  unreliably to demand a count) and the crossing can be confirmed in the clip: the vehicle's ground point is
  observed (visible box, contact point in the picture and the region of interest) at least the line
  hysteresis (``crossing_hysteresis_m`` / ``_px``) before the line and as far beyond it.
  :func:`crossing_sets` lists the countable vehicle ids per line and direction.
* :func:`true_events`: ``wrong_way`` (a wrong-way vehicle, from entering to leaving the region of interest),
  ``stopped_vehicle`` (the stopping vehicle, from standstill to moving off) and ``queue`` (the zone, from when
  ``queue_min_vehicles`` of the stopped vehicle and the cars behind it are slower than ``queue_speed_kmh`` in
  one chain, gaps <= ``queue_max_gap_m``, to when they no longer are; with the most vehicles at once). An
  event is ``observable`` when a correct detector with these thresholds must report it within the clip: the
  wrong-way vehicle drives ``wrong_way_min_m`` while its box is >= ``min_height_px``; the stop lasts
  ``stopped_min_s`` in the clip with the vehicle >= ``min_height_px``; the queue holds ``queue_hold_s``.
  Cars queueing behind the stopped vehicle are not stopped-vehicle events (they wait in a queue).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import cv2
import numpy as np

from trafficstream.bench.synthetic.road import RoadCourse
from trafficstream.bench.synthetic.scene import SHOULDER_LEFT_M, SHOULDER_RIGHT_M, SceneParams
from trafficstream.bench.synthetic.traffic import QUEUED, STOPPED, WRONG_WAY, VehiclePlan
from trafficstream.models.lines import Line, side_of, step_crossing

COUNT_MIN_HEIGHT_PX = 40.0  # bench.evaluate.MIN_HEIGHT_PX: a vehicle must be this tall to be demanded
LINE_DIRECTIONS = ("towards_camera", "away_from_camera")  # [left-to-right, right-to-left] of a -x -> +x line
LANE_HEADING_DEG = 180.0  # traffic drives towards the camera (-y)
QUEUE_ZONE_ID = "queue_zone"
# Thresholds for a clip of seconds (the defaults suit hours of a real camera: a 20 s stop, ...).
EVENT_SETTINGS: dict[str, float | int] = {
    "crossing_hysteresis_m": 1.0,
    "stopped_min_s": 3.0,
    "queue_hold_s": 2.0,
    "queue_min_vehicles": 3,
    "queue_speed_kmh": 10.0,
    "queue_max_gap_m": 15.0,
    "wrong_way_min_m": 15.0,
    "stopped_speed_kmh": 5.0,
}
WRONG_WAY_EVENT, STOPPED_EVENT, QUEUE_EVENT = "wrong_way", "stopped_vehicle", "queue"


def lane_id(k: int) -> str:
    return f"lane_{k}"


def _r(v: float | None, digits: int = 4) -> float | None:
    return None if v is None else round(float(v), digits)


def _strip(course: RoadCourse, x0: float, x1: float, s0: float, s1: float) -> list[list[float]]:
    """Road-plane polygon of the stretch of road between lane coordinates x0..x1 and s0..s1: a rectangle on a
    straight road, its sides sampled every ~5 m along a bend."""
    if not course.curved:
        return [[x0, s0], [x1, s0], [x1, s1], [x0, s1]]
    s = np.linspace(s0, s1, max(2, int(np.ceil((s1 - s0) / 5.0)) + 1))
    xs = np.concatenate([np.full_like(s, x1), np.full_like(s, x0)])
    px, py = course.to_plane(xs, np.concatenate([s, s[::-1]]))
    return [[round(float(u), 4), round(float(v), 4)] for u, v in zip(px, py, strict=True)]


def _across(course: RoadCourse, x_left: float, x_right: float, y: float) -> list[list[float]]:
    """End points of a counting line across the road (and its shoulders) at road-plane y."""
    if not course.curved:
        return [[x_left, float(y)], [x_right, float(y)]]
    ends = (float(course.x_at(x, np.array(y))) for x in (x_left, x_right))
    return [[round(x, 4), float(y)] for x in ends]


def camera_geometry(params: SceneParams, events: Mapping[str, float | int] | None = None) -> dict[str, Any]:
    """The ``lines``, ``lanes``, ``zones`` and ``events`` sections of the synthetic camera's config. On a bend
    (``curve_radius_m``) the lines span the curved road at their y and the lanes and zones follow it; a lane's
    ``direction_deg`` is its heading on the straight part."""
    w, near = params.lane_width_m, 0.5
    x_left, x_right = -SHOULDER_LEFT_M, params.road_width_m + SHOULDER_RIGHT_M
    course = RoadCourse.of(params)
    lines = [
        {
            "id": f"line_{i}",
            "space": "road",
            "points": _across(course, x_left, x_right, y),
            "directions": list(LINE_DIRECTIONS),
        }
        for i, y in enumerate(sorted(params.line_ys_m))
    ]
    lanes = [
        {
            "id": lane_id(k),
            "space": "road",
            "polygon": _strip(course, k * w, (k + 1) * w, near, params.roi_far_m),
            "direction_deg": LANE_HEADING_DEG,
        }
        for k in range(params.lanes)
    ]
    zones = []
    if params.stopped_vehicles:
        k = params.stop_lane
        y0 = max(near, params.stop_at_m - 4.0)
        y1 = min(params.roi_far_m, params.stop_at_m + 8.0 * (params.queue_vehicles + 1) + 10.0)
        zones.append(
            {
                "id": QUEUE_ZONE_ID,
                "space": "road",
                "polygon": _strip(course, k * w, (k + 1) * w, y0, y1),
                "purpose": "queue",
                "lane": lane_id(k),
            }
        )
    return {"lines": lines, "lanes": lanes, "zones": zones, "events": dict(events or EVENT_SETTINGS)}


def _by_vehicle(frames: Sequence[Mapping[str, Any]]) -> dict[int, list[tuple[int, Mapping[str, Any]]]]:
    out: dict[int, list[tuple[int, Mapping[str, Any]]]] = {}
    for frame in frames:
        for v in frame["vehicles"]:
            out.setdefault(int(v["vehicle_id"]), []).append((int(frame["frame_index"]), v))
    return out


def _visible_height(v: Mapping[str, Any]) -> float:
    box = v.get("box")
    return 0.0 if box is None else float(box[3] - box[1])


def _in_picture(v: Mapping[str, Any], width: int, height: int) -> bool:
    x1, _, x2, y2 = v["full_box"]
    u = (x1 + x2) / 2
    return 0 <= u <= width and 0 <= y2 <= height


def true_crossings(
    frames: Sequence[Mapping[str, Any]],
    lines: Sequence[Mapping[str, Any]],
    fps: float,
    width: int,
    height: int,
    min_height_px: float = COUNT_MIN_HEIGHT_PX,
    events: Mapping[str, float | int] | None = None,
) -> list[dict[str, Any]]:
    """Every (line, vehicle, direction) crossing of the true contact points between consecutive frames (the
    first one of each), in time order. ``countable``: its visible box is >= ``min_height_px`` on one of the two
    frames, its contact point is in the picture and it is ``confirmable`` (seen a hysteresis before the line
    and as far beyond it, on the frames of the clip; ``events``: the camera's thresholds)."""
    ev = {**EVENT_SETTINGS, **dict(events or {})}
    hyst = {"road": float(ev.get("crossing_hysteresis_m", 1.0)), "image": float(ev.get("crossing_hysteresis_px", 8.0))}
    segs = [
        Line(
            str(spec["id"]),
            (float(spec["points"][0][0]), float(spec["points"][0][1])),
            (float(spec["points"][1][0]), float(spec["points"][1][1])),
            str(spec.get("space", "road")),
            (str(spec["directions"][0]), str(spec["directions"][1])),
            hyst[str(spec.get("space", "road"))],
        )
        for spec in lines
    ]
    out: list[dict[str, Any]] = []
    for vid, seen in _by_vehicle(frames).items():
        done: set[tuple[str, str]] = set()
        for i, ((f0, a), (f1, b)) in enumerate(zip(seen[:-1], seen[1:], strict=True)):
            if f1 != f0 + 1:
                continue
            for line in segs:
                key = "world" if line.space == "road" else "image"
                p0, p1 = _point(a, key), _point(b, key)
                hit = step_crossing(line, p0, p1)
                if hit is None or not hit[2]:
                    continue
                u, q, _ = hit
                direction = line.direction(side_of(line.offset(p1)))  # as models.lines names it
                if (line.id, direction) in done:
                    continue
                done.add((line.id, direction))
                h = max(_visible_height(a), _visible_height(b))
                seen_in = _in_picture(a, width, height) or _in_picture(b, width, height)
                side = side_of(line.offset(p1))
                # Where the pipeline can see its ground point: a visible box, the contact point in the picture
                # and in the region of interest (the job drops detections outside it).
                offsets = [line.offset(_point(v, key)) if _observed(v, width, height) else 0.0 for _, v in seen]
                confirmable = any(-side * o >= line.hysteresis for o in offsets[: i + 1]) and any(
                    side * o >= line.hysteresis for o in offsets[i + 1 :]
                )
                out.append(
                    {
                        "line_id": line.id,
                        "direction": direction,
                        "vehicle_id": vid,
                        "t_s": round((f0 + u) / fps, 6),
                        "frame_index": f1,  # the first frame past the line
                        "x": round(q[0], 4),
                        "y": round(q[1], 4),
                        "height_px": round(h, 2),
                        "visibility": round(max(float(a["visibility"]), float(b["visibility"])), 4),
                        "in_picture": bool(seen_in),
                        "confirmable": bool(confirmable),
                        "countable": bool(h >= min_height_px and seen_in and confirmable),
                    }
                )
    return sorted(out, key=lambda c: (c["t_s"], c["line_id"], c["vehicle_id"]))


def _observed(v: Mapping[str, Any], width: int, height: int) -> bool:
    return v.get("box") is not None and bool(v.get("in_roi", True)) and _in_picture(v, width, height)


def _point(v: Mapping[str, Any], key: str) -> tuple[float, float]:
    if key == "world":
        return float(v["world_x"]), float(v["world_y"])
    x1, _, x2, y2 = v["full_box"]
    return (float(x1) + float(x2)) / 2, float(y2)


def crossing_sets(crossings: Sequence[Mapping[str, Any]], lines: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """{line id: {direction: sorted countable vehicle ids}}, every configured line and direction present."""
    out: dict[str, dict[str, list[int]]] = {str(line["id"]): {str(d): [] for d in line["directions"]} for line in lines}
    for c in crossings:
        if c["countable"]:
            out[c["line_id"]][c["direction"]].append(int(c["vehicle_id"]))
    return {k: {d: sorted(ids) for d, ids in v.items()} for k, v in out.items()}


def behaviour(plan: VehiclePlan) -> dict[str, Any]:
    """A vehicle's staged behaviour, for its ground-truth summary."""
    return {
        "behaviour": plan.behaviour,
        "heading_deg": 0.0 if plan.direction > 0 else LANE_HEADING_DEG,
        "stop_s": _r(plan.stop_s),
        "move_off_s": _r(plan.move_off_s),
    }


def _in_polygon(poly: Sequence[Sequence[float]], x: float, y: float) -> bool:
    return bool(cv2.pointPolygonTest(np.asarray(poly, np.float32), (float(x), float(y)), False) >= 0)


def true_events(
    plans: Sequence[VehiclePlan],
    frames: Sequence[Mapping[str, Any]],
    geometry: Mapping[str, Any],
    fps: float,
    n_frames: int,
    min_height_px: float = COUNT_MIN_HEIGHT_PX,
) -> list[dict[str, Any]]:
    """The staged traffic events of a clip, in the order wrong-way, stopped vehicle, queue (see the module
    docstring). Times are clip seconds (frame index / fps); ``end_s`` None: still going on when the clip ends."""
    ev = {**EVENT_SETTINGS, **dict(geometry.get("events") or {})}
    seen = _by_vehicle(frames)
    clip_end = (n_frames - 1) / fps
    out: list[dict[str, Any]] = []
    for plan in plans:
        if plan.behaviour != WRONG_WAY:
            continue
        rows = [(f, v) for f, v in seen.get(plan.vehicle_id, []) if v["in_roi"] and v.get("box") is not None]
        if not rows:
            continue
        big = [float(v["world_y"]) for _, v in rows if _visible_height(v) >= min_height_px]
        travelled = max(big) - min(big) if big else 0.0
        first, last = rows[0][0], rows[-1][0]
        out.append(
            {
                "type": WRONG_WAY_EVENT,
                "vehicle_ids": [plan.vehicle_id],
                "lane_id": lane_id(plan.lane),
                "zone_id": None,
                "start_s": _r(first / fps),
                "end_s": None if last >= n_frames - 1 else _r(last / fps),
                "distance_m": _r(travelled, 2),
                "observable": travelled >= float(ev["wrong_way_min_m"]),
            }
        )
    head = next((p for p in plans if p.behaviour == STOPPED), None)
    if head is not None and head.stop_s is not None and head.stop_s <= clip_end:
        at_stop = [v for f, v in seen.get(head.vehicle_id, []) if f >= head.stop_s * fps - 1e-6]
        height = _visible_height(at_stop[0]) if at_stop else 0.0
        end = head.move_off_s if head.move_off_s is not None and head.move_off_s <= clip_end else None
        standing = (end if end is not None else clip_end) - head.stop_s
        out.append(
            {
                "type": STOPPED_EVENT,
                "vehicle_ids": [head.vehicle_id],
                "lane_id": lane_id(head.lane),
                "zone_id": None,
                "start_s": _r(head.stop_s),
                "end_s": _r(end),
                "x_m": _r(at_stop[0]["world_x"], 3) if at_stop else None,
                "y_m": _r(at_stop[0]["world_y"], 3) if at_stop else None,
                "height_px": round(height, 2),
                "observable": bool(standing >= float(ev["stopped_min_s"]) and height >= min_height_px),
            }
        )
        out += _queue_events(head, plans, frames, geometry, ev, fps, n_frames)
    return out


def _queue_events(
    head: VehiclePlan,
    plans: Sequence[VehiclePlan],
    frames: Sequence[Mapping[str, Any]],
    geometry: Mapping[str, Any],
    ev: Mapping[str, float | int],
    fps: float,
    n_frames: int,
) -> list[dict[str, Any]]:
    zone = next((z for z in geometry.get("zones") or [] if z.get("purpose", "queue") == "queue"), None)
    if zone is None:
        return []
    members = {head.vehicle_id} | {p.vehicle_id for p in plans if p.behaviour == QUEUED}
    min_n, gap = int(ev["queue_min_vehicles"]), float(ev["queue_max_gap_m"])
    counts = np.zeros(n_frames, dtype=int)
    ids_at: list[list[int]] = [[] for _ in range(n_frames)]
    for frame in frames:
        slow = sorted(
            (float(v["world_y"]), int(v["vehicle_id"]))
            for v in frame["vehicles"]
            if int(v["vehicle_id"]) in members
            and float(v["speed_kmh"]) < float(ev["queue_speed_kmh"])
            and _in_polygon(zone["polygon"], v["world_x"], v["world_y"])
        )
        chain = slow[:1]  # front first: the smallest y (traffic drives towards the camera)
        for y, vid in slow[1:]:
            if y - chain[-1][0] > gap:
                break
            chain.append((y, vid))
        f = int(frame["frame_index"])
        counts[f] = len(chain)
        ids_at[f] = [vid for _, vid in chain]
    on = counts >= min_n
    out = []
    f = 0
    while f < n_frames:
        if not on[f]:
            f += 1
            continue
        g = f
        while g + 1 < n_frames and on[g + 1]:
            g += 1
        ids = sorted({vid for k in range(f, g + 1) for vid in ids_at[k]})
        out.append(
            {
                "type": QUEUE_EVENT,
                "vehicle_ids": ids,
                "lane_id": zone.get("lane"),
                "zone_id": zone["id"],
                "start_s": _r(f / fps),
                "end_s": None if g >= n_frames - 1 else _r(g / fps),
                "max_vehicles": int(counts[f : g + 1].max()),
                "observable": bool((g - f) / fps >= float(ev["queue_hold_s"])),
            }
        )
        f = g + 1
    return out
