"""End to end on real components: real Kafka broker, real Spark (the job's own query), real Delta tables,
real YOLOv8n + MobileNetV2 weights on the real motorway clip, plus every dead-letter case in the same stream."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from e2e_helpers import forget_last_commit, run_available_now, table

from trafficstream import tables
from trafficstream.infra.pipeline import topic_summary
from trafficstream.ingest.publisher import FramePublisher
from trafficstream.ingest.worker import run_ingest
from trafficstream.video import VideoFileSource

pytestmark = pytest.mark.integration
CAMERA = "motorway-overpass"


def _ref(
    camera_id: str, uri: str, index: int, pts: float, width: int = 1280, height: int = 720, capture_ts: float = 1.7e9
) -> bytes:
    ref = dict(
        v=1,
        camera_id=camera_id,
        source_uri=uri,
        frame_index=index,
        pts_s=pts,
        capture_ts=capture_ts,
        ingest_ts=1.7e9,
        width=width,
        height=height,
    )
    return json.dumps(ref).encode()


def _deployment_with_upload_cameras(data_dir: Path, uploads: Path) -> Path:
    """The demo deployment plus two cameras whose sources break after start-up: one file vanishes, one is
    overwritten with garbage (a full disk, a half-copied upload)."""
    import shutil

    import yaml

    from trafficstream.config import DEFAULT_CONFIG

    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    for cam_id in ("vanishing", "corrupted"):
        clip = uploads / f"{cam_id}.mp4"
        shutil.copy(data_dir / "videos" / "highway_640x360.mp4", clip)
        raw["cameras"].append({"id": cam_id, "source": str(clip), "speed_limit_kmh": 50})
    raw["storage"]["allowed_roots"] = ["{data_dir}", str(uploads)]
    path = uploads / "deployment.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.fixture(scope="module")
def run(spark, settings_factory, tmp_path_factory, data_dir):
    uploads = tmp_path_factory.mktemp("uploads")
    settings = settings_factory(_deployment_with_upload_cameras(data_dir, uploads), name="e2e")
    (uploads / "vanishing.mp4").unlink()
    (uploads / "corrupted.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"not a video" * 200)
    clip = data_dir / "videos" / "highway_overpass_1280x720.mp4"
    with VideoFileSource(clip) as src:
        uri = src.info.uri
    other = (data_dir / "videos" / "highway_640x360.mp4").as_uri()
    cam = CAMERA.encode()
    # Hostile references first, on the camera's own partition: none may stop the job or block the camera.
    hostile = {
        "malformed_message": (b"junk", b"this is not json {"),
        "unsupported_schema_version": (b"junk", b'{"v": 99, "camera_id": "x"}'),
        "unknown_camera": (b"no-such-camera", _ref("no-such-camera", uri, 0, 0.0)),
        "path_outside_storage_roots": (cam, _ref(CAMERA, "file:///etc/passwd", 0, 0.0)),
        "source_mismatch": (cam, _ref(CAMERA, other, 0, 0.0)),  # another video inside the roots
        "source_missing": (b"vanishing", _ref("vanishing", (uploads / "vanishing.mp4").as_uri(), 0, 0.0, 640, 360)),
        "source_unreadable": (b"corrupted", _ref("corrupted", (uploads / "corrupted.mp4").as_uri(), 0, 0.0, 640, 360)),
        "frame_not_found": (cam, _ref(CAMERA, uri, 99_999, 9_999.0)),
        # A huge index with a real timestamp: would make every later frame a "duplicate" if it passed.
        "frame_mismatch": (cam, _ref(CAMERA, uri, 2_000_000_000, 0.0)),
        "message_too_large": (cam, b'{"v":1,"pad":"' + b"x" * 20_000 + b'"}'),
        "malformed_message:deep": (cam, b"[" * 5_000 + b"]" * 5_000),  # RecursionError in json
        "malformed_message:huge_int": (cam, b'{"v":1,"frame_index":' + b"9" * 5000 + b"}"),
        "malformed_message:int64": (cam, _ref(CAMERA, uri, 2**63, 0.0)),
        "malformed_message:surrogate": (cam, _ref(CAMERA, uri, 0, 0.0).replace(b".mp4", b"\\ud800.mp4")),
        "malformed_message:capture_ts": (cam, _ref(CAMERA, uri, 0, 0.0, capture_ts=1e300)),
        "malformed_message:not_utf8": (cam, b"\xff\xfe\xfa"),
    }
    with FramePublisher(settings.kafka.bootstrap_servers, settings.kafka.frames_topic) as pub:
        for key, value in hostile.values():
            pub.publish(key.decode(), value)
    stats = run_ingest(settings, [CAMERA])
    bad = {**hostile, "duplicate_frame": (cam, _ref(CAMERA, uri, 0, 0.0))}  # after the clip: already processed
    with FramePublisher(settings.kafka.bootstrap_servers, settings.kafka.frames_topic) as pub:
        pub.publish(CAMERA, bad["duplicate_frame"][1])
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
    import base64

    s = run["settings"]
    dead = table(s, tables.DEAD_LETTERS).sort("kafka_partition", "kafka_offset")
    expected = sorted(name.split(":")[0] for name in run["bad"])
    assert sorted(dead["reason"].to_list()) == expected
    payloads = set(dead["payload"].to_list())
    for name, (_, value) in run["bad"].items():
        reason = name.split(":")[0]
        rows = dead.filter(pl.col("reason") == reason)
        assert rows["detail"].null_count() == 0, name
        if reason == "message_too_large":
            continue  # kept up to the size cap
        try:
            text = value.decode()
        except UnicodeDecodeError:
            text = "base64:" + base64.b64encode(value).decode()
        assert text in payloads, name
    assert dead["kafka_offset"].null_count() == 0
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
    # The tracker's second association adds rows down to tracker.low_confidence, only on tracks that also have
    # confident detections (a low detection never starts a track).
    assert det["confidence"].min() >= s.tracker.low_confidence - 1e-6
    confident = set(det.filter(pl.col("confidence") >= s.detector.confidence)["track_id"].unique())
    assert set(det.filter(pl.col("confidence") < s.detector.confidence)["track_id"].unique()) <= confident
    assert ((det["x2"] > det["x1"]) & (det["y2"] > det["y1"])).all()
    for col in ("decode_ms", "detect_ms", "embed_ms", "track_ms", "speed_ms"):
        assert frames[col].null_count() == 0 and frames[col].min() >= 0, col


def test_speeds_on_calibrated_motorway(run):
    det = table(run["settings"], tables.DETECTIONS)
    speeds = det.filter(pl.col("speed_kmh").is_not_null() & pl.col("speed_flag").is_null())["speed_kmh"]
    # Far vehicles (beyond the calibrated stretch + margin), young tracks and boxes cut off by the picture's edge
    # are flagged, not trusted.
    assert speeds.len() > 0.25 * det.height
    assert set(det["speed_flag"].drop_nulls()) <= {
        "insufficient_history",
        "outside_calibration",
        "low_resolution",
        "at_picture_edge",
        "implausible_acceleration",
        "implausible_speed",
        "large_residual",
        "inconsistent_motion",
    }
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


def test_line_crossings_and_events_tables(run):
    """The motorway camera's two counting lines count the clip's vehicles once each, in their direction (an
    eye count of the clip gives 11 on each line: bench/results/line_counts.json, README)."""
    s = run["settings"]
    crossings, tracks = table(s, tables.CROSSINGS), table(s, tables.TRACKS)
    keys = list(tables.table(tables.CROSSINGS).keys)
    assert crossings.select(pl.struct(*keys).n_unique()).item() == crossings.height > 0
    assert set(crossings["track_id"]) <= set(tracks["track_id"])
    for line in ("near", "far"):
        mine = crossings.filter(pl.col("line_id") == line)
        assert set(mine["direction"]) == {"towards_camera"}, line
        assert 9 <= mine.height <= 13, (line, mine.height)
        assert mine["lane_id"].null_count() == 0
    summary = topic_summary(s, s.kafka.results_topic)
    assert summary["messages"].get("crossing") == crossings.height
    events = table(s, tables.EVENTS)  # the clip: free-flowing traffic, no wrong way, no stops
    assert set(events["event_type"]) <= {"speeding"}
    assert events.height == table(s, tables.VIOLATIONS).height


def test_one_results_message_per_processed_frame(run):
    s = run["settings"]
    summary = topic_summary(s, s.kafka.results_topic)
    assert summary["messages"]["frame"] == run["ingested"]
    assert summary["messages"].get("health", 0) >= 1
    assert summary["mean_bytes"]["frame"] <= 1024


def test_every_results_message_of_a_real_run_meets_the_contract(run):
    """Contract test: every message the real job put on the results topic validates against the declared
    schema (docs/results-topic.schema.json), whatever its type."""
    from confluent_kafka import Consumer, TopicPartition

    from trafficstream.results import validate_message

    s = run["settings"]
    topic = s.kafka.results_topic
    consumer = Consumer(s.kafka.python_config(**{"group.id": "contract", "enable.auto.commit": False}))
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        consumer.assign([TopicPartition(topic, p, lo) for p, (lo, _) in ends.items()])
        remaining, seen = sum(hi - lo for lo, hi in ends.values()), {}
        while remaining > 0:
            msgs = consumer.consume(500, timeout=5.0)
            assert msgs, f"{remaining} results messages not read"
            for m in msgs:
                remaining -= 1
                msg = json.loads(m.value())
                validate_message(msg)
                seen[msg["type"]] = seen.get(msg["type"], 0) + 1
    finally:
        consumer.close()
    assert seen.get("frame") == run["ingested"] and seen.get("health", 0) >= 1, seen


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

    ns = run_notebook(
        PROJECT_ROOT / "notebooks" / "traffic_analysis.ipynb",
        {"TRAFFICSTREAM_DELTA_ROOT": str(run["settings"].delta_root)},
    )
    assert ns["quality"]["frames"].sum() == run["ingested"]
    assert set(ns["dead_by_reason"]["reason"]) == {name.split(":")[0] for name in run["bad"]}
    assert ns["speeds"]["vehicles"].sum() > 0


@pytest.mark.parametrize("notebook", ["01_traffic_flow.ipynb", "02_speeds.ipynb", "03_violations_review.ipynb"])
def test_notebooks_run_on_the_pipeline_tables(run, notebook):
    """Each analyst notebook runs top to bottom (a real Jupyter kernel) on tables the real job wrote."""
    import sys

    from trafficstream.config import PROJECT_ROOT

    pytest.importorskip("nbclient")
    sys.path.insert(0, str(PROJECT_ROOT / "tests" / "notebooks"))
    from nbrun import execute_notebook

    nb = execute_notebook(PROJECT_ROOT / "notebooks" / notebook, run["settings"].delta_root)
    assert any(c.get("outputs") for c in nb.cells if c.cell_type == "code")
