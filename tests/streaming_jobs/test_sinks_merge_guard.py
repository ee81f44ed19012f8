"""The sinks' MERGE guard on a real Delta table (shared SparkSession): a replayed batch changes nothing, a late
replay of an older batch never overwrites newer rows, and a flow count is never lowered."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import pytest

from trafficstream import tables
from trafficstream.config import settings_to_json
from trafficstream.streaming_jobs.sinks import BatchWriter

pytestmark = pytest.mark.integration
MINUTE = datetime(2026, 11, 30, 10, 0, tzinfo=timezone.utc)


@pytest.fixture
def writer(spark, settings_factory, tmp_path):
    s = settings_factory(create_topics=False, name="merge")
    w = BatchWriter(spark, s, settings_to_json(s), str(tmp_path / "chk"))
    try:
        yield w
    finally:
        w.close()


def _flow(spark, batch: int, vehicles: int):
    return spark.createDataFrame(
        [("cam", MINUTE, "car", vehicles, batch)],
        "camera_id string, minute timestamp, class_name string, vehicles long, updated_batch long",
    )


def _read(writer) -> list[tuple[int, int]]:
    df = pl.read_delta(writer.paths[tables.FLOW])
    return [(r["vehicles"], r["updated_batch"]) for r in df.to_dicts()]


def test_merge_guard(writer, spark):
    keys = ["camera_id", "minute", "class_name"]
    writer._sink_ms = {}
    writer._merge(_flow(spark, 1, 3), tables.FLOW, keys)
    assert _read(writer) == [(3, 1)]
    writer._merge(_flow(spark, 2, 5), tables.FLOW, keys)
    assert _read(writer) == [(5, 2)]
    writer._merge(_flow(spark, 2, 9), tables.FLOW, keys)  # the same batch again (a replay): no change
    assert _read(writer) == [(5, 2)]
    writer._merge(_flow(spark, 1, 3), tables.FLOW, keys)  # an older batch, late: never overwrites
    assert _read(writer) == [(5, 2)]
    greatest = {"vehicles": "greatest(t.vehicles, s.vehicles)"}
    writer._merge(_flow(spark, 3, 1), tables.FLOW, keys, set_=greatest)  # a reset camera recounting from 0
    assert _read(writer) == [(5, 3)]
    writer._merge(_flow(spark, 4, 7), tables.FLOW, keys, set_=greatest)
    assert _read(writer) == [(7, 4)]


def test_bounded_merge_updates_the_row_and_reads_only_the_cameras_times(writer, spark):
    """The bound from the batch's own rows (merge_bound) still finds the row to update; a row of another
    camera or an older minute is left alone (and a bound that excluded the matched row would insert a twin,
    which the row count would show)."""
    import json

    import pyarrow as pa

    from trafficstream.streaming_jobs.sinks import merge_bound

    keys = ["camera_id", "minute", "class_name"]
    writer._sink_ms = {}
    other = spark.createDataFrame(
        [("cam-2", MINUTE, "car", 4, 1)],
        "camera_id string, minute timestamp, class_name string, vehicles long, updated_batch long",
    )
    writer._merge(other, tables.FLOW, keys)
    writer._merge(_flow(spark, 1, 3), tables.FLOW, keys)
    payload = json.dumps({"minute_ts": MINUTE.timestamp(), "class_name": "car", "vehicles": 6})
    rows = pa.Table.from_pylist([{"kind": "flow", "camera_id": "cam", "payload": payload}])
    bound = merge_bound(rows, "flow", "minute_ts", "minute")
    assert bound is not None and "cam-2" not in bound
    writer._merge(_flow(spark, 2, 6), tables.FLOW, keys, bound=bound)
    df = pl.read_delta(writer.paths[tables.FLOW]).sort("camera_id")
    assert [(r["camera_id"], r["vehicles"], r["updated_batch"]) for r in df.to_dicts()] == [
        ("cam", 6, 2),
        ("cam-2", 4, 1),
    ]


def test_a_table_from_an_older_build_gains_the_declared_columns(spark, settings_factory):
    from pyspark.sql.types import StructType

    from trafficstream.streaming_jobs.sinks import TABLE_SCHEMAS, create_tables

    s = settings_factory(create_topics=False, name="migrate")
    schema, partitions = TABLE_SCHEMAS[tables.TRACKS]
    old = StructType([f for f in schema.fields if not f.name.startswith("passage_")])  # before passage speeds
    row = {"camera_id": "cam", "track_id": 1, "ended": False, "updated_batch": 3}
    data = [tuple(row.get(f.name) for f in old.fields)]
    spark.createDataFrame(data, old).write.format("delta").partitionBy(*partitions).save(s.table_uri(tables.TRACKS))
    create_tables(spark, s)
    df = pl.read_delta(s.table_uri(tables.TRACKS))
    assert {"passage_speed_kmh", "passage_uncertainty_kmh", "passage_section"} <= set(df.columns)
    assert df.height == 1 and df["passage_speed_kmh"].to_list() == [None]  # old rows: null in the new columns
