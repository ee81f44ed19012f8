"""The traffic of a synthetic clip: vehicle bodies and where they appear in the image, each vehicle's script
(lane, entry time, speed, acceleration, lane change) and its exact motion, and a conflict-free plan of them all
drawn from the seed."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trafficstream.bench.synthetic.camera import PinholeCamera
from trafficstream.bench.synthetic.scene import SceneParams
from trafficstream.bench.synthetic.sprites import Sprite
from trafficstream.models.classes import VEHICLE_CLASSES

log = logging.getLogger(__name__)

# (length, width, height) ranges in metres per class: each vehicle draws its own size from these.
DIMENSIONS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "car": ((4.2, 4.9), (1.75, 1.9), (1.4, 1.6)),
    "truck": ((9.0, 12.0), (2.45, 2.55), (3.2, 3.8)),
    "bus": ((11.0, 12.5), (2.5, 2.55), (3.0, 3.3)),
}
# Silhouette: where the roof ends (share of the length) and how high the front top edge is (share of the
# height). Car roofs stop before the boot and bonnets are low; trucks and buses are boxes.
SHAPES: dict[str, tuple[float, float]] = {"car": (0.75, 0.6), "truck": (1.0, 1.0), "bus": (1.0, 1.0)}
HEAVY_CLASSES = ("truck", "bus")
MIN_GAP_M = 6.0  # bumper-to-bumper distance kept between vehicles sharing a lane
MAX_STRETCH = 1.25  # most a sprite is stretched (either way) from its own aspect ratio


@dataclass(frozen=True)
class LaneChange:
    start_s: float  # clip time the lateral move begins
    duration_s: float
    to_lane: int


@dataclass(frozen=True)
class Body:
    """A vehicle's size (metres) and silhouette (see ``SHAPES``)."""

    length_m: float
    width_m: float
    height_m: float
    roof_end: float = 1.0
    nose: float = 1.0

    @classmethod
    def nominal(cls, class_name: str) -> Body:
        (l_lo, l_hi), (w_lo, w_hi), (h_lo, h_hi) = DIMENSIONS[class_name]
        return cls((l_lo + l_hi) / 2, (w_lo + w_hi) / 2, (h_lo + h_hi) / 2, *SHAPES[class_name])

    @classmethod
    def draw(cls, class_name: str, rng: np.random.Generator) -> Body:
        (l_lo, l_hi), (w_lo, w_hi), (h_lo, h_hi) = DIMENSIONS[class_name]
        return cls(
            round(float(rng.uniform(l_lo, l_hi)), 3),
            round(float(rng.uniform(w_lo, w_hi)), 3),
            round(float(rng.uniform(h_lo, h_hi)), 3),
            *SHAPES[class_name],
        )


@dataclass(frozen=True)
class VehiclePlan:
    """One vehicle's script: it appears at ``far_m`` at ``entry_s`` and drives towards the camera."""

    vehicle_id: int
    class_name: str
    sprite: int  # index into the sprite bank
    body: Body
    lane: int
    entry_s: float
    speed0_mps: float
    accel_mps2: float
    speed_min_mps: float  # acceleration stops at these bounds
    speed_max_mps: float
    lane_change: LaneChange | None

    @property
    def class_id(self) -> int:
        return {v: k for k, v in VEHICLE_CLASSES.items()}[self.class_name]


def vehicle_box(
    camera: PinholeCamera, x: float, y: float, body: Body, sprite_aspect: float | None = None
) -> np.ndarray | None:
    """Image box (x1, y1, x2, y2, float px) of a vehicle whose front bumper centre touches the road at (x, y):
    the bottom-centre is that contact point's projection, the width the projected bumper width, the top the
    highest projected point of its silhouette (nose, roof end). With ``sprite_aspect`` the box's width/height
    stays within ``MAX_STRETCH`` of the sprite's: the crops show no roof, so near a high camera a long bus
    would otherwise be stretched to twice its height. None when the vehicle is not in front of the camera."""
    w2, nose, roof = body.width_m / 2, body.nose * body.height_m, y + body.roof_end * body.length_m
    corners = np.array(
        [
            [x, y, 0.0],
            [x - w2, y, 0],
            [x + w2, y, 0],
            [x - w2, y, nose],
            [x + w2, y, nose],
            [x - w2, roof, body.height_m],
            [x + w2, roof, body.height_m],
        ]
    )
    px = camera.project(corners)
    if np.isnan(px).any():
        return None
    u, v = px[0]
    half = abs(px[2, 0] - px[1, 0]) / 2
    top = px[3:, 1].min()
    if v - top < 1 or half < 0.5:
        return None
    if sprite_aspect is not None:
        aspect = np.clip(2 * half / (v - top), sprite_aspect / MAX_STRETCH, sprite_aspect * MAX_STRETCH)
        top = v - 2 * half / aspect
    return np.array([u - half, top, u + half, v])


def longitudinal(plan: VehiclePlan, tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance travelled (m) and speed along the road (m/s) ``tau`` seconds after entry: constant
    acceleration until the speed reaches its bound, then constant speed. Exact, not integrated."""
    tau = np.asarray(tau, dtype=np.float64)
    v0, a = plan.speed0_mps, plan.accel_mps2
    if a == 0:
        return v0 * tau, np.full_like(tau, v0)
    bound = plan.speed_max_mps if a > 0 else plan.speed_min_mps
    t_bound = max(0.0, (bound - v0) / a)
    t_acc = np.minimum(tau, t_bound)
    dist = v0 * t_acc + 0.5 * a * t_acc**2 + (v0 + a * t_acc) * (tau - t_acc)
    return dist, v0 + a * t_acc


def lateral(plan: VehiclePlan, t: np.ndarray, lane_width_m: float) -> tuple[np.ndarray, np.ndarray]:
    """Lateral position (m) and lateral speed (m/s) at clip times ``t``: a half-cosine lane change."""
    t = np.asarray(t, dtype=np.float64)
    x0 = (plan.lane + 0.5) * lane_width_m
    lc = plan.lane_change
    if lc is None:
        return np.full_like(t, x0), np.zeros_like(t)
    dx = (lc.to_lane - plan.lane) * lane_width_m
    u = np.clip((t - lc.start_s) / lc.duration_s, 0.0, 1.0)
    x = x0 + dx * (1 - np.cos(np.pi * u)) / 2
    vx = np.where((u > 0) & (u < 1), dx * np.pi / (2 * lc.duration_s) * np.sin(np.pi * u), 0.0)
    return x, vx


def trajectory(plan: VehiclePlan, t: np.ndarray, params: SceneParams) -> dict[str, np.ndarray]:
    """World contact point (centre of the front bumper on the ground), true speed and presence at clip
    times ``t``. Before its entry a vehicle is absent."""
    t = np.asarray(t, dtype=np.float64)
    tau = t - plan.entry_s
    dist, v_long = longitudinal(plan, np.maximum(tau, 0.0))
    x, v_lat = lateral(plan, t, params.lane_width_m)
    return {"x": x, "y": params.far_m - dist, "speed_mps": np.hypot(v_long, v_lat), "present": tau >= 0}


def _conflict(
    a: dict[str, np.ndarray], b: dict[str, np.ndarray], pa: VehiclePlan, pb: VehiclePlan, params: SceneParams
) -> bool:
    """Whether two trajectories ever overlap (side by side within a lane, closer than the safety gap)."""
    both = a["present"] & b["present"] & (np.minimum(a["y"], b["y"]) < params.far_m + 5)
    if not both.any():
        return False
    side = np.abs(a["x"] - b["x"]) < (pa.body.width_m + pb.body.width_m) / 2 + 0.6
    # Vehicles point towards the camera: a body spans [y, y + length].
    gap = np.where(a["y"] < b["y"], b["y"] - (a["y"] + pa.body.length_m), a["y"] - (b["y"] + pb.body.length_m))
    return bool((both & side & (gap < MIN_GAP_M)).any())


def _draw_plan(
    vehicle_id: int,
    rng: np.random.Generator,
    params: SceneParams,
    sprites: Sequence[Sprite],
    camera: PinholeCamera,
    exit_y: float,
) -> VehiclePlan:
    heavy = sorted({s.class_name for s in sprites if s.class_name in HEAVY_CLASSES})
    class_name = str(rng.choice(heavy)) if heavy and rng.random() < params.heavy_share else "car"
    pool = [i for i, s in enumerate(sprites) if s.class_name == class_name]
    body = Body.draw(class_name, rng)
    lane = int(rng.integers(params.lanes))
    v0 = rng.uniform(params.min_kmh, params.max_kmh) / 3.6
    accel = 0.0
    if rng.random() < params.accelerating_share:
        accel = rng.uniform(*params.accel_range_mps2) * rng.choice([-1.0, 1.0])
    travel_s = (params.far_m - exit_y) / v0
    entry = rng.uniform(-0.6 * travel_s, params.duration_s - 0.4 * travel_s)
    lane_change = None
    if params.lanes > 1 and rng.random() < params.lane_change_share:
        to_lane = lane + int(rng.choice([-1, 1]))
        to_lane = to_lane if 0 <= to_lane < params.lanes else lane - (to_lane - lane)
        # Start the move while the vehicle is in the well-visible middle part of the road.
        lane_change = LaneChange(entry + rng.uniform(0.25, 0.5) * travel_s, rng.uniform(2.0, 3.0), to_lane)
    # Sprite: one of the three whose shape best matches this vehicle's projected box mid-way down the road.
    mid = np.array([(lane + 0.5) * params.lane_width_m, (params.far_m + exit_y) / 3])
    box = vehicle_box(camera, mid[0], mid[1], body)
    aspect = (box[2] - box[0]) / (box[3] - box[1]) if box is not None else 1.0
    by_shape = sorted(pool, key=lambda i: abs(math.log(sprites[i].aspect / aspect)))
    sprite = int(rng.choice(by_shape[:3]))
    return VehiclePlan(
        vehicle_id=vehicle_id,
        class_name=class_name,
        sprite=sprite,
        body=body,
        lane=lane,
        entry_s=float(entry),
        speed0_mps=float(v0),
        accel_mps2=float(accel),
        # Braking or accelerating stops at these speeds (no vehicle stops dead on the motorway).
        speed_min_mps=0.6 * params.min_kmh / 3.6,
        speed_max_mps=1.2 * params.max_kmh / 3.6,
        lane_change=lane_change,
    )


def plan_vehicles(
    params: SceneParams,
    rng: np.random.Generator,
    sprites: Sequence[Sprite],
    camera: PinholeCamera,
    max_attempts: int = 200,
) -> list[VehiclePlan]:
    """Draw ``n_vehicles`` scripts, redrawing any that would run into an earlier one."""
    exit_y = camera.ground_distance_at_row(params.height) - 2.0
    t = np.arange(params.n_frames) / params.fps
    plans: list[VehiclePlan] = []
    tracks: list[dict[str, np.ndarray]] = []
    for _ in range(params.n_vehicles):
        for _attempt in range(max_attempts):
            plan = _draw_plan(len(plans) + 1, rng, params, sprites, camera, exit_y)
            traj = trajectory(plan, t, params)
            if not any(_conflict(traj, other, plan, p, params) for other, p in zip(tracks, plans, strict=True)):
                plans.append(plan)
                tracks.append(traj)
                break
        else:
            log.warning("road too busy: placed %d of %d vehicles", len(plans), params.n_vehicles)
            break
    return plans
