"""COCO class ids and names, and the subset that counts as a vehicle."""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping

import numpy as np

VEHICLE_CLASSES: dict[int, str] = {2: "car", 3: "motorcycle", 5: "bus", 7: "truck"}
VEHICLE_CLASS_IDS: tuple[int, ...] = tuple(VEHICLE_CLASSES)
# Everybody on the road whose privacy evidence protects: people, cyclists and the vehicles (COCO ids).
ROAD_USER_CLASS_IDS: tuple[int, ...] = (0, 1, *VEHICLE_CLASS_IDS)

# The 80 COCO names in YOLOv8 order; the fallback when a model carries no `names` metadata.
COCO_CLASSES: dict[int, str] = dict(
    enumerate(
        (
            "person",
            "bicycle",
            "car",
            "motorcycle",
            "airplane",
            "bus",
            "train",
            "truck",
            "boat",
            "traffic light",
            "fire hydrant",
            "stop sign",
            "parking meter",
            "bench",
            "bird",
            "cat",
            "dog",
            "horse",
            "sheep",
            "cow",
            "elephant",
            "bear",
            "zebra",
            "giraffe",
            "backpack",
            "umbrella",
            "handbag",
            "tie",
            "suitcase",
            "frisbee",
            "skis",
            "snowboard",
            "sports ball",
            "kite",
            "baseball bat",
            "baseball glove",
            "skateboard",
            "surfboard",
            "tennis racket",
            "bottle",
            "wine glass",
            "cup",
            "fork",
            "knife",
            "spoon",
            "bowl",
            "banana",
            "apple",
            "sandwich",
            "orange",
            "broccoli",
            "carrot",
            "hot dog",
            "pizza",
            "donut",
            "cake",
            "chair",
            "couch",
            "potted plant",
            "bed",
            "dining table",
            "toilet",
            "tv",
            "laptop",
            "mouse",
            "remote",
            "keyboard",
            "cell phone",
            "microwave",
            "oven",
            "toaster",
            "sink",
            "refrigerator",
            "book",
            "clock",
            "vase",
            "scissors",
            "teddy bear",
            "hair drier",
            "toothbrush",
        )
    )
)


def is_vehicle(class_id: int) -> bool:
    return int(class_id) in VEHICLE_CLASSES


def class_mask(class_ids: np.ndarray, wanted: Iterable[int] | None = VEHICLE_CLASS_IDS) -> np.ndarray:
    """Boolean mask of ``class_ids`` that are in ``wanted`` (``None`` keeps every class)."""
    class_ids = np.asarray(class_ids)
    if wanted is None:
        return np.ones(class_ids.shape, dtype=bool)
    return np.isin(class_ids, np.fromiter(wanted, dtype=np.int64))


def class_name(class_id: int, names: Mapping[int, str] | None = None) -> str:
    """Name of ``class_id`` in ``names`` (default COCO); unknown ids read ``class_<id>``."""
    return (COCO_CLASSES if names is None else names).get(int(class_id), f"class_{int(class_id)}")


def parse_names(metadata: str | None) -> dict[int, str]:
    """Parse the ``names`` metadata Ultralytics writes into ONNX files: a Python dict literal
    (``"{0: 'person', 1: 'bicycle', ...}"``). Missing or unreadable metadata falls back to COCO."""
    if not metadata:
        return dict(COCO_CLASSES)
    try:
        parsed = ast.literal_eval(metadata)  # literal_eval, never eval: the file is untrusted input
        return {int(k): str(v) for k, v in dict(parsed).items()}
    except (ValueError, SyntaxError, TypeError):
        return dict(COCO_CLASSES)
