"""One typed, validated configuration for every trafficstream process.

Precedence (highest first): CLI ``--set section.key=value`` > environment ``TRAFFICSTREAM_SECTION__KEY`` >
the deployment file (``--config``, YAML) > defaults. Any invalid value raises :class:`ConfigError` naming the
field, e.g. ``cameras[1].calibration.image_points: List should have at least 4 items``.

The special token ``{data_dir}`` in paths expands to ``storage.data_dir`` (default: ``../shared/data``
beside the project, or ``TRAFFICSTREAM_DATA_DIR``).
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from trafficstream.cameras import Camera
from trafficstream.errors import ConfigError

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "infra" / "config" / "demo.yaml"
ENV_PREFIX = "TRAFFICSTREAM_"


def default_data_dir() -> Path:
    return Path(os.environ.get("TRAFFICSTREAM_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data")).resolve()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    frames_topic: str = "frames"
    results_topic: str = "results"
    dead_letter_topic: str = "dead-letter"
    partitions: int = Field(default=4, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1)
    # Extra client properties for real clusters. ``client`` goes to every client (names both spell the same:
    # security.protocol, sasl.mechanism, ...); ``client_python`` only to the Python clients (librdkafka:
    # sasl.username, ssl.ca.location, ...); ``client_spark`` only to Spark's Java clients (sasl.jaas.config,
    # ssl.truststore.location, ...), which get them prefixed with "kafka.".
    client: dict[str, str] = Field(default_factory=dict)
    client_python: dict[str, str] = Field(default_factory=dict)
    client_spark: dict[str, str] = Field(default_factory=dict)

    def python_config(self, **extra: str | int | bool) -> dict:
        """confluent-kafka configuration: bootstrap servers + shared + Python-only properties + ``extra``."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.client, **self.client_python, **extra}

    def spark_options(self) -> dict[str, str]:
        """Options for Spark's Kafka source / sink (``kafka.``-prefixed Java client properties)."""
        opts = {"kafka.bootstrap.servers": self.bootstrap_servers}
        opts.update({f"kafka.{k}": v for k, v in {**self.client, **self.client_spark}.items()})
        return opts


class SparkSettings(_Section):
    master: str | None = None  # None: whatever spark-submit was given (local[2] in the Makefile)
    app_name: str = "trafficstream-vehicles"
    starting_offsets: Literal["earliest", "latest"] = "earliest"
    max_offsets_per_trigger: int = Field(default=64, ge=1)
    trigger_seconds: float = Field(default=0.0, ge=0)
    # Split a micro-batch's Kafka offset ranges into at least this many Spark partitions, so one busy camera
    # can use several cores for the heavy stage (each worker then reads its source forward to its range).
    min_partitions: int | None = Field(default=None, ge=1)
    shuffle_partitions: int = Field(default=2, ge=1)
    # Extra Spark SQL conf set on the session. Delta's default of 50 partitions for rebuilding a table's
    # snapshot costs seconds per commit on small local tables; clusters with big tables raise it.
    conf: dict[str, str] = Field(default_factory=lambda: {"spark.databricks.delta.snapshotPartitions": "2"})
    # Stops the query after this many idle seconds with nothing new (demo / tests); None runs forever.
    stop_after_idle_s: float | None = Field(default=None, gt=0)


class DetectorSettings(_Section):
    backend: Literal["onnxruntime", "ultralytics"] = "onnxruntime"
    model_path: str = "{data_dir}/models/yolov8n.onnx"
    input_height: int = Field(default=384, ge=32, le=2048, multiple_of=32)
    input_width: int = Field(default=640, ge=32, le=2048, multiple_of=32)
    confidence: float = Field(default=0.25, gt=0, lt=1)
    iou: float = Field(default=0.45, gt=0, lt=1)
    threads: int = Field(default=0, ge=0, description="ONNX Runtime intra-op threads, 0 = runtime default")
    min_box_px: int = Field(default=8, ge=0)
    # One box per vehicle: class-aware NMS reports a van as both "car" and "truck", which the tracker
    # would then follow twice.
    agnostic_nms: bool = True


class TrackerSettings(_Section):
    embedder_path: str = "{data_dir}/models/mobilenetv2_embedder.onnx"
    embed_batch: int = Field(default=16, ge=1)
    max_age_s: float = Field(default=1.0, gt=0, description="drop a track unseen this long")
    n_init: int = Field(default=3, ge=1)
    max_cosine_distance: float = Field(default=0.3, gt=0, le=2)
    max_iou_distance: float = Field(default=0.7, gt=0, le=1)
    nn_budget: int = Field(default=20, ge=1, description="appearance gallery size per track")
    speed_window_s: float = Field(default=0.8, gt=0)
    max_plausible_kmh: float = Field(default=250, gt=0)


class StorageSettings(_Section):
    data_dir: Path = Field(default_factory=default_data_dir)
    var_dir: Path = PROJECT_ROOT / "var"
    delta_root: str = "{var_dir}/delta"  # a path or a URI Spark can write (s3a://bucket/delta)
    checkpoint_root: str = "{var_dir}/checkpoints"  # likewise; must be shared storage on a cluster
    evidence_root: str = "{var_dir}/evidence"  # a path visible to executors and the dashboard (NFS mount)
    # Frame references may only point below these roots; anything else is dead-lettered.
    allowed_roots: list[str] = Field(default_factory=lambda: ["{data_dir}"])


class DashboardSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8050, ge=1, le=65535)
    buffer_frames: int = Field(default=600, ge=10, description="live results kept per camera")
    basic_auth_user: str | None = None
    basic_auth_password: str | None = None


class Settings(_Section):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    tracker: TrackerSettings = Field(default_factory=TrackerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    cameras: list[Camera] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_cameras(self) -> "Settings":
        seen: set[str] = set()
        for i, cam in enumerate(self.cameras):
            if cam.id in seen:
                raise ValueError(f"cameras[{i}].id: duplicate camera id {cam.id!r}")
            seen.add(cam.id)
        return self

    # -- resolved paths ---------------------------------------------------------------------------
    def path(self, template: str) -> Path:
        """Expand ``{data_dir}`` / ``{var_dir}`` and make absolute."""
        return Path(
            template.format(data_dir=self.storage.data_dir, var_dir=self.storage.var_dir)
        ).expanduser().resolve()

    def location(self, template: str, *parts: str) -> str:
        """Like :meth:`path`, but keeps URIs (s3a://, abfss://, hdfs://) as URIs: for Spark's storage."""
        expanded = template.format(data_dir=self.storage.data_dir, var_dir=self.storage.var_dir)
        if "://" in expanded:
            return "/".join([expanded.rstrip("/"), *parts])
        return str(Path(expanded, *parts).expanduser().resolve())

    def table_uri(self, table: str) -> str:
        """Where Spark writes, and readers read, one Delta table."""
        return self.location(self.storage.delta_root, table)

    def checkpoint_uri(self, query: str) -> str:
        return self.location(self.storage.checkpoint_root, query)

    @property
    def delta_root(self) -> Path:
        """Local Delta root (tools on this machine); Spark code uses :meth:`table_uri`."""
        return self.path(self.storage.delta_root)

    @property
    def checkpoint_root(self) -> Path:
        return self.path(self.storage.checkpoint_root)

    @property
    def evidence_root(self) -> Path:
        return self.path(self.storage.evidence_root)

    @property
    def allowed_roots(self) -> list[Path]:
        return [self.path(r) for r in self.storage.allowed_roots]

    def camera(self, camera_id: str) -> Camera:
        for cam in self.cameras:
            if cam.id == camera_id:
                return cam
        raise ConfigError(f"unknown camera {camera_id!r}; configured: {[c.id for c in self.cameras]}")


def _expand_cameras(raw: dict[str, Any]) -> None:
    """Expand ``{data_dir}`` in camera sources before validation (so the source check sees real paths)."""
    storage = raw.get("storage") or {}
    data_dir = storage.get("data_dir") or default_data_dir()
    for cam in raw.get("cameras") or []:
        if isinstance(cam, dict) and isinstance(cam.get("source"), str):
            cam["source"] = cam["source"].replace("{data_dir}", str(data_dir))


# Free-form maps whose own keys contain dots (Kafka / Spark property names): the rest of the path is one key.
_MAP_SECTIONS = {("kafka", "client"), ("kafka", "client_python"), ("kafka", "client_spark"), ("spark", "conf")}


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if len(keys) > 3 and tuple(keys[:2]) in _MAP_SECTIONS:
        keys = [*keys[:2], ".".join(keys[2:])]
    if keys[0] == "cameras" and len(keys) >= 3:  # cameras.<id>.field=value: cameras are a list keyed by id
        cams = [c for c in target.get("cameras") or [] if isinstance(c, dict) and c.get("id") == keys[1]]
        if not cams:
            raise ConfigError(f"{dotted}: no camera with id {keys[1]!r}")
        target, keys = cams[0], keys[2:]
    node = target
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {key!r} is not a section")
    node[keys[-1]] = value


def _parse_scalar(text: str) -> Any:
    """CLI / env values: YAML scalars ("3" -> 3, "true" -> True, "[a, b]" -> list)."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _apply_env(raw: dict[str, Any], environ: dict[str, str]) -> None:
    for key in sorted(environ):
        if key.startswith(ENV_PREFIX) and "__" in key:
            dotted = key[len(ENV_PREFIX):].lower().replace("__", ".")
            _set_dotted(raw, dotted, _parse_scalar(environ[key]))


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ""
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"{loc or '<root>'}: {msg}")
    return f"invalid configuration ({source}):\n  " + "\n  ".join(lines)


def load_settings(
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    environ: dict[str, str] | None = None,
) -> Settings:
    """Load file + env + CLI overrides (``section.key=value``) into validated :class:`Settings`."""
    environ = dict(os.environ if environ is None else environ)
    path = Path(config_file) if config_file else Path(environ.get("TRAFFICSTREAM_CONFIG", DEFAULT_CONFIG))
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    _apply_env(raw, environ)
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected section.key=value")
        key, _, value = item.partition("=")
        _set_dotted(raw, key.strip(), _parse_scalar(value))
    _expand_cameras(raw)
    try:
        return Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(path))) from None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", "-c", default=None, help=f"deployment YAML (default: {DEFAULT_CONFIG})")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set kafka.bootstrap_servers=broker:9092 (repeatable)",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    return load_settings(args.config, args.overrides)


def settings_to_json(settings: Settings) -> str:
    """Serialise for shipping to Spark executors (they re-validate on load)."""
    return settings.model_dump_json()


def settings_from_json(text: str) -> Settings:
    return Settings.model_validate(json.loads(text))
