"""Sinks of the vehicle job (``foreachBatch``): Delta tables, the results topic, dead letters, health.

Delivery semantics:
- Delta appends carry ``txnAppId`` (stable per checkpoint) + ``txnVersion`` (= batch id): when Spark
  replays a micro-batch after a crash, Delta skips the already committed write -> exactly once.
- ``tracks`` and ``flow`` are MERGE upserts of absolute values guarded by ``updated_batch``: a replayed
  batch changes nothing.
- Kafka results and dead letters are at least once: a replayed batch may re-send them. Consumers
  de-duplicate on (camera_id, frame_index) — the dashboard does.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql.types import (
    BooleanType,
    DateType,
    DoubleType,
    FloatType,
    IntegerType,
    LongType,
    StringType,
    StructField,
    StructType,
    TimestampType,
)

from trafficstream.streaming_jobs.evidence import render_evidence
from trafficstream.streaming_jobs.schemas import (
    DEAD_PAYLOAD,
    FLOW_PAYLOAD,
    FRAME_PAYLOAD,
    HEALTH_PAYLOAD,
    KIND_DEAD,
    KIND_FLOW,
    KIND_FRAME,
    KIND_HEALTH,
    KIND_TRACK,
    KIND_VIOLATION,
    TRACK_PAYLOAD,
    TRACKED,
    VIOLATION_PAYLOAD,
)
from trafficstream import tables
from trafficstream.config import Settings
from trafficstream.messages import RESULT_HEALTH, RESULT_VERSION, RESULT_VIOLATION

log = logging.getLogger(__name__)

S, L, I, D, Fl, B, TS, DT = StringType(), LongType(), IntegerType(), DoubleType(), FloatType(), BooleanType(), TimestampType(), DateType()


def _schema(*cols: tuple[str, Any]) -> StructType:
    return StructType([StructField(n, t) for n, t in cols])


TABLE_SCHEMAS: dict[str, tuple[StructType, list[str]]] = {
    tables.FRAMES: (_schema(
        ("camera_id", S), ("frame_index", L), ("pts_s", D), ("capture_ts", TS), ("ingest_ts", TS),
        ("processed_ts", TS), ("kafka_partition", I), ("kafka_offset", L), ("raw_detections", I), ("vehicles", I),
        ("decode_ms", D), ("detect_ms", D), ("embed_ms", D), ("track_ms", D), ("speed_ms", D),
        ("state_bytes", L), ("batch_id", L), ("event_date", DT)), ["camera_id", "event_date"]),
    tables.DETECTIONS: (_schema(
        ("camera_id", S), ("frame_index", L), ("pts_s", D), ("capture_ts", TS), ("track_id", L), ("class_name", S),
        ("confidence", Fl), ("x1", Fl), ("y1", Fl), ("x2", Fl), ("y2", Fl), ("world_x_m", D), ("world_y_m", D),
        ("speed_kmh", D), ("speed_flag", S), ("over_limit", B), ("batch_id", L), ("event_date", DT)),
        ["camera_id", "event_date"]),
    tables.TRACKS: (_schema(
        ("camera_id", S), ("track_id", L), ("class_name", S), ("first_frame", L), ("last_frame", L),
        ("first_seen_ts", TS), ("last_seen_ts", TS), ("n_frames", I), ("median_speed_kmh", D),
        ("max_speed_kmh", D), ("distance_m", D), ("direction_deg", D), ("ended", B), ("updated_batch", L)),
        ["camera_id"]),
    tables.VIOLATIONS: (_schema(
        ("camera_id", S), ("track_id", L), ("class_name", S), ("frame_index", L), ("pts_s", D), ("capture_ts", TS),
        ("speed_kmh", D), ("limit_kmh", D), ("over_s", D), ("x1", Fl), ("y1", Fl), ("x2", Fl), ("y2", Fl),
        ("evidence_uri", S), ("batch_id", L), ("event_date", DT)), ["camera_id"]),
    tables.FLOW: (_schema(
        ("camera_id", S), ("minute", TS), ("class_name", S), ("vehicles", L), ("updated_batch", L)), ["camera_id"]),
    tables.DEAD_LETTERS: (_schema(
        ("reason", S), ("detail", S), ("camera_id", S), ("frame_index", L), ("payload", S), ("kafka_topic", S),
        ("kafka_partition", I), ("kafka_offset", L), ("dead_ts", TS), ("batch_id", L)), []),
}


def create_tables(spark: SparkSession, settings: Settings) -> dict[str, str]:
    """Create every table (empty, with its schema) if missing, so readers never meet a missing table."""
    paths = {}
    for name, (schema, partitions) in TABLE_SCHEMAS.items():
        path = settings.table_uri(name)
        builder = DeltaTable.createIfNotExists(spark).location(path).addColumns(schema)
        if partitions:
            builder = builder.partitionedBy(*partitions)
        builder.execute()
        paths[name] = path
    return paths


FAULT_ENV = "TRAFFICSTREAM_FAULT"


def inject_fault(point: str, batch_id: int) -> None:
    """Crash here, like a lost machine, when ``$TRAFFICSTREAM_FAULT`` is ``point:batch_id`` (the fault tests).

    SIGKILL to the whole process group: the driver JVM, this Python process and the workers die at once.
    Inert unless the variable names this exact point and batch.
    """
    if os.environ.get(FAULT_ENV) == f"{point}:{batch_id}":
        log.warning("fault injection: SIGKILL at %s of batch %d", point, batch_id)
        logging.shutdown()
        os.killpg(os.getpgrp(), signal.SIGKILL)


def _ts(col: str) -> Any:
    return F.timestamp_seconds(F.col(col))


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
        self._producer = Producer(settings.kafka.python_config(**{"client.id": "trafficstream-job-health"}))
        self._watermarks = Consumer(settings.kafka.python_config(
            **{"group.id": "trafficstream-job-lag", "enable.auto.commit": False}))
        self.last: dict[str, Any] = {}
        self._lock = threading.Lock()
        # Sinks are independent: Spark runs their jobs concurrently from driver threads, which overlaps the
        # per-commit driver work (planning, Delta log) that dominates small micro-batches.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sink")
        # One JSON line per micro-batch (compute/sink timings) for `make demo` / `make bench` reports.
        self.metrics_path = settings.storage.var_dir / "metrics" / f"{self.app_id}.jsonl"
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)

    def close(self) -> None:
        """Flush and release the driver-side Kafka clients (Spark may keep this object referenced)."""
        self._pool.shutdown(wait=True)
        if self._producer is not None:
            self._producer.flush(10)
            self._producer = None  # the last reference: librdkafka shuts the client down
        if self._watermarks is not None:
            self._watermarks.close()
            self._watermarks = None

    # -- helpers ---------------------------------------------------------------------------------------
    @contextmanager
    def _timed(self, sink: str) -> Iterator[None]:
        t0 = time.perf_counter()
        yield
        with self._lock:
            self._sink_ms[sink] = round(self._sink_ms.get(sink, 0.0) + (time.perf_counter() - t0) * 1e3, 1)

    def _append(self, df: DataFrame, table: str, batch_id: int) -> None:
        with self._timed(table):
            (df.write.format("delta").mode("append")
             .option("txnAppId", self.app_id).option("txnVersion", batch_id).save(self.paths[table]))

    def _merge(self, df: DataFrame, table: str, keys: list[str], set_: dict[str, str] | None = None) -> None:
        """Upsert absolute values; the ``updated_batch`` guard makes a replayed batch a no-op and keeps a
        late replay from overwriting newer rows (no session-wide txn confs: sinks run concurrently).
        ``set_`` overrides the update expression of some columns."""
        cond = " AND ".join(f"t.{k} = s.{k}" for k in keys)
        guard = "s.updated_batch > t.updated_batch"
        with self._timed(table):
            merge = DeltaTable.forPath(self.spark, self.paths[table]).alias("t").merge(df.alias("s"), cond)
            if set_:
                columns = {c: f"s.{c}" for c in df.columns} | set_
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
        self._sink_ms: dict[str, float] = {}
        df = batch_df.persist()
        try:
            counts = {r["kind"]: r["count"] for r in df.groupBy("kind").count().collect()}
            t1 = time.perf_counter()
            if counts:
                self._write(df, batch_id, counts)
            inject_fault("after_sinks", batch_id)  # every sink committed, Spark's checkpoint commit not yet
            t2 = time.perf_counter()
            batch_ms = (t2 - t0) * 1e3
            n = counts.get(KIND_FRAME, 0) + counts.get(KIND_DEAD, 0)
            self.last = {"batch_id": batch_id, "counts": counts, "compute_ms": (t1 - t0) * 1e3,
                         "sink_ms": (t2 - t1) * 1e3, "sinks": self._sink_ms}
            with self.metrics_path.open("a") as fh:
                fh.write(json.dumps({**self.last, "ts": time.time()}) + "\n")
            log.info("batch %d: %s compute %.0f ms, sinks %.0f ms %s", batch_id, counts, (t1 - t0) * 1e3,
                     (t2 - t1) * 1e3, self._sink_ms)
            if counts:
                self._health(df, batch_id, batch_ms, n, counts)
        finally:
            df.unpersist()

    def _write(self, df: DataFrame, batch_id: int, counts: dict[str, int]) -> None:
        tasks = {KIND_FRAME: self._write_frames, KIND_DEAD: self._write_dead, KIND_TRACK: self._write_tracks,
                 KIND_FLOW: self._write_flow, KIND_VIOLATION: self._write_violations,
                 KIND_HEALTH: self._write_camera_events}
        futures = [self._pool.submit(fn, df, batch_id) for kind, fn in tasks.items() if counts.get(kind)]
        errors = [f.exception() for f in futures]  # waits for all: never leave a sink half-running
        for exc in errors:
            if exc is not None:
                raise exc

    def _write_frames(self, df: DataFrame, batch_id: int) -> None:
        bid = F.lit(batch_id).cast("long")
        fr = df.where(F.col("kind") == KIND_FRAME).withColumn("p", F.from_json("payload", FRAME_PAYLOAD))
        fr = fr.withColumn("event_date", F.to_date(_ts("capture_ts")))
        self._append(fr.select(
            "camera_id", "frame_index", "pts_s", _ts("capture_ts").alias("capture_ts"),
            F.timestamp_seconds("p.ingest_ts").alias("ingest_ts"), _ts("processed_ts").alias("processed_ts"),
            "p.kafka_partition", "p.kafka_offset", "p.raw_detections", F.size("p.vehicles").alias("vehicles"),
            "p.decode_ms", "p.detect_ms", "p.embed_ms", "p.track_ms", "p.speed_ms", "p.state_bytes",
            bid.alias("batch_id"), "event_date"), tables.FRAMES, batch_id)
        det = fr.select("camera_id", "frame_index", "pts_s", "capture_ts", "event_date",
                        F.explode("p.vehicles").alias("v"))
        self._append(det.select(
            "camera_id", "frame_index", "pts_s", _ts("capture_ts").alias("capture_ts"), "v.track_id",
            "v.class_name", "v.confidence", "v.x1", "v.y1", "v.x2", "v.y2", "v.world_x_m", "v.world_y_m",
            "v.speed_kmh", "v.speed_flag", (F.col("v.over_limit") == "true").alias("over_limit"),
            bid.alias("batch_id"), "event_date"), tables.DETECTIONS, batch_id)
        # Results after Delta: a consumer that sees a frame can already find it in the tables.
        self._to_kafka(fr.select(F.col("camera_id").alias("key"), F.col("message").alias("value")),
                       self.settings.kafka.results_topic)

    def _write_dead(self, df: DataFrame, batch_id: int) -> None:
        dead = df.where(F.col("kind") == KIND_DEAD).withColumn("p", F.from_json("payload", DEAD_PAYLOAD))
        self._append(dead.select(
            "p.reason", "p.detail", "camera_id", "frame_index", "p.payload", "p.kafka_topic", "p.kafka_partition",
            "p.kafka_offset", _ts("processed_ts").alias("dead_ts"), F.lit(batch_id).cast("long").alias("batch_id")),
            tables.DEAD_LETTERS, batch_id)
        self._to_kafka(dead.select(F.coalesce("camera_id", F.lit("")).alias("key"), F.col("message").alias("value")),
                       self.settings.kafka.dead_letter_topic)

    def _write_tracks(self, df: DataFrame, batch_id: int) -> None:
        tr = df.where(F.col("kind") == KIND_TRACK).withColumn("p", F.from_json("payload", TRACK_PAYLOAD))
        tr = tr.select(
            "camera_id", "p.track_id", "p.class_name", "p.first_frame", "p.last_frame",
            F.timestamp_seconds("p.first_seen_ts").alias("first_seen_ts"),
            F.timestamp_seconds("p.last_seen_ts").alias("last_seen_ts"), "p.n_frames", "p.median_speed_kmh",
            "p.max_speed_kmh", "p.distance_m", "p.direction_deg", (F.col("p.ended") == "true").alias("ended"),
            F.lit(batch_id).cast("long").alias("updated_batch"))
        # A live summary and the ended one of the same track can meet in one batch: keep the latest.
        latest = Window.partitionBy("camera_id", "track_id").orderBy(F.col("ended").desc(), F.col("last_frame").desc())
        tr = tr.withColumn("_rank", F.row_number().over(latest)).where("_rank = 1").drop("_rank")
        self._merge(tr, tables.TRACKS, ["camera_id", "track_id"])

    def _write_flow(self, df: DataFrame, batch_id: int) -> None:
        fl = df.where(F.col("kind") == KIND_FLOW).withColumn("p", F.from_json("payload", FLOW_PAYLOAD))
        fl = fl.groupBy("camera_id", F.timestamp_seconds("p.minute_ts").alias("minute"), "p.class_name").agg(
            F.max("p.vehicles").alias("vehicles"))
        # A camera whose tracking state was reset counts its current minute again from 0: never lower a
        # count already published.
        self._merge(fl.withColumn("updated_batch", F.lit(batch_id).cast("long")), tables.FLOW,
                    ["camera_id", "minute", "class_name"], set_={"vehicles": "greatest(t.vehicles, s.vehicles)"})

    def _write_camera_events(self, df: DataFrame, batch_id: int) -> None:
        """Camera events that are not about one frame (a tracking-state reset): logged, and on the results
        topic as ``health`` messages with the camera id, so operators see them next to the batch health."""
        ev = df.where(F.col("kind") == KIND_HEALTH).withColumn("p", F.from_json("payload", HEALTH_PAYLOAD))
        msg = F.to_json(F.struct(
            F.lit(RESULT_VERSION).alias("v"), F.lit(RESULT_HEALTH).alias("type"), "camera_id",
            F.lit(batch_id).cast("long").alias("batch_id"), F.round("processed_ts", 3).alias("ts"),
            F.col("p.event").alias("event"), F.col("p.cause").alias("cause"), F.col("p.detail").alias("detail"),
            F.col("p.next_track_id").alias("next_track_id"), F.col("p.resets").alias("resets")))
        events = ev.select(F.col("camera_id").alias("key"), msg.alias("value"))
        for row in events.collect():  # a handful at most: one per camera whose state was reset
            log.warning("camera event in batch %d: %s", batch_id, row["value"])
        self._to_kafka(events, self.settings.kafka.results_topic)

    def _write_violations(self, df: DataFrame, batch_id: int) -> None:
        vio = df.where(F.col("kind") == KIND_VIOLATION)
        out_schema = StructType(TRACKED.fields + [StructField("evidence_uri", S)])
        vio = vio.mapInPandas(partial(render_evidence, self.settings_json), out_schema).persist()
        try:
            v = vio.withColumn("p", F.from_json("payload", VIOLATION_PAYLOAD))
            self._append(v.select(
                "camera_id", "p.track_id", "p.class_name", "frame_index", "pts_s",
                _ts("capture_ts").alias("capture_ts"), "p.speed_kmh", "p.limit_kmh", "p.over_s", "p.x1", "p.y1",
                "p.x2", "p.y2", "evidence_uri", F.lit(batch_id).cast("long").alias("batch_id"),
                F.to_date(_ts("capture_ts")).alias("event_date")), tables.VIOLATIONS, batch_id)
            msg = F.to_json(F.struct(
                F.lit(RESULT_VERSION).alias("v"), F.lit(RESULT_VIOLATION).alias("type"), "camera_id",
                F.col("p.track_id").alias("track_id"), "frame_index", "capture_ts",
                F.col("p.class_name").alias("cls"), F.round("p.speed_kmh", 1).alias("kmh"),
                F.col("p.limit_kmh").alias("limit_kmh"), F.round("p.over_s", 2).alias("over_s"), "evidence_uri",
                F.array(F.round("p.x1"), F.round("p.y1"), F.round("p.x2"), F.round("p.y2")).alias("box")))
            self._to_kafka(v.select(F.col("camera_id").alias("key"), msg.alias("value")),
                           self.settings.kafka.results_topic)
        finally:
            vio.unpersist()

    def _positions(self, df: DataFrame) -> list[tuple[str | None, int, int, float | None]]:
        """(camera, partition, max offset, newest capture_ts) of the frame references in this batch."""
        part = F.get_json_object("payload", "$.kafka_partition").cast("int")
        off = F.get_json_object("payload", "$.kafka_offset").cast("long")
        rows = (df.where(F.col("kind").isin(KIND_FRAME, KIND_DEAD))
                .groupBy("camera_id", part.alias("partition"))
                .agg(F.max(off).alias("offset"), F.max("capture_ts").alias("capture_ts")).collect())
        return [(r["camera_id"], r["partition"], r["offset"], r["capture_ts"]) for r in rows]

    def _health(self, df: DataFrame, batch_id: int, batch_ms: float, n_frames: int, counts: dict[str, int]) -> None:
        """Per-batch health on the results topic: duration, frames/s, consumer lag per camera."""
        try:
            lag: dict[str, int] = {}
            delay: dict[str, float] = {}
            now = time.time()
            for cam, part, off, cap in self._positions(df):
                if cam is None or part is None or off is None:
                    continue
                _, high = self._watermarks.get_watermark_offsets(
                    TopicPartition(self.settings.kafka.frames_topic, part), timeout=5)
                lag[cam] = max(lag.get(cam, 0), high - (off + 1))  # references published, not yet processed
                if cap is not None:
                    delay[cam] = round(now - cap, 3)
            msg = {
                "v": RESULT_VERSION, "type": RESULT_HEALTH, "batch_id": batch_id, "batch_ms": round(batch_ms, 1),
                "frames": n_frames, "fps": round(n_frames / (batch_ms / 1e3), 2) if batch_ms else None,
                "ts": round(now, 3), "lag": lag, "delay_s": delay, "counts": counts,
            }
            self._producer.produce(self.settings.kafka.results_topic, key=b"health", value=json.dumps(msg).encode())
            self._producer.poll(0)
        except Exception as exc:  # health is best effort; never fail a batch for it
            log.warning("health message for batch %d not sent: %s", batch_id, exc)
