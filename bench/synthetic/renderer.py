"""Rendering: the empty road ray-cast once per clip, vehicle sprites pasted far to near with sub-pixel
placement, sensor noise, and each frame's ground truth (visible box, visibility, world position, true speed).

What a scene family varies happens here too, in the order light takes: the road follows its course (a bend),
the light sets the tone of the road and the vehicles (dusk, night; headlights at night), each vehicle is
smeared along its motion over the exposure (``motion_blur``), the lens distorts the ideal pinhole picture
(``lens_k1``, ``lens_k2``), the camera sways (``sway_px``) and the sensor adds its noise (more in low light).
The ground-truth boxes are where the sharp vehicles are in the final picture."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from trafficstream.bench.synthetic.camera import Optics, PinholeCamera
from trafficstream.bench.synthetic.road import RoadCourse
from trafficstream.bench.synthetic.scene import DASH_M, GAP_M, SHOULDER_LEFT_M, SHOULDER_RIGHT_M, SceneParams
from trafficstream.bench.synthetic.sprites import Sprite
from trafficstream.bench.synthetic.traffic import VehiclePlan, trajectory, vehicle_box

SHUTTER_S = 1 / 50  # exposure of a motion-blurred frame (a common traffic-camera shutter in daylight)


@dataclass(frozen=True)
class Light:
    """Per-channel (B, G, R) gain and offset of the scene and of the vehicles, the sensor-noise gain (low
    light means high amplification), and whether the vehicles' lamps are on."""

    scene: tuple[tuple[float, float, float], tuple[float, float, float]]
    vehicles: tuple[tuple[float, float, float], tuple[float, float, float]]
    noise_gain: float = 1.0
    lamps: bool = False


LIGHTS: dict[str, Light | None] = {
    "day": None,
    # Darker, flatter, bluish; vehicles as the scene.
    "dusk": Light(((0.52, 0.47, 0.44), (22.0, 17.0, 15.0)), ((0.52, 0.47, 0.44), (22.0, 17.0, 15.0)), 1.75),
    # A dark (dimly lit) road, the vehicles as dark but for their lamps, strong sensor noise.
    "night": Light(((0.3, 0.28, 0.26), (6.0, 5.0, 5.0)), ((0.3, 0.28, 0.26), (6.0, 5.0, 5.0)), 3.0, lamps=True),
}


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
    width, height, focal = camera.width, camera.height, float(camera.K[0, 0])
    dx, dy, dz = _rays(camera, width, height, supersample)
    ray_len = np.sqrt(dx * dx + dy * dy + dz * dz)
    # The camera's foot is at y = 0, but in the frame of a road with a grade (see camera.py).
    cx, cy0, cz = float(camera.center[0]), float(camera.center[1]), float(camera.center[2])
    course = RoadCourse.of(params)
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
    x, y = cx + t * dx[gi], cy0 + t * dy[gi]
    if course.curved:  # texture and markings in lane coordinates: they follow the bend
        x, y = course.to_lane(x, y)
    near = y < 5000
    gi, t, x, y = gi[near], t[near], x[near], y[near]
    # A pixel's footprint grows ~ distance^2 at grazing angles: fade the fine grain with it.
    g = _sample(grain, x, y, 0.02) / (1.0 + (y * y / (focal * cz * supersample)) / 0.04)
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

    # Vertical planes beside the road (curved along a bend), far to near: tree lines, then guard rails with
    # posts every 2 m.
    def plane_hits(x_plane: float, max_height: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            tw = (x_plane - cx) / dx
        if course.curved:
            tw = _wall_along_bend(tw, course, x_plane, (cx, cy0), dx, dy)
        idx = np.flatnonzero(np.isfinite(tw) & (tw > 0))
        tw = tw[idx]
        zw = cz + tw * dz[idx]
        ok = (zw >= 0) & (zw <= max_height) & (tw < depth[idx]) & (tw * dy[idx] > 0.5)
        idx, tw, zw = idx[ok], tw[ok], zw[ok]
        along = cy0 + tw * dy[idx]
        if course.curved:
            along = course.to_lane(cx + tw * dx[idx], along)[1]
        return idx, tw, along, zw

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
    img = np.clip(img, 0, 255).astype(np.uint8).reshape(height * supersample, width * supersample, 3)
    if supersample > 1:
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return img


def _wall_along_bend(
    tw: np.ndarray, course: RoadCourse, x_wall: float, foot: tuple[float, float], dx: np.ndarray, dy: np.ndarray
) -> np.ndarray:
    """Ray parameters of the first hit of a wall along lane coordinate ``x_wall`` on a bending road: its
    straight part (plane x = ``x_wall`` before the bend, ``tw``) or its arc (a vertical cylinder around the
    centre of curvature, on the road's side of it); inf where neither."""
    assert course.radius_m is not None
    R, s0 = course.radius_m, course.start_m
    cx, cy0 = foot
    ddx, ddy = dx.astype(np.float64), dy.astype(np.float64)
    best = np.where(np.isfinite(tw) & (tw > 0) & (cy0 + tw * ddy <= s0), tw, np.inf)
    ox, oy = cx - (course.x_ref + R), cy0 - s0
    rho = abs(R - (x_wall - course.x_ref))
    a = ddx * ddx + ddy * ddy
    b = 2 * (ox * ddx + oy * ddy)
    disc = b * b - 4 * a * (ox * ox + oy * oy - rho * rho)
    with np.errstate(divide="ignore", invalid="ignore"):
        root = np.sqrt(np.where(disc >= 0, disc, np.nan))
        for t in ((-b - root) / (2 * a), (-b + root) / (2 * a)):
            hx, hy = cx + t * ddx, cy0 + t * ddy
            ok = np.isfinite(t) & (t > 0) & (hy > s0) & (np.sign(R) * (hx - (course.x_ref + R)) < 0)
            best = np.where(ok & (t < best), t, best)
    return best.astype(np.float32)


def tone_lut(gain_offset: tuple[tuple[float, float, float], tuple[float, float, float]]) -> np.ndarray:
    """A (256, 1, 3) ``cv2.LUT`` table: out = gain * in + offset per channel (B, G, R)."""
    gain, offset = np.asarray(gain_offset[0]), np.asarray(gain_offset[1])
    levels = np.arange(256, dtype=np.float64)[:, None] * gain + offset
    return np.clip(np.round(levels), 0, 255).astype(np.uint8).reshape(256, 1, 3)


def camera_sway(params: SceneParams, rng: np.random.Generator) -> np.ndarray | None:
    """Per frame (dx px, dy px, rotation rad) of a swaying camera, None for a still one: smooth (two sines per
    axis, one slow, one faster, random frequencies and signs, both zero at t = 0), translation up to
    ``sway_px``, rotation moving the picture's corners up to a third of that. Frame 0 is exactly unswayed."""
    if params.sway_px <= 0:
        return None
    t = np.arange(params.n_frames) / params.fps
    half_diagonal = math.hypot(params.width, params.height) / 2

    def wave(amplitude: float) -> np.ndarray:
        slow, fast = rng.uniform(0.12, 0.35), rng.uniform(0.5, 1.0)  # Hz: a mast or a gantry in the wind
        share = rng.uniform(0.6, 0.8)
        signs = rng.choice([-1.0, 1.0], size=2)
        return amplitude * (
            signs[0] * share * np.sin(2 * np.pi * slow * t) + signs[1] * (1 - share) * np.sin(2 * np.pi * fast * t)
        )

    return np.column_stack([wave(params.sway_px), wave(params.sway_px), wave(params.sway_px / 3 / half_diagonal)])


def sway_matrix(sway: np.ndarray, width: int, height: int) -> np.ndarray:
    """2 x 3 affine (pixel coordinates, pixel i spanning [i, i + 1]) of one frame's sway: a rotation about the
    picture's centre, then the translation."""
    dx, dy, angle = (float(v) for v in sway)
    c, s = math.cos(angle), math.sin(angle)
    cu, cv = width / 2, height / 2
    return np.array([[c, -s, cu - c * cu + s * cv + dx], [s, c, cv - s * cu - c * cv + dy]])


def _apply_affine(A: np.ndarray, points: np.ndarray) -> np.ndarray:
    return points @ A[:, :2].T + A[:, 2]


def picture_box(
    box: np.ndarray, to_picture: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, tuple[float, float]]:
    """A vehicle's box in the final (distorted, swayed) picture from its ideal pinhole box: the bounding box of
    the mapped outline (each edge sampled), moved sideways and its bottom set so that its bottom-centre is
    exactly the mapped contact point (the ideal box's bottom-centre). The shift is sub-pixel: a lens bows the
    box's edges, and a vehicle's contact point stays the bottom-centre of its box, as the pipeline reads it."""
    x1, y1, x2, y2 = (float(c) for c in box)
    k = np.linspace(0.0, 1.0, 5)
    us, vs = x1 + (x2 - x1) * k, y1 + (y2 - y1) * k
    outline = np.concatenate(
        [
            np.column_stack([us, np.full(5, y1)]),
            np.column_stack([us, np.full(5, y2)]),
            np.column_stack([np.full(5, x1), vs]),
            np.column_stack([np.full(5, x2), vs]),
            [[(x1 + x2) / 2, y2]],
        ]
    )
    mapped = to_picture(outline)
    cu, cv = mapped[-1]
    half = (mapped[:, 0].max() - mapped[:, 0].min()) / 2
    return np.array([cu - half, mapped[:, 1].min(), cu + half, cv]), (float(cu), float(cv))


def _line_kernel(vx: float, vy: float) -> np.ndarray:
    """A normalised blur kernel along the segment from -v/2 to +v/2 (pixels), centred, anti-aliased."""
    r = math.ceil(max(abs(vx), abs(vy)) / 2) + 1
    kernel = np.zeros((2 * r + 1, 2 * r + 1), np.float32)
    n = max(2, math.ceil(2 * math.hypot(vx, vy)))
    for k in np.linspace(-0.5, 0.5, n):
        px, py = r + k * vx, r + k * vy
        ix, iy = math.floor(px), math.floor(py)
        fx, fy = px - ix, py - iy
        kernel[iy, ix] += (1 - fx) * (1 - fy)
        kernel[iy, ix + 1] += fx * (1 - fy)
        kernel[iy + 1, ix] += (1 - fx) * fy
        kernel[iy + 1, ix + 1] += fx * fy
    return kernel / kernel.sum()


def add_lamps(canvas: np.ndarray, box: np.ndarray, towards: bool, motorcycle: bool = False) -> None:
    """Switched-on lamps low on a vehicle's visible end: two white headlights near the front bumper of one
    coming towards the camera (one for a motorcycle), red tail lights on one driving away. Each a saturated
    elliptic core with a soft glow."""
    x1, y1, x2, y2 = (float(c) for c in box)
    w, h = x2 - x1, y2 - y1
    if w < 4 or h < 4:
        return
    color = np.array([235.0, 245.0, 255.0] if towards else [40.0, 40.0, 235.0])
    level = y2 - (0.28 if towards else 0.35) * h
    spots = [0.5] if motorcycle else [0.2, 0.8]
    sx, sy = max(0.7, (0.08 if towards else 0.06) * w), max(0.5, 0.045 * h)
    gain = 2.2 if towards else 1.2
    fh, fw = canvas.shape[:2]
    for share in spots:
        u = x1 + share * w
        ix1, ix2 = max(0, math.floor(u - 4 * sx)), min(fw, math.ceil(u + 4 * sx) + 1)
        iy1, iy2 = max(0, math.floor(level - 4 * sy)), min(fh, math.ceil(level + 4 * sy) + 1)
        if ix1 >= ix2 or iy1 >= iy2:
            continue
        gu = (np.arange(ix1, ix2) + 0.5 - u) / sx
        gv = (np.arange(iy1, iy2) + 0.5 - level) / sy
        glow = gain * np.exp(-0.5 * (gv[:, None] ** 2 + gu[None, :] ** 2))
        region = canvas[iy1:iy2, ix1:ix2].astype(np.float32)
        lit = region * (1 - np.minimum(glow, 1))[..., None] + color * np.minimum(glow, 1)[..., None]
        canvas[iy1:iy2, ix1:ix2] = np.clip(lit + 0.5, 0, 255).astype(np.uint8)


def paste_sprite(
    frame: np.ndarray,
    labels: np.ndarray,
    sprite: np.ndarray,
    box: np.ndarray,
    label: int,
    blur: tuple[float, float] | None = None,
) -> None:
    """Draw ``sprite`` opaquely into ``frame`` so that it covers the float ``box`` exactly (sub-pixel
    placement, anti-aliased edges) and mark the pixels it covers >= 50 % with ``label``. ``blur``: the image
    motion (px) over the exposure, to smear the sprite along (its coverage too: the edges turn translucent;
    the half-covered edge, hence the labelled area, stays where the sharp one is)."""
    if blur is not None and math.hypot(*blur) >= 0.5:
        _paste_blurred(frame, labels, sprite, box, label, blur)
        return
    x1, y1, x2, y2 = box
    fh, fw = frame.shape[:2]
    cx1, cy1, cx2, cy2 = max(math.floor(x1), 0), max(math.floor(y1), 0), min(math.ceil(x2), fw), min(math.ceil(y2), fh)
    if cx1 >= cx2 or cy1 >= cy2:
        return
    color, cover = _sprite_in_window(sprite, box, (cx1, cy1, cx2, cy2))
    region = frame[cy1:cy2, cx1:cx2]
    alpha = cover[..., None]
    region[:] = (region * (1 - alpha) + color * alpha + 0.5).astype(np.uint8)
    labels[cy1:cy2, cx1:cx2][cover >= 0.5] = label


def _sprite_in_window(
    sprite: np.ndarray, box: np.ndarray, window: tuple[int, int, int, int]
) -> tuple[np.ndarray, np.ndarray]:
    """The sprite scaled into sub-pixel ``box`` and cut to the frame ``window`` (x1, y1, x2, y2): its colour and
    its coverage (0..1) there."""
    x1, y1, x2, y2 = box
    cx1, cy1, cx2, cy2 = window
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
    return color, cover


def _paste_blurred(
    frame: np.ndarray, labels: np.ndarray, sprite: np.ndarray, box: np.ndarray, label: int, blur: tuple[float, float]
) -> None:
    x1, y1, x2, y2 = box
    kernel = _line_kernel(*blur)
    r = kernel.shape[0] // 2
    fh, fw = frame.shape[:2]
    cx1, cy1 = max(math.floor(x1) - r, 0), max(math.floor(y1) - r, 0)
    cx2, cy2 = min(math.ceil(x2) + r, fw), min(math.ceil(y2) + r, fh)
    if cx1 >= cx2 or cy1 >= cy2:
        return
    color, cover = _sprite_in_window(sprite, box, (cx1, cy1, cx2, cy2))
    # Premultiplied: the smeared colour is the average over the exposure of what covered each pixel.
    smeared = cv2.filter2D(color.astype(np.float32) * cover[..., None], -1, kernel, borderType=cv2.BORDER_CONSTANT)
    alpha = cv2.filter2D(cover, -1, kernel, borderType=cv2.BORDER_CONSTANT)
    region = frame[cy1:cy2, cx1:cx2]
    region[:] = np.clip(region * (1 - alpha[..., None]) + smeared + 0.5, 0, 255).astype(np.uint8)
    labels[cy1:cy2, cx1:cx2][alpha >= 0.5] = label


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
    *,
    optics: Optics | None = None,
    sway: np.ndarray | None = None,
) -> Iterator[RenderedFrame]:
    """Composite every frame: background, vehicles far to near, sensor noise; with its ground truth.

    ``background`` is the ideal pinhole picture of ``optics.canvas`` (``optics``: default, no lens); ``sway``:
    per frame (dx, dy, rotation) of :func:`camera_sway`, or None. ``roi`` is in the final picture."""
    optics = optics or Optics(camera, camera)
    t = np.arange(params.n_frames) / params.fps
    tracks = [trajectory(p, t, params) for p in plans]
    course = RoadCourse.of(params)
    smear = (
        [(trajectory(p, t - SHUTTER_S / 2, params), trajectory(p, t + SHUTTER_S / 2, params)) for p in plans]
        if params.motion_blur
        else None
    )
    light = LIGHTS[params.light]
    images = [s.image for s in sprites]
    toned: dict[int, np.ndarray] = {}  # with a light: each sprite toned when first drawn
    if light is not None:
        background = cv2.LUT(background, tone_lut(light.scene))
        vehicle_lut = tone_lut(light.vehicles)
    shape = (params.height, params.width, 3)
    sigma = params.noise_sigma * (light.noise_gain if light is not None else 1.0)
    # A few noise fields reused in random order: fresh Gaussian noise per 1280x720 frame costs ~30 ms.
    noise_bank = (
        [np.round(noise_rng.standard_normal(shape) * sigma).astype(np.int16) for _ in range(6)] if sigma > 0 else []
    )
    ch, cw = background.shape[:2]
    left, top = optics.pad[:2]

    def plane(state: dict[str, float]) -> tuple[float, float, tuple[float, float] | None]:
        """Road-plane contact point and body direction (None: straight ahead, +y)."""
        if not course.curved:
            return state["x"], state["y"], None
        px, py = course.to_plane(state["x"], state["y"])
        tx, ty = course.tangent(state["x"], state["y"])
        return float(px), float(py), (float(tx), float(ty))

    for f in range(params.n_frames):
        canvas = background.copy()
        labels = np.zeros(background.shape[:2], dtype=np.int32)
        drawn: list[tuple[VehiclePlan, dict[str, float], np.ndarray, tuple[float, float]]] = []
        present = [
            (i, p, {k: float(v[f]) for k, v in tr.items() if k != "present"})
            for i, (p, tr) in enumerate(zip(plans, tracks, strict=True))
            if tr["present"][f]
        ]
        for i, plan, state in sorted(present, key=lambda ps: -ps[2]["y"]):  # far to near: near ones occlude
            wx, wy, tangent = plane(state)
            box = vehicle_box(camera, wx, wy, plan.body, sprites[plan.sprite].aspect, tangent)
            if box is None:
                continue
            at = box if optics.lens is None else box + np.array([left, top, left, top])  # on the canvas
            if at[2] <= 0 or at[0] >= cw or at[3] <= 0 or at[1] >= ch:
                continue
            image = images[plan.sprite]
            if light is not None:
                image = toned.setdefault(plan.sprite, cv2.LUT(image, vehicle_lut))
            blur = None
            if smear is not None:
                before, after = ({k: float(v[f]) for k, v in tr.items()} for tr in smear[i])
                a, b = (camera.ground_to_image(np.array(plane(st)[:2]))[0] for st in (before, after))
                blur = (float(b[0] - a[0]), float(b[1] - a[1]))
            paste_sprite(canvas, labels, image, at, plan.vehicle_id, blur)
            if light is not None and light.lamps:
                add_lamps(canvas, at, plan.direction < 0, plan.class_name == "motorcycle")
            drawn.append((plan, state, box, (wx, wy)))
        if optics.maps is not None:
            canvas = cv2.remap(canvas, *optics.maps, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            labels = cv2.remap(labels.astype(np.float32), *optics.maps, cv2.INTER_NEAREST).astype(np.int32)
        A = None
        if sway is not None and np.any(sway[f] != 0):
            A = sway_matrix(sway[f], params.width, params.height)
            # warpAffine works on pixel indices (centres at i + 0.5): shift the affine by half a pixel.
            Ai = A.copy()
            Ai[:, 2] += A[:, :2] @ [0.5, 0.5] - 0.5
            size = (params.width, params.height)
            canvas = cv2.warpAffine(canvas, Ai, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
            labels = cv2.warpAffine(labels.astype(np.float32), Ai, size, flags=cv2.INTER_NEAREST).astype(np.int32)
        if noise_bank:
            noisy = canvas.astype(np.int16) + noise_bank[int(noise_rng.integers(len(noise_bank)))]
            canvas = np.clip(noisy, 0, 255).astype(np.uint8)

        def to_picture(px: np.ndarray, affine: np.ndarray | None = A) -> np.ndarray:
            out = optics.distort(px)
            return out if affine is None else _apply_affine(affine, out)

        gt = []
        for plan, state, box, (wx, wy) in drawn:
            contact = ((box[0] + box[2]) / 2, box[3])
            if optics.lens is not None or A is not None:
                box, contact = picture_box(box, to_picture)
                if box[2] <= 0 or box[0] >= params.width or box[3] <= 0 or box[1] >= params.height:
                    continue
            seen, visibility = visible_part(labels, plan.vehicle_id, box)
            gt.append(
                {
                    "vehicle_id": plan.vehicle_id,
                    "class_name": plan.class_name,
                    "class_id": plan.class_id,
                    "box": None if seen is None else [round(float(c), 3) for c in seen],
                    "full_box": [round(float(c), 3) for c in box],
                    "visibility": round(visibility, 4),
                    "in_roi": bool(cv2.pointPolygonTest(roi.astype(np.float32), contact, False) >= 0),
                    "world_x": round(wx, 4),
                    "world_y": round(wy, 4),
                    "speed_kmh": round(state["speed_mps"] * 3.6, 4),
                }
            )
        yield RenderedFrame(canvas, gt)
