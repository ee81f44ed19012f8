"""The local single-node Apache Kafka 4.x broker (KRaft: broker and controller in one JVM) for demos and tests.

The broker runs from the Maven-resolved jars (``make jars``) as ``java -cp 'infra/lib/kafka/*' kafka.Kafka
server.properties``; everything it owns lives in one data directory::

    <data_dir>/server.properties   generated (ports are kept here, so a restart reuses them)
    <data_dir>/log4j2.properties   generated
    <data_dir>/kafka.pid           pid of the running broker
    <data_dir>/logs/server.log     the broker's log; logs/kafka.out: the JVM's own stdout/stderr
    <data_dir>/kafka-logs/         topic data and the KRaft metadata log

In code::

    with KafkaBroker(tmp_path) as broker:          # free ports, stopped on exit
        broker.create_topics(["frames"], partitions=4)
        producer = Producer({"bootstrap.servers": broker.bootstrap_servers})

A detached broker that outlives the caller: :func:`start_broker` / :func:`stop_broker`, or from the shell
``python -m trafficstream.infra.kafka start | stop | status`` (:mod:`infra.kafka`). Topic administration, for
this broker and real clusters alike, is :mod:`infra.topics`.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import TracebackType

from trafficstream.config import PROJECT_ROOT
from trafficstream.infra.jars import kafka_jars
from trafficstream.infra.topics import BrokerError, broker_ready, create_topics, delete_topics

log = logging.getLogger(__name__)

DEFAULT_DATA_DIR = PROJECT_ROOT / "var" / "kafka"
DEFAULT_PORT = 9092  # the CLI's default; matches kafka.bootstrap_servers in the default settings
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
NODE_ID = 1
# C1 only + serial GC: the broker is healthy in a few seconds on 2 shared cores; throughput is ample for a demo.
JVM_FLAGS = ("-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC", "-XX:+ExitOnOutOfMemoryError", "-Djava.awt.headless=true")

_LISTENER = re.compile(r"(PLAINTEXT|SASL|CONTROLLER)://([^:,\s]+):(\d+)")


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it; tiny race until the broker binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def _port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _random_cluster_id() -> str:
    """Kafka's Uuid text form: 16 random bytes, URL-safe base64 without padding, not starting with '-'."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        if not cid.startswith("-"):
            return cid


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _java() -> str:
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").is_file():
        return str(Path(home) / "bin" / "java")
    java = shutil.which("java")
    if java is None:
        raise BrokerError("`java` not found (set JAVA_HOME or put a Java 17+ runtime on PATH)")
    return java


class KafkaBroker:
    """One KRaft broker+controller JVM on ``host``; a context manager that starts and stops it.

    ``port`` / ``controller_port``: None reuses the ports of an existing ``server.properties`` in ``data_dir``
    (so clients and the controller quorum keep their address across restarts), else picks free ones.
    ``properties`` overrides or adds broker settings. ``sasl_users`` (user -> password) puts SASL/PLAIN on the
    client listener (SASL_PLAINTEXT; TLS is for real clusters): clients must then authenticate, and
    :attr:`client_config` holds the broker's own admin credentials for its health checks.
    """

    def __init__(
        self,
        data_dir: Path | str,
        host: str = "127.0.0.1",
        port: int | None = None,
        controller_port: int | None = None,
        heap: str = "512m",
        properties: Mapping[str, str] | None = None,
        sasl_users: Mapping[str, str] | None = None,
    ) -> None:
        self.data_dir = Path(data_dir).expanduser().resolve()
        self.host = host
        self.heap = heap
        self.extra_properties = dict(properties or {})
        self.sasl_users = dict(sasl_users or {})
        self.listener = "SASL" if self.sasl_users else "PLAINTEXT"
        # The broker's own account (inter-broker traffic, health checks): random, never logged.
        self._admin_password = secrets.token_urlsafe(16) if self.sasl_users else ""
        saved = self._saved_ports()
        self.port = port or saved.get(self.listener) or free_port(host)
        self.controller_port = controller_port or saved.get("CONTROLLER") or free_port(host)
        self._controller_port_given = controller_port is not None
        if self.controller_port == self.port:
            raise BrokerError(f"broker and controller need different ports (both {self.port})")
        self._proc: subprocess.Popen[bytes] | None = None
        self.startup_s: float | None = None  # how long the last start() took until healthy

    # -- paths --------------------------------------------------------------------------------------
    @property
    def properties_file(self) -> Path:
        return self.data_dir / "server.properties"

    @property
    def log4j_file(self) -> Path:
        return self.data_dir / "log4j2.properties"

    @property
    def pidfile(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def server_log(self) -> Path:
        return self.log_dir / "server.log"

    @property
    def console_log(self) -> Path:
        return self.log_dir / "kafka.out"

    @property
    def kafka_logs(self) -> Path:
        return self.data_dir / "kafka-logs"

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    def __repr__(self) -> str:
        return f"KafkaBroker({self.bootstrap_servers}, data_dir={self.data_dir}, pid={self.pid})"

    # -- configuration ------------------------------------------------------------------------------
    def _saved_ports(self) -> dict[str, int]:
        if not self.properties_file.is_file():
            return {}
        for line in self.properties_file.read_text().splitlines():
            if line.startswith("listeners="):
                return {name: int(port) for name, _, port in _LISTENER.findall(line)}
        return {}

    @property
    def client_config(self) -> dict[str, str]:
        """librdkafka properties this broker's own admin client needs (empty without SASL)."""
        if not self.sasl_users:
            return {}
        return {
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "admin",
            "sasl.password": self._admin_password,
        }

    def _sasl_properties(self) -> dict[str, str]:
        users = {"admin": self._admin_password, **self.sasl_users}
        accounts = " ".join(f'user_{u}="{pw}"' for u, pw in users.items())
        jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'username="admin" password="{self._admin_password}" {accounts};'
        )
        return {
            "sasl.enabled.mechanisms": "PLAIN",
            "sasl.mechanism.inter.broker.protocol": "PLAIN",
            "listener.name.sasl.plain.sasl.jaas.config": jaas,
        }

    def broker_properties(self) -> dict[str, str]:
        hp, cp = f"{self.host}:{self.port}", f"{self.host}:{self.controller_port}"
        name = self.listener
        protocol = "SASL_PLAINTEXT" if self.sasl_users else "PLAINTEXT"
        props = {
            "process.roles": "broker,controller",
            "node.id": str(NODE_ID),
            # Dynamic single-voter quorum (formatted with --standalone), as in Kafka 4.x's own config/server.properties.
            "controller.quorum.bootstrap.servers": cp,
            "listeners": f"{name}://{hp},CONTROLLER://{cp}",
            "advertised.listeners": f"{name}://{hp},CONTROLLER://{cp}",
            "listener.security.protocol.map": f"{name}:{protocol},CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": name,
            "controller.listener.names": "CONTROLLER",
            "log.dirs": str(self.kafka_logs),
            # One node: every internal topic has a single replica; few partitions keep the first group join fast.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Topics are created explicitly (create-topics) with the configured partition count.
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
            "num.network.threads": "2",
            "num.io.threads": "2",
            "background.threads": "2",
            "num.recovery.threads.per.data.dir": "1",
            # Frame references and results are small; keep the local disk footprint bounded.
            "log.segment.bytes": str(64 * 1024 * 1024),
            "log.retention.hours": "24",
            "log.retention.bytes": str(512 * 1024 * 1024),
            "log.retention.check.interval.ms": "60000",
        }
        if self.sasl_users:
            props.update(self._sasl_properties())
        props.update(self.extra_properties)
        return props

    def _write_config(self) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        lines = ["# Generated by infra/local_kafka.py on every start; edit KafkaBroker(properties=...) instead."]
        lines += [f"{k}={v}" for k, v in self.broker_properties().items()]
        # Owner-only: with SASL it holds the accounts' passwords.
        fd = os.open(self.properties_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write("\n".join(lines) + "\n")
        os.chmod(self.properties_file, 0o600)
        self.log4j_file.write_text(_LOG4J_TEMPLATE.format(log=self.server_log))

    def _jvm(self, main_class: str, *args: str) -> list[str]:
        classpath = os.pathsep.join(str(p) for p in kafka_jars())
        return [
            _java(),
            f"-Xms{self.heap}",
            f"-Xmx{self.heap}",
            *JVM_FLAGS,
            f"-Dlog4j2.configurationFile={self.log4j_file}",
            f"-Dkafka.logs.dir={self.log_dir}",
            "-cp",
            classpath,
            main_class,
            *args,
        ]

    @property
    def is_formatted(self) -> bool:
        return (self.kafka_logs / "meta.properties").is_file()

    def format_storage(self) -> None:
        """Give the metadata log a fresh cluster id and a single-voter quorum (once per data dir)."""
        cmd = self._jvm(
            STORAGE_TOOL,
            "format",
            "--config",
            str(self.properties_file),
            "--cluster-id",
            _random_cluster_id(),
            "--standalone",
        )
        proc = subprocess.run(cmd, cwd=self.data_dir, capture_output=True, text=True, timeout=120, check=False)
        if proc.returncode != 0:
            raise BrokerError(
                f"formatting {self.kafka_logs} failed (exit {proc.returncode}):\n{(proc.stdout + proc.stderr).strip()}"
            )
        log.info("formatted %s", self.kafka_logs)

    # -- process ------------------------------------------------------------------------------------
    def _pid_from_file(self) -> int | None:
        try:
            return int(self.pidfile.read_text().strip())
        except (OSError, ValueError):
            return None

    def _is_our_broker(self, pid: int) -> bool:
        """Alive, not a zombie, and (where /proc exists) really this data dir's broker, not a recycled pid."""
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by someone else: the cmdline check below decides
        proc_dir = Path("/proc") / str(pid)
        if not Path("/proc/self").exists():
            return True
        try:
            if proc_dir.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return False
            cmdline = proc_dir.joinpath("cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError):
            return False
        return MAIN_CLASS.encode() in cmdline and str(self.properties_file).encode() in cmdline

    @property
    def pid(self) -> int | None:
        """The running broker's process id (None when it is not running)."""
        pid = self._proc.pid if self._proc is not None else self._pid_from_file()
        return pid if pid is not None and self._is_our_broker(pid) else None

    def is_running(self) -> bool:
        return self.pid is not None

    def start(self, timeout_s: float = 90) -> KafkaBroker:
        """Start the broker in its own session (it survives this process) and wait until it serves metadata."""
        if (pid := self.pid) is not None:
            raise BrokerError(f"a broker for {self.data_dir} is already running (pid {pid}, {self.bootstrap_servers})")
        t0 = time.monotonic()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if _port_open(self.host, self.controller_port) and not self._controller_port_given:
            # Only the broker itself talks to its controller, and a single-voter quorum accepts a new address.
            old, self.controller_port = self.controller_port, free_port(self.host)
            log.info("saved controller port %d is taken; using %d", old, self.controller_port)
        for port in (self.port, self.controller_port):
            if _port_open(self.host, port):
                raise BrokerError(f"{self.host}:{port} is already in use")
        self._write_config()
        if not self.is_formatted:
            self.format_storage()
        cmd = self._jvm(MAIN_CLASS, str(self.properties_file))
        with self.console_log.open("ab") as out:
            self._proc = subprocess.Popen(
                cmd,
                cwd=self.data_dir,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.pidfile.write_text(f"{self._proc.pid}\n")
        log.info("kafka broker pid %d starting on %s (data %s)", self._proc.pid, self.bootstrap_servers, self.data_dir)
        try:
            self._wait_healthy(t0 + timeout_s)
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.monotonic() - t0
        log.info("kafka broker healthy on %s after %.1fs", self.bootstrap_servers, self.startup_s)
        return self

    def _wait_healthy(self, deadline: float) -> None:
        while True:
            if self._proc is not None and self._proc.poll() is not None:
                raise BrokerError(
                    f"kafka broker exited with {self._proc.returncode} during start-up\n{self.log_tail()}"
                )
            # Only ask librdkafka once the port accepts connections: it would log every refused connect.
            if _port_open(self.host, self.port) and broker_ready(
                self.bootstrap_servers, timeout_s=2, client_config=self.client_config
            ):
                return
            if time.monotonic() > deadline:
                raise BrokerError(f"kafka broker not healthy on {self.bootstrap_servers} in time\n{self.log_tail()}")
            time.sleep(0.2)

    def log_tail(self, lines: int = 40) -> str:
        parts = [f"--- {p} ---\n{t}" for p in (self.console_log, self.server_log) if (t := _tail(p, lines))]
        return "\n".join(parts) or f"(no broker log in {self.log_dir})"

    def stop(self, timeout_s: float = 30) -> None:
        """SIGTERM (controlled shutdown), then SIGKILL after ``timeout_s``; a no-op when not running."""
        pid = self.pid
        if pid is not None:
            log.info("stopping kafka broker pid %d", pid)
            os.kill(pid, signal.SIGTERM)
            if not self._wait_exit(pid, timeout_s):
                log.warning("kafka broker pid %d ignored SIGTERM for %.0fs; killing it", pid, timeout_s)
                os.kill(pid, signal.SIGKILL)
                if not self._wait_exit(pid, 10):
                    raise BrokerError(f"kafka broker pid {pid} survived SIGKILL")
        if self._proc is not None:
            self._proc.wait()  # reap our child (no zombie)
            self._proc = None
        self.pidfile.unlink(missing_ok=True)

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._is_our_broker(pid):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.1)
        return True

    def __enter__(self) -> KafkaBroker:  # not typing.Self: that needs Python 3.11
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- topics (infra.topics on this broker, with its own admin credentials) -----------------------
    def create_topics(
        self,
        names: Iterable[str],
        partitions: int,
        replication_factor: int = 1,
        client_config: Mapping[str, str] | None = None,
    ) -> dict[str, bool]:
        return create_topics(
            self.bootstrap_servers,
            names,
            partitions,
            replication_factor,
            client_config if client_config is not None else self.client_config,
        )

    def delete_topics(self, names: Iterable[str], client_config: Mapping[str, str] | None = None) -> dict[str, bool]:
        return delete_topics(
            self.bootstrap_servers, names, client_config if client_config is not None else self.client_config
        )


_LOG4J_TEMPLATE = """\
# Generated by infra/local_kafka.py. The broker's log, size-rotated; the JVM's stdout/stderr go to kafka.out.
status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log}
appender.file.filePattern = {log}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.state.name = state.change.logger
logger.state.level = WARN
"""


# -- a detached broker (outlives the caller: the CLI's start / stop) -------------------------------------------
def start_broker(
    data_dir: Path | str = DEFAULT_DATA_DIR,
    host: str = "127.0.0.1",
    port: int | None = DEFAULT_PORT,
    controller_port: int | None = None,
    heap: str = "512m",
    timeout_s: float = 90,
) -> KafkaBroker:
    """Start a broker that outlives the caller (pidfile in ``data_dir``); returns the running one if any."""
    running = KafkaBroker(data_dir, host=host)  # ports as saved in data_dir
    if running.is_running():
        log.info("kafka broker already running: pid %s on %s", running.pid, running.bootstrap_servers)
        if port and port != running.port:
            log.warning("it listens on port %d, not %d; stop it first to change the port", running.port, port)
        return running
    broker = KafkaBroker(data_dir, host=host, port=port or None, controller_port=controller_port, heap=heap)
    return broker.start(timeout_s=timeout_s)


def stop_broker(data_dir: Path | str = DEFAULT_DATA_DIR, timeout_s: float = 30) -> int | None:
    """Stop the broker of ``data_dir`` by its pidfile; returns the pid it stopped (None: none was running)."""
    broker = KafkaBroker(data_dir)
    pid = broker.pid
    broker.stop(timeout_s=timeout_s)
    return pid
