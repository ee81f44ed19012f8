"""Topic administration on any Kafka cluster (the local broker of :mod:`infra.local_kafka` or a real one).

Every call takes the cluster's ``bootstrap_servers`` and the librdkafka ``client_config`` it needs (security
settings: ``kafka.client`` + ``kafka.client_python`` of the settings), and waits until the cluster metadata
shows the result, so a caller can use a topic as soon as :func:`create_topics` returns::

    if broker_ready("b1:9093", client_config=conf):
        create_topics("b1:9093", ["frames", "results", "dead-letter"], partitions=8, replication_factor=3,
                      client_config=conf)
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)


class BrokerError(RuntimeError):
    """The broker could not be started, stopped or reached, or did not complete a topic operation in time; the
    message carries the broker log's tail where there is one."""


def _admin_config(
    bootstrap_servers: str, client_config: Mapping[str, str] | None
) -> dict[str, str | int | float | bool]:
    return {**dict(client_config or {}), "bootstrap.servers": bootstrap_servers}


def broker_ready(bootstrap_servers: str, timeout_s: float = 5, client_config: Mapping[str, str] | None = None) -> bool:
    """True when the cluster answers a metadata request listing at least one broker."""
    # A probe: a refused connection is the expected "no" here, not an error for librdkafka to print.
    conf = {**_admin_config(bootstrap_servers, client_config), "log_level": "2"}
    try:
        with AdminClient(conf) as admin:
            return bool(admin.list_topics(timeout=timeout_s).brokers)
    except KafkaException:
        return False


def _wait_metadata(
    admin: AdminClient, names: list[str], present: bool, deadline: float, partitions: Mapping[str, int] | None = None
) -> None:
    """Until every topic is (present: with all partitions led) / is gone from the cluster metadata."""
    pending = list(names)
    while pending:
        md = admin.list_topics(timeout=max(1.0, deadline - time.monotonic()))
        still = []
        for name in pending:
            topic = md.topics.get(name)
            if topic is None or topic.error is not None:  # not there (yet, or any more)
                if present:
                    still.append(name)
            elif not present:
                still.append(name)
            elif any(p.leader < 0 for p in topic.partitions.values()) or len(topic.partitions) < (partitions or {}).get(
                name, 1
            ):
                still.append(name)  # a partition without a leader, or not all partitions yet
        pending = still
        if pending:
            if time.monotonic() > deadline:
                raise BrokerError(f"topics {pending} not {'ready' if present else 'deleted'} in time")
            time.sleep(0.1)


def create_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    partitions: int,
    replication_factor: int = 1,
    client_config: Mapping[str, str] | None = None,
    timeout_s: float = 60,
) -> dict[str, bool]:
    """Create the topics (idempotent) and wait until every partition has a leader.

    Returns ``{topic: created}``; False means it already existed (its partition count is left as it is).
    """
    names = list(dict.fromkeys(names))
    deadline = time.monotonic() + timeout_s
    result: dict[str, bool] = {}
    with AdminClient(_admin_config(bootstrap_servers, client_config)) as admin:
        futures = admin.create_topics(
            [NewTopic(n, num_partitions=partitions, replication_factor=replication_factor) for n in names],
            operation_timeout=timeout_s,
            request_timeout=timeout_s,
        )
        for name, future in futures.items():
            try:
                future.result(timeout=timeout_s)
                result[name] = True
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
                    raise BrokerError(f"creating topic {name!r} failed: {exc.args[0].str()}") from None
                result[name] = False
        # A pre-existing topic only needs to be there; a new one, all of its partitions.
        _wait_metadata(
            admin, names, present=True, deadline=deadline, partitions={n: partitions for n in names if result[n]}
        )
        md = admin.list_topics(timeout=timeout_s)
        for name in names:
            have = len(md.topics[name].partitions)
            if not result[name] and have != partitions:
                log.warning(
                    "topic %s already exists with %d partitions (wanted %d); left unchanged", name, have, partitions
                )
    return result


def delete_topics(
    bootstrap_servers: str,
    names: Iterable[str],
    client_config: Mapping[str, str] | None = None,
    timeout_s: float = 60,
) -> dict[str, bool]:
    """Delete the topics (missing ones are fine) and wait until they are gone. Returns ``{topic: deleted}``."""
    names = list(dict.fromkeys(names))
    deadline = time.monotonic() + timeout_s
    result: dict[str, bool] = {}
    with AdminClient(_admin_config(bootstrap_servers, client_config)) as admin:
        for name, future in admin.delete_topics(names, operation_timeout=timeout_s, request_timeout=timeout_s).items():
            try:
                future.result(timeout=timeout_s)
                result[name] = True
            except KafkaException as exc:
                if exc.args[0].code() != KafkaError.UNKNOWN_TOPIC_OR_PART:
                    raise BrokerError(f"deleting topic {name!r} failed: {exc.args[0].str()}") from None
                result[name] = False
        _wait_metadata(admin, names, present=False, deadline=deadline)
    return result
