"""Camera configuration: where a camera's video comes from and how its pixels map onto the road.

A deployment lists its cameras in the ``cameras:`` section of its config file (see ``infra/config/``).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trafficstream.messages import CAMERA_ID_PATTERN

Point = tuple[float, float]


class Calibration(BaseModel):
    """Road-plane calibration: >= 4 image-pixel <-> world-metre point pairs on the road surface.

    World axes: any right-handed metric frame on the road plane; by convention y runs along the road.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    image_points: list[Point] = Field(min_length=4)
    world_points: list[Point] = Field(min_length=4)
    # Optional reference frame for registration against camera drift (frame index in the source).
    reference_frame: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _pairs(self) -> "Calibration":
        if len(self.image_points) != len(self.world_points):
            raise ValueError(
                f"image_points has {len(self.image_points)} points but world_points has "
                f"{len(self.world_points)}; they must pair up one to one"
            )
        for name, pts in (("image_points", self.image_points), ("world_points", self.world_points)):
            if _max_non_collinear_area(np.asarray(pts, dtype=float)) < 1e-6:
                raise ValueError(f"{name} are (nearly) collinear: a homography needs 4 points spanning an area")
        return self


def _max_non_collinear_area(pts: np.ndarray) -> float:
    """Largest triangle area among the points: ~0 when they all lie on one line."""
    best = 0.0
    for i in range(len(pts)):
        for j in range(i + 1, len(pts)):
            for k in range(j + 1, len(pts)):
                a, b = pts[j] - pts[i], pts[k] - pts[i]
                best = max(best, abs(a[0] * b[1] - a[1] * b[0]) / 2)
    return best


class Camera(BaseModel):
    """One camera of a deployment."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: Annotated[str, Field(pattern=CAMERA_ID_PATTERN.pattern)]
    source: str = Field(min_length=1, description="video file path, file:// URI (rtsp:// later)")
    name: str | None = None
    fps: float | None = Field(default=None, gt=0, le=240, description="override when the container lies")
    speed_limit_kmh: float = Field(gt=0, le=300)
    roi: list[Point] | None = Field(default=None, min_length=3, description="region of interest polygon, px")
    calibration: Calibration | None = None
    min_violation_s: float = Field(default=0.5, ge=0, le=30, description="sustained overspeed before a violation")
    register_frames: bool = Field(default=False, description="compensate camera drift against the reference frame")
    # Extra detector passes over these [x0, y0, x1, y1] source-pixel boxes (the far end of the road), batched
    # with the full frame: small distant vehicles are found and tracked earlier.
    detect_tiles: list[tuple[int, int, int, int]] = Field(default_factory=list, max_length=4)

    @field_validator("detect_tiles")
    @classmethod
    def _tiles(cls, v: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
        for i, (x0, y0, x1, y1) in enumerate(v):
            if x1 - x0 < 32 or y1 - y0 < 32 or min(x0, y0) < 0:
                raise ValueError(f"detect_tiles[{i}] = {[x0, y0, x1, y1]}: need x0,y0 >= 0 and a box >= 32x32 px")
        return v

    @field_validator("source")
    @classmethod
    def _source_scheme(cls, v: str) -> str:
        scheme = urlparse(v).scheme
        if scheme not in ("", "file") and len(scheme) > 1:  # len>1: keep Windows drive letters as paths
            raise ValueError(f"unsupported source scheme {scheme!r}: only video files (path or file://) for now")
        return v

    def source_path(self) -> Path:
        """The local path of a file source."""
        parsed = urlparse(self.source)
        return Path(parsed.path if parsed.scheme == "file" else self.source)

    def source_uri(self) -> str:
        """Canonical URI carried in frame references (absolute ``file://`` URI)."""
        return self.source_path().resolve().as_uri()
