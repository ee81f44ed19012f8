"""Secrets stay secret: file references, env, masking in repr / dumps / errors, nothing shipped to Spark tasks,
nothing in the settings file written for spark-submit."""

from __future__ import annotations

import json
import logging
import stat
from pathlib import Path

import pytest
import yaml

from trafficstream.config import (
    PROJECT_ROOT,
    load_settings,
    secret_environ,
    settings_from_json,
    settings_to_dict,
    settings_to_json,
)
from trafficstream.errors import ConfigError
from trafficstream.secrets import MASK, SecretMap, is_secret_key, reveal

CAM = """
cameras:
  - id: cam-1
    source: "{data_dir}/videos/highway_640x360.mp4"
    speed_limit_kmh: 100
"""
SECRETS = {
    "sasl.password": "pw-FROM-FILE",
    "jaas": "JAAS-ScramLoginModule-secret",
    "trust": "0123",
    "key": "-----BEGIN PRIVATE KEY-----x",
    "dash": "dash-PW",
    "spark": "s3-SECRET-key",
}


@pytest.fixture
def secret_settings(tmp_path: Path):
    pw_file = tmp_path / "kafka_password"
    pw_file.write_text(SECRETS["sasl.password"] + "\n")  # Docker / Kubernetes secrets end with a newline
    config = tmp_path / "deploy.yaml"
    config.write_text(
        CAM
        + f"""
kafka:
  client: {{security.protocol: SASL_SSL, sasl.mechanism: SCRAM-SHA-512}}
  client_python:
    sasl.username: trafficstream
    sasl.password: file:{pw_file}
    ssl.key.pem: "{SECRETS["key"]}"
  client_spark:
    sasl.jaas.config: "{SECRETS["jaas"]}"
dashboard:
  basic_auth_user: staff
"""
    )
    env = {
        "TRAFFICSTREAM_KAFKA__CLIENT_SPARK__SSL.TRUSTSTORE.PASSWORD": SECRETS["trust"],
        "TRAFFICSTREAM_DASHBOARD__BASIC_AUTH_PASSWORD": SECRETS["dash"],
    }
    return load_settings(
        config,
        ["spark.conf.spark.hadoop.fs.s3a.secret.key=" + SECRETS["spark"], "spark.conf.spark.sql.shuffle.partitions=2"],
        environ=env,
    )


def _leaks(text: str) -> list[str]:
    return [v for v in SECRETS.values() if v in text]


def test_secret_keys():
    for key in (
        "sasl.password",
        "sasl.jaas.config",
        "ssl.key.password",
        "ssl.keystore.password",
        "ssl.truststore.password",
        "ssl.key.pem",
        "sasl.oauthbearer.client.secret",
        "SASL.PASSWORD",
        "spark.hadoop.fs.s3a.secret.key",
        "spark.ssl.keyPassword",
    ):
        assert is_secret_key(key), key
    for key in ("sasl.username", "security.protocol", "ssl.truststore.location", "ssl.key.location", "acks"):
        assert not is_secret_key(key), key


def test_clients_get_the_real_values(secret_settings):
    k = secret_settings.kafka
    py = k.python_config(**{"group.id": "g"})
    assert py["sasl.password"] == SECRETS["sasl.password"]  # file content, trailing newline removed
    assert py["ssl.key.pem"] == SECRETS["key"] and py["security.protocol"] == "SASL_SSL"
    sp = k.spark_options()
    assert sp["kafka.sasl.jaas.config"] == SECRETS["jaas"]
    assert sp["kafka.ssl.truststore.password"] == "0123"  # from env, kept as text (not the int 123)
    assert {**k.client, **k.client_python}["sasl.password"] == SECRETS["sasl.password"]  # ingest / infra CLIs
    assert reveal(secret_settings.dashboard.basic_auth_password) == SECRETS["dash"]
    assert secret_settings.spark.conf["spark.hadoop.fs.s3a.secret.key"] == SECRETS["spark"]


def test_nothing_prints_a_secret(secret_settings, caplog):
    s = secret_settings
    k = s.kafka
    texts = [
        repr(s),
        str(s),
        f"{s}",
        str(s.model_dump()),
        s.model_dump_json(),
        json.dumps(s.model_dump(mode="json")),
        repr(k.python_config()),
        str(k.spark_options()),
        f"{k.client_python}",
        repr(s.spark.conf),
        yaml.safe_dump(s.model_dump(mode="json")),
    ]
    caplog.set_level(logging.DEBUG)
    logging.getLogger("test").info("settings %s, python %s, spark %s", s, k.python_config(), k.spark_options())
    texts.append(caplog.text)
    for text in texts:
        assert not _leaks(text), text
    assert MASK in repr(s)
    assert s.model_dump(mode="json")["kafka"]["client_python"]["sasl.password"] == MASK
    assert s.model_dump(mode="json")["dashboard"]["basic_auth_password"] == MASK


def test_the_json_for_spark_tasks_has_no_secret(secret_settings):
    text = settings_to_json(secret_settings)
    assert not _leaks(text) and MASK not in text
    back = settings_from_json(text)
    assert back.kafka.client_python == {"sasl.username": "trafficstream"}
    assert back.kafka.client == secret_settings.kafka.client
    assert back.dashboard.basic_auth_password is None and back.dashboard.basic_auth_user == "staff"
    assert back.spark.conf == {"spark.sql.shuffle.partitions": "2"}
    assert back.cameras == secret_settings.cameras
    full = settings_from_json(settings_to_json(secret_settings, include_secrets=True))
    assert full.kafka.python_config() == secret_settings.kafka.python_config()
    assert reveal(full.dashboard.basic_auth_password) == SECRETS["dash"]


def test_secrets_travel_to_a_child_process_through_its_environment(secret_settings, tmp_path):
    """What infra/pipeline.py does for spark-submit: a settings file without secrets + env variables."""
    config = tmp_path / "job-settings.yaml"
    config.write_text(yaml.safe_dump(settings_to_dict(secret_settings)))
    assert not _leaks(config.read_text())
    env = secret_environ(secret_settings)
    assert env["TRAFFICSTREAM_KAFKA__CLIENT_PYTHON__sasl.password"] == SECRETS["sasl.password"]
    child = load_settings(config, environ=env)
    assert child.kafka.python_config() == secret_settings.kafka.python_config()
    assert child.kafka.spark_options() == secret_settings.kafka.spark_options()
    assert child.spark.conf == secret_settings.spark.conf


def test_env_keeps_the_case_of_camel_cased_property_names(tmp_path):
    config = tmp_path / "d.yaml"
    config.write_text(CAM)
    s = load_settings(
        config,
        environ={
            "TRAFFICSTREAM_SPARK__CONF__spark.ssl.keyPassword": "yes",
            "TRAFFICSTREAM_KAFKA__CLIENT__SASL.PASSWORD": "[not yaml",
        },
    )
    assert s.spark.conf == {"spark.ssl.keyPassword": "yes"}  # "yes" stays text (YAML would say True)
    assert s.kafka.client == {"sasl.password": "[not yaml"}


def test_unreadable_secret_file_names_the_field_and_path_only(tmp_path):
    config = tmp_path / "d.yaml"
    config.write_text(CAM + "kafka:\n  client_spark:\n    sasl.jaas.config: file:/nonexistent/jaas\n")
    with pytest.raises(ConfigError) as err:
        load_settings(config, environ={})
    assert "kafka.client_spark: sasl.jaas.config: cannot read secret file /nonexistent/jaas" in str(err.value)
    with pytest.raises(ConfigError) as err:
        load_settings(
            config, ["kafka.client_spark.sasl.jaas.config=x", "dashboard.basic_auth_password=file:"], environ={}
        )
    assert "dashboard.basic_auth_password: " in str(err.value)


def test_errors_never_show_a_secret(tmp_path):
    config = tmp_path / "d.yaml"
    config.write_text(
        CAM + "kafka:\n  client_python: {sasl.password: [hunter2-SECRET]}\n"
        "dashboard:\n  basic_auth_password: {p: hunter2-SECRET}\n"
    )
    with pytest.raises(ConfigError) as err:
        load_settings(config, environ={})
    assert "kafka.client_python.sasl.password" in str(err.value) and "dashboard.basic_auth_password" in str(err.value)
    assert "hunter2" not in str(err.value)


def test_secret_map_is_a_plain_dict_for_clients():
    m = SecretMap({"sasl.password": "hunter2", "acks": "all"})
    assert dict(m) == {"sasl.password": "hunter2", "acks": "all"} and {**m}["sasl.password"] == "hunter2"
    assert "hunter2" not in repr(m) and "hunter2" not in str(m) and "hunter2" not in f"{m}"
    assert m.public() == {"acks": "all"}


def test_settings_file_for_spark_submit_is_private_and_secret_free(secret_settings, tmp_path):
    from trafficstream.infra.pipeline import job_environ, write_settings

    path = tmp_path / "job" / "job-settings.yaml"
    path.parent.mkdir()
    path.write_text("old")
    path.chmod(0o644)  # a file left from an earlier run keeps no wider mode
    write_settings(secret_settings, path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert not _leaks(path.read_text())
    env = job_environ(secret_settings, base={"PATH": "/usr/bin"})
    assert env["TRAFFICSTREAM_KAFKA__CLIENT_SPARK__sasl.jaas.config"] == SECRETS["jaas"]
    assert str(PROJECT_ROOT) in env["PYTHONPATH"]
    assert load_settings(path, environ=env).kafka.spark_options() == secret_settings.kafka.spark_options()


def test_the_sasl_ssl_example_config_loads_with_its_secret_files(tmp_path):
    files = {}
    for name in ("kafka_password", "kafka_jaas_config", "kafka_truststore_password", "dashboard_password"):
        files[name] = tmp_path / name
        files[name].write_text(f"{name}-value\n")
    overrides = [
        f"storage.data_dir={tmp_path}",
        f"storage.evidence_root={tmp_path / 'ev'}",
        f"kafka.client_python.sasl.password=file:{files['kafka_password']}",
        f"kafka.client_spark.sasl.jaas.config=file:{files['kafka_jaas_config']}",
        f"kafka.client_spark.ssl.truststore.password=file:{files['kafka_truststore_password']}",
        f"dashboard.basic_auth_password=file:{files['dashboard_password']}",
    ]
    s = load_settings(PROJECT_ROOT / "infra" / "config" / "sasl_ssl.example.yaml", overrides, environ={})
    assert s.kafka.spark_options()["kafka.sasl.jaas.config"] == "kafka_jaas_config-value"
    assert "kafka_password-value" not in repr(s)
