"""Evidence snapshots anonymise the other road users: the offender sharp, the others pixelated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pandas as pd
import pytest

from trafficstream.config import PrivacySettings, Settings, settings_to_json
from trafficstream.models.privacy import plate_region
from trafficstream.streaming_jobs import evidence

H, W = 360, 640
OFFENDER = (100.0, 120.0, 260.0, 240.0)
OTHERS = [(330.0, 130.0, 450.0, 250.0), (480.0, 40.0, 600.0, 140.0)]
LABEL = "#7 car 131 km/h > 100"


@pytest.fixture
def frame() -> np.ndarray:
    return np.random.default_rng(7).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


@pytest.fixture
def texture() -> np.ndarray:
    """Noise in 4 x 4 px cells: survives JPEG (pixel-level noise does not), for the tests that read files back."""
    cells = np.random.default_rng(8).integers(0, 256, size=(H // 4, W // 4, 3), dtype=np.uint8)
    return cv2.resize(cells, (W, H), interpolation=cv2.INTER_NEAREST)


def _crop(image: np.ndarray, box: tuple[float, ...], inset: int = 0) -> np.ndarray:
    x1, y1, x2, y2 = (int(c) for c in box)
    return image[y1 + inset : y2 - inset, x1 + inset : x2 - inset]


def _var(image: np.ndarray) -> float:
    return float(image.astype(np.float64).var())


def test_offender_sharp_others_pixelated_annotations_on_top(frame):
    original = frame.copy()
    out = evidence.evidence_image(frame, OFFENDER, LABEL, PrivacySettings(), [OFFENDER, *OTHERS])
    assert np.array_equal(frame, original)
    inside = 4  # the red outline is drawn on the box's edge
    assert np.array_equal(_crop(out, OFFENDER, inside), _crop(frame, OFFENDER, inside))
    for box in OTHERS:
        before, after = _var(_crop(frame, box)), _var(_crop(out, box))
        assert before > 5000 and after < 0.02 * before, (box, before, after)
    # the annotations are drawn after anonymising: the outline is pure red, not a pixelated shade of it
    x1, y1, x2, y2 = (int(c) for c in OFFENDER)
    assert tuple(int(c) for c in out[(y1 + y2) // 2, x1]) == (0, 0, 255)
    plain = evidence.draw_violation(frame, OFFENDER, LABEL)
    assert np.array_equal(out[y1 - 40 : y1, x1 : x1 + 200], plain[y1 - 40 : y1, x1 : x1 + 200])  # the label


def test_modes_and_missing_others(frame):
    off = evidence.evidence_image(frame, OFFENDER, LABEL, PrivacySettings(mode="off"), OTHERS)
    assert np.array_equal(off, evidence.draw_violation(frame, OFFENDER, LABEL))
    alone = evidence.evidence_image(frame, OFFENDER, LABEL, PrivacySettings(), None)  # nobody else known
    assert np.array_equal(alone, evidence.draw_violation(frame, OFFENDER, LABEL))
    plate = evidence.evidence_image(frame, OFFENDER, LABEL, PrivacySettings(mode="all-but-plate-region"), None)
    px1, py1, px2, py2 = (round(c) for c in plate_region(OFFENDER))
    assert np.array_equal(plate[py1 : py2 - 4, px1:px2], frame[py1 : py2 - 4, px1:px2])  # above the outline
    occupants = (OFFENDER[0], OFFENDER[1], OFFENDER[2], py1)
    assert _var(_crop(plate, occupants, 4)) < 0.05 * _var(_crop(frame, occupants, 4))


def test_payload_boxes_keeps_only_boxes():
    value = [[1, 2, 3, 4], [1.5, 2, 3, 4.5], [1, 2, 3], "x", [1, 2, "3", 4], [True, 2, 3, 4], None]
    assert evidence.payload_boxes(value) == [(1.0, 2.0, 3.0, 4.0), (1.5, 2.0, 3.0, 4.5)]
    assert evidence.payload_boxes(None) == []
    assert evidence.payload_boxes("[[1, 2, 3, 4]]") == []


class _Reader:
    def __init__(self, image: np.ndarray) -> None:
        self.image = image

    def read(self, index: int, pts_s: float) -> np.ndarray:
        return self.image


class _Pool:
    def __init__(self, image: np.ndarray) -> None:
        self.reader = _Reader(image)

    def get(self, path: Path) -> _Reader:
        return self.reader


def _violation_rows(others: Any) -> pd.DataFrame:
    payload = {
        "track_id": 7,
        "class_name": "car",
        "speed_kmh": 131.0,
        "limit_kmh": 100.0,
        "over_s": 0.8,
        "source_uri": "file:///data/cam-1.mp4",
        "source_index": 60,
        "source_pts_s": 2.4,
        "x1": OFFENDER[0],
        "y1": OFFENDER[1],
        "x2": OFFENDER[2],
        "y2": OFFENDER[3],
    }
    if others is not None:
        payload["others"] = others
    row = {"camera_id": "cam-1", "frame_index": 60, "pts_s": 2.4, "capture_ts": 1_700_000_002.4}
    return pd.DataFrame([{**row, "payload": json.dumps(payload)}])


@pytest.mark.parametrize("mode", ["others", "off"])
def test_render_evidence_pixelates_the_payloads_others(texture, tmp_path, monkeypatch, mode):
    frame = texture
    monkeypatch.setattr(evidence, "_pool", _Pool(frame))
    monkeypatch.setattr(evidence, "_evidence_root", lambda _: tmp_path)
    monkeypatch.setattr(evidence, "_keep_segment", lambda *_: None)
    settings_json = settings_to_json(Settings(privacy=PrivacySettings(mode=mode)))
    rows = _violation_rows([list(OFFENDER), *map(list, OTHERS)])
    (out,) = list(evidence.render_evidence(settings_json, iter([rows])))
    (uri,) = out.evidence_uri
    written = cv2.imread(str(evidence.evidence_path(tmp_path, "cam-1", 7, 60)))
    assert uri and written.shape == frame.shape
    # JPEG changes pixels a little: the offender is still the original (highly correlated), the others are not
    sharp = np.corrcoef(_crop(written, OFFENDER, 4).ravel(), _crop(frame, OFFENDER, 4).ravel())[0, 1]
    assert sharp > 0.9, sharp
    for box in OTHERS:
        ratio = _var(_crop(written, box, 1)) / _var(_crop(frame, box, 1))
        # 4 px cells in 15 px blocks: the block means of ~14 cells keep ~1/14 of the variance; JPEG alone ~0.8
        assert (ratio < 0.1) if mode == "others" else (ratio > 0.7), (mode, box, ratio)


def test_render_evidence_without_others_keeps_the_frame(texture, tmp_path, monkeypatch):
    """A payload from a producer that sends no ``others`` (older tracking): nothing else is pixelated."""
    frame = texture
    monkeypatch.setattr(evidence, "_pool", _Pool(frame))
    monkeypatch.setattr(evidence, "_evidence_root", lambda _: tmp_path)
    monkeypatch.setattr(evidence, "_keep_segment", lambda *_: None)
    (out,) = list(evidence.render_evidence(settings_to_json(Settings()), iter([_violation_rows(None)])))
    written = cv2.imread(str(evidence.evidence_path(tmp_path, "cam-1", 7, 60)))
    assert out.evidence_uri.notna().all()
    assert _var(_crop(written, OTHERS[0], 1)) > 0.7 * _var(_crop(frame, OTHERS[0], 1))
