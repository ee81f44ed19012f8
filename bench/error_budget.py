"""Speed error budget (issue 10): which link of the measurement chain makes the pipeline's speeds wrong, and by how
much.

The chain from a video frame to a speed reading has five links: the detector's box (its bottom-centre stands for
the vehicle's road contact point), the road-plane homography fitted to the calibration pairs, the frame's
timestamp, the windowed robust line fit (:class:`models.speed.TrackKinematics`) and the tracker that groups boxes
into tracks (identity, and which readings are trusted at all). A synthetic clip (bench/synthetic/) knows the true
value of every one of them, so each link can be measured by swapping a measured quantity for the true one and
re-running the SAME estimator the job runs (``TrackKinematics.from_settings`` with the job's tracker settings),
over the same tracks and frames the job fed it:

==========================  ============================================  ==========================================
variant                     road point fed to the estimator               timestamp
==========================  ============================================  ==========================================
``truth``                   the true contact point (``world_x/_y``)        frame_index / fps
``truth_px_true_h``         true contact pixel (bottom-centre of           frame_index / fps
                            ``full_box``) through the true homography
``truth_px_calibrated``     true contact pixel through the calibrated      frame_index / fps
                            RoadPlane (camera.yaml, as the job builds it)
``box_true_h``              the detector's box bottom-centre through the   frame_index / fps
                            true homography
``truth_pts``               the true contact point                         the job's ``pts_s``
``job_replay``              the detector's box through the calibrated      the job's ``pts_s``
                            plane (the job's own inputs)
==========================  ============================================  ==========================================

Links, each the mean over the scored readings of one difference of variants (km/h, + = reads too fast):

* ``truth_windowed`` = ``truth`` against the true speed: the fit's own lag and noise (also reported against the
  instantaneous true speed and the true speed at the window's mean time);
* ``gt_rounding`` = ``truth_px_true_h`` - ``truth``: the ground truth's own rounding, ~0;
* ``homography`` = ``truth_px_calibrated`` - ``truth_px_true_h``: the calibration;
* ``box_bottom`` = ``box_true_h`` - ``truth_px_true_h``: the detection (with pixel offsets of the box bottom-centre
  from the contact point by distance band, box height and detection tile, and what a constant offset predicts);
* ``timestamps`` = ``truth_pts`` - ``truth``.

Their sum is reconciled with the observed error (the ``speed_kmh`` of the detections table): the remainder splits
into the links' interaction (``job_replay`` - sum), the replay's fidelity (observed - ``job_replay``, 0 when the
replay is the job) and readings no variant could score. ``tracking`` reports coverage, flags and identity effects.

Readings scored, and the true speed they are compared with, are those of bench/metrics.py ``evaluate`` as
``make eval`` calls it: detections matched one-to-one per frame to visible ground-truth boxes by IoU, "care"
boxes only (visible share, height, contact point in the region of interest), trusted readings only
(``speed_flag`` null), against the true speed averaged over the trailing window (``trailing_mean_speed``)::

    python -m trafficstream.bench.error_budget --clip var/eval/clip --run var/eval/run [--out budget.json]

The last line of output is one JSON object; a table is logged. ``fix`` estimates corrections of the contact
point by replaying the job with them (in-sample: the offset is measured on the same clip).
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

from trafficstream.bench.metrics import load_ground_truth, match_frame, read_detections, trailing_mean_speed
from trafficstream.config import TrackerSettings
from trafficstream.models.homography import RoadPlane, offset_speed_factor, project, reprojection_error
from trafficstream.models.roi import bottom_centre
from trafficstream.models.speed import TrackKinematics

log = logging.getLogger(__name__)

DISTANCE_BANDS_M: tuple[tuple[float, float], ...] = (
    (0.0, 10.0),
    (10.0, 20.0),
    (20.0, 35.0),
    (35.0, 60.0),
    (60.0, math.inf),
)
HEIGHT_BANDS_PX: tuple[tuple[float, float], ...] = ((0.0, 60.0), (60.0, 100.0), (100.0, 200.0), (200.0, math.inf))
# bench.evaluate.MIN_HEIGHT_PX, the box height `make eval` scores from (not imported: that module is slow to import)
MIN_HEIGHT_PX = 40.0
VARIANTS = ("truth", "truth_px_true_h", "truth_px_calibrated", "box_true_h", "truth_pts", "job_replay")
LINKS = ("truth_windowed", "gt_rounding", "homography", "box_bottom", "timestamps")


@dataclass(frozen=True)
class _Fed:
    """The rows the job fed to its estimator (detected, finite road point), in frame order, with every quantity
    the variants need. ``vid`` is the true vehicle the row stands for (-1: none), ``scored`` marks the readings
    bench/metrics.py scores."""

    track: np.ndarray  # object: track ids as strings
    frame: np.ndarray  # int
    pts: np.ndarray  # float seconds, the job's timestamps
    box: np.ndarray  # (N, 4) float32 as in the table
    job_kmh: np.ndarray  # NaN where none
    flag: np.ndarray  # object: str | None
    vid: np.ndarray  # int, -1 where no true vehicle
    matched: np.ndarray  # bool: matched to vid by IoU at this frame (else vid is the track's usual vehicle)
    care: np.ndarray  # bool
    true_world: np.ndarray  # (N, 2), NaN where no vehicle
    true_px: np.ndarray  # (N, 2) bottom-centre of the true full_box
    true_height_px: np.ndarray  # height of the true full_box
    scored: np.ndarray  # bool


def _stats(values: np.ndarray) -> dict[str, float | int | None]:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if not len(v):
        return {"n": 0, "mean": None, "mean_abs": None, "median_abs": None, "sd": None}
    return {
        "n": len(v),
        "mean": round(float(v.mean()), 4),
        "mean_abs": round(float(np.abs(v).mean()), 4),
        "median_abs": round(float(np.median(np.abs(v))), 4),
        "sd": round(float(v.std(ddof=1)), 4) if len(v) > 1 else 0.0,
    }


def _mean(values: np.ndarray) -> float | None:
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    return round(float(v.mean()), 4) if len(v) else None


def _band_label(lo: float, hi: float, unit: str) -> str:
    return f"{lo:g}-{hi:g}{unit}" if math.isfinite(hi) else f">={lo:g}{unit}"


def true_plane(H: np.ndarray, like: RoadPlane) -> RoadPlane:
    """A RoadPlane for the true image->world homography ``H`` (same horizon test as the job's plane), with
    ``like``'s calibration pixels as its reference points."""
    H = np.asarray(H, dtype=np.float64)
    img = np.asarray(like.image_points, dtype=np.float64)
    ideal = np.asarray(like.ideal_points, dtype=np.float64)  # H maps undistorted pixels (the same without a lens)
    wld = project(H, ideal)
    return RoadPlane(H, np.linalg.inv(H), img, wld, reprojection_error(H, ideal, wld), like.lens, None, ideal)


def _parse_truth(raw: Mapping[str, Any]) -> dict[tuple[int, int], dict[str, Any]]:
    """(frame, vehicle) -> that vehicle's ground truth in the frame (hidden ones too: full_box is always there)."""
    out: dict[tuple[int, int], dict[str, Any]] = {}
    for frame in raw["frames"]:
        for v in frame["vehicles"]:
            out[(int(frame["frame_index"]), int(v["vehicle_id"]))] = v
    return out


def _prepare(
    raw: Mapping[str, Any],
    detections: pl.DataFrame,
    plane: RoadPlane | None,
    *,
    camera_id: str,
    iou_threshold: float,
    min_visibility: float,
    min_height_px: float,
) -> tuple[_Fed, dict[str, Any]]:
    """Match detections to ground truth as bench/metrics.py does and collect the rows the job fed its estimator."""
    dets = detections
    if "camera_id" in dets.columns:
        dets = dets.filter(pl.col("camera_id").is_null() | (pl.col("camera_id") == camera_id))
    fps = float(raw["fps"])
    for column, dtype in (
        ("pts_s", pl.Float64),
        ("track_id", pl.String),
        ("speed_kmh", pl.Float64),
        ("speed_flag", pl.String),
        ("world_x_m", pl.Float64),
        ("world_y_m", pl.Float64),
    ):
        if column not in dets.columns:
            dets = dets.with_columns(pl.lit(None, dtype=dtype).alias(column))
    dets = (
        dets.drop_nulls(["frame_index", "x1", "y1", "x2", "y2"])
        .with_columns(
            pl.col("frame_index").cast(pl.Int64),
            pl.col("track_id").cast(pl.String),
            pl.col("pts_s").cast(pl.Float64).fill_null(pl.col("frame_index").cast(pl.Float64) / fps),
            pl.col("speed_kmh").cast(pl.Float64),
            pl.col("speed_flag").cast(pl.String),
            pl.col("world_x_m").cast(pl.Float64),
            pl.col("world_y_m").cast(pl.Float64),
        )
        .sort("frame_index")
        .with_row_index("row")
    )
    truth = _parse_truth(raw)
    visible: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for (f, _), v in truth.items():
        if v.get("box") is not None:
            visible[f].append(v)

    n = dets.height
    vid = np.full(n, -1, dtype=np.int64)
    matched = np.zeros(n, dtype=bool)
    care = np.zeros(n, dtype=bool)
    frames = dets["frame_index"].to_numpy()
    boxes32 = dets.select("x1", "y1", "x2", "y2").to_numpy().astype(np.float32)
    for (f,), d in dets.partition_by("frame_index", as_dict=True).items():
        g = visible.get(int(f), [])
        if not g:
            continue
        gb = np.array([v["box"] for v in g], dtype=np.float64)
        db = d.select("x1", "y1", "x2", "y2").to_numpy().astype(np.float64)
        rows = d["row"].to_numpy()
        for gi, di in match_frame(gb, db, iou_threshold):
            v = g[gi]
            r = int(rows[di])
            vid[r], matched[r] = int(v["vehicle_id"]), True
            care[r] = (
                float(v.get("visibility", 1.0)) >= min_visibility
                and v["box"][3] - v["box"][1] >= min_height_px
                and bool(v.get("in_roi", True))
            )
    # A track's usual vehicle stands in for its rows the matching left out (a box matched to nothing).
    tracks = dets["track_id"].to_numpy().astype(object)
    usual: dict[Any, int] = {}
    votes: dict[Any, Counter[int]] = defaultdict(Counter)
    for t, vehicle, m in zip(tracks, vid, matched, strict=True):
        if m and t is not None:
            votes[t][int(vehicle)] += 1
    for t, c in votes.items():
        usual[t] = c.most_common(1)[0][0]
    for r in range(n):
        if not matched[r] and tracks[r] in usual and (int(frames[r]), usual[tracks[r]]) in truth:
            vid[r] = usual[tracks[r]]

    # The rows the job fed its estimator: a track id and a finite road point (the table's, or the plane's).
    wx, wy = dets["world_x_m"].to_numpy(), dets["world_y_m"].to_numpy()
    have_world = np.isfinite(wx.astype(np.float64)) & np.isfinite(wy.astype(np.float64))
    if not have_world.any() and plane is not None:  # a table without road points: the plane says what was fed
        have_world = np.isfinite(plane.to_world(bottom_centre(boxes32))).all(axis=1)
    has_track = np.array([t is not None for t in tracks], dtype=bool)
    fed = have_world & has_track

    true_world = np.full((n, 2), np.nan)
    true_px = np.full((n, 2), np.nan)
    true_h = np.full(n, np.nan)
    for r in range(n):
        if vid[r] < 0:
            continue
        v = truth[(int(frames[r]), int(vid[r]))]
        fb = v["full_box"]
        true_world[r] = (float(v["world_x"]), float(v["world_y"]))
        true_px[r] = ((fb[0] + fb[2]) / 2.0, fb[3])
        true_h[r] = fb[3] - fb[1]

    job_kmh = dets["speed_kmh"].fill_null(np.nan).to_numpy().astype(np.float64)
    flags = dets["speed_flag"].to_numpy().astype(object)
    scored = matched & care & np.isfinite(job_kmh) & np.array([f is None for f in flags], dtype=bool)
    sel = np.flatnonzero(fed | scored)  # scored rows are always fed (a speed needs a point)
    out = _Fed(
        track=tracks[sel],
        frame=frames[sel],
        pts=dets["pts_s"].to_numpy().astype(np.float64)[sel],
        box=boxes32[sel],
        job_kmh=job_kmh[sel],
        flag=flags[sel],
        vid=vid[sel],
        matched=matched[sel],
        care=care[sel],
        true_world=true_world[sel],
        true_px=true_px[sel],
        true_height_px=true_h[sel],
        scored=scored[sel],
    )
    care_matched = matched & care
    info = {
        "detections": n,
        "fed_rows": int(fed.sum()),
        "matched_care_rows": int(care_matched.sum()),
        "matched_care_with_speed": int((care_matched & np.isfinite(job_kmh)).sum()),
        "scored_readings": int(scored.sum()),
        "rows_without_truth": int((fed & (vid < 0)).sum()),
    }
    return out, info


def run_estimator(
    tracker: TrackerSettings,
    plane: RoadPlane | None,
    track: np.ndarray,
    t: np.ndarray,
    xy: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Feed the job's estimator (``TrackKinematics.from_settings``, one instance as per camera) row by row, in the
    given order; per row its km/h (NaN where it gives none) and flag. Rows with a NaN point are skipped, as the job
    skips a non-finite road point."""
    kin = TrackKinematics.from_settings(tracker, plane=plane)
    kmh = np.full(len(t), np.nan)
    flag = np.empty(len(t), dtype=object)
    for i in range(len(t)):
        if not np.isfinite(xy[i]).all():
            continue
        est = kin.update(track[i], float(t[i]), xy[i])
        if est is not None:
            kmh[i], flag[i] = est.kmh, est.flag
    return kmh, flag


def _window_mean(track: np.ndarray, t: np.ndarray, values: np.ndarray, window_s: float) -> np.ndarray:
    """Per row, the mean of ``values`` over the points the estimator's window holds at that row (its trim rule: the
    track's fed points of the last ``window_s`` seconds), NaN values left out."""
    out = np.full(len(t), np.nan)
    by_track: dict[Any, list[int]] = defaultdict(list)
    for i, k in enumerate(track):
        by_track[k].append(i)
    for idx in by_track.values():
        tt, vv = t[idx], np.asarray(values, dtype=np.float64)[idx]
        for j, i in enumerate(idx):
            lo = np.searchsorted(tt[: j + 1], tt[j] - window_s - 1e-9, side="left")
            w = vv[lo : j + 1]
            w = w[np.isfinite(w)]
            out[i] = float(w.mean()) if len(w) else np.nan
    return out


def _mixed_windows(track: np.ndarray, t: np.ndarray, vid: np.ndarray, window_s: float) -> np.ndarray:
    """Per row: its window holds points of another true vehicle (an identity switch inside the window)."""
    out = np.zeros(len(t), dtype=bool)
    by_track: dict[Any, list[int]] = defaultdict(list)
    for i, k in enumerate(track):
        by_track[k].append(i)
    for idx in by_track.values():
        tt, vv = t[idx], vid[idx]
        for j, i in enumerate(idx):
            lo = np.searchsorted(tt[: j + 1], tt[j] - window_s - 1e-9, side="left")
            out[i] = bool(np.any(vv[lo : j + 1] != vv[j]))
    return out


def _lstsq_line(x: np.ndarray, y: np.ndarray) -> dict[str, float | None]:
    """y = intercept + slope * x by least squares over the finite pairs."""
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(x[ok]) == 0:
        return {"intercept": None, "slope": None, "n": int(ok.sum())}
    slope, intercept = np.polyfit(x[ok], y[ok], 1)
    return {"intercept": round(float(intercept), 5), "slope": round(float(slope), 6), "n": int(ok.sum())}


def _letterbox_geometry(width: int, height: int, input_hw: tuple[int, int], stride: int = 32) -> dict[str, Any]:
    """The detector's letterbox for a frame size (models/letterbox.py's arithmetic, at the input a dynamic-shape model
    runs, models/detector.py ``fitted_input``) and how far its rounding of the resized size moves a box edge mapped
    back to source pixels (unletterbox divides by the unrounded scale)."""
    scale = min(input_hw[0] / height, input_hw[1] / width)

    def up(v: float, cap: int) -> int:
        return min(cap, max(stride, -(-round(v) // stride) * stride))

    dst_h, dst_w = up(height * scale, input_hw[0]), up(width * scale, input_hw[1])
    scale = min(dst_h / height, dst_w / width)
    new_w, new_h = max(1, min(dst_w, round(width * scale))), max(1, min(dst_h, round(height * scale)))
    return {
        "input_hw": [dst_h, dst_w],
        "scale": round(scale, 6),
        "resized_wh": [new_w, new_h],
        "pad_xy": [(dst_w - new_w) // 2, (dst_h - new_h) // 2],
        "max_edge_shift_px": [round(abs(new_w / scale - width), 4), round(abs(new_h / scale - height), 4)],
        "source_px_per_network_px": round(1 / scale, 4),
    }


def _regions(boxes: np.ndarray, tiles: Sequence[Sequence[int]]) -> np.ndarray:
    """Per box, the first detection tile (camera ``detect_tiles``) holding it whole, ``tile_i``, else ``full_frame``
    (tile boxes are found at a finer scale than the full frame's)."""
    out = np.full(len(boxes), "full_frame", dtype=object)
    for i, (x0, y0, x1, y1) in reversed(list(enumerate(tiles))):
        inside = (boxes[:, 0] >= x0) & (boxes[:, 1] >= y0) & (boxes[:, 2] <= x1) & (boxes[:, 3] <= y1)
        out[inside] = f"tile_{i}"
    return out


def error_budget(
    ground_truth: Mapping[str, Any],
    detections: pl.DataFrame,
    plane: RoadPlane,
    *,
    tracker: TrackerSettings | None = None,
    camera_id: str | None = None,
    iou_threshold: float = 0.5,
    min_visibility: float = 0.5,
    min_height_px: float = MIN_HEIGHT_PX,
    detector_input_hw: tuple[int, int] | None = None,
    detect_tiles: Sequence[Sequence[int]] = (),
    fixes: bool = True,
) -> dict[str, Any]:
    """The error budget of one run: ``ground_truth`` (parsed ground_truth.json), the run's ``detections`` table,
    ``plane`` the calibrated road plane the job used, ``tracker`` the job's tracker settings (default: the
    defaults), ``detector_input_hw`` / ``detect_tiles`` the camera's detector input and far-field tiles (reported
    with the box link). See the module docstring for the variants and links; ``fixes``: add ``fix``."""
    tracker = tracker or TrackerSettings()
    window_s = float(tracker.speed_window_s)
    gt = load_ground_truth(ground_truth)
    cam = camera_id or gt.camera_id
    fps = gt.fps
    exact = true_plane(np.asarray(ground_truth["homography"], dtype=np.float64), plane)
    fed, info = _prepare(
        ground_truth,
        detections,
        plane,
        camera_id=cam,
        iou_threshold=iou_threshold,
        min_visibility=min_visibility,
        min_height_px=min_height_px,
    )
    n = len(fed.frame)
    t_true = fed.frame.astype(np.float64) / fps
    meas_px = bottom_centre(fed.box).astype(np.float64)
    points: dict[str, tuple[np.ndarray, np.ndarray]] = {
        "truth": (fed.true_world, t_true),
        "truth_px_true_h": (exact.to_world(fed.true_px), t_true),
        "truth_px_calibrated": (plane.to_world(fed.true_px), t_true),
        "box_true_h": (exact.to_world(meas_px), t_true),
        "truth_pts": (fed.true_world, fed.pts),
        "job_replay": (plane.to_world(meas_px), fed.pts),
    }
    kmh: dict[str, np.ndarray] = {}
    flags: dict[str, np.ndarray] = {}
    for name, (xy, t) in points.items():
        kmh[name], flags[name] = run_estimator(tracker, plane, fed.track, t, xy)

    # --- true speeds, as bench/metrics.py compares ----------------------------------------------------------
    window_frames = max(0, round(window_s * fps))
    ref_trailing = np.full(n, np.nan)
    ref_instant = np.full(n, np.nan)
    ref_mean_time = np.full(n, np.nan)
    mean_t = _window_mean(fed.track, t_true, t_true, window_s)
    for (v,), g in gt.speeds.partition_by("vehicle_id", as_dict=True).items():
        f_all, s_all = g["frame_index"].to_numpy(), g["speed_kmh"].to_numpy()
        order = np.argsort(f_all)
        f_all, s_all = f_all[order], s_all[order]
        trailing = trailing_mean_speed(f_all, s_all, window_frames)
        inst = dict(zip(f_all.tolist(), s_all.tolist(), strict=True))
        rows = np.flatnonzero(fed.vid == int(v))
        for r in rows:
            f = int(fed.frame[r])
            ref_trailing[r] = trailing.get(f, np.nan)
            ref_instant[r] = inst.get(f, np.nan)
            ref_mean_time[r] = float(np.interp(mean_t[r] * fps, f_all, s_all))

    scored = fed.scored
    common = scored & np.all([np.isfinite(kmh[v]) for v in VARIANTS], axis=0) & np.isfinite(ref_trailing)
    err = {v: kmh[v] - ref_trailing for v in VARIANTS}
    observed = fed.job_kmh - ref_trailing

    link_diff: dict[str, np.ndarray] = {
        "truth_windowed": err["truth"],
        "gt_rounding": kmh["truth_px_true_h"] - kmh["truth"],
        "homography": kmh["truth_px_calibrated"] - kmh["truth_px_true_h"],
        "box_bottom": kmh["box_true_h"] - kmh["truth_px_true_h"],
        "timestamps": kmh["truth_pts"] - kmh["truth"],
    }
    links = {name: _stats(d[common]) for name, d in link_diff.items()}
    link_sum = sum(float(np.mean(link_diff[k][common])) for k in LINKS) if common.any() else math.nan
    obs_all = _stats(observed[scored])
    obs_common = _stats(observed[common])
    replay = _stats(err["job_replay"][common])
    fidelity = fed.job_kmh - kmh["job_replay"]
    reconciliation = {
        "observed_mean_error_kmh": obs_all["mean"],  # = bench/metrics.py mean_speed_error_kmh
        "observed_mean_error_common_kmh": obs_common["mean"],
        "sum_of_links_kmh": _r(link_sum),
        "interaction_kmh": _r(_f(replay["mean"]) - link_sum),
        "replay_residual_kmh": _r(_f(obs_common["mean"]) - _f(replay["mean"])),
        "not_replayable_kmh": _r(_f(obs_all["mean"]) - _f(obs_common["mean"])),
        "unexplained_kmh": _r(_f(obs_all["mean"]) - link_sum),
        "replay_max_abs_diff_kmh": _r(float(np.nanmax(np.abs(fidelity[common]))) if common.any() else math.nan),
        "readings": int(scored.sum()),
        "readings_common": int(common.sum()),
    }

    variants = {}
    for v in VARIANTS:
        variants[v] = {
            **_stats(err[v][common]),
            "trusted_share": _r(
                float(np.mean([f is None for f in flags[v][scored & np.isfinite(kmh[v])]]))
                if (scored & np.isfinite(kmh[v])).any()
                else math.nan
            ),
        }
    fit_detail = {
        "vs_trailing_mean": _stats(err["truth"][common]),
        "vs_instantaneous": _stats((kmh["truth"] - ref_instant)[common]),
        "vs_window_mean_time": _stats((kmh["truth"] - ref_mean_time)[common]),
        "window_s": window_s,
        "window_frames": window_frames,
    }

    # --- the box link in detail ------------------------------------------------------------------------------
    box_rows = fed.matched & fed.care & np.isfinite(fed.true_px).all(axis=1)
    dpx = meas_px - fed.true_px  # + dy: the box bottom is below the contact point (nearer)
    w_meas = exact.to_world(meas_px)
    w_true = exact.to_world(fed.true_px)
    dworld = w_meas - w_true  # + y: the measured point is further down the road (away from the camera)
    dist = fed.true_world[:, 1]
    det_h = (fed.box[:, 3] - fed.box[:, 1]).astype(np.float64)
    rel_dy = dpx[:, 1] / fed.true_height_px

    def table(key: np.ndarray, bands: Sequence[tuple[float, float]], unit: str) -> list[dict[str, Any]]:
        out = []
        for lo, hi in bands:
            rows = box_rows & (key >= lo) & (key < hi)
            srows = common & (key >= lo) & (key < hi)
            moving = srows & (ref_trailing > 1.0)  # relative errors of (nearly) standing vehicles mean nothing
            if not rows.any() and not srows.any():
                continue
            out.append(
                {
                    "band": _band_label(lo, hi, unit),
                    "boxes": int(rows.sum()),
                    "mean_dx_px": _mean(dpx[rows, 0]),
                    "mean_dy_px": _mean(dpx[rows, 1]),
                    "median_dy_px": _r(float(np.median(dpx[rows, 1])) if rows.any() else math.nan),
                    "sd_dy_px": _r(float(np.std(dpx[rows, 1])) if rows.sum() > 1 else math.nan),
                    "mean_true_height_px": _mean(fed.true_height_px[rows]),
                    "mean_det_minus_true_height_px": _mean(det_h[rows] - fed.true_height_px[rows]),
                    "mean_dy_over_height": _mean(rel_dy[rows]),
                    "mean_along_road_m": _mean(dworld[rows, 1]),
                    "mean_across_road_m": _mean(dworld[rows, 0]),
                    "readings": int(srows.sum()),
                    "box_bottom_kmh": _mean(link_diff["box_bottom"][srows]),
                    "homography_kmh": _mean(link_diff["homography"][srows]),
                    "truth_windowed_kmh": _mean(link_diff["truth_windowed"][srows]),
                    "observed_kmh": _mean(observed[srows]),
                    "observed_abs_kmh": _mean(np.abs(observed[srows])),
                    "observed_pct": _mean(100 * observed[moving] / ref_trailing[moving]),
                    "predicted_constant_offset_kmh": _mean(predicted[srows]),
                }
            )
        return out

    def by_region(region: np.ndarray) -> list[dict[str, Any]]:
        out = []
        for name in sorted(set(region[box_rows | common])):
            rows, srows = box_rows & (region == name), common & (region == name)
            out.append(
                {
                    "region": name,
                    "boxes": int(rows.sum()),
                    "mean_dy_px": _mean(dpx[rows, 1]),
                    "readings": int(srows.sum()),
                    "box_bottom_kmh": _mean(link_diff["box_bottom"][srows]),
                }
            )
        return out

    ok = box_rows & np.isfinite(dworld[:, 1]) & np.isfinite(dist)
    speeds_scored = ref_trailing[common]
    mean_speed = float(np.mean(speeds_scored)) if len(speeds_scored) else math.nan
    # A constant pixel offset of the contact point, through the perspective: its along-road metres e(y) grow with
    # distance, so speeds read (1 + de/dy) too fast whichever way the vehicle drives. Predicted per reading from the
    # mean offset of all boxes and from each vehicle's own mean offset.
    factor = offset_speed_factor(exact, fed.true_px)
    mean_dy = float(np.mean(dpx[box_rows, 1])) if box_rows.any() else math.nan
    # The fit's slope averages de/dy over its window, which reaches ~v * window_s further down the road than the
    # reading's own position: the factor is averaged over the window's points.
    window_factor = _window_mean(fed.track, t_true, factor, window_s)
    own_dy = np.full(n, np.nan)
    for v in np.unique(fed.vid[box_rows]):
        own_dy[fed.vid == v] = float(np.mean(dpx[box_rows & (fed.vid == v), 1]))
    predicted = ref_trailing * mean_dy * window_factor
    predicted_own = ref_trailing * own_dy * window_factor
    box_detail = {
        "boxes": int(box_rows.sum()),
        "dx_px": _stats(dpx[box_rows, 0]),
        "dy_px": _stats(dpx[box_rows, 1]),
        "dy_over_height": _stats(rel_dy[box_rows]),
        "along_road_m": _stats(dworld[box_rows, 1]),
        "dy_px_vs_height_px": _lstsq_line(fed.true_height_px[box_rows], dpx[box_rows, 1]),
        "along_road_m_vs_distance_m": _lstsq_line(dist[ok], dworld[ok, 1]),
        "constant_offset_model": {
            "offset_px": _r(mean_dy),
            "predicted_kmh": _mean(predicted[common]),
            "predicted_own_vehicle_offset_kmh": _mean(predicted_own[common]),
            "speed_factor_per_px_by_distance": [
                {"band": _band_label(lo, hi, "m"), "per_px": _mean(window_factor[common & (dist >= lo) & (dist < hi)])}
                for lo, hi in DISTANCE_BANDS_M
                if (common & (dist >= lo) & (dist < hi)).any()
            ],
        },
        "mean_true_speed_kmh": _r(mean_speed),
        "by_distance": table(dist, DISTANCE_BANDS_M, "m"),
        "by_true_height": table(fed.true_height_px, HEIGHT_BANDS_PX, "px"),
        "by_region": by_region(_regions(fed.box.astype(np.float64), detect_tiles)),
        "detect_tiles": [list(map(int, t)) for t in detect_tiles],
        "bottom_clipped_boxes": int((box_rows & (fed.box[:, 3] >= int(ground_truth.get("height", 0)) - 0.5)).sum()),
    }
    if detector_input_hw is not None and ground_truth.get("width") and ground_truth.get("height"):
        box_detail["letterbox"] = _letterbox_geometry(
            int(ground_truth["width"]), int(ground_truth["height"]), detector_input_hw
        )

    # --- the calibration in detail ---------------------------------------------------------------------------
    cal_px = np.asarray(plane.image_points, dtype=np.float64)
    cal_true = exact.to_world(cal_px)
    hom_ok = box_rows & np.isfinite(w_true).all(axis=1)
    w_cal = plane.to_world(fed.true_px)
    homography_detail = {
        "calibration_pairs": len(cal_px),
        "pairs_world_error_m": _stats(np.linalg.norm(cal_true - plane.world_points, axis=1)),
        "contact_point_error_m": _stats(np.linalg.norm(w_cal[hom_ok] - w_true[hom_ok], axis=1)),
        "along_road_error_vs_distance": _lstsq_line(dist[hom_ok], (w_cal - w_true)[hom_ok, 1]),
        "reprojection_rms_px": _r(plane.error.rms_px),
    }

    # --- timestamps ------------------------------------------------------------------------------------------
    dt = fed.pts - t_true
    steps = np.diff(np.unique(np.round(fed.pts, 9)))
    timestamp_detail = {
        "pts_minus_index_over_fps_s": _stats(dt),
        "max_abs_offset_s": _r(float(np.abs(dt).max()) if n else math.nan),
        "pts_vs_frame_slope": _lstsq_line(t_true, fed.pts),  # slope != 1: the clock runs at another rate
        "median_fed_step_s": _r(float(np.median(steps)) if len(steps) else math.nan),
        "nominal_step_s": _r(1.0 / fps),
    }

    # --- tracking, matching, coverage, identity --------------------------------------------------------------
    mixed = _mixed_windows(fed.track, t_true, fed.vid, window_s)
    care_rows = fed.matched & fed.care
    flag_counts = Counter(str(f) for f in fed.flag[care_rows] if f is not None)
    truth_all = care_rows & np.isfinite(kmh["truth"]) & np.isfinite(ref_trailing)
    per_vehicle_tracks: dict[int, set[str]] = defaultdict(set)
    for k, v, c in zip(fed.track, fed.vid, care_rows, strict=True):
        if c:
            per_vehicle_tracks[int(v)].add(str(k))
    tracking_detail = {
        "matched_care_rows": info["matched_care_rows"],
        "with_speed": info["matched_care_with_speed"],
        "trusted": int(scored.sum()),
        "speed_coverage": _r(int(scored.sum()) / info["matched_care_rows"] if info["matched_care_rows"] else math.nan),
        "flags_on_matched_care_rows": dict(sorted(flag_counts.items())),
        "rows_without_truth": info["rows_without_truth"],
        "tracks_per_vehicle": _mean(np.array([len(s) for s in per_vehicle_tracks.values()], dtype=np.float64)),
        "mixed_identity_windows": int((common & mixed).sum()),
        "mixed_identity_contribution_kmh": _r(
            float(observed[common & mixed].sum() / common.sum()) if common.any() else math.nan
        ),
        # Does flagging select a biased subset? The fit fed the truth, over every matched care row it could score
        # against over the trusted rows only.
        "truth_fit_all_matched_kmh": _mean(err["truth"][truth_all]),
        "truth_fit_trusted_kmh": _mean(err["truth"][common]),
        "box_bottom_all_matched_kmh": _mean(
            (link_diff["box_bottom"])[truth_all & np.isfinite(link_diff["box_bottom"])]
        ),
    }

    # --- per vehicle / direction -----------------------------------------------------------------------------
    heading = {int(v["vehicle_id"]): v.get("heading_deg") for v in ground_truth.get("vehicles", [])}
    per_vehicle = []
    for v in sorted({int(x) for x in fed.vid[common]}):
        rows = common & (fed.vid == v)
        per_vehicle.append(
            {
                "vehicle_id": v,
                "heading_deg": heading.get(v),
                "readings": int(rows.sum()),
                "mean_true_kmh": _mean(ref_trailing[rows]),
                "observed_kmh": _mean(observed[rows]),
                **{f"{k}_kmh": _mean(link_diff[k][rows]) for k in LINKS},
                "mean_dy_px": _mean(dpx[rows & box_rows, 1]),
            }
        )
    direction: dict[str, Any] = {}
    way = np.array([_direction(heading.get(int(v))) for v in fed.vid], dtype=object)
    for name in ("towards_camera", "away_from_camera", "unknown"):
        rows = common & (way == name)
        if rows.any():
            direction[name] = {
                "readings": int(rows.sum()),
                "observed_kmh": _mean(observed[rows]),
                "box_bottom_kmh": _mean(link_diff["box_bottom"][rows]),
                "mean_dy_px": _mean(dpx[rows & box_rows, 1]),
            }

    result: dict[str, Any] = {
        "camera_id": cam,
        "fps": fps,
        "window_s": window_s,
        "observed": {**obs_all, "readings": int(scored.sum())},
        "links": links,
        "reconciliation": reconciliation,
        "variants": variants,
        "truth_windowed": fit_detail,
        "box_bottom": box_detail,
        "homography": homography_detail,
        "timestamps": timestamp_detail,
        "tracking": tracking_detail,
        "by_direction": direction,
        "per_vehicle": per_vehicle,
    }
    if fixes:
        result["fix"] = _fix_estimates(tracker, plane, fed, meas_px, ref_trailing, scored, box_rows, dpx)
    return result


def _fix_estimates(
    tracker: TrackerSettings,
    plane: RoadPlane,
    fed: _Fed,
    meas_px: np.ndarray,
    ref: np.ndarray,
    scored: np.ndarray,
    box_rows: np.ndarray,
    dpx: np.ndarray,
) -> dict[str, Any]:
    """Replay the job (measured boxes, calibrated plane, pts) with its contact point moved down by a constant number
    of pixels (what a correction after ``bottom_centre`` in streaming_jobs/tracking.py would do), or by a share of
    the box height; scored on the same readings (the replay's own flags set aside). The measured offsets are from
    this clip: in-sample. ``zero_bias_px`` interpolates the constant offset that would cancel the mean error."""
    det_h = (fed.box[:, 3] - fed.box[:, 1]).astype(np.float64)
    dy = dpx[box_rows, 1]
    median_px = float(-np.median(dy)) if len(dy) else 0.0
    mean_px = float(-np.mean(dy)) if len(dy) else 0.0
    share = float(-np.median(dy / det_h[box_rows])) if len(dy) else 0.0

    def replay(px: np.ndarray) -> dict[str, Any]:
        kmh, _ = run_estimator(tracker, plane, fed.track, fed.pts, plane.to_world(px))
        rows = scored & np.isfinite(kmh) & np.isfinite(ref)
        return _stats((kmh - ref)[rows])

    constant = sorted({0.0, 0.25, 0.5, 0.75, 1.0, round(median_px, 3), round(mean_px, 3)})
    sweep = [{"offset_px": c, **replay(meas_px + np.array([0.0, c]))} for c in constant]
    means = np.array([_f(s["mean"]) for s in sweep])
    offsets = np.array([s["offset_px"] for s in sweep])
    zero = math.nan
    if np.isfinite(means).all() and len(means) > 1:
        slope, intercept = np.polyfit(offsets, means, 1)  # the mean error is linear in the offset
        zero = -intercept / slope if slope else math.nan
    return {
        "measured_median_offset_px": round(median_px, 4),
        "measured_mean_offset_px": round(mean_px, 4),
        "constant_px": sweep,
        "zero_bias_px": _r(zero),
        "share_of_height": round(share, 5),
        "height_share_correction": replay(meas_px + np.stack([np.zeros_like(det_h), share * det_h], axis=1)),
    }


def _direction(heading_deg: Any) -> str:
    """A vehicle's way relative to the camera from its true heading (0 = +y, away from a camera looking down the
    road; 180 = towards it): vehicles seen from the front and from behind have different box bottoms."""
    if heading_deg is None:
        return "unknown"
    c = math.cos(math.radians(float(heading_deg)))
    return "towards_camera" if c < -1e-9 else "away_from_camera" if c > 1e-9 else "unknown"


def _r(x: float, digits: int = 4) -> float | None:
    return round(float(x), digits) if x is not None and math.isfinite(x) else None


def _f(x: float | int | None) -> float:
    return math.nan if x is None else float(x)


# ---- files, CLI -------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class RunInputs:
    """What :func:`error_budget` needs from a clip folder and a run folder."""

    ground_truth: dict[str, Any]
    detections: pl.DataFrame
    plane: RoadPlane
    tracker: TrackerSettings
    detector_input_hw: tuple[int, int]
    detect_tiles: list[tuple[int, int, int, int]]


def load_run(clip: str | Path, run: str | Path, camera_id: str | None = None) -> RunInputs:
    """A clip folder (ground_truth.json, camera.yaml) and a run folder (``delta/detections``, or the table itself):
    the ground truth, the detections, the calibrated plane as the job builds it (``RoadPlane.from_calibration`` of
    the camera's calibration), the tracker settings, detector input size and far-field tiles of the deployment."""
    from trafficstream.config import load_settings

    clip, run = Path(clip), Path(run)
    raw = json.loads((clip / "ground_truth.json").read_text())
    settings = load_settings(clip / "camera.yaml", environ={})
    cam_id = camera_id or str(raw.get("camera_id", "synthetic"))
    camera = settings.camera(cam_id)
    if camera.calibration is None:
        raise SystemExit(f"camera {cam_id} has no calibration: no road-plane speeds to budget")
    table = run / "delta" / "detections"
    return RunInputs(
        raw,
        read_detections(table if table.is_dir() else run),
        RoadPlane.from_calibration(camera.calibration),
        settings.tracker,
        (int(settings.detector.input_height), int(settings.detector.input_width)),
        [(int(a), int(b), int(c), int(d)) for a, b, c, d in camera.detect_tiles],
    )


def format_table(result: Mapping[str, Any]) -> str:
    """The budget as text: links, reconciliation, the box link by distance."""
    lines = [f"speed error budget, camera {result['camera_id']} ({result['observed']['readings']} readings)"]
    lines.append(f"{'link':<22}{'mean km/h':>11}{'mean |.|':>10}{'n':>6}")
    for name in LINKS:
        s = result["links"][name]
        lines.append(f"{name:<22}{_fmt(s['mean']):>11}{_fmt(s['mean_abs']):>10}{s['n']:>6}")
    rec = result["reconciliation"]
    lines += [
        f"{'sum of links':<22}{_fmt(rec['sum_of_links_kmh']):>11}",
        f"{'interaction':<22}{_fmt(rec['interaction_kmh']):>11}",
        f"{'replay residual':<22}{_fmt(rec['replay_residual_kmh']):>11}",
        f"{'not replayable':<22}{_fmt(rec['not_replayable_kmh']):>11}",
        f"{'observed':<22}{_fmt(rec['observed_mean_error_kmh']):>11}"
        f"{_fmt(result['observed']['mean_abs']):>10}{result['observed']['n']:>6}",
        f"{'unexplained':<22}{_fmt(rec['unexplained_kmh']):>11}",
        "box bottom by distance: band, boxes, dy px, dy/h, along-road m, box link km/h, observed km/h",
    ]
    for b in result["box_bottom"]["by_distance"]:
        lines.append(
            f"  {b['band']:<10}{b['boxes']:>6}{_fmt(b['mean_dy_px']):>9}{_fmt(b['mean_dy_over_height']):>9}"
            f"{_fmt(b['mean_along_road_m']):>9}{_fmt(b['box_bottom_kmh']):>9}{_fmt(b['observed_kmh']):>9}"
        )
    fix = result.get("fix")
    if fix:
        lines.append("fix: contact point moved down by a constant offset (job replay): offset px, mean, mean |.|")
        for v in fix["constant_px"]:
            lines.append(f"  {v['offset_px']:>6.3f}{_fmt(v['mean']):>9}{_fmt(v['mean_abs']):>9}")
        lines.append(f"  zero-bias offset {_fmt(fix['zero_bias_px'])} px (in-sample)")
    return "\n".join(lines)


def _fmt(x: Any) -> str:
    return "-" if x is None else f"{x:+.3f}"


def main(argv: Sequence[str] | None = None) -> int:
    from trafficstream.logs import setup_logging

    parser = argparse.ArgumentParser(
        prog="python -m trafficstream.bench.error_budget", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--clip", required=True, help="synthetic clip folder: ground_truth.json, camera.yaml")
    parser.add_argument("--run", required=True, help="run folder holding delta/detections (or the table itself)")
    parser.add_argument("--camera", default=None, help="camera id (default: the ground truth's)")
    parser.add_argument("--min-height-px", type=float, default=MIN_HEIGHT_PX, help="as make eval scores")
    parser.add_argument("--out", default=None, help="also write the JSON here")
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    run = load_run(args.clip, args.run, args.camera)
    result = error_budget(
        run.ground_truth,
        run.detections,
        run.plane,
        tracker=run.tracker,
        camera_id=args.camera,
        min_height_px=args.min_height_px,
        detector_input_hw=run.detector_input_hw,
        detect_tiles=run.detect_tiles,
    )
    log.info("%s", format_table(result))
    text = json.dumps(result)
    if args.out:
        Path(args.out).write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
