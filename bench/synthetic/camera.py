"""The pinhole camera of a synthetic clip: known pose and intrinsics, hence an exact road-plane homography."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from trafficstream.bench.synthetic.scene import SceneParams


@dataclass(frozen=True, eq=False)
class PinholeCamera:
    """Pinhole camera without lens distortion: ``K`` intrinsics, ``R`` world->camera rotation, ``center`` in
    world metres. Camera axes: x right, y down, z forward."""

    K: np.ndarray
    R: np.ndarray
    center: np.ndarray
    width: int
    height: int

    @classmethod
    def looking_down_road(cls, params: SceneParams) -> PinholeCamera:
        pitch = math.radians(params.pitch_deg)
        forward = np.array([0.0, math.cos(pitch), -math.sin(pitch)])
        right = np.array([1.0, 0.0, 0.0])
        down = np.cross(forward, right)
        K = np.array([[params.focal, 0, params.width / 2], [0, params.focal, params.height / 2], [0, 0, 1.0]])
        center = np.array([params.camera_x, 0.0, params.camera_height_m])
        return cls(K, np.stack([right, down, forward]), center, params.width, params.height)

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points (N, 3) -> pixels (N, 2); NaN for points not in front of the camera."""
        cam = (np.asarray(points, dtype=np.float64).reshape(-1, 3) - self.center) @ self.R.T
        with np.errstate(divide="ignore", invalid="ignore"):
            px = (cam @ self.K.T)[:, :2] / cam[:, 2:3]
        px[cam[:, 2] <= 1e-6] = np.nan
        return px

    @functools.cached_property
    def world_to_image(self) -> np.ndarray:
        """Homography road plane (x, y) metres -> pixels. Unnormalised on purpose: the homogeneous w of a
        road point is its depth, so w > 0 means "in front of the camera" (and for the inverse, "below the
        horizon")."""
        return self.K @ np.column_stack([self.R[:, 0], self.R[:, 1], -self.R @ self.center])

    @functools.cached_property
    def image_to_world(self) -> np.ndarray:
        return np.linalg.inv(self.world_to_image)

    def ground_to_image(self, xy: np.ndarray) -> np.ndarray:
        xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
        return self.project(np.column_stack([xy, np.zeros(len(xy))]))

    def ground_distance_at_row(self, v: float) -> float:
        """Distance along the road (world y) of the ground seen at image row ``v`` on the optical axis."""
        p = self.image_to_world @ np.array([self.K[0, 2], v, 1.0])
        return float(p[1] / p[2]) if p[2] > 0 else math.inf


def normalised(H: np.ndarray) -> np.ndarray:
    """A homography scaled to H[2, 2] = 1 (the usual way to write one down)."""
    return H / H[2, 2]
