"""Live data: a background Kafka consumer of the results topic feeding :class:`~dashboards.buffers.LiveBuffers`.

Every dashboard process reads the whole stream from the moment it starts (own consumer group, no commits).
librdkafka's own log lines go to the ``<this module>.rdkafka`` logger, throttled: a broker outage would
otherwise repeat the same refused connect several times a second.
"""

from __future__ import annotations

import logging
import math
import re
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition

from trafficstream.config import Settings
from trafficstream.dashboards.buffers import LiveBuffers

log = logging.getLogger(__name__)


class _Throttle(logging.Filter):
    """One record per message shape per interval: librdkafka repeats a refused connect several times a second."""

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())[:200]
        now = time.monotonic()
        if now - self._seen.get(key, -math.inf) < self.every_s:
            return False
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[key] = now
        return True


_rdkafka_log = logging.getLogger(__name__ + ".rdkafka")
_rdkafka_log.addFilter(_Throttle())


@dataclass
class ConsumerStatus:
    assigned: bool = False
    last_error: str | None = None
    last_error_wall: float | None = None
    restarts: int = 0
    positions: dict[tuple[str, int], int] = field(default_factory=dict)  # next offset per partition


class ResultsConsumer:
    """Background thread reading the results topic into :class:`LiveBuffers`.

    Own consumer group per dashboard process, no commits: every dashboard sees the whole stream from the
    moment it starts (assigned at the partitions' end). Broker loss is librdkafka's to retry; we log and
    keep going, and after a rebalance resume where we were so an outage does not skip messages.
    """

    def __init__(
        self,
        settings: Settings,
        buffers: LiveBuffers,
        *,
        group_id: str | None = None,
        poll_timeout_s: float = 0.2,
    ) -> None:
        self.settings = settings
        self.buffers = buffers
        self.topic = settings.kafka.results_topic
        self.group_id = group_id or f"trafficstream-dashboard-{uuid.uuid4().hex[:12]}"
        self.poll_timeout_s = poll_timeout_s
        self.status = ConsumerStatus()
        self._assigned = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_warning: dict[str, float] = {}

    def _config(self) -> dict[str, Any]:
        # Deployment client properties (security, ...) first; what this consumer relies on wins.
        return self.settings.kafka.python_config(
            **{
                "group.id": self.group_id,
                "client.id": "trafficstream-dashboard",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "auto.offset.reset": "latest",
                # Notice a results topic created after the dashboard started within seconds, not minutes.
                "topic.metadata.refresh.interval.ms": 5000,
                "reconnect.backoff.ms": 500,
                "reconnect.backoff.max.ms": 5000,
                "error_cb": self._on_error,
                "logger": _rdkafka_log,
            }
        )

    def start(self) -> ResultsConsumer:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="results-consumer", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None

    def wait_assigned(self, timeout_s: float) -> bool:
        """True once partitions are assigned at known offsets: later messages will all be read."""
        return self._assigned.wait(timeout_s)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # -- internals ----------------------------------------------------------------------------------
    def _warn(self, key: str, msg: str, *args: Any, every_s: float = 30.0) -> None:
        """Log a warning at most every ``every_s`` per key (a broker outage would otherwise flood the log)."""
        now = time.monotonic()
        if now - self._last_warning.get(key, -math.inf) >= every_s:
            self._last_warning[key] = now
            log.warning(msg, *args)

    def _on_error(self, err: KafkaError) -> None:
        self.status.last_error = str(err)
        self.status.last_error_wall = time.time()
        self._warn(f"client:{err.code()}", "results consumer: %s (librdkafka keeps retrying)", err)

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            known = self.status.positions.get((p.topic, p.partition))
            if known is not None:
                p.offset = known
                continue
            try:
                _, high = consumer.get_watermark_offsets(p, timeout=5, cached=False)
                p.offset = high
            except KafkaException as exc:
                log.warning(
                    "results consumer: no watermark for %s[%d] (%s); starting at its end", p.topic, p.partition, exc
                )
                p.offset = OFFSET_END
        consumer.assign(partitions)
        self.status.assigned = True
        self._assigned.set()
        log.info("results consumer assigned %s", [(p.partition, p.offset) for p in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.status.assigned = False

    def _run(self) -> None:
        while not self._stop.is_set():
            consumer: Consumer | None = None
            try:
                consumer = Consumer(self._config())
                consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
                log.info("results consumer subscribed to %r at %s", self.topic, self.settings.kafka.bootstrap_servers)
                while not self._stop.is_set():
                    for msg in consumer.consume(num_messages=500, timeout=self.poll_timeout_s):
                        self._handle(msg)
            except Exception:  # never let the dashboard lose its live data for good
                self.status.restarts += 1
                log.exception("results consumer failed; recreating it in 2 s")
                self._stop.wait(2.0)
            finally:
                if consumer is not None:
                    try:
                        consumer.close()
                    except Exception:  # closing a broken client must not mask the real problem
                        log.debug("closing results consumer failed", exc_info=True)

    def _handle(self, msg: Any) -> None:
        err = msg.error()
        if err is not None:
            if err.code() == KafkaError._PARTITION_EOF:
                return
            if err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART:
                self._warn("unknown-topic", "results topic %r does not exist yet; waiting for it", self.topic)
                return
            self.status.last_error = str(err)
            self.status.last_error_wall = time.time()
            self._warn(f"msg:{err.code()}", "results consumer: %s", err)
            if err.fatal():
                raise KafkaException(err)
            return
        self.status.positions[(msg.topic(), msg.partition())] = msg.offset() + 1
        self.buffers.add_raw(msg.value())
