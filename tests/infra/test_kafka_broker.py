"""A real single-node KRaft broker from infra/lib/kafka (needs `make jars` and Java 17+): one per module."""

from __future__ import annotations

import json
import logging
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, Message, Producer
from confluent_kafka.admin import AdminClient

from trafficstream.infra import kafka as kafka_cli
from trafficstream.infra.local_kafka import KafkaBroker
from trafficstream.infra.topics import BrokerError, broker_ready

pytestmark = pytest.mark.integration
log = logging.getLogger(__name__)

PARTITIONS = 3
TOPICS = ["it-frames", "it-results"]


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KafkaBroker]:
    b = KafkaBroker(tmp_path_factory.mktemp("kafka"), heap="256m")
    b.start(timeout_s=120)
    log.info("broker cold start (format + start until healthy): %.1fs", b.startup_s)
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def topics(broker: KafkaBroker) -> list[str]:
    assert broker.create_topics(TOPICS, partitions=PARTITIONS) == {t: True for t in TOPICS}
    return TOPICS


def test_broker_is_healthy(broker: KafkaBroker, test_output: Path) -> None:
    assert broker.is_running()
    assert isinstance(broker.pid, int)
    assert broker.bootstrap_servers == f"127.0.0.1:{broker.port}"
    assert broker.startup_s is not None and broker.startup_s > 0  # measured until healthy
    # A measurement (make bench reports it), not a pass/fail criterion on a shared machine.
    (test_output / "kafka-broker.json").write_text(json.dumps({"cold_start_s": round(broker.startup_s, 1)}))
    assert broker_ready(broker.bootstrap_servers)
    assert broker.pidfile.read_text().strip() == str(broker.pid)
    assert broker.server_log.is_file()


def test_same_data_dir_sees_the_running_broker(broker: KafkaBroker) -> None:
    other = KafkaBroker(broker.data_dir)  # ports come from the saved server.properties
    assert other.bootstrap_servers == broker.bootstrap_servers
    assert other.pid == broker.pid
    with pytest.raises(BrokerError, match="already running"):
        other.start()
    assert kafka_cli.main(["status", "--data-dir", str(broker.data_dir)]) == 0


def test_topics_have_the_requested_partitions(broker: KafkaBroker, topics: list[str]) -> None:
    with AdminClient({"bootstrap.servers": broker.bootstrap_servers}) as admin:
        md = admin.list_topics(timeout=10)
    for name in topics:
        parts = md.topics[name].partitions
        assert sorted(parts) == list(range(PARTITIONS))
        assert all(p.leader == 1 and p.replicas == [1] for p in parts.values())
    # Idempotent: existing topics are reported, not an error (a different partition count is left alone).
    assert broker.create_topics(topics, partitions=PARTITIONS) == {t: False for t in topics}
    assert broker.create_topics(topics[:1], partitions=PARTITIONS + 2) == {topics[0]: False}


def test_produce_and_consume_keyed_messages(broker: KafkaBroker, topics: list[str]) -> None:
    topic = topics[0]
    cameras = [f"cam-{i}" for i in range(4)]
    sent = [(cam.encode(), f"{cam}:{n}".encode()) for n in range(25) for cam in cameras]
    delivered: list[tuple[bytes, bytes, int, int]] = []
    errors: list[KafkaError] = []

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            errors.append(err)
        else:
            delivered.append((msg.key(), msg.value(), msg.partition(), msg.offset()))

    producer = Producer(
        {"bootstrap.servers": broker.bootstrap_servers, "enable.idempotence": True, "acks": "all", "linger.ms": 5}
    )
    for key, value in sent:
        producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
        producer.poll(0)
    assert producer.flush(30) == 0
    assert not errors, errors
    assert sorted(d[:2] for d in delivered) == sorted(sent)
    partition_of = {}
    for key, _, partition, _ in delivered:
        assert partition_of.setdefault(key, partition) == partition  # keyed: one camera, one partition

    received: list[tuple[bytes, bytes, int, int]] = []
    with Consumer(
        {
            "bootstrap.servers": broker.bootstrap_servers,
            "group.id": "it-consumer",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    ) as consumer:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 60
        while len(received) < len(sent) and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            assert msg.error() is None, msg.error()
            received.append((msg.key(), msg.value(), msg.partition(), msg.offset()))
    assert sorted(received) == sorted(delivered)
    by_key: dict[bytes, list[bytes]] = defaultdict(list)
    for key, value, _, _ in received:
        by_key[key].append(value)
    for cam in cameras:  # within a partition, the order of production
        assert by_key[cam.encode()] == [v for k, v in sent if k == cam.encode()]


def test_cli_creates_and_deletes_the_configured_topics(
    broker: KafkaBroker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "deploy.yaml"
    config.write_text(
        "kafka:\n  frames_topic: cli-frames\n  results_topic: cli-results\n"
        "  dead_letter_topic: cli-dead-letter\n  partitions: 2\n"
    )
    flags = ["--config", str(config), "--set", f"kafka.bootstrap_servers={broker.bootstrap_servers}"]
    assert kafka_cli.main(["create-topics", *flags]) == 0
    assert "cli-frames: created" in capsys.readouterr().out
    with AdminClient({"bootstrap.servers": broker.bootstrap_servers}) as admin:
        md = admin.list_topics(timeout=10)
    assert {n: len(md.topics[n].partitions) for n in ("cli-frames", "cli-results", "cli-dead-letter")} == {
        "cli-frames": 2,
        "cli-results": 2,
        "cli-dead-letter": 2,
    }
    assert kafka_cli.main(["delete-topics", *flags]) == 0
    assert "cli-results: deleted" in capsys.readouterr().out
    assert kafka_cli.main(["delete-topics", *flags]) == 0
    assert "cli-results: absent" in capsys.readouterr().out


def test_delete_topics(broker: KafkaBroker) -> None:
    broker.create_topics(["it-scratch"], partitions=1)
    assert broker.delete_topics(["it-scratch"]) == {"it-scratch": True}
    assert broker.delete_topics(["it-scratch"]) == {"it-scratch": False}
    with AdminClient({"bootstrap.servers": broker.bootstrap_servers}) as admin:
        assert "it-scratch" not in admin.list_topics(timeout=10).topics


def test_start_failure_reports_the_log_tail(tmp_path: Path) -> None:
    b = KafkaBroker(tmp_path, heap="1k")  # the JVM refuses to start with this heap
    (b.kafka_logs / "meta.properties").parent.mkdir(parents=True)
    (b.kafka_logs / "meta.properties").write_text("")  # pretend formatted: skip the storage tool
    with pytest.raises(BrokerError, match=r"exited with \d+ during start-up[\s\S]*heap"):
        b.start(timeout_s=30)
    assert not b.is_running() and not b.pidfile.exists()


def test_stop_terminates_the_process(broker: KafkaBroker) -> None:
    # Last test of the module: the fixture's own stop() is then a no-op.
    pid = broker.pid
    assert pid is not None
    t0 = time.monotonic()
    broker.stop(timeout_s=30)
    log.info("broker stop: %.1fs", time.monotonic() - t0)
    assert not broker.is_running() and broker.pid is None
    assert not broker.pidfile.exists()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert kafka_cli.main(["status", "--data-dir", str(broker.data_dir)]) == 1
