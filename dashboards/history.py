"""History: flows and speed distributions for a camera and time range, read from the Delta tables.

Reads with Polars over delta-rs (no JVM, no Spark); ``camera_id`` is a partition column, so a query
touches only that camera's files. A table that does not exist yet (pipeline never ran) is reported as
missing rather than raised, so the UI can say "no data yet".

Counting lines (the ``crossings`` table): crossings per time bin, line and direction, and vehicles per time bin
and lane. A vehicle that crosses several lines is one vehicle of its lane: it counts once, in the lane and bin of
its first crossing in the range (its lane just past that line, as the crossing row records it).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from trafficstream import tables

log = logging.getLogger(__name__)

FLOW_SCHEMA = pl.Schema({"minute": pl.Datetime("us", "UTC"), "class_name": pl.String(), "vehicles": pl.Int64()})
SPEED_SCHEMA = pl.Schema({"seen_ts": pl.Datetime("us", "UTC"), "class_name": pl.String(), "speed_kmh": pl.Float64()})
CROSSING_SCHEMA = pl.Schema(
    {
        "crossing_ts": pl.Datetime("us", "UTC"),
        "line_id": pl.String(),
        "direction": pl.String(),
        "lane_id": pl.String(),
        "track_id": pl.Int64(),
        "class_name": pl.String(),
    }
)
SERIES_SCHEMA = pl.Schema({"minute": pl.Datetime("us", "UTC"), "series": pl.String(), "vehicles": pl.Int64()})
NO_LANE = "(no lane)"


def _as_utc(name: str, dtype: pl.DataType) -> pl.Expr:
    """A timestamp column as UTC datetime, whether Spark wrote a timestamp or Unix seconds."""
    col = pl.col(name)
    if isinstance(dtype, pl.Datetime):
        col = col.dt.replace_time_zone("UTC") if dtype.time_zone is None else col.dt.convert_time_zone("UTC")
        return col.dt.cast_time_unit("us")
    if dtype.is_numeric():
        return (col.cast(pl.Float64) * 1_000_000).round(0).cast(pl.Int64).cast(pl.Datetime("us", "UTC"))
    raise TypeError(f"column {name!r} has type {dtype}, expected a timestamp or Unix seconds")


def _utc(dt: datetime) -> datetime:
    return (dt if dt.tzinfo else dt.astimezone()).astimezone(timezone.utc)


BINS = {"1m": ("minute", 60), "15m": ("15 min", 900), "1h": ("hour", 3600)}  # Polars duration: label, seconds


def choose_bin(start: datetime, end: datetime) -> str:
    """A Polars duration (a key of BINS) so a range shows at most a few hundred bars."""
    span = _utc(end) - _utc(start)
    if span <= timedelta(hours=6):
        return "1m"
    if span <= timedelta(days=3):
        return "15m"
    return "1h"


def resample_flow(flow: pl.DataFrame, every: str) -> pl.DataFrame:
    """Sum vehicles per ``every`` bin and class (flow rows are per minute)."""
    if every == "1m" or flow.is_empty():
        return flow
    return (
        flow.with_columns(pl.col("minute").dt.truncate(every))
        .group_by("minute", "class_name")
        .agg(pl.col("vehicles").sum())
        .sort("minute", "class_name")
    )


SERIES_SEPARATOR = " · "


def line_series(line_id: str, direction: str) -> str:
    """The series name of a line and direction in the history charts (what :func:`line_flow` names it)."""
    return f"{line_id}{SERIES_SEPARATOR}{direction}"


def _bin_start(every: str) -> pl.Expr:
    return pl.col("crossing_ts").dt.truncate(every).alias("minute")


def line_flow(crossings: pl.DataFrame, every: str) -> pl.DataFrame:
    """Crossings per ``every`` bin, line and direction: minute (bin start), series (``line · direction``),
    vehicles. ``crossings`` as :meth:`HistoryStore.crossings` returns them."""
    if crossings.is_empty():
        return pl.DataFrame(schema=SERIES_SCHEMA)
    series = pl.concat_str("line_id", "direction", separator=SERIES_SEPARATOR).alias("series")
    return (
        crossings.group_by(_bin_start(every), series)
        .agg(pl.len().cast(pl.Int64).alias("vehicles"))
        .sort("minute", "series")
        .cast(SERIES_SCHEMA)
    )


def lane_flow(crossings: pl.DataFrame, every: str) -> pl.DataFrame:
    """Vehicles per ``every`` bin and lane: each track once, in the lane and bin of its first crossing (lane
    unknown: :data:`NO_LANE`); columns as :func:`line_flow`."""
    if crossings.is_empty():
        return pl.DataFrame(schema=SERIES_SCHEMA)
    first = crossings.sort("crossing_ts").group_by("track_id").agg(pl.col("crossing_ts", "lane_id").first())
    return (
        first.group_by(_bin_start(every), pl.col("lane_id").fill_null(NO_LANE).alias("series"))
        .agg(pl.len().cast(pl.Int64).alias("vehicles"))
        .sort("minute", "series")
        .cast(SERIES_SCHEMA)
    )


def complete_bins(counts: pl.DataFrame, start: datetime, end: datetime, every: str) -> pl.DataFrame:
    """``counts`` (minute, series, vehicles) with a 0 for every bin of [start, end) a series has no row in:
    a line drawn through a gap would show traffic where there was none."""
    if counts.is_empty():
        return counts
    lo = pl.select(pl.lit(_utc(start)).dt.truncate(every)).item()
    bins = pl.datetime_range(lo, _utc(end), every, closed="left", time_unit="us", time_zone="UTC", eager=True)
    grid = pl.DataFrame({"minute": bins}).join(counts.select("series").unique(), how="cross")
    return (
        grid.join(counts, on=["minute", "series"], how="left")
        .with_columns(pl.col("vehicles").fill_null(0))
        .sort("minute", "series")
        .cast(SERIES_SCHEMA)
    )


@dataclass
class HistoryResult:
    camera_id: str
    start: datetime
    end: datetime
    flow: pl.DataFrame  # minute (UTC), class_name, vehicles
    speeds: pl.DataFrame  # seen_ts (UTC), class_name, speed_kmh: one row per vehicle
    violations: int
    missing: list[str] = field(default_factory=list)  # tables that do not exist yet


class HistoryStore:
    """Read-only queries over the Delta tables under ``delta_root``."""

    def __init__(self, delta_root: Path) -> None:
        self.delta_root = Path(delta_root)

    def table_path(self, name: str) -> Path:
        return self.delta_root / name

    def has_table(self, name: str) -> bool:
        path = self.table_path(name)
        return path.is_dir() and DeltaTable.is_deltatable(str(path))

    def _scan(self, name: str, camera_id: str, ts_column: str, start: datetime, end: datetime) -> pl.LazyFrame:
        lf = pl.scan_delta(str(self.table_path(name))).filter(pl.col("camera_id") == camera_id)
        dtype = lf.collect_schema()[ts_column]
        lo, hi = _utc(start), _utc(end)
        return lf.with_columns(_as_utc(ts_column, dtype).alias(ts_column)).filter(
            (pl.col(ts_column) >= lo) & (pl.col(ts_column) < hi)
        )

    def flow(self, camera_id: str, start: datetime, end: datetime) -> pl.DataFrame | None:
        """Vehicles per minute and class, or None when the flow table does not exist yet."""
        if not self.has_table(tables.FLOW):
            return None
        return (
            self._scan(tables.FLOW, camera_id, "minute", start, end)
            .group_by("minute", "class_name")
            .agg(pl.col("vehicles").cast(pl.Int64).sum())
            .sort("minute", "class_name")
            .collect()
            .cast(FLOW_SCHEMA)
        )

    def vehicle_speeds(self, camera_id: str, start: datetime, end: datetime) -> pl.DataFrame | None:
        """One speed per vehicle (the track's median plausible speed) for tracks first seen in the range."""
        if not self.has_table(tables.TRACKS):
            return None
        return (
            self._scan(tables.TRACKS, camera_id, "first_seen_ts", start, end)
            .filter(pl.col("median_speed_kmh").is_not_null() & pl.col("median_speed_kmh").is_finite())
            .select(
                pl.col("first_seen_ts").alias("seen_ts"),
                pl.col("class_name").cast(pl.String),
                pl.col("median_speed_kmh").cast(pl.Float64).alias("speed_kmh"),
            )
            .sort("seen_ts")
            .collect()
        )

    def crossings(self, camera_id: str, start: datetime, end: datetime) -> pl.DataFrame | None:
        """The camera's line crossings in the range (:data:`CROSSING_SCHEMA`), or None when the crossings table
        does not exist yet."""
        if not self.has_table(tables.CROSSINGS):
            return None
        lf = self._scan(tables.CROSSINGS, camera_id, "crossing_ts", start, end)
        if "event_date" in lf.collect_schema():  # a partition column: prune the days outside the range
            lo, hi = _utc(start).date(), _utc(end).date()
            lf = lf.filter(pl.col("event_date").cast(pl.Date).is_between(lo, hi))
        return (
            lf.select(
                "crossing_ts",
                pl.col("line_id").cast(pl.String),
                pl.col("direction").cast(pl.String),
                pl.col("lane_id").cast(pl.String),
                pl.col("track_id").cast(pl.Int64),
                pl.col("class_name").cast(pl.String),
            )
            .sort("crossing_ts")
            .collect()
            .cast(CROSSING_SCHEMA)
        )

    def violation_count(self, camera_id: str, start: datetime, end: datetime) -> int | None:
        if not self.has_table(tables.VIOLATIONS):
            return None
        return int(self._scan(tables.VIOLATIONS, camera_id, "capture_ts", start, end).select(pl.len()).collect().item())

    def query(self, camera_id: str, start: datetime, end: datetime) -> HistoryResult:
        missing: list[str] = []
        flow = self.flow(camera_id, start, end)
        if flow is None:
            missing.append(tables.FLOW)
            flow = pl.DataFrame(schema=FLOW_SCHEMA)
        speeds = self.vehicle_speeds(camera_id, start, end)
        if speeds is None:
            missing.append(tables.TRACKS)
            speeds = pl.DataFrame(schema=SPEED_SCHEMA)
        violations = self.violation_count(camera_id, start, end)
        if violations is None:
            missing.append(tables.VIOLATIONS)
        log.debug("history %s %s..%s: %d flow rows, %d vehicles", camera_id, start, end, flow.height, speeds.height)
        return HistoryResult(camera_id, start, end, flow, speeds, violations or 0, missing)


def local_range(
    start_date: str, end_date: str, start_time: str = "00:00", end_time: str = "23:59"
) -> tuple[datetime, datetime]:
    """[start, end) as aware datetimes from the UI's local dates and HH:MM times (end minute inclusive)."""

    def parse(day: str, hhmm: str) -> datetime:
        d = datetime.fromisoformat(str(day)[:10])
        t = datetime.strptime((hhmm or "").strip(), "%H:%M")
        return d.replace(hour=t.hour, minute=t.minute).astimezone()

    try:
        start, end = parse(start_date, start_time), parse(end_date, end_time) + timedelta(minutes=1)
    except ValueError:
        raise ValueError("times must be HH:MM (24 h) and dates YYYY-MM-DD") from None
    if end <= start:
        raise ValueError("the end of the range must be after its start")
    return start, end
