"""Stage 1 over many records at once (``perceive_records``): the batched, decode-ahead path gives what the
frame-by-frame path gives, keeps one row per record in order, and a failure in a batch costs only the frames
that fail on their own."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trafficstream.config import DEFAULT_CONFIG, default_data_dir, load_settings
from trafficstream.streaming_jobs import perception
from trafficstream.streaming_jobs.perception import Runtime, perceive_one, perceive_records, task_threads
from trafficstream.video import VideoFileSource

CAMERA = "motorway-overpass"
NOW = 1.76e9
N = 12


def _runtime(*overrides: str) -> Runtime:
    settings = load_settings(DEFAULT_CONFIG, [f"storage.data_dir={default_data_dir()}", *overrides], environ={})
    return Runtime(settings)


@pytest.fixture(scope="module")
def rt() -> Runtime:
    return _runtime("detector.batch_size=4", "detector.prefetch_frames=3")


@pytest.fixture(scope="module")
def values(rt) -> list[bytes]:
    cam = rt.cameras[CAMERA]
    out = []
    with VideoFileSource(cam.source_path()) as src:
        for f in src.frames():
            if f.index >= N:
                break
            ref = dict(
                v=1,
                camera_id=CAMERA,
                source_uri=cam.source_uri(),
                frame_index=f.index,
                pts_s=f.pts_s,
                capture_ts=NOW + f.pts_s,
                ingest_ts=NOW + f.pts_s,
                width=1280,
                height=720,
            )
            out.append(json.dumps(ref).encode())
    return out


def _records(values: list[bytes]) -> list[tuple[bytes | None, str, int, int]]:
    return [(v, "frames", 0, i) for i, v in enumerate(values)]


def test_batched_rows_match_frame_by_frame(rt, values):
    one_by_one = _runtime(f"cameras.{CAMERA}.register_every_s=0")
    single = [perceive_one(one_by_one, v, "frames", 0, i) for i, v in enumerate(values)]
    batched = perceive_records(rt, _records(values))
    assert [r["kafka_offset"] for r in batched] == list(range(N))
    for a, b in zip(single, batched, strict=True):
        assert a["status"] == b["status"] == "ok"
        np.testing.assert_allclose(a["boxes"], b["boxes"], atol=0.05)
        np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-3)
        ea = np.frombuffer(a["embeddings"], np.float16).astype(np.float32)
        eb = np.frombuffer(b["embeddings"], np.float16).astype(np.float32)
        np.testing.assert_allclose(ea, eb, atol=2e-3)
        # registered every 0.2 s and interpolated between: the frame's shift within half a pixel
        da, db = np.reshape(a["drift"], (3, 3)), np.reshape(b["drift"], (3, 3))
        assert np.abs(da[:2, 2] - db[:2, 2]).max() < 0.5
        assert b["detect_ms"] > 0 and b["decode_ms"] > 0


def test_bad_records_between_good_ones_keep_their_place(rt, values):
    hostile = [b"{not json", None, json.dumps({**json.loads(values[3]), "source_uri": "file:///etc/passwd"}).encode()]
    mixed = [values[0], hostile[0], values[1], hostile[1], values[2], hostile[2]]
    rows = perceive_records(rt, _records(mixed))
    assert [r["status"] for r in rows] == ["ok", "dead", "ok", "dead", "ok", "dead"]
    assert [r["reason"] for r in rows[1::2]] == ["malformed_message", "malformed_message", "path_outside_storage_roots"]
    assert [r["frame_index"] for r in rows[::2]] == [0, 1, 2]


def test_a_failing_batch_is_retried_frame_by_frame(rt, values, monkeypatch):
    real = rt.embedder.embed_crops
    calls = []

    def only_small_batches(crops):
        calls.append(len(crops))
        if len(calls) == 1:
            raise MemoryError("simulated: the batch is too big")
        return real(crops)

    monkeypatch.setattr(rt.embedder, "embed_crops", only_small_batches)
    rows = perceive_records(rt, _records(values[:4]))
    assert [r["status"] for r in rows] == ["ok"] * 4
    assert len(calls) == 1 + 4  # the batch, then each frame alone


def test_a_frame_that_fails_alone_is_the_only_dead_one(rt, values, monkeypatch):
    real = perception.detect_tiled_batch

    def fail_on_frame_two(detector, images, tiles, iou):
        if any(float(im.mean()) == marked for im in images):
            raise RuntimeError("simulated detector fault")
        return real(detector, images, tiles, iou)

    with VideoFileSource(rt.cameras[CAMERA].source_path()) as src:
        marked = next(float(f.image.mean()) for f in src.frames() if f.index == 2)
    monkeypatch.setattr(perception, "detect_tiled_batch", fail_on_frame_two)
    rows = perceive_records(rt, _records(values[:4]))
    assert [r["status"] for r in rows] == ["ok", "ok", "dead", "ok"]
    assert rows[2]["reason"] == "processing_error" and "simulated" in rows[2]["detail"]


def test_inference_threads_follow_the_task_outside_spark_all_cores():
    assert task_threads(3) == 3
    assert task_threads(0) == 0  # no Spark task here: the runtime's default (every core)


def test_gpu_options_put_the_detector_on_the_tasks_gpu():
    import onnxruntime as ort

    from trafficstream.streaming_jobs.perception import gpu_options, task_gpu

    assert task_gpu() is None  # no Spark task here
    assert gpu_options("ultralytics", "1", True) == {"device": "1", "half": True}
    assert gpu_options("ultralytics", None, False) == {"device": None, "half": False}
    assert gpu_options("onnxruntime", None, False) == {}
    on_cuda = gpu_options("onnxruntime", "1", False)
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert on_cuda["providers"][0] == ("CUDAExecutionProvider", {"device_id": 1})
    else:  # this CPU build of onnxruntime: stay on the CPU rather than fail
        assert on_cuda == {}
