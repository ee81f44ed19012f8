"""History queries over real Delta tables written with delta-rs in a temporary directory."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest
from deltalake import write_deltalake

from trafficstream import tables
from trafficstream.dashboards.history import BINS, HistoryStore, choose_bin, local_range, resample_flow

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
