"""Sinks of the vehicle job (``foreachBatch``): Delta tables, the results topic, dead letters, health.

Delivery semantics:
- Delta appends carry ``txnAppId`` (stable per checkpoint) + ``txnVersion`` (= batch id): when Spark
  replays a micro-batch after a crash, Delta skips the already committed write -> exactly once.
- ``tracks`` and ``flow`` are MERGE upserts of absolute values guarded by ``updated_batch``: a replayed
  batch changes nothing.
- Frame results never wait for Delta: the stage-2 tasks produce them as they track (or, with
  ``spark.results_from: driver``, this function produces them first, before any Delta commit;
  results_producer.py). Idempotent producers, acks=all, every acknowledgement awaited. Results and dead
  letters are at least once: a replayed batch may re-send them. Consumers de-duplicate on
  (camera_id, frame_index) — the dashboard does.
- ``detections`` holds what the detector saw; boxes predicted between detections (detection stride) are on
  the results topic only, and the frames table says how each frame was analysed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from confluent_kafka import Consumer, Producer, TopicPartition
from delta.tables import DeltaTable
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql.types import BooleanType, StringType, StructField, StructType

from trafficstream import tables
from trafficstream.config import Settings
from trafficstream.messages import CAMERA_ID_PATTERN
from trafficstream.results import HEALTH_KEY, batch_health_message, camera_event_message, encode
from trafficstream.streaming_jobs import table_rows
from trafficstream.streaming_jobs.delta_writers import Bound, DeltaWriter, RustDeltaWriter, SparkDeltaWriter, is_local
from trafficstream.streaming_jobs.evidence import render_clips, render_evidence
from trafficstream.streaming_jobs.results_producer import (
    PRODUCER_PROPERTIES,
    RESULT_KINDS,
    ordered_messages,
    produce_all,
    results_from,
)
from trafficstream.streaming_jobs.schemas import (
    KIND_DEAD,
    KIND_FRAME,
    KIND_HEALTH,
    KIND_VIOLATION,
    SPOOLED,
    spark_schema,
)
from trafficstream.streaming_jobs.shedding import (
    DETECTED,
    STEERING_PROPERTY,
    Steer,
    StrideController,
    batch_lateness,
    encode_steering,
)
from trafficstream.streaming_jobs.spool import Group, Spool

log = logging.getLogger(__name__)

# The evidence steps' rows (executors' mapInPandas): violations with their snapshot and clip URIs; clips made.
EVIDENCE_ROWS = StructType(
    SPOOLED.fields + [StructField("evidence_uri", StringType()), StructField("evidence_clip_uri", StringType())]
)
CLIPS_MADE = StructType([StructField("camera_id", StringType()), StructField("clip_made", BooleanType())])
EvidenceStep = Callable[[str, Iterator[pd.DataFrame]], Iterator[pd.DataFrame]]

# The vehicle job's tables: (schema, partition columns), derived from the declarations in trafficstream.tables.
TABLE_SCHEMAS: dict[str, tuple[StructType, list[str]]] = {
    t.name: (spark_schema(t), list(t.partition_by)) for t in tables.tables_of(tables.VEHICLE_JOB)
}


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
        # The driver's producer: batch health, dead letters, violations, camera events, and the frame results
        # unless stage 2 produces them. Idempotent, acks=all: a batch whose messages are not all acknowledged
        # fails and is retried (at least once).
        self._producer: Producer | None = Producer(
            settings.kafka.python_config(**PRODUCER_PROPERTIES, **{"client.id": "trafficstream-job-results"})
        )
        # Frame results from the stage-2 tasks (results_producer.py), or from here before any Delta commit.
        self.results_in_stage2 = results_from(settings) == "stage2"
        self._watermarks: Consumer | None = Consumer(
            settings.kafka.python_config(**{"group.id": "trafficstream-job-lag", "enable.auto.commit": False})
        )
        self.last: dict[str, Any] = {}
        # One load-shedding controller per camera (stride, skip age), fed by each batch's lateness and duration;
        # the next batch's tasks read them from a local property of the query's thread (shedding.py).
        self._steering: dict[str, StrideController] | None = None
        if settings.live.shed_load:
            self._steering = {cam.id: self._stride_controller(cam.id) for cam in settings.cameras}
        self._lock = threading.Lock()
        # Sinks are independent: Spark runs their jobs concurrently from driver threads, which overlaps the
        # per-commit driver work (planning, Delta log) that dominates small micro-batches.
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix="sink")
        # One JSON line per micro-batch (compute/sink timings) for `make demo` / `make bench` reports.
        self.metrics_path = settings.storage.var_dir / "metrics" / f"{self.app_id}.jsonl"
        self.metrics_path.parent.mkdir(parents=True, exist_ok=True)
        self._sink_ms: dict[str, float] = {}
        self.delta = delta_writer(spark, settings, self.paths, self.app_id)
        self._evidence_on_driver = (spark.sparkContext.master or "").startswith("local")
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
    def _timed(self, sink: str, timings: dict[str, float]) -> Iterator[None]:
        """Add the block's duration (ms) to ``timings[sink]``."""
        t0 = time.perf_counter()
        yield
        with self._lock:
            timings[sink] = round(timings.get(sink, 0.0) + (time.perf_counter() - t0) * 1e3, 1)

    # -- the batch -------------------------------------------------------------------------------------
    def __call__(self, batch_df: DataFrame, batch_id: int) -> None:
        t0 = time.perf_counter()
        self._sink_ms = {}
        if self._committer is not None:
            self._committer.check()  # a committer that keeps failing fails the query (restarted from the checkpoint)
        # One action: the batch's rows reach the driver (results, health, Delta or the spool).
        table = batch_df.toArrow()
        rows = summary_rows(table)
        counts = dict(Counter(r["kind"] for r in rows))
        t1 = time.perf_counter()
        if self._steering is not None and counts:
            self._steer(rows, t1 - t0)
        # Results first (unless stage 2 produced them): a frame reaches the results topic before any Delta
        # commit of its batch.
        if not self.results_in_stage2:
            with self._timed("results", self._sink_ms):
                self._publish_results(rows)
        if counts and self._committer is not None:
            with self._timed("spool", self._sink_ms):
                self._committer.put(batch_id, table)
        elif counts:
            self._write(with_batch_id(table, batch_id), batch_id, self._sink_ms)
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

    def commit_group(self, table: pa.Table, version: int) -> dict[str, Any]:
        """Commit spooled batches (``table``: their rows with ``batch_id``) to every Delta table as one
        transaction per table (``txnVersion`` = ``version``). Called by the committer thread."""
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        counts = dict(Counter(table.column("kind").to_pylist()))
        self._write(table, version, timings)
        return {"counts": counts, "delta_ms": round((time.perf_counter() - t0) * 1e3, 1), "sinks": timings}

    def _steer(self, rows: list[dict[str, Any]], batch_s: float) -> None:
        """Update each camera's detection stride and skip age from how late this batch's results are and how
        long it took, and hand them to the next micro-batch's tasks (Spark local property of this thread, the
        query's: its jobs carry it). Only live references use them (stage 1)."""
        assert self._steering is not None
        now = time.time()
        for cam, late in batch_lateness(rows, now).items():
            ctl = self._steering.get(cam)
            if ctl is None:
                continue  # not a configured camera: its frames are dead letters
            before = ctl.stride
            if ctl.observe(late, now, batch_s) != before:
                log.debug("camera %s: detection stride %d -> %d (results %.2f s late)", cam, before, ctl.stride, late)
        self.publish_steering()

    def _stride_controller(self, camera_id: str) -> StrideController:
        camera = self.settings.camera(camera_id)
        live = self.settings.live
        return StrideController(
            camera.detect_every, live.max_detect_every, self.settings.budget_s(camera), start_high=True
        )

    def publish_steering(self) -> None:
        """Set the cameras' detection strides and skip ages as a local property of this thread: the micro-batches'
        tasks read it (perception.driver_steering). Called on the query's thread, and once before the query
        starts (its thread inherits the starting strides)."""
        if self._steering is not None:
            steering = {cam: Steer(ctl.stride, ctl.skip_after_s) for cam, ctl in self._steering.items()}
            self.spark.sparkContext.setLocalProperty(STEERING_PROPERTY, encode_steering(steering))

    def _publish_results(self, rows: list[dict[str, Any]]) -> None:
        """Produce the batch's frame messages (key: camera id) and wait for every acknowledgement; raise if
        any failed, so Spark retries the batch (consumers de-duplicate on camera_id + frame_index)."""
        self._produce(self.settings.kafka.results_topic, ordered_messages(rows))

    def _write(self, rows: pa.Table, version: int, timings: dict[str, float]) -> None:
        """Every sink of stage-2 ``rows`` (with their ``batch_id``): the Delta tables with txnVersion
        ``version``, dead letters and camera events on their topics."""
        derived = table_rows.derive(rows)
        bounds = {table: merge_bound(derived[table], column) for table, column in MERGE_BOUND_COLUMNS.items()}

        def write(table: str) -> None:
            with self._timed(table, timings):
                data = derived[table]
                if tables.table(table).write == tables.MERGE:
                    keep_max = ("vehicles",) if table == tables.FLOW else ()  # a reset camera recounts from 0
                    self.delta.merge(table, data, keep_max=keep_max, bound=bounds.get(table))
                else:
                    self.delta.append(table, data, version)

        jobs = [partial(write, t) for t, data in derived.items() if data.num_rows]
        kinds = set(rows.column("kind").to_pylist())
        if KIND_VIOLATION in kinds:
            jobs.append(partial(self._write_violations, rows, version, timings))
        if KIND_DEAD in kinds or KIND_HEALTH in kinds:
            jobs.append(partial(self._publish_events, rows, timings))
        futures = [self._pool.submit(job) for job in jobs]
        errors = [f.exception() for f in futures]  # waits for all: never leave a sink half-running
        for exc in errors:
            if exc is not None:
                raise exc

    def _write_violations(self, rows: pa.Table, version: int, timings: dict[str, float]) -> None:
        """Evidence snapshots (they read the video), then the table and the results topic's violation
        messages, then the clips they name. The group commits once the clips exist, so a replayed group (after
        a crash) makes them again; the table's append is idempotent (txnVersion)."""
        with self._timed("evidence", timings):
            vio = rows.filter(pc.equal(rows.column("kind"), KIND_VIOLATION)).select(SPOOLED.fieldNames())
            rendered = self._evidence_step(render_evidence, vio, SPOOLED, EVIDENCE_ROWS)
        with self._timed(tables.VIOLATIONS, timings):
            self.delta.append(tables.VIOLATIONS, table_rows.violations(rendered), version)
        messages = rendered.select(["camera_id", "message"]).to_pylist()
        with self._timed(f"kafka:{self.settings.kafka.results_topic}", timings):
            self._produce(self.settings.kafka.results_topic, [(m["camera_id"], m["message"]) for m in messages])
        if rendered.column("evidence_clip_uri").null_count < rendered.num_rows:
            with self._timed("clips", timings):
                made = self._evidence_step(render_clips, rendered, EVIDENCE_ROWS, CLIPS_MADE)
            missing = made.num_rows - sum(made.column("clip_made").to_pylist())
            if missing:
                log.warning("%d of %d evidence clips not made", missing, made.num_rows)

    def _evidence_step(self, step: EvidenceStep, rows: pa.Table, schema: StructType, out: StructType) -> pa.Table:
        """``step`` (``render_evidence`` or ``render_clips``) over a group's violation rows."""
        if self._evidence_on_driver:
            # Spark in local mode: the driver is on the executors' machine. Rendering here (the clip in a
            # low-priority helper process) holds no task slot, so the live micro-batches never wait for it.
            frames = list(step(self.settings_json, iter([rows.to_pandas()])))
            return pa.Table.from_pandas(pd.concat(frames, ignore_index=True), preserve_index=False)
        # one task: at most one slot held while the evidence is rendered on an executor
        df = self.spark.createDataFrame(rows.select(schema.fieldNames()), schema=schema).coalesce(1)
        return df.mapInPandas(partial(step, self.settings_json), out).toArrow()

    def _publish_events(self, rows: pa.Table, timings: dict[str, float]) -> None:
        """Dead letters on the dead-letter topic (their original payload and reason); camera events that
        are not about one frame (a tracking-state reset) logged, and on the results topic as ``health``
        messages with the camera id, so operators see them next to the batch health."""
        dead = [(r.get("camera_id") or "", r["message"]) for r, _ in table_rows.parsed(rows, KIND_DEAD)]
        events = []
        for r, p in table_rows.parsed(rows, KIND_HEALTH):  # one per camera reset
            value = camera_event_result({**r, **p}, r["batch_id"])
            log.warning("camera event in batch %d: %s", r["batch_id"], value)
            events.append((r["camera_id"], value))
        with self._timed("kafka:events", timings):
            self._produce(self.settings.kafka.dead_letter_topic, dead)
            self._produce(self.settings.kafka.results_topic, events)

    def _produce(self, topic: str, messages: Sequence[tuple[str | None, str | None]]) -> None:
        """Produce (key, value) messages and wait for every acknowledgement; raise if any failed."""
        if self._producer is None:
            raise RuntimeError("the writer is closed")
        produce_all(self._producer, topic, messages)

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


# A column of each MERGE table that never changes for a row (a track's first sighting, a flow row's minute, an
# event's start): every target row a batch updates has it no earlier than the batch's own rows do.
MERGE_BOUND_COLUMNS = {tables.TRACKS: "first_seen_ts", tables.FLOW: "minute", tables.EVENTS: "start_ts"}


def merge_bound(rows: pa.Table, column: str, margin_s: float = 60.0) -> Bound | None:
    """A target bound for the MERGE of ``rows`` (a table's rows): per camera in them, ``column`` (a timestamp)
    no earlier than its smallest value there, less ``margin_s``; cameras not in the batch are pruned by
    partition. None (no bound) when a row lacks the value or its camera id is not one that may be spliced
    into a predicate."""
    low: dict[str, int] = {}
    micros = rows.column(column).cast(pa.int64()).to_pylist()
    for cam, us in zip(rows.column("camera_id").to_pylist(), micros, strict=True):
        if us is None or cam is None or not CAMERA_ID_PATTERN.fullmatch(cam):
            return None
        low[cam] = min(low.get(cam, us), us)
    if not low:
        return None
    margin = round(margin_s * 1e6)
    return Bound(column, {cam: us - margin for cam, us in low.items()})


def with_batch_id(table: pa.Table, batch_id: int) -> pa.Table:
    """Stage-2 rows with the micro-batch that produced them (``SPOOLED``)."""
    return table.append_column("batch_id", pa.array([batch_id] * table.num_rows, pa.int64()))


def delta_writer(spark: SparkSession, settings: Settings, paths: dict[str, str], app_id: str) -> DeltaWriter:
    """delta-rs for tables on local or mounted paths, Spark's writer for object storage (or as configured)."""
    choice = settings.spark.delta_writer
    if choice == "auto":
        choice = "delta-rs" if all(is_local(p) for p in paths.values()) else "spark"
    log.info("Delta tables written by %s", choice)
    if choice == "delta-rs":
        return RustDeltaWriter(paths, app_id)
    return SparkDeltaWriter(spark, paths, app_id)


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
        self.spool.put(batch_id, with_batch_id(table, batch_id))
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
