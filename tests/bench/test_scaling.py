"""bench/scaling.py: the pure helpers (frames/s, stage 2's share, the scaling table, camera copies) on small
synthetic frames tables, and the packaged spark-submit command line (no Spark, no broker)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import polars as pl
import pytest

from trafficstream.bench.scaling import (
    Package,
    PackagedJob,
    run_settings,
    scaled_cameras,
    scaling_table,
    stage2_share,
    throughput_figures,
)
from trafficstream.config import PROJECT_ROOT, load_settings

DEMO = PROJECT_ROOT / "infra" / "config" / "demo.yaml"
T0 = datetime(2026, 1, 1, 12, 0, 0)


def _frames(rows: list[tuple[str, float, float, float, float]]) -> pl.DataFrame:
    """(camera, ingest s, processed s, stage-1 ms, stage-2 ms) per frame; stage 1 split 1:8:1 decode/detect/
    embed, stage 2 split 3:1 track/speed."""
    return pl.DataFrame(
        {
            "camera_id": [r[0] for r in rows],
            "ingest_ts": [T0 + timedelta(seconds=r[1]) for r in rows],
            "processed_ts": [T0 + timedelta(seconds=r[2]) for r in rows],
            "decode_ms": [r[3] * 0.1 for r in rows],
            "detect_ms": [r[3] * 0.8 for r in rows],
            "embed_ms": [r[3] * 0.1 for r in rows],
            "track_ms": [r[4] * 0.75 for r in rows],
            "speed_ms": [r[4] * 0.25 for r in rows],
            "batch_id": [0, 0, 1, 1][: len(rows)] + [2] * max(0, len(rows) - 4),
            "kafka_partition": [0, 1] * (len(rows) // 2) + [0] * (len(rows) % 2),
            "analysis": ["detected"] * len(rows),
        }
    )


FRAMES = _frames(
    [
        ("a", 0.0, 2.0, 90.0, 10.0),
        ("b", 0.0, 3.0, 90.0, 10.0),
        ("a", 0.5, 6.0, 90.0, 30.0),
        ("b", 0.5, 10.0, 90.0, 10.0),
    ]
)


def test_throughput_figures_overall_and_per_camera() -> None:
    got = throughput_figures(FRAMES)
    assert got["frames"] == 4
    assert got["seconds"] == 10.0 and got["fps"] == 0.4  # 4 frames from the first ingest to the last processed
    assert got["per_camera"] == {
        "a": {"frames": 2, "seconds": 6.0, "fps": 0.33},
        "b": {"frames": 2, "seconds": 10.0, "fps": 0.2},
    }
    assert got["micro_batches_with_frames"] == 2
    assert got["frames_per_kafka_partition"] == {"0": 2, "1": 2}
    assert got["frames_by_analysis"] == {"detected": 4}


def test_stage2_share_and_ms_per_frame() -> None:
    got = stage2_share(FRAMES)
    assert got["share"] == pytest.approx(60 / 420, abs=1e-4)  # stage 2: 10+10+30+10 of 4 x 90 + 60 ms
    assert got["stage2_ms_per_frame"] == 15.0
    assert got["stage1_ms_per_frame"] == 90.0
    # the busiest camera's stage 2: a has 40 ms over the run's 10 s span
    assert got["camera_load_max"] == pytest.approx(0.004)


def test_stage2_share_counts_missing_timings_as_zero() -> None:
    frames = FRAMES.with_columns(
        pl.when(pl.col("camera_id") == "b").then(None).otherwise(pl.col("speed_ms")).alias("speed_ms")
    )
    got = stage2_share(frames)
    assert got["share"] == pytest.approx(55 / 415, abs=1e-4)  # b's speed_ms (2.5 + 2.5) left out


def test_empty_run() -> None:
    empty = FRAMES.clear()
    assert stage2_share(empty) == {
        "share": None,
        "stage2_ms_per_frame": None,
        "stage1_ms_per_frame": None,
        "camera_load_max": None,
    }
    got = throughput_figures(empty)
    assert got["frames"] == 0 and got["fps"] is None and got["per_camera"] == {}


def test_scaling_table_speedup_over_fewest_executors() -> None:
    runs = [
        {"executors": 2, "kafka_partitions": 2, "cameras": 2, "fps": 6.0, "stage2": {"share": 0.05}, "wall_s": 80},
        {"executors": 1, "kafka_partitions": 2, "cameras": 2, "fps": 4.0, "stage2": {"share": 0.04}, "wall_s": 90},
        {"executors": 2, "kafka_partitions": 1, "cameras": 2, "fps": 4.2, "stage2": {"share": 0.04}, "wall_s": 88},
        {"executors": 1, "kafka_partitions": 1, "cameras": 2, "error": "TimeoutError: only 3/60"},
    ]
    table = scaling_table(runs)
    assert [(r["kafka_partitions"], r["executors"]) for r in table] == [(1, 1), (1, 2), (2, 1), (2, 2)]
    assert table[0]["error"].startswith("TimeoutError") and table[0]["fps"] is None and table[0]["speedup"] is None
    assert table[1]["speedup"] == 1.0  # its 1-executor run failed: it is the fewest that has a rate
    assert table[2]["speedup"] == 1.0 and table[3]["speedup"] == 1.5
    assert table[3]["stage2_share"] == 0.05 and table[3]["wall_s"] == 80
    assert "error" not in table[3]


def test_scaled_cameras_copies_beyond_the_configured_ones() -> None:
    cams = load_settings(DEMO).cameras
    ids = [c.id for c in scaled_cameras(cams, 4)]
    assert ids == ["motorway-overpass", "dual-carriageway", "motorway-overpass-2", "dual-carriageway-2"]
    four = scaled_cameras(cams, 4)
    assert four[2].source == four[0].source and four[2].calibration == four[0].calibration
    assert [c.id for c in scaled_cameras(cams, 1)] == ["motorway-overpass"]


def test_packaged_command_and_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PYTHONPATH", "/somewhere")
    settings = run_settings(
        load_settings(DEMO),
        cameras=4,
        partitions=2,
        var_dir=tmp_path,
        bootstrap_servers="127.0.0.1:9",
        min_partitions=None,
    )
    assert settings.kafka.partitions == 2 and settings.spark.min_partitions is None and len(settings.cameras) == 4
    assert settings.delta_root == tmp_path / "delta"
    package = Package(py_files=tmp_path / "t.zip", entry=tmp_path / "vehicle_pipeline.py", python=tmp_path / "py")
    job = PackagedJob(settings, tmp_path, "spark://127.0.0.1:7077", package, executors=2)
    cmd = job.command()
    assert cmd[cmd.index("--master") + 1] == "spark://127.0.0.1:7077"
    assert cmd[cmd.index("--total-executor-cores") + 1] == "2" and cmd[cmd.index("--executor-cores") + 1] == "1"
    assert cmd[cmd.index("--py-files") + 1] == str(package.py_files)
    assert cmd[cmd.index("--py-files") + 2] == str(package.entry)  # the entry file, not streaming_jobs/...
    assert not any(a.endswith("streaming_jobs/vehicle_pipeline.py") for a in cmd)
    assert cmd[cmd.index("--config") + 1] == str(job.config)
    env = job.environ()
    assert "PYTHONPATH" not in env and env["PYSPARK_PYTHON"] == str(package.python)
