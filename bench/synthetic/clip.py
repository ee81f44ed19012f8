"""A synthetic clip on disk: ``clip.mp4`` (H.264, constant frame rate), ``ground_truth.json`` and
``camera.yaml`` (a deployment whose one camera plays the clip), rendered by :func:`generate` from a scene and a
seed.

Ground truth: per frame and vehicle its box, world position and true speed (``frames``); per vehicle a
summary with its ``behaviour`` (``normal`` / ``wrong_way`` / ``stopped`` / ``queued``, ``heading_deg``,
``stop_s``, ``move_off_s``). With the camera's counting geometry (``geometry``: on by default for a scene with
traffic events) also ``geometry`` (the camera's lines, lanes, zones and event thresholds, as in camera.yaml),
``crossings`` (every true line crossing), ``crossing_sets`` (per line and direction the countable vehicle ids)
and ``events`` (the true traffic events): see :mod:`bench.synthetic.scenario`."""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
import yaml
from tqdm import tqdm

from trafficstream.bench.synthetic.bank import default_cache_dir, sprite_bank
from trafficstream.bench.synthetic.camera import PinholeCamera, normalised
from trafficstream.bench.synthetic.renderer import render_background, render_frames
from trafficstream.bench.synthetic.scenario import (
    COUNT_MIN_HEIGHT_PX,
    behaviour,
    camera_geometry,
    crossing_sets,
    true_crossings,
    true_events,
)
from trafficstream.bench.synthetic.scene import DASH_M, GAP_M, SHOULDER_LEFT_M, SHOULDER_RIGHT_M, SceneParams
from trafficstream.bench.synthetic.sprites import Sprite
from trafficstream.bench.synthetic.traffic import VehiclePlan, plan_vehicles
from trafficstream.config import DEFAULT_CONFIG, default_data_dir, load_settings

log = logging.getLogger(__name__)

CAMERA_ID = "synthetic"
GT_VERSION = 1
DEFAULT_MODEL = "models/yolov8n.onnx"  # relative to the data directory


@dataclass(frozen=True)
class SyntheticClip:
    video_path: Path
    ground_truth_path: Path
    config_path: Path


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


def calibration_pairs(
    camera: PinholeCamera, params: SceneParams, margin_px: float = 8.0
) -> tuple[list[list[float]], list[list[float]]]:
    """>= 6 image <-> world pairs on the road surface (lane-line ends), exact under the known homography."""
    near = camera.ground_distance_at_row(params.height)
    period = DASH_M + GAP_M
    ys = np.arange(math.ceil((near + 4) / period) * period, min(params.roi_far_m, 80.0) + 1e-9, period)
    ys = ys[np.linspace(0, len(ys) - 1, min(3, len(ys))).round().astype(int)] if len(ys) else ys
    xs = sorted({0.0, params.lanes // 2 * params.lane_width_m, params.road_width_m})
    world = np.array([[x, y] for y in ys for x in xs])
    image = camera.ground_to_image(world) if len(world) else np.empty((0, 2))
    inside = (
        (image[:, 0] >= margin_px)
        & (image[:, 0] <= params.width - margin_px)
        & (image[:, 1] >= margin_px)
        & (image[:, 1] <= params.height - margin_px)
    )
    if inside.sum() < 6:
        raise ValueError(f"only {int(inside.sum())} lane-line calibration points are in view; need 6")
    return (
        [[round(float(u), 3), round(float(v), 3)] for u, v in image[inside]],
        [[round(float(x), 3), round(float(y), 3)] for x, y in world[inside]],
    )


def deployment_config(
    video_path: Path,
    camera: PinholeCamera,
    params: SceneParams,
    roi: np.ndarray,
    template: Path = DEFAULT_CONFIG,
    geometry: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A full deployment config (the template's sections) with the one camera ``synthetic``; ``geometry``: its
    ``lines``, ``lanes``, ``zones`` and ``events`` sections (:func:`scenario.camera_geometry`), if any."""
    raw = yaml.safe_load(template.read_text()) if template.is_file() else {}
    raw = raw if isinstance(raw, dict) else {}
    image_points, world_points = calibration_pairs(camera, params)
    storage = dict(raw.get("storage") or {})
    # The streaming job only opens frames below its allowed roots: add the clip's folder.
    roots = list(storage.get("allowed_roots") or ["{data_dir}"])
    storage["allowed_roots"] = roots + [str(video_path.parent)]
    raw["storage"] = storage
    raw["cameras"] = [
        {
            "id": CAMERA_ID,
            "name": f"synthetic {params.lanes}-lane road, {params.min_kmh:g}-{params.max_kmh:g} km/h",
            "source": str(video_path),
            "speed_limit_kmh": params.speed_limit_kmh,
            "roi": [[round(float(u), 2), round(float(v), 2)] for u, v in roi],
            "calibration": {"image_points": image_points, "world_points": world_points},
            **(geometry or {}),
        }
    ]
    return raw


def vehicle_summary(
    plan: VehiclePlan, sprite: Sprite, frames: Sequence[dict[str, Any]], n_frames: int
) -> dict[str, Any]:
    seen = [(f["frame_index"], v) for f in frames for v in f["vehicles"] if v["vehicle_id"] == plan.vehicle_id]
    speeds = [v["speed_kmh"] for _, v in seen]
    first, last = (seen[0][0], seen[-1][0]) if seen else (None, None)
    lc = plan.lane_change
    return {
        "vehicle_id": plan.vehicle_id,
        "class_name": plan.class_name,
        "class_id": plan.class_id,
        **behaviour(plan),
        "length_m": plan.body.length_m,
        "width_m": plan.body.width_m,
        "height_m": plan.body.height_m,
        "lane": plan.lane,
        "lane_end": lc.to_lane if lc else plan.lane,
        "lane_change": None
        if lc is None
        else {"start_s": round(lc.start_s, 3), "duration_s": round(lc.duration_s, 3), "to_lane": lc.to_lane},
        "entry_s": round(plan.entry_s, 4),
        "initial_speed_kmh": round(plan.speed0_mps * 3.6, 4),
        "accel_mps2": round(plan.accel_mps2, 4),
        "first_frame": first,
        "last_frame": last,
        "frames": len(seen),
        # Entered and left the picture during the clip.
        "crossed": first is not None and last is not None and first > 0 and last < n_frames - 1,
        "min_speed_kmh": round(min(speeds), 3) if speeds else None,
        "max_speed_kmh": round(max(speeds), 3) if speeds else None,
        "mean_speed_kmh": round(float(np.mean(speeds)), 3) if speeds else None,
        "sprite": {
            "source": sprite.source,
            "frame_index": sprite.frame_index,
            "confidence": round(sprite.confidence, 3),
        },
    }


def generate(
    out_dir: str | Path,
    scene: SceneParams | None = None,
    seed: int = 0,
    *,
    data_dir: str | Path | None = None,
    model_path: str | Path | None = None,
    cache_dir: str | Path | None = None,
    use_cache: bool = True,
    progress: bool = True,
    geometry: bool | None = None,
) -> SyntheticClip:
    """Render a synthetic clip for ``scene`` and ``seed`` into ``out_dir``; same inputs, same ground truth.

    ``data_dir`` holds the sample clips the vehicle sprites come from (default: the configured data
    directory); ``model_path`` is the detector that cuts them (default ``<data_dir>/models/yolov8n.onnx``).
    The sprite bank is kept between runs in ``cache_dir`` (default :func:`default_cache_dir`) unless
    ``use_cache`` is False. ``geometry``: give the camera counting lines, lanes, a queue zone and event
    thresholds, and write the crossings and events they imply into the ground truth (default: when the scene
    stages traffic events).
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
    # (spawn(4) gives the same first three streams as spawn(3): clips without events are what they were.)
    plan_seq, road_seq, noise_seq, event_seq = np.random.SeedSequence(seed).spawn(4)
    camera = PinholeCamera.looking_down_road(scene)
    plans = plan_vehicles(
        scene, np.random.default_rng(plan_seq), sprites, camera, events_rng=np.random.default_rng(event_seq)
    )
    background = render_background(camera, scene, np.random.default_rng(road_seq))
    roi = region_of_interest(camera, scene)

    video_path, gt_path, config_path = out / "clip.mp4", out / "ground_truth.json", out / "camera.yaml"
    frames: list[dict[str, Any]] = []
    writer = VideoWriter(video_path, scene.width, scene.height, scene.fps, scene.crf)
    try:
        rendered = render_frames(scene, camera, plans, sprites, background, roi, np.random.default_rng(noise_seq))
        for index, frame in enumerate(
            tqdm(rendered, total=scene.n_frames, desc="synthetic", unit="frame", disable=not progress, leave=False)
        ):
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
    geo = camera_geometry(scene) if (scene.has_events if geometry is None else geometry) else None
    if geo is not None:
        crossings = true_crossings(frames, geo["lines"], scene.fps, scene.width, scene.height, events=geo["events"])
        ground_truth.update(
            geometry=geo,
            count_min_height_px=COUNT_MIN_HEIGHT_PX,
            crossings=crossings,
            crossing_sets=crossing_sets(crossings, geo["lines"]),
            events=true_events(plans, frames, geo, scene.fps, scene.n_frames),
        )
    gt_path.write_text(json.dumps(ground_truth, separators=(",", ":")))
    config = deployment_config(video_path, camera, scene, roi, geometry=geo)
    header = (
        f"# Synthetic known-speed clip (bench.synthetic, seed {seed}); ground truth: {gt_path.name}\n"
        f"# python -m trafficstream.bench.synthetic --out {out} --seed {seed}\n"
    )
    config_path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    load_settings(config_path, environ={})  # the config must load as a deployment, or fail here
    log.info(
        "synthetic clip: %d frames, %d vehicles, seed %d in %.1f s -> %s",
        scene.n_frames,
        len(plans),
        seed,
        time.perf_counter() - started,
        out,
    )
    return SyntheticClip(video_path, gt_path, config_path)
