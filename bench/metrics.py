"""Score pipeline output against known ground truth: detection, identity (CLEAR-MOT, IDF1) and speed.

Inputs are the ground truth of a synthetic clip (``ground_truth.json`` from :mod:`bench.synthetic`, parsed by
:func:`load_ground_truth`) and the pipeline's per-frame vehicle rows as a polars or pandas DataFrame with the
columns ``camera_id, frame_index, track_id, x1, y1, x2, y2, speed_kmh, speed_flag, class_name`` (the last three
and ``track_id`` may be null). Frame indices are the clip's decode order, 0-based, as in the ground truth.

Ground-truth boxes that are mostly hidden, tiny, or whose contact point is outside the region of interest are
"don't care": a detection on one is neither a hit nor a false positive, and missing one costs nothing::

    python -m trafficstream.bench.metrics --ground-truth var/synthetic/seed1/ground_truth.json --detections rows.parquet
"""

from __future__ import annotations

import argparse
import json
import logging
import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from scipy.optimize import linear_sum_assignment

from trafficstream.models.nms import box_iou

log = logging.getLogger(__name__)

DETECTION_COLUMNS = (
    "camera_id",
    "frame_index",
    "track_id",
    "x1",
    "y1",
    "x2",
    "y2",
    "speed_kmh",
    "speed_flag",
    "class_name",
)
_REQUIRED = ("frame_index", "x1", "y1", "x2", "y2")
HEIGHT_BINS = ((0.0, 40.0), (40.0, 80.0), (80.0, math.inf))  # ground-truth box heights, px


@dataclass(frozen=True, eq=False)
class GroundTruth:
    """Parsed ground truth: one row per (frame, vehicle) with a visible box, plus the per-vehicle summary."""

    camera_id: str
    fps: float
    n_frames: int
    boxes: pl.DataFrame  # frame_index, vehicle_id, class_name, x1, y1, x2, y2, visibility, in_roi, world_x,
    #                      world_y, speed_kmh
    speeds: pl.DataFrame  # frame_index, vehicle_id, speed_kmh: every frame a vehicle is in the picture, hidden or not
    vehicles: list[dict[str, Any]]


def load_ground_truth(source: str | Path | Mapping[str, Any]) -> GroundTruth:
    """Read ``ground_truth.json`` (a path or the parsed object)."""
    raw = json.loads(Path(source).read_text()) if isinstance(source, (str, Path)) else source
    rows, speeds = [], []
    for frame in raw["frames"]:
        for v in frame["vehicles"]:
            speeds.append((int(frame["frame_index"]), int(v["vehicle_id"]), float(v["speed_kmh"])))
            if v.get("box") is None:  # fully hidden this frame
                continue
            x1, y1, x2, y2 = v["box"]
            rows.append(
                {
                    "frame_index": int(frame["frame_index"]),
                    "vehicle_id": int(v["vehicle_id"]),
                    "class_name": str(v["class_name"]),
                    "x1": float(x1),
                    "y1": float(y1),
                    "x2": float(x2),
                    "y2": float(y2),
                    "visibility": float(v.get("visibility", 1.0)),
                    "in_roi": bool(v.get("in_roi", True)),
                    "world_x": float(v["world_x"]),
                    "world_y": float(v["world_y"]),
                    "speed_kmh": float(v["speed_kmh"]),
                }
            )
    schema = {
        "frame_index": pl.Int64,
        "vehicle_id": pl.Int64,
        "class_name": pl.String,
        "x1": pl.Float64,
        "y1": pl.Float64,
        "x2": pl.Float64,
        "y2": pl.Float64,
        "visibility": pl.Float64,
        "in_roi": pl.Boolean,
        "world_x": pl.Float64,
        "world_y": pl.Float64,
        "speed_kmh": pl.Float64,
    }
    boxes = pl.DataFrame(rows, schema=schema).sort("frame_index", "vehicle_id")
    speed_df = pl.DataFrame(
        speeds, schema={"frame_index": pl.Int64, "vehicle_id": pl.Int64, "speed_kmh": pl.Float64}, orient="row"
    )
    return GroundTruth(
        str(raw.get("camera_id", "synthetic")),
        float(raw["fps"]),
        int(raw.get("n_frames", len(raw["frames"]))),
        boxes,
        speed_df,
        list(raw.get("vehicles", [])),
    )


def as_polars(detections: Any) -> pl.DataFrame:
    """Pipeline rows as polars: accepts polars, pandas, or a list of dicts. Missing optional columns are null."""
    if isinstance(detections, pl.DataFrame):
        df = detections
    elif hasattr(detections, "to_dict") and hasattr(detections, "columns"):  # pandas, without importing it
        df = pl.from_pandas(detections)
    else:
        df = pl.DataFrame(list(detections))
    missing = [c for c in _REQUIRED if c not in df.columns]
    if missing:
        raise ValueError(f"detections lack column(s) {missing}; expected {list(DETECTION_COLUMNS)}")
    for column, dtype in (
        ("camera_id", pl.String),
        ("track_id", pl.String),
        ("speed_kmh", pl.Float64),
        ("speed_flag", pl.String),
        ("class_name", pl.String),
    ):
        if column not in df.columns:
            df = df.with_columns(pl.lit(None, dtype=dtype).alias(column))
    return df.select(
        pl.col("camera_id").cast(pl.String),
        pl.col("frame_index").cast(pl.Int64),
        # Track ids compare as strings: pipelines emit ints, "3", or "cam:3" alike.
        pl.col("track_id").cast(pl.String),
        *(pl.col(c).cast(pl.Float64) for c in ("x1", "y1", "x2", "y2", "speed_kmh")),
        pl.col("speed_flag").cast(pl.String),
        pl.col("class_name").cast(pl.String),
    )


def match_frame(gt_boxes: np.ndarray, det_boxes: np.ndarray, iou_threshold: float) -> list[tuple[int, int]]:
    """One-to-one matches (gt index, det index) of one frame: Hungarian on IoU, pairs below the threshold
    dropped."""
    if len(gt_boxes) == 0 or len(det_boxes) == 0:
        return []
    iou = box_iou(gt_boxes, det_boxes)
    cost = np.where(iou >= iou_threshold, 1.0 - iou, 1e6)  # forbidden pairs are never worth taking
    rows, cols = linear_sum_assignment(cost)
    return [(int(r), int(c)) for r, c in zip(rows, cols, strict=True) if iou[r, c] >= iou_threshold]


def trailing_mean_speed(frames: np.ndarray, speeds: np.ndarray, window_frames: int) -> dict[int, float]:
    """Per frame, the mean true speed over the frames of [f - window_frames, f] that this vehicle has (what
    a window-averaging estimator reports at f)."""
    order = np.argsort(frames)
    frames, speeds = frames[order], speeds[order]
    csum = np.concatenate([[0.0], np.cumsum(speeds)])
    start = np.searchsorted(frames, frames - window_frames, side="left")
    idx = np.arange(len(frames))
    means = (csum[idx + 1] - csum[start]) / (idx + 1 - start)
    return dict(zip(frames.tolist(), means.tolist(), strict=True))


def _rate(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def _stat(values: Sequence[float] | np.ndarray, fn: Any) -> float | None:
    return float(fn(values)) if len(values) else None


def evaluate(
    ground_truth: GroundTruth | str | Path | Mapping[str, Any],
    detections: Any,
    *,
    camera_id: str | None = None,
    iou_threshold: float = 0.5,
    window_s: float = 0.8,
    min_visibility: float = 0.5,
    min_height_px: float = 20.0,
    min_frames: int = 5,
    exclude_flagged: bool = False,
    keep_errors: bool = False,
) -> dict[str, Any]:
    """Score ``detections`` against ``ground_truth``.

    A ground-truth box counts ("care") when its visible share is >= ``min_visibility``, it is at least
    ``min_height_px`` tall and its contact point is in the region of interest; a vehicle counts
    (``true_vehicles``) when it has >= ``min_frames`` such boxes. Speed errors compare each matched row's
    ``speed_kmh`` with the true speed averaged over the trailing ``window_s`` (the estimator's window);
    ``exclude_flagged`` leaves out rows whose ``speed_flag`` is set. Rows of other cameras are ignored
    (``camera_id`` defaults to the ground truth's). Undefined rates (nothing to divide by) are None.
    ``keep_errors`` adds ``speed_errors_kmh`` (every signed error, to pool several clips' readings).
    """
    gt = ground_truth if isinstance(ground_truth, GroundTruth) else load_ground_truth(ground_truth)
    dets = as_polars(detections)
    cam = camera_id or gt.camera_id
    dets = dets.filter(pl.col("camera_id").is_null() | (pl.col("camera_id") == cam))
    dets = dets.drop_nulls(["frame_index", "x1", "y1", "x2", "y2"]).with_row_index("row")
    boxes = gt.boxes.with_columns(
        (
            (pl.col("visibility") >= min_visibility) & (pl.col("y2") - pl.col("y1") >= min_height_px) & pl.col("in_roi")
        ).alias("care")
    )

    # --- per-frame one-to-one matching ------------------------------------------------------------------
    gt_by_frame = boxes.partition_by("frame_index", as_dict=True)
    det_by_frame = dets.partition_by("frame_index", as_dict=True)
    coords = ["x1", "y1", "x2", "y2"]
    matches: list[tuple[int, int, int, bool]] = []  # (frame, vehicle_id, det row, care)
    ignored_rows: set[int] = set()
    for key in set(gt_by_frame) | set(det_by_frame):
        g = gt_by_frame.get(key)
        d = det_by_frame.get(key)
        if g is None or d is None:
            continue
        g_vid, g_care, d_row = g["vehicle_id"].to_list(), g["care"].to_list(), d["row"].to_list()
        for gi, di in match_frame(g.select(coords).to_numpy(), d.select(coords).to_numpy(), iou_threshold):
            matches.append((int(key[0]), g_vid[gi], d_row[di], g_care[gi]))
            if not g_care[gi]:
                ignored_rows.add(d_row[di])

    care_boxes = boxes.filter(pl.col("care"))
    n_care = care_boxes.height
    tp = sum(1 for m in matches if m[3])
    # Recall by box height: how far out the pipeline sees (small = far away).
    box_keys = zip(care_boxes["frame_index"].to_list(), care_boxes["vehicle_id"].to_list(), strict=True)
    heights = dict(zip(box_keys, (care_boxes["y2"] - care_boxes["y1"]).to_list(), strict=True))
    hit_keys = {(frame, vid) for frame, vid, _, care in matches if care}
    recall_by_height: dict[str, float | None] = {}
    for lo, hi in HEIGHT_BINS:
        keys = [k for k, h in heights.items() if lo <= h < hi]
        recall_by_height[f"{lo:g}-{hi:g}px" if math.isfinite(hi) else f">={lo:g}px"] = _rate(
            sum(k in hit_keys for k in keys), len(keys)
        )
    fp = dets.height - tp - len(ignored_rows)
    det_rows = dets.to_dicts()
    by_row = {r["row"]: r for r in det_rows}

    # --- identity: per-vehicle id sequences, CLEAR-MOT switches, one-id vehicles -----------------------------
    care_frames = care_boxes.group_by("vehicle_id").agg(pl.len().alias("n"), pl.col("class_name").first())
    frames_per_vehicle = dict(zip(care_frames["vehicle_id"].to_list(), care_frames["n"].to_list(), strict=True))
    class_of = dict(zip(care_frames["vehicle_id"].to_list(), care_frames["class_name"].to_list(), strict=True))
    true_ids = sorted(v for v, n in frames_per_vehicle.items() if n >= min_frames)
    seq: dict[int, list[tuple[int, str | None]]] = defaultdict(list)
    for frame, vid, row, care in matches:
        if care:
            seq[vid].append((frame, by_row[row]["track_id"]))
    id_switches = 0
    ids_of: dict[int, set[str]] = {}
    for vid, items in seq.items():
        items.sort()
        last = None
        for _, track in items:
            if track is None:
                continue
            if last is not None and track != last:
                id_switches += 1
            last = track
        ids_of[vid] = {t for _, t in items if t is not None}
    one_id = sum(1 for v in true_ids if len(ids_of.get(v, ())) == 1)

    # --- IDF1: global one-to-one assignment of vehicles to track ids (Ristani et al. 2016) --------------------
    tracked = dets.filter(pl.col("track_id").is_not_null() & ~pl.col("row").is_in(list(ignored_rows)))
    overlap: Counter[tuple[int, str]] = Counter()
    care_by_frame = care_boxes.partition_by("frame_index", as_dict=True)
    for key, d in tracked.partition_by("frame_index", as_dict=True).items():
        g = care_by_frame.get(key)
        if g is None:
            continue
        iou = box_iou(g.select(coords).to_numpy(), d.select(coords).to_numpy())
        g_vid, d_track = g["vehicle_id"].to_list(), d["track_id"].to_list()
        for gi, di in zip(*np.nonzero(iou >= iou_threshold), strict=True):
            overlap[(g_vid[gi], d_track[di])] += 1
    gt_list = sorted({v for v, _ in overlap})
    tr_list = sorted({t for _, t in overlap})
    idtp = 0
    if overlap:
        m = np.zeros((len(gt_list), len(tr_list)))
        gi_of = {v: i for i, v in enumerate(gt_list)}
        ti_of = {t: i for i, t in enumerate(tr_list)}
        for (v, t), n in overlap.items():
            m[gi_of[v], ti_of[t]] = n
        r, c = linear_sum_assignment(-m)
        idtp = int(m[r, c].sum())
    n_pred = tracked.height
    idf1 = _rate(2 * idtp, n_care + n_pred)

    # --- speed ------------------------------------------------------------------------------------------------
    window_frames = max(0, round(window_s * gt.fps))
    reference: dict[int, dict[int, float]] = {}
    for (vid,), g in gt.speeds.partition_by("vehicle_id", as_dict=True).items():
        reference[int(vid)] = trailing_mean_speed(g["frame_index"].to_numpy(), g["speed_kmh"].to_numpy(), window_frames)
    errors: list[float] = []
    per_vehicle_err: dict[int, list[float]] = defaultdict(list)
    with_speed = 0
    for frame, vid, row, care in matches:
        r = by_row[row]
        if not care or r["speed_kmh"] is None or not math.isfinite(r["speed_kmh"]):
            continue
        if exclude_flagged and r["speed_flag"] is not None:
            continue
        with_speed += 1
        err = r["speed_kmh"] - reference[vid][frame]
        errors.append(err)
        per_vehicle_err[vid].append(err)
    abs_err = np.abs(np.asarray(errors))

    # --- classes ----------------------------------------------------------------------------------------------
    true_by_class = Counter(class_of[v] for v in true_ids)
    track_class = (
        dets.filter(pl.col("track_id").is_not_null())
        .group_by("track_id")
        .agg(pl.col("class_name").drop_nulls().mode().first())
    )
    tracked_by_class = Counter(c if c is not None else "unknown" for c in track_class["class_name"].to_list())
    class_hits = [
        by_row[row]["class_name"] == class_of.get(vid)
        for _, vid, row, care in matches
        if care and by_row[row]["class_name"] is not None
    ]

    matched_frames = Counter(vid for _, vid, _, care in matches if care)
    per_vehicle = []
    for v in sorted(frames_per_vehicle):
        errs = per_vehicle_err.get(v, [])
        per_vehicle.append(
            {
                "vehicle_id": v,
                "class_name": class_of[v],
                "care_frames": frames_per_vehicle[v],
                "matched_frames": matched_frames[v],
                "track_ids": sorted(ids_of.get(v, ())),
                "mean_abs_speed_error_kmh": _stat(np.abs(errs), np.mean),
                "mean_speed_error_kmh": _stat(errs, np.mean),
            }
        )

    return {
        "mean_abs_speed_error_kmh": _stat(abs_err, np.mean),
        "median_abs_speed_error_kmh": _stat(abs_err, np.median),
        "p90_abs_speed_error_kmh": _stat(abs_err, lambda a: np.percentile(a, 90)),
        "mean_speed_error_kmh": _stat(errors, np.mean),  # signed: + means the pipeline reads too fast
        # (+1e-9: an error of exactly 3 km/h is within 3 km/h despite float round-off)
        "share_within_3kmh": _rate(int((abs_err <= 3.0 + 1e-9).sum()), len(abs_err)),
        "share_within_5kmh": _rate(int((abs_err <= 5.0 + 1e-9).sum()), len(abs_err)),
        "speed_samples": len(errors),
        "speed_coverage": _rate(with_speed, tp),  # matched care boxes that carried a speed
        "speed_flags": dict(Counter(r["speed_flag"] for r in det_rows if r["speed_flag"] is not None)),
        "true_vehicles": len(true_ids),
        "vehicles_with_one_id": one_id,
        "vehicles_detected": sum(1 for v in true_ids if matched_frames[v]),
        "mean_ids_per_vehicle": _stat([len(ids_of.get(v, ())) for v in true_ids], np.mean),
        "id_switches": id_switches,
        "idf1": idf1,
        "idp": _rate(idtp, n_pred),
        "idr": _rate(idtp, n_care),
        "mota": 1 - (n_care - tp + fp + id_switches) / n_care if n_care else None,  # CLEAR-MOT
        "recall": _rate(tp, n_care),
        "recall_by_height": recall_by_height,
        "precision": _rate(tp, tp + fp),
        "true_positives": tp,
        "false_negatives": n_care - tp,
        "false_positives": fp,
        "gt_boxes": n_care,
        "ignored_detections": len(ignored_rows),
        "class_accuracy": _rate(sum(class_hits), len(class_hits)),
        "true_by_class": dict(sorted(true_by_class.items())),
        "tracked_by_class": dict(sorted(tracked_by_class.items())),
        "tracks": int(track_class.height),
        "params": {
            "camera_id": cam,
            "iou_threshold": iou_threshold,
            "window_s": window_s,
            "min_visibility": min_visibility,
            "min_height_px": min_height_px,
            "min_frames": min_frames,
            "exclude_flagged": exclude_flagged,
        },
        "per_vehicle": per_vehicle,
        **({"speed_errors_kmh": [round(e, 4) for e in errors]} if keep_errors else {}),
    }


def read_detections(path: str | Path) -> pl.DataFrame:
    """Pipeline rows from a Delta table folder, Parquet, CSV or JSON-lines file."""
    p = Path(path)
    if p.is_dir() and (p / "_delta_log").is_dir():
        return pl.read_delta(str(p))
    if p.suffix == ".parquet" or p.is_dir():
        return pl.read_parquet(p)
    if p.suffix == ".csv":
        return pl.read_csv(p)
    if p.suffix in (".jsonl", ".ndjson", ".json"):
        return pl.read_ndjson(p)
    raise ValueError(f"{p}: expected a Delta table folder, .parquet, .csv or .jsonl")


def main(argv: Sequence[str] | None = None) -> int:
    from trafficstream.logs import setup_logging

    parser = argparse.ArgumentParser(prog="python -m trafficstream.bench.metrics", description=__doc__.split("\n\n")[0])
    parser.add_argument("--ground-truth", required=True, help="ground_truth.json of a synthetic clip")
    parser.add_argument("--detections", required=True, help="pipeline rows: Delta folder, .parquet, .csv, .jsonl")
    parser.add_argument("--camera-id", default=None)
    parser.add_argument("--window-s", type=float, default=0.8, help="the speed estimator's averaging window")
    parser.add_argument("--iou", type=float, default=0.5)
    parser.add_argument("--per-vehicle", action="store_true", help="include the per-vehicle breakdown")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    result = evaluate(
        args.ground_truth,
        read_detections(args.detections),
        camera_id=args.camera_id,
        window_s=args.window_s,
        iou_threshold=args.iou,
    )
    if not args.per_vehicle:
        result.pop("per_vehicle")
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
