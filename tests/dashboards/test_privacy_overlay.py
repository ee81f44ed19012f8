"""The live video's privacy switch: road users pixelated before the overlays, speeding vehicles kept."""

from __future__ import annotations

import threading

import numpy as np

from trafficstream.config import PrivacySettings
from trafficstream.dashboards.buffers import LiveBuffers
from trafficstream.dashboards.video import MjpegStreamer, anonymise_frame, draw_overlays

H, W = 360, 640
SPEEDING = {"id": 1, "cls": "car", "box": [100, 100, 260, 220], "kmh": 131.0, "over": True}
SLOW = {"id": 2, "cls": "car", "box": [350, 120, 470, 230], "kmh": 80.0, "over": False}


def _noise() -> np.ndarray:
    return np.random.default_rng(3).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _var(image: np.ndarray) -> float:
    return float(image.astype(np.float64).var())


def test_others_mode_keeps_speeding_vehicles_and_pixelates_the_rest():
    image = _noise()
    out = anonymise_frame(image, [SPEEDING, SLOW], 100, PrivacySettings(mode="others"))
    assert np.array_equal(out[100:220, 100:260], image[100:220, 100:260])
    assert _var(out[120:230, 350:470]) < 0.02 * _var(image[120:230, 350:470])
    # without a speeding vehicle in view, everybody is pixelated
    calm = anonymise_frame(image, [{**SPEEDING, "kmh": 90.0, "over": False}, SLOW], 100, PrivacySettings())
    assert _var(calm[100:220, 100:260]) < 0.02 * _var(image[100:220, 100:260])


def test_boxes_follow_the_scale_of_a_resized_image():
    image = _noise()[: H // 2, : W // 2].copy()
    out = anonymise_frame(image, [SLOW], 100, PrivacySettings(), scale=0.5)
    assert _var(out[60:115, 175:235]) < 0.05 * _var(image[60:115, 175:235])
    assert np.array_equal(out[:, :170], image[:, :170])


def test_overlays_are_drawn_on_the_anonymised_image():
    image = _noise()
    plain = draw_overlays(image, [SPEEDING, SLOW], 100)
    assert np.array_equal(draw_overlays(image, [SPEEDING, SLOW], 100, privacy=PrivacySettings(mode="off")), plain)
    private = draw_overlays(image, [SPEEDING, SLOW], 100, privacy=PrivacySettings(mode="others"))
    assert np.array_equal(private[:, :340], plain[:, :340])  # the speeding car, its label and the rest: unchanged
    inner = (slice(130, 220), slice(355, 465))  # inside the slow car's outline, below its label
    assert _var(private[inner]) < 0.02 * _var(plain[inner])
    assert np.array_equal(private[120, 350:470], plain[120, 350:470])  # its outline is drawn on top
    assert np.array_equal(image, _noise())


def test_streamer_applies_the_mode_only_when_live_video_is_switched_on(demo_settings):
    camera = demo_settings.cameras[0]
    stop = threading.Event()
    off = MjpegStreamer(demo_settings, LiveBuffers([camera.id]), stop).renderer(camera)
    assert off.privacy is None  # default: the live video as it is
    switched = demo_settings.model_copy(
        update={"privacy": PrivacySettings(mode="all-but-plate-region", live_video=True)}
    )
    on = MjpegStreamer(switched, LiveBuffers([camera.id]), stop).renderer(camera)
    assert on.privacy is not None and on.privacy.mode == "all-but-plate-region"
