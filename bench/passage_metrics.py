"""Score passage (section) speeds against a synthetic clip's ground truth.

A camera's ``sections`` (``trafficstream.cameras.Section``: ``{id, lines: [line_a, line_b]}``, two of its
road-space counting lines) give every track that crosses both lines a passage speed: the distance between its
two crossing points over the time between the crossings, with a 95 % uncertainty (``models/passage.py``). The
job writes them to the ``tracks`` table: ``passage_speed_kmh``, ``passage_uncertainty_kmh`` (null: no section
completed) and ``passage_section``.

The truth, per section and true vehicle: its true crossings of the two lines (contact point, sub-frame time:
:func:`bench.synthetic.scenario.true_crossings`, computed here from the clip's frames and the lines, so any clip
can be scored, with or without counting geometry in its ground truth) and from them the true passage speed =
true distance between the two crossing points / true time between the crossings. A vehicle is **eligible**
when both crossings are demanded as counting-line crossings are: its visible box is >= ``min_height_px`` tall
at each line (the eval's 40 px), its contact point is in the picture there and each crossing is confirmable
(seen the line hysteresis before and beyond the line).

The pipeline: each track with a passage speed is the true vehicle its boxes matched most (one-to-one IoU matching
of the ``detections`` rows, :func:`bench.events_metrics.track_vehicles`) between its crossings of the
section's lines (``crossings`` rows; without them, over its life). Per section: ``measured`` eligible vehicles
with a passage speed (the first track's when several have one: the others are ``duplicates``), ``spurious``
passage speeds of no vehicle that truly passed, ``ignored`` ones of a vehicle that passed but is not eligible.
Over the measured vehicles: error = measured - true (km/h), its mean absolute, mean signed (+: reads too fast),
median and max absolute, the share within 2 km/h; ``uncertainty_coverage``: the share whose true speed lies
within measured +- uncertainty (should be ~95 %), and the mean uncertainty.

Columns the tracks table lacks (a job from before passage speeds) are listed in ``missing_columns`` and the
metrics that need them are None (the truth side is still reported)::

    python -m trafficstream.bench.passage_metrics --ground-truth GT.json --config camera.yaml \\
        --tracks TRACKS --detections DETECTIONS [--crossings CROSSINGS]
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from trafficstream.bench.events_metrics import TrackFrames, _frame, _num, _track, track_vehicles, vehicle_of
from trafficstream.bench.metrics import read_detections
from trafficstream.bench.synthetic.scenario import COUNT_MIN_HEIGHT_PX, true_crossings

PASSAGE_COLUMNS = ("passage_speed_kmh", "passage_uncertainty_kmh", "passage_section")
WITHIN_KMH = 2.0


def _load(ground_truth: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    return json.loads(Path(ground_truth).read_text()) if isinstance(ground_truth, (str, Path)) else ground_truth


def _for_camera(df: pl.DataFrame, camera_id: str) -> pl.DataFrame:
    if "camera_id" not in df.columns or not df.height:
        return df
    return df.filter(pl.col("camera_id").is_null() | (pl.col("camera_id").cast(pl.String) == camera_id))


def _r(v: float | None, digits: int = 3) -> float | None:
    return None if v is None else round(float(v), digits)


def _geometry(
    raw: Mapping[str, Any],
    lines: Sequence[Mapping[str, Any]] | None,
    sections: Sequence[Mapping[str, Any]] | None,
    events: Mapping[str, Any] | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, Any]]:
    geo = raw.get("geometry") or {}
    lines = list(lines if lines is not None else geo.get("lines") or [])
    sections = list(sections if sections is not None else geo.get("sections") or [])
    events = dict(events if events is not None else geo.get("events") or {})
    known = {str(line["id"]) for line in lines}
    for s in sections:
        missing = [str(x) for x in s["lines"] if str(x) not in known]
        if missing:
            raise ValueError(f"section {s['id']!r}: no line(s) {missing} among {sorted(known)}")
    return [dict(line) for line in lines], [dict(s) for s in sections], events


def true_passages(
    ground_truth: str | Path | Mapping[str, Any],
    lines: Sequence[Mapping[str, Any]] | None = None,
    sections: Sequence[Mapping[str, Any]] | None = None,
    *,
    events: Mapping[str, Any] | None = None,
    min_height_px: float = COUNT_MIN_HEIGHT_PX,
) -> list[dict[str, Any]]:
    """Every (section, vehicle) whose contact point truly crosses both lines of the section (its first crossing
    of each, either order), with the true passage speed and whether it is ``eligible`` (module docstring).
    ``lines``, ``sections``, ``events`` (the camera's, as in its config) default to the ground truth's
    ``geometry``."""
    raw = _load(ground_truth)
    lines, sections, events = _geometry(raw, lines, sections, events)
    if not sections:
        return []
    fps, width, height = float(raw["fps"]), int(raw["width"]), int(raw["height"])
    wanted = {str(x) for s in sections for x in s["lines"]}
    crossings = true_crossings(
        raw["frames"],
        [line for line in lines if str(line["id"]) in wanted],
        fps,
        width,
        height,
        min_height_px=min_height_px,
        events=events,
    )
    first: dict[tuple[str, int], Mapping[str, Any]] = {}
    for c in crossings:  # in time order: the first crossing of each line per vehicle
        first.setdefault((str(c["line_id"]), int(c["vehicle_id"])), c)
    out: list[dict[str, Any]] = []
    vids = sorted({v for _, v in first})
    for s in sections:
        line_a, line_b = (str(x) for x in s["lines"])
        for vid in vids:
            a, b = first.get((line_a, vid)), first.get((line_b, vid))
            if a is None or b is None:
                continue
            start, end = sorted((a, b), key=lambda c: float(c["t_s"]))
            duration = float(end["t_s"]) - float(start["t_s"])
            distance = float(np.hypot(float(b["x"]) - float(a["x"]), float(b["y"]) - float(a["y"])))
            out.append(
                {
                    "section_id": str(s["id"]),
                    "vehicle_id": vid,
                    "first_line": str(start["line_id"]),
                    "t_start_s": float(start["t_s"]),
                    "t_end_s": float(end["t_s"]),
                    "distance_m": round(distance, 4),
                    "duration_s": round(duration, 6),
                    "true_speed_kmh": round(distance / duration * 3.6, 4) if duration > 0 else None,
                    "height_px": [float(a["height_px"]), float(b["height_px"])],
                    "eligible": bool(a["countable"] and b["countable"] and duration > 0),
                }
            )
    return out


def _passage_rows(
    tracks: pl.DataFrame, sections: Sequence[Mapping[str, Any]]
) -> tuple[list[dict[str, Any]], list[str], bool]:
    """(rows with a passage speed, missing columns, scorable): one row per track (the last)."""
    missing = [c for c in PASSAGE_COLUMNS if c not in tracks.columns]
    single = str(sections[0]["id"]) if len(sections) == 1 else None
    scorable = "passage_speed_kmh" in tracks.columns and "track_id" in tracks.columns
    scorable = scorable and ("passage_section" in tracks.columns or single is not None)
    if not scorable or not tracks.height:
        return [], missing, scorable
    df = tracks.unique(subset=["track_id"], keep="last", maintain_order=True)
    rows = []
    for r in df.to_dicts():
        kmh = _num(r.get("passage_speed_kmh"))
        if kmh is None:
            continue
        section = r.get("passage_section")
        rows.append(
            {
                "track_id": _track(r["track_id"]),
                "section_id": str(section) if section is not None else single,
                "kmh": kmh,
                "uncertainty_kmh": _num(r.get("passage_uncertainty_kmh")),
                "first_frame": _num(r.get("first_frame")),
                "last_frame": _num(r.get("last_frame")),
            }
        )
    return rows, missing, scorable


def _window(
    row: Mapping[str, Any], lines: Sequence[str], crossings: pl.DataFrame | None, fps: float
) -> tuple[float, float]:
    """Frames over which a track's true vehicle is decided: between its crossings of the section's lines, else
    its life (first_frame .. last_frame), else everything."""
    needed = {"track_id", "line_id", "crossing_pts_s"}
    if crossings is not None and crossings.height and needed <= set(crossings.columns):
        mine = crossings.filter(
            (pl.col("track_id").cast(pl.String) == row["track_id"]) & pl.col("line_id").is_in(list(lines))
        )
        if mine.height:
            times = [float(t) for t in mine["crossing_pts_s"].to_list() if _num(t) is not None]
            if times:
                return min(times) * fps, max(times) * fps + 1
    lo, hi = row.get("first_frame"), row.get("last_frame")
    return (lo if lo is not None else -np.inf), (hi if hi is not None else np.inf)


def _stats(errors: Sequence[float]) -> dict[str, float | None]:
    a = np.abs(np.asarray(errors, dtype=np.float64))
    n = len(a)
    return {
        "mean_abs_error_kmh": _r(a.mean()) if n else None,
        "mean_error_kmh": _r(float(np.mean(errors))) if n else None,  # signed: + reads too fast
        "median_abs_error_kmh": _r(float(np.median(a))) if n else None,
        "max_abs_error_kmh": _r(a.max()) if n else None,
        # (+1e-9: exactly 2 km/h off is within 2 km/h despite float round-off)
        "share_within_2kmh": float((a <= WITHIN_KMH + 1e-9).mean()) if n else None,
    }


def _rate(num: float, den: float) -> float | None:
    return float(num / den) if den else None


def score_passages(
    ground_truth: str | Path | Mapping[str, Any],
    tracks: Any,
    *,
    detections: Any = None,
    track_frames: TrackFrames | None = None,
    crossings: Any = None,
    lines: Sequence[Mapping[str, Any]] | None = None,
    sections: Sequence[Mapping[str, Any]] | None = None,
    events: Mapping[str, Any] | None = None,
    camera_id: str | None = None,
    min_height_px: float = COUNT_MIN_HEIGHT_PX,
) -> dict[str, Any]:
    """Passage-speed metrics of one run (see the module docstring).

    ``tracks``: the tracks table's rows (``track_id`` and the passage columns; ``first_frame``, ``last_frame``
    when present); ``detections`` (or precomputed ``track_frames``): which true vehicle each track is;
    ``crossings``: the crossings table's rows, to decide that over the passage only. ``lines``, ``sections``,
    ``events``: the camera's (config dicts), default the ground truth's ``geometry``."""
    raw = _load(ground_truth)
    lines, sections, events = _geometry(raw, lines, sections, events)
    cam = camera_id or str(raw.get("camera_id", "synthetic"))
    fps = float(raw["fps"])
    truth = true_passages(raw, lines, sections, events=events, min_height_px=min_height_px)
    eligible = [p for p in truth if p["eligible"]]
    table = _for_camera(_frame(tracks) if tracks is not None else pl.DataFrame(), cam)
    rows, missing, scorable = _passage_rows(table, sections) if sections else ([], list(PASSAGE_COLUMNS), False)
    if track_frames is None and detections is not None:
        track_frames = track_vehicles(raw, detections, camera_id=cam)
    if rows and track_frames is None:
        raise ValueError("passage speeds need the detections (or track_frames) to tell which vehicle a track is")
    cross = _for_camera(_frame(crossings), cam) if crossings is not None else None
    line_of = {str(s["id"]): [str(x) for x in s["lines"]] for s in sections}

    truth_of = {(p["section_id"], p["vehicle_id"]): p for p in truth}
    by_key: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    spurious: list[str | None] = []
    for row in rows:
        lo, hi = _window(row, line_of.get(row["section_id"] or "", []), cross, fps)
        vid = vehicle_of(track_frames or {}, row["track_id"], lo, hi)
        key = (row["section_id"], vid) if vid is not None else None
        if key is None or key not in truth_of:
            spurious.append(row["track_id"])
        else:
            by_key[key].append(row)

    errors: list[float] = []
    uncertainties: list[float] = []
    covered: list[bool] = []
    per_vehicle: list[dict[str, Any]] = []
    duplicates = 0
    for p in truth:
        key = (p["section_id"], p["vehicle_id"])
        mine = sorted(
            by_key.get(key, []),
            key=lambda r: (r["first_frame"] if r["first_frame"] is not None else np.inf, str(r["track_id"])),
        )
        duplicates += max(0, len(mine) - 1)
        best = mine[0] if mine else None
        err = unc = hit = None
        if best is not None and p["true_speed_kmh"] is not None:
            err = best["kmh"] - p["true_speed_kmh"]
            unc = best["uncertainty_kmh"]
            hit = None if unc is None else bool(abs(err) <= unc + 1e-9)
            if p["eligible"]:
                errors.append(err)
                if unc is not None:
                    uncertainties.append(unc)
                    covered.append(bool(hit))
        per_vehicle.append(
            {
                "section_id": p["section_id"],
                "vehicle_id": p["vehicle_id"],
                "eligible": p["eligible"],
                "height_px": [round(h, 1) for h in p["height_px"]],
                "true_speed_kmh": _r(p["true_speed_kmh"]),
                "true_distance_m": _r(p["distance_m"]),
                "true_duration_s": _r(p["duration_s"], 4),
                "track_ids": [r["track_id"] for r in mine],
                "passage_speed_kmh": _r(best["kmh"]) if best else None,
                "uncertainty_kmh": _r(unc),
                "error_kmh": _r(err),
                "covered": hit,
            }
        )
    measured = [p for p in eligible if by_key.get((p["section_id"], p["vehicle_id"]))]
    measured_keys = {(p["section_id"], p["vehicle_id"]) for p in measured}
    ignored = sum(1 for p in truth if not p["eligible"] and by_key.get((p["section_id"], p["vehicle_id"])))
    missed = sorted({p["vehicle_id"] for p in eligible if (p["section_id"], p["vehicle_id"]) not in measured_keys})
    result: dict[str, Any] = {
        "sections": [{"id": str(s["id"]), "lines": [str(x) for x in s["lines"]]} for s in sections],
        "missing_columns": missing,
        "scored": scorable,
        "true_passages": len(truth),
        "eligible_vehicles": len(eligible),
        # Undefined without the passage columns (None), like every error figure below.
        "passage_rows": len(rows) if scorable else None,
        "measured": len(measured) if scorable else None,
        "share_with_passage_speed": _rate(len(measured), len(eligible)) if scorable else None,
        **_stats(errors),
        "uncertainty_coverage": _rate(sum(covered), len(covered)),
        "mean_uncertainty_kmh": _r(float(np.mean(uncertainties))) if uncertainties else None,
        "duplicates": duplicates if scorable else None,
        "spurious": len(spurious) if scorable else None,
        "ignored": ignored if scorable else None,
        "missed_vehicles": missed if scorable else None,
        "spurious_tracks": sorted(t for t in spurious if t is not None),
        "mean_true_speed_kmh": _r(float(np.mean([p["true_speed_kmh"] for p in eligible]))) if eligible else None,
        "per_vehicle": per_vehicle,
        "params": {
            "camera_id": cam,
            "min_height_px": min_height_px,
            "within_kmh": WITHIN_KMH,
            "window": "crossings" if cross is not None and cross.height else "track_life",
        },
    }
    return result


def camera_geometry_of(config: str | Path, camera_id: str | None = None) -> dict[str, Any]:
    """``lines``, ``sections``, ``events`` and ``id`` of a camera of a deployment config file (the first one,
    or ``camera_id``), as plain dicts."""
    from trafficstream.config import load_settings

    settings = load_settings(config, environ={})
    cam = next(c for c in settings.cameras if camera_id is None or c.id == camera_id)
    return {
        "id": cam.id,
        "lines": [line.model_dump(mode="json") for line in cam.lines],
        "sections": [s.model_dump(mode="json") for s in getattr(cam, "sections", [])],
        "events": cam.events.model_dump(mode="json"),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trafficstream.bench.passage_metrics", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--ground-truth", required=True, help="ground_truth.json of a synthetic clip")
    parser.add_argument("--config", default=None, help="deployment config with the camera's lines and sections")
    parser.add_argument("--camera-id", default=None)
    parser.add_argument("--tracks", required=True, help="tracks rows: Delta folder, .parquet, .csv, .jsonl")
    parser.add_argument("--detections", required=True, help="detections rows: tracks matched to true vehicles")
    parser.add_argument("--crossings", default=None, help="crossings rows: decide a track's vehicle over its passage")
    parser.add_argument("--min-height-px", type=float, default=COUNT_MIN_HEIGHT_PX)
    args = parser.parse_args(argv)
    geo = camera_geometry_of(args.config, args.camera_id) if args.config else {}
    result = score_passages(
        args.ground_truth,
        read_detections(args.tracks),
        detections=read_detections(args.detections),
        crossings=read_detections(args.crossings) if args.crossings else None,
        lines=geo.get("lines"),
        sections=geo.get("sections"),
        events=geo.get("events"),
        camera_id=args.camera_id or geo.get("id"),
        min_height_px=args.min_height_px,
    )
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
