"""``make demo``: the whole pipeline on the sample clips, on this machine, in one command.

Starts a real Kafka broker on 127.0.0.1, creates the topics, starts the dashboard (its URL is printed
before processing begins), submits the vehicle job with ``spark-submit``, ingests every configured camera,
waits until every frame is processed or dead-lettered, stops what it started and prints ONE JSON line last.
From a terminal the dashboard and broker keep serving after that line until Ctrl-C.
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

from trafficstream.config import PROJECT_ROOT, Settings, add_config_arguments, load_settings
from trafficstream.errors import ConfigError
from trafficstream.infra.local_kafka import KafkaBroker
from trafficstream.infra.pipeline import JobProcess, pipeline_stats, wait_processed
from trafficstream.ingest.worker import run_ingest
from trafficstream.logs import setup_logging

log = logging.getLogger("demo")


def run_pipeline(
    base: Settings,
    workdir: Path,
    *,
    cameras: list[str] | None = None,
    max_frames: int | None = None,
    realtime: bool = False,
    dashboard: bool = True,
    keep_serving: bool = False,
) -> dict[str, Any]:
    """Broker -> topics -> (dashboard) -> spark-submit job -> ingest -> wait -> stop; returns the figures."""
    t_start = time.time()
    broker = KafkaBroker(workdir / "kafka")
    broker.start()
    board = job = None
    try:
        settings = base.model_copy(
            update={"kafka": base.kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers})}
        )
        k = settings.kafka
        broker.create_topics([k.frames_topic, k.results_topic, k.dead_letter_topic], partitions=k.partitions)
        log.info("Kafka broker on %s (pid %s)", broker.bootstrap_servers, broker.pid)
        if dashboard:
            from trafficstream.dashboards.app import serve_in_thread

            board = serve_in_thread(settings)
            print(f"Dashboard: {board.url}  (watch the clips being processed live)", flush=True)

        job = JobProcess(settings, workdir).start()
        job.wait_started()
        log.info("vehicle job running (pid %s), log %s", job.pid, job.log_path)

        ingest = run_ingest(settings, cameras, realtime=realtime, max_frames=max_frames)
        ingested = ingest.total
        log.info("ingested %d frame references from %d camera(s)", ingested, len(ingest.frames))
        wait_processed(settings, ingested, job)
        rc = job.stop()
        if rc != 0:
            raise RuntimeError(f"vehicle job exited with {rc}:\n{job.log_tail()}")
        stats = {"frames_ingested": ingested, **pipeline_stats(settings, job)}
        stats["avg_frame_ref_bytes"] = round(ingest.bytes_total / ingested, 1) if ingested else None
        stats["ingest_errors"] = ingest.errors
        stats["dashboard_url"] = board.url if board else None
        stats["seconds"] = round(time.time() - t_start, 1)
        if keep_serving and board is not None:
            print(json.dumps(stats), flush=True)
            log.info("dashboard and broker keep serving at %s; Ctrl-C to stop", board.url)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                pass
        return stats
    finally:
        if job is not None:
            job.kill()
        if board is not None:
            board.stop()
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trafficstream.infra.demo", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument(
        "--workdir",
        type=Path,
        default=PROJECT_ROOT / "var" / "demo",
        help="broker data, Delta tables, checkpoints, logs (wiped at start)",
    )
    parser.add_argument("--camera", action="append", help="only these cameras (default: all configured)")
    parser.add_argument("--max-frames", type=int, default=None, help="frames per camera (default: whole clip)")
    parser.add_argument("--realtime", action="store_true", help="ingest at the clips' own frame rate")
    parser.add_argument("--no-dashboard", action="store_true")
    parser.add_argument(
        "--keep-serving",
        choices=["auto", "yes", "no"],
        default="auto",
        help="keep dashboard + broker up after the JSON line (auto: when run from a terminal)",
    )
    args = parser.parse_args(argv)
    workdir = args.workdir.resolve()
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    try:
        base = load_settings(args.config, args.overrides + [f"storage.var_dir={workdir}"])
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(base.log_level)
    keep = args.keep_serving == "yes" or (args.keep_serving == "auto" and sys.stdin.isatty())
    stats = run_pipeline(
        base,
        workdir,
        cameras=args.camera,
        max_frames=args.max_frames,
        realtime=args.realtime,
        dashboard=not args.no_dashboard,
        keep_serving=keep,
    )
    if not (keep and not args.no_dashboard):
        print(json.dumps(stats), flush=True)  # the last line of output (logs go to stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
