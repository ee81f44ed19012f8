"""Frame results on the results topic: who produces them, in what order, with which guarantees.

``spark.results_from`` chooses the producer of the frame, crossing and event messages that stage 2 builds:

- ``stage2``: the stage-2 task produces a camera's messages as soon as it has tracked them, before the
  micro-batch's other cameras finish and before the driver sees the batch. This saves the wait for the
  slowest stage-2 task, for the rows to reach the driver and for the driver's own produce.
- ``driver``: ``foreachBatch`` produces them first, before any Delta commit (sinks.py).
- ``auto`` (the default) picks ``stage2`` unless the Python Kafka clients carry credentials. Spark ships task
  closures in the clear, so secrets stay on the driver unless you choose ``stage2`` explicitly.

Semantics are the same either way. The producer is idempotent with acks=all, and every acknowledgement is awaited
before the task (or batch) completes, so a failed delivery fails it and Spark retries. A retried task or a
replayed micro-batch produces the same messages again (stage 2 is deterministic from the checkpointed
state), with the camera id as key, so one camera's messages stay in order on one partition. Results are
at least once: consumers de-duplicate on (camera_id, frame_index). The dashboard does.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from functools import lru_cache
from typing import Any, Literal

from confluent_kafka import Producer

from trafficstream.config import Settings
from trafficstream.secrets import is_secret_key
from trafficstream.streaming_jobs.schemas import KIND_CROSSING, KIND_EVENT, KIND_FRAME

RESULT_KINDS = (KIND_FRAME, KIND_CROSSING, KIND_EVENT)  # stage-2 rows whose results message stage 2 built
_KIND_ORDER = {k: i for i, k in enumerate(RESULT_KINDS)}

# Producer properties of every results producer (driver or task). linger.ms is short: results are latency-bound.
PRODUCER_PROPERTIES: dict[str, Any] = {
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 2,
    "compression.type": "lz4",
    "partitioner": "murmur2_random",  # Java's partitioner, as Spark's Kafka sink uses: same key, same partition
}


def results_from(settings: Settings) -> Literal["stage2", "driver"]:
    """Resolve ``spark.results_from``. ``auto``: stage 2 unless the Python Kafka clients carry credentials."""
    choice = settings.spark.results_from
    if choice != "auto":
        return choice
    kafka = settings.kafka
    has_secrets = any(is_secret_key(k) for k in {**kafka.client, **kafka.client_python})
    return "driver" if has_secrets else "stage2"


def stage2_target(settings: Settings) -> str | None:
    """What a stage-2 task needs to produce results: topic + client configuration as JSON, or None when the
    driver produces them. It holds secrets only when they are configured and ``results_from`` is ``stage2``."""
    if results_from(settings) != "stage2":
        return None
    config = dict(settings.kafka.python_config(**PRODUCER_PROPERTIES, **{"client.id": "trafficstream-stage2"}))
    return json.dumps({"topic": settings.kafka.results_topic, "config": config}, sort_keys=True)


def ordered_messages(rows: Iterable[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """(key, value) of the rows' results messages: per camera in frame order, a frame's crossings and events
    after the frame itself. Rows of other kinds, and rows without a message (skipped frames), are left out."""
    chosen = [r for r in rows if r.get("kind") in _KIND_ORDER and r.get("message") is not None]
    chosen.sort(key=lambda r: (r["camera_id"] or "", r["frame_index"] or 0, _KIND_ORDER[r["kind"]]))
    return [(r["camera_id"], r["message"]) for r in chosen]


def produce_all(producer: Producer, topic: str, messages: Sequence[tuple[str | None, str | None]]) -> None:
    """Produce (key, value) messages and wait for every acknowledgement; raise if any failed or timed out."""
    failed: list[str] = []

    def on_delivery(err: Any, msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    for key, value in messages:
        if value is None:
            continue
        while True:
            try:
                producer.produce(topic, key=key, value=value, on_delivery=on_delivery)
                break
            except BufferError:  # the local queue is full: let deliveries drain
                producer.poll(0.1)
        producer.poll(0)
    remaining = producer.flush(30)
    if remaining or failed:
        raise RuntimeError(
            f"{topic}: {len(failed)} deliveries failed, {remaining} unacknowledged "
            f"(first error: {failed[0] if failed else 'timeout'})"
        )


@lru_cache(maxsize=2)  # one producer per Python worker and target, reused by every task the worker runs
def _task_producer(target_json: str) -> tuple[Producer, str]:
    target = json.loads(target_json)
    return Producer(target["config"]), target["topic"]


def publish_from_task(target_json: str, rows: Iterable[Mapping[str, Any]]) -> int:
    """Stage 2: produce the results messages of ``rows`` (one camera's tracked rows) and await them all.
    Returns how many were produced."""
    messages = ordered_messages(rows)
    if messages:
        producer, topic = _task_producer(target_json)
        produce_all(producer, topic, messages)
    return len(messages)
