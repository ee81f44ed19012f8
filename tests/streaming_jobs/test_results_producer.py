"""Who produces the frame results (``spark.results_from``) and what the stage-2 producer sends: a real broker
receives one camera's messages from ``track_camera`` in frame order, keyed by camera, and a producer that
cannot deliver fails the task instead of dropping results."""

from __future__ import annotations

import json
import time
import uuid

import pytest
from confluent_kafka import Consumer, Producer

from trafficstream.config import Settings, settings_to_json
from trafficstream.streaming_jobs.results_producer import (
    ordered_messages,
    produce_all,
    results_from,
    stage2_target,
)
from trafficstream.streaming_jobs.schemas import KIND_CROSSING, KIND_EVENT, KIND_FRAME, KIND_TRACK


def _with_kafka(settings: Settings, **kafka: object) -> Settings:
    return settings.model_copy(update={"kafka": settings.kafka.model_copy(update=kafka)})


def _with_spark(settings: Settings, **spark: object) -> Settings:
    return settings.model_copy(update={"spark": settings.spark.model_copy(update=spark)})


def test_ordered_messages_per_camera_in_frame_order_with_crossings_after_their_frame():
    rows = [
        {"kind": KIND_CROSSING, "camera_id": "b", "frame_index": 3, "message": "b3-crossing"},
        {"kind": KIND_FRAME, "camera_id": "b", "frame_index": 3, "message": "b3"},
        {"kind": KIND_FRAME, "camera_id": "a", "frame_index": 7, "message": "a7"},
        {"kind": KIND_EVENT, "camera_id": "a", "frame_index": 2, "message": "a2-event"},
        {"kind": KIND_FRAME, "camera_id": "a", "frame_index": 2, "message": "a2"},
        {"kind": KIND_FRAME, "camera_id": "a", "frame_index": 5, "message": None},  # skipped: no message
        {"kind": KIND_TRACK, "camera_id": "a", "frame_index": 7, "message": "not a result"},
    ]
    assert ordered_messages(rows) == [
        ("a", "a2"),
        ("a", "a2-event"),
        ("a", "a7"),
        ("b", "b3"),
        ("b", "b3-crossing"),
    ]


def test_auto_produces_from_stage2_unless_the_python_clients_carry_credentials(synth):
    plain = synth.make_settings()
    assert results_from(plain) == "stage2"
    target = json.loads(stage2_target(plain) or "{}")
    assert target["topic"] == plain.kafka.results_topic
    assert target["config"]["enable.idempotence"] is True and target["config"]["acks"] == "all"

    secured = _with_kafka(plain, client_python={"sasl.username": "u", "sasl.password": "p4ss"})
    assert results_from(secured) == "driver"
    assert stage2_target(secured) is None  # the password stays on the driver
    assert "p4ss" not in settings_to_json(secured)

    chosen = _with_spark(secured, results_from="stage2")  # an explicit choice ships the credentials to stage 2
    assert json.loads(stage2_target(chosen) or "{}")["config"]["sasl.password"] == "p4ss"
    assert results_from(_with_spark(plain, results_from="driver")) == "driver"
    assert stage2_target(_with_spark(plain, results_from="driver")) is None


def _consume(bootstrap: str, topic: str, n: int, timeout_s: float = 30.0) -> list[tuple[str, str]]:
    consumer = Consumer(
        {"bootstrap.servers": bootstrap, "group.id": f"t-{uuid.uuid4().hex[:6]}", "auto.offset.reset": "earliest"}
    )
    got: list[tuple[str, str]] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + timeout_s
        while len(got) < n and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.key().decode(), msg.value().decode()))
    finally:
        consumer.close()
    return got


@pytest.fixture
def task_producers():
    """Release the producers the tasks of a test cached (the last reference closes the client), so none keeps
    reconnecting to the session's broker after it stops."""
    from trafficstream.streaming_jobs import results_producer

    yield
    results_producer._task_producer.cache_clear()


def test_stage2_produces_the_cameras_results_before_returning(synth, kafka_broker, task_producers):
    topic = f"results-{uuid.uuid4().hex[:8]}"
    kafka_broker.create_topics([topic], partitions=1)
    settings = _with_kafka(synth.make_settings(), bootstrap_servers=kafka_broker.bootstrap_servers, results_topic=topic)
    target = stage2_target(settings)
    assert target is not None
    from trafficstream.streaming_jobs.tracking import track_camera

    cars = [synth.Car(0, 60, 300, 130.0), synth.Car(5, 1200, 500, -80.0, class_id=7)]
    rows = synth.scene_rows(cars, range(0, 30))
    state = synth.FakeGroupState()
    (out,) = list(
        track_camera(settings_to_json(settings), (synth.CAMERA_ID,), iter([rows]), state, results_target=target)
    )
    expected = ordered_messages(out.to_dict("records"))
    assert len(expected) >= 30  # every frame's message, and the crossings of the two vehicles
    # acknowledged before track_camera returned: a consumer finds them all, in the same order, keyed by camera
    assert _consume(kafka_broker.bootstrap_servers, topic, len(expected)) == expected
    frames = [json.loads(v)["frame_index"] for _, v in expected if json.loads(v).get("type") == "frame"]
    assert frames == sorted(frames) and len(frames) == 30


def test_an_undeliverable_result_fails_the_task():
    # nothing listens on port 9 of the loopback: the messages time out instead of vanishing
    producer = Producer({"bootstrap.servers": "127.0.0.1:9", "message.timeout.ms": 1500, "enable.idempotence": True})
    with pytest.raises(RuntimeError, match="deliveries failed"):
        produce_all(producer, "results", [("cam", '{"type": "frame"}')])
