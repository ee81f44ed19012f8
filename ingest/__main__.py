"""CLI: ``python -m trafficstream.ingest --config infra/config/demo.yaml [--camera ID ...] [--realtime]``.

Publishes one frame reference per frame of each camera's source to the frames topic and exits when every
reference is delivered (exit 1 if any camera failed or any delivery failed). The last line of output is a
JSON summary. ``--realtime --loop`` replays file cameras as live ones until stopped; live cameras (RTSP,
HTTP, V4L2 sources) are recorded into segments until stopped. SIGTERM or Ctrl-C stops cleanly (open segments
published, every reference delivered); ``--seconds N`` stops after N seconds.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading

from trafficstream.config import add_config_arguments, check_cameras_against_sources, settings_from_args
from trafficstream.errors import ConfigError
from trafficstream.ingest.publisher import DeliveryError
from trafficstream.ingest.worker import run_ingest
from trafficstream.logs import setup_logging

log = logging.getLogger("ingest")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trafficstream.ingest", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--camera", action="append", help="camera id to ingest (repeatable; default all)")
    parser.add_argument("--realtime", action="store_true", help="pace frames by their timestamps")
    parser.add_argument("--max-frames", type=int, default=None, help="stop each camera after N frames")
    parser.add_argument("--start-frame", type=int, default=0, help="skip frames before this index")
    parser.add_argument("--max-rate", type=float, default=None, help="publish at most N frames/s per camera")
    parser.add_argument("--loop", action="store_true", help="replay file cameras from the start at their end")
    parser.add_argument("--seconds", type=float, default=None, help="stop after N seconds (default: when done)")
    args = parser.parse_args(argv)
    if args.loop and not (args.realtime or args.seconds or args.max_frames or args.max_rate):
        parser.error("--loop publishes forever: add --realtime, --seconds, --max-frames or --max-rate")
    if args.seconds is not None and args.seconds <= 0:
        parser.error("--seconds must be positive")
    try:
        settings = settings_from_args(args)
        check_cameras_against_sources(settings)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    stop = threading.Event()
    previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())  # a clean stop, as Ctrl-C
    try:
        stats = run_ingest(
            settings,
            args.camera,
            realtime=args.realtime,
            max_frames=args.max_frames,
            start_frame=args.start_frame,
            max_rate_fps=args.max_rate,
            loop=args.loop,
            seconds=args.seconds,
            stop=stop,
        )
    except (ConfigError, DeliveryError) as exc:
        log.error("%s", exc)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    avg = stats.bytes_total / stats.total if stats.total else 0
    print(json.dumps({"frames": stats.frames, "errors": stats.errors, "avg_ref_bytes": round(avg, 1)}))
    return 1 if stats.errors else 0


if __name__ == "__main__":
    sys.exit(main())
