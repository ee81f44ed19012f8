"""Writes the streaming job's Delta tables with ``deltalake`` (no JVM) for the notebook tests.

Column names, types and partitioning mirror ``streaming_jobs/sinks.py`` ``TABLE_SCHEMAS`` (checked by
``test_analysis.py::test_fixture_schemas_match_the_job``). The rows are a plausible 90-minute morning on two
cameras: vehicles arriving faster around 07:30-08:00 UTC, speeds around the limit with flagged estimates,
tracks, flow counts, speeding violations with real JPEG evidence files (one with no evidence, one whose
file is gone) and a few dead letters. Each table is written twice (version 0: the first 45 minutes,
version 1: the rest), so time travel has an older version. ``empty=True`` writes the same tables with
their schemas and no rows (a run without traffic), also as two versions.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
from deltalake import write_deltalake

S, L, I32, D, F, B = pa.string(), pa.int64(), pa.int32(), pa.float64(), pa.float32(), pa.bool_()
TS, DT = pa.timestamp("us", tz="UTC"), pa.date32()

SCHEMAS: dict[str, tuple[pa.Schema, list[str]]] = {
    "frames": (
        pa.schema(
            [
                ("camera_id", S),
                ("frame_index", L),
                ("pts_s", D),
                ("capture_ts", TS),
                ("ingest_ts", TS),
                ("processed_ts", TS),
                ("kafka_partition", I32),
                ("kafka_offset", L),
                ("raw_detections", I32),
                ("vehicles", I32),
                ("decode_ms", D),
                ("detect_ms", D),
                ("embed_ms", D),
                ("track_ms", D),
                ("speed_ms", D),
                ("state_bytes", L),
                ("analysis", S),
                ("stride", I32),
                ("skip_reason", S),
                ("batch_id", L),
                ("event_date", DT),
            ]
        ),
        ["camera_id", "event_date"],
    ),
    "detections": (
        pa.schema(
            [
                ("camera_id", S),
                ("frame_index", L),
                ("pts_s", D),
                ("capture_ts", TS),
                ("track_id", L),
                ("class_name", S),
                ("confidence", F),
                ("x1", F),
                ("y1", F),
                ("x2", F),
                ("y2", F),
                ("world_x_m", D),
                ("world_y_m", D),
                ("speed_kmh", D),
                ("speed_flag", S),
                ("over_limit", B),
                ("batch_id", L),
                ("event_date", DT),
            ]
        ),
        ["camera_id", "event_date"],
    ),
    "tracks": (
        pa.schema(
            [
                ("camera_id", S),
                ("track_id", L),
                ("class_name", S),
                ("first_frame", L),
                ("last_frame", L),
                ("first_seen_ts", TS),
                ("last_seen_ts", TS),
                ("n_frames", I32),
                ("median_speed_kmh", D),
                ("max_speed_kmh", D),
                ("distance_m", D),
                ("direction_deg", D),
                ("passage_speed_kmh", D),
                ("passage_uncertainty_kmh", D),
                ("passage_section", S),
                ("ended", B),
                ("updated_batch", L),
            ]
        ),
        ["camera_id"],
    ),
    "violations": (
        pa.schema(
            [
                ("camera_id", S),
                ("track_id", L),
                ("class_name", S),
                ("frame_index", L),
                ("pts_s", D),
                ("capture_ts", TS),
                ("speed_kmh", D),
                ("speed_source", S),
                ("uncertainty_kmh", D),
                ("limit_kmh", D),
                ("over_s", D),
                ("x1", F),
                ("y1", F),
                ("x2", F),
                ("y2", F),
                ("evidence_uri", S),
                ("evidence_clip_uri", S),
                ("batch_id", L),
                ("event_date", DT),
            ]
        ),
        ["camera_id"],
    ),
    "flow": (
        pa.schema([("camera_id", S), ("minute", TS), ("class_name", S), ("vehicles", L), ("updated_batch", L)]),
        ["camera_id"],
    ),
    "crossings": (
        pa.schema(
            [
                ("camera_id", S),
                ("line_id", S),
                ("track_id", L),
                ("direction", S),
                ("crossing_ts", TS),
                ("crossing_pts_s", D),
                ("frame_index", L),
                ("lane_id", S),
                ("class_name", S),
                ("speed_kmh", D),
                ("x", D),
                ("y", D),
                ("batch_id", L),
                ("event_date", DT),
            ]
        ),
        ["camera_id", "event_date"],
    ),
    "events": (
        pa.schema(
            [
                ("camera_id", S),
                ("event_id", S),
                ("event_type", S),
                ("track_id", L),
                ("lane_id", S),
                ("zone_id", S),
                ("start_ts", TS),
                ("detect_ts", TS),
                ("end_ts", TS),
                ("duration_s", D),
                ("distance_m", D),
                ("max_length_m", D),
                ("max_vehicles", I32),
                ("speed_kmh", D),
                ("heading_deg", D),
                ("lane_heading_deg", D),
                ("x_m", D),
                ("y_m", D),
                ("class_name", S),
                ("frame_index", L),
                ("is_open", B),
                ("updated_batch", L),
            ]
        ),
        ["camera_id"],
    ),
    "dead_letters": (
        pa.schema(
            [
                ("reason", S),
                ("detail", S),
                ("camera_id", S),
                ("frame_index", L),
                ("payload", S),
                ("kafka_topic", S),
                ("kafka_partition", I32),
                ("kafka_offset", L),
                ("dead_ts", TS),
                ("batch_id", L),
            ]
        ),
        [],
    ),
}

CAMERAS = {"motorway-overpass": 100.0, "dual-carriageway": 112.0}
START = dt.datetime(2024, 5, 14, 7, 0, tzinfo=dt.timezone.utc)
MINUTES = 90
SPLIT = START + dt.timedelta(minutes=45)  # version 0 holds what happened before, version 1 the rest
FPS = 25.0
CLASSES = (("car", 0.75), ("truck", 0.12), ("bus", 0.05), ("motorcycle", 0.08))


def _jpeg(path: Path, label: str) -> None:
    """A small real JPEG (grey road, a boxed vehicle) like the job's evidence snapshots."""
    import cv2

    image = np.full((90, 160, 3), 90, np.uint8)
    cv2.rectangle(image, (50, 30), (110, 70), (0, 0, 255), 2)
    cv2.putText(image, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (255, 255, 255), 1)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data.tobytes())


def _vehicles_in_minute(rng: random.Random, minute: int) -> int:
    return rng.randint(1, 3) + (rng.randint(2, 4) if 30 <= minute < 60 else 0)


def batch_of(ts: dt.datetime) -> int:
    """The micro-batch id of a capture time (30 s micro-batches)."""
    return int((ts - START).total_seconds() // 30)


def make_rows(evidence_root: Path, seed: int = 7) -> dict[str, list[dict[str, Any]]]:
    """The rows of every table (and the evidence JPEGs under ``evidence_root``)."""
    rng = random.Random(seed)
    rows: dict[str, list[dict[str, Any]]] = {name: [] for name in SCHEMAS}
    frames: dict[tuple[str, int], dict[str, Any]] = {}
    for cam, limit in CAMERAS.items():
        track_id = 0
        for minute in range(MINUTES):
            for _ in range(_vehicles_in_minute(rng, minute)):
                track_id += 1
                cls = rng.choices([c for c, _ in CLASSES], [w for _, w in CLASSES])[0]
                base = rng.gauss(limit - 10 if cls in ("car", "motorcycle") else limit - 25, 12)
                first = START + dt.timedelta(minutes=minute, seconds=rng.uniform(0, 59))
                dets = []
                for k in range(6):
                    ts = first + dt.timedelta(seconds=0.2 * k)
                    idx = int((ts - START).total_seconds() * FPS)
                    flag = "insufficient_history" if k == 0 else None
                    speed: float | None = None if k == 0 else round(base + rng.gauss(0, 2), 2)
                    if k == 3 and rng.random() < 0.1:
                        speed, flag = 250.0, "implausible_speed"
                    y = 40.0 - 5 * k
                    dets.append(
                        {
                            "camera_id": cam,
                            "frame_index": idx,
                            "pts_s": idx / FPS,
                            "capture_ts": ts,
                            "track_id": track_id,
                            "class_name": cls,
                            "confidence": 0.6 + 0.3 * rng.random(),
                            "x1": 500.0 + k,
                            "y1": 300.0 - 10 * k,
                            "x2": 560.0 + k,
                            "y2": 340.0 - 10 * k,
                            "world_x_m": 5.0,
                            "world_y_m": y,
                            "speed_kmh": speed,
                            "speed_flag": flag,
                            "over_limit": bool(speed is not None and flag is None and speed > limit),
                            "batch_id": batch_of(ts),
                            "event_date": ts.date(),
                        }
                    )
                    frame = frames.setdefault(
                        (cam, idx),
                        {
                            "camera_id": cam,
                            "frame_index": idx,
                            "pts_s": idx / FPS,
                            "capture_ts": ts,
                            "ingest_ts": ts + dt.timedelta(milliseconds=5),
                            "processed_ts": ts + dt.timedelta(seconds=2),
                            "kafka_partition": 0 if cam == "motorway-overpass" else 1,
                            "kafka_offset": idx,
                            "raw_detections": 0,
                            "vehicles": 0,
                            "decode_ms": 4.0,
                            "detect_ms": 35.0 + rng.random() * 10,
                            "embed_ms": 3.0,
                            "track_ms": 1.5,
                            "speed_ms": 0.2,
                            "state_bytes": 20_000,
                            "analysis": "detected",
                            "stride": 1,
                            "skip_reason": None,
                            "batch_id": batch_of(ts),
                            "event_date": ts.date(),
                        },
                    )
                    frame["vehicles"] += 1
                    frame["raw_detections"] += 1
                rows["detections"] += dets
                at_line = dets[2]  # every vehicle crosses the camera's counting line "l1", in its lane
                lane = "lane-1" if track_id % 3 else "lane-2"
                rows["crossings"].append(
                    {
                        "camera_id": cam,
                        "line_id": "l1",
                        "track_id": track_id,
                        "direction": "southbound",
                        "crossing_ts": at_line["capture_ts"] - dt.timedelta(milliseconds=20),
                        "crossing_pts_s": at_line["pts_s"] - 0.02,
                        "frame_index": at_line["frame_index"],
                        "lane_id": lane,
                        "class_name": cls,
                        "speed_kmh": at_line["speed_kmh"] if at_line["speed_flag"] is None else None,
                        "x": 5.0,
                        "y": 30.0,
                        "batch_id": at_line["batch_id"],
                        "event_date": at_line["capture_ts"].date(),
                    }
                )
                trusted = [d["speed_kmh"] for d in dets if d["speed_flag"] is None]
                last = dets[-1]
                rows["tracks"].append(
                    {
                        "camera_id": cam,
                        "track_id": track_id,
                        "class_name": cls,
                        "first_frame": dets[0]["frame_index"],
                        "last_frame": last["frame_index"],
                        "first_seen_ts": first,
                        "last_seen_ts": last["capture_ts"],
                        "n_frames": len(dets),
                        "median_speed_kmh": float(np.median(trusted)),
                        "max_speed_kmh": float(max(trusted)),
                        "distance_m": 25.0,
                        "direction_deg": 180.0,
                        "ended": True,
                        "updated_batch": last["batch_id"],
                    }
                )
                if float(np.median(trusted)) > limit + 5:
                    over = next(d for d in dets if d["over_limit"]) if any(d["over_limit"] for d in dets) else last
                    n = len(rows["violations"])
                    target = evidence_root / cam / f"{track_id}_{over['frame_index']}.jpg"
                    if n != 1:  # the second violation's frame could not be re-read: no evidence
                        _jpeg(target, f"{cam} #{track_id} {over['speed_kmh']:.0f} km/h")
                    uri = None if n == 1 else target.resolve().as_uri()
                    if n == 2:
                        target.unlink()  # evidence written, then lost (retention, moved storage)
                    rows["events"].append(
                        _event(cam, "speeding", track_id, over["capture_ts"] - dt.timedelta(seconds=0.8), over)
                        | {"speed_kmh": over["speed_kmh"], "class_name": cls, "end_ts": over["capture_ts"]}
                    )
                    rows["violations"].append(
                        {
                            "camera_id": cam,
                            "track_id": track_id,
                            "class_name": cls,
                            "frame_index": over["frame_index"],
                            "pts_s": over["pts_s"],
                            "capture_ts": over["capture_ts"],
                            "speed_kmh": over["speed_kmh"],
                            "speed_source": "windowed",
                            "limit_kmh": limit,
                            "over_s": 0.8,
                            "x1": over["x1"],
                            "y1": over["y1"],
                            "x2": over["x2"],
                            "y2": over["y2"],
                            "evidence_uri": uri,
                            "batch_id": over["batch_id"],
                            "event_date": over["capture_ts"].date(),
                        }
                    )
    rows["frames"] = sorted(frames.values(), key=lambda r: (r["camera_id"], r["frame_index"]))
    flow: dict[tuple[str, dt.datetime, str], int] = {}
    for t in rows["tracks"]:
        key = (t["camera_id"], t["first_seen_ts"].replace(second=0, microsecond=0), t["class_name"])
        flow[key] = flow.get(key, 0) + 1
    rows["flow"] = [
        {"camera_id": c, "minute": m, "class_name": k, "vehicles": n, "updated_batch": batch_of(m)}
        for (c, m, k), n in sorted(flow.items())
    ]
    for cam in CAMERAS:  # one vehicle stopped in a lane on each camera, one wrong-way driver on the first
        stop = rows["detections"][len(rows["events"]) * 7]
        rows["events"].append(
            _event(cam, "stopped_vehicle", 900, stop["capture_ts"], stop)
            | {"end_ts": stop["capture_ts"] + dt.timedelta(seconds=45), "duration_s": 45.0, "lane_id": "lane-1"}
        )
    wrong = rows["detections"][100]
    rows["events"].append(
        _event("motorway-overpass", "wrong_way", 901, wrong["capture_ts"], wrong) | {"distance_m": 18.0}
    )
    for i, reason in enumerate(("malformed_message", "unknown_camera", "source_missing", "malformed_message")):
        ts = START + dt.timedelta(minutes=10 + 20 * i)
        rows["dead_letters"].append(
            {
                "reason": reason,
                "detail": f"test {reason}",
                "camera_id": None if i == 0 else "nowhere",
                "frame_index": None if i == 0 else i,
                "payload": "{not json" if i == 0 else '{"camera_id": "nowhere"}',
                "kafka_topic": "frames",
                "kafka_partition": 0,
                "kafka_offset": 10_000 + i,
                "dead_ts": ts,
                "batch_id": batch_of(ts),
            }
        )
    return rows


def _event(cam: str, kind: str, track_id: int, start: dt.datetime, at: dict[str, Any]) -> dict[str, Any]:
    """An events-table row (closed unless the caller sets ``end_ts`` None)."""
    return {
        "camera_id": cam,
        "event_id": hashlib.sha1(f"{cam}|{kind}|{track_id}|{start.isoformat()}".encode()).hexdigest()[:20],
        "event_type": kind,
        "track_id": track_id,
        "lane_id": None,
        "zone_id": None,
        "start_ts": start,
        "detect_ts": at["capture_ts"],
        "end_ts": at["capture_ts"],
        "duration_s": (at["capture_ts"] - start).total_seconds(),
        "distance_m": None,
        "max_length_m": None,
        "max_vehicles": None,
        "speed_kmh": None,
        "heading_deg": None,
        "lane_heading_deg": None,
        "x_m": 5.0,
        "y_m": 20.0,
        "class_name": "car",
        "frame_index": at["frame_index"],
        "is_open": False,
        "updated_batch": at["batch_id"],
    }


TIME_COLUMN = {
    "frames": "capture_ts",
    "detections": "capture_ts",
    "tracks": "first_seen_ts",
    "violations": "capture_ts",
    "flow": "minute",
    "dead_letters": "dead_ts",
    "crossings": "crossing_ts",
    "events": "start_ts",
}


def write_tables(
    root: Path, *, empty: bool = False, evidence_root: Path | None = None, seed: int = 7
) -> dict[str, int]:
    """Writes the tables under ``root`` (two versions each); returns the final row count per table."""
    root.mkdir(parents=True, exist_ok=True)
    evidence_root = evidence_root or root.parent / "evidence"
    rows = {name: [] for name in SCHEMAS} if empty else make_rows(evidence_root, seed)
    counts = {}
    for name, (schema, partitions) in SCHEMAS.items():
        col = TIME_COLUMN[name]
        early = [r for r in rows[name] if r[col] < SPLIT]
        late = [r for r in rows[name] if r[col] >= SPLIT]
        for mode, part in (("error", early), ("append", late)):
            write_deltalake(
                str(root / name), pa.Table.from_pylist(part, schema=schema), mode=mode, partition_by=partitions or None
            )
        counts[name] = len(rows[name])
    return counts


if __name__ == "__main__":  # python tests/notebooks/tables_fixture.py var/notebook-fixture/delta [--empty]
    import sys

    print(write_tables(Path(sys.argv[1]), empty="--empty" in sys.argv))
