"""Static checks of the Kubernetes manifests in infra/k8s (not runnable here: parsed and inspected only)."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from trafficstream.config import PROJECT_ROOT, load_settings

K8S = PROJECT_ROOT / "infra" / "k8s"
FILES = sorted(K8S.rglob("*.yaml"))
MARK = "NOT RUNNABLE ON THE BUILD MACHINES"
PLACEHOLDERS = {"CHANGE_ME"}
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|ACCESS_KEY|PRIVATE", re.IGNORECASE)
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob", "Pod", "ReplicaSet"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _all_docs() -> Iterator[tuple[Path, dict[str, Any]]]:
    for path in FILES:
        for doc in _docs(path):
            yield path, doc


def _pod_spec(doc: dict[str, Any]) -> dict[str, Any] | None:
    kind = doc["kind"]
    if kind == "Pod":
        return doc["spec"]
    if kind == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    if kind in WORKLOADS:
        return doc["spec"]["template"]["spec"]
    return None


def _containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    spec = _pod_spec(doc) or {}
    return [*spec.get("initContainers", []), *spec.get("containers", [])]


def test_manifests_exist_and_say_they_are_not_runnable_here() -> None:
    assert len(FILES) >= 8
    for path in FILES:
        assert MARK in path.read_text().splitlines()[0], f"{path.name}: first line must carry the header"
    assert MARK.lower() in (K8S / "README.md").read_text().lower()


@pytest.mark.parametrize("path", FILES, ids=lambda p: str(p.relative_to(K8S)))
def test_every_document_parses_and_is_named(path: Path) -> None:
    docs = _docs(path)
    assert docs, f"{path.name}: no YAML document"
    for doc in docs:
        assert isinstance(doc, dict)
        assert doc.get("apiVersion") and doc.get("kind"), f"{path.name}: apiVersion/kind missing"
        assert (doc.get("metadata") or {}).get("name"), f"{path.name}: {doc['kind']} without metadata.name"


def test_names_are_unique_per_kind() -> None:
    seen: set[tuple[str, str]] = set()
    for path, doc in _all_docs():
        key = (doc["kind"], doc["metadata"]["name"])
        assert key not in seen, f"{path.name}: duplicate {key}"
        seen.add(key)


def test_secrets_hold_placeholders_only() -> None:
    secrets = [(p, d) for p, d in _all_docs() if d["kind"] == "Secret"]
    assert secrets
    for path, doc in secrets:
        assert not doc.get("data"), f"{path.name}: {doc['metadata']['name']} has base64 data (a real value?)"
        for key, value in (doc.get("stringData") or {}).items():
            assert value in PLACEHOLDERS, f"{path.name}: secret {doc['metadata']['name']}.{key} is not a placeholder"


def test_no_literal_credentials_in_env_or_spark_conf() -> None:
    for path, doc in _all_docs():
        for container in _containers(doc):
            for env in container.get("env", []):
                if SECRETISH.search(env["name"]) and "value" in env:
                    # only a file: reference to a mounted Secret, never the value itself
                    assert str(env["value"]).startswith("file:/run/secrets/"), f"{path.name}: {env['name']} inline"
    for path in FILES:  # S3A keys only through the credential provider chain (environment from the Secret)
        text = path.read_text()
        assert "fs.s3a.access.key" not in text and "fs.s3a.secret.key" not in text, path.name


def test_every_container_has_resource_limits() -> None:
    checked = 0
    for path, doc in _all_docs():
        for container in _containers(doc):
            limits = (container.get("resources") or {}).get("limits") or {}
            assert {"cpu", "memory"} <= set(limits), f"{path.name}: {container['name']} without cpu/memory limits"
            checked += 1
        if doc["kind"] == "SparkApplication":  # Spark sets the pod limits from these
            for role in ("driver", "executor"):
                assert doc["spec"][role].get("coreLimit") and doc["spec"][role].get("memory"), f"{role} limits"
            checked += 2
    assert checked >= 8


def test_spark_application_gpu_executors() -> None:
    [app] = [d for _, d in _all_docs() if d["kind"] == "SparkApplication"]
    conf, executor = app["spec"]["sparkConf"], app["spec"]["executor"]
    assert conf["spark.executor.resource.gpu.amount"] == "1"
    assert float(conf["spark.task.resource.gpu.amount"]) * executor["cores"] == 1.0  # the slots share the GPU
    assert conf["spark.executor.resource.gpu.discoveryScript"].startswith("/opt/trafficstream/gpu/")
    assert executor["gpu"] == {"name": "nvidia.com/gpu", "quantity": 1}
    assert executor["nodeSelector"] and executor["tolerations"]
    secret_refs = [e["secretRef"]["name"] for e in executor["envFrom"] if "secretRef" in e]
    assert secret_refs == ["trafficstream-s3"]


def test_kafka_statefulset_is_a_three_voter_kraft_cluster() -> None:
    [sts] = [d for _, d in _all_docs() if d["kind"] == "StatefulSet" and d["metadata"]["name"] == "kafka"]
    [container] = _containers(sts)
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert container["image"].startswith("apache/kafka:")
    assert sts["spec"]["replicas"] == 3 == len(env["KAFKA_CONTROLLER_QUORUM_VOTERS"].split(","))
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller" and env["KAFKA_MIN_INSYNC_REPLICAS"] == "2"


def test_dashboard_password_comes_from_a_mounted_secret() -> None:
    [dep] = [d for _, d in _all_docs() if d["kind"] == "Deployment" and d["metadata"]["name"] == "dashboard"]
    [container] = _containers(dep)
    env = {e["name"]: e.get("value") for e in container["env"]}
    ref = env["TRAFFICSTREAM_DASHBOARD__BASIC_AUTH_PASSWORD"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in _pod_spec(dep)["volumes"]}
    [secret_volume] = [n for n, v in volumes.items() if "secret" in v]
    assert ref.startswith(f"file:{mounts[secret_volume]}/")


def test_embedded_deployment_settings_load(tmp_path: Path) -> None:
    [cm] = [d for _, d in _all_docs() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "trafficstream-config"]
    config = tmp_path / "deploy.yaml"
    config.write_text(cm["data"]["deploy.yaml"])
    settings = load_settings(config, environ={})
    assert settings.table_uri("detections") == "s3a://trafficstream/delta/detections"
    assert settings.kafka.replication_factor == 3 and settings.cameras


def test_cronjobs_never_overlap_themselves() -> None:
    cronjobs = [d for _, d in _all_docs() if d["kind"] == "CronJob"]
    assert {c["metadata"]["name"] for c in cronjobs} >= {"traffic-statistics", "table-care-daily"}
    for cj in cronjobs:
        assert cj["spec"]["concurrencyPolicy"] == "Forbid"
        command = " ".join(_containers(cj)[0]["command"])
        if "trafficstream.maintenance" in command and "--s3-exclusive" in command:
            assert "--tables traffic_stats" in command  # the only table without a concurrent writer


def test_yamllint_relaxed() -> None:
    pytest.importorskip("yamllint")
    config = (
        "{extends: relaxed, rules: {line-length: {max: 120, allow-non-breakable-words: true, "
        "allow-non-breakable-inline-mappings: true}}}"
    )
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-d", config, str(K8S)],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
