"""Vehicle detection: the ``Detections`` container, the ``Detector`` protocol and its two backends.

``YoloOnnxDetector`` runs a YOLOv8 ONNX export (no NMS inside) on ONNX Runtime, CPU by default; it is
what Spark workers use. ``UltralyticsDetector`` hands the same job to ``ultralytics.YOLO`` for GPU hosts
(``.pt``, ``.onnx`` or TensorRT ``.engine``). Both return boxes in source-image pixels.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from trafficstream.models.classes import COCO_CLASSES, VEHICLE_CLASS_IDS, class_mask, class_name, parse_names
from trafficstream.models.letterbox import LetterboxResult, letterbox, unletterbox
from trafficstream.models.nms import batched_nms
from trafficstream.models.session import ModelLoadError, check_model_path, create_session

log = logging.getLogger(__name__)

BACKENDS = ("onnxruntime", "ultralytics")


@dataclass(frozen=True, eq=False)
class Detections:
    """Detections of one image. Arrays are coerced to ``xyxy`` float32 (N, 4) in source pixels,
    ``confidence`` float32 (N,) and ``class_id`` int32 (N,)."""

    xyxy: np.ndarray
    confidence: np.ndarray
    class_id: np.ndarray
    names: Mapping[int, str] = field(default_factory=lambda: COCO_CLASSES, repr=False)

    def __post_init__(self) -> None:
        xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        class_id = np.asarray(self.class_id, dtype=np.int32).reshape(-1)
        if not len(xyxy) == len(confidence) == len(class_id):
            raise ValueError(f"Detections: {len(xyxy)} boxes, {len(confidence)} confidences, {len(class_id)} class ids")
        object.__setattr__(self, "xyxy", xyxy)
        object.__setattr__(self, "confidence", confidence)
        object.__setattr__(self, "class_id", class_id)

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls, names: Mapping[int, str] | None = None) -> Detections:
        return cls(np.empty((0, 4)), np.empty(0), np.empty(0), names if names is not None else COCO_CLASSES)

    def filter(self, mask: np.ndarray) -> Detections:
        """Subset by a boolean mask or an index array."""
        return Detections(self.xyxy[mask], self.confidence[mask], self.class_id[mask], self.names)

    @property
    def class_names(self) -> list[str]:
        return [class_name(c, self.names) for c in self.class_id]

    @property
    def wh(self) -> np.ndarray:
        """Box widths and heights, (N, 2)."""
        return self.xyxy[:, 2:] - self.xyxy[:, :2]


@runtime_checkable
class Detector(Protocol):
    def __call__(self, image_bgr: np.ndarray) -> Detections: ...

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]: ...


def check_image(image: np.ndarray) -> np.ndarray:
    """Detectors take uint8 BGR (H, W, 3) frames, as OpenCV and PyAV (``to_ndarray(format="bgr24")``) give."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        desc = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
        raise ValueError(f"expected a uint8 BGR image of shape (H, W, 3), got {desc}")
    if image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"empty image of shape {image.shape}")
    return image


def min_size_mask(xyxy: np.ndarray, min_box_px: float) -> np.ndarray:
    """Boxes at least ``min_box_px`` wide and high: smaller ones are too few pixels to embed or track."""
    wh = xyxy[:, 2:] - xyxy[:, :2]
    return (wh >= min_box_px).all(axis=1)


def lower_bottom_edges(xyxy: np.ndarray, offset_px: float, scale: float, image_height: int) -> np.ndarray:
    """Boxes with their bottom edge moved down by ``offset_px`` *network* pixels (``offset_px / scale`` source
    pixels, ``scale`` = network / source), never below the image: the detector's measured localisation bias of
    the contact point (see ``DetectorSettings.box_bottom_offset_px``)."""
    if not offset_px or not len(xyxy):
        return xyxy
    out = xyxy.copy()
    out[:, 3] = np.minimum(out[:, 3] + offset_px / scale, float(image_height))
    return out


def xywh_to_xyxy(cxcywh: np.ndarray) -> np.ndarray:
    half = cxcywh[:, 2:] / 2
    return np.concatenate([cxcywh[:, :2] - half, cxcywh[:, :2] + half], axis=1)


def _wanted(classes: Iterable[int] | None) -> tuple[int, ...] | None:
    return None if classes is None else tuple(int(c) for c in classes)


class YoloOnnxDetector:
    """YOLOv8 detect export on ONNX Runtime.

    Frames are letterboxed to ``input_size=(h, w)`` (384x640 suits 16:9 video: no compute spent on
    padding), and detections below ``confidence``, outside ``classes`` or smaller than ``min_box_px``
    source pixels are dropped before class-aware NMS at ``iou``. Models with a static input shape (e.g. the
    int8 1x3x640x640 export) use that shape whatever ``input_size`` says, one image per run.

    NMS is class-aware by default (as Ultralytics): a van scored both "car" and "truck" comes out twice.
    ``agnostic_nms=True`` keeps only the stronger one, which is what a tracker wants.
    ``box_bottom_offset_px``: network pixels to lower every box's bottom edge by (its contact-point bias).
    """

    def __init__(
        self,
        model_path: str | Path,
        input_size: tuple[int, int] = (384, 640),
        confidence: float = 0.25,
        iou: float = 0.45,
        classes: Iterable[int] | None = VEHICLE_CLASS_IDS,
        threads: int = 0,
        providers: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
        min_box_px: float = 8,
        max_detections: int = 300,
        batch_size: int = 8,
        agnostic_nms: bool = False,
        box_bottom_offset_px: float = 0.0,
    ) -> None:
        self.model_path = Path(model_path)
        self.box_bottom_offset_px = float(box_bottom_offset_px)
        self.session = create_session(model_path, threads, providers, what="detector model")
        self.confidence = float(confidence)
        self.iou = float(iou)
        self.classes = _wanted(classes)
        self.min_box_px = float(min_box_px)
        self.max_detections = int(max_detections)
        self.agnostic_nms = bool(agnostic_nms)

        meta = self.session.get_modelmeta().custom_metadata_map
        if meta.get("end2end") == "True":
            raise ModelLoadError(
                f"{self.model_path}: end-to-end (NMS inside) exports are not supported; export with nms=False"
            )
        self.names: dict[int, str] = parse_names(meta.get("names"))
        inp, out = self.session.get_inputs()[0], self.session.get_outputs()[0]
        self._input_name, self._output_name = inp.name, out.name
        if len(inp.shape) != 4 or (isinstance(inp.shape[1], int) and inp.shape[1] != 3):
            raise ModelLoadError(f"{self.model_path}: expected an image input [b, 3, h, w], got {inp.shape}")
        if len(out.shape) != 3 or (isinstance(out.shape[1], int) and out.shape[1] != 4 + len(self.names)):
            raise ModelLoadError(
                f"{self.model_path}: output {out.shape} is not a YOLOv8 detect head for "
                f"{len(self.names)} classes (expected [b, {4 + len(self.names)}, anchors])"
            )

        batch, _, static_h, static_w = inp.shape
        stride = int(meta.get("stride", 32))
        if isinstance(static_h, int) and isinstance(static_w, int):
            if (static_h, static_w) != tuple(input_size):
                log.warning(
                    "%s has a static input %dx%d; ignoring input_size %s",
                    self.model_path.name,
                    static_h,
                    static_w,
                    tuple(input_size),
                )
            input_size = (static_h, static_w)
        elif any(int(s) % stride for s in input_size):
            raise ValueError(f"input_size {tuple(input_size)} must be multiples of the model stride {stride}")
        self.input_size: tuple[int, int] = (int(input_size[0]), int(input_size[1]))
        # A model with dynamic height/width runs each image at the smallest stride-multiple shape that holds it
        # at the scale ``input_size`` gives (as Ultralytics' rectangular inference): a 640x240 far-field tile
        # costs a 256x640 pass, not a 384x640 one, for the same detections.
        self._stride = stride
        self._dynamic_hw = not (isinstance(static_h, int) and isinstance(static_w, int))
        # A static batch dimension fixes how many frames one run carries (short chunks are zero-padded).
        self._static_batch = batch if isinstance(batch, int) and batch > 0 else None
        self.batch_size = self._static_batch or max(1, int(batch_size))

    def __call__(self, image_bgr: np.ndarray) -> Detections:
        return self.detect_batch([image_bgr])[0]

    def input_shape_for(self, image_shape: tuple[int, ...]) -> tuple[int, int]:
        """Network input (h, w) for an image of ``image_shape``."""
        if not self._dynamic_hw:
            return self.input_size
        return fitted_input(image_shape[:2], self.input_size, self._stride)

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        """Detections of each image, in order. Images of the same network input shape share runs of up to
        ``batch_size``."""
        checked = [check_image(im) for im in images]
        results: list[Detections | None] = [None] * len(checked)
        groups: dict[tuple[int, int], list[int]] = {}
        for i, im in enumerate(checked):
            groups.setdefault(self.input_shape_for(im.shape), []).append(i)
        for shape, members in groups.items():
            for start in range(0, len(members), self.batch_size):
                idx = members[start : start + self.batch_size]
                for i, dets in zip(idx, self._run(shape, [checked[i] for i in idx]), strict=True):
                    results[i] = dets
        return [r for r in results if r is not None]

    def _run(self, shape: tuple[int, int], chunk: list[np.ndarray]) -> list[Detections]:
        boxes = [letterbox(im, shape) for im in chunk]
        blob = to_blob([b.image for b in boxes])
        if self._static_batch and len(blob) < self._static_batch:
            blob = np.concatenate([blob, np.zeros((self._static_batch - len(blob), *blob.shape[1:]), blob.dtype)])
        (raw,) = self.session.run([self._output_name], {self._input_name: blob})
        # A static-batch model returns padded rows past the real images: zip stops at the real ones.
        return [self._decode(pred, lb, im.shape) for pred, lb, im in zip(raw[: len(chunk)], boxes, chunk, strict=True)]

    def _decode(self, pred: np.ndarray, lb: LetterboxResult, image_shape: tuple[int, ...]) -> Detections:
        """``pred`` is one image's (4 + classes, anchors) output."""
        class_scores = pred[4:]
        # Best class over all 80 first, then keep vehicles (as Ultralytics does): otherwise a person whose
        # runner-up class is "motorcycle" would turn into a motorcycle detection.
        class_id = class_scores.argmax(axis=0)
        confidence = class_scores[class_id, np.arange(class_scores.shape[1])]
        keep = (confidence >= self.confidence) & class_mask(class_id, self.classes)
        if not keep.any():
            return Detections.empty(self.names)
        xyxy = unletterbox(xywh_to_xyxy(pred[:4, keep].T), lb.scale, lb.pad_x, lb.pad_y, image_shape)
        xyxy = lower_bottom_edges(xyxy, self.box_bottom_offset_px, lb.scale, image_shape[0])
        confidence, class_id = confidence[keep], class_id[keep]
        big = min_size_mask(xyxy, self.min_box_px)
        xyxy, confidence, class_id = xyxy[big], confidence[big], class_id[big]
        groups = np.zeros_like(class_id) if self.agnostic_nms else class_id
        idx = batched_nms(xyxy, confidence, groups, self.iou)[: self.max_detections]
        return Detections(xyxy[idx], confidence[idx], class_id[idx], self.names)


def fitted_input(image_hw: tuple[int, ...], max_hw: tuple[int, int], stride: int = 32) -> tuple[int, int]:
    """The smallest ``stride``-multiple (h, w) holding an ``image_hw`` image letterboxed at the scale that
    fits it into ``max_hw`` (never larger than ``max_hw``)."""
    h, w = int(image_hw[0]), int(image_hw[1])
    scale = min(max_hw[0] / h, max_hw[1] / w)

    def up(v: float, cap: int) -> int:
        return min(cap, max(stride, -(-round(v) // stride) * stride))

    return up(h * scale, max_hw[0]), up(w * scale, max_hw[1])


def to_blob(images: Sequence[np.ndarray]) -> np.ndarray:
    """Letterboxed BGR uint8 images -> (B, 3, h, w) float32 RGB in 0..1, the YOLOv8 input."""
    batch = np.stack(images)
    blob = np.ascontiguousarray(batch.transpose(0, 3, 1, 2)[:, ::-1], dtype=np.float32)
    blob /= 255.0
    return blob


class UltralyticsDetector:
    """The same contract on ``ultralytics.YOLO``: ``.pt`` / ``.onnx`` / TensorRT ``.engine`` weights on GPU
    hosts. ``threads`` and ``providers`` are accepted so callers can pass one set of settings to either
    backend; Ultralytics picks its own runtime (``device`` chooses the GPU, e.g. ``0`` or ``"cuda:1"``)."""

    def __init__(
        self,
        model_path: str | Path,
        input_size: tuple[int, int] = (384, 640),
        confidence: float = 0.25,
        iou: float = 0.45,
        classes: Iterable[int] | None = VEHICLE_CLASS_IDS,
        threads: int = 0,
        providers: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
        min_box_px: float = 8,
        max_detections: int = 300,
        batch_size: int = 8,
        agnostic_nms: bool = False,
        device: str | int | None = None,
        half: bool = False,
        box_bottom_offset_px: float = 0.0,
    ) -> None:
        self.model_path = check_model_path(model_path, "detector model")
        self.box_bottom_offset_px = float(box_bottom_offset_px)
        try:
            from ultralytics import YOLO  # heavy (torch): only imported when this backend is chosen
        except ImportError as exc:
            raise ImportError("the 'ultralytics' detector backend needs the GPU extras: pip install '.[gpu]'") from exc
        try:
            self.model = YOLO(str(self.model_path), task="detect")
        except Exception as exc:
            raise ModelLoadError(f"cannot load detector model {self.model_path}: {exc}") from exc
        self.names = {int(k): str(v) for k, v in self.model.names.items()}
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.confidence, self.iou = float(confidence), float(iou)
        self.classes = _wanted(classes)
        self.min_box_px, self.max_detections = float(min_box_px), int(max_detections)
        self.batch_size = max(1, int(batch_size))
        self.agnostic_nms, self.device, self.half = bool(agnostic_nms), device, half

    def __call__(self, image_bgr: np.ndarray) -> Detections:
        return self.detect_batch([image_bgr])[0]

    def detect_batch(self, images: Sequence[np.ndarray]) -> list[Detections]:
        results: list[Detections] = []
        for start in range(0, len(images), self.batch_size):
            chunk = [check_image(im) for im in images[start : start + self.batch_size]]
            predictions = self.model.predict(
                chunk,  # numpy frames are taken as BGR, like ours
                imgsz=list(self.input_size),
                conf=self.confidence,
                iou=self.iou,
                classes=list(self.classes) if self.classes is not None else None,
                max_det=self.max_detections,
                agnostic_nms=self.agnostic_nms,
                device=self.device,
                half=self.half,
                verbose=False,
            )
            results.extend(self._convert(p) for p in predictions)
        return results

    def _convert(self, result: Any) -> Detections:
        boxes = result.boxes
        h, w = result.orig_shape[:2]
        # Ultralytics letterboxes into imgsz at this scale (rectangular inference keeps it).
        scale = min(self.input_size[0] / h, self.input_size[1] / w)
        xyxy = lower_bottom_edges(_numpy(boxes.xyxy).astype(np.float32), self.box_bottom_offset_px, scale, h)
        dets = Detections(xyxy, _numpy(boxes.conf), _numpy(boxes.cls), self.names)
        return dets.filter(min_size_mask(dets.xyxy, self.min_box_px))


def _numpy(tensor: Any) -> np.ndarray:
    return tensor.cpu().numpy() if hasattr(tensor, "cpu") else np.asarray(tensor)


def build_detector(backend: str = "onnxruntime", model_path: str | Path = "", **kwargs: Any) -> Detector:
    """Detector for ``backend`` ("onnxruntime" or "ultralytics"); ``kwargs`` go to its constructor."""
    if backend == "onnxruntime":
        return YoloOnnxDetector(model_path, **kwargs)
    if backend == "ultralytics":
        return UltralyticsDetector(model_path, **kwargs)
    raise ValueError(f"unknown detector backend {backend!r}; choose one of {BACKENDS}")
