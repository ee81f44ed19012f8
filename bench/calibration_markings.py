"""How much road markings buy a calibration: the along-road scale error of calibrations with and without them,
on every straight scene family's camera, with hand-click noise on every pixel.

    python -m trafficstream.bench.calibration_markings --json bench/results/calibration_markings.json

Per family (bench/synthetic/families.py; bent roads are left out: their lane lines are not straight) and per
draw of click noise (``--noise-px``, or the family's own ``calibration_noise_px`` when larger), four ways to
calibrate the same camera are fitted exactly as the job fits them (:meth:`RoadPlane.from_points`, through the
family's lens where it has one):

* ``pairs_6``: the dash ends the synthetic clips are calibrated with (>= 6 pairs on three lane lines);
* ``pairs_6+markings``: the same, plus every lane line traced by 10 pixels from near to far;
* ``pairs_4``: the four outer dash ends only;
* ``pairs_2+markings``: two far dash ends, the lane lines traced and the near row of dash ends as a transverse
  line (``y = ...``): what a user with a lane width, a dash pattern and two measured points can give.
* ``vanishing``: no pairs at all: the lane lines and the three rows of dash ends traced across the road, through
  the camera model of :mod:`models.vanishing` (focal length from the vanishing points, or fitted to the rows'
  known spacing when the camera looks straight along the road), principal point at the picture's centre;
* ``vanishing+focal``: the lane lines and the near row only, with the focal length known (a data sheet).

A calibration that refuses the input (``ValueError``) is counted under ``failed`` instead of an error.

The error is that of the distance between two points 30 m apart along the middle lane (the share a speed is off
by), reported as km/h at 100 km/h: rms and 95th percentile over the draws.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from trafficstream.bench.synthetic.camera import Optics, PinholeCamera
from trafficstream.bench.synthetic.families import FAMILIES
from trafficstream.bench.synthetic.scene import DASH_M, GAP_M, SceneParams
from trafficstream.logs import setup_logging
from trafficstream.models.homography import MarkingLine, RoadPlane
from trafficstream.models.vanishing import pairs_from_markings

log = logging.getLogger(__name__)

METHODS = ("pairs_6", "pairs_6+markings", "pairs_4", "pairs_2+markings", "vanishing", "vanishing+focal")
SPAN_M = 30.0  # the measured distance along the middle lane
TRACE_PX = 10  # pixels traced along each lane line


def _dash_rows(camera: PinholeCamera, params: SceneParams) -> np.ndarray:
    """Distances along the road of the rows of dash ends the clips are calibrated on (near, middle, far)."""
    near = camera.ground_distance_at_row(params.height)
    period = DASH_M + GAP_M
    ys = np.arange(math.ceil((near + 4) / period) * period, min(params.roi_far_m, 80.0) + 1e-9, period)
    return ys[np.linspace(0, len(ys) - 1, min(3, len(ys))).round().astype(int)]


def _in_view(pixels: np.ndarray, params: SceneParams, margin: float = 8.0) -> np.ndarray:
    return (
        np.isfinite(pixels).all(axis=1)
        & (pixels[:, 0] >= margin)
        & (pixels[:, 0] <= params.width - margin)
        & (pixels[:, 1] >= margin)
        & (pixels[:, 1] <= params.height - margin)
    )


def vanishing_plane(markings: Sequence[MarkingLine], params: SceneParams, focal_px: float | None = None) -> RoadPlane:
    """The road plane the camera model finds from traced markings alone, as the point pairs that
    ``python -m models.calibrate --vanishing`` prints and the job then fits."""
    lens = params.lens
    centre = (lens.cx, lens.cy) if lens is not None else (params.width / 2, params.height / 2)
    _, raw, world = pairs_from_markings(markings, centre, lens, focal_px=focal_px)
    return RoadPlane.from_points(raw, world, lens)


def calibrations(
    params: SceneParams, rng: np.random.Generator, noise_px: float
) -> tuple[dict[str, RoadPlane | None], Callable[[np.ndarray], np.ndarray]]:
    """The calibrations (None: refused) of one draw of click noise, and the camera's true road -> picture mapping."""
    camera = PinholeCamera.looking_down_road(params)
    optics = Optics.of(camera, params)
    to_px = optics.ground_to_picture
    ys = _dash_rows(camera, params)
    lane_xs = [k * params.lane_width_m for k in range(params.lanes + 1)]
    outer = (0.0, params.road_width_m)
    xs6 = sorted({0.0, params.lanes // 2 * params.lane_width_m, params.road_width_m})

    def clicked(world: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        px = to_px(world)
        keep = _in_view(px, params)
        return px[keep] + rng.normal(0.0, noise_px, px[keep].shape), world[keep]

    def traced(axis: str, value: float, span: Sequence[float]) -> MarkingLine | None:
        t = np.linspace(span[0], span[1], TRACE_PX)
        world = np.column_stack([np.full_like(t, value), t] if axis == "x" else [t, np.full_like(t, value)])
        px = to_px(world)
        px = px[_in_view(px, params)]
        if len(px) < 2:
            return None
        return MarkingLine(px + rng.normal(0.0, noise_px, px.shape), axis, value)

    lane_lines = [m for x in lane_xs if (m := traced("x", x, (ys[0] - 6.0, ys[-1] + 6.0))) is not None]
    across = [m for y in ys if (m := traced("y", float(y), (-0.5, params.road_width_m + 0.5))) is not None]
    stop = across[0] if across else None
    lens = params.lens
    six = clicked(np.array([[x, y] for y in ys for x in xs6]))
    four = clicked(np.array([[x, y] for y in (ys[0], ys[-1]) for x in outer]))
    two = clicked(np.array([[x, ys[-1]] for x in outer]))

    def attempt(fit: Callable[[], RoadPlane]) -> RoadPlane | None:
        try:
            return fit()
        except ValueError:
            return None

    planes: dict[str, RoadPlane | None] = {
        "pairs_6": RoadPlane.from_points(*six, lens),
        "pairs_6+markings": RoadPlane.from_points(*six, lens, lane_lines),
        "pairs_4": RoadPlane.from_points(*four, lens),
        "pairs_2+markings": RoadPlane.from_points(*two, lens, [*lane_lines, *([stop] if stop else [])]),
        "vanishing": attempt(lambda: vanishing_plane([*lane_lines, *across], params)),
        "vanishing+focal": attempt(lambda: vanishing_plane([*lane_lines, *across[:1]], params, params.focal)),
    }
    return planes, to_px


def scale_errors_kmh(params: SceneParams, draws: int, noise_px: float, seed: int) -> dict[str, list[float]]:
    """Per method, the signed error (km/h at 100 km/h) of a 30 m span along the middle lane, one per draw
    (NaN where the method refused the draw's input)."""
    rng = np.random.default_rng(seed)
    errors: dict[str, list[float]] = {m: [] for m in METHODS}
    x_mid = (params.lanes // 2 + 0.5) * params.lane_width_m
    for _ in range(draws):
        planes, to_px = calibrations(params, rng, noise_px)
        camera = PinholeCamera.looking_down_road(params)
        y0 = _dash_rows(camera, params)[0]
        ends = to_px(np.array([[x_mid, y0], [x_mid, y0 + SPAN_M]]))
        for name, plane in planes.items():
            if plane is None:
                errors[name].append(math.nan)
                continue
            a, b = plane.to_world(ends)
            errors[name].append(100.0 * (float(np.linalg.norm(b - a)) / SPAN_M - 1.0))
    return errors


def summarise(errors: dict[str, list[float]]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for name, values in errors.items():
        v = np.asarray(values, dtype=np.float64)
        ok = v[np.isfinite(v)]
        out[name] = {
            "rms_kmh": round(float(np.sqrt(np.mean(np.square(ok)))), 3) if len(ok) else math.nan,
            "p95_abs_kmh": round(float(np.percentile(np.abs(ok), 95)), 3) if len(ok) else math.nan,
            "mean_signed_kmh": round(float(np.mean(ok)), 3) if len(ok) else math.nan,
            "failed": int(len(v) - len(ok)),
        }
    return out


def camera_key(params: SceneParams) -> tuple[Any, ...]:
    """What the calibrations depend on: the camera, its lens, the road's lanes and the click noise."""
    camera = PinholeCamera.looking_down_road(params)
    return (
        camera.K.tobytes(),
        camera.R.tobytes(),
        camera.center.tobytes(),
        params.lens,
        params.lanes,
        params.lane_width_m,
        params.roi_far_m,
        params.calibration_noise_px,
    )


def run(draws: int, noise_px: float, seed: int) -> dict[str, Any]:
    out: dict[str, Any] = {"draws": draws, "noise_px": noise_px, "seed": seed, "span_m": SPAN_M, "families": {}}
    pooled: dict[str, list[float]] = {m: [] for m in METHODS}
    seen: dict[tuple[Any, ...], str] = {}
    for name, family in FAMILIES.items():
        params = family.params
        if params.curve_radius_m is not None:
            continue  # a bent road's lane lines are not straight lines
        key = camera_key(params)
        if key in seen:  # light, traffic or sway only: the same camera and road as an earlier family
            out["families"][name] = {"same_camera_as": seen[key]}
            continue
        seen[key] = name
        sigma = max(noise_px, params.calibration_noise_px)
        errors = scale_errors_kmh(replace(params, calibration_noise_px=sigma), draws, sigma, seed)
        out["families"][name] = {"noise_px": sigma, **summarise(errors)}
        for m in METHODS:
            pooled[m] += errors[m]
    out["pooled"] = summarise(pooled)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trafficstream.bench.calibration_markings", description=__doc__)
    parser.add_argument("--draws", type=int, default=200, help="noise draws per family (default 200)")
    parser.add_argument("--noise-px", type=float, default=1.0, help="click noise sigma, px (default 1)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    result = run(args.draws, args.noise_px, args.seed)
    header = f"{'family':<20}" + "".join(f"{m:>20}" for m in METHODS) + "  refused (vanishing, +focal)"
    log.info("rms scale error, km/h at 100 km/h (p95 |error| in brackets)\n%s", header)
    for name, row in [*result["families"].items(), ("pooled", result["pooled"])]:
        if "same_camera_as" in row:
            log.info("%-20s(the camera of %s)", name, row["same_camera_as"])
            continue
        cells = "".join(f"{row[m]['rms_kmh']:>11.2f} ({row[m]['p95_abs_kmh']:5.2f})" for m in METHODS)
        log.info("%-20s%s  %d, %d", name, cells, row["vanishing"]["failed"], row["vanishing+focal"]["failed"])
    if args.json:
        path = Path(args.json)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=2) + "\n")
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
