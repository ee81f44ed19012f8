"""``make bench``: measure, don't guess. Writes JSON under ``var/bench/`` and prints a summary JSON line.

1. Model stages in isolation (bench/detector_bench.py): detector ms/frame per input size / model, embedder.
2. The whole pipeline as deployed locally (infra/demo.run_pipeline, ``spark-submit`` on local[2]) on the
   demo cameras: frames/s end to end, per-stage ms per frame (decode, detect, embed, track, speed, sinks),
   micro-batch compute vs sink time, tracking-state bytes per camera, message sizes, peak memory (RSS) of
   the job's process tree.

3. Live latency (bench/live.py): 1, 2 and 4 cameras replayed as live 30 fps cameras, load shedding on and
   off; capture -> results-topic latency, detection rate, stride, skips (``bench/results/live.json``).

4. Side by side (bench/throughput.py, before the pipeline, ``--reps`` repetitions each): the detector alone at
   batch 1 and 8 and the embedder alone; baseline A (the job's per-frame code in one process, no broker, Spark
   or tables) and baseline B (the same with a naive seek-per-frame reader); next to the pipeline's frames/s
   (overall and per camera), the ratios ``pipeline_over_A`` / ``pipeline_over_B`` and the targets, with the
   machine, package versions, date and command: ``bench/results/latest.json``.

5. Scaling over executors (bench/scaling.py, after the pipeline): the packaged job on a Spark standalone cluster
   on this machine, 1 and 2 single-core executors x 1, 2 and 4 Kafka partitions, the demo's 2 cameras
   (``--scaling-frames`` each): frames/s, speed-up and stage 2's share per run (``bench/results/scaling.json``,
   and under ``"scaling"`` in ``latest.json``). About 10-12 minutes at the default 120 frames per camera.

    python -m trafficstream.bench.run [--frames 40] [--config infra/config/demo.yaml] [--skip-models]
        [--skip-live] [--live-seconds 180] [--skip-baselines] [--reps 3] [--baseline-frames N] [--b-frames 60]
        [--skip-scaling] [--scaling-frames 120]
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import polars as pl

from trafficstream import tables
from trafficstream.analysis import number
from trafficstream.bench import throughput
from trafficstream.config import PROJECT_ROOT, add_config_arguments, load_settings
from trafficstream.logs import setup_logging

log = logging.getLogger("bench")
OUT = PROJECT_ROOT / "var" / "bench"
LATEST = PROJECT_ROOT / "bench" / "results" / "latest.json"


class RssSampler(threading.Thread):
    """Peak summed resident memory of the processes whose command line mentions ``needle``."""

    def __init__(self, needle: str, every_s: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.needle, self.every_s, self.peak_mb = needle, every_s, 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every_s):
            total = 0
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    if self.needle in (proc / "cmdline").read_bytes().decode(errors="ignore"):
                        for line in (proc / "status").read_text().splitlines():
                            if line.startswith("VmRSS:"):
                                total += int(line.split()[1])
                except OSError:
                    continue
            self.peak_mb = max(self.peak_mb, total / 1024)

    def stop(self) -> float:
        self._halt.set()
        self.join()
        return round(self.peak_mb, 1)


def stateful_figures(delta_root: Path) -> dict[str, Any]:
    frames = pl.read_delta(str(delta_root / tables.FRAMES))
    state = (
        frames.drop_nulls("state_bytes")
        .group_by("camera_id")
        .agg(pl.col("state_bytes").mean().round(0).alias("mean"), pl.col("state_bytes").max().alias("max"))
    )
    return {
        "state_bytes_per_camera": {r["camera_id"]: {"mean": r["mean"], "max": r["max"]} for r in state.to_dicts()},
        "stateful_ms_per_frame": round(number((frames["track_ms"] + frames["speed_ms"]).mean()), 2),
        "stateful_ms_p90": round(number((frames["track_ms"] + frames["speed_ms"]).quantile(0.9)), 2),
    }


def camera_throughput(delta_root: Path) -> dict[str, dict[str, Any]]:
    """Each camera's frames / (its last ``processed_ts`` - its first ``ingest_ts``), from the frames table: the
    cameras are ingested side by side, so this is the camera's own rate while sharing the job."""
    frames = pl.read_delta(str(delta_root / tables.FRAMES))
    out: dict[str, dict[str, Any]] = {}
    spans = frames.group_by("camera_id").agg(
        pl.len().alias("frames"),
        pl.col("ingest_ts").min().alias("first_ingest"),
        pl.col("processed_ts").max().alias("last_processed"),
    )
    for r in spans.sort("camera_id").to_dicts():
        seconds = (r["last_processed"] - r["first_ingest"]).total_seconds()
        out[r["camera_id"]] = {
            "frames": r["frames"],
            "seconds": round(seconds, 2),
            "fps": round(r["frames"] / seconds, 2) if seconds > 0 else None,
        }
    return out


def pipeline_figures(stats: dict[str, Any], per_camera: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The pipeline run's throughput as ``latest.json`` shows it (one run: n = 1)."""
    return {
        "fps": throughput.summarise([stats.get("pipeline_fps")]),
        "fps_definition": "frames / (last processed_ts - first ingest_ts) of the frames Delta table; per camera "
        "over the camera's own rows; one run of the whole clips (n = 1)",
        "frames_ingested": stats.get("frames_ingested"),
        "frames_processed": stats.get("frames_processed"),
        "frames_dead_lettered": stats.get("frames_dead_lettered"),
        "micro_batches": stats.get("micro_batches"),
        "stage_ms_per_frame": stats.get("stage_ms_per_frame"),
        "wall_seconds_with_startup": stats.get("seconds"),
        "per_camera": per_camera,
    }


def latest_report(
    context: dict[str, Any],
    measured: dict[str, Any],
    stats: dict[str, Any],
    per_camera: dict[str, Any],
    scaling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``bench/results/latest.json``: run context, models alone, baselines A and B, the pipeline, the ratios and
    the targets, and (when run) the scaling over executors of bench/scaling.py."""
    pipeline = pipeline_figures(stats, per_camera)
    motorway = per_camera.get(throughput.MOTORWAY, {}).get("fps")
    extra = {} if scaling is None else {"scaling": scaling}
    return {
        **context,
        **measured,
        "pipeline": pipeline,
        "comparison": throughput.comparison(
            throughput.median_of(pipeline["fps"]),
            throughput.median_of(measured.get("baseline_a", {}).get("fps")),
            throughput.median_of(measured.get("baseline_b", {}).get("fps")),
            motorway,
            throughput.median_of(measured.get("baseline_a_batched", {}).get("fps")),
        ),
        **extra,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trafficstream.bench.run", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--frames", type=int, default=40, help="frames per model configuration")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per camera in the pipeline run")
    parser.add_argument("--live-seconds", type=float, default=180.0, help="per live-latency scenario")
    parser.add_argument("--skip-live", action="store_true", help="skip the live-latency scenarios (bench/live.py)")
    parser.add_argument("--skip-baselines", action="store_true", help="skip baselines A and B (bench/throughput.py)")
    parser.add_argument(
        "--reps", type=int, default=throughput.default_reps(), help="repetitions of each side-by-side figure"
    )
    parser.add_argument(
        "--baseline-frames", type=int, default=None, help="baseline A frames per camera (default: --max-frames, all)"
    )
    parser.add_argument("--b-frames", type=int, default=60, help="baseline B frames per camera (the first ones)")
    parser.add_argument(
        "--skip-scaling",
        action="store_true",
        help="skip the scaling runs (bench/scaling.py: 1 and 2 executors x 1, 2, 4 Kafka partitions on a Spark "
        "standalone cluster, 6 runs of about 100 s each at the default --scaling-frames: 10-12 minutes)",
    )
    parser.add_argument(
        "--scaling-frames",
        type=int,
        default=120,
        help="frames per camera in each scaling run (default 120; a run costs ~50 s of start-up and drain plus "
        "the frames at ~4 frames/s on 2 cores)",
    )
    args = parser.parse_args(argv)
    setup_logging("INFO")
    OUT.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"ts": time.time()}
    context = throughput.run_context()
    workdir = OUT / "pipeline"
    settings = load_settings(args.config, args.overrides + [f"storage.var_dir={workdir}"])

    if not args.skip_models:
        from trafficstream.bench import detector_bench

        detector_bench.main(["--frames", str(args.frames), "--out", str(OUT / "detector.json")])
        summary["models"] = json.loads((OUT / "detector.json").read_text())

    # Before the pipeline, in this process alone: the single-process baselines and the models at batch 1 / 8.
    measured = throughput.measure(
        settings,
        reps=args.reps,
        frames=args.baseline_frames if args.baseline_frames is not None else args.max_frames,
        b_frames=args.b_frames,
        model_frames=args.frames,
        models=not args.skip_models,
        baselines=not args.skip_baselines,
    )

    from trafficstream.infra.demo import run_pipeline

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    # The job's JVM (pyspark on its classpath) and its Python workers (pyspark.daemon); run bench alone.
    sampler = RssSampler("pyspark")
    sampler.start()
    stats = run_pipeline(settings, workdir, max_frames=args.max_frames, dashboard=False)
    stats["peak_rss_mb_job"] = sampler.stop()
    stats.update(stateful_figures(settings.delta_root))
    summary["pipeline"] = stats
    latest = latest_report(context, measured, stats, camera_throughput(settings.delta_root))
    summary["side_by_side"] = latest["comparison"]
    throughput.write_json(LATEST, latest)
    throughput.log_summary(latest)
    log.info("side by side: %s; wrote %s", {k: v for k, v in latest["comparison"].items() if k != "targets"}, LATEST)
    (OUT / "pipeline.json").write_text(json.dumps(stats, indent=2, default=str))
    if not args.skip_scaling:  # the packaged job on a standalone cluster: bench/results/scaling.json
        from trafficstream.bench import scaling

        scaling_args = ["--max-frames", str(args.scaling_frames)]
        if args.config:
            scaling_args += ["--config", str(args.config)]
        scaled = scaling.run(scaling_args + [a for o in args.overrides for a in ("--set", o)])
        summary["scaling"] = scaled["table"]
        latest = latest_report(context, measured, stats, camera_throughput(settings.delta_root), scaled)
        throughput.write_json(LATEST, latest)
        log.info("scaling over executors: %s; added to %s", scaled["table"], LATEST)
    if not args.skip_live:  # 1, 2, 4 live cameras, load shedding on and off: bench/results/live.json
        from trafficstream.bench import live

        live_args = (["--config", str(args.config)] if args.config else []) + ["--seconds", str(args.live_seconds)]
        live.main(live_args + [a for o in args.overrides for a in ("--set", o)])
        summary["live"] = json.loads(live.RESULTS.joinpath("live.json").read_text())
    (OUT / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
    log.info("wrote %s", OUT / "summary.json")
    print(
        json.dumps(
            {
                k: stats.get(k)
                for k in (
                    "frames_processed",
                    "pipeline_fps",
                    "stage_ms_per_frame",
                    "stateful_ms_per_frame",
                    "state_bytes_per_camera",
                    "avg_frame_ref_bytes",
                    "avg_results_message_bytes",
                    "peak_rss_mb_job",
                    "seconds",
                )
            }
            | {k: latest["comparison"][k] for k in ("pipeline_over_A", "pipeline_over_B", "motorway_pipeline_fps")},
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
