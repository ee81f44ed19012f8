"""Non-maximum suppression in pure numpy (the ONNX export has no NMS inside)."""

from __future__ import annotations

import numpy as np


def box_area(boxes_xyxy: np.ndarray) -> np.ndarray:
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    return (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU matrix ``(N, M)`` of ``xyxy`` boxes ``a (N, 4)`` and ``b (M, 4)``."""
    a = np.asarray(a, dtype=np.float32).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float32).reshape(-1, 4)
    top_left = np.maximum(a[:, None, :2], b[None, :, :2])
    bottom_right = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (bottom_right - top_left).clip(0).prod(axis=2)
    union = box_area(a)[:, None] + box_area(b)[None, :] - inter
    # Degenerate (zero-area) pairs have union 0: their IoU is 0, not NaN.
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes_xyxy: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Greedy NMS. Returns the kept indices into ``boxes_xyxy``, highest score first.

    A box is suppressed when its IoU with an already kept, higher-scoring box is above ``iou_threshold``.
    """
    # float64: batched_nms offsets classes far apart, where float32 would blur the coordinates.
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float32).reshape(-1)
    if len(boxes) != len(scores):
        raise ValueError(f"nms: {len(boxes)} boxes but {len(scores)} scores")
    order = np.argsort(-scores, kind="stable")  # stable: ties keep input order, so results are reproducible
    areas = (boxes[:, 2] - boxes[:, 0]).clip(0) * (boxes[:, 3] - boxes[:, 1]).clip(0)
    keep: list[int] = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(int(best))
        if not rest.size:
            break
        top_left = np.maximum(boxes[best, :2], boxes[rest, :2])
        bottom_right = np.minimum(boxes[best, 2:], boxes[rest, 2:])
        inter = (bottom_right - top_left).clip(0).prod(axis=1)
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return np.asarray(keep, dtype=np.int64)


def batched_nms(boxes_xyxy: np.ndarray, scores: np.ndarray, class_ids: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Class-aware NMS: boxes only suppress boxes of the same class. Indices highest score first."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    class_ids = np.asarray(class_ids).reshape(-1)
    if len(boxes) != len(class_ids):
        raise ValueError(f"batched_nms: {len(boxes)} boxes but {len(class_ids)} class ids")
    if not len(boxes):
        return np.empty(0, dtype=np.int64)
    # Shift each class into its own disjoint region of the plane, so one NMS pass never mixes classes.
    span = float(max(boxes.max(), 0.0) - min(boxes.min(), 0.0)) + 1.0
    _, class_index = np.unique(class_ids, return_inverse=True)
    offsets = (class_index.astype(np.float64) * span)[:, None]
    return nms(boxes.astype(np.float64) + offsets, scores, iou_threshold)
