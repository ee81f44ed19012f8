"""Session-wide real infrastructure for the tests: one Kafka broker, one SparkSession.

Both are started once per test session (Spark cold start is 10-20 s here) and stopped by process id.
Each test gets its own topics, Delta root and checkpoint through :func:`make_settings`.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from trafficstream.config import PROJECT_ROOT, Settings, load_settings

if TYPE_CHECKING:  # imported lazily in the fixture: starting no broker costs no import
    from trafficstream.infra.local_kafka import KafkaBroker

DATA_DIR = Path(os.environ.get("TRAFFICSTREAM_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data")).resolve()
DEMO_CONFIG = PROJECT_ROOT / "infra" / "config" / "demo.yaml"
TEST_OUTPUT = PROJECT_ROOT / "var" / "test-output"


@pytest.fixture(scope="session")
def data_dir() -> Path:
    if not (DATA_DIR / "videos").is_dir():
        pytest.fail(f"sample data not found at {DATA_DIR} (set TRAFFICSTREAM_DATA_DIR)")
    return DATA_DIR


@pytest.fixture(scope="session")
def test_output() -> Path:
    TEST_OUTPUT.mkdir(parents=True, exist_ok=True)
    return TEST_OUTPUT


@pytest.fixture(scope="session")
def kafka_broker(tmp_path_factory) -> Iterator[KafkaBroker]:
    from trafficstream.infra.local_kafka import KafkaBroker

    broker = KafkaBroker(tmp_path_factory.mktemp("kafka"))
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()
        assert not broker.is_running()


@pytest.fixture(scope="session")
def spark(tmp_path_factory, kafka_broker):  # the broker outlives Spark: its cached producers close first
    from trafficstream.infra.jars import spark_jars_csv
    from trafficstream.streaming_jobs.vehicle_pipeline import spark_session

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    settings = Settings()
    session = spark_session(
        settings,
        {
            "spark.master": "local[2]",
            "spark.jars": spark_jars_csv(),
            "spark.ui.enabled": "false",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            "spark.sql.warehouse.dir": str(tmp_path_factory.mktemp("warehouse")),
        },
    )
    session.sparkContext.setLogLevel("ERROR")  # Kafka client WARNs when test brokers stop are noise here
    logging.getLogger("py4j").setLevel(logging.WARNING)
    yield session
    session.stop()


@pytest.fixture(scope="session")
def settings_factory(kafka_broker, tmp_path_factory) -> Callable[..., Settings]:
    """Settings for one test or module: a deployment file, this session's broker, fresh topics and storage."""

    def make(
        config: Path | str = DEMO_CONFIG,
        overrides: list[str] | None = None,
        create_topics: bool = True,
        name: str = "run",
    ) -> Settings:
        tag = uuid.uuid4().hex[:8]
        var = tmp_path_factory.mktemp(name)
        settings = load_settings(
            config,
            [
                f"kafka.bootstrap_servers={kafka_broker.bootstrap_servers}",
                f"kafka.frames_topic=frames-{tag}",
                f"kafka.results_topic=results-{tag}",
                f"kafka.dead_letter_topic=dead-letter-{tag}",
                "kafka.partitions=2",
                f"storage.var_dir={var}",
                f"storage.data_dir={DATA_DIR}",
                *(overrides or []),
            ],
        )
        if create_topics:
            k = settings.kafka
            kafka_broker.create_topics([k.frames_topic, k.results_topic, k.dead_letter_topic], partitions=k.partitions)
        return settings

    return make


@pytest.fixture
def make_settings(settings_factory) -> Callable[..., Settings]:
    return settings_factory
