"""Ingest worker: read each camera's source and publish a frame reference per frame.

One thread per camera (cameras are independent streams); one shared, thread-safe producer.
``realtime`` paces publication by the container timestamps, as a live camera would deliver frames;
otherwise frames are published as fast as they decode. ``loop`` replays a file camera as a live one: each
pass continues the camera's own ``frame_index`` / ``pts_s`` while ``source_index`` / ``source_pts_s`` name the
frame in the file. Live cameras (RTSP, HTTP, V4L2) are recorded into segments by :mod:`.live` until stopped.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from trafficstream.cameras import Camera
from trafficstream.config import Settings
from trafficstream.ingest.live import RefPublisher, ingest_live_camera
from trafficstream.ingest.publisher import FramePublisher
from trafficstream.messages import FrameRef
from trafficstream.results import encode
from trafficstream.video import VideoFileSource

log = logging.getLogger(__name__)


@dataclass
class IngestStats:
    frames: dict[str, int] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    bytes_total: int = 0

    @property
    def total(self) -> int:
        return sum(self.frames.values())


def ingest_camera(
    camera: Camera,
    publisher: FramePublisher | RefPublisher,
    *,
    realtime: bool = False,
    max_frames: int | None = None,
    start_frame: int = 0,
    stop: threading.Event | None = None,
    position: int = 0,
    max_rate_fps: float | None = None,
    loop: bool = False,
    seconds: float | None = None,
) -> int:
    """Publish references for one file camera; returns the number of frames published.

    ``max_rate_fps`` caps the publication rate (soak runs, a job sized below the camera's rate). ``loop``
    starts the file again at its end (until ``stop``, ``seconds`` or ``max_frames``); ``seconds`` bounds
    the run by the wall clock."""
    if loop:
        return _ingest_looped(camera, publisher, realtime, max_frames, stop, position, max_rate_fps, seconds)
    deadline = time.monotonic() + seconds if seconds is not None else None
    published = 0
    with VideoFileSource(camera.source_path(), camera.fps) as source:
        info = source.info
        total = info.frame_count - start_frame if info.frame_count else None
        if max_frames is not None:
            total = min(total, max_frames) if total is not None else max_frames
        t_start = time.time()
        bar = tqdm(total=total, desc=camera.id, unit="frame", position=position, leave=False, mininterval=1.0)
        with bar:
            for frame in source.positions():
                if stop is not None and stop.is_set():
                    break
                if frame.index < start_frame:
                    continue
                if max_frames is not None and published >= max_frames:
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    break
                if realtime:  # pace like a live camera: frame k is available at its presentation time
                    delay = t_start + frame.pts_s - time.time()
                    if delay > 0:
                        time.sleep(delay)
                if max_rate_fps:
                    delay = t_start + published / max_rate_fps - time.time()
                    if delay > 0:
                        time.sleep(delay)
                now = time.time()
                ref = FrameRef(
                    camera_id=camera.id,
                    source_uri=info.uri,
                    frame_index=frame.index,
                    pts_s=frame.pts_s,
                    capture_ts=now,
                    ingest_ts=now,
                    width=info.width,
                    height=info.height,
                    live=realtime,  # paced like a camera: the job holds its latency budget
                )
                publisher.publish(camera.id, ref.to_json())
                published += 1
                bar.update(1)
    log.info("camera %s: published %d frame references", camera.id, published)
    return published


def _ingest_looped(
    camera: Camera,
    publisher: FramePublisher | RefPublisher,
    realtime: bool,
    max_frames: int | None,
    stop: threading.Event | None,
    position: int,
    max_rate_fps: float | None,
    seconds: float | None,
) -> int:
    """Replay a file camera pass after pass as one continuous camera (see :func:`ingest_camera`)."""
    stop = stop or threading.Event()
    t_start = time.time()
    deadline = t_start + seconds if seconds is not None else None
    published = 0
    base_index, base_pts = 0, 0.0  # where this pass starts in the camera's own sequence and time
    passes = 0
    bar = tqdm(desc=camera.id, unit="frame", position=position, leave=False, mininterval=1.0)

    def done() -> bool:
        return (
            stop.is_set()
            or (max_frames is not None and published >= max_frames)
            or (deadline is not None and time.time() >= deadline)
        )

    with bar:
        while not done():
            with VideoFileSource(camera.source_path(), camera.fps) as source:
                info = source.info
                count, last_pts = 0, 0.0
                for frame in source.positions():
                    if done():
                        break
                    pts = base_pts + frame.pts_s
                    if realtime:
                        delay = t_start + pts - time.time()
                        if delay > 0 and stop.wait(min(delay, deadline - time.time()) if deadline else delay):
                            break
                        if done():
                            break
                    if max_rate_fps:
                        delay = t_start + published / max_rate_fps - time.time()
                        if delay > 0 and stop.wait(delay):
                            break
                    now = time.time()
                    ref = FrameRef(
                        camera_id=camera.id,
                        source_uri=info.uri,
                        frame_index=base_index + frame.index,
                        pts_s=pts,
                        capture_ts=now,
                        ingest_ts=now,
                        width=info.width,
                        height=info.height,
                        source_index=frame.index,
                        source_pts_s=frame.pts_s,
                        live=realtime,
                    )
                    publisher.publish(camera.id, ref.to_json())
                    published += 1
                    count, last_pts = frame.index + 1, frame.pts_s
                    bar.update(1)
            if count == 0:
                raise ValueError(f"camera {camera.id}: no frame decoded from {camera.source_path().name}")
            # The next pass starts one frame after this pass's last frame: pts stays strictly increasing.
            base_index += count
            base_pts += last_pts + 1.0 / info.fps
            passes += 1
    log.info("camera %s: published %d frame references in %d pass(es)", camera.id, published, passes)
    return published


def run_ingest(
    settings: Settings,
    camera_ids: list[str] | None = None,
    *,
    realtime: bool = False,
    max_frames: int | None = None,
    start_frame: int = 0,
    stop: threading.Event | None = None,
    max_rate_fps: float | None = None,
    loop: bool = False,
    seconds: float | None = None,
) -> IngestStats:
    """Ingest the selected cameras (all by default) concurrently; flushes and checks every delivery.

    File cameras are read once (``loop``: replayed until stopped); live cameras are recorded until ``stop`` is
    set (SIGTERM / Ctrl-C in the CLI) or ``seconds`` have passed. Live cameras' ``source_lost`` /
    ``source_restored`` events go to the results topic."""
    cameras = [settings.camera(cid) for cid in camera_ids] if camera_ids else list(settings.cameras)
    if not cameras:
        raise ValueError("no cameras configured")
    stats = IngestStats()
    stop = stop or threading.Event()
    timer = threading.Timer(seconds, stop.set) if seconds is not None else None

    k = settings.kafka
    client = {**k.client, **k.client_python}
    with (
        FramePublisher(k.bootstrap_servers, k.frames_topic, client) as pub,
        _EventPublisher(settings, any(c.is_live for c in cameras)) as events,
    ):

        def work(i: int, cam: Camera) -> None:
            try:
                if cam.is_live:
                    stats.frames[cam.id] = ingest_live_camera(cam, settings, pub, report_event=events.report, stop=stop)
                    return
                stats.frames[cam.id] = ingest_camera(
                    cam,
                    pub,
                    realtime=realtime,
                    max_frames=max_frames,
                    start_frame=start_frame,
                    stop=stop,
                    position=i,
                    max_rate_fps=max_rate_fps,
                    loop=loop,
                    seconds=seconds,
                )
            except Exception as exc:  # one broken camera must not stop the others
                log.error("camera %s: ingest failed: %s", cam.id, exc)
                stats.errors[cam.id] = str(exc)
                stats.frames.setdefault(cam.id, 0)

        threads = [threading.Thread(target=work, args=(i, c), name=f"ingest-{c.id}") for i, c in enumerate(cameras)]
        for t in threads:
            t.start()
        if timer is not None:
            timer.daemon = True
            timer.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
        except KeyboardInterrupt:
            log.warning("interrupted: stopping cameras and flushing what was produced")
            stop.set()
            for t in threads:
                t.join()
        finally:
            if timer is not None:
                timer.cancel()
    stats.bytes_total = pub.bytes
    return stats


class _EventPublisher:
    """Camera events of live cameras to the results topic (keyed by camera id); a no-op without live cameras."""

    def __init__(self, settings: Settings, needed: bool) -> None:
        k = settings.kafka
        self._pub = (
            FramePublisher(k.bootstrap_servers, k.results_topic, {**k.client, **k.client_python}) if needed else None
        )

    def report(self, msg: dict[str, Any]) -> None:
        if self._pub is not None:
            self._pub.publish(msg["camera_id"], encode(msg))

    def __enter__(self) -> _EventPublisher:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pub is not None:
            self._pub.close()
