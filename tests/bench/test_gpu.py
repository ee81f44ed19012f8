"""bench/gpu.py without a GPU: YOLOv8's letterbox, the NCHW batch, the statistics, the timing loop, and the
report's plumbing (backends missing here are reported with a reason; the torch cases through stand-ins)."""

from __future__ import annotations

import contextlib
import json
import types
from pathlib import Path

import numpy as np
import pytest

from trafficstream.bench import gpu


def test_letterbox_landscape_pads_rows() -> None:
    image = np.full((720, 1280, 3), 200, np.uint8)
    out = gpu.letterbox(image, (384, 640))
    assert out.shape == (384, 640, 3) and out.dtype == np.uint8
    # 1280x720 -> 640x360, 12 rows of grey above and below
    assert (out[:12] == gpu.PAD_VALUE).all() and (out[-12:] == gpu.PAD_VALUE).all()
    assert (out[12:-12] == 200).all()


def test_letterbox_portrait_pads_columns() -> None:
    image = np.full((640, 360, 3), 7, np.uint8)
    out = gpu.letterbox(image, (384, 640))  # scale 0.6 -> 216x384, 212 columns each side
    assert out.shape == (384, 640, 3)
    assert (out[:, :212] == 114).all() and (out[:, -212:] == 114).all()
    assert (out[:, 212:-212] == 7).all()


def test_letterbox_rounds_padding_as_ultralytics() -> None:
    """Scaled up 54.86x to 549x384: 91 columns of padding, 45 left and 46 right (round(dw -/+ 0.1))."""
    out = gpu.letterbox(np.zeros((7, 10, 3), np.uint8), (384, 640))
    assert out.shape == (384, 640, 3)
    assert (out[:, :45] == 114).all() and (out[:, 45] == 0).all()
    assert (out[:, -46:] == 114).all() and (out[:, -47] == 0).all()


def test_letterbox_same_size_is_unchanged() -> None:
    image = np.random.default_rng(1).integers(0, 256, (384, 640, 3), dtype=np.uint8)
    assert np.array_equal(gpu.letterbox(image, (384, 640)), image)


def test_letterbox_rejects_grey_and_empty() -> None:
    with pytest.raises(ValueError):
        gpu.letterbox(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError):
        gpu.letterbox(np.zeros((0, 10, 3), np.uint8))


def test_to_batch_is_rgb_nchw_unit_float() -> None:
    blue = np.zeros((4, 6, 3), np.uint8)
    blue[..., 0] = 255  # BGR
    grey = np.full((4, 6, 3), 51, np.uint8)
    batch = gpu.to_batch([blue, grey])
    assert batch.shape == (2, 3, 4, 6) and batch.dtype == np.float32 and batch.flags.c_contiguous
    assert (batch[0, 2] == 1.0).all() and (batch[0, :2] == 0.0).all()  # blue is the last RGB channel
    assert np.allclose(batch[1], 0.2)


def test_summarise_median_even_and_odd() -> None:
    row = gpu.summarise([4.0, 1.0, 3.0, 2.0], batch=8)
    assert row == {"ms_per_batch_median": 2.5, "ms_min": 1.0, "ms_max": 4.0, "frames_per_s": 3200.0, "reps": 4}
    assert gpu.summarise([10.0, 30.0, 20.0], batch=1)["ms_per_batch_median"] == 20.0
    assert gpu.summarise([10.0, 30.0, 20.0], batch=1)["frames_per_s"] == 50.0
    with pytest.raises(ValueError):
        gpu.summarise([], batch=1)


def test_time_calls_counts() -> None:
    calls, syncs = [], []
    ms, first = gpu.time_calls(
        lambda: calls.append(1), lambda: syncs.append(1), warmup=3, min_reps=5, max_reps=7, budget_s=60.0
    )
    assert len(ms) == 7 and len(calls) == len(syncs) == 10  # max_reps stops it, every call is synced
    assert first is not None and all(t >= 0 for t in ms)
    ms, _ = gpu.time_calls(lambda: None, lambda: None, warmup=1, min_reps=5, max_reps=100, budget_s=0.0)
    assert len(ms) == 5  # the budget is spent at once: min_reps still made
    ms, _ = gpu.time_calls(lambda: None, lambda: None, warmup=1, min_reps=5, max_reps=100, budget_s=60, deadline=0)
    assert len(ms) == 1  # past the run's deadline: stops after the first


def test_main_reports_missing_backends(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """No model, no clip, no GPU: every backend asked for has a reason, and the JSON line is also on disk."""
    out = tmp_path / "results" / "gpu.json"
    monkeypatch.setenv("OUT", str(tmp_path))
    argv = ["--data", str(tmp_path / "none"), "--batches", "1", "--cpu-batches", "1", "--out", str(out)]
    assert gpu.main([*argv, "--backends", "ort-cpu", "ort-cuda"]) == 0
    line = capsys.readouterr().out.strip()
    report = json.loads(line)
    assert report["input"] == [384, 640] and report["cases"] == [] and report["partial"] is False
    assert set(report["unavailable"]) == {"ort-cpu", "ort-cuda"}
    assert "model not found" in report["unavailable"]["ort-cpu"]
    assert report["frames"].startswith("synthetic")
    assert {"torch", "onnxruntime", "ultralytics", "cuda"} <= set(report["versions"])
    assert json.loads(out.read_text()) == report == json.loads((tmp_path / "gpu.json").read_text())


def test_torch_cases_through_stand_ins(tmp_path: Path) -> None:
    """The torch-fp16 forward and YOLO.predict plumbing, with stand-ins for torch and ultralytics."""
    predicts: list[tuple[int, dict]] = []

    class Model:
        def fuse(self, verbose: bool = True) -> Model:
            return self

        def to(self, device: str) -> Model:
            return self

        half = eval = lambda self: self

        def __call__(self, x: object) -> tuple[object]:
            return (x,)

    class YOLO:
        def __init__(self, path: str) -> None:
            self.model = Model()

        def predict(self, frames: list, **kwargs: object) -> list:
            predicts.append((len(frames), kwargs))
            return []

    class Tensor:
        def to(self, device: str) -> Tensor:
            return self

        def half(self) -> Tensor:
            return self

    noop = lambda: None  # noqa: E731
    torch = types.SimpleNamespace(
        cuda=types.SimpleNamespace(synchronize=noop, empty_cache=noop),
        from_numpy=lambda a: Tensor(),
        inference_mode=contextlib.nullcontext,
    )
    args = gpu.parse_args(["--batches", "1", "2", "--warmup", "1", "--reps", "2", "--max-reps", "2", "--out", ""])
    report: dict = {"cases": [], "unavailable": {}}
    bench = gpu.Bench(args, report, [])
    frames = [np.zeros((72, 128, 3), np.uint8)] * 2
    batches = {b: gpu.to_batch([gpu.letterbox(f) for f in frames[:b]]) for b in (1, 2)}
    pt = tmp_path / "yolov8n.pt"
    gpu.bench_torch(bench, torch, types.SimpleNamespace(YOLO=YOLO), pt, batches, frames, gpu.BACKENDS)
    assert report["unavailable"] == {}
    got = [(c["backend"], c["precision"], c["batch"], c["reps"]) for c in report["cases"]]
    assert got == [
        ("torch-fp16", "fp16", 1, 2),
        ("torch-fp16", "fp16", 2, 2),
        ("ultralytics-predict", "fp16", 1, 2),
        ("ultralytics-predict", "fp16", 2, 2),
    ]
    assert [n for n, _ in predicts] == [1] * 3 + [2] * 3  # one warm-up and two timed calls per batch
    assert predicts[-1][1] == {"imgsz": [384, 640], "half": True, "device": 0, "batch": 2, "verbose": False}


def test_box_agreement_counts_reference_boxes_matched_at_iou():
    ref = [np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32), np.zeros((0, 4), np.float32)]
    oth = [np.array([[1, 1, 10, 10]], np.float32), np.array([[0, 0, 5, 5]], np.float32)]
    assert gpu.box_agreement(ref, oth) == 0.5  # the first box found (IoU 0.81), the second not
    assert gpu.box_agreement([np.zeros((0, 4))], [np.zeros((0, 4))]) is None
