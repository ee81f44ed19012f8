"""A Spark standalone cluster on this machine: one master and N workers from the pyspark distribution's own
classes (``spark-class org.apache.spark.deploy.master.Master`` / ``...worker.Worker``), bound to 127.0.0.1.

What the packaged-job test and ``make bench`` (scaling over executors) submit to with
``spark-submit --master spark://127.0.0.1:PORT``; a real cluster is the same command line with its master URL.
Processes run in their own sessions and are stopped by process id.

    python -m trafficstream.infra.cluster start --workers 2 --cores 1   # prints the master URL; Ctrl-C stops
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def spark_home() -> Path:
    import pyspark

    return Path(pyspark.__file__).resolve().parent


def _port_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        s.settimeout(0.3)
        return s.connect_ex(("127.0.0.1", port)) == 0


class StandaloneCluster:
    """Master + ``workers`` workers of ``cores`` cores / ``memory`` each; a context manager."""

    def __init__(self, workdir: Path, workers: int = 1, cores: int = 2, memory: str = "6g") -> None:
        self.workdir = Path(workdir)
        self.workers, self.cores, self.memory = workers, cores, memory
        self.port = free_port()
        self.procs: list[subprocess.Popen[bytes]] = []

    @property
    def master_url(self) -> str:
        return f"spark://127.0.0.1:{self.port}"

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        env = dict(
            os.environ,
            SPARK_HOME=str(spark_home()),
            SPARK_LOCAL_IP="127.0.0.1",
            SPARK_LOG_DIR=str(self.workdir / "logs"),
            SPARK_WORKER_DIR=str(self.workdir / "work"),
        )
        self.workdir.mkdir(parents=True, exist_ok=True)
        out = (self.workdir / f"{name}.log").open("ab")
        cmd = [str(spark_home() / "bin" / "spark-class"), *args]
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )
        out.close()
        self.procs.append(proc)
        return proc

    def start(self, timeout_s: float = 120) -> StandaloneCluster:
        ui = free_port()
        self._spawn(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--webui-port",
            str(ui),
        )
        self._wait(lambda: _port_open(self.port), timeout_s, "master")
        for i in range(self.workers):
            self._spawn(
                f"worker-{i}",
                "org.apache.spark.deploy.worker.Worker",
                "--host",
                "127.0.0.1",
                "--cores",
                str(self.cores),
                "--memory",
                self.memory,
                "--webui-port",
                str(free_port()),
                "--work-dir",
                str(self.workdir / f"work-{i}"),
                self.master_url,
            )
        self._wait(lambda: self.registered_workers() >= self.workers, timeout_s, "workers")
        log.info("spark standalone cluster at %s: %d worker(s) x %d core(s)", self.master_url, self.workers, self.cores)
        return self

    def registered_workers(self) -> int:
        log_file = self.workdir / "master.log"
        text = log_file.read_text(errors="replace") if log_file.is_file() else ""
        return text.count("Registering worker")

    def _wait(self, ready, timeout_s: float, what: str) -> None:
        deadline = time.time() + timeout_s
        while not ready():
            for p in self.procs:
                if p.poll() is not None:
                    raise RuntimeError(f"spark {what} exited with {p.returncode}; see {self.workdir}")
            if time.time() > deadline:
                raise TimeoutError(f"spark {what} not ready in {timeout_s}s; see {self.workdir}")
            time.sleep(0.3)

    def stop(self) -> None:
        for p in reversed(self.procs):  # workers first, then the master
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        self.procs.clear()

    def __enter__(self) -> StandaloneCluster:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trafficstream.infra.cluster", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("start", help="start a master and workers, print the master URL, run until Ctrl-C")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--cores", type=int, default=2)
    p.add_argument("--memory", default="6g")
    p.add_argument("--workdir", type=Path, default=Path("var/spark-cluster"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    with StandaloneCluster(args.workdir, args.workers, args.cores, args.memory) as cluster:
        print(cluster.master_url, flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
