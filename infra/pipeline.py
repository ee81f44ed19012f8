"""Run the whole local pipeline: the vehicle job under ``spark-submit``, waiting on it, and its figures.

Used by ``make demo`` (infra/demo.py), ``make eval``, ``make bench`` and the end-to-end tests, so they all
exercise the job exactly as a data engineer submits it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml
from confluent_kafka import Consumer, TopicPartition
from tqdm import tqdm

from trafficstream import tables
from trafficstream.config import PROJECT_ROOT, Settings, secret_environ, settings_to_dict
from trafficstream.infra.jars import spark_jars_csv

log = logging.getLogger(__name__)
JOB_FILE = PROJECT_ROOT / "streaming_jobs" / "vehicle_pipeline.py"


def write_settings(settings: Settings, path: Path) -> Path:
    """Materialise effective settings as a deployment file the job can be submitted with.

    No secret goes into the file (the job gets them through its environment, see :func:`job_environ`), and
    the file is private to this user all the same (0600): it still tells where everything lives.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.safe_dump(settings_to_dict(settings), sort_keys=False)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(fd, 0o600)  # O_CREAT's mode does not apply to a file that already existed
        f.write(text)
    return path


def job_environ(settings: Settings, base: dict[str, str] | None = None) -> dict[str, str]:
    """Environment of the spark-submit child: ``base`` (default: ours) plus the settings' secrets as
    ``TRAFFICSTREAM_...`` variables, which the job's load_settings reads (they never touch the disk)."""
    env = dict(os.environ if base is None else base)
    env.update(secret_environ(settings))
    env.setdefault("PYSPARK_PYTHON", sys.executable)
    env.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(PROJECT_ROOT), env.get("PYTHONPATH")]))
    return env


def spark_submit_command(config: Path, checkpoint: Path, stop_file: Path, master: str = "local[2]") -> list[str]:
    spark_submit = Path(sys.executable).parent / "spark-submit"
    return [
        str(spark_submit),
        "--master",
        master,
        "--jars",
        spark_jars_csv(),
        "--conf",
        "spark.sql.extensions=io.delta.sql.DeltaSparkSessionExtension",
        "--conf",
        "spark.sql.catalog.spark_catalog=org.apache.spark.sql.delta.catalog.DeltaCatalog",
        "--conf",
        "spark.ui.enabled=false",
        "--conf",
        "spark.driver.host=127.0.0.1",
        "--conf",
        "spark.driver.bindAddress=127.0.0.1",
        str(JOB_FILE),
        "--config",
        str(config),
        "--checkpoint",
        str(checkpoint),
        "--stop-file",
        str(stop_file),
    ]


class JobProcess:
    """The vehicle job as a ``spark-submit`` child process (started, stopped gracefully or killed by pid)."""

    def __init__(self, settings: Settings, workdir: Path, master: str = "local[2]", name: str = "job") -> None:
        self.settings = settings
        self.workdir = workdir
        self.config = write_settings(settings, workdir / f"{name}-settings.yaml")
        self.checkpoint = settings.checkpoint_root / "vehicles"
        self.stop_file = workdir / f"{name}.stop"
        self.log_path = workdir / f"{name}.log"
        self.master = master
        self.proc: subprocess.Popen | None = None

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self) -> JobProcess:
        self.stop_file.unlink(missing_ok=True)
        env = job_environ(self.settings)
        cmd = spark_submit_command(self.config, self.checkpoint, self.stop_file, self.master)
        log.info("starting the vehicle job: %s", " ".join(cmd[:3] + ["..."] + cmd[-7:]))
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            cmd, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT, start_new_session=True
        )
        return self

    def wait_started(self, timeout_s: float = 180) -> None:
        """The query is running once it has written its checkpoint metadata."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if (self.checkpoint / "metadata").exists():
                return
            self.check_alive()
            time.sleep(0.5)
        raise TimeoutError(f"vehicle job did not start within {timeout_s}s; see {self.log_path}")

    def check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"vehicle job exited with {self.proc.returncode}:\n{self.log_tail()}")

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def stop(self, timeout_s: float = 120) -> int:
        """Graceful: the job sees the stop file, stops its query and exits; then SIGTERM / SIGKILL."""
        if self.proc is None:
            return 0
        self.stop_file.touch()
        try:
            rc = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("job did not stop in %ss: terminating pid %s", timeout_s, self.proc.pid)
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                rc = self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                rc = self.proc.wait()
        self._log.close()
        return rc

    def kill(self) -> None:
        """Crash the job (SIGKILL to its whole process group: JVM and Python workers)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
            self._log.close()


# -- reading results back ---------------------------------------------------------------------------------
def delta_count(settings: Settings, table: str) -> int:
    from deltalake import DeltaTable
    from deltalake.exceptions import TableNotFoundError

    try:
        dt = DeltaTable(str(settings.delta_root / table))
    except TableNotFoundError:
        return 0
    # Sum of per-file row counts from the log: no data files are read.
    adds = pa.table(dt.get_add_actions(flatten=True))
    return int(sum(v for v in adds.column("num_records").to_pylist() if v is not None))


def processed_counts(settings: Settings) -> tuple[int, int]:
    return delta_count(settings, tables.FRAMES), delta_count(settings, tables.DEAD_LETTERS)


def wait_processed(
    settings: Settings, expected: int, job: JobProcess | None = None, timeout_s: float = 1800, progress: bool = True
) -> tuple[int, int]:
    """Block until frames processed + dead-lettered reaches ``expected`` (every ingested reference)."""
    deadline = time.time() + timeout_s
    bar = tqdm(total=expected, desc="processed", unit="frame", disable=not progress, mininterval=1.0)
    with bar:
        while True:
            done, dead = processed_counts(settings)
            bar.update(done + dead - bar.n)
            if done + dead >= expected:
                return done, dead
            if job is not None:
                job.check_alive()
            if time.time() > deadline:
                raise TimeoutError(f"only {done + dead}/{expected} frames processed after {timeout_s}s")
            time.sleep(1.0)


def topic_summary(settings: Settings, topic: str) -> dict[str, Any]:
    """Count the messages of a topic (by results ``type``) and their mean size, reading it from the start."""
    conf = settings.kafka.python_config(**{"group.id": f"stats-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False})
    consumer = Consumer(conf)
    try:
        md = consumer.list_topics(topic, timeout=10).topics[topic]
        parts = []
        for p in md.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                parts.append((p, low, high))
        consumer.assign([TopicPartition(topic, p, low) for p, low, _ in parts])
        remaining = sum(high - low for _, low, high in parts)
        by_type: dict[str, int] = {}
        sizes: dict[str, list[int]] = {}
        deadline = time.time() + 60
        while remaining > 0 and time.time() < deadline:
            for msg in consumer.consume(500, timeout=1.0):
                if msg.error():
                    continue
                remaining -= 1
                value = msg.value() or b""
                try:
                    kind = json.loads(value).get("type") or "other"
                except ValueError:
                    kind = "unparsable"
                by_type[kind] = by_type.get(kind, 0) + 1
                sizes.setdefault(kind, []).append(len(value))
        return {"messages": by_type, "mean_bytes": {k: round(statistics.fmean(v), 1) for k, v in sizes.items()}}
    finally:
        consumer.close()


def pipeline_stats(settings: Settings, job: JobProcess | None = None) -> dict[str, Any]:
    """Figures of a finished run, read back from the Delta tables and the topics."""
    import polars as pl

    from trafficstream.analysis import number

    root = settings.delta_root
    frames = pl.read_delta(str(root / tables.FRAMES))
    det = pl.read_delta(str(root / tables.DETECTIONS))
    tracks = pl.read_delta(str(root / tables.TRACKS))
    stats: dict[str, Any] = {
        "frames_processed": frames.height,
        "frames_dead_lettered": delta_count(settings, tables.DEAD_LETTERS),
        "vehicles_detected": det.height,
        "tracks": tracks.select(pl.struct("camera_id", "track_id").n_unique()).item() if tracks.height else 0,
        "delta_rows": {t: delta_count(settings, t) for t in tables.ALL_TABLES},
    }
    if frames.height:
        stage = {
            c.removesuffix("_ms"): round(number(frames[c].mean()), 2)
            for c in ("decode_ms", "detect_ms", "embed_ms", "track_ms", "speed_ms")
        }
        last_processed, first_ingested = frames["processed_ts"].max(), frames["ingest_ts"].min()
        if not isinstance(last_processed, datetime) or not isinstance(first_ingested, datetime):
            raise TypeError(f"expected timestamps, got {last_processed!r} and {first_ingested!r}")
        span = (last_processed - first_ingested).total_seconds()
        stats["pipeline_fps"] = round(frames.height / span, 2) if span > 0 else None
        stats["stage_ms_per_frame"] = stage
        if job is not None:
            metrics = _job_metrics(settings)
            if metrics:
                n = sum(m["counts"].get("frame", 0) + m["counts"].get("dead", 0) for m in metrics) or 1
                stage["sinks"] = round(sum(m["sink_ms"] for m in metrics) / n, 2)
                stats["micro_batches"] = len(metrics)
            commits = _job_metrics(settings, "commits")
            if commits:  # background Delta commits (spool): off the micro-batch path
                stats["delta_commits"] = {
                    "commits": len(commits),
                    "micro_batches_per_commit": round(sum(c["batches"] for c in commits) / len(commits), 2),
                    "ms_per_commit": round(sum(c["delta_ms"] for c in commits) / len(commits), 1),
                    "ms_per_frame": round(sum(c["delta_ms"] for c in commits) / max(1, frames.height), 2),
                }
        stats["speed_kmh"] = _speed_summary(det)
        stats["per_camera"] = {
            r["camera_id"]: {"frames": r["frames"], "frames_with_vehicles": r["with_vehicles"]}
            for r in frames.group_by("camera_id")
            .agg(pl.len().alias("frames"), (pl.col("vehicles") > 0).sum().alias("with_vehicles"))
            .to_dicts()
        }
    results = topic_summary(settings, settings.kafka.results_topic)
    stats["results_messages"] = results["messages"].get("frame", 0)
    stats["results_by_type"] = results["messages"]
    stats["avg_results_message_bytes"] = results["mean_bytes"].get("frame")
    stats["dead_letter_messages"] = sum(topic_summary(settings, settings.kafka.dead_letter_topic)["messages"].values())
    stats["delta_path"] = str(root)
    return stats


def _speed_summary(det) -> dict[str, Any]:
    import polars as pl

    ok = det.filter(pl.col("speed_kmh").is_not_null() & pl.col("speed_flag").is_null())
    if not ok.height:
        return {}
    s = ok["speed_kmh"]
    return {
        "n": ok.height,
        "median": round(s.median(), 1),
        "p10": round(s.quantile(0.1), 1),
        "p90": round(s.quantile(0.9), 1),
        "share_40_160": round(((s >= 40) & (s <= 160)).mean(), 3),
        "flagged": det.filter(pl.col("speed_flag").is_not_null()).height,
    }


def _job_metrics(settings: Settings, kind: str = "") -> list[dict[str, Any]]:
    """The job's per-micro-batch metric lines, or (``kind="commits"``) its background Delta commits."""
    out = []
    for path in (settings.storage.var_dir / "metrics" / kind).glob("*.jsonl"):
        out += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return out
