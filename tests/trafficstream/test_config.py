from pathlib import Path

import pytest

from trafficstream.config import DEFAULT_CONFIG, load_settings
from trafficstream.errors import ConfigError

CAM = """
cameras:
  - id: cam-1
    source: "{data_dir}/videos/highway_640x360.mp4"
    speed_limit_kmh: 100
    calibration:
      image_points: [[0, 0], [100, 0], [100, 100], [0, 100]]
      world_points: [[0, 0], [3.5, 0], [3.5, 20], [0, 20]]
"""


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "deploy.yaml"
    p.write_text(text)
    return p


def test_demo_config_loads():
    s = load_settings(DEFAULT_CONFIG, environ={})
    assert {c.id for c in s.cameras} >= {"motorway-overpass", "dual-carriageway"}
    for cam in s.cameras:
        assert cam.source_path().is_file(), cam.source


def test_precedence_cli_over_env_over_file(tmp_path):
    p = _write(tmp_path, CAM + "kafka:\n  partitions: 3\n  bootstrap_servers: file:1\n")
    env = {"TRAFFICSTREAM_KAFKA__BOOTSTRAP_SERVERS": "env:2", "TRAFFICSTREAM_KAFKA__PARTITIONS": "5"}
    s = load_settings(p, ["kafka.bootstrap_servers=cli:3"], environ=env)
    assert s.kafka.bootstrap_servers == "cli:3"
    assert s.kafka.partitions == 5
    assert s.cameras[0].source_path().name == "highway_640x360.mp4"
    assert "{data_dir}" not in s.cameras[0].source


@pytest.mark.parametrize(
    "patch, needle",
    [
        (("image_points: [[0, 0], [100, 0], [100, 100], [0, 100]]", "image_points: [[0, 0], [100, 0], [100, 100]]"),
         "cameras[0].calibration.image_points"),
        (("speed_limit_kmh: 100", "speed_limit_kmh: -5"), "cameras[0].speed_limit_kmh"),
        (("id: cam-1", "id: 'bad id!'"), "cameras[0].id"),
        (("world_points: [[0, 0], [3.5, 0], [3.5, 20], [0, 20]]", "world_points: [[0, 0], [1, 1], [2, 2], [3, 3]]"),
         "collinear"),
        (("source: \"{data_dir}/videos/highway_640x360.mp4\"", "source: rtmp://x/y"), "unsupported source scheme"),
    ],
)
def test_bad_camera_config_names_the_field(tmp_path, patch, needle):
    p = _write(tmp_path, CAM.replace(*patch))
    with pytest.raises(ConfigError) as err:
        load_settings(p, environ={})
    assert needle in str(err.value)


def test_unknown_key_and_bad_override(tmp_path):
    p = _write(tmp_path, CAM + "kafka:\n  bootstrap: x\n")
    with pytest.raises(ConfigError, match="kafka.bootstrap"):
        load_settings(p, environ={})
    with pytest.raises(ConfigError, match="expected section.key=value"):
        load_settings(_write(tmp_path, CAM), ["nonsense"], environ={})
    with pytest.raises(ConfigError, match="not found"):
        load_settings(tmp_path / "missing.yaml", environ={})


def test_duplicate_camera_ids(tmp_path):
    text = CAM + CAM.replace("cameras:\n", "")
    with pytest.raises(ConfigError, match="duplicate camera id 'cam-1'"):
        load_settings(_write(tmp_path, text), environ={})


def test_paths_expand(tmp_path):
    s = load_settings(_write(tmp_path, CAM), [f"storage.var_dir={tmp_path}"], environ={})
    assert s.delta_root == (tmp_path / "delta").resolve()
    assert s.allowed_roots == [s.storage.data_dir.resolve()]


def test_storage_uris_stay_uris(tmp_path):
    s = load_settings(_write(tmp_path, CAM), ["storage.delta_root=s3a://bucket/traffic/delta/",
                                              "storage.checkpoint_root=hdfs://nn/chk"], environ={})
    assert s.table_uri("frames") == "s3a://bucket/traffic/delta/frames"
    assert s.checkpoint_uri("vehicles") == "hdfs://nn/chk/vehicles"
    local = load_settings(_write(tmp_path, CAM), [f"storage.var_dir={tmp_path}"], environ={})
    assert local.table_uri("frames") == str((tmp_path / "delta" / "frames").resolve())


def test_kafka_client_settings_split(tmp_path):
    s = load_settings(_write(tmp_path, CAM + """
kafka:
  client: {security.protocol: SASL_SSL}
  client_python: {sasl.username: u}
  client_spark: {sasl.jaas.config: x}
"""), environ={})
    py = s.kafka.python_config(**{"group.id": "g"})
    assert py["security.protocol"] == "SASL_SSL" and py["sasl.username"] == "u" and "sasl.jaas.config" not in py
    sp = s.kafka.spark_options()
    assert sp["kafka.security.protocol"] == "SASL_SSL" and sp["kafka.sasl.jaas.config"] == "x"
    assert "kafka.sasl.username" not in sp


def test_property_maps_take_dotted_keys_from_env_and_cli(tmp_path):
    s = load_settings(_write(tmp_path, CAM), ["kafka.client_spark.ssl.truststore.location=/t.jks"],
                      environ={"TRAFFICSTREAM_KAFKA__CLIENT_PYTHON__SASL.PASSWORD": "secret"})
    assert s.kafka.client_python == {"sasl.password": "secret"}
    assert s.kafka.client_spark == {"ssl.truststore.location": "/t.jks"}


def test_camera_fields_by_id(tmp_path):
    s = load_settings(_write(tmp_path, CAM), ["cameras.cam-1.speed_limit_kmh=80"], environ={})
    assert s.cameras[0].speed_limit_kmh == 80
    with pytest.raises(ConfigError, match="no camera with id 'nope'"):
        load_settings(_write(tmp_path, CAM), ["cameras.nope.speed_limit_kmh=80"], environ={})
