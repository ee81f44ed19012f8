"""Letterboxing: resize keeping the aspect ratio and pad to the network input, and the inverse for boxes."""

from __future__ import annotations

from typing import NamedTuple

import cv2
import numpy as np


class LetterboxResult(NamedTuple):
    image: np.ndarray  # (h, w, C) uint8, the network input size
    scale: float  # network pixels per source pixel
    pad_x: int  # columns of padding on the left
    pad_y: int  # rows of padding on the top


def letterbox(
    image: np.ndarray,
    size: tuple[int, int] = (384, 640),
    color: int | tuple[int, int, int] = 114,
) -> LetterboxResult:
    """Resize ``image`` to fit ``size=(h, w)`` without distortion and centre it on a ``color`` canvas.

    Grey 114 is what YOLOv8 saw around its training letterboxes. Images smaller than ``size`` are scaled
    up as Ultralytics does, so small crops and tiny test frames get the same treatment as real ones.
    """
    if image.ndim not in (2, 3) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"letterbox expects a non-empty (H, W[, C]) image, got shape {image.shape}")
    dst_h, dst_w = size
    src_h, src_w = image.shape[:2]
    scale = min(dst_h / src_h, dst_w / src_w)
    new_w = max(1, min(dst_w, round(src_w * scale)))
    new_h = max(1, min(dst_h, round(src_h * scale)))
    resized = (
        image if (new_w, new_h) == (src_w, src_h) else cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    )
    pad_x = (dst_w - new_w) // 2
    pad_y = (dst_h - new_h) // 2
    channels = 1 if image.ndim == 2 else image.shape[2]
    fill = (color,) * channels if isinstance(color, int) else tuple(color)
    value: int | tuple[int, ...] = fill[0] if image.ndim == 2 else fill
    padded = cv2.copyMakeBorder(
        resized, pad_y, dst_h - new_h - pad_y, pad_x, dst_w - new_w - pad_x, cv2.BORDER_CONSTANT, value=value
    )
    return LetterboxResult(padded, float(scale), int(pad_x), int(pad_y))


def to_letterbox(boxes_xyxy: np.ndarray, scale: float, pad_x: float, pad_y: float) -> np.ndarray:
    """Map source-pixel boxes into letterboxed network pixels (the forward of :func:`unletterbox`)."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    return boxes * np.float32(scale) + np.array([pad_x, pad_y, pad_x, pad_y], dtype=np.float32)


def unletterbox(
    boxes_xyxy: np.ndarray,
    scale: float,
    pad_x: float,
    pad_y: float,
    image_shape: tuple[int, ...],
) -> np.ndarray:
    """Map network-pixel boxes back to the source image and clip them to it.

    ``image_shape`` is the source ``(H, W[, C])``. Returns float32 ``(N, 4)``.
    """
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    out = (boxes - np.array([pad_x, pad_y, pad_x, pad_y], dtype=np.float32)) / np.float32(scale)
    h, w = image_shape[:2]
    out[:, [0, 2]] = out[:, [0, 2]].clip(0, w)
    out[:, [1, 3]] = out[:, [1, 3]].clip(0, h)
    return out
