"""The driver's load shedding (strides, skip ages) reaches the next micro-batch's stage-1 tasks (sinks.py ->
perception.py) through a real streaming query: a Spark local property set in ``foreachBatch`` on the query's
thread."""

from __future__ import annotations

import time

import pyarrow as pa
import pytest

from trafficstream.streaming_jobs.perception import driver_steering
from trafficstream.streaming_jobs.shedding import STEERING_PROPERTY, Steer, encode_steering

pytestmark = pytest.mark.integration


def _steering(stride: int) -> str:
    return encode_steering({"cam-1": Steer(stride, 1.5)})


def test_strides_set_by_one_batch_are_read_by_every_task_of_the_next(spark, tmp_path):
    def _seen(batches):  # nested: pickled by value, the workers cannot import a test module
        """mapInArrow body: each row tagged with the steering its task read."""
        seen = encode_steering(driver_steering())
        schema = pa.schema([("seen", pa.string())])
        for batch in batches:
            yield pa.RecordBatch.from_pylist([{"seen": seen}] * batch.num_rows, schema=schema)

    stream = (
        spark.readStream.format("rate-micro-batch")  # rows in every batch, the first too
        .option("rowsPerBatch", 20)
        .option("numPartitions", 2)
        .load()
        .select("value")
        .mapInArrow(_seen, "seen string")
    )
    seen: dict[int, set[str]] = {}

    def each(df, batch_id: int) -> None:
        seen[batch_id] = {r.seen for r in df.collect()}
        spark.sparkContext.setLocalProperty(STEERING_PROPERTY, _steering(batch_id + 2))

    # the starting strides, set before the query starts (as vehicle_pipeline.start_query does), then cleared here
    spark.sparkContext.setLocalProperty(STEERING_PROPERTY, _steering(9))
    try:
        query = stream.writeStream.foreachBatch(each).option("checkpointLocation", str(tmp_path / "ck")).start()
    finally:
        spark.sparkContext.setLocalProperty(STEERING_PROPERTY, None)
    try:
        deadline = time.time() + 120
        while len(seen) < 4 and time.time() < deadline:
            assert query.exception() is None
            time.sleep(0.5)
    finally:
        query.stop()
    assert len(seen) >= 4, seen
    assert seen[0] == {_steering(9)}  # inherited by the query's thread
    for b in sorted(seen)[1:]:
        assert seen[b] == {_steering(b - 1 + 2)}, (b, seen[b])
    # this thread's own jobs do not carry them
    tagged = spark.range(4, numPartitions=2).mapInArrow(_seen, "seen string").collect()
    assert {r.seen for r in tagged} == {encode_steering({})}
    assert driver_steering() == {}  # outside a task: none
