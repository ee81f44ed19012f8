"""The sprite bank a clip draws its vehicles from: the sample clips' crops that the detector still finds when
they drive on the synthetic road, built once and kept on disk (keyed by the inputs)."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from trafficstream.bench.synthetic.camera import PinholeCamera
from trafficstream.bench.synthetic.renderer import paste_sprite, render_background
from trafficstream.bench.synthetic.scene import SceneParams
from trafficstream.bench.synthetic.sprites import (
    SPRITE_SOURCES,
    Sprite,
    extract_sprites,
    load_sprites,
    save_sprites,
)
from trafficstream.bench.synthetic.traffic import Body, vehicle_box
from trafficstream.models.classes import VEHICLE_CLASSES
from trafficstream.models.detector import YoloOnnxDetector
from trafficstream.models.nms import box_iou

log = logging.getLogger(__name__)

SPRITE_BANK_VERSION = 5  # bump when extraction or validation changes: invalidates cached banks


def _distance_for_height(camera: PinholeCamera, x: float, body: Body, height_px: float) -> float:
    """Road distance at which ``body`` appears ``height_px`` tall (closest match on a 0.5 m grid)."""
    ys = np.arange(2.0, 300.0, 0.5)
    heights = np.array([np.inf if (b := vehicle_box(camera, x, y, body)) is None else b[3] - b[1] for y in ys])
    return float(ys[np.argmin(np.abs(heights - height_px))])


def validate_sprites(
    detector: YoloOnnxDetector,
    sprites: Sequence[Sprite],
    params: SceneParams,
    heights_px: Sequence[float] = (120, 75, 45),
    min_confidence: float = 0.3,
) -> list[Sprite]:
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
            # The last chunk may hold fewer sprites than there are lanes: those lanes stay empty.
            for x, idx in zip(lanes, chunks[(c + r) % len(chunks)], strict=False):
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
    return [s for s, ok in zip(sprites, hits.all(axis=1) & own_class, strict=True) if ok]


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
    log.info(
        "sprite bank: %d of %d crops kept (%s) in %.1f s",
        len(sprites),
        len(candidates),
        counts,
        time.perf_counter() - started,
    )
    if not any(s.class_name == "car" for s in sprites):
        raise RuntimeError(f"no usable car crops found in the sample clips under {data_dir}")
    if cached is not None:
        cached.parent.mkdir(parents=True, exist_ok=True)
        save_sprites(cached, sprites)
    return tuple(sprites)
