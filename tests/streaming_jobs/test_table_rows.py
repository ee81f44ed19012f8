"""The driver-side derivation of table rows (streaming_jobs/table_rows.py) from a real stage-2 run, without
Spark: every table gets exactly its declared columns and types, and the values the payloads carry."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import pandas as pd
import pyarrow as pa
import pytest
from pyspark.sql.pandas.types import to_arrow_schema

from trafficstream import tables
from trafficstream.config import settings_to_json
from trafficstream.streaming_jobs import table_rows
from trafficstream.streaming_jobs.schemas import (
    KIND_DEAD,
    KIND_FLOW,
    KIND_FRAME,
    KIND_TRACK,
    KIND_VIOLATION,
    SPOOLED,
)


@pytest.fixture
def spooled(synth) -> pa.Table:
    """Two micro-batches (ids 7 and 8) of a speeding car and a truck, and a dead stage-1 row, as the
    committer reads them from the spool."""
    cars = [synth.Car(0, 60, 300, 130.0), synth.Car(5, 1200, 500, -80.0, class_id=7)]
    settings_json = settings_to_json(synth.make_settings())
    state = synth.FakeGroupState()
    outs = []
    for batch_id, frames in ((7, range(0, 30)), (8, range(30, 60))):
        out = synth.run_batch(settings_json, synth.scene_rows(cars, frames), state)
        outs.append(out.assign(batch_id=batch_id))
    dead = synth.frame_df(
        [synth.stage1_row(None, status="dead", reason="malformed_message", detail="not JSON", payload="{nope")]
    )
    outs.append(synth.run_batch(settings_json, dead, state).assign(batch_id=8))
    df = pd.concat([o.astype(object) for o in outs], ignore_index=True)
    return pa.Table.from_pandas(df, schema=to_arrow_schema(SPOOLED), preserve_index=False)


def _payloads(rows: pa.Table, kind: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return table_rows.parsed(rows, kind)


def test_every_table_has_exactly_its_declared_columns_and_types(spooled):
    derived = table_rows.derive(spooled)
    assert set(derived) == set(tables.ALL_TABLES) - {tables.VIOLATIONS}
    frames = derived[tables.FRAMES]
    for name, t in derived.items():
        assert t.schema == table_rows.arrow_schema(name), name
    assert frames.num_rows == len(_payloads(spooled, KIND_FRAME)) == 60
    assert derived[tables.DEAD_LETTERS].num_rows == 1


def test_frame_and_detection_values_come_from_the_row_and_its_payload(spooled):
    frames, detections = table_rows.frames(spooled)
    first = {r["frame_index"]: r for r in frames.to_pylist()}
    for r, p in _payloads(spooled, KIND_FRAME):
        row = first[r["frame_index"]]
        assert row["camera_id"] == r["camera_id"] and row["batch_id"] == r["batch_id"]
        assert abs(row["capture_ts"].timestamp() - r["capture_ts"]) < 1e-5
        assert row["capture_ts"].tzinfo is not None
        assert row["event_date"] == datetime.fromtimestamp(r["capture_ts"], timezone.utc).date()
        assert row["vehicles"] == len(p["vehicles"])
        assert row["analysis"] == p["analysis"] and row["kafka_offset"] == p["kafka_offset"]
    # detections: one row per vehicle of a detected frame, booleans back from their "true"/"false" text
    expected = sum(len(p["vehicles"]) for _, p in _payloads(spooled, KIND_FRAME) if p["analysis"] == "detected")
    assert detections.num_rows == expected > 0
    over = {
        v["over_limit"] for _, p in _payloads(spooled, KIND_FRAME) if p["analysis"] == "detected" for v in p["vehicles"]
    }
    assert over == {"true", "false"}  # the speeding car, and readings before its speed is known
    assert set(detections.column("over_limit").to_pylist()) == {True, False}


def test_merge_tables_keep_one_row_per_key_the_latest(spooled):
    tracks = table_rows.tracks(spooled).to_pylist()
    keys = [(r["camera_id"], r["track_id"]) for r in tracks]
    assert len(keys) == len(set(keys)) == 2
    reported = [p for _, p in _payloads(spooled, KIND_TRACK)]
    assert len(reported) > len(tracks)  # each batch reported both tracks: the commit keeps the latest
    for t in tracks:
        latest = max(p["last_frame"] for p in reported if p["track_id"] == t["track_id"])
        assert t["last_frame"] == latest and t["updated_batch"] == 8
    flow = table_rows.flow(spooled).to_pylist()
    reports = [(r, p) for r, p in _payloads(spooled, KIND_FLOW)]
    assert len({(r["minute"], r["class_name"]) for r in flow}) == len(flow) > 0
    for f in flow:
        same = [p["vehicles"] for _, p in reports if p["class_name"] == f["class_name"]]
        assert f["vehicles"] == max(same)


def test_violations_after_the_evidence_step(spooled):
    vio = spooled.filter(pa.compute.equal(spooled.column("kind"), KIND_VIOLATION))
    assert vio.num_rows
    rendered = vio.append_column("evidence_uri", pa.array(["file:///e.jpg"] * vio.num_rows)).append_column(
        "evidence_clip_uri", pa.array([None] * vio.num_rows, pa.string())
    )
    out = table_rows.violations(rendered)
    assert out.schema == table_rows.arrow_schema(tables.VIOLATIONS)
    assert out.column("evidence_uri").to_pylist() == ["file:///e.jpg"] * vio.num_rows
    assert all(s is not None and s > 100 for s in out.column("speed_kmh").to_pylist())


def test_dead_letters_keep_reason_and_original_payload(spooled):
    (row,) = table_rows.dead_letters(spooled).to_pylist()
    assert row["reason"] == "malformed_message" and row["payload"] == "{nope" and row["batch_id"] == 8
    assert len(_payloads(spooled, KIND_DEAD)) == 1


def test_out_of_range_or_mistyped_values_become_null_not_a_failed_commit():
    stage2 = {"camera_id": "c", "frame_index": 1, "pts_s": 0.0, "capture_ts": float("nan"), "batch_id": 1}
    b = table_rows.builder(tables.FRAMES)
    row = b.row(stage2, {"raw_detections": 2**40, "kafka_offset": "x", "vehicles": None})
    t = b.arrow([row])
    assert t.num_rows == 1
    r = t.to_pylist()[0]
    assert r["capture_ts"] is None and r["event_date"] is None and r["vehicles"] is None
    assert r["raw_detections"] is None and r["kafka_offset"] is None


def test_only_the_declared_expression_forms_compile():
    get = table_rows.compile_expr("to_date(timestamp_seconds(p.t))", "p")
    assert str(get({}, {"t": 86400.5})) == "1970-01-02"
    assert table_rows.compile_expr("(p.ended = 'true')", "p")({}, {"ended": "true"}) is True
    for bad in ("upper(camera_id)", "q.field", "a + b"):
        with pytest.raises(ValueError):
            table_rows.compile_expr(bad, "p")
