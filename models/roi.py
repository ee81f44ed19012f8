"""Region-of-interest tests: which detections stand inside a camera's counting polygon."""

from __future__ import annotations

import numpy as np


def bottom_centre(xyxy: np.ndarray) -> np.ndarray:
    """(N, 2) float32 middle of each box's bottom edge: where the vehicle touches the road, the point a
    road-plane homography maps correctly (the box centre floats above the road)."""
    boxes = np.asarray(xyxy, dtype=np.float32).reshape(-1, 4)
    return np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, boxes[:, 3]], axis=1)


def points_in_polygon(points: np.ndarray, polygon: np.ndarray | None) -> np.ndarray:
    """(N,) bool: which ``points`` (N, 2) lie inside ``polygon`` (K, 2), its edges counting as inside.

    ``polygon=None`` means no region of interest: every point is in. Even-odd rule, so self-intersecting
    polygons behave as they are drawn by ``cv2.fillPoly``.
    """
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    if polygon is None:
        return np.ones(len(pts), dtype=bool)
    poly = np.asarray(polygon, dtype=np.float64)
    if poly.ndim != 2 or poly.shape[1] != 2 or len(poly) < 3:
        raise ValueError(f"polygon must be (K >= 3, 2) vertices, got shape {poly.shape}")
    px, py = pts[:, 0:1], pts[:, 1:2]  # (N, 1) against (K,) edges
    x1, y1 = poly[:, 0], poly[:, 1]
    x2, y2 = np.roll(x1, -1), np.roll(y1, -1)

    # Ray casting to +x: count edges that straddle the point's row and cross it right of the point.
    straddles = (y1 > py) != (y2 > py)
    with np.errstate(divide="ignore", invalid="ignore"):
        x_cross = x1 + (py - y1) * (x2 - x1) / (y2 - y1)
    inside = (straddles & (px < x_cross)).sum(axis=1) % 2 == 1

    # Points on an edge: collinear with it and within its extent (ray casting alone is arbitrary there).
    cross = (x2 - x1) * (py - y1) - (y2 - y1) * (px - x1)
    scale = np.maximum(np.hypot(x2 - x1, y2 - y1), 1e-12)
    on_edge = (
        (np.abs(cross) / scale <= 1e-9)
        & (px >= np.minimum(x1, x2) - 1e-9)
        & (px <= np.maximum(x1, x2) + 1e-9)
        & (py >= np.minimum(y1, y2) - 1e-9)
        & (py <= np.maximum(y1, y2) + 1e-9)
    ).any(axis=1)
    return inside | on_edge


# A box this close to the picture's bottom or side edge (share of the picture's height) is cut off by it.
EDGE_MARGIN = 0.015


def at_picture_edge(xyxy: np.ndarray, width: int | None, height: int | None, margin: float = EDGE_MARGIN) -> np.ndarray:
    """(N,) bool: boxes that reach the picture's bottom, left or right edge (within ``margin`` of its height):
    a vehicle driving in or out of view, whose box ends where the picture does, so its bottom-centre is not where
    it meets the road. Followed over frames, that point stays on the edge while the vehicle moves: a speed of a
    few km/h for a car at 40. Unknown picture size: none."""
    boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    if not width or not height:
        return np.zeros(len(boxes), dtype=bool)
    m = margin * height
    return (boxes[:, 3] >= height - m) | (boxes[:, 0] <= m) | (boxes[:, 2] >= width - m)
