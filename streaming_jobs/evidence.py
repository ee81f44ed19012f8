"""Evidence for violations: the frame as JPEG with the vehicle boxed and labelled, and a short MP4 clip around
it (``streaming_jobs/evidence_clip.py``).

Runs on executors (``mapInPandas`` over the few violation rows of a micro-batch), or on the driver in local
mode: it re-reads the one frame from the source. File names are deterministic, so a replayed micro-batch
rewrites the same file. Two steps: :func:`render_evidence` makes the snapshot and names the clip (its URI goes
into the violation's row and results-topic message, built here too), :func:`render_clips` then makes the clips.
The sink records and publishes the violations between the two: a clip costs seconds of CPU (a detector pass per
clip frame), and a violation must not wait for it (measured: 30 s for four violations' clips while four live
cameras kept the cores busy). A clip appears at its URI once complete (written under a temporary name and
renamed); one that cannot be made is logged and its file never appears.

Other road users are pixelated as ``privacy.mode`` says (:mod:`trafficstream.models.privacy`), before the
annotations are drawn, so the box and label stay legible. Their boxes come from the violation payload's
optional ``others`` (every detection of the frame, the offender's included, as ``[x1, y1, x2, y2]`` source
pixels); a payload without it has nobody else to pixelate (``all-but-plate-region`` still hides the offender
but for its plate region).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd

from trafficstream.config import PrivacySettings, settings_from_json
from trafficstream.ingest.segments import mark_evidence
from trafficstream.models.classes import ROAD_USER_CLASS_IDS
from trafficstream.models.detector import Detector
from trafficstream.models.privacy import Box, anonymise
from trafficstream.results import encode, violation_message
from trafficstream.streaming_jobs.evidence_clip import clip_path, render_clip
from trafficstream.streaming_jobs.perception import configured_detector
from trafficstream.video import ReaderPool, SourceError, is_under_roots, uri_to_path

log = logging.getLogger(__name__)
_pool = ReaderPool(max_open=4)


@lru_cache(maxsize=4)
def _evidence_root(settings_json: str) -> Path:
    return settings_from_json(settings_json).evidence_root


@lru_cache(maxsize=4)
def _segments_root(settings_json: str) -> Path:
    return settings_from_json(settings_json).segments_root


@lru_cache(maxsize=4)
def _privacy(settings_json: str) -> PrivacySettings:
    return settings_from_json(settings_json).privacy


def draw_violation(image: np.ndarray, box: tuple[float, float, float, float], label: str) -> np.ndarray:
    """Copy of ``image`` with a red box and a label above it (pure)."""
    out = image.copy()
    x1, y1, x2, y2 = (int(round(v)) for v in box)  # int(): a numpy scalar may round to a numpy float
    thickness = max(2, image.shape[1] // 400)
    cv2.rectangle(out, (x1, y1), (x2, y2), (0, 0, 255), thickness)
    scale = max(0.5, image.shape[1] / 1600)
    (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    ty = max(th + base, y1 - 4)
    cv2.rectangle(out, (x1, ty - th - base), (x1 + tw + 4, ty + 2), (0, 0, 255), -1)
    cv2.putText(out, label, (x1 + 2, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def evidence_image(
    image: np.ndarray,
    box: tuple[float, float, float, float],
    label: str,
    privacy: PrivacySettings,
    others: Sequence[Box] | None = None,
) -> np.ndarray:
    """The evidence snapshot (pure): ``image`` with the road users in ``others`` anonymised as ``privacy``
    says, the offender (``box``) kept, then the annotations drawn on top (never pixelated themselves).
    ``others`` may include the offender's own box; None: nobody else to anonymise."""
    clean = anonymise(
        image,
        box,
        others or (),
        privacy.mode,
        blocks_across=privacy.blocks_across,
        min_block_px=privacy.min_block_px,
    )
    return draw_violation(clean, box, label)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def payload_boxes(value: Any) -> list[Box]:
    """The payload's ``others`` as boxes: entries that are not four numbers are left out (None: no boxes)."""
    out: list[Box] = []
    for item in value if isinstance(value, (list, tuple)) else ():
        if isinstance(item, (list, tuple)) and len(item) == 4 and all(_number(c) for c in item):
            out.append(tuple(float(c) for c in item))
    return out


def evidence_path(root: Path, camera_id: str, track_id: int, frame_index: int) -> Path:
    return root / camera_id / f"track{track_id}_frame{frame_index}.jpg"


def violation_result(row: Any, payload: dict[str, Any], evidence_uri: str | None, clip_uri: str | None = None) -> str:
    """The results-topic message of a violation row (``VIOLATION_PAYLOAD`` ``payload``)."""
    p = payload
    return encode(
        violation_message(
            camera_id=row.camera_id,
            track_id=p["track_id"],
            frame_index=row.frame_index,
            capture_ts=row.capture_ts,
            class_name=p["class_name"],
            speed_kmh=p["speed_kmh"],
            limit_kmh=p["limit_kmh"],
            over_s=p["over_s"],
            evidence_uri=evidence_uri,
            box=(p["x1"], p["y1"], p["x2"], p["y2"]),
            clip_uri=clip_uri,
            speed_source=p.get("speed_source") or "windowed",
            uncertainty_kmh=p.get("uncertainty_kmh"),
        )
    ).decode("utf-8")


def _keep_segment(settings_json: str, source: Path) -> None:
    """A live camera's segment holding evidence outlives the normal retention (the ingest worker's sweep
    keeps it until ``live.evidence_retention_h``)."""
    if is_under_roots(source, [_segments_root(settings_json)]):
        try:
            mark_evidence(source)
        except OSError as exc:
            log.warning("segment %s not marked as evidence: %s", source.name, exc)


@lru_cache(maxsize=4)
def _clip_detector(settings_json: str) -> Detector:
    """The job's detector model with every road user (people and cyclists too): what a clip's privacy needs."""
    settings = settings_from_json(settings_json)
    # One inference thread unless configured: the clip is background work (in the helper process there is no
    # Spark task to size it by, and an idle multi-thread pool spins on cores the micro-batches need).
    return configured_detector(settings, settings.detector.threads or 1, classes=ROAD_USER_CLASS_IDS)


def _source(row: Any, p: dict[str, Any]) -> tuple[Path, int, float]:
    """The violation frame's video file, frame index and pts in it (a live segment's own, when it has them)."""
    source = uri_to_path(p["source_uri"])
    index = int(row.frame_index) if p.get("source_index") is None else int(p["source_index"])
    pts = float(row.pts_s) if p.get("source_pts_s") is None else float(p["source_pts_s"])
    return source, index, pts


def _clip(settings_json: str, row: Any, p: dict[str, Any]) -> bool:
    """Make the violation's evidence clip (``evidence`` settings) where its row names it (``evidence_clip_uri``);
    False: it could not be made (logged)."""
    box = (float(p["x1"]), float(p["y1"]), float(p["x2"]), float(p["y2"]))
    try:
        source, _, pts = _source(row, p)
        made = _render_clip_low(settings_json, uri_to_path(row.evidence_clip_uri), source, pts, box)
    except Exception as exc:  # broad on purpose: a clip is extra evidence; the violation stands without it
        log.warning("no evidence clip for %s track %s (none at its URI): %r", row.camera_id, p["track_id"], exc)
        return False
    if not made:
        log.warning("no evidence clip for %s track %s: no frames around it", row.camera_id, p["track_id"])
    return made


def _render_clip(settings_json: str, target: Path, source: Path, pts: float, box: Box) -> bool:
    settings = settings_from_json(settings_json)
    ev = settings.evidence
    detector = _clip_detector(settings_json)
    return render_clip(
        target,
        source,
        pts,
        box,
        detector,
        settings.privacy,
        ev.clip_before_s,
        ev.clip_after_s,
        ev.clip_max_frames,
        ev.clip_max_fps,
    )


def _render_clip_low(settings_json: str, target: Path, source: Path, pts: float, box: Box) -> bool:
    """Render the clip in this worker's helper process at ``evidence.clip_nice`` (a clip costs seconds of CPU
    and must not take them from the live micro-batches: the OS gives them the cores first), or here when the
    niceness is 0 or the helper cannot run."""
    ev = settings_from_json(settings_json).evidence
    if not ev.clip_nice:
        return _render_clip(settings_json, target, source, pts, box)
    try:
        future = _clip_helper(ev.clip_nice).submit(_render_clip, settings_json, target, source, pts, box)
    except (BrokenProcessPool, RuntimeError, OSError) as exc:
        _clip_helper.cache_clear()
        log.warning("clip helper unavailable (%r): rendering in the task", exc)
        return _render_clip(settings_json, target, source, pts, box)
    try:
        return bool(future.result(timeout=CLIP_TIMEOUT_S))
    except BrokenProcessPool:
        _clip_helper.cache_clear()  # a helper that died is started afresh for the next clip
        raise


CLIP_TIMEOUT_S = 300.0


def _lower_priority(nice: int) -> None:
    os.nice(nice)


@lru_cache(maxsize=1)
def _clip_helper(nice: int) -> ProcessPoolExecutor:
    """One long-lived helper process per Python worker (its detector loaded once), started with ``spawn``: a
    fork of a worker with ONNX Runtime's threads running is not safe."""
    return ProcessPoolExecutor(
        max_workers=1, mp_context=multiprocessing.get_context("spawn"), initializer=_lower_priority, initargs=(nice,)
    )


def render_evidence(settings_json: str, pdfs: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Adds ``evidence_uri`` (null when the frame cannot be re-read; the violation is kept regardless) and
    ``evidence_clip_uri`` (where :func:`render_clips` writes the clip; null: clips off or no frame to cut it
    from), and sets ``message`` to the violation's results-topic message."""
    root = _evidence_root(settings_json)
    privacy = _privacy(settings_json)
    clips_on = settings_from_json(settings_json).evidence.clips
    for pdf in pdfs:
        uris: list[str | None] = []
        clips: list[str | None] = []
        messages: list[str] = []
        for row in pdf.itertuples(index=False):
            p = json.loads(row.payload)
            target = evidence_path(root, row.camera_id, int(p["track_id"]), int(row.frame_index))
            try:
                source, index, pts = _source(row, p)
                image = _pool.get(source).read(index, pts)
                _keep_segment(settings_json, source)
                label = f"#{p['track_id']} {p['class_name']} {p['speed_kmh']:.0f} km/h > {p['limit_kmh']:.0f}"
                target.parent.mkdir(parents=True, exist_ok=True)
                box = (p["x1"], p["y1"], p["x2"], p["y2"])
                snapshot = evidence_image(image, box, label, privacy, payload_boxes(p.get("others")))
                ok = cv2.imwrite(str(target), snapshot, [cv2.IMWRITE_JPEG_QUALITY, 88])
                uris.append(target.resolve().as_uri() if ok else None)
                clip = clip_path(root, row.camera_id, int(p["track_id"]), int(row.frame_index))
                clips.append(clip.resolve().as_uri() if clips_on else None)
            except (SourceError, OSError) as exc:
                log.warning("no evidence for %s track %s: %s", row.camera_id, p["track_id"], exc)
                uris.append(None)
                clips.append(None)
            messages.append(violation_result(row, p, uris[-1], clips[-1]))
        yield pdf.assign(evidence_uri=uris, evidence_clip_uri=clips, message=messages)


def render_clips(settings_json: str, pdfs: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    """Make the clip of every violation :func:`render_evidence` named one for (``evidence_clip_uri``); one row
    per violation: ``camera_id``, ``clip_made``."""
    for pdf in pdfs:
        made = [
            isinstance(row.evidence_clip_uri, str) and _clip(settings_json, row, json.loads(row.payload))
            for row in pdf.itertuples(index=False)
        ]
        yield pd.DataFrame({"camera_id": pdf["camera_id"].astype(str).tolist(), "clip_made": made})
