"""Score counting-line crossings and traffic events against a synthetic clip's ground truth.

The ground truth is that of a clip generated with counting geometry (``ground_truth.json`` with ``geometry``,
``crossings`` and ``events``: :mod:`bench.synthetic.scenario`). The pipeline output comes as polars (or pandas)
frames shaped like the Delta tables:

* crossings: ``line_id, track_id, direction, crossing_pts_s`` (clip seconds) and, when present,
  ``frame_index`` (the frame that confirmed it), ``x, y`` (where, in the line's space), ``camera_id``;
* events: ``event_type, track_id, lane_id, zone_id, start_s, detect_s, end_s`` (clip seconds; the table's
  wall-clock ``*_ts`` columns are put on the clip's timeline by :func:`events_on_clip_timeline`) and, when
  present, ``event_id, max_vehicles, camera_id``;
* detections (optional, the ``detections`` table's rows as :mod:`bench.metrics` reads them): which true
  vehicle each track is, frame by frame, from one-to-one box matching (IoU >= 0.5). Without them a crossing is
  matched to a true one by time and position on its line, an event by lane and time.

Crossings, per line and direction: ``true`` (countable vehicles: >= 40 px near the line), ``measured`` (rows),
``counted`` (true vehicles counted), ``double`` (extra rows of a vehicle already counted on that line and
direction), ``missed`` (true vehicles not counted), ``spurious`` (rows of no vehicle that crossed there) and
``ignored`` (rows of a vehicle that crossed but was too small to be demanded). Events, per type
(``wrong_way``, ``stopped_vehicle``, ``queue``): a reported event matches a true one of its type when it is
about the same vehicle (queues: the same zone) and their times overlap (``time_tol_s`` slack); matching is
one to one. Precision and recall over the observable true events (a reported event matching an unobservable
one is neither right nor wrong; a second report of a true event is a false positive, listed as ``duplicates``);
timing over the matches: ``start_error_s`` (reported start - true start), ``detect_delay_s`` (detection - true
start) and ``end_error_s``::

    python -m trafficstream.bench.events_metrics --ground-truth GT.json --crossings C.parquet --events E.parquet \\
        [--detections D.parquet] [--frames F.parquet]
"""

from __future__ import annotations

import argparse
import json
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import linear_sum_assignment

from trafficstream.bench.metrics import as_polars, load_ground_truth, match_frame, read_detections

EVENT_TYPES = ("wrong_way", "stopped_vehicle", "queue")
VEHICLE_EVENTS = ("wrong_way", "stopped_vehicle")  # about one vehicle (a queue is about a zone)
# Types whose end is a fact to compare (a wrong-way event is reported closed when it becomes certain).
TIMED_ENDS = ("stopped_vehicle", "queue")
_FORBIDDEN = 1e9

TrackFrames = dict[str, dict[int, int]]  # track id -> {frame index: true vehicle id}


# -- inputs ---------------------------------------------------------------------------------------------------
def _raw(ground_truth: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    raw = json.loads(Path(ground_truth).read_text()) if isinstance(ground_truth, (str, Path)) else ground_truth
    if "crossings" not in raw or "geometry" not in raw:
        raise ValueError("the ground truth has no counting geometry: generate the clip with geometry (events scene)")
    return raw


def _frame(df: Any) -> pl.DataFrame:
    if isinstance(df, pl.DataFrame):
        return df
    if hasattr(df, "to_dict") and hasattr(df, "columns"):  # pandas, without importing it
        return pl.from_pandas(df)
    return pl.DataFrame(list(df))


def _track(v: Any) -> str | None:
    if v is None:
        return None
    if isinstance(v, float):
        return None if math.isnan(v) else str(int(v))
    return str(v)


def _num(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _for_camera(df: pl.DataFrame, camera_id: str) -> pl.DataFrame:
    if "camera_id" not in df.columns:
        return df
    return df.filter(pl.col("camera_id").is_null() | (pl.col("camera_id").cast(pl.String) == camera_id))


def _seconds(col: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """A timestamp column (Datetime, or already epoch seconds) as float epoch seconds."""
    if isinstance(dtype, pl.Datetime):
        return col.dt.epoch("us").cast(pl.Float64) / 1e6
    return col.cast(pl.Float64)


def events_on_clip_timeline(events: Any, frames: Any) -> pl.DataFrame:
    """The events table's wall-clock ``start_ts``, ``detect_ts``, ``end_ts`` as clip seconds ``start_s``,
    ``detect_s``, ``end_s``.

    The job stamps an event's times with the offset between capture time and presentation time of the frame
    that reported it (``frame_index``: for an event reported again when it ends, the last report): undone here
    with that frame's ``capture_ts`` and ``pts_s`` from ``frames`` (the frames or detections table). A row whose
    frame is unknown takes the median offset. Events that already carry ``start_s`` come back as they are."""
    ev = _frame(events)
    if "start_s" in ev.columns:
        return ev
    fr = _frame(frames)
    missing = {"frame_index", "pts_s", "capture_ts"} - set(fr.columns)
    if missing:
        raise ValueError(f"frames lack column(s) {sorted(missing)}: cannot put wall-clock times on the clip")
    fr = (
        fr.select(
            pl.col("frame_index").cast(pl.Int64),
            (_seconds(pl.col("capture_ts"), fr.schema["capture_ts"]) - pl.col("pts_s").cast(pl.Float64)).alias(
                "_offset"
            ),
        )
        .group_by("frame_index")
        .agg(pl.col("_offset").first())
    )
    med = fr["_offset"].median() if fr.height else None
    median = float(med) if isinstance(med, (int, float)) else 0.0
    ev = ev.with_columns(pl.col("frame_index").cast(pl.Int64)) if "frame_index" in ev.columns else ev
    if "frame_index" in ev.columns:
        ev = ev.join(fr, on="frame_index", how="left")
    else:
        ev = ev.with_columns(pl.lit(None, dtype=pl.Float64).alias("_offset"))
    offset = pl.col("_offset").fill_null(median)
    return ev.with_columns(
        *(
            (_seconds(pl.col(f"{name}_ts"), ev.schema[f"{name}_ts"]) - offset).alias(f"{name}_s")
            for name in ("start", "detect", "end")
        )
    ).drop("_offset")


def track_vehicles(
    ground_truth: str | Path | Mapping[str, Any],
    detections: Any,
    *,
    camera_id: str | None = None,
    iou_threshold: float = 0.5,
) -> TrackFrames:
    """Which true vehicle each track is on each frame: per frame, one-to-one matching of the detection rows'
    boxes with the true visible boxes (Hungarian on IoU, as :func:`bench.metrics.evaluate`)."""
    gt = load_ground_truth(ground_truth)
    dets = as_polars(detections)
    dets = dets.filter(pl.col("camera_id").is_null() | (pl.col("camera_id") == (camera_id or gt.camera_id)))
    dets = dets.drop_nulls(["frame_index", "x1", "y1", "x2", "y2", "track_id"])
    coords = ["x1", "y1", "x2", "y2"]
    gt_by_frame = gt.boxes.partition_by("frame_index", as_dict=True)
    out: TrackFrames = defaultdict(dict)
    for key, d in dets.partition_by("frame_index", as_dict=True).items():
        g = gt_by_frame.get(key)
        if g is None:
            continue
        vids, tracks = g["vehicle_id"].to_list(), d["track_id"].to_list()
        for gi, di in match_frame(g.select(coords).to_numpy(), d.select(coords).to_numpy(), iou_threshold):
            out[tracks[di]][int(key[0])] = int(vids[gi])
    return dict(out)


def vehicle_of(tracks: TrackFrames, track_id: Any, first_frame: float, last_frame: float) -> int | None:
    """The true vehicle a track is over frames [first_frame, last_frame] (the most matched one), else over its
    whole life; None when it never matched a true vehicle."""
    frames = tracks.get(_track(track_id) or "", {})
    if not frames:
        return None
    window = Counter(v for f, v in frames.items() if first_frame <= f <= last_frame)
    votes = window or Counter(frames.values())
    return max(sorted(votes), key=lambda v: votes[v])


# -- crossings ------------------------------------------------------------------------------------------------
def _rate(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def _stats(values: Sequence[float], prefix: str) -> dict[str, float | None]:
    a = np.abs(np.asarray(values, dtype=np.float64))
    return {
        f"mean_{prefix}": float(np.mean(values)) if len(values) else None,
        f"mean_abs_{prefix}": float(a.mean()) if len(a) else None,
        f"max_abs_{prefix}": float(a.max()) if len(a) else None,
    }


def score_crossings(
    ground_truth: str | Path | Mapping[str, Any],
    crossings: Any,
    *,
    detections: Any = None,
    tracks: TrackFrames | None = None,
    camera_id: str | None = None,
    min_height_px: float | None = None,
    time_tol_s: float = 1.0,
    position_tol: float = 2.5,
    window_s: float = 1.0,
) -> dict[str, Any]:
    """Counts per line and direction against the true crossings (see the module docstring).

    A row's vehicle: with ``detections`` (or precomputed ``tracks``) the vehicle its track was matched with
    over the ``window_s`` before the confirming frame; without, the true crossing of its line and direction
    nearest in time (within ``time_tol_s``) and position (within ``position_tol``, the line's units), one to
    one, further rows near an already matched one being its double counts. ``min_height_px``: re-decide which
    true crossings are demanded (default: the ground truth's ``countable``)."""
    raw = _raw(ground_truth)
    cam = camera_id or str(raw.get("camera_id", "synthetic"))
    fps = float(raw["fps"])
    if tracks is None and detections is not None:
        tracks = track_vehicles(raw, detections, camera_id=cam)
    table = _for_camera(_frame(crossings), cam)
    rows: list[dict[str, Any]] = table.to_dicts() if table.height else []

    def demanded(c: Mapping[str, Any]) -> bool:
        if min_height_px is None:
            return bool(c["countable"])
        return bool(c["height_px"] >= min_height_px and c.get("in_picture", True) and c.get("confirmable", True))

    per_line: dict[str, dict[str, Any]] = {}
    totals: Counter[str] = Counter()
    time_errors: list[float] = []
    for line in raw["geometry"]["lines"]:
        per_line[line["id"]] = {}
        for direction in line["directions"]:
            truth = {
                int(c["vehicle_id"]): c
                for c in raw["crossings"]
                if c["line_id"] == line["id"] and c["direction"] == direction
            }
            mine = [r for r in rows if r["line_id"] == line["id"] and r["direction"] == direction]
            who: list[int | None] = []
            if tracks is not None:
                for r in mine:
                    confirmed = _num(r.get("frame_index"))
                    last = confirmed if confirmed is not None else math.ceil(float(r["crossing_pts_s"]) * fps)
                    who.append(vehicle_of(tracks, r["track_id"], last - window_s * fps, last))
            else:
                who = _match_by_time_position(mine, truth, time_tol_s, position_tol)
            per_line[line["id"]][direction] = result = _count(truth, mine, who, demanded, time_errors)
            totals.update({k: v for k, v in result.items() if isinstance(v, int) and not isinstance(v, bool)})
    return {
        "true": totals["true"],
        "measured": totals["measured"],
        "counted": totals["counted"],
        "double": totals["double"],
        "missed": totals["missed"],
        "spurious": totals["spurious"],
        "ignored": totals["ignored"],
        "exact": totals["double"] == totals["missed"] == totals["spurious"] == 0,
        "count_recall": _rate(totals["counted"], totals["true"]),
        **_stats(time_errors, "time_error_s"),
        "per_line": per_line,
        "params": {
            "camera_id": cam,
            "matched_by": "detections" if tracks is not None else "time_position",
            "min_height_px": min_height_px if min_height_px is not None else raw.get("count_min_height_px"),
            "time_tol_s": time_tol_s,
            "position_tol": position_tol,
            "window_s": window_s,
        },
    }


def _match_by_time_position(
    rows: Sequence[Mapping[str, Any]], truth: Mapping[int, Mapping[str, Any]], time_tol_s: float, position_tol: float
) -> list[int | None]:
    """Each row's true vehicle by crossing time and place: one to one (Hungarian), then the rows left over go to
    a true crossing they are near (double counts) or to none (spurious)."""
    vids = sorted(truth)
    if not rows or not vids:
        return [None] * len(rows)
    cost = np.full((len(rows), len(vids)), _FORBIDDEN)
    for i, r in enumerate(rows):
        for j, v in enumerate(vids):
            c = truth[v]
            dt = abs(float(r["crossing_pts_s"]) - float(c["t_s"]))
            x, y = _num(r.get("x")), _num(r.get("y"))
            dx = 0.0 if x is None or y is None else math.hypot(x - float(c["x"]), y - float(c["y"]))
            if dt <= time_tol_s and dx <= position_tol:
                cost[i, j] = dt / time_tol_s + dx / position_tol
    who: list[int | None] = [None] * len(rows)
    for i, j in zip(*linear_sum_assignment(cost), strict=True):
        if cost[i, j] < _FORBIDDEN:
            who[i] = vids[j]
    for i in range(len(rows)):
        if who[i] is None and (cost[i] < _FORBIDDEN).any():
            who[i] = vids[int(np.argmin(cost[i]))]
    return who


def _count(
    truth: Mapping[int, Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    who: Sequence[int | None],
    demanded: Any,
    time_errors: list[float],
) -> dict[str, Any]:
    wanted = {v for v, c in truth.items() if demanded(c)}
    by_vehicle: dict[int, list[Mapping[str, Any]]] = defaultdict(list)
    spurious: list[str | None] = []
    for r, v in zip(rows, who, strict=True):
        if v is not None and v in truth:
            by_vehicle[v].append(r)
        else:
            spurious.append(_track(r["track_id"]))
    counted = sorted(v for v in wanted if by_vehicle.get(v))
    doubles = {v: len(rs) - 1 for v, rs in by_vehicle.items() if len(rs) > 1}
    for v in counted:
        first = min(by_vehicle[v], key=lambda r: float(r["crossing_pts_s"]))
        time_errors.append(float(first["crossing_pts_s"]) - float(truth[v]["t_s"]))
    return {
        "true": len(wanted),
        "measured": len(rows),
        "counted": len(counted),
        "double": sum(doubles.values()),
        "missed": len(wanted) - len(counted),
        "spurious": len(spurious),
        "ignored": sum(1 for v in by_vehicle if v not in wanted),
        "missed_vehicles": sorted(wanted - set(counted)),
        "double_vehicles": sorted(doubles),
        "spurious_tracks": sorted(t for t in spurious if t is not None),
    }


# -- events ---------------------------------------------------------------------------------------------------
def score_events(
    ground_truth: str | Path | Mapping[str, Any],
    events: Any,
    *,
    detections: Any = None,
    tracks: TrackFrames | None = None,
    camera_id: str | None = None,
    time_tol_s: float = 2.0,
) -> dict[str, Any]:
    """Precision, recall and timing of the reported events per type (see the module docstring). ``events``
    carry clip-second ``start_s``, ``detect_s``, ``end_s`` (``end_s`` null: still open); with an ``event_id``
    column the last row of each id counts (a report when it ends supersedes the first)."""
    raw = _raw(ground_truth)
    cam = camera_id or str(raw.get("camera_id", "synthetic"))
    fps = float(raw["fps"])
    clip_end = (int(raw["n_frames"]) - 1) / fps
    if tracks is None and detections is not None:
        tracks = track_vehicles(raw, detections, camera_id=cam)
    ev = _for_camera(_frame(events), cam)
    if "event_id" in ev.columns and ev.height:
        ev = ev.unique(subset=["event_id"], keep="last", maintain_order=True)
    rows = ev.to_dicts() if ev.height else []
    out: dict[str, Any] = {}
    for kind in EVENT_TYPES:
        truth = [e for e in raw.get("events", []) if e["type"] == kind]
        mine = [r for r in rows if r.get("event_type") == kind]
        out[kind] = _score_type(kind, truth, mine, tracks, fps, clip_end, time_tol_s)
    other = Counter(str(r.get("event_type")) for r in rows if r.get("event_type") not in EVENT_TYPES)
    out["other_types"] = dict(sorted(other.items()))
    out["params"] = {
        "camera_id": cam,
        "matched_by": "detections" if tracks is not None else "lane_time",
        "time_tol_s": time_tol_s,
    }
    return out


def _end(v: Any, clip_end: float) -> float:
    x = _num(v)
    return clip_end if x is None else x


def _compatible(
    kind: str,
    g: Mapping[str, Any],
    r: Mapping[str, Any],
    tracks: TrackFrames | None,
    fps: float,
    clip_end: float,
    tol: float,
) -> bool:
    start = _num(r.get("start_s"))
    if start is None:
        return False
    if start > _end(g.get("end_s"), clip_end) + tol or _end(r.get("end_s"), clip_end) < float(g["start_s"]) - tol:
        return False
    if kind in VEHICLE_EVENTS:
        if tracks is not None:
            detect = _num(r.get("detect_s"))
            v = vehicle_of(tracks, r.get("track_id"), start * fps, (detect if detect is not None else start) * fps)
            return v is not None and v in g["vehicle_ids"]
        return r.get("lane_id") is None or r.get("lane_id") == g.get("lane_id")
    if g.get("zone_id") is not None and r.get("zone_id") is not None:
        return bool(r["zone_id"] == g["zone_id"])
    return r.get("lane_id") is None or r.get("lane_id") == g.get("lane_id")


def _score_type(
    kind: str,
    truth: Sequence[Mapping[str, Any]],
    rows: Sequence[Mapping[str, Any]],
    tracks: TrackFrames | None,
    fps: float,
    clip_end: float,
    tol: float,
) -> dict[str, Any]:
    ok = np.array([[_compatible(kind, g, r, tracks, fps, clip_end, tol) for g in truth] for r in rows], dtype=bool)
    ok = ok.reshape(len(rows), len(truth))
    cost = np.full(ok.shape, _FORBIDDEN)
    for i, r in enumerate(rows):
        for j, g in enumerate(truth):
            if ok[i, j]:
                cost[i, j] = abs(float(r["start_s"]) - float(g["start_s"]))
    pairs = [(i, j) for i, j in zip(*linear_sum_assignment(cost), strict=True) if ok[i, j]] if ok.size else []
    matched_rows = {i for i, _ in pairs}
    tp_pairs = [(i, j) for i, j in pairs if truth[j].get("observable", True)]
    ignored = len(pairs) - len(tp_pairs)
    unmatched = [i for i in range(len(rows)) if i not in matched_rows]
    duplicates = [i for i in unmatched if ok[i].any()]
    fp = len(unmatched)
    observable = [j for j, g in enumerate(truth) if g.get("observable", True)]
    found = {j for _, j in tp_pairs}
    starts, detects, ends, details = [], [], [], []
    for i, j in tp_pairs:
        r, g = rows[i], truth[j]
        start_err = float(r["start_s"]) - float(g["start_s"])
        starts.append(start_err)
        detect = _num(r.get("detect_s"))
        if detect is not None:
            detects.append(detect - float(g["start_s"]))
        end_err = None
        if kind in TIMED_ENDS and _num(r.get("end_s")) is not None and g.get("end_s") is not None:
            end_err = float(r["end_s"]) - float(g["end_s"])
            ends.append(end_err)
        details.append(
            {
                "event_id": r.get("event_id"),
                "vehicle_ids": list(g.get("vehicle_ids", [])),
                "track_id": _track(r.get("track_id")),
                "true_start_s": g["start_s"],
                "start_error_s": round(start_err, 3),
                "detect_delay_s": None if detect is None else round(detect - float(g["start_s"]), 3),
                "end_error_s": None if end_err is None else round(end_err, 3),
                "max_vehicles": r.get("max_vehicles"),
                "true_max_vehicles": g.get("max_vehicles"),
            }
        )
    result: dict[str, Any] = {
        "true": len(observable),
        "reported": len(rows),
        "true_positives": len(tp_pairs),
        "false_positives": fp,
        "false_negatives": len(observable) - len(found),
        "duplicates": len(duplicates),
        "ignored": ignored,
        "precision": _rate(len(tp_pairs), len(tp_pairs) + fp),
        "recall": _rate(len(found), len(observable)),
        **_stats(starts, "start_error_s"),
        **_stats(detects, "detect_delay_s"),
        **_stats(ends, "end_error_s"),
        "matches": details,
        "missed": [list(truth[j].get("vehicle_ids", [])) for j in observable if j not in found],
        "false_positive_tracks": [_track(rows[i].get("track_id")) for i in unmatched],
    }
    return result


def evaluate_events(
    ground_truth: str | Path | Mapping[str, Any],
    crossings: Any,
    events: Any,
    *,
    detections: Any = None,
    tracks: TrackFrames | None = None,
    camera_id: str | None = None,
    min_height_px: float | None = None,
) -> dict[str, Any]:
    """:func:`score_crossings` and :func:`score_events` of one run (tracks matched to vehicles once)."""
    raw = _raw(ground_truth)
    if tracks is None and detections is not None:
        tracks = track_vehicles(raw, detections, camera_id=camera_id)
    return {
        "crossings": score_crossings(raw, crossings, tracks=tracks, camera_id=camera_id, min_height_px=min_height_px),
        "events": score_events(raw, events, tracks=tracks, camera_id=camera_id),
    }


def ideal_pipeline(ground_truth: str | Path | Mapping[str, Any], camera: Any) -> tuple[pl.DataFrame, pl.DataFrame]:
    """What the camera's line counter and event detector report given perfect perception: every vehicle with a
    visible box in the region of interest, its true ground point (image and road), true speed and heading, one
    track per vehicle (track id = vehicle id), on every frame. Scored like a run, this separates the
    detectors' logic from detection and tracking errors. ``camera``: the clip's ``cameras.Camera``. Returns
    (crossings, events) shaped as :func:`score_crossings` and :func:`score_events` take them."""
    from trafficstream.models.events import EventDetector
    from trafficstream.models.lines import LineCounter, TrackPoint, lane_at, lanes_from_camera

    raw = _raw(ground_truth)
    heading = {int(v["vehicle_id"]): v.get("heading_deg") for v in raw.get("vehicles", [])}
    counter = LineCounter.from_camera(camera)
    detector = EventDetector.from_camera(camera)
    lanes = lanes_from_camera(camera)
    crossings: list[dict[str, Any]] = []
    events: dict[str, dict[str, Any]] = {}
    for frame in raw["frames"]:
        t, index = float(frame["pts_s"]), int(frame["frame_index"])
        points = []
        for v in frame["vehicles"]:
            if v.get("box") is None or not v.get("in_roi", True):
                continue
            x1, _, x2, y2 = v["full_box"]
            moving = float(v["speed_kmh"]) > 0.5  # a standing vehicle has no heading
            p = TrackPoint(
                int(v["vehicle_id"]),
                ((x1 + x2) / 2, y2),
                (float(v["world_x"]), float(v["world_y"])),
                str(v["class_name"]),
                speed_kmh=float(v["speed_kmh"]),
                heading_deg=heading.get(int(v["vehicle_id"])) if moving else None,
            )
            points.append(
                TrackPoint(
                    p.track_id, p.image_xy, p.road_xy, p.class_name, lane_at(lanes, p), p.speed_kmh, p.heading_deg
                )
            )
        for c in counter.update(t, points):
            crossings.append(
                {
                    "line_id": c.line_id,
                    "track_id": int(c.track_id),
                    "direction": c.direction,
                    "crossing_pts_s": c.t,
                    "frame_index": index,
                    "x": c.x,
                    "y": c.y,
                }
            )
        for e in detector.update(t, points):
            events[e.event_id] = {
                "event_id": e.event_id,
                "event_type": e.type,
                "track_id": None if e.track_id is None else int(e.track_id),
                "lane_id": e.lane_id,
                "zone_id": e.zone_id,
                "start_s": e.start_ts,
                "detect_s": e.detect_ts,
                "end_s": e.end_ts,
                "max_vehicles": e.max_vehicles,
            }
    cross_schema = {
        "line_id": pl.String,
        "track_id": pl.Int64,
        "direction": pl.String,
        "crossing_pts_s": pl.Float64,
        "frame_index": pl.Int64,
        "x": pl.Float64,
        "y": pl.Float64,
    }
    event_schema = {
        "event_id": pl.String,
        "event_type": pl.String,
        "track_id": pl.Int64,
        "lane_id": pl.String,
        "zone_id": pl.String,
        "start_s": pl.Float64,
        "detect_s": pl.Float64,
        "end_s": pl.Float64,
        "max_vehicles": pl.Int64,
    }
    return pl.DataFrame(crossings, schema=cross_schema), pl.DataFrame(list(events.values()), schema=event_schema)


def ideal_tracks(ground_truth: str | Path | Mapping[str, Any]) -> TrackFrames:
    """The track -> vehicle map of :func:`ideal_pipeline` (each vehicle its own track, on every frame)."""
    raw = _raw(ground_truth)
    out: TrackFrames = defaultdict(dict)
    for frame in raw["frames"]:
        for v in frame["vehicles"]:
            out[str(int(v["vehicle_id"]))][int(frame["frame_index"])] = int(v["vehicle_id"])
    return dict(out)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trafficstream.bench.events_metrics", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--ground-truth", required=True, help="ground_truth.json of a clip with counting geometry")
    parser.add_argument("--crossings", required=True, help="crossings rows: Delta folder, .parquet, .csv, .jsonl")
    parser.add_argument("--events", required=True, help="events rows (clip-second start_s.. or *_ts with --frames)")
    parser.add_argument("--detections", default=None, help="detections rows: tracks matched to true vehicles")
    parser.add_argument("--frames", default=None, help="frames rows (frame_index, pts_s, capture_ts) for *_ts")
    parser.add_argument("--camera-id", default=None)
    args = parser.parse_args(argv)
    events = read_detections(args.events)
    if args.frames:
        events = events_on_clip_timeline(events, read_detections(args.frames))
    result = evaluate_events(
        args.ground_truth,
        read_detections(args.crossings),
        events,
        detections=read_detections(args.detections) if args.detections else None,
        camera_id=args.camera_id,
    )
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
