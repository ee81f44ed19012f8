"""Real footage and real weights from the shared data directory (``TRAFFICSTREAM_DATA_DIR`` or
``../shared/data``); models load once per session.

Helpers are handed out as fixtures (``frames``, ``data_file``) rather than imported, so the tests work
under any pytest import mode."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import av
import numpy as np
import pytest

from trafficstream.config import default_data_dir
from trafficstream.models.detector import YoloOnnxDetector
from trafficstream.models.embedder import AppearanceEmbedder

DATA_DIR = default_data_dir()


def _data_file(relative: str) -> Path:
    path = DATA_DIR / relative
    if not path.is_file():
        pytest.fail(f"sample data missing: {path} (set TRAFFICSTREAM_DATA_DIR)")
    return path


_FRAMES: dict[tuple[str, int], np.ndarray] = {}


def _video_frames(video: str, *indices: int) -> list[np.ndarray]:
    missing = {i for i in indices if (video, i) not in _FRAMES}
    if missing:  # one decoding pass per request, keeping every frame any test asked for
        with av.open(str(_data_file(f"videos/{video}"))) as container:
            for i, frame in enumerate(container.decode(video=0)):
                if i in missing:
                    _FRAMES[video, i] = frame.to_ndarray(format="bgr24")
                    missing.discard(i)
                if not missing:
                    break
        assert not missing, f"{video} has no frames {sorted(missing)}"
    return [_FRAMES[video, i] for i in indices]


@pytest.fixture(scope="session")
def data_file() -> Callable[[str], Path]:
    """``data_file("models/x.onnx")``: a path under the data directory; fails clearly when missing."""
    return _data_file


@pytest.fixture(scope="session")
def frames() -> Callable[..., list[np.ndarray]]:
    """``frames(video, *indices)``: BGR frames of ``videos/<video>``, decoded with PyAV and cached."""
    return _video_frames


@pytest.fixture(scope="session")
def yolo_path() -> Path:
    return _data_file("models/yolov8n.onnx")


@pytest.fixture(scope="session")
def detector(yolo_path: Path) -> YoloOnnxDetector:
    return YoloOnnxDetector(yolo_path, threads=2)


@pytest.fixture(scope="session")
def embedder() -> AppearanceEmbedder:
    return AppearanceEmbedder(_data_file("models/mobilenetv2_embedder.onnx"), threads=2)
