"""Camera configuration: where a camera's video comes from and how its pixels map onto the road.

A deployment lists its cameras in the ``cameras:`` section of its config file (see ``infra/config/``).
Everything checkable without the video is checked when the settings load (finite numbers, distinct
calibration points, a homography that fits, a simple polygon as ROI); :func:`check_cameras_against_sources`
(trafficstream.config) reads each video's header at start-up and checks ROI, tiles and calibration points
against the frame size.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path
from typing import Annotated
from urllib.parse import urlparse

import numpy as np
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    ValidationInfo,
    field_validator,
    model_validator,
)

from trafficstream.messages import CAMERA_ID_PATTERN

Point = tuple[FiniteFloat, FiniteFloat]  # NaN / inf would pass every geometric test and poison every fit
_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


# -- geometry (pure) ----------------------------------------------------------------------------------------
def _fmt(p: Sequence[float]) -> str:
    return "[" + ", ".join(f"{float(c):g}" for c in p) + "]"


def _cross(o: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    return float((a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0]))


def duplicate_points(pts: np.ndarray, tol: float = 1e-9) -> tuple[int, int] | None:
    """First pair (i, j) of points closer than ``tol`` (relative to the points' magnitude), else None."""
    scale = max(1.0, float(np.abs(pts).max(initial=0.0)))
    for i in range(len(pts)):
        d = np.linalg.norm(pts[i + 1 :] - pts[i], axis=1)
        close = np.flatnonzero(d <= tol * scale)
        if close.size:
            return i, i + 1 + int(close[0])
    return None


def _max_non_collinear_area(pts: np.ndarray) -> float:
    """Largest triangle area among the points: ~0 when they all lie on one line."""
    best = 0.0
    for i in range(len(pts)):
        for j in range(i + 1, len(pts)):
            for k in range(j + 1, len(pts)):
                best = max(best, abs(_cross(pts[i], pts[j], pts[k])) / 2)
    return best


def polygon_area(pts: np.ndarray) -> float:
    """Unsigned shoelace area (meaningful for simple polygons)."""
    x, y = pts[:, 0], pts[:, 1]
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)


def _on_segment(p: np.ndarray, a: np.ndarray, b: np.ndarray, eps: float) -> bool:
    return (
        abs(_cross(a, b, p)) <= eps
        and min(a[0], b[0]) - 1e-9 <= p[0] <= max(a[0], b[0]) + 1e-9
        and min(a[1], b[1]) - 1e-9 <= p[1] <= max(a[1], b[1]) + 1e-9
    )


def segments_touch(a: np.ndarray, b: np.ndarray, c: np.ndarray, d: np.ndarray, eps: float = 1e-9) -> bool:
    """True when segments ab and cd cross or touch (an endpoint on the other segment counts)."""

    def opposite(u: float, v: float) -> bool:
        return (u > eps and v < -eps) or (u < -eps and v > eps)

    if opposite(_cross(c, d, a), _cross(c, d, b)) and opposite(_cross(a, b, c), _cross(a, b, d)):
        return True
    return (
        _on_segment(a, c, d, eps) or _on_segment(b, c, d, eps) or _on_segment(c, a, b, eps) or _on_segment(d, a, b, eps)
    )


def polygon_problem(pts: np.ndarray, min_area: float = 1.0) -> str | None:
    """Why ``pts`` is not a usable simple polygon (None when it is): repeated vertices, (near) zero area,
    edges that cross, touch or fold back on each other."""
    n = len(pts)
    dup = duplicate_points(pts)
    if dup is not None:
        return f"vertices {dup[0]} and {dup[1]} are the same point {_fmt(pts[dup[0]])}"
    if _max_non_collinear_area(pts) < min_area:
        return "the vertices are (nearly) collinear: the polygon has no area"
    eps = 1e-9 * max(1.0, float(np.abs(pts).max())) ** 2
    for i in range(n):  # an edge doubling back along the previous one: a zero-width spike
        a, b, c = pts[i - 1], pts[i], pts[(i + 1) % n]
        if abs(_cross(a, b, c)) <= eps and np.dot(b - a, c - b) < 0:
            return f"the edges at vertex {i} {_fmt(b)} fold back on each other"
    for i in range(n):
        for j in range(i + 2, n):
            if i == 0 and j == n - 1:
                continue  # adjacent through the closing edge
            if segments_touch(pts[i], pts[(i + 1) % n], pts[j], pts[(j + 1) % n], eps):
                return (
                    f"edge {i}-{(i + 1) % n} and edge {j}-{(j + 1) % n} cross: the polygon must not "
                    "intersect itself (list the vertices in order around the region)"
                )
    area = polygon_area(pts)
    if area < min_area:
        return f"the polygon has (nearly) zero area ({area:g} px²)"
    return None


def homography_problem(image_points: Sequence[Point], world_points: Sequence[Point]) -> str | None:
    """Fit the road plane exactly as the job will (models.homography) and say why it is unusable, or None."""
    return _homography_problem(tuple(map(tuple, image_points)), tuple(map(tuple, world_points)))


@lru_cache(maxsize=256)  # every Spark task re-validates the settings it is shipped: fit each calibration once
def _homography_problem(image_points: tuple[Point, ...], world_points: tuple[Point, ...]) -> str | None:
    # Imported here: cv2 / scipy load only when a calibration is validated.
    from trafficstream.models.homography import RoadPlane

    img, wld = np.asarray(image_points, dtype=float), np.asarray(world_points, dtype=float)
    try:
        with np.errstate(all="ignore"):
            plane = RoadPlane.from_points(img, wld)
            finite = np.isfinite(plane.H).all() and np.isfinite(plane.H_inv).all()
            in_front = plane.in_front(img) if finite else np.zeros(len(img), bool)
    except (ValueError, ArithmeticError, np.linalg.LinAlgError) as exc:
        return f"homography fit failed: {exc}"
    if not finite:
        return "the point pairs give a singular homography (non-finite); check that they are on the road plane"
    if not in_front.all():
        bad = [int(i) for i in np.flatnonzero(~in_front)]
        return (
            f"image_points {bad} map beyond the horizon of the fitted road plane: the pairs are not "
            "consistent with one plane (check that image_points[i] and world_points[i] are the same point)"
        )
    return None


# -- models ---------------------------------------------------------------------------------------------------
class Calibration(BaseModel):
    """Road-plane calibration: >= 4 image-pixel <-> world-metre point pairs on the road surface.

    World axes: any right-handed metric frame on the road plane; by convention y runs along the road.
    """

    model_config = _MODEL_CONFIG

    image_points: list[Point] = Field(min_length=4)
    world_points: list[Point] = Field(min_length=4)
    # Optional reference frame for registration against camera drift (frame index in the source).
    reference_frame: int | None = Field(default=None, ge=0)
    # A still of the calibrated view (PNG/JPEG): the registration reference of a live camera, whose stream
    # has no fixed frame to go back to.
    reference_image: str | None = Field(default=None, min_length=1)

    @field_validator("image_points", "world_points")
    @classmethod
    def _points(cls, v: list[Point], info: ValidationInfo) -> list[Point]:
        pts = np.asarray(v, dtype=float)
        if info.field_name == "image_points":
            neg = np.flatnonzero((pts < 0).any(axis=1))
            if neg.size:
                raise ValueError(f"point {int(neg[0])} {_fmt(pts[neg[0]])}: pixel coordinates must be >= 0")
        dup = duplicate_points(pts)
        if dup is not None:
            raise ValueError(
                f"points {dup[0]} and {dup[1]} are the same point {_fmt(pts[dup[0]])}: "
                "every pair must be a distinct point on the road"
            )
        if _max_non_collinear_area(pts) < 1e-6:
            raise ValueError("points are (nearly) collinear: a homography needs 4 points spanning an area")
        return v

    @model_validator(mode="after")
    def _pairs(self) -> Calibration:
        if len(self.image_points) != len(self.world_points):
            raise ValueError(
                f"image_points has {len(self.image_points)} points but world_points has "
                f"{len(self.world_points)}; they must pair up one to one"
            )
        problem = homography_problem(self.image_points, self.world_points)
        if problem:
            raise ValueError(problem)
        return self


class Camera(BaseModel):
    """One camera of a deployment."""

    model_config = _MODEL_CONFIG

    id: Annotated[str, Field(pattern=CAMERA_ID_PATTERN.pattern)]
    source: str = Field(
        min_length=1, description="video file path or file:// URI; live: rtsp(s)://, http(s):// (HLS), /dev/videoN"
    )
    name: str | None = None
    fps: float | None = Field(default=None, gt=0, le=240, description="override when the container lies")
    speed_limit_kmh: float = Field(gt=0, le=300)
    roi: list[Point] | None = Field(default=None, min_length=3, description="region of interest polygon, px")
    calibration: Calibration | None = None
    min_violation_s: float = Field(default=0.5, ge=0, le=30, description="sustained overspeed before a violation")
    register_frames: bool = Field(default=False, description="compensate camera drift against the reference frame")
    # Register one frame per this many seconds and interpolate the frames between (sway is slow next to the
    # frame rate: ~2 px/s on the overpass clip); 0 registers every frame.
    register_every_s: float = Field(default=0.2, ge=0, le=5, description="registration interval, s")
    # Extra detector passes over these [x0, y0, x1, y1] source-pixel boxes (the far end of the road), batched
    # with the full frame: small distant vehicles are found and tracked earlier.
    detect_tiles: list[tuple[int, int, int, int]] = Field(default_factory=list, max_length=4)
    # Detect on every k-th frame; the tracker predicts the frames between (boxes and ids on every frame).
    detect_every: int = Field(default=1, ge=1, le=30, description="detection stride in frames")
    # Capture -> result budget of this camera (default: live.latency_budget_s); load is shed to hold it.
    latency_budget_s: float | None = Field(default=None, gt=0, le=3600)

    @field_validator("detect_tiles")
    @classmethod
    def _tiles(cls, v: list[tuple[int, int, int, int]]) -> list[tuple[int, int, int, int]]:
        for i, (x0, y0, x1, y1) in enumerate(v):
            if x1 - x0 < 32 or y1 - y0 < 32 or min(x0, y0) < 0:
                raise ValueError(f"detect_tiles[{i}] = {[x0, y0, x1, y1]}: need x0,y0 >= 0 and a box >= 32x32 px")
        return v

    @field_validator("roi")
    @classmethod
    def _roi(cls, v: list[Point] | None) -> list[Point] | None:
        if v is None:
            return v
        pts = np.asarray(v, dtype=float)
        neg = np.flatnonzero((pts < 0).any(axis=1))
        if neg.size:
            raise ValueError(f"vertex {int(neg[0])} {_fmt(pts[neg[0]])}: pixel coordinates must be >= 0")
        problem = polygon_problem(pts)
        if problem:
            raise ValueError(problem)
        return v

    @field_validator("source")
    @classmethod
    def _source_scheme(cls, v: str) -> str:
        scheme = urlparse(v).scheme.lower()
        if scheme not in ("", "file", *LIVE_SCHEMES) and len(scheme) > 1:  # len>1: keep Windows drive letters
            raise ValueError(
                f"unsupported source scheme {scheme!r}: a video file (path or file://) or a live stream "
                f"({', '.join(s + '://' for s in LIVE_SCHEMES)}, /dev/videoN)"
            )
        return v

    @model_validator(mode="after")
    def _live_registration(self) -> Camera:
        if self.is_live and self.register_frames and not (self.calibration and self.calibration.reference_image):
            raise ValueError(
                "register_frames: a live camera registers against calibration.reference_image "
                "(a still of the calibrated view); set it or turn register_frames off"
            )
        return self

    @property
    def is_live(self) -> bool:
        """A stream (RTSP, HTTP/HLS, a V4L2 device) rather than a file: recorded into segments by ingest."""
        return is_live_source(self.source)

    def source_path(self) -> Path:
        """The local path of a file source (a live camera has none: its frames live in segments)."""
        if self.is_live:
            raise ValueError(f"camera {self.id!r} is a live source ({redact_url(self.source)}), not a file")
        parsed = urlparse(self.source)
        return Path(parsed.path if parsed.scheme == "file" else self.source)

    def source_uri(self) -> str:
        """Canonical URI carried in frame references (absolute ``file://`` URI)."""
        return self.source_path().resolve().as_uri()

    @property
    def source_label(self) -> str:
        """The source as logs may show it (credentials of a stream URL removed)."""
        return redact_url(self.source)


LIVE_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "srt", "udp")


def is_live_source(source: str) -> bool:
    scheme = urlparse(source).scheme.lower()
    return scheme in LIVE_SCHEMES or (scheme == "" and source.startswith("/dev/video"))


def redact_url(url: str) -> str:
    """``url`` without its user info (``rtsp://user:pass@host/`` -> ``rtsp://***@host/``): safe for logs."""
    parsed = urlparse(url)
    if parsed.username is None and parsed.password is None:
        return url
    host = parsed.hostname or ""
    netloc = f"***@{host}" + (f":{parsed.port}" if parsed.port else "")
    return parsed._replace(netloc=netloc).geturl()


# -- start-up check against the video ----------------------------------------------------------------------
def frame_problems(
    camera: Camera, width: int, height: int, frame_count: int | None = None, prefix: str = ""
) -> list[str]:
    """What of ``camera`` lies outside a ``width`` x ``height`` frame, as ``field: message`` lines."""
    out: list[str] = []
    size = f"the {width}x{height} frame of {camera.source_path().name}"

    def outside(points: Sequence[Sequence[float]]) -> list[int]:
        return [i for i, (x, y) in enumerate(points) if not (0 <= x <= width and 0 <= y <= height)]

    if camera.roi:
        bad = outside(camera.roi)
        if bad:
            out.append(f"{prefix}roi: vertices {bad} (first {_fmt(camera.roi[bad[0]])}) lie outside {size}")
    for i, (x0, y0, x1, y1) in enumerate(camera.detect_tiles):
        if x1 > width or y1 > height:
            out.append(f"{prefix}detect_tiles[{i}]: {[x0, y0, x1, y1]} reaches outside {size}")
    cal = camera.calibration
    if cal is not None:
        bad = outside(cal.image_points)
        if bad:
            out.append(
                f"{prefix}calibration.image_points: points {bad} (first {_fmt(cal.image_points[bad[0]])}) "
                f"lie outside {size}"
            )
        if cal.reference_frame is not None and frame_count and cal.reference_frame >= frame_count:
            out.append(
                f"{prefix}calibration.reference_frame: {cal.reference_frame} is past the last frame "
                f"({frame_count} frames in {camera.source_path().name})"
            )
    return out


def probe_frame_size(path: Path) -> tuple[int, int, int | None]:
    """(width, height, frame count or None) of a video file, from its header (no frame is decoded).

    Raises ``ValueError`` with the reason when the file cannot be opened or has no video stream.
    """
    import av  # lazy: only the processes that check their sources need PyAV

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("no video stream")
            stream = container.streams.video[0]
            width, height = stream.codec_context.width, stream.codec_context.height
            frames = int(stream.frames or 0) or None
    except (av.FFmpegError, OSError) as exc:
        raise ValueError(f"{type(exc).__name__}: {exc}") from None
    if not width or not height:
        raise ValueError("the video stream has no frame size")
    return int(width), int(height), frames
