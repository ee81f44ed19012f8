"""Check a camera's road-plane calibration: reprojection error, scale, and a picture of the fitted road grid.

    python -m trafficstream.models.calibrate --config infra/config/demo.yaml --camera motorway-overpass \
        --png var/calibration/m.png
    python -m trafficstream.models.calibrate --points "851.8,403.8:10.5,0;832.3,350.1:10.5,3;..." \
        [--video clip.mp4 --png out.png] [--lens 704,640,360,-0.12,0.02]
    python -m trafficstream.models.calibrate --config ... --camera ID --fit-k1 --focal-px 700
    python -m trafficstream.models.calibrate --markings "x=3.5:...;x=10.5:...;y=0:...;y=12:..." --vanishing \
        --video clip.mp4 [--focal-px 1100]

Prints the reprojection error (metres on the road and pixels in the image) and each pair's residual, the
metres-per-pixel at a few image points, the expected speed uncertainty by distance along the road (what a
passage speed over ``--section-m`` metres starting there would carry, at ``--kmh``; ``models/passage.py``)
with a warning where it exceeds ``--max-uncertainty-kmh`` (the calibration cannot support enforcement there),
the same for each of the camera's configured sections, and with ``--png`` draws on the chosen frame the point
pairs (red: the image point, green: its world point projected back), the ROI polygon (yellow) and the fitted
road grid (cyan: lines every ``--grid-across`` m across, every ``--grid-along`` m along the road) so a person
can see whether it lies on the road. For a drifting camera (``register_frames``) a frame other than the
reference is first registered onto the reference frame, and the grid follows the drift.

Lens distortion (the camera's ``calibration.lens``, or ``--lens`` for ad-hoc points): the image points are
undistorted before the fit, the reprojection errors are those of the undistorted points, and every pixel
figure (metres per pixel, the uncertainty table, the drawn grid, which bends with the lens) is in the video's
own pixels. ``--fit-k1`` estimates the main radial coefficient from >= 5 pairs (principal point at the frame's
centre or ``--center-px``, focal length ``--focal-px``) and prints the ``lens:`` block to paste.

Fewer clicks: road markings of known position (the camera's ``calibration.markings``, or ``--markings
"x=3.5:x1,y1,x2,y2,...;y=12:..."`` for a lane line at x = 3.5 m and a transverse line at y = 12 m, traced by >= 2
pixels each) join the pairs, each worth two of the eight constraints: three lane lines of a known lane width,
a stop line or a dash end and two pairs calibrate a camera, and markings traced over their whole length refine
a calibration with more pairs. Each marking's residual (pixels off the fitted line) is printed, and its two
visible ends join the pair table as anchors.

No clicks at all: ``--vanishing`` fits a camera model to the markings (``models/vanishing.py``): >= 2 lane lines give
the road's vanishing point, >= 2 lines across it the second one and the focal length (or it is fitted to their known
spacing, or given with ``--focal-px`` / the lens block); the markings' known positions give height and origin. It
prints the camera and a ``calibration:`` block of point pairs to paste, then the usual report on those pairs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from trafficstream.errors import ConfigError
from trafficstream.models.homography import (
    MarkingLine,
    RoadPlane,
    fit_homography,
    marking_residuals_px,
    project,
)
from trafficstream.models.lens import LensModel, distort_pixels, undistort_pixels
from trafficstream.models.vanishing import VanishingCalibration, pairs_from_markings

if TYPE_CHECKING:
    from trafficstream.config import TrackerSettings

log = logging.getLogger(__name__)

MAX_GRID_EXTENT_M = 300.0  # the grid near the horizon is a smear of lines, and far lines mean nothing anyway
K1_BOUND = 1.0  # |k1| searched by --fit-k1; a traffic camera's barrel is ~-0.05 .. -0.4


class CalibrationError(ValueError):
    """User-facing calibration problem; the message names the offending field or option."""


def parse_points(text: str, min_pairs: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Parse ``"x,y:X,Y;x,y:X,Y;..."`` into image (N, 2) and world (N, 2) arrays (fewer than 4 pairs only
    next to markings: ``min_pairs``)."""
    image, world = [], []
    chunks = [c.strip() for c in text.split(";") if c.strip()]
    for i, chunk in enumerate(chunks, start=1):
        try:
            left, right = chunk.split(":")
            x, y = (float(v) for v in left.split(","))
            X, Y = (float(v) for v in right.split(","))
        except ValueError:
            raise CalibrationError(f"--points: pair {i} ({chunk!r}) is not x,y:X,Y (pixels:metres)") from None
        if not all(np.isfinite([x, y, X, Y])):
            raise CalibrationError(f"--points: pair {i} ({chunk!r}) has a non-finite number")
        image.append((x, y))
        world.append((X, Y))
    if len(image) < min_pairs:
        raise CalibrationError(f"--points: need at least 4 pairs x,y:X,Y separated by ';', got {len(image)}")
    return np.asarray(image, dtype=np.float64).reshape(-1, 2), np.asarray(world, dtype=np.float64).reshape(-1, 2)


def parse_markings(text: str) -> list[MarkingLine]:
    """Parse ``"x=3.5:x1,y1,x2,y2[,...];y=12:..."``: world line, then >= 2 pixels along the marking."""
    out = []
    chunks = [c.strip() for c in text.split(";") if c.strip()]
    for i, chunk in enumerate(chunks, start=1):
        left, _, right = chunk.partition(":")
        axis, _, value = left.strip().partition("=")
        values = _floats(right, f"--markings: marking {i}", range(4, 10_000, 2)) if right else []
        try:
            out.append(MarkingLine(np.asarray(values).reshape(-1, 2), axis.strip(), float(value)))
        except ValueError as exc:
            raise CalibrationError(
                f"--markings: marking {i} ({chunk!r}) is not x=X:x1,y1,x2,y2,... or y=Y:... ({exc})"
            ) from None
    if not out:
        raise CalibrationError("--markings: no marking given; expected x=X:x1,y1,x2,y2;...")
    return out


def _floats(text: str, option: str, counts: Sequence[int]) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise CalibrationError(f"{option}: {text!r} is not comma-separated numbers") from None
    if len(values) not in counts or not all(np.isfinite(values)):
        raise CalibrationError(f"{option}: {text!r}: expected {' or '.join(map(str, counts))} finite numbers")
    return values


def parse_lens(text: str) -> LensModel:
    """Parse ``--lens "focal,cx,cy[,k1[,k2[,p1[,p2[,k3]]]]]"`` (pixels of the video; OpenCV's coefficients)."""
    values = _floats(text, "--lens", range(3, 9))
    if values[0] <= 0:
        raise CalibrationError(f"--lens: focal length {values[0]:g} px must be > 0")
    return LensModel(*values)


def read_frame(path: Path, index: int) -> np.ndarray:
    """Decode frame ``index`` (0-based, decode order) of a video as BGR."""
    import av

    if not path.is_file():
        raise CalibrationError(f"video not found: {path}")
    count = 0
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                if count == index:
                    return frame.to_ndarray(format="bgr24")
                count += 1
    except av.error.FFmpegError as exc:
        raise CalibrationError(f"cannot decode {path}: {exc}") from None
    raise CalibrationError(f"--frame {index}: {path} has only {count} frames")


def grid_extent(plane: RoadPlane, roi: np.ndarray | None) -> tuple[float, float, float, float]:
    """World bounding box (xmin, xmax, ymin, ymax) to draw the grid over: the ROI on the road, else the
    calibration points with a margin; capped at MAX_GRID_EXTENT_M per side."""
    pts = plane.world_points
    if roi is not None:
        w = plane.to_world(roi)
        w = w[np.isfinite(w).all(axis=1)]
        if len(w) >= 3:
            pts = np.vstack([pts, w])
    lo, hi = pts.min(axis=0) - 1.0, pts.max(axis=0) + 1.0
    centre = plane.world_points.mean(axis=0)
    lo = np.maximum(lo, centre - MAX_GRID_EXTENT_M)
    hi = np.minimum(hi, centre + MAX_GRID_EXTENT_M)
    return float(lo[0]), float(hi[0]), float(lo[1]), float(hi[1])


def _polyline(image: np.ndarray, pts: np.ndarray, colour: tuple[int, int, int], thickness: int = 1) -> None:
    """Draw a projected world line; NaN points (behind the camera / beyond the horizon) split it."""
    ok = np.isfinite(pts).all(axis=1) & (np.abs(np.nan_to_num(pts)) < 1e5).all(axis=1)
    breaks = np.flatnonzero(np.diff(ok.astype(np.int8))) + 1
    for run, good in zip(np.split(pts, breaks), np.split(ok, breaks), strict=True):
        if good[0] and len(run) > 1:
            cv2.polylines(image, [np.round(run * 16).astype(np.int32)], False, colour, thickness, cv2.LINE_AA, shift=4)


def draw_calibration(
    image: np.ndarray,
    plane: RoadPlane,
    roi: np.ndarray | None = None,
    *,
    across_m: float = 1.0,
    along_m: float = 5.0,
    title: str = "",
) -> np.ndarray:
    """A copy of ``image`` with the road grid, the ROI and the point pairs drawn on it."""
    out = image.copy()
    xmin, xmax, ymin, ymax = grid_extent(plane, roi)
    overlay = out.copy()
    ys = np.linspace(ymin, ymax, 400)
    for X in np.arange(np.ceil(xmin / across_m) * across_m, xmax + 1e-9, across_m):
        _polyline(overlay, plane.to_image(np.stack([np.full_like(ys, X), ys], axis=1)), (255, 255, 0))
    xs = np.linspace(xmin, xmax, 200)
    for Y in np.arange(np.ceil(ymin / along_m) * along_m, ymax + 1e-9, along_m):
        line = plane.to_image(np.stack([xs, np.full_like(xs, Y)], axis=1))
        _polyline(overlay, line, (255, 200, 0), 2 if abs(Y % (2 * along_m)) < 1e-9 else 1)
        finite = line[np.isfinite(line).all(axis=1)]
        inside = finite[
            (finite[:, 0] >= 0) & (finite[:, 0] < out.shape[1]) & (finite[:, 1] >= 0) & (finite[:, 1] < out.shape[0])
        ]
        if len(inside) and abs(Y % (2 * along_m)) < 1e-9:
            x, y = inside[0]
            cv2.putText(
                overlay,
                f"{Y:g} m",
                (int(x) + 3, int(y) - 3),
                cv2.FONT_HERSHEY_SIMPLEX,
                0.4,
                (255, 255, 0),
                1,
                cv2.LINE_AA,
            )
    cv2.addWeighted(overlay, 0.7, out, 0.3, 0, dst=out)
    if roi is not None:
        cv2.polylines(out, [np.round(roi).astype(np.int32)], True, (0, 255, 255), 2, cv2.LINE_AA)
    back = plane.to_image(plane.world_points)
    for i, (p, q) in enumerate(zip(plane.image_points, back, strict=True), start=1):
        cv2.circle(out, (int(round(p[0])), int(round(p[1]))), 4, (0, 0, 255), 1, cv2.LINE_AA)
        if np.isfinite(q).all():
            cv2.drawMarker(out, (int(round(q[0])), int(round(q[1]))), (0, 255, 0), cv2.MARKER_CROSS, 7, 1)
        cv2.putText(
            out, str(i), (int(p[0]) + 5, int(p[1]) + 4), cv2.FONT_HERSHEY_SIMPLEX, 0.35, (0, 0, 255), 1, cv2.LINE_AA
        )
    e = plane.error
    text = f"{title}  rms {e.rms_m:.2f} m / {e.rms_px:.2f} px  max {e.max_m:.2f} m / {e.max_px:.2f} px"
    (w, h), base = cv2.getTextSize(text.strip(), cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
    cv2.rectangle(out, (4, 4), (12 + w, 10 + h + base), (0, 0, 0), cv2.FILLED)
    cv2.putText(out, text.strip(), (8, 8 + h), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    return out


def _row_span(polygon: np.ndarray, y: float) -> tuple[float, float] | None:
    """Leftmost and rightmost x where image row ``y`` crosses the polygon's edges."""
    a, b = polygon, np.roll(polygon, -1, axis=0)
    xs = [
        p[0] + (y - p[1]) * (q[0] - p[0]) / (q[1] - p[1])
        for p, q in zip(a, b, strict=True)
        if p[1] != q[1] and min(p[1], q[1]) <= y <= max(p[1], q[1])
    ]
    return (min(xs), max(xs)) if xs else None


def scale_probe_points(plane: RoadPlane, roi: np.ndarray | None, n: int = 5) -> np.ndarray:
    """A few image points down the middle of the ROI (or of the calibration points), top to bottom."""
    src = roi if roi is not None else plane.image_points
    ys = np.linspace(src[:, 1].min(), src[:, 1].max(), n)
    pts = []
    for y in ys:
        span = _row_span(roi, y) if roi is not None else None
        pts.append(((span[0] + span[1]) / 2 if span else float(plane.image_points[:, 0].mean()), float(y)))
    return np.asarray(pts)


def lens_lines(lens: LensModel | None, image_points: np.ndarray) -> list[str]:
    """What the lens does to the calibration points (nothing to say without one)."""
    if lens is None or lens.is_identity:
        return []
    shift = np.linalg.norm(undistort_pixels(image_points, lens) - image_points, axis=1)
    return [
        f"lens: focal {lens.focal_px:g} px, center [{lens.cx:g}, {lens.cy:g}], k1 {lens.k1:g} k2 {lens.k2:g} "
        f"p1 {lens.p1:g} p2 {lens.p2:g} k3 {lens.k3:g}; undistorting moves the calibration points by up to "
        f"{shift.max():.1f} px (errors below: on the undistorted points)"
    ]


def report_lines(plane: RoadPlane, roi: np.ndarray | None) -> list[str]:
    e = plane.error
    lines = [
        *lens_lines(plane.lens, plane.image_points),
        f"reprojection error: rms {e.rms_m:.3f} m (max {e.max_m:.3f} m), rms {e.rms_px:.2f} px (max {e.max_px:.2f} px)",
        "  #   image x,y (px)      world X,Y (m)     err m   err px",
    ]
    err_m = np.linalg.norm(plane.to_world(plane.image_points) - plane.world_points, axis=1)
    # pixel residuals where the homography is fitted: on the undistorted points when there is a lens
    err_px = np.linalg.norm(project(plane.H_inv, plane.world_points) - plane.ideal_points, axis=1)
    for i, (p, w, em, ep) in enumerate(
        zip(plane.image_points, plane.world_points, err_m, err_px, strict=True), start=1
    ):
        lines.append(f"  {i:<3d} {p[0]:8.1f},{p[1]:<8.1f}  {w[0]:8.2f},{w[1]:<8.2f}  {em:6.3f}  {ep:6.2f}")
    lines.append("metres per pixel (moving 1 px along image x / image y):")
    probes = scale_probe_points(plane, roi)
    for p, (mx, my) in zip(probes, plane.metres_per_pixel(probes), strict=True):
        lines.append(
            f"  at ({p[0]:6.1f}, {p[1]:6.1f}): {mx:.4f} m/px x, {my:.4f} m/px y"
            f"  ({1 / mx if mx > 0 else float('inf'):.1f} / {1 / my if my > 0 else float('inf'):.1f} px/m)"
        )
    return lines


def marking_lines(plane: RoadPlane, markings: Sequence[MarkingLine]) -> list[str]:
    """Each marking's fit: how far its pixels lie from where the plane puts its world line."""
    if not markings:
        return []
    lines = ["markings (pixels off the fitted line; their ends are the last rows of the table above):"]
    for i, m in enumerate(markings, start=1):
        ideal = m if plane.lens is None else m.with_points(undistort_pixels(m.image_points, plane.lens))
        r = np.abs(marking_residuals_px(plane.H, ideal))
        lines.append(
            f"  {i:<3d} {m.axis} = {m.value:<8.2f} {len(r)} px traced, rms {np.sqrt(np.mean(r**2)):.2f} px, "
            f"max {r.max():.2f} px"
        )
    return lines


@dataclass(frozen=True)
class UncertaintyRow:
    """Expected passage-speed uncertainty for a section of ``section_m`` starting ``y_m`` along the road."""

    y_m: float
    metres_per_px: float
    position_sigma_m: float
    uncertainty_kmh: float  # 95 %, at the reference speed
    windowed_noise_kmh: float  # 95 %, what box-edge jitter puts on a windowed speed there (any speed)


def uncertainty_by_distance(
    plane: RoadPlane,
    section_m: float = 20.0,
    kmh: float = 100.0,
    step_m: float = 5.0,
    margin_m: float = 10.0,
    *,
    fps: float = 30.0,
    window_s: float = 0.8,
) -> list[UncertaintyRow]:
    """Along the calibrated road (world Y from the nearest calibration point to the farthest + ``margin_m``,
    at the points' mean X), the 95 % uncertainty of a passage speed over ``[y, y + section_m]`` at ``kmh``, and
    of a windowed speed at ``y`` from box-edge jitter (a ``window_s`` window of frames at ``fps``, motion along
    the road; ``models.speed.speed_noise_kmh``)."""
    from trafficstream.models.homography import BOX_EDGE_SIGMA_PX, along_metres_per_pixel
    from trafficstream.models.passage import Z, position_sigma_m
    from trafficstream.models.speed import speed_noise_kmh

    x = float(plane.world_points[:, 0].mean())
    y_lo, y_hi = float(plane.world_points[:, 1].min()), float(plane.world_points[:, 1].max()) + margin_m
    window = np.arange(0.0, window_s + 1e-9, 1.0 / fps)
    rows = []
    for y in np.arange(y_lo, max(y_lo, y_hi - section_m) + 1e-9, step_m):
        a, b = position_sigma_m(plane, (x, y)), position_sigma_m(plane, (x, y + section_m))
        px = plane.to_image(np.asarray([[x, y]]))
        seen = bool(np.isfinite(px).all())
        mpp = float(plane.metres_per_pixel(px)[0].max()) if seen else float("inf")
        along = float(along_metres_per_pixel(plane, px)[0]) if seen else float("inf")
        noise = speed_noise_kmh(window, along * BOX_EDGE_SIGMA_PX)
        rows.append(UncertaintyRow(float(y), mpp, a, Z * kmh * float(np.hypot(a, b)) / section_m, noise))
    return rows


def uncertainty_lines(
    plane: RoadPlane,
    sections: Sequence[tuple[str, tuple[float, float], tuple[float, float]]] = (),
    section_m: float = 20.0,
    kmh: float = 100.0,
    max_uncertainty_kmh: float = 3.0,
    *,
    fps: float = 30.0,
    window_s: float = 0.8,
    max_noise_kmh: float | None = 3.0,
) -> list[str]:
    """The uncertainty table, each configured section's expected uncertainty (``sections``: id and the two
    lines' midpoints, metres), and warnings where enforcement would not hold. The last column is what box-edge
    jitter puts on a windowed speed at Y (``window_s`` at ``fps``): beyond ``max_noise_kmh``
    (``tracker.max_speed_noise_kmh``) the job flags windowed speeds there ``low_resolution``."""
    from trafficstream.models.passage import Z, position_sigma_m

    lines = [
        f"expected passage-speed uncertainty (95 %) for a {section_m:g} m section at {kmh:g} km/h, by where it starts;",
        f"windowed speed: what a pixel of box jitter does to a {window_s:g} s window at {fps:.4g} fps there (95 %):",
        "  from Y (m)   m/px   position sigma (m)   +- km/h   windowed +- km/h",
    ]
    bad = []
    noisy = []
    for r in uncertainty_by_distance(plane, section_m, kmh, fps=fps, window_s=window_s):
        flag = "  <- cannot support enforcement" if r.uncertainty_kmh > max_uncertainty_kmh else ""
        if max_noise_kmh is not None and not r.windowed_noise_kmh <= max_noise_kmh:
            noisy.append(r.y_m)
            flag += "  <- windowed speeds flagged low_resolution"
        lines.append(
            f"  {r.y_m:9.1f}  {r.metres_per_px:6.3f}  {r.position_sigma_m:19.3f}  {r.uncertainty_kmh:8.2f}"
            f"  {r.windowed_noise_kmh:16.2f}{flag}"
        )
        if r.uncertainty_kmh > max_uncertainty_kmh:
            bad.append(r.y_m)
    if noisy:
        lines.append(
            f"note: beyond Y = {min(noisy):g} m windowed speeds carry more than +-{max_noise_kmh:g} km/h of jitter and "
            "are not trusted (passage speeds over a longer stretch still are, within their own uncertainty)"
        )
    if bad:
        lines.append(
            f"warning: beyond Y = {min(bad):g} m a {section_m:g} m section carries more than +-{max_uncertainty_kmh:g} "
            "km/h: use a longer section, nearer lines, or more calibration points there"
        )
    for sid, a, b in sections:
        distance = float(np.hypot(b[0] - a[0], b[1] - a[1]))
        if distance <= 0:
            continue
        unc = Z * kmh * float(np.hypot(position_sigma_m(plane, a), position_sigma_m(plane, b))) / distance
        note = "" if unc <= max_uncertainty_kmh else "  <- cannot support enforcement"
        lines.append(f"section {sid}: {distance:.1f} m, +-{unc:.2f} km/h at {kmh:g} km/h{note}")
    return lines


def _raw_rms_px(image_points: np.ndarray, world_points: np.ndarray, lens: LensModel) -> float:
    """RMS (video pixels) of the calibration points re-projected through the homography fitted on them
    undistorted by ``lens``: measured in raw pixels, so every k1 is judged on the same scale."""
    ideal = undistort_pixels(image_points, lens)
    if not np.isfinite(ideal).all():
        return float("inf")
    try:
        H = fit_homography(ideal, world_points)
    except ValueError:
        return float("inf")
    back = distort_pixels(project(np.linalg.inv(H), world_points), lens)
    rms = float(np.sqrt(np.mean(np.sum((back - image_points) ** 2, axis=1))))
    return rms if np.isfinite(rms) else float("inf")


@dataclass(frozen=True)
class K1Fit:
    lens: LensModel
    rms_px_without: float  # the calibration points' raw-pixel rms with no distortion model
    rms_px_with: float


def fit_k1(image_points: np.ndarray, world_points: np.ndarray, focal_px: float, centre: Sequence[float]) -> K1Fit:
    """The k1 (other coefficients 0) that minimises the homography's raw-pixel reprojection error.

    Needs more than 4 pairs (4 fit any homography exactly whatever k1), ideally spread out to the picture's
    edges where distortion shows. k1 trades off against the focal length, hence the fixed ``focal_px``.
    """
    from scipy.optimize import minimize_scalar

    img, wld = np.asarray(image_points, np.float64), np.asarray(world_points, np.float64)
    if len(img) <= 4:
        raise CalibrationError(f"--fit-k1: needs at least 5 point pairs (4 fit any lens exactly), got {len(img)}")
    cx, cy = float(centre[0]), float(centre[1])
    # barrel beyond -4 / (27 R^2) folds the picture inside the farthest point (radius R): no undistortion there
    radius = float(np.max(np.hypot(img[:, 0] - cx, img[:, 1] - cy))) / focal_px
    lo = max(-K1_BOUND, -4 / (27 * radius**2) * 0.999) if radius > 0 else -K1_BOUND

    def cost(k1: float) -> float:
        return _raw_rms_px(img, wld, LensModel(focal_px, cx, cy, k1))

    grid = np.linspace(lo, K1_BOUND, 41)  # coarse first: the cost need not be unimodal over the whole range
    costs = [cost(float(k)) for k in grid]
    best = int(np.argmin(costs))
    a, b = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    res = minimize_scalar(cost, bounds=(a, b), method="bounded", options={"xatol": 1e-6})
    k1 = float(res.x) if res.success and res.fun <= costs[best] else float(grid[best])
    return K1Fit(LensModel(focal_px, cx, cy, k1), cost(0.0), cost(k1))


def k1_lines(fit: K1Fit, n_pairs: int) -> list[str]:
    lens = fit.lens
    lines = [
        f"k1 fitted over {n_pairs} pairs (focal {lens.focal_px:g} px, principal point [{lens.cx:g}, {lens.cy:g}]): "
        f"rms {fit.rms_px_without:.2f} px without a lens model -> {fit.rms_px_with:.2f} px with k1 = {lens.k1:.4f}",
        "suggested calibration block:",
        f"    lens: {{focal_px: {lens.focal_px:g}, center_px: [{lens.cx:g}, {lens.cy:g}], k1: {lens.k1:.4f}}}",
    ]
    if fit.rms_px_with > 0.8 * fit.rms_px_without:
        lines.append(
            "note: k1 hardly improves the fit: the pairs do not show the distortion (add pairs near the picture's "
            "edges), or the lens is nearly distortion-free"
        )
    return lines


@dataclass
class _Inputs:
    label: str
    video: Path | None
    roi: np.ndarray | None
    image_points: np.ndarray
    world_points: np.ndarray
    frame: int
    reference_frame: int | None  # set when the frame must be registered onto this one first
    sections: list[tuple[str, tuple[float, float], tuple[float, float]]]  # id, the two lines' midpoints (m)
    lens: LensModel | None = None
    markings: tuple[MarkingLine, ...] = ()
    fitted_markings: bool = True  # False: the markings are only checked against the plane (--vanishing)
    fps_override: float | None = None  # the camera's ``fps``, when its container's is not to be trusted
    tracker: TrackerSettings | None = None  # the deployment's (window and jitter limit); None: the defaults


def _camera_inputs(args: argparse.Namespace) -> _Inputs:
    """What to check and draw, from the config camera and/or --points / --video."""
    from trafficstream.config import load_settings

    label, video, roi, frame, register_to = "ad-hoc", None, None, args.frame or 0, None
    image_pts = world_pts = None
    lens: LensModel | None = None
    markings: list[MarkingLine] = []
    sections: list[tuple[str, tuple[float, float], tuple[float, float]]] = []
    speed: dict[str, Any] = {}
    if args.camera:
        settings = load_settings(args.config, args.overrides)
        camera = settings.camera(args.camera)
        speed = {"fps_override": camera.fps, "tracker": settings.tracker}
        index = [c.id for c in settings.cameras].index(camera.id)
        label, video = camera.id, camera.source_path()
        roi = np.asarray(camera.roi, dtype=np.float64) if camera.roi else None
        reference = (camera.calibration.reference_frame if camera.calibration else None) or 0
        frame = args.frame if args.frame is not None else reference
        if camera.register_frames and frame != reference:
            register_to = reference
        if camera.calibration is None and not args.points and not args.markings:
            raise CalibrationError(
                f"cameras[{index}].calibration ({camera.id}): missing; add >= 4 image_points / world_points pairs "
                f"or pass --points"
            )
        if camera.calibration is not None:
            image_pts = np.asarray(camera.calibration.image_points, dtype=np.float64)
            world_pts = np.asarray(camera.calibration.world_points, dtype=np.float64)
            lens = camera.calibration.lens_model()
            markings = [
                MarkingLine(np.asarray(p, dtype=np.float64), a, v) for p, a, v in camera.calibration.marking_keys()
            ]
        mids = {line.id: tuple(np.mean(np.asarray(line.points, dtype=np.float64), axis=0)) for line in camera.lines}
        sections = [(s.id, mids[s.lines[0]], mids[s.lines[1]]) for s in camera.sections]
    if args.markings:
        markings = parse_markings(args.markings)
    if args.points:
        image_pts, world_pts = parse_points(args.points, min_pairs=0 if markings else 4)
    elif markings and image_pts is None:  # markings alone (four lines, say)
        image_pts = world_pts = np.empty((0, 2))
    if args.video:
        video = Path(args.video)
    if args.lens:
        lens = parse_lens(args.lens)
    if image_pts is None or world_pts is None:  # both set or neither
        raise CalibrationError("nothing to check: give --camera (with --config) or --points")
    return _Inputs(
        label, video, roi, image_pts, world_pts, frame, register_to, sections, lens, tuple(markings), **speed
    )


def _frame_rate(inp: _Inputs) -> float:
    """The camera's frame rate for the windowed-speed column: its override, else the video's container, else 30."""
    if inp.fps_override:
        return inp.fps_override
    if inp.video is not None:
        from trafficstream.video import SourceError, VideoFileSource

        try:
            with VideoFileSource(inp.video) as source:
                return source.info.fps
        except (SourceError, ValueError):
            log.warning("cannot read the frame rate of %s: the windowed-speed column assumes 30 fps", inp.video)
    return 30.0


def _principal_point(inp: _Inputs, args: argparse.Namespace, option: str) -> tuple[float, float]:
    """--center-px, else the configured lens's, else the centre of the video's frame."""
    if args.center_px:
        cx, cy = _floats(args.center_px, "--center-px", (2,))
        return cx, cy
    if inp.lens is not None:
        return inp.lens.cx, inp.lens.cy
    if inp.video is not None:
        from trafficstream.cameras import probe_frame_size

        try:
            width, height, _ = probe_frame_size(inp.video)
        except ValueError as exc:
            raise CalibrationError(f"{option}: cannot read the frame size of {inp.video}: {exc}") from None
        return width / 2, height / 2
    raise CalibrationError(f"{option} needs the principal point: give --center-px cx,cy or a video")


def _k1_fit_for(inp: _Inputs, args: argparse.Namespace) -> K1Fit:
    """--fit-k1 with the focal length and principal point from the options, else the configured lens, else the
    centre of the video's frame."""
    focal = args.focal_px if args.focal_px is not None else (inp.lens.focal_px if inp.lens else None)
    if focal is None or focal <= 0:
        raise CalibrationError("--fit-k1 needs the focal length: give --focal-px (> 0, pixels of the video)")
    centre = _principal_point(inp, args, "--fit-k1")
    return fit_k1(inp.image_points, inp.world_points, float(focal), centre)


def _fmt_points(points: np.ndarray, nd: int) -> str:
    return "[" + ", ".join(f"[{x:.{nd}f}, {y:.{nd}f}]" for x, y in points) + "]"


def vanishing_lines(cal: VanishingCalibration, image_points: np.ndarray, world_points: np.ndarray) -> list[str]:
    """The camera found from the vanishing points, and the calibration block to paste."""

    def vp(p: np.ndarray | None) -> str:
        if p is None:
            return "not traced"
        return "at infinity" if abs(p[2]) < 1e-12 else f"({p[0] / p[2]:.0f}, {p[1] / p[2]:.0f}) px"

    how = {
        "vanishing points": f"from the vanishing points, +-{cal.focal_spread * 100:.1f} % for half-pixel tracing",
        "positions": f"fitted to the markings' positions, +-{cal.focal_spread * 100:.0f} %",
    }.get(cal.focal_from, "given")
    return [
        f"vanishing points: along the road {vp(cal.u)}, across {vp(cal.v)}",
        f"camera: focal {cal.focal_px:.0f} px ({how}), principal point ({cal.centre[0]:.0f}, {cal.centre[1]:.0f}), "
        f"tilt {cal.tilt_deg:.1f} deg below the road plane, roll {cal.roll_deg:+.1f} deg, "
        f"height {cal.height_m:.2f} m above the road",
        f"known positions (markings, pairs) off by rms {cal.rms_m:.3f} m under this camera",
        "calibration block (point pairs consistent with this camera; keep the camera's lens: block):",
        "  calibration:",
        f"    image_points: {_fmt_points(image_points, 1)}",
        f"    world_points: {_fmt_points(world_points, 2)}",
    ]


def _vanishing_inputs(inp: _Inputs, args: argparse.Namespace) -> _Inputs:
    """--vanishing: the camera from the markings' vanishing points; its point pairs (the markings' visible ends
    and any given pairs) replace the pairs, so the usual report checks what it found."""
    if not inp.markings:
        raise CalibrationError("--vanishing needs markings: >= 2 lane lines (x = ...), traced with --markings")
    centre = _principal_point(inp, args, "--vanishing")
    focal = args.focal_px
    across = sum(m.axis == "y" for m in inp.markings)
    if focal is None and across < 2 and inp.lens is not None:
        focal = inp.lens.focal_px  # the lens block's focal length, when the lines cannot measure it
    if focal is not None and focal <= 0:
        raise CalibrationError(f"--focal-px must be > 0, got {focal:g}")
    try:
        cal, raw, world = pairs_from_markings(
            inp.markings,
            centre,
            inp.lens,
            focal_px=focal,
            image_points=inp.image_points,
            world_points=inp.world_points,
        )
    except ValueError as exc:
        raise CalibrationError(f"--vanishing: {exc}") from None
    for line in vanishing_lines(cal, raw, world):
        print(line)
    return replace(inp, image_points=raw, world_points=world, markings=inp.markings, fitted_markings=False)


def build_parser() -> argparse.ArgumentParser:
    from trafficstream.config import add_config_arguments

    parser = argparse.ArgumentParser(
        prog="python -m trafficstream.models.calibrate", description=__doc__.split("\n\n")[0]
    )
    add_config_arguments(parser)
    parser.add_argument("--camera", help="camera id in the config")
    parser.add_argument("--points", help='ad-hoc pairs "x,y:X,Y;..." (pixels:metres); overrides the config pairs')
    parser.add_argument(
        "--markings",
        help='road markings of known position "x=3.5:x1,y1,x2,y2,...;y=12:..." (pixels along each); replace the '
        "camera's markings, and allow fewer than 4 --points",
    )
    parser.add_argument("--video", help="video to draw on (default: the camera's source)")
    parser.add_argument(
        "--frame", type=int, default=None, help="frame index to draw on (default: the reference frame, else 0)"
    )
    parser.add_argument("--png", help="write the annotated frame here")
    parser.add_argument("--grid-across", type=float, default=1.0, help="grid spacing across the road, m (default 1)")
    parser.add_argument("--grid-along", type=float, default=5.0, help="grid spacing along the road, m (default 5)")
    parser.add_argument("--section-m", type=float, default=20.0, help="section length for the uncertainty table")
    parser.add_argument("--kmh", type=float, default=100.0, help="reference speed for the uncertainty table")
    parser.add_argument(
        "--max-uncertainty-kmh", type=float, default=3.0, help="warn where a passage speed carries more (95 %%)"
    )
    parser.add_argument(
        "--lens", help='lens distortion "focal,cx,cy[,k1[,k2[,p1[,p2[,k3]]]]]" (px; replaces the camera\'s lens)'
    )
    parser.add_argument("--fit-k1", action="store_true", help="estimate k1 from >= 5 pairs; print a lens: block")
    parser.add_argument(
        "--vanishing",
        action="store_true",
        help="calibrate from the markings' vanishing points (>= 2 lane lines x = ..., and >= 2 lines across "
        "y = ... or --focal-px); print the camera and a calibration: block of point pairs",
    )
    parser.add_argument(
        "--focal-px", type=float, default=None, help="focal length for --fit-k1 / --vanishing, px of the video"
    )
    parser.add_argument(
        "--center-px", help="principal point cx,cy for --fit-k1 / --vanishing (default: the frame's centre)"
    )
    parser.add_argument("--log-level", default="WARNING")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from trafficstream.logs import setup_logging

    args = build_parser().parse_args(argv)
    setup_logging(args.log_level)
    try:
        if args.frame is not None and args.frame < 0:
            raise CalibrationError(f"--frame must be >= 0, got {args.frame}")
        if args.grid_across <= 0 or args.grid_along <= 0:
            raise CalibrationError("--grid-across and --grid-along must be > 0")
        inp = _camera_inputs(args)
        if args.vanishing:
            inp = _vanishing_inputs(inp, args)
        try:
            fit_markings = inp.markings if inp.fitted_markings else ()
            plane = RoadPlane.from_points(inp.image_points, inp.world_points, inp.lens, fit_markings)
        except ValueError as exc:
            source = "--points" if args.points else f"calibration of {inp.label}"
            source += " with --markings" if args.markings else ""
            raise CalibrationError(f"{source}: {exc}") from None
        counted = f", {len(inp.markings)} markings" if inp.markings else ""
        print(f"camera {inp.label}: {len(inp.image_points)} point pairs{counted}")
        if not inp.fitted_markings:
            print("(pairs from the vanishing-point camera: zero error by construction; the markings show the fit)")
        for line in report_lines(plane, inp.roi) + marking_lines(plane, inp.markings):
            print(line)
        if args.fit_k1:
            for line in k1_lines(_k1_fit_for(inp, args), len(inp.image_points)):
                print(line)
        if args.section_m <= 0 or args.kmh <= 0:
            raise CalibrationError("--section-m and --kmh must be > 0")
        from trafficstream.config import TrackerSettings

        tracker = inp.tracker or TrackerSettings()
        for line in uncertainty_lines(
            plane,
            inp.sections,
            args.section_m,
            args.kmh,
            args.max_uncertainty_kmh,
            fps=_frame_rate(inp),
            window_s=tracker.speed_window_s,
            max_noise_kmh=tracker.max_speed_noise_kmh,
        ):
            print(line)
        if args.png:
            if inp.video is None:
                raise CalibrationError("--png needs a frame to draw on: give --camera or --video")
            image = read_frame(inp.video, inp.frame)
            drawn_plane = plane
            if inp.reference_frame is not None:
                from trafficstream.models.registration import estimate_drift

                reference = cv2.cvtColor(read_frame(inp.video, inp.reference_frame), cv2.COLOR_BGR2GRAY)
                drift = estimate_drift(reference, cv2.cvtColor(image, cv2.COLOR_BGR2GRAY))
                print(
                    f"frame {inp.frame} registered onto reference frame {inp.reference_frame}: shift "
                    f"{drift[0, 2]:+.1f},{drift[1, 2]:+.1f} px, rotation "
                    f"{np.degrees(np.arctan2(drift[1, 0], drift[0, 0])):+.2f} deg"
                )
                drawn_plane = plane.with_drift(drift)
            out = draw_calibration(
                image,
                drawn_plane,
                inp.roi,
                across_m=args.grid_across,
                along_m=args.grid_along,
                title=f"{inp.label} frame {inp.frame}",
            )
            path = Path(args.png)
            path.parent.mkdir(parents=True, exist_ok=True)
            if not cv2.imwrite(str(path), out):
                raise CalibrationError(f"--png: cannot write {path}")
            print(f"wrote {path}")
    except (CalibrationError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
