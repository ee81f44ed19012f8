"""Stage 2 of the vehicle job: stateful per camera (``applyInPandasWithState`` keyed by camera id).

Light work only: DeepSORT association + Kalman update on the embeddings stage 1 computed, road-plane
projection, speed, violations and counts. The camera's whole tracking state (tracker, per-track speed
history, violation rule, track metadata, flow counts) is written to Spark's state store after every
micro-batch as ``CAMERA_STATE`` = (``STATE_VERSION``, a ``camera`` blob of ``models/state_codec.py``: an
explicit, versioned format, never pickle), so it survives batch boundaries, lands in whichever Python worker
gets the camera next, and is restored from the checkpoint after a restart. A restored camera keeps the
dynamic contents (tracks, histories, open overspeed spans, counts) but runs with the parameters of the
*current* configuration: speed limit, minimum violation time, speed window, plausibility limit and tracker
thresholds (``max_age_s`` at the camera's fps, ``n_init``, distances, ``nn_budget``).

Never down, never wrong:

* A stored state this build cannot use (corrupt, or another format version) is reset: logged, counted (the
  blob's ``resets``) and reported as a ``KIND_HEALTH`` row (``event`` ``state_reset``, payload
  ``HEALTH_PAYLOAD``; no frame is involved, so it is not a dead letter). Track ids stay monotonic: the fresh
  tracker starts at the high-water mark kept in the blob's fixed envelope, readable whatever the body's state;
  if even that is unreadable, at the clock floor (microseconds since the epoch, ~1.7e15): above any counter
  that started at 1, and above an earlier clock floor unless the camera created over a million tracks a
  second since (or the executor clock went back by more than the time between the two resets).
* A frame whose processing raises is dead-lettered (``processing_error``) and the batch goes on; outputs it
  already produced stay (the state has recorded them). ``MAX_ERROR_STREAK`` failures in a row reset the state
  (a state that fails every frame would otherwise stop the camera for good). An ``ok`` row with absurd
  values (non-finite or negative time, negative index, detection arrays of mismatched sizes) is
  dead-lettered without touching the state; so is a frame not after the last processed one (index or pts:
  ``duplicate_frame``), and every frame of a camera missing from the configuration (``unknown_camera``; its
  stored state is kept for when it comes back).
"""

from __future__ import annotations

import json
import logging
import math
import time
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, Protocol

import numpy as np
import pandas as pd

from trafficstream.cameras import Camera
from trafficstream.config import Settings, settings_from_json
from trafficstream.errors import ConfigError
from trafficstream.messages import (
    REASON_DUPLICATE_FRAME,
    REASON_PROCESSING_ERROR,
    REASON_UNKNOWN_CAMERA,
    dead_letter,
)
from trafficstream.models import state_codec
from trafficstream.models.classes import VEHICLE_CLASSES
from trafficstream.models.events import Event, EventDetector, event_id
from trafficstream.models.homography import RoadPlane
from trafficstream.models.lines import Crossing, LaneArea, LineCounter, TrackPoint, lanes_at, lanes_from_camera
from trafficstream.models.passage import Passage, passage_speed, position_sigma_m
from trafficstream.models.roi import at_picture_edge, bottom_centre
from trafficstream.models.speed import FLAG_AT_PICTURE_EDGE, TrackKinematics
from trafficstream.models.tracker import VehicleTracker
from trafficstream.models.violations import ViolationRule
from trafficstream.results import STAGES, crossing_message, encode, event_message, frame_message, frame_vehicle
from trafficstream.streaming_jobs.results_producer import publish_from_task
from trafficstream.streaming_jobs.schemas import (
    KIND_CROSSING,
    KIND_DEAD,
    KIND_EVENT,
    KIND_FLOW,
    KIND_FRAME,
    KIND_HEALTH,
    KIND_TRACK,
    KIND_VIOLATION,
    TRACKED,
)
from trafficstream.streaming_jobs.shedding import DETECTED, PREDICTED, SKIPPED

log = logging.getLogger(__name__)
STATE_VERSION = state_codec.FORMAT_VERSION  # CAMERA_STATE.version this build writes and reads
STATE_KIND = "camera"
FLOW_MINUTES_KEPT = 3
LINE_COUNT_DAYS_KEPT = 2  # per-day line counts of the results messages: today and yesterday (late frames)
EVENT_SPEEDING = "speeding"  # the speeding violation, in the events table's shape
MAX_ADVANCE_FRAMES = 1000  # a longer gap ends every track anyway (max_age): no need to predict through it
# A track unseen longer than this (beyond its detection stride) may come back on another vehicle (DeepSORT's
# appearance match across the gap): no passage speed spans such a gap.
PASSAGE_MAX_GAP_S = 0.4
MAX_ERROR_STREAK = 10  # consecutive frames failing processing before the camera's state is reset
DEFAULT_FPS = 25.0
CLOCK_IDS_PER_SECOND = 1_000_000  # clock floor of track ids when no high-water mark survived
COLUMNS = [f.name for f in TRACKED.fields]

# KIND_HEALTH events and the causes of a state reset (stable: dashboards and alerts filter on them).
EVENT_STATE_RESET = "state_reset"
RESET_CORRUPT = "corrupt"  # the stored blob does not decode (CRC, truncation, malformed document)
RESET_UNKNOWN_VERSION = "unknown_version"  # CAMERA_STATE.version is not STATE_VERSION (e.g. v1 pickles)
RESET_UNENCODABLE = "unencodable"  # the in-memory state could not be serialised
RESET_REPEATED_ERRORS = "repeated_errors"  # MAX_ERROR_STREAK frames in a row failed processing

# Plausibility bounds of an ok row: beyond them a value is garbage, and would poison the state for good.
_MAX_FRAME_INDEX = 2**53  # exact in float64 (pandas turns a nullable int column into floats)
_MAX_PTS_S = 1e10  # ~300 years of stream
_MAX_TS = 1e11  # unix seconds, year 5138
_INT64 = 2**63


class GroupState(Protocol):
    """What ``track_camera`` uses of pyspark's ``GroupState``."""

    @property
    def exists(self) -> bool: ...

    @property
    def get(self) -> tuple: ...

    def update(self, newValue: tuple) -> None: ...  # pyspark's parameter name


class MemoryGroupState:
    """A :class:`GroupState` held in memory: stage 2 in one process, without Spark (the bench's single-process
    baselines, tests). ``updates`` counts the writes."""

    def __init__(self, value: tuple | None = None) -> None:
        self._value = value
        self.updates = 0

    @property
    def exists(self) -> bool:
        return self._value is not None

    @property
    def get(self) -> tuple:
        if self._value is None:
            raise ValueError("State is either not defined or has already been removed")
        return self._value

    def update(self, newValue: tuple) -> None:  # pyspark's parameter name
        self._value = tuple(newValue)
        self.updates += 1

    def remove(self) -> None:
        self._value = None

    @property
    def hasTimedOut(self) -> bool:  # pyspark's name
        return False


@dataclass
class TrackMeta:
    first_frame: int
    first_ts: float
    last_frame: int
    last_ts: float
    class_votes: Counter = field(default_factory=Counter)
    n_frames: int = 0
    counted_minute: float | None = None
    speed_kmh: float | None = None  # the latest estimate and its flag: what predicted frames show
    speed_flag: str | None = None
    crossed: dict[str, list[float]] = field(default_factory=dict)  # section line id -> [t, x, y] of its crossing
    passage: list[Any] | None = None  # [section id, km/h, uncertainty km/h] once a section is completed
    # pts of the first observation after the track went unseen for longer than PASSAGE_MAX_GAP_S: who the track
    # followed across such a gap is the tracker's guess, so no passage may span it
    gap_t: float | None = None

    def to_list(self, track_id: int) -> list[Any]:
        return [
            track_id,
            self.first_frame,
            self.first_ts,
            self.last_frame,
            self.last_ts,
            self.n_frames,
            self.counted_minute,
            [[c, n] for c, n in self.class_votes.items()],  # order breaks vote ties
            self.speed_kmh,
            self.speed_flag,
            [[k, *v] for k, v in self.crossed.items()],
            self.passage,
            self.gap_t,
        ]

    @classmethod
    def from_list(cls, v: list[Any]) -> tuple[int, TrackMeta]:
        tid, first_frame, first_ts, last_frame, last_ts, n_frames, counted, votes = v[:8]
        speed, flag = (v[8], v[9]) if len(v) >= 10 else (None, None)  # states written before strides: 8 items
        crossed, passage = (v[10], v[11]) if len(v) >= 12 else ([], None)  # before passage speeds: 10 items
        gap_t = v[12] if len(v) >= 13 else None  # before the gap guard: 12 items
        return int(tid), cls(
            int(first_frame),
            float(first_ts),
            int(last_frame),
            float(last_ts),
            Counter({str(c): int(n) for c, n in votes}),
            int(n_frames),
            None if counted is None else float(counted),
            None if speed is None else float(speed),
            None if flag is None else str(flag),
            {str(c[0]): [float(x) for x in c[1:4]] for c in crossed},
            None if passage is None else [str(passage[0]), float(passage[1]), float(passage[2])],
            None if gap_t is None else float(gap_t),
        )


@dataclass(frozen=True)
class PassageViolation:
    """A violation raised on a passage speed, in the shape ``_emit_violation`` reads (as ``ViolationRule``'s)."""

    speed_kmh: float
    limit_kmh: float
    over_s: float  # the time over the section
    passage: Passage


@dataclass
class CameraState:
    """Everything one camera's tracking needs between micro-batches (bounded: ended tracks are evicted)."""

    tracker: VehicleTracker
    kinematics: TrackKinematics
    violations: ViolationRule
    fps: float  # what the tracker's max age in frames was derived with (camera.fps, else estimated once)
    tracks: dict[int, TrackMeta] = field(default_factory=dict)
    flow: dict[float, Counter] = field(default_factory=dict)  # minute start (unix s) -> class -> vehicles
    last_frame_index: int = -1
    last_pts_s: float | None = None
    error_streak: int = 0  # frames in a row whose processing raised
    resets: int = 0  # times this camera's state was thrown away (kept in the blob's envelope)
    stride: int = 1  # detection stride of the last detected frame (the tracker's max age is in detections)
    last_detected_index: int = -1  # frame index of the last detected frame
    lines: LineCounter | None = None  # the camera's counting lines (None: it has none)
    events: EventDetector | None = None  # wrong-way / stopped / queue events (None: no lanes and no zones)
    line_counts: dict[str, Counter] = field(default_factory=dict)  # UTC day -> "line|direction" -> crossings

    @property
    def next_track_id(self) -> int:
        return self.tracker.next_track_id

    def to_doc(self) -> dict[str, Any]:
        """The ``camera`` document of ``models/state_codec.py``."""
        return {
            "fps": self.fps,
            "last_frame_index": self.last_frame_index,
            "last_pts_s": self.last_pts_s,
            "error_streak": self.error_streak,
            "stride": self.stride,
            "last_detected_index": self.last_detected_index,
            "tracks": [meta.to_list(tid) for tid, meta in self.tracks.items()],
            "flow": [[minute, [[c, n] for c, n in counts.items()]] for minute, counts in self.flow.items()],
            "tracker": self.tracker.to_state(),
            "kinematics": self.kinematics.to_dict(),
            "violations": self.violations.to_dict(),
            "lines": None if self.lines is None else self.lines.to_doc(),
            "events": None if self.events is None else self.events.to_doc(),
            "line_counts": [[day, [[k, n] for k, n in c.items()]] for day, c in self.line_counts.items()],
        }

    def to_bytes(self) -> bytes:
        # next_id in the envelope: the high-water mark that survives a body this or a later build can't read
        return state_codec.encode(STATE_KIND, self.to_doc(), next_id=self.next_track_id, resets=self.resets)

    @classmethod
    def from_bytes(cls, blob: bytes, settings: Settings, camera: Camera, plane: RoadPlane | None) -> CameraState:
        """Restore the dynamic contents of ``blob`` under the current ``settings`` / ``camera`` parameters.

        Raises:
            ValueError / KeyError / TypeError: the blob is unreadable (``state_codec.StateFormatError``) or
                its document malformed; the caller resets the camera.
        """
        env, doc = state_codec.decode(blob, STATE_KIND)
        fps = camera.fps or _checked_fps(doc["fps"])
        stride = int(doc.get("stride", 1))  # absent in states written before detection strides
        if not 1 <= stride <= 1000:
            raise ValueError(f"implausible stride {stride}")
        tracker = VehicleTracker.from_state(
            doc["tracker"], params=VehicleTracker.params_from_settings(settings.tracker, fps)
        )
        tracker.set_stride(stride)
        kinematics = TrackKinematics.from_settings(settings.tracker, plane=plane).restore_tracks(doc["kinematics"])
        violations = ViolationRule.from_camera(camera).restore_tracks(doc["violations"])
        for name, now in (("kinematics", kinematics.params()), ("violations", violations.params())):
            old = doc[name]["params"]
            changed = {k: (old.get(k), v) for k, v in now.items() if old.get(k) != v}
            if changed:
                log.info("camera %s: %s restored with changed parameters (old, new): %s", camera.id, name, changed)
        tracks = dict(TrackMeta.from_list(v) for v in doc["tracks"])
        flow = {float(minute): Counter({str(c): int(n) for c, n in counts}) for minute, counts in doc["flow"]}
        last_pts = doc["last_pts_s"]
        lines, events = _lines_and_events(camera, plane)
        # Counting and event state written by this build; absent in states written before issue 12. The
        # geometry is the current configuration's (a redrawn line loses its per-track state).
        for name, part in (("lines", lines), ("events", events)):
            if part is not None and doc.get(name):
                try:
                    part.restore_tracks(doc[name])
                except (ValueError, KeyError, TypeError, IndexError) as exc:
                    log.warning("camera %s: %s state not restored (%r): starting it afresh", camera.id, name, exc)
        line_counts = {str(day): Counter({str(k): int(n) for k, n in c}) for day, c in doc.get("line_counts") or []}
        return cls(
            tracker,
            kinematics,
            violations,
            fps,
            tracks,
            flow,
            int(doc["last_frame_index"]),
            None if last_pts is None else float(last_pts),
            int(doc["error_streak"]),
            env.resets,
            stride,
            int(doc.get("last_detected_index", -1)),
            lines,
            events,
            line_counts,
        )


def new_state(
    settings: Settings,
    camera: Camera,
    fps: float,
    plane: RoadPlane | None,
    *,
    first_track_id: int = 1,
    resets: int = 0,
) -> CameraState:
    stride = camera.detect_every
    tracker = VehicleTracker.from_settings(settings.tracker, fps, first_track_id=first_track_id)
    tracker.set_stride(stride)
    lines, events = _lines_and_events(camera, plane)
    return CameraState(
        lines=lines,
        events=events,
        tracker=tracker,
        kinematics=TrackKinematics.from_settings(settings.tracker, plane=plane),
        violations=ViolationRule.from_camera(camera),
        fps=fps,
        resets=resets,
        stride=stride,
    )


def _lines_and_events(camera: Camera, plane: RoadPlane | None) -> tuple[LineCounter | None, EventDetector | None]:
    """The camera's line counter and event detector, from its configuration (None where it has nothing)."""
    lines = LineCounter.from_camera(camera) if camera.lines else None
    to_world = None if plane is None else plane.to_world
    events = EventDetector.from_camera(camera, to_world) if camera.lanes or camera.zones else None
    return lines, events


def clock_floor(now: float | None = None) -> int:
    """First track id after a reset that lost every high-water mark: microseconds since the epoch."""
    return int((time.time() if now is None else now) * CLOCK_IDS_PER_SECOND)


def _reset_event(cause: str, detail: str, st: CameraState, id_floor_from: str, version: Any = None) -> dict[str, Any]:
    """``HEALTH_PAYLOAD`` of a state reset."""
    return {
        "event": EVENT_STATE_RESET,
        "cause": cause,
        "detail": detail[:2000],
        "state_version": v if (v := _opt_int(version)) is not None and abs(v) < 2**31 else None,  # IntegerType
        "next_track_id": st.next_track_id,
        "id_floor_from": id_floor_from,
        "resets": st.resets,
    }


def restore_state(
    stored: tuple | None,
    settings: Settings,
    camera: Camera,
    plane: RoadPlane | None,
    fps_hint: float,
    now: float | None = None,
) -> tuple[CameraState, dict[str, Any] | None]:
    """The camera's state from its ``CAMERA_STATE`` value (``None``: a new camera), and the reset event when the
    stored state was unusable and a fresh one, with ids above every id already issued, replaces it."""
    if stored is None:
        return new_state(settings, camera, fps_hint, plane), None
    version, blob = stored[0], stored[1]
    if version == STATE_VERSION:
        try:
            return CameraState.from_bytes(blob, settings, camera, plane), None
        except Exception as exc:  # broad on purpose: anything unreadable is a reset, never a failed task
            cause, detail = RESET_CORRUPT, f"{type(exc).__name__}: {exc}"
    else:
        cause, detail = RESET_UNKNOWN_VERSION, f"state version {version!r}; this build reads {STATE_VERSION}"
    env = state_codec.read_envelope(blob)
    if env is not None and env.kind == STATE_KIND and env.next_id >= 1:
        first, source, resets = env.next_id, "envelope", env.resets + 1
    else:
        first, source, resets = clock_floor(now), "clock", 1
    fresh = new_state(settings, camera, fps_hint, plane, first_track_id=first, resets=resets)
    log.warning(
        "camera %s: tracking state reset (%s: %s); track ids go on at %d (from the %s), reset #%d",
        camera.id,
        cause,
        detail,
        first,
        source,
        resets,
    )
    return fresh, _reset_event(cause, detail, fresh, source, version)


def reset_in_memory(
    st: CameraState, settings: Settings, camera: Camera, plane: RoadPlane | None, cause: str, detail: str
) -> tuple[CameraState, dict[str, Any]]:
    """A fresh state replacing a live one that went bad: ids go on from its counter; dedup marks and the flow
    counts carry over (the counts are upserted per minute, so restarting them would lower published values;
    vehicles in view get new ids and may be counted twice)."""
    try:
        first, source = max(1, st.next_track_id), "memory"
    except Exception:  # broad on purpose: the tracker is what broke
        first, source = clock_floor(), "clock"
    fresh = new_state(settings, camera, st.fps, plane, first_track_id=first, resets=st.resets + 1)
    fresh.flow, fresh.last_frame_index, fresh.last_pts_s = st.flow, st.last_frame_index, st.last_pts_s
    fresh.line_counts = st.line_counts  # the day's counts go on (a vehicle in view may count again, new id)
    log.warning(
        "camera %s: tracking state reset (%s: %s); track ids go on at %d, reset #%d",
        camera.id,
        cause,
        detail,
        first,
        fresh.resets,
    )
    return fresh, _reset_event(cause, detail, fresh, source)


@lru_cache(maxsize=16)  # once per job settings, not per frame
def _low_below(settings_json: str) -> float | None:
    """The score below which stage 1's detections are low ones (tracker.low_confidence on): the detector's own
    threshold."""
    settings = _settings(settings_json)
    low = settings.tracker.low_confidence
    return settings.detector.confidence if low is not None and low < settings.detector.confidence else None


@lru_cache(maxsize=4)  # parsed once per worker, not once per batch and passage (~10 ms each); read-only
def _settings(settings_json: str) -> Settings:
    return settings_from_json(settings_json)


@lru_cache(maxsize=64)
def _lanes(settings_json: str, camera_id: str) -> tuple[LaneArea, ...]:
    cam = _settings(settings_json).camera(camera_id)
    plane = _road_plane(settings_json, camera_id)
    return tuple(lanes_from_camera(cam, None if plane is None else plane.to_world))


@lru_cache(maxsize=64)
def _road_plane(settings_json: str, camera_id: str) -> RoadPlane | None:
    cam = _settings(settings_json).camera(camera_id)
    return RoadPlane.from_calibration(cam.calibration) if cam.calibration else None


def _checked_fps(fps: Any) -> float:
    fps = float(fps)
    if not 0 < fps <= 1000:
        raise ValueError(f"implausible fps {fps!r}")
    return fps


def _estimate_fps(pts: np.ndarray, camera: Camera) -> float:
    if camera.fps:
        return camera.fps
    p = np.sort(pts[np.isfinite(pts)])
    d = np.diff(p)
    d = d[d > 0]
    fps = float(1.0 / np.median(d)) if len(d) else DEFAULT_FPS
    return min(max(fps, 1.0), 240.0)  # a burst of near-equal timestamps must not make a 1e6 fps tracker


def _minute(ts: float) -> float:
    return math.floor(ts / 60.0) * 60.0


def _round(x: float | None, nd: int = 2) -> float | None:
    return None if x is None or not math.isfinite(x) else round(float(x), nd)


class CameraProcessor:
    """Runs one camera's micro-batch through the tracking state; collects output rows."""

    def __init__(
        self, settings_json: str, camera: Camera, state: CameraState, rows: list[dict[str, Any]] | None = None
    ) -> None:
        self.settings_json = settings_json
        self.camera = camera
        self.state = state
        self.plane = _road_plane(settings_json, camera.id)
        self.rows: list[dict[str, Any]] = [] if rows is None else rows
        self.lanes = _lanes(settings_json, camera.id) if camera.lanes else ()
        self.last_row: Any = None  # the last frame processed (closing reports of events need a frame)
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

    def process_frame(self, row: Any) -> None:
        """One frame, as stage 1 analysed it: detected, predicted between detections, or skipped."""
        analysis = getattr(row, "analysis", None) or DETECTED
        if analysis == SKIPPED:
            self._frame_out(row, [], Counter(), {}, SKIPPED)
        elif analysis == PREDICTED and self.state.last_detected_index >= 0:
            self._predicted_frame(row)
        else:  # a predicted frame before any detection has nothing to predict from: detect (no boxes) instead
            self._detected_frame(row)
        st = self.state
        st.last_frame_index, st.last_pts_s = int(row.frame_index), float(row.pts_s)
        self.last_row = row

    def _stride(self, row: Any) -> int:
        stride = _opt_int(getattr(row, "stride", None))
        return stride if stride is not None and 1 <= stride <= 1000 else 1

    def _detected_frame(self, row: Any) -> None:
        st = self.state
        t0 = time.perf_counter()
        stride = self._stride(row)
        if stride != st.stride:
            st.stride = stride
            st.tracker.set_stride(stride)
        fi = int(row.frame_index)
        if st.last_detected_index >= 0:  # the frames since the last detection: tracks move on by them
            st.tracker.advance(min(fi - st.last_detected_index - 1, MAX_ADVANCE_FRAMES))
        n = _size(row.scores)  # null detection columns (a frame stage 1 did not decode): no detections
        xyxy = np.asarray(row.boxes if n else [], dtype=np.float32).reshape(n, 4)
        dim = _opt_int(row.embedding_dim) or 0
        emb = (
            np.frombuffer(row.embeddings, dtype=np.float16).reshape(n, dim).astype(np.float32)
            if n and dim
            else np.zeros((0, dim or 1), np.float32)
        )
        scores = np.asarray(row.scores if n else [], np.float32).reshape(n)
        classes = np.asarray(row.classes if n else [], np.int32).reshape(n)
        tracked = st.tracker.update(xyxy, scores, classes, emb, low_below=_low_below(self.settings_json))
        st.last_detected_index = fi
        t1 = time.perf_counter()
        ts = float(row.pts_s)
        vehicles: list[dict[str, Any]] = []
        points: list[TrackPoint] = []
        counts: Counter = Counter()
        world = None
        if tracked:
            feet = bottom_centre(np.asarray([v.xyxy for v in tracked], dtype=np.float64))
            plane = self.plane
            if plane is not None and row.drift is not None and len(row.drift) == 9:
                # The camera moved since calibration: map this frame onto the calibration frame first.
                plane = plane.with_drift(np.asarray(row.drift, dtype=np.float64).reshape(3, 3))
            world = plane.to_world(feet) if plane is not None else None
            cut_off = at_picture_edge(np.asarray([v.xyxy for v in tracked]), _opt_int(row.width), _opt_int(row.height))
        for i, v in enumerate(tracked):
            cls = VEHICLE_CLASSES.get(int(v.class_id), str(v.class_id))
            meta = st.tracks.get(v.track_id)
            if meta is None:
                meta = st.tracks[v.track_id] = TrackMeta(int(row.frame_index), float(row.capture_ts), 0, 0.0)
            # on the camera's own frame timeline: capture times can be wall-clock stamps of a replay or a backlog
            if meta.n_frames and fi - meta.last_frame > PASSAGE_MAX_GAP_S * st.fps + stride:
                meta.gap_t = ts
            meta.last_frame, meta.last_ts = int(row.frame_index), float(row.capture_ts)
            meta.n_frames += 1
            meta.class_votes[cls] += 1
            if meta.counted_minute is None:  # a vehicle counts once, in the minute it is first confirmed
                meta.counted_minute = _minute(float(row.capture_ts))
                st.flow.setdefault(meta.counted_minute, Counter())[cls] += 1
                self.flow_touched.add((meta.counted_minute, cls))
            self.touched.add(v.track_id)
            speed = flag = heading = None
            wx = wy = None
            if world is not None and cut_off[i]:
                wx, wy = float(world[i, 0]), float(world[i, 1])
                flag = FLAG_AT_PICTURE_EDGE  # its bottom is the picture's: kept out of the speed window
            elif world is not None:
                wx, wy = float(world[i, 0]), float(world[i, 1])
                # speeds from detected positions only, at their true timestamps (never from predictions)
                est = st.kinematics.update(v.track_id, ts, (wx, wy))
                if est is not None:
                    speed, flag = est.kmh, est.flag
                    heading = est.heading_deg if flag is None else None
                    # with sections, violations come from passage speeds (enforcement grade) only
                    violation = None if self.camera.sections else st.violations.feed(v.track_id, ts, est)
                    if violation is not None:
                        self._emit_violation(row, v, cls, violation, xyxy)
            else:
                flag = "uncalibrated"
            meta.speed_kmh, meta.speed_flag = speed, flag
            counts[cls] += 1
            vehicles.append(self._vehicle(v, cls, speed, flag, wx, wy))
            if st.lines is not None or st.events is not None:
                road = (wx, wy) if wx is not None and wy is not None and math.isfinite(wx + wy) else None
                point = TrackPoint(
                    v.track_id,
                    (float(feet[i, 0]), float(feet[i, 1])),
                    road,
                    meta.class_votes.most_common(1)[0][0],
                    speed_kmh=speed if flag is None else None,
                    heading_deg=heading,
                )
                points.append(point)
        if self.lanes and points:  # one polygon test per lane for the whole frame
            points = [replace(p, lane_id=lane) for p, lane in zip(points, lanes_at(self.lanes, points), strict=True)]
        self._count_and_detect(row, ts, points, {v.track_id: v for v in tracked}, xyxy)
        self._end_tracks(row)
        t2 = time.perf_counter()
        timings = {
            "decode": _round(row.decode_ms, 1),
            "detect": _round(row.detect_ms, 1),
            "embed": _round(row.embed_ms, 1),
            "track": _round((t1 - t0) * 1e3, 2),
            "speed": _round((t2 - t1) * 1e3, 2),
        }
        self._frame_out(row, vehicles, counts, timings, DETECTED)

    def _count_and_detect(
        self, row: Any, t: float, points: list[TrackPoint], tracked: dict[int, Any], boxes: np.ndarray
    ) -> None:
        """Counting lines, passage speeds and traffic events on a detected frame (positions measured, not
        predicted). Times are on the camera's pts timeline (crossings interpolated between frames); rows carry
        wall time. ``tracked``: the frame's tracks by id; ``boxes``: all its detections (evidence privacy)."""
        st = self.state
        if st.lines is not None:
            for crossing in st.lines.update(t, points):
                self._emit_crossing(row, crossing)
                if self.camera.sections and crossing.space == "road":
                    self._passage(row, crossing, tracked.get(int(crossing.track_id)), boxes)
        if st.events is not None:
            for event in st.events.update(t, points):
                self._emit_event(row, event)

    def _passage(self, row: Any, c: Crossing, v: Any, boxes: np.ndarray) -> None:
        """Record a section line's crossing; when it completes a section, the track's passage speed, and a
        violation when that speed less its uncertainty exceeds the limit by more than the tolerance."""
        meta = self.state.tracks.get(int(c.track_id))
        if meta is None or self.plane is None:
            return
        meta.crossed[c.line_id] = [c.t, c.x, c.y]
        if meta.passage is not None:
            return  # one passage per vehicle: the first section it completes
        for section in self.camera.sections:
            if c.line_id not in section.lines:
                continue
            other = section.lines[1] if section.lines[0] == c.line_id else section.lines[0]
            if other not in meta.crossed:
                continue
            a, b = meta.crossed[other], meta.crossed[c.line_id]
            if meta.gap_t is not None and meta.gap_t > min(a[0], b[0]):
                continue  # the track was lost between its crossings: the two may be different vehicles
            p = passage_speed(
                section.id,
                (a[0], a[1], a[2]),
                (b[0], b[1], b[2]),
                position_sigma_m(self.plane, a[1:3]),
                position_sigma_m(self.plane, b[1:3]),
                max_kmh=_settings(self.settings_json).tracker.max_plausible_kmh,
            )
            if p is None:
                continue
            meta.passage = [p.section_id, round(p.kmh, 3), round(p.uncertainty_kmh, 3)]
            self.touched.add(int(c.track_id))
            if v is not None and p.exceeds(self.camera.speed_limit_kmh, self.camera.speed_tolerance_kmh):
                cls = meta.class_votes.most_common(1)[0][0] if meta.class_votes else str(v.class_id)
                violation = PassageViolation(p.kmh, float(self.camera.speed_limit_kmh), p.duration_s, p)
                self._emit_violation(row, v, cls, violation, boxes)
            return

    def _wall(self, row: Any, t: float | None) -> float | None:
        """A time of the pts timeline as capture wall-clock time (the frame's own offset between the two)."""
        return None if t is None else float(row.capture_ts) + (float(t) - float(row.pts_s))

    def _emit_crossing(self, row: Any, c: Crossing) -> None:
        ts = self._wall(row, c.t)
        assert ts is not None
        day = time.strftime("%Y-%m-%d", time.gmtime(ts))
        counts = self.state.line_counts.setdefault(day, Counter())
        counts[f"{c.line_id}|{c.direction}"] += 1
        for old in sorted(self.state.line_counts)[:-LINE_COUNT_DAYS_KEPT]:
            del self.state.line_counts[old]
        payload = {
            "line_id": c.line_id,
            "track_id": int(c.track_id),
            "direction": c.direction,
            "crossing_ts": ts,
            "crossing_pts_s": _round(c.t, 6),
            "frame_index": int(row.frame_index),
            "lane_id": c.lane_id,
            "class_name": c.class_name,
            "speed_kmh": _round(c.speed_kmh),
            "x": _round(c.x, 3),
            "y": _round(c.y, 3),
        }
        msg = crossing_message(
            camera_id=self.camera.id,
            line_id=c.line_id,
            track_id=int(c.track_id),
            direction=c.direction,
            ts=ts,
            frame_index=int(row.frame_index),
            lane_id=c.lane_id,
            class_name=c.class_name,
            speed_kmh=c.speed_kmh,
            day_count=counts[f"{c.line_id}|{c.direction}"],
        )
        self.emit(KIND_CROSSING, row, payload, message=encode(msg).decode("utf-8"))

    def _emit_event(self, row: Any, ev: Event) -> None:
        start, detect, end = self._wall(row, ev.start_ts), self._wall(row, ev.detect_ts), self._wall(row, ev.end_ts)
        assert start is not None and detect is not None
        track_id = None if ev.track_id is None else int(ev.track_id)
        payload = {
            "event_id": ev.event_id,
            "event_type": ev.type,
            "track_id": track_id,
            "lane_id": ev.lane_id,
            "zone_id": ev.zone_id,
            "start_ts": start,
            "detect_ts": detect,
            "end_ts": end,
            "duration_s": _round(ev.duration_s, 3),
            "distance_m": _round(ev.distance_m),
            "max_length_m": _round(ev.max_length_m),
            "max_vehicles": ev.max_vehicles,
            "speed_kmh": _round(ev.speed_kmh),
            "heading_deg": _round(ev.heading_deg, 1),
            "lane_heading_deg": _round(ev.lane_heading_deg, 1),
            "x_m": _round(ev.x_m),
            "y_m": _round(ev.y_m),
            "class_name": ev.class_name,
            "frame_index": int(row.frame_index),
            "is_open": "true" if end is None else "false",
        }
        msg = event_message(
            camera_id=self.camera.id,
            event_id=ev.event_id,
            event_type=ev.type,
            start_ts=start,
            detect_ts=detect,
            end_ts=end,
            track_id=track_id,
            lane_id=ev.lane_id,
            zone_id=ev.zone_id,
            duration_s=ev.duration_s,
            distance_m=ev.distance_m,
            max_length_m=ev.max_length_m,
            max_vehicles=ev.max_vehicles,
            speed_kmh=ev.speed_kmh,
            class_name=ev.class_name,
            x_m=ev.x_m,
            y_m=ev.y_m,
            frame_index=int(row.frame_index),
        )
        self.emit(KIND_EVENT, row, payload, message=encode(msg).decode("utf-8"))

    def _predicted_frame(self, row: Any) -> None:
        """Boxes of a frame between detections: the tracks matched at the last detection, moved on by their
        Kalman velocity; speeds and flags as last measured (nothing is measured on a prediction)."""
        st = self.state
        t0 = time.perf_counter()
        steps = int(row.frame_index) - st.last_detected_index
        vehicles: list[dict[str, Any]] = []
        counts: Counter = Counter()
        for v in st.tracker.predicted(steps):
            meta = st.tracks.get(v.track_id)
            if meta is None:
                continue
            cls = VEHICLE_CLASSES.get(int(v.class_id), str(v.class_id))
            counts[cls] += 1
            vehicles.append(self._vehicle(v, cls, meta.speed_kmh, meta.speed_flag, None, None))
        timings = {"decode": None, "detect": None, "embed": None, "track": _round((time.perf_counter() - t0) * 1e3, 2)}
        self._frame_out(row, vehicles, counts, timings, PREDICTED)

    def _vehicle(
        self, v: Any, cls: str, speed: float | None, flag: str | None, wx: float | None, wy: float | None
    ) -> dict[str, Any]:
        over = speed is not None and flag is None and speed > self.camera.speed_limit_kmh
        return {
            "track_id": v.track_id,
            "class_name": cls,
            "confidence": _round(v.confidence, 3),
            "x1": float(v.xyxy[0]),
            "y1": float(v.xyxy[1]),
            "x2": float(v.xyxy[2]),
            "y2": float(v.xyxy[3]),
            "world_x_m": _round(wx, 3),
            "world_y_m": _round(wy, 3),
            "speed_kmh": _round(speed, 2),
            "speed_flag": flag,
            "over_limit": "true" if over else "false",
        }

    def _frame_out(
        self,
        row: Any,
        vehicles: list[dict[str, Any]],
        counts: Counter,
        timings: dict[str, float | None],
        analysis: str,
    ) -> None:
        """The frame's stage-2 row and (unless skipped) its results-topic message."""
        st = self.state
        stride = self._stride(row)
        minute = _minute(float(row.capture_ts))
        payload = {
            "ingest_ts": float(row.ingest_ts),
            "kafka_partition": int(row.kafka_partition),
            "kafka_offset": int(row.kafka_offset),
            "raw_detections": _opt_int(row.raw_detections) or 0,
            "vehicles": vehicles,
            "counts": json.dumps(dict(counts)),
            "flow": json.dumps({"minute": minute, **dict(st.flow.get(minute, {}))}),
            "decode_ms": timings.get("decode"),
            "detect_ms": timings.get("detect"),
            "embed_ms": timings.get("embed"),
            "track_ms": timings.get("track"),
            "speed_ms": timings.get("speed"),
            "analysis": analysis,
            "stride": stride,
            "skip_reason": getattr(row, "skip_reason", None) if analysis == SKIPPED else None,
        }
        message: str | None = None
        if analysis != SKIPPED:
            msg = frame_message(
                camera_id=self.camera.id,
                frame_index=int(row.frame_index),
                pts_s=float(row.pts_s),
                capture_ts=row.capture_ts,
                processed_ts=time.time(),
                vehicles=[
                    frame_vehicle(
                        track_id=x["track_id"],
                        class_name=x["class_name"],
                        confidence=x["confidence"],
                        box=(x["x1"], x["y1"], x["x2"], x["y2"]),
                        # only a trusted speed goes out: viewers show it as a measurement
                        speed_kmh=x["speed_kmh"] if x["speed_flag"] is None else None,
                        over_limit=x["over_limit"] == "true",
                    )
                    for x in vehicles
                ],
                class_counts=counts,
                flow_minute=minute,
                flow_counts=st.flow.get(minute, {}),
                ms={k: v for k, v in timings.items() if k in STAGES},
                analysis=analysis,
                stride=stride,
                source=_source_of(row),
            )
            message = encode(msg).decode("utf-8")
        self.emit(KIND_FRAME, row, payload, message=message)

    def _emit_violation(self, row: pd.Series, v: Any, cls: str, violation: Any, others: np.ndarray) -> None:
        """The violation with what its evidence needs: where the frame is, the offender's box, and every other
        detection of the frame (``others``), which the evidence pixelates (``privacy.mode``)."""
        passage: Passage | None = getattr(violation, "passage", None)
        self.emit(
            KIND_VIOLATION,
            row,
            {
                "track_id": v.track_id,
                "class_name": cls,
                "speed_kmh": _round(violation.speed_kmh, 2),
                "speed_source": "passage" if passage is not None else "windowed",
                "uncertainty_kmh": None if passage is None else _round(passage.uncertainty_kmh, 2),
                "limit_kmh": float(violation.limit_kmh),
                "over_s": _round(violation.over_s, 3),
                "source_uri": row.source_uri,
                "source_index": _opt_int(getattr(row, "source_index", None)),
                "source_pts_s": _finite(getattr(row, "source_pts_s", None)),
                "x1": float(v.xyxy[0]),
                "y1": float(v.xyxy[1]),
                "x2": float(v.xyxy[2]),
                "y2": float(v.xyxy[3]),
                "others": [[round(float(c), 1) for c in b] for b in others],
            },
        )
        ts = float(row.pts_s)
        start = passage.t_start if passage is not None else ts - float(violation.over_s or 0.0)
        self._emit_event(
            row,
            Event(
                event_id=event_id(self.camera.id, EVENT_SPEEDING, f"track:{v.track_id}", start),
                type=EVENT_SPEEDING,
                camera_id=self.camera.id,
                track_id=v.track_id,
                lane_id=None,
                zone_id=None,
                start_ts=start,
                detect_ts=ts,
                end_ts=ts,
                duration_s=ts - start,
                speed_kmh=violation.speed_kmh,
                class_name=cls,
            ),
        )

    def _summary(self, track_id: int, ended: bool) -> dict[str, Any]:
        meta = self.state.tracks[track_id]
        s = self.state.kinematics.summary(track_id)
        return {
            "track_id": track_id,
            "class_name": meta.class_votes.most_common(1)[0][0] if meta.class_votes else None,
            "first_frame": meta.first_frame,
            "last_frame": meta.last_frame,
            "first_seen_ts": meta.first_ts,
            "last_seen_ts": meta.last_ts,
            "n_frames": meta.n_frames,
            "median_speed_kmh": _round(getattr(s, "median_kmh", None)),
            "max_speed_kmh": _round(getattr(s, "max_kmh", None)),
            "distance_m": _round(getattr(s, "distance_m", None)),
            "direction_deg": _round(getattr(s, "direction_deg", None)),
            "passage_speed_kmh": None if meta.passage is None else _round(meta.passage[1]),
            "passage_uncertainty_kmh": None if meta.passage is None else _round(meta.passage[2]),
            "passage_section": None if meta.passage is None else meta.passage[0],
            "ended": "true" if ended else "false",
        }

    def _end_tracks(self, row: Any) -> None:
        st = self.state
        for track_id in st.tracker.ended_track_ids():
            if track_id in st.tracks:
                self.emit(KIND_TRACK, None, self._summary(track_id, ended=True))
                del st.tracks[track_id]
            self.touched.discard(track_id)
            st.kinematics.evict(track_id)
            st.violations.evict(track_id)
            self._evict_counting(row, track_id)

    def _evict_counting(self, row: Any, track_id: int) -> None:
        """Forget an ended track in the line counter and the event detector (closing its open stop)."""
        st = self.state
        if st.lines is not None:
            st.lines.evict(track_id)
        if st.events is not None:
            for event in st.events.evict(track_id):
                self._emit_event(row, event)

    def end_all_tracks(self) -> None:
        """Report every open track as ended (its state is about to be thrown away), closing its open stop."""
        for track_id in list(self.state.tracks):
            self.emit(KIND_TRACK, None, self._summary(track_id, ended=True))
            del self.state.tracks[track_id]
            self.touched.discard(track_id)
            if self.last_row is not None:
                self._evict_counting(self.last_row, track_id)

    def finish_batch(self) -> None:
        st = self.state
        for track_id in sorted(self.touched):
            if track_id in st.tracks:
                self.emit(KIND_TRACK, None, self._summary(track_id, ended=False))
        for minute, cls in sorted(self.flow_touched):
            self.emit(KIND_FLOW, None, {"minute_ts": minute, "class_name": cls, "vehicles": st.flow[minute][cls]})
        for minute in sorted(st.flow)[:-FLOW_MINUTES_KEPT]:  # bounded: older minutes are final in Delta
            del st.flow[minute]


def _source_of(row: Any) -> tuple[str, int, float] | None:
    """(uri, index, pts) of the frame's pixels, for viewers; None when the row does not say."""
    uri = getattr(row, "source_uri", None)
    if not isinstance(uri, str) or not uri:
        return None
    index = _opt_int(getattr(row, "source_index", None))
    pts = _finite(getattr(row, "source_pts_s", None))
    return uri, int(row.frame_index) if index is None else index, float(row.pts_s) if pts is None else pts


def _finite(x: Any) -> float | None:
    """``x`` as a finite float, else ``None`` (null, NaN, inf, or not a number at all)."""
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def _opt_int(x: Any) -> int | None:
    v = _finite(x)
    return int(v) if v is not None and -_INT64 <= v < _INT64 else None


def _size(x: Any) -> int:
    return 0 if x is None else len(x)


def _invalid(row: Any) -> str | None:
    """Why an ``ok`` stage-1 row must not reach the state, or ``None``."""
    fi, pts, cts = _finite(row.frame_index), _finite(row.pts_s), _finite(row.capture_ts)
    if fi is None or not 0 <= fi < _MAX_FRAME_INDEX or fi != int(fi):
        return f"frame_index={row.frame_index!r}"
    if pts is None or not 0 <= pts < _MAX_PTS_S:
        return f"pts_s={row.pts_s!r}"
    if cts is None or not 0 <= cts < _MAX_TS:
        return f"capture_ts={row.capture_ts!r}"
    n = _size(row.scores)
    if _size(row.boxes) != 4 * n or _size(row.classes) != n:
        return f"{n} scores, {_size(row.boxes)} box values, {_size(row.classes)} classes"
    if n:
        dim = _opt_int(row.embedding_dim)
        if not dim or dim < 0 or _size(row.embeddings) != n * dim * 2:  # float16
            return f"{_size(row.embeddings)} embedding bytes for {n} x {row.embedding_dim!r} float16"
    return None


def _not_after_last(row: Any, st: CameraState) -> str | None:
    """Why a valid row is a repeat of what the camera already processed, or ``None``."""
    fi, pts = int(row.frame_index), float(row.pts_s)
    if fi <= st.last_frame_index:
        return f"frame {fi} <= last processed {st.last_frame_index}"
    if st.last_pts_s is not None and pts <= st.last_pts_s:
        return f"frame {fi} at pts {pts} not after last processed pts {st.last_pts_s} (frame {st.last_frame_index})"
    return None


def _dead_row(camera_id: str, row: Any, reason: str | None = None, detail: str | None = None) -> dict[str, Any]:
    payload = {
        "reason": reason or row.reason,
        "detail": detail or row.detail,
        "payload": row.payload,
        "kafka_topic": row.kafka_topic,
        "kafka_partition": _opt_int(row.kafka_partition),
        "kafka_offset": _opt_int(row.kafka_offset),
    }
    fi = _opt_int(row.frame_index)
    now = time.time()
    message = dead_letter(
        str(payload["reason"]),
        str(payload["detail"] or ""),
        row.payload,
        camera_id=camera_id or None,
        frame_index=fi,
        topic=row.kafka_topic,
        partition=payload["kafka_partition"],
        offset=payload["kafka_offset"],
        ts=now,
    ).decode("utf-8")
    pts, cts = _finite(row.pts_s), _finite(row.capture_ts)
    return {
        "kind": KIND_DEAD,
        "camera_id": camera_id or None,
        "frame_index": fi,
        "pts_s": pts,
        "capture_ts": cts,
        "processed_ts": now,
        "payload": json.dumps(payload, separators=(",", ":")),
        "message": message,
    }


def _health_row(camera_id: str, payload: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": KIND_HEALTH,
        "camera_id": camera_id,
        "frame_index": None,
        "pts_s": None,
        "capture_ts": None,
        "processed_ts": time.time(),
        "payload": json.dumps(payload, separators=(",", ":")),
        "message": None,
    }


def _annotate_state_size(rows: list[dict[str, Any]], size: int) -> None:
    """Record the camera's state-store bytes on its last frame of the batch (observability)."""
    for row in reversed(rows):
        if row["kind"] == KIND_FRAME:
            payload = json.loads(row["payload"])
            payload["state_bytes"] = size
            row["payload"] = json.dumps(payload, separators=(",", ":"))
            return


def _finish(proc: CameraProcessor, *, end_tracks: bool = False) -> None:
    """Emit the batch's track / flow rows (first ending every open track when the state is about to go)."""
    try:
        if end_tracks:
            proc.end_all_tracks()
        proc.finish_batch()
    except Exception:  # summaries are re-emitted from the state next time; the frames are already out
        log.exception("camera %s: finishing the batch failed", proc.camera.id)


def _frame_order(ok: pd.DataFrame) -> pd.DataFrame:
    index = pd.to_numeric(ok["frame_index"], errors="coerce").to_numpy(dtype=np.float64)
    return ok.iloc[np.argsort(index, kind="stable")]  # NaN last (dead-lettered as invalid anyway)


def _dead_all(camera_id: str, rows: pd.DataFrame, reason: str, detail: str) -> list[dict[str, Any]]:
    return [_dead_row(camera_id, r, reason, detail) for r in rows.itertuples(index=False)]


def _track_ok_rows(settings_json: str, camera_id: str, ok: pd.DataFrame, state: GroupState) -> list[dict[str, Any]]:
    """Run a camera's ``ok`` rows through its state; never raises for a bad row or a bad state."""
    try:
        settings = _settings(settings_json)
    except Exception as exc:  # the driver validated the same JSON: an executor-side problem (e.g. a secret file)
        log.exception("stage 2: settings unreadable on this executor")
        return _dead_all(camera_id, ok, REASON_PROCESSING_ERROR, f"settings unreadable: {type(exc).__name__}: {exc}")
    try:
        camera = settings.camera(camera_id)
    except ConfigError:
        # stage 1 dead-letters unknown cameras, but the config may have changed in between: keep the stored
        # state (the camera may come back), dead-letter the frames
        log.warning("camera %r is not configured: dead-lettering %d frame(s)", camera_id, len(ok))
        return _dead_all(camera_id, ok, REASON_UNKNOWN_CAMERA, f"camera {camera_id!r} is not configured")
    try:
        plane = _road_plane(settings_json, camera_id)
        pts = pd.to_numeric(ok["pts_s"], errors="coerce").to_numpy(dtype=np.float64)
        stored = tuple(state.get) if state.exists else None
        st, reset = restore_state(stored, settings, camera, plane, _estimate_fps(pts, camera))
    except Exception as exc:  # nothing processed and the stored state untouched: the frames are dead letters
        log.exception("camera %s: stage 2 setup failed", camera_id)
        return _dead_all(camera_id, ok, REASON_PROCESSING_ERROR, f"stage 2 setup failed: {type(exc).__name__}: {exc}")

    rows: list[dict[str, Any]] = [] if reset is None else [_health_row(camera_id, reset)]
    proc = CameraProcessor(settings_json, camera, st, rows)
    for r in _frame_order(ok).itertuples(index=False):
        problem = _invalid(r)
        if problem is not None:
            rows.append(_dead_row(camera_id, r, REASON_PROCESSING_ERROR, f"invalid stage-1 row: {problem}"))
            continue
        repeat = _not_after_last(r, proc.state)
        if repeat is not None:
            rows.append(_dead_row(camera_id, r, REASON_DUPLICATE_FRAME, repeat))
            continue
        try:
            proc.process_frame(r)
            proc.state.error_streak = 0
        except Exception as exc:
            st = proc.state
            st.error_streak += 1
            log.warning(
                "camera %s frame %s: processing failed (%d in a row): %r",
                camera_id,
                r.frame_index,
                st.error_streak,
                exc,
                exc_info=st.error_streak == 1,
            )
            rows.append(_dead_row(camera_id, r, REASON_PROCESSING_ERROR, f"{type(exc).__name__}: {exc}"))
            if st.error_streak >= MAX_ERROR_STREAK:
                _finish(proc, end_tracks=True)
                st, event = reset_in_memory(
                    st,
                    settings,
                    camera,
                    plane,
                    RESET_REPEATED_ERRORS,
                    f"{st.error_streak} frames in a row failed; last: {exc!r}",
                )
                rows.append(_health_row(camera_id, event))
                proc = CameraProcessor(settings_json, camera, st, rows)
    _finish(proc)
    try:
        blob = proc.state.to_bytes()
    except Exception as exc:  # e.g. a NaN that slipped into the state: start over rather than fail every batch
        log.exception("camera %s: tracking state not serialisable", camera_id)
        try:
            proc.end_all_tracks()
        except Exception:
            log.exception("camera %s: ending the tracks of an unserialisable state failed", camera_id)
        st, event = reset_in_memory(
            proc.state, settings, camera, plane, RESET_UNENCODABLE, f"{type(exc).__name__}: {exc}"
        )
        rows.append(_health_row(camera_id, event))
        try:
            blob = st.to_bytes()
        except Exception:  # last resort: an envelope with the id mark; the next batch resets from it
            log.exception("camera %s: even a fresh tracking state is not serialisable", camera_id)
            blob = state_codec.encode(STATE_KIND, None, next_id=event["next_track_id"], resets=st.resets)
    state.update((STATE_VERSION, blob))
    _annotate_state_size(rows, len(blob))
    return rows


# PySpark's applyInPandasWithState serializer pads each output with all-NA rows and concatenates them
# (pyspark/sql/pandas/serializers.py), which pandas warns about on every micro-batch: Spark's padding, not ours, and
# the warning only floods the executor log (three lines a batch).
SPARK_PADDING_WARNING = "The behavior of DataFrame concatenation with empty or all-NA entries is deprecated"


@lru_cache(maxsize=1)  # once per Python worker
def quiet_spark_padding_warning() -> None:
    warnings.filterwarnings("ignore", message=SPARK_PADDING_WARNING, category=FutureWarning)


def track_camera(
    settings_json: str,
    key: tuple,
    pdfs: Iterator[pd.DataFrame],
    state: GroupState,
    *,
    results_target: str | None = None,
) -> Iterator[pd.DataFrame]:
    """``applyInPandasWithState`` body for one camera's rows of one micro-batch. With ``results_target``
    (results_producer.stage2_target) the camera's results messages are produced, and acknowledged, here."""
    quiet_spark_padding_warning()
    camera_id = key[0] or ""
    parts = list(pdfs)
    if not parts:
        yield pd.DataFrame([], columns=COLUMNS)
        return
    frames = pd.concat(parts, ignore_index=True)
    is_ok = (frames["status"] == "ok").to_numpy()
    out: list[dict[str, Any]] = [_dead_row(camera_id, r) for r in frames[~is_ok].itertuples(index=False)]
    if is_ok.any():
        out.extend(_track_ok_rows(settings_json, camera_id, frames[is_ok], state))
    if results_target is not None:
        publish_from_task(results_target, out)
    yield pd.DataFrame(out, columns=COLUMNS)
