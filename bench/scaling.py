"""Scaling over executors: frames/s of the packaged job on a Spark standalone cluster, 1 and 2 executors, N cameras
over P Kafka partitions, and stage 2's share of the work.

For each combination (executors x Kafka partitions x cameras) this starts a Spark standalone cluster on 127.0.0.1
(infra/cluster.py: a master and ``executors`` workers of ONE core each, from the pyspark distribution's own
classes), creates fresh topics with P partitions on a local Kafka broker, submits the job as a data engineer
ships it (``make package``'s ``--py-files`` zip and entry file, ``spark-submit --master spark://...
--total-executor-cores E --executor-cores 1``, an interpreter that has the dependencies but NOT this project),
ingests the N cameras as fast as possible (``--max-frames`` frames each; cameras beyond the configured ones are
copies of them under new ids, e.g. ``motorway-overpass-2``), waits until every frame is processed or
dead-lettered, and stops everything it started by process id. Each run has its own var dir.

Per run it reports: frames/s end to end (frames / (last ``processed_ts`` - first ``ingest_ts``) of the frames
Delta table, as bench/run.py defines it) overall and per camera, frames in / processed / dead-lettered,
micro-batches, frames per Kafka partition, per-stage ms per frame, and stage 2 (the stateful stage keyed by
camera: ``track_ms + speed_ms``): its share of the per-frame compute, its ms per frame, and the busiest camera's
stage-2 seconds over the run's span (1.0: that camera's key alone would fill the run: stage 2 the bottleneck).
JSON goes to ``bench/results/scaling.json``; ``make bench`` (bench/run.py) embeds it in ``latest.json``::

    python -m trafficstream.bench.scaling --executors 1 2 --partitions 1 2 4 --cameras 2 --max-frames 120

Spark's ``minPartitions`` is off by default (``--min-partitions``), so the Kafka partitions that hold frames set
stage 1's parallelism: a camera's frames all go to one partition (keyed by camera id). Everything runs on this
machine: the broker, the driver, the ingest and the executors share its cores, so read 2 executors on a
2-core machine as "does the job use a second core", not as a cluster's scaling.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import polars as pl

from trafficstream import tables
from trafficstream.analysis import number
from trafficstream.cameras import Camera
from trafficstream.config import PROJECT_ROOT, Settings, add_config_arguments, load_settings
from trafficstream.infra.pipeline import JOB_FILE, JobProcess, job_environ, spark_submit_command
from trafficstream.logs import setup_logging

log = logging.getLogger("trafficstream.bench.scaling")
RESULTS = PROJECT_ROOT / "bench" / "results" / "scaling.json"
WORK = PROJECT_ROOT / "var" / "bench" / "scaling"
STAGE1_MS = ("decode_ms", "detect_ms", "embed_ms")
STAGE2_MS = ("track_ms", "speed_ms")  # stage 2: applyInPandasWithState keyed by camera
WORKER_MEMORY = "6g"  # two workers offer 12 GB at most
EXECUTOR_MEMORY = "3g"
FPS_DEFINITION = (
    "frames / (last processed_ts - first ingest_ts) of the frames Delta table; per camera over its own rows"
)
STAGE2_DEFINITION = (
    "share: sum(track_ms + speed_ms) / sum(decode_ms + detect_ms + embed_ms + track_ms + speed_ms) over the "
    "run's frames; camera_load_max: the busiest camera's sum(track_ms + speed_ms) / the run's span (stage 2 "
    "works on one camera's frames one after another: near 1.0 it is the bottleneck)"
)


# -- pure helpers ------------------------------------------------------------------------------------------------
def _round(value: float | None, ndigits: int = 2) -> float | None:
    return None if value is None else round(value, ndigits)


def _span_s(frames: pl.DataFrame) -> float | None:
    """Seconds from the first ``ingest_ts`` to the last ``processed_ts``; ``None`` without a positive span."""
    if not frames.height:
        return None
    first, last = frames["ingest_ts"].min(), frames["processed_ts"].max()
    if not isinstance(first, datetime) or not isinstance(last, datetime):
        return None
    seconds = (last - first).total_seconds()
    return seconds if seconds > 0 else None


def _ms_sum(frames: pl.DataFrame, columns: Sequence[str]) -> float:
    if not frames.height:
        return 0.0
    return float(frames.select(pl.sum_horizontal([pl.col(c).fill_null(0.0) for c in columns]).sum()).item())


def throughput_figures(frames: pl.DataFrame) -> dict[str, Any]:
    """Frames/s of a run from its frames table: overall and per camera (as bench/run.py ``camera_throughput``),
    micro-batches that wrote frames, frames per Kafka partition and per analysis (detected / predicted / ...)."""
    span = _span_s(frames)
    per_camera: dict[str, dict[str, Any]] = {}
    for camera_id in sorted(frames["camera_id"].unique().to_list()) if frames.height else []:
        rows = frames.filter(pl.col("camera_id") == camera_id)
        seconds = _span_s(rows)
        per_camera[camera_id] = {
            "frames": rows.height,
            "seconds": _round(seconds),
            "fps": round(rows.height / seconds, 2) if seconds else None,
        }

    def counts(column: str) -> dict[str, int]:
        if not frames.height or column not in frames.columns:
            return {}
        grouped = frames.group_by(column).len().sort(column).to_dicts()
        return {str(r[column]): int(r["len"]) for r in grouped}

    return {
        "frames": frames.height,
        "seconds": _round(span),
        "fps": round(frames.height / span, 2) if span else None,
        "per_camera": per_camera,
        "micro_batches_with_frames": frames["batch_id"].n_unique() if frames.height else 0,
        "frames_per_kafka_partition": counts("kafka_partition"),
        "frames_by_analysis": counts("analysis"),
    }


def stage2_share(frames: pl.DataFrame) -> dict[str, float | None]:
    """Stage 2's (``track_ms + speed_ms``) share of the per-frame compute, ms per frame of both stages, and the
    busiest camera's stage-2 seconds over the run's span. Missing timings count as 0; ``None`` without frames."""
    if not frames.height:
        return {
            "share": None,
            "stage2_ms_per_frame": None,
            "stage1_ms_per_frame": None,
            "camera_load_max": None,
        }
    stage1, stage2 = _ms_sum(frames, STAGE1_MS), _ms_sum(frames, STAGE2_MS)
    span = _span_s(frames)
    load = None
    if span:
        per_camera = frames.group_by("camera_id").agg(
            pl.sum_horizontal([pl.col(c).fill_null(0.0) for c in STAGE2_MS]).sum().alias("ms")
        )
        load = number(per_camera["ms"].max()) / 1000.0 / span
    return {
        "share": round(stage2 / (stage1 + stage2), 4) if stage1 + stage2 > 0 else None,
        "stage2_ms_per_frame": round(stage2 / frames.height, 2),
        "stage1_ms_per_frame": round(stage1 / frames.height, 2),
        "camera_load_max": _round(load, 4),
    }


def scaling_table(runs: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One row per run, ordered by cameras, partitions, executors, with the speed-up over the run with the fewest
    executors of the same cameras and partitions (``None`` where that run has no frames/s). Failed runs keep
    their ``error``."""
    runs = list(runs)
    fewest: dict[tuple[Any, Any], Mapping[str, Any]] = {}
    for r in runs:
        key = (r.get("cameras"), r.get("kafka_partitions"))
        if r.get("fps") is not None and (key not in fewest or r["executors"] < fewest[key]["executors"]):
            fewest[key] = r
    rows = []
    for r in sorted(runs, key=lambda r: (r.get("cameras", 0), r.get("kafka_partitions", 0), r.get("executors", 0))):
        base = fewest.get((r.get("cameras"), r.get("kafka_partitions")))
        fps = r.get("fps")
        stage2 = r.get("stage2") or {}
        row = {
            "cameras": r.get("cameras"),
            "kafka_partitions": r.get("kafka_partitions"),
            "executors": r.get("executors"),
            "fps": fps,
            "speedup": round(fps / base["fps"], 3) if fps is not None and base is not None and base["fps"] else None,
            "stage2_share": stage2.get("share"),
            "stage2_ms_per_frame": stage2.get("stage2_ms_per_frame"),
            "stage2_camera_load_max": stage2.get("camera_load_max"),
            "wall_s": r.get("wall_s"),
        }
        if r.get("error"):
            row["error"] = r["error"]
        rows.append(row)
    return rows


def scaled_cameras(cameras: Sequence[Camera], n: int) -> list[Camera]:
    """The first ``n`` cameras; beyond the configured ones, copies of them in turn under new ids (``ID-2``, ...)
    reading the same clips (the config allows several cameras on one source; only ids must be unique)."""
    if not cameras:
        raise ValueError("no cameras configured")
    out = list(cameras[:n])
    for i in range(len(out), n):
        cam = cameras[i % len(cameras)]
        copy_no = i // len(cameras) + 1
        out.append(cam.model_copy(update={"id": f"{cam.id}-{copy_no}", "name": f"{cam.name} #{copy_no}"}))
    return out


# -- the packaged job on the standalone cluster --------------------------------------------------------------------
@dataclass(frozen=True)
class Package:
    """``make package``'s ``--py-files`` zip and entry file, and an interpreter without this project."""

    py_files: Path
    entry: Path
    python: Path


def prepare_package(workdir: Path) -> Package:
    from trafficstream.infra.package import bare_python, build

    dist = build(workdir / "dist")
    return Package(py_files=dist["py_files"], entry=dist["entry"], python=bare_python(workdir / "env"))


class PackagedJob(JobProcess):
    """:class:`JobProcess` (wait, stop, kill by process id) submitting the packaged job to a standalone master:
    ``spark_submit_command`` with the entry file for the source file, ``--py-files`` and E single-core
    executors; the environment without PYTHONPATH (``job_environ`` puts the source tree there)."""

    def __init__(
        self,
        settings: Settings,
        workdir: Path,
        master: str,
        package: Package,
        executors: int,
        executor_memory: str = EXECUTOR_MEMORY,
    ) -> None:
        super().__init__(settings, workdir, master=master)
        self.package, self.executors, self.executor_memory = package, executors, executor_memory

    def command(self) -> list[str]:
        cmd = spark_submit_command(self.config, self.checkpoint, self.stop_file, self.master)
        at = cmd.index(str(JOB_FILE))
        cmd[at : at + 1] = [
            "--total-executor-cores",
            str(self.executors),
            "--executor-cores",
            "1",
            "--executor-memory",
            self.executor_memory,
            "--conf",
            f"spark.pyspark.python={self.package.python}",
            "--conf",
            f"spark.pyspark.driver.python={self.package.python}",
            "--py-files",
            str(self.package.py_files),
            str(self.package.entry),
        ]
        return cmd

    def environ(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
        base.update(PYSPARK_PYTHON=str(self.package.python), PYSPARK_DRIVER_PYTHON=str(self.package.python))
        env = job_environ(self.settings, base)
        env.pop("PYTHONPATH", None)
        return env

    def start(self) -> PackagedJob:
        self.stop_file.unlink(missing_ok=True)
        cmd = self.command()
        log.info("submitting the packaged job to %s with %d executor(s)", self.master, self.executors)
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.environ(),
            cwd=self.workdir,  # not the checkout: nothing there can stand in for the zip
            start_new_session=True,
        )
        return self


# -- one run, the matrix -------------------------------------------------------------------------------------------
def run_settings(
    base: Settings,
    *,
    cameras: int,
    partitions: int,
    var_dir: Path,
    bootstrap_servers: str,
    min_partitions: int | None,
) -> Settings:
    """The run's settings: N cameras, fresh topics of P partitions on the broker, its own var dir."""
    tag = uuid.uuid4().hex[:8]
    kafka = base.kafka.model_copy(
        update={
            "bootstrap_servers": bootstrap_servers,
            "partitions": partitions,
            "frames_topic": f"frames-{tag}",
            "results_topic": f"results-{tag}",
            "dead_letter_topic": f"dead-letter-{tag}",
        }
    )
    return base.model_copy(
        update={
            "cameras": scaled_cameras(base.cameras, cameras),
            "kafka": kafka,
            "storage": base.storage.model_copy(update={"var_dir": var_dir}),
            "spark": base.spark.model_copy(update={"min_partitions": min_partitions, "master": None}),
        }
    )


def run_one(
    base: Settings,
    broker: Any,
    package: Package,
    workdir: Path,
    *,
    executors: int,
    partitions: int,
    cameras: int,
    max_frames: int,
    min_partitions: int | None = None,
    worker_memory: str = WORKER_MEMORY,
    executor_memory: str = EXECUTOR_MEMORY,
) -> dict[str, Any]:
    """Cluster -> topics -> packaged job -> ingest -> wait -> stop, then the run's figures."""
    from trafficstream.infra.cluster import StandaloneCluster
    from trafficstream.infra.pipeline import pipeline_stats, wait_processed
    from trafficstream.ingest.worker import run_ingest

    t0 = time.time()
    var = workdir / f"e{executors}-p{partitions}-n{cameras}"
    shutil.rmtree(var, ignore_errors=True)
    var.mkdir(parents=True)
    settings = run_settings(
        base,
        cameras=cameras,
        partitions=partitions,
        var_dir=var,
        bootstrap_servers=broker.bootstrap_servers,
        min_partitions=min_partitions,
    )
    k = settings.kafka
    broker.create_topics([k.frames_topic, k.results_topic, k.dead_letter_topic], partitions=partitions)
    with StandaloneCluster(var / "cluster", workers=executors, cores=1, memory=worker_memory) as cluster:
        cluster_s = time.time() - t0
        job = PackagedJob(settings, var, cluster.master_url, package, executors, executor_memory).start()
        try:
            t_submit = time.time()
            job.wait_started(600)
            ready_s = time.time() - t_submit
            t_ingest = time.time()
            ingest = run_ingest(settings, max_frames=max_frames)
            ingest_s = time.time() - t_ingest
            log.info("ingested %d frame references in %.1f s; waiting for the job", ingest.total, ingest_s)
            wait_processed(settings, ingest.total, job, timeout_s=600 + 3 * ingest.total, progress=sys.stderr.isatty())
            processed_s = time.time() - t_ingest
            rc = job.stop()
            if rc != 0:
                raise RuntimeError(f"packaged job exited with {rc}:\n{job.log_tail()}")
        finally:
            job.kill()
    stats = pipeline_stats(settings, job)
    frames = pl.read_delta(str(settings.delta_root / tables.FRAMES))
    figures = throughput_figures(frames)
    run: dict[str, Any] = {
        "executors": executors,
        "cores_per_executor": 1,
        "kafka_partitions": partitions,
        "cameras": cameras,
        "camera_ids": [c.id for c in settings.cameras],
        "frames_per_camera": max_frames,
        "frames_ingested": ingest.total,
        "frames_processed": stats.get("frames_processed"),
        "frames_dead_lettered": stats.get("frames_dead_lettered"),
        "ingest_errors": ingest.errors,
        "fps": figures["fps"],
        "seconds": figures["seconds"],
        "per_camera": figures["per_camera"],
        "micro_batches": stats.get("micro_batches"),
        "micro_batches_with_frames": figures["micro_batches_with_frames"],
        "frames_per_kafka_partition": figures["frames_per_kafka_partition"],
        "frames_by_analysis": figures["frames_by_analysis"],
        "stage_ms_per_frame": stats.get("stage_ms_per_frame"),
        "stage2": stage2_share(frames),
        "cluster_start_s": round(cluster_s, 1),
        "job_ready_s": round(ready_s, 1),
        "ingest_s": round(ingest_s, 1),
        "processed_s": round(processed_s, 1),
        "wall_s": round(time.time() - t0, 1),
        "job_log": str(job.log_path),
    }
    log.info(
        "%d executor(s), %d partition(s), %d camera(s): %s frames/s, stage 2 share %s (%.0f s)",
        executors,
        partitions,
        cameras,
        run["fps"],
        run["stage2"]["share"],
        run["wall_s"],
    )
    return run


def run_matrix(
    base: Settings,
    *,
    executors: Sequence[int],
    partitions: Sequence[int],
    cameras: Sequence[int],
    max_frames: int,
    workdir: Path = WORK,
    min_partitions: int | None = None,
    worker_memory: str = WORKER_MEMORY,
    executor_memory: str = EXECUTOR_MEMORY,
) -> list[dict[str, Any]]:
    """Every combination, one at a time (one Spark application on the machine), on one broker: a run that
    fails is recorded with its ``error`` and the others still run."""
    from trafficstream.infra.local_kafka import KafkaBroker

    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    package = prepare_package(workdir)
    runs: list[dict[str, Any]] = []
    with KafkaBroker(workdir / "kafka") as broker:
        for n in cameras:
            for p in partitions:
                for e in executors:
                    try:
                        runs.append(
                            run_one(
                                base,
                                broker,
                                package,
                                workdir,
                                executors=e,
                                partitions=p,
                                cameras=n,
                                max_frames=max_frames,
                                min_partitions=min_partitions,
                                worker_memory=worker_memory,
                                executor_memory=executor_memory,
                            )
                        )
                    except Exception as exc:  # recorded; the other combinations still run
                        log.exception("run with %d executor(s), %d partition(s), %d camera(s) failed", e, p, n)
                        runs.append(
                            {
                                "executors": e,
                                "kafka_partitions": p,
                                "cameras": n,
                                "error": f"{type(exc).__name__}: {str(exc)[-2000:]}",
                            }
                        )
    return runs


def _min_partitions(text: str) -> int | None:
    return None if text.lower() in ("none", "null", "off", "0") else int(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m trafficstream.bench.scaling", description=__doc__.splitlines()[0])
    add_config_arguments(p)
    p.add_argument("--executors", type=int, nargs="+", default=[1, 2], help="executor counts (1 core each)")
    p.add_argument("--partitions", type=int, nargs="+", default=[1, 2, 4], help="Kafka partitions of the topics")
    p.add_argument("--cameras", type=int, nargs="+", default=[2], help="camera counts (copies beyond the config's)")
    p.add_argument("--max-frames", type=int, default=120, help="frames per camera per run (default 120)")
    p.add_argument(
        "--min-partitions",
        type=_min_partitions,
        default=None,
        help="Spark's minPartitions for the Kafka source (default none: the Kafka partitions set stage 1's tasks)",
    )
    p.add_argument("--worker-memory", default=WORKER_MEMORY, help="memory each worker offers (default 6g)")
    p.add_argument("--executor-memory", default=EXECUTOR_MEMORY, help="executor JVM heap (default 3g)")
    p.add_argument("--workdir", type=Path, default=WORK, help="broker, package, one var dir per run (wiped)")
    p.add_argument("--out", type=Path, default=RESULTS)
    return p


def run(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Parse ``argv``, run the matrix, write the JSON report to ``--out`` and return it."""
    from trafficstream.bench.throughput import run_context, write_json

    args = parser().parse_args(list(argv) if argv is not None else None)
    base = load_settings(args.config, args.overrides)
    t0 = time.time()
    runs = run_matrix(
        base,
        executors=args.executors,
        partitions=args.partitions,
        cameras=args.cameras,
        max_frames=args.max_frames,
        workdir=args.workdir.resolve(),
        min_partitions=args.min_partitions,
        worker_memory=args.worker_memory,
        executor_memory=args.executor_memory,
    )
    shares = [r["stage2"]["share"] for r in runs if r.get("stage2") and r["stage2"]["share"] is not None]
    report: dict[str, Any] = {
        **run_context(),
        "command": "python -m trafficstream.bench.scaling " + " ".join(argv if argv is not None else sys.argv[1:]),
        "fps_definition": FPS_DEFINITION,
        "stage2_definition": STAGE2_DEFINITION,
        "setup": {
            "master": "spark standalone on 127.0.0.1 (infra/cluster.py), one worker per executor, 1 core each",
            "submit": "packaged job: spark-submit --py-files trafficstream-<version>.zip vehicle_pipeline.py",
            "worker_memory": args.worker_memory,
            "executor_memory": args.executor_memory,
            "spark_min_partitions": args.min_partitions,
            "spark_max_offsets_per_trigger": base.spark.max_offsets_per_trigger,
            "spark_shuffle_partitions": base.spark.shuffle_partitions,
            "frames_per_camera": args.max_frames,
        },
        "table": scaling_table(runs),
        "stage2_share_max": max(shares) if shares else None,
        "failed_runs": sum(1 for r in runs if r.get("error")),
        "runs": runs,
        "seconds": round(time.time() - t0, 1),
    }
    write_json(args.out, report)
    log.info("wrote %s (%d runs in %.0f s)", args.out, len(runs), report["seconds"])
    return report


def main(argv: list[str] | None = None) -> int:
    setup_logging("INFO")
    report = run(argv)
    print(json.dumps({"table": report["table"], "stage2_share_max": report["stage2_share_max"]}, default=str))
    return 1 if report["failed_runs"] else 0


if __name__ == "__main__":
    sys.exit(main())
