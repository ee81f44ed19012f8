"""Speeding violations: sustained, plausible overspeed of one track, reported once per passage.

A track violates when its smoothed speed (:class:`models.speed.SpeedEstimate`) stays above the limit for at
least ``min_duration_s`` without interruption. Anything that is not a plausible overspeed estimate ends the
current overspeed span: a speed at or under the limit, a flagged estimate, no estimate, or a gap longer than
``max_gap_s`` between estimates. That is deliberately conservative: staff act on these, so a doubtful
measurement must never carry a span across.

The rule keeps a small serialisable state per track (Spark's state store; the ``violations`` document of
``models/state_codec.py``); after its violation a track only remembers that it was reported, so it is never
reported twice while it stays in view. A restored rule takes its limit and durations from the current camera
configuration (:meth:`ViolationRule.restore_tracks`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from trafficstream.models import state_codec
from trafficstream.models.speed import SpeedEstimate, TrackId

if TYPE_CHECKING:
    from trafficstream.cameras import Camera

log = logging.getLogger(__name__)

_STATE_KIND = "violations"
_STATE_VERSION = 1  # of the document; the blob's format version is state_codec.FORMAT_VERSION


@dataclass(frozen=True, slots=True)
class Violation:
    """One speeding violation. ``speed_kmh`` is the median over the overspeed span (robust; ``max_kmh`` is its
    maximum), ``over_s`` how long the span had lasted at ``t_detect``."""

    track_id: TrackId
    t_start: float
    t_detect: float
    speed_kmh: float
    max_kmh: float
    limit_kmh: float
    over_s: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "track_id": self.track_id,
            "t_start": self.t_start,
            "t_detect": self.t_detect,
            "speed_kmh": self.speed_kmh,
            "max_kmh": self.max_kmh,
            "limit_kmh": self.limit_kmh,
            "over_s": self.over_s,
        }


@dataclass(slots=True)
class _Span:
    last_t: float | None = None
    start: float | None = None  # start of the current overspeed span
    speeds: list[float] = field(default_factory=list)
    reported: bool = False

    def reset(self) -> None:
        self.start = None
        self.speeds = []

    def to_list(self) -> list[Any]:
        return [self.last_t, self.start, self.speeds, self.reported]

    @classmethod
    def from_list(cls, v: list[Any]) -> _Span:
        return cls(v[0], v[1], list(v[2]), bool(v[3]))


class ViolationRule:
    """Emits one :class:`Violation` per track passage for overspeed sustained >= ``min_duration_s``.

    Args:
        limit_kmh: the speed limit.
        min_duration_s: how long the overspeed must last without interruption.
        margin_kmh: counts as over only when ``kmh > limit_kmh + margin_kmh`` (measurement tolerance).
        max_gap_s: a longer gap between a track's estimates breaks its overspeed span.
        max_samples: cap of speeds kept per span (a longer span keeps its latest ones).
    """

    def __init__(
        self,
        limit_kmh: float,
        min_duration_s: float = 0.5,
        *,
        margin_kmh: float = 0.0,
        max_gap_s: float = 0.5,
        max_samples: int = 128,
    ) -> None:
        if limit_kmh <= 0:
            raise ValueError(f"limit_kmh must be > 0, got {limit_kmh}")
        if min_duration_s < 0:
            raise ValueError(f"min_duration_s must be >= 0, got {min_duration_s}")
        self.limit_kmh = float(limit_kmh)
        self.min_duration_s = float(min_duration_s)
        self.margin_kmh = float(margin_kmh)
        self.max_gap_s = float(max_gap_s)
        self.max_samples = int(max_samples)
        self._tracks: dict[TrackId, _Span] = {}

    @classmethod
    def from_camera(cls, camera: Camera, **kwargs: Any) -> ViolationRule:
        return cls(camera.speed_limit_kmh, camera.min_violation_s, **kwargs)

    def feed(self, track_id: TrackId, t: float, estimate: SpeedEstimate | None) -> Violation | None:
        """Feed the track's estimate at presentation time ``t``; returns its violation the moment it is due."""
        st = self._tracks.setdefault(track_id, _Span())
        if st.reported:
            return None
        if st.last_t is not None and t <= st.last_t:
            log.debug("track %s: timestamp %.6f not after %.6f, ignored", track_id, t, st.last_t)
            return None
        if st.start is not None and st.last_t is not None and t - st.last_t > self.max_gap_s:
            st.reset()
        st.last_t = float(t)
        kmh = estimate.kmh if estimate is not None and estimate.flag is None else None
        if kmh is None or not kmh > self.limit_kmh + self.margin_kmh:  # `not >`: a NaN speed is not over
            st.reset()
            return None
        if st.start is None:
            st.start = float(t)
        st.speeds.append(float(kmh))
        if len(st.speeds) > self.max_samples:
            del st.speeds[0]
        over_s = float(t) - st.start
        if over_s + 1e-9 < self.min_duration_s:
            return None
        violation = Violation(
            track_id=track_id,
            t_start=st.start,
            t_detect=float(t),
            speed_kmh=float(np.median(st.speeds)),
            max_kmh=max(st.speeds),
            limit_kmh=self.limit_kmh,
            over_s=over_s,
        )
        st.reset()
        st.reported = True
        log.info("track %s: %.1f km/h over %.0f km/h for %.2f s", track_id, violation.speed_kmh, self.limit_kmh, over_s)
        return violation

    def evict(self, track_id: TrackId) -> None:
        """Forget a track (its passage ended). Unknown ids are ignored."""
        self._tracks.pop(track_id, None)

    def track_ids(self) -> list[TrackId]:
        return list(self._tracks)

    def __len__(self) -> int:
        return len(self._tracks)

    # -- state --------------------------------------------------------------------------------------------
    def params(self) -> dict[str, float | int]:
        return {
            "limit_kmh": self.limit_kmh,
            "min_duration_s": self.min_duration_s,
            "margin_kmh": self.margin_kmh,
            "max_gap_s": self.max_gap_s,
            "max_samples": self.max_samples,
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": _STATE_VERSION,
            "params": self.params(),
            "tracks": [[k, st.to_list()] for k, st in self._tracks.items()],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> ViolationRule:
        """Restore with the parameters the state was written with."""
        params = dict(state["params"])
        return cls(params.pop("limit_kmh"), params.pop("min_duration_s"), **params).restore_tracks(state)

    def restore_tracks(self, state: dict[str, Any]) -> ViolationRule:
        """Replace this rule's per-track spans with those of a :meth:`to_dict` state; the limit and durations stay
        this instance's (a restart takes them from the current camera config). Returns ``self``.

        An open overspeed span carries over only if every speed in it is over the current threshold: after a
        raised limit, time spent between the old and the new limit must not count towards a violation.
        """
        if state.get("v") != _STATE_VERSION:
            raise ValueError(f"ViolationRule state version {state.get('v')!r}, expected {_STATE_VERSION}")
        self._tracks = {k: _Span.from_list(v) for k, v in state["tracks"]}
        threshold = self.limit_kmh + self.margin_kmh
        for span in self._tracks.values():
            if span.start is not None and not all(v > threshold for v in span.speeds):
                span.reset()
            del span.speeds[: -self.max_samples]
        return self

    def to_bytes(self) -> bytes:
        return state_codec.encode(_STATE_KIND, self.to_dict())

    @classmethod
    def from_bytes(cls, blob: bytes) -> ViolationRule:
        """Raises ``ValueError`` (``state_codec.StateFormatError``) for anything but a readable state."""
        return cls.from_dict(state_codec.decode(blob, _STATE_KIND)[1])

    def state_size_bytes(self) -> int:
        return len(self.to_bytes())
