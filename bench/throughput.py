"""Throughput measured side by side: the models alone, two single-process baselines, and (with ``bench/run.py``)
the pipeline end to end, each as median and spread (min / max) of repetitions.

    .venv/bin/python -m trafficstream.bench.throughput [--config infra/config/demo.yaml] [--reps 3] \
        [--frames N] [--b-frames 60] [--model-frames 40] [--batch 8] [--skip-models] \
        [--out var/bench/throughput.json]

``make bench`` (``python -m trafficstream.bench.run``) runs the same measurements before the pipeline and writes
them, with the pipeline's figure and the ratios against the targets, to ``bench/results/latest.json``.

* **detector / embedder alone**: the configured detector (``Runtime(settings).detector``) on frames of the
  motorway clip, one frame per call (batch 1) and ``--batch`` frames per call, in ms per frame; the embedder on
  each frame's detected boxes, in ms per crop batch (one batch per frame, as stage 1 calls it).
* **baseline A**: one process, no broker, no Spark, no tables. Per camera: read the clip in order, build each
  frame's reference exactly as the ingest worker does (``FrameRef(...).to_json()``), run the job's own stage 1
  (``perception.perceive_one`` with one ``Runtime`` built once, so frames come from its sequential
  ``ReaderPool``), then feed the camera's PERCEPTION rows (Arrow -> pandas, as Spark hands them over) to the job's
  stage 2 (``tracking.track_camera``) with an in-memory ``GroupState``, in one call per camera.
* **baseline B**: the same, but every frame is fetched the naive way: open the container, seek to the frame's
  timestamp (``container.seek(pts, backward=True, any_frame=False, stream=...)``, i.e. to the keyframe before)
  and decode forward to it. Runs on the first ``--b-frames`` frames per camera.

Untimed: loading the runtime, one warm-up pass of ``--warmup-frames`` per camera (model sessions, the registration
reference frame, stage 2's cached settings and road plane), and the pass that lists each clip's frame indices and
timestamps (the references' content; in the pipeline the ingest worker does that decode in its own process).
``--frames`` limits baseline A's frames per camera (default: the whole clips, 335 + 341 frames).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import statistics
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import av
import numpy as np
import pandas as pd
from tqdm import tqdm

from trafficstream.bench.detector_bench import WARMUP, Timer, read_frames
from trafficstream.cameras import Camera
from trafficstream.config import PROJECT_ROOT, Settings, add_config_arguments, load_settings, settings_to_json
from trafficstream.logs import setup_logging
from trafficstream.messages import FrameRef
from trafficstream.models.detector import Detector
from trafficstream.streaming_jobs.perception import (
    Record,
    Runtime,
    configured_detector,
    perceive_one,
    perceive_records,
    to_record_batch,
)
from trafficstream.streaming_jobs.schemas import KIND_DEAD, KIND_FRAME
from trafficstream.streaming_jobs.shedding import DETECTED
from trafficstream.streaming_jobs.tracking import MemoryGroupState, track_camera
from trafficstream.video import FrameNotFound, FrameReader, ReaderPool, SourceInfo, VideoFileSource

log = logging.getLogger("trafficstream.bench.throughput")
OUT = PROJECT_ROOT / "var" / "bench" / "throughput.json"
MOTORWAY = "motorway-overpass"
PACKAGES = ("onnxruntime", "pyspark", "delta-spark", "numpy", "av")
# Targets of the throughput issue: the pipeline at least as fast as the single-process loop with the same code,
# three times the naive seeking loop, and the 1280x720 motorway camera at >= 8 frames/s end to end.
TARGETS = {"pipeline_over_A": 1.0, "pipeline_over_B": 3.0, "motorway_pipeline_fps": 8.0}
STAGE1_STAGES = ("decode", "detect", "embed")  # per-frame timings stage 1 writes into its rows (``<stage>_ms``)


# -- pure helpers ----------------------------------------------------------------------------------------------
def summarise(values: Iterable[float | None], ndigits: int = 2) -> dict[str, float | int | None]:
    """Median, min and max of the finite ``values`` (``None`` / NaN left out) and how many there were."""
    xs = [float(v) for v in values if v is not None and np.isfinite(v)]
    if not xs:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": round(statistics.median(xs), ndigits),
        "min": round(min(xs), ndigits),
        "max": round(max(xs), ndigits),
        "n": len(xs),
    }


def ratio(numerator: float | None, denominator: float | None, ndigits: int = 3) -> float | None:
    """``numerator / denominator``; ``None`` when either is missing or the denominator is not positive."""
    if numerator is None or denominator is None or not denominator > 0:
        return None
    return round(numerator / denominator, ndigits)


def check_targets(
    values: Mapping[str, float | None], targets: Mapping[str, float] = TARGETS
) -> dict[str, dict[str, Any]]:
    """Each target as ``{value, target, pass}``: ``pass`` is ``value >= target``, ``None`` when not measured."""
    out: dict[str, dict[str, Any]] = {}
    for name, target in targets.items():
        value = values.get(name)
        out[name] = {"value": value, "target": target, "pass": None if value is None else bool(value >= target)}
    return out


def comparison(
    pipeline_fps: float | None,
    a_fps: float | None,
    b_fps: float | None,
    motorway_fps: float | None,
    a_batched_fps: float | None = None,
) -> dict[str, Any]:
    """The pipeline's frames/s next to the baselines' (medians), the ratios, and the targets. ``A-batched``
    (the same loop on the job's batched stage 1) is informational: the platform's own overhead, same work."""
    values = {
        "pipeline_over_A": ratio(pipeline_fps, a_fps),
        "pipeline_over_B": ratio(pipeline_fps, b_fps),
        "motorway_pipeline_fps": motorway_fps,
    }
    return {
        "pipeline_fps": pipeline_fps,
        "baseline_a_fps": a_fps,
        "baseline_b_fps": b_fps,
        "pipeline_over_A": values["pipeline_over_A"],
        "pipeline_over_B": values["pipeline_over_B"],
        "baseline_a_batched_fps": a_batched_fps,
        "pipeline_over_A_batched": ratio(pipeline_fps, a_batched_fps),
        "motorway_pipeline_fps": motorway_fps,
        "targets": check_targets(values),
    }


def median_of(summary: Mapping[str, Any] | None) -> float | None:
    return None if summary is None else summary.get("median")


# -- machine ---------------------------------------------------------------------------------------------------
def _proc_field(path: str, key: str) -> str | None:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def package_versions(names: Sequence[str] = PACKAGES) -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def machine_info() -> dict[str, Any]:
    """CPU model and cores, memory, OS, Python and the versions of the packages on the measured path."""
    mem_kb = _proc_field("/proc/meminfo", "MemTotal")
    return {
        "cpu_model": _proc_field("/proc/cpuinfo", "model name") or platform.processor() or platform.machine(),
        "cpu_cores": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "memory_gib": round(int(mem_kb.split()[0]) / 2**20, 1) if mem_kb else None,
        "platform": platform.platform(),
        "python": platform.python_version(),
        "packages": package_versions(),
    }


def run_context() -> dict[str, Any]:
    """When and how this run was started, and on what."""
    return {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join(getattr(sys, "orig_argv", sys.argv)),
        "machine": machine_info(),
    }


def load_avg() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def _progress(items: Sequence[Any], desc: str) -> Iterable[Any]:
    return tqdm(items, desc=desc, unit="frame", leave=False, mininterval=1.0)


# -- frame references and readers ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Clip:
    """A file camera's source and its frames (index, pts in seconds) as the ingest worker publishes them."""

    camera: Camera
    info: SourceInfo
    frames: tuple[tuple[int, float], ...]


def index_clip(camera: Camera, limit: int | None = None) -> Clip:
    """Walk the camera's source as the ingest worker does (``VideoFileSource``) and keep each frame's position."""
    frames: list[tuple[int, float]] = []
    with VideoFileSource(camera.source_path(), camera.fps) as source:
        for frame in source.frames():
            if limit is not None and len(frames) >= limit:
                break
            frames.append((frame.index, frame.pts_s))
        return Clip(camera, source.info, tuple(frames))


def frame_ref(clip: Clip, index: int, pts_s: float, now: float) -> bytes:
    """The frame-reference message of one frame, built exactly as ``ingest.worker.ingest_camera`` builds it."""
    info = clip.info
    return FrameRef(
        camera_id=clip.camera.id,
        source_uri=info.uri,
        frame_index=index,
        pts_s=pts_s,
        capture_ts=now,
        ingest_ts=now,
        width=info.width,
        height=info.height,
        live=False,  # a recording published as fast as it decodes: analysed frame by frame
    ).to_json()


class SeekingFrameReader(FrameReader):
    """The naive frame-reference reader of baseline B: every :meth:`read` opens the container, seeks to the
    keyframe at or before the frame's timestamp and decodes forward to the frame. It keeps no decoder between
    frames (it is a ``FrameReader`` by interface only), and counts what it opened and decoded."""

    def __init__(self, path: str | Path, fps_override: float | None = None) -> None:  # no decoder kept open
        self.path = Path(path)
        self.fps_override = fps_override
        self.seeks = 0
        self.decoded = 0
        self.total_frames = None

    def close(self) -> None:
        pass

    def read(self, frame_index: int, pts_s: float) -> np.ndarray:
        self.seeks += 1
        with av.open(str(self.path)) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"  # as VideoFileSource
            time_base = stream.time_base
            rate = float(stream.average_rate or stream.guessed_rate or 25.0)
            if time_base is None:
                raise FrameNotFound(f"{self.path}: no stream time base to seek by")
            start = stream.start_time or 0
            # A camera whose fps is overridden numbers its frames by index: find them at the container's rate.
            seconds = frame_index / rate if self.fps_override else pts_s
            tol = 0.5 / rate
            container.seek(start + round(seconds / time_base), backward=True, any_frame=False, stream=stream)
            for frame in container.decode(stream):
                self.decoded += 1
                if frame.pts is None:
                    continue
                t = float((frame.pts - start) * time_base)
                if t < seconds - tol:
                    continue
                if t > seconds + tol:
                    break
                return frame.to_ndarray(format="bgr24")
        raise FrameNotFound(f"no frame at index {frame_index} / pts {pts_s:.4f}s in {self.path}")


class SeekingReaderPool(ReaderPool):
    """A ``ReaderPool`` that hands out a fresh :class:`SeekingFrameReader` per frame and adds up their counts."""

    def __init__(self) -> None:
        super().__init__(max_open=1)
        self.reads = 0
        self.decoded = 0
        self._last: SeekingFrameReader | None = None

    def get(self, path: Path, fps_override: float | None = None) -> FrameReader:
        self._tally()
        self._last = SeekingFrameReader(path, fps_override)
        return self._last

    def _tally(self) -> None:
        if self._last is not None:
            self.reads += self._last.seeks
            self.decoded += self._last.decoded
            self._last = None

    def decoded_per_read(self) -> float | None:
        self._tally()
        return round(self.decoded / self.reads, 2) if self.reads else None


# -- baselines -------------------------------------------------------------------------------------------------
@dataclass
class CameraRun:
    """One camera through one baseline once: counts, wall seconds and where the time went (ms per frame)."""

    camera_id: str
    frames: int
    ok_rows: int
    detected_rows: int  # ok rows stage 1 decoded, detected and embedded (not left to stage 2 to predict)
    frame_results: int  # stage-2 KIND_FRAME rows
    stage2_dead: int
    seconds: float
    ms_per_frame: dict[str, float] = field(default_factory=dict)
    decoded_per_frame: float | None = None  # baseline B: frames decoded per frame fetched

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


@dataclass
class BaselineRun:
    cameras: dict[str, CameraRun]

    @property
    def frames(self) -> int:
        return sum(c.frames for c in self.cameras.values())

    @property
    def seconds(self) -> float:
        return sum(c.seconds for c in self.cameras.values())

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def _stage_sum(rows: Sequence[Mapping[str, Any]], stage: str) -> float:
    values = (r.get(f"{stage}_ms") for r in rows)
    return float(sum(v for v in values if v is not None and np.isfinite(v)))


def run_camera(
    rt: Runtime,
    settings_json: str,
    clip: Clip,
    frames: Sequence[tuple[int, float]],
    desc: str = "",
    chunk: int = 0,
) -> CameraRun:
    """Stage 1 frame by frame (``chunk`` 0: the per-frame code) or ``chunk`` records at a time through the job's
    batched stage 1 (``perceive_records``, as a Spark task gets them), then stage 2 on the camera's rows; in one
    process."""
    topic = rt.settings.kafka.frames_topic
    rows: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    if chunk > 0:
        for start in _progress(range(0, len(frames), chunk), desc or clip.camera.id):
            now = time.time()
            records: list[Record] = [
                (frame_ref(clip, index, pts_s, now), topic, 0, start + i)
                for i, (index, pts_s) in enumerate(frames[start : start + chunk])
            ]
            rows += perceive_records(rt, records)
    else:
        for offset, (index, pts_s) in enumerate(_progress(frames, desc or clip.camera.id)):
            rows.append(perceive_one(rt, frame_ref(clip, index, pts_s, time.time()), topic, 0, offset))
    t1 = time.perf_counter()
    perception = to_record_batch(rows, rt.schema).to_pandas()  # what Spark hands stage 2 (Arrow -> pandas)
    t2 = time.perf_counter()
    out = pd.concat(list(track_camera(settings_json, (clip.camera.id,), iter([perception]), MemoryGroupState())))
    t3 = time.perf_counter()
    n = len(frames)
    stage1 = {s: _stage_sum(rows, s) for s in STAGE1_STAGES}
    ms = {s: round(v / n, 2) for s, v in stage1.items()} if n else {}
    if n:
        ms["stage1_other"] = round(((t1 - t0) * 1e3 - sum(stage1.values())) / n, 2)  # refs, parsing, checks
        ms["arrow"] = round((t2 - t1) * 1e3 / n, 2)
        ms["stage2"] = round((t3 - t2) * 1e3 / n, 2)
    return CameraRun(
        camera_id=clip.camera.id,
        frames=n,
        ok_rows=sum(r["status"] == "ok" for r in rows),
        detected_rows=sum(r["status"] == "ok" and r.get("analysis") == DETECTED for r in rows),
        frame_results=int((out["kind"] == KIND_FRAME).sum()) if len(out) else 0,
        stage2_dead=int((out["kind"] == KIND_DEAD).sum()) if len(out) else 0,
        seconds=t3 - t0,
        ms_per_frame=ms,
    )


def run_baseline(
    rt: Runtime,
    settings_json: str,
    clips: Sequence[Clip],
    frames: int | None,
    seeking: bool,
    desc: str = "",
    chunk: int = 0,
) -> BaselineRun:
    """Every camera once, one after the other, with fresh readers: baseline A (``seeking=False``) or B."""
    runs: dict[str, CameraRun] = {}
    max_open = rt.readers.max_open
    for clip in clips:
        rt.readers.close()
        pool = SeekingReaderPool() if seeking else ReaderPool(max_open=max_open)
        rt.readers = pool
        run = run_camera(rt, settings_json, clip, clip.frames[:frames], f"{desc} {clip.camera.id}".strip(), chunk)
        if isinstance(pool, SeekingReaderPool):
            run.decoded_per_frame = pool.decoded_per_read()
        runs[clip.camera.id] = run
        if run.detected_rows < run.frames:
            log.warning("%s %s: only %d of %d frames detected", desc, clip.camera.id, run.detected_rows, run.frames)
    rt.readers.close()
    rt.readers = ReaderPool(max_open=max_open)
    return BaselineRun(runs)


def baseline_figures(runs: Sequence[BaselineRun]) -> dict[str, Any]:
    """Median and spread over repetitions: frames/s over all cameras and per camera, stage ms per frame."""
    if not runs:
        return {}
    per_camera: dict[str, Any] = {}
    for cid, first in runs[0].cameras.items():
        cams = [r.cameras[cid] for r in runs]
        per_camera[cid] = {
            "frames": first.frames,
            "ok_rows": min(c.ok_rows for c in cams),
            "detected_rows": min(c.detected_rows for c in cams),
            "frame_results": min(c.frame_results for c in cams),
            "stage2_dead": max(c.stage2_dead for c in cams),
            "fps": summarise(c.fps for c in cams),
            "seconds": summarise(c.seconds for c in cams),
            "ms_per_frame": {k: summarise(c.ms_per_frame.get(k) for c in cams) for k in first.ms_per_frame},
            "decoded_per_frame": first.decoded_per_frame,
        }
    return {
        "reps": len(runs),
        "frames": runs[0].frames,
        "fps": summarise(r.fps for r in runs),
        "seconds": summarise(r.seconds for r in runs),
        "per_camera": per_camera,
        "runs": [
            {cid: asdict(c) | {"seconds": round(c.seconds, 3), "fps": round(c.fps, 2)} for cid, c in r.cameras.items()}
            for r in runs
        ],
    }


def measure_baseline(
    rt: Runtime,
    settings_json: str,
    clips: Sequence[Clip],
    *,
    frames: int | None,
    seeking: bool,
    reps: int,
    warmup_frames: int = 3,
    chunk: int = 0,
) -> dict[str, Any]:
    """One untimed warm-up pass of ``warmup_frames`` per camera, then ``reps`` timed passes."""
    name = "B" if seeking else ("A-batched" if chunk else "A")
    if warmup_frames > 0:
        run_baseline(rt, settings_json, clips, warmup_frames, seeking, f"warm-up {name}", chunk)
    runs: list[BaselineRun] = []
    for rep in range(reps):
        run = run_baseline(rt, settings_json, clips, frames, seeking, f"{name} {rep + 1}/{reps}", chunk)
        log.info(
            "baseline %s rep %d/%d: %d frames in %.1f s = %.2f frames/s (%s)",
            name,
            rep + 1,
            reps,
            run.frames,
            run.seconds,
            run.fps,
            ", ".join(f"{cid} {c.fps:.2f}" for cid, c in run.cameras.items()),
        )
        runs.append(run)
    return baseline_figures(runs)


# -- models alone ----------------------------------------------------------------------------------------------
def batch_detector(settings: Settings, threads: int, batch: int) -> Detector:
    """The configured detector (as ``Runtime`` builds it), able to take ``batch`` frames in one run."""
    return configured_detector(settings, threads, batch_size=batch)


def measure_models(rt: Runtime, video: Path, frames: int, start: int, batch: int, reps: int) -> dict[str, Any]:
    """The configured detector at batch 1 and ``batch`` (ms per frame, full frames), and the runtime's embedder
    on each frame's boxes (ms per crop batch)."""
    images = read_frames(video, frames, start) or read_frames(video, frames)
    if not images:
        raise ValueError(f"no frames decoded from {video}")
    detector = batch_detector(rt.settings, rt.settings.detector.threads, batch)
    embedder = rt.embedder
    for image in images[:WARMUP]:
        detector(image)
    detector.detect_batch(images[:batch])
    detections = [detector(image) for image in images]
    pairs = [(im, d.xyxy) for im, d in zip(images, detections, strict=True) if len(d)]
    for image, boxes in pairs[:WARMUP]:
        embedder(image, boxes)
    crops = sum(len(boxes) for _, boxes in pairs)
    one, many, per_batch, per_crop = [], [], [], []
    for _ in range(reps):
        t = Timer()
        for image in images:
            t(detector, image)
        one.append(sum(t.wall_ms) / len(images))
        t = Timer()
        for i in range(0, len(images), batch):
            t(detector.detect_batch, images[i : i + batch])
        many.append(sum(t.wall_ms) / len(images))
        t = Timer()
        for image, boxes in pairs:
            t(embedder, image, boxes)
        if pairs:
            per_batch.append(sum(t.wall_ms) / len(pairs))
            per_crop.append(sum(t.wall_ms) / crops)
    h, w = images[0].shape[:2]
    return {
        "detector_alone": {
            "video": str(video),
            "frame_size": [h, w],
            "frames": len(images),
            "start": start,
            "input_size": list(getattr(detector, "input_size", [])),
            "batch_size": batch,
            "model": str(rt.settings.path(rt.settings.detector.model_path)),
            "detections_per_frame": round(float(np.mean([len(d) for d in detections])), 2),
            "batch_1_ms_per_frame": summarise(one),
            f"batch_{batch}_ms_per_frame": summarise(many),
            "note": "full frame only (stage 1 adds the camera's detect_tiles, e.g. the motorway's far-field tile)",
        },
        "embedder_alone": {
            "batches": len(pairs),
            "median_crops_per_batch": float(np.median([len(b) for _, b in pairs])) if pairs else 0.0,
            "ms_per_crop_batch": summarise(per_batch),
            "ms_per_crop": summarise(per_crop),
        },
    }


# -- everything -------------------------------------------------------------------------------------------------
def measure(
    settings: Settings,
    *,
    reps: int = 3,
    frames: int | None = None,
    b_frames: int = 60,
    model_frames: int = 40,
    model_start: int = 200,
    batch: int = 8,
    warmup_frames: int = 3,
    models: bool = True,
    baselines: bool = True,
) -> dict[str, Any]:
    """Models alone and baselines A and B on ``settings``' file cameras; one ``Runtime`` for all of it."""
    if reps < 1:
        raise ValueError("reps must be >= 1")
    report: dict[str, Any] = {"load_avg_1m": {"start": load_avg()}}
    if not (models or baselines):
        return report
    t0 = time.perf_counter()
    rt = Runtime(settings)
    rt.warm_up()
    log.info("runtime loaded in %.1f s", time.perf_counter() - t0)
    cameras = [c for c in settings.cameras if not c.is_live]
    if models:
        video = next((c.source_path() for c in cameras if c.id == MOTORWAY), None) or cameras[0].source_path()
        report.update(measure_models(rt, video, model_frames, model_start, batch, reps))
    if baselines:
        settings_json = settings_to_json(settings)
        clips = [index_clip(c, frames) for c in cameras]
        log.info("clips indexed: %s", ", ".join(f"{c.camera.id} {len(c.frames)} frames" for c in clips))
        report["baseline_a"] = {
            "description": "one process: ingest's FrameRef -> perception.perceive_one (Runtime built once, "
            "sequential ReaderPool) -> tracking.track_camera once per camera (in-memory GroupState)",
            "frames_limit": frames,
            **measure_baseline(
                rt, settings_json, clips, frames=frames, seeking=False, reps=reps, warmup_frames=warmup_frames
            ),
        }
        chunk = max(1, settings.spark.max_offsets_per_trigger // max(1, settings.spark.min_partitions or 1))
        report["baseline_a_batched"] = {
            "description": f"baseline A with the job's batched stage 1: perception.perceive_records over {chunk} "
            "records at a time (a Spark task's share of a micro-batch), decode-ahead, frames+tiles per detector "
            "run, registration keyframes",
            "frames_limit": frames,
            "chunk": chunk,
            **measure_baseline(
                rt,
                settings_json,
                clips,
                frames=frames,
                seeking=False,
                reps=reps,
                warmup_frames=warmup_frames,
                chunk=chunk,
            ),
        }
        report["baseline_b"] = {
            "description": "baseline A with a naive reader: per frame open the container, seek to the keyframe "
            "before the frame's pts, decode forward to it",
            "frames_limit": b_frames,
            **measure_baseline(
                rt, settings_json, clips, frames=b_frames, seeking=True, reps=reps, warmup_frames=warmup_frames
            ),
        }
    report["load_avg_1m"]["end"] = load_avg()
    if max(v or 0.0 for v in report["load_avg_1m"].values()) > (os.cpu_count() or 1):
        log.warning(
            "load average %s above %d cores: figures inflated by contention", report["load_avg_1m"], os.cpu_count()
        )
    report["parameters"] = {
        "reps": reps,
        "frames": frames,
        "b_frames": b_frames,
        "model_frames": model_frames,
        "batch": batch,
        "warmup_frames": warmup_frames,
        "detector_threads": settings.detector.threads,
    }
    return report


def default_reps() -> int:
    return int(os.environ.get("BENCH_REPS", "3"))


def write_json(path: Path, report: Mapping[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, sort_keys=True, default=str) + "\n")


def log_summary(report: Mapping[str, Any]) -> None:
    det = report.get("detector_alone")
    if det:
        bn = f"batch_{det['batch_size']}_ms_per_frame"
        log.info(
            "detector alone: batch 1 %s ms/frame, batch %d %s ms/frame; embedder %s ms per crop batch",
            det["batch_1_ms_per_frame"]["median"],
            det["batch_size"],
            det[bn]["median"],
            report["embedder_alone"]["ms_per_crop_batch"]["median"],
        )
    for key in ("baseline_a", "baseline_b"):
        b = report.get(key)
        if b:
            cams = ", ".join(f"{cid} {c['fps']['median']}" for cid, c in b["per_camera"].items())
            log.info("%s: %s frames/s over %d frames (%s)", key, b["fps"], b["frames"], cams)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trafficstream.bench.throughput", description=__doc__.splitlines()[0]
    )
    add_config_arguments(parser)
    parser.add_argument("--reps", type=int, default=default_reps(), help="repetitions (env BENCH_REPS, default 3)")
    parser.add_argument("--frames", type=int, default=None, help="baseline A frames per camera (default: whole clip)")
    parser.add_argument("--b-frames", type=int, default=60, help="baseline B frames per camera (the first ones)")
    parser.add_argument("--model-frames", type=int, default=40, help="frames for the detector / embedder alone")
    parser.add_argument("--batch", type=int, default=8, help="frames per detector call in the batched figure")
    parser.add_argument("--warmup-frames", type=int, default=3, help="untimed frames per camera before each baseline")
    parser.add_argument("--skip-models", action="store_true", help="no detector / embedder alone figures")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    settings = load_settings(args.config, args.overrides)
    b_frames = args.b_frames if args.frames is None else min(args.b_frames, args.frames)
    report = {
        **run_context(),
        **measure(
            settings,
            reps=args.reps,
            frames=args.frames,
            b_frames=b_frames,
            model_frames=args.model_frames,
            batch=args.batch,
            warmup_frames=args.warmup_frames,
            models=not args.skip_models,
        ),
    }
    write_json(args.out, report)
    log_summary(report)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
