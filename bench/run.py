"""``make bench``: measure, don't guess. Writes JSON under ``var/bench/`` and prints a summary JSON line.

1. Model stages in isolation (bench/detector_bench.py): detector ms/frame per input size / model, embedder.
2. The whole pipeline as deployed locally (infra/demo.run_pipeline, ``spark-submit`` on local[2]) on the
   demo cameras: frames/s end to end, per-stage ms per frame (decode, detect, embed, track, speed, sinks),
   micro-batch compute vs sink time, tracking-state bytes per camera, message sizes, peak memory (RSS) of
   the job's process tree.

3. Live latency (bench/live.py): 1, 2 and 4 cameras replayed as live 30 fps cameras, load shedding on and
   off; capture -> results-topic latency, detection rate, stride, skips (``bench/results/live.json``).

    python -m trafficstream.bench.run [--frames 40] [--config infra/config/demo.yaml] [--skip-models]
        [--skip-live] [--live-seconds 180]
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
from trafficstream.config import PROJECT_ROOT, add_config_arguments, load_settings
from trafficstream.logs import setup_logging

log = logging.getLogger("bench")
OUT = PROJECT_ROOT / "var" / "bench"


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trafficstream.bench.run", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--frames", type=int, default=40, help="frames per model configuration")
    parser.add_argument("--skip-models", action="store_true")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per camera in the pipeline run")
    parser.add_argument("--live-seconds", type=float, default=180.0, help="per live-latency scenario")
    parser.add_argument("--skip-live", action="store_true", help="skip the live-latency scenarios (bench/live.py)")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    OUT.mkdir(parents=True, exist_ok=True)
    summary: dict[str, Any] = {"ts": time.time()}

    if not args.skip_models:
        from trafficstream.bench import detector_bench

        detector_bench.main(["--frames", str(args.frames), "--out", str(OUT / "detector.json")])
        summary["models"] = json.loads((OUT / "detector.json").read_text())

    from trafficstream.infra.demo import run_pipeline

    workdir = OUT / "pipeline"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    settings = load_settings(args.config, args.overrides + [f"storage.var_dir={workdir}"])
    # The job's JVM (pyspark on its classpath) and its Python workers (pyspark.daemon); run bench alone.
    sampler = RssSampler("pyspark")
    sampler.start()
    stats = run_pipeline(settings, workdir, max_frames=args.max_frames, dashboard=False)
    stats["peak_rss_mb_job"] = sampler.stop()
    stats.update(stateful_figures(settings.delta_root))
    summary["pipeline"] = stats
    (OUT / "pipeline.json").write_text(json.dumps(stats, indent=2, default=str))
    if not args.skip_live:  # 1, 2, 4 live cameras, load shedding on and off: bench/results/live.json
        from trafficstream.bench import live

        live_args = ["--config", str(args.config), "--seconds", str(args.live_seconds)]
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
            },
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
