"""End to end on real components: real Kafka broker, real Spark (the job's own query), real Delta tables,
real YOLOv8n + MobileNetV2 weights on the real motorway clip, plus every dead-letter case in the same stream."""
from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest

from infra.pipeline import topic_summary
from ingest.publisher import FramePublisher
from ingest.sources import VideoFileSource
from ingest.worker import run_ingest
from e2e_helpers import forget_last_commit, run_available_now, table
from trafficstream import tables
from trafficstream.messages import FrameRef

pytestmark = pytest.mark.integration
CAMERA = "motorway-overpass"


def _ref(camera_id: str, uri: str, index: int, pts: float) -> bytes:
    return FrameRef(camera_id, uri, index, pts, 1.7e9, 1.7e9, 1280, 720).to_json()


@pytest.fixture(scope="module")
def run(spark, settings_factory, tmp_path_factory, data_dir):
    uploads = tmp_path_factory.mktemp("uploads")
    corrupt = uploads / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not a video" * 200)
    settings = settings_factory(overrides=[f"storage.allowed_roots=['{data_dir}', '{uploads}']"], name="e2e")
    stats = run_ingest(settings, [CAMERA])
    clip = data_dir / "videos" / "highway_overpass_1280x720.mp4"
    with VideoFileSource(clip) as src:
        uri = src.info.uri
    bad = {
        "malformed_message": (b"junk", b"this is not json {"),
        "unsupported_schema_version": (b"junk", b'{"v": 99, "camera_id": "x"}'),
        "unknown_camera": (b"no-such-camera", _ref("no-such-camera", uri, 0, 0.0)),
        "path_outside_storage_roots": (CAMERA.encode(), _ref(CAMERA, "file:///etc/passwd", 0, 0.0)),
        "source_missing": (CAMERA.encode(), _ref(CAMERA, (data_dir / "videos" / "missing.mp4").as_uri(), 0, 0.0)),
        "source_unreadable": (CAMERA.encode(), _ref(CAMERA, corrupt.as_uri(), 0, 0.0)),
        "frame_not_found": (CAMERA.encode(), _ref(CAMERA, uri, 99_999, 9_999.0)),
        "duplicate_frame": (CAMERA.encode(), _ref(CAMERA, uri, 0, 0.0)),  # after the clip: already processed
    }
    with FramePublisher(settings.kafka.bootstrap_servers, settings.kafka.frames_topic) as pub:
        for key, value in bad.values():
            pub.publish(key.decode(), value)
    last = run_available_now(spark, settings)
    return {"settings": settings, "ingested": stats.total, "bad": bad, "last": last}


def test_every_frame_is_processed_or_dead_lettered(run):
    s = run["settings"]
    frames, dead = table(s, tables.FRAMES), table(s, tables.DEAD_LETTERS)
    assert run["ingested"] == 335
    assert frames.height + dead.height == run["ingested"] + len(run["bad"])
    assert frames.height == run["ingested"]
    assert frames.select(pl.struct("camera_id", "frame_index").n_unique()).item() == frames.height


def test_each_bad_input_dead_letters_with_reason_and_payload(run):
    s = run["settings"]
    dead = table(s, tables.DEAD_LETTERS)
    assert sorted(dead["reason"].to_list()) == sorted(run["bad"])
    for reason, (_, value) in run["bad"].items():
        row = dead.filter(pl.col("reason") == reason).row(0, named=True)
        assert row["detail"], reason
        assert row["payload"] == value.decode(), reason
        assert row["kafka_offset"] is not None
    topic = topic_summary(s, s.kafka.dead_letter_topic)
    assert sum(topic["messages"].values()) == len(run["bad"])


def test_detections_are_plausible(run):
    s = run["settings"]
    frames, det = table(s, tables.FRAMES), table(s, tables.DETECTIONS)
    with_vehicles = frames.filter(pl.col("vehicles") > 0).height
    assert with_vehicles >= 0.9 * frames.height, f"vehicles on only {with_vehicles}/{frames.height} frames"
    assert set(det["class_name"].unique()) <= {"car", "motorcycle", "bus", "truck"}
    n_tracks = det["track_id"].n_unique()
    assert 8 <= n_tracks <= 120, n_tracks
    assert det["confidence"].min() >= 0.25
    assert ((det["x2"] > det["x1"]) & (det["y2"] > det["y1"])).all()
    for col in ("decode_ms", "detect_ms", "embed_ms", "track_ms", "speed_ms"):
        assert frames[col].null_count() == 0 and frames[col].min() >= 0, col


def test_speeds_on_calibrated_motorway(run):
    det = table(run["settings"], tables.DETECTIONS)
    speeds = det.filter(pl.col("speed_kmh").is_not_null() & pl.col("speed_flag").is_null())["speed_kmh"]
    # Far vehicles (beyond the calibrated stretch + margin) and young tracks are flagged, not trusted.
    assert speeds.len() > 0.25 * det.height
    assert set(det["speed_flag"].drop_nulls()) <= {"insufficient_history", "outside_calibration",
                                                   "implausible_acceleration", "implausible_speed",
                                                   "large_residual", "inconsistent_motion"}
    share = ((speeds >= 40) & (speeds <= 160)).mean()
    assert share >= 0.9, f"only {share:.0%} of speeds within 40-160 km/h (median {speeds.median():.0f})"
    tracks = table(run["settings"], tables.TRACKS).drop_nulls("median_speed_kmh")
    assert tracks.height >= 8 and 60 <= tracks["median_speed_kmh"].median() <= 140


def test_tracks_and_flow_tables(run):
    s = run["settings"]
    tracks, det, flow = table(s, tables.TRACKS), table(s, tables.DETECTIONS), table(s, tables.FLOW)
    assert set(tracks["track_id"]) == set(det["track_id"])
    assert tracks.select(pl.struct("camera_id", "track_id").n_unique()).item() == tracks.height
    assert (tracks["last_frame"] >= tracks["first_frame"]).all()
    assert flow["vehicles"].sum() == tracks.height  # every vehicle counted once


def test_one_results_message_per_processed_frame(run):
    s = run["settings"]
    summary = topic_summary(s, s.kafka.results_topic)
    assert summary["messages"]["frame"] == run["ingested"]
    assert summary["messages"].get("health", 0) >= 1
    assert summary["mean_bytes"]["frame"] <= 1024


def test_replayed_batch_does_not_duplicate_delta_rows(run, spark):
    s = run["settings"]
    before = {t: table(s, t).height for t in tables.ALL_TABLES}
    tracks_before = table(s, tables.TRACKS).sort("track_id")
    replayed = forget_last_commit(s)
    last = run_available_now(spark, s)
    assert last.get("batch_id") == replayed  # Spark really re-ran the batch whose commit was lost
    after = {t: table(s, t).height for t in tables.ALL_TABLES}
    assert after == before
    assert table(s, tables.TRACKS).sort("track_id").equals(tracks_before)


def test_tables_readable_without_jvm(run):
    from deltalake import DeltaTable

    for name in tables.ALL_TABLES:
        dt = DeltaTable(str(run["settings"].delta_root / name))
        assert dt.to_pyarrow_table().num_rows == table(run["settings"], name).height


def test_analyst_notebook_runs_on_the_tables(run):
    from e2e_helpers import run_notebook
    from trafficstream.config import PROJECT_ROOT

    ns = run_notebook(PROJECT_ROOT / "notebooks" / "traffic_analysis.ipynb",
                      {"TRAFFICSTREAM_DELTA_ROOT": str(run["settings"].delta_root)})
    assert ns["quality"]["frames"].sum() == run["ingested"]
    assert set(ns["dead_by_reason"]["reason"]) == set(run["bad"])
    assert ns["speeds"]["vehicles"].sum() > 0
