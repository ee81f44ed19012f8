"""Pixelation of road users: what is hidden cannot be read back, what is kept is bit-identical."""

from __future__ import annotations

import numpy as np
import pytest

from trafficstream.models.privacy import (
    anonymise,
    anonymise_boxes,
    block_size,
    clip_box,
    pixelate,
    plate_region,
)

H, W = 360, 640
OFFENDER = (100.0, 100.0, 260.0, 220.0)
OTHER = (350.5, 120.2, 470.7, 230.9)  # fractional: pixelated outward
OVERLAPPING = (200.0, 150.0, 320.0, 260.0)  # covers part of the offender


@pytest.fixture
def noise() -> np.ndarray:
    """Uniform noise: every pixel independent, so any structure left after pixelation would be the original's."""
    return np.random.default_rng(12).integers(0, 256, size=(H, W, 3), dtype=np.uint8)


def _crop(image: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
    region = clip_box(box, image.shape[1], image.shape[0])
    assert region is not None
    x1, y1, x2, y2 = region
    return image[y1:y2, x1:x2]


def _hidden(original: np.ndarray, out: np.ndarray, box: tuple[float, ...]) -> tuple[float, float, float]:
    """(variance before, variance after, correlation of the two) inside ``box``."""
    before = _crop(original, box).astype(np.float64)
    after = _crop(out, box).astype(np.float64)
    corr = float(np.corrcoef(before.ravel(), after.ravel())[0, 1])
    return float(before.var()), float(after.var()), corr


def _within_block_variance(out: np.ndarray, box: tuple[float, ...], block: int) -> float:
    """Largest variance inside one pixelation block: 0 when each block is one flat colour."""
    patch = _crop(out, box).astype(np.float64)
    worst = 0.0
    for y in range(0, patch.shape[0], block):
        for x in range(0, patch.shape[1], block):
            worst = max(worst, float(patch[y : y + block, x : x + block].var(axis=(0, 1)).max()))
    return worst


def test_others_are_unrecoverable_and_the_offender_is_bit_identical(noise):
    original = noise.copy()
    out = anonymise(noise, OFFENDER, [OFFENDER, OTHER], "others")
    assert np.array_equal(noise, original), "the input must not be modified"
    before, after, corr = _hidden(noise, out, OTHER)
    assert before > 5000  # uniform noise: (256^2 - 1) / 12 = 5461
    assert after < 0.02 * before, (before, after)  # block means of >= 15 x 15 px: ~1/225 of the variance
    assert abs(corr) < 0.15, corr  # a pixel tells next to nothing about its original value
    x1, y1, x2, y2 = clip_box(OTHER, W, H)
    assert _within_block_variance(out, OTHER, block_size(x2 - x1, y2 - y1)) == 0.0
    assert np.array_equal(_crop(out, OFFENDER), _crop(noise, OFFENDER))
    # outside every box: untouched
    mask = np.ones((H, W), bool)
    for box in (OFFENDER, OTHER):
        bx1, by1, bx2, by2 = clip_box(box, W, H)
        mask[by1:by2, bx1:bx2] = False
    assert np.array_equal(out[mask], noise[mask])


def test_the_offender_stays_sharp_where_another_box_overlaps_it(noise):
    out = anonymise(noise, OFFENDER, [OVERLAPPING], "others")
    assert np.array_equal(_crop(out, OFFENDER), _crop(noise, OFFENDER))
    # the part of the other box outside the offender is pixelated
    outside = out[150:260, 261:320].astype(np.float64)
    assert outside.var() < 0.05 * noise[150:260, 261:320].astype(np.float64).var()


def test_all_but_plate_region_hides_the_offender_but_its_plate(noise):
    out = anonymise(noise, OFFENDER, [OTHER], "all-but-plate-region")
    plate = plate_region(OFFENDER)
    assert plate == pytest.approx((140.0, 184.0, 220.0, 220.0))  # central 50 % of 160 px, bottom 30 % of 120 px
    assert np.array_equal(_crop(out, plate), _crop(noise, plate))
    occupants = (100.0, 100.0, 260.0, 180.0)  # the upper part: windscreen, driver
    before, after, corr = _hidden(noise, out, occupants)
    assert after < 0.02 * before and abs(corr) < 0.15, (before, after, corr)
    before, after, _ = _hidden(noise, out, OTHER)
    assert after < 0.02 * before


def test_off_is_an_unchanged_copy(noise):
    out = anonymise(noise, OFFENDER, [OTHER], "off")
    assert out is not noise and np.array_equal(out, noise)


def test_without_a_kept_box_every_box_is_pixelated(noise):
    out = anonymise(noise, None, [OFFENDER, OTHER], "others")
    for box in (OFFENDER, OTHER):
        before, after, _ = _hidden(noise, out, box)
        assert after < 0.02 * before


def test_boxes_are_clipped_and_bad_boxes_skipped(noise):
    boxes = [
        (-50.0, -40.0, 60.0, 50.0),  # over the top-left corner
        (600.0, 300.0, 900.0, 500.0),  # over the bottom-right corner
        (700.0, 10.0, 800.0, 50.0),  # outside
        (10.0, 10.0, 10.0, 80.0),  # zero width
        (float("nan"), 0.0, 10.0, 10.0),
        (1.0, 2.0, 3.0),  # not a box
    ]
    out = anonymise(noise, None, boxes, "others")
    assert out.shape == noise.shape and out.dtype == np.uint8
    for box in boxes[:2]:
        before, after, _ = _hidden(noise, out, box)
        assert after < 0.05 * before
    untouched = np.ones((H, W), bool)
    untouched[0:50, 0:60] = untouched[300:, 600:] = False
    assert np.array_equal(out[untouched], noise[untouched])
    assert clip_box((-50, -40, 60, 50), W, H) == (0, 0, 60, 50)
    assert clip_box((60, 50, -50, -40), W, H) == (0, 0, 60, 50)  # reversed corners
    assert clip_box((700, 10, 800, 50), W, H) is None
    assert clip_box((10.2, 10.7, 20.4, 20.5), W, H) == (10, 10, 21, 21)  # outward
    assert clip_box((10.2, 10.7, 20.4, 20.5), W, H, outward=False) == (10, 11, 20, 20)


def test_block_size_scales_with_the_box():
    assert block_size(20, 30) == 6  # small: the floor
    assert block_size(160, 120) == 15  # 8 blocks across the shorter side
    assert block_size(400, 800) == 50
    assert block_size(160, 120, blocks_across=4, min_block_px=8) == 30


def test_pixelate_fills_each_block_with_its_mean():
    image = np.zeros((10, 10, 3), np.uint8)
    image[0:2, 0:2] = 200  # one 4 x 4 block: mean 50
    out = pixelate(image, (0, 0, 8, 8), block_px=4)
    assert (out[0:4, 0:4] == 50).all() and (out[4:8, 4:8] == 0).all()
    assert image[0, 0, 0] == 200
    gray = np.arange(100, dtype=np.uint8).reshape(10, 10)
    assert pixelate(gray, (0, 0, 10, 10), block_px=10).std() == 0  # single-channel images too


def test_several_kept_boxes_and_unknown_modes(noise):
    second = (400.0, 20.0, 500.0, 100.0)
    out = anonymise_boxes(noise, [OFFENDER, second], [OFFENDER, second, OTHER], "others")
    for box in (OFFENDER, second):
        assert np.array_equal(_crop(out, box), _crop(noise, box))
    with pytest.raises(ValueError, match="privacy mode"):
        anonymise(noise, None, [OTHER], "blur")  # type: ignore[arg-type]


def test_deployment_setting_defaults_to_others_and_reads_a_bare_yaml_off():
    from trafficstream.config import DEFAULT_CONFIG, load_settings
    from trafficstream.errors import ConfigError

    assert load_settings(DEFAULT_CONFIG, environ={}).privacy.mode == "others"  # privacy by default
    # `--set` values and deployment files are YAML, where a bare `off` is false
    assert load_settings(DEFAULT_CONFIG, ["privacy.mode=off"], environ={}).privacy.mode == "off"
    with pytest.raises(ConfigError, match=r"privacy\.mode(.|\n)*privacy\.min_block_px"):
        load_settings(DEFAULT_CONFIG, ["privacy.mode=blur", "privacy.min_block_px=1"], environ={})
