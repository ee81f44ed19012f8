"""Unit tests of trafficstream.analysis (the notebooks' computations) on small hand-made frames."""

from __future__ import annotations

import datetime as dt
import importlib
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from tables_fixture import SCHEMAS, write_tables

from trafficstream import analysis as an
from trafficstream import tables

UTC = dt.timezone.utc
T0 = dt.datetime(2024, 5, 14, 7, 0, tzinfo=UTC)


def at(minutes: float) -> dt.datetime:
    return T0 + dt.timedelta(minutes=minutes)


def empty(name: str) -> pl.DataFrame:
    schema, _ = SCHEMAS[name]
    return pl.from_arrow(pa.Table.from_pylist([], schema=schema))


def detections(rows: list[tuple]) -> pl.DataFrame:
    """rows: (camera_id, track_id, class_name, minute, speed_kmh, speed_flag)."""
    return pl.DataFrame(
        [
            {"camera_id": c, "track_id": t, "class_name": k, "capture_ts": at(m), "speed_kmh": s, "speed_flag": f}
            for c, t, k, m, s, f in rows
        ],
        schema={
            "camera_id": pl.String,
            "track_id": pl.Int64,
            "class_name": pl.String,
            "capture_ts": pl.Datetime("us", "UTC"),
            "speed_kmh": pl.Float64,
            "speed_flag": pl.String,
        },
    )


# -- speeds ---------------------------------------------------------------------------------------------------
def test_speed_stats_mean_median_and_85th_percentile():
    det = detections([("cam", i, "car", 0, float(10 * i), None) for i in range(1, 11)])  # 10, 20, ..., 100
    row = an.speed_stats(det).row(0, named=True)
    assert (row["n"], row["mean_kmh"], row["median_kmh"], row["max_kmh"]) == (10, 55.0, 55.0, 100.0)
    # linear interpolation: position 0.85 * (10 - 1) = 7.65 -> 80 + 0.65 * (90 - 80)
    assert row["p85_kmh"] == pytest.approx(86.5)


def test_trusted_speeds_drop_flagged_and_missing_estimates():
    det = detections(
        [
            ("cam", 1, "car", 0, 90.0, None),
            ("cam", 1, "car", 0, None, "insufficient_history"),
            ("cam", 1, "car", 0, 250.0, "implausible_speed"),
            ("cam", 1, "car", 0, None, None),
        ]
    )
    assert an.trusted_speeds(det)["speed_kmh"].to_list() == [90.0]
    assert an.speed_stats(an.trusted_speeds(det))["max_kmh"].to_list() == [90.0]


def test_speed_stats_per_camera_and_class_with_share_over_limit():
    det = detections(
        [
            ("a", 1, "car", 0, 90.0, None),
            ("a", 2, "car", 0, 110.0, None),
            ("a", 3, "car", 0, 120.0, None),
            ("a", 4, "truck", 0, 80.0, None),
            ("b", 5, "car", 0, 150.0, None),
        ]
    )
    limits = an.speed_limits(empty(tables.VIOLATIONS), {"a": 100})
    stats = an.speed_stats(det, limits=limits)
    assert stats.select("camera_id", "class_name", "n", "limit_kmh", "share_over_limit").rows() == [
        ("a", "car", 3, 100.0, pytest.approx(0.667)),
        ("a", "truck", 1, 100.0, 0.0),
        ("b", "car", 1, None, None),
    ]  # no known limit for camera b: share unknown, not 0


def test_vehicle_speeds_weigh_each_vehicle_once():
    det = detections(
        [
            ("a", 1, "car", 0, 50.0, None),
            ("a", 1, "car", 0, 52.0, None),
            ("a", 1, "truck", 0, 54.0, None),
            ("a", 1, "car", 0, 200.0, "implausible_speed"),
            ("a", 2, "car", 0, 100.0, None),
        ]
    )
    per_vehicle = an.vehicle_speeds(det)
    assert per_vehicle.select("track_id", "class_name", "speed_kmh", "samples").rows() == [
        (1, "car", 52.0, 3),
        (2, "car", 100.0, 1),
    ]
    assert an.speed_stats(per_vehicle)["mean_kmh"].to_list() == [76.0]


def test_speed_limits_config_overrides_the_violations_table():
    v = pl.DataFrame(
        {"camera_id": ["a", "a", "b"], "capture_ts": [at(0), at(5), at(1)], "limit_kmh": [90.0, 100.0, 80.0]}
    )
    assert an.speed_limits(v).rows() == [("a", 100.0, "violations"), ("b", 80.0, "violations")]  # newest wins
    assert an.speed_limits(v, {"b": 70, "c": 50}).rows() == [
        ("a", 100.0, "violations"),
        ("b", 70.0, "config"),
        ("c", 50.0, "config"),
    ]


def test_speed_flow_counts_vehicles_and_averages_per_vehicle():
    det = detections(
        [
            ("a", 1, "car", 0.1, 50.0, None),
            ("a", 1, "car", 0.2, 50.0, None),
            ("a", 1, "car", 0.3, 50.0, None),
            ("a", 2, "car", 0.5, 100.0, None),
            ("a", 3, "car", 0.6, None, "insufficient_history"),
            ("a", 4, "car", 1.5, 80.0, None),
        ]
    )
    sf = an.speed_flow(det)
    assert sf.select("bin_start", "vehicles", "flow_vph", "mean_speed_kmh", "speed_vehicles").rows() == [
        (at(0), 3, 180.0, 75.0, 2),
        (at(1), 1, 60.0, 80.0, 1),
    ]
    flow = pl.DataFrame(
        {"camera_id": ["a", "a"], "minute": [at(0), at(2)], "class_name": ["car", "car"], "vehicles": [5, 2]}
    )
    with_flow = an.speed_flow(det, flow)
    assert with_flow.select("bin_start", "vehicles", "mean_speed_kmh").rows() == [
        (at(0), 5, 75.0),
        (at(1), 0, 80.0),
        (at(2), 2, None),
    ]
    assert an.speed_flow(det, every="5m")["flow_vph"].to_list() == [48.0]  # 4 vehicles in 5 min


# -- flow -----------------------------------------------------------------------------------------------------
def flow_15m(volumes: dict[float, int], camera: str = "a") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "camera_id": [camera] * len(volumes),
            "bin_start": [at(m) for m in volumes],
            "vehicles": list(volumes.values()),
        }
    )


def test_peak_hour_and_peak_hour_factor_on_a_known_example():
    # Textbook example: 15-min volumes 100, 120, 150, 130 -> hour 500, PHF = 500 / (4 x 150) = 0.833
    ph = an.peak_hour(flow_15m({0: 100, 15: 120, 30: 150, 45: 130, 60: 50}))
    assert ph.row(0, named=True) == {
        "camera_id": "a",
        "peak_start": at(0),
        "peak_end": at(60),
        "volume": 500,
        "peak_15m": 150,
        "phf": 0.833,
        "full_hour": True,
    }


def test_peak_hour_picks_the_busiest_window_per_camera_and_counts_gaps_as_zero():
    both = pl.concat(
        [flow_15m({0: 10, 15: 10, 30: 80, 45: 80, 60: 80, 75: 80, 90: 10}, "a"), flow_15m({0: 40, 30: 40}, "b")]
    )
    ph = an.peak_hour(both)
    assert ph.select("camera_id", "peak_start", "volume", "peak_15m", "phf", "full_hour").rows() == [
        ("a", at(30), 320, 80, 1.0, True),
        ("b", at(0), 80, 40, 0.5, False),
    ]  # b: data end at 07:30-07:45, the hour is not fully observed


def test_flow_bins_sum_minutes_into_15_minute_and_hourly_bins():
    flow = pl.DataFrame(
        {
            "camera_id": ["a"] * 5,
            "minute": [at(1), at(14), at(15), at(59), at(61)],
            "class_name": ["car", "car", "truck", "car", "car"],
            "vehicles": [2, 3, 1, 4, 5],
        }
    )
    assert an.flow_bins(flow).rows() == [
        ("a", at(0), "car", 5),
        ("a", at(15), "truck", 1),
        ("a", at(45), "car", 4),
        ("a", at(60), "car", 5),
    ]
    assert an.flow_bins(flow, "1h", by_class=False).rows() == [("a", at(0), 10), ("a", at(60), 5)]


def test_flow_from_tracks_counts_each_vehicle_in_its_first_minute():
    tracks = pl.DataFrame(
        {
            "camera_id": ["a", "a", "a"],
            "first_seen_ts": [at(0.2), at(0.9), at(1.1)],
            "class_name": ["car", "car", "bus"],
        }
    )
    assert an.flow_from_tracks(tracks).rows() == [("a", at(0), "car", 2), ("a", at(1), "bus", 1)]


# -- violations -----------------------------------------------------------------------------------------------
def violations() -> pl.DataFrame:
    rows = [
        ("a", 1, "car", at(0), 105.0),
        ("a", 2, "car", at(10), 119.0),
        ("a", 3, "truck", at(70), 131.0),
        ("b", 4, "car", at(5), 120.0),
    ]
    return pl.DataFrame(
        [
            {
                "camera_id": c,
                "track_id": t,
                "class_name": k,
                "capture_ts": ts,
                "speed_kmh": s,
                "limit_kmh": 100.0 if c == "a" else 112.0,
            }
            for c, t, k, ts, s in rows
        ]
    )


def test_violation_excess_bands_per_hour_and_patterns():
    v = an.with_excess(violations())
    assert v.select("excess_kmh", "excess_band").rows() == [
        (5.0, "0-10"),
        (19.0, "10-20"),
        (31.0, "30+"),
        (8.0, "0-10"),
    ]
    assert an.violations_per_hour(violations()).rows() == [("a", at(0), 2), ("a", at(60), 1), ("b", at(0), 1)]
    p = an.violation_patterns(violations(), tz="Europe/Amsterdam")  # 07:00 UTC = 09:00 CEST
    assert p["by_hour_of_day"].rows() == [("a", 9, 2), ("a", 10, 1), ("b", 9, 1)]
    assert p["repeat_slots"].rows() == [("a", 9, 2)]
    assert p["by_camera"].row(0) == ("a", 3, 3, 18.3, 31.0)
    assert p["by_class"].rows() == [("a", "car", 2), ("a", "truck", 1), ("b", "car", 1)]
    assert p["by_excess"].rows() == [("a", "0-10", 1), ("a", "10-20", 1), ("a", "30+", 1), ("b", "0-10", 1)]


def test_evidence_path_and_inline_images(tmp_path: Path):
    jpeg = tmp_path / "with space" / "v.jpg"
    jpeg.parent.mkdir()
    jpeg.write_bytes(b"\xff\xd8\xff\xe0fake-jpeg")
    assert an.evidence_path(jpeg.as_uri()) == jpeg  # percent-encoded file:// URI
    assert an.evidence_path(str(jpeg)) == jpeg
    assert an.evidence_path((tmp_path / "gone.jpg").as_uri()) is None
    assert an.evidence_path("s3a://bucket/evidence/v.jpg") is None
    assert an.evidence_path(None) is None
    v = violations().head(2).with_columns(pl.Series("evidence_uri", [jpeg.as_uri(), None]))
    page = an.evidence_html(an.with_excess(v))
    assert page.count("<tr>") == 3 and page.count("data:image/jpeg;base64,/9j/") == 1
    assert "evidence not available" in page and "excess_kmh" in page


# -- empty tables: a run without traffic ---------------------------------------------------------------------------
def test_every_function_accepts_empty_tables():
    det, flow, tracks, v = (empty(n) for n in (tables.DETECTIONS, tables.FLOW, tables.TRACKS, tables.VIOLATIONS))
    f15 = an.flow_bins(flow)
    results = [
        f15,
        an.flow_bins(flow, "1h", by_class=False),
        an.peak_hour(f15),
        an.flow_from_tracks(tracks),
        an.trusted_speeds(det),
        an.vehicle_speeds(det),
        an.speed_limits(v),
        an.speed_stats(an.trusted_speeds(det), limits=an.speed_limits(v)),
        an.speed_stats(tracks, column="median_speed_kmh"),
        an.speed_flow(det),
        an.speed_flow(det, flow),
        an.with_excess(v),
        an.violations_per_hour(v),
        *an.violation_patterns(v).values(),
    ]
    assert all(r.is_empty() for r in results)
    assert an.peak_hour(f15).columns == [
        "camera_id",
        "peak_start",
        "peak_end",
        "volume",
        "peak_15m",
        "phf",
        "full_hour",
    ]
    assert "share_over_limit" in an.speed_stats(det, limits=an.speed_limits(v)).columns
    assert an.evidence_html(v).count("<tr>") == 1  # the header only


# -- reading the tables -----------------------------------------------------------------------------------------
def test_resolve_delta_root(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    monkeypatch.delenv(an.DELTA_ROOT_ENV, raising=False)
    assert an.resolve_delta_root(None, tmp_path) == str(tmp_path / "var" / "demo" / "delta")
    monkeypatch.setenv(an.DELTA_ROOT_ENV, "runs/x/delta")
    assert an.resolve_delta_root(None, tmp_path) == str(tmp_path / "runs" / "x" / "delta")
    assert an.resolve_delta_root(str(tmp_path / "abs"), Path("/elsewhere")) == str(tmp_path / "abs")
    assert an.resolve_delta_root("s3://bucket/delta/") == "s3://bucket/delta"
    assert (Path(an.find_repo_root(Path(__file__).parent)) / "trafficstream" / "analysis.py").is_file()


def test_read_table_time_travel_and_rows_per_version(tmp_path: Path):
    counts = write_tables(tmp_path / "delta", evidence_root=tmp_path / "evidence")
    root = str(tmp_path / "delta")
    versions = an.table_versions(root, tables.VIOLATIONS)
    assert versions["version"].to_list() == [1, 0]
    assert versions["rows"][0] == counts[tables.VIOLATIONS] > versions["rows"][1] > 0
    assert an.read_table(root, tables.VIOLATIONS, version=0).height == versions["rows"][1]
    with pytest.raises(FileNotFoundError, match="make demo"):
        an.read_table(str(tmp_path / "nowhere"), tables.FLOW)
    # the fixture's evidence: real JPEGs, one violation without evidence, one whose file is gone
    uris = an.read_table(root, tables.VIOLATIONS)["evidence_uri"].to_list()
    found = [an.evidence_path(u) for u in uris]
    assert None in uris and sum(p is None for p in found) == 2
    assert all(p.read_bytes()[:2] == b"\xff\xd8" for p in found if p is not None)


def test_empty_tables_have_the_schema_and_two_versions(tmp_path: Path):
    write_tables(tmp_path / "delta", empty=True)
    for name in tables.ALL_TABLES:
        assert an.table_versions(str(tmp_path / "delta"), name)["rows"].to_list() == [0, 0]
        assert an.read_table(str(tmp_path / "delta"), name).columns == SCHEMAS[name][0].names


def test_fixture_schemas_match_the_job():
    """The fixture writes what the Spark job writes (skipped where the job's module cannot be imported)."""
    sinks = None
    for module in ("trafficstream.streaming_jobs.sinks", "trafficstream.streaming_jobs.sinks"):
        try:
            sinks = importlib.import_module(module)
            break
        except ImportError:
            continue
    if sinks is None:
        pytest.skip("the job's sinks module (pyspark) is not importable here")
    spark_to_arrow = {
        "StringType": pa.string(),
        "LongType": pa.int64(),
        "IntegerType": pa.int32(),
        "DoubleType": pa.float64(),
        "FloatType": pa.float32(),
        "BooleanType": pa.bool_(),
        "TimestampType": pa.timestamp("us", tz="UTC"),
        "DateType": pa.date32(),
    }
    assert set(sinks.TABLE_SCHEMAS) == set(SCHEMAS) == set(tables.ALL_TABLES)
    for name, (struct, partitions) in sinks.TABLE_SCHEMAS.items():
        expected = [(f.name, spark_to_arrow[type(f.dataType).__name__]) for f in struct.fields]
        schema, fixture_partitions = SCHEMAS[name]
        assert [(f.name, f.type) for f in schema] == expected, name
        assert fixture_partitions == partitions, name
