"""Synthetic stage-1 rows and a fake ``GroupState`` for driving ``track_camera`` without Spark.

Helpers are handed out as fixtures (like ``tests/models/conftest.py``), so the tests work under any pytest
import mode. The camera's road plane is 0.1 m per pixel (image x = road x), so a box moving ``v`` px/frame at
25 fps drives ``v * 2.5 * 3.6`` km/h.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pyspark.sql.pandas.types import to_arrow_schema

from trafficstream.cameras import Calibration, Camera
from trafficstream.config import Settings, default_data_dir, settings_to_json
from trafficstream.streaming_jobs.schemas import PERCEPTION, TRACKED
from trafficstream.streaming_jobs.tracking import MemoryGroupState

CAMERA_ID = "cam-1"
FPS = 25.0
M_PER_PX = 0.1
T0 = 1_700_000_000.0  # capture time of frame 0


@dataclass
class Car:
    """A box driving along image x at constant speed, with its own appearance direction."""

    start: int  # first frame it is seen
    x: float  # box centre at `start`, px
    y: float
    kmh: float
    w: float = 90.0
    h: float = 50.0
    class_id: int = 2

    @property
    def px_per_frame(self) -> float:
        return self.kmh / 3.6 / M_PER_PX / FPS


def make_settings(speed_limit_kmh: float = 100.0, min_violation_s: float = 0.5, **tracker: Any) -> Settings:
    calibration = Calibration(
        image_points=[(0, 0), (1280, 0), (1280, 720), (0, 720)],
        world_points=[(0, 72), (128, 72), (128, 0), (0, 0)],
    )
    source = str(default_data_dir() / "videos" / "cam-1.mp4")  # inside storage.allowed_roots; never opened here
    camera = Camera(
        id=CAMERA_ID,
        source=source,
        fps=FPS,
        speed_limit_kmh=speed_limit_kmh,
        min_violation_s=min_violation_s,
        calibration=calibration,
    )
    return Settings(cameras=[camera], tracker=tracker)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def scene_rows(cars: list[Car], frames: range, *, dim: int = 64, seed: int = 0, t0: float = T0) -> pd.DataFrame:
    """One ``ok`` PERCEPTION row per frame index; embeddings N x dim float16, unit length, per-car identity."""
    rng = np.random.default_rng(seed)
    bases = _unit(np.random.default_rng(1234).normal(size=(len(cars), dim)))
    rows = []
    for f in frames:
        boxes, scores, classes, embs = [], [], [], []
        for i, car in enumerate(cars):
            if f < car.start:
                continue
            cx = car.x + car.px_per_frame * (f - car.start)
            if not 0 < cx < 1280:
                continue
            boxes += [cx - car.w / 2, car.y - car.h / 2, cx + car.w / 2, car.y + car.h / 2]
            scores.append(0.9)
            classes.append(car.class_id)
            embs.append(_unit(bases[i] + rng.normal(scale=0.05, size=dim)))
        emb = np.asarray(embs, np.float16).reshape(len(scores), dim)
        rows.append(
            stage1_row(
                f, boxes=boxes, scores=scores, classes=classes, embeddings=emb.tobytes(), embedding_dim=dim, t0=t0
            )
        )
    return frame_df(rows)


def stage1_row(frame_index: int | None, status: str = "ok", *, t0: float = T0, **kw: Any) -> dict[str, Any]:
    fi = 0 if frame_index is None else frame_index
    row: dict[str, Any] = {
        "camera_id": CAMERA_ID,
        "frame_index": frame_index,
        "pts_s": fi / FPS,
        "capture_ts": t0 + fi / FPS,
        "ingest_ts": t0 + fi / FPS + 0.01,
        "source_uri": "file:///data/cam-1.mp4",
        "width": 1280,
        "height": 720,
        "kafka_topic": "frames",
        "kafka_partition": 0,
        "kafka_offset": fi,
        "status": status,
        "reason": None,
        "detail": None,
        "payload": None,
        "boxes": [],
        "scores": [],
        "classes": [],
        "embeddings": b"",
        "embedding_dim": 0,
        "drift": None,
        "raw_detections": 0,
        "decode_ms": 1.0,
        "detect_ms": 2.0,
        "embed_ms": 3.0,
    }
    row.update(kw)
    row["raw_detections"] = len(row["scores"] or [])
    return row


def frame_df(rows: list[dict[str, Any]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=[f.name for f in PERCEPTION.fields])


def run_batch(
    settings: Settings | str, rows: pd.DataFrame, state: FakeGroupState, camera_id: str = CAMERA_ID
) -> pd.DataFrame:
    """One micro-batch of one camera through ``track_camera``; checks the output fits ``TRACKED``."""
    from trafficstream.streaming_jobs.tracking import track_camera

    settings_json = settings if isinstance(settings, str) else settings_to_json(settings)
    (out,) = list(track_camera(settings_json, (camera_id,), iter([rows]), state))
    pa.Table.from_pandas(out, schema=TRACKED_ARROW, preserve_index=False)  # what Spark's conversion needs
    return out


def payloads(out: pd.DataFrame, kind: str) -> list[dict[str, Any]]:
    return [json.loads(p) for p in out.loc[out.kind == kind, "payload"]]


TRACKED_ARROW = to_arrow_schema(TRACKED)


# the in-memory GroupState stage 2 runs on outside Spark
FakeGroupState = MemoryGroupState


@pytest.fixture
def group_state() -> Callable[..., FakeGroupState]:
    return FakeGroupState


_EXPORTS = (
    "CAMERA_ID",
    "FPS",
    "T0",
    "Car",
    "FakeGroupState",
    "frame_df",
    "make_settings",
    "payloads",
    "run_batch",
    "scene_rows",
    "stage1_row",
)


@pytest.fixture
def synth() -> SimpleNamespace:
    """This module's builders: ``synth.make_settings``, ``synth.scene_rows``, ``synth.Car``, ...

    Built from this module's globals: every ``conftest`` is imported under that one name, so
    ``sys.modules["conftest"]`` may be another directory's."""
    return SimpleNamespace(**{name: globals()[name] for name in _EXPORTS})
