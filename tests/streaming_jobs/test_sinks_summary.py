"""What the driver reads of a micro-batch (streaming_jobs/sinks.py): results, positions, load-shedding counts."""

from __future__ import annotations

import json

import pyarrow as pa

from trafficstream.streaming_jobs.sinks import analysis_counts, positions, summary_rows


def _row(kind: str, cam: str | None, fi: int | None, payload: dict | None, message: str | None = None) -> dict:
    return {
        "kind": kind,
        "camera_id": cam,
        "frame_index": fi,
        "capture_ts": None if fi is None else 1000.0 + fi,
        "payload": None if payload is None else json.dumps(payload),
        "message": message,
    }


def test_summary_counts_analysis_and_positions_per_camera():
    rows = [
        _row("frame", "a", 1, {"analysis": "detected", "stride": 1, "kafka_partition": 0, "kafka_offset": 10}, "m1"),
        _row("frame", "a", 2, {"analysis": "predicted", "stride": 2, "kafka_partition": 0, "kafka_offset": 11}, "m2"),
        _row("frame", "a", 3, {"analysis": "skipped", "stride": 3, "kafka_partition": 0, "kafka_offset": 12}),
        _row("frame", "b", 7, {"kafka_partition": 1, "kafka_offset": 5}, "m3"),  # before strides: detected
        _row("dead", "b", 8, {"kafka_partition": 1, "kafka_offset": 6}, "dead-letter json"),
        _row("track", "a", None, {"track_id": 1}),
        _row("frame", "c", 1, None),  # an unparseable payload does not fail the batch
    ]
    summary = summary_rows(pa.Table.from_pylist(rows))
    assert [r["message"] for r in summary] == ["m1", "m2", None, "m3", None, None, None]  # frames' results only
    counts = analysis_counts(summary)
    assert counts["a"] == {"detected": 1, "predicted": 1, "skipped": 1, "stride": 3}
    assert counts["b"] == {"detected": 1, "predicted": 0, "skipped": 0, "stride": 1}
    assert sorted(positions(summary)) == [("a", 0, 12, 1003.0), ("b", 1, 6, 1008.0)]


def test_merge_bound_is_per_camera_minimum_less_a_margin_and_refuses_what_it_cannot_bound():
    from trafficstream.streaming_jobs import table_rows
    from trafficstream.streaming_jobs.sinks import merge_bound

    def tracks(rows: list[dict]):
        return table_rows.tracks(pa.Table.from_pylist(rows))

    rows = [
        _row("track", "a", None, {"track_id": 1, "first_seen_ts": 1000.0}),
        _row("track", "a", None, {"track_id": 2, "first_seen_ts": 900.5}),
        _row("track", "b", None, {"track_id": 1, "first_seen_ts": 2000.0}),
        _row("frame", "c", 1, {"first_seen_ts": 1.0}),  # other kinds do not count
    ]
    bound = merge_bound(tracks(rows), "first_seen_ts", margin_s=60)
    assert bound is not None and bound.column == "first_seen_ts"
    assert bound.low_us == {"a": 840_500_000, "b": 1_940_000_000}
    # an event start interpolated between frames: whole microseconds, rounded down (never after the row's)
    fine = [_row("event", "a", None, {"start_ts": 1764531585.01666689})]
    bound = merge_bound(table_rows.events(pa.Table.from_pylist(fine)), "start_ts", margin_s=60)
    assert bound is not None and 0 <= 1764531525.01666689 - bound.low_us["a"] / 1e6 < 2e-6
    missing = rows + [_row("track", "b", None, {"track_id": 3, "first_seen_ts": None})]
    assert merge_bound(tracks(missing), "first_seen_ts") is None
    hostile = [_row("track", "x' OR 1=1 --", None, {"first_seen_ts": 5.0})]
    assert merge_bound(tracks(hostile), "first_seen_ts") is None
    assert merge_bound(tracks(rows[3:]), "first_seen_ts") is None
