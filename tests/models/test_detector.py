from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from trafficstream.models.classes import VEHICLE_CLASS_IDS, VEHICLE_CLASSES
from trafficstream.models.detector import Detections, Detector, YoloOnnxDetector, build_detector, lower_bottom_edges
from trafficstream.models.nms import box_iou
from trafficstream.models.session import ModelLoadError, ModelNotFoundError

FrameReader = Callable[..., list[np.ndarray]]
DataFile = Callable[[str], Path]

OVERPASS = "highway_overpass_1280x720.mp4"
HIGHWAY = "highway_640x360.mp4"
# Frames where both clips show several vehicles in every lane (checked by eye).
OVERPASS_FRAMES = (220, 240)
HIGHWAY_FRAMES = (220, 300)


def assert_valid(dets: Detections, image: np.ndarray, min_confidence: float = 0.25) -> None:
    h, w = image.shape[:2]
    assert dets.xyxy.dtype == np.float32 and dets.confidence.dtype == np.float32 and dets.class_id.dtype == np.int32
    x1, y1, x2, y2 = dets.xyxy.T
    assert ((0 <= x1) & (x1 < x2) & (x2 <= w)).all() and ((0 <= y1) & (y1 < y2) & (y2 <= h)).all()
    assert ((dets.confidence >= min_confidence) & (dets.confidence <= 1)).all()
    assert set(dets.class_id.tolist()) <= set(VEHICLE_CLASS_IDS)
    assert (dets.wh >= 8).all()  # min_box_px
    assert (np.diff(dets.confidence) <= 0).all()  # strongest first


@pytest.mark.parametrize(
    ("video", "index", "min_cars"),
    [
        (OVERPASS, OVERPASS_FRAMES[0], 5),
        (OVERPASS, OVERPASS_FRAMES[1], 5),
        (HIGHWAY, HIGHWAY_FRAMES[0], 6),
        (HIGHWAY, HIGHWAY_FRAMES[1], 6),
    ],
)
def test_finds_cars_in_real_frames(
    detector: YoloOnnxDetector, frames: FrameReader, video: str, index: int, min_cars: int
) -> None:
    wanted = OVERPASS_FRAMES if video == OVERPASS else HIGHWAY_FRAMES
    frame = frames(video, *wanted)[wanted.index(index)]  # one decoding pass for all frames of a clip
    dets = detector(frame)
    assert_valid(dets, frame)
    assert (dets.class_id == 2).sum() >= min_cars, dets
    assert "car" in dets.class_names
    assert dets.confidence.max() > 0.7


def test_vehicle_filter_equals_vehicles_of_all_classes(
    detector: YoloOnnxDetector, yolo_path: Path, frames: FrameReader
) -> None:
    (frame,) = frames(HIGHWAY, HIGHWAY_FRAMES[1])
    everything = YoloOnnxDetector(yolo_path, classes=None, threads=2)(frame)
    vehicles = everything.filter(np.isin(everything.class_id, VEHICLE_CLASS_IDS))
    dets = detector(frame)
    np.testing.assert_array_equal(dets.class_id, vehicles.class_id)
    np.testing.assert_allclose(dets.xyxy, vehicles.xyxy)


def test_batch_equals_single_with_mixed_frame_sizes(detector: YoloOnnxDetector, frames: FrameReader) -> None:
    images = frames(OVERPASS, *OVERPASS_FRAMES) + frames(HIGHWAY, *HIGHWAY_FRAMES)
    batch = detector.detect_batch(images)
    assert len(batch) == len(images)
    for frame, batched in zip(images, batch, strict=True):
        single = detector(frame)
        assert len(batched) == len(single) > 0
        np.testing.assert_array_equal(batched.class_id, single.class_id)
        np.testing.assert_allclose(batched.xyxy, single.xyxy, atol=0.05)
        np.testing.assert_allclose(batched.confidence, single.confidence, atol=1e-4)
    assert detector.detect_batch([]) == []


def test_grey_image_has_no_detections(detector: YoloOnnxDetector) -> None:
    dets = detector(np.full((720, 1280, 3), 114, dtype=np.uint8))
    assert len(dets) == 0
    assert dets.xyxy.shape == (0, 4) and dets.class_names == []


def test_agnostic_nms_removes_cross_class_duplicates(yolo_path: Path, frames: FrameReader) -> None:
    # In this frame vans come out as both "car" and "truck" from class-aware NMS.
    (frame,) = frames(HIGHWAY, HIGHWAY_FRAMES[1])
    aware = YoloOnnxDetector(yolo_path, threads=2)(frame)
    agnostic = YoloOnnxDetector(yolo_path, threads=2, agnostic_nms=True)(frame)
    assert len(agnostic) < len(aware)
    iou = box_iou(agnostic.xyxy, agnostic.xyxy)
    assert (iou[~np.eye(len(agnostic), dtype=bool)] <= 0.45).all()


def test_static_int8_model_uses_its_own_input_size(data_file: DataFile, frames: FrameReader) -> None:
    detector = YoloOnnxDetector(data_file("models/yolov8n_int8_dynamic.onnx"), input_size=(384, 640), threads=2)
    assert detector.input_size == (640, 640)
    assert detector.batch_size == 1
    images = frames(HIGHWAY, HIGHWAY_FRAMES[1], HIGHWAY_FRAMES[0])
    results = detector.detect_batch(images)  # runs one frame at a time
    assert len(results) == 2
    for frame, dets in zip(images, results, strict=True):
        assert_valid(dets, frame)
        assert (dets.class_id == 2).sum() >= 5


def test_names_come_from_the_model(detector: YoloOnnxDetector) -> None:
    assert len(detector.names) == 80
    assert {i: detector.names[i] for i in VEHICLE_CLASSES} == VEHICLE_CLASSES
    assert isinstance(detector, Detector)


def test_missing_model_path_names_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "yolov8n.onnx"
    with pytest.raises(FileNotFoundError, match="detector model file not found: .*nope/yolov8n.onnx"):
        build_detector("onnxruntime", missing)
    with pytest.raises(ModelNotFoundError):
        YoloOnnxDetector(missing)


def test_corrupt_model_names_the_path(tmp_path: Path) -> None:
    corrupt = tmp_path / "broken.onnx"
    corrupt.write_bytes(b"this is not a protobuf" * 10)
    with pytest.raises(ModelLoadError, match="cannot load detector model .*broken.onnx"):
        YoloOnnxDetector(corrupt)


def test_embedder_is_not_a_detector(data_file: DataFile) -> None:
    with pytest.raises(ModelLoadError, match="not a YOLOv8 detect head|expected an image input"):
        YoloOnnxDetector(data_file("models/mobilenetv2_embedder.onnx"))


def test_bad_arguments(detector: YoloOnnxDetector, yolo_path: Path) -> None:
    with pytest.raises(ValueError, match="multiples of the model stride 32"):
        YoloOnnxDetector(yolo_path, input_size=(360, 640))
    with pytest.raises(ValueError, match="uint8 BGR image"):
        detector(np.zeros((360, 640), dtype=np.uint8))
    with pytest.raises(ValueError, match="unknown detector backend 'tensorflow'"):
        build_detector("tensorflow", yolo_path)


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is not None, reason="ultralytics is installed")
def test_ultralytics_backend_without_the_gpu_extras(yolo_path: Path) -> None:
    with pytest.raises(ImportError, match=r"pip install '\.\[gpu\]'"):
        build_detector("ultralytics", yolo_path)


@pytest.mark.skipif(importlib.util.find_spec("ultralytics") is None, reason="needs the [gpu] extras")
def test_ultralytics_backend_agrees_with_onnxruntime(
    detector: YoloOnnxDetector, data_file: DataFile, frames: FrameReader
) -> None:
    ultra = build_detector("ultralytics", data_file("models/yolov8n.pt"))
    (frame,) = frames(HIGHWAY, HIGHWAY_FRAMES[1])
    theirs, ours = ultra(frame), detector(frame)
    assert_valid(theirs, frame)
    assert abs(len(theirs) - len(ours)) <= 2


def test_detections_container() -> None:
    dets = Detections([[0, 0, 10, 10], [5, 5, 20, 30]], [0.9, 0.4], [2, 7])
    assert len(dets) == 2 and dets.class_names == ["car", "truck"]
    assert dets.xyxy.dtype == np.float32 and dets.class_id.dtype == np.int32
    kept = dets.filter(dets.confidence > 0.5)
    assert len(kept) == 1 and kept.class_names == ["car"]
    assert len(Detections.empty()) == 0
    with pytest.raises(ValueError, match="2 boxes, 1 confidences"):
        Detections(np.zeros((2, 4)), [0.1], [2, 2])


def test_box_bottom_offset_lowers_only_bottom_edges_by_network_pixels(yolo_path: Path, frames: FrameReader) -> None:
    (frame,) = frames(OVERPASS, OVERPASS_FRAMES[0])  # 1280x720 into 384x640: network scale 0.5
    plain = YoloOnnxDetector(yolo_path, threads=2, agnostic_nms=True)(frame)
    lowered = YoloOnnxDetector(yolo_path, threads=2, agnostic_nms=True, box_bottom_offset_px=0.5)(frame)
    assert len(plain) == len(lowered) > 0
    np.testing.assert_allclose(lowered.xyxy[:, :3], plain.xyxy[:, :3])
    expected = np.minimum(plain.xyxy[:, 3] + 1.0, frame.shape[0])  # 0.5 network px = 1 source px
    np.testing.assert_allclose(lowered.xyxy[:, 3], expected, atol=1e-4)
    assert_valid(lowered, frame)


def test_lower_bottom_edges_is_pure_and_clipped() -> None:
    boxes = np.array([[10, 20, 30, 40], [0, 0, 5, 99.5]], dtype=np.float32)
    out = lower_bottom_edges(boxes, 0.25, 0.5, image_height=100)
    assert out[0, 3] == pytest.approx(40.5) and out[1, 3] == 100.0  # never below the image
    assert boxes[0, 3] == 40  # the input is untouched
    assert lower_bottom_edges(boxes, 0.0, 0.5, 100) is boxes
