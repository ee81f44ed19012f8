"""The two ways the vehicle job writes its Delta tables: delta-rs on the driver, or Spark.

Both take a table's rows as Arrow (``streaming_jobs/table_rows.py``) and keep the same semantics:

* ``append``: idempotent. The commit carries the application transaction (``txnAppId`` = the query's app id,
  ``txnVersion`` = the micro-batch / spooled group); a table that already has that version skips the write,
  so a replay after a crash adds nothing.
* ``merge``: upsert on the table's keys of absolute values, guarded by ``updated_batch``: a replayed or late
  batch changes nothing; ``keep_max`` columns are never lowered; ``bound`` limits the files the MERGE reads.

Why delta-rs: a commit of a few thousand small rows to eight tables costs Spark 7-20 s of CPU (a Spark job per
table, MERGE plans, the log), on the cores the live micro-batches need; delta-rs does the same in tens of
milliseconds. Spark's own writer stays for tables on object storage (delta-rs needs a locking setup there)
and when ``spark.delta_writer`` asks for it. Both write the same table features (writer version 2), so a
table can change writer between runs, and Spark, delta-rs and Polars read it either way.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, Protocol

import pyarrow as pa

from trafficstream import tables

UPDATED = "updated_batch"  # the MERGE guard column


@dataclass(frozen=True, slots=True)
class Bound:
    """Every target row a MERGE can match has ``column`` (a timestamp) >= ``low_us[camera]`` (UTC
    microseconds) for its camera: the MERGE reads only those cameras' files, and those times."""

    column: str
    low_us: dict[str, int]


class DeltaWriter(Protocol):
    def append(self, table: str, rows: pa.Table, version: int) -> None: ...

    def merge(self, table: str, rows: pa.Table, keep_max: tuple[str, ...] = (), bound: Bound | None = None) -> None: ...


def _on_keys(table: str) -> str:
    return " AND ".join(f"t.{k} = s.{k}" for k in tables.table(table).keys)


def _bounded(cond: str, bound: Bound | None, ts_literal: str) -> str:
    if bound is None or not bound.low_us:
        return cond
    ranges = " OR ".join(
        f"(t.camera_id = '{cam}' AND t.{bound.column} >= {ts_literal.format(us)})"
        for cam, us in sorted(bound.low_us.items())
    )
    return f"{cond} AND ({ranges})"


def is_local(uri: str) -> bool:
    """A plain path or file:// URI (what delta-rs commits to safely without a locking setup)."""
    return "://" not in uri or uri.startswith("file://")


class RustDeltaWriter:
    """delta-rs (``deltalake``) commits from the driver process."""

    # arrow_cast keeps the literal a UTC timestamp of the column's own type (no implicit time zone)
    _TS = "arrow_cast({}, 'Timestamp(Microsecond, Some(\"UTC\"))')"

    def __init__(self, paths: dict[str, str], app_id: str) -> None:
        self.paths = paths
        self.app_id = app_id
        self._tables: dict[str, Any] = {}  # deltalake.DeltaTable, imported where used
        self._lock = threading.Lock()

    def _table(self, table: str) -> Any:  # deltalake.DeltaTable, refreshed to the latest version
        from deltalake import DeltaTable

        with self._lock:
            dt = self._tables.get(table)
            if dt is None:
                dt = self._tables[table] = DeltaTable(self.paths[table])
        dt.update_incremental()
        return dt

    def _txn(self, version: int):
        from deltalake import CommitProperties, Transaction

        return CommitProperties(app_transactions=[Transaction(app_id=self.app_id, version=version)])

    def append(self, table: str, rows: pa.Table, version: int) -> None:
        from deltalake import write_deltalake

        dt = self._table(table)
        done = dt.transaction_version(self.app_id)
        if done is not None and done >= version:
            return  # a replay: this version is in the table already
        write_deltalake(dt, rows, mode="append", commit_properties=self._txn(version))

    def merge(self, table: str, rows: pa.Table, keep_max: tuple[str, ...] = (), bound: Bound | None = None) -> None:
        dt = self._table(table)
        updates = {c: f"s.{c}" for c in rows.column_names}
        updates |= {c: f"greatest(t.{c}, s.{c})" for c in keep_max}
        (
            dt.merge(rows, _bounded(_on_keys(table), bound, self._TS), source_alias="s", target_alias="t")
            .when_matched_update(updates, predicate=f"s.{UPDATED} > t.{UPDATED}")
            .when_not_matched_insert_all()
            .execute()
        )


class SparkDeltaWriter:
    """Spark's Delta writer (``delta-spark``): tables on object storage, or ``spark.delta_writer: spark``."""

    _TS = "timestamp_micros({})"

    def __init__(self, spark, paths: dict[str, str], app_id: str) -> None:  # spark: SparkSession
        self.spark = spark
        self.paths = paths
        self.app_id = app_id

    def _df(self, table: str, rows: pa.Table):
        from trafficstream.streaming_jobs.schemas import spark_schema

        return self.spark.createDataFrame(rows, schema=spark_schema(table))

    def append(self, table: str, rows: pa.Table, version: int) -> None:
        (
            self._df(table, rows)
            .write.format("delta")
            .mode("append")
            .option("mergeSchema", "true")  # tables written before a column was declared gain it
            .option("txnAppId", self.app_id)
            .option("txnVersion", version)
            .save(self.paths[table])
        )

    def merge(self, table: str, rows: pa.Table, keep_max: tuple[str, ...] = (), bound: Bound | None = None) -> None:
        from delta.tables import DeltaTable
        from pyspark.sql import Column

        df = self._df(table, rows)
        updates: dict[str, str | Column] = {c: f"s.{c}" for c in df.columns}
        updates |= {c: f"greatest(t.{c}, s.{c})" for c in keep_max}
        (
            DeltaTable.forPath(self.spark, self.paths[table])
            .alias("t")
            .merge(df.alias("s"), _bounded(_on_keys(table), bound, self._TS))
            .whenMatchedUpdate(condition=f"s.{UPDATED} > t.{UPDATED}", set=updates)
            .whenNotMatchedInsertAll()
            .execute()
        )
