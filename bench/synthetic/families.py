"""Scene families: the kinds of scene the speed evaluation spans, so that accuracy cannot be tuned to one.

Each family varies what real deployments vary (camera height, tilt and lens, road grade and bend, the traffic
mix, stop-and-go, light, compression, a swaying camera, hand-clicked calibration) and keeps the rest of the
default scene.
A family is a :class:`SceneParams` without a seed: ``make eval`` renders every family for ``EVAL_SEEDS`` (the
reported numbers); the test suite uses ``TEST_SEEDS`` only, so nothing is tuned on the reported clips. Every
family renders 12 s at 25 fps (300 frames)::

    python -m trafficstream.bench.synthetic --family night --seed 11 --out var/synthetic/night-11
    python -m trafficstream.bench.synthetic --list-families
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from trafficstream.bench.synthetic.scene import SceneParams


@dataclass(frozen=True)
class SceneFamily:
    name: str
    description: str  # one line: what it varies
    params: SceneParams  # the family's scene (the seed is separate)


EVAL_SEEDS: tuple[int, ...] = (11, 23)  # the seeds `make eval` reports
TEST_SEEDS: tuple[int, ...] = (5,)  # the seeds the test suite uses (never the reported ones)

_FAMILIES = (
    SceneFamily("motorway", "the default scene: 3 straight lanes, 9 m camera over the middle, daylight", SceneParams()),
    SceneFamily(
        "high_mast",
        "14 m mast, steep 24 deg tilt, long lens, 4 lanes, calibration points clicked by hand (0.7 px)",
        SceneParams(
            lanes=4,
            camera_height_m=14.0,
            pitch_deg=24.0,
            focal_px=1.1 * 1280,
            far_m=110.0,  # the picture ends at ~82 m: vehicles enter from its top edge
            roi_far_m=78.0,
            calibration_noise_px=0.7,
        ),
    ),
    SceneFamily(
        "low_wide",
        "6 m pole over the right shoulder, shallow 11 deg tilt, wide-angle lens with barrel distortion",
        SceneParams(
            camera_height_m=6.0,
            pitch_deg=11.0,
            focal_px=0.55 * 1280,
            lens_k1=-0.12,
            lens_k2=0.02,
            camera_offset_m=12.0,  # the right shoulder spans x = 10.5 .. 13 m
            roi_far_m=90.0,
        ),
    ),
    SceneFamily(
        "urban",
        "2 narrow lanes, 25-60 km/h, limit 50, dense, much braking and accelerating, 30 % buses and trucks",
        SceneParams(
            n_vehicles=16,
            min_kmh=25.0,
            max_kmh=60.0,
            speed_limit_kmh=50.0,
            accelerating_share=0.6,
            accel_range_mps2=(0.8, 2.0),
            heavy_share=0.3,
            motorcycle_share=0.1,  # drawn when the sprite bank has motorcycles (it has none yet: scene_notes)
            lanes=2,
            lane_width_m=3.2,
            camera_height_m=7.0,
            pitch_deg=15.0,
            far_m=110.0,
            roi_far_m=80.0,
        ),
    ),
    SceneFamily(
        "grade_curve",
        "the road climbs at 4 % and bends right with a 400 m radius beyond 30 m",
        SceneParams(grade_pct=4.0, curve_radius_m=400.0, curve_start_m=30.0),
    ),
    SceneFamily(
        "dense_lane_change",
        "24 vehicles, half of them changing lanes: close following and occlusions",
        SceneParams(n_vehicles=24, lane_change_share=0.5, min_kmh=60.0, max_kmh=110.0),
    ),
    SceneFamily(
        "dusk_compressed",
        "dusk light (darker, flatter, noisier) through heavy H.264 compression (crf 32)",
        SceneParams(light="dusk", crf=32, noise_sigma=3.0),
    ),
    SceneFamily(
        "night",
        "night: dark road, dimmed vehicles with their headlights on, strong sensor noise",
        SceneParams(light="night"),
    ),
    SceneFamily(
        "sway_blur",
        "a camera swaying by ~3 px and vehicles motion-blurred over a 1/50 s exposure",
        SceneParams(sway_px=3.0, motion_blur=True),
    ),
    SceneFamily(
        "stop_and_go",
        "a congestion wave: a car brakes to a standstill 30 m out, 4 cars queue behind it, all move off 5 s later",
        SceneParams(
            n_vehicles=10,
            min_kmh=30.0,
            max_kmh=70.0,
            speed_limit_kmh=60.0,
            accelerating_share=0.5,
            stopped_vehicles=1,
            queue_vehicles=4,
            stop_at_m=30.0,
            stop_start_s=3.5,
            stop_duration_s=5.0,
        ),
    ),
)
FAMILIES: dict[str, SceneFamily] = {f.name: f for f in _FAMILIES}


def family_scene(name: str, **overrides: Any) -> SceneParams:
    """The scene of family ``name``, with ``overrides`` (SceneParams fields) replacing its values."""
    if name not in FAMILIES:
        raise KeyError(f"unknown scene family {name!r}; valid: {', '.join(FAMILIES)}")
    try:
        return replace(FAMILIES[name].params, **overrides)
    except TypeError as exc:  # an unknown field
        raise ValueError(f"family {name!r}: {exc}") from None
