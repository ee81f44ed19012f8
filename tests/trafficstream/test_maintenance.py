"""Table care (trafficstream.maintenance) on real Delta tables: results unchanged, fewer files, readers happy.

Unit part: small partitioned tables written with delta-rs (many small appends -> many files) in a tmp dir.
Integration part: the job's own table definitions created by delta-spark, maintained here, then written again
by delta-spark (append, replayed txn, MERGE) and read by Polars.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from pathlib import Path

import polars as pl
import pyarrow as pa
import pytest
from deltalake import DeltaTable, write_deltalake

from trafficstream import maintenance, tables
from trafficstream.config import PROJECT_ROOT, load_settings

DEMO = PROJECT_ROOT / "infra" / "config" / "demo.yaml"
BASE = dt.datetime(2024, 5, 1, 8, 0, tzinfo=dt.timezone.utc)
CAMERAS = ("cam-a", "cam-b", "cam-c")


def _detections(batch: int, day: int, n: int = 20) -> pa.Table:
    ts = [BASE + dt.timedelta(days=day, seconds=batch * 30 + i) for i in range(n)]
    return pa.table(
        {
            "camera_id": pa.array([CAMERAS[(batch + i) % 3] for i in range(n)]),
            "frame_index": pa.array([batch * n + i for i in range(n)], pa.int64()),
            "capture_ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "track_id": pa.array([(batch * n + i) // 4 for i in range(n)], pa.int64()),
            "speed_kmh": pa.array([float((batch * 7 + i * 3) % 130) for i in range(n)]),
            "event_date": pa.array([(BASE + dt.timedelta(days=day)).date()] * n, pa.date32()),
        }
    )


@pytest.fixture
def delta_root(tmp_path: Path) -> Path:
    """detections over 2 days x 3 cameras, 30 small appends per day; a small tracks-like table; an extra table."""
    root = tmp_path / "delta"
    for day in (0, 1):
        for batch in range(30):
            write_deltalake(
                root / tables.DETECTIONS,
                _detections(batch, day),
                mode="append",
                partition_by=["camera_id", "event_date"],
            )
    for batch in range(10):
        write_deltalake(
            root / tables.FLOW,
            pa.table(
                {
                    "camera_id": pa.array(["cam-a", "cam-b"]),
                    "minute": pa.array([BASE + dt.timedelta(minutes=batch)] * 2, pa.timestamp("us", tz="UTC")),
                    "vehicles": pa.array([batch, 2 * batch], pa.int64()),
                }
            ),
            mode="append",
            partition_by=["camera_id"],
        )
    for batch in range(5):  # found under the root (declared or not)
        write_deltalake(root / "traffic_stats", pa.table({"x": pa.array([batch], pa.int64())}), mode="append")
    return root


@pytest.fixture(autouse=True)
def _keep_logging(monkeypatch) -> None:
    """main() configures logging onto sys.stderr, which is capsys' stream here: closed after the test."""
    monkeypatch.setattr(maintenance, "setup_logging", lambda level: None)


def _settings(var: Path):
    return load_settings(DEMO, [f"storage.var_dir={var}", f"storage.delta_root={var}/delta"], require_cameras=False)


def _queries(root: Path) -> dict:
    det = pl.read_delta(str(root / tables.DETECTIONS))
    return {
        "rows": det.height,
        "sum_per_camera": det.group_by("camera_id").agg(pl.col("speed_kmh").sum()).sort("camera_id").rows(),
        "tracks_per_day": det.group_by("event_date").agg(pl.col("track_id").n_unique()).sort("event_date").rows(),
        "max_ts": det["capture_ts"].max(),
        "flow": pl.read_delta(str(root / tables.FLOW)).sort("camera_id", "minute").rows(),
    }


def test_compaction_zorder_vacuum_checkpoint_keep_results(delta_root: Path, capsys) -> None:
    before = _queries(delta_root)
    det = DeltaTable(str(delta_root / tables.DETECTIONS))
    files_before, proto_before = len(det.file_uris()), det.protocol()
    assert files_before >= 150  # 60 appends x ~3 camera partitions

    t0 = time.perf_counter()
    rc = maintenance.main(
        [
            "--config",
            str(DEMO),
            "--set",
            f"storage.var_dir={delta_root.parent}",
            "--set",
            f"storage.delta_root={delta_root}",
            "--zorder",
        ]
    )
    seconds = time.perf_counter() - t0
    assert rc == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_table = {s["table"]: s for s in lines}
    # Every known table reported (the job's own ones are missing here), the extra one discovered.
    assert set(by_table) == {*tables.DECLARATIONS, "traffic_stats"}
    assert by_table[tables.FRAMES]["status"] == "missing"
    s = by_table[tables.DETECTIONS]
    assert s["status"] == "ok" and s["files_before"] == files_before
    assert s["files_after"] == 6  # one file per camera x day partition
    assert s["rows_after"] == s["rows_before"] == before["rows"]
    assert s["zorder"]["columns"] == ["capture_ts"]  # camera_id is a partition column
    assert s["protocol_before"] == s["protocol_after"] == "1/2"
    assert s["vacuum"] == {"retention_hours": 168, "full": True, "dry_run": False, "files": 0}
    assert s["checkpoint_version"] == s["version_after"]
    assert by_table["traffic_stats"]["files_after"] == 1
    print(f"maintenance: detections {files_before} -> {s['files_after']} files, {seconds:.2f} s for all tables")

    assert _queries(delta_root) == before
    det = DeltaTable(str(delta_root / tables.DETECTIONS))
    assert det.protocol() == proto_before
    assert (delta_root / tables.DETECTIONS / "_delta_log" / "_last_checkpoint").is_file()
    # Z-ordered by time inside each partition: a time filter now touches few files.
    part = pl.read_delta(str(delta_root / tables.DETECTIONS)).filter(pl.col("camera_id") == "cam-a")
    assert part.height > 0


def test_second_run_rewrites_nothing(delta_root: Path) -> None:
    settings = _settings(delta_root.parent)
    maintenance.run(settings, maintenance.Options(tables=[tables.DETECTIONS]))
    again = maintenance.run(settings, maintenance.Options(tables=[tables.DETECTIONS]))[0]
    assert again["compaction"]["files_removed"] == 0 and again["files_after"] == again["files_before"]


def test_recent_days_compacts_only_recent_partitions(delta_root: Path) -> None:
    settings = _settings(delta_root.parent)
    opts = maintenance.Options(
        tables=[tables.DETECTIONS],
        recent_days=1,
        today=(BASE + dt.timedelta(days=1)).date(),
        vacuum=False,
        checkpoint=False,
    )
    s = maintenance.run(settings, opts)[0]
    assert s["compaction"]["partitions"] == 3  # the 3 cameras of day 2; day 1 untouched
    adds = pa.table(DeltaTable(str(delta_root / tables.DETECTIONS)).get_add_actions(flatten=True)).to_pylist()
    per_day: dict = {}
    for a in adds:
        per_day[a["partition.event_date"]] = per_day.get(a["partition.event_date"], 0) + 1
    assert per_day[BASE.date() + dt.timedelta(days=1)] == 3 and per_day[BASE.date()] > 3


def test_vacuum_removes_compacted_files_after_retention(delta_root: Path) -> None:
    """With retention 0 (forced: nothing else uses this table) the files compaction replaced are deleted."""
    settings = _settings(delta_root.parent)
    path = delta_root / tables.DETECTIONS
    n_parquet = len(list(path.rglob("*.parquet")))
    first = maintenance.run(settings, maintenance.Options(tables=[tables.DETECTIONS], vacuum=False))[0]
    dry = maintenance.run(
        settings,
        maintenance.Options(tables=[tables.DETECTIONS], vacuum_hours=0, force_short_retention=True, dry_run=True),
    )[0]

    def data_files() -> list[Path]:
        return [p for p in path.rglob("*.parquet") if "_delta_log" not in p.parts]

    assert dry["vacuum"]["files"] == first["files_before"] and len(data_files()) == n_parquet + 6
    real = maintenance.run(
        settings,
        maintenance.Options(tables=[tables.DETECTIONS], vacuum_hours=0, force_short_retention=True, compact=False),
    )[0]
    assert real["vacuum"]["files"] == first["files_before"]
    assert len(data_files()) == 6
    assert pl.read_delta(str(path)).height == first["rows_before"]


def test_short_retention_refused(delta_root: Path, capsys) -> None:
    argv = ["--config", str(DEMO), "--set", f"storage.delta_root={delta_root}", "--vacuum-hours", "2"]
    assert maintenance.main(argv) == 2
    err = capsys.readouterr().err
    assert "refused" in err and "not yet committed" in err and "time travel" in err
    files = len(DeltaTable(str(delta_root / tables.DETECTIONS)).file_uris())
    assert files >= 150  # nothing was touched


def test_table_retention_setting_is_honoured(delta_root: Path) -> None:
    path = delta_root / tables.FLOW
    DeltaTable(str(path)).alter.set_table_properties({"delta.deletedFileRetentionDuration": "interval 30 days"})
    s = maintenance.run(_settings(delta_root.parent), maintenance.Options(tables=[tables.FLOW], vacuum_hours=48))[0]
    assert s["vacuum"]["retention_hours"] == 720 and s["status"] == "ok"


def test_dry_run_changes_nothing(delta_root: Path, capsys) -> None:
    det = delta_root / tables.DETECTIONS
    version = DeltaTable(str(det)).version()
    rc = maintenance.main(
        [
            "--config",
            str(DEMO),
            "--set",
            f"storage.delta_root={delta_root}",
            "--dry-run",
            "--tables",
            tables.DETECTIONS,
            "nope",
        ]
    )
    assert rc == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["status"] for o in out] == ["dry_run", "missing"]
    assert DeltaTable(str(det)).version() == version


def test_failed_table_does_not_stop_the_others(delta_root: Path, capsys) -> None:
    broken = delta_root / "broken"
    (broken / "_delta_log").mkdir(parents=True)
    (broken / "_delta_log" / "00000000000000000000.json").write_text("not json\n")
    rc = maintenance.main(
        ["--config", str(DEMO), "--set", f"storage.delta_root={delta_root}", "--tables", "broken", tables.FLOW]
    )
    assert rc == 1
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["status"] for o in out] in (["error", "ok"], ["missing", "ok"])


def test_s3_tables_need_an_exclusive_run(monkeypatch) -> None:
    settings = load_settings(DEMO, ["storage.delta_root=s3a://bucket/traffic/delta"], require_cameras=False)
    opened: list[str] = []
    monkeypatch.setattr(maintenance, "DeltaTable", lambda uri: opened.append(uri) or object())  # an existing table
    [s] = maintenance.run(settings, maintenance.Options(tables=[tables.DETECTIONS]))
    assert s["status"] == "refused" and "--s3-exclusive" in s["error"]  # before any step ran
    assert opened == ["s3://bucket/traffic/delta/detections"]


def test_rs_uri() -> None:
    assert maintenance.rs_uri("s3a://bucket/delta/detections") == "s3://bucket/delta/detections"
    assert maintenance.rs_uri("/var/delta/flow") == "/var/delta/flow"


# -- integration: the job's engine writes the maintained tables ----------------------------------------------
@pytest.mark.integration
def test_delta_spark_writes_maintained_tables(spark, settings_factory) -> None:
    from delta.tables import DeltaTable as SparkDeltaTable

    from trafficstream.streaming_jobs.sinks import TABLE_SCHEMAS, create_tables

    t0 = time.perf_counter()
    settings = settings_factory(create_topics=False, name="maintenance")
    paths = create_tables(spark, settings)  # the job's own table definitions, protocol as the job creates it
    flow_schema, _ = TABLE_SCHEMAS[tables.FLOW]

    def flow_rows(batch: int, minute: int, vehicles: int):
        return spark.createDataFrame(
            [("cam-a", dt.datetime(2024, 5, 1, 8, minute), "car", vehicles, batch)], flow_schema
        )

    def append(batch: int, minute: int, vehicles: int) -> None:  # as BatchWriter._append: idempotent append
        (
            flow_rows(batch, minute, vehicles)
            .write.format("delta")
            .mode("append")
            .option("txnAppId", "trafficstream-test")
            .option("txnVersion", batch)
            .save(paths[tables.FLOW])
        )

    for batch in range(3):
        append(batch, batch, batch)
    proto = DeltaTable(paths[tables.FLOW]).protocol()

    summaries = maintenance.run(settings, maintenance.Options(zorder=True))
    flow = next(s for s in summaries if s["table"] == tables.FLOW)
    assert all(s["status"] == "ok" for s in summaries if s["table"] in tables.ALL_TABLES), summaries
    assert flow["files_before"] >= 3 and flow["files_after"] == 1
    assert DeltaTable(paths[tables.FLOW]).protocol() == proto

    append(2, 2, 2)  # a replayed micro-batch: still skipped after the delta-rs checkpoint (txn kept)
    append(3, 30, 60)  # a new one
    src = flow_rows(4, 1, 33)  # the job's MERGE of an absolute count, guarded by updated_batch
    (
        SparkDeltaTable.forPath(spark, paths[tables.FLOW])
        .alias("t")
        .merge(src.alias("s"), "t.camera_id = s.camera_id AND t.minute = s.minute AND t.class_name = s.class_name")
        .whenMatchedUpdateAll(condition="s.updated_batch > t.updated_batch")
        .whenNotMatchedInsertAll()
        .execute()
    )
    # delta-spark appends to a maintained append table too (Z-ordered detections).
    det_schema, _ = TABLE_SCHEMAS[tables.DETECTIONS]
    row = {f.name: None for f in det_schema.fields} | {
        "camera_id": "cam-a",
        "frame_index": 1,
        "capture_ts": dt.datetime(2024, 5, 1, 8),
        "track_id": 7,
        "class_name": "car",
        "speed_kmh": 88.0,
        "event_date": dt.date(2024, 5, 1),
    }
    spark.createDataFrame([tuple(row[f.name] for f in det_schema.fields)], det_schema).write.format("delta").mode(
        "append"
    ).save(paths[tables.DETECTIONS])

    got = pl.read_delta(paths[tables.FLOW]).sort("minute")
    assert dict(zip(got["minute"].dt.minute(), got["vehicles"], strict=True)) == {0: 0, 1: 33, 2: 2, 30: 60}
    assert spark.read.format("delta").load(paths[tables.FLOW]).count() == 4
    assert pl.read_delta(paths[tables.DETECTIONS])["speed_kmh"].to_list() == [88.0]
    assert DeltaTable(paths[tables.FLOW]).protocol() == proto
    # Maintenance again after Spark wrote: still fine, still the same protocol.
    again = maintenance.run(settings, maintenance.Options(tables=[tables.FLOW]))[0]
    assert again["status"] == "ok" and again["files_after"] == 1 and again["rows_after"] == 4
    print(f"maintenance integration: {time.perf_counter() - t0:.1f} s")
