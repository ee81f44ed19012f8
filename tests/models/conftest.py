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


class RoadCamera:
    """A pinhole camera built by hand: 8 m above the road, pitched 15 deg down, looking along +y (world z up),
    f = 700 px, 1280 x 720 with the principal point at the centre; ``lens`` is its barrel distortion."""

    def __init__(self, k1: float = -0.15, height_m: float = 8.0, pitch_deg: float = 15.0, f: float = 700.0) -> None:
        from trafficstream.models.lens import LensModel

        p = np.radians(pitch_deg)
        level = np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])  # world (x, y, z) -> camera (right, down, ahead)
        pitch = np.array([[1.0, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])  # look down
        self.R = pitch @ level
        self.t = -self.R @ np.array([0.0, 0.0, height_m])
        self.K = np.array([[f, 0, 640.0], [0, f, 360.0], [0, 0, 1]])
        self.size = (1280, 720)
        self.lens = LensModel(f, 640.0, 360.0, k1)

    def ideal(self, world: np.ndarray) -> np.ndarray:
        """Road points (N, 2), metres -> ideal (pinhole) pixels."""
        w = np.asarray(world, dtype=np.float64).reshape(-1, 2)
        cam = (self.R @ np.column_stack([w, np.zeros(len(w))]).T).T + self.t
        assert (cam[:, 2] > 0).all(), "a road point behind the camera"
        uvw = (self.K @ cam.T).T
        return uvw[:, :2] / uvw[:, 2:]

    def raw(self, world: np.ndarray) -> np.ndarray:
        """Road points -> the pixels the distorting lens shows them at."""
        from trafficstream.models.lens import distort_pixels

        return distort_pixels(self.ideal(world), self.lens)

    def visible(self, world: np.ndarray, margin_px: float = 20.0, max_radius_px: float = 660.0) -> np.ndarray:
        """The road points whose raw pixels lie inside the frame (and short of the lens model's fold)."""
        w = np.asarray(world, dtype=np.float64).reshape(-1, 2)
        px = self.raw(w)
        inside = (px >= margin_px).all(axis=1) & (px[:, 0] <= 1280 - margin_px) & (px[:, 1] <= 720 - margin_px)
        inside &= np.hypot(px[:, 0] - 640, px[:, 1] - 360) <= max_radius_px
        return w[inside]


@pytest.fixture(scope="session")
def road_camera() -> RoadCamera:
    """``RoadCamera`` with k1 = -0.15: pixels as a wide-angle traffic camera's video shows them."""
    return RoadCamera()
