"""Live video with overlays as MJPEG, and evidence snapshots, served by the dashboard's Flask server.

The results topic carries metadata only, so the pixels come from the video files themselves: a frame
message's ``source`` names the file holding the frame (a live camera's recorded segment, or the camera's
file) and the frame's index / pts in it; older messages have none, and then the camera's file at the frame's
index / pts is read. Sources are untrusted input: only files below ``storage.allowed_roots`` that are the
camera's own (its file, or a segment in its folder of the segments root) are opened; any other frame is shown
without its image (logged once). A camera's renderer keeps one sequential
:class:`~trafficstream.video.FrameReader` per file, decodes exactly the frames the pipeline has processed,
draws the boxes, track ids and speeds (dashed for frames whose boxes the tracker predicted between
detections), and plays them out at the camera's frame rate to every viewer of that camera (decoded and
encoded once, not per viewer), never further behind capture than the camera's latency budget. Under the boxes
it draws the camera's counting lines (an arrow per direction, named), lanes (with their direction of travel)
and zones (:mod:`dashboards.geometry`: road-plane geometry projected into the image).

With ``privacy.live_video`` the road users are pixelated as in evidence (``privacy.mode``, see
:mod:`trafficstream.models.privacy`) before the overlays are drawn. Live video has no single offender: the
vehicles shown as speeding play its part (``others``: they stay sharp, everybody else is pixelated;
``all-but-plate-region``: only their plate regions stay sharp).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import flask
import numpy as np
from werkzeug.exceptions import NotFound

from trafficstream.cameras import Camera
from trafficstream.config import PrivacySettings, Settings
from trafficstream.dashboards.buffers import FrameKey, LiveBuffers, LiveFrame
from trafficstream.dashboards.geometry import CameraOverlay, camera_overlay
from trafficstream.dashboards.times import clock, finite
from trafficstream.models.privacy import anonymise_boxes
from trafficstream.video import (
    FrameNotFound,
    FrameReader,
    SourceError,
    SourceMissing,
    SourceUnreadable,
    is_under_roots,
    uri_to_path,
)

log = logging.getLogger(__name__)

BOUNDARY = "frame"
GREEN = (60, 200, 60)  # BGR
RED = (40, 40, 235)
YELLOW = (0, 215, 255)
WHITE = (255, 255, 255)
BLACK = (0, 0, 0)
LINE_COLOR = (255, 0, 255)  # counting lines: magenta
LANE_COLOR = (255, 200, 0)  # lanes: light blue
ZONE_COLOR = (0, 140, 255)  # zones: orange
ARROW_PX = 36  # length of a line's direction arrows and a lane's heading arrow, at 1280 px wide
MAX_DRAW_PX = 100_000  # coordinates handed to OpenCV (int32) stay well inside this
SNAPSHOT_SUFFIXES = {".jpg", ".jpeg", ".png"}
DASH_PX, GAP_PX = 10, 7  # predicted boxes: dashed outline, at 1280 px wide (scaled with the image)
DEFAULT_FRAME_SIZE = (1280, 720)  # of a frame shown without its image before any image was decoded


# -- drawing (pure) -------------------------------------------------------------------------------------
def is_speeding(vehicle: Mapping[str, Any], limit_kmh: float | None) -> bool:
    kmh = finite(vehicle.get("kmh"))
    over = vehicle.get("over")
    if isinstance(over, (bool, np.bool_)) and over:  # the job's verdict; a stray "false" string is not one
        return True
    return limit_kmh is not None and kmh is not None and kmh > limit_kmh


def vehicle_label(vehicle: Mapping[str, Any]) -> str:
    label = f"#{vehicle.get('id', '?')} {vehicle.get('cls', '')}".rstrip()[:60]
    kmh = finite(vehicle.get("kmh"))
    if kmh is not None:
        label += f" {kmh:.0f} km/h"
    return label


def vehicle_box(vehicle: Mapping[str, Any]) -> tuple[float, float, float, float] | None:
    """The vehicle's ``box`` as four sane numbers (source pixels), None when it has none."""
    box = vehicle.get("box")
    coords = [finite(c, -1e6, 1e6) for c in box] if isinstance(box, (list, tuple)) and len(box) == 4 else []
    if len(coords) != 4 or None in coords:
        return None
    x1, y1, x2, y2 = coords
    return x1, y1, x2, y2  # type: ignore[return-value]


def anonymise_frame(
    image: np.ndarray,
    vehicles: Sequence[Mapping[str, Any]],
    limit_kmh: float | None,
    privacy: PrivacySettings | None,
    scale: float = 1.0,
) -> np.ndarray:
    """A copy of ``image`` with the vehicles pixelated as ``privacy.mode`` says (pure; None or ``off``: a plain
    copy). The speeding vehicles are the ones kept, as the offender is in evidence: they are what the operator
    acts on. ``scale`` maps source-pixel boxes onto ``image``."""
    if privacy is None or privacy.mode == "off":
        return image.copy()
    boxes = [(v, b) for v in vehicles if (b := vehicle_box(v)) is not None]
    scaled = [(v, tuple(c * scale for c in b)) for v, b in boxes]
    return anonymise_boxes(
        image,
        [b for v, b in scaled if is_speeding(v, limit_kmh)],
        [b for _, b in scaled],
        privacy.mode,
        blocks_across=privacy.blocks_across,
        min_block_px=privacy.min_block_px,
    )


def dashed_rectangle(
    image: np.ndarray,
    p1: tuple[int, int],
    p2: tuple[int, int],
    color: tuple[int, int, int],
    thickness: int,
    dash: int = DASH_PX,
    gap: int = GAP_PX,
) -> None:
    """Draw the outline of the rectangle p1-p2 on ``image`` (in place) as dashes of ``dash`` px ``gap`` px apart."""
    (x1, y1), (x2, y2) = p1, p2
    dash, gap = max(1, dash), max(1, gap)
    for a, b, fixed, horizontal in ((x1, x2, y1, True), (x1, x2, y2, True), (y1, y2, x1, False), (y1, y2, x2, False)):
        for start in range(a, b + 1, dash + gap):
            end = min(start + dash - 1, b)
            if horizontal:
                cv2.line(image, (start, fixed), (end, fixed), color, thickness)
            else:
                cv2.line(image, (fixed, start), (fixed, end), color, thickness)


def _px(p: Sequence[float], scale: float) -> tuple[int, int] | None:
    """A source-pixel point scaled onto the drawn image as OpenCV's ints (None: not finite / absurd)."""
    x, y = finite(p[0], -MAX_DRAW_PX, MAX_DRAW_PX), finite(p[1], -MAX_DRAW_PX, MAX_DRAW_PX)
    if x is None or y is None:
        return None
    return round(x * scale), round(y * scale)


def draw_label(
    image: np.ndarray, text: str, at: tuple[int, int], color: tuple[int, int, int], font_scale: float
) -> None:
    """``text`` in white on a ``color`` box with its bottom-left corner at ``at``, moved inside the image."""
    h, w = image.shape[:2]
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
    x = max(0, min(w - tw - 4, at[0]))
    y = max(th + base, min(h - base - 1, at[1]))
    cv2.rectangle(image, (x, y - th - base), (x + tw + 4, y + base - 2), color, cv2.FILLED)
    cv2.putText(image, text, (x + 2, y - 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, WHITE, 1, cv2.LINE_AA)


def draw_geometry(image: np.ndarray, geometry: CameraOverlay, scale: float = 1.0) -> None:
    """Draw a camera's lanes, zones and counting lines on ``image`` (in place; source pixels scaled by ``scale``).

    Lanes: outline, id and an arrow along the direction of travel. Zones: outline and ``id (purpose)``. Lines:
    the segment, its id at A, and from its midpoint one arrow per direction, each named at its tip (the arrow
    named ``directions[0]`` points the way the vehicles it counts go). Anything not finite is skipped."""
    h, w = image.shape[:2]
    size = max(w / 1280.0, 0.45)
    thickness = max(1, round(2 * size))
    font_scale = 0.5 * size
    arrow = ARROW_PX * size
    for area, color in [*((a, LANE_COLOR) for a in geometry.lanes), *((z, ZONE_COLOR) for z in geometry.zones)]:
        pts = [_px(p, scale) for p in area.polygon]
        anchor = _px(area.anchor, scale)
        if None in pts or anchor is None or len(pts) < 3:
            continue
        poly = np.asarray(pts, dtype=np.int32).reshape(-1, 1, 2)
        cv2.polylines(image, [poly], isClosed=True, color=color, thickness=1)
        if area.heading is not None:
            tip = (round(anchor[0] + area.heading[0] * arrow), round(anchor[1] + area.heading[1] * arrow))
            cv2.arrowedLine(image, anchor, tip, color, thickness, tipLength=0.3)
        draw_label(image, area.label[:60], (anchor[0] + 4, anchor[1] - 4), color, font_scale)
    for line in geometry.lines:
        a, b, mid = _px(line.a, scale), _px(line.b, scale), _px(line.mid, scale)
        if a is None or b is None or mid is None:
            continue
        cv2.line(image, a, b, LINE_COLOR, thickness)
        ux, uy = line.towards_first
        for sign, name in ((1, line.directions[0]), (-1, line.directions[1])):
            tip = (round(mid[0] + sign * ux * arrow), round(mid[1] + sign * uy * arrow))
            cv2.arrowedLine(image, mid, tip, LINE_COLOR, thickness, tipLength=0.3)
            (tw, th), _ = cv2.getTextSize(name, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
            # Beyond the tip, centred on the arrow's axis.
            at = (round(tip[0] + sign * ux * (tw / 2 + 4) - tw / 2), round(tip[1] + sign * uy * (th + 4) + th / 2))
            draw_label(image, name[:60], at, LINE_COLOR, font_scale)
        draw_label(image, line.id[:60], (a[0] + 4, a[1] - 6), LINE_COLOR, font_scale)


def draw_overlays(
    image: np.ndarray,
    vehicles: Sequence[Mapping[str, Any]],
    limit_kmh: float | None,
    *,
    roi: Sequence[tuple[float, float]] | None = None,
    caption: str | None = None,
    scale: float = 1.0,
    predicted: bool = False,
    privacy: PrivacySettings | None = None,
    geometry: CameraOverlay | None = None,
) -> np.ndarray:
    """A copy of ``image`` (BGR) with each vehicle's box, track id, class and speed drawn on it.

    Speeding vehicles (flagged ``over`` or faster than ``limit_kmh``) are red, others green. ``scale``
    maps source-pixel boxes and ROI onto ``image`` when it was resized from the source. ``predicted``: the
    frame's boxes are the tracker's predictions between detector runs; their outlines are dashed (ids and
    speeds shown as on detected frames). ``privacy``: the road users are first pixelated as
    :func:`anonymise_frame` says (the overlays drawn after stay legible). ``geometry``: the camera's counting
    lines, lanes and zones, drawn under the boxes (:func:`draw_geometry`).
    """
    # a copy either way: the reader keeps its last decoded frame; never draw on it
    out = anonymise_frame(image, vehicles, limit_kmh, privacy, scale)
    h, w = out.shape[:2]
    size = max(w / 1280.0, 0.45)  # line and text size follow the resolution
    thickness = max(1, round(2 * size))
    font_scale = 0.6 * size
    if roi:
        pts = (np.asarray(roi, dtype=float) * scale).round().astype(np.int32).reshape(-1, 1, 2)
        cv2.polylines(out, [pts], isClosed=True, color=YELLOW, thickness=1, lineType=cv2.LINE_AA)
    if geometry:
        draw_geometry(out, geometry, scale)
    for v in vehicles:
        coords = vehicle_box(v)
        if coords is None:
            continue  # no box, or not four sane numbers: nothing to draw
        x1, y1, x2, y2 = (round(c * scale) for c in coords)
        x1, x2 = sorted((max(0, min(w - 1, x1)), max(0, min(w - 1, x2))))
        y1, y2 = sorted((max(0, min(h - 1, y1)), max(0, min(h - 1, y2))))
        color = RED if is_speeding(v, limit_kmh) else GREEN
        if predicted:
            dashed_rectangle(out, (x1, y1), (x2, y2), color, thickness, round(DASH_PX * size), round(GAP_PX * size))
        else:
            cv2.rectangle(out, (x1, y1), (x2, y2), color, thickness)
        label = vehicle_label(v)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        ty = y1 - 4 if y1 - th - base - 4 >= 0 else min(h - 1, y2 + th + 4)  # above the box, else below
        cv2.rectangle(out, (x1, ty - th - base), (min(w - 1, x1 + tw + 4), ty + base - 2), color, cv2.FILLED)
        cv2.putText(out, label, (x1 + 2, ty - 2), cv2.FONT_HERSHEY_SIMPLEX, font_scale, WHITE, 1, cv2.LINE_AA)
    if caption:
        (tw, th), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        cv2.rectangle(out, (0, 0), (tw + 10, th + base + 8), BLACK, cv2.FILLED)
        cv2.putText(out, caption, (5, th + 4), cv2.FONT_HERSHEY_SIMPLEX, font_scale, WHITE, 1, cv2.LINE_AA)
    return out


def placeholder_image(text: str, width: int = 640, height: int = 360) -> np.ndarray:
    img = np.full((height, width, 3), 40, dtype=np.uint8)
    cv2.putText(img, text, (20, height // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.7, WHITE, 1, cv2.LINE_AA)
    return img


def frame_caption(camera_id: str, frame: LiveFrame) -> str:
    caption = f"{camera_id}  frame {frame.frame_index}  {clock(frame.capture_ts)}"
    return caption + (f"  predicted (detect every {frame.stride})" if frame.predicted else "")


# -- frame pixels -----------------------------------------------------------------------------------------
class NoImage(Exception):
    """The frame is shown without its image (the message names no readable, allowed source); str: why."""


def frame_location(
    frame: LiveFrame, camera: Camera, roots: Sequence[Path], segment_dir: Path | None
) -> tuple[Path, int, float]:
    """(file, index in it, pts in it) of the frame's pixels; raises :class:`NoImage` when they may not be read.

    ``frame.source`` comes from the results topic: its path must lie below one of ``roots`` (symlinks
    resolved) and be the camera's own source, as the job checks its frame references (the camera's file, or
    for a live camera a segment directly in ``segment_dir``). A frame without ``source`` (older producers)
    is read from the camera's configured file at its own index / pts; a live camera has no such file."""
    if frame.source is None:
        try:
            return camera.source_path(), frame.frame_index, frame.pts_s
        except ValueError:
            raise NoImage("live camera frame without a source") from None
    try:
        path = uri_to_path(frame.source.uri)
    except SourceError:
        raise NoImage("source is not a file URI") from None
    if not path.is_absolute() or not is_under_roots(path, list(roots)):
        raise NoImage("source outside the allowed roots")
    real = path.resolve()
    if camera.is_live:
        own = segment_dir is not None and real.parent == segment_dir.resolve()
    else:
        own = real == camera.source_path().resolve()
    if not own:
        raise NoImage("source is not this camera's")
    return real, frame.source.index, frame.source.pts_s


class FrameImages:
    """A camera renderer's access to frame pixels: a few open sequential readers (the current segment, and the
    next one while it starts), sources checked by :func:`frame_location`, open failures remembered briefly.
    Not thread-safe (one renderer thread)."""

    def __init__(
        self,
        camera: Camera,
        roots: Sequence[Path],
        segment_dir: Path | None = None,
        *,
        max_open: int = 3,
        retry_open_s: float = 1.0,
    ) -> None:
        self.camera = camera
        self.roots = [r.resolve() for r in roots]
        self.segment_dir = segment_dir
        self.max_open = max_open
        self.retry_open_s = retry_open_s
        self.opened = 0  # readers opened (tests, observability)
        self._readers: OrderedDict[Path, FrameReader] = OrderedDict()
        self._failed: dict[Path, tuple[float, str]] = {}  # path -> (retry after, monotonic; why)
        self._checked: OrderedDict[str | None, Path | str] = OrderedDict()  # source uri -> path | why
        self._logged: set[str] = set()

    def _note(self, why: str, detail: str) -> None:
        """Log each kind of problem once per renderer (a hostile or broken stream repeats it every frame)."""
        if why not in self._logged:
            self._logged.add(why)
            log.warning("camera %s: frames shown without their image: %s (%s)", self.camera.id, why, detail)

    def _reader(self, path: Path) -> FrameReader:
        reader = self._readers.pop(path, None)
        if reader is None:
            failed = self._failed.get(path)
            if failed is not None and time.monotonic() < failed[0]:
                raise NoImage(failed[1])
            try:
                reader = FrameReader(path, self.camera.fps)
            except (SourceMissing, SourceUnreadable) as exc:
                why = "video source missing" if isinstance(exc, SourceMissing) else "video source unreadable"
                self._failed[path] = (time.monotonic() + self.retry_open_s, why)
                while len(self._failed) > 64:
                    self._failed.pop(next(iter(self._failed)))
                self._note(why, str(exc))
                raise NoImage(why) from None
            self._failed.pop(path, None)
            self.opened += 1
        self._readers[path] = reader
        while len(self._readers) > self.max_open:
            _, old = self._readers.popitem(last=False)
            old.close()
        return reader

    def read(self, frame: LiveFrame) -> np.ndarray:
        """The frame's BGR image. Raises :class:`NoImage` (show the frame without it), or a
        :class:`~trafficstream.video.SourceError` / ValueError / OSError when the frame is not in its file
        (skip it)."""
        key = frame.source.uri if frame.source else None  # None: the camera's own file
        checked = self._checked.pop(key, None)
        if checked is None:  # resolving paths costs system calls: check each file once, not every frame
            try:
                checked = frame_location(frame, self.camera, self.roots, self.segment_dir)[0]
            except NoImage as exc:
                checked = str(exc)
                self._note(checked, (key or "no source")[:200])
        self._checked[key] = checked
        while len(self._checked) > 256:
            self._checked.popitem(last=False)
        if isinstance(checked, str):
            raise NoImage(checked)
        path = checked
        index, pts_s = (frame.source.index, frame.source.pts_s) if frame.source else (frame.frame_index, frame.pts_s)
        reader = self._reader(path)
        try:
            return reader.read(index, pts_s)
        except FrameNotFound:
            # Perhaps read while still being written: its end is cached in the reader; reopen next time.
            self._readers.pop(path, None)
            reader.close()
            raise

    def close(self) -> None:
        for reader in self._readers.values():
            reader.close()
        self._readers.clear()


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


def mjpeg_part(jpeg: bytes, headers: Mapping[str, str] | None = None) -> bytes:
    """One part of a multipart/x-mixed-replace stream (extra headers: frame index, capture time)."""
    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg)}\r\n"
    for k, v in (headers or {}).items():
        head += f"{k}: {v}\r\n"
    return head.encode("ascii") + b"\r\n" + jpeg + b"\r\n"


# -- streaming ------------------------------------------------------------------------------------------
@dataclass
class StreamStats:
    """What a camera's video renderer has sent (health panel, benchmarks, tests)."""

    camera_id: str
    frames_sent: int = 0
    skipped: int = 0  # processed frames not shown: the renderer was late, or they were not decodable
    playout_delay_s: float = 0.0
    predicted_sent: int = 0  # frames shown with the tracker's predicted boxes
    no_image: int = 0  # frames shown without their image (no allowed, readable source)
    budget_s: float | None = None  # the camera's latency budget: the playout delay never exceeds it
    last_frame_index: int | None = None
    last_capture_ts: float | None = None
    recent_sent: deque[float] = field(default_factory=lambda: deque(maxlen=300))  # wall times of sends
    recent_delay_s: deque[float] = field(default_factory=lambda: deque(maxlen=300))  # send minus capture time

    def record(self, frame: LiveFrame, now: float) -> None:
        self.frames_sent += 1
        self.predicted_sent += frame.predicted
        self.last_frame_index, self.last_capture_ts = frame.frame_index, frame.capture_ts
        self.recent_sent.append(now)
        self.recent_delay_s.append(now - frame.capture_ts)

    def lag_s(self, now: float | None = None) -> float | None:
        """Now minus the capture time of the newest frame on screen (None before the first)."""
        if self.last_capture_ts is None:
            return None
        return (time.time() if now is None else now) - self.last_capture_ts

    def fps(self, window_s: float = 3.0, now: float | None = None) -> float:
        now = time.time() if now is None else now
        return sum(1 for t in list(self.recent_sent) if t >= now - window_s) / window_s


class CameraRenderer:
    """Renders one camera's processed frames with overlays into MJPEG parts, shared by all its viewers.

    One sequential FrameReader per camera, however many people watch. Playout is a jitter buffer: results
    arrive in micro-batch bursts, so frames are shown at capture time + D, where D is the largest lag at
    arrival (arrival time minus capture time of a burst's oldest frame) over the last ``lag_window_s``,
    plus a margin, but never more than ``budget_s`` (the camera's capture -> result latency budget) less the
    margin and the time a frame takes to render. The video then plays at the camera's rate without stalling
    between bursts; frames that arrive later than that, or that rendering cannot keep up with, are skipped: it
    jumps to the newest due frame, so the delay stays within the budget (or at the pipeline's own lag) instead
    of growing.
    """

    def __init__(
        self,
        camera: Camera,
        buffers: LiveBuffers,
        stop_event: threading.Event,
        *,
        jpeg_quality: int = 75,
        max_width: int | None = 960,
        lag_window_s: float = 10.0,
        margin_s: float = 0.15,
        idle_stop_s: float = 5.0,
        roots: Sequence[Path] = (),
        segment_dir: Path | None = None,
        budget_s: float | None = None,
        privacy: PrivacySettings | None = None,
    ) -> None:
        self.camera = camera
        self.privacy = privacy  # road users pixelated on the live video (None: as they are)
        self.roots = list(roots)
        self.segment_dir = segment_dir
        self.budget_s = budget_s
        self.buffers = buffers
        self.stop_event = stop_event
        self.jpeg_quality = jpeg_quality
        self.max_width = max_width
        self.lag_window_s = lag_window_s
        self.margin_s = margin_s
        self.idle_stop_s = idle_stop_s
        self.stats = StreamStats(camera.id, budget_s=budget_s)
        try:  # the configured lines, lanes and zones in source pixels: projected once, drawn on every frame
            self.geometry = camera_overlay(camera)
        except Exception:  # a video without them beats no video
            log.exception("camera %s: counting lines, lanes and zones not drawn", camera.id)
            self.geometry = CameraOverlay()
        self._render_s = 0.0  # moving average of the time one frame takes to decode, draw and encode
        self._last_size: tuple[int, int] | None = None  # (width, height) of the last decoded image
        self.viewers = 0
        self._cond = threading.Condition()
        self._seq = 0
        self._part: bytes | None = None
        self._thread: threading.Thread | None = None

    # -- viewers ------------------------------------------------------------------------------------
    def parts(self, keepalive_s: float = 2.0) -> Iterator[bytes]:
        """One viewer's stream: every new part, the last one again as keepalive when nothing new comes."""
        with self._cond:
            self.viewers += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"video-{self.camera.id}", daemon=True)
                self._thread.start()
        seen = -1
        try:
            while not self.stop_event.is_set():
                with self._cond:
                    self._cond.wait_for(partial(self._changed_since, seen), timeout=keepalive_s)
                    part, seen = self._part, self._seq
                if part is not None:
                    yield part  # raises GeneratorExit here when the client has gone
        finally:
            with self._cond:
                self.viewers -= 1

    def _changed_since(self, seq: int) -> bool:
        """``wait_for`` predicate (called with the condition held): a new part, or stopping."""
        return self._seq != seq or self.stop_event.is_set()

    def _publish(self, part: bytes) -> None:
        with self._cond:
            self._part = part
            self._seq += 1
            self._cond.notify_all()

    def _placeholder(self, text: str) -> None:
        self._publish(mjpeg_part(encode_jpeg(placeholder_image(f"{self.camera.id}: {text}"))))

    # -- rendering ----------------------------------------------------------------------------------
    def _run(self) -> None:
        images = FrameImages(self.camera, self.roots, self.segment_dir)
        log.debug("video renderer of %s started", self.camera.id)
        try:
            self._render(images)
        except Exception:  # a broken renderer must not take the app down; the next viewer restarts it
            log.exception("video renderer of %s failed", self.camera.id)
        finally:
            images.close()
            with self._cond:
                if self._thread is threading.current_thread():
                    self._thread = None
            log.debug("video renderer of %s stopped after %d frames", self.camera.id, self.stats.frames_sent)

    def _should_run(self, idle_since: list[float]) -> bool:
        """Keep rendering while watched (and a few seconds after, for a page reload)."""
        with self._cond:
            if not self.stop_event.is_set():
                if self.viewers > 0:
                    idle_since.clear()
                    return True
                if not idle_since:
                    idle_since.append(time.monotonic())
                if time.monotonic() - idle_since[0] < self.idle_stop_s:
                    return True
            # Decided under the lock: a viewer arriving from now on starts a fresh renderer.
            self._thread = None
            return False

    def playout_delay(self, lag_s: float) -> float:
        """Capture -> shown delay for a pipeline lag of ``lag_s``: lag + margin, within the budget (less the
        margin and the time a frame takes to render, so that the frame on screen stays within it)."""
        delay = lag_s + self.margin_s
        if self.budget_s is not None:
            delay = min(delay, max(0.0, self.budget_s - self.margin_s - self._render_s))
        return delay

    def _image(self, images: FrameImages, frame: LiveFrame) -> tuple[np.ndarray, float, bool] | None:
        """(image to draw on, scale from source pixels, real image?); None: skip the frame."""
        try:
            image = images.read(frame)
        except NoImage as exc:
            width, height = self._last_size or DEFAULT_FRAME_SIZE
            scale = min(1.0, self.max_width / width) if self.max_width else 1.0
            return placeholder_image(f"no image: {exc}", round(width * scale), round(height * scale)), scale, False
        except (SourceError, ValueError, OverflowError, OSError) as exc:  # absurd index / pts: skip, go on
            log.debug("camera %s: frame %d not decodable: %s", self.camera.id, frame.frame_index, exc)
            return None
        self._last_size = (image.shape[1], image.shape[0])
        scale = 1.0
        if self.max_width and image.shape[1] > self.max_width:
            # About the size the page shows it at: less to encode here and to decode in every browser.
            scale = self.max_width / image.shape[1]
            size = (self.max_width, round(image.shape[0] * scale))
            image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
        return image, scale, True

    def _render(self, images: FrameImages) -> None:
        lags: deque[tuple[float, float]] = deque()  # (monotonic arrival time, lag at arrival) per burst
        newest_seen: FrameKey | None = None
        last_key: FrameKey | None = None  # last frame shown
        idle_since: list[float] = []
        if self.buffers.latest_frame(self.camera.id) is None:
            self._placeholder("waiting for processed frames...")
        while self._should_run(idle_since):
            newest = self.buffers.latest_frame(self.camera.id)
            if newest is None:
                self.stop_event.wait(0.05)
                continue
            now_wall, now_mono = time.time(), time.monotonic()
            if newest_seen is None or newest.key > newest_seen:
                if newest_seen is not None:  # a burst arrived: how late is its oldest frame?
                    arrived = self.buffers.frames_after(self.camera.id, newest_seen)
                    oldest = min((f.capture_ts for f in arrived), default=newest.capture_ts)
                    lags.append((now_mono, now_wall - oldest))
                newest_seen = newest.key
            while lags and lags[0][0] < now_mono - self.lag_window_s:
                lags.popleft()
            # Before the first burst (or after a long silence) the newest result's age is all we know.
            lag = max(lag for _, lag in lags) if lags else now_wall - newest.capture_ts
            delay = self.playout_delay(lag)
            self.stats.playout_delay_s = delay
            due_before = now_wall - delay
            pending = self.buffers.frames_after(self.camera.id, last_key)
            due = [f for f in pending if f.capture_ts <= due_before]
            if not due:
                wait = (pending[0].capture_ts - due_before) if pending else 0.05
                self.stop_event.wait(min(max(wait, 0.001), 0.05))
                continue
            frame = due[-1]  # the newest due frame; older due ones are late, skip them
            self.stats.skipped += len(due) - 1
            last_key = frame.key
            t0 = time.perf_counter()
            got = self._image(images, frame)
            if got is None:
                self.stats.skipped += 1
                continue
            image, scale, real = got
            drawn = draw_overlays(
                image,
                frame.vehicles,
                self.camera.speed_limit_kmh,
                roi=self.camera.roi if real else None,
                caption=frame_caption(self.camera.id, frame),
                scale=scale,
                predicted=frame.predicted,
                privacy=self.privacy if real else None,
                geometry=self.geometry if real else None,
            )
            headers = {
                "X-Frame-Index": str(frame.frame_index),
                "X-Capture-Ts": f"{frame.capture_ts:.6f}",
                "X-Analysis": frame.analysis,
                "X-Image": "1" if real else "0",
            }
            self._publish(mjpeg_part(encode_jpeg(drawn, self.jpeg_quality), headers))
            self._render_s = 0.9 * self._render_s + 0.1 * (time.perf_counter() - t0)
            self.stats.no_image += not real
            self.stats.record(frame, time.time())


class MjpegStreamer:
    """MJPEG streams of processed frames with overlays: one renderer per camera, any number of viewers."""

    def __init__(
        self, settings: Settings, buffers: LiveBuffers, stop_event: threading.Event, **renderer_options: Any
    ) -> None:
        self.settings = settings
        self.buffers = buffers
        self.stop_event = stop_event
        self.renderer_options = renderer_options
        self._lock = threading.Lock()
        self._renderers: dict[str, CameraRenderer] = {}

    def renderer(self, camera: Camera) -> CameraRenderer:
        with self._lock:
            r = self._renderers.get(camera.id)
            if r is None:
                options = {
                    "roots": self.settings.allowed_roots,
                    "segment_dir": self.settings.segment_dir(camera.id),
                    "budget_s": self.settings.budget_s(camera),
                    "privacy": self.settings.privacy if self.settings.privacy.live_video else None,
                    **self.renderer_options,
                }
                r = self._renderers[camera.id] = CameraRenderer(camera, self.buffers, self.stop_event, **options)
            return r

    def stream(self, camera: Camera) -> Iterator[bytes]:
        """Generator of MJPEG parts for one viewer; ends when the client goes away or the app stops."""
        return self.renderer(camera).parts()

    def close(self) -> None:
        """Wake every viewer so its stream ends now (call after setting the stop event)."""
        with self._lock:
            renderers = list(self._renderers.values())
        for r in renderers:
            with r._cond:
                r._cond.notify_all()

    def active_streams(self) -> list[StreamStats]:
        """Stats of the cameras somebody is watching."""
        with self._lock:
            renderers = list(self._renderers.values())
        return [r.stats for r in renderers if r.viewers > 0]


# -- snapshots ------------------------------------------------------------------------------------------
def snapshot_url(evidence_uri: str | None, evidence_root: Path) -> str | None:
    """The dashboard URL of an evidence JPEG, or None when it is not below the evidence root."""
    if not evidence_uri:
        return None
    try:
        path = uri_to_path(evidence_uri)
    except SourceError:
        return None
    root = evidence_root.resolve()
    if not path.is_absolute():
        path = root / path
    if not is_under_roots(path, [root]):
        return None
    return "/snapshot/" + path.resolve().relative_to(root).as_posix()


def resolve_snapshot(relpath: str, evidence_root: Path) -> Path:
    """The file for ``/snapshot/<relpath>``; raises NotFound for anything outside the evidence root."""
    root = evidence_root.resolve()
    candidate = root / relpath
    if (
        not relpath
        or Path(relpath).is_absolute()
        or ".." in Path(relpath).parts
        or candidate.suffix.lower() not in SNAPSHOT_SUFFIXES
        or not is_under_roots(candidate, [root])  # resolves symlinks too
        or not candidate.is_file()
    ):
        raise NotFound()
    return candidate.resolve()


def snapshot_cache_control(private: bool) -> str:
    """Evidence shows number plates: behind auth no shared cache (proxy, CDN) and no disk cache may keep it."""
    return "private, no-store" if private else "public, max-age=3600"


def register_routes(server: flask.Flask, settings: Settings, streamer: MjpegStreamer, *, private: bool = False) -> None:
    """Video and snapshot routes. ``private``: the dashboard requires auth (responses must not be cached)."""
    cameras = {c.id: c for c in settings.cameras}

    @server.get("/video/<camera_id>.mjpg")
    def video(camera_id: str) -> flask.Response:
        camera = cameras.get(camera_id)
        if camera is None:
            raise NotFound()
        return flask.Response(
            streamer.stream(camera),
            mimetype=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
            headers={
                "Cache-Control": "private, no-cache, no-store" if private else "no-cache, no-store",
                "X-Accel-Buffering": "no",
            },
            direct_passthrough=True,
        )

    @server.get("/snapshot/<path:relpath>")
    def snapshot(relpath: str) -> flask.Response:
        path = resolve_snapshot(relpath, settings.evidence_root)
        response = flask.send_file(path, max_age=None if private else 3600, etag=not private)
        response.headers["Cache-Control"] = snapshot_cache_control(private)
        response.headers["X-Content-Type-Options"] = "nosniff"
        return response
