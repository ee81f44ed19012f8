"""Traffic statistics batch job: ``detections`` / ``tracks`` / ``violations`` -> Delta table ``traffic_stats``;
``crossings`` -> ``line_stats`` (flow and speeds per counting line, direction and lane).

Submit (local, jars resolved by ``make jars`` into infra/lib/spark; every 15 minutes from cron or the
CronJob in infra/k8s/)::

    spark-submit --master local[2] \\
      --jars "$(python -m trafficstream.infra.jars list --csv)" \\
      --conf spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension \\
      --conf spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog \\
      streaming_jobs/traffic_statistics.py --config infra/config/demo.yaml \\
      [--since 2024-05-01T08:00Z --until 2024-05-01T10:00Z]     # default: the last 2 hours

On a cluster: ``--packages io.delta:delta-spark_2.13:4.4.0`` instead of ``--jars`` (as the vehicle job).

One row per camera x bin x class, for 1-minute and 15-minute bins (``bin_minutes`` 1 | 15, ``bin_start``
UTC); columns and units are declared in trafficstream/tables.py (docs/tables.md). Definitions:

* **vehicles**: distinct tracks (``tracks`` table) whose ``first_seen_ts`` lies in the bin, by the track's
  majority class. A vehicle belongs to exactly one bin of each size, however long it is seen.
* **speeds** use TRUSTED estimates only: ``detections`` rows with ``speed_kmh`` not null and ``speed_flag``
  null. Each vehicle first gets ONE speed, the median of its trusted estimates (from any detection of the
  track up to 10 minutes after ``--until``, so a vehicle first seen at the end of a bin is measured as it
  drives on); then mean / median / 85th percentile are taken over vehicles, not over detections (a slow
  vehicle seen in 60 frames must not weigh 10x a fast one seen in 6). Percentiles are exact with linear
  interpolation between the closest ranks (Spark ``percentile``, numpy's default); speeds rounded to 0.01 km/h
  (which also makes reruns bit-identical whatever the summation order). Vehicles without any trusted estimate
  count in ``vehicles`` but not in ``speed_vehicles`` and the speed columns.
* **share_over_limit** = vehicles whose speed exceeds the camera's ``speed_limit_kmh`` (deployment config at
  computation time, stored in ``speed_limit_kmh``) / ``speed_vehicles``; null without a limit or speeds.
  Violations are stricter (over the limit for ``min_violation_s``), so they are counted separately:
* **violations**: ``violations`` records whose evidence frame (``capture_ts``) lies in the bin, by the
  violation's class: "violations this quarter hour", independent of when the vehicle was first seen.

``line_stats``: one row per camera x line x direction x lane x bin x class, from the ``crossings`` table:
**vehicles** = crossings whose ``crossing_ts`` lies in the bin (a vehicle crosses a line once per direction);
speeds over the crossings' trusted ``speed_kmh`` at the line, as above. A crossing outside every lane (or on
a camera without lanes) has ``lane_id`` '' (empty), an unknown class ''.

Exactly once / idempotent (both tables, each in its own commit): the range is widened to whole 15-minute
bins and the job recomputes it from the source tables and writes it with Delta ``replaceWhere`` on
``bin_start`` in that range: one atomic commit that replaces every row of the range (rows that no longer
have data disappear). Rerunning a range, or a crash and a rerun, gives the same table. Bins near "now" are
provisional: the default window of the last 2 hours, run every 15 minutes, recomputes each bin 8 times,
which absorbs the vehicle job's lag. Overlapping runs are not supported (the second one fails on Delta's
conflict check): schedule with ``concurrencyPolicy: Forbid``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import time
from datetime import datetime, timedelta, timezone
from typing import Any

from pyspark.sql import Column, DataFrame, SparkSession
from pyspark.sql import functions as F

from trafficstream import tables
from trafficstream.config import Settings, add_config_arguments, settings_from_args
from trafficstream.errors import ConfigError
from trafficstream.logs import setup_logging
from trafficstream.streaming_jobs.schemas import spark_schema
from trafficstream.streaming_jobs.vehicle_pipeline import spark_session

log = logging.getLogger("traffic_statistics")

TRAFFIC_STATS = tables.TRAFFIC_STATS
# The table contract is declared once, in trafficstream/tables.py; the Spark schema derives from it.
_DECL = tables.table(TRAFFIC_STATS)
SCHEMA = spark_schema(_DECL)
COLUMNS = [(f.name, f.dataType) for f in SCHEMA.fields]
KEY = _DECL.keys
PARTITION_BY = _DECL.partition_by
BIN_MINUTES = (1, 15)
ALIGN = timedelta(minutes=max(BIN_MINUTES))
DEFAULT_LOOKBACK = timedelta(hours=2)
SPEED_MARGIN = timedelta(minutes=10)  # trusted speeds of a vehicle are read this long after --until
SPEED_DECIMALS = 2
LINE_STATS = tables.LINE_STATS
LINE_SCHEMA = spark_schema(tables.table(LINE_STATS))


# -- time range ---------------------------------------------------------------------------------------------
def parse_time(text: str) -> datetime:
    """ISO 8601 (``2024-05-01T08:00``, ``...Z``, ``...+02:00``); no offset means UTC."""
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: expected an ISO 8601 time, e.g. 2024-05-01T08:00Z") from None
    return value.replace(tzinfo=timezone.utc) if value.tzinfo is None else value.astimezone(timezone.utc)


def aligned_range(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """Widen [since, until) to whole 15-minute bins (which are whole 1-minute bins too)."""
    step = ALIGN.total_seconds()
    lo = math.floor(since.timestamp() / step) * step
    hi = math.ceil(until.timestamp() / step) * step
    return datetime.fromtimestamp(lo, timezone.utc), datetime.fromtimestamp(hi, timezone.utc)


def _lit_ts(value: datetime) -> Column:
    return F.lit(value.astimezone(timezone.utc))  # an aware datetime: the same instant in any session time zone


def _sql_ts(value: datetime) -> str:
    """A SQL timestamp literal with its zone, so it does not depend on the session time zone either."""
    return f"TIMESTAMP '{value.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S}+00:00'"


def _bin(ts: Column) -> Column:
    """Start of the ``bin_minutes``-long bin holding ``ts`` (bins aligned to the epoch, so to whole hours)."""
    seconds = F.col("bin_minutes") * 60
    return F.timestamp_seconds(F.floor(F.unix_seconds(ts) / seconds) * seconds)


def _per_bin_size(df: DataFrame, ts: str) -> DataFrame:
    """Each row once per bin size, with its ``bin_minutes`` and ``bin_start``: one aggregation for all sizes."""
    sizes = F.array(*[F.lit(m) for m in BIN_MINUTES])
    return df.withColumn("bin_minutes", F.explode(sizes)).withColumn("bin_start", _bin(F.col(ts)))


# -- computation --------------------------------------------------------------------------------------------
def _read(spark: SparkSession, settings: Settings, table: str) -> DataFrame:
    return spark.read.format("delta").load(settings.table_uri(table))


def camera_limits(spark: SparkSession, settings: Settings) -> DataFrame:
    rows = [(cam.id, float(cam.speed_limit_kmh)) for cam in settings.cameras]
    return spark.createDataFrame(rows, "camera_id string, speed_limit_kmh double")


def vehicle_speeds(spark: SparkSession, settings: Settings, since: datetime, until: datetime) -> DataFrame:
    """One row per vehicle first seen in [since, until): class, first seen, its median trusted speed, limit."""
    tracks = (
        _read(spark, settings, tables.TRACKS)
        .where((F.col("first_seen_ts") >= _lit_ts(since)) & (F.col("first_seen_ts") < _lit_ts(until)))
        .select("camera_id", "track_id", "class_name", "first_seen_ts")
    )
    end = until + SPEED_MARGIN
    trusted = (
        _read(spark, settings, tables.DETECTIONS)
        # event_date prunes partitions; capture_ts alone would scan every day of the table
        .where(F.col("event_date").between(F.lit(since.date()), F.lit(end.date())))
        .where((F.col("capture_ts") >= _lit_ts(since)) & (F.col("capture_ts") < _lit_ts(end)))
        .where(F.col("speed_kmh").isNotNull() & F.col("speed_flag").isNull() & ~F.isnan("speed_kmh"))
        .groupBy("camera_id", "track_id")
        .agg(F.median("speed_kmh").alias("speed_kmh"))
    )
    return tracks.join(trusted, ["camera_id", "track_id"], "left").join(
        F.broadcast(camera_limits(spark, settings)), "camera_id", "left"
    )


def _round(col: Column) -> Column:
    return F.round(col, SPEED_DECIMALS)


def _speed_aggregates(speed: Column) -> list[Column]:
    """vehicles, speed_vehicles and the mean / median / 85th percentile of ``speed`` (nulls left out)."""
    return [
        F.count(F.lit(1)).alias("vehicles"),
        F.count(speed).alias("speed_vehicles"),
        _round(F.avg(speed)).alias("mean_speed_kmh"),
        _round(F.percentile(speed, 0.5)).alias("median_speed_kmh"),
        _round(F.percentile(speed, 0.85)).alias("p85_speed_kmh"),
    ]


def compute_stats(spark: SparkSession, settings: Settings, since: datetime, until: datetime) -> DataFrame:
    """Rows of ``traffic_stats`` for [since, until) (already aligned), in :data:`SCHEMA` order."""
    vehicles = vehicle_speeds(spark, settings, since, until)
    violations = _read(spark, settings, tables.VIOLATIONS).where(
        (F.col("capture_ts") >= _lit_ts(since)) & (F.col("capture_ts") < _lit_ts(until))
    )
    speed, limit = F.col("speed_kmh"), F.col("speed_limit_kmh")
    keys = ["camera_id", "bin_minutes", "bin_start", "class_name"]
    stats = (
        _per_bin_size(vehicles, "first_seen_ts")
        .groupBy(*keys)
        .agg(
            *_speed_aggregates(speed),
            F.sum(F.when(speed.isNotNull() & limit.isNotNull(), (speed > limit).cast("long"))).alias(
                "over_limit_vehicles"
            ),
        )
    )
    vio = _per_bin_size(violations, "capture_ts").groupBy(*keys).agg(F.count(F.lit(1)).alias("violations"))
    out = stats.join(vio, keys, "full").join(F.broadcast(camera_limits(spark, settings)), "camera_id", "left")
    has_limit_and_speeds = limit.isNotNull() & (F.col("speed_vehicles") > 0)
    out = (
        out.fillna(0, subset=["vehicles", "speed_vehicles", "violations"])
        .withColumn(
            "over_limit_vehicles", F.when(limit.isNotNull(), F.coalesce(F.col("over_limit_vehicles"), F.lit(0)))
        )
        .withColumn(
            "share_over_limit", F.when(has_limit_and_speeds, F.col("over_limit_vehicles") / F.col("speed_vehicles"))
        )
    )
    return out.select(*[F.col(name).cast(dtype).alias(name) for name, dtype in COLUMNS])


def compute_line_stats(spark: SparkSession, settings: Settings, since: datetime, until: datetime) -> DataFrame:
    """Rows of ``line_stats`` for [since, until) (already aligned), in :data:`LINE_SCHEMA` order."""
    crossings = (
        _read(spark, settings, tables.CROSSINGS)
        .where(F.col("event_date").between(F.lit(since.date()), F.lit(until.date())))
        .where((F.col("crossing_ts") >= _lit_ts(since)) & (F.col("crossing_ts") < _lit_ts(until)))
        .withColumn("lane_id", F.coalesce("lane_id", F.lit("")))
        .withColumn("class_name", F.coalesce("class_name", F.lit("")))
        .withColumn("speed_kmh", F.when(~F.isnan("speed_kmh"), F.col("speed_kmh")))
    )
    speed = F.col("speed_kmh")
    keys = ["camera_id", "line_id", "direction", "lane_id", "bin_minutes", "bin_start", "class_name"]
    out = _per_bin_size(crossings, "crossing_ts").groupBy(*keys).agg(*_speed_aggregates(speed))
    return out.select(*[F.col(f.name).cast(f.dataType).alias(f.name) for f in LINE_SCHEMA.fields])


# -- output -------------------------------------------------------------------------------------------------
def create_table(spark: SparkSession, settings: Settings, name: str = TRAFFIC_STATS) -> str:
    from delta.tables import DeltaTable

    decl = tables.table(name)
    path = settings.table_uri(name)
    (
        DeltaTable.createIfNotExists(spark)
        .location(path)
        .addColumns(spark_schema(decl))
        .partitionedBy(*decl.partition_by)
        .execute()
    )
    return path


def replace_predicate(since: datetime, until: datetime) -> str:
    return f"bin_start >= {_sql_ts(since)} AND bin_start < {_sql_ts(until)}"


def run(spark: SparkSession, settings: Settings, since: datetime, until: datetime) -> dict[str, Any]:
    """Recompute and atomically replace [since, until) widened to whole bins; returns a summary."""
    from delta.tables import DeltaTable

    t0 = time.perf_counter()
    since, until = aligned_range(since, until)
    if until <= since:
        raise ValueError(f"empty time range: {since.isoformat()} .. {until.isoformat()}")
    missing = [
        t
        for t in (tables.DETECTIONS, tables.TRACKS, tables.VIOLATIONS)
        if not DeltaTable.isDeltaTable(spark, settings.table_uri(t))
    ]
    if missing:
        raise FileNotFoundError(
            f"input tables missing under {settings.storage.delta_root}: {', '.join(missing)} "
            "(the vehicle job creates them when it starts)"
        )
    if not settings.cameras:
        log.warning("no cameras configured: share_over_limit will be null (no speed limits)")
    summary = {
        "table": TRAFFIC_STATS,
        "since": since.isoformat(),
        "until": until.isoformat(),
        **_replace(spark, settings, TRAFFIC_STATS, compute_stats(spark, settings, since, until), since, until),
    }
    if DeltaTable.isDeltaTable(spark, settings.table_uri(tables.CROSSINGS)):
        summary[LINE_STATS] = _replace(
            spark, settings, LINE_STATS, compute_line_stats(spark, settings, since, until), since, until
        )
    else:  # a vehicle job from before counting lines: nothing to aggregate yet
        log.warning("no %s table under %s: %s not computed", tables.CROSSINGS, settings.storage.delta_root, LINE_STATS)
    summary["seconds"] = round(time.perf_counter() - t0, 2)
    return summary


def _replace(
    spark: SparkSession, settings: Settings, name: str, rows: DataFrame, since: datetime, until: datetime
) -> dict[str, Any]:
    """Atomically replace the bins of [since, until) of table ``name`` with ``rows``; the commit's figures."""
    from delta.tables import DeltaTable

    path = create_table(spark, settings, name)
    log.info("%s: recomputing %s .. %s into %s", name, since.isoformat(), until.isoformat(), path)
    rows.write.format("delta").mode("overwrite").option("replaceWhere", replace_predicate(since, until)).save(path)
    last = DeltaTable.forPath(spark, path).history(1).collect()[0]
    metrics = last["operationMetrics"] or {}
    return {
        "uri": path,
        "version": last["version"],
        "rows_written": int(metrics.get("numOutputRows", 0)),
        "rows_replaced": int(metrics.get("numDeletedRows", 0) or 0),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="traffic_statistics", description=(__doc__ or "").splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument(
        "--since",
        type=parse_time,
        default=None,
        help="range start, ISO 8601, UTC unless an offset is given (default: --until - 2 h)",
    )
    parser.add_argument("--until", type=parse_time, default=None, help="range end (default: now)")
    args = parser.parse_args(argv)
    until = args.until or datetime.now(timezone.utc)
    since = args.since or until - DEFAULT_LOOKBACK
    if since >= until:
        parser.error("--since must be before --until")
    try:
        settings = settings_from_args(args, require_cameras=False)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    spark = spark_session(settings)
    spark.sparkContext.setLogLevel("WARN")
    try:
        summary = run(spark, settings, since, until)
    except FileNotFoundError as exc:
        log.error("%s", exc)
        return 2
    finally:
        spark.stop()
    print(json.dumps(summary, separators=(",", ":")), flush=True)  # the one result line
    return 0


if __name__ == "__main__":
    sys.exit(main())
