"""Passage (section) speeds: distance between a vehicle's crossings of two counting lines / time between them.

What enforcement uses where a camera has ``sections`` (``trafficstream.cameras.Section``). Both crossings are
interpolated between frames (``models/lines.py``), so the time is not quantised to frames; the distance is
between the two crossing points on the road plane (a straight chord: a lane change over a 20-40 m section
lengthens the true path by well under 0.1 %).

Uncertainty, as a 95 % bound (``Z`` sigma): each crossing point is uncertain by the calibration's reprojection
rms (metres) and by the box's bottom edge (``BOX_EDGE_SIGMA_PX`` pixels) times the road's metres per pixel there; the
two ends are taken as independent, the time as exact (pts). ``sigma_v = v * hypot(sigma_a, sigma_b) / D``.
A far-away end (many metres per pixel) or a poor calibration widens it; a longer section narrows it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trafficstream.models.homography import BOX_EDGE_SIGMA_PX, RoadPlane

Z = 1.96  # 95 % two-sided
MIN_DURATION_S = 0.05  # shorter: the two crossings are the same instant (a line drawn over another)


@dataclass(frozen=True, slots=True)
class Passage:
    """One vehicle's passage over a section: ``kmh`` +- ``uncertainty_kmh`` (95 %), from ``t_start`` to
    ``t_end`` (pts seconds) over ``distance_m``."""

    section_id: str
    kmh: float
    uncertainty_kmh: float
    distance_m: float
    duration_s: float
    t_start: float
    t_end: float

    def exceeds(self, limit_kmh: float, tolerance_kmh: float = 0.0) -> bool:
        """Over the limit beyond doubt: the speed less its uncertainty is above limit + tolerance."""
        return self.kmh - self.uncertainty_kmh > limit_kmh + tolerance_kmh


def position_sigma_m(plane: RoadPlane, xy: Sequence[float], sigma_px: float = BOX_EDGE_SIGMA_PX) -> float:
    """One-sigma uncertainty (metres) of a road point measured from a box edge: calibration rms and pixel
    footprint (the larger of the road's metres per pixel along image x and y at that point)."""
    px = plane.to_image(np.asarray([xy], dtype=np.float64))
    footprint = plane.metres_per_pixel(px)[0] if np.isfinite(px).all() else np.array([np.inf])
    scale = float(np.max(footprint))
    return math.hypot(float(plane.error.rms_m), scale * sigma_px)


def passage_speed(
    section_id: str,
    a: tuple[float, float, float],
    b: tuple[float, float, float],
    sigma_a_m: float,
    sigma_b_m: float,
    max_kmh: float = 400.0,
) -> Passage | None:
    """The passage between crossings ``a`` and ``b`` (each ``(t, x, y)``: pts seconds, road metres), in
    either order; None when it cannot be a vehicle's (no time between them, or faster than ``max_kmh``)."""
    (t0, x0, y0), (t1, x1, y1) = sorted((a, b))
    duration = t1 - t0
    distance = math.hypot(x1 - x0, y1 - y0)
    if not (duration >= MIN_DURATION_S and distance > 0 and math.isfinite(distance)):
        return None
    kmh = distance / duration * 3.6
    sigma = math.hypot(sigma_a_m, sigma_b_m)
    if not (math.isfinite(kmh) and kmh <= max_kmh and math.isfinite(sigma)):
        return None
    return Passage(section_id, kmh, Z * kmh * sigma / distance, distance, duration, t0, t1)
