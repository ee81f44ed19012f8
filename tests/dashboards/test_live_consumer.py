"""The results consumer against a real Kafka broker (infra/local_kafka.py)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Producer
from synthetic_results import encode, health_message, synthetic_messages

from trafficstream.config import Settings
from trafficstream.dashboards.buffers import LiveBuffers
from trafficstream.dashboards.consumer import ResultsConsumer
from trafficstream.infra.local_kafka import KafkaBroker

pytestmark = pytest.mark.integration
MOTORWAY = "motorway-overpass"


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")
        time.sleep(0.05)


def publish(settings: Settings, messages: list[dict | bytes]) -> None:
    producer = Producer({"bootstrap.servers": settings.kafka.bootstrap_servers})
    for msg in messages:
        value = msg if isinstance(msg, bytes) else encode(msg)
        key = (msg.get("camera_id") or "health").encode() if isinstance(msg, dict) else None
        producer.produce(settings.kafka.results_topic, value, key=key)
    assert producer.flush(30) == 0


@pytest.fixture
def consumer_for(make_settings):
    started: list[ResultsConsumer] = []

    def start(settings: Settings | None = None) -> tuple[Settings, LiveBuffers, ResultsConsumer]:
        settings = settings or make_settings(name="dash-live")
        buffers = LiveBuffers.from_settings(settings)
        consumer = ResultsConsumer(settings, buffers).start()
        started.append(consumer)
        assert consumer.wait_assigned(60), "results consumer got no partitions"
        return settings, buffers, consumer

    yield start
    for consumer in started:
        consumer.stop()
        assert not consumer.running


def test_results_reach_the_buffers_and_duplicates_are_ignored(consumer_for, make_settings):
    settings = make_settings(name="dash-live")
    publish(settings, synthetic_messages(settings, 10, time.time() - 60))  # before the dashboard: not shown
    settings, buffers, consumer = consumer_for(settings)

    messages = synthetic_messages(settings, 90, time.time() - 3)
    frames = [m for m in messages if m["type"] == "frame"]
    violations = [m for m in messages if m["type"] == "violation"]
    assert violations, "the synthetic feed should produce violations in 3 s of each clip"
    health = [health_message(i, 800.0, 64, time.time(), {MOTORWAY: 3}) for i in range(3)]
    # Every message twice (a replayed micro-batch), plus junk and an unknown camera.
    junk = [
        b"{not json",
        {
            "v": 1,
            "type": "frame",
            "camera_id": "unknown-cam",
            "frame_index": 1,
            "pts_s": 0.0,
            "capture_ts": time.time(),
            "vehicles": [],
        },
    ]
    publish(settings, messages + health + junk + messages + health)

    wait_for(lambda: buffers.counters["received"] >= 2 * (len(messages) + len(health)) + 1, 60, "all messages")
    per_camera = {c.id: sum(1 for f in frames if f["camera_id"] == c.id) for c in settings.cameras}
    for cam_id, n in per_camera.items():
        got = buffers.frames(cam_id)
        assert len(got) == n
        assert [f.frame_index for f in got] == list(range(n))  # the 10 older frames were never read
    assert len(buffers.violations(MOTORWAY)) + len(buffers.violations("dual-carriageway")) == len(violations)
    assert [h["batch_id"] for h in buffers.health()] == [0, 1, 2]
    assert buffers.counters["duplicates"] == len(messages) + len(health)
    assert buffers.counters["invalid"] == 1 and buffers.counters["unknown_camera"] == 1
    k = buffers.kpis(MOTORWAY, 300)
    assert k.counted_total > 0 and k.mean_kmh is not None and k.in_roi is not None
    assert consumer.running


def test_consumer_survives_a_broker_restart(tmp_path, settings_factory):
    """Broker gone for a while: the consumer logs, keeps running, and reads what is published after it returns."""
    with KafkaBroker(tmp_path / "kafka") as broker:
        settings = settings_factory(create_topics=False, name="dash-restart")
        settings = settings.model_copy(
            update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": broker.bootstrap_servers})}
        )
        broker.create_topics([settings.kafka.results_topic], partitions=2)
        buffers = LiveBuffers.from_settings(settings)
        consumer = ResultsConsumer(settings, buffers).start()
        try:
            assert consumer.wait_assigned(60)
            messages = [
                m
                for m in synthetic_messages(settings, 40, time.time() - 2, evidence=False)
                if m["camera_id"] == MOTORWAY and m["type"] == "frame"
            ]
            publish(settings, messages[:20])
            wait_for(lambda: len(buffers.frames(MOTORWAY)) == 20, 60, "frames before the outage")

            broker.stop()
            time.sleep(3)  # librdkafka notices, retries, reports errors; the thread must not die
            assert consumer.running
            assert consumer.status.last_error is not None
            broker.start()

            publish(settings, messages[20:])
            wait_for(lambda: len(buffers.frames(MOTORWAY)) == 40, 90, "frames after the broker came back")
            assert [f.frame_index for f in buffers.frames(MOTORWAY)] == list(range(40))
            assert consumer.running
        finally:
            consumer.stop()


def test_results_topic_created_after_the_dashboard_started(settings_factory, kafka_broker):
    settings = settings_factory(create_topics=False, name="dash-late-topic")
    buffers = LiveBuffers.from_settings(settings)
    consumer = ResultsConsumer(settings, buffers).start()
    try:
        assert not consumer.wait_assigned(2)  # nothing to read yet; the thread waits, it does not fail
        kafka_broker.create_topics([settings.kafka.results_topic], partitions=2)
        assert consumer.wait_assigned(60), "the new topic was not picked up"
        messages = [m for m in synthetic_messages(settings, 5, time.time(), evidence=False) if m["type"] == "frame"]
        publish(settings, messages)
        wait_for(lambda: len(buffers.frames(MOTORWAY)) == 5, 30, "frames from the late topic")
    finally:
        consumer.stop()
