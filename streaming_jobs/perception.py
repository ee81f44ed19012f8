"""Stage 1 of the vehicle job: stateless, per partition (``mapInArrow``), the CPU/GPU-heavy part.

For every frame reference: validate it, check the camera and the storage roots, decode the referenced frame
(one open decoder per source, read sequentially), detect vehicles, keep those in the region of interest,
compute their appearance embeddings in one batch, and (for drifting cameras) register the frame against the
camera's reference frame. Anything wrong becomes a ``dead`` row with a reason; nothing is dropped.

Models and decoders live in a per-process :class:`Runtime`, created on first use in each Python worker and
reused across partitions and micro-batches (Spark reuses Python workers), never per frame.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa

from trafficstream.cameras import Camera
from trafficstream.config import Settings, settings_from_json
from trafficstream.errors import MessageError
from trafficstream.messages import (
    REASON_FRAME_MISMATCH,
    REASON_MALFORMED,
    REASON_PATH_NOT_ALLOWED,
    REASON_PROCESSING_ERROR,
    REASON_SOURCE_MISMATCH,
    REASON_UNKNOWN_CAMERA,
    FrameRef,
    payload_text,
    safe_text,
)
from trafficstream.models.detector import Detector, build_detector
from trafficstream.models.embedder import AppearanceEmbedder, crop_boxes
from trafficstream.models.roi import bottom_centre, points_in_polygon
from trafficstream.models.tiling import detect_tiled_batch
from trafficstream.streaming_jobs.schemas import PERCEPTION
from trafficstream.streaming_jobs.shedding import DETECTED, STEERING_PROPERTY, LoadShedder, Steer, decode_steering
from trafficstream.video import ReaderPool, SourceError, VideoFileSource, is_under_roots, uri_to_path

log = logging.getLogger(__name__)


def _arrow_schema() -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(PERCEPTION)


def configured_detector(settings: Settings, threads: int, **overrides: Any) -> Detector:
    """The detector ``settings.detector`` describes, with ``threads``; ``overrides`` replace constructor
    arguments (``batch_size``, ``classes``, GPU options)."""
    det = settings.detector
    kwargs: dict[str, Any] = {
        "input_size": (det.input_height, det.input_width),
        "confidence": det.confidence,
        "iou": det.iou,
        "threads": threads,
        "min_box_px": det.min_box_px,
        "agnostic_nms": det.agnostic_nms,
        "batch_size": det.batch_size,
        "box_bottom_offset_px": det.box_bottom_offset_px,
    }
    return build_detector(det.backend, settings.path(det.model_path), **(kwargs | overrides))


class Runtime:
    """Everything a Python worker loads once: settings, detector, embedder, decoders, reference frames."""

    def __init__(self, settings: Settings, threads: int | None = None, gpu: str | None = None) -> None:
        self.settings = settings
        det = settings.detector
        self.threads = det.threads if threads is None else threads
        self.batch_size, self.prefetch = det.batch_size, det.prefetch_frames
        # Stage 1 keeps detections down to the tracker's low threshold (not embedded; stage 2 uses them only to
        # continue tracks): ``confident`` is the detector's own threshold.
        self.confident = det.confidence
        low = settings.tracker.low_confidence
        overrides = {**gpu_options(det.backend, gpu, det.half)}
        if low is not None and low < det.confidence:
            overrides["confidence"] = low
        self.detector = configured_detector(settings, self.threads, **overrides)
        self.embedder = AppearanceEmbedder(
            settings.path(settings.tracker.embedder_path),
            batch_size=settings.tracker.embed_batch,
            threads=self.threads,
        )
        self.readers = ReaderPool(max_open=max(4, 2 * len(settings.cameras)))
        self.cameras = {c.id: c for c in settings.cameras}
        self.roots = settings.allowed_roots
        self._references: dict[str, Any] = {}
        self._sources: dict[str, Any] = {}
        self.max_message_bytes = settings.kafka.max_message_bytes
        self.schema = _arrow_schema()
        self._shedders: dict[tuple[str, bool], LoadShedder] = {}

    def shedder(self, camera_id: str, live: bool) -> LoadShedder:
        """The camera's load shedder in this worker; live references shed load (if enabled), others never."""
        key = (camera_id, live)
        if key not in self._shedders:
            cam, live_cfg = self.cameras[camera_id], self.settings.live
            self._shedders[key] = LoadShedder(
                cam.detect_every,
                live_cfg.max_detect_every,
                self.settings.budget_s(cam),
                enabled=live and live_cfg.shed_load,
            )
        return self._shedders[key]

    def warm_up(self) -> None:
        """One inference through each model, so the first real frame does not pay for graph set-up."""
        blank = np.zeros((max(64, self.settings.detector.input_height), 640, 3), np.uint8)
        self.detector(blank)
        self.embedder(blank, np.asarray([[0, 0, 64, 64]], np.float32))

    def reference(self, camera_id: str) -> Any | None:
        """Registration features of a drifting camera's reference frame (computed once per worker).

        Always from the camera's *configured* source, never from whatever path a reference names: one stray
        reference must not become every later frame's registration target.
        """
        import cv2

        from trafficstream.models.registration import prepare_reference

        if camera_id not in self._references:
            cam = self.cameras[camera_id]
            if cam.calibration is not None and cam.calibration.reference_image:
                image = cv2.imread(str(self.settings.path(cam.calibration.reference_image)), cv2.IMREAD_GRAYSCALE)
                if image is None:
                    raise SourceError(f"registration reference {cam.calibration.reference_image} is unreadable")
                self._references[camera_id] = prepare_reference(image)
                return self._references[camera_id]
            target = cam.calibration.reference_frame if cam.calibration and cam.calibration.reference_frame else 0
            with VideoFileSource(cam.source_path(), cam.fps) as src:
                for frame in src.frames():
                    if frame.index == target:
                        gray = cv2.cvtColor(frame.image, cv2.COLOR_BGR2GRAY)
                        self._references[camera_id] = prepare_reference(gray)
                        break
        return self._references.get(camera_id)

    def source_matches(self, camera_id: str, path) -> bool:
        """A reference may only point at its camera's own configured source: the file, or for a live camera
        a segment in its own folder of ``storage.segments_root``."""
        cam = self.cameras[camera_id]
        if camera_id not in self._sources:
            own = self.settings.segment_dir(camera_id) if cam.is_live else cam.source_path()
            self._sources[camera_id] = own.resolve()
        resolved = path.resolve()
        if cam.is_live:
            return resolved.parent == self._sources[camera_id]
        return resolved == self._sources[camera_id]


def task_threads(configured: int) -> int:
    """Inference threads for this Python worker: the configured count, else the cores its Spark task owns
    (``spark.task.cpus``; two 1-core tasks on two cores must not run four busy threads), else 0 (all)."""
    if configured > 0:
        return configured
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return int(ctx.cpus()) if ctx is not None else 0


def task_gpu() -> str | None:
    """The GPU Spark assigned to this task (``spark.task.resource.gpu.amount``), if any."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    gpu = ctx.resources().get("gpu") if ctx is not None else None
    return gpu.addresses[0] if gpu is not None and gpu.addresses else None


def gpu_options(backend: str, gpu: str | None, half: bool) -> dict[str, Any]:
    """Detector keyword arguments that put it on the task's GPU: Ultralytics takes a device and FP16; ONNX
    Runtime takes the CUDA provider's device id (CPU when this onnxruntime build has no CUDA)."""
    if backend == "ultralytics":
        return {"device": gpu, "half": half}
    if gpu is not None and gpu.isdigit():
        import onnxruntime as ort

        if "CUDAExecutionProvider" in ort.get_available_providers():
            return {"providers": [("CUDAExecutionProvider", {"device_id": int(gpu)}), "CPUExecutionProvider"]}
    return {}


@lru_cache(maxsize=4)
def runtime_for(settings_json: str) -> Runtime:
    t0 = time.perf_counter()
    settings = settings_from_json(settings_json)
    rt = Runtime(settings, threads=task_threads(settings.detector.threads), gpu=task_gpu())
    log.info("perception runtime loaded in %.1f s (threads: %s)", time.perf_counter() - t0, rt.threads or "all")
    return rt


def _dead(base: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
    base.update(status="dead", reason=reason, detail=safe_text(detail))
    return base


Record = tuple[bytes | None, str, int, int]  # Kafka value, topic, partition, offset


@dataclass(eq=False)
class _Job:
    """A frame reference that passed every check and is to be decoded and detected."""

    row: dict[str, Any]
    ref: FrameRef
    camera: Camera
    path: Path
    register: bool = False  # a registration keyframe (others interpolate between keyframes)
    image: np.ndarray | None = None
    decode_ms: float = 0.0


def perceive_one(
    rt: Runtime, value: bytes | None, topic: str, partition: int, offset: int, newest_capture_ts: float = 0.0
) -> dict[str, Any]:
    """One Kafka record -> one PERCEPTION row (:func:`perceive_records` of one record). Never raises.

    ``newest_capture_ts``: capture time of the same camera's newest frame waiting (load shedding skips a
    stale frame only for fresher ones)."""
    return perceive_records(rt, [(value, topic, partition, offset)], newest_capture_ts)[0]


def perceive_records(
    rt: Runtime,
    records: list[Record],
    newest_capture_ts: float = 0.0,
    batch_ts: float | None = None,
    steering: Mapping[str, Steer] | None = None,
) -> list[dict[str, Any]]:
    """Kafka records -> PERCEPTION rows, one per record and in the same order. Never raises: any defect of
    a record is its own ``dead`` row. ``batch_ts``: when the micro-batch started (Unix seconds; None outside
    a streaming query): a live reference published long before it waited behind a backlog (load shedding).
    ``steering``: the driver's detection stride and skip age per camera for live references (shedding.py); a
    camera without one steers itself.

    Every reference is parsed and checked first; the admitted ones are decoded by a background thread
    (``detector.prefetch_frames`` ahead) while the frames already decoded go through the detector together
    with their tiles (``detector.batch_size`` frames per run) and their crops through the embedder in one
    batch. Drifting cameras register one frame per ``register_every_s`` and interpolate the frames between.
    """
    rows = [_base_row(rt, *record) for record in records]
    refs = [_parse(rt, row, record[0]) for row, record in zip(rows, records, strict=True)]
    # Each camera's newest frame in this input: stale frames are only skipped for fresher ones.
    newest: dict[str, float] = {}
    for ref in filter(None, refs):
        newest[ref.camera_id] = max(newest.get(ref.camera_id, newest_capture_ts), ref.capture_ts)
    steering = steering or {}
    jobs = [
        job
        for row, ref in zip(rows, refs, strict=True)
        if ref and (job := _admit(rt, row, ref, newest, batch_ts, steering.get(ref.camera_id)))
    ]
    _plan_registration(rt, jobs)
    chunk: list[_Job] = []
    registered: list[_Job] = []
    for job in _decode_ahead(rt, jobs):
        if job.image is not None:
            chunk.append(job)
        if len(chunk) >= rt.batch_size:
            registered += _infer_isolated(rt, chunk)
            chunk = []
    registered += _infer_isolated(rt, chunk)
    _interpolate_drift(jobs, registered)
    return rows


def _base_row(rt: Runtime, value: bytes | None, topic: str, partition: int, offset: int) -> dict[str, Any]:
    return {
        "camera_id": "",
        "kafka_topic": topic,
        "kafka_partition": partition,
        "kafka_offset": offset,
        "status": "ok",
        "reason": None,
        "detail": None,
        # Kept on every row: stage 2 may still dead-letter the frame (duplicate_frame) with its original payload.
        "payload": payload_text(value, rt.max_message_bytes),
    }


def _processing_error(row: dict[str, Any], exc: Exception) -> None:
    # a bug or a hostile record must not kill the partition: dead-letter it
    log.exception("processing failed for %s offset %s", row["kafka_topic"], row["kafka_offset"])
    _dead(row, REASON_PROCESSING_ERROR, f"{type(exc).__name__}: {exc}")


def _parse(rt: Runtime, row: dict[str, Any], value: bytes | None) -> FrameRef | None:
    try:
        ref = FrameRef.from_json(value, rt.max_message_bytes)
    except MessageError as exc:
        _dead(row, exc.reason, exc.detail)
        return None
    except Exception as exc:
        _processing_error(row, exc)
        return None
    row.update(
        camera_id=ref.camera_id,
        frame_index=ref.frame_index,
        pts_s=ref.pts_s,
        capture_ts=ref.capture_ts,
        ingest_ts=ref.ingest_ts,
        source_uri=ref.source_uri,
        source_index=ref.index_in_source,
        source_pts_s=ref.pts_in_source,
        width=ref.width,
        height=ref.height,
    )
    return ref


def _admit(
    rt: Runtime,
    row: dict[str, Any],
    ref: FrameRef,
    newest: dict[str, float],
    batch_ts: float | None = None,
    steer: Steer | None = None,
) -> _Job | None:
    """The checks before any decoding: camera, storage roots, source, load shedding. None: the row is done
    (dead, or left to stage 2 to predict or skip)."""
    try:
        camera = rt.cameras.get(ref.camera_id)
        if camera is None:
            _dead(row, REASON_UNKNOWN_CAMERA, f"camera {ref.camera_id!r} is not in the deployment config")
            return None
        path = uri_to_path(ref.source_uri)
        if not is_under_roots(path, rt.roots):
            _dead(row, REASON_PATH_NOT_ALLOWED, f"{path} is outside the allowed storage roots")
            return None
        if not rt.source_matches(camera.id, path):
            _dead(row, REASON_SOURCE_MISMATCH, f"{path} is not the source of camera {camera.id!r}")
            return None
        decision = rt.shedder(camera.id, ref.live).decide(
            ref.frame_index,
            ref.capture_ts,
            time.time(),
            newest.get(camera.id, ref.capture_ts),
            queued_s=0.0 if batch_ts is None else batch_ts - ref.ingest_ts,
            steer=steer,
        )
        row.update(analysis=decision.analysis, stride=decision.stride, skip_reason=decision.skip_reason)
        if decision.analysis != DETECTED:  # stage 2 predicts the tracks onto it, or records the skip
            return None
        return _Job(row, ref, camera, path)
    except SourceError as exc:
        _dead(row, exc.reason, str(exc))
    except Exception as exc:
        _processing_error(row, exc)
    return None


def _plan_registration(rt: Runtime, jobs: list[_Job]) -> None:
    """Mark the frames to register: per drifting camera the first, then one per ``register_every_s`` of
    capture time, and the last (the frames between interpolate)."""
    last: dict[str, float] = {}
    final: dict[str, _Job] = {}
    for job in sorted(jobs, key=lambda j: (j.camera.id, j.ref.pts_s)):
        cam = job.camera
        if not cam.register_frames:
            continue
        if cam.id not in last or job.ref.pts_s - last[cam.id] >= cam.register_every_s:
            job.register, last[cam.id] = True, job.ref.pts_s
        final[cam.id] = job
    for job in final.values():
        job.register = True


def _decode(rt: Runtime, job: _Job) -> _Job:
    t0 = time.perf_counter()
    ref, row = job.ref, job.row
    try:
        image = rt.readers.get(job.path, job.camera.fps).read(ref.index_in_source, ref.pts_in_source)
        if image.shape[:2] != (ref.height, ref.width):
            _dead(
                row,
                REASON_FRAME_MISMATCH,
                f"frame is {image.shape[1]}x{image.shape[0]}, the reference says {ref.width}x{ref.height}",
            )
        else:
            job.image = image
    except SourceError as exc:
        _dead(row, exc.reason, str(exc))
    except Exception as exc:
        _processing_error(row, exc)
    job.decode_ms = (time.perf_counter() - t0) * 1e3
    return job


def _decode_ahead(rt: Runtime, jobs: list[_Job]) -> Iterator[_Job]:
    """``jobs`` decoded in order; a background thread keeps up to ``prefetch`` frames ready (PyAV releases
    the GIL while it decodes, so decoding overlaps inference). Decoders are only ever used by one thread."""
    if rt.prefetch <= 0 or len(jobs) < 2:
        yield from (_decode(rt, job) for job in jobs)
        return
    ready: queue.Queue[_Job | None] = queue.Queue(maxsize=rt.prefetch)
    stop = threading.Event()

    def work() -> None:
        try:
            for job in jobs:
                _decode(rt, job)
                while not stop.is_set():
                    try:
                        ready.put(job, timeout=0.2)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        finally:
            if not stop.is_set():
                ready.put(None)

    thread = threading.Thread(target=work, name="decode-ahead", daemon=True)
    thread.start()
    try:
        while (job := ready.get()) is not None:
            yield job
    finally:
        stop.set()
        thread.join()


def _infer_isolated(rt: Runtime, chunk: list[_Job]) -> list[_Job]:
    """:func:`_infer` on the chunk; if it fails, frame by frame, so only a frame that fails alone is dead.
    Returns the registration keyframes that got a drift."""
    if not chunk:
        return []
    try:
        return _infer(rt, chunk)
    except Exception as exc:
        if len(chunk) == 1:
            job = chunk[0]
            if isinstance(exc, SourceError):  # e.g. the camera's registration reference is unreadable
                _dead(job.row, exc.reason, str(exc))
            else:
                _processing_error(job.row, exc)
            job.image = None
            return []
        log.warning("batched inference over %d frames failed; retrying frame by frame", len(chunk), exc_info=True)
        return [k for job in chunk for k in _infer_isolated(rt, [job])]


def _infer(rt: Runtime, chunk: list[_Job]) -> list[_Job]:
    """Detect (frames and tiles in one detector call), keep the ROI, embed every crop of the chunk in one
    embedder call, register the keyframes; fill the rows."""
    t0 = time.perf_counter()
    images = [job.image for job in chunk if job.image is not None]
    if len(images) != len(chunk):
        raise ValueError("a frame of the chunk has no image")
    found = detect_tiled_batch(rt.detector, images, [j.camera.detect_tiles for j in chunk], rt.settings.detector.iou)
    t1 = time.perf_counter()
    raw = [int((d.confidence >= rt.confident).sum()) for d in found]
    for i, job in enumerate(chunk):
        if job.camera.roi is not None and len(found[i]):
            roi = np.asarray(job.camera.roi, dtype=np.float32)
            found[i] = found[i].filter(points_in_polygon(bottom_centre(found[i].xyxy), roi))
    # Only confident detections are embedded; low ones (below the detector's own threshold, kept for the tracker's
    # second association) get a zero embedding: stage 2 tells them apart by their score.
    confident = [d.confidence >= rt.confident for d in found]
    crops = [
        crop
        for image, dets, keep in zip(images, found, confident, strict=True)
        for crop in crop_boxes(image, dets.xyxy[keep])
    ]
    embedded = _with_zero_rows(
        rt.embedder.embed_crops(crops), np.concatenate(confident) if found else np.zeros(0, bool)
    )
    splits = np.cumsum([len(d) for d in found])[:-1]
    keyframes = [job for job in chunk if job.register]
    drifts = [_drift(rt, job.camera.id, job.image) for job in keyframes]
    t2 = time.perf_counter()
    for job, dets, emb, n_raw in zip(chunk, found, np.split(embedded, splits), raw, strict=True):
        job.row.update(
            raw_detections=n_raw,
            boxes=dets.xyxy.astype(np.float32).ravel().tolist(),
            scores=dets.confidence.astype(np.float32).tolist(),
            classes=dets.class_id.astype(np.int32).tolist(),
            embeddings=emb.astype(np.float16).tobytes(),
            embedding_dim=int(emb.shape[1]) if emb.ndim == 2 and len(emb) else 0,
            decode_ms=job.decode_ms,
            # the chunk's time shared equally: what each frame cost the task
            detect_ms=(t1 - t0) * 1e3 / len(chunk),
            embed_ms=(t2 - t1) * 1e3 / len(chunk),
        )
        job.image = None  # the chunk's memory goes back before the next one is decoded
    for job, drift in zip(keyframes, drifts, strict=True):
        job.row["drift"] = drift
    return [job for job, drift in zip(keyframes, drifts, strict=True) if drift is not None]


def _with_zero_rows(embedded: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``embedded`` (one row per True of ``rows``) spread over all of ``rows``, zeros where False."""
    if rows.all():
        return embedded
    dim = embedded.shape[1] if embedded.ndim == 2 else 1
    out = np.zeros((len(rows), dim), dtype=embedded.dtype)
    out[rows] = embedded.reshape(-1, dim)
    return out


def _interpolate_drift(jobs: list[_Job], keyframes: list[_Job]) -> None:
    """Frames of a drifting camera between two registered keyframes get the drift interpolated linearly in
    capture time (beyond the last keyframe: held)."""
    by_camera: dict[str, list[_Job]] = {}
    for key in keyframes:
        by_camera.setdefault(key.camera.id, []).append(key)
    for job in jobs:
        keys = by_camera.get(job.camera.id)
        if job.register or not keys or job.row["status"] != "ok" or "boxes" not in job.row:
            continue
        pts = np.array([k.ref.pts_s for k in sorted(keys, key=lambda k: k.ref.pts_s)])
        ordered = sorted(keys, key=lambda k: k.ref.pts_s)
        j = int(np.searchsorted(pts, job.ref.pts_s))
        if j == 0 or j == len(ordered):
            job.row["drift"] = list(ordered[min(j, len(ordered) - 1)].row["drift"])
            continue
        a, b = ordered[j - 1], ordered[j]
        w = (job.ref.pts_s - a.ref.pts_s) / max(b.ref.pts_s - a.ref.pts_s, 1e-9)
        job.row["drift"] = ((1 - w) * np.asarray(a.row["drift"]) + w * np.asarray(b.row["drift"])).tolist()


def _drift(rt: Runtime, camera_id: str, image: np.ndarray | None) -> list[float] | None:
    import cv2

    from trafficstream.models.registration import estimate_drift

    ref = rt.reference(camera_id)
    if ref is None or image is None:
        return None
    return np.asarray(estimate_drift(ref, cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)), dtype=float).ravel().tolist()


_DEAD_KEYS = ("camera_id", "kafka_topic", "kafka_partition", "kafka_offset", "payload")


def to_record_batch(rows: list[dict[str, Any]], schema: pa.Schema) -> pa.RecordBatch:
    """Rows -> Arrow; a row Arrow refuses (a value no check foresaw) becomes a dead row, never a task failure."""
    try:
        return pa.RecordBatch.from_pylist(rows, schema=schema)
    except (pa.ArrowException, ValueError, TypeError, OverflowError):
        pass
    safe: list[dict[str, Any]] = []
    for row in rows:
        try:
            pa.RecordBatch.from_pylist([row], schema=schema)
            safe.append(row)
        except (pa.ArrowException, ValueError, TypeError, OverflowError) as exc:
            log.warning(
                "row of %s offset %s not representable: %s", row.get("kafka_topic"), row.get("kafka_offset"), exc
            )
            dead = {k: row.get(k) for k in _DEAD_KEYS}
            dead["camera_id"] = dead["camera_id"] if isinstance(dead["camera_id"], str) else ""
            dead["camera_id"] = safe_text(dead["camera_id"], 64)
            if isinstance(dead["payload"], str):
                dead["payload"] = safe_text(dead["payload"], 64 * 1024)
            safe.append(
                _dead(
                    dead,
                    REASON_MALFORMED if row.get("status") == "dead" else REASON_PROCESSING_ERROR,
                    f"not representable: {type(exc).__name__}: {exc}",
                )
            )
    return pa.RecordBatch.from_pylist(safe, schema=schema)


def perceive_batches(settings_json: str, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: Kafka records (value, topic, partition, offset, and the micro-batch's start
    ``batch_us``, microseconds since the epoch) -> PERCEPTION rows."""
    rt = runtime_for(settings_json)
    steering = driver_steering()
    for batch in batches:
        cols = batch.to_pydict()
        records = list(zip(cols["value"], cols["topic"], cols["partition"], cols["offset"], strict=True))
        starts = cols.get("batch_us") or [None]
        batch_ts = None if starts[0] is None else starts[0] / 1e6
        yield to_record_batch(perceive_records(rt, records, batch_ts=batch_ts, steering=steering), rt.schema)


def driver_steering() -> dict[str, Steer]:
    """The load shedding the driver set for this task's micro-batch (a Spark local property; shedding.py),
    {} outside a Spark task or before the driver has set any."""
    from pyspark import TaskContext

    ctx = TaskContext.get()
    return decode_steering(ctx.getLocalProperty(STEERING_PROPERTY)) if ctx is not None else {}


def warm_batches(settings_json: str, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body of the warm-up job: load the runtime and run each model once in this worker."""
    t0 = time.perf_counter()
    runtime_for(settings_json).warm_up()
    ms = (time.perf_counter() - t0) * 1e3
    for batch in batches:
        yield pa.RecordBatch.from_pylist([{"ms": ms}] * batch.num_rows, schema=pa.schema([("ms", pa.float64())]))
