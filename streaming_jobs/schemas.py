"""Spark schemas of the job's intermediate rows and of the Delta tables it writes.

Table schemas and the payload fields that carry table columns are derived from the declarations in
:mod:`trafficstream.tables`; what is written here is only what no table declares (stage-1 rows, the tagged
stage-2 row, payload-only fields).
"""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql.types import (
    ArrayType,
    BinaryType,
    BooleanType,
    DataType,
    DateType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from trafficstream import tables

_SPARK_TYPES: dict[str, type[DataType]] = {
    "string": StringType,
    "long": LongType,
    "int": IntegerType,
    "double": DoubleType,
    "float": FloatType,
    "boolean": BooleanType,
    "timestamp": TimestampType,
    "date": DateType,
}
# In the JSON payloads of stage-2 rows a timestamp travels as unix seconds (double) and a boolean as
# "true"/"false" (string keeps JSON parsing lenient); from_payload turns them back.
_PAYLOAD_TYPES: dict[str, str] = {"timestamp": "double", "boolean": "string"}


def spark_type(column_type: str) -> DataType:
    """The Spark type of a declared column type (:data:`trafficstream.tables.COLUMN_TYPES`)."""
    return _SPARK_TYPES[column_type]()


def spark_schema(table: tables.Table | str) -> StructType:
    """The Delta table's schema, in declared column order."""
    t = tables.table(table) if isinstance(table, str) else table
    return StructType([StructField(c.name, spark_type(c.type)) for c in t.columns])


def payload_type(column: tables.Column) -> DataType:
    """How ``column`` travels in a stage-2 JSON payload."""
    return spark_type(_PAYLOAD_TYPES.get(column.type, column.type))


def payload_fields(table: str, names: Iterable[str]) -> list[StructField]:
    """Payload fields carrying the named columns of ``table`` (same names, :func:`payload_type`)."""
    return [StructField(c.name, payload_type(c)) for c in tables.table(table).select(*names)]


def from_payload(column: tables.Column, ref: str) -> str:
    """Spark SQL turning the payload field ``ref`` (e.g. ``p.first_seen_ts``) back into the column's value."""
    if column.type == "timestamp":
        return f"timestamp_seconds({ref})"
    if column.type == "boolean":
        return f"({ref} = 'true')"
    return ref


# -- stage 1 (stateless, per partition): one row per frame reference ------------------------------------
PERCEPTION = StructType(
    [
        StructField("camera_id", StringType()),  # "" when the message did not even parse
        StructField("frame_index", LongType()),
        StructField("pts_s", DoubleType()),
        StructField("capture_ts", DoubleType()),
        StructField("ingest_ts", DoubleType()),
        StructField("source_uri", StringType()),
        StructField("source_index", LongType()),  # the frame's position in source_uri (segment, looped file)
        StructField("source_pts_s", DoubleType()),
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
        # Load shedding (streaming_jobs/shedding.py): detected | predicted | skipped, the stride, why skipped.
        StructField("analysis", StringType()),
        StructField("stride", IntegerType()),
        StructField("skip_reason", StringType()),
    ]
)

# -- stage 2 (stateful per camera): tagged rows, one schema for every kind ------------------------------
KIND_FRAME = "frame"
KIND_DEAD = "dead"
KIND_TRACK = "track"
KIND_VIOLATION = "violation"
KIND_FLOW = "flow"
KIND_HEALTH = "health"  # a camera event that is not about one frame (e.g. its tracking state was reset)
KIND_CROSSING = "crossing"  # a track crossed a counting line (crossings table, results topic)
KIND_EVENT = "event"  # a traffic event reported (events table, results topic)

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

# Stage-2 rows as the sinks get them: with the micro-batch that produced each (spooled batches are committed
# to Delta several at a time, each row keeping its own batch id).
SPOOLED = StructType(TRACKED.fields + [StructField("batch_id", LongType())])

# The per-camera state kept in Spark's state store (restored from the checkpoint after a restart).
CAMERA_STATE = StructType([StructField("version", IntegerType()), StructField("blob", BinaryType())])

# -- JSON payloads of stage-2 rows ----------------------------------------------------------------------
# Where a payload carries a table's columns, its fields are derived from the declaration (payload_fields);
# only the payload-only fields are written here.
VEHICLE = StructType(
    payload_fields(
        tables.DETECTIONS,
        (
            "track_id",
            "class_name",
            "confidence",
            "x1",
            "y1",
            "x2",
            "y2",
            "world_x_m",
            "world_y_m",
            "speed_kmh",
            "speed_flag",
            "over_limit",
        ),
    )
)

FRAME_PAYLOAD = StructType(
    payload_fields(tables.FRAMES, ("ingest_ts", "kafka_partition", "kafka_offset", "raw_detections"))
    + [
        StructField("vehicles", ArrayType(VEHICLE)),
        StructField("counts", StringType()),  # JSON object class -> n, kept as text for the results message
        StructField("flow", StringType()),
    ]
    # state_bytes: the tracking state's size, on a camera's last frame of a batch only
    + payload_fields(tables.FRAMES, ("decode_ms", "detect_ms", "embed_ms", "track_ms", "speed_ms", "state_bytes"))
    + payload_fields(tables.FRAMES, ("analysis", "stride", "skip_reason"))
)

DEAD_PAYLOAD = StructType(
    payload_fields(
        tables.DEAD_LETTERS, ("reason", "detail", "payload", "kafka_topic", "kafka_partition", "kafka_offset")
    )
)

TRACK_PAYLOAD = StructType(
    payload_fields(
        tables.TRACKS,
        (
            "track_id",
            "class_name",
            "first_frame",
            "last_frame",
            "first_seen_ts",
            "last_seen_ts",
            "n_frames",
            "median_speed_kmh",
            "max_speed_kmh",
            "distance_m",
            "direction_deg",
            "passage_speed_kmh",
            "passage_uncertainty_kmh",
            "passage_section",
            "ended",
        ),
    )
)

VIOLATION_PAYLOAD = StructType(
    payload_fields(
        tables.VIOLATIONS,
        ("track_id", "class_name", "speed_kmh", "speed_source", "uncertainty_kmh", "limit_kmh", "over_s"),
    )
    # the evidence step re-reads the frame from its place in the source (a file, a segment)
    + [
        StructField("source_uri", StringType()),
        StructField("source_index", LongType()),
        StructField("source_pts_s", DoubleType()),
    ]
    + payload_fields(tables.VIOLATIONS, ("x1", "y1", "x2", "y2"))
    # every detection of the frame, for the evidence's privacy pixelation (not a table column)
    + [StructField("others", ArrayType(ArrayType(DoubleType())))]
)

FLOW_PAYLOAD = StructType(
    [StructField("minute_ts", DoubleType())]  # the table's `minute` (unix seconds, start of the minute)
    + payload_fields(tables.FLOW, ("class_name", "vehicles"))
)

CROSSING_PAYLOAD = StructType(
    payload_fields(
        tables.CROSSINGS,
        (
            "line_id",
            "track_id",
            "direction",
            "crossing_ts",
            "crossing_pts_s",
            "frame_index",
            "lane_id",
            "class_name",
            "speed_kmh",
            "x",
            "y",
        ),
    )
)

EVENT_PAYLOAD = StructType(
    payload_fields(
        tables.EVENTS,
        [c.name for c in tables.table(tables.EVENTS).columns if c.name not in ("camera_id", "updated_batch")],
    )
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
