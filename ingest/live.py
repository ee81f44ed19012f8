"""Live cameras (RTSP, HTTP, V4L2 through PyAV): recorded into short segments, one frame reference per frame.

:class:`LiveRecorder` runs one camera until stopped: it opens the stream, remuxes its video packets (no
re-encoding) into segments of about ``live.segment_seconds`` cut at keyframes (:mod:`.segments`), and once a
segment is closed and readable publishes a reference for each of its frames. References therefore lag
capture by about one segment. The camera's own ``frame_index`` / ``pts_s`` continue across segments,
reconnects and ingest restarts (``sequence.json`` in the segment folder); across a gap ``pts_s`` advances by
the wall-clock time the camera was away. When the stream drops or ends it reconnects with exponential backoff
(``live.reconnect_initial_s`` doubling up to ``live.reconnect_max_s``), forever, and reports ``source_lost`` /
``source_restored`` camera events. The URL may carry a password: only ``camera.source_label`` is ever logged.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any, Protocol
from urllib.parse import urlparse

import av

from trafficstream.cameras import Camera
from trafficstream.config import Settings
from trafficstream.ingest.segments import (
    SegmentWriter,
    SequenceState,
    frame_positions,
    load_state,
    remove_partials,
    save_state,
    segment_name,
    sweep_segments,
)
from trafficstream.messages import FrameRef
from trafficstream.results import camera_event_message

log = logging.getLogger(__name__)

SWEEP_EVERY_S = 60.0
CAUSE_DISCONNECTED = "disconnected"
CAUSE_ENDED = "ended"
CAUSE_OPEN_FAILED = "open_failed"
_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]+@")

EventSink = Callable[[dict[str, Any]], None]


class RefPublisher(Protocol):
    def publish(self, key: str, value: bytes) -> None: ...


def backoff_delays(initial_s: float, max_s: float) -> Iterator[float]:
    """Reconnect delays: ``initial_s``, doubling each time, capped at ``max_s`` (endless)."""
    delay = min(initial_s, max_s)
    while True:
        yield delay
        delay = min(delay * 2, max_s)


def redact(text: str, camera: Camera) -> str:
    """``text`` (an error message may quote the URL) with the camera's credentials removed."""
    return _USERINFO.sub(r"\1***@", text.replace(camera.source, camera.source_label))


def open_stream(url: str, timeout_s: float) -> av.container.InputContainer:
    """Open a live source: RTSP over TCP (no UDP loss or firewall trouble), V4L2 for ``/dev/videoN``;
    ``timeout_s`` bounds the connect and every read (a silent camera is a lost camera, not a hang)."""
    options: dict[str, str] = {}
    fmt = None
    scheme = urlparse(url).scheme.lower()
    if scheme in ("rtsp", "rtsps"):
        options["rtsp_transport"] = "tcp"
    elif url.startswith("/dev/video"):
        fmt = "v4l2"
    container = av.open(url, format=fmt, options=options, timeout=(timeout_s, timeout_s))
    if not container.streams.video:
        container.close()
        raise av.error.InvalidDataError(0, "no video stream")
    return container


class _Session:
    """One connection's mapping from stream time to camera time."""

    def __init__(self) -> None:
        self.wall0: float | None = None  # arrival time of the first keyframe recorded
        # Wall time at that keyframe's stream time, from the earliest-arriving packet: a stream that starts
        # with a burst of buffered frames must not date every later frame too late (capture <= arrival).
        self.capture0: float | None = None
        self.stream0_s: float | None = None  # its pts in the stream
        self.base_s: float | None = None  # camera pts of that keyframe
        self.frames = 0


class LiveRecorder:
    """Record one live camera into segments and publish their frame references until ``stop`` is set."""

    def __init__(
        self,
        camera: Camera,
        settings: Settings,
        publisher: RefPublisher,
        report_event: EventSink | None = None,
        stop: threading.Event | None = None,
        *,
        url: str | None = None,
    ) -> None:
        self.camera = camera
        self.live = settings.live
        self.folder = settings.segment_dir(camera.id)
        self.publisher = publisher
        self.report_event = report_event
        self.stop = stop or threading.Event()
        self.url = url or camera.source  # tests record from a local file through the same path
        self.published = 0
        self.segments = 0
        self.events: list[dict[str, Any]] = []
        self.state = SequenceState()
        self._last_frame_wall: float | None = None
        self._lost_at: float | None = None  # wall time of the last frame before the source was lost
        self._lost = False
        self._last_sweep = 0.0

    # -- events ----------------------------------------------------------------------------------------
    def _event(
        self, event: str, *, cause: str | None = None, detail: str | None = None, gap_s: float | None = None
    ) -> None:
        msg = camera_event_message(
            camera_id=self.camera.id,
            batch_id=None,
            ts=time.time(),
            event=event,
            cause=cause,
            detail=detail,
            gap_s=gap_s,
        )
        self.events.append(msg)
        if self.report_event is not None:
            try:
                self.report_event(msg)
            except Exception as exc:  # reporting must never stop the recording
                log.error("camera %s: cannot report %s: %s", self.camera.id, event, exc)

    def _source_lost(self, cause: str, detail: str) -> None:
        if self._lost:
            return
        self._lost = True
        self._lost_at = self._last_frame_wall or time.time()
        log.warning("camera %s: source lost (%s) at %s: %s", self.camera.id, cause, self.camera.source_label, detail)
        self._event("source_lost", cause=cause, detail=detail)

    def _source_restored(self, now: float) -> None:
        if not self._lost:
            return
        self._lost = False
        gap = max(0.0, now - (self._lost_at or now))
        log.info("camera %s: source restored after %.1f s without frames", self.camera.id, gap)
        self._event("source_restored", gap_s=gap, detail=f"frames again from {self.camera.source_label}")

    # -- main loop -------------------------------------------------------------------------------------
    def run(self) -> int:
        """Record until stopped; returns the number of frame references published."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if n := remove_partials(self.folder):
            log.info("camera %s: removed %d unfinished segment(s) of an earlier run", self.camera.id, n)
        self.state = load_state(self.folder)
        delays = backoff_delays(self.live.reconnect_initial_s, self.live.reconnect_max_s)
        while not self.stop.is_set():
            self._maybe_sweep()
            try:
                container, failure = open_stream(self.url, self.live.open_timeout_s), ""
            except (av.FFmpegError, OSError) as exc:
                container, failure = None, redact(f"{type(exc).__name__}: {exc}", self.camera)
            if container is None:  # reported outside the except: a failing log handler prints the live exception,
                self._source_lost(CAUSE_OPEN_FAILED, failure)  # whose message holds the unredacted URL
                self.stop.wait(next(delays))
                continue
            log.info("camera %s: connected to %s", self.camera.id, self.camera.source_label)
            try:
                got_frames, cause, detail = self._record(container)
            finally:
                container.close()
            if got_frames:
                delays = backoff_delays(self.live.reconnect_initial_s, self.live.reconnect_max_s)
            if self.stop.is_set():
                break
            self._source_lost(cause, detail)
            self.stop.wait(next(delays))
        log.info(
            "camera %s: stopped; published %d frame references in %d segments",
            self.camera.id,
            self.published,
            self.segments,
        )
        return self.published

    def _maybe_sweep(self) -> None:
        now = time.time()
        if now - self._last_sweep < SWEEP_EVERY_S:
            return
        self._last_sweep = now
        deleted = sweep_segments(
            self.folder, self.live.segment_retention_h * 3600, self.live.evidence_retention_h * 3600, now
        )
        if deleted:
            log.info("camera %s: retention deleted %d segment(s)", self.camera.id, len(deleted))

    def _record(self, container: av.container.InputContainer) -> tuple[bool, str, str]:
        """Record one connection; returns (any frame received, cause, detail) once it ends."""
        stream = container.streams.video[0]
        tb = stream.time_base
        if tb is None:
            return False, CAUSE_DISCONNECTED, "the stream has no time base"
        session = _Session()
        writer: SegmentWriter | None = None
        start_pts = 0
        last_dts: int | None = None
        got = False
        cause, detail = CAUSE_ENDED, "end of stream"
        try:
            for packet in container.demux(stream):
                if self.stop.is_set():
                    break
                if packet.size == 0:
                    continue
                now = time.time()
                pts, dts = packet.pts, packet.dts
                if pts is None:  # RTSP's very first packet may lack timestamps until the clock is known
                    pts = dts if dts is not None else (0 if last_dts is None else None)
                if pts is None:
                    continue
                # Depayloaded streams often lack dts (B-frames): any increasing dts <= pts muxes correctly.
                if dts is None or dts > pts:
                    dts = pts if last_dts is None else min(pts, last_dts + 1)
                if last_dts is not None and dts <= last_dts:
                    dts = last_dts + 1
                    if dts > pts:  # timestamps went backwards: end the segment, start again at a keyframe
                        log.warning("camera %s: timestamp discontinuity; starting a new segment", self.camera.id)
                        if writer is not None:
                            self._finish(writer, session)
                            writer = None
                        last_dts = None
                        continue
                last_dts = dts
                self._last_frame_wall = now
                if not got:
                    got = True
                    self._source_restored(now)
                if writer is None:
                    if not packet.is_keyframe:
                        continue  # a segment must start with a keyframe to be decodable on its own
                    if session.wall0 is None:
                        session.wall0, session.stream0_s = now, float(pts * tb)
                    writer = self._new_writer(stream, dts)
                    start_pts = pts
                elif packet.is_keyframe and float((pts - start_pts) * tb) >= self.live.segment_seconds:
                    self._finish(writer, session)
                    writer = self._new_writer(stream, dts)
                    start_pts = pts
                writer.mux(packet, pts, dts)
                if session.stream0_s is not None:
                    implied = now - (float(pts * tb) - session.stream0_s)
                    session.capture0 = implied if session.capture0 is None else min(session.capture0, implied)
                self._maybe_sweep()
        except (av.FFmpegError, OSError) as exc:
            cause, detail = CAUSE_DISCONNECTED, redact(f"{type(exc).__name__}: {exc}", self.camera)
        finally:
            if writer is not None:
                self._finish(writer, session)
        return got, cause, detail

    def _new_writer(self, stream: av.video.stream.VideoStream, first_dts: int) -> SegmentWriter:
        return SegmentWriter(self.folder / segment_name(self.state.next_index), stream, first_dts)

    def _finish(self, writer: SegmentWriter, session: _Session) -> None:
        """Close the segment, read its frames back, persist the sequence, then publish the references."""
        path = writer.close()
        if path is None:
            return
        positions, width, height = frame_positions(path, self.camera.fps)
        if not positions or not width or not height:
            log.warning("camera %s: segment %s has no decodable frame; deleted", self.camera.id, path.name)
            path.unlink(missing_ok=True)
            return
        state = self.state
        assert session.wall0 is not None and session.stream0_s is not None
        if state.origin_wall is None:
            state.origin_wall = session.wall0  # the first frame ever is camera pts 0
        if session.base_s is None:
            # Across a gap (or an ingest restart) the camera's time goes on by the wall clock, always forward.
            base = session.wall0 - state.origin_wall
            if state.last_pts_s is not None:
                base = max(base, state.last_pts_s + 1e-3)
            session.base_s = base
        fps = self.camera.fps
        uri = path.resolve().as_uri()
        refs: list[FrameRef] = []
        index = state.next_index
        last_pts = state.last_pts_s
        for pos in positions:
            if fps:  # the container's timestamps are not trusted: the camera's time is its frame count
                offset = session.frames / fps
            else:
                offset = pos.stream_pts_s + writer.offset_s - session.stream0_s
            session.frames += 1
            pts_s = session.base_s + offset
            if last_pts is not None and pts_s <= last_pts:
                log.warning(
                    "camera %s: frame %d of %s is not after the last one; skipped", self.camera.id, pos.index, path.name
                )
                continue
            refs.append(
                FrameRef(
                    camera_id=self.camera.id,
                    source_uri=uri,
                    frame_index=index,
                    pts_s=pts_s,
                    capture_ts=(session.capture0 or session.wall0) + offset,
                    ingest_ts=0.0,
                    width=width,
                    height=height,
                    source_index=pos.index,
                    source_pts_s=pos.pts_s,
                    live=True,
                )
            )
            index += 1
            last_pts = pts_s
        if not refs:
            return
        # Persist before publishing: after a crash the next run skips numbers rather than reusing them.
        state.next_index, state.last_pts_s = index, last_pts
        save_state(self.folder, state)
        now = time.time()
        for ref in refs:
            self.publisher.publish(self.camera.id, replace(ref, ingest_ts=now).to_json())
        self.published += len(refs)
        self.segments += 1
        log.debug("camera %s: %s: %d frames published", self.camera.id, path.name, len(refs))


def ingest_live_camera(
    camera: Camera,
    settings: Settings,
    publisher: RefPublisher,
    *,
    report_event: EventSink | None = None,
    stop: threading.Event | None = None,
    url: str | None = None,
) -> int:
    """Record ``camera`` until ``stop`` is set; returns the number of frame references published."""
    return LiveRecorder(camera, settings, publisher, report_event, stop, url=url).run()
