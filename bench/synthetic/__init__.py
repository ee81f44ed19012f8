"""Synthetic traffic clips with known vehicle speeds, to score detection, tracking and speed estimation.

A multi-lane road (straight by default) is rendered through a camera of known pose, so the road-plane
homography is exact. The vehicles are real vehicle crops that the real detector found in the sample clips (so it finds
them again), pasted as opaque sprites at their projected world positions, far to near. Each vehicle has a
lane, an entry time, an initial speed, maybe an acceleration and maybe a lane change; the seed fixes all of it.

``generate`` writes into ``out_dir``: ``clip.mp4`` (H.264, constant frame rate), ``ground_truth.json`` (per
frame and vehicle: box, world position, true speed) and ``camera.yaml`` (a deployment config whose one camera
``synthetic`` plays the clip, calibrated with point pairs taken from the known homography)::

    python -m trafficstream.bench.synthetic --out var/synthetic/seed1 --seed 1 [--vehicles 14 --min-kmh 60 ...]

World frame: metres on the road plane, x across the road (lanes from x=0 rightwards), y along the road away
from the camera (which stands at y=0), z up. All vehicles drive towards the camera (y decreasing), but for
staged traffic events (off by default): wrong-way vehicles, a vehicle stopping in its lane and cars queueing
behind it. A scene with them also gets counting lines, lanes and a queue zone on its camera, and the ground
truth lists the true line crossings and events (``scenario``)::

    python -m trafficstream.bench.synthetic --out var/synthetic/events --seed 1 --duration 20 \
        --wrong-way-vehicles 1 --stopped-vehicles 1 --queue-vehicles 2

Scene families (``families``): one scene is easy to tune speed estimation to, so the evaluation spans kinds of
scene that real deployments vary: ``motorway`` (the default scene), ``high_mast`` (14 m, steep, long lens, 4
lanes, hand-clicked calibration), ``low_wide`` (6 m over the shoulder, wide-angle lens with barrel distortion),
``urban`` (2 narrow lanes, 25-60 km/h, braking and accelerating, buses and trucks), ``grade_curve`` (a 4 %
climb bending with a 400 m radius), ``dense_lane_change``, ``dusk_compressed``, ``night`` and ``sway_blur`` (a
swaying camera, motion blur). ``FAMILIES`` holds them, ``EVAL_SEEDS`` are the seeds ``make eval`` reports and
``TEST_SEEDS`` the ones the tests use (never the reported ones)::

    python -m trafficstream.bench.synthetic --family low_wide --seed 11 --out var/synthetic/low_wide-11
    python -m trafficstream.bench.synthetic --list-families

What they vary are ``SceneParams`` fields, all off by default (a default scene renders exactly what it always
did): lens distortion, road grade, a bend, motorcycles, motion blur, light, camera sway, calibration noise
and compression (see ``scene``).

Modules, in the order a clip is made: ``scene`` (parameters, road layout), ``families`` (named scenes),
``road`` (a bend's lane coordinates), ``camera`` (pinhole camera, homography, lens resampling), ``sprites``
(vehicle crops cut from the sample clips), ``traffic`` (vehicle bodies, scripts and motion), ``renderer``
(background, light, sprites, motion blur, lens, sway, noise, per-frame ground truth), ``bank`` (the validated,
cached sprites a clip draws from), ``scenario`` (the camera's lines, lanes and zones; the true crossings and events),
``clip`` (:func:`generate`: video, ground truth, deployment config) and ``__main__`` (the command line).
"""

from trafficstream.bench.synthetic.bank import default_cache_dir, sprite_bank
from trafficstream.bench.synthetic.camera import PinholeCamera
from trafficstream.bench.synthetic.clip import CAMERA_ID, GT_VERSION, SyntheticClip, generate
from trafficstream.bench.synthetic.families import EVAL_SEEDS, FAMILIES, TEST_SEEDS, SceneFamily, family_scene
from trafficstream.bench.synthetic.scene import SceneParams

__all__ = [
    "CAMERA_ID",
    "EVAL_SEEDS",
    "FAMILIES",
    "GT_VERSION",
    "TEST_SEEDS",
    "PinholeCamera",
    "SceneFamily",
    "SceneParams",
    "SyntheticClip",
    "default_cache_dir",
    "family_scene",
    "generate",
    "sprite_bank",
]
