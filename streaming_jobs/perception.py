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
import time
from collections.abc import Iterator
from functools import lru_cache
from typing import Any

import numpy as np
import pyarrow as pa

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
from trafficstream.models.detector import build_detector
from trafficstream.models.embedder import AppearanceEmbedder
from trafficstream.models.roi import bottom_centre, points_in_polygon
from trafficstream.models.tiling import detect_tiled
from trafficstream.streaming_jobs.schemas import PERCEPTION
from trafficstream.streaming_jobs.shedding import DETECTED, LoadShedder
from trafficstream.video import ReaderPool, SourceError, VideoFileSource, is_under_roots, uri_to_path

log = logging.getLogger(__name__)


def _arrow_schema() -> pa.Schema:
    from pyspark.sql.pandas.types import to_arrow_schema

    return to_arrow_schema(PERCEPTION)


class Runtime:
    """Everything a Python worker loads once: settings, detector, embedder, decoders, reference frames."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        det = settings.detector
        self.detector = build_detector(
            det.backend,
            settings.path(det.model_path),
            input_size=(det.input_height, det.input_width),
            confidence=det.confidence,
            iou=det.iou,
            threads=det.threads,
            min_box_px=det.min_box_px,
            agnostic_nms=det.agnostic_nms,
        )
        self.embedder = AppearanceEmbedder(
            settings.path(settings.tracker.embedder_path),
            batch_size=settings.tracker.embed_batch,
            threads=det.threads,
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


@lru_cache(maxsize=4)
def runtime_for(settings_json: str) -> Runtime:
    t0 = time.perf_counter()
    rt = Runtime(settings_from_json(settings_json))
    log.info("perception runtime loaded in %.1f s", time.perf_counter() - t0)
    return rt


def _dead(base: dict[str, Any], reason: str, detail: str) -> dict[str, Any]:
    base.update(status="dead", reason=reason, detail=safe_text(detail))
    return base


def perceive_one(
    rt: Runtime, value: bytes | None, topic: str, partition: int, offset: int, newest_capture_ts: float = 0.0
) -> dict[str, Any]:
    """Process one Kafka record into one PERCEPTION row. Never raises: any defect is a ``dead`` row.

    ``newest_capture_ts``: capture time of the same camera's newest frame in the task's input (load shedding
    skips a stale frame only for fresher ones)."""
    row: dict[str, Any] = {
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
    try:
        return _perceive(rt, value, row, newest_capture_ts)
    except Exception as exc:  # a bug or a hostile record must not kill the partition: dead-letter it
        log.exception("processing failed for %s offset %s", topic, offset)
        return _dead(row, REASON_PROCESSING_ERROR, f"{type(exc).__name__}: {exc}")


def _perceive(rt: Runtime, value: bytes | None, row: dict[str, Any], newest_capture_ts: float) -> dict[str, Any]:
    try:
        ref = FrameRef.from_json(value, rt.max_message_bytes)
    except MessageError as exc:
        return _dead(row, exc.reason, exc.detail)
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
    camera = rt.cameras.get(ref.camera_id)
    if camera is None:
        return _dead(row, REASON_UNKNOWN_CAMERA, f"camera {ref.camera_id!r} is not in the deployment config")
    try:
        path = uri_to_path(ref.source_uri)
        if not is_under_roots(path, rt.roots):
            return _dead(row, REASON_PATH_NOT_ALLOWED, f"{path} is outside the allowed storage roots")
        if not rt.source_matches(camera.id, path):
            return _dead(row, REASON_SOURCE_MISMATCH, f"{path} is not the source of camera {camera.id!r}")
        newest = max(newest_capture_ts, ref.capture_ts)
        decision = rt.shedder(camera.id, ref.live).decide(ref.frame_index, ref.capture_ts, time.time(), newest)
        row.update(analysis=decision.analysis, stride=decision.stride, skip_reason=decision.skip_reason)
        if decision.analysis != DETECTED:  # stage 2 predicts the tracks onto it, or records the skip
            return row
        t0 = time.perf_counter()
        image = rt.readers.get(path, camera.fps).read(ref.index_in_source, ref.pts_in_source)
        if image.shape[:2] != (ref.height, ref.width):
            return _dead(
                row,
                REASON_FRAME_MISMATCH,
                f"frame is {image.shape[1]}x{image.shape[0]}, the reference says {ref.width}x{ref.height}",
            )
        t1 = time.perf_counter()
        dets = detect_tiled(rt.detector, image, camera.detect_tiles, rt.settings.detector.iou)
        t2 = time.perf_counter()
        row["raw_detections"] = len(dets)
        if camera.roi is not None and len(dets):
            dets = dets.filter(points_in_polygon(bottom_centre(dets.xyxy), np.asarray(camera.roi, dtype=np.float32)))
        emb = rt.embedder(image, dets.xyxy)
        if camera.register_frames:
            row["drift"] = _drift(rt, camera.id, image)
        t3 = time.perf_counter()
    except SourceError as exc:
        return _dead(row, exc.reason, str(exc))
    row.update(
        boxes=dets.xyxy.astype(np.float32).ravel().tolist(),
        scores=dets.confidence.astype(np.float32).tolist(),
        classes=dets.class_id.astype(np.int32).tolist(),
        embeddings=emb.astype(np.float16).tobytes(),
        embedding_dim=int(emb.shape[1]) if emb.ndim == 2 else 0,
        decode_ms=(t1 - t0) * 1e3,
        detect_ms=(t2 - t1) * 1e3,
        embed_ms=(t3 - t2) * 1e3,
    )
    return row


def _drift(rt: Runtime, camera_id: str, image: np.ndarray) -> list[float] | None:
    import cv2

    from trafficstream.models.registration import estimate_drift

    ref = rt.reference(camera_id)
    if ref is None:
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


def _camera_and_capture(value: bytes | None, max_bytes: int) -> tuple[str, float] | None:
    try:
        ref = FrameRef.from_json(value, max_bytes)
    except MessageError:
        return None
    return ref.camera_id, ref.capture_ts


def perceive_batches(settings_json: str, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body: Kafka records (value, topic, partition, offset) -> PERCEPTION rows."""
    rt = runtime_for(settings_json)
    for batch in batches:
        cols = batch.to_pydict()
        # Each camera's newest frame in this input (a cheap parse): stale frames are only skipped for fresher ones.
        parsed = [_camera_and_capture(v, rt.max_message_bytes) for v in cols["value"]]
        newest: dict[str, float] = {}
        for cam, capture in filter(None, parsed):
            newest[cam] = max(newest.get(cam, capture), capture)
        rows = []
        for cc, v, t, p, o in zip(parsed, cols["value"], cols["topic"], cols["partition"], cols["offset"], strict=True):
            rows.append(perceive_one(rt, v, t, p, o, newest[cc[0]] if cc else 0.0))
        yield to_record_batch(rows, rt.schema)


def warm_batches(settings_json: str, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
    """``mapInArrow`` body of the warm-up job: load the runtime and run each model once in this worker."""
    t0 = time.perf_counter()
    runtime_for(settings_json).warm_up()
    ms = (time.perf_counter() - t0) * 1e3
    for batch in batches:
        yield pa.RecordBatch.from_pylist([{"ms": ms}] * batch.num_rows, schema=pa.schema([("ms", pa.float64())]))
