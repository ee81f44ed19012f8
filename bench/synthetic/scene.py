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

What real deployments vary (all off by default; ``bench.synthetic.families`` names useful combinations):

* ``lens_k1``, ``lens_k2``: radial lens distortion (Brown-Conrady / OpenCV, normalised by the focal length,
  principal point at the image centre; :mod:`trafficstream.models.lens`). The picture, the ground-truth boxes,
  the region of interest and the calibration's image points are all in the distorted picture; the camera's
  ``calibration.lens`` says how to undo it. The ground truth's homography stays the ideal pinhole one.
* ``grade_pct``: a constant road grade (the road rises away from the camera for a positive grade). World
  positions and speeds are measured along the road surface, as a tape measure or a map gives them: the world
  frame is the road plane's own (x across, y along the slope).
* ``curve_radius_m``: the road bends with this radius (of its centre line; positive to the right as the camera
  sees it, negative to the left) beyond ``curve_start_m`` along it. Lanes, markings, guard rails, vehicles
  (their heading follows the road) and the region of interest follow the bend. Ground-truth world x/y are the
  true positions on the (planar) road, speeds the true speeds along each vehicle's path; see
  ``bench.synthetic.road``.
* ``motorcycle_share``: share of the vehicles that are motorcycles, drawn only when the sprite bank has
  motorcycle crops (the sample clips have none the detector finds confidently; the ground truth's
  ``scene_notes`` says so when some were asked for).
* ``motion_blur``: each vehicle smeared along its image motion over a 1/50 s exposure (the boxes stay sharp).
* ``light``: ``day``, ``dusk`` (darker, flatter, noisier) or ``night`` (dark road, dimmed vehicles with their
  headlights on, strong sensor noise).
* ``sway_px``: the camera sways: every frame but the first is shifted by a smooth random translation of up to
  about ``sway_px`` and a tiny rotation; the ground truth moves with it, the calibration is that of frame 0.
* ``calibration_noise_px``: Gaussian noise on the calibration's image points, as clicked by hand.
* ``crf``: H.264 quality (high values: compression artefacts).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from trafficstream.models.lens import LensModel

SHOULDER_LEFT_M = 1.0
SHOULDER_RIGHT_M = 2.5
DASH_M, GAP_M = 3.0, 9.0  # Dutch motorway lane-separator dashes (see the sample data README)
LIGHTS = ("day", "dusk", "night")


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
    # What deployments vary (scene families; see the module docstring). Defaults: the scene as it always was.
    lens_k1: float = 0.0  # radial distortion, OpenCV convention (barrel < 0)
    lens_k2: float = 0.0
    grade_pct: float = 0.0  # > 0: the road rises away from the camera
    curve_radius_m: float | None = None  # centre-line radius; > 0 bends right (as the camera sees it), < 0 left
    curve_start_m: float = 30.0  # distance along the road where the bend begins
    motorcycle_share: float = 0.0  # only when the sprite bank has motorcycles
    motion_blur: bool = False
    light: str = "day"  # day | dusk | night
    sway_px: float = 0.0  # camera sway amplitude (image px); frame 0 is the unswayed, calibrated view
    calibration_noise_px: float = 0.0  # sigma of the hand-clicked calibration image points

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
            "focal_px None or > 0": self.focal > 0,
            "lens_k1, lens_k2 in [-0.5, 0.5] and monotonic over the picture": max(abs(self.lens_k1), abs(self.lens_k2))
            <= 0.5
            and (self.focal <= 0 or _monotonic_lens(self.lens_k1, self.lens_k2, self._corner_radius)),
            "-15 <= grade_pct <= 15": -15 <= self.grade_pct <= 15,
            "curve_radius_m None or |curve_radius_m| >= 50": self.curve_radius_m is None
            or abs(self.curve_radius_m) >= 50,
            "curve_start_m >= 0": self.curve_start_m >= 0,
            "motorcycle_share in [0, 1] and heavy_share + motorcycle_share <= 1": 0 <= self.motorcycle_share <= 1
            and self.heavy_share + self.motorcycle_share <= 1,
            f"light in {LIGHTS}": self.light in LIGHTS,
            "0 <= sway_px <= 20": 0 <= self.sway_px <= 20,
            "calibration_noise_px >= 0": self.calibration_noise_px >= 0,
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

    @property
    def _corner_radius(self) -> float:
        """Twice the picture's corner radius, normalised by the focal length: how far out the ideal picture
        behind a barrel lens reaches, with room to spare."""
        return math.hypot(self.width, self.height) / self.focal

    @property
    def lens(self) -> LensModel | None:
        """The lens distortion (principal point at the image centre), None for an ideal pinhole camera."""
        if self.lens_k1 == 0 and self.lens_k2 == 0:
            return None
        return LensModel(self.focal, self.width / 2, self.height / 2, self.lens_k1, self.lens_k2)


def _monotonic_lens(k1: float, k2: float, r_max: float) -> bool:
    """Whether the radial map r -> r (1 + k1 r² + k2 r⁴) keeps increasing up to ``r_max`` (normalised): past
    its turning point a lens would fold the picture onto itself and undistorting would be ambiguous."""
    r2 = np.linspace(0.0, r_max, 200) ** 2
    return bool(np.all(1 + 3 * k1 * r2 + 5 * k2 * r2 * r2 > 0))
