"""Fixtures of the dashboard tests. ``results_feed`` is the one place live results come from."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
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
