"""The Delta Lake tables: each table's schema, units, meaning, partitioning and write mode, declared once.

Everything else derives from these declarations: the Spark schemas the job writes
(``streaming_jobs/schemas.py`` :func:`spark_schema`, ``sinks.TABLE_SCHEMAS``), the stage-2 payload schemas
that carry table columns, the analysts' reference ``docs/tables.md`` (``python -m trafficstream.docs``) and
:data:`COLUMNS`. Pure Python (no pyspark): notebooks and the dashboard import it without a JVM.

Readers: Spark (``delta-spark``), and without a JVM ``deltalake`` (delta-rs) / Polars. The job keeps to
table features those readers support (no deletion vectors, no column mapping). One folder per table under
``storage.delta_root``.
"""

from __future__ import annotations

from dataclasses import dataclass

# Column types (Delta / Spark SQL names). Timestamps are UTC instants (Spark TimestampType, microseconds).
COLUMN_TYPES = ("string", "long", "int", "double", "float", "boolean", "timestamp", "date")

# Write modes.
APPEND = "append"  # idempotent append: txnAppId (per checkpoint) + txnVersion (batch id); a replay is skipped
MERGE = "merge"  # upsert of absolute values on `keys`, guarded by `updated_batch` (a replay changes nothing)
REPLACE_RANGE = "replace_range"  # a batch job's replaceWhere over the time range it recomputed
WRITE_MODES = {
    APPEND: "append, idempotent (Delta txnAppId + txnVersion = micro-batch id: a replayed batch is skipped)",
    MERGE: "merge (upsert) on the key, guarded by `updated_batch`: a replayed or late batch changes nothing",
    REPLACE_RANGE: "replaceWhere over the recomputed time range: one atomic commit, reruns give the same table",
}

VEHICLE_JOB = "vehicle_pipeline"  # streaming_jobs/vehicle_pipeline.py creates its tables at start
STATISTICS_JOB = "traffic_statistics"  # streaming_jobs/traffic_statistics.py, a scheduled batch job


@dataclass(frozen=True, slots=True)
class Column:
    """One column: ``type`` is one of :data:`COLUMN_TYPES`; ``unit`` empty when it has none."""

    name: str
    type: str
    unit: str = ""
    doc: str = ""

    def __post_init__(self) -> None:
        if self.type not in COLUMN_TYPES:
            raise ValueError(f"column {self.name!r}: unknown type {self.type!r} (one of {', '.join(COLUMN_TYPES)})")


@dataclass(frozen=True, slots=True)
class Table:
    """One Delta table. ``keys``: a row's identity (the MERGE condition for ``merge`` tables; unique by
    construction for idempotent appends; empty when rows have none)."""

    name: str
    grain: str  # "one row per ..."
    columns: tuple[Column, ...]
    partition_by: tuple[str, ...]
    write: str
    keys: tuple[str, ...] = ()
    job: str = VEHICLE_JOB
    notes: str = ""

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name!r}: duplicate columns")
        unknown = [n for n in (*self.partition_by, *self.keys) if n not in names]
        if unknown:
            raise ValueError(f"table {self.name!r}: partition/key columns {unknown} are not declared")
        if self.write not in WRITE_MODES:
            raise ValueError(f"table {self.name!r}: unknown write mode {self.write!r}")

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    def column(self, name: str) -> Column:
        for c in self.columns:
            if c.name == name:
                return c
        raise KeyError(f"table {self.name!r} has no column {name!r}")

    def select(self, *names: str) -> tuple[Column, ...]:
        """The named columns, in the order given (raises KeyError for an undeclared one)."""
        return tuple(self.column(n) for n in names)


FRAMES = "frames"
DETECTIONS = "detections"
TRACKS = "tracks"
VIOLATIONS = "violations"
FLOW = "flow"
DEAD_LETTERS = "dead_letters"
CROSSINGS = "crossings"
EVENTS = "events"
TRAFFIC_STATS = "traffic_stats"
LINE_STATS = "line_stats"

# Columns several tables share: one definition each.
_CAMERA_ID = Column("camera_id", "string", "", "camera id from the deployment config")
_FRAME_INDEX = Column("frame_index", "long", "", "0-based frame number in the source")
_PTS_S = Column("pts_s", "double", "s", "container presentation timestamp, from the start of the source")
_CAPTURE_TS = Column("capture_ts", "timestamp", "UTC", "capture wall-clock time of the frame")
_TRACK_ID = Column("track_id", "long", "", "DeepSORT track id: stable per camera across micro-batches and restarts")
_CLASS_NAME = Column("class_name", "string", "", "car | motorcycle | bus | truck")
_BATCH_ID = Column("batch_id", "long", "", "Spark micro-batch id that wrote the row")
_UPDATED_BATCH = Column("updated_batch", "long", "", "micro-batch id of the last update (the MERGE guard)")
_EVENT_DATE = Column("event_date", "date", "UTC", "date of capture_ts")
_KAFKA_PARTITION = Column("kafka_partition", "int", "", "partition of the frame reference in the frames topic")
_KAFKA_OFFSET = Column("kafka_offset", "long", "", "offset of the frame reference in its partition")
_BOX = (
    Column("x1", "float", "px", "box left, source pixels"),
    Column("y1", "float", "px", "box top, source pixels"),
    Column("x2", "float", "px", "box right, source pixels"),
    Column("y2", "float", "px", "box bottom, source pixels"),
)


def _stage_ms(stage: str, what: str) -> Column:
    return Column(f"{stage}_ms", "double", "ms", f"{what} time of the frame")


DECLARATIONS: dict[str, Table] = {
    t.name: t
    for t in (
        Table(
            FRAMES,
            "processed frame (the processing log with per-stage timings)",
            (
                _CAMERA_ID,
                _FRAME_INDEX,
                _PTS_S,
                _CAPTURE_TS,
                Column("ingest_ts", "timestamp", "UTC", "time the ingest worker published the frame reference"),
                Column("processed_ts", "timestamp", "UTC", "time the stateful stage finished the frame"),
                _KAFKA_PARTITION,
                _KAFKA_OFFSET,
                Column("raw_detections", "int", "vehicles", "detections before the region-of-interest filter"),
                Column("vehicles", "int", "vehicles", "tracked vehicles in the region of interest"),
                _stage_ms("decode", "decode"),
                _stage_ms("detect", "detector"),
                _stage_ms("embed", "appearance embedding"),
                _stage_ms("track", "tracker"),
                _stage_ms("speed", "road-plane projection and speed"),
                Column(
                    "state_bytes",
                    "long",
                    "bytes",
                    "the camera's tracking-state size in the state store (last frame of a micro-batch, else null)",
                ),
                Column(
                    "analysis",
                    "string",
                    "",
                    "detected (the detector ran) | predicted (boxes from the tracker between detections) | "
                    "skipped (stale: dropped to hold the latency budget, no detections rows)",
                ),
                Column("stride", "int", "frames", "detection stride in force (1: every frame detected)"),
                Column("skip_reason", "string", "", "why a skipped frame was skipped (stale), else null"),
                _BATCH_ID,
                _EVENT_DATE,
            ),
            partition_by=("camera_id", "event_date"),
            write=APPEND,
            keys=("camera_id", "frame_index"),
        ),
        Table(
            DETECTIONS,
            "tracked vehicle per frame",
            (
                _CAMERA_ID,
                _FRAME_INDEX,
                _PTS_S,
                _CAPTURE_TS,
                _TRACK_ID,
                Column("class_name", "string", "", "car | motorcycle | bus | truck (this frame's detection)"),
                Column("confidence", "float", "0-1", "detector confidence of the matched detection"),
                *_BOX,
                Column("world_x_m", "double", "m", "bottom-centre of the box on the road plane, x"),
                Column("world_y_m", "double", "m", "bottom-centre of the box on the road plane, y"),
                Column("speed_kmh", "double", "km/h", "smoothed speed (null until enough history; never clamped)"),
                Column(
                    "speed_flag",
                    "string",
                    "",
                    "null when the speed is trusted; otherwise why not: insufficient_history, outside_calibration, "
                    "low_resolution, implausible_speed, implausible_acceleration, large_residual, "
                    "inconsistent_motion, at_picture_edge (no speed: the box is cut off by the picture's edge), "
                    "uncalibrated",
                ),
                Column("over_limit", "boolean", "", "trusted speed above the camera's limit"),
                _BATCH_ID,
                _EVENT_DATE,
            ),
            partition_by=("camera_id", "event_date"),
            write=APPEND,
            keys=("camera_id", "frame_index", "track_id"),
        ),
        Table(
            TRACKS,
            "vehicle track (per-vehicle summary)",
            (
                _CAMERA_ID,
                _TRACK_ID,
                Column("class_name", "string", "", "majority class over the track"),
                Column("first_frame", "long", "", "first frame the track was confirmed in"),
                Column("last_frame", "long", "", "last frame it was seen in"),
                Column("first_seen_ts", "timestamp", "UTC", "capture time of first_frame"),
                Column("last_seen_ts", "timestamp", "UTC", "capture time of last_frame"),
                Column("n_frames", "int", "frames", "frames the vehicle was tracked in"),
                Column("median_speed_kmh", "double", "km/h", "median over the plausible speed estimates"),
                Column("max_speed_kmh", "double", "km/h", "maximum over the plausible speed estimates"),
                Column("distance_m", "double", "m", "road-plane path length"),
                Column("direction_deg", "double", "deg", "heading on the road plane (0 = +y)"),
                Column(
                    "passage_speed_kmh",
                    "double",
                    "km/h",
                    "passage (section) speed: distance between two counting lines / time between crossing them "
                    "(null: no section completed)",
                ),
                Column("passage_uncertainty_kmh", "double", "km/h", "95 % bound of passage_speed_kmh (+-)"),
                Column("passage_section", "string", "", "id of the section the passage speed is over"),
                Column("ended", "boolean", "", "the track ended (false while the vehicle is still in view)"),
                _UPDATED_BATCH,
            ),
            partition_by=("camera_id",),
            write=MERGE,
            keys=("camera_id", "track_id"),
            notes="Upserted every micro-batch while the vehicle is seen; `ended` = true once it is gone.",
        ),
        Table(
            VIOLATIONS,
            "speeding vehicle per passage",
            (
                _CAMERA_ID,
                _TRACK_ID,
                _CLASS_NAME,
                Column("frame_index", "long", "", "evidence frame"),
                Column("pts_s", "double", "s", "presentation timestamp of the evidence frame"),
                Column("capture_ts", "timestamp", "UTC", "capture time of the evidence frame"),
                Column(
                    "speed_kmh",
                    "double",
                    "km/h",
                    "passage speed over the section (speed_source passage), else the median trusted speed over "
                    "the overspeed span (windowed)",
                ),
                Column("speed_source", "string", "", "passage (a camera with sections) | windowed"),
                Column("uncertainty_kmh", "double", "km/h", "95 % bound of speed_kmh (passage speeds; else null)"),
                Column("limit_kmh", "double", "km/h", "the camera's speed limit (configuration at that time)"),
                Column(
                    "over_s",
                    "double",
                    "s",
                    "how long the trusted speed had been over the limit (passage: the time over the section)",
                ),
                *_BOX,
                Column("evidence_uri", "string", "", "JPEG snapshot with the vehicle boxed (null: frame not re-read)"),
                Column(
                    "evidence_clip_uri",
                    "string",
                    "",
                    "MP4 clip around the evidence frame, offender boxed, others anonymised; made just after the "
                    "violation is recorded and published, it appears at this URI once complete (null: clips off or "
                    "the frame unreadable; a clip that cannot be made is logged and never appears)",
                ),
                _BATCH_ID,
                _EVENT_DATE,
            ),
            partition_by=("camera_id",),
            write=APPEND,
            keys=("camera_id", "track_id"),
        ),
        Table(
            FLOW,
            "camera x minute x class (vehicle counts)",
            (
                _CAMERA_ID,
                Column("minute", "timestamp", "UTC", "start of the minute"),
                _CLASS_NAME,
                Column("vehicles", "long", "vehicles", "vehicles first counted in that minute"),
                _UPDATED_BATCH,
            ),
            partition_by=("camera_id",),
            write=MERGE,
            keys=("camera_id", "minute", "class_name"),
            notes="A count is never lowered (a camera whose tracking state was reset counts its minute again).",
        ),
        Table(
            DEAD_LETTERS,
            "message that could not be processed",
            (
                Column("reason", "string", "", "stable reason code (README: bad input)"),
                Column("detail", "string", "", "human-readable detail"),
                Column("camera_id", "string", "", "camera id when the message named one"),
                Column("frame_index", "long", "", "frame number when the message carried one"),
                Column("payload", "string", "", "original message: UTF-8 text, else `base64:` and its bytes"),
                Column("kafka_topic", "string", "", "topic it was read from"),
                _KAFKA_PARTITION,
                _KAFKA_OFFSET,
                Column("dead_ts", "timestamp", "UTC", "time it was dead-lettered"),
                _BATCH_ID,
            ),
            partition_by=(),
            write=APPEND,
            notes="Not partitioned: small.",
        ),
        Table(
            CROSSINGS,
            "vehicle crossing a counting line, per direction",
            (
                _CAMERA_ID,
                Column("line_id", "string", "", "counting line id from the camera's `lines`"),
                _TRACK_ID,
                Column("direction", "string", "", "direction name from the line's `directions`"),
                Column(
                    "crossing_ts",
                    "timestamp",
                    "UTC",
                    "when the ground point crossed the line (interpolated between frames: sub-frame)",
                ),
                Column("crossing_pts_s", "double", "s", "the same on the camera's presentation timeline"),
                Column("frame_index", "long", "", "frame on which the crossing was confirmed (hysteresis)"),
                Column("lane_id", "string", "", "lane of the track just past the line (null: none configured/outside)"),
                _CLASS_NAME,
                Column("speed_kmh", "double", "km/h", "trusted speed just past the line (null: none trusted yet)"),
                Column("x", "double", "px | m", "where it crossed, in the line's space (image px or road metres)"),
                Column("y", "double", "px | m", "where it crossed, in the line's space"),
                _BATCH_ID,
                _EVENT_DATE,
            ),
            partition_by=("camera_id", "event_date"),
            write=APPEND,
            keys=("camera_id", "line_id", "track_id", "direction"),
            notes="A track counts once per line and direction (hysteresis): jitter and id flicker do not double.",
        ),
        Table(
            EVENTS,
            "traffic event (wrong way, stopped vehicle, queue episode, speeding)",
            (
                _CAMERA_ID,
                Column("event_id", "string", "", "deterministic id (camera, type, subject, start): stable on replays"),
                Column("event_type", "string", "", "wrong_way | stopped_vehicle | queue | speeding"),
                Column("track_id", "long", "", "the vehicle (null: a queue)"),
                Column("lane_id", "string", "", "lane it happened in (null: none configured)"),
                Column("zone_id", "string", "", "zone of a queue (null otherwise)"),
                Column("start_ts", "timestamp", "UTC", "when the behaviour began"),
                Column("detect_ts", "timestamp", "UTC", "when it became certain and was first reported"),
                Column("end_ts", "timestamp", "UTC", "when it ended (null while it lasts)"),
                Column("duration_s", "double", "s", "start to end, or to detection while open"),
                Column("distance_m", "double", "m", "wrong_way: distance driven against the lane"),
                Column("max_length_m", "double", "m", "queue: longest queue length of the episode"),
                Column("max_vehicles", "int", "vehicles", "queue: most vehicles queued at once"),
                Column("speed_kmh", "double", "km/h", "the vehicle's trusted speed (speeding: the violation's)"),
                Column("heading_deg", "double", "deg", "the vehicle's heading on the road plane (0 = +y)"),
                Column("lane_heading_deg", "double", "deg", "the lane's expected heading"),
                Column("x_m", "double", "m", "road-plane position at detection (queue: its front)"),
                Column("y_m", "double", "m", "road-plane position at detection"),
                _CLASS_NAME,
                Column("frame_index", "long", "", "frame on which it was last reported"),
                Column("is_open", "boolean", "", "still going on (end_ts null)"),
                _UPDATED_BATCH,
            ),
            partition_by=("camera_id",),
            write=MERGE,
            keys=("camera_id", "event_id"),
            notes="Upserted: an event is reported when detected and again when it ends (same event_id).",
        ),
        Table(
            TRAFFIC_STATS,
            "camera x bin (1 | 15 min) x class",
            (
                Column("camera_id", "string", "", "camera id from the deployment config; partition column"),
                Column("bin_minutes", "int", "min", "bin length: 1 or 15"),
                Column("bin_start", "timestamp", "UTC", "start of the bin [bin_start, bin_start + bin_minutes)"),
                Column("class_name", "string", "", "car | motorcycle | bus | truck (the track's majority class)"),
                Column("vehicles", "long", "vehicles", "distinct tracks first seen in the bin"),
                Column("speed_vehicles", "long", "vehicles", "of those, vehicles with at least one trusted speed"),
                Column("mean_speed_kmh", "double", "km/h", "mean over vehicles of each vehicle's median trusted speed"),
                Column("median_speed_kmh", "double", "km/h", "median over vehicles (exact, linear interpolation)"),
                Column(
                    "p85_speed_kmh", "double", "km/h", "85th percentile over vehicles (exact, linear interpolation)"
                ),
                Column(
                    "speed_limit_kmh", "double", "km/h", "the camera's limit in the config when computed (null: none)"
                ),
                Column("over_limit_vehicles", "long", "vehicles", "vehicles whose speed exceeds the limit"),
                Column("share_over_limit", "double", "fraction 0-1", "over_limit_vehicles / speed_vehicles"),
                Column("violations", "long", "violations", "violation records whose evidence frame is in the bin"),
            ),
            partition_by=("camera_id",),
            write=REPLACE_RANGE,
            keys=("camera_id", "bin_minutes", "bin_start", "class_name"),
            job=STATISTICS_JOB,
            notes="Written by the statistics batch job (streaming_jobs/traffic_statistics.py), every 15 min.",
        ),
        Table(
            LINE_STATS,
            "camera x counting line x direction x lane x bin (1 | 15 min) x class",
            (
                Column("camera_id", "string", "", "camera id from the deployment config; partition column"),
                Column("line_id", "string", "", "counting line id"),
                Column("direction", "string", "", "direction name of the line"),
                Column("lane_id", "string", "", "lane just past the line ('' when outside every lane / none)"),
                Column("bin_minutes", "int", "min", "bin length: 1 or 15"),
                Column("bin_start", "timestamp", "UTC", "start of the bin [bin_start, bin_start + bin_minutes)"),
                Column("class_name", "string", "", "car | motorcycle | bus | truck ('' when unknown)"),
                Column("vehicles", "long", "vehicles", "crossings in the bin (crossing_ts)"),
                Column("speed_vehicles", "long", "vehicles", "of those, crossings with a trusted speed at the line"),
                Column("mean_speed_kmh", "double", "km/h", "mean trusted speed at the line"),
                Column("median_speed_kmh", "double", "km/h", "median (exact, linear interpolation)"),
                Column("p85_speed_kmh", "double", "km/h", "85th percentile (exact, linear interpolation)"),
            ),
            partition_by=("camera_id",),
            write=REPLACE_RANGE,
            keys=("camera_id", "line_id", "direction", "lane_id", "bin_minutes", "bin_start", "class_name"),
            job=STATISTICS_JOB,
            notes="Per-line and per-lane flow, from the crossings table, by the statistics batch job.",
        ),
    )
}

# The tables the vehicle job writes (created, empty, when it starts). Tables of other jobs are declared above
# too, with their own `job`.
ALL_TABLES = tuple(name for name, t in DECLARATIONS.items() if t.job == VEHICLE_JOB)


def table(name: str) -> Table:
    """The declaration of ``name``; KeyError naming the declared tables when there is none."""
    try:
        return DECLARATIONS[name]
    except KeyError:
        raise KeyError(f"no table {name!r} is declared in trafficstream.tables ({', '.join(DECLARATIONS)})") from None


def tables_of(job: str) -> tuple[Table, ...]:
    return tuple(t for t in DECLARATIONS.values() if t.job == job)


# Column meanings for analysts, by table (derived).
COLUMNS: dict[str, dict[str, str]] = {
    t.name: {c.name: f"{c.doc} [{c.unit}]" if c.unit else c.doc for c in t.columns} for t in DECLARATIONS.values()
}
