"""Synthetic traffic clips with known vehicle speeds, to score detection, tracking and speed estimation.

A straight multi-lane road is rendered through a pinhole camera of known pose, so the road-plane homography
is exact. The vehicles are real vehicle crops that the real detector found in the sample clips (so it finds
them again), pasted as opaque sprites at their projected world positions, far to near. Each vehicle has a
lane, an entry time, an initial speed, maybe an acceleration and maybe a lane change; the seed fixes all of it.

``generate`` writes into ``out_dir``: ``clip.mp4`` (H.264, constant frame rate), ``ground_truth.json`` (per
frame and vehicle: box, world position, true speed) and ``camera.yaml`` (a deployment config whose one camera
``synthetic`` plays the clip, calibrated with point pairs taken from the known homography)::

    python -m trafficstream.bench.synthetic --out var/synthetic/seed1 --seed 1 [--vehicles 14 --min-kmh 60 ...]

World frame: metres on the road plane, x across the road (lanes from x=0 rightwards), y along the road away
from the camera (which stands at y=0), z up. All vehicles drive towards the camera (y decreasing).
"""
from __future__ import annotations

import argparse
import functools
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import yaml
from tqdm import tqdm

from trafficstream.models.classes import VEHICLE_CLASSES
from trafficstream.models.detector import Detections, YoloOnnxDetector
from trafficstream.models.nms import box_iou
from trafficstream.config import DEFAULT_CONFIG, default_data_dir, load_settings
from trafficstream.logs import setup_logging

log = logging.getLogger(__name__)

CAMERA_ID = "synthetic"
GT_VERSION = 1
DEFAULT_MODEL = "models/yolov8n.onnx"  # relative to the data directory

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
SHOULDER_LEFT_M = 1.0
SHOULDER_RIGHT_M = 2.5
DASH_M, GAP_M = 3.0, 9.0  # Dutch motorway lane-separator dashes (see the sample data README)
MIN_GAP_M = 6.0  # bumper-to-bumper distance kept between vehicles sharing a lane
MAX_STRETCH = 1.25  # most a sprite is stretched (either way) from its own aspect ratio


# --------------------------------------------------------------------------------------------- parameters
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
            "shares in [0, 1]": all(0 <= s <= 1 for s in (self.accelerating_share, self.lane_change_share,
                                                          self.heavy_share)),
            "lanes >= 1": self.lanes >= 1,
            "lane_width_m > 0": self.lane_width_m > 0,
            "duration_s > 0 and fps > 0": self.duration_s > 0 and self.fps > 0,
            "even width/height >= 64 (yuv420p)": min(self.width, self.height) >= 64
            and self.width % 2 == 0 and self.height % 2 == 0,
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


@dataclass(frozen=True)
class SyntheticClip:
    video_path: Path
    ground_truth_path: Path
    config_path: Path


# ------------------------------------------------------------------------------------------------- camera
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


# ------------------------------------------------------------------------------------------------ sprites
@dataclass(frozen=True, eq=False)
class Sprite:
    """A real vehicle crop: the detector's box on one frame of a sample clip."""

    image: np.ndarray  # BGR uint8
    class_id: int
    source: str
    frame_index: int
    confidence: float

    @property
    def class_name(self) -> str:
        return VEHICLE_CLASSES[self.class_id]

    @property
    def aspect(self) -> float:
        return self.image.shape[1] / self.image.shape[0]


@dataclass(frozen=True)
class SpriteSource:
    video: str  # relative to the data directory
    frame_step: int
    min_height_px: int  # smaller crops would be blurry when scaled up near the camera


SPRITE_SOURCES: tuple[SpriteSource, ...] = (
    SpriteSource("videos/highway_overpass_1280x720.mp4", 15, 48),
    SpriteSource("videos/highway_640x360.mp4", 20, 36),
    SpriteSource("videos/urban_cctv_640x360.mp4", 30, 40),  # the only clip with confident trucks and buses
)
SPRITE_CLASSES = (2, 5, 7)  # car, bus, truck (motorcycles are too few and too small in the samples)
SPRITE_BANK_VERSION = 5  # bump when extraction or validation changes: invalidates cached banks


def sample_frames(path: Path, step: int) -> Iterator[tuple[int, np.ndarray]]:
    """Every ``step``-th decoded frame of a video, as (index, BGR image)."""
    with av.open(str(path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % step == 0:
                yield i, frame.to_ndarray(format="bgr24")


def isolated_boxes(dets: Detections, shape: tuple[int, ...], min_height_px: int, min_confidence: float = 0.6,
                   max_foreign: float = 0.1, border_px: int = 6) -> list[int]:
    """Indices of confident car / bus / truck boxes that hold at most ``max_foreign`` of any other detection
    (a crop holding a second vehicle would be detected twice) and keep clear of the frame border (cut-off
    vehicles, overlays). A box that another detection scores as a different class (van: car or truck?) is
    ambiguous and left out too. Trucks and buses are rare in the samples: they pass at 0.5 confidence."""
    h, w = shape[:2]
    xyxy = dets.xyxy.astype(np.float64)
    areas = (xyxy[:, 2:] - xyxy[:, :2]).clip(0).prod(axis=1)
    keep = []
    for i, (box, conf, cls) in enumerate(zip(xyxy, dets.confidence, dets.class_id)):
        threshold = min_confidence if cls == 2 else min(min_confidence, 0.5)
        if cls not in SPRITE_CLASSES or conf < threshold or box[3] - box[1] < min_height_px:
            continue
        if box[0] < border_px or box[1] < border_px or box[2] > w - border_px or box[3] > h - border_px:
            continue
        lt, rb = np.maximum(xyxy[:, :2], box[:2]), np.minimum(xyxy[:, 2:], box[2:])
        foreign = (rb - lt).clip(0).prod(axis=1) / np.maximum(areas, 1e-9)
        foreign[i] = 0
        if foreign.max(initial=0) <= max_foreign:
            keep.append(i)
    return keep


def normalised(H: np.ndarray) -> np.ndarray:
    """A homography scaled to H[2, 2] = 1 (the usual way to write one down)."""
    return H / H[2, 2]


def extract_sprites(detector: YoloOnnxDetector, data_dir: Path,
                    sources: Sequence[SpriteSource] = SPRITE_SOURCES) -> list[Sprite]:
    """Cut isolated, confident car / bus / truck crops out of sampled frames of the sample clips."""
    sprites: list[Sprite] = []
    for src in sources:
        path = data_dir / src.video
        if not path.is_file():
            log.warning("sprite source missing, skipped: %s", path)
            continue
        kept_boxes = np.empty((0, 4))
        for index, image in sample_frames(path, src.frame_step):
            dets = detector(image)
            for i in isolated_boxes(dets, image.shape, src.min_height_px):
                box = dets.xyxy[i]
                # Parked vehicles sit in the same place frame after frame: keep them once.
                if len(kept_boxes) and box_iou(box, kept_boxes).max() > 0.3:
                    continue
                kept_boxes = np.vstack([kept_boxes, box])
                x1, y1, x2, y2 = np.round(box).astype(int)
                sprites.append(Sprite(image[y1:y2, x1:x2].copy(), int(dets.class_id[i]), src.video, index,
                                      float(dets.confidence[i])))
    return sprites


def _distance_for_height(camera: PinholeCamera, x: float, body: Body, height_px: float) -> float:
    """Road distance at which ``body`` appears ``height_px`` tall (closest match on a 0.5 m grid)."""
    ys = np.arange(2.0, 300.0, 0.5)
    heights = np.array([np.inf if (b := vehicle_box(camera, x, y, body)) is None else b[3] - b[1] for y in ys])
    return float(ys[np.argmin(np.abs(heights - height_px))])


def validate_sprites(detector: YoloOnnxDetector, sprites: Sequence[Sprite], params: SceneParams,
                     heights_px: Sequence[float] = (120, 75, 45), min_confidence: float = 0.3) -> list[Sprite]:
    """Keep the sprites that the detector finds again (IoU >= 0.5, as a vehicle, fairly confident) when they
    drive on the synthetic road at near, middle and far-ish sizes, placed and scaled exactly as in a clip, and
    as their own class at least once (YOLOv8n flips between bus, truck and car for the same big vehicle). The
    ground truth must consist of vehicles the detector can detect; whether it still does when they are tiny,
    cut off or occluded is what the benchmark measures."""
    camera = PinholeCamera.looking_down_road(params)
    background = render_background(camera, params, np.random.default_rng(0))
    lanes = [(k + 0.5) * params.lane_width_m for k in range(params.lanes)]
    rows = [_distance_for_height(camera, lanes[0], Body.nominal("car"), h) for h in heights_px]
    chunks = [list(range(i, min(i + len(lanes), len(sprites)))) for i in range(0, len(sprites), len(lanes))]
    hits = np.zeros((len(sprites), len(rows)), dtype=bool)
    own_class = np.zeros(len(sprites), dtype=bool)
    for c in range(len(chunks)):  # canvas c puts chunk (c + r) in row r: every sprite visits every row
        canvas, labels = background.copy(), np.zeros(background.shape[:2], dtype=np.int32)
        placed = []
        for r, y in enumerate(rows):
            for x, idx in zip(lanes, chunks[(c + r) % len(chunks)]):
                box = vehicle_box(camera, x, y, Body.nominal(sprites[idx].class_name), sprites[idx].aspect)
                if box is not None:
                    paste_sprite(canvas, labels, sprites[idx].image, box, idx + 1)
                    placed.append((idx, r, box))
        dets = detector(canvas)
        if len(dets) == 0:
            continue
        for idx, r, box in placed:
            found = (box_iou(box, dets.xyxy)[0] >= 0.5) & (dets.confidence >= min_confidence)
            classes = set(dets.class_id[found].tolist())
            hits[idx, r] = bool(classes & set(VEHICLE_CLASSES))
            own_class[idx] |= sprites[idx].class_id in classes
    return [s for s, ok in zip(sprites, hits.all(axis=1) & own_class) if ok]


def default_cache_dir() -> Path:
    """Where built sprite banks are kept between runs (outside the repository: they are cut from the data)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trafficstream" / "sprites"


def _bank_key(data_dir: Path, model_path: Path) -> str:
    """Changes whenever the sample clips, the model or the way sprites are cut and validated change."""
    parts: list[Any] = [SPRITE_BANK_VERSION, [asdict(src) for src in SPRITE_SOURCES]]
    for path in [data_dir / src.video for src in SPRITE_SOURCES] + [model_path]:
        stat = path.stat() if path.is_file() else None
        parts.append([str(path.resolve()), stat.st_size if stat else None, stat.st_mtime_ns if stat else None])
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def save_sprites(path: Path, sprites: Sequence[Sprite]) -> None:
    meta = [{"class_id": s.class_id, "source": s.source, "frame_index": s.frame_index, "confidence": s.confidence}
            for s in sprites]
    arrays = {f"sprite_{i}": s.image for i, s in enumerate(sprites)}
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    np.savez_compressed(tmp, meta=np.array(json.dumps(meta)), **arrays)
    tmp.replace(path)  # atomic: a concurrent reader never sees half a file


def load_sprites(path: Path) -> tuple[Sprite, ...]:
    with np.load(path, allow_pickle=False) as npz:
        meta = json.loads(str(npz["meta"]))
        return tuple(Sprite(npz[f"sprite_{i}"], **m) for i, m in enumerate(meta))


@functools.lru_cache(maxsize=4)
def sprite_bank(data_dir: str, model_path: str, cache_dir: str | None = None) -> tuple[Sprite, ...]:
    """Validated sprites from the sample clips under ``data_dir``. Building takes tens of seconds on a small
    CPU, so the bank is kept in memory and, with ``cache_dir``, on disk (keyed by the inputs)."""
    data, model = Path(data_dir), Path(model_path)
    cached = Path(cache_dir) / f"bank-{_bank_key(data, model)}.npz" if cache_dir else None
    if cached is not None and cached.is_file():
        try:
            return load_sprites(cached)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("unreadable sprite cache %s (%s): rebuilding", cached, exc)
    started = time.perf_counter()
    # CPU on purpose, also on GPU hosts: the bank (hence every scene) must not depend on the provider's numerics.
    detector = YoloOnnxDetector(model, classes=None, confidence=0.2, providers=["CPUExecutionProvider"])
    candidates = extract_sprites(detector, data)
    sprites = validate_sprites(detector, candidates, SceneParams(n_vehicles=0))
    counts = {name: sum(s.class_name == name for s in sprites) for name in ("car", "truck", "bus")}
    log.info("sprite bank: %d of %d crops kept (%s) in %.1f s", len(sprites), len(candidates), counts,
             time.perf_counter() - started)
    if not any(s.class_name == "car" for s in sprites):
        raise RuntimeError(f"no usable car crops found in the sample clips under {data_dir}")
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        save_sprites(cached, sprites)
    return tuple(sprites)


# ------------------------------------------------------------------------------------------------- motion
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
        return cls(round(float(rng.uniform(l_lo, l_hi)), 3), round(float(rng.uniform(w_lo, w_hi)), 3),
                   round(float(rng.uniform(h_lo, h_hi)), 3), *SHAPES[class_name])


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


def _conflict(a: dict[str, np.ndarray], b: dict[str, np.ndarray], pa: VehiclePlan, pb: VehiclePlan,
              params: SceneParams) -> bool:
    """Whether two trajectories ever overlap (side by side within a lane, closer than the safety gap)."""
    both = a["present"] & b["present"] & (np.minimum(a["y"], b["y"]) < params.far_m + 5)
    if not both.any():
        return False
    side = np.abs(a["x"] - b["x"]) < (pa.body.width_m + pb.body.width_m) / 2 + 0.6
    # Vehicles point towards the camera: a body spans [y, y + length].
    gap = np.where(a["y"] < b["y"], b["y"] - (a["y"] + pa.body.length_m), a["y"] - (b["y"] + pb.body.length_m))
    return bool((both & side & (gap < MIN_GAP_M)).any())


def _draw_plan(vehicle_id: int, rng: np.random.Generator, params: SceneParams, sprites: Sequence[Sprite],
               camera: PinholeCamera, exit_y: float) -> VehiclePlan:
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
        vehicle_id=vehicle_id, class_name=class_name, sprite=sprite, body=body, lane=lane, entry_s=float(entry),
        speed0_mps=float(v0), accel_mps2=float(accel),
        # Braking or accelerating stops at these speeds (no vehicle stops dead on the motorway).
        speed_min_mps=0.6 * params.min_kmh / 3.6, speed_max_mps=1.2 * params.max_kmh / 3.6,
        lane_change=lane_change,
    )


def plan_vehicles(params: SceneParams, rng: np.random.Generator, sprites: Sequence[Sprite],
                  camera: PinholeCamera, max_attempts: int = 200) -> list[VehiclePlan]:
    """Draw ``n_vehicles`` scripts, redrawing any that would run into an earlier one."""
    exit_y = camera.ground_distance_at_row(params.height) - 2.0
    t = np.arange(params.n_frames) / params.fps
    plans: list[VehiclePlan] = []
    tracks: list[dict[str, np.ndarray]] = []
    for _ in range(params.n_vehicles):
        for _attempt in range(max_attempts):
            plan = _draw_plan(len(plans) + 1, rng, params, sprites, camera, exit_y)
            traj = trajectory(plan, t, params)
            if not any(_conflict(traj, other, plan, p, params) for other, p in zip(tracks, plans)):
                plans.append(plan)
                tracks.append(traj)
                break
        else:
            log.warning("road too busy: placed %d of %d vehicles", len(plans), params.n_vehicles)
            break
    return plans


# ---------------------------------------------------------------------------------------------- rendering
def vehicle_box(camera: PinholeCamera, x: float, y: float, body: Body,
                sprite_aspect: float | None = None) -> np.ndarray | None:
    """Image box (x1, y1, x2, y2, float px) of a vehicle whose front bumper centre touches the road at (x, y):
    the bottom-centre is that contact point's projection, the width the projected bumper width, the top the
    highest projected point of its silhouette (nose, roof end). With ``sprite_aspect`` the box's width/height
    stays within ``MAX_STRETCH`` of the sprite's: the crops show no roof, so near a high camera a long bus
    would otherwise be stretched to twice its height. None when the vehicle is not in front of the camera."""
    w2, nose, roof = body.width_m / 2, body.nose * body.height_m, y + body.roof_end * body.length_m
    corners = np.array([[x, y, 0.0], [x - w2, y, 0], [x + w2, y, 0],
                        [x - w2, y, nose], [x + w2, y, nose],
                        [x - w2, roof, body.height_m], [x + w2, roof, body.height_m]])
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


def _value_noise(rng: np.random.Generator, size: int, blur: float) -> np.ndarray:
    """Tileable smooth noise in [-1, 1] (float32, size x size)."""
    noise = rng.standard_normal((size, size)).astype(np.float32)
    if blur > 0:  # blur a wrapped copy so the texture tiles without seams (GaussianBlur has no BORDER_WRAP)
        pad = min(size, int(math.ceil(blur * 4)))
        noise = cv2.GaussianBlur(np.pad(noise, pad, mode="wrap"), (0, 0), blur)[pad:-pad, pad:-pad]
    return noise / max(float(np.abs(noise).max()), 1e-6)


def _rays(camera: PinholeCamera, width: int, height: int, supersample: int) -> list[np.ndarray]:
    """World directions [dx, dy, dz] (flat float32, row-major) of the rays through the pixel centres of a
    supersampled grid."""
    s = supersample
    u = (np.arange(width * s, dtype=np.float32) + 0.5) / s - 0.5
    v = (np.arange(height * s, dtype=np.float32) + 0.5) / s - 0.5
    m = (camera.R.T @ np.linalg.inv(camera.K)).astype(np.float32)  # pixel (u, v, 1) -> world direction
    return [(m[i, 0] * u[None, :] + (m[i, 1] * v + m[i, 2])[:, None]).ravel() for i in range(3)]


def _sample(tex: np.ndarray, a: np.ndarray, b: np.ndarray, texel_m: float) -> np.ndarray:
    """Bilinear lookup of a wrapping texture at world coordinates (a, b) metres (1-D arrays)."""
    n, cols = len(a), 1024  # remap wants 2-D maps of < 32767 rows
    pad = (-n) % cols
    maps = [np.pad((c / texel_m).astype(np.float32), (0, pad)).reshape(-1, cols) for c in (a, b)]
    return cv2.remap(tex, maps[0], maps[1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP).ravel()[:n]


def _bgr(b: np.ndarray, g: np.ndarray, r: np.ndarray) -> np.ndarray:
    return np.stack([b, g, r], axis=1).astype(np.float32)


def render_background(camera: PinholeCamera, params: SceneParams, rng: np.random.Generator,
                      supersample: int = 2) -> np.ndarray:
    """The empty scene (BGR uint8): asphalt with grain, patches and tyre tracks, dashed lane separators, solid
    edge lines, hard shoulders, guard rails, grass verges, tree lines, distance haze and sky. Ray-cast once per
    clip at ``supersample`` x resolution and area-averaged down, which anti-aliases the far markings."""
    dx, dy, dz = _rays(camera, params.width, params.height, supersample)
    ray_len = np.sqrt(dx * dx + dy * dy + dz * dz)
    cx, cz = float(camera.center[0]), float(camera.center[2])
    grain, patches = _value_noise(rng, 512, 0.7), _value_noise(rng, 256, 6.0)
    crowns = _value_noise(rng, 256, 1.2)  # tree-line height along the road

    # Sky, hazier towards the horizon; every other surface below overwrites it where it is nearer.
    haze = np.array([196, 186, 176], np.float32)
    elevation = np.clip(dz / ray_len * 8, 0, 1)[:, None]
    img = np.array([225, 198, 170], np.float32) * elevation + haze * (1 - elevation)
    depth = np.full(len(dz), np.inf, np.float32)

    # Road plane.
    gi = np.flatnonzero(dz < -1e-6)
    t = cz / -dz[gi]
    x, y = cx + t * dx[gi], t * dy[gi]
    near = y < 5000
    gi, t, x, y = gi[near], t[near], x[near], y[near]
    # A pixel's footprint grows ~ distance^2 at grazing angles: fade the fine grain with it.
    g = _sample(grain, x, y, 0.02) / (1.0 + (y * y / (params.focal * cz * supersample)) / 0.04)
    p = _sample(patches, x, y, 0.25)
    road_w = params.road_width_m
    on_road = (x > -SHOULDER_LEFT_M) & (x < road_w + SHOULDER_RIGHT_M)
    in_lane = np.mod(x, params.lane_width_m) - params.lane_width_m / 2
    tyre = np.exp(-(((np.abs(in_lane) - 0.8) / 0.3) ** 2)) * ((x > 0) & (x < road_w))
    grey = 98 + 9 * p - 7 * tyre + 10 * g
    surface = _bgr(grey + 2, grey + 1, grey)
    edge = ((x > -0.22) & (x < 0.0)) | ((x > road_w) & (x < road_w + 0.22))
    dash = np.zeros_like(edge)
    for k in range(1, params.lanes):
        dash |= (np.abs(x - k * params.lane_width_m) < 0.075) & (np.mod(y, DASH_M + GAP_M) < DASH_M)
    paint = (edge | dash) & on_road
    white = 222 + 6 * g[paint]
    surface[paint] = _bgr(white, white + 2, white + 3)
    verge = ~on_road
    gp, gv = _sample(patches, x[verge], y[verge], 0.6), g[verge]
    surface[verge] = _bgr(52 + 10 * gp + 14 * gv, 112 + 22 * gp + 20 * gv, 86 - 14 * gp + 14 * gv)
    img[gi], depth[gi] = surface, t

    # Vertical planes beside the road, far to near: tree lines, then guard rails with posts every 2 m.
    def plane_hits(x_plane: float, max_height: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            tw = (x_plane - cx) / dx
        idx = np.flatnonzero(np.isfinite(tw) & (tw > 0))
        tw = tw[idx]
        zw = cz + tw * dz[idx]
        ok = (zw >= 0) & (zw <= max_height) & (tw < depth[idx]) & (tw * dy[idx] > 0.5)
        return idx[ok], tw[ok], tw[ok] * dy[idx[ok]], zw[ok]

    for x_plane in (-SHOULDER_LEFT_M - 14.0, road_w + SHOULDER_RIGHT_M + 18.0):
        idx, tw, yw, zw = plane_hits(x_plane, 14.0)
        flat = np.zeros_like(yw)
        top = 9 + 2.5 * _sample(crowns, yw, flat, 1.2) + 2 * _sample(crowns, yw, flat + 100, 7.0)
        keep = zw <= top
        idx, tw, yw, zw, top = idx[keep], tw[keep], yw[keep], zw[keep], top[keep]
        leaves = _sample(patches, yw, zw, 0.12) + 0.6 * _sample(grain, yw, zw, 0.04)
        shade = np.clip(zw / top, 0.45, 1.0)  # darker under the canopy
        img[idx] = _bgr(44 + 16 * leaves, 88 + 30 * leaves, 58 + 16 * leaves) * shade[:, None]
        depth[idx] = tw
    for x_plane in (-SHOULDER_LEFT_M - 0.4, road_w + SHOULDER_RIGHT_M + 0.4):
        idx, tw, yw, zw = plane_hits(x_plane, 0.8)
        rail = zw >= 0.5
        keep = rail | (np.mod(yw, 2.0) < 0.12)
        shine = np.where(rail, np.where(zw > 0.7, 128.0, 178.0), 92.0)[keep]
        img[idx[keep]] = _bgr(shine + 4, shine + 2, shine)
        depth[idx[keep]] = tw[keep]

    # Distance haze over everything but the sky.
    dist = np.where(np.isfinite(depth), depth * ray_len, 0)
    fade = (1 - np.exp(-dist / 650.0))[:, None]
    img = img * (1 - fade) + haze * fade
    img = np.clip(img, 0, 255).astype(np.uint8).reshape(params.height * supersample, params.width * supersample, 3)
    if supersample > 1:
        img = cv2.resize(img, (params.width, params.height), interpolation=cv2.INTER_AREA)
    return img


def paste_sprite(frame: np.ndarray, labels: np.ndarray, sprite: np.ndarray, box: np.ndarray,
                 label: int) -> None:
    """Draw ``sprite`` opaquely into ``frame`` so that it covers the float ``box`` exactly (sub-pixel
    placement, anti-aliased edges) and mark the pixels it covers >= 50 % with ``label``."""
    x1, y1, x2, y2 = box
    ix1, iy1, ix2, iy2 = math.floor(x1), math.floor(y1), math.ceil(x2), math.ceil(y2)
    fh, fw = frame.shape[:2]
    cx1, cy1, cx2, cy2 = max(ix1, 0), max(iy1, 0), min(ix2, fw), min(iy2, fh)
    if cx1 >= cx2 or cy1 >= cy2:
        return
    tw, th = max(1, round(x2 - x1)), max(1, round(y2 - y1))
    shrinking = tw < sprite.shape[1] or th < sprite.shape[0]
    small = cv2.resize(sprite, (tw, th), interpolation=cv2.INTER_AREA if shrinking else cv2.INTER_LINEAR)
    sx, sy = (x2 - x1) / tw, (y2 - y1) / th
    # Affine map in pixel-centre convention from the resized sprite into the destination window.
    M = np.array([[sx, 0, x1 - cx1 + 0.5 * sx - 0.5], [0, sy, y1 - cy1 + 0.5 * sy - 0.5]])
    size = (cx2 - cx1, cy2 - cy1)
    color = cv2.warpAffine(small, M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    cover = cv2.warpAffine(np.ones((th, tw), np.float32), M, size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    region = frame[cy1:cy2, cx1:cx2]
    alpha = cover[..., None]
    region[:] = (region * (1 - alpha) + color * alpha + 0.5).astype(np.uint8)
    labels[cy1:cy2, cx1:cx2][cover >= 0.5] = label


def visible_part(labels: np.ndarray, label: int, box: np.ndarray) -> tuple[np.ndarray | None, float]:
    """Bounding box of the pixels ``label`` still owns (float, snapped to the exact sprite edges where those
    are not hidden) and the visible share of the full box's area (0 when fully hidden or off-screen)."""
    fh, fw = labels.shape
    x1, y1, x2, y2 = box
    ix1, iy1 = max(math.floor(x1), 0), max(math.floor(y1), 0)
    ix2, iy2 = min(math.ceil(x2), fw), min(math.ceil(y2), fh)
    if ix1 >= ix2 or iy1 >= iy2:
        return None, 0.0
    mine = labels[iy1:iy2, ix1:ix2] == label
    count = int(mine.sum())
    if count == 0:
        return None, 0.0
    cols, rows = np.flatnonzero(mine.any(axis=0)), np.flatnonzero(mine.any(axis=1))
    seen = np.array([ix1 + cols[0], iy1 + rows[0], ix1 + cols[-1] + 1, iy1 + rows[-1] + 1], dtype=float)
    exact = np.clip(box, [0, 0, 0, 0], [fw, fh, fw, fh])
    snapped = np.where(np.abs(seen - exact) <= 1.0, exact, seen)
    area = max((x2 - x1) * (y2 - y1), 1e-9)
    return snapped, min(1.0, count / area)


@dataclass(frozen=True)
class RenderedFrame:
    image: np.ndarray
    vehicles: list[dict[str, Any]]


def render_frames(params: SceneParams, camera: PinholeCamera, plans: Sequence[VehiclePlan],
                  sprites: Sequence[Sprite], background: np.ndarray, roi: np.ndarray,
                  noise_rng: np.random.Generator) -> Iterator[RenderedFrame]:
    """Composite every frame: background, vehicles far to near, sensor noise; with its ground truth."""
    t = np.arange(params.n_frames) / params.fps
    tracks = [trajectory(p, t, params) for p in plans]
    # A few noise fields reused in random order: fresh Gaussian noise per 1280x720 frame costs ~30 ms.
    noise_bank = [np.round(noise_rng.standard_normal(background.shape) * params.noise_sigma).astype(np.int16)
                  for _ in range(6)] if params.noise_sigma > 0 else []
    for f in range(params.n_frames):
        canvas = background.copy()
        labels = np.zeros(background.shape[:2], dtype=np.int32)
        drawn: list[tuple[VehiclePlan, dict[str, float], np.ndarray]] = []
        present = [(p, {k: float(v[f]) for k, v in tr.items() if k != "present"})
                   for p, tr in zip(plans, tracks) if tr["present"][f]]
        for plan, state in sorted(present, key=lambda ps: -ps[1]["y"]):  # far to near: near ones occlude
            box = vehicle_box(camera, state["x"], state["y"], plan.body, sprites[plan.sprite].aspect)
            if box is None or box[2] <= 0 or box[0] >= params.width or box[3] <= 0 or box[1] >= params.height:
                continue
            paste_sprite(canvas, labels, sprites[plan.sprite].image, box, plan.vehicle_id)
            drawn.append((plan, state, box))
        if noise_bank:
            noisy = canvas.astype(np.int16) + noise_bank[int(noise_rng.integers(len(noise_bank)))]
            canvas = np.clip(noisy, 0, 255).astype(np.uint8)
        gt = []
        for plan, state, box in drawn:
            seen, visibility = visible_part(labels, plan.vehicle_id, box)
            contact = ((box[0] + box[2]) / 2, box[3])
            gt.append({
                "vehicle_id": plan.vehicle_id,
                "class_name": plan.class_name,
                "class_id": plan.class_id,
                "box": None if seen is None else [round(float(c), 3) for c in seen],
                "full_box": [round(float(c), 3) for c in box],
                "visibility": round(visibility, 4),
                "in_roi": bool(cv2.pointPolygonTest(roi.astype(np.float32), contact, False) >= 0),
                "world_x": round(state["x"], 4),
                "world_y": round(state["y"], 4),
                "speed_kmh": round(state["speed_mps"] * 3.6, 4),
            })
        yield RenderedFrame(canvas, gt)


# ------------------------------------------------------------------------------------------------- output
def frame_rate(fps: float) -> Fraction:
    """Exact rational frame rate: NTSC rates (29.97, 59.94, 23.976) -> n*1000/1001, others as given."""
    ntsc = round(fps * 1.001)
    if abs(fps - ntsc / 1.001) < 5e-4 and abs(fps - ntsc) > 5e-4:
        return Fraction(ntsc * 1000, 1001)
    return Fraction(fps).limit_denominator(1000)


class VideoWriter:
    """H.264 (yuv420p) MP4 through PyAV; frame i gets PTS i in a 1/fps time base (constant frame rate)."""

    def __init__(self, path: Path, width: int, height: int, fps: float, crf: int = 20) -> None:
        self.rate = frame_rate(fps)
        self.container = av.open(str(path), mode="w")
        self.stream = self.container.add_stream("libx264", rate=self.rate)
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, "yuv420p"
        self.stream.codec_context.time_base = 1 / self.rate
        self.stream.options = {"crf": str(crf), "preset": "veryfast"}
        self.index = 0

    def write(self, image: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(image, format="bgr24")
        frame.pts, frame.time_base = self.index, 1 / self.rate
        self.container.mux(self.stream.encode(frame))
        self.index += 1

    def close(self) -> None:
        self.container.mux(self.stream.encode(None))
        self.container.close()


def region_of_interest(camera: PinholeCamera, params: SceneParams) -> np.ndarray:
    """The carriageway with its shoulders, from below the image bottom to ``roi_far_m``, clipped to the image
    (float32 polygon, px)."""
    near = max(0.5, camera.ground_distance_at_row(params.height) - 3.0)
    xl, xr = -SHOULDER_LEFT_M, params.road_width_m + SHOULDER_RIGHT_M
    quad = camera.ground_to_image(np.array([[xl, near], [xr, near], [xr, params.roi_far_m], [xl, params.roi_far_m]]))
    frame = np.array([[0, 0], [params.width, 0], [params.width, params.height], [0, params.height]], np.float32)
    area, poly = cv2.intersectConvexConvex(quad.astype(np.float32), frame)
    if area <= 0 or poly is None:
        raise ValueError("the road is not in view: check the camera geometry")
    return poly.reshape(-1, 2)


def calibration_pairs(camera: PinholeCamera, params: SceneParams, margin_px: float = 8.0
                      ) -> tuple[list[list[float]], list[list[float]]]:
    """>= 6 image <-> world pairs on the road surface (lane-line ends), exact under the known homography."""
    near = camera.ground_distance_at_row(params.height)
    period = DASH_M + GAP_M
    ys = np.arange(math.ceil((near + 4) / period) * period, min(params.roi_far_m, 80.0) + 1e-9, period)
    ys = ys[np.linspace(0, len(ys) - 1, min(3, len(ys))).round().astype(int)] if len(ys) else ys
    xs = sorted({0.0, params.lanes // 2 * params.lane_width_m, params.road_width_m})
    world = np.array([[x, y] for y in ys for x in xs])
    image = camera.ground_to_image(world) if len(world) else np.empty((0, 2))
    inside = ((image[:, 0] >= margin_px) & (image[:, 0] <= params.width - margin_px)
              & (image[:, 1] >= margin_px) & (image[:, 1] <= params.height - margin_px))
    if inside.sum() < 6:
        raise ValueError(f"only {int(inside.sum())} lane-line calibration points are in view; need 6")
    return ([[round(float(u), 3), round(float(v), 3)] for u, v in image[inside]],
            [[round(float(x), 3), round(float(y), 3)] for x, y in world[inside]])


def deployment_config(video_path: Path, camera: PinholeCamera, params: SceneParams, roi: np.ndarray,
                      template: Path = DEFAULT_CONFIG) -> dict[str, Any]:
    """A full deployment config (the template's sections) with the one camera ``synthetic``."""
    raw = yaml.safe_load(template.read_text()) if template.is_file() else {}
    raw = raw if isinstance(raw, dict) else {}
    image_points, world_points = calibration_pairs(camera, params)
    storage = dict(raw.get("storage") or {})
    # The streaming job only opens frames below its allowed roots: add the clip's folder.
    roots = list(storage.get("allowed_roots") or ["{data_dir}"])
    storage["allowed_roots"] = roots + [str(video_path.parent)]
    raw["storage"] = storage
    raw["cameras"] = [{
        "id": CAMERA_ID,
        "name": f"synthetic {params.lanes}-lane road, {params.min_kmh:g}-{params.max_kmh:g} km/h",
        "source": str(video_path),
        "speed_limit_kmh": params.speed_limit_kmh,
        "roi": [[round(float(u), 2), round(float(v), 2)] for u, v in roi],
        "calibration": {"image_points": image_points, "world_points": world_points},
    }]
    return raw


def vehicle_summary(plan: VehiclePlan, sprite: Sprite, frames: Sequence[dict[str, Any]],
                    n_frames: int) -> dict[str, Any]:
    seen = [(f["frame_index"], v) for f in frames for v in f["vehicles"] if v["vehicle_id"] == plan.vehicle_id]
    speeds = [v["speed_kmh"] for _, v in seen]
    first, last = (seen[0][0], seen[-1][0]) if seen else (None, None)
    lc = plan.lane_change
    return {
        "vehicle_id": plan.vehicle_id,
        "class_name": plan.class_name,
        "class_id": plan.class_id,
        "length_m": plan.body.length_m, "width_m": plan.body.width_m, "height_m": plan.body.height_m,
        "lane": plan.lane,
        "lane_end": lc.to_lane if lc else plan.lane,
        "lane_change": None if lc is None else {
            "start_s": round(lc.start_s, 3), "duration_s": round(lc.duration_s, 3), "to_lane": lc.to_lane},
        "entry_s": round(plan.entry_s, 4),
        "initial_speed_kmh": round(plan.speed0_mps * 3.6, 4),
        "accel_mps2": round(plan.accel_mps2, 4),
        "first_frame": first,
        "last_frame": last,
        "frames": len(seen),
        # Entered and left the picture during the clip.
        "crossed": bool(seen) and first > 0 and last < n_frames - 1,
        "min_speed_kmh": round(min(speeds), 3) if speeds else None,
        "max_speed_kmh": round(max(speeds), 3) if speeds else None,
        "mean_speed_kmh": round(float(np.mean(speeds)), 3) if speeds else None,
        "sprite": {"source": sprite.source, "frame_index": sprite.frame_index,
                   "confidence": round(sprite.confidence, 3)},
    }


def generate(out_dir: str | Path, scene: SceneParams | None = None, seed: int = 0, *,
             data_dir: str | Path | None = None, model_path: str | Path | None = None,
             cache_dir: str | Path | None = None, use_cache: bool = True, progress: bool = True) -> SyntheticClip:
    """Render a synthetic clip for ``scene`` and ``seed`` into ``out_dir``; same inputs, same ground truth.

    ``data_dir`` holds the sample clips the vehicle sprites come from (default: the configured data
    directory); ``model_path`` is the detector that cuts them (default ``<data_dir>/models/yolov8n.onnx``).
    The sprite bank is kept between runs in ``cache_dir`` (default :func:`default_cache_dir`) unless
    ``use_cache`` is False.
    """
    scene = scene or SceneParams()
    # The container stores a rational rate (29.97 -> 30000/1001): use exactly that for motion and timestamps.
    scene = replace(scene, fps=float(frame_rate(scene.fps)))
    started = time.perf_counter()
    out = Path(out_dir).expanduser().resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = Path(data_dir).expanduser().resolve() if data_dir else default_data_dir()
    model = Path(model_path).expanduser().resolve() if model_path else data / DEFAULT_MODEL
    cache = (Path(cache_dir) if cache_dir else default_cache_dir()) if use_cache else None
    sprites = sprite_bank(str(data), str(model), str(cache) if cache else None)

    # Independent streams: changing the vehicle count does not change the road texture or the noise.
    plan_seq, road_seq, noise_seq = np.random.SeedSequence(seed).spawn(3)
    camera = PinholeCamera.looking_down_road(scene)
    plans = plan_vehicles(scene, np.random.default_rng(plan_seq), sprites, camera)
    background = render_background(camera, scene, np.random.default_rng(road_seq))
    roi = region_of_interest(camera, scene)

    video_path, gt_path, config_path = out / "clip.mp4", out / "ground_truth.json", out / "camera.yaml"
    frames: list[dict[str, Any]] = []
    writer = VideoWriter(video_path, scene.width, scene.height, scene.fps, scene.crf)
    try:
        rendered = render_frames(scene, camera, plans, sprites, background, roi, np.random.default_rng(noise_seq))
        for index, frame in enumerate(tqdm(rendered, total=scene.n_frames, desc="synthetic", unit="frame",
                                           disable=not progress, leave=False)):
            writer.write(frame.image)
            frames.append({"frame_index": index, "pts_s": round(index / scene.fps, 6), "vehicles": frame.vehicles})
    finally:
        writer.close()

    ground_truth = {
        "version": GT_VERSION,
        "camera_id": CAMERA_ID,
        "seed": seed,
        "fps": scene.fps,
        "n_frames": scene.n_frames,
        "width": scene.width,
        "height": scene.height,
        # image px -> world m (the convention of models.homography), and its inverse.
        "homography": normalised(camera.image_to_world).tolist(),
        "homography_world_to_image": normalised(camera.world_to_image).tolist(),
        "camera": {"K": camera.K.tolist(), "R": camera.R.round(12).tolist(), "center": camera.center.tolist()},
        "contact_point": "centre of the front bumper on the road = bottom-centre of full_box",
        "roi": [[round(float(u), 2), round(float(v), 2)] for u, v in roi],
        "scene": asdict(scene),
        "vehicles": [vehicle_summary(p, sprites[p.sprite], frames, scene.n_frames) for p in plans],
        "frames": frames,
    }
    gt_path.write_text(json.dumps(ground_truth, separators=(",", ":")))
    config = deployment_config(video_path, camera, scene, roi)
    header = (f"# Synthetic known-speed clip (bench.synthetic, seed {seed}); ground truth: {gt_path.name}\n"
              f"# python -m trafficstream.bench.synthetic --out {out} --seed {seed}\n")
    config_path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    load_settings(config_path, environ={})  # the config must load as a deployment, or fail here
    log.info("synthetic clip: %d frames, %d vehicles, seed %d in %.1f s -> %s", scene.n_frames, len(plans), seed,
             time.perf_counter() - started, out)
    return SyntheticClip(video_path, gt_path, config_path)


# ---------------------------------------------------------------------------------------------------- CLI
_CLI_NAMES = {"n_vehicles": "vehicles", "duration_s": "duration"}


def _scene_from_args(args: argparse.Namespace) -> SceneParams:
    values = {f.name: getattr(args, f.name) for f in fields(SceneParams) if getattr(args, f.name, None) is not None}
    return SceneParams(**values)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trafficstream.bench.synthetic", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="output folder (created)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None, help="sample data folder (default: the configured data_dir)")
    parser.add_argument("--model", default=None, help="detector ONNX used to cut vehicle sprites")
    parser.add_argument("--cache-dir", default=None, help=f"sprite bank cache (default {default_cache_dir()})")
    parser.add_argument("--no-cache", action="store_true", help="rebuild the sprite bank, keep nothing on disk")
    parser.add_argument("--log-level", default="INFO")
    parser.add_argument("--no-progress", action="store_true")
    defaults = SceneParams()
    for f in fields(SceneParams):
        if f.name == "accel_range_mps2":
            continue
        flag = "--" + _CLI_NAMES.get(f.name, f.name).replace("_", "-")
        kind = int if isinstance(getattr(defaults, f.name), int) else float
        parser.add_argument(flag, dest=f.name, type=kind, default=None,
                            help=f"default {getattr(defaults, f.name)}")
    args = parser.parse_args(argv)
    setup_logging(args.log_level)
    clip = generate(args.out, _scene_from_args(args), args.seed, data_dir=args.data_dir, model_path=args.model,
                    cache_dir=args.cache_dir, use_cache=not args.no_cache, progress=not args.no_progress)
    print(json.dumps({"video": str(clip.video_path), "ground_truth": str(clip.ground_truth_path),
                      "config": str(clip.config_path)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
