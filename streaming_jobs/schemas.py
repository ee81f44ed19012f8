"""Spark schemas of the job's intermediate rows and of the Delta tables it writes."""
from __future__ import annotations

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

# -- stage 1 (stateless, per partition): one row per frame reference ------------------------------------
PERCEPTION = StructType(
    [
        StructField("camera_id", StringType()),  # "" when the message did not even parse
        StructField("frame_index", LongType()),
        StructField("pts_s", DoubleType()),
        StructField("capture_ts", DoubleType()),
        StructField("ingest_ts", DoubleType()),
        StructField("source_uri", StringType()),
        StructField("width", IntegerType()),
        StructField("height", IntegerType()),
        StructField("kafka_topic", StringType()),
        StructField("kafka_partition", IntegerType()),
        StructField("kafka_offset", LongType()),
        StructField("status", StringType()),  # "ok" | "dead"
        StructField("reason", StringType()),
        StructField("detail", StringType()),
        StructField("payload", StringType()),  # original message, kept for dead letters only
        # Detections inside the region of interest, flattened (N*4 boxes in source pixels).
        StructField("boxes", ArrayType(FloatType())),
        StructField("scores", ArrayType(FloatType())),
        StructField("classes", ArrayType(IntegerType())),
        StructField("embeddings", BinaryType()),  # N x D float16, L2-normalised appearance vectors
        StructField("embedding_dim", IntegerType()),
        StructField("drift", ArrayType(DoubleType())),  # 3x3 frame->reference registration, or null
        StructField("raw_detections", IntegerType()),  # before the region-of-interest filter
        StructField("decode_ms", DoubleType()),
        StructField("detect_ms", DoubleType()),
        StructField("embed_ms", DoubleType()),
    ]
)

# -- stage 2 (stateful per camera): tagged rows, one schema for every kind ------------------------------
KIND_FRAME = "frame"
KIND_DEAD = "dead"
KIND_TRACK = "track"
KIND_VIOLATION = "violation"
KIND_FLOW = "flow"
KIND_HEALTH = "health"  # a camera event that is not about one frame (e.g. its tracking state was reset)

TRACKED = StructType(
    [
        StructField("kind", StringType()),
        StructField("camera_id", StringType()),
        StructField("frame_index", LongType()),
        StructField("pts_s", DoubleType()),
        StructField("capture_ts", DoubleType()),
        StructField("processed_ts", DoubleType()),
        StructField("payload", StringType()),  # JSON whose shape depends on kind (schemas below)
        StructField("message", StringType()),  # results-topic JSON (frames), built where the data is
    ]
)

# The per-camera state kept in Spark's state store (restored from the checkpoint after a restart).
CAMERA_STATE = StructType([StructField("version", IntegerType()), StructField("blob", BinaryType())])

# -- JSON payloads of stage-2 rows ----------------------------------------------------------------------
VEHICLE = StructType(
    [
        StructField("track_id", LongType()),
        StructField("class_name", StringType()),
        StructField("confidence", FloatType()),
        StructField("x1", FloatType()),
        StructField("y1", FloatType()),
        StructField("x2", FloatType()),
        StructField("y2", FloatType()),
        StructField("world_x_m", DoubleType()),
        StructField("world_y_m", DoubleType()),
        StructField("speed_kmh", DoubleType()),
        StructField("speed_flag", StringType()),
        StructField("over_limit", StringType()),  # "true"/"false"; string keeps JSON parsing lenient
    ]
)

FRAME_PAYLOAD = StructType(
    [
        StructField("ingest_ts", DoubleType()),
        StructField("kafka_partition", IntegerType()),
        StructField("kafka_offset", LongType()),
        StructField("raw_detections", IntegerType()),
        StructField("vehicles", ArrayType(VEHICLE)),
        StructField("counts", StringType()),  # JSON object class -> n, kept as text for the results message
        StructField("flow", StringType()),
        StructField("decode_ms", DoubleType()),
        StructField("detect_ms", DoubleType()),
        StructField("embed_ms", DoubleType()),
        StructField("track_ms", DoubleType()),
        StructField("speed_ms", DoubleType()),
        StructField("state_bytes", LongType()),  # tracking state size, on a camera's last frame of a batch
    ]
)

DEAD_PAYLOAD = StructType(
    [
        StructField("reason", StringType()),
        StructField("detail", StringType()),
        StructField("payload", StringType()),
        StructField("kafka_topic", StringType()),
        StructField("kafka_partition", IntegerType()),
        StructField("kafka_offset", LongType()),
    ]
)

TRACK_PAYLOAD = StructType(
    [
        StructField("track_id", LongType()),
        StructField("class_name", StringType()),
        StructField("first_frame", LongType()),
        StructField("last_frame", LongType()),
        StructField("first_seen_ts", DoubleType()),
        StructField("last_seen_ts", DoubleType()),
        StructField("n_frames", IntegerType()),
        StructField("median_speed_kmh", DoubleType()),
        StructField("max_speed_kmh", DoubleType()),
        StructField("distance_m", DoubleType()),
        StructField("direction_deg", DoubleType()),
        StructField("ended", StringType()),
    ]
)

VIOLATION_PAYLOAD = StructType(
    [
        StructField("track_id", LongType()),
        StructField("class_name", StringType()),
        StructField("speed_kmh", DoubleType()),
        StructField("limit_kmh", DoubleType()),
        StructField("over_s", DoubleType()),
        StructField("source_uri", StringType()),
        StructField("x1", FloatType()),
        StructField("y1", FloatType()),
        StructField("x2", FloatType()),
        StructField("y2", FloatType()),
    ]
)

FLOW_PAYLOAD = StructType(
    [
        StructField("minute_ts", DoubleType()),
        StructField("class_name", StringType()),
        StructField("vehicles", LongType()),
    ]
)

HEALTH_PAYLOAD = StructType(
    [
        StructField("event", StringType()),  # e.g. "state_reset"
        StructField("cause", StringType()),  # why (state_reset: corrupt | unknown_version | unencodable | ...)
        StructField("detail", StringType()),
        StructField("state_version", IntegerType()),  # CAMERA_STATE.version found, when it matters
        StructField("next_track_id", LongType()),  # ids go on from here
        StructField("id_floor_from", StringType()),  # where next_track_id came from: envelope | clock | memory
        StructField("resets", LongType()),  # state resets of this camera so far, this one included
    ]
)

TS = TimestampType()
