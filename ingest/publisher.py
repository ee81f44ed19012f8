"""Kafka producer for frame references with explicit delivery semantics.

Idempotent producer (``enable.idempotence``: no duplicates or reordering from retries within a partition),
``acks=all``, every delivery report checked, flushed on close. Keyed by camera id so one camera's frames
stay ordered in one partition.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

log = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    pass


class FramePublisher:
    """Context-managed producer; ``delivered``/``failed`` count confirmed delivery reports."""

    def __init__(self, bootstrap_servers: str, topic: str, client_config: dict[str, str] | None = None) -> None:
        conf: dict[str, Any] = {
            "bootstrap.servers": bootstrap_servers,
            # Java's partitioner: a camera lands in the same partition whichever client language produced it.
            "partitioner": "murmur2_random",
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "client.id": "trafficstream-ingest",
        }
        conf.update(client_config or {})
        self.topic = topic
        self._producer = Producer(conf)
        self._lock = threading.Lock()
        self.delivered = 0
        self.failed = 0
        self.bytes = 0
        self.first_error: KafkaError | None = None

    def __enter__(self) -> FramePublisher:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _on_delivery(self, err: KafkaError | None, msg: Message) -> None:
        with self._lock:
            if err is not None:
                self.failed += 1
                if self.first_error is None:
                    self.first_error = err
                log.error("delivery failed for key=%s: %s", msg.key(), err)
            else:
                self.delivered += 1
                self.bytes += len(msg.value() or b"")

    def publish(self, key: str, value: bytes) -> None:
        while True:
            try:
                self._producer.produce(self.topic, key=key.encode(), value=value, on_delivery=self._on_delivery)
                break
            except BufferError:  # local queue full: serve delivery reports to make room, then retry
                self._producer.poll(0.5)
        self._producer.poll(0)

    def close(self, timeout_s: float = 30.0) -> None:
        remaining = self._producer.flush(timeout_s)
        if remaining:
            raise DeliveryError(f"{remaining} frame references not delivered within {timeout_s}s")
        if self.failed:
            raise DeliveryError(f"{self.failed} frame references failed delivery: {self.first_error}")
