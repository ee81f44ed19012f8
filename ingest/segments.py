"""Segment files of a live camera: writing, indexing, the camera's sequence state, retention.

A live camera's video is remuxed (no re-encoding) into short Matroska segments in
``settings.segment_dir(camera id)``. A segment is written under a hidden temporary name and renamed into place
when closed, so any ``*.mkv`` in the folder is complete and readable; only then are its frame references
published. The positions published for a segment are read back from the finished file by decoding it the way
:class:`trafficstream.video.FrameReader` does, so a reference always names exactly the frame the job will find.

The folder also holds ``sequence.json``: the camera-wide frame index and time origin that continue across
segments, reconnects and ingest restarts. Retention deletes segments older than ``live.segment_retention_h``,
except those marked as evidence (``<segment>.keep``, :func:`mark_evidence`), kept ``live.evidence_retention_h``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

import av

from trafficstream.video import _pts_seconds

log = logging.getLogger(__name__)

SEGMENT_SUFFIX = ".mkv"
SEGMENT_FORMAT = "matroska"  # tolerant of any start timestamp and of streams without dts; no re-encode
PART_SUFFIX = ".part"
KEEP_SUFFIX = ".keep"
STATE_FILE = "sequence.json"
STATE_VERSION = 1


# -- the camera's sequence state -------------------------------------------------------------------------
@dataclass
class SequenceState:
    """Where a camera's own sequence stands: the next frame index, and pts 0 on the wall clock."""

    next_index: int = 0
    origin_wall: float | None = None  # unix seconds at camera pts 0 (None: no frame published yet)
    last_pts_s: float | None = None  # camera pts of the last published frame
    v: int = STATE_VERSION


def load_state(folder: Path) -> SequenceState:
    """The persisted state, or a fresh one when there is none; an unreadable file is an error (never reuse
    frame indices silently: the job would dead-letter every frame up to the old sequence as a duplicate)."""
    path = folder / STATE_FILE
    if not path.exists():
        return SequenceState()
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RuntimeError(f"sequence state {path} is unreadable: {exc}") from None
    if not isinstance(obj, dict) or obj.get("v") != STATE_VERSION:
        raise RuntimeError(
            f"sequence state {path} has an unknown version {obj.get('v') if isinstance(obj, dict) else obj!r}"
        )
    return SequenceState(
        next_index=int(obj["next_index"]),
        origin_wall=None if obj.get("origin_wall") is None else float(obj["origin_wall"]),
        last_pts_s=None if obj.get("last_pts_s") is None else float(obj["last_pts_s"]),
    )


def save_state(folder: Path, state: SequenceState) -> None:
    """Write atomically (temporary file, fsync, rename): a crash leaves the old or the new state, never half."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{STATE_FILE}{PART_SUFFIX}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(asdict(state), f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, folder / STATE_FILE)


# -- writing ---------------------------------------------------------------------------------------------
def segment_name(first_index: int) -> str:
    """Named by the camera-wide index of the first packet's segment: unique and in order across restarts."""
    return f"seg-{first_index:012d}{SEGMENT_SUFFIX}"


class SegmentWriter:
    """Remux packets of one input video stream into a segment under a temporary name; ``close()`` renames it.

    Timestamps are shifted so the segment starts at dts 0 (``offset`` ticks of the input time base).
    """

    def __init__(self, path: Path, template: av.video.stream.VideoStream, offset: int) -> None:
        self.path = path
        self.tmp = path.with_name(f".{path.name}{PART_SUFFIX}")
        self.offset = offset
        self.time_base: Fraction = template.time_base or Fraction(1, 90000)
        self.packets = 0
        self._out = av.open(str(self.tmp), "w", format=SEGMENT_FORMAT)
        self._stream = self._out.add_stream_from_template(template)

    @property
    def offset_s(self) -> float:
        return float(self.offset * self.time_base)

    def mux(self, packet: av.Packet, pts: int, dts: int) -> None:
        packet.pts = pts - self.offset
        packet.dts = dts - self.offset
        packet.time_base = self.time_base
        packet.stream = self._stream
        self._out.mux(packet)
        self.packets += 1

    def close(self) -> Path | None:
        """Finish the file and rename it into place; None (and nothing left behind) when it has no packet."""
        try:
            self._out.close()
        except av.FFmpegError as exc:
            log.warning("segment %s: closing failed: %s", self.path.name, exc)
            self.packets = 0
        if not self.packets:
            self.tmp.unlink(missing_ok=True)
            return None
        os.replace(self.tmp, self.path)
        return self.path

    def discard(self) -> None:
        try:
            self._out.close()
        except av.FFmpegError:
            pass
        self.tmp.unlink(missing_ok=True)


# -- reading back ----------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class FramePosition:
    index: int  # index of the frame in the segment, as FrameReader counts
    pts_s: float  # pts relative to the segment's first frame, as FrameReader reports it
    stream_pts_s: float  # the frame's pts in the segment file's own time line (before making it relative)


def frame_positions(path: Path, fps_override: float | None = None) -> tuple[list[FramePosition], int, int]:
    """Decode ``path`` and return each frame's position exactly as :class:`~trafficstream.video.FrameReader`
    sees it (same decoder, same timestamp rules), with the frame size. Frames are not converted to pixels."""
    out: list[FramePosition] = []
    width = height = 0
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(fps_override or (rate if rate else 25.0))
        t0: float | None = None
        try:
            for index, frame in enumerate(container.decode(stream)):
                t = _pts_seconds(frame, stream, index, fps)
                if t0 is None:
                    t0 = t
                rel = index / fps_override if fps_override else t - t0
                out.append(FramePosition(index, rel, t))
                width, height = frame.width, frame.height
        except av.FFmpegError as exc:  # a truncated tail: the frames before it are still good
            log.warning("segment %s: decode stopped after %d frames: %s", path.name, len(out), exc)
    return out, width, height


# -- retention -------------------------------------------------------------------------------------------
def mark_evidence(segment_path: str | Path) -> Path:
    """Keep ``segment_path`` for ``live.evidence_retention_h`` instead of ``live.segment_retention_h``
    (a violation's footage); returns the marker. Raises FileNotFoundError when the segment is gone."""
    segment = Path(segment_path)
    if not segment.is_file():
        raise FileNotFoundError(f"segment not found: {segment}")
    marker = segment.with_name(segment.name + KEEP_SUFFIX)
    marker.touch()
    return marker


def sweep_segments(
    folder: Path, retention_s: float, evidence_retention_s: float, now: float | None = None
) -> list[Path]:
    """Delete segments (by modification time) past their retention; returns what was deleted.

    Unmarked segments go after ``retention_s``; segments with a ``.keep`` marker after ``evidence_retention_s``
    (their marker with them). Orphan markers and stale temporary files of a crashed writer go too."""
    now = time.time() if now is None else now
    deleted: list[Path] = []
    if not folder.is_dir():
        return deleted
    for seg in sorted(folder.glob(f"*{SEGMENT_SUFFIX}")):
        marker = seg.with_name(seg.name + KEEP_SUFFIX)
        try:
            age = now - seg.stat().st_mtime
        except FileNotFoundError:
            continue
        limit = evidence_retention_s if marker.exists() else retention_s
        if age > limit:
            seg.unlink(missing_ok=True)
            marker.unlink(missing_ok=True)
            deleted.append(seg)
    for marker in folder.glob(f"*{SEGMENT_SUFFIX}{KEEP_SUFFIX}"):
        if not marker.with_name(marker.name[: -len(KEEP_SUFFIX)]).exists():
            marker.unlink(missing_ok=True)
    for part in folder.glob(f".*{SEGMENT_SUFFIX}{PART_SUFFIX}"):
        try:
            if now - part.stat().st_mtime > 3600:  # a writer that died: an open segment is minutes old at most
                part.unlink(missing_ok=True)
        except FileNotFoundError:
            pass
    return deleted


def remove_partials(folder: Path) -> int:
    """Delete temporary segment files left by an earlier run of this camera (call before recording)."""
    n = 0
    for part in folder.glob(f".*{SEGMENT_SUFFIX}{PART_SUFFIX}"):
        part.unlink(missing_ok=True)
        n += 1
    return n
