from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from trafficstream.models.detector import YoloOnnxDetector
from trafficstream.models.embedder import AppearanceEmbedder, crop_boxes
from trafficstream.models.nms import box_iou
from trafficstream.models.session import ModelLoadError, ModelNotFoundError

FrameReader = Callable[..., list[np.ndarray]]
HIGHWAY = "highway_640x360.mp4"
FRAME = 300  # ten vehicles on both carriageways


@pytest.fixture(scope="module")
def scene(detector: YoloOnnxDetector, frames: FrameReader) -> tuple[np.ndarray, np.ndarray]:
    (frame,) = frames(HIGHWAY, FRAME)
    dets = detector(frame)
    assert len(dets) >= 6
    return frame, dets.xyxy


def test_shape_dtype_and_unit_norm(embedder: AppearanceEmbedder, scene: tuple[np.ndarray, np.ndarray]) -> None:
    frame, boxes = scene
    emb = embedder(frame, boxes)
    assert emb.shape == (len(boxes), 1280) and emb.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    assert np.isfinite(emb).all()


def test_no_boxes(embedder: AppearanceEmbedder, scene: tuple[np.ndarray, np.ndarray]) -> None:
    emb = embedder(scene[0], np.empty((0, 4), dtype=np.float32))
    assert emb.shape == (0, 1280) and emb.dtype == np.float32


def test_same_crop_same_embedding_whatever_the_batch(
    embedder: AppearanceEmbedder, scene: tuple[np.ndarray, np.ndarray], data_file: Callable[[str], Path]
) -> None:
    frame, boxes = scene
    alone = embedder(frame, boxes[:1])
    in_batch = embedder(frame, boxes)[:1]
    np.testing.assert_allclose(alone, in_batch, atol=1e-5)
    # Batches of 3 (a ragged last batch) give the same vectors as one batch of all crops.
    small = AppearanceEmbedder(data_file("models/mobilenetv2_embedder.onnx"), batch_size=3, threads=2)
    np.testing.assert_allclose(small(frame, boxes), embedder(frame, boxes), atol=1e-5)


def test_degenerate_boxes_are_clipped_to_one_pixel(
    embedder: AppearanceEmbedder, scene: tuple[np.ndarray, np.ndarray]
) -> None:
    frame = scene[0]
    h, w = frame.shape[:2]
    boxes = np.array(
        [[10, 10, 10, 10], [w - 1, h - 1, w + 50, h + 50], [-30, -30, -5, -5], [50, 60, 40, 55]], dtype=np.float32
    )
    crops = crop_boxes(frame, boxes)
    assert all(c.shape[0] >= 1 and c.shape[1] >= 1 for c in crops)
    emb = embedder(frame, boxes)
    assert emb.shape == (4, 1280) and np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_same_vehicle_in_next_frame_is_the_most_similar(
    detector: YoloOnnxDetector, embedder: AppearanceEmbedder, frames: FrameReader
) -> None:
    now, nxt = frames(HIGHWAY, FRAME, FRAME + 1)
    a, b = detector(now), detector(nxt)
    # Pair boxes across the two frames by overlap: at 30 fps a vehicle moves a few pixels.
    iou = box_iou(a.xyxy, b.xyxy)
    match = iou.argmax(axis=1)
    paired = iou.max(axis=1) > 0.6
    assert paired.sum() >= 6
    similarity = embedder(now, a.xyxy) @ embedder(nxt, b.xyxy).T
    same = similarity[paired, match[paired]]
    other = np.ones_like(similarity, dtype=bool)
    other[np.flatnonzero(paired), match[paired]] = False
    # Boxes of one van scored as car and truck overlap; leave such same-vehicle pairs out of "different".
    other &= iou < 0.3
    # Each vehicle's most similar box in the next frame is on the same vehicle (its own box, or the
    # overlapping car/truck duplicate of a van).
    best = similarity[paired].argmax(axis=1)
    assert (iou[np.flatnonzero(paired), best] > 0.6).all()
    assert same.min() > similarity[other].max()
    assert same.mean() - similarity[other].mean() > 0.1


def test_missing_and_wrong_models(tmp_path: Path, yolo_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="embedder model file not found: .*absent.onnx"):
        AppearanceEmbedder(tmp_path / "absent.onnx")
    with pytest.raises(ModelLoadError, match=r"expected input \[n, 3, 224, 224\]"):
        AppearanceEmbedder(yolo_path)
