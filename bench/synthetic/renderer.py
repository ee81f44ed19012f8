"""Rendering: the empty road ray-cast once per clip, vehicle sprites pasted far to near with sub-pixel
placement, sensor noise, and each frame's ground truth (visible box, visibility, world position, true speed)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from trafficstream.bench.synthetic.camera import PinholeCamera
from trafficstream.bench.synthetic.scene import DASH_M, GAP_M, SHOULDER_LEFT_M, SHOULDER_RIGHT_M, SceneParams
from trafficstream.bench.synthetic.sprites import Sprite
from trafficstream.bench.synthetic.traffic import VehiclePlan, trajectory, vehicle_box


def _value_noise(rng: np.random.Generator, size: int, blur: float) -> np.ndarray:
    """Tileable smooth noise in [-1, 1] (float32, size x size)."""
    noise: np.ndarray = rng.standard_normal((size, size)).astype(np.float32)
    if blur > 0:  # blur a wrapped copy so the texture tiles without seams (GaussianBlur has no BORDER_WRAP)
        pad = min(size, math.ceil(blur * 4))
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


def render_background(
    camera: PinholeCamera, params: SceneParams, rng: np.random.Generator, supersample: int = 2
) -> np.ndarray:
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


def paste_sprite(frame: np.ndarray, labels: np.ndarray, sprite: np.ndarray, box: np.ndarray, label: int) -> None:
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
    cover = cv2.warpAffine(
        np.ones((th, tw), np.float32), M, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0
    )
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


def render_frames(
    params: SceneParams,
    camera: PinholeCamera,
    plans: Sequence[VehiclePlan],
    sprites: Sequence[Sprite],
    background: np.ndarray,
    roi: np.ndarray,
    noise_rng: np.random.Generator,
) -> Iterator[RenderedFrame]:
    """Composite every frame: background, vehicles far to near, sensor noise; with its ground truth."""
    t = np.arange(params.n_frames) / params.fps
    tracks = [trajectory(p, t, params) for p in plans]
    # A few noise fields reused in random order: fresh Gaussian noise per 1280x720 frame costs ~30 ms.
    noise_bank = (
        [np.round(noise_rng.standard_normal(background.shape) * params.noise_sigma).astype(np.int16) for _ in range(6)]
        if params.noise_sigma > 0
        else []
    )
    for f in range(params.n_frames):
        canvas = background.copy()
        labels = np.zeros(background.shape[:2], dtype=np.int32)
        drawn: list[tuple[VehiclePlan, dict[str, float], np.ndarray]] = []
        present = [
            (p, {k: float(v[f]) for k, v in tr.items() if k != "present"})
            for p, tr in zip(plans, tracks, strict=True)
            if tr["present"][f]
        ]
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
            gt.append(
                {
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
                }
            )
        yield RenderedFrame(canvas, gt)
