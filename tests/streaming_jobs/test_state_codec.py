"""The per-camera state format (models/state_codec.py): explicit, versioned, deterministic, no pickle."""

from __future__ import annotations

import json
import struct
import zlib
from typing import Any

import numpy as np
import pytest

from trafficstream.models import state_codec
from trafficstream.models.homography import RoadPlane
from trafficstream.models.state_codec import (
    ENVELOPE_SIZE,
    FORMAT_VERSION,
    StateFormatError,
    decode,
    encode,
    read_envelope,
)
from trafficstream.streaming_jobs.tracking import STATE_VERSION, CameraState


def _doc() -> dict[str, Any]:
    rng = np.random.default_rng(0)
    return {
        "name": "cam-1",
        "n": 3,
        "x": 0.1,
        "none": None,
        "flag": True,
        "pool": rng.normal(size=(5, 8)).astype(np.float16),
        "tracks": [{"mean": rng.normal(size=8), "cov": np.eye(8, dtype=np.float32), "id": 7}],
        "ints": np.arange(6, dtype=np.int64).reshape(2, 3),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.float32(0.5),
        "count": np.int64(4),
        "pairs": [["truck", 2], ["car", 5]],  # order that matters lives in lists
    }


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and np.array_equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def test_round_trip_keeps_values_dtypes_and_shapes() -> None:
    doc = _doc()
    blob = encode("camera", doc, next_id=42, resets=3)
    env, back = decode(blob, "camera")
    assert (env.kind, env.version, env.next_id, env.resets) == ("camera", FORMAT_VERSION, 42, 3)
    expected = {**doc, "scalar": 0.5, "count": 4}
    assert _equal(expected, back)
    assert back["pool"].flags.writeable and back["tracks"][0]["mean"].dtype == np.float64


def test_encoding_is_deterministic_and_canonical() -> None:
    doc = _doc()
    reordered = dict(reversed(list(doc.items())))
    assert encode("camera", doc) == encode("camera", _doc()) == encode("camera", reordered)
    big_endian = {**doc, "ints": doc["ints"].astype(">i8")}
    assert encode("camera", big_endian) == encode("camera", doc)  # stored little-endian, whatever the input


@pytest.mark.parametrize("value", [float("nan"), float("inf"), np.array([object()]), {1, 2}, b"raw"])
def test_unencodable_values_raise_before_writing(value: Any) -> None:
    with pytest.raises(ValueError):
        encode("camera", {"v": value})


def test_layout_is_the_documented_one() -> None:
    """An independent reader written from the module docstring alone."""
    blob = encode("tracker", {"a": [1, 2], "arr": np.arange(3, dtype=np.float32)}, next_id=9, resets=1)
    magic, kind, version, next_id, resets, body_crc = struct.unpack_from("<4s4sHqII", blob)
    (env_crc,) = struct.unpack_from("<I", blob, 26)
    assert (magic, kind, version, next_id, resets) == (b"TSST", b"TRKR", FORMAT_VERSION, 9, 1)
    assert ENVELOPE_SIZE == 30 and env_crc == zlib.crc32(blob[:26]) and body_crc == zlib.crc32(blob[30:])
    (n,) = struct.unpack_from("<I", blob, 30)
    doc = json.loads(zlib.decompress(blob[34 : 34 + n]))
    dtype, shape, offset = doc["arr"]["$nd"]
    arena = blob[34 + n :]
    assert doc["a"] == [1, 2] and (dtype, shape) == ("<f4", [3])
    assert np.frombuffer(arena, dtype, 3, offset).tolist() == [0.0, 1.0, 2.0]


def _resign(blob: bytes, **fields: Any) -> bytes:
    names = ("magic", "kind", "version", "next_id", "resets", "body_crc")
    values = dict(zip(names, struct.unpack_from("<4s4sHqII", blob), strict=True))
    head = struct.pack("<4s4sHqII", *{**values, **fields}.values())
    return head + struct.pack("<I", zlib.crc32(head)) + blob[ENVELOPE_SIZE:]


def test_unreadable_blobs_raise_one_error_type() -> None:
    blob = encode("camera", _doc(), next_id=5)
    cases = {
        "magic": [b"", b"nonsense", b"\x80\x05pickle" + blob],
        "truncated": [blob[:3], blob[: ENVELOPE_SIZE - 1]],
        "envelope corrupt": [blob[:12] + b"\xff" + blob[13:]],
        "body corrupt": [blob[:-4] + b"\x00\x00\x00\x00", blob[:-1]],
        "expected a camera state": [encode("violations", {})],
        "format v1;": [_resign(blob, version=1)],
    }
    for match, blobs in cases.items():
        for bad in blobs:
            with pytest.raises(StateFormatError, match=match):
                decode(bad, "camera")
    # well-formed envelope and CRC around a malformed body / document
    body = struct.pack("<I", 3) + b"abc"
    head = struct.pack("<4s4sHqII", b"TSST", b"CAMS", FORMAT_VERSION, 5, 0, zlib.crc32(body))
    with pytest.raises(StateFormatError, match="unreadable"):
        decode(head + struct.pack("<I", zlib.crc32(head)) + body, "camera")
    text = zlib.compress(b'{"a":{"$nd":["<f8",[1000],0]}}')
    body = struct.pack("<I", len(text)) + text + bytes(16)
    head = struct.pack("<4s4sHqII", b"TSST", b"CAMS", FORMAT_VERSION, 5, 0, zlib.crc32(body))
    with pytest.raises(StateFormatError, match="beyond the arena"):
        decode(head + struct.pack("<I", zlib.crc32(head)) + body, "camera")
    assert issubclass(StateFormatError, ValueError)


def test_envelope_survives_what_the_body_does_not() -> None:
    blob = encode("camera", _doc(), next_id=1234, resets=2)
    for readable in (blob, blob[:-5] + b"xxxxx", blob[: ENVELOPE_SIZE + 3], _resign(blob, version=7)):
        env = read_envelope(readable)
        assert env is not None and (env.kind, env.next_id, env.resets) == ("camera", 1234, 2)
    assert read_envelope(_resign(blob, version=7)).version == 7
    for unreadable in (None, 12, b"", b"\x80\x05garbage", blob[:29], blob[:5] + b"\x00" + blob[6:]):
        assert read_envelope(unreadable) is None


def test_camera_state_blob_round_trips_byte_for_byte(synth, group_state) -> None:
    settings = synth.make_settings()
    state = group_state()
    cars = [synth.Car(0, 100, 200, 90.0), synth.Car(3, 1100, 450, -70.0, class_id=7)]
    synth.run_batch(settings, synth.scene_rows(cars, range(30)), state)
    version, blob = state.get
    assert version == STATE_VERSION == FORMAT_VERSION
    camera = settings.camera(synth.CAMERA_ID)
    plane = RoadPlane.from_calibration(camera.calibration)
    restored = CameraState.from_bytes(blob, settings, camera, plane)
    assert restored.to_bytes() == blob
    env, doc = decode(blob, "camera")
    assert env.next_id == restored.next_track_id > 1
    assert {
        "fps",
        "stride",
        "last_detected_index",
        "last_frame_index",
        "last_pts_s",
        "error_streak",
        "tracks",
        "flow",
        "tracker",
        "kinematics",
        "violations",
        "lines",  # the counting lines' state (None: the camera has none)
        "events",
        "line_counts",
    } == set(doc)
    assert doc["lines"] is None and doc["events"] is None  # this camera has no lines, lanes or zones
    assert doc["tracker"]["pool"].dtype == np.float16  # stage 1's float16 embeddings: stored losslessly as such
    assert doc["last_frame_index"] == 29 and len(doc["tracks"]) == 2
    assert state_codec.KINDS["camera"] == blob[4:8]
