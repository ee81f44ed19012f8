"""The Maven-resolved Spark jar set (infra/lib/spark, `make jars`) against the pip-installed pyspark."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pyspark
import pytest

from trafficstream.infra.jars import JarsMissingError, kafka_jars, spark_jars, spark_jars_csv

PYSPARK_JARS = Path(pyspark.__file__).parent / "jars"
# artifactId-version.jar; the version is the last "-<digits>.<digits>..." part (artifactIds hold digits too,
# e.g. "spark-sql-kafka-0-10_2.13").
_JAR_NAME = re.compile(r"^(?P<artifact>.+)-(?P<version>\d+\.\d+[\w.\-]*)\.jar$")


def artifact_id(jar: Path) -> str:
    """From the jar's own Maven metadata when present (exact), else from the file name."""
    with zipfile.ZipFile(jar) as z:
        poms = [n for n in z.namelist() if n.startswith("META-INF/maven/") and n.endswith("/pom.properties")]
        if len(poms) == 1:
            props = dict(line.split("=", 1) for line in z.read(poms[0]).decode().splitlines() if "=" in line)
            if "artifactId" in props:
                return props["artifactId"].strip()
    m = _JAR_NAME.match(jar.name)
    assert m, f"unexpected jar name {jar.name}"
    return m["artifact"]


def classes(jar: Path) -> set[str]:
    with zipfile.ZipFile(jar) as z:
        return {
            n
            for n in z.namelist()
            if n.endswith(".class")
            and not n.startswith("META-INF/")
            and n != "module-info.class"
            # every Spark module carries this one placeholder class
            and n != "org/apache/spark/unused/UnusedStubClass.class"
        }


@pytest.fixture(scope="module")
def jars() -> list[Path]:
    return spark_jars()  # raises JarsMissingError ("run `make jars`") when never resolved


def test_contains_the_kafka_connector_and_delta(jars: list[Path]) -> None:
    names = {j.name for j in jars}
    for expected in (
        "spark-sql-kafka-0-10_2.13-4.2.0.jar",
        "kafka-clients-3.9.2.jar",
        "delta-spark_2.13-4.4.0.jar",
        "delta-storage-4.4.0.jar",
    ):
        assert expected in names, f"{expected} missing from {sorted(names)}"
    assert any(n.startswith("spark-token-provider-kafka-0-10_2.13-") for n in names)
    assert any(n.startswith("commons-pool2-") for n in names)


def test_ships_nothing_pyspark_already_has(jars: list[Path]) -> None:
    assert PYSPARK_JARS.is_dir(), PYSPARK_JARS
    shipped = {artifact_id(j): j.name for j in PYSPARK_JARS.glob("*.jar")}
    dupes = {j.name: shipped[a] for j in jars if (a := artifact_id(j)) in shipped}
    assert not dupes, f"already in pyspark/jars (any version breaks class loading): {dupes}"


def test_no_class_is_defined_twice(jars: list[Path]) -> None:
    # Catches shaded or renamed copies that the artifact check cannot see.
    seen: dict[str, str] = {}
    for jar in sorted(PYSPARK_JARS.glob("*.jar")):
        seen.update(dict.fromkeys(classes(jar), jar.name))
    clashes = {}
    for jar in jars:
        for cls in classes(jar):
            if cls in seen:
                clashes.setdefault(f"{jar.name} vs {seen[cls]}", cls)
            seen[cls] = jar.name
    assert not clashes, clashes


def test_csv_is_absolute_paths(jars: list[Path]) -> None:
    parts = spark_jars_csv().split(",")
    assert parts == [str(j) for j in jars] and all(Path(p).is_absolute() and Path(p).is_file() for p in parts)


def test_broker_classpath_is_resolved() -> None:
    names = {j.name for j in kafka_jars()}
    assert {"kafka_2.13-4.1.1.jar", "kafka-server-4.1.1.jar", "kafka-clients-4.1.1.jar"} <= names
    assert any(n.startswith("log4j-slf4j-impl-") for n in names)  # or the broker logs nothing


def test_missing_jars_say_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import trafficstream.infra.jars as jars_mod

    monkeypatch.setattr(jars_mod, "SPARK_LIB", tmp_path / "spark")
    with pytest.raises(JarsMissingError, match="run `make jars`"):
        jars_mod.spark_jars()
