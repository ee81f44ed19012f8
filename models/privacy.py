"""Anonymising road users in evidence images and live video: pixelate every box but the offender's.

Evidence leaves the system (it is exported, printed, sent with a notice), and the people in the picture who
did nothing wrong have a right not to be in it. The detections of the frame are already at hand, so their
boxes are pixelated; the offending vehicle stays sharp because it is the evidence.

Modes (``privacy.mode`` in the deployment settings):

- ``off``: the image as it is.
- ``others``: every other box pixelated; the offender's box stays sharp, also where another box overlaps it
  (the evidence must show the whole offending vehicle).
- ``all-but-plate-region``: every box pixelated, the offender's too, except the offender's plate region
  (:func:`plate_region`): the identification the violation needs, and nothing of its occupants.

Pixelation replaces each block by its mean: within a block nothing of the original is left, and the blocks
are large (:func:`block_size`: at most ``blocks_across`` across the box's shorter side, never under
``min_block_px``), so a face or a plate falls into one or two blocks and cannot be read back. A box blurred
with a small kernel can be sharpened again; a mean over a large block cannot.

Pure numpy: images in (uint8, ``H x W`` or ``H x W x C``, BGR as decoded), new images out; the input is never
written to. Boxes are ``(x1, y1, x2, y2)`` floats in the image's pixels (as the detector reports them); they are
clipped to the image, reversed corners are put in order, and empty or non-finite boxes are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Literal, get_args

import numpy as np

PrivacyMode = Literal["off", "others", "all-but-plate-region"]
MODES: tuple[str, ...] = get_args(PrivacyMode)
Box = Sequence[float]  # x1, y1, x2, y2 in image pixels

BLOCKS_ACROSS = 8  # at most this many blocks across a box's shorter side
MIN_BLOCK_PX = 6  # and never blocks smaller than this
# The plate region of a vehicle box (fractions of its width and height): see plate_region.
PLATE_WIDTH_FRACTION = 0.5
PLATE_HEIGHT_FRACTION = 0.3

Region = tuple[int, int, int, int]  # x1, y1, x2, y2: integer pixel bounds, x2 / y2 exclusive


def clip_box(box: Box, width: int, height: int, *, outward: bool = True) -> Region | None:
    """Integer pixel bounds of ``box`` inside a ``width`` x ``height`` image; None when nothing is left.

    ``outward`` rounds to cover every pixel the box touches (what is pixelated: a fraction of a pixel of a
    road user left sharp is still a pixel of them); otherwise to the nearest pixel edge (what is kept sharp).
    Reversed corners are put in order; a box of the wrong length or with a non-finite coordinate is None.
    """
    try:
        coords = [float(c) for c in box]
    except (TypeError, ValueError):
        return None
    if len(coords) != 4 or not all(math.isfinite(c) for c in coords):
        return None
    x1, x2 = sorted(coords[0::2])
    y1, y2 = sorted(coords[1::2])
    lo, hi = (math.floor, math.ceil) if outward else (round, round)
    ix1, iy1 = max(0, int(lo(x1))), max(0, int(lo(y1)))
    ix2, iy2 = min(width, int(hi(x2))), min(height, int(hi(y2)))
    if ix2 <= ix1 or iy2 <= iy1:
        return None
    return ix1, iy1, ix2, iy2


def block_size(
    width: float, height: float, *, blocks_across: int = BLOCKS_ACROSS, min_block_px: int = MIN_BLOCK_PX
) -> int:
    """Pixelation block (px) for a box of ``width`` x ``height``: scales with the box, so a big close vehicle
    is as unreadable as a small distant one (a fixed block would leave a close face recognisable)."""
    short = max(0.0, min(width, height))
    return max(int(min_block_px), math.ceil(short / max(1, int(blocks_across))))


def _pixelate_region(out: np.ndarray, region: Region, block_px: int) -> None:
    """Replace each ``block_px`` block of ``region`` of ``out`` (in place) by its mean; blocks at the region's
    right and bottom edges may be narrower (their own mean: nothing outside the region leaks in)."""
    x1, y1, x2, y2 = region
    patch = out[y1:y2, x1:x2].astype(np.float64)
    rows = np.arange(0, y2 - y1, block_px)
    cols = np.arange(0, x2 - x1, block_px)
    sums = np.add.reduceat(np.add.reduceat(patch, rows, axis=0), cols, axis=1)
    heights = np.diff(np.append(rows, y2 - y1))
    widths = np.diff(np.append(cols, x2 - x1))
    counts = np.outer(heights, widths)
    means = sums / (counts if patch.ndim == 2 else counts[:, :, None])
    blocks = np.repeat(np.repeat(means, heights, axis=0), widths, axis=1)
    out[y1:y2, x1:x2] = np.clip(np.rint(blocks), 0, 255).astype(out.dtype)


def pixelate(image: np.ndarray, box: Box, block_px: int | None = None) -> np.ndarray:
    """A copy of ``image`` with ``box`` pixelated in blocks of ``block_px`` (default: :func:`block_size` of the
    box). A box outside the image or empty changes nothing."""
    out = image.copy()
    region = clip_box(box, image.shape[1], image.shape[0])
    if region is not None:
        x1, y1, x2, y2 = region
        _pixelate_region(out, region, max(1, int(block_px or block_size(x2 - x1, y2 - y1))))
    return out


def plate_region(box: Box) -> tuple[float, float, float, float]:
    """The part of a vehicle box where its number plate is: the central ``PLATE_WIDTH_FRACTION`` of its width
    and the bottom ``PLATE_HEIGHT_FRACTION`` of its height.

    Traffic cameras see vehicles from the front or the back, and plates are mounted low (bumper height) and
    centred on both; the box's bottom 30 % holds the bumper and the plate, not the windscreen and its
    occupants (in the upper part). Half the width leaves margin for a plate off centre or a box a little wider
    than the vehicle, while the driver and passengers stay pixelated.
    """
    x1, x2 = sorted((float(box[0]), float(box[2])))
    y1, y2 = sorted((float(box[1]), float(box[3])))
    w, h = x2 - x1, y2 - y1
    margin = w * (1.0 - PLATE_WIDTH_FRACTION) / 2.0
    return x1 + margin, y2 - h * PLATE_HEIGHT_FRACTION, x2 - margin, y2


def anonymise_boxes(
    image: np.ndarray,
    keep: Iterable[Box],
    others: Iterable[Box],
    mode: PrivacyMode,
    *,
    blocks_across: int = BLOCKS_ACROSS,
    min_block_px: int = MIN_BLOCK_PX,
) -> np.ndarray:
    """:func:`anonymise` with any number of boxes to keep (the live video's speeding vehicles).

    ``others`` may include the kept boxes themselves (a caller can pass every detection of the frame): in
    ``others`` mode the kept regions are restored from the original after pixelating, in
    ``all-but-plate-region`` mode kept boxes are pixelated anyway.
    """
    if mode == "off":
        return image.copy()
    if mode not in MODES:
        raise ValueError(f"privacy mode {mode!r}: expected one of {', '.join(MODES)}")
    keep = list(keep)
    height, width = image.shape[:2]
    out = image.copy()
    hidden = list(others) + (keep if mode == "all-but-plate-region" else [])
    for box in hidden:
        region = clip_box(box, width, height)
        if region is not None:
            x1, y1, x2, y2 = region
            block = block_size(x2 - x1, y2 - y1, blocks_across=blocks_across, min_block_px=min_block_px)
            _pixelate_region(out, region, block)
    for box in keep:  # restored last: the offender (or its plate) stays sharp where another box overlaps it
        shown = clip_box(box, width, height, outward=False)
        if shown is not None and mode == "all-but-plate-region":
            shown = clip_box(plate_region(box), width, height, outward=False)
        if shown is not None:
            x1, y1, x2, y2 = shown
            out[y1:y2, x1:x2] = image[y1:y2, x1:x2]
    return out


def anonymise(
    image: np.ndarray,
    keep: Box | None,
    others: Iterable[Box],
    mode: PrivacyMode,
    *,
    blocks_across: int = BLOCKS_ACROSS,
    min_block_px: int = MIN_BLOCK_PX,
) -> np.ndarray:
    """A copy of ``image`` with the road users in ``others`` pixelated, as ``mode`` says (see the module).

    ``keep``: the offending vehicle's box (None: nobody is kept, every box in ``others`` is pixelated).
    ``off`` returns an unchanged copy.
    """
    return anonymise_boxes(
        image,
        [] if keep is None else [keep],
        others,
        mode,
        blocks_across=blocks_across,
        min_block_px=min_block_px,
    )
