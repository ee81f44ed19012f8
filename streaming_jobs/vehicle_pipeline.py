"""Vehicle analytics job: frame references from Kafka -> detect, track, speed -> Delta + results topic.

Submit (local, jars resolved by ``make jars`` into infra/lib/spark)::

    spark-submit --master local[2] \\
      --jars "$(python -m trafficstream.infra.jars list --csv)" \\
      --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \\
      --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \\
      streaming_jobs/vehicle_pipeline.py --config infra/config/demo.yaml

On a cluster use ``--packages org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0,io.delta:delta-spark_2.13:4.4.0``
instead of ``--jars``, ship the project as a wheel / ``--py-files``, and put ``storage.delta_root`` and
``storage.checkpoint_root`` on shared storage (``--set storage.delta_root=s3a://...``).

Reads top to bottom: readStream (Spark's Kafka source; offsets live in the query checkpoint)
-> stage 1 ``mapInArrow`` (stateless: decode, detect, embed; streaming_jobs/perception.py)
-> stage 2 ``applyInPandasWithState`` keyed by camera (tracking state in the state store; tracking.py)
   which also produces each camera's results as soon as it is tracked (results_producer.py)
-> writeStream ``foreachBatch`` (Delta tables exactly once, dead-letter topic, health, violations; sinks.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from functools import partial
from pathlib import Path

from pyspark.sql import SparkSession
from pyspark.sql import functions as F
from pyspark.sql.streaming import StreamingQuery
from pyspark.sql.streaming.state import GroupStateTimeout

from trafficstream.config import (
    Settings,
    add_config_arguments,
    check_cameras_against_sources,
    settings_from_args,
    settings_to_json,
)
from trafficstream.errors import ConfigError
from trafficstream.logs import setup_logging
from trafficstream.streaming_jobs.perception import perceive_batches, warm_batches
from trafficstream.streaming_jobs.results_producer import stage2_target
from trafficstream.streaming_jobs.scheduling import STREAM_POOL, fair_scheduler_conf, use_pool
from trafficstream.streaming_jobs.schemas import CAMERA_STATE, PERCEPTION, TRACKED
from trafficstream.streaming_jobs.shedding import STEERING_PROPERTY
from trafficstream.streaming_jobs.sinks import BatchWriter
from trafficstream.streaming_jobs.tracking import track_camera

log = logging.getLogger("vehicle_pipeline")
QUERY_NAME = "vehicles"


def spark_session(settings: Settings, extra_conf: dict[str, str] | None = None) -> SparkSession:
    """Session with Delta enabled; jars come from spark-submit (--jars/--packages) or ``spark.jars``."""
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # workers use this interpreter (the venv)
    builder = (
        SparkSession.builder.appName(settings.spark.app_name)
        .config("spark.sql.extensions", "io.delta.sql.DeltaSparkSessionExtension")
        .config("spark.sql.catalog.spark_catalog", "org.apache.spark.sql.delta.catalog.DeltaCatalog")
        .config("spark.sql.shuffle.partitions", str(settings.spark.shuffle_partitions))
        # Keep new tables readable by delta-rs / Polars: no deletion vectors.
        .config("spark.databricks.delta.properties.defaults.enableDeletionVectors", "false")
        .config("spark.sql.session.timeZone", "UTC")
    )
    if settings.spark.master:
        builder = builder.master(settings.spark.master)
    if settings.spark.scheduler_pools:
        for key, value in fair_scheduler_conf().items():
            builder = builder.config(key, value)
    for key, value in {**settings.spark.conf, **(extra_conf or {})}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def start_query(
    spark: SparkSession,
    settings: Settings,
    checkpoint: str | None = None,
    *,
    available_now: bool = False,
) -> tuple[StreamingQuery, BatchWriter]:
    """Build and start the streaming query. ``available_now`` processes what is in Kafka and stops."""
    settings_json = settings_to_json(settings)
    checkpoint = checkpoint or settings.checkpoint_uri(QUERY_NAME)

    source = (
        spark.readStream.format("kafka")
        .options(**settings.kafka.spark_options())
        .option("subscribe", settings.kafka.frames_topic)
        .option("startingOffsets", settings.spark.starting_offsets)
        .option("maxOffsetsPerTrigger", settings.spark.max_offsets_per_trigger)
    )
    if settings.spark.min_partitions:
        source = source.option("minPartitions", settings.spark.min_partitions)
    frames = source.load()

    # current_timestamp() is the micro-batch's start in a streaming query, the same in every task (load shedding)
    batch_us = F.unix_micros(F.current_timestamp()).alias("batch_us")
    perceived = frames.select("value", "topic", "partition", "offset", batch_us).mapInArrow(
        partial(perceive_batches, settings_json), PERCEPTION
    )

    # stage 2 produces each camera's results as soon as it is tracked, unless the driver does (results_producer.py)
    track = partial(track_camera, settings_json, results_target=stage2_target(settings))
    tracked = perceived.groupBy("camera_id").applyInPandasWithState(
        track, TRACKED, CAMERA_STATE, "append", GroupStateTimeout.NoTimeout
    )

    writer = BatchWriter(spark, settings, settings_json, checkpoint)
    if settings.spark.scheduler_pools:
        use_pool(spark.sparkContext, STREAM_POOL)  # the query's threads inherit it when it starts
    stream = tracked.writeStream.queryName(QUERY_NAME).foreachBatch(writer).option("checkpointLocation", checkpoint)
    if available_now:
        stream = stream.trigger(availableNow=True)
    elif settings.spark.trigger_seconds:
        stream = stream.trigger(processingTime=f"{settings.spark.trigger_seconds} seconds")
    writer.publish_steering()  # the starting strides: the query's thread inherits them
    try:
        return stream.start(), writer
    finally:
        spark.sparkContext.setLocalProperty(STEERING_PROPERTY, None)  # type: ignore[arg-type]  # None removes it


def warm_up(spark: SparkSession, settings: Settings) -> float:
    """Load the models into the Python workers and run each once before the query starts, so that the first
    frames meet the latency budget too (a cold worker spends seconds loading ONNX sessions). Returns seconds."""
    t0 = time.perf_counter()
    n = max(1, spark.sparkContext.defaultParallelism)
    schema = "ms double"
    spark.range(n, numPartitions=n).mapInArrow(partial(warm_batches, settings_to_json(settings)), schema).collect()
    return time.perf_counter() - t0


def offsets_behind(progress: dict) -> int:
    """Kafka records the micro-batch of ``progress`` left behind the latest (the Kafka source's
    ``maxOffsetsBehindLatest``, per partition; 0 when it read everything or the metric is absent)."""
    behind = 0
    for source in progress.get("sources") or []:
        try:
            behind = max(behind, int(float((source.get("metrics") or {}).get("maxOffsetsBehindLatest", 0))))
        except (TypeError, ValueError):
            continue
    return behind


BACKLOG_WARN_EVERY_S = 60.0


class QueryFailed(RuntimeError):
    """The streaming query stopped with an exception (its cause is in ``__cause__``)."""


def run_until_stopped(query: StreamingQuery, stop_file: Path | None, idle_s: float | None) -> None:
    """Wait for the query; stop it gracefully when ``stop_file`` appears or after ``idle_s`` without input.

    Raises :class:`QueryFailed` when the query died on its own (a broker outage, a failed sink).
    """
    last_active = time.time()
    seen_batch = -1
    warned_at = float("-inf")
    while query.isActive:
        if query.awaitTermination(1):  # seconds
            break
        progress = query.lastProgress
        if progress and progress["batchId"] != seen_batch:
            seen_batch = progress["batchId"]
            # Spark's own phases per micro-batch (addBatch = the frame work + sinks): where latency goes.
            log.info(
                "micro-batch %s: %s rows, durations ms %s",
                seen_batch,
                progress.get("numInputRows"),
                progress.get("durationMs"),
            )
            if progress.get("numInputRows", 0) > 0:
                last_active = time.time()
            behind = offsets_behind(progress)
            if behind and time.time() - warned_at > BACKLOG_WARN_EVERY_S:
                warned_at = time.time()
                # a backlog behind the per-trigger cap: live references wait in Kafka and are then shed as stale
                log.warning(
                    "micro-batch %s left %d frame references behind the latest in Kafka "
                    "(spark.max_offsets_per_trigger caps each batch): live cameras will be shed as stale; "
                    "raise the cap if this persists",
                    seen_batch,
                    behind,
                )
        if query.status.get("isTriggerActive"):
            last_active = time.time()
        if stop_file is not None and stop_file.exists():
            log.info("stop file %s found: stopping the query", stop_file)
            break
        if idle_s is not None and time.time() - last_active > idle_s:
            log.info("no input for %.0f s: stopping the query", idle_s)
            break
    query.stop()
    if query.exception() is not None:
        raise QueryFailed(f"streaming query failed: {query.exception()}")


def run_supervised(spark: SparkSession, settings: Settings, args: argparse.Namespace) -> None:
    """Run the query; when it fails (broker restart, storage hiccup) restart it from its checkpoint with
    exponential backoff, like a cluster manager would restart the driver, up to ``--max-restarts`` in a row.
    A query that ran for ``stable_s`` resets the count: only a fault that persists stops the job."""
    restarts, backoff, stable_s = 0, 2.0, 300.0
    if not args.no_warm_up:
        log.info("workers warmed up in %.1f s (models loaded)", warm_up(spark, settings))
    while True:
        started = time.time()
        query, writer = start_query(spark, settings, args.checkpoint, available_now=args.available_now)
        log.info(
            "query %s started (id %s); checkpoint %s",
            QUERY_NAME,
            query.id,
            args.checkpoint or settings.checkpoint_uri(QUERY_NAME),
        )
        try:
            if args.available_now:
                query.awaitTermination()
                if query.exception() is not None:
                    raise QueryFailed(f"streaming query failed: {query.exception()}")
            else:
                run_until_stopped(query, args.stop_file, args.idle_timeout or settings.spark.stop_after_idle_s)
            return
        except QueryFailed as exc:
            if time.time() - started > stable_s:
                restarts, backoff = 0, 2.0
            if restarts >= args.max_restarts:
                log.error("%s; %d restarts in a row, giving up", exc, restarts)
                raise
            restarts += 1
            log.warning(
                "%s; restarting from the checkpoint in %.0f s (restart %d of at most %d)",
                str(exc).splitlines()[0][:500],
                backoff,
                restarts,
                args.max_restarts,
            )
            time.sleep(backoff)
            backoff = min(backoff * 2, 60.0)
        finally:
            writer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="vehicle_pipeline", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument(
        "--checkpoint", default=None, help="query checkpoint (default storage.checkpoint_root/vehicles)"
    )
    parser.add_argument("--available-now", action="store_true", help="process what is in Kafka, then exit")
    parser.add_argument("--stop-file", type=Path, default=None, help="stop gracefully when this file appears")
    parser.add_argument("--idle-timeout", type=float, default=None, help="stop after N seconds without input")
    parser.add_argument("--no-warm-up", action="store_true", help="start the query without loading the models first")
    parser.add_argument(
        "--max-restarts",
        type=int,
        default=10,
        help="restart a failed query from its checkpoint up to N times in a row (default 10)",
    )
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
        # Executors may see the videos where the driver cannot (a cluster): unreadable sources only warn here.
        check_cameras_against_sources(settings, require_sources=False)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    spark = spark_session(settings)
    spark.sparkContext.setLogLevel("WARN")
    try:
        run_supervised(spark, settings, args)
    except KeyboardInterrupt:
        log.info("interrupted: the checkpoint resumes the query")
    except QueryFailed as exc:
        log.error("%s", exc)
        spark.stop()
        return 1
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
