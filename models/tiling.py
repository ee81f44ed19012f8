"""Detection over extra high-resolution tiles: far-field vehicles are a few pixels tall once the whole frame
is shrunk to the network input; a tile around the far end of the road sees them at (near) full resolution.

The full frame and the tiles run as one batch; tile boxes are shifted back to frame pixels, boxes cut by a
tile edge inside the frame are dropped (the full-frame pass sees that vehicle whole), and the union goes
through class-agnostic NMS so a vehicle found twice is kept once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from trafficstream.models.detector import Detections, Detector
from trafficstream.models.nms import nms

Tile = tuple[int, int, int, int]  # x0, y0, x1, y1 in source pixels


def clip_tile(tile: Sequence[int], width: int, height: int) -> Tile:
    x0, y0, x1, y1 = (int(v) for v in tile)
    return max(0, x0), max(0, y0), min(width, x1), min(height, y1)


def cut_by_tile_edge(xyxy: np.ndarray, tile: Tile, width: int, height: int, margin: float = 2.0) -> np.ndarray:
    """Mask of boxes (tile pixels) touching a tile edge that is not also a frame edge."""
    x0, y0, x1, y1 = tile
    return (
        ((xyxy[:, 0] <= margin) & (x0 > 0))
        | ((xyxy[:, 1] <= margin) & (y0 > 0))
        | ((xyxy[:, 2] >= (x1 - x0) - margin) & (x1 < width))
        | ((xyxy[:, 3] >= (y1 - y0) - margin) & (y1 < height))
    )


def merge(parts: Sequence[Detections], iou: float) -> Detections:
    if len(parts) == 1:
        return parts[0]
    xyxy = np.concatenate([p.xyxy for p in parts])
    conf = np.concatenate([p.confidence for p in parts])
    cls = np.concatenate([p.class_id for p in parts])
    keep = nms(xyxy, conf, iou) if len(xyxy) else np.zeros(0, dtype=np.int64)
    return Detections(xyxy[keep], conf[keep], cls[keep], parts[0].names)


def detect_tiled(
    detector: Detector, image: np.ndarray, tiles: Sequence[Sequence[int]], iou: float = 0.45
) -> Detections:
    """Detections of ``image`` from the full frame plus ``tiles`` (no tiles: a plain full-frame pass)."""
    return detect_tiled_batch(detector, [image], [tiles], iou)[0]


def detect_tiled_batch(
    detector: Detector,
    images: Sequence[np.ndarray],
    tiles: Sequence[Sequence[Sequence[int]]],
    iou: float = 0.45,
) -> list[Detections]:
    """:func:`detect_tiled` for several frames at once (``tiles[i]``: the tiles of ``images[i]``): every frame
    and every tile go to the detector in one call, so it can batch them."""
    crops: list[np.ndarray] = []
    owners: list[tuple[int, Tile | None]] = []
    for i, (image, wanted) in enumerate(zip(images, tiles, strict=True)):
        h, w = image.shape[:2]
        crops.append(image)
        owners.append((i, None))
        for x0, y0, x1, y1 in (clip_tile(t, w, h) for t in wanted):
            if x1 - x0 >= 32 and y1 - y0 >= 32:
                crops.append(image[y0:y1, x0:x1])
                owners.append((i, (x0, y0, x1, y1)))
    parts: list[list[Detections]] = [[] for _ in images]
    for (i, tile), dets in zip(owners, detector.detect_batch(crops), strict=True):
        if tile is None:
            parts[i].insert(0, dets)
        elif len(dets):
            h, w = images[i].shape[:2]
            dets = dets.filter(~cut_by_tile_edge(dets.xyxy, tile, w, h))
            shift = np.array([tile[0], tile[1], tile[0], tile[1]], dtype=np.float32)
            parts[i].append(Detections(dets.xyxy + shift, dets.confidence, dets.class_id, dets.names))
    return [merge(p, iou) for p in parts]
