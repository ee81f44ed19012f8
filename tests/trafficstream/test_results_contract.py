"""The results-topic contract: builders, the JSON Schema and the Python validator agree.

The messages the real stage 2 / evidence step / sinks build are validated in
``tests/streaming_jobs/test_results_from_stage2.py`` (it needs that folder's stage-1 fixtures).
"""

from __future__ import annotations

import copy
import json
import math
from typing import Any

import pytest

from trafficstream import docs, results
from trafficstream.errors import MessageError

jsonschema = pytest.importorskip("jsonschema")
T0 = 1_715_670_000.0


@pytest.fixture(scope="module")
def validator():
    schema = results.json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def built() -> list[dict[str, Any]]:
    """Builder outputs beyond the documented examples: nulls, empty frames, a reset without a known cause."""
    empty = results.frame_message(
        camera_id="cam-1",
        frame_index=0,
        pts_s=0.0,
        capture_ts=T0,
        processed_ts=T0 + 0.4,
        vehicles=[],
        class_counts={},
        flow_minute=T0,
        flow_counts={},
        ms={"decode": math.nan, "detect": None, "embed": 0.0, "track": 0.01, "speed": 0.0},
    )
    unknown_speed = results.frame_message(
        camera_id="cam-1",
        frame_index=7,
        pts_s=0.28,
        capture_ts=T0 + 0.28,
        processed_ts=T0 + 1,
        vehicles=[
            results.frame_vehicle(
                track_id=1_715_670_000_000_000,
                class_name="7",
                confidence=None,
                box=(-3.2, 0, 1e4, 720),
                speed_kmh=math.inf,
                over_limit=False,
            )
        ],
        class_counts={"7": 1},
        flow_minute=T0,
        flow_counts={"7": 1},
        ms={"decode": 1.0},
    )
    no_evidence = results.violation_message(
        camera_id="cam-1",
        track_id=2,
        frame_index=9,
        capture_ts=T0 + 0.36,
        class_name="truck",
        speed_kmh=88.0,
        limit_kmh=80,
        over_s=0.5,
        evidence_uri=None,
        box=(1, 2, 3, 4),
    )
    idle = results.batch_health_message(
        batch_id=0, batch_ms=0.0, frames=0, ts=T0, lag={"cam-1": -2}, delay_s={}, counts={}
    )
    reset = results.camera_event_message(camera_id="cam-1", batch_id=3, ts=T0, event="state_reset")
    return [*docs.examples().values(), empty, unknown_speed, no_evidence, idle, reset]


def test_builder_outputs_satisfy_the_schema_the_validator_and_round_trip(validator):
    for msg in built():
        validator.validate(msg)
        results.validate_message(msg)
        assert results.parse_result(results.encode(msg)) == msg
        assert results.parse_result(results.encode(msg).decode("utf-8")) == msg


def test_each_type_has_its_own_schema(validator):
    examples = docs.examples()
    for mt in results.MESSAGE_TYPES:
        own = jsonschema.Draft202012Validator(results.json_schema(mt.name))
        for name, msg in examples.items():
            assert own.is_valid(msg) == (name == mt.name), (mt.name, name)
            if name == mt.name:
                assert results.message_type(msg) is mt
    for mt in results.MESSAGE_TYPES:  # every declared field is required of a producer
        assert set(results.json_schema(mt.name)["required"]) == {"v", "type", *(f.name for f in mt.fields)}


def _set(msg: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(msg)
    *parents, last = path.split(".")
    target: Any = out
    for p in parents:
        target = target[int(p)] if isinstance(target, list) else target[p]
    if value is _DROP:
        del target[last]
    else:
        target[int(last) if isinstance(target, list) else last] = value
    return out


_DROP = object()
BROKEN = [  # (example, field path, value): each breaks the contract
    ("frame", "v", 2),
    ("frame", "v", True),
    ("frame", "v", "1"),
    ("frame", "type", "frames"),
    ("frame", "camera_id", "bad id!"),
    ("frame", "camera_id", None),
    ("frame", "frame_index", -1),
    ("frame", "frame_index", 1.5),
    ("frame", "frame_index", True),
    ("frame", "frame_index", 2**40),
    ("frame", "capture_ts", 5.0),
    ("frame", "capture_ts", "2024-05-14"),
    ("frame", "pts_s", None),
    ("frame", "vehicles", "none"),
    ("frame", "vehicles.0.box", [1, 2, 3]),
    ("frame", "vehicles.0.kmh", -4.0),
    ("frame", "vehicles.0.over", "false"),
    ("frame", "vehicles.0.id", 0),
    ("frame", "vehicles.0.conf", 1.5),
    ("frame", "counts.car", -1),
    ("frame", "counts.in_roi", None),
    ("frame", "flow.minute", 0),
    ("frame", "ms.detect", "fast"),
    ("frame", "vehicles", _DROP),
    ("frame", "ms", _DROP),
    ("violation", "track_id", None),
    ("violation", "kmh", None),
    ("violation", "evidence_uri", 5),
    ("violation", "box", None),
    ("violation", "limit_kmh", _DROP),
    ("batch_health", "lag.motorway-overpass", -1),
    ("batch_health", "lag", [1]),
    ("batch_health", "ts", None),
    ("batch_health", "delay_s", _DROP),
    ("camera_event", "event", None),
    ("camera_event", "next_track_id", 0),
    ("camera_event", "batch_id", _DROP),
]


@pytest.mark.parametrize(("name", "path", "value"), BROKEN, ids=[f"{n}.{p}={v!r}"[:60] for n, p, v in BROKEN])
def test_schema_and_validator_reject_the_same_violations(validator, name, path, value):
    msg = _set(docs.examples()[name], path, value)
    assert not validator.is_valid(msg)
    with pytest.raises(MessageError):
        results.validate_message(msg)


def test_producers_must_not_send_non_finite_numbers():
    msg = _set(docs.examples()["frame"], "pts_s", math.nan)
    with pytest.raises(MessageError):
        results.validate_message(msg)
    with pytest.raises(ValueError):
        results.encode(msg)
    for raw in (b'{"v":1,"type":"health","ts":NaN}', b'{"v":1,"type":"frame","capture_ts":Infinity}'):
        with pytest.raises(MessageError):
            results.parse_result(raw)


def test_consumers_tolerate_missing_and_unknown_fields():
    example = docs.examples()["frame"]
    newer = {**example, "lane_counts": {"1": 3}, "vehicles": [{**example["vehicles"][0], "lane": 2}]}
    assert results.parse_result(results.encode(newer)) == newer  # unknown fields kept, ignored
    older = {k: v for k, v in example.items() if k not in ("ms", "flow", "processed_ts")}
    assert results.parse_result(json.dumps(older)) == older
    with pytest.raises(MessageError):
        results.validate_message(older)  # but a producer must send them
    assert results.parse_result(b'{"v":1,"type":"frame","camera_id":"a"}')["camera_id"] == "a"


@pytest.mark.parametrize(
    "raw",
    [
        None,
        b"",
        b"null",
        b"[]",
        b"42",
        b'"frame"',
        b"{not json",
        b"\xff\xfe",
        b'{"type":"frame"}',
        b'{"v":1}',
        b'{"v":1,"type":"nope"}',
        b'{"v":1.0,"type":"frame"}',
        b'{"v":2,"type":"frame"}',
        b'{"v":1,"type":"frame","frame_index":' + b"9" * 5000 + b"}",
        b'{"v":1,"type":"frame","camera_id":"\\ud800"}',
        b'{"v":1,"type":"frame","vehicles":[' + b"[" * 5000 + b"]" * 5000 + b"]}",
        b'{"v":1,"type":"violation","box":[1,2,3,"4"]}',
        b'{"v":1,"type":"health","lag":{"a":1e400}}',
        b'{"v":1,"type":"health","event":"state_reset","resets":"2"}',
        b" " * (results.MAX_RESULT_BYTES + 1),
    ],
)
def test_parse_result_raises_message_error_and_nothing_else(raw):
    with pytest.raises(MessageError):
        results.parse_result(raw)


def test_the_version_and_types_are_stable():
    assert results.RESULT_VERSION == 1
    assert (results.RESULT_FRAME, results.RESULT_VIOLATION, results.RESULT_HEALTH) == ("frame", "violation", "health")
    assert (results.RESULT_CROSSING, results.RESULT_EVENT) == ("crossing", "event")
    assert [m.name for m in results.MESSAGE_TYPES] == [
        "frame",
        "violation",
        "crossing",
        "event",
        "batch_health",
        "camera_event",
    ]
