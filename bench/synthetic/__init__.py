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
from the camera (which stands at y=0), z up. All vehicles drive towards the camera (y decreasing), but for
staged traffic events (off by default): wrong-way vehicles, a vehicle stopping in its lane and cars queueing
behind it. A scene with them also gets counting lines, lanes and a queue zone on its camera, and the ground
truth lists the true line crossings and events (``scenario``)::

    python -m trafficstream.bench.synthetic --out var/synthetic/events --seed 1 --duration 20 \
        --wrong-way-vehicles 1 --stopped-vehicles 1 --queue-vehicles 2

Modules, in the order a clip is made: ``scene`` (parameters, road layout), ``camera`` (pinhole camera and
homography), ``sprites`` (vehicle crops cut from the sample clips), ``traffic`` (vehicle bodies, scripts and
motion), ``renderer`` (background, sprites, noise, per-frame ground truth), ``bank`` (the validated, cached
sprites a clip draws from), ``scenario`` (the camera's lines, lanes and zones; the true crossings and events),
``clip`` (:func:`generate`: video, ground truth, deployment config) and ``__main__`` (the command line).
"""

from trafficstream.bench.synthetic.bank import default_cache_dir, sprite_bank
from trafficstream.bench.synthetic.camera import PinholeCamera
from trafficstream.bench.synthetic.clip import CAMERA_ID, GT_VERSION, SyntheticClip, generate
from trafficstream.bench.synthetic.scene import SceneParams

__all__ = [
    "CAMERA_ID",
    "GT_VERSION",
    "PinholeCamera",
    "SceneParams",
    "SyntheticClip",
    "default_cache_dir",
    "generate",
    "sprite_bank",
]
