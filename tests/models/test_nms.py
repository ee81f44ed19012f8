from __future__ import annotations

import numpy as np
import pytest

from trafficstream.models.nms import batched_nms, box_iou, nms


def test_box_iou_matrix() -> None:
    a = np.array([[0, 0, 10, 10], [0, 0, 5, 5]], dtype=np.float32)
    b = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30], [3, 3, 3, 3]], dtype=np.float32)
    iou = box_iou(a, b)
    assert iou.shape == (2, 4)
    np.testing.assert_allclose(iou[0], [1.0, 50 / 150, 0.0, 0.0])
    np.testing.assert_allclose(iou[1], [0.25, 0.0, 0.0, 0.0])  # the zero-area box gives 0, not NaN


def test_nms_keeps_best_of_overlapping_cluster_sorted_by_score() -> None:
    boxes = np.array(
        [
            [0, 0, 100, 100],  # 0: cluster A, 0.8
            [5, 5, 105, 105],  # 1: cluster A, 0.9 (best)
            [200, 200, 260, 260],  # 2: alone, 0.95
            [2, 0, 100, 98],  # 3: cluster A, 0.7
            [50, 0, 150, 100],  # 4: IoU 0.35 with 1: survives at 0.45
        ],
        dtype=np.float32,
    )
    scores = np.array([0.8, 0.9, 0.95, 0.7, 0.6], dtype=np.float32)
    keep = nms(boxes, scores, iou_threshold=0.45)
    assert keep.tolist() == [2, 1, 4]
    assert nms(boxes, scores, iou_threshold=0.3).tolist() == [2, 1]


def test_nms_threshold_is_exclusive_and_ties_are_stable() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10]], dtype=np.float32)  # IoU exactly 1/3
    assert nms(boxes, np.array([0.5, 0.5]), 1 / 3).tolist() == [0, 1]
    assert nms(boxes, np.array([0.5, 0.5]), 0.33).tolist() == [0]


def test_nms_empty_and_mismatched() -> None:
    assert nms(np.empty((0, 4)), np.empty(0), 0.5).size == 0
    with pytest.raises(ValueError, match="2 boxes but 1 scores"):
        nms(np.zeros((2, 4)), np.zeros(1), 0.5)


def test_batched_nms_only_suppresses_within_a_class() -> None:
    # The same van scored as car (2) and truck (7), plus a weaker duplicate car box.
    boxes = np.array([[10, 10, 60, 50], [11, 10, 61, 51], [12, 11, 60, 50], [300, 300, 340, 330]], dtype=np.float32)
    scores = np.array([0.9, 0.6, 0.5, 0.4], dtype=np.float32)
    class_ids = np.array([2, 7, 2, 2])
    keep = batched_nms(boxes, scores, class_ids, iou_threshold=0.45)
    assert keep.tolist() == [0, 1, 3]
    # Class-agnostic (one group) keeps only the strongest box of the cluster.
    assert batched_nms(boxes, scores, np.zeros(4), 0.45).tolist() == [0, 3]


def test_batched_nms_with_far_apart_coordinates_and_many_classes() -> None:
    rng = np.random.default_rng(1)
    xy = rng.uniform(0, 3000, (200, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + rng.uniform(5, 80, (200, 2)).astype(np.float32)], axis=1)
    scores = rng.uniform(0, 1, 200).astype(np.float32)
    class_ids = rng.integers(0, 80, 200)
    keep = batched_nms(boxes, scores, class_ids, 0.5)
    # Same as running plain NMS per class.
    expected = np.concatenate(
        [
            np.flatnonzero(class_ids == c)[nms(boxes[class_ids == c], scores[class_ids == c], 0.5)]
            for c in np.unique(class_ids)
        ]
    )
    assert sorted(keep.tolist()) == sorted(expected.tolist())
    assert (np.diff(scores[keep]) <= 0).all()
