"""A synthetic clip on disk: ``clip.mp4`` (H.264, constant frame rate), ``ground_truth.json`` and
``camera.yaml`` (a deployment whose one camera plays the clip), rendered by :func:`generate` from a scene and a
seed.

Ground truth: per frame and vehicle its box, world position and true speed (``frames``); per vehicle a
summary with its ``behaviour`` (``normal`` / ``wrong_way`` / ``stopped`` / ``queued``, ``heading_deg``,
``stop_s``, ``move_off_s``). With the camera's counting geometry (``geometry``: on by default for a scene with
traffic events) also ``geometry`` (the camera's lines, lanes, zones and event thresholds, as in camera.yaml),
``crossings`` (every true line crossing), ``crossing_sets`` (per line and direction the countable vehicle ids)
and ``events`` (the true traffic events): see :mod:`bench.synthetic.scenario`.

Scene families (``bench.synthetic.families``) add, only when they use them (a default scene's files are what
they always were): ``lens`` (the distortion the picture, boxes, region of interest and calibration image points
are in; ``homography`` stays the ideal pinhole one, for undistorted pixels), ``sway`` (per frame dx, dy px and
rotation degrees of the swaying camera; the calibration is that of the unswayed frame 0) and ``scene_notes``
(what the scene asked for but could not get, e.g. motorcycles without motorcycle sprites). ``scene`` lists the
scene fields that are not at their defaults among the families' (``SceneParams(**scene)`` rebuilds it). On a
graded road ``camera`` is the pose in the road plane's frame (world x, y, and heights, along its normal); on a
bend ``world_x`` / ``world_y`` are true road-plane positions and ``speed_kmh`` the speed along the path."""

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
from trafficstream.bench.synthetic.camera import Optics, PinholeCamera, normalised
from trafficstream.bench.synthetic.renderer import camera_sway, render_background, render_frames
from trafficstream.bench.synthetic.road import RoadCourse
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
from trafficstream.bench.synthetic.traffic import VehiclePlan, has_motorcycles, plan_vehicles
from trafficstream.config import DEFAULT_CONFIG, default_data_dir, load_settings

log = logging.getLogger(__name__)

CAMERA_ID = "synthetic"
GT_VERSION = 1
DEFAULT_MODEL = "models/yolov8n.onnx"  # relative to the data directory
# SceneParams fields the scene families added: written to the ground truth only when not at their default.
FAMILY_FIELDS = (
    "lens_k1",
    "lens_k2",
    "grade_pct",
    "curve_radius_m",
    "curve_start_m",
    "motorcycle_share",
    "motion_blur",
    "light",
    "sway_px",
    "calibration_noise_px",
)


@dataclass(frozen=True)
class SyntheticClip:
    video_path: Path
    ground_truth_path: Path
    config_path: Path

    @classmethod
    def in_folder(cls, folder: str | Path) -> SyntheticClip:
        """The clip :func:`generate` wrote into ``folder``."""
        out = Path(folder)
        return cls(out / "clip.mp4", out / "ground_truth.json", out / "camera.yaml")


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


def region_of_interest(camera: PinholeCamera, params: SceneParams, optics: Optics | None = None) -> np.ndarray:
    """The carriageway with its shoulders, from below the image bottom to ``roi_far_m``, clipped to the image
    (float32 polygon, px). Along a bend, or through a lens, its sides curve: see :func:`_curved_roi`."""
    course = RoadCourse.of(params)
    if course.curved or params.lens is not None:
        return _curved_roi(optics or Optics.of(camera, params), params, course)
    near = max(0.5, camera.ground_distance_at_row(params.height) - 3.0)
    xl, xr = -SHOULDER_LEFT_M, params.road_width_m + SHOULDER_RIGHT_M
    quad = camera.ground_to_image(np.array([[xl, near], [xr, near], [xr, params.roi_far_m], [xl, params.roi_far_m]]))
    frame = np.array([[0, 0], [params.width, 0], [params.width, params.height], [0, params.height]], np.float32)
    area, poly = cv2.intersectConvexConvex(quad.astype(np.float32), frame)
    if area <= 0 or poly is None:
        raise ValueError("the road is not in view: check the camera geometry")
    return poly.reshape(-1, 2)


def _curved_roi(optics: Optics, params: SceneParams, course: RoadCourse, subpixel: int = 4) -> np.ndarray:
    """The region of interest of a bending road or a distorting lens: the road's outline sampled every ~0.5 m,
    mapped into the picture, filled at 1/16 px, traced and simplified to within a pixel (the outline is not
    convex, so no convex clipping). Vertices on the picture's border snap to its edges."""
    near = max(0.5, optics.bottom_distance - 3.0)
    xl, xr = -SHOULDER_LEFT_M, params.road_width_m + SHOULDER_RIGHT_M
    s = np.linspace(near, params.roi_far_m, max(8, math.ceil((params.roi_far_m - near) * 2)))
    across = np.linspace(xl, xr, 16)
    lane = np.concatenate(
        [
            np.column_stack([np.full_like(s, xl), s]),
            np.column_stack([across, np.full_like(across, params.roi_far_m)]),
            np.column_stack([np.full_like(s, xr), s[::-1]]),
            np.column_stack([across[::-1], np.full_like(across, near)]),
        ]
    )
    outline = optics.ground_to_picture(np.column_stack(course.to_plane(lane[:, 0], lane[:, 1])))
    if not np.isfinite(outline).all():
        raise ValueError("the region of interest reaches behind the camera: check the camera geometry")
    mask = np.zeros((params.height, params.width), np.uint8)
    scale = 1 << subpixel
    pts = np.round(outline * scale - scale / 2).astype(np.int64)  # pixel centres at i + 0.5
    pts = np.clip(pts, -(1 << 26), 1 << 26).astype(np.int32)
    cv2.fillPoly(mask, [pts.reshape(-1, 1, 2)], 255, lineType=cv2.LINE_8, shift=subpixel)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        raise ValueError("the road is not in view: check the camera geometry")
    poly = cv2.approxPolyDP(max(contours, key=cv2.contourArea), 0.75, True).reshape(-1, 2).astype(np.float32)
    # Traced pixels -> their centres, or the picture's edge for those on its border.
    out = poly + 0.5
    for axis, size in ((0, params.width), (1, params.height)):
        out[poly[:, axis] == 0, axis] = 0.0
        out[poly[:, axis] == size - 1, axis] = float(size)
    return out


def calibration_pairs(
    camera: PinholeCamera, params: SceneParams, margin_px: float = 8.0, rng: np.random.Generator | None = None
) -> tuple[list[list[float]], list[list[float]]]:
    """>= 6 image <-> world pairs on the road surface (lane-line ends), exact under the known homography.

    Along a bend the points follow the lane lines (world: their true road-plane position, as a map gives it);
    through a lens the image points are the distorted pixels (where a user clicks them on the video); with
    ``calibration_noise_px`` and ``rng`` they are off by Gaussian noise, as clicked by hand."""
    near = camera.ground_distance_at_row(params.height)
    period = DASH_M + GAP_M
    ys = np.arange(math.ceil((near + 4) / period) * period, min(params.roi_far_m, 80.0) + 1e-9, period)
    ys = ys[np.linspace(0, len(ys) - 1, min(3, len(ys))).round().astype(int)] if len(ys) else ys
    xs = sorted({0.0, params.lanes // 2 * params.lane_width_m, params.road_width_m})
    world = np.array([[x, y] for y in ys for x in xs])
    course = RoadCourse.of(params)
    if course.curved and len(world):
        world = np.column_stack(course.to_plane(world[:, 0], world[:, 1]))
    image = camera.ground_to_image(world) if len(world) else np.empty((0, 2))
    lens = params.lens
    if lens is not None and len(image):
        image = Optics(camera, camera, lens).distort(image)
    if rng is not None and params.calibration_noise_px > 0 and len(image):
        image = image + rng.normal(0.0, params.calibration_noise_px, image.shape)
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
    calibration_rng: np.random.Generator | None = None,
) -> dict[str, Any]:
    """A full deployment config (the template's sections) with the one camera ``synthetic``; ``geometry``: its
    ``lines``, ``lanes``, ``zones`` and ``events`` sections (:func:`scenario.camera_geometry`), if any. Through
    a lens the calibration carries it (``lens``); a swaying camera registers its frames against frame 0, the
    unswayed view the calibration was made on. ``calibration_rng``: the stream of the hand-clicking noise."""
    raw = yaml.safe_load(template.read_text()) if template.is_file() else {}
    raw = raw if isinstance(raw, dict) else {}
    image_points, world_points = calibration_pairs(camera, params, rng=calibration_rng)
    calibration: dict[str, Any] = {"image_points": image_points, "world_points": world_points}
    extra: dict[str, Any] = {}
    if params.lens is not None:
        calibration["lens"] = lens_config(params)
    if params.sway_px > 0:
        calibration["reference_frame"] = 0
        extra["register_frames"] = True
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
            "calibration": calibration,
            **extra,
            **(geometry or {}),
        }
    ]
    return raw


def lens_config(params: SceneParams) -> dict[str, Any]:
    """The scene's lens as ``calibration.lens`` of a camera config (cameras.Lens) takes it."""
    lens = params.lens
    assert lens is not None
    return {"focal_px": lens.focal_px, "center_px": [lens.cx, lens.cy], "k1": lens.k1, "k2": lens.k2}


def scene_record(params: SceneParams) -> dict[str, Any]:
    """The scene for the ground truth: every field, but the scene families' own ones only when not at their
    default (a default scene's ground truth stays byte for byte what it was before there were families)."""
    defaults = SceneParams()
    return {k: v for k, v in asdict(params).items() if k not in FAMILY_FIELDS or v != getattr(defaults, k)}


def scene_notes(params: SceneParams, sprites: Sequence[Sprite]) -> list[str]:
    """What the scene asks for but cannot get from these sprites."""
    notes = []
    if params.motorcycle_share > 0 and not has_motorcycles(sprites):
        notes.append(
            f"motorcycle_share {params.motorcycle_share:g} requested, but the sprite bank has no motorcycle crops "
            "(the sample clips show too few the detector finds confidently): no motorcycles drawn"
        )
    return notes


def _check_loads(config_path: Path, config: dict[str, Any]) -> None:
    """Load the written config as a deployment. While the config schema has no ``calibration.lens`` yet, a copy
    without it is checked instead (the rest must still load)."""
    from trafficstream.cameras import Calibration

    calibration = config["cameras"][0]["calibration"]
    if "lens" not in calibration or "lens" in Calibration.model_fields:
        load_settings(config_path, environ={})
        return
    log.warning("this config schema has no calibration.lens: %s checked without it", config_path.name)
    stripped = {**config, "cameras": [{**config["cameras"][0], "calibration": {**calibration}}]}
    del stripped["cameras"][0]["calibration"]["lens"]
    probe = config_path.with_name(f".{config_path.stem}.no-lens.yaml")
    try:
        probe.write_text(yaml.safe_dump(stripped, sort_keys=False))
        load_settings(probe, environ={})
    finally:
        probe.unlink(missing_ok=True)


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
    # (spawn(n) gives the same first streams as spawn(3): clips without events or sway are what they were.)
    plan_seq, road_seq, noise_seq, event_seq, sway_seq, click_seq = np.random.SeedSequence(seed).spawn(6)
    camera = PinholeCamera.looking_down_road(scene)
    optics = Optics.of(camera, scene)
    plans = plan_vehicles(
        scene, np.random.default_rng(plan_seq), sprites, camera, events_rng=np.random.default_rng(event_seq)
    )
    background = render_background(optics.canvas, scene, np.random.default_rng(road_seq))
    roi = region_of_interest(camera, scene, optics)
    sway = camera_sway(scene, np.random.default_rng(sway_seq))
    notes = scene_notes(scene, sprites)
    for note in notes:
        log.warning("synthetic scene: %s", note)

    video_path, gt_path, config_path = out / "clip.mp4", out / "ground_truth.json", out / "camera.yaml"
    frames: list[dict[str, Any]] = []
    writer = VideoWriter(video_path, scene.width, scene.height, scene.fps, scene.crf)
    try:
        rendered = render_frames(
            scene, camera, plans, sprites, background, roi, np.random.default_rng(noise_seq), optics=optics, sway=sway
        )
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
        "scene": scene_record(scene),
        "vehicles": [vehicle_summary(p, sprites[p.sprite], frames, scene.n_frames) for p in plans],
        "frames": frames,
    }
    # Only what a scene uses: the ground truth of a default scene stays what it always was.
    if scene.lens is not None:
        ground_truth["lens"] = lens_config(scene)
    if sway is not None:
        ground_truth["sway"] = [[round(float(c), 6) + 0.0 for c in (u, v, math.degrees(r))] for u, v, r in sway]
    if notes:
        ground_truth["scene_notes"] = notes
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
    config = deployment_config(
        video_path, camera, scene, roi, geometry=geo, calibration_rng=np.random.default_rng(click_seq)
    )
    header = (
        f"# Synthetic known-speed clip (bench.synthetic, seed {seed}); ground truth: {gt_path.name}\n"
        f"# python -m trafficstream.bench.synthetic --out {out} --seed {seed}\n"
    )
    config_path.write_text(header + yaml.safe_dump(config, sort_keys=False))
    _check_loads(config_path, config)  # the config must load as a deployment, or fail here
    log.info(
        "synthetic clip: %d frames, %d vehicles, seed %d in %.1f s -> %s",
        scene.n_frames,
        len(plans),
        seed,
        time.perf_counter() - started,
        out,
    )
    return SyntheticClip(video_path, gt_path, config_path)
