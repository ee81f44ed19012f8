from pathlib import Path

import pytest

from trafficstream.config import DEFAULT_CONFIG, Settings, load_settings
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
        (
            ("image_points: [[0, 0], [100, 0], [100, 100], [0, 100]]", "image_points: [[0, 0], [100, 0], [100, 100]]"),
            "cameras[0].calibration.image_points",
        ),
        (("speed_limit_kmh: 100", "speed_limit_kmh: -5"), "cameras[0].speed_limit_kmh"),
        (("id: cam-1", "id: 'bad id!'"), "cameras[0].id"),
        (
            ("world_points: [[0, 0], [3.5, 0], [3.5, 20], [0, 20]]", "world_points: [[0, 0], [1, 1], [2, 2], [3, 3]]"),
            "collinear",
        ),
        (('source: "{data_dir}/videos/highway_640x360.mp4"', "source: ftp://x/y"), "unsupported source scheme"),
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
    # the live cameras' segment folder is always a root: the executors decode the segments
    assert s.allowed_roots == [s.storage.data_dir.resolve(), (tmp_path / "segments").resolve()]
    assert s.segment_dir("cam-1") == (tmp_path / "segments" / "cam-1").resolve()


def test_storage_uris_stay_uris(tmp_path):
    s = load_settings(
        _write(tmp_path, CAM),
        ["storage.delta_root=s3a://bucket/traffic/delta/", "storage.checkpoint_root=hdfs://nn/chk"],
        environ={},
    )
    assert s.table_uri("frames") == "s3a://bucket/traffic/delta/frames"
    assert s.checkpoint_uri("vehicles") == "hdfs://nn/chk/vehicles"
    local = load_settings(_write(tmp_path, CAM), [f"storage.var_dir={tmp_path}"], environ={})
    assert local.table_uri("frames") == str((tmp_path / "delta" / "frames").resolve())


def test_kafka_client_settings_split(tmp_path):
    s = load_settings(
        _write(
            tmp_path,
            CAM
            + """
kafka:
  client: {security.protocol: SASL_SSL}
  client_python: {sasl.username: u}
  client_spark: {sasl.jaas.config: x}
""",
        ),
        environ={},
    )
    py = s.kafka.python_config(**{"group.id": "g"})
    assert py["security.protocol"] == "SASL_SSL" and py["sasl.username"] == "u" and "sasl.jaas.config" not in py
    sp = s.kafka.spark_options()
    assert sp["kafka.security.protocol"] == "SASL_SSL" and sp["kafka.sasl.jaas.config"] == "x"
    assert "kafka.sasl.username" not in sp


def test_property_maps_take_dotted_keys_from_env_and_cli(tmp_path):
    s = load_settings(
        _write(tmp_path, CAM),
        ["kafka.client_spark.ssl.truststore.location=/t.jks"],
        environ={"TRAFFICSTREAM_KAFKA__CLIENT_PYTHON__SASL.PASSWORD": "secret"},
    )
    assert s.kafka.client_python == {"sasl.password": "secret"}
    assert s.kafka.client_spark == {"ssl.truststore.location": "/t.jks"}


def test_camera_fields_by_id(tmp_path):
    s = load_settings(_write(tmp_path, CAM), ["cameras.cam-1.speed_limit_kmh=80"], environ={})
    assert s.cameras[0].speed_limit_kmh == 80
    with pytest.raises(ConfigError, match="no camera with id 'nope'"):
        load_settings(_write(tmp_path, CAM), ["cameras.nope.speed_limit_kmh=80"], environ={})


# -- fail fast: every invalid value names its field -----------------------------------------------------------
def _error(tmp_path: Path, text: str, overrides: list[str] | None = None, **kw) -> str:
    with pytest.raises(ConfigError) as err:
        load_settings(_write(tmp_path, text), overrides, environ={}, **kw)
    return str(err.value)


SQUARE = "image_points: [[0, 0], [100, 0], [100, 100], [0, 100]]"
WORLD = "world_points: [[0, 0], [3.5, 0], [3.5, 20], [0, 20]]"


@pytest.mark.parametrize(
    "patch, needle",
    [
        (
            (SQUARE, "image_points: [[0, 0], [100, 0], [100, 0], [0, 100], [50, 60]]"),
            "cameras[0].calibration.image_points: points 1 and 2 are the same point [100, 0]",
        ),
        (
            (WORLD, "world_points: [[0, 0], [3.5, 0], [3.5, 20], [3.5, 20]]"),
            "cameras[0].calibration.world_points: points 2 and 3 are the same point",
        ),
        (
            (SQUARE, "image_points: [[0, 0], [50, 0], [100, 0], [0, 100]]"),  # 3 of 4 collinear: singular fit
            "cameras[0].calibration: homography fit failed",
        ),
        (
            (WORLD, "world_points: [[0, 0], [3.5, 0], [0, 20], [3.5, 20]]"),  # two pairs swapped
            "cameras[0].calibration: image_points [2, 3] map beyond the horizon",
        ),
        (
            (SQUARE, "image_points: [[0, 0], [100, -1], [100, 100], [0, 100]]"),
            "cameras[0].calibration.image_points: point 1 [100, -1]: pixel coordinates must be >= 0",
        ),
    ],
)
def test_degenerate_calibrations_fail_at_load(tmp_path, patch, needle):
    assert needle in _error(tmp_path, CAM.replace(*patch))


@pytest.mark.parametrize(
    "patch, field",
    [
        (
            (SQUARE, "image_points: [[0, 0], [100, .nan], [100, 100], [0, 100]]"),
            "cameras[0].calibration.image_points[1][1]",
        ),
        ((WORLD, "world_points: [[0, 0], [3.5, 0], [.inf, 20], [0, 20]]"), "cameras[0].calibration.world_points[2][0]"),
        (
            ("speed_limit_kmh: 100", "speed_limit_kmh: 100\n    roi: [[0, 0], [10, .nan], [10, 10]]"),
            "cameras[0].roi[1][1]",
        ),
        (
            ("speed_limit_kmh: 100", "speed_limit_kmh: 100\n    detect_tiles: [[0, 0, .inf, 64]]"),
            "cameras[0].detect_tiles[0][2]",
        ),
        (("speed_limit_kmh: 100", "speed_limit_kmh: .nan"), "cameras[0].speed_limit_kmh"),
        (("speed_limit_kmh: 100", "speed_limit_kmh: 100\n    fps: .inf"), "cameras[0].fps"),
    ],
)
def test_nan_and_inf_are_rejected_in_cameras(tmp_path, patch, field):
    assert f"{field}: Input should be a finite number" in _error(tmp_path, CAM.replace(*patch))


@pytest.mark.parametrize(
    "override, field",
    [
        ("spark.trigger_seconds=.nan", "spark.trigger_seconds"),
        ("spark.stop_after_idle_s=.inf", "spark.stop_after_idle_s"),
        ("detector.confidence=.nan", "detector.confidence"),
        ("tracker.max_age_s=.inf", "tracker.max_age_s"),
        ("tracker.max_plausible_kmh=.inf", "tracker.max_plausible_kmh"),
    ],
)
def test_nan_and_inf_are_rejected_in_float_settings(tmp_path, override, field):
    assert f"{field}: Input should be a finite number" in _error(tmp_path, CAM, [override])


def test_a_deployment_needs_a_camera(tmp_path):
    msg = _error(tmp_path, "kafka:\n  partitions: 2\n")
    assert "\n  cameras: no camera configured" in msg
    assert "cameras: no camera" in _error(tmp_path, "cameras: []\n")
    # Tools that only need Kafka / storage, and the bare model (SparkSession fixtures), allow none.
    assert load_settings(_write(tmp_path, "kafka:\n  partitions: 2\n"), environ={}, require_cameras=False).cameras == []
    assert Settings().cameras == []


@pytest.mark.parametrize(
    "roots, needle",
    [
        ('["/"]', "storage.allowed_roots[0]: '/' is the filesystem root"),
        ('["{data_dir}", "/tmp/.."]', "storage.allowed_roots[1]: '/tmp/..' is the filesystem root"),
        ('["{data_dir}", ""]', "storage.allowed_roots[1]: empty"),
        ('["  "]', "storage.allowed_roots[0]: empty"),
        ('["s3a://bucket/videos"]', "storage.allowed_roots[0]: 's3a://bucket/videos': roots are local directories"),
        ('["{datadir}"]', "storage.allowed_roots[0]: '{datadir}' has a bad placeholder"),
    ],
)
def test_allowed_roots_must_be_real_directories(tmp_path, roots, needle):
    assert needle in _error(tmp_path, CAM + f"storage:\n  allowed_roots: {roots}\n")


def test_data_dir_at_the_filesystem_root_is_refused(tmp_path):
    msg = _error(tmp_path, CAM, ["storage.data_dir=/"])
    assert "storage.allowed_roots[0]: '{data_dir}' is the filesystem root" in msg


@pytest.mark.parametrize(
    "roi, needle",
    [
        ("[[0, 0], [50, 50], [100, 100]]", "collinear"),
        ("[[0, 0], [100, 0], [100, 0.01], [50, 0.005]]", "no area"),  # a sliver
        ("[[0, 0], [100, 0], [100, 100], [100, 200], [100, 50]]", "fold back"),
        ("[[0, 0], [100, 100], [100, 0], [0, 100]]", "edge 0-1 and edge 2-3 cross"),  # a bow tie
        ("[[0, 0], [100, 0], [100, 100], [100, 0], [0, 100]]", "vertices 1 and 3 are the same point"),
        ("[[0, 0], [100, 0], [100, 100], [50, 0], [0, 100]]", "cross"),  # a vertex touching another edge
        ("[[-5, 0], [100, 0], [100, 100]]", "vertex 0 [-5, 0]: pixel coordinates must be >= 0"),
    ],
)
def test_degenerate_rois_fail_at_load(tmp_path, roi, needle):
    msg = _error(tmp_path, CAM.replace("speed_limit_kmh: 100", f"speed_limit_kmh: 100\n    roi: {roi}"))
    assert "cameras[0].roi: " in msg and needle in msg, msg


def test_yaml_errors_show_where_but_never_what(tmp_path):
    text = CAM + 'kafka:\n  client_python:\n    sasl.password: "hunter2-secret\n    sasl.username: u\n'
    msg = _error(tmp_path, text)
    assert "not valid YAML at line" in msg and "column" in msg
    assert "hunter2" not in msg
    tab = _error(tmp_path, CAM + "kafka:\n\tsasl.password: hunter2-secret\n")
    assert "hunter2" not in tab and "at line 10, column 1" in tab


def test_overrides_without_equals_are_not_echoed(tmp_path):
    msg = _error(tmp_path, CAM, ["kafka.client_python.sasl.password:hunter2-secret"])
    assert "expected section.key=value" in msg and "hunter2" not in msg


def test_scalar_client_properties_become_strings(tmp_path):
    s = load_settings(
        _write(tmp_path, CAM + "kafka:\n  client: {linger.ms: 5, enable.idempotence: true}\n"),
        environ={"TRAFFICSTREAM_KAFKA__CLIENT_PYTHON__ACKS": "1"},
    )
    assert s.kafka.python_config() == {
        "bootstrap.servers": "127.0.0.1:9092",
        "linger.ms": "5",
        "enable.idempotence": "true",
        "acks": "1",
    }
