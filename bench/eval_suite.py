"""``make eval``: speed and identity across synthetic scene families, in ONE run of the real pipeline.

A single clip is easy to tune to; a deployment is not one scene. The suite renders one known-speed clip per
scene family and seed (``bench/synthetic/families.py``: camera heights, tilts and lenses, road grade and
curvature, traffic mixes, dusk, night, compression, camera sway ...), gives each its own camera (id
``<family>-<seed>``, with the passage section of the speed scenario), and runs them all through one Kafka
broker and one ``spark-submit`` of the vehicle job, as cameras of one deployment. Each camera is then scored
against its clip's ground truth (``bench/evaluate.py``), and the report gives, per family and pooled over
all clips: windowed speed error of trusted readings (mean abs, median, signed, share within 3 km/h),
passage-speed error, identity (vehicles with one id, switches, IDF1)::

    python -m trafficstream.bench.eval_suite [--families motorway night --seeds 11 23 --detect-every K \
        --out var/eval-suite --json bench/results/eval_suite.json]

The reported seeds are ``EVAL_SEEDS``; the test suite draws its clips from ``TEST_SEEDS`` (never reported).
The last line of output is the JSON report (also written to ``--json``).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import yaml

from trafficstream import tables
from trafficstream.bench.error_budget import LINKS, error_budget
from trafficstream.bench.evaluate import (
    HEADLINE,
    add_to_camera,
    passage_geometry,
    read_run_tables,
    run_pipeline,
    score,
    score_passage,
)
from trafficstream.bench.synthetic import SyntheticClip, generate
from trafficstream.bench.synthetic.families import EVAL_SEEDS, FAMILIES, family_scene
from trafficstream.config import PROJECT_ROOT, Settings, load_settings
from trafficstream.logs import setup_logging
from trafficstream.models.homography import RoadPlane

log = logging.getLogger("trafficstream.bench.eval_suite")

# What the issue asks of every family and of the pool (reported as met / missed, never asserted here).
TARGETS = {
    "mean_abs_speed_error_kmh": 1.0,
    "median_abs_speed_error_kmh": 0.7,
    "share_within_3kmh": 0.95,
    "abs_mean_speed_error_kmh": 0.3,
    "passage_share_within_2kmh": 1.0,
}


def camera_id(family: str, seed: int) -> str:
    return f"{family}-{seed}"


def render_suite(out: Path, families: Sequence[str], seeds: Sequence[int]) -> dict[str, SyntheticClip]:
    """Render every (family, seed) clip under ``out/clips``, each with the speed scenario's passage section."""
    clips: dict[str, SyntheticClip] = {}
    for family in families:
        scene = family_scene(family)
        for seed in seeds:
            cid = camera_id(family, seed)
            clip = generate(out / "clips" / cid, scene, seed=seed)
            add_to_camera(clip.config_path, passage_geometry(scene), note="passage lines and section: eval_suite")
            clips[cid] = clip
    return clips


def merged_config(clips: dict[str, SyntheticClip]) -> dict[str, Any]:
    """One deployment config whose cameras are the clips' cameras, renamed to their suite ids; Kafka, Spark and
    storage settings from the first clip (they are the same for all), storage roots of every clip."""
    merged: dict[str, Any] | None = None
    cameras: list[dict[str, Any]] = []
    roots: list[str] = []
    for cid, clip in clips.items():
        raw = yaml.safe_load(clip.config_path.read_text())
        if merged is None:
            merged = {k: v for k, v in raw.items() if k != "cameras"}
        (camera,) = raw["cameras"]
        camera["id"] = cid
        camera["name"] = f"{cid}: {camera.get('name', '')}".rstrip(": ")
        cameras.append(camera)
        roots.extend(r for r in raw.get("storage", {}).get("allowed_roots", []) if r not in roots)
    if merged is None:
        raise ValueError("no clips to evaluate")
    merged.setdefault("storage", {})["allowed_roots"] = roots
    merged["cameras"] = cameras
    return merged


def clip_budget(settings: Settings, clip: SyntheticClip, cid: str, detections: pl.DataFrame) -> dict[str, Any] | None:
    """The speed error budget of one camera of the run (bench/error_budget.py): per link, the signed and absolute
    mean error (km/h) it adds when fed true inputs one link at a time; None without a calibration. (A swaying
    camera's budget uses its reference view: its ``homography`` link then holds the sway the job registers.)"""
    camera = settings.camera(cid)
    if camera.calibration is None:
        return None
    budget = error_budget(
        json.loads(clip.ground_truth_path.read_text()),
        detections,
        RoadPlane.from_calibration(camera.calibration),
        tracker=settings.tracker,
        camera_id=cid,
        detector_input_hw=(int(settings.detector.input_height), int(settings.detector.input_width)),
        detect_tiles=[tuple(t) for t in camera.detect_tiles],
        fixes=False,
    )
    rec = budget["reconciliation"]
    return {
        "links": {name: budget["links"][name] for name in LINKS},
        "observed_mean_error_kmh": rec.get("observed_mean_error_kmh"),
        "unexplained_kmh": rec.get("unexplained_kmh"),
    }


def pooled_budget(budgets: Iterable[dict[str, Any] | None]) -> dict[str, dict[str, float | None]]:
    """Per link, the signed and absolute mean error over several clips' budgets, weighted by their readings."""
    present = [b for b in budgets if b]
    out: dict[str, dict[str, float | None]] = {}
    for name in LINKS:
        stats = [b["links"][name] for b in present if b["links"].get(name) and b["links"][name].get("n")]
        n = sum(s["n"] for s in stats)
        out[name] = {
            "n": n,
            "mean": round(sum(s["mean"] * s["n"] for s in stats) / n, 4) if n else None,
            "mean_abs": round(sum(s["mean_abs"] * s["n"] for s in stats) / n, 4) if n else None,
        }
    return out


def pooled(results: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Speed, passage and identity metrics over several clips' results (each scored ``keep_errors``): errors
    pooled reading by reading, vehicle counts summed, IDF1 and coverage averaged over clips."""
    results = list(results)
    budget = pooled_budget(r.get("budget") for r in results)
    errors = np.asarray([e for r in results for e in r.get("speed_errors_kmh", [])], dtype=np.float64)
    abs_err = np.abs(errors)
    passages = [v for r in results for v in (r.get("passage") or {}).get("per_vehicle", [])]
    p_err = [v["error_kmh"] for v in passages if v.get("error_kmh") is not None]
    eligible = sum((r.get("passage") or {}).get("eligible_vehicles", 0) or 0 for r in results)

    def mean_of(key: str) -> float | None:
        values = [r[key] for r in results if r.get(key) is not None]
        return round(float(np.mean(values)), 4) if values else None

    def r4(x: Any) -> float | None:
        return None if x is None else round(float(x), 4)

    return {
        "clips": len(results),
        "speed_samples": int(errors.size),
        "mean_abs_speed_error_kmh": r4(abs_err.mean()) if errors.size else None,
        "median_abs_speed_error_kmh": r4(np.median(abs_err)) if errors.size else None,
        "p95_abs_speed_error_kmh": r4(np.percentile(abs_err, 95)) if errors.size else None,
        "mean_speed_error_kmh": r4(errors.mean()) if errors.size else None,
        "share_within_3kmh": r4((abs_err <= 3.0 + 1e-9).mean()) if errors.size else None,
        "speed_coverage": mean_of("speed_coverage"),
        "true_vehicles": sum(r.get("true_vehicles", 0) for r in results),
        "vehicles_with_one_id": sum(r.get("vehicles_with_one_id", 0) for r in results),
        "id_switches": sum(r.get("id_switches", 0) for r in results),
        "idf1": mean_of("idf1"),
        "recall": mean_of("recall"),
        "passage_eligible_vehicles": eligible,
        "passage_measured_vehicles": len(p_err),
        "passage_share_measured": r4(len(p_err) / eligible) if eligible else None,
        "passage_mean_abs_error_kmh": r4(np.mean(np.abs(p_err))) if p_err else None,
        "passage_mean_error_kmh": r4(np.mean(p_err)) if p_err else None,
        "passage_max_abs_error_kmh": r4(np.max(np.abs(p_err))) if p_err else None,
        "passage_share_within_2kmh": r4(np.mean(np.abs(p_err) <= 2.0 + 1e-9)) if p_err else None,
        "error_budget": budget,
    }


def target_check(summary: dict[str, Any]) -> dict[str, bool | None]:
    """Which of the issue's targets a pooled summary meets (None: nothing measured)."""

    def at_most(key: str, limit: float) -> bool | None:
        v = summary.get(key)
        return None if v is None else v <= limit

    signed = summary.get("mean_speed_error_kmh")
    within3, passage2 = summary.get("share_within_3kmh"), summary.get("passage_share_within_2kmh")
    return {
        "mean_abs_le_1.0": at_most("mean_abs_speed_error_kmh", TARGETS["mean_abs_speed_error_kmh"]),
        "median_abs_le_0.7": at_most("median_abs_speed_error_kmh", TARGETS["median_abs_speed_error_kmh"]),
        "within_3kmh_ge_95pct": None if within3 is None else within3 >= TARGETS["share_within_3kmh"],
        "signed_within_0.3": None if signed is None else abs(signed) <= TARGETS["abs_mean_speed_error_kmh"],
        "every_passage_within_2kmh": None if passage2 is None else passage2 >= TARGETS["passage_share_within_2kmh"],
        "every_vehicle_one_id": summary["vehicles_with_one_id"] == summary["true_vehicles"]
        and summary["id_switches"] == 0,
    }


def report(per_clip: dict[str, dict[str, Any]], families: Sequence[str], seeds: Sequence[int]) -> dict[str, Any]:
    """Per family (pooled over its seeds) and overall (pooled over every clip), with the targets checked."""
    by_family = {}
    for family in families:
        summary = pooled(per_clip[camera_id(family, s)] for s in seeds)
        by_family[family] = {**summary, "targets": target_check(summary)}
    overall = pooled(per_clip.values())
    return {"families": by_family, "overall": {**overall, "targets": target_check(overall)}}


def _log_table(result: dict[str, Any]) -> None:
    head = ("family", "mae", "median", "signed", "<=3", "passage", "one-id", "switch", "fit", "calib", "box")
    log.info("%-18s %7s %7s %7s %7s %8s %7s %7s %7s %7s %7s", *head)
    rows = {**result["families"], "OVERALL": result["overall"]}
    for name, s in rows.items():
        b = s["error_budget"]
        log.info(
            "%-18s %7s %7s %7s %7s %8s %7s %7s %7s %7s %7s",
            name,
            s["mean_abs_speed_error_kmh"],
            s["median_abs_speed_error_kmh"],
            s["mean_speed_error_kmh"],
            s["share_within_3kmh"],
            s["passage_mean_abs_error_kmh"],
            f"{s['vehicles_with_one_id']}/{s['true_vehicles']}",
            s["id_switches"],
            b["truth_windowed"]["mean"],
            b["homography"]["mean"],
            b["box_bottom"]["mean"],
        )
    log.info("signed error budget (km/h): fit = windowed fit on true positions, calib = calibration, box = box bottom")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trafficstream.bench.eval_suite", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--families", nargs="+", choices=list(FAMILIES), default=list(FAMILIES))
    parser.add_argument("--seeds", nargs="+", type=int, default=list(EVAL_SEEDS))
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "var" / "eval-suite", help="wiped at start")
    parser.add_argument("--json", type=Path, default=None, help="also write the report here")
    parser.add_argument("--detect-every", type=int, default=None, metavar="K", help="detection stride of every camera")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    parser.add_argument(
        "--rescore", action="store_true", help="score the clips and run already under --out again (no new run)"
    )
    args = parser.parse_args(argv)
    setup_logging("INFO")
    t0 = time.time()
    out = args.out.resolve()
    config_path = out / "suite.yaml"
    if args.rescore:
        clips = {
            camera_id(f, s): SyntheticClip.in_folder(out / "clips" / camera_id(f, s))
            for f in args.families
            for s in args.seeds
        }
        settings = load_settings(config_path, [f"storage.var_dir={out / 'run'}", *args.overrides], environ={})
        rendered_s, ingested = 0.0, None  # scored again: the frames and times are the first run's
    else:
        shutil.rmtree(out, ignore_errors=True)
        clips = render_suite(out, args.families, args.seeds)
        config_path.write_text(
            "# make eval: one camera per scene family and seed (bench/eval_suite.py)\n"
            + yaml.safe_dump(merged_config(clips), sort_keys=False)
        )
        rendered_s = time.time() - t0
        settings, ingested = run_pipeline(config_path, out, args.overrides, detect_every=args.detect_every)
    # One run, many cameras: each table is read once, not once per camera.
    run_tables = read_run_tables(settings, (tables.DETECTIONS, tables.TRACKS, tables.CROSSINGS))
    detections = run_tables[tables.DETECTIONS]
    per_clip: dict[str, dict[str, Any]] = {}
    for cid, clip in clips.items():
        result = score(settings, clip, camera_id=cid, keep_errors=True, run_tables=run_tables)
        passage = score_passage(settings, clip, camera_id=cid, run_tables=run_tables)
        if passage is not None:
            result["passage"] = passage
        result["budget"] = clip_budget(settings, clip, cid, detections)
        per_clip[cid] = result
    result = report(per_clip, args.families, args.seeds)
    for r in per_clip.values():
        r.pop("speed_errors_kmh", None)
    result.update(
        seeds=args.seeds,
        detect_every=args.detect_every or 1,
        frames=ingested,
        render_seconds=round(rendered_s, 1),
        seconds=round(time.time() - t0, 1),
        per_clip={
            cid: {k: r.get(k) for k in (*HEADLINE, "mean_speed_error_kmh", "budget")} for cid, r in per_clip.items()
        },
        family_descriptions={f: FAMILIES[f].description for f in args.families},
    )
    _log_table(result)
    text = json.dumps(result, default=str)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1, default=str) + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
