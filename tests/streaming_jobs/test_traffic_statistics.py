"""The traffic statistics batch job on small known tables: counts, trusted-speed percentiles, idempotent reruns.

Input tables are written with delta-spark in the vehicle job's own schemas and partitioning
(sinks.TABLE_SCHEMAS); the camera limits come from infra/config/demo.yaml (motorway-overpass 100 km/h,
dual-carriageway 112 km/h).
"""

from __future__ import annotations

import argparse
from datetime import date, datetime, timedelta, timezone

import polars as pl
import pytest
from deltalake import DeltaTable

from trafficstream import tables
from trafficstream.streaming_jobs import traffic_statistics as ts

UTC = timezone.utc
T0 = datetime(2024, 5, 1, 8, 0, tzinfo=UTC)
MOTORWAY, DUAL = "motorway-overpass", "dual-carriageway"


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


# -- pure Python ------------------------------------------------------------------------------------------------
def test_parse_time_defaults_to_utc() -> None:
    assert ts.parse_time("2024-05-01T08:00") == T0
    assert ts.parse_time("2024-05-01T08:00Z") == T0
    assert ts.parse_time("2024-05-01T10:00+02:00") == T0
    with pytest.raises(argparse.ArgumentTypeError):
        ts.parse_time("yesterday")


def test_range_is_widened_to_whole_quarter_hours() -> None:
    assert ts.aligned_range(at(7 * 60 + 3), at(29 * 60)) == (T0, at(30 * 60))
    assert ts.aligned_range(T0, at(15 * 60)) == (T0, at(15 * 60))
    assert ts.replace_predicate(T0, at(900)) == (
        "bin_start >= TIMESTAMP '2024-05-01 08:00:00+00:00' AND bin_start < TIMESTAMP '2024-05-01 08:15:00+00:00'"
    )


def test_contract_lists_every_column_once() -> None:
    names = [c[0] for c in ts.COLUMNS]
    assert len(names) == len(set(names)) and set(ts.KEY) <= set(names) and set(ts.PARTITION_BY) <= set(names)
    from trafficstream import tables

    assert all(c.doc for c in tables.table(tables.TRAFFIC_STATS).columns)  # every column documented, once


# -- Spark ------------------------------------------------------------------------------------------------------
TRACKS = [  # camera, track, class, first seen (s after 08:00)
    (MOTORWAY, 1, "car", 10),
    (MOTORWAY, 2, "car", 40),
    (MOTORWAY, 3, "car", 65),
    (MOTORWAY, 4, "car", 899),
    (MOTORWAY, 5, "truck", 120),
    (MOTORWAY, 6, "car", -1),  # 6: first seen before the range
    (DUAL, 1, "car", 1200),
]
DETECTIONS = [  # camera, track, seconds, speed, flag
    (MOTORWAY, 1, 11, 90.0, None),
    (MOTORWAY, 1, 12, 100.0, None),
    (MOTORWAY, 1, 13, 110.0, None),
    (MOTORWAY, 1, 14, 300.0, "implausible_speed"),
    (MOTORWAY, 1, 10, None, "insufficient_history"),
    (MOTORWAY, 2, 41, 120.0, None),
    (MOTORWAY, 2, 42, 130.0, None),
    (MOTORWAY, 3, 66, 80.0, None),
    (MOTORWAY, 4, 901, 140.0, None),  # measured after its bin (and after the 08:15 end of a narrow run)
    (MOTORWAY, 5, 121, 60.0, "outside_calibration"),  # never trusted: counted, no speed
    (MOTORWAY, 6, 5, 200.0, None),
    (DUAL, 1, 1201, 100.0, None),
]
VIOLATIONS = [(MOTORWAY, 2, "car", 45), (MOTORWAY, 4, "car", 901)]  # camera, track, class, seconds


def _write_inputs(spark, settings) -> None:
    from trafficstream.streaming_jobs.sinks import TABLE_SCHEMAS

    def append(table: str, rows: list[dict]) -> None:  # the job's schema and partitioning, created on write
        schema, partitions = TABLE_SCHEMAS[table]
        data = [tuple(r.get(f.name) for f in schema.fields) for r in rows]
        (
            spark.createDataFrame(data, schema)
            .write.format("delta")
            .mode("append")
            .partitionBy(*partitions)
            .save(settings.table_uri(table))
        )

    def naive(seconds: float) -> datetime:  # the session time zone is UTC
        return at(seconds).replace(tzinfo=None)

    append(
        tables.TRACKS,
        [
            {
                "camera_id": c,
                "track_id": t,
                "class_name": k,
                "first_seen_ts": naive(s),
                "last_seen_ts": naive(s + 3),
                "ended": True,
                "updated_batch": 0,
            }
            for c, t, k, s in TRACKS
        ],
    )
    append(
        tables.DETECTIONS,
        [
            {
                "camera_id": c,
                "track_id": t,
                "class_name": "car",
                "frame_index": i,
                "capture_ts": naive(s),
                "speed_kmh": v,
                "speed_flag": f,
                "event_date": date(2024, 5, 1),
            }
            for i, (c, t, s, v, f) in enumerate(DETECTIONS)
        ],
    )
    append(
        tables.VIOLATIONS,
        [
            {
                "camera_id": c,
                "track_id": t,
                "class_name": k,
                "capture_ts": naive(s),
                "speed_kmh": 130.0,
                "limit_kmh": 100.0,
                "event_date": date(2024, 5, 1),
            }
            for c, t, k, s in VIOLATIONS
        ],
    )


def _rows(settings) -> dict[tuple, dict]:
    df = pl.read_delta(settings.table_uri(ts.TRAFFIC_STATS))
    return {
        (r["camera_id"], r["bin_minutes"], r["bin_start"].replace(tzinfo=UTC), r["class_name"]): r
        for r in df.to_dicts()
    }


@pytest.mark.integration
def test_known_inputs_give_known_statistics_and_reruns_are_identical(spark, settings_factory) -> None:
    settings = settings_factory(create_topics=False, name="traffic-stats")
    _write_inputs(spark, settings)

    first = ts.run(spark, settings, at(7 * 60), at(29 * 60))  # widened to 08:00 .. 08:30
    assert (first["since"], first["until"]) == (T0.isoformat(), at(1800).isoformat())
    rows = _rows(settings)

    car = rows[(MOTORWAY, 15, T0, "car")]  # tracks 1-4: vehicle medians 100, 125, 80, 140
    assert (car["vehicles"], car["speed_vehicles"]) == (4, 4)
    assert car["mean_speed_kmh"] == 111.25 and car["median_speed_kmh"] == 112.5
    assert car["p85_speed_kmh"] == 133.25  # numpy.percentile([80, 100, 125, 140], 85)
    assert (car["speed_limit_kmh"], car["over_limit_vehicles"], car["share_over_limit"]) == (100.0, 2, 0.5)
    assert car["violations"] == 1  # track 4's violation is at 08:15:01, in the next bin

    truck = rows[(MOTORWAY, 15, T0, "truck")]
    assert (truck["vehicles"], truck["speed_vehicles"], truck["over_limit_vehicles"]) == (1, 0, 0)
    assert truck["mean_speed_kmh"] is None and truck["p85_speed_kmh"] is None and truck["share_over_limit"] is None

    minute0 = rows[(MOTORWAY, 1, T0, "car")]  # tracks 1, 2
    assert (minute0["vehicles"], minute0["median_speed_kmh"], minute0["p85_speed_kmh"]) == (2, 112.5, 121.25)
    assert (minute0["share_over_limit"], minute0["violations"]) == (0.5, 1)
    assert rows[(MOTORWAY, 1, at(60), "car")]["mean_speed_kmh"] == 80.0
    assert rows[(MOTORWAY, 1, at(840), "car")]["mean_speed_kmh"] == 140.0
    late_violation = rows[(MOTORWAY, 15, at(900), "car")]
    assert (late_violation["vehicles"], late_violation["violations"]) == (0, 1)
    dual = rows[(DUAL, 15, at(900), "car")]
    assert (dual["vehicles"], dual["mean_speed_kmh"], dual["speed_limit_kmh"], dual["share_over_limit"]) == (
        1,
        100.0,
        112.0,
        0.0,
    )
    assert not any(k[0] == MOTORWAY and k[2] < T0 for k in rows)  # track 6 is outside the range
    # 15-min rows: motorway car + truck @08:00, violation-only @08:15, dual @08:15; 1-min rows: 08:00, 08:01,
    # 08:02 truck, 08:14, 08:15 violation, dual 08:20.
    assert len(rows) == 4 + 6 == first["rows_written"]

    second = ts.run(spark, settings, at(7 * 60), at(29 * 60))
    assert _rows(settings) == rows
    assert second["rows_replaced"] == len(rows) and second["version"] == first["version"] + 1

    # A narrower rerun replaces only its own bins: a vehicle added at 08:20 shows up, 08:00 stays as it was.
    tracks_path = settings.table_uri(tables.TRACKS)
    extra = spark.read.format("delta").load(tracks_path).where("camera_id = 'dual-carriageway'").limit(1)
    extra.selectExpr(
        "camera_id",
        "CAST(2 AS BIGINT) AS track_id",
        "class_name",
        "first_frame",
        "last_frame",
        "first_seen_ts + INTERVAL 30 SECONDS AS first_seen_ts",
        "last_seen_ts",
        "n_frames",
        "median_speed_kmh",
        "max_speed_kmh",
        "distance_m",
        "direction_deg",
        "ended",
        "updated_batch",
    ).write.format("delta").mode("append").save(tracks_path)
    ts.run(spark, settings, at(900), at(1800))
    after = _rows(settings)
    assert after[(DUAL, 15, at(900), "car")]["vehicles"] == 2
    assert after[(DUAL, 15, at(900), "car")]["speed_vehicles"] == 1
    assert {k: v for k, v in after.items() if k[2] < at(900)} == {k: v for k, v in rows.items() if k[2] < at(900)}
    # The table's own contract: partitioned by camera_id, the declared columns in order.
    table = DeltaTable(settings.table_uri(ts.TRAFFIC_STATS))
    assert table.metadata().partition_columns == ["camera_id"]
    assert [f.name for f in table.schema().fields] == [c[0] for c in ts.COLUMNS]
    assert table.protocol().min_writer_version == 2  # no table features: delta-rs / Polars read it


CROSSINGS = [  # camera, line, track, direction, lane, class, seconds, speed at the line
    (MOTORWAY, "near", 1, "towards_camera", "lane-1", "car", 12.0, 100.0),
    (MOTORWAY, "near", 2, "towards_camera", "lane-1", "car", 42.0, 120.0),
    (MOTORWAY, "near", 3, "towards_camera", "lane-2", "car", 66.0, None),  # no trusted speed yet
    (MOTORWAY, "near", 4, "towards_camera", None, None, 70.0, 90.0),  # outside every lane, class unknown
    (MOTORWAY, "far", 1, "towards_camera", "lane-1", "car", 11.0, 98.0),
    (MOTORWAY, "near", 5, "away_from_camera", "lane-1", "car", 950.0, float("nan")),
]


@pytest.mark.integration
def test_line_stats_per_line_direction_and_lane(spark, settings_factory) -> None:
    from trafficstream.streaming_jobs.sinks import TABLE_SCHEMAS

    settings = settings_factory(create_topics=False, name="line-stats")
    _write_inputs(spark, settings)
    schema, partitions = TABLE_SCHEMAS[tables.CROSSINGS]
    rows = [
        {
            "camera_id": c,
            "line_id": line,
            "track_id": t,
            "direction": d,
            "lane_id": lane,
            "class_name": k,
            "crossing_ts": at(sec).replace(tzinfo=None),
            "speed_kmh": v,
            "event_date": date(2024, 5, 1),
        }
        for c, line, t, d, lane, k, sec, v in CROSSINGS
    ]
    data = [tuple(r.get(f.name) for f in schema.fields) for r in rows]
    spark.createDataFrame(data, schema).write.format("delta").partitionBy(*partitions).save(
        settings.table_uri(tables.CROSSINGS)
    )
    summary = ts.run(spark, settings, T0, at(1800))
    df = pl.read_delta(settings.table_uri(ts.LINE_STATS))
    got = {
        (
            r["line_id"],
            r["direction"],
            r["lane_id"],
            r["bin_minutes"],
            r["bin_start"].replace(tzinfo=UTC),
            r["class_name"],
        ): (
            r["vehicles"],
            r["speed_vehicles"],
            r["median_speed_kmh"],
        )
        for r in df.to_dicts()
    }
    assert got[("near", "towards_camera", "lane-1", 15, T0, "car")] == (2, 2, 110.0)
    assert got[("near", "towards_camera", "lane-2", 15, T0, "car")] == (1, 0, None)
    assert got[("near", "towards_camera", "", 15, T0, "")] == (1, 1, 90.0)
    assert got[("far", "towards_camera", "lane-1", 1, T0, "car")] == (1, 1, 98.0)
    assert got[("near", "away_from_camera", "lane-1", 15, at(900), "car")] == (1, 0, None)  # NaN: not a speed
    assert summary[ts.LINE_STATS]["rows_written"] == df.height == len(got)
    again = ts.run(spark, settings, T0, at(1800))
    assert pl.read_delta(settings.table_uri(ts.LINE_STATS)).sort(df.columns).equals(df.sort(df.columns))
    assert again[ts.LINE_STATS]["rows_replaced"] == df.height


@pytest.mark.integration
def test_missing_inputs_fail_clearly(spark, settings_factory) -> None:
    settings = settings_factory(create_topics=False, name="traffic-stats-empty")
    with pytest.raises(FileNotFoundError, match="detections, tracks, violations"):
        ts.run(spark, settings, T0, at(900))
