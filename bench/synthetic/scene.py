"""The scene's parameters and the road layout every part of a synthetic clip agrees on.

World frame: metres on the road plane, x across the road (lanes from x=0 rightwards), y along the road away
from the camera (which stands at y=0), z up. All vehicles drive towards the camera (y decreasing).
"""

from __future__ import annotations

from dataclasses import dataclass

SHOULDER_LEFT_M = 1.0
SHOULDER_RIGHT_M = 2.5
DASH_M, GAP_M = 3.0, 9.0  # Dutch motorway lane-separator dashes (see the sample data README)


@dataclass(frozen=True)
class SceneParams:
    """Everything that shapes a synthetic clip except the seed."""

    n_vehicles: int = 14
    min_kmh: float = 60.0
    max_kmh: float = 130.0
    accelerating_share: float = 0.3  # share of vehicles that accelerate or brake (sign drawn at random)
    accel_range_mps2: tuple[float, float] = (0.8, 2.5)
    lane_change_share: float = 0.25
    heavy_share: float = 0.15  # trucks and buses, when the sprite bank has any
    lanes: int = 3
    lane_width_m: float = 3.5
    duration_s: float = 12.0
    fps: float = 25.0
    width: int = 1280
    height: int = 720
    camera_height_m: float = 9.0
    pitch_deg: float = 16.0  # downwards
    focal_px: float | None = None  # None: 0.78 x width (about 65 degrees horizontal field of view)
    camera_offset_m: float | None = None  # camera x; None: above the middle of the carriageway
    far_m: float = 160.0  # vehicles appear this far down the road (a few pixels tall)
    roi_far_m: float = 110.0  # far edge of the region of interest written to camera.yaml
    speed_limit_kmh: float = 100.0
    noise_sigma: float = 2.0  # per-frame sensor noise, grey levels
    crf: int = 20  # H.264 quality

    def __post_init__(self) -> None:
        checks = {
            "n_vehicles >= 0": self.n_vehicles >= 0,
            "0 < min_kmh <= max_kmh": 0 < self.min_kmh <= self.max_kmh,
            "shares in [0, 1]": all(
                0 <= s <= 1 for s in (self.accelerating_share, self.lane_change_share, self.heavy_share)
            ),
            "lanes >= 1": self.lanes >= 1,
            "lane_width_m > 0": self.lane_width_m > 0,
            "duration_s > 0 and fps > 0": self.duration_s > 0 and self.fps > 0,
            "even width/height >= 64 (yuv420p)": min(self.width, self.height) >= 64
            and self.width % 2 == 0
            and self.height % 2 == 0,
            "camera_height_m > 0": self.camera_height_m > 0,
            "0 < pitch_deg < 80": 0 < self.pitch_deg < 80,
            "far_m > roi_far_m > 0": self.far_m > self.roi_far_m > 0,
        }
        failed = [name for name, ok in checks.items() if not ok]
        if failed:
            raise ValueError(f"invalid SceneParams: {', '.join(failed)}")

    @property
    def focal(self) -> float:
        return self.focal_px if self.focal_px is not None else 0.78 * self.width

    @property
    def road_width_m(self) -> float:
        return self.lanes * self.lane_width_m

    @property
    def camera_x(self) -> float:
        return self.camera_offset_m if self.camera_offset_m is not None else self.road_width_m / 2

    @property
    def n_frames(self) -> int:
        return max(1, round(self.duration_s * self.fps))
