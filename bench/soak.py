"""``make soak``: the job under ``spark-submit`` fed for a long time, its memory and storage sampled throughout.

The sample clips are replayed as several cameras: each clip is remuxed (no re-encoding) into one long file of
back-to-back passes, so every pass has new frame indices and timestamps, and each camera publishes at a capped
rate the 2-core job can sustain. Every ``--every`` seconds the resident memory of the job's process tree is
sampled (driver JVM, driver Python, Python workers), every 30 s the checkpoint and state-store sizes. The
report (``bench/results/soak.json``) has the curves, the least-squares slope of each over the second half of
the run (MB/min; growth = a leak), and every frame accounted for.

    python -m trafficstream.bench.soak --minutes 20 [--cameras 3] [--rate 1.5]
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

import av
import numpy as np
import yaml

from trafficstream.config import DEFAULT_CONFIG, PROJECT_ROOT, load_settings
from trafficstream.logs import setup_logging

log = logging.getLogger("soak")
RESULTS = PROJECT_ROOT / "bench" / "results"


def loop_clip(src: Path, dst: Path, passes: int) -> Path:
    """Concatenate ``passes`` copies of ``src`` into ``dst`` by remuxing packets with shifted timestamps."""
    if dst.is_file():
        return dst
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".tmp.mp4")
    with av.open(str(src)) as inp, av.open(str(tmp), "w") as out:
        ist = inp.streams.video[0]
        ost = out.add_stream_from_template(ist)
        span = 0
        for k in range(passes):
            inp.seek(0)
            offset, end, step = k * span, 0, 1
            for packet in inp.demux(ist):
                if packet.dts is None or packet.pts is None:
                    continue
                step = packet.duration or step
                end = max(end, packet.pts + step)
                packet.pts += offset
                packet.dts += offset
                packet.stream = ost
                out.mux(packet)
            if k == 0:
                span = end + 2 * step  # a small gap keeps decode timestamps increasing across passes
    tmp.rename(dst)
    return dst


class TreeSampler(threading.Thread):
    """RSS (MB) of a process group, split into JVM and Python processes, every ``every_s`` seconds."""

    def __init__(self, pgid: int, every_s: float, checkpoint: Path) -> None:
        super().__init__(daemon=True)
        self.pgid, self.every_s, self.checkpoint = pgid, every_s, checkpoint
        self.samples: list[dict[str, float]] = []
        self.storage: list[dict[str, float]] = []
        self._halt = threading.Event()
        self._t0 = time.time()

    def _rss(self) -> dict[str, float]:
        jvm = py = 0
        for proc in Path("/proc").glob("[0-9]*"):
            try:
                stat = (proc / "stat").read_text()
                pgrp = int(stat.rsplit(")", 1)[1].split()[2])
                if pgrp != self.pgid:
                    continue
                comm = (proc / "comm").read_text().strip()
                kb = next(
                    int(line.split()[1])
                    for line in (proc / "status").read_text().splitlines()
                    if line.startswith("VmRSS:")
                )
            except (OSError, StopIteration, ValueError, IndexError):
                continue
            if comm == "java":
                jvm += kb
            else:
                py += kb
        return {
            "t_s": round(time.time() - self._t0, 1),
            "jvm_mb": round(jvm / 1024, 1),
            "python_mb": round(py / 1024, 1),
            "total_mb": round((jvm + py) / 1024, 1),
        }

    def _du(self, path: Path) -> float:
        return round(sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6, 2) if path.exists() else 0.0

    def run(self) -> None:
        next_storage = 0.0
        while not self._halt.wait(self.every_s):
            self.samples.append(self._rss())
            if time.time() >= next_storage:
                self.storage.append(
                    {
                        "t_s": round(time.time() - self._t0, 1),
                        "checkpoint_mb": self._du(self.checkpoint),
                        "state_mb": self._du(self.checkpoint / "state"),
                    }
                )
                next_storage = time.time() + 30

    def stop(self) -> None:
        self._halt.set()
        self.join()


def slope_per_min(points: list[dict[str, float]], key: str) -> float | None:
    """Least-squares slope of ``key`` over the second half of the run, per minute."""
    half = points[len(points) // 2 :]
    if len(half) < 3:
        return None
    t = np.array([p["t_s"] for p in half]) / 60.0
    y = np.array([p[key] for p in half])
    return round(float(np.polyfit(t, y, 1)[0]), 3)


def soak_settings(workdir: Path, clip: Path, cameras: int, bootstrap: str, overrides: list[str]):
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    template = next(c for c in raw["cameras"] if c["id"] == "dual-carriageway")
    raw["cameras"] = []
    for i in range(cameras):  # one file per camera, like real cameras (a decoder per source)
        own = clip.with_name(f"soak-{i + 1}.mp4")
        if not own.is_file():
            shutil.copy(clip, own)
        raw["cameras"].append({**template, "id": f"soak-{i + 1}", "name": f"soak camera {i + 1}", "source": str(own)})
    raw["storage"]["allowed_roots"] = ["{data_dir}", str(clip.parent)]
    config = workdir / "soak.yaml"
    config.write_text(yaml.safe_dump(raw))
    return load_settings(
        config,
        [
            f"kafka.bootstrap_servers={bootstrap}",
            f"storage.var_dir={workdir}",
            "spark.max_offsets_per_trigger=48",
            *overrides,
        ],
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trafficstream.bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--cameras", type=int, default=3)
    parser.add_argument("--rate", type=float, default=1.5, help="frames/s published per camera")
    parser.add_argument("--every", type=float, default=5.0, help="seconds between memory samples")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--out", type=Path, default=RESULTS / "soak.json")
    args = parser.parse_args(argv)
    setup_logging("INFO")

    from trafficstream.infra.local_kafka import KafkaBroker
    from trafficstream.infra.pipeline import JobProcess, processed_counts, wait_processed
    from trafficstream.ingest.worker import run_ingest

    workdir = PROJECT_ROOT / "var" / "soak"
    shutil.rmtree(workdir / "run", ignore_errors=True)
    (workdir / "run").mkdir(parents=True)
    base = load_settings(DEFAULT_CONFIG, environ={})
    src = base.camera("dual-carriageway").source_path()
    frames_needed = int(args.minutes * 60 * args.rate) + 1
    with av.open(str(src)) as c:
        per_pass = c.streams.video[0].frames or 341
    clip = loop_clip(
        src, workdir / "clips" / f"dual-carriageway-x{frames_needed // per_pass + 1}.mp4", frames_needed // per_pass + 1
    )

    report: dict[str, Any] = {"minutes": args.minutes, "cameras": args.cameras, "rate_fps_per_camera": args.rate}
    with KafkaBroker(workdir / "run" / "kafka") as broker:
        s = soak_settings(workdir / "run", clip, args.cameras, broker.bootstrap_servers, args.overrides)
        k = s.kafka
        broker.create_topics([k.frames_topic, k.results_topic, k.dead_letter_topic], partitions=k.partitions)
        job = JobProcess(s, workdir / "run", name="soak").start()
        job.wait_started()
        if job.pid is None:
            raise RuntimeError("the soak job did not start")
        sampler = TreeSampler(job.pid, args.every, job.checkpoint)
        sampler.start()
        stop = threading.Event()
        timer = threading.Timer(args.minutes * 60, stop.set)
        timer.start()
        t0 = time.time()
        try:
            stats = run_ingest(s, stop=stop, max_rate_fps=args.rate)
            ingested = stats.total
            done, dead = wait_processed(s, ingested, job, timeout_s=1800)
        finally:
            timer.cancel()
            sampler.stop()
            job.stop()
        report.update(
            seconds=round(time.time() - t0, 1),
            frames_ingested=ingested,
            frames_processed=done,
            frames_dead_lettered=dead,
            accounted=done + dead == ingested,
            rss_slope_mb_per_min={
                key: slope_per_min(sampler.samples, key) for key in ("total_mb", "jvm_mb", "python_mb")
            },
            rss_mb={
                "first": sampler.samples[0] if sampler.samples else None,
                "max": max((p["total_mb"] for p in sampler.samples), default=None),
                "last": sampler.samples[-1] if sampler.samples else None,
            },
            checkpoint_slope_mb_per_min=slope_per_min(sampler.storage, "checkpoint_mb"),
            state_slope_mb_per_min=slope_per_min(sampler.storage, "state_mb"),
            storage=sampler.storage,
            rss=sampler.samples,
        )
        done2, dead2 = processed_counts(s)
        report["frames_processed"], report["frames_dead_lettered"] = done2, dead2
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    log.info("wrote %s", args.out)
    print(json.dumps({k: v for k, v in report.items() if k not in ("rss", "storage")}))
    return 0 if report["accounted"] else 1


if __name__ == "__main__":
    sys.exit(main())
