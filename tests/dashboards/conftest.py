"""Fixtures of the dashboard tests. ``results_feed`` is the one place live results come from."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from synthetic_results import ResultsFeed

from trafficstream.config import PROJECT_ROOT, Settings, load_settings

DEMO_CONFIG = PROJECT_ROOT / "infra" / "config" / "demo.yaml"


@pytest.fixture
def demo_settings(tmp_path: Path, data_dir: Path) -> Settings:
    """The demo cameras with storage under tmp; Kafka points at a closed port (no broker needed)."""
    return load_settings(
        DEMO_CONFIG,
        [f"storage.var_dir={tmp_path / 'var'}", f"storage.data_dir={data_dir}", "kafka.bootstrap_servers=127.0.0.1:9"],
    )


@pytest.fixture
def results_feed(make_settings) -> Iterator[ResultsFeed]:
    """Results for the demo cameras' real frames flowing into ``feed.settings.kafka.results_topic`` now.

    Contract for whoever replaces this with the real pipeline (ingest + streaming job): yield an object
    whose ``.settings`` names the broker and results topic that receive live results (capture_ts = now)
    for as long as the fixture is active, and whose evidence snapshots lie under settings.evidence_root.
    """
    feed = ResultsFeed(make_settings(name="dashboard")).start()
    try:
        yield feed
    finally:
        feed.stop()
    assert feed.error is None, f"results feed failed: {feed.error!r}"


class PipelineFeed:
    """The real thing: the vehicle job's own query on the session's SparkSession, fed by the ingest worker
    replaying the motorway clip as a live camera (``--realtime --loop``: paced by its timestamps, a new pass
    when it ends) until the test stops it. The camera's limit is lowered so that the real traffic (about
    90-110 km/h) produces violations."""

    limit_kmh = 80

    def __init__(self, spark, settings: Settings) -> None:
        self.spark, self.settings = spark, settings
        self.frames_published = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.query = self.writer = None

    def start(self) -> PipelineFeed:
        from trafficstream.streaming_jobs.vehicle_pipeline import start_query

        self.query, self.writer = start_query(self.spark, self.settings)
        self._thread = threading.Thread(target=self._ingest, daemon=True)
        self._thread.start()
        return self

    def _ingest(self) -> None:
        from trafficstream.ingest.worker import run_ingest

        self.frames_published = run_ingest(
            self.settings, ["motorway-overpass"], realtime=True, loop=True, stop=self._stop
        ).total

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self.query is not None:
            self.query.stop()
            self.writer.close()


@pytest.fixture
def pipeline_feed(spark, make_settings, tmp_path) -> Iterator[PipelineFeed]:
    raw = yaml.safe_load(DEMO_CONFIG.read_text())
    for cam in raw["cameras"]:
        cam["speed_limit_kmh"] = PipelineFeed.limit_kmh
        cam["detect_every"] = 3  # tracker-filled frames between detections, drawn dashed
    config = tmp_path / "deploy.yaml"
    config.write_text(yaml.safe_dump(raw))
    # A live camera as deployed: load shedding to the 2 s budget on, and no per-trigger cap that would keep live
    # references waiting in Kafka (the live bench's settings). The loop runs as long as the test needs.
    # No evidence clips: with the limit lowered nearly every vehicle is a violation, and rendering a clip for each
    # (seconds of CPU apiece) would hold the test's teardown for minutes; the snapshot is enough here.
    overrides = [
        "spark.max_offsets_per_trigger=2000",
        "live.shed_load=true",
        "evidence.clip_before_s=0",
        "evidence.clip_after_s=0",
    ]
    feed = PipelineFeed(spark, make_settings(config, overrides, name="dash-real"))
    try:
        yield feed
    finally:
        feed.stop()
