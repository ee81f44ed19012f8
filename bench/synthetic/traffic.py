"""The traffic of a synthetic clip: vehicle bodies and where they appear in the image, each vehicle's script
(lane, entry time, speed, acceleration, lane change) and its exact motion, and a conflict-free plan of them all
drawn from the seed.

Staged traffic events (``SceneParams.has_events``) are planned first, from their own random stream, and the
ordinary traffic around them: a vehicle that stops in its lane (brakes at a constant rate to a standstill,
stands, accelerates away), cars queueing behind it (each brakes to a stop a standstill gap behind the one ahead
and moves off a reaction time after it) and wrong-way vehicles (enter under the camera and drive away from
it, against their lane). Their motion is an explicit profile of constant-acceleration phases, exact like the
rest."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from trafficstream.bench.synthetic.camera import PinholeCamera
from trafficstream.bench.synthetic.road import RoadCourse
from trafficstream.bench.synthetic.scene import SceneParams
from trafficstream.bench.synthetic.sprites import Sprite
from trafficstream.models.classes import VEHICLE_CLASSES

log = logging.getLogger(__name__)

# (length, width, height) ranges in metres per class: each vehicle draws its own size from these.
DIMENSIONS: dict[str, tuple[tuple[float, float], tuple[float, float], tuple[float, float]]] = {
    "car": ((4.2, 4.9), (1.75, 1.9), (1.4, 1.6)),
    "truck": ((9.0, 12.0), (2.45, 2.55), (3.2, 3.8)),
    "bus": ((11.0, 12.5), (2.5, 2.55), (3.0, 3.3)),
    "motorcycle": ((2.0, 2.3), (0.75, 0.85), (1.3, 1.5)),  # with its rider
}
# Silhouette: where the roof ends (share of the length) and how high the front top edge is (share of the
# height). Car roofs stop before the boot and bonnets are low; trucks and buses are boxes.
SHAPES: dict[str, tuple[float, float]] = {
    "car": (0.75, 0.6),
    "truck": (1.0, 1.0),
    "bus": (1.0, 1.0),
    "motorcycle": (0.6, 0.7),  # the rider's head is the top, over the middle
}
HEAVY_CLASSES = ("truck", "bus")
MIN_GAP_M = 6.0  # bumper-to-bumper distance kept between vehicles sharing a lane
MAX_STRETCH = 1.25  # most a sprite is stretched (either way) from its own aspect ratio

# Staged events. Decelerations and accelerations are those of ordinary driving (firm braking ~3 m/s²,
# moving off 1.5-2.5 m/s²); queue figures from traffic-flow practice (standstill gap 2-3 m, a start-up
# reaction of 1-1.8 s per queued vehicle).
STOP_BRAKE_MPS2 = (2.5, 3.5)  # the vehicle that stops
QUEUE_BRAKE_MPS2 = (2.0, 3.0)  # the cars queueing behind it
MOVE_OFF_MPS2 = (1.5, 2.5)
MOVE_OFF_KMH = (50.0, 80.0)  # speed they accelerate to after the stop
STANDSTILL_GAP_M = (2.0, 3.0)  # bumper to bumper, in the queue
ARRIVAL_HEADWAY_S = (1.2, 2.5)  # between successive queued vehicles coming to a stop
REACTION_S = (1.0, 1.8)  # a queued vehicle moves off this long after the one ahead
QUEUE_MIN_GAP_M = 1.0  # a queue's vehicles never come closer than this (bumper to bumper)
WRONG_WAY_START_M = 2.0  # a wrong-way vehicle enters below the camera, here
WRONG_WAY_SEEN_M = 60.0  # ... and is planned to get at least this far down the road before the clip ends

NORMAL, WRONG_WAY, STOPPED, QUEUED = "normal", "wrong_way", "stopped", "queued"


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
    """One vehicle's script: it appears at ``far_m`` at ``entry_s`` and drives towards the camera.

    Staged vehicles differ: a wrong-way one (``direction`` +1) appears at ``start_y`` and drives away from the
    camera; a stopping or queueing one follows ``phases`` (seconds after entry, acceleration from then on)
    instead of ``accel_mps2`` and its speed bounds, and stands still from ``stop_s`` to ``move_off_s`` (clip
    seconds; None: to the end)."""

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
    direction: int = -1  # -1: towards the camera (heading 180); +1: away from it (heading 0)
    start_y: float | None = None  # y at entry; None: far_m
    phases: tuple[tuple[float, float], ...] = ()
    behaviour: str = NORMAL  # normal | wrong_way | stopped | queued
    stop_s: float | None = None
    move_off_s: float | None = None

    @property
    def class_id(self) -> int:
        return {v: k for k, v in VEHICLE_CLASSES.items()}[self.class_name]


def vehicle_box(
    camera: PinholeCamera,
    x: float,
    y: float,
    body: Body,
    sprite_aspect: float | None = None,
    tangent: tuple[float, float] | None = None,
) -> np.ndarray | None:
    """Image box (x1, y1, x2, y2, float px) of a vehicle whose front bumper centre touches the road at (x, y):
    the bottom-centre is that contact point's projection, the width the projected bumper width, the top the
    highest projected point of its silhouette (nose, roof end). With ``sprite_aspect`` the box's width/height
    stays within ``MAX_STRETCH`` of the sprite's: the crops show no roof, so near a high camera a long bus
    would otherwise be stretched to twice its height. ``tangent``: the unit direction its body extends in from
    the contact point (on a bend; default +y). None when the vehicle is not in front of the camera."""
    w2, nose = body.width_m / 2, body.nose * body.height_m
    if tangent is None:
        roof = y + body.roof_end * body.length_m
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
    else:
        t = np.array(tangent, dtype=np.float64)
        side = np.array([t[1], -t[0]])  # to the right of +tangent: +x on a straight road
        base, back = np.array([x, y]), body.roof_end * body.length_m * t
        ground = [base, base - w2 * side, base + w2 * side, base - w2 * side, base + w2 * side]
        ground += [base + back - w2 * side, base + back + w2 * side]
        heights = [0.0, 0.0, 0.0, nose, nose, body.height_m, body.height_m]
        corners = np.column_stack([np.array(ground), heights])
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
    if plan.phases:
        return _phased(plan.speed0_mps, plan.phases, tau)
    v0, a = plan.speed0_mps, plan.accel_mps2
    if a == 0:
        return v0 * tau, np.full_like(tau, v0)
    bound = plan.speed_max_mps if a > 0 else plan.speed_min_mps
    t_bound = max(0.0, (bound - v0) / a)
    t_acc = np.minimum(tau, t_bound)
    dist = v0 * t_acc + 0.5 * a * t_acc**2 + (v0 + a * t_acc) * (tau - t_acc)
    return dist, v0 + a * t_acc


def _phased(v0: float, phases: Sequence[tuple[float, float]], tau: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Distance and speed under piecewise-constant acceleration: ``phases`` = (start, acceleration), the first
    starting at 0. Profiles are built to end a braking phase exactly at standstill; round-off below 1 um/s is
    standstill too."""
    starts = np.array([p[0] for p in phases], dtype=np.float64)
    accels = np.array([p[1] for p in phases], dtype=np.float64)
    if starts[0] != 0 or np.any(np.diff(starts) < 0):
        raise ValueError(f"phases must start at 0 and be in time order: {phases}")
    v, d = [float(v0)], [0.0]
    for k in range(1, len(starts)):
        dt = starts[k] - starts[k - 1]
        d.append(d[-1] + v[-1] * dt + 0.5 * accels[k - 1] * dt * dt)
        end = v[-1] + accels[k - 1] * dt
        if end < -1e-6:
            raise ValueError(f"phases drive backwards (speed {end:.3f} m/s at {starts[k]:.3f} s)")
        v.append(0.0 if end < 1e-6 else end)
    idx = np.clip(np.searchsorted(starts, tau, side="right") - 1, 0, len(starts) - 1)
    dt = tau - starts[idx]
    vk, dk, ak = np.asarray(v)[idx], np.asarray(d)[idx], accels[idx]
    return dk + vk * dt + 0.5 * ak * dt * dt, np.maximum(vk + ak * dt, 0.0)


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
    """World contact point (centre of the bumper nearest the camera on the ground: the front bumper, a
    wrong-way vehicle's rear one), true speed and presence at clip times ``t``. Before its entry a vehicle is
    absent, and a wrong-way vehicle once it is beyond ``far_m``. On a bending road ``x`` and ``y`` are lane
    coordinates (``RoadCourse.to_plane`` gives the position) and the speed is the true one along the path."""
    t = np.asarray(t, dtype=np.float64)
    tau = t - plan.entry_s
    dist, v_long = longitudinal(plan, np.maximum(tau, 0.0))
    x, v_lat = lateral(plan, t, params.lane_width_m)
    y = (params.far_m if plan.start_y is None else plan.start_y) + plan.direction * dist
    if params.curve_radius_m is not None:
        # On a bend x and y are lane coordinates (bench.synthetic.road): a vehicle off the centre line covers
        # more or less than a metre of path per metre along it.
        v_long = v_long * RoadCourse.of(params).path_scale(x, y)
    present = tau >= 0
    if plan.direction > 0:
        present &= y <= params.far_m
    return {"x": x, "y": y, "speed_mps": np.hypot(v_long, v_lat), "present": present}


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


def _pick_sprite(
    rng: np.random.Generator,
    sprites: Sequence[Sprite],
    pool: Sequence[int],
    body: Body,
    lane: int,
    params: SceneParams,
    camera: PinholeCamera,
    exit_y: float,
) -> int:
    """One of the three sprites of ``pool`` whose shape best matches this vehicle's projected box mid-way down
    the road."""
    mid = np.array([(lane + 0.5) * params.lane_width_m, (params.far_m + exit_y) / 3])
    box = vehicle_box(camera, mid[0], mid[1], body)
    aspect = (box[2] - box[0]) / (box[3] - box[1]) if box is not None else 1.0
    by_shape = sorted(pool, key=lambda i: abs(math.log(sprites[i].aspect / aspect)))
    return int(rng.choice(by_shape[:3]))


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
    # An extra draw only when motorcycles can be drawn at all: other scenes keep their random stream.
    if class_name == "car" and params.motorcycle_share > 0 and has_motorcycles(sprites):
        if rng.random() * (1 - params.heavy_share) < params.motorcycle_share:
            class_name = "motorcycle"
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
    sprite = _pick_sprite(rng, sprites, pool, body, lane, params, camera, exit_y)
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


def has_motorcycles(sprites: Sequence[Sprite]) -> bool:
    return any(s.class_name == "motorcycle" for s in sprites)


def _class_and_body(rng: np.random.Generator, params: SceneParams, sprites: Sequence[Sprite]) -> tuple[str, Body]:
    heavy = sorted({s.class_name for s in sprites if s.class_name in HEAVY_CLASSES})
    class_name = str(rng.choice(heavy)) if heavy and rng.random() < params.heavy_share else "car"
    return class_name, Body.draw(class_name, rng)


def _stopping_plan(
    vehicle_id: int,
    rng: np.random.Generator,
    params: SceneParams,
    sprites: Sequence[Sprite],
    camera: PinholeCamera,
    exit_y: float,
    *,
    behaviour: str,
    stop_y: float,
    stop_s: float,
    move_off_s: float | None,
    brake: tuple[float, float],
    ahead: tuple[float, float] | None = None,
) -> tuple[VehiclePlan, tuple[float, float] | None]:
    """A car that cruises in from ``far_m``, brakes at a constant rate to a standstill with its front bumper at
    ``stop_y`` at clip time ``stop_s``, and (unless ``move_off_s`` is None) accelerates away at ``move_off_s``.
    ``ahead``: the (acceleration, speed) the vehicle ahead moves off with, which this one does not exceed.
    Returns the plan and its own (acceleration, speed) of moving off."""
    body = Body.draw("car", rng)
    v0 = rng.uniform(params.min_kmh, (params.min_kmh + params.max_kmh) / 2) / 3.6
    b = rng.uniform(*brake)
    dist = params.far_m - stop_y
    v0 = min(v0, 0.95 * math.sqrt(2 * b * dist))  # it can stop in time from where it appears
    t_brake = v0 / b
    cruise = (dist - v0 * v0 / (2 * b)) / v0
    entry = stop_s - t_brake - cruise
    phases = [(0.0, 0.0), (cruise, -b), (cruise + t_brake, 0.0)]
    go = None
    if move_off_s is not None:
        a_go, v_go = rng.uniform(*MOVE_OFF_MPS2), rng.uniform(*MOVE_OFF_KMH) / 3.6
        if ahead is not None:
            a_go, v_go = min(a_go, ahead[0]), min(v_go, ahead[1])
        go = (a_go, v_go)
        phases += [(move_off_s - entry, a_go), (move_off_s - entry + v_go / a_go, 0.0)]
    pool = [i for i, s in enumerate(sprites) if s.class_name == "car"]
    sprite = _pick_sprite(rng, sprites, pool, body, params.stop_lane, params, camera, exit_y)
    plan = VehiclePlan(
        vehicle_id=vehicle_id,
        class_name="car",
        sprite=sprite,
        body=body,
        lane=params.stop_lane,
        entry_s=float(entry),
        speed0_mps=float(v0),
        accel_mps2=0.0,
        speed_min_mps=0.0,
        speed_max_mps=float(max(v0, go[1] if go else 0.0)),
        lane_change=None,
        phases=tuple((float(a), float(b_)) for a, b_ in phases),
        behaviour=behaviour,
        stop_s=float(stop_s),
        move_off_s=None if move_off_s is None else float(move_off_s),
    )
    return plan, go


def _min_gap(ahead: VehiclePlan, behind: VehiclePlan, params: SceneParams, t: np.ndarray) -> float:
    """Smallest bumper-to-bumper distance of two vehicles driving towards the camera in one lane, over ``t``."""
    a, b = trajectory(ahead, t, params), trajectory(behind, t, params)
    both = a["present"] & b["present"]
    gap = b["y"] - (a["y"] + ahead.body.length_m)
    return float(gap[both].min()) if both.any() else math.inf


def _stop_and_queue(
    first_id: int, rng: np.random.Generator, params: SceneParams, sprites: Sequence[Sprite], camera: PinholeCamera
) -> list[VehiclePlan]:
    """The stopping vehicle and the cars queueing behind it, front first."""
    exit_y = camera.ground_distance_at_row(params.height) - 2.0
    move_off = None if params.stop_duration_s is None else params.stop_start_s + params.stop_duration_s
    head, go = _stopping_plan(
        first_id,
        rng,
        params,
        sprites,
        camera,
        exit_y,
        behaviour=STOPPED,
        stop_y=params.stop_at_m,
        stop_s=params.stop_start_s,
        move_off_s=move_off,
        brake=STOP_BRAKE_MPS2,
    )
    plans = [head]
    # Fine enough that no overlap slips between two samples (closing speeds stay < 40 m/s).
    t = np.arange(-5.0, params.duration_s + 5.0, 0.01)
    for _ in range(params.queue_vehicles):
        prev = plans[-1]
        assert prev.stop_s is not None
        stop_y = _stop_y(prev, params) + prev.body.length_m + rng.uniform(*STANDSTILL_GAP_M)
        stop_s = prev.stop_s + rng.uniform(*ARRIVAL_HEADWAY_S)
        reaction = rng.uniform(*REACTION_S)
        state = rng.bit_generator.state
        for _attempt in range(40):
            if prev.move_off_s is not None and stop_s > prev.move_off_s - 1.0:
                log.warning("queue: the stopped vehicle moves off before car %d would join", len(plans))
                return plans
            rng.bit_generator.state = state  # the same draws; only a later arrival
            plan, nxt = _stopping_plan(
                prev.vehicle_id + 1,
                rng,
                params,
                sprites,
                camera,
                exit_y,
                behaviour=QUEUED,
                stop_y=stop_y,
                stop_s=stop_s,
                move_off_s=None if prev.move_off_s is None else prev.move_off_s + reaction,
                brake=QUEUE_BRAKE_MPS2,
                ahead=go,
            )
            if _min_gap(prev, plan, params, t) >= QUEUE_MIN_GAP_M:
                break
            stop_s += 0.5  # it would have run into the one ahead: let it arrive later
        else:
            log.warning("queue: no conflict-free arrival for car %d", len(plans))
            return plans
        plans.append(plan)
        go = nxt
    return plans


def _stop_y(plan: VehiclePlan, params: SceneParams) -> float:
    """Where a stopping plan stands (its front bumper's y)."""
    assert plan.stop_s is not None
    return float(trajectory(plan, np.array([plan.stop_s]), params)["y"][0])


def _wrong_way_plan(
    vehicle_id: int,
    rng: np.random.Generator,
    params: SceneParams,
    sprites: Sequence[Sprite],
    camera: PinholeCamera,
    exit_y: float,
) -> VehiclePlan:
    """A vehicle entering under the camera and driving away from it, against the traffic of its lane, at a
    constant speed; it gets ``WRONG_WAY_SEEN_M`` down the road before the clip ends (when the clip allows)."""
    class_name, body = _class_and_body(rng, params, sprites)
    lanes = [k for k in range(params.lanes) if not (params.stopped_vehicles and k == params.stop_lane)]
    lane = int(rng.choice(lanes or list(range(params.lanes))))
    v = rng.uniform(params.min_kmh, (params.min_kmh + params.max_kmh) / 2) / 3.6
    reach_s = (WRONG_WAY_SEEN_M - WRONG_WAY_START_M) / v
    entry = rng.uniform(0.0, max(0.0, params.duration_s - reach_s - 0.5))
    pool = [i for i, s in enumerate(sprites) if s.class_name == class_name]
    sprite = _pick_sprite(rng, sprites, pool, body, lane, params, camera, exit_y)
    return VehiclePlan(
        vehicle_id=vehicle_id,
        class_name=class_name,
        sprite=sprite,
        body=body,
        lane=lane,
        entry_s=float(entry),
        speed0_mps=float(v),
        accel_mps2=0.0,
        speed_min_mps=float(v),
        speed_max_mps=float(v),
        lane_change=None,
        direction=1,
        start_y=WRONG_WAY_START_M,
        behaviour=WRONG_WAY,
    )


def plan_events(
    params: SceneParams,
    rng: np.random.Generator,
    sprites: Sequence[Sprite],
    camera: PinholeCamera,
    first_id: int,
    max_attempts: int = 200,
) -> list[VehiclePlan]:
    """The staged vehicles of ``params`` (stopped, queued, wrong-way), ids from ``first_id`` on."""
    exit_y = camera.ground_distance_at_row(params.height) - 2.0
    t = np.arange(params.n_frames) / params.fps
    plans = _stop_and_queue(first_id, rng, params, sprites, camera) if params.stopped_vehicles else []
    tracks = [trajectory(p, t, params) for p in plans]
    for _ in range(params.wrong_way_vehicles):
        vid = first_id + len(plans)
        for _attempt in range(max_attempts):
            plan = _wrong_way_plan(vid, rng, params, sprites, camera, exit_y)
            traj = trajectory(plan, t, params)
            if not any(_conflict(traj, other, plan, p, params) for other, p in zip(tracks, plans, strict=True)):
                plans.append(plan)
                tracks.append(traj)
                break
        else:
            log.warning("no conflict-free wrong-way vehicle %d", vid)
    return plans


def plan_vehicles(
    params: SceneParams,
    rng: np.random.Generator,
    sprites: Sequence[Sprite],
    camera: PinholeCamera,
    max_attempts: int = 200,
    events_rng: np.random.Generator | None = None,
) -> list[VehiclePlan]:
    """Draw ``n_vehicles`` scripts, redrawing any that would run into an earlier one. A scene with traffic
    events first plans its staged vehicles from ``events_rng`` (ids after the ordinary ones, which then keep
    clear of them); without events ``rng`` draws exactly what it always drew."""
    exit_y = camera.ground_distance_at_row(params.height) - 2.0
    t = np.arange(params.n_frames) / params.fps
    staged: list[VehiclePlan] = []
    if params.has_events:
        staged = plan_events(
            params, events_rng or rng.spawn(1)[0], sprites, camera, params.n_vehicles + 1, max_attempts
        )
    staged_tracks = [trajectory(p, t, params) for p in staged]
    plans: list[VehiclePlan] = []
    tracks: list[dict[str, np.ndarray]] = []
    for _ in range(params.n_vehicles):
        for _attempt in range(max_attempts):
            plan = _draw_plan(len(plans) + 1, rng, params, sprites, camera, exit_y)
            traj = trajectory(plan, t, params)
            others = zip(tracks + staged_tracks, plans + staged, strict=True)
            if not any(_conflict(traj, other, plan, p, params) for other, p in others):
                plans.append(plan)
                tracks.append(traj)
                break
        else:
            log.warning("road too busy: placed %d of %d vehicles", len(plans), params.n_vehicles)
            break
    return plans + staged
