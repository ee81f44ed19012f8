"""Video decoding shared by ingest, the streaming job and the dashboard: frames in presentation order, with
container timestamps.

Two access patterns:
- :class:`VideoFileSource` walks a whole source once (the ingest worker: one frame reference per frame).
- :class:`FrameReader` serves "give me the frame at this timestamp" to the streaming job and the dashboard with
  one open decoder per source reading consecutive frames sequentially; it seeks to the keyframe before the
  frame asked for only when that skips decoding (backwards, or past a keyframe ahead: a replayed micro-batch,
  another worker's slice, frames shed), never per frame.

Failures are :class:`SourceError` subclasses whose ``reason`` is the dead-letter reason code. RTSP / live
sources can implement the same iterator contract later.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import av
import numpy as np

log = logging.getLogger(__name__)


class SourceError(RuntimeError):
    """Base class: ``reason`` is the dead-letter reason code."""

    reason = "source_unreadable"


class SourceMissing(SourceError):
    reason = "source_missing"


class SourceUnreadable(SourceError):
    reason = "source_unreadable"


class FrameNotFound(SourceError):
    reason = "frame_not_found"


class FrameMismatch(SourceError):
    """The frame at the referenced timestamp has another index (or size): the reference lies."""

    reason = "frame_mismatch"


def uri_to_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme in ("", "file"):
        return Path(unquote(parsed.path) if parsed.scheme else uri)
    raise SourceUnreadable(f"unsupported source scheme {parsed.scheme!r} in {uri!r}")


def is_under_roots(path: Path, roots: list[Path]) -> bool:
    """True when ``path`` (symlinks resolved, so ``..`` tricks fail) lies below one of ``roots``."""
    real = path.resolve()
    return any(real == root or root in real.parents for root in (r.resolve() for r in roots))


@dataclass(frozen=True, slots=True)
class SourceInfo:
    uri: str
    width: int
    height: int
    fps: float
    frame_count: int  # container's estimate; may be 0 when unknown
    duration_s: float | None = None  # container's estimate; None when unknown


@dataclass(frozen=True, slots=True)
class FramePosition:
    index: int
    pts_s: float


@dataclass(frozen=True, slots=True)
class VideoFrame:
    index: int
    pts_s: float
    image: np.ndarray  # BGR uint8, HxWx3


def _open(path: Path) -> av.container.InputContainer:
    if not path.is_file():
        raise SourceMissing(f"video not found: {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError) as exc:
        raise SourceUnreadable(f"cannot open {path}: {exc}") from None
    if not container.streams.video:
        container.close()
        raise SourceUnreadable(f"no video stream in {path}")
    return container


def _pts_seconds(frame: av.VideoFrame, stream: av.video.stream.VideoStream, index: int, fps: float) -> float:
    if frame.pts is not None and stream.time_base is not None:
        return float(frame.pts * stream.time_base)
    return index / fps  # containers without timestamps: fall back to the nominal rate


def _duration_s(container: av.container.InputContainer, stream: av.video.stream.VideoStream) -> float | None:
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1e6  # AV_TIME_BASE
    return None


@dataclass(frozen=True, slots=True)
class KeyIndex:
    """Where a file can be entered: every frame's pts in presentation order (stream time base) and the
    presentation indices of its keyframes. Built from the packets alone (no decoding)."""

    pts: np.ndarray  # int64, strictly increasing: position = frame index
    keyframes: np.ndarray  # frame indices of keyframes, increasing

    def keyframe_at_or_before(self, frame_index: int) -> int | None:
        i = int(np.searchsorted(self.keyframes, frame_index, side="right")) - 1
        return int(self.keyframes[i]) if i >= 0 else None

    def index_of(self, pts: int) -> int | None:
        i = int(np.searchsorted(self.pts, pts))
        return i if i < len(self.pts) and int(self.pts[i]) == pts else None


def key_index(path: Path) -> KeyIndex | None:
    """The file's :class:`KeyIndex`; None when frames cannot be found exactly by their packets (a packet
    without pts, two packets with one pts, no keyframe): such files are only read sequentially."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            if stream.time_base is None:
                return None
            pts: list[int] = []
            keys: list[int] = []
            for packet in container.demux(stream):
                if packet.size == 0:
                    continue  # the demuxer's final empty packet
                if packet.pts is None:
                    return None
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
    except (av.error.FFmpegError, OSError, IndexError):
        return None
    order = np.sort(np.asarray(pts, dtype=np.int64))
    if not len(order) or not keys or np.any(np.diff(order) <= 0):
        return None
    return KeyIndex(order, np.searchsorted(order, np.sort(np.asarray(keys, dtype=np.int64))))


class VideoFileSource:
    """Iterate a video file's frames in presentation order (context manager)."""

    def __init__(self, path: str | Path, fps_override: float | None = None) -> None:
        self.path = Path(path)
        self.fps_override = fps_override
        self._container = _open(self.path)
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        rate = self._stream.average_rate or self._stream.guessed_rate
        self.info = SourceInfo(
            uri=self.path.resolve().as_uri(),
            width=self._stream.codec_context.width,
            height=self._stream.codec_context.height,
            fps=float(fps_override or (rate if rate else 25.0)),
            frame_count=int(self._stream.frames or 0),
            duration_s=_duration_s(self._container, self._stream),
        )
        self._t0: float | None = None

    def __enter__(self) -> VideoFileSource:  # not typing.Self: that needs Python 3.11
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self._container.close()

    def positions(self) -> Iterator[FramePosition]:
        """Each frame's index and timestamp, decoded but never converted to an image (what a frame reference
        needs: the conversion costs about as much as the decode)."""
        for index, pts_s, _ in self.decoded():
            yield FramePosition(index, pts_s)

    def frames(self) -> Iterator[VideoFrame]:
        for index, pts_s, frame in self.decoded():
            yield VideoFrame(index, pts_s, to_bgr(frame, self.path))

    def decoded(self) -> Iterator[tuple[int, float, av.VideoFrame]]:
        """(index, pts_s, decoded frame) without the conversion to BGR: readers that pass over most frames
        convert only the ones they return (the conversion costs about as much as the decode)."""
        try:
            for index, frame in enumerate(self._container.decode(self._stream)):
                yield index, self._timestamp(frame, index), frame
        except av.error.FFmpegError as exc:
            raise SourceUnreadable(f"decode error in {self.path}: {exc}") from None

    def decoded_from(self, keys: KeyIndex, frame_index: int) -> Iterator[tuple[int, float, av.VideoFrame]]:
        """Like :meth:`decoded` from the keyframe ``frame_index`` of ``keys`` on (a seek, then decoding):
        indices come from the key index, timestamps stay relative to the file's first frame."""
        time_base = self._stream.time_base
        if time_base is None:  # key_index() refuses such files; a file replaced under the reader gets here
            raise SourceUnreadable(f"no time base to seek by in {self.path}")
        self._t0 = float(int(keys.pts[0]) * time_base)
        try:
            self._container.seek(int(keys.pts[frame_index]), backward=True, any_frame=False, stream=self._stream)
            for frame in self._container.decode(self._stream):
                index = None if frame.pts is None else keys.index_of(frame.pts)
                if index is None:
                    raise SourceUnreadable(f"frame without a known timestamp after a seek in {self.path}")
                yield index, self._timestamp(frame, index), frame
        except av.error.FFmpegError as exc:
            raise SourceUnreadable(f"decode error in {self.path}: {exc}") from None

    def _timestamp(self, frame: av.VideoFrame, index: int) -> float:
        if self.fps_override:
            return index / self.fps_override
        t = _pts_seconds(frame, self._stream, index, self.info.fps)
        # Timestamps are relative to the first frame: containers may start at a non-zero pts.
        if self._t0 is None:
            self._t0 = t
        return t - self._t0


def to_bgr(frame: av.VideoFrame, path: Path) -> np.ndarray:
    try:
        return frame.to_ndarray(format="bgr24")
    except av.error.FFmpegError as exc:
        raise SourceUnreadable(f"cannot convert a frame of {path}: {exc}") from None


class _Decoded:
    """A decoded frame whose BGR image is made on first use."""

    __slots__ = ("index", "pts_s", "_frame", "_image", "_path")

    def __init__(self, index: int, pts_s: float, frame: av.VideoFrame, path: Path) -> None:
        self.index, self.pts_s, self._path = index, pts_s, path
        self._frame: av.VideoFrame | None = frame
        self._image: np.ndarray | None = None

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            assert self._frame is not None
            self._image = to_bgr(self._frame, self._path)
            self._frame = None
        return self._image


class FrameReader:
    """Random access by (frame index, pts) over one open decoder, sequential in the common case. A frame
    behind the decoder, or past a keyframe ahead of it, is reached by seeking to the keyframe before it (the
    file's :class:`KeyIndex`, built from its packets on the first jump) instead of decoding everything
    between; when the frames decoded after a seek disagree with the packet index (a damaged file), the frame
    is looked up again from the start and the reader stops seeking in that file.

    Frames are found by presentation timestamp (within half a frame) unless the camera overrides the fps, in
    which case the container's timestamps are not trusted and frames are found by index. Either way the frame
    found must carry *both* the referenced index and timestamp, else :class:`FrameMismatch`: a reference with
    a bogus index but a real timestamp must not pass as that frame. Past the end of the source is answered
    from what the reader knows (the exact frame count once it has decoded to the end, the container's
    duration before that), not by decoding the whole file again.
    """

    def __init__(self, path: str | Path, fps_override: float | None = None) -> None:
        self.path = Path(path)
        self.fps_override = fps_override
        self.seeks = 0  # how often we had to seek or reopen (observability / tests)
        self.decoded = 0
        self.total_frames: int | None = None  # exact, once a decode reached the end
        self._keys: KeyIndex | None | bool = False  # False: not built yet (built on the first jump)
        self._seeked = False  # the decoder entered at a keyframe: a frame that does not match falls back
        self._source: VideoFileSource | None = None
        self._iter: Iterator[tuple[int, float, av.VideoFrame]] | None = None
        self._last: _Decoded | None = None
        self._open()

    def _open(self) -> None:
        if self._source is not None:
            self._source.close()
        self._source = VideoFileSource(self.path, self.fps_override)
        self._iter = self._source.decoded()
        self._last = None
        self._seeked = False

    def _jump(self, frame_index: int) -> bool:
        """Enter the decoder at the keyframe at or before ``frame_index`` when that decodes fewer frames than
        going on from where it is (or restarting, when going back). False: read sequentially instead."""
        if self.fps_override:  # frames are found by index, the container's timestamps are not trusted
            return False
        if self._keys is False:
            self._keys = key_index(self.path)
        keys = self._keys
        if not isinstance(keys, KeyIndex) or frame_index >= len(keys.pts):
            return False
        key = keys.keyframe_at_or_before(frame_index)
        here = self._last.index if self._last is not None else -1
        if key is None or key <= 0 or (here < frame_index and key <= here + 1):
            return False  # the keyframe is not past where the decoder already is: nothing to gain
        assert self._source is not None
        self._iter = self._source.decoded_from(keys, key)
        self._last = None
        self._seeked = True
        self.seeks += 1
        return True

    @property
    def info(self) -> SourceInfo:
        assert self._source is not None
        return self._source.info

    def close(self) -> None:
        if self._source is not None:
            self._source.close()
            self._source = None

    @property
    def _tol(self) -> float:
        return 0.5 / self.info.fps

    def _matches(self, frame: _Decoded, index: int, pts_s: float) -> int:
        """-1: frame is before the target, 0: it is the target, 1: past it."""
        if self.fps_override:
            return (frame.index > index) - (frame.index < index)
        if frame.pts_s < pts_s - self._tol:
            return -1
        return 0 if frame.pts_s <= pts_s + self._tol else 1

    def _check(self, frame: _Decoded, index: int, pts_s: float) -> np.ndarray:
        if frame.index != index or abs(frame.pts_s - pts_s) > self._tol:
            raise FrameMismatch(
                f"reference says frame {index} at {pts_s:.4f}s but the source has frame {frame.index} "
                f"at {frame.pts_s:.4f}s in {self.path}"
            )
        return frame.image

    def _past_end(self, frame_index: int, pts_s: float) -> bool:
        if self.total_frames is not None:
            return frame_index >= self.total_frames
        duration = self.info.duration_s
        # The container's duration is an estimate: only refuse what is clearly beyond it.
        return duration is not None and pts_s > duration + 1.0 and frame_index > self.info.fps * (duration + 1.0)

    def read(self, frame_index: int, pts_s: float) -> np.ndarray:
        """The BGR image of the frame; raises :class:`FrameNotFound` past the end of the source and
        :class:`FrameMismatch` when the frame at that position does not carry the referenced index/time."""
        if self._past_end(frame_index, pts_s):
            raise FrameNotFound(f"frame {frame_index} (pts {pts_s:.4f}s) is past the end of {self.path}")
        if self._last is not None and self._matches(self._last, frame_index, pts_s) == 0:
            return self._check(self._last, frame_index, pts_s)
        backwards = self._last is not None and self._matches(self._last, frame_index, pts_s) > 0
        if not self._jump(frame_index) and backwards:  # replay, another worker's batch: restart the decoder
            self.seeks += 1
            self._open()
        if not self._seeked:
            return self._decode_to(frame_index, pts_s)
        try:
            return self._decode_to(frame_index, pts_s)
        except (FrameNotFound, FrameMismatch, SourceUnreadable):
            pass  # a bad reference, or a file whose packets disagree with its decoded frames: ask the plain way
        self.seeks += 1
        self._open()
        image = self._decode_to(frame_index, pts_s)  # raises when the reference itself is wrong
        log.warning("%s: its decoded frames differ from its packet index; no more seeking in it", self.path)
        self._keys = None
        return image

    def _decode_to(self, frame_index: int, pts_s: float) -> np.ndarray:
        assert self._iter is not None
        for decoded in self._iter:
            self.decoded += 1
            frame = self._last = _Decoded(*decoded, self.path)
            where = self._matches(frame, frame_index, pts_s)
            if where == 0:
                return self._check(frame, frame_index, pts_s)
            if where > 0:
                raise FrameNotFound(f"no frame at index {frame_index} / pts {pts_s:.4f}s in {self.path}")
        self.total_frames = (self._last.index + 1) if self._last is not None else 0
        raise FrameNotFound(f"frame {frame_index} (pts {pts_s:.4f}s) is past the end of {self.path}")


class ReaderPool:
    """Per-process LRU of open :class:`FrameReader`s, one per source (decoders are not thread-safe)."""

    def __init__(self, max_open: int = 8) -> None:
        self.max_open = max_open
        self._readers: OrderedDict[tuple[str, float | None], FrameReader] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path, fps_override: float | None = None) -> FrameReader:
        key = (str(path), fps_override)
        with self._lock:
            reader = self._readers.pop(key, None)
            if reader is None:
                reader = FrameReader(path, fps_override)
            self._readers[key] = reader
            while len(self._readers) > self.max_open:
                _, old = self._readers.popitem(last=False)
                old.close()
            return reader

    def close(self) -> None:
        with self._lock:
            for reader in self._readers.values():
                reader.close()
            self._readers.clear()
