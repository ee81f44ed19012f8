"""Stage 1 (``perceive_one``) on real weights and the real clips: every hostile or broken reference becomes a
dead row with a reason and its original payload, the row always converts to Arrow, and nothing raises."""

from __future__ import annotations

import base64
import json

import pyarrow as pa
import pytest

from trafficstream.config import DEFAULT_CONFIG, default_data_dir, load_settings
from trafficstream.messages import FrameRef
from trafficstream.streaming_jobs.perception import Runtime, perceive_one, to_record_batch
from trafficstream.video import VideoFileSource

CAMERA = "motorway-overpass"
NOW = 1.76e9


@pytest.fixture(scope="module")
def rt() -> Runtime:
    data = default_data_dir()
    settings = load_settings(DEFAULT_CONFIG, [f"storage.data_dir={data}"], environ={})
    return Runtime(settings)


@pytest.fixture(scope="module")
def motorway_uri(rt) -> str:
    return rt.cameras[CAMERA].source_uri()


def _ref(uri: str, index: int = 0, pts: float = 0.0, **kw) -> dict:
    base = dict(
        camera_id=CAMERA,
        source_uri=uri,
        frame_index=index,
        pts_s=pts,
        capture_ts=NOW,
        ingest_ts=NOW,
        width=1280,
        height=720,
        v=1,
    )
    base.update(kw)
    return base


def _run(rt: Runtime, value: bytes | None, offset: int = 7) -> dict:
    row = perceive_one(rt, value, "frames", 0, offset)
    batch = to_record_batch([row], rt.schema)  # must always be representable
    assert batch.num_rows == 1
    return batch.to_pylist()[0]


def _frame_pts(rt: Runtime, index: int) -> float:
    with VideoFileSource(rt.cameras[CAMERA].source_path()) as src:
        for frame in src.frames():
            if frame.index == index:
                return frame.pts_s
    raise AssertionError(index)


def test_a_real_frame_is_perceived(rt, motorway_uri):
    row = _run(rt, json.dumps(_ref(motorway_uri)).encode())
    assert row["status"] == "ok", row["detail"]
    assert row["raw_detections"] > 0 and len(row["boxes"]) == 4 * len(row["scores"])
    assert row["drift"] is not None and len(row["drift"]) == 9


def test_low_detections_ride_along_without_embeddings(rt, motorway_uri):
    """Stage 1 keeps detections down to tracker.low_confidence for the tracker's second association: they are
    not embedded (zero rows) and not counted as raw detections; the confident ones are exactly what the
    detector's own threshold gives."""
    import numpy as np

    row = _run(rt, json.dumps(_ref(motorway_uri, 100, _frame_pts(rt, 100))).encode())
    assert row["status"] == "ok", row["detail"]
    scores = np.asarray(row["scores"])
    emb = np.frombuffer(row["embeddings"], np.float16).reshape(len(scores), row["embedding_dim"])
    confident = scores >= rt.settings.detector.confidence
    assert (~confident).any()  # frame 100 has two
    assert scores.min() >= rt.settings.tracker.low_confidence
    assert (np.abs(emb[confident]).sum(axis=1) > 0).all() and not emb[~confident].any()
    assert row["raw_detections"] >= confident.sum()
    plain = Runtime(
        load_settings(
            DEFAULT_CONFIG, [f"storage.data_dir={default_data_dir()}", "tracker.low_confidence=null"], environ={}
        )
    )
    off = _run(plain, json.dumps(_ref(motorway_uri, 100, _frame_pts(rt, 100))).encode())
    assert np.asarray(off["scores"]).min() >= rt.settings.detector.confidence
    assert off["boxes"] == np.asarray(row["boxes"]).reshape(-1, 4)[confident].ravel().tolist()


DEEP = b'{"v":1,"camera_id":' + b"[" * 100_000 + b"]" * 100_000 + b"}"


@pytest.mark.parametrize(
    "name, raw, reason",
    [
        ("deeply nested", DEEP, "message_too_large"),
        ("nested within the size cap", b"[" * 5000 + b"]" * 5000, "malformed_message"),
        ("integer with thousands of digits", b'{"v":1,"frame_index":' + b"9" * 5000 + b"}", "malformed_message"),
        ("not UTF-8", b"\xff\xfe\x00garbage", "malformed_message"),
        ("empty", b"", "malformed_message"),
        ("null value", None, "malformed_message"),
        ("array", b"[1,2,3]", "malformed_message"),
        ("unknown version", b'{"v":{"x":1}}', "unsupported_schema_version"),
    ],
)
def test_unparseable_messages_are_dead_letters(rt, name, raw, reason):
    row = _run(rt, raw)
    assert row["status"] == "dead", name
    assert row["reason"] == reason, (name, row["detail"])
    assert row["detail"]
    if raw is None:
        assert row["payload"] is None
    elif raw[:1] == b"\xff":
        assert row["payload"].startswith("base64:")
        assert base64.b64decode(row["payload"][7:]) == raw  # the original bytes, kept exactly
    elif len(raw) <= rt.max_message_bytes:
        assert row["payload"] == raw.decode()


@pytest.mark.parametrize(
    "field, value",
    [
        ("frame_index", 2**63),
        ("frame_index", 2**31),
        ("frame_index", -1),
        ("capture_ts", 1e300),
        ("capture_ts", -5.0),
        ("ingest_ts", 1e12),
        ("pts_s", 1e30),
        ("width", 10**40),
        ("camera_id", "motorway-overpass\n"),
    ],
)
def test_out_of_range_fields_are_dead_letters(rt, motorway_uri, field, value):
    raw = json.dumps(_ref(motorway_uri, **{field: value})).encode()
    row = _run(rt, raw)
    assert (row["status"], row["reason"]) == ("dead", "malformed_message")
    assert field in row["detail"]
    assert row["payload"] == raw.decode()


def test_lone_surrogate_in_uri_is_a_representable_dead_letter(rt, motorway_uri):
    raw = json.dumps(_ref(motorway_uri)).replace(".mp4", "\\ud800.mp4").encode()
    row = _run(rt, raw)
    assert (row["status"], row["reason"]) == ("dead", "malformed_message")
    assert row["payload"] == raw.decode()
    pa.RecordBatch.from_pylist([row], schema=rt.schema)


def test_huge_index_with_real_timestamp_does_not_pass_as_that_frame(rt, motorway_uri):
    pts = _frame_pts(rt, 5)
    row = _run(rt, json.dumps(_ref(motorway_uri, index=1_000_000, pts=pts)).encode())
    assert (row["status"], row["reason"]) == ("dead", "frame_mismatch")
    ok = _run(rt, json.dumps(_ref(motorway_uri, index=5, pts=pts)).encode())
    assert ok["status"] == "ok", ok["detail"]


def test_wrong_size_is_a_mismatch(rt, motorway_uri):
    row = _run(rt, json.dumps(_ref(motorway_uri, width=640, height=360)).encode())
    assert (row["status"], row["reason"]) == ("dead", "frame_mismatch")


def test_another_video_inside_the_roots_cannot_poison_the_camera(rt, motorway_uri):
    """A reference naming the motorway camera but the UK clip: dead-lettered before anything is cached."""
    rt._references.clear()
    other = rt.cameras["dual-carriageway"].source_uri()
    row = _run(rt, json.dumps(_ref(other, width=640, height=360)).encode())
    assert (row["status"], row["reason"]) == ("dead", "source_mismatch")
    assert CAMERA not in rt._references
    ok = _run(rt, json.dumps(_ref(motorway_uri, index=1, pts=_frame_pts(rt, 1))).encode())
    assert ok["status"] == "ok", ok["detail"]
    assert ok["drift"] is not None


def test_path_outside_roots_and_unknown_camera(rt, motorway_uri):
    row = _run(rt, json.dumps(_ref("file:///etc/passwd")).encode())
    assert row["reason"] == "path_outside_storage_roots"
    row = _run(rt, json.dumps(_ref(motorway_uri, camera_id="nobody")).encode())
    assert row["reason"] == "unknown_camera"


def test_past_the_end_is_answered_without_decoding_again(rt, motorway_uri):
    reader = rt.readers.get(rt.cameras[CAMERA].source_path(), None)
    row = _run(rt, json.dumps(_ref(motorway_uri, index=100_000, pts=3000.0)).encode())
    assert row["reason"] == "frame_not_found"
    before = reader.decoded
    row = _run(rt, json.dumps(_ref(motorway_uri, index=400, pts=400 / 29.79)).encode())
    assert row["reason"] == "frame_not_found"
    assert reader.decoded - before <= 400 - 0  # at most one forward pass, not a decode per request
    before = reader.decoded
    row = _run(rt, json.dumps(_ref(motorway_uri, index=380, pts=380 / 29.79)).encode())
    assert row["reason"] == "frame_not_found"
    assert reader.decoded == before  # the exact frame count is known now


def test_unexpected_exception_is_a_dead_letter_not_a_crash(rt, motorway_uri, monkeypatch):
    def boom(*a, **k):
        raise MemoryError("simulated")

    monkeypatch.setattr(rt.embedder, "embed_crops", boom)
    row = _run(rt, json.dumps(_ref(motorway_uri)).encode())
    assert (row["status"], row["reason"]) == ("dead", "processing_error")
    assert "MemoryError" in row["detail"]


def test_unrepresentable_row_becomes_a_dead_row(rt):
    rows = [
        {
            "camera_id": "a",
            "kafka_topic": "frames",
            "kafka_partition": 0,
            "kafka_offset": 1,
            "status": "ok",
            "frame_index": 2**70,
            "payload": "x",
        },
        {
            "camera_id": "b",
            "kafka_topic": "frames",
            "kafka_partition": 0,
            "kafka_offset": 2,
            "status": "dead",
            "reason": "malformed_message",
            "detail": "\ud800",
            "payload": "y",
        },
        {
            "camera_id": "c",
            "kafka_topic": "frames",
            "kafka_partition": 0,
            "kafka_offset": 3,
            "status": "dead",
            "reason": "malformed_message",
            "detail": "fine",
            "payload": "z",
        },
    ]
    out = to_record_batch(rows, rt.schema).to_pylist()
    assert [r["kafka_offset"] for r in out] == [1, 2, 3]
    assert [r["status"] for r in out] == ["dead", "dead", "dead"]
    assert out[0]["reason"] == "processing_error" and out[2]["detail"] == "fine"


def test_frame_ref_round_trip_still_fits(motorway_uri):
    ref = FrameRef(CAMERA, motorway_uri, 12, 0.4, NOW, NOW, 1280, 720)
    assert FrameRef.from_json(ref.to_json()) == ref


def test_message_size_cap_is_a_setting(motorway_uri):
    settings = load_settings(
        DEFAULT_CONFIG, [f"storage.data_dir={default_data_dir()}", "kafka.max_message_bytes=1024"], environ={}
    )
    small = Runtime(settings)
    raw = json.dumps(_ref(motorway_uri, pad="x" * 2000)).encode()
    row = _run(small, raw)
    assert (row["status"], row["reason"]) == ("dead", "message_too_large")


def test_live_references_shed_load_and_recordings_never_do(motorway_uri):
    """perceive_batches over one Arrow batch: stale live frames are skipped while fresher ones of the camera
    wait, by more than half the budget (the newest is still analysed); without the live mark none is skipped."""
    import time

    from trafficstream.config import settings_to_json
    from trafficstream.streaming_jobs.perception import perceive_batches

    settings = load_settings(DEFAULT_CONFIG, [f"storage.data_dir={default_data_dir()}"], environ={})
    now = time.time()

    def batch(live: bool) -> pa.RecordBatch:
        values = [
            json.dumps(
                _ref(motorway_uri, i, _frame_pts_cached(i), capture_ts=now - 10 + i * 1.5, ingest_ts=now, live=live)
            ).encode()
            for i in range(4)
        ]
        return pa.RecordBatch.from_pydict(
            {"value": values, "topic": ["frames"] * 4, "partition": [0] * 4, "offset": list(range(4))}
        )

    live = pa.Table.from_batches(list(perceive_batches(settings_to_json(settings), iter([batch(True)])))).to_pylist()
    assert [r["analysis"] for r in live[:3]] == ["skipped"] * 3
    assert live[3]["analysis"] in ("detected", "predicted") and live[3]["status"] == "ok"
    assert all(r["skip_reason"] == "stale" and r["detect_ms"] is None for r in live[:3])
    recorded = pa.Table.from_batches(list(perceive_batches(settings_to_json(settings), iter([batch(False)]))))
    assert [r["analysis"] for r in recorded.to_pylist()] == ["detected"] * 4
    assert all(r["status"] == "ok" and r["detect_ms"] is not None for r in recorded.to_pylist())


def test_live_references_that_waited_behind_a_backlog_are_skipped_in_every_task(motorway_uri):
    """A micro-batch split into tasks: a task holding only the oldest slice of a backlog has no fresher frame of
    its own, but its references waited in Kafka longer than half the budget before the batch started (the
    batch start, the same for every task, rides along as ``batch_us``): they are skipped. The same slice taken
    by a batch that started right after it was published is analysed, late as it is."""
    import time

    from trafficstream.config import settings_to_json
    from trafficstream.streaming_jobs.perception import perceive_batches

    settings = load_settings(DEFAULT_CONFIG, [f"storage.data_dir={default_data_dir()}"], environ={})
    now = time.time()
    published = now - 3.0  # captured and published 3 s ago, 0.1 s apart: no spread inside the task

    def run(batch_start: float) -> list[dict]:
        values = [
            json.dumps(
                _ref(
                    motorway_uri,
                    i,
                    _frame_pts_cached(i),
                    capture_ts=published + 0.1 * i,
                    ingest_ts=published + 0.1 * i,
                    live=True,
                )
            ).encode()
            for i in range(3)
        ]
        batch = pa.RecordBatch.from_pydict(
            {
                "value": values,
                "topic": ["frames"] * 3,
                "partition": [0] * 3,
                "offset": list(range(3)),
                "batch_us": [int(batch_start * 1e6)] * 3,
            }
        )
        return pa.Table.from_batches(list(perceive_batches(settings_to_json(settings), iter([batch])))).to_pylist()

    queued = run(now - 0.2)  # the batch started 2.5-2.8 s after they were published
    assert [(r["analysis"], r["skip_reason"]) for r in queued] == [("skipped", "stale")] * 3
    fresh_batch = run(published + 0.3)  # started 0.1-0.3 s after: the platform's own delay, not a backlog
    assert all(r["analysis"] in ("detected", "predicted") and r["status"] == "ok" for r in fresh_batch)
    assert any(r["analysis"] == "detected" for r in fresh_batch)


_PTS: dict[int, float] = {}


def _frame_pts_cached(index: int) -> float:
    if index not in _PTS:
        with VideoFileSource(default_data_dir() / "videos" / "highway_overpass_1280x720.mp4") as src:
            for frame in src.frames():
                _PTS[frame.index] = frame.pts_s
                if frame.index >= 8:
                    break
    return _PTS[index]


def test_live_references_take_the_drivers_stride_and_recordings_ignore_it(rt, motorway_uri):
    """The driver's stride for the camera (shedding.py: one per camera for every task) decides which live frames
    are detected; a camera it has no stride for, and a recording, keep their own."""
    import time

    from trafficstream.streaming_jobs.perception import perceive_records
    from trafficstream.streaming_jobs.shedding import Steer

    now = time.time()

    def records(live: bool, at: float = now) -> list:
        refs = [_ref(motorway_uri, i, _frame_pts_cached(i), capture_ts=at, ingest_ts=at, live=live) for i in range(8)]
        return [(json.dumps(r).encode(), "frames", 0, i) for i, r in enumerate(refs)]

    live = perceive_records(
        rt, records(True), batch_ts=now, steering={CAMERA: Steer(3, 2.0), "elsewhere": Steer(5, 2.0)}
    )
    assert [r["analysis"] for r in live] == ["detected" if i % 3 == 0 else "predicted" for i in range(8)]
    assert {r["stride"] for r in live} == {3} and all(r["status"] == "ok" for r in live)
    recorded = perceive_records(rt, records(False), batch_ts=now, steering={CAMERA: Steer(3, 2.0)})
    assert [r["analysis"] for r in recorded] == ["detected"] * 8
    fresh = time.time()
    own = perceive_records(rt, records(True, fresh), batch_ts=fresh, steering={"elsewhere": Steer(5, 2.0)})
    assert {r["stride"] for r in own} == {rt.cameras[CAMERA].detect_every}  # fresh frames: its own base stride
