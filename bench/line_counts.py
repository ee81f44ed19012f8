"""Counts per counting line, direction and lane on the configured cameras, pictures to count them by eye, and
the passage speeds over the cameras' sections and the trusted windowed speeds (per camera, the slowest and fastest
tracks to check against the footage).

Runs each file camera of the configuration through the job's own stage 1 (``perception.perceive_records``) and
stage 2 (``tracking.track_camera``) in one process, collects the crossing rows, and writes, per line, a
*slit-scan* picture: the pixels under the line (its image projection, sampled at 1 px steps) of every frame,
one row per frame, time running down. Every vehicle that crosses the line leaves one blob in it, which is how
a person counts them without replaying the clip (state that when reporting a count)::

    python -m trafficstream.bench.line_counts --config infra/config/samples.yaml [--out bench/results/line_counts.json]

It also times stage 2 on the same rows with and without the camera's geometry (``stage2``: ms per frame,
side by side): what counting, events and passage speeds cost.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import pandas as pd

from trafficstream.bench.throughput import Clip, frame_ref, index_clip
from trafficstream.cameras import Camera
from trafficstream.config import PROJECT_ROOT, Settings, add_config_arguments, load_settings, settings_to_json
from trafficstream.logs import setup_logging
from trafficstream.models.homography import RoadPlane
from trafficstream.streaming_jobs.perception import Record, Runtime, perceive_records, to_record_batch
from trafficstream.streaming_jobs.schemas import KIND_CROSSING, KIND_FRAME, KIND_TRACK
from trafficstream.streaming_jobs.tracking import MemoryGroupState, track_camera

log = logging.getLogger("trafficstream.bench.line_counts")
OUT = PROJECT_ROOT / "bench" / "results" / "line_counts.json"
CHUNK = 16  # records per perceive_records call (a Spark task's share of a demo micro-batch)


def line_pixels(camera: Camera, line_id: str) -> np.ndarray:
    """Integer pixel positions along the line's image projection, 1 px apart, A to B."""
    line = next(x for x in camera.lines if x.id == line_id)
    ends = np.asarray(line.points, dtype=np.float64)
    if line.space != "road":
        n = max(2, int(np.ceil(np.linalg.norm(ends[1] - ends[0]) - 1e-6)) + 1)
        return np.rint(ends[0] + (ends[1] - ends[0]) * np.linspace(0, 1, n)[:, None]).astype(np.int64)
    if camera.calibration is None:
        raise ValueError(f"camera {camera.id}: road line {line_id!r} without a calibration")
    plane = RoadPlane.from_calibration(camera.calibration)
    # Sampled on the road, not joined in the image: through a distorting lens a straight road line is curved.
    px_ends = plane.to_image(ends)
    n = max(2, int(np.ceil(np.linalg.norm(px_ends[1] - px_ends[0]) - 1e-6)) + 1)
    pts = plane.to_image(ends[0] + (ends[1] - ends[0]) * np.linspace(0, 1, n)[:, None])
    pts = pts[np.isfinite(pts).all(axis=1)]
    return np.rint(pts).astype(np.int64)


def slit_scans(camera: Camera, frames: int | None = None) -> dict[str, np.ndarray]:
    """Per line, the frames' pixels under it stacked in time: (frames, line length, 3) BGR. A camera that
    sways (``register_frames``) is followed: each frame is registered onto the reference frame, as the job
    does, and sampled where the line lies in *that* frame (else a drift of a few pixels at the far end moves
    the line by metres)."""
    from trafficstream.models.registration import estimate_drift, prepare_reference

    pixels = {line.id: line_pixels(camera, line.id).astype(np.float64) for line in camera.lines}
    rows: dict[str, list[np.ndarray]] = {k: [] for k in pixels}
    reference = None
    with av.open(str(camera.source_path())) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if frames is not None and i >= frames:
                break
            img = frame.to_ndarray(format="bgr24")
            h, w = img.shape[:2]
            inverse = None
            if camera.register_frames:
                gray = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)
                if reference is None:  # the calibration's reference frame is frame 0 on these clips
                    reference = prepare_reference(gray)
                inverse = np.linalg.inv(np.asarray(estimate_drift(reference, gray), dtype=np.float64))
            for k, p in pixels.items():
                q = p if inverse is None else cv2.perspectiveTransform(p[None], inverse)[0]
                q = np.rint(q).astype(np.int64)
                x, y = np.clip(q[:, 0], 0, w - 1), np.clip(q[:, 1], 0, h - 1)
                rows[k].append(img[y, x])
    return {k: np.stack(v) for k, v in rows.items() if v}


def perception_of(rt: Runtime, clip: Clip) -> pd.DataFrame:
    """Stage 1 over the whole clip, as Spark tasks run it (``CHUNK`` records at a time), as stage 2 gets it."""
    topic = rt.settings.kafka.frames_topic
    rows: list[dict[str, Any]] = []
    for start in range(0, len(clip.frames), CHUNK):
        now = time.time()
        records: list[Record] = [
            (frame_ref(clip, index, pts_s, now), topic, 0, start + i)
            for i, (index, pts_s) in enumerate(clip.frames[start : start + CHUNK])
        ]
        rows += perceive_records(rt, records)
    return to_record_batch(rows, rt.schema).to_pandas()


def stage2(settings_json: str, camera_id: str, perception: pd.DataFrame) -> tuple[pd.DataFrame, float]:
    """Stage 2 over the camera's rows from a fresh state; its output and wall seconds."""
    t0 = time.perf_counter()
    out = pd.concat(list(track_camera(settings_json, (camera_id,), iter([perception]), MemoryGroupState())))
    return out, time.perf_counter() - t0


def crossings_of(rt: Runtime, settings_json: str, clip: Clip) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The camera's crossing rows and final track summaries (payloads) from the job's stage 1 and stage 2
    over the whole clip."""
    out, _ = stage2(settings_json, clip.camera.id, perception_of(rt, clip))
    return crossings_and_tracks(out)


def crossings_and_tracks(out: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    crossings = pd.DataFrame([json.loads(p) for p in out.loc[out.kind == KIND_CROSSING, "payload"]])
    tracks = {}
    for p in out.loc[out.kind == KIND_TRACK, "payload"]:  # the latest summary of each track wins
        t = json.loads(p)
        tracks[t["track_id"]] = t
    return crossings, pd.DataFrame(list(tracks.values()))


def stage2_cost(settings: Settings, camera: Camera, perception: pd.DataFrame, reps: int = 3) -> dict[str, float]:
    """Stage 2's ms per frame on the same rows with the camera's lines, lanes, zones and sections and without
    them, side by side (best of ``reps`` each, alternating)."""
    bare = camera.model_copy(update={"lines": [], "lanes": [], "zones": [], "sections": []})
    variants = {
        "with_geometry": settings_to_json(settings),
        "without_geometry": settings_to_json(
            settings.model_copy(update={"cameras": [bare if c.id == camera.id else c for c in settings.cameras]})
        ),
    }
    best = {k: float("inf") for k in variants}
    for _ in range(reps):
        for name, js in variants.items():
            best[name] = min(best[name], stage2(js, camera.id, perception)[1])
    n = max(1, len(perception))
    return {f"{k}_ms_per_frame": round(v * 1e3 / n, 3) for k, v in best.items()}


def passage_table(tracks: pd.DataFrame) -> dict[str, Any]:
    """Distribution of the tracks' passage speeds: count, min / median / max, mean uncertainty, and the
    slowest and fastest vehicles (to check against the footage)."""
    if tracks.empty or "passage_speed_kmh" not in tracks or tracks["passage_speed_kmh"].isna().all():
        return {"vehicles": 0}
    p = tracks.dropna(subset=["passage_speed_kmh"]).sort_values("passage_speed_kmh")
    pick = ["track_id", "class_name", "first_frame", "last_frame", "passage_speed_kmh", "passage_uncertainty_kmh"]
    return {
        "vehicles": int(len(p)),
        "min_kmh": round(float(p["passage_speed_kmh"].min()), 1),
        "median_kmh": round(float(p["passage_speed_kmh"].median()), 1),
        "max_kmh": round(float(p["passage_speed_kmh"].max()), 1),
        "mean_uncertainty_kmh": round(float(p["passage_uncertainty_kmh"].mean()), 2),
        "slowest": p.iloc[0][pick].to_dict(),
        "fastest": p.iloc[-1][pick].to_dict(),
        "all_kmh": [round(float(x), 1) for x in p["passage_speed_kmh"]],
    }


def windowed_table(out: pd.DataFrame, min_readings: int = 5) -> dict[str, Any]:
    """The windowed speeds of stage 2's frame payloads: how many were measured and trusted, why the others were
    not, the trusted readings' 5th / 50th / 95th percentiles, and per track with >= ``min_readings`` trusted
    readings its median and range: the slowest and fastest tracks (to check against the footage)."""
    rows = [v for p in out.loc[out.kind == KIND_FRAME, "payload"] for v in json.loads(p).get("vehicles", [])]
    measured = [v for v in rows if v.get("speed_kmh") is not None or v.get("speed_flag") is not None]
    trusted = [v for v in measured if v.get("speed_flag") is None]
    per_track: dict[Any, list[float]] = {}
    for v in trusted:
        per_track.setdefault(v["track_id"], []).append(float(v["speed_kmh"]))
    tracks = sorted(
        (
            {
                "track_id": t,
                "median_kmh": round(float(np.median(k)), 1),
                "min_kmh": round(min(k), 1),
                "max_kmh": round(max(k), 1),
                "readings": len(k),
            }
            for t, k in per_track.items()
            if len(k) >= min_readings
        ),
        key=lambda r: r["median_kmh"],
    )
    kmh = np.asarray([v["speed_kmh"] for v in trusted], dtype=np.float64)
    return {
        "readings": len(measured),
        "trusted": len(trusted),
        "flags": dict(Counter(v["speed_flag"] for v in measured if v.get("speed_flag") is not None)),
        "trusted_p5_p50_p95_kmh": [round(float(x), 1) for x in np.percentile(kmh, [5, 50, 95])] if len(kmh) else None,
        "tracks": len(tracks),
        "slowest": tracks[:3],
        "fastest": tracks[-3:][::-1],
    }


def count_table(crossings: pd.DataFrame) -> dict[str, Any]:
    """{line: {direction: n, "by_lane": {direction: {lane: n}}}} of crossing payloads."""
    out: dict[str, Any] = {}
    if crossings.empty:
        return out
    for (line, direction), g in crossings.groupby(["line_id", "direction"]):
        entry = out.setdefault(str(line), {"by_lane": {}})
        entry[str(direction)] = int(len(g))
        lanes = Counter(str(x) if isinstance(x, str) else "none" for x in g["lane_id"])
        entry["by_lane"][str(direction)] = dict(sorted(lanes.items()))
    return out


def run(settings: Settings, out_dir: Path, frames: int | None = None) -> dict[str, Any]:
    rt = Runtime(settings)
    rt.warm_up()
    settings_json = settings_to_json(settings)
    report: dict[str, Any] = {}
    for camera in settings.cameras:
        if camera.is_live or not camera.lines:
            continue
        clip = index_clip(camera, frames)
        log.info("%s: %d frames", camera.id, len(clip.frames))
        perception = perception_of(rt, clip)
        out, _ = stage2(settings_json, camera.id, perception)
        crossings, tracks = crossings_and_tracks(out)
        scans = slit_scans(camera, frames)
        pictures = {}
        for line_id, scan in scans.items():
            path = out_dir / f"{camera.id}-{line_id}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(path), scan)
            pictures[line_id] = str(path)
        report[camera.id] = {
            "frames": len(clip.frames),
            "counts": count_table(crossings),
            "crossing_frames": {
                str(k): sorted(int(f) for f in g["frame_index"])
                for k, g in (crossings.groupby("line_id") if not crossings.empty else [])
            },
            "slit_scans": pictures,
            "passage_speeds": passage_table(tracks),
            "windowed_speeds": windowed_table(out),
            "stage2": stage2_cost(settings, camera, perception),
        }
        log.info("%s: %s", camera.id, json.dumps(report[camera.id]["counts"]))
        log.info("%s passages: %s", camera.id, json.dumps(report[camera.id]["passage_speeds"], default=str))
        log.info("%s windowed: %s", camera.id, json.dumps(report[camera.id]["windowed_speeds"], default=str))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trafficstream.bench.line_counts", description=__doc__.splitlines()[0]
    )
    add_config_arguments(parser)
    parser.add_argument("--frames", type=int, default=None, help="first N frames per camera (default: all)")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--pictures", type=Path, default=PROJECT_ROOT / "var" / "line_counts")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    report = run(load_settings(args.config, args.overrides), args.pictures, args.frames)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
