"""One typed, validated configuration for every trafficstream process.

Precedence (highest first): CLI ``--set section.key=value`` > environment ``TRAFFICSTREAM_SECTION__KEY`` >
the deployment file (``--config``, YAML) > defaults. Any invalid value raises :class:`ConfigError` naming the
field, e.g. ``cameras[1].calibration.image_points: List should have at least 4 items``.

The special token ``{data_dir}`` in paths expands to ``storage.data_dir`` (default: ``../shared/data``
beside the project, or ``TRAFFICSTREAM_DATA_DIR``).

Secrets (Kafka credentials, the dashboard password) may be given as file references (``file:/run/secrets/x``)
and are never printed: see :mod:`trafficstream.secrets`. Deployment files must name at least one camera.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    SecretStr,
    ValidationError,
    model_validator,
)

from trafficstream.cameras import Camera, frame_problems, probe_frame_size
from trafficstream.errors import ConfigError
from trafficstream.models.privacy import BLOCKS_ACROSS, MIN_BLOCK_PX, PrivacyMode
from trafficstream.secrets import (
    SecretMap,
    SecretsMode,
    is_secret_key,
    property_text,
    resolve_reference,
    serialize_map,
    serialize_secret,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = PROJECT_ROOT / "infra" / "config" / "demo.yaml"
ENV_PREFIX = "TRAFFICSTREAM_"
log = logging.getLogger(__name__)


def default_data_dir() -> Path:
    return Path(os.environ.get("TRAFFICSTREAM_DATA_DIR", PROJECT_ROOT.parent / "shared" / "data")).resolve()


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


def _property_map_input(value: Any) -> Any:
    """Scalars to the strings clients expect; ``file:`` references of secret keys to the file content."""
    if not isinstance(value, Mapping):
        return value  # pydantic reports the type error
    out = {}
    for key, item in value.items():
        item = property_text(item)
        if isinstance(key, str) and is_secret_key(key):
            try:
                item = resolve_reference(item)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
        out[key] = item
    return out


# Client / Spark property maps: real values inside (the clients need them), secret entries masked when
# printed or dumped, left out of what is shipped to Spark tasks (see trafficstream.secrets).
PropertyMap = Annotated[
    dict[str, str], BeforeValidator(_property_map_input), AfterValidator(SecretMap), PlainSerializer(serialize_map)
]
Secret = Annotated[
    SecretStr | None,
    BeforeValidator(lambda v: resolve_reference(property_text(v))),
    PlainSerializer(serialize_secret),
]


class KafkaSettings(_Section):
    bootstrap_servers: str = "127.0.0.1:9092"
    frames_topic: str = "frames"
    results_topic: str = "results"
    dead_letter_topic: str = "dead-letter"
    partitions: int = Field(default=4, ge=1, le=1024)
    # Frame references are ~250 bytes: anything larger than this is dead-lettered unparsed (message_too_large).
    max_message_bytes: int = Field(default=16 * 1024, ge=1024, le=1024 * 1024)
    replication_factor: int = Field(default=1, ge=1)
    # Extra client properties for real clusters. ``client`` goes to every client (names both spell the same:
    # security.protocol, sasl.mechanism, ...); ``client_python`` only to the Python clients (librdkafka:
    # sasl.username, ssl.ca.location, ...); ``client_spark`` only to Spark's Java clients (sasl.jaas.config,
    # ssl.truststore.location, ...), which get them prefixed with "kafka.".
    # Secret properties (sasl.password, sasl.jaas.config, ssl.*.password, ...) may be ``file:PATH`` references.
    client: PropertyMap = Field(default_factory=SecretMap)
    client_python: PropertyMap = Field(default_factory=SecretMap)
    client_spark: PropertyMap = Field(default_factory=SecretMap)

    def python_config(self, **extra: Any) -> dict:
        """confluent-kafka configuration: bootstrap servers + shared + Python-only properties + ``extra``.

        Real values (a :class:`SecretMap`: logging it by mistake shows the secrets masked)."""
        return SecretMap({"bootstrap.servers": self.bootstrap_servers, **self.client, **self.client_python, **extra})

    def spark_options(self) -> dict[str, str]:
        """Options for Spark's Kafka source / sink (``kafka.``-prefixed Java client properties), real values."""
        opts = SecretMap({"kafka.bootstrap.servers": self.bootstrap_servers})
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
    conf: PropertyMap = Field(default_factory=lambda: SecretMap({"spark.databricks.delta.snapshotPartitions": "2"}))
    # Commit Delta in the background, several micro-batches at once, from a durable spool beside the
    # checkpoint (streaming_jobs/spool.py): micro-batches no longer wait for Delta. Exactly once either way.
    async_delta_commits: bool = True
    # Seconds between the starts of two background commits: they cost mostly per commit, so fewer, larger
    # commits leave more of the machine to the micro-batches. Delta trails the results topic by about this.
    delta_commit_interval_s: float = Field(default=30.0, ge=0, le=3600)
    # Who writes the Delta tables: delta-rs on the driver (tens of ms per commit, off the executors' cores),
    # Spark's Delta writer (a Spark job per table), or auto: delta-rs when every table is a local or mounted
    # path, Spark for object storage (delta-rs would need a locking setup there).
    delta_writer: Literal["auto", "delta-rs", "spark"] = "auto"
    # Who produces the frame results: the stage-2 tasks as they track (lowest latency), the driver at the start
    # of foreachBatch, or auto: stage 2 unless the Python Kafka clients carry credentials (task closures travel
    # in the clear; streaming_jobs/results_producer.py).
    results_from: Literal["auto", "stage2", "driver"] = "auto"
    # FAIR scheduler pools: micro-batch tasks get free slots before background commits (scheduling.py).
    scheduler_pools: bool = True
    # Stops the query after this many idle seconds with nothing new (demo / tests); None runs forever.
    stop_after_idle_s: float | None = Field(default=None, gt=0)


class DetectorSettings(_Section):
    backend: Literal["onnxruntime", "ultralytics"] = "onnxruntime"
    model_path: str = "{data_dir}/models/yolov8n.onnx"
    input_height: int = Field(default=384, ge=32, le=2048, multiple_of=32)
    input_width: int = Field(default=640, ge=32, le=2048, multiple_of=32)
    confidence: float = Field(default=0.25, gt=0, lt=1)
    iou: float = Field(default=0.45, gt=0, lt=1)
    # 0: the cores the Spark task owns (spark.task.cpus), so concurrent tasks do not oversubscribe the
    # executor; outside Spark, every core.
    threads: int = Field(default=0, ge=0, description="ONNX Runtime intra-op threads, 0 = the task's cores")
    # Frames decoded, detected (with their tiles) and embedded together. On CPU a detector batch buys little
    # (measured: bench); on a GPU raise it (16-64).
    batch_size: int = Field(default=4, ge=1, le=256, description="frames per detector run")
    # Frames decoded ahead of inference by a background thread in each task.
    # FP16 inference on a GPU (ultralytics backend; a TensorRT .engine exported with --half is FP16 anyway).
    half: bool = False
    prefetch_frames: int = Field(default=8, ge=0, le=256, description="decode-ahead queue, frames (0: inline)")
    min_box_px: int = Field(default=8, ge=0)
    # One box per vehicle: class-aware NMS reports a van as both "car" and "truck", which the tracker
    # would then follow twice.
    agnostic_nms: bool = True
    # The contact point (a box's bottom-centre) feeds speeds, lines and passages. YOLOv8n at 384x640 puts box
    # bottoms ~0.5 network px above where the vehicle meets the road (synthetic scenes with known contact points,
    # held-out seeds 3 and 7 of four scene families: 0.39-0.68, mean 0.52); on the road plane a constant pixel
    # offset grows with distance, so uncorrected speeds read ~0.6 km/h fast (bench/error_budget.py). In network
    # pixels so that it holds at any input size and for far-field tiles; measure it again for another model.
    box_bottom_offset_px: float = Field(
        default=0.5, ge=-8, le=8, description="lower box bottoms by this many network px (detector bias)"
    )


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
    # Resolution: a speed that one pixel of box-bottom bias would move by more than this is flagged low_resolution
    # (not trusted). Far from a camera, and the lower the camera the sooner, one pixel covers metres of road, and a
    # box bottom is rarely good to better than 2-3 source pixels (about one network pixel at 640 px on 1280 px
    # video, plus shadow and blur): at 1 km/h per pixel that keeps a reading within the 3 km/h that enforcement
    # tolerates. None: off.
    max_speed_error_per_px_kmh: float | None = Field(
        default=1.0, gt=0, description="trust a speed only where 1 px of box bias moves it by at most this (km/h)"
    )
    # Resolution against jitter: a box edge wanders by about a pixel from frame to frame (models.homography.
    # BOX_EDGE_SIGMA_PX); a speed fitted over the window inherits that noise, scaled by the metres a pixel covers
    # along the vehicle's path there and divided by the window's time spread (models.speed.speed_noise_kmh). A
    # reading whose 95 % noise bound exceeds this is flagged low_resolution: slow vehicles far away, or few
    # detections in the window (a high detection stride). 3 km/h: what enforcement tolerates. None: off.
    max_speed_noise_kmh: float | None = Field(
        default=3.0, gt=0, description="trust a speed only where box-edge jitter keeps it within this (km/h, 95 %)"
    )
    # ByteTrack's second association: a detection scoring between this and detector.confidence never starts a
    # track, but continues one whose predicted box it overlaps (IoU >= 0.5) when no confident detection does.
    # Blurred, distorted or far vehicles flicker below the threshold for a frame or two (0.08-0.25 on the
    # synthetic families where tracks broke off or started late); without it their tracks lost those frames, and
    # with them line crossings and passage speeds. None (or >= detector.confidence): off.
    low_confidence: float | None = Field(
        default=0.1, gt=0, lt=1, description="continue tracks with detections scoring this much (None: off)"
    )


class StorageSettings(_Section):
    data_dir: Path = Field(default_factory=default_data_dir)
    var_dir: Path = PROJECT_ROOT / "var"
    delta_root: str = "{var_dir}/delta"  # a path or a URI Spark can write (s3a://bucket/delta)
    checkpoint_root: str = "{var_dir}/checkpoints"  # likewise; must be shared storage on a cluster
    evidence_root: str = "{var_dir}/evidence"  # a path visible to executors and the dashboard (NFS mount)
    # Live cameras are recorded here in short segments, one folder per camera (shared storage on a cluster:
    # the executors decode them). Always an allowed root of frame references.
    segments_root: str = "{var_dir}/segments"
    # Frame references may only point below these roots; anything else is dead-lettered.
    allowed_roots: list[str] = Field(default_factory=lambda: ["{data_dir}"])


class LiveSettings(_Section):
    """Live cameras: latency budget and load shedding (job), segment recording and reconnects (ingest)."""

    latency_budget_s: float = Field(default=2.0, gt=0, le=3600, description="capture -> result budget per camera")
    shed_load: bool = Field(default=True, description="raise the detection stride, then skip stale frames")
    max_detect_every: int = Field(default=10, ge=1, le=30, description="highest stride load shedding goes to")
    segment_seconds: float = Field(default=2.0, gt=0, le=60, description="length of a recorded segment")
    segment_retention_h: float = Field(default=6.0, gt=0, description="recorded segments kept this long")
    evidence_retention_h: float = Field(default=24.0 * 30, gt=0, description="segments with evidence kept")
    reconnect_initial_s: float = Field(default=0.5, gt=0, le=60)
    reconnect_max_s: float = Field(default=30.0, gt=0, le=3600)
    open_timeout_s: float = Field(default=10.0, gt=0, le=600, description="connect / read timeout of a stream")


class DashboardSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(default=8050, ge=1, le=65535)
    buffer_frames: int = Field(default=600, ge=10, description="live results kept per camera")
    basic_auth_user: str | None = None
    basic_auth_password: Secret = None  # plain value: trafficstream.secrets.reveal()


def _yaml_off(value: Any) -> Any:
    """YAML 1.1 reads a bare ``off`` as false: ``privacy: {mode: off}`` in a deployment file means ``"off"``."""
    return "off" if value is False else value


class PrivacySettings(_Section):
    """Road users other than the offender in evidence snapshots (and optionally the live video), see
    :mod:`trafficstream.models.privacy`. ``others`` by default: evidence leaves the system, and the people who
    did nothing wrong need not be recognisable in it; the offending vehicle stays sharp."""

    mode: Annotated[PrivacyMode, BeforeValidator(_yaml_off)] = Field(
        default="others", description="off | others | all-but-plate-region"
    )
    # The live video is the operators' working view (behind the dashboard's auth); opt in to apply `mode`
    # to it too: there no vehicle is the offender, so in `others` mode only speeding vehicles stay sharp.
    live_video: bool = Field(default=False, description="apply `mode` to the dashboard's live video too")
    blocks_across: int = Field(default=BLOCKS_ACROSS, ge=2, le=32, description="most blocks across a box")
    min_block_px: int = Field(default=MIN_BLOCK_PX, ge=4, le=64, description="smallest pixelation block, px")


class EvidenceSettings(_Section):
    """Evidence of violations: the JPEG snapshot always; an MP4 clip of ``clip_before_s`` + ``clip_after_s``
    around it (both 0: no clip). A clip re-runs the detector on its frames (~50 ms each on a CPU core) to
    follow the offender and anonymise everybody else (``privacy``)."""

    clip_before_s: float = Field(default=2.0, ge=0, le=10, description="seconds of clip before the evidence frame")
    clip_after_s: float = Field(default=2.0, ge=0, le=10, description="seconds of clip after it")
    clip_max_frames: int = Field(default=240, ge=1, le=1200, description="most frames in one clip")
    # Every frame of a clip goes through the detector again (privacy): at 10 frames/s a 30 fps camera's clip
    # costs a third, which matters on a box that also holds live cameras to their latency budget.
    clip_max_fps: float | None = Field(
        default=10.0, gt=0, le=120, description="clips keep every k-th frame to stay at or below this rate"
    )
    # Clips are rendered by a helper process at this niceness (0: in the Spark task itself): the OS then gives
    # the cores to the live micro-batches first, and the clips take what is left.
    clip_nice: int = Field(default=10, ge=0, le=19, description="niceness of the process rendering clips")

    @property
    def clips(self) -> bool:
        return self.clip_before_s + self.clip_after_s > 0


class Settings(_Section):
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    spark: SparkSettings = Field(default_factory=SparkSettings)
    detector: DetectorSettings = Field(default_factory=DetectorSettings)
    tracker: TrackerSettings = Field(default_factory=TrackerSettings)
    storage: StorageSettings = Field(default_factory=StorageSettings)
    dashboard: DashboardSettings = Field(default_factory=DashboardSettings)
    live: LiveSettings = Field(default_factory=LiveSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    evidence: EvidenceSettings = Field(default_factory=EvidenceSettings)
    cameras: list[Camera] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Settings:
        # Messages name their own field (the error's location is the root): see _format_errors.
        problems = self._camera_id_problems() + self._template_problems()
        if not problems:
            problems = self._root_problems()
        if problems:
            raise ValueError("\n  ".join(problems))
        return self

    def _camera_id_problems(self) -> list[str]:
        seen: set[str] = set()
        out = []
        for i, cam in enumerate(self.cameras):
            if cam.id in seen:
                out.append(f"cameras[{i}].id: duplicate camera id {cam.id!r}")
            seen.add(cam.id)
        return out

    def _template_problems(self) -> list[str]:
        """Unknown ``{placeholders}`` fail here, not when the path is first used hours later."""
        fields = {
            "detector.model_path": self.detector.model_path,
            "tracker.embedder_path": self.tracker.embedder_path,
            "storage.delta_root": self.storage.delta_root,
            "storage.checkpoint_root": self.storage.checkpoint_root,
            "storage.evidence_root": self.storage.evidence_root,
            "storage.segments_root": self.storage.segments_root,
            **{f"storage.allowed_roots[{i}]": r for i, r in enumerate(self.storage.allowed_roots)},
        }
        out = []
        for name, template in fields.items():
            try:
                self._expand(template)
            except (KeyError, IndexError, ValueError) as exc:
                out.append(
                    f"{name}: {template!r} has a bad placeholder ({type(exc).__name__}: {exc}); "
                    "known: {data_dir}, {var_dir}"
                )
        return out

    def _root_problems(self) -> list[str]:
        out = []
        for i, root in enumerate(self.storage.allowed_roots):
            name = f"storage.allowed_roots[{i}]"
            if not root.strip():
                out.append(f"{name}: empty; name the directory the camera videos are stored under")
            elif "://" in root:
                out.append(f"{name}: {root!r}: roots are local directories (frame references are file paths)")
            elif (p := self.path(root)).parent == p:
                out.append(
                    f"{name}: {root!r} is the filesystem root {p}: frame references could then name any "
                    "file; name the directory the camera videos are stored under"
                )
        return out

    def source_problems(self) -> list[str]:
        """Cameras whose source lies outside the allowed roots (the job would dead-letter all their frames).

        Checked at start-up by :func:`check_cameras_against_sources`, not at load: tools such as the
        calibration CLI work on a camera wherever its video is.
        """
        roots = self.allowed_roots
        out = []
        for i, cam in enumerate(self.cameras):
            if cam.is_live:  # recorded by ingest under storage.segments_root, an allowed root
                continue
            try:
                src = self.path(str(cam.source_path()))  # resolves symlinks, like the job's check
            except (KeyError, IndexError, ValueError) as exc:
                out.append(f"cameras[{i}].source: bad placeholder ({type(exc).__name__}: {exc})")
                continue
            if not any(src == root or root in src.parents for root in roots):
                out.append(
                    f"cameras[{i}].source: {src} is outside storage.allowed_roots "
                    f"({', '.join(map(str, roots))}); the job would dead-letter every frame of it"
                )
        return out

    # -- resolved paths ---------------------------------------------------------------------------
    def _expand(self, template: str) -> str:
        return template.format(data_dir=self.storage.data_dir, var_dir=self.storage.var_dir)

    def path(self, template: str) -> Path:
        """Expand ``{data_dir}`` / ``{var_dir}`` and make absolute."""
        return Path(self._expand(template)).expanduser().resolve()

    def location(self, template: str, *parts: str) -> str:
        """Like :meth:`path`, but keeps URIs (s3a://, abfss://, hdfs://) as URIs: for Spark's storage."""
        expanded = self._expand(template)
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
    def segments_root(self) -> Path:
        return self.path(self.storage.segments_root)

    def segment_dir(self, camera_id: str) -> Path:
        """Where a live camera's segments are recorded (and the only place its frame references may name)."""
        return self.segments_root / camera_id

    def budget_s(self, camera: Camera) -> float:
        """A camera's capture -> result latency budget."""
        return camera.latency_budget_s or self.live.latency_budget_s

    @property
    def allowed_roots(self) -> list[Path]:
        return [self.path(r) for r in self.storage.allowed_roots] + [self.segments_root]

    def camera(self, camera_id: str) -> Camera:
        for cam in self.cameras:
            if cam.id == camera_id:
                return cam
        raise ConfigError(f"unknown camera {camera_id!r}; configured: {[c.id for c in self.cameras]}")


def _expand_cameras(raw: dict[str, Any]) -> None:
    """Expand ``{data_dir}`` in camera sources before validation (so the source check sees real paths)."""
    storage = raw.get("storage")
    data_dir = (storage.get("data_dir") if isinstance(storage, dict) else None) or default_data_dir()
    cameras = raw.get("cameras")
    for cam in cameras if isinstance(cameras, list) else []:
        if isinstance(cam, dict) and isinstance(cam.get("source"), str):
            cam["source"] = cam["source"].replace("{data_dir}", str(data_dir))


# Free-form maps whose own keys contain dots (Kafka / Spark property names): the rest of the path is one key.
_MAP_SECTIONS = {("kafka", "client"), ("kafka", "client_python"), ("kafka", "client_spark"), ("spark", "conf")}


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    if len(keys) > 3 and tuple(keys[:2]) in _MAP_SECTIONS:
        keys = [*keys[:2], ".".join(keys[2:])]
    if keys[0] == "cameras" and len(keys) >= 3:  # cameras.<id>.field=value: cameras are a list keyed by id
        listed = target.get("cameras")
        listed = listed if isinstance(listed, list) else []
        cams = [c for c in listed if isinstance(c, dict) and c.get("id") == keys[1]]
        if not cams:
            raise ConfigError(f"{dotted}: no camera with id {keys[1]!r}")
        target, keys = cams[0], keys[2:]
    node = target
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"{dotted}: {key!r} is not a section")
    node[keys[-1]] = value


def _is_secret_path(dotted: str) -> bool:
    return is_secret_key(dotted.rsplit(".", 1)[-1]) or (
        tuple(dotted.split(".")[:2]) in _MAP_SECTIONS and is_secret_key(".".join(dotted.split(".")[2:]))
    )


def _parse_scalar(text: str, secret: bool = False) -> Any:
    """CLI / env values: YAML scalars ("3" -> 3, "true" -> True, "[a, b]" -> list). Secrets stay text:
    a password "1234", "yes" or "[x" is the password, not an int, a bool or a parse error."""
    if secret:
        return text
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _env_path(name: str) -> str:
    """``KAFKA__CLIENT_SPARK__SASL.JAAS.CONFIG`` -> ``kafka.client_spark.sasl.jaas.config``.

    Section names are case-insensitive; a property name keeps its case unless written all in capitals
    (``spark.ssl.keyPassword`` must stay camel-cased, ``SASL.PASSWORD`` is the shell's way of writing it).
    """
    parts = name.split("__")
    head = [p.lower() for p in parts[:2]]
    if len(parts) > 2 and tuple(head) in _MAP_SECTIONS:
        key = ".".join(parts[2:])
        return ".".join([*head, key.lower() if key == key.upper() else key])
    return ".".join(p.lower() for p in parts)


def _apply_env(raw: dict[str, Any], environ: Mapping[str, str]) -> None:
    for key in sorted(environ):
        if key.startswith(ENV_PREFIX) and "__" in key:
            dotted = _env_path(key[len(ENV_PREFIX) :])
            _set_dotted(raw, dotted, _parse_scalar(environ[key], _is_secret_path(dotted)))


def secret_environ(settings: Settings) -> dict[str, str]:
    """The settings' Kafka / Spark secrets as ``TRAFFICSTREAM_...`` variables for a child process.

    Lets a parent start a job with a settings file that holds no secret (infra/pipeline.py): the child's
    :func:`load_settings` reads them back from its environment (names keep their case, see _env_path).
    """
    out = {}
    for section, name in sorted(_MAP_SECTIONS):
        props = getattr(getattr(settings, section), name)
        for key, value in props.items():
            if is_secret_key(key):
                out[f"{ENV_PREFIX}{section.upper()}__{name.upper()}__{key}"] = value
    return out


def _format_errors(exc: ValidationError, source: str) -> str:
    lines = []
    for err in exc.errors():
        loc = ""
        for part in err["loc"]:
            loc += f"[{part}]" if isinstance(part, int) else (f".{part}" if loc else str(part))
        msg = err["msg"].removeprefix("Value error, ")
        # Whole-settings checks name their own fields ("cameras[1].source: ..."); the others get their location.
        lines.append(f"{loc}: {msg}" if loc else msg)
    return f"invalid configuration ({source}):\n  " + "\n  ".join(lines)


def _yaml_error(path: Path, exc: yaml.YAMLError) -> ConfigError:
    """Where the YAML is broken, never what is there: the offending line may hold a password."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return ConfigError(f"{path}: not valid YAML{where} (the text there is not shown: it may hold a secret)")


def load_settings(
    config_file: str | Path | None = None,
    overrides: list[str] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    require_cameras: bool = True,
) -> Settings:
    """Load file + env + CLI overrides (``section.key=value``) into validated :class:`Settings`.

    A deployment must configure at least one camera (every consumer needs one); tools that only need the
    Kafka or storage sections pass ``require_cameras=False``. The bare model (``Settings()``) allows none.
    """
    environ = dict(os.environ if environ is None else environ)
    path = Path(config_file) if config_file else Path(environ.get("TRAFFICSTREAM_CONFIG", DEFAULT_CONFIG))
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise _yaml_error(path, exc) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read: {type(exc).__name__}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    _apply_env(raw, environ)
    for n, item in enumerate(overrides or [], 1):
        if "=" not in item:  # not echoed: it may be a mistyped "key:secret"
            raise ConfigError(f"--set #{n}: expected section.key=value")
        key, _, value = item.partition("=")
        _set_dotted(raw, key.strip(), _parse_scalar(value, _is_secret_path(key.strip())))
    _expand_cameras(raw)
    try:
        settings = Settings.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, str(path))) from None
    if require_cameras and not settings.cameras:
        raise ConfigError(
            f"invalid configuration ({path}):\n  cameras: no camera configured; a deployment "
            "needs at least one (id, source, speed_limit_kmh)"
        )
    return settings


PRECEDENCE_HELP = (
    "Settings precedence (lowest first): built-in defaults < the --config file < environment variables "
    "TRAFFICSTREAM_SECTION__KEY (e.g. TRAFFICSTREAM_KAFKA__BOOTSTRAP_SERVERS) < --set section.key=value. "
    "Cameras by id: --set cameras.ID.speed_limit_kmh=80. Secrets may be file:/path references."
)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` / ``--set`` for every CLI, with the precedence in ``--help``."""
    group = parser.add_argument_group("configuration", PRECEDENCE_HELP)
    group.add_argument(
        "--config", "-c", default=None, help=f"deployment YAML (default: $TRAFFICSTREAM_CONFIG or {DEFAULT_CONFIG})"
    )
    group.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting, e.g. --set kafka.bootstrap_servers=broker:9092 (repeatable; wins over all)",
    )


def settings_from_args(args: argparse.Namespace, *, require_cameras: bool = True) -> Settings:
    return load_settings(args.config, args.overrides, require_cameras=require_cameras)


def settings_to_dict(settings: Settings, *, include_secrets: bool = False) -> dict[str, Any]:
    """JSON-compatible settings; secrets left out unless ``include_secrets`` (real values then)."""
    mode = SecretsMode.INCLUDE if include_secrets else SecretsMode.OMIT
    return settings.model_dump(mode="json", context={"secrets": mode.value})


def settings_to_json(settings: Settings, *, include_secrets: bool = False) -> str:
    """Serialise for shipping to Spark tasks (they re-validate on load). The tasks use no dashboard, and the
    one Kafka client a task may run (stage 2's results producer) gets its configuration separately
    (streaming_jobs/results_producer.py), so by default no secret is in it (Spark ships closures in the clear)."""
    return json.dumps(settings_to_dict(settings, include_secrets=include_secrets), separators=(",", ":"))


def settings_from_json(text: str) -> Settings:
    return Settings.model_validate(json.loads(text))


def check_cameras_against_sources(settings: Settings, *, require_sources: bool = True) -> dict[str, tuple[int, int]]:
    """Start-up check of the cameras against their videos; call it once in every process that uses them.

    Checks that each source lies below ``storage.allowed_roots`` (symlinks resolved), then reads each video's
    header (PyAV, no decoding) and checks ROI, detect tiles and calibration image points against the frame
    size. Raises one :class:`ConfigError` naming every bad field (``cameras[0].roi: ...``). A source that
    cannot be opened is an error naming ``cameras[i].source`` when ``require_sources`` (the ingest worker must
    read it); the Spark driver passes False, since on a cluster only the executors may see the video storage.
    Returns {camera id: (width, height)} of the sources it read.
    """
    problems = settings.source_problems()
    sizes: dict[str, tuple[int, int]] = {}
    for i, cam in enumerate(settings.cameras):
        if cam.is_live:  # nothing to read before the stream connects; ingest checks each segment
            continue
        path = cam.source_path()
        try:
            width, height, frames = probe_frame_size(path)
        except ValueError as exc:
            reason = f"cannot read the video header of {path}: {exc}"
            if require_sources:
                problems.append(f"cameras[{i}].source: {reason}")
            else:
                log.warning("camera %s: %s (not checked against its frame size here)", cam.id, reason)
            continue
        sizes[cam.id] = (width, height)
        problems += frame_problems(cam, width, height, frames, prefix=f"cameras[{i}].")
    if problems:
        raise ConfigError("invalid configuration (cameras against their sources):\n  " + "\n  ".join(problems))
    return sizes
