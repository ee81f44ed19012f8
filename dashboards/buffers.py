"""Live data: bounded per-camera buffers of the results-topic messages (filled by :mod:`dashboards.consumer`).

Everything the live tab and the MJPEG streams show comes from :class:`LiveBuffers`. Memory is bounded
whatever the stream does: frames, violations, health records, per-track speed summaries, flow minutes,
line crossings and counts, and traffic events all live in capped containers, and only configured cameras get
a buffer.

Duplicates (a replayed Spark micro-batch re-emits the same results) are dropped: a frame is identified by
(camera, frame index, capture time) and a violation by (camera, track id, frame index). Keying frames on
the capture time too keeps a restarted source (frame indices from 0 again, new capture times) live instead
of being mistaken for a replay.

Every message is checked for plausibility first (dashboards.times): implausible times, indices, counts and
boxes are dropped and counted as invalid (logged at debug), so one absurd message cannot break a figure,
a callback or the video renderer.

Health messages are of two kinds: batch health (one per micro-batch, with per-camera load shedding in
``analysis``: detected / predicted / skipped frames, stride, budget) and camera events (``event``: the ingest
worker's source_lost / source_restored, the job's state_reset), kept per camera.

Counting lines and traffic events (issue 12): a crossing is identified by (camera, line, track, direction) and
kept once; the live count of a line and direction is the highest ``day_count`` of its newest UTC day. A traffic
event is identified by its ``event_id``: the latest report replaces the earlier one (the closing report, with
its ``end_ts``, replaces the open one), and an ended event is never reopened by a late or replayed open report.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import re
import threading
import time
from collections import Counter, OrderedDict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import numpy as np

from trafficstream.config import Settings
from trafficstream.dashboards.times import MAX_FRAME_INDEX, MAX_KMH, PTS_RANGE, finite, integer, wall_ts
from trafficstream.errors import MessageError
from trafficstream.messages import CAMERA_ID_PATTERN
from trafficstream.results import (
    RESULT_CROSSING,
    RESULT_EVENT,
    RESULT_FRAME,
    RESULT_HEALTH,
    RESULT_VIOLATION,
    parse_result,
)

log = logging.getLogger(__name__)

MAX_VIOLATIONS = 200  # per camera, newest kept (the log shows fewer)
MAX_HEALTH = 600  # micro-batch health records (all cameras share one stream)
MAX_TRACKS = 5000  # per-track speed summaries per camera
TRACK_RETENTION_S = 15 * 60  # longest KPI window offered in the UI
MAX_FLOW_MINUTES = 24 * 60
MAX_COUNT = 10**9  # per-minute vehicle counts above this are garbage (and would overflow Int64 sums)
MAX_BOX_PX = 1e6  # box coordinates beyond this are garbage (OpenCV draws with int32)
MAX_CAMERA_EVENTS = 50  # per camera, newest kept
MAX_STRIDE = 1000
MAX_BUDGET_S = 3600.0
MAX_CROSSINGS = 1000  # per camera, newest kept
MAX_LINE_COUNTS = 256  # (line, direction) pairs per camera (a camera has at most 64 lines of 2 directions)
MAX_TRAFFIC_EVENTS = 500  # per camera, the most recently reported kept
MAX_EVENT_S = 366 * 86400.0  # durations and distances beyond these are garbage
MAX_DISTANCE_M = 1e5
MAX_TRACK_ID = 2**63 - 1
EVENT_TYPES = ("wrong_way", "stopped_vehicle", "queue", "speeding")  # results.EVENT's event_type
EVENT_ID_PATTERN = re.compile(r"[0-9a-f]{1,64}")
ANALYSIS_WINDOW_S = 10.0  # the health panel's "current" analysis rate and predicted / skipped counts
DETECTED, PREDICTED = "detected", "predicted"
SOURCE_LOST, SOURCE_RESTORED, STATE_RESET = "source_lost", "source_restored", "state_reset"
FrameKey = tuple[float, int]  # (capture_ts, frame_index): buffer order and identity


@dataclass(frozen=True, slots=True)
class FrameSource:
    """Where a frame's pixels are, as the results message says (``source``): a file URI, the frame's index and
    presentation time in that file. Untrusted: the video renderer checks the path before opening it."""

    uri: str
    index: int
    pts_s: float


@dataclass(frozen=True, slots=True)
class LiveFrame:
    """One processed frame as the dashboard needs it (metadata only; pixels come from the source)."""

    camera_id: str
    frame_index: int
    pts_s: float
    capture_ts: float
    processed_ts: float | None
    vehicles: tuple[dict[str, Any], ...]
    in_roi: int | None
    analysis: str = DETECTED  # detected | predicted (the tracker's boxes between detections)
    stride: int = 1  # detection stride in force
    source: FrameSource | None = None  # None: the camera's file at (frame_index, pts_s) (older producers)

    @property
    def key(self) -> FrameKey:
        return (self.capture_ts, self.frame_index)

    @property
    def predicted(self) -> bool:
        return self.analysis == PREDICTED


@dataclass(slots=True)
class _TrackStat:
    cls: str
    last_seen_ts: float
    speed_sum: float = 0.0
    speed_n: int = 0

    @property
    def speed_kmh(self) -> float | None:
        # One speed per vehicle (mean of its smoothed estimates): per-frame speeds would over-weight
        # slow vehicles, which stay in view for more frames.
        return self.speed_sum / self.speed_n if self.speed_n else None


@dataclass(frozen=True, slots=True)
class Kpis:
    camera_id: str
    in_roi: int | None
    counted_total: int
    counted_by_class: dict[str, int]
    speeding_window: int
    speeding_total: int
    mean_kmh: float | None
    p85_kmh: float | None
    vehicles_window: int  # vehicles with a speed estimate inside the window
    lag_s: float | None
    last_frame_index: int | None
    last_capture_ts: float | None


@dataclass(frozen=True, slots=True)
class AnalysisSummary:
    """How the job analysed one camera's frames over the last micro-batches (batch health ``analysis``)."""

    camera_id: str
    detected_fps: float | None  # frames run through the detector per second (None: no time span to divide by)
    detected: int  # in the window
    predicted: int
    skipped: int
    skipped_total: int  # since the dashboard started
    stride: int | None  # in force at the newest batch that had the camera's frames
    budget_s: float | None
    window_s: float
    batches: int  # batches in the window that had the camera's frames


@dataclass(frozen=True, slots=True)
class CameraEvents:
    """The newest camera events of one camera (each a dict: ts, cause, gap_s, detail, batch_id)."""

    last_lost: dict[str, Any] | None = None
    last_restored: dict[str, Any] | None = None
    last_reset: dict[str, Any] | None = None
    resets: int = 0

    @property
    def source_down(self) -> bool:
        """The newest source event says the camera is lost."""
        lost, restored = self.last_lost, self.last_restored
        return lost is not None and (restored is None or restored["ts"] < lost["ts"])


@dataclass(frozen=True, slots=True)
class LineCount:
    """The live count of one counting line and direction: the newest ``day_count`` the job reported for it."""

    line_id: str
    direction: str
    day: str  # the UTC day (YYYY-MM-DD) the count is of
    count: int  # crossings of the line in this direction on that day so far
    last_ts: float  # time of the newest crossing seen
    last: dict[str, Any]  # that crossing (lane_id, cls, kmh, track_id)


def utc_day(ts: float) -> str:
    """The UTC day (YYYY-MM-DD) of plausible Unix seconds, the day a crossing's ``day_count`` counts in."""
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%d")


def summarize_analysis(
    health: Sequence[Mapping[str, Any]], camera_id: str, window_s: float = ANALYSIS_WINDOW_S, skipped_total: int = 0
) -> AnalysisSummary | None:
    """The camera's analysis over the batches of the last ``window_s`` (ending at the newest batch), or None when
    no batch reported analysis (an older job).

    The rate divides the detected frames by the time those batches cover: from the start of the oldest one
    (its end minus its duration) to the end of the newest. Stride and budget come from the newest batch that
    reported them, even before the window (a camera without frames keeps its last stride)."""
    reported = [h for h in health if h.get("analysis")]
    if not reported:
        return None
    newest_ts = max(h["ts"] for h in health)
    window = [h for h in health if h["ts"] > newest_ts - window_s]
    mine = [(h, h["analysis"][camera_id]) for h in window if camera_id in (h.get("analysis") or {})]
    entries = [h["analysis"][camera_id] for h in reversed(health) if camera_id in (h.get("analysis") or {})]
    detected = sum(a["detected"] for _, a in mine)
    rate = None
    if window:
        oldest = min(window, key=lambda h: h["ts"])
        span = newest_ts - oldest["ts"] + (oldest.get("batch_ms") or 0.0) / 1000.0
        rate = detected / span if span > 0 else None
    return AnalysisSummary(
        camera_id=camera_id,
        detected_fps=rate,
        detected=detected,
        predicted=sum(a["predicted"] for _, a in mine),
        skipped=sum(a["skipped"] for _, a in mine),
        skipped_total=skipped_total,
        stride=next((a["stride"] for a in entries if a["stride"] is not None), None),
        budget_s=next((a["budget_s"] for a in entries if a["budget_s"] is not None), None),
        window_s=window_s,
        batches=len(mine),
    )


def speed_stats(speeds: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and 85th percentile (linear interpolation between order statistics, as numpy's default)."""
    if len(speeds) == 0:
        return None, None
    arr = np.asarray(speeds, dtype=float)
    return float(arr.mean()), float(np.percentile(arr, 85))


class _CameraBuffer:
    """State of one camera; not thread-safe (LiveBuffers holds the lock)."""

    def __init__(self, camera_id: str, max_frames: int, max_violations: int) -> None:
        self.camera_id = camera_id
        self.frames: deque[LiveFrame] = deque(maxlen=max_frames)
        self.frame_keys: set[FrameKey] = set()
        self.tracks: OrderedDict[int, _TrackStat] = OrderedDict()  # least recently seen first
        self.flow: OrderedDict[float, Counter[str]] = OrderedDict()  # minute (epoch s) -> class -> count
        self.flow_evicted: Counter[str] = Counter()  # totals of minutes dropped from `flow`
        self.violations: deque[dict[str, Any]] = deque(maxlen=max_violations)
        self.violation_keys: OrderedDict[tuple[int, int], None] = OrderedDict()
        self.violation_times: deque[float] = deque(maxlen=10_000)
        self.violations_total = 0
        self.events: deque[dict[str, Any]] = deque(maxlen=MAX_CAMERA_EVENTS)
        self.event_keys: deque[tuple[Any, ...]] = deque(maxlen=MAX_CAMERA_EVENTS)
        self.resets = 0
        self.skipped_total = 0
        self.version = 0
        self.crossings: deque[dict[str, Any]] = deque(maxlen=MAX_CROSSINGS)
        self.crossing_keys: OrderedDict[tuple[str, int, str], None] = OrderedDict()
        self.line_counts: OrderedDict[tuple[str, str], LineCount] = OrderedDict()  # least recently updated first
        self.counts_version = 0
        self.traffic_events: OrderedDict[str, dict[str, Any]] = OrderedDict()  # event id -> newest report
        self.ended_events: OrderedDict[str, None] = OrderedDict()  # ids of ended events (never reopened)

    # -- frames -------------------------------------------------------------------------------------
    def add_frame(self, frame: LiveFrame, flow: Mapping[str, Any] | None, now: float | None = None) -> bool:
        key = frame.key
        if key in self.frame_keys:
            return False
        frames = self.frames
        if frames and key < frames[-1].key:
            # Late frame (results of one camera normally arrive in order): insert in place.
            if len(frames) == frames.maxlen and key < frames[0].key:
                return False  # older than everything kept: it would be evicted at once
            pos = bisect.bisect_left(frames, key, key=lambda f: f.key)
            if len(frames) == frames.maxlen:
                self.frame_keys.discard(frames.popleft().key)
                pos -= 1
            frames.insert(pos, frame)
        else:
            if len(frames) == frames.maxlen:
                self.frame_keys.discard(frames[0].key)
            frames.append(frame)
        self.frame_keys.add(key)
        self._update_tracks(frame)
        if flow:
            self._update_flow(flow, now)
        self.version += 1
        return True

    def _update_tracks(self, frame: LiveFrame) -> None:
        for v in frame.vehicles:
            track_id = integer(v.get("id"))
            if track_id is None:
                continue
            stat = self.tracks.pop(track_id, None)
            if stat is None:
                stat = _TrackStat(cls=str(v.get("cls") or "vehicle"), last_seen_ts=frame.capture_ts)
            stat.last_seen_ts = max(stat.last_seen_ts, frame.capture_ts)
            kmh = finite(v.get("kmh"), 0.0, MAX_KMH)
            if kmh is not None:
                stat.speed_sum += kmh
                stat.speed_n += 1
            self.tracks[track_id] = stat
        horizon = self.frames[-1].capture_ts - TRACK_RETENTION_S
        while self.tracks:
            oldest = next(iter(self.tracks.values()))
            if oldest.last_seen_ts >= horizon and len(self.tracks) <= MAX_TRACKS:
                break
            self.tracks.popitem(last=False)

    def _update_flow(self, flow: Mapping[str, Any], now: float | None = None) -> None:
        minute = wall_ts(flow.get("minute"), now)
        if minute is None:
            log.debug(
                "camera %s: ignoring flow counts of an implausible minute %.40r", self.camera_id, flow.get("minute")
            )
            return
        counts = self.flow.get(minute)
        if counts is None:
            if len(self.flow) >= MAX_FLOW_MINUTES and minute < next(iter(self.flow)):
                return  # older than every minute kept (and maybe already counted in flow_evicted)
            late = bool(self.flow) and minute < next(reversed(self.flow))
            counts = self.flow[minute] = Counter()
            if late:
                self.flow = OrderedDict(sorted(self.flow.items()))
            while len(self.flow) > MAX_FLOW_MINUTES:
                _, dropped = self.flow.popitem(last=False)
                self.flow_evicted.update(dropped)
        for cls, n in flow.items():
            n = integer(n, 0, MAX_COUNT)
            # Counts are cumulative within their minute: keep the highest seen (robust to reordering).
            if cls != "minute" and n is not None and n > counts[cls]:
                counts[cls] = n

    # -- violations ---------------------------------------------------------------------------------
    def add_violation(self, v: dict[str, Any]) -> bool:
        key = (v["track_id"], v["frame_index"])
        if key in self.violation_keys:
            return False
        self.violation_keys[key] = None
        while len(self.violation_keys) > 4 * (self.violations.maxlen or MAX_VIOLATIONS):
            self.violation_keys.popitem(last=False)
        self.violations.append(v)
        self.violation_times.append(v["capture_ts"])
        self.violations_total += 1
        self.version += 1
        return True

    # -- counting lines -----------------------------------------------------------------------------
    def add_crossing(self, c: dict[str, Any]) -> bool:
        key = (c["line_id"], c["track_id"], c["direction"])
        if key in self.crossing_keys:
            return False
        self.crossing_keys[key] = None
        while len(self.crossing_keys) > 4 * MAX_CROSSINGS:
            self.crossing_keys.popitem(last=False)
        self.crossings.append(c)
        if c["day_count"] is not None:
            self._update_count(c)
        return True

    def _update_count(self, c: dict[str, Any]) -> None:
        """The count of the crossing's line and direction: the highest day_count of the newest UTC day (a late
        crossing of an earlier day leaves today's count alone)."""
        key, day = (c["line_id"], c["direction"]), utc_day(c["ts"])
        old = self.line_counts.get(key)
        if old is None or day > old.day:
            new = LineCount(key[0], key[1], day, c["day_count"], c["ts"], _last(c))
        elif day == old.day:
            newer = c["ts"] >= old.last_ts
            new = LineCount(
                key[0],
                key[1],
                day,
                max(old.count, c["day_count"]),
                c["ts"] if newer else old.last_ts,
                _last(c) if newer else old.last,
            )
            if new == old:
                return
        else:
            return
        if old is None and len(self.line_counts) >= MAX_LINE_COUNTS:
            self.line_counts.popitem(last=False)
        self.line_counts.pop(key, None)
        self.line_counts[key] = new
        self.counts_version += 1

    # -- traffic events -----------------------------------------------------------------------------
    def add_traffic_event(self, e: dict[str, Any]) -> bool:
        """The newest report of an event replaces the earlier one; an ended event stays ended."""
        event_id = e["event_id"]
        old = self.traffic_events.get(event_id)
        if e["end_ts"] is None and (event_id in self.ended_events or (old is not None and old["end_ts"] is not None)):
            return False  # a replayed or late "open" report of an event that has ended
        if old == e:
            return False
        self.traffic_events.pop(event_id, None)
        self.traffic_events[event_id] = e
        while len(self.traffic_events) > MAX_TRAFFIC_EVENTS:
            self.traffic_events.popitem(last=False)
        if e["end_ts"] is not None:
            self.ended_events.pop(event_id, None)
            self.ended_events[event_id] = None
            while len(self.ended_events) > 4 * MAX_TRAFFIC_EVENTS:
                self.ended_events.popitem(last=False)
        return True


def _violation_order(v: Mapping[str, Any]) -> tuple[float, int, int]:
    return (v["capture_ts"], v["frame_index"], v["track_id"])


def _crossing_order(c: Mapping[str, Any]) -> tuple[float, str, int, str]:
    return (c["ts"], c["line_id"], c["track_id"], c["direction"])


def _event_order(e: Mapping[str, Any]) -> tuple[float, float, str, str]:
    return (e["detect_ts"], e["start_ts"], e["camera_id"], e["event_id"])


def _last(c: Mapping[str, Any]) -> dict[str, Any]:
    return {k: c[k] for k in ("track_id", "lane_id", "cls", "kmh")}


class LiveBuffers:
    """Thread-safe bounded store of live results; accessors return copies (safe to use unlocked)."""

    def __init__(
        self,
        camera_ids: Iterable[str],
        *,
        max_frames: int = 600,
        max_violations: int = MAX_VIOLATIONS,
        max_health: int = MAX_HEALTH,
    ) -> None:
        self._lock = threading.Lock()
        self._cameras = {cid: _CameraBuffer(cid, max_frames, max_violations) for cid in camera_ids}
        self._health: deque[dict[str, Any]] = deque(maxlen=max_health)
        self._health_keys: deque[tuple[Any, Any]] = deque(maxlen=max_health)
        self.health_version = 0
        self.events_version = 0  # traffic events of any camera changed
        self.counters: Counter[str] = Counter()  # received, duplicates, invalid, unknown_camera, ...
        self.last_message_wall: float | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LiveBuffers:
        return cls([c.id for c in settings.cameras], max_frames=settings.dashboard.buffer_frames)

    @property
    def camera_ids(self) -> list[str]:
        return list(self._cameras)

    # -- ingestion ----------------------------------------------------------------------------------
    def add_raw(self, raw: bytes | str) -> bool:
        """Parse and add one results-topic message; invalid ones are counted and dropped."""
        try:
            msg = parse_result(raw)
        except MessageError as exc:
            with self._lock:
                self.counters["invalid"] += 1
            log.debug("dropping results message: %s", exc)
            return False
        return self.add(msg)

    def add(self, msg: Mapping[str, Any]) -> bool:
        """Add one parsed results message; returns False when it was a duplicate, invalid or unknown."""
        kind = msg.get("type")
        now = time.time()
        with self._lock:
            self.counters["received"] += 1
            self.last_message_wall = now
            if kind == RESULT_HEALTH and "event" in msg:
                return self._add_camera_event(msg, now)
            if kind == RESULT_HEALTH:
                return self._add_health(msg, now)
            camera_id = msg.get("camera_id")
            buf = self._cameras.get(camera_id) if isinstance(camera_id, str) else None
            if buf is None:
                self.counters["unknown_camera"] += 1
                return False
            if kind == RESULT_FRAME:
                frame = _frame_from_msg(msg, now)
                if frame is None:
                    self.counters["invalid"] += 1
                    return False
                flow = msg.get("flow")
                added = buf.add_frame(frame, flow if isinstance(flow, Mapping) else None, now)
            elif kind == RESULT_VIOLATION:
                v = _violation_from_msg(msg, now)
                if v is None:
                    self.counters["invalid"] += 1
                    return False
                added = buf.add_violation(v)
            elif kind == RESULT_CROSSING:
                c = _crossing_from_msg(msg, now)
                if c is None:
                    self.counters["invalid"] += 1
                    return False
                added = buf.add_crossing(c)
                self.counters["crossings"] += added
            elif kind == RESULT_EVENT:
                e = _traffic_event_from_msg(msg, now)
                if e is None:
                    self.counters["invalid"] += 1
                    return False
                added = buf.add_traffic_event(e)
                if added:
                    self.counters["traffic_events"] += 1
                    self.events_version += 1
            else:
                self.counters["invalid"] += 1
                return False
            if not added:
                self.counters["duplicates"] += 1
            return added

    def _add_health(self, msg: Mapping[str, Any], now: float | None = None) -> bool:
        key = (msg.get("batch_id"), msg.get("ts"))
        ts = wall_ts(msg.get("ts"), now)
        if ts is None:
            self.counters["invalid"] += 1
            log.debug("dropping health message with an implausible ts %.40r", msg.get("ts"))
            return False
        if key in self._health_keys:
            self.counters["duplicates"] += 1
            return False
        self._health_keys.append(key)
        lag = msg.get("lag")
        analysis = _analysis(msg.get("analysis"))
        for camera_id, a in analysis.items():
            buf = self._cameras.get(camera_id)
            if buf is not None:
                buf.skipped_total += a["skipped"]
        self._health.append(
            {
                "ts": ts,
                "batch_id": msg.get("batch_id") if isinstance(msg.get("batch_id"), (int, str)) else None,
                "batch_ms": finite(msg.get("batch_ms"), 0.0),
                "frames": integer(msg.get("frames"), 0),
                "fps": finite(msg.get("fps"), 0.0),
                "lag": {str(k): n for k, n in lag.items() if integer(n, 0, MAX_COUNT) is not None}
                if isinstance(lag, Mapping)
                else {},
                "analysis": analysis,
            }
        )
        self.health_version += 1
        return True

    def _add_camera_event(self, msg: Mapping[str, Any], now: float | None = None) -> bool:
        camera_id = msg.get("camera_id")
        buf = self._cameras.get(camera_id) if isinstance(camera_id, str) else None
        if buf is None:
            self.counters["unknown_camera"] += 1
            return False
        ts, event = wall_ts(msg.get("ts"), now), msg.get("event")
        if ts is None or not isinstance(event, str):
            self.counters["invalid"] += 1
            log.debug("dropping camera event of %s: implausible ts / event (%.40r, %.40r)", camera_id, ts, event)
            return False
        key = (event, ts, msg.get("batch_id") if isinstance(msg.get("batch_id"), int) else None)
        if key in buf.event_keys:
            self.counters["duplicates"] += 1
            return False
        buf.event_keys.append(key)
        cause, detail = msg.get("cause"), msg.get("detail")
        buf.events.append(
            {
                "event": event[:100],
                "ts": ts,
                "batch_id": key[2],
                "cause": cause[:100] if isinstance(cause, str) else None,
                "gap_s": finite(msg.get("gap_s"), 0.0, 1e9),
                "detail": detail[:300] if isinstance(detail, str) else None,
            }
        )
        if event == STATE_RESET:
            buf.resets += 1
        if event in (SOURCE_LOST, SOURCE_RESTORED):
            log.info("camera %s: %s (%s)", camera_id, event, cause if event == SOURCE_LOST else msg.get("gap_s"))
        self.counters["camera_events"] += 1
        buf.version += 1
        return True

    # -- snapshot accessors -------------------------------------------------------------------------
    def version(self, camera_id: str) -> int:
        with self._lock:
            buf = self._cameras.get(camera_id)
            return buf.version if buf else -1

    def frames(self, camera_id: str) -> list[LiveFrame]:
        with self._lock:
            buf = self._cameras.get(camera_id)
            return list(buf.frames) if buf else []

    def frames_after(self, camera_id: str, after: FrameKey | None) -> list[LiveFrame]:
        """Frames newer than ``after`` (all kept frames when None), oldest first."""
        with self._lock:
            buf = self._cameras.get(camera_id)
            if buf is None or not buf.frames:
                return []
            if after is None:
                return list(buf.frames)
            pos = bisect.bisect_right(buf.frames, after, key=lambda f: f.key)
            return list(itertools.islice(buf.frames, pos, None))

    def latest_frame(self, camera_id: str) -> LiveFrame | None:
        with self._lock:
            buf = self._cameras.get(camera_id)
            return buf.frames[-1] if buf and buf.frames else None

    def violations(self, camera_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """Newest first."""
        with self._lock:
            buf = self._cameras.get(camera_id)
            items = sorted(buf.violations, key=_violation_order, reverse=True) if buf else []
        return [dict(v) for v in items[:limit]]

    def vehicle_speeds(self, camera_id: str, window_s: float) -> list[tuple[str, float]]:
        """(class, km/h) of each vehicle seen in the last ``window_s`` of processed video."""
        with self._lock:
            buf = self._cameras.get(camera_id)
            if buf is None or not buf.frames:
                return []
            horizon = buf.frames[-1].capture_ts - window_s
            return [
                (t.cls, t.speed_kmh)
                for t in buf.tracks.values()
                if t.last_seen_ts >= horizon and t.speed_kmh is not None
            ]

    def flow(self, camera_id: str, minutes: int = 30) -> list[tuple[float, str, int]]:
        """(minute epoch s, class, vehicles) rows for the newest ``minutes`` minutes."""
        with self._lock:
            buf = self._cameras.get(camera_id)
            if buf is None:
                return []
            items = list(buf.flow.items())[-minutes:]
            return [(m, cls, n) for m, counts in items for cls, n in sorted(counts.items())]

    def health(self, limit: int | None = None) -> list[dict[str, Any]]:
        """Oldest first."""
        with self._lock:
            items = list(self._health)
        return items[-limit:] if limit else items

    def crossings(self, camera_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        """The newest crossings of the camera's counting lines, newest first."""
        with self._lock:
            buf = self._cameras.get(camera_id)
            items = sorted(buf.crossings, key=_crossing_order, reverse=True) if buf else []
        return [dict(c) for c in items[:limit]]

    def counts_version(self, camera_id: str) -> int:
        with self._lock:
            buf = self._cameras.get(camera_id)
            return buf.counts_version if buf else -1

    def line_counts(self, camera_id: str) -> list[LineCount]:
        """The live count of every line and direction of the camera seen so far (by line id, direction)."""
        with self._lock:
            buf = self._cameras.get(camera_id)
            items = list(buf.line_counts.values()) if buf else []
        return sorted(items, key=lambda c: (c.line_id, c.direction))

    def traffic_events(
        self,
        camera_ids: Iterable[str] | None = None,
        event_types: Iterable[str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """The newest report of each traffic event of ``camera_ids`` (None: every camera) whose type is one of
        ``event_types`` (None: any), newest detection first."""
        types = None if event_types is None else set(event_types)
        with self._lock:
            cams = list(self._cameras) if camera_ids is None else [c for c in camera_ids if c in self._cameras]
            items = [
                e
                for cam in cams
                for e in self._cameras[cam].traffic_events.values()
                if types is None or e["event_type"] in types
            ]
        items.sort(key=_event_order, reverse=True)
        return [dict(e) for e in items[:limit]]

    def analysis(self, camera_id: str, window_s: float = ANALYSIS_WINDOW_S) -> AnalysisSummary | None:
        """The camera's load shedding over the last micro-batches (None: no batch reported it yet)."""
        with self._lock:
            items = list(self._health)
            buf = self._cameras.get(camera_id)
            skipped_total = buf.skipped_total if buf else 0
        return summarize_analysis(items, camera_id, window_s, skipped_total)

    def camera_events(self, camera_id: str) -> CameraEvents:
        """The newest source_lost / source_restored / state_reset events of the camera (newest by ts)."""
        with self._lock:
            buf = self._cameras.get(camera_id)
            if buf is None:
                return CameraEvents()
            events, resets = [dict(e) for e in buf.events], buf.resets

        def last(kind: str) -> dict[str, Any] | None:
            return max((e for e in events if e["event"] == kind), key=lambda e: e["ts"], default=None)

        return CameraEvents(last(SOURCE_LOST), last(SOURCE_RESTORED), last(STATE_RESET), resets)

    def kpis(self, camera_id: str, window_s: float, now: float | None = None) -> Kpis:
        """Live KPIs; the window ends at the newest processed frame (lag is reported separately)."""
        now = time.time() if now is None else now
        speeds = [kmh for _, kmh in self.vehicle_speeds(camera_id, window_s)]
        mean, p85 = speed_stats(speeds)
        with self._lock:
            buf = self._cameras[camera_id]
            last = buf.frames[-1] if buf.frames else None
            by_class: Counter[str] = Counter(buf.flow_evicted)
            for counts in buf.flow.values():
                by_class.update(counts)
            horizon = (last.capture_ts if last else now) - window_s
            speeding_window = sum(1 for t in buf.violation_times if t >= horizon)
            return Kpis(
                camera_id=camera_id,
                in_roi=last.in_roi if last else None,
                counted_total=sum(by_class.values()),
                counted_by_class=dict(sorted(by_class.items())),
                speeding_window=speeding_window,
                speeding_total=buf.violations_total,
                mean_kmh=mean,
                p85_kmh=p85,
                vehicles_window=len(speeds),
                lag_s=(now - last.capture_ts) if last else None,
                last_frame_index=last.frame_index if last else None,
                last_capture_ts=last.capture_ts if last else None,
            )


def _box(value: Any) -> list[float] | None:
    """[x1, y1, x2, y2] of finite, sane numbers, else None (the overlay then draws no box)."""
    if not isinstance(value, (list, tuple)) or len(value) != 4:
        return None
    coords = [finite(c, -MAX_BOX_PX, MAX_BOX_PX) for c in value]
    return None if any(c is None for c in coords) else coords  # type: ignore[return-value]


def _vehicle(v: Mapping[str, Any]) -> dict[str, Any]:
    """A vehicle entry with the fields figures and overlays use made safe (others passed through)."""
    out = dict(v)
    if "box" in out:
        out["box"] = _box(out["box"])
    if "kmh" in out:
        out["kmh"] = finite(out["kmh"], 0.0, MAX_KMH)
    if "id" in out and integer(out["id"]) is None:
        del out["id"]  # labelled "#?"
    if "cls" in out and not isinstance(out["cls"], str):
        out["cls"] = str(out["cls"])[:40]
    return out


def _analysis(value: Any) -> dict[str, dict[str, Any]]:
    """Batch health ``analysis`` with every number made safe; cameras whose entry is not an object are dropped."""
    if not isinstance(value, Mapping):
        return {}
    out = {}
    for camera_id, a in value.items():
        if not isinstance(a, Mapping):
            continue
        out[str(camera_id)] = {
            "detected": integer(a.get("detected"), 0, MAX_COUNT) or 0,
            "predicted": integer(a.get("predicted"), 0, MAX_COUNT) or 0,
            "skipped": integer(a.get("skipped"), 0, MAX_COUNT) or 0,
            "stride": integer(a.get("stride"), 1, MAX_STRIDE),
            "budget_s": finite(a.get("budget_s"), 0.0, MAX_BUDGET_S),
        }
    return out


def _source(value: Any) -> FrameSource | None:
    """A frame message's ``source`` when it is well formed, else None (the camera's file is assumed)."""
    if not isinstance(value, Mapping):
        return None
    uri = value.get("uri")
    index, pts_s = integer(value.get("index"), 0, MAX_FRAME_INDEX), finite(value.get("pts_s"), *PTS_RANGE)
    if not isinstance(uri, str) or not uri or len(uri) > 4096 or index is None or pts_s is None:
        return None
    return FrameSource(uri, index, pts_s)


def _frame_from_msg(msg: Mapping[str, Any], now: float | None = None) -> LiveFrame | None:
    frame_index = integer(msg.get("frame_index"), 0, MAX_FRAME_INDEX)
    pts_s = finite(msg.get("pts_s"), *PTS_RANGE)
    capture_ts = wall_ts(msg.get("capture_ts"), now)
    if frame_index is None or pts_s is None or capture_ts is None:
        log.debug(
            "dropping frame result of %s: implausible frame_index / pts_s / capture_ts (%.40r, %.40r, %.40r)",
            msg.get("camera_id"),
            msg.get("frame_index"),
            msg.get("pts_s"),
            msg.get("capture_ts"),
        )
        return None
    vehicles = msg.get("vehicles")
    vehicles = tuple(_vehicle(v) for v in vehicles if isinstance(v, dict)) if isinstance(vehicles, list) else ()
    counts = msg.get("counts")
    in_roi = integer(counts.get("in_roi"), 0, MAX_COUNT) if isinstance(counts, Mapping) else None
    return LiveFrame(
        camera_id=str(msg["camera_id"]),
        frame_index=frame_index,
        pts_s=pts_s,
        capture_ts=capture_ts,
        processed_ts=wall_ts(msg.get("processed_ts"), now),
        vehicles=vehicles,
        in_roi=len(vehicles) if in_roi is None else in_roi,
        analysis=PREDICTED if msg.get("analysis") == PREDICTED else DETECTED,  # missing (older producers): detected
        stride=integer(msg.get("stride"), 1, MAX_STRIDE) or 1,
        source=_source(msg.get("source")),
    )


def _violation_from_msg(msg: Mapping[str, Any], now: float | None = None) -> dict[str, Any] | None:
    track_id, frame_index = integer(msg.get("track_id")), integer(msg.get("frame_index"), 0, MAX_FRAME_INDEX)
    capture_ts = wall_ts(msg.get("capture_ts"), now)
    if track_id is None or frame_index is None or capture_ts is None:
        log.debug(
            "dropping violation of %s: implausible track_id / frame_index / capture_ts (%.40r, %.40r, %.40r)",
            msg.get("camera_id"),
            msg.get("track_id"),
            msg.get("frame_index"),
            msg.get("capture_ts"),
        )
        return None
    return {
        "camera_id": str(msg["camera_id"]),
        "track_id": track_id,
        "frame_index": frame_index,
        "capture_ts": capture_ts,
        "cls": str(msg.get("cls") or "vehicle")[:40],
        "kmh": finite(msg.get("kmh"), 0.0, MAX_KMH),
        "limit_kmh": finite(msg.get("limit_kmh"), 0.0, MAX_KMH),
        "over_s": finite(msg.get("over_s"), 0.0, 1e6),
        "evidence_uri": msg.get("evidence_uri") if isinstance(msg.get("evidence_uri"), str) else None,
    }


def _geometry_id(value: Any) -> str | None:
    """A line, lane, zone or direction id when it has the shape the config allows, else None."""
    return value if isinstance(value, str) and CAMERA_ID_PATTERN.fullmatch(value) else None


def _text(value: Any, n: int = 40) -> str | None:
    return value[:n] if isinstance(value, str) and value else None


def _crossing_from_msg(msg: Mapping[str, Any], now: float | None = None) -> dict[str, Any] | None:
    line_id, direction = _geometry_id(msg.get("line_id")), _geometry_id(msg.get("direction"))
    track_id, ts = integer(msg.get("track_id"), 0, MAX_TRACK_ID), wall_ts(msg.get("ts"), now)
    if line_id is None or direction is None or track_id is None or ts is None:
        log.debug(
            "dropping crossing of %s: implausible line_id / direction / track_id / ts (%.40r, %.40r, %.40r, %.40r)",
            msg.get("camera_id"),
            msg.get("line_id"),
            msg.get("direction"),
            msg.get("track_id"),
            msg.get("ts"),
        )
        return None
    return {
        "camera_id": str(msg["camera_id"]),
        "line_id": line_id,
        "track_id": track_id,
        "direction": direction,
        "ts": ts,
        "frame_index": integer(msg.get("frame_index"), 0, MAX_FRAME_INDEX),
        "lane_id": _geometry_id(msg.get("lane_id")),
        "cls": _text(msg.get("cls")),
        "kmh": finite(msg.get("kmh"), 0.0, MAX_KMH),
        "day_count": integer(msg.get("day_count"), 1, MAX_COUNT),  # None: the crossing is kept, not counted
    }


def _traffic_event_from_msg(msg: Mapping[str, Any], now: float | None = None) -> dict[str, Any] | None:
    event_id, event_type = msg.get("event_id"), msg.get("event_type")
    start_ts, detect_ts = wall_ts(msg.get("start_ts"), now), wall_ts(msg.get("detect_ts"), now)
    end = msg.get("end_ts")
    end_ts = None if end is None else wall_ts(end, now)
    if (
        not isinstance(event_id, str)
        or not EVENT_ID_PATTERN.fullmatch(event_id)
        or event_type not in EVENT_TYPES
        or start_ts is None
        or detect_ts is None
        or (end is not None and end_ts is None)
    ):
        log.debug(
            "dropping event of %s: implausible event_id / event_type / start_ts / detect_ts / end_ts "
            "(%.40r, %.40r, %.40r, %.40r, %.40r)",
            msg.get("camera_id"),
            event_id,
            event_type,
            msg.get("start_ts"),
            msg.get("detect_ts"),
            end,
        )
        return None
    return {
        "camera_id": str(msg["camera_id"]),
        "event_id": event_id,
        "event_type": event_type,
        "track_id": integer(msg.get("track_id"), 0, MAX_TRACK_ID),
        "lane_id": _geometry_id(msg.get("lane_id")),
        "zone_id": _geometry_id(msg.get("zone_id")),
        "start_ts": start_ts,
        "detect_ts": detect_ts,
        "end_ts": end_ts,
        "duration_s": finite(msg.get("duration_s"), 0.0, MAX_EVENT_S),
        "distance_m": finite(msg.get("distance_m"), 0.0, MAX_DISTANCE_M),
        "max_length_m": finite(msg.get("max_length_m"), 0.0, MAX_DISTANCE_M),
        "max_vehicles": integer(msg.get("max_vehicles"), 0, MAX_COUNT),
        "kmh": finite(msg.get("kmh"), 0.0, MAX_KMH),
        "cls": _text(msg.get("cls")),
        "frame_index": integer(msg.get("frame_index"), 0, MAX_FRAME_INDEX),
    }
