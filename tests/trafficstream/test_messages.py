import json

import pytest

from trafficstream.errors import MessageError
from trafficstream.messages import (
    REASON_MALFORMED,
    REASON_UNSUPPORTED_VERSION,
    FrameRef,
    dead_letter,
)
from trafficstream.results import parse_result


def _ref(**kw) -> FrameRef:
    base = dict(
        camera_id="motorway-overpass",
        source_uri="file:///work/shared/data/videos/highway_overpass_1280x720.mp4",
        frame_index=12345,
        pts_s=411.746666,
        capture_ts=1763690000.123456,
        ingest_ts=1763690000.130001,
        width=1280,
        height=720,
    )
    base.update(kw)
    return FrameRef(**base)


def test_round_trip_and_size_budget():
    ref = _ref()
    raw = ref.to_json()
    assert FrameRef.from_json(raw) == ref
    assert len(raw) <= 300, len(raw)
    assert b"image" not in raw and b"pixels" not in raw


@pytest.mark.parametrize(
    "raw, reason, needle",
    [
        (b"not json", REASON_MALFORMED, "not JSON"),
        (b"[1,2]", REASON_MALFORMED, "object"),
        (None, REASON_MALFORMED, "empty"),
        (b'{"v": 2}', REASON_UNSUPPORTED_VERSION, "v=2"),
        (b"\xff\xfe", REASON_MALFORMED, "not JSON"),
    ],
)
def test_malformed_messages_have_reasons(raw, reason, needle):
    with pytest.raises(MessageError) as err:
        FrameRef.from_json(raw)
    assert err.value.reason == reason
    assert needle in err.value.detail


@pytest.mark.parametrize(
    "field, value, needle",
    [
        ("frame_index", -1, "invalid value"),
        ("frame_index", True, "wrong type"),
        ("frame_index", "3", "wrong type"),
        ("camera_id", "../etc", "invalid value"),
        ("width", 0, "invalid value"),
        ("pts_s", -0.5, "invalid value"),
    ],
)
def test_field_validation(field, value, needle):
    obj = json.loads(_ref().to_json())
    obj[field] = value
    with pytest.raises(MessageError) as err:
        FrameRef.from_json(json.dumps(obj))
    assert err.value.reason == REASON_MALFORMED
    assert field in err.value.detail and needle in err.value.detail


def test_missing_field_named():
    obj = json.loads(_ref().to_json())
    del obj["source_uri"]
    with pytest.raises(MessageError, match="missing field 'source_uri'"):
        FrameRef.from_json(json.dumps(obj))


def test_dead_letter_keeps_payload_and_origin():
    rec = json.loads(
        dead_letter(
            "unknown_camera",
            "camera 'x' unknown",
            b'{"camera_id":"x"}',
            camera_id="x",
            topic="frames",
            partition=1,
            offset=42,
            ts=1.0,
        )
    )
    assert rec["reason"] == "unknown_camera"
    assert rec["payload"] == '{"camera_id":"x"}'
    assert rec["source"] == {"topic": "frames", "partition": 1, "offset": 42}


def test_parse_result_types():
    assert parse_result(b'{"v":1,"type":"frame","camera_id":"a"}')["camera_id"] == "a"
    with pytest.raises(MessageError):
        parse_result(b'{"v":1,"type":"nope"}')


@pytest.mark.parametrize(
    "raw",
    [
        b"[" * 50_000 + b"]" * 50_000,  # deep nesting: RecursionError inside json
        b'{"v":1,"frame_index":' + b"1" * 10_000 + b"}",  # int beyond Python's digit limit: ValueError
    ],
)
def test_parser_never_raises_anything_but_message_error(raw):
    with pytest.raises(MessageError) as err:
        FrameRef.from_json(raw, max_bytes=10**6)
    assert err.value.reason == REASON_MALFORMED
    with pytest.raises(MessageError):
        parse_result(raw)


def test_size_cap():
    raw = _ref().to_json()
    with pytest.raises(MessageError) as err:
        FrameRef.from_json(raw, max_bytes=len(raw) - 1)
    assert err.value.reason == "message_too_large"


@pytest.mark.parametrize(
    "field, value",
    [
        ("frame_index", 2**63),
        ("capture_ts", 1e300),
        ("ingest_ts", 0.0),
        ("pts_s", 1e9),
        ("source_uri", "a\ud800b"),
        ("source_uri", "x" * 5000),
        ("capture_ts", 10**400),
    ],
)
def test_bounds(field, value):
    obj = json.loads(_ref().to_json())
    obj[field] = value
    with pytest.raises(MessageError) as err:
        FrameRef.from_json(json.dumps(obj))
    assert err.value.reason == REASON_MALFORMED and field in err.value.detail
    err.value.detail.encode("utf-8")  # always encodable, whatever the input held


def test_dead_letter_keeps_non_utf8_payload_exactly():
    import base64

    raw = b"\xff\x00\xc3"
    rec = json.loads(dead_letter("malformed_message", "bad \ud800 detail", raw))
    assert rec["payload"] == "base64:" + base64.b64encode(raw).decode()
    assert "\\ud800" in rec["detail"]
