"""``make eval``: score speed and identity on a synthetic known-speed clip run through the REAL pipeline.

Generates a clip (bench/synthetic/) for a seed nobody tuned on, starts a Kafka broker on 127.0.0.1,
submits the vehicle job with ``spark-submit``, ingests the clip, waits until every frame is processed,
then compares the ``detections`` Delta table with the ground truth (bench/metrics.py). The last line of
output is one JSON object (mean/median absolute speed error, share within 3 km/h, identity metrics, ...)::

    python -m trafficstream.bench.evaluate --seed 11 [--vehicles 14 --duration 12 --out var/eval]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import polars as pl

from trafficstream import tables
from trafficstream.bench.metrics import evaluate
from trafficstream.bench.synthetic import SceneParams, SyntheticClip, generate
from trafficstream.config import PROJECT_ROOT, Settings, load_settings
from trafficstream.logs import setup_logging

log = logging.getLogger("trafficstream.bench.evaluate")
HEADLINE = (
    "mean_abs_speed_error_kmh",
    "median_abs_speed_error_kmh",
    "share_within_3kmh",
    "true_vehicles",
    "vehicles_with_one_id",
    "id_switches",
    "idf1",
)


# A true vehicle counts once it is this tall: the 384x640 detector input finds 99% of vehicles of >= 40 px
# in 1280x720 frames (measured on these clips, `recall_by_height` in the output), and a vehicle that is still
# a 20 px speck at the far end of the region when the clip ends has not crossed the region.
MIN_HEIGHT_PX = 40


def score(settings: Settings, clip: SyntheticClip, min_height_px: float = MIN_HEIGHT_PX) -> dict[str, Any]:
    """Metrics of a finished run: the job's detections table against the clip's ground truth.

    Speed errors are over the speeds the pipeline reports as trusted (``speed_flag`` null): a flagged speed
    (too little history, outside the calibrated area, ...) is shown as untrusted, never acted on;
    ``speed_coverage`` says which share of matched detections carried a trusted speed."""
    detections = pl.read_delta(settings.table_uri(tables.DETECTIONS))
    result = evaluate(
        clip.ground_truth_path,
        detections,
        window_s=settings.tracker.speed_window_s,
        exclude_flagged=True,
        min_height_px=min_height_px,
    )
    result.pop("per_vehicle", None)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trafficstream.bench.evaluate", description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--vehicles", type=int, default=14)
    parser.add_argument("--duration", type=float, default=12.0)
    parser.add_argument("--min-kmh", type=float, default=60.0)
    parser.add_argument("--max-kmh", type=float, default=130.0)
    parser.add_argument("--out", type=Path, default=PROJECT_ROOT / "var" / "eval", help="wiped at start")
    parser.add_argument(
        "--detect-every", type=int, default=None, metavar="K", help="detection stride of the camera (tracker between)"
    )
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    from trafficstream.infra.local_kafka import KafkaBroker
    from trafficstream.infra.pipeline import JobProcess, wait_processed
    from trafficstream.ingest.worker import run_ingest

    t0 = time.time()
    out = args.out.resolve()
    shutil.rmtree(out, ignore_errors=True)
    scene = SceneParams(n_vehicles=args.vehicles, duration_s=args.duration, min_kmh=args.min_kmh, max_kmh=args.max_kmh)
    clip = generate(out / "clip", scene, seed=args.seed)
    log.info("synthetic clip %s (seed %d)", clip.video_path, args.seed)
    with KafkaBroker(out / "kafka") as broker:
        settings = load_settings(
            clip.config_path,
            [f"kafka.bootstrap_servers={broker.bootstrap_servers}", f"storage.var_dir={out / 'run'}", *args.overrides],
        )
        if args.detect_every:
            cams = [c.model_copy(update={"detect_every": args.detect_every}) for c in settings.cameras]
            settings = settings.model_copy(update={"cameras": cams})
        k = settings.kafka
        broker.create_topics([k.frames_topic, k.results_topic, k.dead_letter_topic], partitions=k.partitions)
        job = JobProcess(settings, out).start()
        try:
            job.wait_started()
            ingested = run_ingest(settings).total
            wait_processed(settings, ingested, job)
            if job.stop() != 0:
                raise RuntimeError(f"vehicle job failed:\n{job.log_tail()}")
        finally:
            job.kill()
    result = score(settings, clip)
    result.update(
        seed=args.seed,
        detect_every=args.detect_every or 1,
        frames=ingested,
        seconds=round(time.time() - t0, 1),
        ground_truth=str(clip.ground_truth_path),
    )
    for key in HEADLINE:
        log.info("%-28s %s", key, result.get(key))
    print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
