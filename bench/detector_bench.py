"""Detector and embedder latency on a real clip.

    python -m trafficstream.bench.detector_bench [--frames N] [--threads T] [--video PATH] \
        [--out var/bench/detector.json]

Times ``YoloOnnxDetector`` end to end per frame (letterbox, inference, decode, NMS) at 384x640 and 640x640
float32 and with the int8 model (static 640x640), then the appearance embedder on each frame's detected
crops (one batch per frame, as the tracker calls it). Writes the figures as JSON and logs a table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import onnxruntime as ort

from trafficstream.config import default_data_dir
from trafficstream.logs import setup_logging
from trafficstream.models.detector import YoloOnnxDetector
from trafficstream.models.embedder import AppearanceEmbedder

log = logging.getLogger("trafficstream.bench.detector")
WARMUP = 2  # first runs pay for allocator growth and kernel selection


def read_frames(video: Path, count: int, start: int = 0) -> list[np.ndarray]:
    frames: list[np.ndarray] = []
    with av.open(str(video)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i < start:
                continue
            frames.append(frame.to_ndarray(format="bgr24"))
            if len(frames) == count:
                break
    return frames


def summarise(ms: list[float]) -> dict[str, float]:
    arr = np.asarray(ms)
    return {
        "median_ms": round(float(np.median(arr)), 2),
        "p90_ms": round(float(np.percentile(arr, 90)), 2),
        "mean_ms": round(float(arr.mean()), 2),
        "min_ms": round(float(arr.min()), 2),
    }


class Timer:
    """Wall and CPU milliseconds of each timed call. CPU time (all threads of this process) barely moves
    when other processes compete for the cores, so it is the figure to compare across noisy runs."""

    def __init__(self) -> None:
        self.wall_ms: list[float] = []
        self.cpu_ms: list[float] = []

    def __call__(self, fn: Callable[..., Any], *args: Any) -> Any:
        wall, cpu = time.perf_counter(), time.process_time()
        out = fn(*args)
        self.cpu_ms.append((time.process_time() - cpu) * 1000)
        self.wall_ms.append((time.perf_counter() - wall) * 1000)
        return out

    def summary(self) -> dict[str, float]:
        return {**summarise(self.wall_ms), "median_cpu_ms": round(float(np.median(self.cpu_ms)), 2)}


def time_calls(fn: Callable[[np.ndarray], Any], frames: list[np.ndarray]) -> tuple[Timer, list[Any]]:
    for frame in frames[:WARMUP]:
        fn(frame)
    timer = Timer()
    return timer, [timer(fn, frame) for frame in frames]


def bench_detectors(
    frames: list[np.ndarray], model: Path, int8_model: Path | None, threads: int
) -> tuple[list[dict[str, Any]], list[Any]]:
    configs = [("fp32 384x640", model, (384, 640)), ("fp32 640x640", model, (640, 640))]
    if int8_model is not None and int8_model.is_file():
        configs.append(("int8 640x640", int8_model, (640, 640)))
    elif int8_model is not None:
        log.warning("int8 model %s not found; skipped", int8_model)
    rows: list[dict[str, Any]] = []
    reference: list[Any] = []
    for name, path, size in configs:
        detector = YoloOnnxDetector(path, input_size=size, threads=threads)
        timer, dets = time_calls(detector, frames)
        rows.append(
            {
                "name": name,
                "model": str(path),
                "input_size": list(detector.input_size),
                "detections_per_frame": round(float(np.mean([len(d) for d in dets])), 2),
                **timer.summary(),
            }
        )
        if not reference:
            reference = dets  # the default configuration's boxes feed the embedder bench
    return rows, reference


def bench_embedder(
    frames: list[np.ndarray], detections: list[Any], embedder_path: Path, threads: int
) -> dict[str, Any]:
    embedder = AppearanceEmbedder(embedder_path, threads=threads)
    pairs = [(f, d.xyxy) for f, d in zip(frames, detections, strict=True) if len(d)]
    if not pairs:
        return {"batches": 0}
    for frame, boxes in pairs[:WARMUP]:
        embedder(frame, boxes)
    timer = Timer()
    for frame, boxes in pairs:
        timer(embedder, frame, boxes)
    crops = [len(boxes) for _, boxes in pairs]
    return {
        "batches": len(pairs),
        "median_crops_per_batch": float(np.median(crops)),
        "ms_per_crop": round(float(np.sum(timer.wall_ms) / np.sum(crops)), 2),
        **timer.summary(),
    }


def main(argv: list[str] | None = None) -> int:
    data = default_data_dir()
    parser = argparse.ArgumentParser(
        prog="python -m trafficstream.bench.detector_bench", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--video", type=Path, default=data / "videos" / "highway_overpass_1280x720.mp4")
    parser.add_argument("--model", type=Path, default=data / "models" / "yolov8n.onnx")
    parser.add_argument("--int8-model", type=Path, default=data / "models" / "yolov8n_int8_dynamic.onnx")
    parser.add_argument("--embedder", type=Path, default=data / "models" / "mobilenetv2_embedder.onnx")
    parser.add_argument("--frames", type=int, default=50, help="timed frames per configuration")
    # The overpass clip's first seconds show a near-empty road; from frame 200 every lane has traffic.
    parser.add_argument("--start", type=int, default=200, help="first frame used (clips shorter: from 0)")
    parser.add_argument("--threads", type=int, default=0, help="ONNX Runtime intra-op threads (0 = runtime default)")
    parser.add_argument("--out", type=Path, default=Path("var/bench/detector.json"))
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)

    frames = read_frames(args.video, args.frames, args.start) or read_frames(args.video, args.frames)
    if not frames:
        parser.error(f"no frames decoded from {args.video}")
    h, w = frames[0].shape[:2]
    log.info("%d frames of %s (%dx%d), threads=%s", len(frames), args.video.name, w, h, args.threads or "auto")

    load_before = os.getloadavg()[0]
    detect_rows, detections = bench_detectors(frames, args.model, args.int8_model, args.threads)
    embed = bench_embedder(frames, detections, args.embedder, args.threads)
    # Other processes on the box inflate every figure: keep the load beside them.
    load = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    if max(load) > (os.cpu_count() or 1):
        log.warning("load average %s exceeds %d cores: figures are inflated by contention", load, os.cpu_count())
    report = {
        "video": str(args.video),
        "frame_size": [h, w],
        "start": args.start,
        "frames": len(frames),
        "threads": args.threads,
        "cpu_count": os.cpu_count(),
        "load_avg_1m_before_after": load,
        "machine": platform.machine(),
        "onnxruntime": ort.__version__,
        "providers": ort.get_available_providers(),
        "detect": detect_rows,
        "embed": embed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")

    row_format = "%-14s %10s %10s %10s %8s"
    log.info(row_format, "per frame", "median ms", "p90 ms", "cpu ms", "boxes")
    for row in detect_rows:
        log.info(
            row_format,
            row["name"],
            f"{row['median_ms']:.1f}",
            f"{row['p90_ms']:.1f}",
            f"{row['median_cpu_ms']:.1f}",
            f"{row['detections_per_frame']:.1f}",
        )
    if embed.get("batches"):
        log.info(
            row_format + "  (%.1f ms per crop)",
            "embed batch",
            f"{embed['median_ms']:.1f}",
            f"{embed['p90_ms']:.1f}",
            f"{embed['median_cpu_ms']:.1f}",
            f"{embed['median_crops_per_batch']:.0f}",
            embed["ms_per_crop"],
        )
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
