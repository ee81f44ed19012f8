"""JVM artifacts for local runs, resolved from Maven Central by ``infra/pom.xml``.

* ``infra/lib/kafka/``: the Kafka 4.1.1 broker classpath (used by :mod:`infra.local_kafka`).
* ``infra/lib/spark/``: what ``spark-submit --packages spark-sql-kafka-0-10_2.13:4.2.0,delta-spark_2.13:4.4.0``
  would add, minus the jars pyspark already ships; pass :func:`spark_jars_csv` as ``--jars`` / ``spark.jars``.

CLI::

    python -m trafficstream.infra.jars resolve [--force]   # what `make jars` runs; a no-op when already resolved
    python -m trafficstream.infra.jars list [kafka|spark]  # one absolute jar path per line
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import shutil
import subprocess
import sys
from pathlib import Path

from trafficstream.logs import setup_logging

log = logging.getLogger(__name__)

INFRA_DIR = Path(__file__).resolve().parent
POM = INFRA_DIR / "pom.xml"
MODULE_POMS = (INFRA_DIR / "maven" / "kafka-broker" / "pom.xml", INFRA_DIR / "maven" / "spark-connectors" / "pom.xml")
LIB_DIR = INFRA_DIR / "lib"
KAFKA_LIB = LIB_DIR / "kafka"
SPARK_LIB = LIB_DIR / "spark"
# Hash of the poms that produced lib/: a pom edit makes `resolve` run Maven again.
STAMP = LIB_DIR / ".resolved"
# The Maven command behind `make jars` (relative to the project root).
MAVEN_ARGS = ("-B", "-q", "-Dstyle.color=never", "-f", "infra/pom.xml", "package")

# One jar per artifact must be present for a set to count as resolved (names without version).
_REQUIRED = {
    "kafka": ("kafka_2.13-", "kafka-server-", "kafka-clients-", "log4j-slf4j-impl-"),
    "spark": (
        "spark-sql-kafka-0-10_2.13-",
        "spark-token-provider-kafka-0-10_2.13-",
        "kafka-clients-",
        "commons-pool2-",
        "delta-spark_2.13-",
        "delta-storage-",
    ),
}


class JarsMissingError(RuntimeError):
    """The Maven-resolved jars are absent or stale; the message says how to fix it."""


def _pom_digest() -> str:
    h = hashlib.sha256()
    for pom in (POM, *MODULE_POMS):
        h.update(pom.read_bytes())
    return h.hexdigest()


def lib_dir(which: str) -> Path:
    """``infra/lib/kafka`` or ``infra/lib/spark``."""
    return {"kafka": KAFKA_LIB, "spark": SPARK_LIB}[which]


def _missing(which: str) -> list[str]:
    lib = lib_dir(which)
    names = [p.name for p in lib.glob("*.jar")] if lib.is_dir() else []
    return [prefix for prefix in _REQUIRED[which] if not any(n.startswith(prefix) for n in names)]


def is_resolved() -> bool:
    """True when both jar sets are present and were produced by the current poms."""
    if _missing("kafka") or _missing("spark"):
        return False
    return STAMP.is_file() and STAMP.read_text().strip() == _pom_digest()


def maven_command(mvn: str = "mvn") -> list[str]:
    return [mvn, *MAVEN_ARGS]


def resolve(force: bool = False) -> None:
    """Run the Maven step unless the jars are already there (so offline reruns are fine)."""
    if not force and is_resolved():
        log.debug("jars already resolved in %s", LIB_DIR)
        return
    mvn = shutil.which("mvn")
    if mvn is None:
        raise JarsMissingError("Maven (`mvn`) not found on PATH; install Maven 3.6+ and run `make jars`")
    cmd = maven_command(mvn)
    log.info("resolving jars from Maven Central: %s", " ".join(cmd))
    STAMP.unlink(missing_ok=True)
    # cwd = project root, so MAVEN_ARGS' relative -f works and the command matches the Makefile's.
    proc = subprocess.run(cmd, cwd=INFRA_DIR.parent, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise JarsMissingError(f"Maven failed (exit {proc.returncode}):\n{tail}")
    for which in _REQUIRED:
        if missing := _missing(which):
            raise JarsMissingError(f"Maven succeeded but {lib_dir(which)} lacks {missing}")
    STAMP.write_text(_pom_digest() + "\n")
    log.info(
        "resolved %d broker jars into %s, %d Spark jars into %s",
        len(list(KAFKA_LIB.glob("*.jar"))),
        KAFKA_LIB,
        len(list(SPARK_LIB.glob("*.jar"))),
        SPARK_LIB,
    )


def _jars(which: str) -> list[Path]:
    lib = lib_dir(which)
    if missing := _missing(which):
        raise JarsMissingError(
            f"{lib} has no {', '.join(p + '*.jar' for p in missing)}: run `make jars` "
            f"(python -m trafficstream.infra.jars resolve)"
        )
    return sorted(lib.glob("*.jar"))


def kafka_jars() -> list[Path]:
    """The broker classpath (``infra/lib/kafka/*.jar``)."""
    return _jars("kafka")


def spark_jars() -> list[Path]:
    """Jars to add to pyspark: Kafka source/sink and Delta Lake (``infra/lib/spark/*.jar``)."""
    return _jars("spark")


def spark_jars_csv() -> str:
    """Comma-separated absolute paths, for ``spark-submit --jars`` and the ``spark.jars`` setting."""
    return ",".join(str(p) for p in spark_jars())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trafficstream.infra.jars", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p_resolve = sub.add_parser("resolve", help="resolve the jars with Maven (skipped when already resolved)")
    p_resolve.add_argument("--force", action="store_true", help="run Maven even if the jars are present")
    p_list = sub.add_parser("list", help="print the resolved jars, one path per line")
    p_list.add_argument("which", nargs="?", choices=("spark", "kafka"), default="spark")
    p_list.add_argument("--csv", action="store_true", help="one comma-separated line (for --jars)")
    args = parser.parse_args(argv)
    setup_logging("INFO")
    try:
        if args.command == "resolve":
            resolve(force=args.force)
            print(f"jars ready: {KAFKA_LIB} ({len(kafka_jars())}), {SPARK_LIB} ({len(spark_jars())})")
        else:
            jars = spark_jars() if args.which == "spark" else kafka_jars()
            print(",".join(map(str, jars)) if args.csv else "\n".join(map(str, jars)))
    except JarsMissingError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
