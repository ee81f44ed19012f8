"""Delta Lake tables written by the streaming job (one folder each under ``storage.delta_root``).

Readers: Spark (``delta-spark``), and without a JVM ``deltalake`` (delta-rs) / Polars. The job keeps to
table features those readers support (no deletion vectors, no column mapping).

| table        | one row per                               | partitioned by       | write            |
|--------------|-------------------------------------------|----------------------|------------------|
| frames       | processed frame (processing log, timings) | camera_id, event_date| append, idempotent|
| detections   | vehicle per frame                         | camera_id, event_date| append, idempotent|
| tracks       | vehicle track (per-track summary)         | camera_id            | merge (upsert)   |
| violations   | speeding vehicle per passage              | camera_id            | append, idempotent|
| flow         | camera x minute x class (vehicle counts)  | camera_id            | merge (upsert)   |
| dead_letters | message that could not be processed       | (none: small)        | append, idempotent|
"""
from __future__ import annotations

FRAMES = "frames"
DETECTIONS = "detections"
TRACKS = "tracks"
VIOLATIONS = "violations"
FLOW = "flow"
DEAD_LETTERS = "dead_letters"
ALL_TABLES = (FRAMES, DETECTIONS, TRACKS, VIOLATIONS, FLOW, DEAD_LETTERS)

# Column documentation for analysts (the Spark schemas in streaming_jobs are the source of truth).
COLUMNS: dict[str, dict[str, str]] = {
    FRAMES: {
        "camera_id": "camera id from the deployment config",
        "frame_index": "0-based frame number in the source",
        "pts_s": "container presentation timestamp, seconds",
        "capture_ts": "capture wall-clock time (timestamp, UTC)",
        "processed_ts": "time the stateful stage finished the frame (timestamp, UTC)",
        "vehicles": "vehicles in the region of interest",
        "decode_ms/detect_ms/embed_ms/track_ms/speed_ms": "per-stage processing time",
        "state_bytes": "the camera's tracking-state size in the state store (last frame of a micro-batch)",
        "batch_id": "Spark micro-batch id",
        "event_date": "partition column: date of capture_ts",
    },
    DETECTIONS: {
        "camera_id, frame_index, pts_s, capture_ts": "as in frames",
        "track_id": "confirmed DeepSORT track id, stable per camera across micro-batches and restarts",
        "class_name": "car | motorcycle | bus | truck",
        "confidence": "detector confidence of the matched detection",
        "x1, y1, x2, y2": "box in source pixels",
        "world_x_m, world_y_m": "bottom-centre of the box on the road plane, metres",
        "speed_kmh": "smoothed speed (null until enough history)",
        "speed_flag": "null when trusted; otherwise why not: insufficient_history, outside_calibration, "
                      "implausible_speed, implausible_acceleration, large_residual, inconsistent_motion",
    },
    TRACKS: {
        "camera_id, track_id": "key (upserted every micro-batch while the vehicle is seen; ended = true after)",
        "class_name": "majority class over the track",
        "first_seen_ts, last_seen_ts, first_frame, last_frame": "extent",
        "median_speed_kmh, max_speed_kmh": "over plausible speed estimates",
        "distance_m": "road-plane path length",
        "direction_deg": "heading on the road plane (0 = +y)",
    },
    VIOLATIONS: {
        "camera_id, track_id": "who",
        "frame_index, capture_ts": "evidence frame",
        "speed_kmh, limit_kmh, over_s": "how fast, the limit, for how long over it",
        "evidence_uri": "JPEG snapshot with the vehicle boxed",
    },
    FLOW: {"camera_id, minute, class_name": "key", "vehicles": "vehicles first counted in that minute"},
    DEAD_LETTERS: {"reason, detail, payload": "why and what", "topic, partition, offset": "where from"},
}
