"""The scene's parameters and the road layout every part of a synthetic clip agrees on.

World frame: metres on the road plane, x across the road (lanes from x=0 rightwards), y along the road away
from the camera (which stands at y=0), z up. Traffic drives towards the camera (y decreasing, heading 180);
wrong-way vehicles, when the scene has any, drive away from it (heading 0) in a lane of that traffic.

Traffic events (all off by default: a scene without them draws exactly the clips it drew before):
``wrong_way_vehicles`` drive against their lane; ``stopped_vehicles`` (0 or 1) comes to a standstill in lane
``stop_lane`` with its front bumper at ``stop_at_m`` at clip time ``stop_start_s`` and moves off after
``stop_duration_s`` (None: it stays until the clip ends); ``queue_vehicles`` more cars brake and stop behind it
with 2-3 m standstill gaps and move off one after the other when it does. ``line_ys_m``: where the counting
lines cross the road (see ``bench.synthetic.scenario``).
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
    # Traffic events (off by default) and the counting lines of the camera config.
    wrong_way_vehicles: int = 0
    stopped_vehicles: int = 0  # 0 or 1
    stop_lane: int = 0  # lane 0 is the drivers' right-hand lane (they drive towards the camera, -y)
    stop_at_m: float = 28.0  # y of the stopped vehicle's front bumper
    stop_start_s: float = 4.0  # clip time it stands still
    stop_duration_s: float | None = 9.0  # None: it stays until the clip ends
    queue_vehicles: int = 0  # cars that queue behind the stopped vehicle
    line_ys_m: tuple[float, ...] = (16.0, 22.0)  # counting lines across the road at these y (metres)

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
            "wrong_way_vehicles >= 0 and queue_vehicles >= 0": min(self.wrong_way_vehicles, self.queue_vehicles) >= 0,
            "stopped_vehicles in (0, 1)": self.stopped_vehicles in (0, 1),
            "queue_vehicles need a stopped vehicle": self.queue_vehicles == 0 or self.stopped_vehicles == 1,
            "0 <= stop_lane < lanes": 0 <= self.stop_lane < self.lanes,
            "0 < stop_at_m < roi_far_m": 0 < self.stop_at_m < self.roi_far_m,
            "stop_start_s >= 0 and stop_duration_s None or > 0": self.stop_start_s >= 0
            and (self.stop_duration_s is None or self.stop_duration_s > 0),
            "0 < line_ys_m < roi_far_m, distinct": all(0 < y < self.roi_far_m for y in self.line_ys_m)
            and len(set(self.line_ys_m)) == len(self.line_ys_m),
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
    def has_events(self) -> bool:
        """Whether the scene stages traffic events (wrong-way, stopped or queueing vehicles)."""
        return self.wrong_way_vehicles > 0 or self.stopped_vehicles > 0

    @property
    def n_frames(self) -> int:
        return max(1, round(self.duration_s * self.fps))
