"""The job's driver loop helpers (streaming_jobs/vehicle_pipeline.py) on Spark's own progress documents."""

from __future__ import annotations

from trafficstream.streaming_jobs.vehicle_pipeline import offsets_behind


def _progress(*metrics: dict | None) -> dict:
    return {"batchId": 3, "numInputRows": 96, "sources": [{"description": "KafkaV2", "metrics": m} for m in metrics]}


def test_offsets_behind_reads_the_kafka_sources_backlog():
    assert offsets_behind(_progress({"maxOffsetsBehindLatest": "412", "avgOffsetsBehindLatest": "103.0"})) == 412
    assert offsets_behind(_progress({"maxOffsetsBehindLatest": "0"}, {"maxOffsetsBehindLatest": "7"})) == 7


def test_offsets_behind_is_zero_without_the_metric_or_with_junk():
    assert offsets_behind({"batchId": 0}) == 0
    assert offsets_behind(_progress(None, {})) == 0
    assert offsets_behind(_progress({"maxOffsetsBehindLatest": "n/a"})) == 0
