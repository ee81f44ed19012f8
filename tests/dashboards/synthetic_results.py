"""Realistic results-topic messages for the demo cameras' real frames, without running the pipeline.

Frame indices and pts come from the real clips (decoded once with VideoFileSource); vehicles are
synthetic but follow the schema and the physics of the real thing: tracks enter at the horizon, approach
along lanes with perspective, carry smoothed speeds (unknown for their first frames), get counted once
per minute bucket, and sustained speeding produces one violation with an evidence JPEG of the real frame.
Every message is built by the job's own builders (:mod:`trafficstream.results`).
"""

from __future__ import annotations

import functools
import math
import random
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import cv2
from confluent_kafka import Producer

from trafficstream.cameras import Camera
from trafficstream.config import Settings
from trafficstream.results import (
    HEALTH_KEY,
    RESULT_VIOLATION,
    batch_health_message,
    encode,
    frame_message,
    frame_vehicle,
    violation_message,
)
from trafficstream.video import FrameReader, VideoFileSource

CLASSES = (("car", 0.8), ("truck", 0.12), ("bus", 0.04), ("motorcycle", 0.04))
BOX_SIZE = {"car": (1.0, 0.8), "truck": (1.2, 1.4), "bus": (1.25, 1.5), "motorcycle": (0.45, 0.7)}  # w, h factors
ROAD_LENGTH_M = 70.0  # road visible between horizon and bottom edge


@dataclass(frozen=True)
class ClipFrames:
    width: int
    height: int
    fps: float
    frames: tuple[tuple[int, float], ...]  # (frame_index, pts_s) of every frame

    @property
    def duration_s(self) -> float:
        return self.frames[-1][1] + 1.0 / self.fps


@functools.lru_cache(maxsize=8)
def clip_frames(path: str, fps_override: float | None = None) -> ClipFrames:
    with VideoFileSource(path, fps_override) as src:
        frames = tuple((f.index, f.pts_s) for f in src.frames())
        return ClipFrames(src.info.width, src.info.height, src.info.fps, frames)


@dataclass
class _Vehicle:
    track_id: int
    cls: str
    lane: int
    kmh: float
    t0: float  # feed time (s) it appears at the horizon
    over_since: float | None = None
    violated: bool = False


@dataclass
class SyntheticCamera:
    """Deterministic synthetic traffic over one camera's real frames."""

    camera: Camera
    clip: ClipFrames
    seed: int = 0
    lanes: int = 4
    speeding_share: float = 0.3
    stride: int = 1  # detect every k-th frame: the frames between are "predicted" (as the job under load)
    _vehicles: list[_Vehicle] = field(default_factory=list)
    _next_spawn: float = 0.0
    _next_id: int = 1
    _flow: dict[float, dict[str, int]] = field(default_factory=dict)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._rng = random.Random(self.seed)

    def _spawn_until(self, t: float) -> None:
        limit = self.camera.speed_limit_kmh
        while self._next_spawn <= t:
            r, acc, cls = self._rng.random(), 0.0, "car"
            for name, share in CLASSES:
                acc += share
                if r <= acc:
                    cls = name
                    break
            fast = self._rng.random() < self.speeding_share
            kmh = limit * (self._rng.uniform(1.12, 1.35) if fast else self._rng.uniform(0.7, 0.98))
            self._vehicles.append(_Vehicle(self._next_id, cls, self._rng.randrange(self.lanes), kmh, self._next_spawn))
            self._next_id += 1
            self._next_spawn += self._rng.uniform(0.35, 0.9)

    def _box(self, v: _Vehicle, p: float) -> list[float]:
        """Box at progress p (0 horizon .. 1 bottom edge): lanes converge towards a vanishing point."""
        w, h = self.clip.width, self.clip.height
        y = h * (0.04 + 0.96 * p**1.7)  # perspective: far away moves slowly on screen
        vx = w * 0.52
        lane_x = w * (0.16 + 0.68 * (v.lane + 0.5) / self.lanes)
        s = 0.04 + 0.96 * p**1.7
        cx = vx + (lane_x - vx) * s
        fw, fh = BOX_SIZE[v.cls]
        bw, bh = w * 0.16 * s * fw, h * 0.2 * s * fh
        return [round(cx - bw / 2, 1), round(y - bh, 1), round(cx + bw / 2, 1), round(y, 1)]

    def frame_messages(
        self,
        frame_index: int,
        pts_s: float,
        feed_t: float,
        capture_ts: float,
        processed_ts: float,
        evidence_root: Path | None = None,
    ) -> list[dict[str, Any]]:
        """The "frame" message of one processed frame, plus any "violation" messages it triggers."""
        self._spawn_until(feed_t)
        cam = self.camera
        minute = math.floor(capture_ts / 60) * 60
        flow = self._flow.setdefault(minute, {})
        for old in [m for m in self._flow if m < minute - 120]:
            del self._flow[old]
        vehicles, violations, alive = [], [], []
        for v in self._vehicles:
            travel_s = ROAD_LENGTH_M / (v.kmh / 3.6)
            p = (feed_t - v.t0) / travel_s
            if p > 1.0:
                continue
            alive.append(v)
            if p < 0:
                continue
            if p * travel_s < 1 / self.clip.fps:  # first frame of the track: counted now
                flow[v.cls] = flow.get(v.cls, 0) + 1
            age_s = feed_t - v.t0
            kmh = None if age_s < 0.3 else round(v.kmh + self._rng.gauss(0, 1.5), 1)
            over = kmh is not None and kmh > cam.speed_limit_kmh
            if over and v.over_since is None:
                v.over_since = feed_t
            vehicle = frame_vehicle(
                track_id=v.track_id,
                class_name=v.cls,
                confidence=self._rng.uniform(0.55, 0.95),
                box=self._box(v, p),
                speed_kmh=kmh,
                over_limit=over,
            )
            vehicles.append(vehicle)
            if over and not v.violated and v.over_since is not None and feed_t - v.over_since >= cam.min_violation_s:
                v.violated = True
                violations.append(
                    self._violation(v, vehicle, frame_index, pts_s, capture_ts, feed_t - v.over_since, evidence_root)
                )
        self._vehicles = alive
        counts: dict[str, int] = {}
        for veh in vehicles:
            counts[veh["cls"]] = counts.get(veh["cls"], 0) + 1
        frame = frame_message(
            camera_id=cam.id,
            frame_index=frame_index,
            pts_s=pts_s,
            capture_ts=capture_ts,
            processed_ts=processed_ts,
            vehicles=vehicles,
            class_counts=counts,
            flow_minute=minute,
            flow_counts=flow,
            ms={"decode": 3.1, "detect": self._rng.uniform(40, 60), "embed": 18.0, "track": 1.2, "speed": 0.1},
            analysis=self.analysis_of(frame_index),
            stride=self.stride,
            source=(cam.source_uri(), frame_index, pts_s),  # the camera's file (a looped clip: its index in it)
        )
        return [frame, *violations]

    def analysis_of(self, frame_index: int) -> str:
        return "detected" if frame_index % self.stride == 0 else "predicted"

    def _violation(
        self,
        v: _Vehicle,
        vehicle: dict[str, Any],
        frame_index: int,
        pts_s: float,
        capture_ts: float,
        over_s: float,
        evidence_root: Path | None,
    ) -> dict[str, Any]:
        uri = None
        if evidence_root is not None:
            path = evidence_root / self.camera.id / f"{v.track_id}_{frame_index}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            image = _reader(str(self.camera.source_path()), self.camera.fps).read(frame_index, pts_s).copy()
            x1, y1, x2, y2 = (int(c) for c in vehicle["box"])
            cv2.rectangle(image, (x1, y1), (x2, y2), (0, 0, 255), 3)
            cv2.imwrite(str(path), image)
            uri = path.resolve().as_uri()
        return violation_message(
            camera_id=self.camera.id,
            track_id=v.track_id,
            frame_index=frame_index,
            capture_ts=capture_ts,
            class_name=v.cls,
            speed_kmh=vehicle["kmh"],
            limit_kmh=self.camera.speed_limit_kmh,
            over_s=over_s,
            evidence_uri=uri,
            box=vehicle["box"],
        )


@functools.lru_cache(maxsize=8)
def _reader(path: str, fps: float | None) -> FrameReader:
    return FrameReader(path, fps)


def health_message(
    batch_id: int,
    batch_ms: float,
    frames: int,
    ts: float,
    lag: dict[str, int],
    analysis: dict[str, dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """A batch health message as the job sends it (no delays measured); ``analysis``: per camera
    {detected, predicted, skipped, stride, budget_s}."""
    return batch_health_message(
        batch_id=batch_id,
        batch_ms=batch_ms,
        frames=frames,
        ts=ts,
        lag=lag,
        delay_s={},
        counts={"frame": frames} if frames else {},
        analysis=analysis,
    )


class ResultsFeed:
    """Publishes results for the configured cameras' real frames as a pipeline would, in real time.

    Frames are "captured" at feed start + pts (looping the clip) and published in micro-batches every
    ``batch_interval_s`` once ``processing_delay_s`` old, with a health message per batch.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        batch_interval_s: float = 0.5,
        processing_delay_s: float = 0.5,
        seed: int = 7,
        stride: int = 2,
    ) -> None:
        self.settings = settings
        self.stride = stride  # every other frame's boxes "predicted": both kinds of box on screen
        self.batch_interval_s = batch_interval_s
        self.processing_delay_s = processing_delay_s
        self.seed = seed
        self.frames_published = 0
        self.violations_published = 0
        self.batches = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> ResultsFeed:
        self._thread = threading.Thread(target=self._run_safely, name="results-feed", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(15)

    def _run_safely(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # surfaced by the fixture
            self.error = exc
            raise

    def _run(self) -> None:
        producer = Producer(self.settings.kafka.python_config(**{"linger.ms": 5}))
        topic = self.settings.kafka.results_topic
        evidence_root = self.settings.evidence_root
        clips = [clip_frames(str(cam.source_path()), cam.fps) for cam in self.settings.cameras]
        start = time.time()  # after decoding the clips: "capture" starts now, not seconds ago
        streams = [
            {
                "cam": cam,
                "clip": clip,
                "synth": SyntheticCamera(cam, clip, seed=self.seed + i, stride=self.stride),
                "loop_start": start,
                "pos": 0,
            }
            for i, (cam, clip) in enumerate(zip(self.settings.cameras, clips, strict=True))
        ]
        while not self._stop.is_set():
            now = time.time()
            t_batch = time.perf_counter()
            n_frames, lag, analysis = 0, {}, {}
            for s in streams:
                cam, clip = s["cam"], s["clip"]
                counts = analysis[cam.id] = {
                    "detected": 0,
                    "predicted": 0,
                    "skipped": 0,
                    "stride": self.stride,
                    "budget_s": self.settings.budget_s(cam),
                }
                while True:
                    index, pts = clip.frames[s["pos"]]
                    capture = s["loop_start"] + pts
                    if capture > now - self.processing_delay_s:
                        break
                    counts[s["synth"].analysis_of(index)] += 1
                    for msg in s["synth"].frame_messages(index, pts, capture - start, capture, now, evidence_root):
                        producer.produce(topic, encode(msg), key=cam.id.encode())
                        if msg["type"] == RESULT_VIOLATION:
                            self.violations_published += 1
                    n_frames += 1
                    s["pos"] += 1
                    if s["pos"] == len(clip.frames):
                        s["pos"] = 0
                        s["loop_start"] += clip.duration_s
                lag[cam.id] = round(self.processing_delay_s * clip.fps)
                producer.poll(0)
            self.frames_published += n_frames
            batch_ms = (time.perf_counter() - t_batch) * 1000 + self.batch_interval_s * 1000
            producer.produce(
                topic,
                encode(health_message(self.batches, batch_ms, n_frames, time.time(), lag, analysis)),
                key=HEALTH_KEY,
            )
            self.batches += 1
            producer.flush(10)
            self._stop.wait(self.batch_interval_s)
        producer.flush(10)


def synthetic_messages(
    settings: Settings,
    n_frames: int,
    capture_start: float,
    *,
    seed: int = 7,
    evidence: bool = True,
    stride: int = 1,
) -> list[dict[str, Any]]:
    """The first ``n_frames`` frames of every camera as results messages (violations write evidence)."""
    out: list[dict[str, Any]] = []
    for i, cam in enumerate(settings.cameras):
        clip = clip_frames(str(cam.source_path()), cam.fps)
        synth = SyntheticCamera(cam, clip, seed=seed + i, stride=stride)
        for index, pts in clip.frames[:n_frames]:
            out.extend(
                synth.frame_messages(
                    index,
                    pts,
                    pts,
                    capture_start + pts,
                    capture_start + pts + 0.5,
                    settings.evidence_root if evidence else None,
                )
            )
    return out


def write_history_tables(delta_root: Path, camera: Camera, start: datetime, minutes: int, seed: int = 3) -> int:
    """Append plausible flow / tracks / violations rows (the streaming job's tables) for ``minutes`` minutes.

    Returns the number of vehicles written. Timestamps are UTC like the job writes them.
    """
    import polars as pl
    from deltalake import write_deltalake

    from trafficstream import tables

    rng = random.Random(seed)
    start = start.astimezone(timezone.utc)
    flow_rows, track_rows, violation_rows = [], [], []
    track_id = 1
    for m in range(minutes):
        minute = start + timedelta(minutes=m)
        # Rush-hour shaped demand: more vehicles in the middle of the range.
        demand = 8 + 14 * math.sin(math.pi * (m + 0.5) / minutes)
        counts: dict[str, int] = {}
        for _ in range(int(demand + rng.uniform(-2, 2))):
            cls = rng.choices([c for c, _ in CLASSES], [w for _, w in CLASSES])[0]
            counts[cls] = counts.get(cls, 0) + 1
            kmh = rng.gauss(camera.speed_limit_kmh * 0.93, 11)
            seen = minute + timedelta(seconds=rng.uniform(0, 59))
            track_rows.append((camera.id, track_id, cls, seen, seen + timedelta(seconds=3), round(kmh, 1)))
            if kmh > camera.speed_limit_kmh + 5:
                violation_rows.append((camera.id, track_id, seen, round(kmh + 2, 1), camera.speed_limit_kmh))
            track_id += 1
        flow_rows.extend((camera.id, minute, cls, n) for cls, n in counts.items())
    ts = pl.Datetime("us", "UTC")
    frames = {
        tables.FLOW: pl.DataFrame(
            flow_rows,
            schema={"camera_id": pl.String, "minute": ts, "class_name": pl.String, "vehicles": pl.Int64},
            orient="row",
        ),
        tables.TRACKS: pl.DataFrame(
            track_rows,
            schema={
                "camera_id": pl.String,
                "track_id": pl.Int64,
                "class_name": pl.String,
                "first_seen_ts": ts,
                "last_seen_ts": ts,
                "median_speed_kmh": pl.Float64,
            },
            orient="row",
        ),
        tables.VIOLATIONS: pl.DataFrame(
            violation_rows,
            schema={
                "camera_id": pl.String,
                "track_id": pl.Int64,
                "capture_ts": ts,
                "speed_kmh": pl.Float64,
                "limit_kmh": pl.Float64,
            },
            orient="row",
        ),
    }
    for name, df in frames.items():
        write_deltalake(str(delta_root / name), df.to_arrow(), partition_by=["camera_id"], mode="append")
    return len(track_rows)
