"""The results topic (job -> dashboards and other consumers): every message type declared, built and read here.

Five types, keyed by camera id (batch health by ``health``): ``frame`` (one per processed frame),
``violation`` (one per speeding passage, after its evidence snapshot), ``crossing`` (a vehicle crossing a
counting line), ``event`` (a traffic event: wrong way, stopped vehicle, queue, speeding; again when it ends) and
``health`` (one per micro-batch, plus camera events such as a tracking-state reset, which carry ``camera_id``
and ``event``). The field declarations
below are the one source of: the builders the job and the test fixtures use (``frame_message``, ...), the
validator (``validate_message``, ``parse_result``), and the JSON Schema (draft 2020-12, ``json_schema``;
rendered to ``docs/results-topic.schema.json`` by ``python -m trafficstream.docs``). Fields that carry a
Delta table column take its meaning and unit from :mod:`trafficstream.tables`.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from trafficstream import tables
from trafficstream.errors import MessageError
from trafficstream.messages import (
    CAMERA_ID_PATTERN,
    MAX_FRAME_INDEX,
    MAX_PTS_S,
    MAX_WALL_TS,
    MIN_WALL_TS,
    REASON_MALFORMED,
    REASON_UNSUPPORTED_VERSION,
    load_json,
    safe_text,
)

RESULT_VERSION = 1
RESULT_FRAME = "frame"
RESULT_VIOLATION = "violation"
RESULT_HEALTH = "health"
RESULT_CROSSING = "crossing"
RESULT_EVENT = "event"
HEALTH_KEY = b"health"  # Kafka key of batch health messages (every other message: its camera id)
MAX_RESULT_BYTES = 1024 * 1024  # a frame with hundreds of vehicles is ~50 KB; Kafka's default cap is 1 MB
STAGES = ("decode", "detect", "embed", "track", "speed")  # a frame message's `ms`

COMPATIBILITY = """\
Every message carries `v` (the schema version, now 1) and `type`.
- Adding a field is compatible: it keeps `v` = 1. Consumers ignore fields they do not know, and tolerate the
  absence of a field (a message from an older producer): `parse_result` checks the type of every declared
  field that is present and requires none but `v` and `type`.
- Removing or renaming a field, changing its type, unit or meaning, or tightening its bounds is incompatible:
  it needs `v` = 2, and consumers reject versions they do not read.
- Producers emit every declared field, `null` where it is nullable and unknown (`validate_message`; the JSON
  Schema lists them all as required).
- Results are at least once: a replayed micro-batch re-sends its messages. Deduplicate frames on
  (camera_id, frame_index, capture_ts), violations on (camera_id, track_id, frame_index), crossings on
  (camera_id, line_id, track_id, direction) and events on (event_id, end_ts): the last one seen is the latest."""


# -- declarations ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class JsonType:
    """A JSON value's type and bounds; renders to JSON Schema and validates in Python alike."""

    kind: str  # string | integer | number | boolean | array | object | const
    minimum: float | None = None
    maximum: float | None = None
    pattern: str | None = None  # strings: anchored ECMA-262 / Python regex
    items: JsonType | None = None  # arrays
    length: int | None = None  # arrays: exact number of items
    fields: tuple[Field, ...] = ()  # objects: declared properties
    values: JsonType | None = None  # objects: type of every other property (a map); None: anything
    key: str = ""  # objects with values: what their other property names are (documentation)
    const: Any = None


@dataclass(frozen=True, slots=True)
class Field:
    name: str
    type: JsonType
    doc: str
    unit: str = ""
    nullable: bool = False


def string(pattern: str | None = None) -> JsonType:
    return JsonType("string", pattern=pattern)


def integer(minimum: int | None = None, maximum: int | None = None) -> JsonType:
    return JsonType("integer", minimum, maximum)


def number(minimum: float | None = None, maximum: float | None = None) -> JsonType:
    return JsonType("number", minimum, maximum)


def array(items: JsonType, length: int | None = None) -> JsonType:
    return JsonType("array", items=items, length=length)


def obj(*fields: Field, values: JsonType | None = None, key: str = "") -> JsonType:
    """An object with declared ``fields``; ``values``: the type of its other properties, named by ``key``."""
    return JsonType("object", fields=fields, values=values, key=key)


WALL_TS = number(MIN_WALL_TS, MAX_WALL_TS)  # unix seconds, 2000-2100 (the frame references' bounds)
TS_UNIT = "unix s, UTC"
_JSON_KIND = {
    "string": "string",
    "long": "integer",
    "int": "integer",
    "double": "number",
    "float": "number",
    "boolean": "boolean",
    "timestamp": "number",
}


def column_field(
    table: str,
    column: str,
    *,
    name: str | None = None,
    type: JsonType | None = None,
    doc: str | None = None,
    nullable: bool = False,
) -> Field:
    """A field carrying a table column: its doc and unit come from the declaration (timestamps as unix s)."""
    c = tables.table(table).column(column)
    return Field(
        name or c.name,
        type or JsonType(_JSON_KIND[c.type]),
        doc or c.doc,
        TS_UNIT if c.type == "timestamp" else c.unit,
        nullable,
    )


@dataclass(frozen=True, slots=True)
class MessageType:
    """One message type: ``name`` is its JSON Schema ``$defs`` key; ``type`` the value of its ``type`` field.
    Camera events and batch health share ``type`` = health: a camera event is the one with ``event``."""

    name: str
    type: str
    title: str
    doc: str
    fields: tuple[Field, ...]
    key: str  # the Kafka key
    without: tuple[str, ...] = ()  # fields whose presence makes a message another type


CAMERA_ID = Field("camera_id", string(CAMERA_ID_PATTERN.pattern), "camera id from the deployment config")
TRACK_ID = column_field(tables.DETECTIONS, "track_id", type=integer(1, 2**63 - 1))
FRAME_INDEX = column_field(tables.FRAMES, "frame_index", type=integer(0, MAX_FRAME_INDEX))
BOX = Field("box", array(number(), length=4), "x1, y1, x2, y2 of the vehicle's box in source pixels (rounded)", "px")
_MAP_OF_COUNTS = integer(0)

FRAME = MessageType(
    "frame",
    RESULT_FRAME,
    "Frame",
    "One per processed frame: the tracked vehicles, counts and stage timings.",
    (
        CAMERA_ID,
        FRAME_INDEX,
        column_field(tables.FRAMES, "pts_s", type=number(0, MAX_PTS_S)),
        column_field(tables.FRAMES, "capture_ts", type=WALL_TS),
        column_field(tables.FRAMES, "processed_ts", type=WALL_TS),
        Field(
            "vehicles",
            array(
                obj(
                    column_field(tables.DETECTIONS, "track_id", name="id", type=integer(1, 2**63 - 1)),
                    column_field(tables.DETECTIONS, "class_name", name="cls"),
                    column_field(tables.DETECTIONS, "confidence", name="conf", type=number(0, 1), nullable=True),
                    BOX,
                    column_field(
                        tables.DETECTIONS,
                        "speed_kmh",
                        name="kmh",
                        type=number(0),
                        doc="trusted speed; null while there is none (the detections table's speed_flag says why)",
                        nullable=True,
                    ),
                    column_field(tables.DETECTIONS, "over_limit", name="over"),
                )
            ),
            "tracked vehicles in the region of interest (the frame's rows of the detections table)",
        ),
        Field(
            "counts",
            obj(
                Field("in_roi", integer(0), "vehicles in the region of interest", "vehicles"),
                values=_MAP_OF_COUNTS,
                key="class",
            ),
            "vehicles in this frame: in_roi, and per class (car, truck, ...)",
            "vehicles",
        ),
        Field(
            "flow",
            obj(Field("minute", WALL_TS, "start of the current minute", TS_UNIT), values=_MAP_OF_COUNTS, key="class"),
            "vehicles counted so far in the current minute, per class (as the flow table)",
            "vehicles",
        ),
        Field(
            "ms",
            obj(
                *(
                    column_field(tables.FRAMES, f"{stage}_ms", name=stage, type=number(0), nullable=True)
                    for stage in STAGES
                ),
                values=number(),
                key="stage",
            ),
            "per-stage processing time of the frame",
            "ms",
        ),
        column_field(tables.FRAMES, "analysis", type=string("^(detected|predicted)$")),
        column_field(tables.FRAMES, "stride", type=integer(1, 1000)),
        Field(
            "source",
            obj(
                Field("uri", string(), "file:// URI of the video or segment holding the frame"),
                Field("index", integer(0, MAX_FRAME_INDEX), "frame index in that file"),
                Field("pts_s", number(0, MAX_PTS_S), "presentation time in that file", "s"),
            ),
            "where the frame's pixels are (for viewers that draw the frame)",
            nullable=True,
        ),
    ),
    key="camera_id",
)

VIOLATION = MessageType(
    "violation",
    RESULT_VIOLATION,
    "Violation",
    "One per speeding passage, once its evidence snapshot is written (the violations table's row).",
    (
        CAMERA_ID,
        TRACK_ID,
        column_field(tables.VIOLATIONS, "frame_index", type=integer(0, MAX_FRAME_INDEX)),
        column_field(tables.VIOLATIONS, "capture_ts", type=WALL_TS),
        column_field(tables.VIOLATIONS, "class_name", name="cls"),
        column_field(tables.VIOLATIONS, "speed_kmh", name="kmh", type=number(0)),
        column_field(tables.VIOLATIONS, "speed_source", type=string("^(passage|windowed)$"), nullable=True),
        column_field(tables.VIOLATIONS, "uncertainty_kmh", type=number(0), nullable=True),
        column_field(tables.VIOLATIONS, "limit_kmh", type=number(0)),
        column_field(tables.VIOLATIONS, "over_s", type=number(0)),
        column_field(tables.VIOLATIONS, "evidence_uri", nullable=True),
        column_field(tables.VIOLATIONS, "evidence_clip_uri", name="clip_uri", nullable=True),
        BOX,
    ),
    key="camera_id",
)

BATCH_HEALTH = MessageType(
    "batch_health",
    RESULT_HEALTH,
    "Batch health",
    "One per micro-batch of the job: duration, throughput, lag.",
    (
        Field("batch_id", integer(0), "Spark micro-batch id"),
        Field("batch_ms", number(0), "micro-batch duration, sinks included", "ms"),
        Field("frames", integer(0), "frames processed or dead-lettered in the batch", "frames"),
        Field("fps", number(0), "frames / batch duration (null for a zero duration)", "frames/s", nullable=True),
        Field("ts", WALL_TS, "time the batch ended", TS_UNIT),
        Field(
            "lag",
            obj(values=integer(0), key="camera id"),
            "per camera: frame references published but not yet processed",
            "frames",
        ),
        Field(
            "delay_s",
            obj(values=number(), key="camera id"),
            "per camera: now minus the capture time of its newest frame in the batch",
            "s",
        ),
        Field(
            "counts",
            obj(values=integer(0), key="row kind"),
            "stage-2 rows of the batch per kind (frame, dead, track, flow, violation, health)",
            "rows",
        ),
        Field(
            "analysis",
            obj(
                values=obj(
                    Field("detected", integer(0), "frames run through the detector", "frames"),
                    Field("predicted", integer(0), "frames whose boxes the tracker predicted", "frames"),
                    Field("skipped", integer(0), "stale frames skipped to hold the latency budget", "frames"),
                    Field("stride", integer(1), "detection stride in force at the batch's last frame", "frames"),
                    Field("budget_s", number(0), "the camera's capture -> result latency budget", "s"),
                ),
                key="camera id",
            ),
            "per camera: how its frames of the batch were analysed (load shedding)",
        ),
    ),
    key="health",
    without=("event",),
)

CAMERA_EVENT = MessageType(
    "camera_event",
    RESULT_HEALTH,
    "Camera event",
    "A camera event that is not about one frame, e.g. its tracking state was reset (also logged by the job).",
    (
        CAMERA_ID,
        Field("batch_id", integer(0), "Spark micro-batch id (null: an event of the ingest worker)", nullable=True),
        Field("ts", WALL_TS, "time the event was reported", TS_UNIT),
        Field("event", string(), "what happened: state_reset | source_lost | source_restored"),
        Field(
            "cause",
            string(),
            "why (state_reset: corrupt | unknown_version | unencodable | repeated_errors; source_lost: "
            "disconnected | ended | open_failed)",
            nullable=True,
        ),
        Field("gap_s", number(0), "source_restored: seconds without frames from the camera", "s", nullable=True),
        Field("detail", string(), "human-readable detail", nullable=True),
        Field("next_track_id", integer(1), "track ids of the camera go on from here", nullable=True),
        Field("resets", integer(0), "state resets of this camera so far, this one included", nullable=True),
    ),
    key="camera_id",
)

CROSSING = MessageType(
    "crossing",
    RESULT_CROSSING,
    "Line crossing",
    "A vehicle crossed a counting line (once per line, track and direction): the crossings table's row.",
    (
        CAMERA_ID,
        column_field(tables.CROSSINGS, "line_id", type=string(CAMERA_ID_PATTERN.pattern)),
        TRACK_ID,
        column_field(tables.CROSSINGS, "direction"),
        column_field(tables.CROSSINGS, "crossing_ts", name="ts", type=WALL_TS),
        column_field(tables.CROSSINGS, "frame_index", type=integer(0, MAX_FRAME_INDEX)),
        column_field(tables.CROSSINGS, "lane_id", nullable=True),
        column_field(tables.CROSSINGS, "class_name", name="cls", nullable=True),
        column_field(tables.CROSSINGS, "speed_kmh", name="kmh", type=number(0), nullable=True),
        Field(
            "day_count",
            integer(1),
            "crossings of this line in this direction so far on the crossing's UTC day (this one included)",
            "vehicles",
        ),
    ),
    key="camera_id",
)

EVENT = MessageType(
    "event",
    RESULT_EVENT,
    "Traffic event",
    "A traffic event when it is detected, and again (same event_id) when it ends: the events table's row.",
    (
        CAMERA_ID,
        column_field(tables.EVENTS, "event_id", type=string("^[0-9a-f]{1,64}$")),
        column_field(tables.EVENTS, "event_type", type=string("^(wrong_way|stopped_vehicle|queue|speeding)$")),
        column_field(tables.EVENTS, "track_id", type=integer(1, 2**63 - 1), nullable=True),
        column_field(tables.EVENTS, "lane_id", nullable=True),
        column_field(tables.EVENTS, "zone_id", nullable=True),
        column_field(tables.EVENTS, "start_ts", type=WALL_TS),
        column_field(tables.EVENTS, "detect_ts", type=WALL_TS),
        column_field(tables.EVENTS, "end_ts", type=WALL_TS, nullable=True),
        column_field(tables.EVENTS, "duration_s", type=number(0), nullable=True),
        column_field(tables.EVENTS, "distance_m", type=number(0), nullable=True),
        column_field(tables.EVENTS, "max_length_m", type=number(0), nullable=True),
        column_field(tables.EVENTS, "max_vehicles", type=integer(0), nullable=True),
        column_field(tables.EVENTS, "speed_kmh", name="kmh", type=number(0), nullable=True),
        column_field(tables.EVENTS, "class_name", name="cls", nullable=True),
        column_field(tables.EVENTS, "x_m", nullable=True),
        column_field(tables.EVENTS, "y_m", nullable=True),
        column_field(tables.EVENTS, "frame_index", type=integer(0, MAX_FRAME_INDEX), nullable=True),
    ),
    key="camera_id",
)

MESSAGE_TYPES: tuple[MessageType, ...] = (FRAME, VIOLATION, CROSSING, EVENT, BATCH_HEALTH, CAMERA_EVENT)


def message_type(msg: Mapping[str, Any]) -> MessageType:
    """The declared type of ``msg`` (by ``type``; a health message with ``event`` is a camera event)."""
    kind = msg.get("type")
    if kind == RESULT_HEALTH:
        return CAMERA_EVENT if "event" in msg else BATCH_HEALTH
    for mt in (FRAME, VIOLATION, CROSSING, EVENT):
        if kind == mt.type:
            return mt
    raise MessageError(REASON_MALFORMED, f"unknown results type {safe_text(kind, 40)}")


# -- builders (the job and the test fixtures) -------------------------------------------------------------
def _num(x: Any, digits: int | None = None) -> float | None:
    """A finite float (rounded), else None."""
    if x is None:
        return None
    v = float(x)
    if not math.isfinite(v):
        return None
    return round(v, digits) if digits is not None else v


def _opt_int(x: Any) -> int | None:
    return None if x is None else int(x)


def _box(box: Sequence[float]) -> list[int]:
    x1, y1, x2, y2 = box
    return [round(float(x1)), round(float(y1)), round(float(x2)), round(float(y2))]


def _counts(counts: Mapping[str, int]) -> dict[str, int]:
    return {str(k): int(n) for k, n in counts.items()}


def frame_vehicle(
    *,
    track_id: int,
    class_name: str,
    confidence: float | None,
    box: Sequence[float],
    speed_kmh: float | None,
    over_limit: bool,
) -> dict[str, Any]:
    """One entry of a frame message's ``vehicles``."""
    return {
        "id": int(track_id),
        "cls": str(class_name),
        "conf": _num(confidence, 2),
        "box": _box(box),
        "kmh": _num(speed_kmh, 1),
        "over": bool(over_limit),
    }


def frame_message(
    *,
    camera_id: str,
    frame_index: int,
    pts_s: float,
    capture_ts: float,
    processed_ts: float,
    vehicles: Sequence[Mapping[str, Any]],
    class_counts: Mapping[str, int],
    flow_minute: float,
    flow_counts: Mapping[str, int],
    ms: Mapping[str, float | None],
    analysis: str = "detected",
    stride: int = 1,
    source: tuple[str, int, float] | None = None,
) -> dict[str, Any]:
    """``vehicles``: :func:`frame_vehicle` entries; ``class_counts``: vehicles of this frame per class;
    ``flow_counts``: vehicles counted in the minute starting at ``flow_minute`` per class; ``ms``: per stage
    (:data:`STAGES`; a missing one is null); ``analysis``: detected, or predicted by the tracker between
    detections (``stride``); ``source``: (uri, index, pts) of the frame's pixels."""
    return {
        "v": RESULT_VERSION,
        "type": RESULT_FRAME,
        "camera_id": camera_id,
        "frame_index": int(frame_index),
        "pts_s": _num(pts_s, 4),
        "capture_ts": _num(capture_ts, 3),
        "processed_ts": _num(processed_ts, 3),
        "vehicles": [dict(v) for v in vehicles],
        "counts": {"in_roi": len(vehicles), **_counts(class_counts)},
        "flow": {"minute": _num(flow_minute), **_counts(flow_counts)},
        "ms": {stage: _num(ms.get(stage), 2) for stage in (*STAGES, *(k for k in ms if k not in STAGES))},
        "analysis": analysis,
        "stride": int(stride),
        "source": None if source is None else {"uri": source[0], "index": int(source[1]), "pts_s": _num(source[2], 6)},
    }


def violation_message(
    *,
    camera_id: str,
    track_id: int,
    frame_index: int,
    capture_ts: float,
    class_name: str,
    speed_kmh: float,
    limit_kmh: float,
    over_s: float,
    evidence_uri: str | None,
    box: Sequence[float],
    clip_uri: str | None = None,
    speed_source: str | None = "windowed",
    uncertainty_kmh: float | None = None,
) -> dict[str, Any]:
    return {
        "v": RESULT_VERSION,
        "type": RESULT_VIOLATION,
        "camera_id": camera_id,
        "track_id": int(track_id),
        "frame_index": int(frame_index),
        "capture_ts": _num(capture_ts, 3),
        "cls": str(class_name),
        "kmh": _num(speed_kmh, 1),
        "speed_source": speed_source,
        "uncertainty_kmh": _num(uncertainty_kmh, 2),
        "limit_kmh": _num(limit_kmh),
        "over_s": _num(over_s, 2),
        "evidence_uri": evidence_uri,
        "clip_uri": clip_uri,
        "box": _box(box),
    }


def crossing_message(
    *,
    camera_id: str,
    line_id: str,
    track_id: int,
    direction: str,
    ts: float,
    frame_index: int,
    lane_id: str | None,
    class_name: str | None,
    speed_kmh: float | None,
    day_count: int,
) -> dict[str, Any]:
    return {
        "v": RESULT_VERSION,
        "type": RESULT_CROSSING,
        "camera_id": camera_id,
        "line_id": line_id,
        "track_id": int(track_id),
        "direction": direction,
        "ts": _num(ts, 3),
        "frame_index": int(frame_index),
        "lane_id": lane_id,
        "cls": class_name,
        "kmh": _num(speed_kmh, 1),
        "day_count": int(day_count),
    }


def event_message(
    *,
    camera_id: str,
    event_id: str,
    event_type: str,
    start_ts: float,
    detect_ts: float,
    end_ts: float | None = None,
    track_id: int | None = None,
    lane_id: str | None = None,
    zone_id: str | None = None,
    duration_s: float | None = None,
    distance_m: float | None = None,
    max_length_m: float | None = None,
    max_vehicles: int | None = None,
    speed_kmh: float | None = None,
    class_name: str | None = None,
    x_m: float | None = None,
    y_m: float | None = None,
    frame_index: int | None = None,
) -> dict[str, Any]:
    return {
        "v": RESULT_VERSION,
        "type": RESULT_EVENT,
        "camera_id": camera_id,
        "event_id": event_id,
        "event_type": event_type,
        "track_id": _opt_int(track_id),
        "lane_id": lane_id,
        "zone_id": zone_id,
        "start_ts": _num(start_ts, 3),
        "detect_ts": _num(detect_ts, 3),
        "end_ts": _num(end_ts, 3),
        "duration_s": _num(duration_s, 2),
        "distance_m": _num(distance_m, 1),
        "max_length_m": _num(max_length_m, 1),
        "max_vehicles": _opt_int(max_vehicles),
        "kmh": _num(speed_kmh, 1),
        "cls": class_name,
        "x_m": _num(x_m, 2),
        "y_m": _num(y_m, 2),
        "frame_index": _opt_int(frame_index),
    }


def batch_health_message(
    *,
    batch_id: int,
    batch_ms: float,
    frames: int,
    ts: float,
    lag: Mapping[str, int],
    delay_s: Mapping[str, float],
    counts: Mapping[str, int],
    analysis: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """``analysis``: per camera {detected, predicted, skipped, stride, budget_s} of the batch."""
    return {
        "v": RESULT_VERSION,
        "type": RESULT_HEALTH,
        "batch_id": int(batch_id),
        "batch_ms": _num(batch_ms, 1),
        "frames": int(frames),
        "fps": round(frames / (batch_ms / 1e3), 2) if batch_ms else None,
        "ts": _num(ts, 3),
        "lag": {str(k): max(0, int(n)) for k, n in lag.items()},  # never "-3 behind"
        "delay_s": {str(k): _num(d, 3) for k, d in delay_s.items()},
        "counts": _counts(counts),
        "analysis": {
            str(cam): {
                "detected": max(0, int(a.get("detected") or 0)),
                "predicted": max(0, int(a.get("predicted") or 0)),
                "skipped": max(0, int(a.get("skipped") or 0)),
                "stride": max(1, int(a.get("stride") or 1)),
                "budget_s": _num(a.get("budget_s"), 3),
            }
            for cam, a in (analysis or {}).items()
        },
    }


def camera_event_message(
    *,
    camera_id: str,
    batch_id: int | None,
    ts: float,
    event: str,
    cause: str | None = None,
    detail: str | None = None,
    next_track_id: int | None = None,
    resets: int | None = None,
    gap_s: float | None = None,
) -> dict[str, Any]:
    return {
        "v": RESULT_VERSION,
        "type": RESULT_HEALTH,
        "camera_id": camera_id,
        "batch_id": _opt_int(batch_id),
        "ts": _num(ts, 3),
        "event": safe_text(event, 100),
        "cause": None if cause is None else safe_text(cause, 100),
        "gap_s": _num(gap_s, 3),
        "detail": None if detail is None else safe_text(detail),
        "next_track_id": _opt_int(next_track_id),
        "resets": _opt_int(resets),
    }


def encode(msg: Mapping[str, Any]) -> bytes:
    """The message as compact UTF-8 JSON (NaN/Infinity refused: they are not JSON)."""
    return json.dumps(msg, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


# -- validation ------------------------------------------------------------------------------------------
def _bad(where: str, problem: str) -> MessageError:
    return MessageError(REASON_MALFORMED, f"{where} {problem}")


@lru_cache(maxsize=16)
def _regex(pattern: str) -> re.Pattern[str]:
    # JSON Schema patterns search; ours are anchored ^...$, which Python's `$` would also match before a "\n"
    return re.compile(pattern[1:-1] if pattern.startswith("^") and pattern.endswith("$") else pattern)


def _in_bounds(x: float, t: JsonType) -> bool:
    try:
        if isinstance(x, float) and not math.isfinite(x):
            return False
        return (t.minimum is None or x >= t.minimum) and (t.maximum is None or x <= t.maximum)
    except OverflowError:
        return False


def _check(value: Any, t: JsonType, where: str, complete: bool) -> None:
    kind = t.kind
    if kind in ("integer", "number"):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _bad(where, f"is not a number ({type(value).__name__})")
        if kind == "integer" and isinstance(value, float) and not value.is_integer():
            raise _bad(where, "is not an integer")
        if not _in_bounds(value, t):
            raise _bad(where, f"is out of range [{t.minimum}, {t.maximum}]")
    elif kind == "string":
        if not isinstance(value, str):
            raise _bad(where, f"is not a string ({type(value).__name__})")
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise _bad(where, "is not valid Unicode") from None
        if t.pattern is not None and not _regex(t.pattern).fullmatch(value):
            raise _bad(where, f"does not match {t.pattern}")
    elif kind == "boolean":
        if not isinstance(value, bool):
            raise _bad(where, f"is not a boolean ({type(value).__name__})")
    elif kind == "array":
        if not isinstance(value, list):
            raise _bad(where, f"is not an array ({type(value).__name__})")
        if t.length is not None and len(value) != t.length:
            raise _bad(where, f"has {len(value)} items, not {t.length}")
        for i, item in enumerate(value):
            _check(item, t.items, f"{where}[{i}]", complete)  # type: ignore[arg-type]
    elif kind == "object":
        if not isinstance(value, dict):
            raise _bad(where, f"is not an object ({type(value).__name__})")
        _check_fields(value, t.fields, where, complete)
        if t.values is not None:
            declared = {f.name for f in t.fields}
            for k, v in value.items():
                if k not in declared:
                    _check(v, t.values, f"{where}.{k}", complete)
    elif kind == "const" and (type(value) is not type(t.const) or value != t.const):
        raise _bad(where, f"is not {t.const!r}")


def _check_fields(value: Mapping[str, Any], fields: Sequence[Field], where: str, complete: bool) -> None:
    for f in fields:
        path = f"{where}.{f.name}" if where else f.name
        if f.name not in value:
            if complete:
                raise _bad(path, "is missing")
            continue
        v = value[f.name]
        if v is None:
            if not f.nullable:
                raise _bad(path, "is null")
            continue
        _check(v, f.type, path, complete)


def _validate(msg: Any, complete: bool) -> MessageType:
    if not isinstance(msg, Mapping):
        raise MessageError(REASON_MALFORMED, "expected a JSON object")
    version = msg.get("v")
    if type(version) is not int or version != RESULT_VERSION:  # True == 1 and 1.0 == 1 in Python
        shown = safe_text(version, 20) if isinstance(version, (str, float)) else type(version).__name__
        raise MessageError(REASON_UNSUPPORTED_VERSION, f"v={shown}, this reader reads v={RESULT_VERSION}")
    mt = message_type(msg)
    _check_fields(msg, mt.fields, "", complete)  # descends into declared fields only: bounded depth
    return mt


def validate_message(msg: Mapping[str, Any]) -> None:
    """Raise :class:`MessageError` unless ``msg`` is a complete, well-typed message of a declared type (what a
    producer must send: every declared field present, ``null`` only where nullable)."""
    _validate(msg, complete=True)


def parse_result(raw: bytes | str | None) -> dict[str, Any]:
    """Parse a results-topic message: a v1 object of a known type whose declared fields, where present, have
    their declared types and bounds. Raises :class:`MessageError` (and nothing else) otherwise; unknown fields
    are kept and ignored, missing ones tolerated (see :data:`COMPATIBILITY`)."""
    obj = load_json(raw, MAX_RESULT_BYTES)
    _validate(obj, complete=False)
    return obj


# -- JSON Schema (draft 2020-12) -------------------------------------------------------------------------
SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def _type_schema(t: JsonType) -> dict[str, Any]:
    if t.kind == "const":
        return {"const": t.const}
    s: dict[str, Any] = {"type": t.kind}
    if t.minimum is not None:
        s["minimum"] = t.minimum
    if t.maximum is not None:
        s["maximum"] = t.maximum
    if t.pattern is not None:
        s["pattern"] = t.pattern
    if t.kind == "array":
        s["items"] = _type_schema(t.items)  # type: ignore[arg-type]
        if t.length is not None:
            s["minItems"] = s["maxItems"] = t.length
    if t.kind == "object":
        if t.fields:
            s["properties"] = {f.name: _field_schema(f) for f in t.fields}
            s["required"] = [f.name for f in t.fields]
        if t.values is not None:
            s["additionalProperties"] = _type_schema(t.values)
    return s


def _field_schema(f: Field) -> dict[str, Any]:
    s = {"description": f"{f.doc} ({f.unit})" if f.unit else f.doc, **_type_schema(f.type)}
    if f.nullable:
        s["type"] = [s["type"], "null"]
    return s


def _message_schema(mt: MessageType) -> dict[str, Any]:
    head = (
        Field("v", JsonType("const", const=RESULT_VERSION), "schema version"),
        Field("type", JsonType("const", const=mt.type), "message type"),
    )
    s = {"title": mt.title, "description": mt.doc, **_type_schema(obj(*head, *mt.fields))}
    if mt.without:
        s["not"] = {"anyOf": [{"required": [name]} for name in mt.without]}
    return s


def json_schema(name: str | None = None) -> dict[str, Any]:
    """The JSON Schema of message type ``name`` (``frame``, ``violation``, ``batch_health``, ``camera_event``),
    or of any results message (``oneOf`` them) when None."""
    if name is not None:
        (mt,) = [m for m in MESSAGE_TYPES if m.name == name]
        return {"$schema": SCHEMA_DIALECT, **_message_schema(mt)}
    return {
        "$schema": SCHEMA_DIALECT,
        "title": f"trafficstream results topic, v{RESULT_VERSION}",
        "description": COMPATIBILITY,
        "oneOf": [{"$ref": f"#/$defs/{m.name}"} for m in MESSAGE_TYPES],
        "$defs": {m.name: _message_schema(m) for m in MESSAGE_TYPES},
    }
