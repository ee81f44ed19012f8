"""Evidence clips: a few seconds of video around a violation, the offender boxed, other road users anonymised.

Besides the JPEG snapshot (``streaming_jobs/evidence.py``), the evidence step writes an H.264 MP4 of
``evidence.clip_before_s`` + ``clip_after_s`` around the evidence frame, cut from the source (a file, or the
live camera's segment that holds the frame: a clip then ends with its segment). The job knows the boxes of the
evidence frame only, so the clip's frames are run through the detector again (people and cyclists too),
the offender is followed from the evidence frame forwards and backwards by box overlap, and every other road
user is pixelated as ``privacy.mode`` says. File names are deterministic: a replayed micro-batch rewrites the
same clip. Pure functions, except :func:`read_clip` / :func:`write_clip` (the file I/O) and the detector.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from trafficstream.config import PrivacySettings
from trafficstream.models.detector import Detector
from trafficstream.models.nms import box_iou
from trafficstream.models.privacy import Box, anonymise

log = logging.getLogger(__name__)
MIN_FOLLOW_IOU = 0.3  # a box overlapping the offender's previous one this much is the offender
FIRST_STEP_IOU = 0.1  # the evidence frame's neighbours: the offender may have moved far at a reduced rate
MAX_COAST_FRAMES = 5  # frames the offender's last box is kept while the detector misses it


def clip_path(root: Path, camera_id: str, track_id: int, frame_index: int) -> Path:
    return root / camera_id / f"track{track_id}_frame{frame_index}.mp4"


def read_clip(
    path: Path, centre_pts: float, before_s: float, after_s: float, max_frames: int, max_fps: float | None = None
) -> tuple[list[np.ndarray], list[float], float]:
    """Frames (BGR) of ``path`` with pts in [centre - before, centre + after], every k-th counted from the
    frame at ``centre_pts`` (which is always one of them) so that they run at no more than ``max_fps``, their
    pts (from the start of the file), and their frame rate (the stream's / k). Seeks to the keyframe before
    the window, then decodes forward."""
    images: list[np.ndarray] = []
    times: list[float] = []
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = float(stream.average_rate or stream.guessed_rate or 25.0)
        every = max(1, int(np.ceil(rate / max_fps - 1e-6))) if max_fps else 1
        base = stream.time_base
        start = stream.start_time or 0
        lo, hi = centre_pts - before_s, centre_pts + after_s
        if base is not None and lo > 0:
            container.seek(start + int(lo / base), backward=True, any_frame=False, stream=stream)
        for frame in container.decode(stream):
            if frame.pts is None or base is None:
                continue
            t = float((frame.pts - start) * base)
            if t < lo - 0.5 / rate:
                continue
            if t > hi + 0.5 / rate or len(images) >= max_frames:
                break
            if round((t - centre_pts) * rate) % every:
                continue  # decoded (the next frames need it), not kept
            images.append(frame.to_ndarray(format="bgr24"))
            times.append(t)
    return images, times, rate / every


def follow_offender(boxes: Sequence[np.ndarray], centre: int, box: Box) -> list[Box | None]:
    """The offender's box on each frame (None where it is not found): on the evidence frame ``centre`` the
    detection overlapping ``box`` most (else ``box`` itself), then frame by frame outwards, the detection
    overlapping most (IoU >= :data:`MIN_FOLLOW_IOU`) the box where the offender should be, its last found
    box moved on at its last found velocity (clips at a reduced frame rate move it far between frames); a
    miss keeps the last box for up to :data:`MAX_COAST_FRAMES` frames. ``boxes``: each frame's detections
    (K, 4)."""
    out: list[Box | None] = [None] * len(boxes)
    if not boxes:
        return out
    out[centre] = _best(boxes[centre], box, FIRST_STEP_IOU) or tuple(float(v) for v in box)
    for step in (1, -1):
        last, missed = out[centre], 0
        found = [(centre, np.asarray(out[centre], np.float64))]  # the last two found boxes, for the velocity
        i = centre + step
        while 0 <= i < len(boxes) and last is not None:
            (j, at), velocity = found[-1], np.zeros(4)
            if len(found) == 2:
                velocity = (found[1][1] - found[0][1]) / (found[1][0] - found[0][0])
            expected = tuple(float(v) for v in at + velocity * (i - j))
            # next to the evidence frame the velocity is not known yet: the looser overlap of the first snap
            match = _best(boxes[i], expected, MIN_FOLLOW_IOU if len(found) == 2 else FIRST_STEP_IOU)
            if match is None:
                missed += 1
                if missed > MAX_COAST_FRAMES:
                    break
                out[i] = last
            else:
                out[i], last, missed = match, match, 0
                found = [found[-1], (i, np.asarray(match, np.float64))]
            i += step
    return out


def _best(candidates: np.ndarray, box: Box, min_iou: float) -> Box | None:
    if len(candidates) == 0:
        return None
    iou = box_iou(np.asarray([box], np.float32), np.asarray(candidates, np.float32))[0]
    k = int(np.argmax(iou))
    return tuple(float(v) for v in candidates[k]) if iou[k] >= min_iou else None


def anonymised_frames(
    images: Sequence[np.ndarray], boxes: Sequence[np.ndarray], offender: Sequence[Box | None], privacy: PrivacySettings
) -> list[np.ndarray]:
    """Every frame with the other road users anonymised (the offender kept) and the offender boxed in red.
    A frame where the offender was not found is anonymised entirely: nobody on it is the offender."""
    import cv2

    out = []
    for image, others, keep in zip(images, boxes, offender, strict=True):
        clean = anonymise(
            image,
            keep,
            [tuple(float(v) for v in b) for b in others],
            privacy.mode,
            blocks_across=privacy.blocks_across,
            min_block_px=privacy.min_block_px,
        )
        if keep is not None:
            x1, y1, x2, y2 = (int(round(v)) for v in keep)
            cv2.rectangle(clean, (x1, y1), (x2, y2), (0, 0, 255), max(2, image.shape[1] // 400))
        out.append(clean)
    return out


def write_clip(path: Path, images: Sequence[np.ndarray], rate: float) -> None:
    """H.264 MP4 (yuv420p, browsers play it) at ``rate`` frames/s; written to a temporary name and renamed,
    so a reader never sees half a clip."""
    if not images:
        raise ValueError("no frames to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".part")
    height, width = images[0].shape[:2]
    with av.open(str(tmp), mode="w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=Fraction(rate).limit_denominator(1001))
        stream.width, stream.height = width - width % 2, height - height % 2  # yuv420p needs even sizes
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for image in images:
            frame = av.VideoFrame.from_ndarray(image[: stream.height, : stream.width], format="bgr24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    tmp.replace(path)


def render_clip(
    target: Path,
    source: Path,
    centre_pts: float,
    box: Box,
    detector: Detector,
    privacy: PrivacySettings,
    before_s: float,
    after_s: float,
    max_frames: int,
    max_fps: float | None = None,
) -> bool:
    """Cut, anonymise and write the clip of one violation; False when the source has no frames there.
    ``max_fps``: keep every k-th frame so that the clip runs at no more than this rate (each kept frame goes
    through the detector: the clip's cost)."""
    images, times, rate = read_clip(source, centre_pts, before_s, after_s, max_frames, max_fps)
    if not images:
        return False
    centre = int(np.argmin(np.abs(np.asarray(times) - centre_pts)))
    boxes = [d.xyxy for d in detector.detect_batch(images)]  # also with privacy off: to follow the offender
    offender = follow_offender(boxes, centre, box)
    write_clip(target, anonymised_frames(images, boxes, offender, privacy), rate)
    return True
