"""The sinks' MERGE guard on a real Delta table (shared SparkSession): a replayed batch changes nothing, a late
replay of an older batch never overwrites newer rows, and a flow count is never lowered."""

from __future__ import annotations

from datetime import datetime, timezone

import polars as pl
import pyarrow as pa
import pytest

from trafficstream import tables
from trafficstream.config import settings_to_json
from trafficstream.streaming_jobs.sinks import BatchWriter
from trafficstream.streaming_jobs.table_rows import arrow_schema

pytestmark = pytest.mark.integration
MINUTE = datetime(2026, 11, 30, 10, 0, tzinfo=timezone.utc)


@pytest.fixture(params=["delta-rs", "spark"])
def writer(request, spark, settings_factory, tmp_path):
    """Both Delta writers, on tables Spark created (as the job does at start)."""
    s = settings_factory(
        create_topics=False, name=f"merge-{request.param}", overrides=[f"spark.delta_writer={request.param}"]
    )
    w = BatchWriter(spark, s, settings_to_json(s), str(tmp_path / "chk"))
    try:
        yield w
    finally:
        w.close()


def _flow(batch: int, vehicles: int, camera: str = "cam") -> pa.Table:
    return pa.Table.from_pylist(
        [{"camera_id": camera, "minute": MINUTE, "class_name": "car", "vehicles": vehicles, "updated_batch": batch}],
        schema=arrow_schema(tables.FLOW),
    )


def _read(writer) -> list[tuple[int, int]]:
    df = pl.read_delta(writer.paths[tables.FLOW])
    return [(r["vehicles"], r["updated_batch"]) for r in df.to_dicts()]


def test_merge_guard(writer):
    merge = writer.delta.merge
    merge(tables.FLOW, _flow(1, 3))
    assert _read(writer) == [(3, 1)]
    merge(tables.FLOW, _flow(2, 5))
    assert _read(writer) == [(5, 2)]
    merge(tables.FLOW, _flow(2, 9))  # the same batch again (a replay): no change
    assert _read(writer) == [(5, 2)]
    merge(tables.FLOW, _flow(1, 3))  # an older batch, late: never overwrites
    assert _read(writer) == [(5, 2)]
    merge(tables.FLOW, _flow(3, 1), keep_max=("vehicles",))  # a reset camera recounting from 0
    assert _read(writer) == [(5, 3)]
    merge(tables.FLOW, _flow(4, 7), keep_max=("vehicles",))
    assert _read(writer) == [(7, 4)]


def test_bounded_merge_updates_the_row_and_reads_only_the_cameras_times(writer):
    """The bound from the batch's own rows (merge_bound) still finds the row to update; a row of another
    camera or an older minute is left alone (and a bound that excluded the matched row would insert a twin,
    which the row count would show)."""
    import json

    from trafficstream.streaming_jobs import table_rows
    from trafficstream.streaming_jobs.sinks import merge_bound

    writer.delta.merge(tables.FLOW, _flow(1, 4, camera="cam-2"))
    writer.delta.merge(tables.FLOW, _flow(1, 3))
    payload = json.dumps({"minute_ts": MINUTE.timestamp(), "class_name": "car", "vehicles": 6})
    rows = pa.Table.from_pylist([{"kind": "flow", "camera_id": "cam", "payload": payload}])
    bound = merge_bound(table_rows.flow(rows), "minute")
    assert bound is not None and "cam-2" not in bound.low_us
    writer.delta.merge(tables.FLOW, _flow(2, 6), bound=bound)
    df = pl.read_delta(writer.paths[tables.FLOW]).sort("camera_id")
    assert [(r["camera_id"], r["vehicles"], r["updated_batch"]) for r in df.to_dicts()] == [
        ("cam", 6, 2),
        ("cam-2", 4, 1),
    ]


def test_append_is_idempotent_per_version_and_spark_reads_what_either_wrote(writer, spark):
    rows = pa.Table.from_pylist(
        [{"camera_id": "cam", "line_id": "l", "track_id": 1, "direction": "in", "batch_id": 5}],
        schema=arrow_schema(tables.CROSSINGS),
    )
    writer.delta.append(tables.CROSSINGS, rows, 5)
    writer.delta.append(tables.CROSSINGS, rows, 5)  # a replayed group: skipped
    writer.delta.append(tables.CROSSINGS, rows, 4)  # an older one: skipped
    assert pl.read_delta(writer.paths[tables.CROSSINGS]).height == 1
    writer.delta.append(tables.CROSSINGS, rows, 6)
    assert spark.read.format("delta").load(writer.paths[tables.CROSSINGS]).count() == 2


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


def test_violation_evidence_on_the_driver_or_in_one_spark_task_gives_the_same_rows(
    spark, settings_factory, tmp_path, synth
):
    """Local mode renders evidence on the driver (no task slot held); a cluster renders it in one Spark task.
    Both give the same violations rows and results messages."""
    import pandas as pd
    from pyspark.sql.pandas.types import to_arrow_schema

    from trafficstream.streaming_jobs.schemas import KIND_VIOLATION, SPOOLED

    settings_json = settings_to_json(synth.make_settings())
    state = synth.FakeGroupState()
    cars = [synth.Car(0, 60, 300, 130.0)]
    out = pd.concat([synth.run_batch(settings_json, synth.scene_rows(cars, range(0, 40)), state).astype(object)])
    rows = pa.Table.from_pandas(out.assign(batch_id=3), schema=to_arrow_schema(SPOOLED), preserve_index=False)
    assert KIND_VIOLATION in rows.column("kind").to_pylist()
    got = []
    for on_driver in (True, False):
        s = settings_factory(name="evidence")  # its own tables
        w = BatchWriter(spark, s, settings_to_json(s), str(tmp_path / f"chk-{on_driver}"))
        try:
            w._evidence_on_driver = on_driver
            w._write_violations(rows, 3, {})
            got.append(pl.read_delta(w.paths[tables.VIOLATIONS]).sort("track_id", "frame_index").to_dicts())
        finally:
            w.close()
    assert got[0] and got[0] == got[1]


@pytest.mark.parametrize("delta_writer", ["delta-rs", "spark"])
def test_synchronous_commits_write_every_table_once_per_batch(spark, settings_factory, tmp_path, synth, delta_writer):
    """``spark.async_delta_commits: false`` (as with a checkpoint on object storage): the micro-batch itself
    commits its rows; a replayed batch adds nothing, with either writer."""
    import pandas as pd
    from pyspark.sql.pandas.types import to_arrow_schema

    from trafficstream.streaming_jobs.schemas import TRACKED

    settings_json = settings_to_json(synth.make_settings())
    out = synth.run_batch(
        settings_json, synth.scene_rows([synth.Car(0, 60, 300, 80.0)], range(0, 20)), synth.FakeGroupState()
    )
    batch = spark.createDataFrame(
        pa.Table.from_pandas(pd.DataFrame(out).astype(object), schema=to_arrow_schema(TRACKED), preserve_index=False),
        schema=TRACKED,
    )
    s = settings_factory(
        name="sync", overrides=["spark.async_delta_commits=false", f"spark.delta_writer={delta_writer}"]
    )
    w = BatchWriter(spark, s, settings_to_json(s), str(tmp_path / "chk"))
    try:
        assert w._committer is None
        w(batch, 0)
        w(batch, 0)  # Spark replays the batch after a crash
        assert w.last["delta"] == "committed"
        frames = pl.read_delta(w.paths[tables.FRAMES])
        assert frames.height == 20 and frames["frame_index"].n_unique() == 20
        assert pl.read_delta(w.paths[tables.DETECTIONS]).height > 0
        assert pl.read_delta(w.paths[tables.TRACKS]).height == 1
    finally:
        w.close()


def test_violations_are_recorded_and_published_before_their_clips_are_made(spark, settings_factory, tmp_path, synth):
    """The sink writes the violations row and produces its results message, then makes the clip the row names
    (a clip costs seconds of CPU; the violation must not wait for it): on the driver and in one Spark task."""
    import json

    import av
    from pyspark.sql.pandas.types import to_arrow_schema

    from trafficstream.config import default_data_dir
    from trafficstream.streaming_jobs.schemas import KIND_VIOLATION, SPOOLED
    from trafficstream.video import uri_to_path

    settings_json = settings_to_json(synth.make_settings())
    cars = [synth.Car(0, 60, 300, 130.0)]
    out = synth.run_batch(settings_json, synth.scene_rows(cars, range(0, 40)), synth.FakeGroupState()).astype(object)
    motorway = (default_data_dir() / "videos" / "highway_overpass_1280x720.mp4").resolve().as_uri()
    real = {"source_uri": motorway, "source_index": 54, "source_pts_s": 1.8, "x1": 560, "y1": 420, "x2": 700, "y2": 560}
    out["payload"] = [
        json.dumps({**json.loads(p), **real}) if kind == KIND_VIOLATION else p
        for kind, p in zip(out["kind"], out["payload"], strict=True)
    ]
    rows = pa.Table.from_pandas(out.assign(batch_id=3), schema=to_arrow_schema(SPOOLED), preserve_index=False)
    for on_driver in (True, False):
        s = settings_factory(
            name=f"clips-{on_driver}",
            overrides=["evidence.clip_before_s=0.2", "evidence.clip_after_s=0.2", "evidence.clip_nice=0"],
        )
        w = BatchWriter(spark, s, settings_to_json(s), str(tmp_path / f"chk-{on_driver}"))
        timings: dict[str, float] = {}
        try:
            w._evidence_on_driver = on_driver
            w._write_violations(rows, 3, timings)
            violations = pl.read_delta(w.paths[tables.VIOLATIONS])
        finally:
            w.close()
        assert violations.height >= 1
        order = list(timings)
        assert order.index(tables.VIOLATIONS) < order.index("clips")
        assert order.index(f"kafka:{s.kafka.results_topic}") < order.index("clips")
        for uri in violations["evidence_clip_uri"].to_list():
            with av.open(str(uri_to_path(uri))) as clip:
                assert sum(1 for _ in clip.decode(clip.streams.video[0])) >= 3, (on_driver, uri)
