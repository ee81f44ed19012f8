from __future__ import annotations

import numpy as np
import pytest

from trafficstream.models.letterbox import letterbox, to_letterbox, unletterbox


def test_wide_frame_fills_width_and_pads_rows_evenly() -> None:
    image = np.full((720, 1280, 3), 200, dtype=np.uint8)
    result = letterbox(image, (384, 640))
    assert result.image.shape == (384, 640, 3)
    assert result.scale == pytest.approx(0.5)
    assert (result.pad_x, result.pad_y) == (0, 12)
    assert (result.image[:12] == 114).all() and (result.image[-12:] == 114).all()
    assert (result.image[12:-12] == 200).all()


def test_portrait_frame_pads_columns_centred() -> None:
    image = np.zeros((640, 320, 3), dtype=np.uint8)
    result = letterbox(image, (640, 640), color=(1, 2, 3))
    assert result.scale == pytest.approx(1.0)
    assert (result.pad_x, result.pad_y) == (160, 0)
    assert (result.image[:, :160] == (1, 2, 3)).all()
    assert (result.image[:, 160:480] == 0).all()
    assert (result.image[:, 480:] == (1, 2, 3)).all()


def test_small_image_is_scaled_up() -> None:
    result = letterbox(np.zeros((90, 160, 3), dtype=np.uint8), (384, 640))
    assert result.scale == pytest.approx(4.0)
    assert result.image.shape == (384, 640, 3)
    assert result.pad_y == 12


def test_exact_size_is_untouched() -> None:
    image = np.random.default_rng(0).integers(0, 255, (384, 640, 3), dtype=np.uint8)
    result = letterbox(image, (384, 640))
    assert (result.scale, result.pad_x, result.pad_y) == (1.0, 0, 0)
    np.testing.assert_array_equal(result.image, image)


@pytest.mark.parametrize("shape", [(720, 1280, 3), (360, 640, 3), (1080, 1440, 3), (500, 333, 3)])
def test_box_round_trip(shape: tuple[int, int, int]) -> None:
    h, w = shape[:2]
    boxes = np.array([[0, 0, w, h], [10.5, 20.25, 100, 90], [w / 2, h / 3, w - 1, h - 1]], dtype=np.float32)
    result = letterbox(np.zeros(shape, dtype=np.uint8), (384, 640))
    net = to_letterbox(boxes, result.scale, result.pad_x, result.pad_y)
    assert (net[:, [0, 2]] >= 0).all() and (net[:, [0, 2]] <= 640).all()
    assert (net[:, [1, 3]] >= 0).all() and (net[:, [1, 3]] <= 384).all()
    back = unletterbox(net, result.scale, result.pad_x, result.pad_y, shape)
    np.testing.assert_allclose(back, boxes, atol=1e-3)


def test_unletterbox_clips_to_the_source_image() -> None:
    # A box that spills into the top padding and past the right edge of a 720p frame letterboxed to 384x640.
    net = np.array([[600, 5, 700, 50]], dtype=np.float32)
    back = unletterbox(net, 0.5, 0, 12, (720, 1280, 3))
    np.testing.assert_allclose(back, [[1200, 0, 1280, 76]])
    assert back.dtype == np.float32


def test_rejects_empty_image() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        letterbox(np.zeros((0, 10, 3), dtype=np.uint8))
