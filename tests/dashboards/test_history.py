"""History queries (flow, speeds, violations, line crossings) over real Delta tables written with delta-rs."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
from deltalake import write_deltalake

from trafficstream import tables
from trafficstream.dashboards.history import (
    BINS,
    CROSSING_SCHEMA,
    NO_LANE,
    SERIES_SCHEMA,
    HistoryStore,
    choose_bin,
    complete_bins,
    lane_flow,
    line_flow,
    line_series,
    local_range,
    resample_flow,
)

UTC = timezone.utc
DAY = datetime(2025, 11, 20, tzinfo=UTC)


def _write(root, name: str, df: pl.DataFrame, partition_by=("camera_id",)) -> None:
    write_deltalake(str(root / name), df.to_arrow(), partition_by=list(partition_by), mode="append")


@pytest.fixture
def delta_root(tmp_path):
    root = tmp_path / "delta"
    minutes = [DAY + timedelta(hours=8, minutes=m) for m in range(0, 120)]  # 08:00 .. 09:59
    flow = pl.DataFrame(
        {
            "camera_id": ["motorway"] * 240 + ["other"] * 2,
            "minute": [m for m in minutes for _ in (0, 1)] + [minutes[0], minutes[1]],
            "class_name": ["car", "truck"] * 120 + ["car", "car"],
            "vehicles": [10, 1] * 120 + [99, 99],
        },
        schema_overrides={"minute": pl.Datetime("us", "UTC"), "vehicles": pl.Int64},
    )
    _write(root, tables.FLOW, flow)
    tracks = pl.DataFrame(
        {
            "camera_id": ["motorway"] * 5 + ["other"],
            "track_id": [1, 2, 3, 4, 5, 1],
            "class_name": ["car", "car", "truck", "car", "car", "car"],
            "first_seen_ts": [DAY + timedelta(hours=8, minutes=m) for m in (1, 2, 3, 70, 200)]
            + [DAY + timedelta(hours=8)],
            "median_speed_kmh": [95.0, 121.0, 82.0, None, 99.0, 300.0],
            "max_speed_kmh": [99.0, 130.0, 85.0, None, 100.0, 300.0],
        },
        schema_overrides={"first_seen_ts": pl.Datetime("us", "UTC")},
    )
    _write(root, tables.TRACKS, tracks)
    violations = pl.DataFrame(
        {
            "camera_id": ["motorway", "motorway", "other"],
            "track_id": [2, 9, 1],
            "capture_ts": [DAY + timedelta(hours=8, minutes=2), DAY + timedelta(hours=11), DAY + timedelta(hours=8)],
            "speed_kmh": [125.0, 140.0, 300.0],
        },
        schema_overrides={"capture_ts": pl.Datetime("us", "UTC")},
    )
    _write(root, tables.VIOLATIONS, violations)
    return root


def test_flow_by_range_and_camera(delta_root):
    store = HistoryStore(delta_root)
    flow = store.flow("motorway", DAY + timedelta(hours=8, minutes=30), DAY + timedelta(hours=9))
    assert flow.height == 60  # 30 minutes x 2 classes, end exclusive
    assert flow["minute"].min() == DAY + timedelta(hours=8, minutes=30)
    assert flow["minute"].max() == DAY + timedelta(hours=8, minutes=59)
    totals = dict(flow.group_by("class_name").agg(pl.col("vehicles").sum()).iter_rows())
    assert totals == {"car": 300, "truck": 30}
    assert store.flow("motorway", DAY, DAY + timedelta(hours=1)).is_empty()


def test_vehicle_speeds_one_per_track_in_range(delta_root):
    store = HistoryStore(delta_root)
    speeds = store.vehicle_speeds("motorway", DAY + timedelta(hours=8), DAY + timedelta(hours=10))
    # Track 4 has no plausible speed, track 5 is outside the range, "other" is another camera.
    assert speeds["speed_kmh"].to_list() == [95.0, 121.0, 82.0]
    assert speeds["class_name"].to_list() == ["car", "car", "truck"]
    assert store.violation_count("motorway", DAY + timedelta(hours=8), DAY + timedelta(hours=10)) == 1


def test_query_in_local_time_matches_utc(delta_root):
    store = HistoryStore(delta_root)
    local_start = (DAY + timedelta(hours=8)).astimezone()  # same instant, host time zone
    result = store.query("motorway", local_start, local_start + timedelta(hours=2))
    assert result.missing == []
    assert int(result.flow["vehicles"].sum()) == 120 * 11
    assert result.speeds.height == 3 and result.violations == 1


def test_missing_tables_mean_no_data_yet(tmp_path):
    store = HistoryStore(tmp_path / "nothing-here")
    assert store.flow("motorway", DAY, DAY + timedelta(days=1)) is None
    result = store.query("motorway", DAY, DAY + timedelta(days=1))
    assert result.missing == [tables.FLOW, tables.TRACKS, tables.VIOLATIONS]
    assert result.flow.is_empty() and result.speeds.is_empty() and result.violations == 0


def test_epoch_seconds_columns_are_understood(tmp_path):
    root = tmp_path / "delta"
    t = (DAY + timedelta(hours=8)).timestamp()
    _write(
        root,
        tables.FLOW,
        pl.DataFrame(
            {"camera_id": ["m", "m"], "minute": [t, t + 86_400.0], "class_name": ["bus", "bus"], "vehicles": [3, 4]}
        ),
    )
    flow = HistoryStore(root).flow("m", DAY, DAY + timedelta(days=1))
    assert flow.rows() == [(DAY + timedelta(hours=8), "bus", 3)]


def test_resample_and_bins():
    assert choose_bin(DAY, DAY + timedelta(hours=2)) == "1m"
    assert choose_bin(DAY, DAY + timedelta(days=1)) == "15m"
    assert choose_bin(DAY, DAY + timedelta(days=30)) == "1h"
    assert BINS["15m"] == ("15 min", 900)
    flow = pl.DataFrame(
        {"minute": [DAY + timedelta(minutes=m) for m in range(30)], "class_name": ["car"] * 30, "vehicles": [1] * 30},
        schema_overrides={"minute": pl.Datetime("us", "UTC")},
    )
    binned = resample_flow(flow, "15m")
    assert binned.rows() == [(DAY, "car", 15), (DAY + timedelta(minutes=15), "car", 15)]


def test_local_range():
    start, end = local_range("2025-11-20", "2025-11-21", "07:30", "18:00")
    assert start == datetime(2025, 11, 20, 7, 30).astimezone()
    assert end == datetime(2025, 11, 21, 18, 1).astimezone()  # the end minute is included
    with pytest.raises(ValueError, match="HH:MM"):
        local_range("2025-11-20", "2025-11-20", "7h", "08:00")
    with pytest.raises(ValueError, match="after its start"):
        local_range("2025-11-21", "2025-11-20")


def _crossings(rows) -> pl.DataFrame:
    """Rows of the crossings table as the job writes them (camera_id, event_date partitions)."""
    df = pl.DataFrame(
        rows,
        schema={
            "camera_id": pl.String,
            "line_id": pl.String,
            "track_id": pl.Int64,
            "direction": pl.String,
            "crossing_ts": pl.Datetime("us", "UTC"),
            "lane_id": pl.String,
            "class_name": pl.String,
            "speed_kmh": pl.Float64,
        },
        orient="row",
    )
    return df.with_columns(pl.col("crossing_ts").dt.date().alias("event_date"))


@pytest.fixture
def crossings_root(tmp_path):
    root = tmp_path / "delta"
    t = DAY + timedelta(hours=8)
    rows = []
    for i in range(40):  # 40 vehicles, one a minute, towards the camera: near line then far line, in lane 1 or 2
        lane = "lane-1" if i % 4 else "lane-2"
        rows.append(("motorway", "near", i, "towards", t + timedelta(minutes=i), lane, "car", 90.0))
        rows.append(("motorway", "far", i, "towards", t + timedelta(minutes=i, seconds=2), lane, "car", 90.0))
    rows.append(("motorway", "near", 99, "away", t + timedelta(minutes=3), None, "truck", None))  # no lane
    rows.append(("other", "near", 1, "towards", t, "lane-1", "car", 80.0))  # another camera
    rows.append(("motorway", "near", 100, "towards", DAY + timedelta(days=1, hours=8), "lane-1", "car", 80.0))
    write_deltalake(
        str(root / tables.CROSSINGS),
        _crossings(rows).to_arrow(),
        partition_by=["camera_id", "event_date"],
        mode="append",
    )
    return root


def test_crossings_by_range_and_camera(crossings_root):
    store = HistoryStore(crossings_root)
    got = store.crossings("motorway", DAY + timedelta(hours=8), DAY + timedelta(hours=8, minutes=30))
    assert got.schema == CROSSING_SCHEMA
    assert got.height == 61  # 30 vehicles x 2 lines, and the one going away; not tomorrow's, not other's
    assert got["crossing_ts"].is_sorted()
    assert HistoryStore(crossings_root / "nothing").crossings("motorway", DAY, DAY + timedelta(days=1)) is None


def test_line_and_lane_flow_per_bin(crossings_root):
    store = HistoryStore(crossings_root)
    start, end = DAY + timedelta(hours=8), DAY + timedelta(hours=9)
    crossings = store.crossings("motorway", start, end)
    lines = line_flow(crossings, "15m")
    totals = dict(lines.group_by("series").agg(pl.col("vehicles").sum()).iter_rows())
    assert totals == {"near · towards": 40, "far · towards": 40, "near · away": 1}
    assert lines.filter(pl.col("series") == "near · towards")["vehicles"].to_list() == [15, 15, 10]
    # Lanes: each vehicle once (at its first crossing), although it crossed two lines.
    lanes = lane_flow(crossings, "15m")
    assert dict(lanes.group_by("series").agg(pl.col("vehicles").sum()).iter_rows()) == {
        "lane-1": 30,
        "lane-2": 10,
        NO_LANE: 1,
    }
    assert line_series("near", "towards") == "near · towards"
    # Every bin of the range, 0 where nothing crossed: 4 bins x 3 series.
    full = complete_bins(lines, start, end, "15m")
    assert full.height == 12 and full.schema == SERIES_SCHEMA
    assert full.filter(pl.col("series") == "near · away")["vehicles"].to_list() == [1, 0, 0, 0]
    assert full["minute"].min() == start and full["minute"].max() == start + timedelta(minutes=45)
    assert line_flow(crossings.clear(), "1m").is_empty() and complete_bins(lines.clear(), start, end, "1m").is_empty()
