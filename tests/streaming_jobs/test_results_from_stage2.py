"""Contracts of what the real stage 2 emits, without Spark: every results-topic message the job builds from a
stage-2 run (frames in ``track_camera``, violations in the evidence step, camera events in the sinks) is valid
under the JSON Schema and ``validate_message``, and every stage-2 payload has exactly the fields of its
payload schema (derived from the table declarations)."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import pytest

from trafficstream import results
from trafficstream.config import settings_to_json
from trafficstream.streaming_jobs import evidence, schemas
from trafficstream.streaming_jobs.schemas import (
    KIND_DEAD,
    KIND_FLOW,
    KIND_FRAME,
    KIND_HEALTH,
    KIND_TRACK,
    KIND_VIOLATION,
)
from trafficstream.streaming_jobs.tracking import STATE_VERSION

jsonschema = pytest.importorskip("jsonschema")
PAYLOADS = {
    KIND_FRAME: schemas.FRAME_PAYLOAD,
    KIND_TRACK: schemas.TRACK_PAYLOAD,
    KIND_FLOW: schemas.FLOW_PAYLOAD,
    KIND_VIOLATION: schemas.VIOLATION_PAYLOAD,
    KIND_HEALTH: schemas.HEALTH_PAYLOAD,
    KIND_DEAD: schemas.DEAD_PAYLOAD,
}


_RUN: list[tuple[str, pd.DataFrame]] = []  # one stage-2 run shared by the tests of this module


@pytest.fixture
def stage2(synth) -> tuple[str, pd.DataFrame]:
    """Three micro-batches of a speeding car and a truck (a violation), a dead stage-1 row, then a camera
    whose stored state is corrupt (a state reset)."""
    if not _RUN:
        _RUN.append(_run(synth))
    return _RUN[0]


def _run(synth: Any) -> tuple[str, pd.DataFrame]:
    cars = [synth.Car(0, 60, 300, 130.0), synth.Car(5, 1200, 500, -80.0, class_id=7)]
    settings_json = settings_to_json(synth.make_settings())
    state = synth.FakeGroupState()
    outs = [synth.run_batch(settings_json, synth.scene_rows(cars, range(k, k + 20)), state) for k in range(0, 60, 20)]
    dead = synth.frame_df(
        [synth.stage1_row(None, status="dead", reason="malformed_message", detail="not JSON", payload="{nope")]
    )
    outs.append(synth.run_batch(settings_json, dead, state))
    corrupt = synth.FakeGroupState((STATE_VERSION, b"\x00garbage"))
    outs.append(synth.run_batch(settings_json, synth.scene_rows(cars, range(60, 70)), corrupt))
    out = pd.concat([o.astype(object) for o in outs], ignore_index=True)  # object: no all-NA dtype guessing
    assert {KIND_FRAME, KIND_TRACK, KIND_FLOW, KIND_VIOLATION, KIND_HEALTH, KIND_DEAD} <= set(out.kind)
    return settings_json, out


@pytest.fixture(scope="module")
def validator() -> Any:
    return jsonschema.Draft202012Validator(results.json_schema())


def _valid(value: str, validator: Any) -> dict[str, Any]:
    msg = json.loads(value)
    validator.validate(msg)
    results.validate_message(msg)
    assert results.parse_result(value.encode("utf-8")) == msg
    return msg


def test_frame_messages_of_stage2_are_valid(stage2, validator) -> None:
    _, out = stage2
    frames = out[out.kind == KIND_FRAME]
    assert len(frames) == 70
    for value, payload in zip(frames.message, frames.payload, strict=True):
        msg = _valid(value, validator)
        vehicles = json.loads(payload)["vehicles"]
        assert [v["id"] for v in msg["vehicles"]] == [v["track_id"] for v in vehicles]
        assert msg["counts"]["in_roi"] == len(vehicles)
    assert any(v["kmh"] is not None for m in frames.message for v in json.loads(m)["vehicles"])


def test_violation_messages_of_the_evidence_step_are_valid(stage2, validator, tmp_path, monkeypatch) -> None:
    settings_json, out = stage2
    monkeypatch.setattr(evidence, "_evidence_root", lambda _: tmp_path)
    rows = out[out.kind == KIND_VIOLATION]
    assert len(rows) >= 1
    (rendered,) = list(evidence.render_evidence(settings_json, iter([rows])))  # the source is not readable here
    assert rendered.evidence_uri.isna().all()
    for value, payload in zip(rendered.message, rendered.payload, strict=True):
        msg = _valid(value, validator)
        p = json.loads(payload)
        assert (msg["track_id"], msg["kmh"], msg["limit_kmh"]) == (p["track_id"], round(p["speed_kmh"], 1), 100.0)


def test_camera_event_messages_of_the_sinks_are_valid(stage2, validator) -> None:
    pytest.importorskip("delta")
    from trafficstream.streaming_jobs.sinks import camera_event_result

    _, out = stage2
    events = out[out.kind == KIND_HEALTH]
    assert len(events) == 1
    for row in events.itertuples(index=False):
        fields = {**json.loads(row.payload), "camera_id": row.camera_id, "processed_ts": row.processed_ts}
        msg = _valid(camera_event_result(fields, batch_id=4), validator)
        assert (msg["event"], msg["cause"], msg["batch_id"]) == ("state_reset", "corrupt", 4)


def test_stage2_payloads_have_exactly_their_schemas_fields(stage2) -> None:
    _, out = stage2
    for kind, struct in PAYLOADS.items():
        declared = set(struct.fieldNames())
        for payload in out.loc[out.kind == kind, "payload"]:
            p = json.loads(payload)
            optional = {"state_bytes"} if kind == KIND_FRAME else set()  # on a camera's last frame of a batch
            assert declared - optional <= set(p) <= declared, (kind, set(p) ^ declared)
            for v in p.get("vehicles", []) if kind == KIND_FRAME else []:
                assert set(v) == set(schemas.VEHICLE.fieldNames())


def test_a_violation_carries_every_box_of_its_frame_for_the_evidence_pixelation(stage2) -> None:
    """The evidence step pixelates the other road users of the violation's frame: stage 2 hands it every
    detection of that frame, the offender's own box among them."""
    _, out = stage2
    violations = [json.loads(p) for p in out.loc[out.kind == KIND_VIOLATION, "payload"]]
    assert violations
    for p in violations:
        others = p["others"]
        assert all(len(b) == 4 for b in others)
        offender = [p["x1"], p["y1"], p["x2"], p["y2"]]
        assert any(max(abs(a - b) for a, b in zip(box, offender, strict=True)) < 0.2 for box in others)
