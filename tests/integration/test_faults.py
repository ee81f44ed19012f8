"""Faults on real components: the job under ``spark-submit`` SIGKILLed at four points of a micro-batch and its
background Delta commit, and
the Kafka broker restarted under a running ingest and job. Afterwards the Delta tables hold exactly one row per
(camera, frame) and per (camera, frame, track), every ingested frame is processed or dead-lettered exactly once,
and results-topic duplicates carry the same key and are dropped by the dashboard's consumer.

Each test writes a report (what was injected, how often, rows expected vs found) to var/test-output/.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import polars as pl
import pytest
from confluent_kafka import Consumer, TopicPartition
from e2e_helpers import table

from trafficstream import tables
from trafficstream.dashboards.buffers import LiveBuffers
from trafficstream.infra.pipeline import JobProcess, processed_counts, wait_processed
from trafficstream.ingest.worker import run_ingest
from trafficstream.streaming_jobs.sinks import FAULT_ENV

pytestmark = pytest.mark.integration
CAMERA = "motorway-overpass"
START, FRAMES, PER_BATCH = 150, 150, 30  # frames 150-299 of the 335-frame motorway clip


# -- where is the job? -------------------------------------------------------------------------------------
def _batch_files(checkpoint: Path, kind: str) -> set[int]:
    d = checkpoint / kind
    return {int(p.name) for p in d.glob("[0-9]*")} if d.is_dir() else set()


def _txn_versions(settings, name: str) -> set[int]:
    """Micro-batch ids committed to a Delta table (its ``txn`` actions), read from the log without Spark."""
    log_dir = settings.delta_root / name / "_delta_log"
    out: set[int] = set()
    for f in log_dir.glob("*.json") if log_dir.is_dir() else []:
        for line in f.read_text().splitlines():
            if '"txn"' in line:
                out.add(int(json.loads(line)["txn"]["version"]))
    return out


def _wait(predicate, job: JobProcess, timeout_s: float = 240, every_s: float = 0.05):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        job.check_alive()
        time.sleep(every_s)
    raise TimeoutError(f"condition not reached in {timeout_s}s:\n{job.log_tail()}")


def _results(settings) -> list[tuple[bytes | None, bytes]]:
    topic = settings.kafka.results_topic
    consumer = Consumer(
        settings.kafka.python_config(**{"group.id": f"faults-{time.time_ns()}", "enable.auto.commit": False})
    )
    try:
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts}
        consumer.assign([TopicPartition(topic, p, lo) for p, (lo, _) in ends.items()])
        remaining = sum(hi - lo for lo, hi in ends.values())
        out: list[tuple[bytes | None, bytes]] = []
        deadline = time.time() + 60
        while remaining > 0 and time.time() < deadline:
            for m in consumer.consume(500, timeout=1.0):
                if not m.error():
                    out.append((m.key(), m.value()))
                    remaining -= 1
        return out
    finally:
        consumer.close()


def _check_exactly_once(settings, ingested: int) -> dict:
    frames, det, dead = (
        table(settings, tables.FRAMES),
        table(settings, tables.DETECTIONS),
        table(settings, tables.DEAD_LETTERS),
    )
    unique_frames = frames.select(pl.struct("camera_id", "frame_index").n_unique()).item()
    unique_det = det.select(pl.struct("camera_id", "frame_index", "track_id").n_unique()).item()
    report = {
        "frames_ingested": ingested,
        "frames_rows": frames.height,
        "frames_unique": unique_frames,
        "detections_rows": det.height,
        "detections_unique": unique_det,
        "dead_letters": dead.height,
    }
    assert frames.height == unique_frames, report
    assert det.height == unique_det, report
    assert frames.height + dead.height == ingested, report
    assert dead.height == 0, dead.select("reason", "detail").to_dicts()[:5]
    tracks = table(settings, tables.TRACKS)
    assert tracks.height == tracks.select(pl.struct("camera_id", "track_id").n_unique()).item()
    assert set(tracks["track_id"]) == set(det["track_id"])

    # Results at least once: a replayed batch re-sends its frames with the same key; the dashboard drops them.
    results = [(k, v) for k, v in _results(settings) if json.loads(v).get("type") == "frame"]
    by_frame: dict[tuple[str, int], set[bytes | None]] = {}
    for key, value in results:
        msg = json.loads(value)
        by_frame.setdefault((msg["camera_id"], msg["frame_index"]), set()).add(key)
    assert len(by_frame) == frames.height
    assert all(keys == {CAMERA.encode()} for keys in by_frame.values())
    buffers = LiveBuffers([CAMERA], max_frames=10_000)
    accepted = sum(buffers.add_raw(v) for _, v in results)
    assert accepted == frames.height and len(buffers.frames(CAMERA)) == frames.height
    report.update(
        results_frame_messages=len(results), results_duplicates=len(results) - len(by_frame), dashboard_frames=accepted
    )
    return report


class _PeakRss(threading.Thread):
    """Peak resident memory (MB) of a process group (the job: JVM, Python driver, Python workers)."""

    def __init__(self, pgid: int) -> None:
        super().__init__(daemon=True)
        self.pgid, self.peak_mb = pgid, 0.0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(1.0):
            total = 0
            for proc in Path("/proc").glob("[0-9]*"):
                try:
                    if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != self.pgid:
                        continue
                    total += next(
                        int(x.split()[1]) for x in (proc / "status").read_text().splitlines() if x.startswith("VmRSS:")
                    )
                except (OSError, ValueError, IndexError, StopIteration):
                    continue
            self.peak_mb = max(self.peak_mb, total / 1024)

    def stop(self) -> None:
        self._halt.set()
        self.join()


# -- SIGKILL at four points of a micro-batch and its background Delta commit ------------------------------
def _spool_files(spool: Path, pattern: str) -> set[int]:
    return {int(p.stem.split("-")[1]) for p in spool.glob(pattern)} if spool.is_dir() else set()


def _run_until_fault(settings, workdir: Path, name: str) -> JobProcess:
    """Start the job with $TRAFFICSTREAM_FAULT set and wait for it to SIGKILL itself at that point."""
    job = JobProcess(settings, workdir, name=name).start()
    deadline = time.time() + 300
    while job.proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert job.proc.returncode is not None and job.proc.returncode < 0, job.log_tail()
    job.kill()
    return job


def test_sigkill_at_four_points_then_exactly_once(settings_factory, tmp_path_factory, test_output, monkeypatch):
    s = settings_factory(overrides=[f"spark.max_offsets_per_trigger={PER_BATCH}"], name="faults")
    workdir = tmp_path_factory.mktemp("faults-job")
    ingested = run_ingest(s, [CAMERA], start_frame=START, max_frames=FRAMES).total
    assert ingested == FRAMES
    chk = s.checkpoint_root / "vehicles"
    spool = chk.with_name("vehicles.spool")
    injected: list[dict] = []

    # 1. During stage 1: batch N planned (offsets/N written), nothing of it spooled or in Delta yet.
    job = JobProcess(s, workdir, name="run1").start()
    job.wait_started()
    _wait(lambda: 0 in _batch_files(chk, "commits"), job)
    n = _wait(lambda: max(_batch_files(chk, "offsets") - _batch_files(chk, "commits"), default=None), job)
    time.sleep(1.0)  # inside decode/detect of a 30-frame batch (several seconds on 2 cores)
    in_delta = any(n in _txn_versions(s, t) for t in tables.ALL_TABLES)
    spooled = n in _spool_files(spool, "batch-*.arrow")
    job.kill()
    assert not in_delta and not spooled and n not in _batch_files(chk, "commits")
    injected.append({"point": "stage 1", "batch": n})

    # 2. During a background Delta commit: a group of spooled batches is open (its manifest written), some
    # of its tables committed, others not.
    job = JobProcess(s, workdir, name="run2").start()
    groups = _wait(lambda: _spool_files(spool, "group-*.json"), job, every_s=0.01)
    job.kill()
    m = max(groups)
    written = [t for t in tables.ALL_TABLES if m in _txn_versions(s, t)]
    assert m in _spool_files(spool, "group-*.json")
    injected.append({"point": "during a Delta commit", "group_version": m, "tables_committed_at_kill": written})

    # 3. Spooled, Spark's checkpoint commit not yet written: the job kills itself after its sinks.
    k = max(_batch_files(chk, "commits")) + 2
    monkeypatch.setenv(FAULT_ENV, f"after_sinks:{k}")
    job = _run_until_fault(s, workdir, "run3")
    assert k in _spool_files(spool, "batch-*.arrow") and k not in _batch_files(chk, "commits"), job.log_tail()
    injected.append({"point": "spooled, before the checkpoint commit", "batch": k})

    # 4. Every table committed, the spool not yet cleaned: the group is committed again after the restart.
    monkeypatch.setenv(FAULT_ENV, "after_commit:*")
    job = _run_until_fault(s, workdir, "run4")
    (g,) = _spool_files(spool, "group-*.json")
    assert all(g in _txn_versions(s, t) for t in (tables.FRAMES, tables.DETECTIONS)), job.log_tail()
    injected.append({"point": "Delta committed, spool not cleaned", "group_version": g})
    monkeypatch.delenv(FAULT_ENV)

    # 5. Restart and finish. The whole clip was published at once (a burst far above real time): batches stay
    # within maxOffsetsPerTrigger, and the job's memory stays bounded.
    job = JobProcess(s, workdir, name="run5").start()
    sampler = _PeakRss(job.pid)
    sampler.start()
    try:
        wait_processed(s, ingested, job, timeout_s=600, progress=False)
    finally:
        sampler.stop()
        assert job.stop() == 0, job.log_tail()
    batches = [
        json.loads(line)
        for f in (s.storage.var_dir / "metrics").glob("*.jsonl")
        for line in f.read_text().splitlines()
        if line.strip()
    ]
    sizes = [b["counts"].get("frame", 0) + b["counts"].get("dead", 0) for b in batches]
    assert sizes and max(sizes) <= PER_BATCH, sizes
    assert sampler.peak_mb < 8 * 1024, sampler.peak_mb  # JVM + Python workers of local[2]; ~2.5 GB measured
    assert not list(spool.glob("*.arrow")) and not list(spool.glob("group-*.json"))  # all committed
    report = {
        "injected": injected,
        "kills": len(injected),
        "batch_sizes": sizes,
        "peak_rss_mb_after_restart": round(sampler.peak_mb),
        **_check_exactly_once(s, ingested),
    }
    (test_output / "faults-sigkill.json").write_text(json.dumps(report, indent=2))


# -- broker restart under load ---------------------------------------------------------------------------------
@pytest.fixture
def own_broker(tmp_path_factory):
    from trafficstream.infra.local_kafka import KafkaBroker

    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-restart"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def test_broker_restart_while_ingest_and_job_run(own_broker, settings_factory, tmp_path_factory, test_output):
    s = settings_factory(
        overrides=[f"kafka.bootstrap_servers={own_broker.bootstrap_servers}", "spark.max_offsets_per_trigger=60"],
        create_topics=False,
        name="restart",
    )
    k = s.kafka
    own_broker.create_topics([k.frames_topic, k.results_topic, k.dead_letter_topic], partitions=k.partitions)
    workdir = tmp_path_factory.mktemp("restart-job")
    job = JobProcess(s, workdir, name="job").start()
    stats: dict = {}
    try:
        job.wait_started()
        # A live camera: the UK clip paced at its own 30 fps (11 s), the broker restarted in the middle of it.
        ingest = threading.Thread(
            target=lambda: stats.update(r=run_ingest(s, ["dual-carriageway"], realtime=True)), name="ingest"
        )
        ingest.start()
        time.sleep(4.0)
        t0 = time.time()
        own_broker.stop()
        down_s = 5.0
        time.sleep(down_s)
        own_broker.start()
        restart_s = time.time() - t0
        ingest.join(300)
        assert not ingest.is_alive()
        result = stats["r"]
        assert not result.errors, result.errors
        assert result.total == 341
        wait_processed(s, result.total, job, timeout_s=600, progress=False)
    finally:
        rc = job.stop()
    assert rc == 0, job.log_tail()
    frames, dead = processed_counts(s)
    det = table(s, tables.DETECTIONS)
    fr = table(s, tables.FRAMES)
    report = {
        "injected": "broker stopped and restarted on its log directory, mid-ingest",
        "times": 1,
        "broker_down_s": round(restart_s, 1),
        "frames_ingested": result.total,
        "frames_rows": frames,
        "frames_unique": fr.select(pl.struct("camera_id", "frame_index").n_unique()).item(),
        "dead_letters": dead,
        "detections_rows": det.height,
        "detections_unique": det.select(pl.struct("camera_id", "frame_index", "track_id").n_unique()).item(),
        "query_restarts": job.log_path.read_text(errors="replace").count("restarting from the checkpoint"),
    }
    (test_output / "faults-broker-restart.json").write_text(json.dumps(report, indent=2))
    assert frames == report["frames_unique"] == result.total, report
    assert dead == 0 and report["detections_rows"] == report["detections_unique"], report
    assert os.path.getsize(job.log_path) > 0
