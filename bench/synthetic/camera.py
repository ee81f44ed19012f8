"""The pinhole camera of a synthetic clip: known pose and intrinsics, hence an exact road-plane homography.

A road with a grade is still a plane: the camera is expressed in the road plane's own frame (x across, y up the
slope, z normal to it), so the homography, the vehicles and the ray-cast road need nothing else. A distorting
lens (``SceneParams.lens``) is applied to the ideal pinhole picture afterwards: :func:`lens_padding` says how
much larger the ideal picture must be to fill the distorted one, :func:`lens_maps` how to resample it."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from trafficstream.bench.synthetic.scene import SceneParams
from trafficstream.models.lens import LensModel, distort_pixels, undistort_pixels


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
        R = np.stack([right, down, forward])
        if params.grade_pct:
            # Road frame -> level frame: columns x, up the slope, the road's normal. With it the camera's pose
            # relative to the road plane (and the plane's own metric frame) is R Q, Q^T center.
            theta = math.atan(params.grade_pct / 100)
            Q = np.array(
                [[1.0, 0.0, 0.0], [0.0, math.cos(theta), -math.sin(theta)], [0.0, math.sin(theta), math.cos(theta)]]
            )
            R, center = R @ Q, Q.T @ center
        return cls(K, R, center, params.width, params.height)

    def padded(self, left: int, top: int, right: int, bottom: int) -> PinholeCamera:
        """The same camera with a larger picture: ``left`` / ``top`` more pixels before the old origin."""
        K = self.K.copy()
        K[0, 2] += left
        K[1, 2] += top
        return PinholeCamera(K, self.R, self.center, self.width + left + right, self.height + top + bottom)

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


def _border(width: int, height: int, n: int = 64) -> np.ndarray:
    """Points along the picture's border (pixel-edge coordinates), corners included."""
    u, v = np.linspace(0, width, n), np.linspace(0, height, n)
    return np.concatenate(
        [np.column_stack([u, np.zeros(n)]), np.column_stack([u, np.full(n, height)]), np.column_stack([np.zeros(n), v])]
        + [np.column_stack([np.full(n, width), v])]
    )


def lens_padding(lens: LensModel, width: int, height: int, margin: int = 2) -> tuple[int, int, int, int]:
    """Pixels (left, top, right, bottom) the ideal pinhole picture must extend beyond ``width`` x ``height`` so
    that every pixel of the distorted picture samples it (a barrel lens shows more than the pinhole would)."""
    ideal = undistort_pixels(_border(width, height), lens)
    return (
        max(0, math.ceil(-ideal[:, 0].min())) + margin,
        max(0, math.ceil(-ideal[:, 1].min())) + margin,
        max(0, math.ceil(ideal[:, 0].max() - width)) + margin,
        max(0, math.ceil(ideal[:, 1].max() - height)) + margin,
    )


def lens_maps(lens: LensModel, width: int, height: int, left: int, top: int) -> tuple[np.ndarray, np.ndarray]:
    """``cv2.remap`` maps (float32, height x width) that turn the ideal picture, padded by ``left`` / ``top``,
    into the distorted one: each output pixel centre samples the ideal picture where the lens took it from."""
    u, v = np.meshgrid(np.arange(width, dtype=np.float64) + 0.5, np.arange(height, dtype=np.float64) + 0.5)
    ideal = undistort_pixels(np.column_stack([u.ravel(), v.ravel()]), lens)
    # Pixel-centre convention: continuous (u, v) is pixel index u - 0.5 for remap.
    map_x = (ideal[:, 0] + left - 0.5).astype(np.float32).reshape(height, width)
    map_y = (ideal[:, 1] + top - 0.5).astype(np.float32).reshape(height, width)
    return map_x, map_y


@dataclass(frozen=True, eq=False)
class Optics:
    """How the ideal pinhole picture of ``camera`` becomes the clip's picture: rendered by ``canvas`` (the same
    camera, its picture padded by ``pad`` = left, top, right, bottom pixels when a lens needs more of it) and
    resampled through ``maps`` (None: no lens, the canvas is the picture)."""

    camera: PinholeCamera
    canvas: PinholeCamera
    lens: LensModel | None = None
    pad: tuple[int, int, int, int] = (0, 0, 0, 0)
    maps: tuple[np.ndarray, np.ndarray] | None = None

    @classmethod
    def of(cls, camera: PinholeCamera, params: SceneParams) -> Optics:
        lens = params.lens
        if lens is None:
            return cls(camera, camera)
        pad = lens_padding(lens, camera.width, camera.height)
        maps = lens_maps(lens, camera.width, camera.height, pad[0], pad[1])
        return cls(camera, camera.padded(*pad), lens, pad, maps)

    def distort(self, pixels: np.ndarray) -> np.ndarray:
        """Ideal pinhole pixels (N, 2) -> where the lens puts them."""
        if self.lens is None:
            return np.asarray(pixels, dtype=np.float64).reshape(-1, 2)
        return distort_pixels(pixels, self.lens)

    def ground_to_picture(self, xy: np.ndarray) -> np.ndarray:
        """Road-plane points (N, 2) -> pixels of the (distorted) picture."""
        return self.distort(self.camera.ground_to_image(xy))

    @property
    def bottom_distance(self) -> float:
        """Road distance at the bottom row of the ideal canvas: nothing nearer shows in the picture."""
        return self.camera.ground_distance_at_row(self.camera.height + self.pad[3])
