"""Kafka message schemas: frame references (ingest -> job) and dead letters (job -> consumers).

All messages are UTF-8 JSON objects carrying ``v`` (schema version). Frame references are keyed by camera id
so one camera's frames stay ordered in one partition. No pixels ever travel through Kafka. The results topic's
messages are declared in :mod:`trafficstream.results`.
"""

from __future__ import annotations

import base64
import json
import math
import re
from dataclasses import asdict, dataclass
from typing import Any

from trafficstream.errors import MessageError

FRAME_REF_VERSION = 1
DEAD_LETTER_VERSION = 1
CAMERA_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

# Dead-letter reason codes (stable: dashboards and analysts filter on them).
REASON_MALFORMED = "malformed_message"
REASON_UNSUPPORTED_VERSION = "unsupported_schema_version"
REASON_UNKNOWN_CAMERA = "unknown_camera"
REASON_PATH_NOT_ALLOWED = "path_outside_storage_roots"
REASON_SOURCE_MISSING = "source_missing"
REASON_SOURCE_UNREADABLE = "source_unreadable"
REASON_FRAME_NOT_FOUND = "frame_not_found"
REASON_PROCESSING_ERROR = "processing_error"
REASON_MESSAGE_TOO_LARGE = "message_too_large"
REASON_SOURCE_MISMATCH = "source_mismatch"  # the reference names a camera but another video
REASON_FRAME_MISMATCH = "frame_mismatch"  # the decoded frame's index, timestamp or size differ from the reference
REASON_DUPLICATE_FRAME = "duplicate_frame"  # a camera's frame that was already processed (re-ingest)

# Bounds on every field of a frame reference: anything outside is a producer bug or an attack, and must be
# dead-lettered here rather than overflow Arrow (int64), the dashboards (datetime) or a camera's state.
MAX_FRAME_REF_BYTES = 16 * 1024  # default cap on a frame reference's size (setting: kafka.max_message_bytes)
MAX_FRAME_INDEX = 2**31 - 1  # ~2.3 years of a 30 fps stream in one source / segment
MAX_PTS_S = 10**7  # ~115 days from the start of one source / segment
MIN_WALL_TS = 946_684_800.0  # 2000-01-01T00:00:00Z
MAX_WALL_TS = 4_102_444_800.0  # 2100-01-01T00:00:00Z
MAX_URI_CHARS = 4096
MAX_DETAIL_CHARS = 2000


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def load_json(raw: bytes | str | None, max_bytes: int) -> Any:
    """Parse one Kafka message value as JSON; any defect is a :class:`MessageError` with a reason code.

    Never raises anything else: deep nesting (RecursionError), integers with too many digits (ValueError),
    invalid UTF-8 all become ``malformed_message``; values over ``max_bytes`` are not even parsed.
    """
    if raw is None or len(raw) == 0:
        raise MessageError(REASON_MALFORMED, "empty message value")
    if len(raw) > max_bytes:
        raise MessageError(REASON_MESSAGE_TOO_LARGE, f"{len(raw)} bytes, the limit is {max_bytes}")
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MessageError(REASON_MALFORMED, f"not JSON: {exc}") from None
    except (RecursionError, ValueError, MemoryError) as exc:  # nesting too deep, int with too many digits
        raise MessageError(REASON_MALFORMED, f"not parseable: {type(exc).__name__}") from None


@dataclass(frozen=True, slots=True)
class FrameRef:
    """A reference to one decoded frame of a camera source (about 200-300 bytes as JSON)."""

    camera_id: str
    source_uri: str
    frame_index: int
    pts_s: float  # presentation timestamp from the container, seconds from stream start
    capture_ts: float  # wall-clock capture time, Unix seconds (file sources: ingest start + pts)
    ingest_ts: float  # wall-clock time the ingest worker published the reference, Unix seconds
    width: int
    height: int
    # Where the frame sits in ``source_uri`` when that differs from the camera-wide position: a live camera's
    # frames live in short segments (index and pts restart in each), a file looped as a live camera restarts
    # at every pass. ``frame_index`` / ``pts_s`` stay the camera's own, strictly increasing sequence and time.
    source_index: int | None = None
    source_pts_s: float | None = None
    # True when the frame was captured (or replayed) in real time: the job then holds the camera's latency
    # budget by shedding load. A recording published as fast as it decodes is analysed frame by frame.
    live: bool = False
    v: int = FRAME_REF_VERSION

    @property
    def index_in_source(self) -> int:
        return self.frame_index if self.source_index is None else self.source_index

    @property
    def pts_in_source(self) -> float:
        return self.pts_s if self.source_pts_s is None else self.source_pts_s

    def to_json(self) -> bytes:
        d = asdict(self)
        d["pts_s"] = round(self.pts_s, 6)
        d["capture_ts"] = round(self.capture_ts, 6)
        d["ingest_ts"] = round(self.ingest_ts, 6)
        if self.source_index is None:
            del d["source_index"]
        if self.source_pts_s is None:
            del d["source_pts_s"]
        else:
            d["source_pts_s"] = round(self.source_pts_s, 6)
        if not self.live:
            del d["live"]
        return _compact(d)

    @classmethod
    def from_json(cls, raw: bytes | str | None, max_bytes: int = MAX_FRAME_REF_BYTES) -> FrameRef:
        """Parse and validate; raises :class:`MessageError` with a dead-letter reason on any defect.

        Never raises anything else: deep nesting, huge integers, invalid UTF-8 or lone surrogates all become
        a reason code (a single crafted message must not fail the task, and with it every camera).
        """
        obj = load_json(raw, max_bytes)
        if not isinstance(obj, dict):
            raise MessageError(REASON_MALFORMED, "expected a JSON object")
        version = obj.get("v")
        if version != FRAME_REF_VERSION:
            shown = version if isinstance(version, (int, float, str)) and len(str(version)) <= 20 else "?"
            raise MessageError(REASON_UNSUPPORTED_VERSION, f"v={shown!r}, this job reads v={FRAME_REF_VERSION}")
        return cls(
            camera_id=_field(obj, "camera_id", str, check=lambda s: bool(CAMERA_ID_PATTERN.fullmatch(s))),
            source_uri=_field(obj, "source_uri", str, check=lambda s: 0 < len(s) <= MAX_URI_CHARS and _valid_text(s)),
            frame_index=_field(obj, "frame_index", int, check=lambda i: 0 <= i <= MAX_FRAME_INDEX),
            pts_s=float(_field(obj, "pts_s", (int, float), check=lambda x: _finite_in(x, 0.0, MAX_PTS_S))),
            capture_ts=float(_field(obj, "capture_ts", (int, float), check=_wall_clock)),
            ingest_ts=float(_field(obj, "ingest_ts", (int, float), check=_wall_clock)),
            width=_field(obj, "width", int, check=lambda i: 0 < i <= 16384),
            height=_field(obj, "height", int, check=lambda i: 0 < i <= 16384),
            source_index=_optional(obj, "source_index", int, check=lambda i: 0 <= i <= MAX_FRAME_INDEX),
            source_pts_s=_optional_float(obj, "source_pts_s", check=lambda x: _finite_in(x, 0.0, MAX_PTS_S)),
            live=bool(_optional(obj, "live", bool)),
        )


def _finite_in(x: int | float, lo: float, hi: float) -> bool:
    try:
        return math.isfinite(x) and lo <= x <= hi
    except OverflowError:  # an int too large for a float
        return False


def _wall_clock(x: int | float) -> bool:
    return _finite_in(x, MIN_WALL_TS, MAX_WALL_TS)


def _valid_text(s: str) -> bool:
    """Encodable as UTF-8 (no lone surrogates from ``\\udXXX`` escapes) and free of control characters."""
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return not any(ord(c) < 32 or ord(c) == 127 for c in s)


def safe_text(value: object, limit: int = MAX_DETAIL_CHARS) -> str:
    """A string that any UTF-8 sink (Arrow, Delta, Kafka, logs) accepts: lone surrogates escaped, bounded."""
    text = value if isinstance(value, str) else repr(value)
    if len(text) > limit:
        text = text[:limit] + "..."
    return text.encode("utf-8", errors="backslashreplace").decode("utf-8")


def payload_text(payload: bytes | str | None, limit: int = 64 * 1024) -> str | None:
    """The original payload as text for a dead letter: UTF-8 as is, anything else as ``base64:...``.

    Bytes that are not valid UTF-8 are kept exactly (base64), never mangled; payloads over ``limit`` bytes
    keep their first ``limit`` bytes (the detail says how large the original was).
    """
    if payload is None:
        return None
    raw = payload.encode("utf-8", errors="surrogatepass") if isinstance(payload, str) else bytes(payload)
    raw = raw[:limit]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(raw).decode("ascii")
    return text


def _field(obj: dict, name: str, typ: type | tuple[type, ...], check=None):
    if name not in obj:
        raise MessageError(REASON_MALFORMED, f"missing field {name!r}")
    value = obj[name]
    # bool is an int subclass in Python; a boolean frame index is a producer bug, not a number.
    if (isinstance(value, bool) and typ is not bool) or not isinstance(value, typ):
        raise MessageError(REASON_MALFORMED, f"field {name!r} has wrong type {type(value).__name__}")
    if check is not None and not check(value):
        shown = safe_text(value, 80) if not isinstance(value, int) or value.bit_length() < 256 else "<huge int>"
        raise MessageError(REASON_MALFORMED, f"field {name!r} has invalid value {shown}")
    return value


def _optional(obj: dict, name: str, typ: type | tuple[type, ...], check=None):
    """An optional field: absent or null is None, anything else must pass like a required one."""
    return None if obj.get(name) is None else _field(obj, name, typ, check)


def _optional_float(obj: dict, name: str, check=None) -> float | None:
    value = _optional(obj, name, (int, float), check)
    return None if value is None else float(value)


def dead_letter(
    reason: str,
    detail: str,
    payload: bytes | str | None,
    *,
    camera_id: str | None = None,
    frame_index: int | None = None,
    topic: str | None = None,
    partition: int | None = None,
    offset: int | None = None,
    ts: float | None = None,
) -> bytes:
    """Dead-letter record: the reason, where the message came from, and the original payload.

    The payload is the original text when it was UTF-8, else ``base64:`` and its bytes (see :func:`payload_text`).
    """
    if isinstance(payload, bytes):
        payload = payload_text(payload)
    elif isinstance(payload, str):
        payload = safe_text(payload, 64 * 1024)
    return _compact(
        {
            "v": DEAD_LETTER_VERSION,
            "reason": reason,
            "detail": safe_text(detail),
            "camera_id": camera_id,
            "frame_index": frame_index,
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "payload": payload,
            "ts": ts,
        }
    )
