"""Sinks of the vehicle job (``foreachBatch``): Delta tables, the results topic, dead letters, health.

Delivery semantics:
- Delta appends carry ``txnAppId`` (stable per checkpoint) + ``txnVersion`` (= batch id): when Spark
  replays a micro-batch after a crash, Delta skips the already committed write -> exactly once.
- ``tracks`` and ``flow`` are MERGE upserts of absolute values guarded by ``updated_batch``: a replayed
  batch changes nothing.
- Frame results go first: the driver produces the batch's frame messages (idempotent producer, acks=all,
  every acknowledgement awaited) before any Delta commit, so a frame is on the results topic as soon as
  stage 2 has tracked it. Results and dead letters are at least once: a replayed batch may re-send them.
  Consumers de-duplicate on (camera_id, frame_index) — the dashboard does.
- ``detections`` holds what the detector saw; boxes predicted between detections (detection stride) are on
  the results topic only, and the frames table says how each frame was analysed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pyarrow as pa
from confluent_kafka import Consumer, Producer, TopicPartition
from delta.tables import DeltaTable
from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import StringType, StructField, StructType

from trafficstream import tables
from trafficstream.config import Settings
from trafficstream.messages import CAMERA_ID_PATTERN
from trafficstream.results import HEALTH_KEY, batch_health_message, camera_event_message, encode
from trafficstream.streaming_jobs.evidence import render_evidence
from trafficstream.streaming_jobs.schemas import (
    CROSSING_PAYLOAD,
    DEAD_PAYLOAD,
    EVENT_PAYLOAD,
    FLOW_PAYLOAD,
    FRAME_PAYLOAD,
    HEALTH_PAYLOAD,
    KIND_CROSSING,
    KIND_DEAD,
    KIND_EVENT,
    KIND_FLOW,
    KIND_FRAME,
    KIND_HEALTH,
    KIND_TRACK,
    KIND_VIOLATION,
    SPOOLED,
    TRACK_PAYLOAD,
    VEHICLE,
    VIOLATION_PAYLOAD,
    from_payload,
    spark_schema,
    spark_type,
)
from trafficstream.streaming_jobs.shedding import DETECTED
from trafficstream.streaming_jobs.spool import Group, Spool

log = logging.getLogger(__name__)

# The vehicle job's tables: (schema, partition columns), derived from the declarations in trafficstream.tables.
TABLE_SCHEMAS: dict[str, tuple[StructType, list[str]]] = {
    t.name: (spark_schema(t), list(t.partition_by)) for t in tables.tables_of(tables.VEHICLE_JOB)
}


@dataclass(frozen=True)
class ColumnSources:
    """How a sink computes each declared column of its table from a stage-2 row: a Spark SQL expression in
    ``exprs``, else the payload field of the same name (``{prefix}.{column}``, of struct ``payload``, turned
    back by :func:`from_payload`). Plain data, so the contract test checks it against the declarations."""

    payload: StructType
    prefix: str
    exprs: dict[str, str]


_ROW_KEYS = {"camera_id": "camera_id", "frame_index": "frame_index", "pts_s": "pts_s"}  # the stage-2 row's own
_EVENT_DATE = "to_date(timestamp_seconds(capture_ts))"
COLUMN_SOURCES: dict[str, ColumnSources] = {
    tables.FRAMES: ColumnSources(
        FRAME_PAYLOAD,
        "p",
        {
            **_ROW_KEYS,
            "capture_ts": "timestamp_seconds(capture_ts)",
            "processed_ts": "timestamp_seconds(processed_ts)",
            "vehicles": "size(p.vehicles)",
            "batch_id": "batch_id",
            "event_date": _EVENT_DATE,
        },
    ),
    tables.DETECTIONS: ColumnSources(
        VEHICLE,
        "v",
        {  # v: one vehicle of the frame's payload
            **_ROW_KEYS,
            "capture_ts": "timestamp_seconds(capture_ts)",
            "batch_id": "batch_id",
            "event_date": _EVENT_DATE,
        },
    ),
    tables.TRACKS: ColumnSources(TRACK_PAYLOAD, "p", {"camera_id": "camera_id", "updated_batch": "batch_id"}),
    tables.VIOLATIONS: ColumnSources(
        VIOLATION_PAYLOAD,
        "p",
        {
            **_ROW_KEYS,
            "capture_ts": "timestamp_seconds(capture_ts)",
            "evidence_uri": "evidence_uri",
            "evidence_clip_uri": "evidence_clip_uri",
            "batch_id": "batch_id",
            "event_date": _EVENT_DATE,
        },
    ),
    tables.FLOW: ColumnSources(
        FLOW_PAYLOAD,
        "p",
        {"camera_id": "camera_id", "minute": "timestamp_seconds(p.minute_ts)", "updated_batch": "batch_id"},
    ),
    tables.CROSSINGS: ColumnSources(
        CROSSING_PAYLOAD,
        "p",
        {"camera_id": "camera_id", "batch_id": "batch_id", "event_date": "to_date(timestamp_seconds(p.crossing_ts))"},
    ),
    tables.EVENTS: ColumnSources(EVENT_PAYLOAD, "p", {"camera_id": "camera_id", "updated_batch": "batch_id"}),
    tables.DEAD_LETTERS: ColumnSources(
        DEAD_PAYLOAD,
        "p",
        {
            "camera_id": "camera_id",
            "frame_index": "frame_index",
            "dead_ts": "timestamp_seconds(processed_ts)",
            "batch_id": "batch_id",
        },
    ),
}


def column_exprs(table: str) -> list[tuple[str, str, str]]:
    """(column, Spark SQL expression, declared type) of every declared column of ``table``, in order."""
    src = COLUMN_SOURCES[table]
    return [
        (c.name, src.exprs.get(c.name) or from_payload(c, f"{src.prefix}.{c.name}"), c.type)
        for c in tables.table(table).columns
    ]


def table_rows(df: DataFrame, table: str) -> DataFrame:
    """``df`` (stage-2 rows with ``batch_id`` and the parsed payload) as rows of ``table``: exactly its declared
    columns, in order, with their declared types."""
    return df.select(*[F.expr(expr).cast(spark_type(typ)).alias(name) for name, expr, typ in column_exprs(table)])


def create_tables(spark: SparkSession, settings: Settings) -> dict[str, str]:
    """Create every table (empty, with its schema) if missing, so readers never meet a missing table; add
    the declared columns an existing table lacks (it was created by an older build: MERGE tables do not
    gain columns on write, appends would, with mergeSchema)."""
    paths = {}
    for name, (schema, partitions) in TABLE_SCHEMAS.items():
        path = settings.table_uri(name)
        builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
        if partitions:
            builder = builder.partitionedBy(*partitions)
        builder.execute()
        present = set(DeltaTable.forPath(spark, path).toDF().columns)
        missing = [f for f in schema.fields if f.name not in present]
        if missing:
            columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in missing)
            spark.sql(f"ALTER TABLE delta.`{path}` ADD COLUMNS ({columns})")
            log.info("table %s: added the columns %s", name, ", ".join(f.name for f in missing))
        paths[name] = path
    return paths


FAULT_ENV = "TRAFFICSTREAM_FAULT"


def inject_fault(point: str, batch_id: int) -> None:
    """Crash here, like a lost machine, when ``$TRAFFICSTREAM_FAULT`` is ``point:batch_id`` or ``point:*`` (the
    fault tests).

    SIGKILL to the whole process group: the driver JVM, this Python process and the workers die at once.
    Inert unless the variable names this exact point and batch.
    """
    if os.environ.get(FAULT_ENV) in (f"{point}:{batch_id}", f"{point}:*"):
        log.warning("fault injection: SIGKILL at %s of batch %d", point, batch_id)
        logging.shutdown()
        os.killpg(os.getpgrp(), signal.SIGKILL)


def camera_event_result(row: Mapping[str, Any], batch_id: int) -> str:
    """The results-topic message of a stage-2 ``KIND_HEALTH`` row: ``camera_id``, ``processed_ts`` and the
    ``HEALTH_PAYLOAD`` fields."""
    return encode(
        camera_event_message(
            camera_id=row["camera_id"],
            batch_id=batch_id,
            ts=row["processed_ts"],
            event=row["event"],
            cause=row.get("cause"),
            detail=row.get("detail"),
            next_track_id=row.get("next_track_id"),
            resets=row.get("resets"),
        )
    ).decode("utf-8")


class BatchWriter:
    """The ``foreachBatch`` function: one micro-batch of stage-2 rows -> every sink."""

    def __init__(self, spark: SparkSession, settings: Settings, settings_json: str, checkpoint: str) -> None:
        self.spark = spark
        self.settings = settings
        self.settings_json = settings_json
        # Stable across restarts of the same query (same checkpoint) and distinct between queries.
        self.app_id = "trafficstream-" + hashlib.sha1(checkpoint.encode()).hexdigest()[:16]
        self.paths = create_tables(spark, settings)
        self.kafka = settings.kafka.spark_options()
        # The driver's producer: frame results (first, before any Delta commit) and batch health. Idempotent,
        # acks=all: a batch whose results are not all acknowledged fails and is retried (at least once).
        self._producer: Producer | None = Producer(
            settings.kafka.python_config(
                **{
                    "client.id": "trafficstream-job-results",
                    "enable.idempotence": True,
                    "acks": "all",
                    "linger.ms": 2,
                    "compression.type": "lz4",
                    "partitioner": "murmur2_random",  # Java's partitioner, as the Spark Kafka sink uses
                }
            )
        )
        self._watermarks: Consumer | None = Consumer(
            settings.kafka.python_config(**{"group.id": "trafficstream-job-lag", "enable.auto.commit": False})
        )
        self.last: dict[str, Any] = {}
        self._lock = threading.Lock()
        # Sinks are independent: Spark runs their jobs concurrently from driver threads, which overlaps the
        # per-commit driver work (planning, Delta log) that dominates small micro-batches.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sink")
        # One JSON line per micro-batch (compute/sink timings) for `make demo` / `make bench` reports.
        self.metrics_path = settings.storage.var_dir / "metrics" / f"{self.app_id}.jsonl"
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        self._sink_ms: dict[str, float] = {}
        self._write_timings: dict[str, float] = self._sink_ms
        # Delta commits in the background from a spool beside the checkpoint (a local or mounted path);
        # with a checkpoint on object storage, every micro-batch commits before the next one starts.
        self._committer: DeltaCommitter | None = None
        if settings.spark.async_delta_commits and "://" not in checkpoint:
            self._committer = DeltaCommitter(self, Spool(Path(checkpoint + ".spool")))
            self._committer.start()

    def close(self) -> None:
        """Commit what is spooled, flush and release the driver-side clients (Spark may keep this object)."""
        if self._committer is not None:
            if not self._committer.drain():
                log.error("spooled micro-batches not all committed; the next start commits them")
            elif self._committer.error is not None:
                log.error("Delta commits failed: %s; the next start commits the spool", self._committer.error)
            self._committer = None
        self._pool.shutdown(wait=True)
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None  # the last reference: librdkafka shuts the client down
        if self._watermarks is not None:
            self._watermarks.close()
            self._watermarks = None

    # -- helpers ---------------------------------------------------------------------------------------
    @contextmanager
    def _timed(self, sink: str, into: dict[str, float] | None = None) -> Iterator[None]:
        """Add the block's duration to ``into`` (default: the timings of the :meth:`_write` in progress)."""
        t0 = time.perf_counter()
        yield
        timings = self._write_timings if into is None else into
        with self._lock:
            timings[sink] = round(timings.get(sink, 0.0) + (time.perf_counter() - t0) * 1e3, 1)

    def _append(self, df: DataFrame, table: str, batch_id: int) -> None:
        with self._timed(table):
            (
                df.write.format("delta")
                .mode("append")
                .option("mergeSchema", "true")  # tables written before a column was declared gain it
                .option("txnAppId", self.app_id)
                .option("txnVersion", batch_id)
                .save(self.paths[table])
            )

    def _merge(
        self, df: DataFrame, table: str, keys: list[str], set_: dict[str, str] | None = None, bound: str | None = None
    ) -> None:
        """Upsert absolute values; the ``updated_batch`` guard makes a replayed batch a no-op and keeps a
        late replay from overwriting newer rows (no session-wide txn confs: sinks run concurrently).
        ``set_`` overrides the update expression of some columns; ``bound`` is a predicate on the target
        that every row the batch can match satisfies (see :func:`merge_bound`): Delta then reads only the
        files of those cameras and times, not the whole table."""
        cond = " AND ".join(f"t.{k} = s.{k}" for k in keys)
        if bound:
            cond = f"{cond} AND ({bound})"
        guard = "s.updated_batch > t.updated_batch"
        with self._timed(table):
            merge = DeltaTable.forPath(self.spark, self.paths[table]).alias("t").merge(df.alias("s"), cond)
            if set_:
                columns: dict[str, str | Column] = {c: f"s.{c}" for c in df.columns}
                columns |= set_
                merge = merge.whenMatchedUpdate(condition=guard, set=columns)
            else:
                merge = merge.whenMatchedUpdateAll(condition=guard)
            merge.whenNotMatchedInsertAll().execute()

    def _to_kafka(self, df: DataFrame, topic: str) -> None:
        writer = df.selectExpr("CAST(key AS STRING) AS key", "CAST(value AS STRING) AS value").write.format("kafka")
        for k, v in self.kafka.items():
            writer = writer.option(k, v)
        with self._timed(f"kafka:{topic}"):
            writer.option("topic", topic).save()

    # -- the batch -------------------------------------------------------------------------------------
    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        t0 = time.perf_counter()
        self._sink_ms = {}
        if self._committer is not None:
            self._committer.check()  # a committer that keeps failing fails the query (restarted from the checkpoint)
        df = batch_df.persist()
        try:
            # One action: the batch's rows reach the driver (results, health, the spool).
            table = df.toArrow()
            rows = summary_rows(table)
            counts = dict(Counter(r["kind"] for r in rows))
            t1 = time.perf_counter()
            # Results first: a frame reaches the results topic before any Delta commit of its batch.
            with self._timed("results", self._sink_ms):
                self._publish_results(rows)
            if counts and self._committer is not None:
                with self._timed("spool", self._sink_ms):
                    self._committer.put(batch_id, table)
            elif counts:
                self._write(df.withColumn("batch_id", F.lit(batch_id).cast("long")), batch_id, counts, table)
            inject_fault("after_sinks", batch_id)  # sinks done (or spooled), Spark's checkpoint commit not yet
            t2 = time.perf_counter()
            batch_ms = (t2 - t0) * 1e3
            n = counts.get(KIND_FRAME, 0) + counts.get(KIND_DEAD, 0)
            self.last = {
                "batch_id": batch_id,
                "counts": counts,
                "compute_ms": (t1 - t0) * 1e3,
                "sink_ms": (t2 - t1) * 1e3,
                "sinks": self._sink_ms,
                "delta": "spooled" if self._committer is not None else "committed",
            }
            with self.metrics_path.open("a") as fh:
                fh.write(json.dumps({**self.last, "ts": time.time()}) + "\n")
            log.info(
                "batch %d: %s compute %.0f ms, sinks %.0f ms %s",
                batch_id,
                counts,
                (t1 - t0) * 1e3,
                (t2 - t1) * 1e3,
                self._sink_ms,
            )
            if counts:
                self._health(rows, batch_id, batch_ms, n, counts)
        finally:
            df.unpersist()

    def commit_group(self, table: pa.Table, version: int) -> dict[str, Any]:
        """Commit spooled batches (``table``: their rows with ``batch_id``) to every Delta table as one
        transaction per table (``txnVersion`` = ``version``). Called by the committer thread."""
        t0 = time.perf_counter()
        self._commit_ms: dict[str, float] = {}
        df = self.spark.createDataFrame(table, schema=SPOOLED).persist()
        try:
            counts = dict(Counter(table.column("kind").to_pylist()))
            self._write(df, version, counts, table, timings=self._commit_ms)
        finally:
            df.unpersist()
        return {"counts": counts, "delta_ms": round((time.perf_counter() - t0) * 1e3, 1), "sinks": self._commit_ms}

    def _publish_results(self, rows: list[dict[str, Any]]) -> None:
        """Produce the batch's frame messages (key: camera id) and wait for every acknowledgement; raise if
        any failed, so Spark retries the batch (consumers de-duplicate on camera_id + frame_index)."""
        producer = self._producer
        if producer is None:
            raise RuntimeError("the writer is closed")
        failed: list[str] = []

        def on_delivery(err: Any, msg: Any) -> None:
            if err is not None:
                failed.append(str(err))

        topic = self.settings.kafka.results_topic
        # per camera in frame order; a frame's crossings and events after the frame itself
        order = {k: i for i, k in enumerate(RESULT_KINDS)}
        ordered = sorted(
            (r for r in rows if r["message"] is not None),
            key=lambda r: (r["camera_id"] or "", r["frame_index"] or 0, order[r["kind"]]),
        )
        for r in ordered:
            while True:
                try:
                    producer.produce(topic, key=r["camera_id"], value=r["message"], on_delivery=on_delivery)
                    break
                except BufferError:  # the local queue is full: let deliveries drain
                    producer.poll(0.1)
            producer.poll(0)
        remaining = producer.flush(30)
        if remaining or failed:
            raise RuntimeError(
                f"results topic: {len(failed)} deliveries failed, {remaining} unacknowledged "
                f"(first error: {failed[0] if failed else 'timeout'})"
            )

    def _write(
        self,
        df: DataFrame,
        batch_id: int,
        counts: dict[str, int],
        rows: pa.Table,
        timings: dict[str, float] | None = None,
    ) -> None:
        """Every sink of stage-2 rows ``df`` (with their ``batch_id``; ``rows``: the same rows on the driver);
        ``batch_id``: the Delta txnVersion."""
        # one _write at a time: the query thread's (synchronous commits) or the committer's
        self._write_timings = self._sink_ms if timings is None else timings
        self._bounds = {
            KIND_TRACK: merge_bound(rows, KIND_TRACK, "first_seen_ts", "first_seen_ts"),
            KIND_FLOW: merge_bound(rows, KIND_FLOW, "minute_ts", "minute"),
            KIND_EVENT: merge_bound(rows, KIND_EVENT, "start_ts", "start_ts"),
        }
        tasks = {
            KIND_FRAME: self._write_frames,
            KIND_DEAD: self._write_dead,
            KIND_TRACK: self._write_tracks,
            KIND_FLOW: self._write_flow,
            KIND_VIOLATION: self._write_violations,
            KIND_HEALTH: self._write_camera_events,
            KIND_CROSSING: self._write_crossings,
            KIND_EVENT: self._write_events,
        }
        futures = [self._pool.submit(fn, df, batch_id) for kind, fn in tasks.items() if counts.get(kind)]
        errors = [f.exception() for f in futures]  # waits for all: never leave a sink half-running
        for exc in errors:
            if exc is not None:
                raise exc

    def _stage2(self, df: DataFrame, kind: str, payload: StructType, batch_id: int) -> DataFrame:
        """The rows of ``kind`` with their payload parsed (``p``); each row keeps its own ``batch_id``."""
        return df.where(F.col("kind") == kind).withColumn("p", F.from_json("payload", payload))

    def _write_frames(self, df: DataFrame, batch_id: int) -> None:
        fr = self._stage2(df, KIND_FRAME, FRAME_PAYLOAD, batch_id)
        self._append(table_rows(fr, tables.FRAMES), tables.FRAMES, batch_id)
        # detections: what the detector saw; predicted boxes (between detections) live on the results topic only
        det = fr.where(F.coalesce(F.col("p.analysis"), F.lit(DETECTED)) == DETECTED).select(
            "camera_id", "frame_index", "pts_s", "capture_ts", "batch_id", F.explode("p.vehicles").alias("v")
        )
        self._append(table_rows(det, tables.DETECTIONS), tables.DETECTIONS, batch_id)

    def _write_dead(self, df: DataFrame, batch_id: int) -> None:
        dead = self._stage2(df, KIND_DEAD, DEAD_PAYLOAD, batch_id)
        self._append(table_rows(dead, tables.DEAD_LETTERS), tables.DEAD_LETTERS, batch_id)
        self._to_kafka(
            dead.select(F.coalesce("camera_id", F.lit("")).alias("key"), F.col("message").alias("value")),
            self.settings.kafka.dead_letter_topic,
        )

    def _write_tracks(self, df: DataFrame, batch_id: int) -> None:
        tr = table_rows(self._stage2(df, KIND_TRACK, TRACK_PAYLOAD, batch_id), tables.TRACKS)
        keys = list(tables.table(tables.TRACKS).keys)
        # A live summary and the ended one of the same track can meet in one batch: keep the latest.
        latest = Window.partitionBy(*keys).orderBy(F.col("ended").desc(), F.col("last_frame").desc())
        tr = tr.withColumn("_rank", F.row_number().over(latest)).where("_rank = 1").drop("_rank")
        self._merge(tr, tables.TRACKS, keys, bound=self._bounds[KIND_TRACK])

    def _write_flow(self, df: DataFrame, batch_id: int) -> None:
        fl = table_rows(self._stage2(df, KIND_FLOW, FLOW_PAYLOAD, batch_id), tables.FLOW)
        keys = list(tables.table(tables.FLOW).keys)
        # One row per minute and class: the counts are absolute and only grow, so the largest is the latest
        # (several micro-batches are committed at once).
        columns = fl.columns
        fl = fl.groupBy(*keys).agg(F.max("vehicles").alias("vehicles"), F.max("updated_batch").alias("updated_batch"))
        fl = fl.select(*columns)
        # A camera whose tracking state was reset counts its current minute again from 0: never lower a
        # count already published.
        self._merge(
            fl, tables.FLOW, keys, set_={"vehicles": "greatest(t.vehicles, s.vehicles)"}, bound=self._bounds[KIND_FLOW]
        )

    def _write_crossings(self, df: DataFrame, batch_id: int) -> None:
        # unique by construction: a track counts once per line and direction (the counter's state says so)
        cr = self._stage2(df, KIND_CROSSING, CROSSING_PAYLOAD, batch_id)
        self._append(table_rows(cr, tables.CROSSINGS), tables.CROSSINGS, batch_id)

    def _write_events(self, df: DataFrame, batch_id: int) -> None:
        ev = table_rows(self._stage2(df, KIND_EVENT, EVENT_PAYLOAD, batch_id), tables.EVENTS)
        keys = list(tables.table(tables.EVENTS).keys)
        # An event reported open and then closed in the batches of one commit: keep the latest report.
        latest = Window.partitionBy(*keys).orderBy(
            F.col("updated_batch").desc(), F.col("is_open").asc(), F.col("frame_index").desc_nulls_last()
        )
        ev = ev.withColumn("_rank", F.row_number().over(latest)).where("_rank = 1").drop("_rank")
        self._merge(ev, tables.EVENTS, keys, bound=self._bounds[KIND_EVENT])

    def _write_camera_events(self, df: DataFrame, batch_id: int) -> None:
        """Camera events that are not about one frame (a tracking-state reset): logged, and on the results
        topic as ``health`` messages with the camera id, so operators see them next to the batch health."""
        ev = df.where(F.col("kind") == KIND_HEALTH).withColumn("p", F.from_json("payload", HEALTH_PAYLOAD))
        events = []
        for r in ev.select("camera_id", "processed_ts", "batch_id", "p.*").collect():  # one per camera reset
            value = camera_event_result(r.asDict(), r["batch_id"])
            log.warning("camera event in batch %d: %s", r["batch_id"], value)
            events.append((r["camera_id"], value))
        self._to_kafka(
            self.spark.createDataFrame(events, "key string, value string"), self.settings.kafka.results_topic
        )

    def _write_violations(self, df: DataFrame, batch_id: int) -> None:
        vio = df.where(F.col("kind") == KIND_VIOLATION)
        # The evidence step adds evidence_uri and fills `message` (the results-topic violation message).
        out_schema = StructType(
            SPOOLED.fields + [StructField("evidence_uri", StringType()), StructField("evidence_clip_uri", StringType())]
        )
        vio = vio.mapInPandas(partial(render_evidence, self.settings_json), out_schema).persist()
        try:
            v = vio.withColumn("p", F.from_json("payload", VIOLATION_PAYLOAD))
            self._append(table_rows(v, tables.VIOLATIONS), tables.VIOLATIONS, batch_id)
            self._to_kafka(
                v.select(F.col("camera_id").alias("key"), F.col("message").alias("value")),
                self.settings.kafka.results_topic,
            )
        finally:
            vio.unpersist()

    def _health(
        self, rows: list[dict[str, Any]], batch_id: int, batch_ms: float, n_frames: int, counts: dict[str, int]
    ) -> None:
        """Per-batch health on the results topic: duration, frames/s, consumer lag and analysis per camera."""
        try:
            producer, watermarks = self._producer, self._watermarks
            if producer is None or watermarks is None:
                raise RuntimeError("the writer is closed")
            lag: dict[str, int] = {}
            delay: dict[str, float] = {}
            now = time.time()
            for cam, part, off, cap in positions(rows):
                if cam is None or part is None or off is None:
                    continue
                _, high = watermarks.get_watermark_offsets(
                    TopicPartition(self.settings.kafka.frames_topic, part), timeout=5
                )
                lag[cam] = max(lag.get(cam, 0), high - (off + 1))  # references published, not yet processed
                if cap is not None:
                    delay[cam] = round(now - cap, 3)
            analysis = {
                cam: {**a, "budget_s": self.settings.budget_s(self.settings.camera(cam))}
                for cam, a in analysis_counts(rows).items()
                if any(c.id == cam for c in self.settings.cameras)
            }
            msg = batch_health_message(
                batch_id=batch_id,
                batch_ms=batch_ms,
                frames=n_frames,
                ts=now,
                lag=lag,
                delay_s=delay,
                counts=counts,
                analysis=analysis,
            )
            producer.produce(self.settings.kafka.results_topic, key=HEALTH_KEY, value=encode(msg))
            producer.poll(0)
        except Exception as exc:  # broad on purpose: health is best effort; never fail a batch for it
            log.warning("health message for batch %d not sent: %s", batch_id, exc)


def merge_bound(table: pa.Table, kind: str, field: str, column: str, margin_s: float = 60.0) -> str | None:
    """A target predicate for the MERGE of ``kind`` rows: per camera in the batch, ``column`` (a timestamp)
    no earlier than the smallest payload ``field`` (unix seconds) of that camera, less ``margin_s``. A track's
    ``first_seen_ts`` and a flow row's ``minute`` never change, so every row the batch updates satisfies it;
    cameras not in the batch are pruned by partition. None (no bound) when a camera's rows lack the field."""
    cols = table.select(["kind", "camera_id", "payload"]).to_pydict()
    low: dict[str, float] = {}
    for k, cam, payload in zip(cols["kind"], cols["camera_id"], cols["payload"], strict=True):
        if k != kind:
            continue
        try:
            value = json.loads(payload).get(field) if payload else None
        except (ValueError, AttributeError):
            value = None
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        if cam is None or not CAMERA_ID_PATTERN.fullmatch(cam):
            return None
        low[cam] = min(low.get(cam, float(value)), float(value))
    if not low:
        return None
    # Whole microseconds, rounded down: a literal with more decimals is a DECIMAL that timestamp_seconds
    # refuses ("Rounding necessary"), e.g. an event's start interpolated between frames.
    return " OR ".join(
        f"(t.camera_id = '{cam}' AND t.{column} >= timestamp_seconds({_micros_literal(v - margin_s)}))"
        for cam, v in sorted(low.items())
    )


def _micros_literal(seconds: float) -> str:
    """``seconds`` rounded down to whole microseconds, as an exact decimal literal (integer arithmetic: a
    float formatted to 6 places may round up)."""
    us = math.floor(seconds * 1e6)
    sign, us = ("-", -us) if us < 0 else ("", us)
    return f"{sign}{us // 1_000_000}.{us % 1_000_000:06d}"


RESULT_KINDS = (KIND_FRAME, KIND_CROSSING, KIND_EVENT)  # stage-2 rows whose results message stage 2 built


def summary_rows(table: pa.Table) -> list[dict[str, Any]]:
    """What the driver needs of each stage-2 row: kind, camera, frame, capture time, the frame's results
    message, and from frame / dead payloads the analysis, stride and Kafka position."""
    cols = table.select(["kind", "camera_id", "frame_index", "capture_ts", "payload", "message"]).to_pydict()
    out = []
    for kind, cam, fi, cap, payload, message in zip(*cols.values(), strict=True):
        p: dict[str, Any] = {}
        if kind in (KIND_FRAME, KIND_DEAD) and payload:
            try:
                p = json.loads(payload)
            except ValueError:
                p = {}
        out.append(
            {
                "kind": kind,
                "camera_id": cam,
                "frame_index": fi,
                "capture_ts": cap,
                "message": message if kind in RESULT_KINDS else None,
                "analysis": p.get("analysis"),
                "stride": p.get("stride"),
                "partition": p.get("kafka_partition"),
                "offset": p.get("kafka_offset"),
            }
        )
    return out


def commit_due(pending: int, since_last_s: float, interval_s: float, max_pending: int) -> bool:
    """Whether the background committer starts a commit now: something is spooled and either the interval
    since the last commit has passed or the spool is half way to ``max_pending``, where the query would have to
    wait (a long interval must never stall the query)."""
    return pending > 0 and (since_last_s >= interval_s or pending >= max_pending // 2)


class DeltaCommitter(threading.Thread):
    """Commits spooled micro-batches to Delta in the background, all pending batches as one group (see
    streaming_jobs/spool.py). Retries a failed commit with backoff; after ``MAX_FAILURES`` in a row
    :meth:`check` raises in the query thread, so the query fails and restarts from its checkpoint."""

    MAX_FAILURES = 3
    MAX_PENDING = 256  # spooled batches not yet committed before the query waits (backpressure)
    MAX_GROUP = 200  # batches per commit

    def __init__(self, writer: BatchWriter, spool: Spool) -> None:
        super().__init__(name="delta-committer", daemon=True)
        self.writer = writer
        self.spool = spool
        self.error: BaseException | None = None
        self.commits = 0
        self._wake = threading.Condition()
        self._stopping = False
        self._failures = 0
        self._last_commit = 0.0
        self.metrics_path = writer.metrics_path.parent / "commits" / writer.metrics_path.name
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)

    def put(self, batch_id: int, table: pa.Table) -> None:
        """Spool a batch (durable when this returns); waits while too much is uncommitted."""
        self.spool.put(batch_id, table.append_column("batch_id", pa.array([batch_id] * table.num_rows, pa.int64())))
        with self._wake:
            self._wake.notify_all()
            t0 = time.time()
            while len(self.spool) > self.MAX_PENDING and self.error is None and not self._stopping:
                if time.time() - t0 > 5:
                    log.warning("%d micro-batches wait for their Delta commits: the query waits", len(self.spool))
                    t0 = time.time()
                self._wake.wait(1.0)

    def check(self) -> None:
        if self.error is not None:
            raise RuntimeError(f"Delta commits failing: {self.error}") from self.error

    def drain(self, timeout_s: float = 600) -> bool:
        """Commit everything spooled, then stop; False when that did not finish in time."""
        with self._wake:
            self._stopping = True
            self._wake.notify_all()
        self.join(timeout_s)
        return not self.is_alive()

    def run(self) -> None:
        backoff = 1.0
        while True:
            try:
                groups = self.spool.groups() or self._new_group()
            except Exception as exc:  # broad on purpose: the spool folder itself is unusable
                self._failed(exc)
                return
            if not groups:
                with self._wake:
                    # Stop only once nothing is pending: a drain that arrives while a group was being
                    # gathered must still commit it.
                    if self._stopping and not self.spool.pending():
                        return
                    if not self._stopping:
                        self._wake.wait(0.2)
                continue
            try:
                for group in groups:
                    self._commit(group)
                self._failures, backoff = 0, 1.0
            except Exception as exc:  # broad on purpose: retried, then surfaced to the query
                self._failures += 1
                log.exception("Delta commit failed (%d in a row)", self._failures)
                if self._failures >= self.MAX_FAILURES:
                    self._failed(exc)
                    return
                time.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    def _new_group(self) -> list[Group]:
        # Commits cost mostly per commit, not per row: let batches gather for a while (not when draining).
        interval = self.writer.settings.spark.delta_commit_interval_s
        if not self._stopping and not commit_due(
            len(self.spool), time.time() - self._last_commit, interval, self.MAX_PENDING
        ):
            with self._wake:
                self._wake.wait(0.5)
            return []
        pending = self.spool.pending()[: self.MAX_GROUP]
        return [self.spool.open_group(pending)] if pending else []

    def _commit(self, group: Group) -> None:
        self._last_commit = time.time()
        table = self.spool.read(group)
        if table is not None and table.num_rows:
            figures = self.writer.commit_group(table, group.version)
            inject_fault("after_commit", group.version)  # every table has the group, the spool still too
            line = {"version": group.version, "batches": len(group.batches), **figures, "ts": time.time()}
            with self.metrics_path.open("a") as fh:
                fh.write(json.dumps(line) + "\n")
            log.info("delta commit of %d micro-batch(es) up to %d: %s", len(group.batches), group.version, figures)
        self.spool.close_group(group)
        self.commits += 1
        with self._wake:
            self._wake.notify_all()

    def _failed(self, exc: BaseException) -> None:
        self.error = exc
        with self._wake:
            self._wake.notify_all()


def positions(rows: list[dict[str, Any]]) -> list[tuple[str | None, int, int, float | None]]:
    """(camera, partition, max offset, newest capture_ts) of the frame references in a batch's rows."""
    out: dict[tuple[str | None, int], tuple[int, float | None]] = {}
    for r in rows:
        if r["kind"] not in (KIND_FRAME, KIND_DEAD) or r["partition"] is None or r["offset"] is None:
            continue
        key = (r["camera_id"], r["partition"])
        off, cap = out.get(key, (-1, None))
        c = r["capture_ts"]
        out[key] = (max(off, r["offset"]), c if cap is None or (c is not None and c > cap) else cap)
    return [(cam, part, off, cap) for (cam, part), (off, cap) in out.items()]


def analysis_counts(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """Per camera: frames detected / predicted / skipped in the batch, and the stride at its last frame."""
    out: dict[str, dict[str, int]] = {}
    last: dict[str, int] = {}
    for r in rows:
        if r["kind"] != KIND_FRAME or r["camera_id"] is None:
            continue
        cam = r["camera_id"]
        a = out.setdefault(cam, {"detected": 0, "predicted": 0, "skipped": 0, "stride": 1})
        kind = r["analysis"] or DETECTED
        if kind in a:
            a[kind] += 1
        fi = r["frame_index"] if r["frame_index"] is not None else -1
        if fi >= last.get(cam, -2):
            last[cam] = fi
            a["stride"] = r["stride"] or 1
    return out
