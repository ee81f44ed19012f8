"""The road's course on its plane: straight, or bending with a constant radius beyond a point along it.

Everything that follows the road (lane markings, guard rails, vehicles, the region of interest, counting lines)
is laid out in *lane coordinates*: ``x`` across the road exactly as on a straight road (lanes from x = 0
rightwards), ``s`` along it (metres along the centre line, x = ``x_ref``). :class:`RoadCourse` maps them to
positions on the road plane (the world frame of the ground truth and the calibration) and back.

On a straight road, or before ``start_m``, the map is the identity. Beyond it the centre line is a circle of
radius ``radius_m`` (> 0 bends towards +x, to the right as the camera sees it) that leaves the straight part
tangentially; a line of constant ``x`` is a concentric circle, ``x - x_ref`` nearer the centre of curvature
for a right bend. A vehicle at ``x`` covers ``(R - (x - x_ref)) / R`` metres of its own path per metre of
``s``: :meth:`RoadCourse.path_scale`, which makes true speeds exact.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from trafficstream.bench.synthetic.scene import SceneParams


@dataclass(frozen=True)
class RoadCourse:
    x_ref: float  # the centre line's x
    start_m: float  # where the bend begins, along the road
    radius_m: float | None = None  # None: straight

    @classmethod
    def of(cls, params: SceneParams) -> RoadCourse:
        return cls(params.road_width_m / 2, params.curve_start_m, params.curve_radius_m)

    @property
    def curved(self) -> bool:
        return self.radius_m is not None

    def _polar(self, x: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """On the bend: radius factor R - e, angle phi, and where the bend applies."""
        assert self.radius_m is not None
        R = self.radius_m
        bend = s > self.start_m
        phi = np.where(bend, (s - self.start_m) / R, 0.0)
        return R - (x - self.x_ref), phi, bend

    def to_plane(self, x: npt.ArrayLike, s: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Lane coordinates -> road-plane position (metres)."""
        x, s = np.asarray(x, dtype=np.float64), np.asarray(s, dtype=np.float64)
        if self.radius_m is None:
            return x, s
        rho, phi, bend = self._polar(x, s)
        px = np.where(bend, self.x_ref + self.radius_m - rho * np.cos(phi), x)
        py = np.where(bend, self.start_m + rho * np.sin(phi), s)
        return px, py

    def tangent(self, x: npt.ArrayLike, s: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Unit direction of increasing ``s`` (away from the camera) on the road plane."""
        x, s = np.asarray(x, dtype=np.float64), np.asarray(s, dtype=np.float64)
        if self.radius_m is None:
            return np.zeros_like(x + s), np.ones_like(x + s)
        _, phi, _ = self._polar(x, s)
        return np.sin(phi), np.cos(phi)

    def path_scale(self, x: npt.ArrayLike, s: npt.ArrayLike) -> np.ndarray:
        """Metres of path per metre of ``s`` along a line of constant ``x`` (1 on the straight)."""
        x, s = np.asarray(x, dtype=np.float64), np.asarray(s, dtype=np.float64)
        if self.radius_m is None:
            return np.ones_like(x + s)
        rho, _, bend = self._polar(x, s)
        return np.where(bend, rho / self.radius_m, 1.0)

    def to_lane(self, px: npt.ArrayLike, py: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """Road-plane position -> lane coordinates (the inverse of :meth:`to_plane` on the road's side of the
        centre of curvature)."""
        px, py = np.asarray(px), np.asarray(py)
        if self.radius_m is None:
            return px, py
        R, sign = self.radius_m, np.sign(self.radius_m)
        vx, vy = px - (self.x_ref + R), py - self.start_m
        bend = py > self.start_m
        x = np.where(bend, self.x_ref + R - sign * np.hypot(vx, vy), px)
        s = np.where(bend, self.start_m + R * np.arctan2(sign * vy, -sign * vx), py)
        return x, s

    def x_at(self, x: float, py: npt.ArrayLike) -> np.ndarray:
        """Road-plane x where the line of lane coordinate ``x`` crosses the plane's row ``py`` (NaN where it
        does not: beyond a quarter of the bend)."""
        py = np.asarray(py, dtype=np.float64)
        if self.radius_m is None:
            return np.full_like(py, x)
        R = self.radius_m
        rho, dy = abs(R - (x - self.x_ref)), py - self.start_m
        with np.errstate(invalid="ignore"):
            bent = self.x_ref + R - np.sign(R) * np.sqrt(rho * rho - dy * dy)
        return np.where(dy > 0, bent, x)
