"""Live latency: N cameras replayed as live 30 fps cameras through the real job; capture -> results topic.

For each scenario (number of cameras x load shedding on/off) this starts a Kafka broker on 127.0.0.1 and the
vehicle job (``spark-submit``, local[2]), replays the motorway clip as N live cameras (``--realtime --loop``,
one pass after another, new frame identities each pass) for ``--seconds``, and consumes the results topic
meanwhile. It reports per scenario: capture -> results-topic latency p50 / p95 / max (first receipt of each
frame), the same in the first and the last minute (growth = falling behind), the detection rate each camera
got, the stride the job settled on, the share of frames skipped, and the frame accounting from the Delta
tables (frames in = detected + predicted + skipped + dead-lettered)::

    python -m trafficstream.bench.live [--cameras 1 2 4] [--seconds 180] [--shed on off] [--pools on off]
        [--min-partitions 2] [--out FILE]

``make bench`` runs it after the throughput figures; JSON goes to ``bench/results/live.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from trafficstream import tables
from trafficstream.config import PROJECT_ROOT, Settings, add_config_arguments, load_settings
from trafficstream.logs import setup_logging
from trafficstream.results import RESULT_FRAME, RESULT_HEALTH, parse_result

log = logging.getLogger("trafficstream.bench.live")
RESULTS = PROJECT_ROOT / "bench" / "results"
WORK = PROJECT_ROOT / "var" / "bench" / "live"
BASE_CAMERA = "motorway-overpass"
LIVE_TASKS = 2  # stage-1 tasks per micro-batch (spark.min_partitions): the job's local[2] cores


class ResultsListener(threading.Thread):
    """Consumes the results topic from the start; keeps the first receipt time of every frame message."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(daemon=True)
        self.settings = settings
        self.frames: dict[tuple[str, int], tuple[float, float, str, int]] = {}  # -> capture, received, analysis, stride
        self.health: list[dict[str, Any]] = []
        self.events: list[dict[str, Any]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        from confluent_kafka import Consumer

        consumer = Consumer(
            self.settings.kafka.python_config(
                **{
                    "group.id": f"bench-live-{time.time()}",
                    "auto.offset.reset": "earliest",
                    "enable.auto.commit": False,
                }
            )
        )
        consumer.subscribe([self.settings.kafka.results_topic])
        try:
            while not self._halt.is_set():
                msg = consumer.poll(0.2)
                if msg is None or msg.error():
                    continue
                received = time.time()
                try:
                    m = parse_result(msg.value())
                except Exception:
                    continue
                if m["type"] == RESULT_FRAME:
                    key = (m["camera_id"], m["frame_index"])
                    if key not in self.frames:  # at least once: the first receipt counts
                        self.frames[key] = (
                            m["capture_ts"],
                            received,
                            m.get("analysis", "detected"),
                            m.get("stride", 1),
                        )
                elif m["type"] == RESULT_HEALTH:
                    (self.events if "event" in m else self.health).append(m)
        finally:
            consumer.close()

    def stop(self) -> None:
        self._halt.set()
        self.join(10)


def _pct(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "max": None, "n": 0}
    a = np.asarray(values)
    return {
        "p50": round(float(np.percentile(a, 50)), 3),
        "p95": round(float(np.percentile(a, 95)), 3),
        "max": round(float(a.max()), 3),
        "n": len(values),
    }


def latency_figures(frames: dict[tuple[str, int], tuple[float, float, str, int]], t0: float, t1: float) -> dict:
    """Latency overall, per camera, in the first and the last minute of capture."""
    lat = [(cap, rec - cap, cam) for (cam, _), (cap, rec, _, _) in frames.items()]
    first = [d for cap, d, _ in lat if cap < t0 + 60]
    last = [d for cap, d, _ in lat if cap >= t1 - 60]
    per_camera = {cam: _pct([d for _, d, c in lat if c == cam]) for cam in sorted({c for _, _, c in lat})}
    return {
        "latency_s": _pct([d for _, d, _ in lat]),
        "first_minute_s": _pct(first),
        "last_minute_s": _pct(last),
        "per_camera_s": per_camera,
    }


def accounting(settings: Settings, ingested: int) -> dict[str, Any]:
    """Frames in = detected + predicted + skipped + dead-lettered, from the Delta tables."""
    frames = pl.read_delta(str(settings.delta_root / tables.FRAMES))
    kinds = Counter(frames.get_column("analysis").fill_null("detected").to_list())
    try:
        dead = pl.read_delta(str(settings.delta_root / tables.DEAD_LETTERS)).height
    except Exception:
        dead = 0
    out: dict[str, Any] = {k: kinds.get(k, 0) for k in ("detected", "predicted", "skipped")}
    out.update(dead_lettered=dead, frames_in=ingested)
    done = sum(out[k] for k in ("detected", "predicted", "skipped", "dead_lettered"))
    out["accounted"] = done == ingested
    out["backlog_at_stop"] = ingested - done  # still queued when the run stopped (a job that fell behind)
    per_camera = (
        frames.group_by("camera_id", "analysis").len().sort("camera_id", "analysis").to_dicts() if frames.height else []
    )
    out["per_camera"] = per_camera
    return out


def scenario(
    base: Settings,
    n_cameras: int,
    shed: bool,
    seconds: float,
    workdir: Path,
    max_offsets: int = 2000,
    pools: bool = True,
    min_partitions: int | None = LIVE_TASKS,
) -> dict[str, Any]:
    from trafficstream.infra.local_kafka import KafkaBroker
    from trafficstream.infra.pipeline import JobProcess, processed_counts
    from trafficstream.ingest.worker import run_ingest

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    cam = base.camera(BASE_CAMERA)
    cameras = [cam.model_copy(update={"id": f"live-{i + 1}", "name": f"{cam.name} #{i + 1}"}) for i in range(n_cameras)]
    with KafkaBroker(workdir / "kafka") as broker:
        settings = base.model_copy(
            update={
                "cameras": cameras,
                "kafka": base.kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers}),
                "storage": base.storage.model_copy(update={"var_dir": workdir}),
                "live": base.live.model_copy(update={"shed_load": shed}),
                # live: read everything that arrived (stale frames are skipped cheaply in stage 1), so a
                # backlog never waits in Kafka behind a small per-trigger cap; one stage-1 task per core (each
                # task costs ~0.1 s however few frames it holds: more tasks only add that to a small batch)
                "spark": base.spark.model_copy(
                    update={
                        "max_offsets_per_trigger": max_offsets,
                        "scheduler_pools": pools,
                        "min_partitions": min_partitions,
                    }
                ),
            }
        )
        k = settings.kafka
        broker.create_topics([k.frames_topic, k.results_topic, k.dead_letter_topic], partitions=k.partitions)
        listener = ResultsListener(settings)
        listener.start()
        job = JobProcess(settings, workdir).start()
        try:
            t_ready = time.time()
            job.wait_started(600)
            started_s = time.time() - t_ready
            t0 = time.time()
            stats = run_ingest(settings, realtime=True, loop=True, seconds=seconds)
            t1 = time.time()
            ingested = stats.total
            deadline = t1 + 60.0  # drain what is queued when the cameras stop (without shedding: a minute at most)
            while time.time() < deadline and sum(processed_counts(settings)) < ingested:
                job.check_alive()
                time.sleep(1.0)
            drained_s = time.time() - t1
            job.stop()
        finally:
            job.kill()
            listener.stop()
    result: dict[str, Any] = {
        "cameras": n_cameras,
        "shed_load": shed,
        "scheduler_pools": pools,
        "max_offsets_per_trigger": max_offsets,
        "min_partitions": min_partitions,
        "seconds": round(t1 - t0, 1),
        "job_ready_s": round(started_s, 1),
        "drain_s": round(drained_s, 1),
        "frames_ingested": ingested,
        "camera_fps": round(ingested / n_cameras / (t1 - t0), 2),
        **latency_figures(listener.frames, t0, t1),
    }
    detected = Counter(cam for (cam, _), (_, _, a, _) in listener.frames.items() if a == "detected")
    result["detection_fps_per_camera"] = {c: round(n / (t1 - t0), 2) for c, n in sorted(detected.items())}
    strides = [m.get("analysis", {}) for m in listener.health[-5:]]
    result["stride_settled"] = {c: a.get("stride") for s in strides for c, a in s.items()}
    result["frames"] = accounting(settings, ingested)
    result["share_skipped"] = round(result["frames"]["skipped"] / ingested, 3) if ingested else None
    result["budget_s"] = settings.live.latency_budget_s
    result["within_budget"] = bool(
        result["latency_s"]["p95"] is not None and result["latency_s"]["p95"] <= settings.live.latency_budget_s
    )
    log.info("scenario %d camera(s), shedding %s: %s", n_cameras, "on" if shed else "off", result["latency_s"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trafficstream.bench.live", description=__doc__.splitlines()[0])
    add_config_arguments(parser)
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2, 4], help="camera counts to run")
    parser.add_argument("--shed", choices=["on", "off"], nargs="+", default=["on", "off"])
    parser.add_argument(
        "--pools",
        choices=["on", "off"],
        nargs="+",
        default=["on"],
        help="FAIR scheduler pools (micro-batches before Delta commits); 'on off' compares them with shedding on",
    )
    parser.add_argument("--seconds", type=float, default=180.0, help="live run per scenario")
    parser.add_argument(
        "--min-partitions",
        type=int,
        default=LIVE_TASKS,
        help=f"spark.min_partitions of the job (default {LIVE_TASKS}: one stage-1 task per core)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "live.json")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    base = load_settings(args.config, args.overrides)
    runs = []
    for shed in args.shed:
        for pools in args.pools if shed == "on" else ["on"]:
            for n in args.cameras:
                workdir = WORK / f"{n}cam-shed-{shed}" if pools == "on" else WORK / f"{n}cam-shed-{shed}-pools-off"
                runs.append(
                    scenario(
                        base,
                        n,
                        shed == "on",
                        args.seconds,
                        workdir,
                        pools=pools == "on",
                        min_partitions=args.min_partitions,
                    )
                )
    held = [r["cameras"] for r in runs if r["shed_load"] and r["scheduler_pools"] and r["within_budget"]]
    summary = {
        "ts": time.time(),
        "command": "python -m trafficstream.bench.live " + " ".join(argv if argv is not None else sys.argv[1:]),
        "budget_s": base.live.latency_budget_s,
        "max_cameras_within_budget": max(held) if held else 0,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=2, default=str))
    log.info("wrote %s", args.out)
    print(
        json.dumps(
            {
                "max_cameras_within_budget": summary["max_cameras_within_budget"],
                "runs": [
                    {
                        k: r[k]
                        for k in (
                            "cameras",
                            "shed_load",
                            "scheduler_pools",
                            "latency_s",
                            "last_minute_s",
                            "share_skipped",
                            "stride_settled",
                        )
                    }
                    for r in runs
                ],
            },
            default=str,
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
