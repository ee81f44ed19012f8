"""Stage 2 of the vehicle job: stateful per camera (``applyInPandasWithState`` keyed by camera id).

Light work only: DeepSORT association + Kalman update on the embeddings stage 1 computed, road-plane
projection, speed, violations and counts. The camera's whole tracking state (tracker, per-track speed
history, violation rule, counters) is pickled into Spark's state store after every micro-batch, so it
survives batch boundaries, lands in whichever Python worker gets the camera next, and is restored from the
checkpoint after a restart.
"""
from __future__ import annotations

import json
import logging
import math
import pickle
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import pandas as pd

from models.classes import VEHICLE_CLASSES
from models.homography import RoadPlane
from models.roi import bottom_centre
from models.speed import TrackKinematics
from models.tracker import VehicleTracker
from models.violations import ViolationRule
from streaming_jobs.schemas import KIND_DEAD, KIND_FLOW, KIND_FRAME, KIND_TRACK, KIND_VIOLATION, TRACKED
from trafficstream.cameras import Camera
from trafficstream.config import Settings, settings_from_json
from trafficstream.messages import REASON_DUPLICATE_FRAME, RESULT_FRAME, RESULT_VERSION, dead_letter

log = logging.getLogger(__name__)
STATE_VERSION = 1
FLOW_MINUTES_KEPT = 3
COLUMNS = [f.name for f in TRACKED.fields]


@dataclass
class TrackMeta:
    first_frame: int
    first_ts: float
    last_frame: int
    last_ts: float
    class_votes: Counter = field(default_factory=Counter)
    n_frames: int = 0
    counted_minute: float | None = None


@dataclass
class CameraState:
    """Everything one camera's tracking needs between micro-batches (bounded: ended tracks are evicted)."""

    tracker: VehicleTracker
    kinematics: TrackKinematics
    violations: ViolationRule
    tracks: dict[int, TrackMeta] = field(default_factory=dict)
    flow: dict[float, Counter] = field(default_factory=dict)  # minute start (unix s) -> class -> vehicles
    last_frame_index: int = -1

    def to_bytes(self) -> bytes:
        parts = (self.tracker.to_bytes(), self.kinematics.to_bytes(), self.violations.to_bytes(),
                 self.tracks, self.flow, self.last_frame_index)
        return pickle.dumps(parts, protocol=pickle.HIGHEST_PROTOCOL)

    @classmethod
    def from_bytes(cls, blob: bytes, plane: RoadPlane | None) -> "CameraState":
        tracker, kin, vio, tracks, flow, last = pickle.loads(blob)
        return cls(VehicleTracker.from_bytes(tracker), TrackKinematics.from_bytes(kin, plane),
                   ViolationRule.from_bytes(vio), tracks, flow, last)


def new_state(settings: Settings, camera: Camera, fps: float, plane: RoadPlane | None) -> CameraState:
    return CameraState(
        tracker=VehicleTracker.from_settings(settings.tracker, fps),
        kinematics=TrackKinematics.from_settings(settings.tracker, plane=plane),
        violations=ViolationRule.from_camera(camera),
    )


@lru_cache(maxsize=4)
def _settings(settings_json: str) -> Settings:
    return settings_from_json(settings_json)


@lru_cache(maxsize=64)
def _road_plane(settings_json: str, camera_id: str) -> RoadPlane | None:
    cam = _settings(settings_json).camera(camera_id)
    return RoadPlane.from_calibration(cam.calibration) if cam.calibration else None


def _estimate_fps(pts: np.ndarray, camera: Camera) -> float:
    if camera.fps:
        return camera.fps
    d = np.diff(np.sort(pts))
    d = d[d > 0]
    return float(1.0 / np.median(d)) if len(d) else 25.0


def _minute(ts: float) -> float:
    return math.floor(ts / 60.0) * 60.0


def _round(x: float | None, nd: int = 2) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


class CameraProcessor:
    """Runs one camera's micro-batch through the tracking state; collects output rows."""

    def __init__(self, settings_json: str, camera: Camera, state: CameraState) -> None:
        self.settings_json = settings_json
        self.camera = camera
        self.state = state
        self.plane = _road_plane(settings_json, camera.id)
        self.rows: list[dict[str, Any]] = []
        self.touched: set[int] = set()
        self.flow_touched: set[tuple[float, str]] = set()

    def emit(self, kind: str, row: pd.Series | None, payload: dict[str, Any], **extra: Any) -> None:
        out = {
            "kind": kind,
            "camera_id": self.camera.id,
            "frame_index": None if row is None else int(row.frame_index),
            "pts_s": None if row is None else float(row.pts_s),
            "capture_ts": None if row is None else float(row.capture_ts),
            "processed_ts": time.time(),
            "payload": json.dumps(payload, separators=(",", ":")),
            "message": None,
        }
        out.update(extra)
        self.rows.append(out)

    def process_frame(self, row: pd.Series) -> None:
        st = self.state
        t0 = time.perf_counter()
        n = len(row.scores) if row.scores is not None else 0
        xyxy = np.asarray(row.boxes, dtype=np.float32).reshape(n, 4)
        dim = int(row.embedding_dim or 0)
        emb = (
            np.frombuffer(row.embeddings, dtype=np.float16).reshape(n, dim).astype(np.float32)
            if n and dim else np.zeros((0, dim or 1), np.float32)
        )
        tracked = st.tracker.update(
            xyxy, np.asarray(row.scores, np.float32).reshape(n), np.asarray(row.classes, np.int32).reshape(n), emb
        )
        t1 = time.perf_counter()
        ts = float(row.pts_s)
        vehicles: list[dict[str, Any]] = []
        counts: Counter = Counter()
        if tracked:
            feet = bottom_centre(np.asarray([v.xyxy for v in tracked], dtype=np.float64))
            plane = self.plane
            if plane is not None and row.drift is not None and len(row.drift) == 9:
                # The camera moved since calibration: map this frame onto the calibration frame first.
                plane = plane.with_drift(np.asarray(row.drift, dtype=np.float64).reshape(3, 3))
            world = plane.to_world(feet) if plane is not None else None
        for i, v in enumerate(tracked):
            cls = VEHICLE_CLASSES.get(int(v.class_id), str(v.class_id))
            meta = st.tracks.get(v.track_id)
            if meta is None:
                meta = st.tracks[v.track_id] = TrackMeta(int(row.frame_index), float(row.capture_ts), 0, 0.0)
            meta.last_frame, meta.last_ts = int(row.frame_index), float(row.capture_ts)
            meta.n_frames += 1
            meta.class_votes[cls] += 1
            if meta.counted_minute is None:  # a vehicle counts once, in the minute it is first confirmed
                meta.counted_minute = _minute(float(row.capture_ts))
                st.flow.setdefault(meta.counted_minute, Counter())[cls] += 1
                self.flow_touched.add((meta.counted_minute, cls))
            self.touched.add(v.track_id)
            speed = flag = None
            wx = wy = None
            if world is not None:
                wx, wy = float(world[i, 0]), float(world[i, 1])
                est = st.kinematics.update(v.track_id, ts, (wx, wy))
                if est is not None:
                    speed, flag = est.kmh, est.flag
                    violation = st.violations.feed(v.track_id, ts, est)
                    if violation is not None:
                        self._emit_violation(row, v, cls, violation)
            else:
                flag = "uncalibrated"
            over = speed is not None and flag is None and speed > self.camera.speed_limit_kmh
            counts[cls] += 1
            vehicles.append(
                {
                    "track_id": v.track_id, "class_name": cls, "confidence": _round(v.confidence, 3),
                    "x1": float(v.xyxy[0]), "y1": float(v.xyxy[1]), "x2": float(v.xyxy[2]), "y2": float(v.xyxy[3]),
                    "world_x_m": _round(wx, 3), "world_y_m": _round(wy, 3), "speed_kmh": _round(speed, 2),
                    "speed_flag": flag, "over_limit": "true" if over else "false",
                }
            )
        self._end_tracks()
        t2 = time.perf_counter()
        st.last_frame_index = int(row.frame_index)
        minute = _minute(float(row.capture_ts))
        flow_now = {"minute": minute, **dict(st.flow.get(minute, {}))}
        timings = {
            "decode": _round(row.decode_ms, 1), "detect": _round(row.detect_ms, 1), "embed": _round(row.embed_ms, 1),
            "track": _round((t1 - t0) * 1e3, 2), "speed": _round((t2 - t1) * 1e3, 2),
        }
        payload = {
            "ingest_ts": float(row.ingest_ts), "kafka_partition": int(row.kafka_partition),
            "kafka_offset": int(row.kafka_offset), "raw_detections": int(row.raw_detections or 0),
            "vehicles": vehicles, "counts": json.dumps(dict(counts)), "flow": json.dumps(flow_now),
            "decode_ms": timings["decode"], "detect_ms": timings["detect"], "embed_ms": timings["embed"],
            "track_ms": timings["track"], "speed_ms": timings["speed"],
        }
        message = {
            "v": RESULT_VERSION, "type": RESULT_FRAME, "camera_id": self.camera.id,
            "frame_index": int(row.frame_index), "pts_s": _round(ts, 4), "capture_ts": _round(row.capture_ts, 3),
            "processed_ts": _round(time.time(), 3),
            "vehicles": [
                {"id": x["track_id"], "cls": x["class_name"], "conf": _round(x["confidence"], 2),
                 "box": [round(x["x1"]), round(x["y1"]), round(x["x2"]), round(x["y2"])],
                 "kmh": _round(x["speed_kmh"], 1), "over": x["over_limit"] == "true"}
                for x in vehicles
            ],
            "counts": {"in_roi": len(vehicles), **dict(counts)},
            "flow": flow_now,
            "ms": timings,
        }
        self.emit(KIND_FRAME, row, payload, message=json.dumps(message, separators=(",", ":")))

    def _emit_violation(self, row: pd.Series, v: Any, cls: str, violation: Any) -> None:
        self.emit(
            KIND_VIOLATION, row,
            {
                "track_id": v.track_id, "class_name": cls, "speed_kmh": _round(violation.speed_kmh, 2),
                "limit_kmh": float(violation.limit_kmh), "over_s": _round(violation.over_s, 3),
                "source_uri": row.source_uri,
                "x1": float(v.xyxy[0]), "y1": float(v.xyxy[1]), "x2": float(v.xyxy[2]), "y2": float(v.xyxy[3]),
            },
        )

    def _summary(self, track_id: int, ended: bool) -> dict[str, Any]:
        meta = self.state.tracks[track_id]
        s = self.state.kinematics.summary(track_id)
        return {
            "track_id": track_id,
            "class_name": meta.class_votes.most_common(1)[0][0] if meta.class_votes else None,
            "first_frame": meta.first_frame, "last_frame": meta.last_frame,
            "first_seen_ts": meta.first_ts, "last_seen_ts": meta.last_ts, "n_frames": meta.n_frames,
            "median_speed_kmh": _round(getattr(s, "median_kmh", None)),
            "max_speed_kmh": _round(getattr(s, "max_kmh", None)),
            "distance_m": _round(getattr(s, "distance_m", None)),
            "direction_deg": _round(getattr(s, "direction_deg", None)),
            "ended": "true" if ended else "false",
        }

    def _end_tracks(self) -> None:
        st = self.state
        for track_id in st.tracker.ended_track_ids():
            if track_id in st.tracks:
                self.emit(KIND_TRACK, None, self._summary(track_id, ended=True))
                del st.tracks[track_id]
            self.touched.discard(track_id)
            st.kinematics.evict(track_id)
            st.violations.evict(track_id)

    def finish_batch(self) -> None:
        st = self.state
        for track_id in sorted(self.touched):
            if track_id in st.tracks:
                self.emit(KIND_TRACK, None, self._summary(track_id, ended=False))
        for minute, cls in sorted(self.flow_touched):
            self.emit(KIND_FLOW, None, {"minute_ts": minute, "class_name": cls, "vehicles": st.flow[minute][cls]})
        for minute in sorted(st.flow)[:-FLOW_MINUTES_KEPT]:  # bounded: older minutes are final in Delta
            del st.flow[minute]


def _dead_row(camera_id: str, row: pd.Series, reason: str | None = None, detail: str | None = None) -> dict[str, Any]:
    payload = {
        "reason": reason or row.reason, "detail": detail or row.detail, "payload": row.payload,
        "kafka_topic": row.kafka_topic, "kafka_partition": int(row.kafka_partition),
        "kafka_offset": int(row.kafka_offset),
    }
    fi = None if row.frame_index is None or pd.isna(row.frame_index) else int(row.frame_index)
    now = time.time()
    message = dead_letter(
        payload["reason"], payload["detail"] or "", row.payload, camera_id=camera_id or None, frame_index=fi,
        topic=row.kafka_topic, partition=payload["kafka_partition"], offset=payload["kafka_offset"], ts=now,
    ).decode("utf-8")
    return {
        "kind": KIND_DEAD, "camera_id": camera_id or None, "frame_index": fi,
        "pts_s": None if pd.isna(row.pts_s) else float(row.pts_s),
        "capture_ts": None if pd.isna(row.capture_ts) else float(row.capture_ts),
        "processed_ts": now, "payload": json.dumps(payload, separators=(",", ":")), "message": message,
    }


def _annotate_state_size(rows: list[dict[str, Any]], size: int) -> None:
    """Record the camera's state-store bytes on its last frame of the batch (observability)."""
    for row in reversed(rows):
        if row["kind"] == KIND_FRAME:
            payload = json.loads(row["payload"])
            payload["state_bytes"] = size
            row["payload"] = json.dumps(payload, separators=(",", ":"))
            return


def track_camera(settings_json: str, key: tuple, pdfs: Iterator[pd.DataFrame], state) -> Iterator[pd.DataFrame]:
    """``applyInPandasWithState`` body for one camera's rows of one micro-batch."""
    camera_id = key[0]
    frames = pd.concat(list(pdfs), ignore_index=True)
    settings = _settings(settings_json)
    dead = frames[frames.status != "ok"]
    ok = frames[frames.status == "ok"].sort_values("frame_index", kind="stable")
    out: list[dict[str, Any]] = [_dead_row(camera_id, r) for r in dead.itertuples(index=False)]
    if len(ok):
        camera = settings.camera(camera_id)  # stage 1 dead-letters unknown cameras, so it exists
        plane = _road_plane(settings_json, camera_id)
        if state.exists:
            version, blob = state.get
            cam_state = CameraState.from_bytes(blob, plane) if version == STATE_VERSION else None
            if cam_state is None:
                log.warning("camera %s: dropping tracking state of unknown version %s", camera_id, version)
        else:
            cam_state = None
        if cam_state is None:
            cam_state = new_state(settings, camera, _estimate_fps(ok.pts_s.to_numpy(), camera), plane)
        proc = CameraProcessor(settings_json, camera, cam_state)
        for r in ok.itertuples(index=False):
            if r.frame_index <= cam_state.last_frame_index:
                out.append(_dead_row(camera_id, r, REASON_DUPLICATE_FRAME,
                                     f"frame {r.frame_index} <= last processed {cam_state.last_frame_index}"))
                continue
            proc.process_frame(r)
        proc.finish_batch()
        blob = cam_state.to_bytes()
        state.update((STATE_VERSION, blob))
        _annotate_state_size(proc.rows, len(blob))
        out.extend(proc.rows)
    yield pd.DataFrame(out, columns=COLUMNS)
