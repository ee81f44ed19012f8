"""The one explicit, versioned binary format of every piece of per-camera state that outlives a process.

Stage 2 keeps each camera's tracking state in Spark's state store (``CAMERA_STATE``: ``version`` int +
``blob`` bytes) and reads it back after restarts, upgrades and executor moves, so the bytes are a public,
versioned format: no pickle (tied to class paths, unsafe to load), only JSON-typed values and raw numeric
arrays with an explicit dtype and shape. Encoding is deterministic: equal states give equal bytes.

Blob layout (``FORMAT_VERSION`` = 2; version 1 was the pickled tuple of the first releases)::

    offset size  field
    0      4     magic          b"TSST"
    4      4     kind           ASCII tag of the document: b"CAMS" camera, b"TRKR" tracker,
                                b"KINE" speed kinematics, b"VIOL" violation rule
    8      2     format version u16 little-endian (FORMAT_VERSION)
    10     8     next_id        i64: the owner's next track id (a high-water mark; 0 when not applicable)
    18     4     resets         u32: times this camera's state was thrown away and restarted
    22     4     body_crc       CRC32 of the body
    26     4     envelope_crc   CRC32 of bytes 0..25
    30     ...   body           u32 n | n bytes: zlib (level 6) of the JSON document (UTF-8) | array arena

The array arena is raw (C order, little-endian), not compressed: embedding floats hardly compress (-10% for
4x the encoding time) and Spark's state store compresses its files anyway; the JSON compresses ~4x.

The 30-byte envelope is frozen across format versions and has its own CRC, so a body this build cannot read
(corrupt, or a future / past format version) still yields the camera's track-id high-water mark and reset
count: :func:`read_envelope`. That is what keeps track ids monotonic across a state reset.

The JSON document is written with sorted keys, compact separators and no NaN/inf (they raise). Order that
matters (votes whose ties go to the most recent class, gallery order) is kept in lists of pairs, never in
objects. A numpy array is the object ``{"$nd": [dtype, shape, offset]}``: ``dtype`` is a little-endian numpy
type string from :data:`DTYPES` (``"<f4"``, ``"<f2"``, ...), ``shape`` a list of ints, ``offset`` the byte
offset of its C-order data in the arena (its length follows from dtype and shape).

Documents (``[..]`` are lists; all ids are ints; times are seconds):

* ``camera`` (``streaming_jobs/tracking.py`` ``CameraState``): ``fps`` (the rate the tracker's max age in
  frames is derived at: ``camera.fps``, else estimated once), ``last_frame_index``, ``last_pts_s`` (or null),
  ``error_streak`` (consecutive frames that failed processing), ``tracks``: [[track_id, first_frame, first_ts,
  last_frame, last_ts, n_frames, counted_minute|null, [[class_name, votes], ..]], ..], ``flow``: [[minute_ts,
  [[class_name, vehicles], ..]], ..], and the three documents below under ``tracker``, ``kinematics``,
  ``violations``.
* ``tracker`` (``models/tracker.py``): ``params``, ``deepsort_version``, ``next_id``, ``frame_count``,
  ``embed_dim``, ``pool`` (array (rows, embed_dim): every distinct gallery / track feature once; ``<f2``
  when that is lossless, as for stage 1's float16 embeddings, else ``<f4``), ``tracks``: [{id, mean, cov,
  hits, age, tsu, state, features: [pool rows], ltwh|null, det_class, det_conf, others}], ``samples``:
  [[track_id, [pool rows]], ..], ``class_votes``: [[track_id, [[class_id, votes], ..]], ..],
  ``pending_ended``: [[track_id, was_confirmed], ..].
* ``kinematics`` (``models/speed.py``): ``v`` (1), ``params``, ``tracks``: [[track_id, [t[], x[], y[],
  last_ok, n_ok, max_kmh, sample_kmh[], stride, path_m, first_xy, last_xy, last_heading, noise_m]], ..].
* ``violations`` (``models/violations.py``): ``v`` (1), ``params``, ``tracks``: [[track_id, [last_t, start,
  speeds[], reported]], ..].

``params`` are informational (what the state was written with): a restored camera takes its parameters from
the current configuration. Any change to the body layout or to any document bumps ``FORMAT_VERSION``; a
reader treats every other version as unreadable (the caller then restarts the state above the envelope's
``next_id``). The envelope itself never changes.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

MAGIC = b"TSST"
FORMAT_VERSION = 2
KINDS: dict[str, bytes] = {"camera": b"CAMS", "tracker": b"TRKR", "kinematics": b"KINE", "violations": b"VIOL"}
DTYPES = frozenset({"|b1", "|i1", "|u1", "<i2", "<u2", "<i4", "<u4", "<i8", "<u8", "<f2", "<f4", "<f8"})

_ENVELOPE = struct.Struct("<4s4sHqII")  # magic, kind, version, next_id, resets, body crc
_ENVELOPE_CRC = struct.Struct("<I")
ENVELOPE_SIZE = _ENVELOPE.size + _ENVELOPE_CRC.size  # 30
_JSON_LEN = struct.Struct("<I")
_ZLIB_LEVEL = 6
_MAX_JSON = 256 << 20  # decompressed; far above any real camera (~100 kB), refuses a decompression bomb
_ARRAY_KEY = "$nd"
_TAGS = {tag: name for name, tag in KINDS.items()}


class StateFormatError(ValueError):
    """A state blob is truncated, corrupt, of another kind, or written in a format version this build can't read."""


@dataclass(frozen=True, slots=True)
class Envelope:
    """The fixed, version-independent head of a state blob."""

    kind: str
    version: int
    next_id: int
    resets: int
    body_crc: int


def encode(kind: str, doc: Any, *, next_id: int = 0, resets: int = 0) -> bytes:
    """Serialise ``doc`` (JSON values and numpy arrays) as a ``kind`` blob; deterministic.

    Raises:
        ValueError: a NaN/inf float or a value that is neither JSON nor a numeric array (nothing written).
    """
    arena: list[bytes] = []
    size = 0

    def array(a: np.ndarray) -> dict[str, Any]:
        nonlocal size
        a = np.ascontiguousarray(a)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        if a.dtype.str not in DTYPES:
            raise ValueError(f"state arrays must be numeric, got dtype {a.dtype}")
        ref = {_ARRAY_KEY: [a.dtype.str, list(a.shape), size]}
        raw = a.tobytes()
        arena.append(raw)
        size += len(raw)
        return ref

    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            return array(obj)
        if isinstance(obj, np.bool_):
            return bool(obj)
        if isinstance(obj, np.integer):
            return int(obj)
        if isinstance(obj, np.floating):
            return float(obj)
        raise ValueError(f"state value of type {type(obj).__name__} is not serialisable")

    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), allow_nan=False, default=default).encode()
    packed = zlib.compress(text, _ZLIB_LEVEL)
    body = b"".join([_JSON_LEN.pack(len(packed)), packed, *arena])
    head = _ENVELOPE.pack(MAGIC, KINDS[kind], FORMAT_VERSION, int(next_id), int(resets), zlib.crc32(body))
    return head + _ENVELOPE_CRC.pack(zlib.crc32(head)) + body


def read_envelope(blob: Any) -> Envelope | None:
    """The envelope of any blob this or another format version wrote; ``None`` if unreadable. Never raises."""
    if not isinstance(blob, bytes | bytearray | memoryview):
        return None
    data = bytes(blob)
    if len(data) < ENVELOPE_SIZE or not data.startswith(MAGIC):
        return None
    (crc,) = _ENVELOPE_CRC.unpack_from(data, _ENVELOPE.size)
    if zlib.crc32(data[: _ENVELOPE.size]) != crc:
        return None
    _, tag, version, next_id, resets, body_crc = _ENVELOPE.unpack_from(data)
    kind = _TAGS.get(tag)
    if kind is None or next_id < 0:
        return None
    return Envelope(kind, version, next_id, resets, body_crc)


def decode(blob: bytes | bytearray | memoryview, kind: str) -> tuple[Envelope, Any]:
    """The envelope and document of a ``kind`` blob written by :func:`encode`.

    Raises:
        StateFormatError: bad magic, truncated, corrupt (CRC, zlib, JSON, array bounds), another kind, or a
            format version other than :data:`FORMAT_VERSION`.
    """
    data = bytes(blob)
    head = data[: len(MAGIC)]
    if not head or MAGIC[: len(head)] != head:  # a prefix of the magic is merely truncated
        raise StateFormatError("not a trafficstream state (bad magic)")
    if len(data) < ENVELOPE_SIZE:
        raise StateFormatError(f"state truncated ({len(data)} bytes)")
    env = read_envelope(data)
    if env is None:
        raise StateFormatError("state envelope corrupt (CRC mismatch)")
    if env.kind != kind:
        raise StateFormatError(f"expected a {kind} state, got a {env.kind} state")
    if env.version != FORMAT_VERSION:
        raise StateFormatError(f"state format v{env.version}; this build reads v{FORMAT_VERSION}")
    body = data[ENVELOPE_SIZE:]
    if zlib.crc32(body) != env.body_crc:
        raise StateFormatError("state body corrupt (CRC mismatch)")
    try:
        (n,) = _JSON_LEN.unpack_from(body)
        inflater = zlib.decompressobj()
        text = inflater.decompress(body[_JSON_LEN.size : _JSON_LEN.size + n], _MAX_JSON)
        if inflater.unconsumed_tail or not inflater.eof:
            raise StateFormatError("state document too large or truncated")
        arena = memoryview(body)[_JSON_LEN.size + n :]
        doc = json.loads(text, object_hook=lambda obj: _array(obj, arena) if _ARRAY_KEY in obj else obj)
    except StateFormatError:
        raise
    except (zlib.error, struct.error, ValueError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise StateFormatError(f"state body unreadable: {exc}") from None
    return env, doc


def _array(obj: dict[str, Any], arena: memoryview) -> np.ndarray:
    if len(obj) != 1:
        raise ValueError(f"array reference with extra keys {sorted(obj)}")
    dtype, shape, offset = obj[_ARRAY_KEY]
    if dtype not in DTYPES or not all(isinstance(d, int) and d >= 0 for d in shape) or offset < 0:
        raise ValueError(f"bad array reference {obj[_ARRAY_KEY]!r}")
    dt = np.dtype(dtype)
    count = int(np.prod(shape, dtype=np.int64))
    if offset + count * dt.itemsize > len(arena):
        raise ValueError("array reference beyond the arena")
    # a copy: writable, aligned, and independent of the decompressed buffer
    return np.frombuffer(arena, dtype=dt, count=count, offset=offset).reshape(shape).copy()


__all__ = [
    "DTYPES",
    "ENVELOPE_SIZE",
    "FORMAT_VERSION",
    "KINDS",
    "MAGIC",
    "Envelope",
    "StateFormatError",
    "decode",
    "encode",
    "read_envelope",
]
