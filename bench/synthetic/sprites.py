"""Vehicle sprites: real vehicle crops cut out of the sample clips where the real detector found them (so it
finds them again on the synthetic road), and their on-disk format."""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from trafficstream.models.classes import VEHICLE_CLASSES
from trafficstream.models.detector import Detections, YoloOnnxDetector
from trafficstream.models.nms import box_iou

log = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class Sprite:
    """A real vehicle crop: the detector's box on one frame of a sample clip."""

    image: np.ndarray  # BGR uint8
    class_id: int
    source: str
    frame_index: int
    confidence: float

    @property
    def class_name(self) -> str:
        return VEHICLE_CLASSES[self.class_id]

    @property
    def aspect(self) -> float:
        return self.image.shape[1] / self.image.shape[0]


@dataclass(frozen=True)
class SpriteSource:
    video: str  # relative to the data directory
    frame_step: int
    min_height_px: int  # smaller crops would be blurry when scaled up near the camera


SPRITE_SOURCES: tuple[SpriteSource, ...] = (
    SpriteSource("videos/highway_overpass_1280x720.mp4", 15, 48),
    SpriteSource("videos/highway_640x360.mp4", 20, 36),
    SpriteSource("videos/urban_cctv_640x360.mp4", 30, 40),  # the only clip with confident trucks and buses
)
SPRITE_CLASSES = (2, 5, 7)  # car, bus, truck (motorcycles are too few and too small in the samples)


def sample_frames(path: Path, step: int) -> Iterator[tuple[int, np.ndarray]]:
    """Every ``step``-th decoded frame of a video, as (index, BGR image)."""
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % step == 0:
                yield i, frame.to_ndarray(format="bgr24")


def isolated_boxes(
    dets: Detections,
    shape: tuple[int, ...],
    min_height_px: int,
    min_confidence: float = 0.6,
    max_foreign: float = 0.1,
    border_px: int = 6,
) -> list[int]:
    """Indices of confident car / bus / truck boxes that hold at most ``max_foreign`` of any other detection
    (a crop holding a second vehicle would be detected twice) and keep clear of the frame border (cut-off
    vehicles, overlays). A box that another detection scores as a different class (van: car or truck?) is
    ambiguous and left out too. Trucks and buses are rare in the samples: they pass at 0.5 confidence."""
    h, w = shape[:2]
    xyxy = dets.xyxy.astype(np.float64)
    areas = (xyxy[:, 2:] - xyxy[:, :2]).clip(0).prod(axis=1)
    keep = []
    for i, (box, conf, cls) in enumerate(zip(xyxy, dets.confidence, dets.class_id, strict=True)):
        threshold = min_confidence if cls == 2 else min(min_confidence, 0.5)
        if cls not in SPRITE_CLASSES or conf < threshold or box[3] - box[1] < min_height_px:
            continue
        if box[0] < border_px or box[1] < border_px or box[2] > w - border_px or box[3] > h - border_px:
            continue
        lt, rb = np.maximum(xyxy[:, :2], box[:2]), np.minimum(xyxy[:, 2:], box[2:])
        foreign = (rb - lt).clip(0).prod(axis=1) / np.maximum(areas, 1e-9)
        foreign[i] = 0
        if foreign.max(initial=0) <= max_foreign:
            keep.append(i)
    return keep


def extract_sprites(
    detector: YoloOnnxDetector, data_dir: Path, sources: Sequence[SpriteSource] = SPRITE_SOURCES
) -> list[Sprite]:
    """Cut isolated, confident car / bus / truck crops out of sampled frames of the sample clips."""
    sprites: list[Sprite] = []
    for src in sources:
        path = data_dir / src.video
        if not path.is_file():
            log.warning("sprite source missing, skipped: %s", path)
            continue
        kept_boxes = np.empty((0, 4))
        for index, image in sample_frames(path, src.frame_step):
            dets = detector(image)
            for i in isolated_boxes(dets, image.shape, src.min_height_px):
                box = dets.xyxy[i]
                # Parked vehicles sit in the same place frame after frame: keep them once.
                if len(kept_boxes) and box_iou(box, kept_boxes).max() > 0.3:
                    continue
                kept_boxes = np.vstack([kept_boxes, box])
                x1, y1, x2, y2 = np.round(box).astype(int)
                sprites.append(
                    Sprite(
                        image[y1:y2, x1:x2].copy(), int(dets.class_id[i]), src.video, index, float(dets.confidence[i])
                    )
                )
    return sprites


def save_sprites(path: Path, sprites: Sequence[Sprite]) -> None:
    meta = [
        {"class_id": s.class_id, "source": s.source, "frame_index": s.frame_index, "confidence": s.confidence}
        for s in sprites
    ]
    arrays = {f"sprite_{i}": s.image for i, s in enumerate(sprites)}
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    # numpy's stub types **kwds like its bool keyword allow_pickle, so arrays passed by name do not type-check.
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)  # type: ignore[arg-type]
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file


def load_sprites(path: Path) -> tuple[Sprite, ...]:
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        return tuple(Sprite(npz[f"sprite_{i}"], **m) for i, m in enumerate(meta))
