"""Table care for the Delta tables: compaction, Z-order, VACUUM and a log checkpoint, without a JVM.

The streaming job commits every micro-batch, so each table gains a few small files per batch (thousands a
day); readers (Polars notebooks, the dashboard history, Spark) then spend their time opening files and
replaying the log. This cron-friendly command, built on ``deltalake`` (delta-rs), fixes that per table::

    python -m trafficstream.maintenance --config infra/config/demo.yaml \\
        [--tables detections frames] [--recent-days 1] [--zorder] [--vacuum-hours 168] [--dry-run]

Per table declared in :mod:`trafficstream.tables` (the job's ``ALL_TABLES`` and other jobs' tables such as
``traffic_stats``; plus any other Delta table found under a local ``storage.delta_root``), in this order:

1. **compaction** (``OPTIMIZE``): bins small files of a partition into files of ~``--target-size-mb``
   (default: the table's ``delta.targetFileSize`` or delta-rs' 100 MiB). Rewritten files are committed with
   ``dataChange=false``: streaming readers of the table skip them, row counts and values do not change.
2. **Z-order** (``--zorder``) of the big append tables by (camera_id, time column), which clusters rows for
   "one camera over one time range" queries. Partition columns cannot be Z-ordered (and need not be: a
   partition already holds one camera), so on tables partitioned by ``camera_id`` only the time column is
   left, i.e. the files are sorted by time and min/max statistics then skip whole files on time filters.
3. **VACUUM**: deletes data files that no table version younger than ``--vacuum-hours`` (default 168 h =
   7 days) references, plus files no commit references at all (left by a crashed write) older than that.
4. **checkpoint**: one Parquet snapshot of the log, so readers do not replay thousands of JSON commits.

A JSON line per table goes to stdout (files/bytes/versions before and after, what each step did); logs go
to stderr. Exit status: 0 all tables fine, 1 a table failed (the others are still maintained), 2 bad
arguments or configuration.

**Why VACUUM retention must stay long** (below 24 h is refused unless ``--force-short-retention``): VACUUM
deletes files that older table versions still reference. (a) *Concurrent readers*: a Polars/Spark read that
planned its scan on a snapshot a while ago, or a long batch job, fails with "file not found" mid-read.
(b) *Streaming writers*: the job writes a micro-batch's Parquet files first and commits them afterwards; a
short-retention VACUUM sees those files as unreferenced and deletes them, and the commit then points at
missing files (a corrupt table). A downstream ``readStream`` of a table that fell behind loses the versions
it still has to read. (c) *Time travel*: ``versionAsOf``/``timestampAsOf`` (and ``RESTORE``) work only back
to the retention. A table's own ``delta.deletedFileRetentionDuration`` is honoured when it is longer.

**Compatibility with the streaming job (delta-spark 4.4 / Spark 4.2) and Polars**: the tables keep protocol
(minReader 1, minWriter 2) without table features. delta-rs' optimize, vacuum and classic (V1) checkpoints
do not change the protocol, which this command checks after every step (a change stops the run with an
error, naming the table). Not used on purpose: ``DeltaTable.compact_logs`` (log-compaction files) and any
table property that would enable features (deletion vectors, V2 checkpoints, row tracking) the job's readers
are not configured for. Verified in ``tests/trafficstream/test_maintenance.py``: after delta-rs compaction
and checkpoint, delta-spark appends (a replayed ``txnAppId``/``txnVersion`` is still skipped: the checkpoint
keeps the ``txn`` actions), MERGEs and Polars reads work.

**Concurrency with the running job**: appends never conflict with compaction. The job's MERGE upserts
(``tracks``, ``flow``) and the statistics job's ``replaceWhere`` can conflict with a compaction of the same
table that commits in between (Delta's "concurrent delete-read"): the job's query then fails and restarts
from its checkpoint (MERGE replays are no-ops), and here the failed commit is retried. So compact those
tables in the daily run, not hourly.

**S3 (AWS or S3-compatible): not concurrently with the job.** Two engines may only write one table at a time
when their commits are atomic against each other. delta-rs 1.x commits with S3 conditional puts
(``If-None-Match``); delta-spark's ``S3SingleDriverLogStore`` does not (it checks, then overwrites), and the
DynamoDB log store that used to coordinate both is gone from delta-rs 1.x. A lost race silently replaces a
commit, and a checkpoint written from the lost view drops the job's rows. So on ``s3://``/``s3a://`` tables
this command only writes with ``--s3-exclusive``: the operator's statement that no other writer (vehicle
job, statistics job) touches the selected tables during the run, i.e. a maintenance window with the job
stopped (Kafka buffers the frame references meanwhile), or maintenance from Spark itself (the SQL below)
with every Spark writer on the same commit coordination. ADLS (abfss://), GCS and HDFS give both engines
atomic commits: no flag needed there. ``--dry-run`` is always safe.

**Schedule** (CronJobs in infra/k8s/, ``concurrencyPolicy: Forbid``)::

    # hourly, xx:05: compact today's partitions of the append tables, nothing else
    python -m trafficstream.maintenance --tables frames detections violations dead_letters \\
        --recent-days 1 --no-vacuum --no-checkpoint
    # daily, 02:30: everything; Z-order yesterday's (now closed) and today's partitions; vacuum; checkpoint
    python -m trafficstream.maintenance --recent-days 2 --zorder --vacuum-hours 168

**Spark SQL equivalents** (on a cluster with delta-spark; ``spark.databricks.delta.retentionDurationCheck``
guards VACUUM below 168 h there)::

    OPTIMIZE delta.`s3a://bucket/traffic/delta/detections` WHERE event_date >= current_date() - 1;
    OPTIMIZE delta.`s3a://bucket/traffic/delta/detections` WHERE event_date = current_date() - 1
        ZORDER BY (capture_ts);                        -- camera_id is a partition column
    OPTIMIZE delta.`s3a://bucket/traffic/delta/dead_letters` ZORDER BY (camera_id, dead_ts);
    VACUUM delta.`s3a://bucket/traffic/delta/detections` RETAIN 168 HOURS;   -- DRY RUN to list only
    -- checkpoints: Spark writes one every delta.checkpointInterval (10) commits by itself
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pyarrow as pa
from deltalake import DeltaTable
from deltalake.exceptions import CommitFailedError, TableNotFoundError

from trafficstream import tables
from trafficstream.config import Settings, add_config_arguments, load_settings
from trafficstream.errors import ConfigError
from trafficstream.logs import setup_logging

log = logging.getLogger("trafficstream.maintenance")

DEFAULT_VACUUM_HOURS = 168  # Delta's default deletedFileRetentionDuration (7 days)
MIN_VACUUM_HOURS = 24
# Requested Z-order per big append table: (camera_id, time column); partition columns are dropped at run time.
ZORDER_COLUMNS: dict[str, tuple[str, ...]] = {
    tables.FRAMES: ("camera_id", "capture_ts"),
    tables.DETECTIONS: ("camera_id", "capture_ts"),
    tables.VIOLATIONS: ("camera_id", "capture_ts"),
    tables.DEAD_LETTERS: ("camera_id", "dead_ts"),
    tables.CROSSINGS: ("camera_id", "crossing_ts"),
}
DATE_PARTITION = "event_date"  # --recent-days limits compaction / Z-order to recent partitions of this column
COMMIT_ATTEMPTS = 3  # a step whose commit lost a race with the job's MERGE is redone on the new snapshot

SHORT_RETENTION_HELP = (
    "VACUUM with a retention under {min} h is refused: it deletes files that (a) readers which planned their "
    "scan on an older snapshot are still reading, (b) the streaming job has written but not yet committed "
    "(its commit would then reference missing files: a corrupt table), and (c) time travel and RESTORE need. "
    "Keep >= {default} h; pass --force-short-retention only when no job, reader or time travel uses the table."
)


class ProtocolChanged(RuntimeError):
    """A maintenance step changed the table protocol (the job's readers/writers may not support it)."""


class UncoordinatedWriters(RuntimeError):
    """Refused: the table is on S3 and the run was not declared the only writer (``--s3-exclusive``)."""


@dataclass
class Options:
    tables: list[str] | None = None  # None: the declared tables plus the Delta tables found under the root
    vacuum_hours: int = DEFAULT_VACUUM_HOURS
    force_short_retention: bool = False
    zorder: bool = False
    compact: bool = True
    vacuum: bool = True
    vacuum_full: bool = True  # also orphans of crashed writes; "lite" only files the log removed
    checkpoint: bool = True
    recent_days: int | None = None
    target_size_mb: int | None = None
    dry_run: bool = False
    s3_exclusive: bool = False  # see "S3" in the module docstring
    today: date = field(default_factory=lambda: datetime.now(timezone.utc).date())


# -- locations --------------------------------------------------------------------------------------------------
def rs_uri(uri: str) -> str:
    """Spark's ``s3a://`` is delta-rs' ``s3://`` (credentials from AWS_* environment variables)."""
    return "s3://" + uri[len("s3a://") :] if uri.startswith("s3a://") else uri


def on_s3(uri: str) -> bool:
    return uri.startswith(("s3://", "s3a://", "s3n://"))


S3_HELP = (
    "{table}: on S3 delta-rs and the Spark jobs do not coordinate their commits (a lost race drops rows); "
    "run with --s3-exclusive only while no other engine writes this table (job stopped), or use --dry-run"
)


def discover_tables(settings: Settings) -> list[str]:
    """Every declared table (the job's ALL_TABLES and other jobs' tables), then other Delta tables found under
    a local root (object stores: the declared ones only)."""
    names = list(tables.DECLARATIONS)
    if "://" in settings.table_uri("x"):
        log.info(
            "delta root %s is not local: maintaining the declared tables only (name others with --tables)",
            settings.storage.delta_root,
        )
        return names
    root = settings.delta_root
    if root.is_dir():
        names += sorted(p.name for p in root.iterdir() if (p / "_delta_log").is_dir() and p.name not in names)
    return names


# -- table state ------------------------------------------------------------------------------------------------
def protocol_text(dt: DeltaTable) -> str:
    p = dt.protocol()
    feats = sorted({*(p.reader_features or []), *(p.writer_features or [])})
    return f"{p.min_reader_version}/{p.min_writer_version}" + (f" {','.join(feats)}" if feats else "")


def snapshot(dt: DeltaTable) -> dict[str, int]:
    adds = pa.table(dt.get_add_actions(flatten=True))
    sizes = adds.column("size_bytes").to_pylist() if adds.num_rows else []
    rows = adds.column("num_records").to_pylist() if adds.num_rows and "num_records" in adds.column_names else []
    return {
        "version": dt.version(),
        "files": adds.num_rows,
        "bytes": int(sum(sizes)),
        "rows": int(sum(r or 0 for r in rows)),
    }


_INTERVAL = re.compile(r"^\s*(?:interval\s+)?(\d+)\s+(second|minute|hour|day|week)s?\s*$", re.IGNORECASE)
_UNIT_HOURS = {"second": 1 / 3600, "minute": 1 / 60, "hour": 1, "day": 24, "week": 168}


def table_retention_hours(dt: DeltaTable) -> float | None:
    """The table's explicit ``delta.deletedFileRetentionDuration`` ("interval 30 days"), in hours."""
    value = dt.metadata().configuration.get("delta.deletedFileRetentionDuration")
    m = _INTERVAL.match(value or "")
    return int(m.group(1)) * _UNIT_HOURS[m.group(2).lower()] if m else None


def recent_filter(dt: DeltaTable, opts: Options) -> list[tuple[str, str, str]] | None:
    if opts.recent_days is None or DATE_PARTITION not in dt.metadata().partition_columns:
        return None
    first = opts.today - timedelta(days=opts.recent_days - 1)
    return [(DATE_PARTITION, ">=", first.isoformat())]


def zorder_columns(dt: DeltaTable, name: str) -> list[str]:
    parts = set(dt.metadata().partition_columns)
    present = {f.name for f in dt.schema().fields}
    return [c for c in ZORDER_COLUMNS.get(name, ()) if c in present and c not in parts]


# -- one table --------------------------------------------------------------------------------------------------
def _committed(dt: DeltaTable, table: str, step: str, before: str, fn: Callable[[], Any]) -> Any:
    """Run a committing step, redo it when a concurrent writer won the commit race, check the protocol."""
    for attempt in range(1, COMMIT_ATTEMPTS + 1):
        try:
            result = fn()
            break
        except CommitFailedError as exc:
            if attempt == COMMIT_ATTEMPTS:
                raise
            log.warning("%s: %s lost a commit race (%s); retrying on the latest version", table, step, exc)
            dt.update_incremental()
            time.sleep(attempt)
    dt.update_incremental()
    after = protocol_text(dt)
    if after != before:
        raise ProtocolChanged(
            f"{table}: {step} changed the protocol from {before} to {after}; check that the "
            "streaming job's delta-spark supports it before running maintenance again"
        )
    return result


def maintain_table(name: str, uri: str, opts: Options) -> dict[str, Any]:
    """Maintain one table; returns its JSON summary (``status`` ok | dry_run | missing)."""
    t0 = time.perf_counter()
    summary: dict[str, Any] = {"table": name, "uri": uri}
    try:
        dt = DeltaTable(rs_uri(uri))
    except TableNotFoundError:
        log.info("%s: no Delta table at %s; skipped", name, uri)
        return {**summary, "status": "missing"}
    if on_s3(uri) and not (opts.dry_run or opts.s3_exclusive):
        raise UncoordinatedWriters(S3_HELP.format(table=name))
    proto = protocol_text(dt)
    before = snapshot(dt)
    summary.update(
        status="dry_run" if opts.dry_run else "ok",
        protocol_before=proto,
        version_before=before["version"],
        files_before=before["files"],
        bytes_before=before["bytes"],
        rows_before=before["rows"],
    )
    filters = recent_filter(dt, opts)
    target = opts.target_size_mb * 2**20 if opts.target_size_mb else None
    if opts.dry_run:
        log.info("%s: dry run, nothing rewritten", name)
    else:
        if opts.compact:
            m = _committed(
                dt,
                name,
                "compaction",
                proto,
                lambda: dt.optimize.compact(partition_filters=filters, target_size=target),
            )
            summary["compaction"] = {
                "files_removed": m["numFilesRemoved"],
                "files_added": m["numFilesAdded"],
                "partitions": m["partitionsOptimized"],
            }
        cols = zorder_columns(dt, name) if opts.zorder else []
        if cols:
            m = _committed(
                dt,
                name,
                "z-order",
                proto,
                lambda: dt.optimize.z_order(cols, partition_filters=filters, target_size=target),
            )
            summary["zorder"] = {
                "columns": cols,
                "files_removed": m["numFilesRemoved"],
                "files_added": m["numFilesAdded"],
            }
    if opts.vacuum:
        hours = opts.vacuum_hours
        own = table_retention_hours(dt)
        if own is not None and hours < own and not opts.force_short_retention:
            log.warning(
                "%s: table sets delta.deletedFileRetentionDuration = %.0f h; vacuuming with that instead of %d h",
                name,
                own,
                hours,
            )
            hours = int(own + 0.999)
        # Our own floor was checked on the arguments; delta-rs' check would refuse 24-167 h on default tables.
        files = _committed(
            dt,
            name,
            "vacuum",
            proto,
            lambda: dt.vacuum(
                retention_hours=hours, dry_run=opts.dry_run, enforce_retention_duration=False, full=opts.vacuum_full
            ),
        )
        summary["vacuum"] = {
            "retention_hours": hours,
            "full": opts.vacuum_full,
            "dry_run": opts.dry_run,
            "files": len(files),
        }
    if opts.checkpoint and not opts.dry_run:
        _committed(dt, name, "checkpoint", proto, dt.create_checkpoint)
        summary["checkpoint_version"] = dt.version()
    after = snapshot(dt)
    if after["rows"] != before["rows"] and not opts.dry_run:
        # Appends of the running job land in between; only flag, never undo.
        log.info("%s: %d rows before, %d after (the job committed meanwhile)", name, before["rows"], after["rows"])
    summary.update(
        version_after=after["version"],
        files_after=after["files"],
        bytes_after=after["bytes"],
        rows_after=after["rows"],
        protocol_after=protocol_text(dt),
        seconds=round(time.perf_counter() - t0, 3),
    )
    return summary


def run(settings: Settings, opts: Options, emit: Callable[[dict[str, Any]], None] | None = None) -> list[dict]:
    """Maintain every selected table; one summary per table (``status`` error for a failed one)."""
    names = opts.tables or discover_tables(settings)
    out = []
    for name in names:
        uri = settings.table_uri(name)
        try:
            summary = maintain_table(name, uri, opts)
        except UncoordinatedWriters as exc:
            log.error("%s", exc)
            summary = {"table": name, "uri": uri, "status": "refused", "error": str(exc)}
        except ProtocolChanged as exc:
            log.error("%s", exc)
            out.append({"table": name, "uri": uri, "status": "error", "error": str(exc)})
            if emit:
                emit(out[-1])
            break  # the same operation would do the same to the next table
        except Exception as exc:  # one broken table must not stop the care of the others
            log.exception("%s: maintenance failed", name)
            summary = {"table": name, "uri": uri, "status": "error", "error": f"{type(exc).__name__}: {exc}"}
        out.append(summary)
        if emit:
            emit(summary)
    return out


# -- CLI --------------------------------------------------------------------------------------------------------
_TABLE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]*$")


def _table_name(text: str) -> str:
    if not _TABLE_NAME.match(text):
        raise argparse.ArgumentTypeError(f"{text!r}: a table name is one folder under storage.delta_root")
    return text


def _positive(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError("must be >= 0")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m trafficstream.maintenance",
        description=(__doc__ or "").splitlines()[0],
        epilog="Schedule, safety and Spark SQL equivalents: the module docstring.",
    )
    add_config_arguments(parser)
    parser.add_argument(
        "--tables",
        nargs="+",
        type=_table_name,
        default=None,
        metavar="NAME",
        help="tables to maintain (default: every known table and any found under the root)",
    )
    parser.add_argument(
        "--vacuum-hours",
        type=_positive,
        default=DEFAULT_VACUUM_HOURS,
        help=f"keep files younger than this (default {DEFAULT_VACUUM_HOURS}; < {MIN_VACUUM_HOURS} "
        "refused unless --force-short-retention)",
    )
    parser.add_argument(
        "--force-short-retention",
        action="store_true",
        help="allow --vacuum-hours below 24 (no job, reader or time travel may use the tables)",
    )
    parser.add_argument("--zorder", action="store_true", help="Z-order the big append tables by (camera, time)")
    parser.add_argument(
        "--recent-days",
        type=_positive,
        default=None,
        metavar="N",
        help="compact / Z-order only event_date partitions of the last N days (UTC, today = 1)",
    )
    parser.add_argument(
        "--target-size-mb",
        type=_positive,
        default=None,
        help="compacted file size (default: delta.targetFileSize or 100 MiB)",
    )
    parser.add_argument("--no-compact", dest="compact", action="store_false", help="skip compaction")
    parser.add_argument("--no-vacuum", dest="vacuum", action="store_false", help="skip VACUUM")
    parser.add_argument(
        "--vacuum-lite",
        action="store_true",
        help="vacuum only files the log removed (no listing of the table folder: cheaper on S3)",
    )
    parser.add_argument("--no-checkpoint", dest="checkpoint", action="store_false", help="skip the log checkpoint")
    parser.add_argument(
        "--s3-exclusive",
        action="store_true",
        help="tables on S3: state that no other engine writes them during this run (see docstring)",
    )
    parser.add_argument(
        "--dry-run", action="store_true", help="change nothing: report the tables and the files VACUUM would delete"
    )
    args = parser.parse_args(argv)
    if args.recent_days == 0:
        parser.error("--recent-days must be >= 1 (1 = today's partitions)")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.vacuum and args.vacuum_hours < MIN_VACUUM_HOURS and not args.force_short_retention:
        print(
            "error: " + SHORT_RETENTION_HELP.format(min=MIN_VACUUM_HOURS, default=DEFAULT_VACUUM_HOURS), file=sys.stderr
        )
        return 2
    try:
        settings = load_settings(args.config, args.overrides, require_cameras=False)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    if args.force_short_retention and args.vacuum and args.vacuum_hours < MIN_VACUUM_HOURS:
        log.warning(
            "VACUUM retention %d h < %d h forced: readers, the running job and time travel may break",
            args.vacuum_hours,
            MIN_VACUUM_HOURS,
        )
    opts = Options(
        tables=args.tables,
        vacuum_hours=args.vacuum_hours,
        force_short_retention=args.force_short_retention,
        zorder=args.zorder,
        compact=args.compact,
        vacuum=args.vacuum,
        vacuum_full=not args.vacuum_lite,
        checkpoint=args.checkpoint,
        recent_days=args.recent_days,
        target_size_mb=args.target_size_mb,
        dry_run=args.dry_run,
        s3_exclusive=args.s3_exclusive,
    )
    log.info("maintaining Delta tables under %s (dry run: %s)", settings.storage.delta_root, opts.dry_run)

    def emit(summary: dict[str, Any]) -> None:
        print(json.dumps(summary, separators=(",", ":")), flush=True)  # the one line per table: stdout

    results = run(settings, opts, emit)
    return 1 if any(r["status"] in ("error", "refused") for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
