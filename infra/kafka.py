"""The Kafka command line: the local broker's lifecycle and the topics of a deployment on any cluster.

    python -m trafficstream.infra.kafka start [--data-dir var/kafka] [--port 9092]
    python -m trafficstream.infra.kafka create-topics [--config FILE] [--set kafka.partitions=8]
    python -m trafficstream.infra.kafka status | stop | delete-topics

``start`` / ``stop`` / ``status`` drive the local broker of :mod:`infra.local_kafka` (detached: it outlives the
command); ``create-topics`` / ``delete-topics`` use :mod:`infra.topics` on the cluster of the settings
(``kafka.bootstrap_servers`` and its security settings), local or real.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from confluent_kafka import KafkaException

from trafficstream.config import add_config_arguments, settings_from_args
from trafficstream.errors import ConfigError
from trafficstream.infra.jars import JarsMissingError
from trafficstream.infra.local_kafka import DEFAULT_DATA_DIR, DEFAULT_PORT, KafkaBroker, start_broker, stop_broker
from trafficstream.infra.topics import BrokerError, broker_ready, create_topics, delete_topics
from trafficstream.logs import setup_logging

log = logging.getLogger(__name__)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trafficstream.infra.kafka",
        description="Local single-node Kafka (KRaft) broker and topic management.",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    def data_dir_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR, help=f"default: {DEFAULT_DATA_DIR}")

    p = sub.add_parser("start", help="start a detached broker, wait until healthy, print its bootstrap address")
    data_dir_arg(p)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="client port (0: a free one)")
    p.add_argument("--controller-port", type=int, default=None, help="default: as before in this data dir, or free")
    p.add_argument("--heap", default="512m")
    p.add_argument("--timeout", type=float, default=90, help="seconds to wait for the broker to be healthy")
    p = sub.add_parser("stop", help="stop the broker of --data-dir (SIGTERM, then SIGKILL)")
    data_dir_arg(p)
    p.add_argument("--timeout", type=float, default=30)
    p = sub.add_parser("status", help="print whether the broker of --data-dir runs (exit 1 if not)")
    data_dir_arg(p)
    for name, text in (
        ("create-topics", "create the frames / results / dead-letter topics of the settings"),
        ("delete-topics", "delete the frames / results / dead-letter topics of the settings"),
    ):
        add_config_arguments(sub.add_parser(name, help=text))
    args = parser.parse_args(argv)
    setup_logging("INFO")

    try:
        if args.command == "start":
            broker = start_broker(args.data_dir, args.host, args.port, args.controller_port, args.heap, args.timeout)
            print(broker.bootstrap_servers)
        elif args.command == "stop":
            pid = stop_broker(args.data_dir, args.timeout)
            print(f"stopped pid {pid}" if pid else "not running")
        elif args.command == "status":
            broker = KafkaBroker(args.data_dir)
            if not broker.is_running():
                print("not running")
                return 1
            healthy = broker_ready(broker.bootstrap_servers, timeout_s=5)
            state = "healthy" if healthy else "not answering"
            print(f"running pid {broker.pid} on {broker.bootstrap_servers} ({state})")
            return 0 if healthy else 1
        else:
            settings = settings_from_args(args, require_cameras=False)  # topics need no cameras
            k = settings.kafka
            topics = [k.frames_topic, k.results_topic, k.dead_letter_topic]
            if not broker_ready(k.bootstrap_servers, timeout_s=10, client_config={**k.client, **k.client_python}):
                raise BrokerError(
                    f"no Kafka broker answers at {k.bootstrap_servers} "
                    f"(local: python -m trafficstream.infra.kafka start)"
                )
            if args.command == "create-topics":
                created = create_topics(
                    k.bootstrap_servers, topics, k.partitions, k.replication_factor, {**k.client, **k.client_python}
                )
                for topic, new in created.items():
                    print(f"{topic}: {'created' if new else 'exists'} ({k.bootstrap_servers})")
            else:
                deleted = delete_topics(k.bootstrap_servers, topics, {**k.client, **k.client_python})
                for topic, gone in deleted.items():
                    print(f"{topic}: {'deleted' if gone else 'absent'} ({k.bootstrap_servers})")
    except (BrokerError, JarsMissingError, ConfigError, KafkaException, TimeoutError) as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
