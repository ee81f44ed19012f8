"""Ingest worker: read each camera's source and publish a frame reference per frame.

One thread per camera (cameras are independent streams); one shared, thread-safe producer.
``realtime`` paces publication by the container timestamps, as a live camera would deliver frames;
otherwise frames are published as fast as they decode.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

from tqdm import tqdm

from trafficstream.cameras import Camera
from trafficstream.config import Settings
from trafficstream.ingest.publisher import FramePublisher
from trafficstream.messages import FrameRef
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
    publisher: FramePublisher,
    *,
    realtime: bool = False,
    max_frames: int | None = None,
    start_frame: int = 0,
    stop: threading.Event | None = None,
    position: int = 0,
    max_rate_fps: float | None = None,
) -> int:
    """Publish references for one camera; returns the number of frames published.

    ``max_rate_fps`` caps the publication rate (soak runs, a job sized below the camera's rate)."""
    published = 0
    with VideoFileSource(camera.source_path(), camera.fps) as source:
        info = source.info
        total = info.frame_count - start_frame if info.frame_count else None
        if max_frames is not None:
            total = min(total, max_frames) if total is not None else max_frames
        t_start = time.time()
        bar = tqdm(total=total, desc=camera.id, unit="frame", position=position, leave=False, mininterval=1.0)
        with bar:
            for frame in source.frames():
                if stop is not None and stop.is_set():
                    break
                if frame.index < start_frame:
                    continue
                if max_frames is not None and published >= max_frames:
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
                )
                publisher.publish(camera.id, ref.to_json())
                published += 1
                bar.update(1)
    log.info("camera %s: published %d frame references", camera.id, published)
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
) -> IngestStats:
    """Ingest the selected cameras (all by default) concurrently; flushes and checks every delivery."""
    cameras = [settings.camera(cid) for cid in camera_ids] if camera_ids else list(settings.cameras)
    if not cameras:
        raise ValueError("no cameras configured")
    stats = IngestStats()
    stop = stop or threading.Event()

    k = settings.kafka
    with FramePublisher(k.bootstrap_servers, k.frames_topic, {**k.client, **k.client_python}) as pub:

        def work(i: int, cam: Camera) -> None:
            try:
                stats.frames[cam.id] = ingest_camera(
                    cam,
                    pub,
                    realtime=realtime,
                    max_frames=max_frames,
                    start_frame=start_frame,
                    stop=stop,
                    position=i,
                    max_rate_fps=max_rate_fps,
                )
            except Exception as exc:  # one broken camera must not stop the others
                log.error("camera %s: ingest failed: %s", cam.id, exc)
                stats.errors[cam.id] = str(exc)
                stats.frames.setdefault(cam.id, 0)

        threads = [threading.Thread(target=work, args=(i, c), name=f"ingest-{c.id}") for i, c in enumerate(cameras)]
        for t in threads:
            t.start()
        try:
            for t in threads:
                while t.is_alive():
                    t.join(0.5)
        except KeyboardInterrupt:
            log.warning("interrupted: stopping cameras and flushing what was produced")
            stop.set()
            for t in threads:
                t.join()
    stats.bytes_total = pub.bytes
    return stats
