"""Pure Polars computations behind the analyst notebooks (``notebooks/*.ipynb``); no JVM, no Spark.

Inputs are the Delta tables of :mod:`trafficstream.tables` read with Polars (``read_table``). Every function
accepts empty frames (a run without vehicles or violations) and then returns an empty frame with the same
columns, so a notebook can show "no data" instead of failing.

Conventions:
- *trusted* speed: ``speed_kmh`` is not null and ``speed_flag`` is null (the job flags, never clamps).
- Percentiles use linear interpolation between order statistics (numpy's default); ``p85_kmh`` is the
  85th-percentile speed traffic engineers use to review limits.
- Times stay in the tables' zone (UTC) unless a function takes ``tz`` (hour-of-day patterns).
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from urllib.parse import unquote, urlparse

import polars as pl

DEFAULT_DELTA_ROOT = Path("var") / "demo" / "delta"  # relative to the repository; what `make demo` writes
DELTA_ROOT_ENV = "TRAFFICSTREAM_DELTA_ROOT"

TRUSTED_SPEED: pl.Expr = pl.col("speed_kmh").is_not_null() & pl.col("speed_flag").is_null()

EXCESS_BANDS: tuple[tuple[float, str], ...] = ((10.0, "0-10"), (20.0, "10-20"), (30.0, "20-30"))
EXCESS_TOP_BAND = "30+"


# -- locating and reading the tables ----------------------------------------------------------------------
def find_repo_root(start: Path | None = None) -> Path:
    """The nearest folder at or above ``start`` (default: the working directory) holding this project."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "pyproject.toml").is_file() and (folder / "trafficstream").is_dir():
            return folder
    return Path(__file__).resolve().parent.parent


def resolve_delta_root(value: str | None = None, repo_root: Path | None = None) -> str:
    """The Delta root: ``value`` (else ``$TRAFFICSTREAM_DELTA_ROOT``, else ``var/demo/delta``).

    URIs (``s3://...``) are returned as given; a relative path is taken relative to the repository root.
    """
    raw = value if value is not None else os.environ.get(DELTA_ROOT_ENV) or str(DEFAULT_DELTA_ROOT)
    if "://" in raw:
        return raw.rstrip("/")
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = (repo_root or find_repo_root()) / path
    return str(path.resolve())


def number(value: object) -> float:
    """A Polars scalar aggregate (``Series.mean()``, ``.quantile()``, ...) that must be a number here: Polars
    types them as any Python value or None. ``TypeError`` for anything else (None: an empty or all-null column)."""
    if not isinstance(value, int | float):
        raise TypeError(f"expected a number, got {value!r}")
    return value


def table_path(root: str, name: str) -> str:
    return f"{root.rstrip('/')}/{name}"


def read_table(root: str, name: str, version: int | None = None) -> pl.DataFrame:
    """One Delta table (optionally an older ``version``: time travel) as a Polars frame."""
    path = table_path(root, name)
    if "://" not in path and not (Path(path) / "_delta_log").is_dir():
        raise FileNotFoundError(f"no Delta table at {path}: run `make demo` or set {DELTA_ROOT_ENV}")
    return pl.read_delta(path, version=version)


def table_versions(root: str, name: str, last: int = 10) -> pl.DataFrame:
    """Rows per table version for the ``last`` versions (newest first): version, timestamp, operation, rows."""
    from deltalake import DeltaTable

    path = table_path(root, name)
    history = DeltaTable(path).history(limit=last)
    rows = []
    for entry in history:
        version = int(entry["version"])
        count = pl.scan_delta(path, version=version).select(pl.len()).collect().item()
        rows.append(
            {
                "version": version,
                "timestamp_ms": int(entry.get("timestamp") or 0),
                "operation": str(entry.get("operation", "")),
                "rows": int(count),
            }
        )
    schema = {"version": pl.Int64, "timestamp_ms": pl.Int64, "operation": pl.String, "rows": pl.Int64}
    return (
        pl.DataFrame(rows, schema=schema, orient="row")
        .with_columns(pl.from_epoch("timestamp_ms", time_unit="ms").dt.replace_time_zone("UTC").alias("timestamp"))
        .select("version", "timestamp", "operation", "rows")
        .sort("version", descending=True)
    )


def _in_tz(df: pl.DataFrame, column: str, tz: str) -> pl.Expr:
    """``column`` converted to ``tz`` (naive timestamps are taken as UTC, as the job writes them)."""
    col = pl.col(column)
    dtype = df.schema[column]
    if isinstance(dtype, pl.Datetime) and dtype.time_zone is None:
        col = col.dt.replace_time_zone("UTC")
    return col.dt.convert_time_zone(tz)


# -- flow ---------------------------------------------------------------------------------------------------
def flow_from_tracks(tracks: pl.DataFrame) -> pl.DataFrame:
    """A ``flow``-shaped frame (camera_id, minute, class_name, vehicles) from the tracks' first sighting."""
    return (
        tracks.group_by("camera_id", pl.col("first_seen_ts").dt.truncate("1m").alias("minute"), "class_name")
        .agg(pl.len().cast(pl.Int64).alias("vehicles"))
        .sort("camera_id", "minute", "class_name")
    )


def flow_bins(flow: pl.DataFrame, every: str = "15m", by_class: bool = True) -> pl.DataFrame:
    """Vehicles per camera per ``every`` bin (``15m``, ``1h``, ...), per class unless ``by_class`` is False.

    Columns: camera_id, bin_start[, class_name], vehicles. Only bins with vehicles appear.
    """
    keys = ["camera_id", "bin_start", *(["class_name"] if by_class else [])]
    return (
        flow.with_columns(pl.col("minute").dt.truncate(every).alias("bin_start"))
        .group_by(keys)
        .agg(pl.col("vehicles").sum().cast(pl.Int64))
        .sort(keys)
    )


def peak_hour(flow_15m: pl.DataFrame, bin_minutes: int = 15) -> pl.DataFrame:
    """Peak hour and peak-hour factor per camera from ``flow_bins(flow, "15m")`` (classes are summed).

    The peak hour is the 60-minute window, starting on a bin with vehicles, with the most vehicles (the
    earliest on ties); bins without rows count as zero vehicles. PHF = hourly volume / (4 x the peak 15-min
    volume within that hour): 1.0 is perfectly even flow, 0.25 all of it in one 15 minutes.
    ``full_hour`` is False when the camera's data (first to last bin with vehicles) do not cover the whole
    window: the volume and PHF then describe a partial hour (short runs).

    Columns: camera_id, peak_start, peak_end, volume, peak_15m, phf, full_hour.
    """
    per_hour = 60 // bin_minutes
    hour = pl.duration(minutes=60)
    bins = flow_15m.group_by("camera_id", "bin_start").agg(pl.col("vehicles").sum().cast(pl.Int64))
    span = bins.group_by("camera_id").agg(
        pl.col("bin_start").min().alias("first_bin"), pl.col("bin_start").max().alias("last_bin")
    )
    starts = bins.select("camera_id", pl.col("bin_start").alias("peak_start"))
    windows = (
        starts.join(bins, on="camera_id")
        .filter(pl.col("bin_start") >= pl.col("peak_start"), pl.col("bin_start") < pl.col("peak_start") + hour)
        .group_by("camera_id", "peak_start")
        .agg(pl.col("vehicles").sum().alias("volume"), pl.col("vehicles").max().alias("peak_15m"))
    )
    return (
        windows.sort(["camera_id", "volume", "peak_start"], descending=[False, True, False])
        .group_by("camera_id", maintain_order=True)
        .first()
        .join(span, on="camera_id")
        .with_columns(
            (pl.col("peak_start") + hour).alias("peak_end"),
            pl.when(pl.col("peak_15m") > 0)
            .then(pl.col("volume") / (per_hour * pl.col("peak_15m")))
            .otherwise(None)
            .round(3)
            .alias("phf"),
            (pl.col("last_bin") >= pl.col("peak_start") + pl.duration(minutes=60 - bin_minutes)).alias("full_hour"),
        )
        .select("camera_id", "peak_start", "peak_end", "volume", "peak_15m", "phf", "full_hour")
        .sort("camera_id")
    )


# -- speeds -------------------------------------------------------------------------------------------------
def trusted_speeds(detections: pl.DataFrame) -> pl.DataFrame:
    """Detections whose speed the job trusts (``speed_kmh`` set, no ``speed_flag``)."""
    return detections.filter(TRUSTED_SPEED)


def vehicle_speeds(detections: pl.DataFrame) -> pl.DataFrame:
    """One row per vehicle (camera_id, track_id): majority class, median trusted speed, trusted samples."""
    return (
        trusted_speeds(detections)
        .group_by("camera_id", "track_id")
        .agg(
            pl.col("class_name").mode().sort().first(),
            pl.col("speed_kmh").median().alias("speed_kmh"),
            pl.len().alias("samples"),
        )
        .sort("camera_id", "track_id")
    )


def speed_limits(violations: pl.DataFrame, config_limits: Mapping[str, float] | None = None) -> pl.DataFrame:
    """Speed limit per camera: from the deployment config when given, else the newest violation's ``limit_kmh``.

    Columns: camera_id, limit_kmh, limit_source ("config" | "violations"). Cameras with neither are absent.
    """
    from_violations = (
        violations.filter(pl.col("limit_kmh").is_not_null())
        .sort("capture_ts")
        .group_by("camera_id")
        .agg(pl.col("limit_kmh").last())
        .with_columns(pl.lit("violations").alias("limit_source"))
        .select("camera_id", pl.col("limit_kmh").cast(pl.Float64), "limit_source")
    )
    config = pl.DataFrame(
        {
            "camera_id": list((config_limits or {}).keys()),
            "limit_kmh": [float(v) for v in (config_limits or {}).values()],
        },
        schema={"camera_id": pl.String, "limit_kmh": pl.Float64},
    )
    config = config.with_columns(pl.lit("config").alias("limit_source"))
    return pl.concat([config, from_violations.join(config, on="camera_id", how="anti")]).sort("camera_id")


def speed_stats(
    speeds: pl.DataFrame,
    column: str = "speed_kmh",
    by: Sequence[str] = ("camera_id", "class_name"),
    limits: pl.DataFrame | None = None,
) -> pl.DataFrame:
    """n, mean, median, 85th percentile and max of ``column`` per group (nulls ignored).

    Pass trusted rows (``trusted_speeds``, ``vehicle_speeds`` or tracks' ``median_speed_kmh``). With
    ``limits`` (``speed_limits``) adds limit_kmh and share_over_limit (share of values above the limit;
    null for cameras without a known limit).
    """
    keys = list(by)
    speed = pl.col(column)
    rows = speeds.filter(speed.is_not_null())
    aggs = [
        pl.len().alias("n"),
        speed.mean().round(1).alias("mean_kmh"),
        speed.median().round(1).alias("median_kmh"),
        speed.quantile(0.85, interpolation="linear").round(1).alias("p85_kmh"),
        speed.max().round(1).alias("max_kmh"),
    ]
    if limits is None:
        return rows.group_by(keys).agg(aggs).sort(keys)
    rows = rows.join(limits.select("camera_id", "limit_kmh"), on="camera_id", how="left")
    over = pl.when(pl.col("limit_kmh").is_null()).then(None).otherwise(speed > pl.col("limit_kmh"))
    return (
        rows.group_by(keys)
        .agg(*aggs, pl.col("limit_kmh").first(), over.mean().round(3).alias("share_over_limit"))
        .sort(keys)
    )


def speed_flow(detections: pl.DataFrame, flow: pl.DataFrame | None = None, every: str = "1m") -> pl.DataFrame:
    """Speed-flow points per camera and ``every`` bin: vehicles, flow rate (veh/h) and mean speed.

    Vehicles come from the ``flow`` table when given (vehicles first counted in the bin), else distinct
    tracks seen in the bin. Mean speed is over vehicles (each vehicle's mean trusted speed in the bin), so
    a slow vehicle seen in many frames does not weigh more. Bins without a trusted speed have a null mean.

    Columns: camera_id, bin_start, vehicles, flow_vph, mean_speed_kmh, speed_vehicles.
    """
    binned = detections.with_columns(pl.col("capture_ts").dt.truncate(every).alias("bin_start"))
    per_vehicle = (
        binned.filter(TRUSTED_SPEED).group_by("camera_id", "bin_start", "track_id").agg(pl.col("speed_kmh").mean())
    )
    speed = per_vehicle.group_by("camera_id", "bin_start").agg(
        pl.col("speed_kmh").mean().round(1).alias("mean_speed_kmh"), pl.len().cast(pl.Int64).alias("speed_vehicles")
    )
    if flow is not None:
        counts = flow_bins(flow, every, by_class=False)
    else:
        counts = binned.group_by("camera_id", "bin_start").agg(
            pl.col("track_id").n_unique().cast(pl.Int64).alias("vehicles")
        )
    bin_s = (pl.col("bin_start").dt.offset_by(every) - pl.col("bin_start")).dt.total_seconds()
    return (
        counts.join(speed, on=["camera_id", "bin_start"], how="full", coalesce=True)
        .with_columns(pl.col("vehicles").fill_null(0), pl.col("speed_vehicles").fill_null(0))
        .with_columns((pl.col("vehicles") * 3600 / bin_s).round(1).alias("flow_vph"))
        .select("camera_id", "bin_start", "vehicles", "flow_vph", "mean_speed_kmh", "speed_vehicles")
        .sort("camera_id", "bin_start")
    )


# -- violations ---------------------------------------------------------------------------------------------
def with_excess(violations: pl.DataFrame) -> pl.DataFrame:
    """Adds excess_kmh (speed - limit) and excess_band ("0-10", "10-20", "20-30", "30+" km/h over)."""
    excess = pl.col("speed_kmh") - pl.col("limit_kmh")
    band: pl.Expr = pl.lit(EXCESS_TOP_BAND)
    for upper, label in reversed(EXCESS_BANDS):
        band = pl.when(excess < upper).then(pl.lit(label)).otherwise(band)
    return violations.with_columns(
        excess.round(1).alias("excess_kmh"), pl.when(excess.is_null()).then(None).otherwise(band).alias("excess_band")
    )


def violations_per_hour(violations: pl.DataFrame) -> pl.DataFrame:
    """Violations per camera per clock hour: camera_id, hour, violations."""
    return (
        violations.group_by("camera_id", pl.col("capture_ts").dt.truncate("1h").alias("hour"))
        .agg(pl.len().cast(pl.Int64).alias("violations"))
        .sort("camera_id", "hour")
    )


def violation_patterns(violations: pl.DataFrame, tz: str = "UTC") -> dict[str, pl.DataFrame]:
    """Where, when and how much over the limit violations repeat.

    - ``by_camera``: violations, vehicles (distinct tracks), mean/max excess per camera
    - ``by_hour_of_day``: camera_id x hour of day (0-23, in ``tz``)
    - ``by_class``: camera_id x class
    - ``by_excess``: camera_id x excess band (km/h over the limit)
    - ``repeat_slots``: camera x hour-of-day slots with more than one violation (recurring problems)
    """
    v = with_excess(violations)
    v = v.with_columns(_in_tz(v, "capture_ts", tz).dt.hour().cast(pl.Int8).alias("hour_of_day"))
    count = pl.len().cast(pl.Int64).alias("violations")
    by_hour = v.group_by("camera_id", "hour_of_day").agg(count).sort("camera_id", "hour_of_day")
    return {
        "by_camera": v.group_by("camera_id")
        .agg(
            count,
            pl.col("track_id").n_unique().cast(pl.Int64).alias("vehicles"),
            pl.col("excess_kmh").mean().round(1).alias("mean_excess_kmh"),
            pl.col("excess_kmh").max().alias("max_excess_kmh"),
        )
        .sort("camera_id"),
        "by_hour_of_day": by_hour,
        "by_class": v.group_by("camera_id", "class_name").agg(count).sort("camera_id", "class_name"),
        "by_excess": v.group_by("camera_id", "excess_band").agg(count).sort("camera_id", "excess_band"),
        "repeat_slots": by_hour.filter(pl.col("violations") > 1).sort("violations", descending=True),
    }


def evidence_path(uri: str | None) -> Path | None:
    """The local file of an ``evidence_uri`` (``file://`` URI or plain path); None if not a readable file."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        path = Path(unquote(parsed.path))
    elif parsed.scheme == "" or (len(parsed.scheme) == 1 and os.name == "nt"):
        path = Path(uri)
    else:
        return None  # s3a://... : open it with the object store's client
    return path if path.is_file() else None


def evidence_img_tag(uri: str | None, width: int = 320) -> str:
    """An ``<img>`` tag with the JPEG inlined as base64, or a short note when the file is not available."""
    path = evidence_path(uri)
    if path is None:
        return f"<i>evidence not available</i><br><small>{html.escape(uri or 'no evidence_uri')}</small>"
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/jpeg;base64,{data}" width="{int(width)}" alt="{html.escape(path.name)}">'


def evidence_html(
    violations: pl.DataFrame, columns: Sequence[str] | None = None, width: int = 320, max_rows: int = 50
) -> str:
    """An HTML table of violations (first ``max_rows``) with their evidence images inline."""
    columns = list(
        columns
        or [
            c
            for c in (
                "capture_ts",
                "camera_id",
                "track_id",
                "class_name",
                "speed_kmh",
                "limit_kmh",
                "excess_kmh",
                "over_s",
            )
            if c in violations.columns
        ]
    )
    head = "".join(f"<th>{html.escape(c)}</th>" for c in [*columns, "evidence"])
    body = []
    for row in violations.head(max_rows).iter_rows(named=True):
        cells = "".join(f"<td>{html.escape(str(row[c]))}</td>" for c in columns)
        body.append(f"<tr>{cells}<td>{evidence_img_tag(row.get('evidence_uri'), width)}</td></tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
