"""Kafka security on real components: a broker with SASL/PLAIN on its client listener accepts the whole
pipeline (ingest, Spark's Kafka source and sink, the job's own producer, the dashboard's consumer) when the
deployment gives credentials, and refuses it without them. Credentials come from file references and never
reach the JSON shipped to Spark tasks or the settings' repr."""

from __future__ import annotations

import time

import pytest
from e2e_helpers import run_available_now, table

from trafficstream import tables
from trafficstream.config import settings_to_json
from trafficstream.dashboards.buffers import LiveBuffers
from trafficstream.dashboards.consumer import ResultsConsumer
from trafficstream.infra.pipeline import topic_summary
from trafficstream.ingest.publisher import DeliveryError
from trafficstream.ingest.worker import run_ingest

pytestmark = pytest.mark.integration
CAMERA = "dual-carriageway"
USER, PASSWORD = "pipeline", "s3cr3t-pipeline-password"


@pytest.fixture(scope="module")
def sasl_broker(tmp_path_factory):
    from trafficstream.infra.local_kafka import KafkaBroker

    broker = KafkaBroker(tmp_path_factory.mktemp("kafka-sasl"), sasl_users={USER: PASSWORD})
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


def _settings(settings_factory, broker, tmp_path_factory, credentials: bool, password: str = PASSWORD):
    secrets = tmp_path_factory.mktemp("secrets")
    (secrets / "password").write_text(password + "\n")
    jaas = f'org.apache.kafka.common.security.plain.PlainLoginModule required username="{USER}" password="{password}";'
    (secrets / "jaas").write_text(jaas)
    overrides = [
        f"kafka.bootstrap_servers={broker.bootstrap_servers}",
        # fail fast where the broker refuses us, instead of librdkafka's 5-minute default
        "kafka.client_python.message.timeout.ms=8000",
    ]
    if credentials:
        overrides += [
            "kafka.client.security.protocol=SASL_PLAINTEXT",
            "kafka.client.sasl.mechanism=PLAIN",
            f"kafka.client_python.sasl.username={USER}",
            f"kafka.client_python.sasl.password=file:{secrets / 'password'}",
            f"kafka.client_spark.sasl.jaas.config=file:{secrets / 'jaas'}",
        ]
    s = settings_factory(overrides=overrides, create_topics=False, name="sasl")
    k = s.kafka
    broker.create_topics([k.frames_topic, k.results_topic, k.dead_letter_topic], partitions=k.partitions)
    return s


def test_pipeline_with_credentials(sasl_broker, settings_factory, tmp_path_factory, spark):
    s = _settings(settings_factory, sasl_broker, tmp_path_factory, credentials=True)
    assert PASSWORD not in repr(s) and PASSWORD not in str(s.model_dump())
    assert PASSWORD not in settings_to_json(s)  # what Spark's Python tasks receive
    buffers = LiveBuffers([CAMERA], max_frames=100)
    consumer = ResultsConsumer(s, buffers).start()
    try:
        assert consumer.wait_assigned(60)
        stats = run_ingest(s, [CAMERA], max_frames=12)
        assert stats.total == 12 and not stats.errors
        run_available_now(spark, s)
        assert table(s, tables.FRAMES).height == 12
        deadline = time.time() + 30
        while len(buffers.frames(CAMERA)) < 12 and time.time() < deadline:
            time.sleep(0.2)
        assert len(buffers.frames(CAMERA)) == 12  # the dashboard's own consumer, authenticated
    finally:
        consumer.stop()
    summary = topic_summary(s, s.kafka.results_topic)
    assert summary["messages"]["frame"] == 12 and summary["messages"].get("health", 0) >= 1  # job's producer


def test_pipeline_without_credentials_is_refused(sasl_broker, settings_factory, tmp_path_factory, spark):
    s = _settings(settings_factory, sasl_broker, tmp_path_factory, credentials=False)
    with pytest.raises(DeliveryError):  # ingest: nothing delivered
        run_ingest(s, [CAMERA], max_frames=3)
    buffers = LiveBuffers([CAMERA])
    consumer = ResultsConsumer(s, buffers).start()
    try:
        assert not consumer.wait_assigned(8)  # the dashboard gets no partitions
    finally:
        consumer.stop()


def test_spark_with_a_wrong_password_is_refused(sasl_broker, settings_factory, tmp_path_factory, spark):
    good = _settings(settings_factory, sasl_broker, tmp_path_factory, credentials=True)
    assert run_ingest(good, [CAMERA], max_frames=3).total == 3
    bad = good.model_copy(deep=True)
    wrong = _settings(settings_factory, sasl_broker, tmp_path_factory, credentials=True, password="wrong")
    bad.kafka.client_spark = wrong.kafka.client_spark
    with pytest.raises(Exception, match="SaslAuthenticationException"):  # the query stops, naming why
        run_available_now(spark, bad)
