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
    if not tiles:
        return detector(image)
    h, w = image.shape[:2]
    boxes = [clip_tile(t, w, h) for t in tiles]
    boxes = [t for t in boxes if t[2] - t[0] >= 32 and t[3] - t[1] >= 32]
    results = detector.detect_batch([image] + [image[y0:y1, x0:x1] for x0, y0, x1, y1 in boxes])
    parts = [results[0]]
    for tile, dets in zip(boxes, results[1:], strict=True):
        if len(dets):
            dets = dets.filter(~cut_by_tile_edge(dets.xyxy, tile, w, h))
            shift = np.array([tile[0], tile[1], tile[0], tile[1]], dtype=np.float32)
            parts.append(Detections(dets.xyxy + shift, dets.confidence, dets.class_id, dets.names))
    return merge(parts, iou)
