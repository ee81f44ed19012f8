"""Vehicle speed from road-plane positions over a window of presentation timestamps.

Each track's ground point (bottom-centre of its box, projected on the road plane by
:class:`models.homography.RoadPlane`) is kept with its presentation timestamp. The velocity is a robust
least-squares line fit of x(t) and y(t) over the last ``window_s`` seconds (Theil-Sen start, Huber IRLS,
then hard rejection of outliers), so it never assumes a frame rate and one bad box does not move it.

Implausible results are *flagged* with a reason and reported as measured, never clamped: a flagged
estimate must not feed a violation, but an operator can still see what went wrong.

:class:`TrackKinematics` keeps the bounded per-track history for all tracks of one camera and serialises to
a plain dict (the ``kinematics`` document of ``models/state_codec.py``) / compact bytes for Spark's state store.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from trafficstream.models import state_codec
from trafficstream.models.homography import BOX_EDGE_SIGMA_PX, along_metres_per_pixel, offset_speed_factor
from trafficstream.models.passage import Z

if TYPE_CHECKING:
    from trafficstream.config import TrackerSettings
    from trafficstream.models.homography import RoadPlane

log = logging.getLogger(__name__)

TrackId = int | str

FLAG_INSUFFICIENT_HISTORY = "insufficient_history"
FLAG_OUTSIDE_CALIBRATION = "outside_calibration"
FLAG_LOW_RESOLUTION = "low_resolution"
# Set by the caller, not by TrackKinematics: the box reaches the picture's edge (models.roi.at_picture_edge).
FLAG_AT_PICTURE_EDGE = "at_picture_edge"
FLAG_IMPLAUSIBLE_SPEED = "implausible_speed"
FLAG_IMPLAUSIBLE_ACCELERATION = "implausible_acceleration"
FLAG_LARGE_RESIDUAL = "large_residual"
FLAG_INCONSISTENT_MOTION = "inconsistent_motion"

_STATE_KIND = "kinematics"
_STATE_VERSION = 1  # of the document; the blob's format version is state_codec.FORMAT_VERSION
_NOISE_ALPHA = 0.1
_MIN_RESIDUAL_M = 0.1  # below this a residual is never "large": sub-decimetre jitter is box quantisation
_RAYLEIGH_MEDIAN = math.sqrt(2 * math.log(2))  # median of |r| for 2-D Gaussian residuals of unit sigma


@dataclass(frozen=True, slots=True)
class SpeedEstimate:
    """Speed of one track at one timestamp.

    ``kmh`` is the measured value even when ``flag`` is set (never clamped). ``vx``/``vy`` are m/s on the road
    plane; ``heading_deg`` is a compass angle: 0 = +y (along the road), 90 = +x. Because the fit is a line
    over the window, under constant acceleration the value is exact for the window's mean time, i.e. it lags
    by about ``span_s / 2``. ``residual_m`` is the RMS distance of the inlier points from the fitted line.
    """

    kmh: float
    vx: float
    vy: float
    heading_deg: float
    n_points: int
    residual_m: float
    flag: str | None
    span_s: float = 0.0

    @property
    def plausible(self) -> bool:
        return self.flag is None


@dataclass(frozen=True, slots=True)
class TrackSummary:
    """Per-track figures over its plausible estimates only (``None`` from :meth:`TrackKinematics.summary`
    when there were none). ``median_kmh`` is over a uniform subsample when the track was long."""

    median_kmh: float
    max_kmh: float
    distance_m: float
    direction_deg: float
    n_estimates: int


@dataclass(frozen=True, slots=True)
class LineFit:
    """Robust straight-line motion fit: position at the last timestamp, velocity, inliers."""

    x: float
    y: float
    vx: float
    vy: float
    residual_m: float
    inliers: np.ndarray  # bool (N,)


def heading_deg(vx: float, vy: float) -> float:
    """Compass heading of a velocity: 0 = +y, 90 = +x, in [0, 360)."""
    return float(math.degrees(math.atan2(vx, vy)) % 360.0)


def _theil_sen(tc: np.ndarray, v: np.ndarray) -> tuple[float, float]:
    """Median of pairwise slopes and matching intercept: a start that tolerates ~29% outliers."""
    i, j = np.triu_indices(len(tc), k=1)
    dt = tc[j] - tc[i]
    ok = dt > 0
    slope = float(np.median((v[j] - v[i])[ok] / dt[ok])) if ok.any() else 0.0
    return float(np.median(v - slope * tc)), slope


def _weighted_line(tc: np.ndarray, xy: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted least squares of [intercept, slope] for x and y at once: (2, 2) rows = x, y."""
    A = np.stack([np.ones_like(tc), tc], axis=1)
    Aw = A * w[:, None]
    beta = np.linalg.solve(Aw.T @ A, Aw.T @ xy)  # (2 params, 2 coords)
    return beta.T


def fit_line_motion(t: np.ndarray, xy: np.ndarray, *, min_noise_m: float = 0.05, iterations: int = 10) -> LineFit:
    """Fit x(t), y(t) with straight lines, robustly.

    Theil-Sen start, Huber IRLS on the 2-D residual distance (scale from the median residual, floored at
    ``min_noise_m`` so near-perfect data does not reject good points), then points further than 3.5 sigma
    are dropped and the line is refitted by plain least squares on the rest. Needs >= 2 distinct times.
    """
    t = np.asarray(t, dtype=np.float64)
    xy = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    tc = t - t[-1]  # intercept = position at the latest timestamp
    coef = np.array([_theil_sen(tc, xy[:, k]) for k in range(2)])  # rows x, y: [intercept, slope]
    A = np.stack([np.ones_like(tc), tc], axis=1)
    inliers = np.ones(len(t), dtype=bool)
    if len(t) > 2:
        for _ in range(iterations):
            r = np.linalg.norm(xy - A @ coef.T, axis=1)
            sigma = max(float(np.median(r)) / _RAYLEIGH_MEDIAN, min_noise_m)
            w = np.minimum(1.0, 1.5 * sigma / np.maximum(r, 1e-12))
            new = _weighted_line(tc, xy, w)
            converged = np.allclose(new, coef, atol=1e-6)
            coef = new
            if converged:
                break
        r = np.linalg.norm(xy - A @ coef.T, axis=1)
        sigma = max(float(np.median(r)) / _RAYLEIGH_MEDIAN, min_noise_m)
        inliers = r <= 3.5 * sigma
        if inliers.sum() >= 2 and np.ptp(tc[inliers]) > 0:
            coef = _weighted_line(tc, xy, inliers.astype(np.float64))
        else:
            inliers = np.ones(len(t), dtype=bool)
    r = np.linalg.norm(xy - A @ coef.T, axis=1)
    dof = max(int(inliers.sum()) - 2, 1)
    residual = float(np.sqrt((r[inliers] ** 2).sum() / dof)) if len(t) > 2 else 0.0
    return LineFit(
        x=float(coef[0, 0]),
        y=float(coef[1, 0]),
        vx=float(coef[0, 1]),
        vy=float(coef[1, 1]),
        residual_m=residual,
        inliers=inliers,
    )


def _line_slope(t: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, float]:
    """Least-squares velocity (2,) of a point set and sum((t - mean t)^2), its precision."""
    tc = t - t.mean()
    sxx = float((tc**2).sum())
    return (tc[:, None] * (xy - xy.mean(axis=0))).sum(axis=0) / sxx, sxx


def motion_inconsistency(
    t: np.ndarray, xy: np.ndarray, fit: LineFit, max_accel_mps2: float, noise_m: float | None = None
) -> float:
    """How far (in multiples of what is allowed) the window departs from smooth motion; > 1 is suspect.

    Compares the velocities of the window's two halves with each other (they may differ by what
    ``max_accel_mps2`` allows over half the window, plus noise) and their mean with the whole-window
    velocity (equal under any constant acceleration, so only noise is allowed). A jump of the box (occlusion,
    a box snapping to a neighbour) bends the track and breaks one or the other long before the line fit's
    residual grows large. ``noise_m``: the track's usual residual, so a glitch cannot inflate its own
    tolerance. Inlier points only; 0 when a half has fewer than 3 points.
    """
    t, xy = t[fit.inliers], xy[fit.inliers]
    mid = (t[0] + t[-1]) / 2
    first, second = t <= mid, t > mid
    if first.sum() < 3 or second.sum() < 3:
        return 0.0
    v1, s1 = _line_slope(t[first], xy[first])
    v2, s2 = _line_slope(t[second], xy[second])
    residual = fit.residual_m if noise_m is None else min(fit.residual_m, noise_m)
    sigma = max(residual / math.sqrt(2), 0.02)  # per axis; floor: pixel quantisation at the near field
    se_halves = sigma * math.sqrt(1 / s1 + 1 / s2)
    span = float(t[-1] - t[0])
    v = np.array([fit.vx, fit.vy])
    # 4 sigma of a 2-D difference (Rayleigh tail ~1e-4); the second test gets a little slack for jerk.
    ratio_halves = float(np.linalg.norm(v1 - v2)) / (max_accel_mps2 * span / 2 + 4 * se_halves)
    ratio_mean = float(np.linalg.norm(v - (v1 + v2) / 2)) / (0.25 + 4 * 0.5 * se_halves)
    return max(ratio_halves, ratio_mean)


def speed_noise_kmh(t: np.ndarray, sigma_m: float | np.ndarray) -> float:
    """95 % bound (km/h) of the error that independent position noise of ``sigma_m`` (metres along the motion;
    one value, or one per time) puts on a speed fitted by a straight line over the times ``t``: the slope's
    standard error ``sqrt(sum((t - mean t)^2 sigma^2)) / sum((t - mean t)^2)``, which is ``sigma / sqrt(sum((t -
    mean t)^2))`` for a constant sigma. The window's ends weigh most. Few points or a short span make it large;
    inf for a single instant."""
    t = np.asarray(t, dtype=np.float64)
    d2 = (t - t.mean()) ** 2 if len(t) else t
    spread = float(d2.sum())
    if not spread > 0:
        return math.inf
    sigma = np.broadcast_to(np.asarray(sigma_m, dtype=np.float64), t.shape)
    return Z * 3.6 * math.sqrt(float((d2 * sigma**2).sum())) / spread


@dataclass(slots=True)
class _Track:
    """Mutable per-track state: the position window plus running figures for the summary."""

    t: list[float] = field(default_factory=list)
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)
    last_ok: list[float] | None = None  # [t, vx, vy] of the latest plausible estimate (acceleration check)
    n_ok: int = 0
    max_kmh: float = 0.0
    sample_kmh: list[float] = field(default_factory=list)  # uniform subsample for the median
    stride: int = 1
    path_m: float = 0.0
    first_xy: list[float] | None = None
    last_xy: list[float] | None = None
    last_heading: float = 0.0
    noise_m: float | None = None  # the track's usual fit residual (slow running mean)

    def to_list(self) -> list[Any]:
        return [
            self.t,
            self.x,
            self.y,
            self.last_ok,
            self.n_ok,
            self.max_kmh,
            self.sample_kmh,
            self.stride,
            self.path_m,
            self.first_xy,
            self.last_xy,
            self.last_heading,
            self.noise_m,
        ]

    @classmethod
    def from_list(cls, v: list[Any]) -> _Track:
        return cls(
            list(v[0]),
            list(v[1]),
            list(v[2]),
            v[3],
            int(v[4]),
            float(v[5]),
            list(v[6]),
            int(v[7]),
            float(v[8]),
            v[9],
            v[10],
            float(v[11]),
            v[12],
        )


class TrackKinematics:
    """Per-track position history and speed estimation for all tracks of one camera.

    Args:
        window_s: fit window (``TrackerSettings.speed_window_s``).
        max_plausible_kmh: above this an estimate is flagged ``implausible_speed``.
        max_accel_mps2: a velocity change faster than this since the last plausible estimate is flagged
            ``implausible_acceleration`` (about 1.2 g: beyond what road vehicles do).
        min_points / min_span_fraction: fewer inlier points, or a window covering less than this fraction of
            ``window_s``, is ``insufficient_history``.
        max_residual_m / residual_ratio: an inlier RMS distance from the fitted line above ``max_residual_m``,
            or above ``residual_ratio`` times the track's usual residual (and 0.1 m), or fewer than
            ``min_inlier_fraction`` of the points kept, is ``large_residual``. A window whose halves disagree
            beyond ``max_accel_mps2`` and noise is ``inconsistent_motion`` (a jump of the box).
        plane / calibration_margin_m: with a plane, positions further than this outside the calibrated area
            are ``outside_calibration`` (the homography is extrapolating there).
        max_kmh_per_px: with a plane, a speed that one pixel of box-bottom bias would move by more than this
            (:func:`models.homography.offset_speed_factor` at the vehicle, along its motion, times its speed) is
            ``low_resolution``: far from a low camera a pixel covers metres of road. None: never.
        max_noise_kmh: with a plane, a speed whose 95 % error bound from box-edge jitter alone is above this is
            ``low_resolution`` too (:func:`speed_noise_kmh`): a slow vehicle far away moves a pixel in several
            frames, and one pixel of jitter is then a large part of its displacement over the window. None: never.
        max_points: hard cap of positions kept per track (the window usually holds fewer).
        max_samples: cap of per-track speed samples kept for the summary median.
    """

    def __init__(
        self,
        window_s: float = 0.8,
        max_plausible_kmh: float = 250.0,
        *,
        max_accel_mps2: float = 8.0,
        min_points: int = 4,
        min_span_fraction: float = 0.5,
        max_residual_m: float = 1.0,
        residual_ratio: float = 3.0,
        min_inlier_fraction: float = 0.6,
        plane: RoadPlane | None = None,
        calibration_margin_m: float = 10.0,
        max_kmh_per_px: float | None = None,
        max_noise_kmh: float | None = None,
        max_points: int = 64,
        max_samples: int = 64,
    ) -> None:
        if window_s <= 0:
            raise ValueError(f"window_s must be > 0, got {window_s}")
        if max_points < 3 or min_points < 3:
            raise ValueError("max_points and min_points must be >= 3")
        self.window_s = float(window_s)
        self.max_plausible_kmh = float(max_plausible_kmh)
        self.max_accel_mps2 = float(max_accel_mps2)
        self.min_points = int(min_points)
        self.min_span_fraction = float(min_span_fraction)
        self.max_residual_m = float(max_residual_m)
        self.residual_ratio = float(residual_ratio)
        self.min_inlier_fraction = float(min_inlier_fraction)
        self.plane = plane
        self.calibration_margin_m = float(calibration_margin_m)
        self.max_kmh_per_px = None if max_kmh_per_px is None else float(max_kmh_per_px)
        self.max_noise_kmh = None if max_noise_kmh is None else float(max_noise_kmh)
        self.max_points = int(max_points)
        self.max_samples = int(max_samples)
        self._tracks: dict[TrackId, _Track] = {}

    @classmethod
    def from_settings(cls, tracker: TrackerSettings, plane: RoadPlane | None = None, **kwargs: Any) -> TrackKinematics:
        kwargs.setdefault("max_kmh_per_px", tracker.max_speed_error_per_px_kmh)
        kwargs.setdefault("max_noise_kmh", tracker.max_speed_noise_kmh)
        return cls(tracker.speed_window_s, tracker.max_plausible_kmh, plane=plane, **kwargs)

    # -- estimation -------------------------------------------------------------------------------------
    def update(self, track_id: TrackId, t: float, xy: Sequence[float] | np.ndarray) -> SpeedEstimate | None:
        """Add the track's road-plane position (metres) at presentation time ``t`` (seconds) and estimate.

        Returns ``None`` when no speed can be computed: a non-finite position (e.g. beyond the horizon), a
        timestamp not after the track's previous one, or the track's first point.
        """
        x, y = (float(v) for v in np.asarray(xy, dtype=np.float64).reshape(2))
        if not (math.isfinite(x) and math.isfinite(y) and math.isfinite(t)):
            log.debug("track %s: non-finite position/time at t=%s, skipped", track_id, t)
            return None
        tr = self._tracks.setdefault(track_id, _Track())
        if tr.t and t <= tr.t[-1]:
            log.debug("track %s: timestamp %.6f not after %.6f, skipped", track_id, t, tr.t[-1])
            return None
        tr.t.append(round(float(t), 6))
        tr.x.append(round(x, 3))
        tr.y.append(round(y, 3))
        self._trim(tr)
        if len(tr.t) < 2:
            return None
        est, fit = self._estimate(tr)
        if est.flag is None:
            self._record(tr, est, fit)
        return est

    def _trim(self, tr: _Track) -> None:
        horizon = tr.t[-1] - self.window_s - 1e-9
        start = 0
        while start < len(tr.t) - 1 and tr.t[start] < horizon:
            start += 1
        start = max(start, len(tr.t) - self.max_points)
        if start:
            del tr.t[:start], tr.x[:start], tr.y[:start]

    def _estimate(self, tr: _Track) -> tuple[SpeedEstimate, LineFit]:
        t = np.asarray(tr.t)
        xy = np.stack([tr.x, tr.y], axis=1)
        fit = fit_line_motion(t, xy)
        n_in = int(fit.inliers.sum())
        span = float(np.ptp(t[fit.inliers]))
        kmh = math.hypot(fit.vx, fit.vy) * 3.6
        flag = self._flag(tr, t, xy, fit, n_in, span, kmh)
        if flag not in (FLAG_INSUFFICIENT_HISTORY, FLAG_OUTSIDE_CALIBRATION):
            # Slow running mean that may at most double in ~7 updates: a sustained change of jitter (a track
            # receding) is learnt within a second, a sub-second glitch stays "large".
            tr.noise_m = (
                fit.residual_m
                if tr.noise_m is None
                else (tr.noise_m + _NOISE_ALPHA * (min(fit.residual_m, 2 * tr.noise_m) - tr.noise_m))
            )
        return SpeedEstimate(
            kmh=kmh,
            vx=fit.vx,
            vy=fit.vy,
            heading_deg=heading_deg(fit.vx, fit.vy),
            n_points=n_in,
            residual_m=fit.residual_m,
            flag=flag,
            span_s=span,
        ), fit

    def _flag(
        self, tr: _Track, t: np.ndarray, xy: np.ndarray, fit: LineFit, n_in: int, span: float, kmh: float
    ) -> str | None:
        """The first reason this estimate must not be trusted, or None. Order: most fundamental first."""
        if n_in < self.min_points or span < self.min_span_fraction * self.window_s:
            return FLAG_INSUFFICIENT_HISTORY
        if self.plane is not None:
            outside = self.plane.outside_distance_m(xy[fit.inliers])
            if float(outside.max()) > self.calibration_margin_m:
                return FLAG_OUTSIDE_CALIBRATION
            if self._low_resolution(t[fit.inliers], xy[fit.inliers], fit, kmh):
                return FLAG_LOW_RESOLUTION
        if kmh > self.max_plausible_kmh:
            return FLAG_IMPLAUSIBLE_SPEED
        if tr.last_ok is not None:
            t0, vx0, vy0 = tr.last_ok
            # Floor on dt: consecutive windows share most points, so their small noise must not read as
            # a huge acceleration over one frame interval.
            dt = max(float(t[-1]) - t0, 0.1)
            if math.hypot(fit.vx - vx0, fit.vy - vy0) / dt > self.max_accel_mps2:
                return FLAG_IMPLAUSIBLE_ACCELERATION
        if fit.residual_m > self.max_residual_m or n_in < self.min_inlier_fraction * len(t):
            return FLAG_LARGE_RESIDUAL
        if tr.noise_m is not None and fit.residual_m > max(self.residual_ratio * tr.noise_m, _MIN_RESIDUAL_M):
            return FLAG_LARGE_RESIDUAL
        if motion_inconsistency(t, xy, fit, self.max_accel_mps2, tr.noise_m) > 1.0:
            return FLAG_INCONSISTENT_MOTION
        return None

    def _low_resolution(self, t: np.ndarray, xy: np.ndarray, fit: LineFit, kmh: float) -> bool:
        """Whether the picture cannot support this window's speed (``t``, ``xy``: its inlier points): one pixel of
        box-bottom bias at the latest position would move it by more than ``max_kmh_per_px``, or box-edge jitter
        alone (a pixel covering more road at each point the farther it is) would put it off by more than
        ``max_noise_kmh`` (95 %)."""
        if self.plane is None or (self.max_kmh_per_px is None and self.max_noise_kmh is None):
            return False
        direction = (fit.vx, fit.vy) if kmh > 0 else (0.0, 1.0)
        pixels = self.plane.to_image(np.asarray(xy, dtype=np.float64))
        if not np.isfinite(pixels[-1]).all():
            return True  # beyond the horizon nothing is resolved
        if self.max_kmh_per_px is not None and kmh > 0:
            factor = float(offset_speed_factor(self.plane, pixels[-1:], direction)[0])
            if not (math.isfinite(factor) and abs(factor) * kmh <= self.max_kmh_per_px):
                return True
        if self.max_noise_kmh is not None:
            seen = np.isfinite(pixels).all(axis=1)
            metres_per_px = along_metres_per_pixel(self.plane, pixels[seen], direction)
            noise = speed_noise_kmh(t[seen], metres_per_px * BOX_EDGE_SIGMA_PX)
            if not noise <= self.max_noise_kmh:  # NaN too
                return True
        return False

    def _record(self, tr: _Track, est: SpeedEstimate, fit: LineFit) -> None:
        tr.last_ok = [tr.t[-1], fit.vx, fit.vy]
        tr.n_ok += 1
        tr.max_kmh = max(tr.max_kmh, est.kmh)
        if (tr.n_ok - 1) % tr.stride == 0:
            tr.sample_kmh.append(round(est.kmh, 3))
            if len(tr.sample_kmh) >= self.max_samples:  # keep a uniform subsample of the whole passage
                tr.sample_kmh = tr.sample_kmh[::2]
                tr.stride *= 2
        pos = [round(fit.x, 3), round(fit.y, 3)]
        if tr.last_xy is not None:
            tr.path_m += math.dist(pos, tr.last_xy)
        if tr.first_xy is None:
            tr.first_xy = pos
        tr.last_xy = pos
        tr.last_heading = est.heading_deg

    # -- per-track bookkeeping ----------------------------------------------------------------------------
    def summary(self, track_id: TrackId) -> TrackSummary | None:
        """Median / max speed, distance and overall direction over the track's plausible estimates."""
        tr = self._tracks.get(track_id)
        if tr is None or tr.n_ok == 0:
            return None
        direction = tr.last_heading
        if tr.first_xy is not None and tr.last_xy is not None:
            dx, dy = tr.last_xy[0] - tr.first_xy[0], tr.last_xy[1] - tr.first_xy[1]
            if math.hypot(dx, dy) >= 1.0:  # too short a displacement has no meaningful direction
                direction = heading_deg(dx, dy)
        return TrackSummary(
            median_kmh=float(np.median(tr.sample_kmh)),
            max_kmh=tr.max_kmh,
            distance_m=tr.path_m,
            direction_deg=direction,
            n_estimates=tr.n_ok,
        )

    def evict(self, track_id: TrackId) -> None:
        """Forget a track (it ended). Unknown ids are ignored."""
        self._tracks.pop(track_id, None)

    def evict_older_than(self, t: float) -> list[TrackId]:
        """Forget tracks whose latest point is before ``t``; returns their ids."""
        old = [k for k, tr in self._tracks.items() if not tr.t or tr.t[-1] < t]
        for k in old:
            del self._tracks[k]
        return old

    def track_ids(self) -> list[TrackId]:
        return list(self._tracks)

    def __len__(self) -> int:
        return len(self._tracks)

    # -- state --------------------------------------------------------------------------------------------
    def params(self) -> dict[str, float | int | None]:
        return {
            "window_s": self.window_s,
            "max_plausible_kmh": self.max_plausible_kmh,
            "max_accel_mps2": self.max_accel_mps2,
            "min_points": self.min_points,
            "min_span_fraction": self.min_span_fraction,
            "max_residual_m": self.max_residual_m,
            "residual_ratio": self.residual_ratio,
            "min_inlier_fraction": self.min_inlier_fraction,
            "calibration_margin_m": self.calibration_margin_m,
            "max_kmh_per_px": self.max_kmh_per_px,
            "max_noise_kmh": self.max_noise_kmh,
            "max_points": self.max_points,
            "max_samples": self.max_samples,
        }

    def to_dict(self) -> dict[str, Any]:
        """Plain-JSON state (parameters and tracks; not the plane, which comes from the camera config)."""
        return {
            "v": _STATE_VERSION,
            "params": self.params(),
            "tracks": [[k, tr.to_list()] for k, tr in self._tracks.items()],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any], plane: RoadPlane | None = None) -> TrackKinematics:
        """Restore with the parameters the state was written with."""
        return cls(plane=plane, **state["params"]).restore_tracks(state)

    def restore_tracks(self, state: dict[str, Any]) -> TrackKinematics:
        """Replace this instance's tracks with those of a :meth:`to_dict` state; parameters stay this instance's
        (a restart takes them from the current configuration). Returns ``self``."""
        if state.get("v") != _STATE_VERSION:
            raise ValueError(f"TrackKinematics state version {state.get('v')!r}, expected {_STATE_VERSION}")
        self._tracks = {k: _Track.from_list(v) for k, v in state["tracks"]}
        return self

    def to_bytes(self) -> bytes:
        return state_codec.encode(_STATE_KIND, self.to_dict())

    @classmethod
    def from_bytes(cls, blob: bytes, plane: RoadPlane | None = None) -> TrackKinematics:
        """Raises ``ValueError`` (``state_codec.StateFormatError``) for anything but a readable state."""
        return cls.from_dict(state_codec.decode(blob, _STATE_KIND)[1], plane=plane)

    def state_size_bytes(self) -> int:
        return len(self.to_bytes())
