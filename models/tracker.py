"""Per-camera vehicle tracking (DeepSORT) whose complete state survives Spark micro-batch boundaries.

One :class:`VehicleTracker` per camera. Each frame's detections (``xyxy``, ``confidence``, ``class_id``) and
their appearance embeddings (from ``models/embedder.py``) go to :meth:`VehicleTracker.update`, which returns
the tracked vehicles of that frame. Between micro-batches the tracker is frozen with
:meth:`VehicleTracker.to_bytes` into Spark's state store and thawed with :meth:`VehicleTracker.from_bytes`,
possibly in another Python process; a restored tracker behaves bit-for-bit like one that never stopped.

The state is a ``tracker`` document of the explicit, versioned format of ``models/state_codec.py`` (JSON values
plus raw numeric arrays, never pickle): no numpy or deep-sort-realtime classes, so it survives upgrades of
either library, and reading it cannot run code. :meth:`VehicleTracker.to_state` / :meth:`from_state` give
the document itself, for embedding in a camera's state; ``from_state(doc, params=...)`` restores the dynamic
contents (tracks, gallery, id counter) under the *current* configuration's parameters.

Usage::

    tracker = VehicleTracker.from_settings(settings.tracker, fps=camera.fps)
    for frame in frames:
        vehicles = tracker.update(dets.xyxy, dets.confidence, dets.class_id, embeddings)
        ended = tracker.ended_track_ids()  # emit per-track summaries, evict speed history
    state = tracker.to_bytes()  # ... next micro-batch, maybe another executor:
    tracker = VehicleTracker.from_bytes(state)
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

import numpy as np
from deep_sort_realtime.deep_sort import linear_assignment
from deep_sort_realtime.deepsort_tracker import DeepSort

from trafficstream.models import state_codec
from trafficstream.models.nms import box_iou

if TYPE_CHECKING:
    from trafficstream.config import TrackerSettings

logger = logging.getLogger(__name__)

_STATE_KIND = "tracker"
_MAX_PENDING_ENDED = 10_000  # ended ids kept for a caller that never asks for them
# Low detections (ByteTrack's second association): the overlap with a track's predicted box they need (ByteTrack's
# own 0.5), and how many updates a track may have missed and still be continued by one.
RESCUE_IOU = 0.5
RESCUE_MAX_MISSES = 2
# Updates a confirmed track may have missed and still be matched by box overlap (within the appearance gate).
RECENT_MISSES = 3
# Their box buffer (C-BIoU): this share of a box's width and height added on each side per missed update, at most
# RECENT_BUFFER_MAX (the paper's two stages use 0.3 and 0.5).
RECENT_BUFFER = 0.15
RECENT_BUFFER_MAX = 0.5
# Two confirmed tracks on one vehicle (see _merge_duplicates): boxes overlapping this much (ByteTrack's duplicate
# rule, 1 - 0.15), or one box inside the other (this share of the smaller one) with the same width and the same top
# or bottom edge: the detector's full box and the box of the part above an occluder (or, at night, of the lit lower
# body), which it gives on alternate frames.
DUPLICATE_IOU = 0.85
INSIDE_SHARE = 0.9
EDGE_TOLERANCE = 0.15  # of the smaller box's height (top edges) / of the wider box's width (x extent)


def duplicate_boxes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` bool: xyxy boxes overlapping so much that they are one vehicle (ByteTrack's duplicate rule)."""
    return box_iou(np.asarray(a).reshape(-1, 4), np.asarray(b).reshape(-1, 4)) >= DUPLICATE_IOU


def cut_off_boxes(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(N, M)`` bool: one box is the other cut off at the bottom or the top: the smaller lies inside the
    larger, with the same left and right edges and the same top edge (the part above an occluder in front) or
    the same bottom edge (at night, the lit lower body without the dark roof). Two vehicles in a queue never
    share their top edge (the one behind shows above the one in front) nor their bottom edge (the road row of
    their contact points: at the same distance, in one lane, they would be one vehicle)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = (hi - lo).clip(0).prod(axis=2)
    area_a = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None]
    area_b = ((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[None, :]
    smaller = np.minimum(area_a, area_b)
    inside = np.divide(inter, smaller, out=np.zeros_like(inter), where=smaller > 0) >= INSIDE_SHARE
    min_h = np.minimum((a[:, 3] - a[:, 1])[:, None], (b[:, 3] - b[:, 1])[None, :])
    max_w = np.maximum((a[:, 2] - a[:, 0])[:, None], (b[:, 2] - b[:, 0])[None, :])
    tops = np.abs(a[:, None, 1] - b[None, :, 1]) <= EDGE_TOLERANCE * min_h
    bottoms = np.abs(a[:, None, 3] - b[None, :, 3]) <= EDGE_TOLERANCE * min_h
    sides = (np.abs(a[:, None, 0] - b[None, :, 0]) <= EDGE_TOLERANCE * max_w) & (
        np.abs(a[:, None, 2] - b[None, :, 2]) <= EDGE_TOLERANCE * max_w
    )
    return inside & (tops | bottoms) & sides


try:
    _DEEPSORT_VERSION = metadata.version("deep-sort-realtime")
except metadata.PackageNotFoundError:  # pragma: no cover - vendored / source install
    _DEEPSORT_VERSION = "unknown"


class _DropInitBanner(logging.Filter):
    """DeepSort.__init__ logs a 9-line INFO banner; we build one per camera per micro-batch (from_bytes)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.funcName == "__init__" and record.levelno <= logging.INFO)


logging.getLogger("deep_sort_realtime.deepsort_tracker").addFilter(_DropInitBanner())


_blas_controller: Any = None
_blas_warned = False


@contextlib.contextmanager
def _single_threaded_blas() -> Iterator[None]:
    """Run DeepSORT's tiny 4x4 / 8x8 linear algebra on one BLAS thread.

    OpenBLAS (numpy's and scipy's wheels) spreads even a 4xN ``trsm`` (``solve_triangular`` in the Kalman
    gating) over all cores; on a busy host each call then waits for a scheduler slice: measured ~10 ms
    instead of ~20-40 us per call, ~250 ms instead of ~10 ms for a 13-detection frame. threadpoolctl limits
    it for the duration of one update (~30 us); without it, set OPENBLAS_NUM_THREADS=1 for the process.
    """
    global _blas_controller, _blas_warned
    if _blas_controller is None:
        try:
            from threadpoolctl import ThreadpoolController
        except ImportError:
            _blas_controller = False
            threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS")
            if threads != "1" and not _blas_warned:
                _blas_warned = True
                logger.warning(
                    "threadpoolctl missing and OPENBLAS_NUM_THREADS != 1: multi-threaded OpenBLAS can make "
                    "tracker updates 10-50x slower on a busy host"
                )
        else:
            _blas_controller = ThreadpoolController()
    if not _blas_controller:
        yield
        return
    with _blas_controller.limit(limits=1, user_api="blas"):
        yield


class TrackerStateError(state_codec.StateFormatError):
    """A serialised tracker state is corrupt, truncated or written in an unknown format."""


@dataclass(frozen=True)
class TrackedVehicle:
    """One track as seen in the current frame.

    Attributes:
        track_id: Unique within the camera, strictly increasing with track creation, never reused.
        xyxy: ``(x1, y1, x2, y2)`` in pixels: the matched detection's box when the track was updated this
            frame (exactly the input values), else the Kalman prediction.
        class_id: Majority vote over all detections of the track (ties: the most recently seen class).
        confidence: The matched detection's confidence; ``None`` when not updated this frame.
        is_confirmed: The track has had ``n_init`` consecutive hits (tentative tracks are usually noise).
        age: Frames since the track was created (1 in its first frame).
        time_since_update: Frames since the last matched detection (0: matched in this frame).
        hits: Number of detections matched to the track so far.
        detection_index: Row of this frame's input arrays matched to the track; ``None`` when not updated.
    """

    track_id: int
    xyxy: tuple[float, float, float, float]
    class_id: int
    confidence: float | None
    is_confirmed: bool
    age: int
    time_since_update: int
    hits: int
    detection_index: int | None


class VehicleTracker:
    """DeepSORT (deep-sort-realtime) for one camera with externally computed embeddings.

    Args:
        max_age_frames: A track missed for more than this many consecutive frames is deleted.
        n_init: Consecutive detections before a track is confirmed.
        max_cosine_distance: Appearance gate (cosine distance to the track's nearest gallery sample).
        max_iou_distance: IoU gate (``1 - IoU``) for tentative and just-missed tracks.
        nn_budget: Appearance gallery size per track (oldest samples dropped first).
        gallery_cap: Optional cap on the *total* number of gallery samples in the camera, so a congested
            scene cannot blow up the state: the largest galleries lose their oldest samples first, each
            keeps at least one. Applied every frame, so it never breaks restore equivalence.
        first_track_id: Id of the first track. Only for starting over after a lost state, so new ids stay
            above those already emitted for the camera; restored trackers continue their own counter.
    """

    def __init__(
        self,
        max_age_frames: int = 30,
        n_init: int = 3,
        max_cosine_distance: float = 0.3,
        max_iou_distance: float = 0.7,
        nn_budget: int = 20,
        gallery_cap: int | None = None,
        *,
        first_track_id: int = 1,
    ) -> None:
        if max_age_frames < 1 or n_init < 1 or nn_budget < 1:
            raise ValueError("max_age_frames, n_init and nn_budget must be >= 1")
        if gallery_cap is not None and gallery_cap < 1:
            raise ValueError("gallery_cap must be >= 1 or None")
        self._params: dict[str, Any] = {
            "max_age_frames": int(max_age_frames),
            "n_init": int(n_init),
            "max_cosine_distance": float(max_cosine_distance),
            "max_iou_distance": float(max_iou_distance),
            "nn_budget": int(nn_budget),
            "gallery_cap": None if gallery_cap is None else int(gallery_cap),
        }
        self._deepsort = DeepSort(
            max_iou_distance=self._params["max_iou_distance"],
            max_age=self._params["max_age_frames"],
            n_init=self._params["n_init"],
            max_cosine_distance=self._params["max_cosine_distance"],
            nn_budget=self._params["nn_budget"],
            embedder=None,  # embeddings come from models/embedder.py
        )
        self._deepsort.tracker._next_id = int(first_track_id)
        self._deepsort.tracker._match = self._with_recent_stage(self._deepsort.tracker._match)
        self._stride = 1
        self._embed_dim: int | None = None
        self._frame_count = 0
        # track id -> {class_id: votes}; insertion order = recency, which breaks ties in the vote
        self._class_votes: dict[int, dict[int, int]] = {}
        self._pending_ended: list[tuple[int, bool]] = []  # (track id, was confirmed)

    @classmethod
    def from_settings(
        cls, settings: TrackerSettings, fps: float, gallery_cap: int | None = None, *, first_track_id: int = 1
    ) -> VehicleTracker:
        """Build from ``settings.tracker``; ``max_age_s`` becomes frames at the camera's ``fps``."""
        return cls(**cls.params_from_settings(settings, fps, gallery_cap), first_track_id=first_track_id)

    @staticmethod
    def params_from_settings(settings: TrackerSettings, fps: float, gallery_cap: int | None = None) -> dict[str, Any]:
        """Constructor parameters for ``settings.tracker`` at ``fps`` (also what :meth:`from_state` re-applies)."""
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        return {
            "max_age_frames": max(1, round(settings.max_age_s * fps)),
            "n_init": settings.n_init,
            "max_cosine_distance": settings.max_cosine_distance,
            "max_iou_distance": settings.max_iou_distance,
            "nn_budget": settings.nn_budget,
            "gallery_cap": gallery_cap,
        }

    @property
    def params(self) -> dict[str, Any]:
        """Constructor arguments; compare with the current settings after a restore to spot config drift."""
        return dict(self._params)

    @property
    def frame_count(self) -> int:
        return self._frame_count

    @property
    def next_track_id(self) -> int:
        """The id the next new track will get."""
        return int(self._deepsort.tracker._next_id)

    @property
    def num_tracks(self) -> int:
        """Live tracks (tentative and confirmed)."""
        return len(self._deepsort.tracker.tracks)

    def update(
        self,
        xyxy: np.ndarray,
        confidence: np.ndarray,
        class_id: np.ndarray,
        embeddings: np.ndarray,
        *,
        include_all: bool = False,
        low_below: float | None = None,
    ) -> list[TrackedVehicle]:
        """Advance the tracker by ONE frame.

        Args:
            xyxy: ``(N, 4)`` boxes in pixels; ``N`` may be 0 (tracks then just coast on their prediction).
            confidence: ``(N,)`` detector scores.
            class_id: ``(N,)`` class ids.
            embeddings: ``(N, D)`` appearance embeddings, row ``i`` for box ``i``.
            include_all: Also return tentative tracks and tracks not matched in this frame.
            low_below: Detections scoring below this are *low* (ByteTrack's second association): one never
                starts a track and its embedding is ignored; it continues a recently seen track whose predicted
                box it overlaps by IoU >= ``RESCUE_IOU`` when no confident detection overlaps that track as
                much. None: every detection is confident.

        Returns:
            Confirmed tracks matched in this frame (``time_since_update == 0``), ordered by ``track_id``;
            with ``include_all``, every live track.
        """
        boxes, scores, classes, embeds = self._validate(xyxy, confidence, class_id, embeddings)
        # DeepSort.update_tracks drops boxes with w/h <= 0 but NOT their embeddings, which would shift
        # every later embedding onto the wrong box: drop degenerate rows here, all arrays together.
        wh = boxes[:, 2:] - boxes[:, :2]
        # A NaN score would also end up in the track (and make the state unserialisable): dropped too.
        keep = np.flatnonzero(
            (wh > 0).all(axis=1)
            & np.isfinite(boxes).all(axis=1)
            & np.isfinite(embeds).all(axis=1)
            & np.isfinite(scores)
        )
        if len(keep) < len(boxes):
            logger.debug("dropping %d degenerate or non-finite detections", len(boxes) - len(keep))
        if low_below is not None:
            keep, embeds = self._rescue_low(boxes, scores, embeds, keep, float(low_below))
        # deep-sort-realtime's ([left, top, w, h], confidence, class) tuples
        raw = [([*map(float, boxes[i, :2]), *map(float, wh[i])], float(scores[i]), int(classes[i])) for i in keep]

        tracker = self._deepsort.tracker
        confirmed_before = {t.track_id for t in tracker.tracks if t.is_confirmed()}
        # `others` rides along with each detection onto the matched track: the input row index, so the
        # returned box is exactly the caller's (to_ltrb(orig=True) round-trips through float32 ltwh).
        # `embeds` must be given even for 0 detections, otherwise update_tracks insists on a frame.
        with _single_threaded_blas():
            self._deepsort.update_tracks(raw, embeds=embeds[keep], others=[int(i) for i in keep])
        self._frame_count += 1

        # Tracker.del_tracks_ids only covers the latest update: collect them now.
        for tid in tracker.del_tracks_ids:
            self._class_votes.pop(int(tid), None)
            self._pending_ended.append((int(tid), tid in confirmed_before))
        for t in tracker.tracks:  # where each track was last seen: the duplicate check's box for a lost one
            if t.time_since_update == 0 and t.others is not None:
                t.last_box = [float(v) for v in boxes[t.others]]
        self._merge_duplicates(boxes)
        if len(self._pending_ended) > _MAX_PENDING_ENDED:
            dropped = len(self._pending_ended) - _MAX_PENDING_ENDED
            logger.warning("ended_track_ids() not called; dropping %d old ended ids", dropped)
            del self._pending_ended[:-_MAX_PENDING_ENDED]

        out: list[TrackedVehicle] = []
        for track in tracker.tracks:
            tid = int(track.track_id)
            det_index = track.others if track.time_since_update == 0 else None
            if det_index is not None:
                votes = self._class_votes.setdefault(tid, {})
                cls_ = int(classes[det_index])
                votes[cls_] = votes.pop(cls_, 0) + 1  # re-insert: most recent class last
            if not include_all and not (track.is_confirmed() and track.time_since_update == 0):
                continue
            if det_index is not None:
                box = tuple(float(v) for v in boxes[det_index])
            else:
                box = tuple(float(v) for v in track.to_ltrb(orig=False))
            out.append(
                TrackedVehicle(
                    track_id=tid,
                    xyxy=box,  # type: ignore[arg-type]
                    class_id=self._majority_class(tid),
                    confidence=None if det_index is None else float(scores[det_index]),
                    is_confirmed=track.is_confirmed(),
                    age=int(track.age),
                    time_since_update=int(track.time_since_update),
                    hits=int(track.hits),
                    detection_index=det_index,
                )
            )
        self._apply_gallery_cap()
        return out

    def _with_recent_stage(self, match: Any) -> Any:
        """DeepSORT's association followed by one more stage: the confirmed tracks it left unmatched that
        missed at most ``RECENT_MISSES`` updates, against the detections left over, by box overlap with their
        predicted box among those within the appearance gate. The overlap is that of *buffered* boxes (C-BIoU,
        Yang et al., WACV 2023: each box widened on every side by a share of its size that grows with the updates
        missed), under the tracker's IoU gate. DeepSORT gives a missed track a second chance by overlap only in
        the update right after its last match, and leaves older ones to appearance under a Kalman gate that a
        vehicle speeding up in the image (near the camera) has already left, as has its constant-velocity
        predicted box: one dropped or merged detection there started a new id."""

        def cost(tracks: list[Any], dets: list[Any], track_idx: list[int], det_idx: list[int]) -> np.ndarray:
            boxes = np.array([dets[j].to_tlbr() for j in det_idx], dtype=np.float64)
            features = np.array([dets[j].feature for j in det_idx], dtype=np.float64)
            metric = self._deepsort.tracker.metric
            out = np.full((len(track_idx), len(det_idx)), linear_assignment.INFTY_COST)
            for row, i in enumerate(track_idx):
                track = tracks[i]
                if not metric.samples.get(track.track_id):
                    continue  # no appearance to gate on: never matched by overlap alone
                b = min(RECENT_BUFFER_MAX, RECENT_BUFFER * track.time_since_update)
                out[row] = 1.0 - box_iou(buffered(track.to_ltrb(orig=False)[None], b), buffered(boxes, b))[0]
                far = metric.distance(features, [track.track_id])[0] > self._params["max_cosine_distance"]
                out[row, far] = linear_assignment.INFTY_COST
            return out

        def with_recent(detections: list[Any]) -> tuple[list[Any], list[int], list[int]]:
            matches, unmatched_tracks, unmatched_dets = match(detections)
            tracker = self._deepsort.tracker
            recent = [
                k
                for k in unmatched_tracks
                if tracker.tracks[k].is_confirmed() and tracker.tracks[k].time_since_update <= RECENT_MISSES
            ]
            if not recent or not unmatched_dets:
                return matches, unmatched_tracks, unmatched_dets
            more, still, unmatched_dets = linear_assignment.min_cost_matching(
                cost, tracker.max_iou_distance, tracker.tracks, detections, recent, unmatched_dets
            )
            rest = [k for k in unmatched_tracks if k not in recent] + list(still)
            return matches + more, rest, unmatched_dets

        return with_recent

    def _merge_duplicates(self, boxes: np.ndarray) -> None:
        """One vehicle, two confirmed tracks: a track matched in this update and another one (matched too, or
        not) whose box duplicates its box (:func:`duplicate_boxes`, against the other's predicted box), or whose
        box is its box cut off by an occluder or the reverse (:func:`cut_off_boxes`, against the other's
        predicted or, just lost, last detected box) and that looks the same (appearance within the
        tracker's gate). Left alone, the two would trade the vehicle back and forth, each trade an identity
        switch. The track with more hits keeps its id; the current state (Kalman, this frame's detection) of
        the matched one goes on under that id, galleries and class votes are pooled, the other id ends
        (:meth:`ended_track_ids`)."""
        tracker = self._deepsort.tracker
        confirmed = [t for t in tracker.tracks if t.is_confirmed()]
        live = [t for t in confirmed if t.time_since_update == 0 and t.others is not None]
        if len(confirmed) < 2 or not live:
            return
        recent = tracker.n_init + 2  # updates a lost track's last box still stands for where it is
        samples = tracker.metric.samples
        candidates: list[tuple[float, Any, Any]] = []
        for L in live:
            box = np.asarray(boxes[L.others], dtype=np.float64)
            for T in confirmed:
                if T is L or (T.time_since_update == 0 and int(T.track_id) < int(L.track_id) and T in live):
                    continue  # each live pair once
                other = [_xyah_to_xyxy(T.mean[:4])]
                if T.time_since_update == 0 and T.others is not None:
                    other = [np.asarray(boxes[T.others], dtype=np.float64)]
                elif T.time_since_update <= recent and getattr(T, "last_box", None) is not None:
                    other.append(np.asarray(T.last_box, dtype=np.float64))
                rects = np.array([r for r in other if r is not None])
                if not len(rects):
                    continue
                overlap = float(box_iou(box[None], rects).max())
                if duplicate_boxes(box[None], rects[:1]).any() or (
                    cut_off_boxes(box[None], rects).any() and self._looks_alike(L, T)
                ):
                    candidates.append((overlap, L, T))
        gone: set[int] = set()
        for _, a, b in sorted(candidates, key=lambda c: -c[0]):
            if id(a) in gone or id(b) in gone:
                continue
            winner, loser = (a, b) if (a.hits, -int(a.track_id)) >= (b.hits, -int(b.track_id)) else (b, a)
            # the object that goes on: the winner, unless only the loser was matched in this update
            keep = loser if loser.time_since_update == 0 and winner.time_since_update > 0 else winner
            drop = b if keep is a else a
            keep_key, drop_key = winner.track_id, loser.track_id  # DeepSORT's own ids (strings) key its gallery
            kept_samples, dropped_samples = samples.pop(keep_key, []), samples.pop(drop_key, [])
            if keep is loser:  # the matched (newer) state goes on under the older id; its samples are the latest
                keep.track_id = keep_key
                pooled = kept_samples + dropped_samples
            else:
                pooled = dropped_samples + kept_samples
            if pooled:
                samples[keep_key] = pooled[-self._params["nn_budget"] :]
            keep_id, drop_id = int(keep_key), int(drop_key)
            keep.hits, keep.age = max(a.hits, b.hits), max(a.age, b.age)
            votes = self._class_votes.setdefault(keep_id, {})
            for cls_, n in self._class_votes.pop(drop_id, {}).items():
                votes[cls_] = votes.pop(cls_, 0) + n
            gone.add(id(drop))
            self._pending_ended.append((drop_id, True))
            logger.debug("track %d merged into track %d (one vehicle)", drop_id, keep_id)
        if gone:
            tracker.tracks = [t for t in tracker.tracks if id(t) not in gone]

    def _looks_alike(self, a: Any, b: Any) -> bool:
        """``a``'s latest appearance is within the tracker's cosine gate of ``b``'s gallery (DeepSORT's own
        nearest-neighbour cosine distance)."""
        feature = self._latest_feature(a)
        metric = self._deepsort.tracker.metric
        if feature is None or not metric.samples.get(b.track_id):
            return False
        distance = metric.distance(feature[None].astype(np.float64), [b.track_id])
        return float(distance.min()) <= self._params["max_cosine_distance"]

    def _rescue_low(
        self, boxes: np.ndarray, scores: np.ndarray, embeds: np.ndarray, keep: np.ndarray, low_below: float
    ) -> tuple[np.ndarray, np.ndarray]:
        """The rows to feed DeepSORT: the confident ones, and each low one that continues a track (greedy by
        IoU with the tracks' predicted boxes), carrying that track's latest appearance sample so the cascade
        matches it to that track; the others are dropped."""
        high, low = keep[scores[keep] >= low_below], keep[scores[keep] < low_below]
        if not len(low):
            return high, embeds
        tracker = self._deepsort.tracker
        candidates, predicted = [], []
        for track in tracker.tracks:
            if track.time_since_update > RESCUE_MAX_MISSES or track.is_deleted():
                continue
            feature = self._latest_feature(track)
            box = _xyah_to_xyxy(np.asarray(track.mean[:4], np.float64) + np.asarray(track.mean[4:8], np.float64))
            if feature is None or box is None:
                continue
            if len(high) and box_iou(box[None], boxes[high]).max() >= RESCUE_IOU:
                continue  # a confident detection is there: the first association has it
            candidates.append((track, feature))
            predicted.append(box)
        if not candidates:
            return high, embeds
        overlap = box_iou(np.asarray(predicted), boxes[low])
        rescued: list[int] = []
        embeds = embeds.copy()
        while overlap.size and overlap.max() >= RESCUE_IOU:
            t, d = np.unravel_index(int(np.argmax(overlap)), overlap.shape)
            row = int(low[d])
            embeds[row] = candidates[t][1]
            rescued.append(row)
            overlap[t, :] = -1.0
            overlap[:, d] = -1.0
        return np.sort(np.concatenate([high, np.asarray(rescued, dtype=high.dtype)])), embeds

    def _latest_feature(self, track: Any) -> np.ndarray | None:
        """A track's most recent appearance sample: its own pending features (tentative tracks) or the last of
        its gallery."""
        if track.features:
            return np.asarray(track.features[-1], np.float32)
        gallery = self._deepsort.tracker.metric.samples.get(track.track_id)
        return np.asarray(gallery[-1], np.float32) if gallery else None

    def predicted(self, steps: float) -> list[TrackedVehicle]:
        """The confirmed tracks matched at the last :meth:`update`, moved ``steps`` updates ahead on their
        Kalman velocity: the boxes of a frame between two detections. Changes nothing in the tracker.

        ``steps``: frames since that update (velocities are per frame: see :meth:`advance`).
        """
        out: list[TrackedVehicle] = []
        for track in self._deepsort.tracker.tracks:
            if not (track.is_confirmed() and track.time_since_update == 0):
                continue
            mean = np.asarray(track.mean, dtype=np.float64)
            x, y, a, h = mean[:4] + steps * mean[4:8]
            w = a * h
            if not (np.isfinite([x, y, w, h]).all() and w > 0 and h > 0):
                continue
            tid = int(track.track_id)
            out.append(
                TrackedVehicle(
                    track_id=tid,
                    xyxy=(float(x - w / 2), float(y - h / 2), float(x + w / 2), float(y + h / 2)),
                    class_id=self._majority_class(tid),
                    confidence=None,
                    is_confirmed=True,
                    age=int(track.age),
                    time_since_update=0,
                    hits=int(track.hits),
                    detection_index=None,
                )
            )
        out.sort(key=lambda v: v.track_id)
        return out

    def advance(self, frames: int) -> None:
        """Move every track's Kalman state ``frames`` frames ahead without a detection: the frames between two
        detections (detection stride, skipped frames), so that the next :meth:`update` matches detections
        against where the vehicles are *now*, with velocities kept per frame. Ages and misses are not
        touched: DeepSORT counts those per update (see :meth:`set_max_age` for strides)."""
        if frames <= 0:
            return
        tracker = self._deepsort.tracker
        with _single_threaded_blas():
            for track in tracker.tracks:
                mean, cov = track.mean, track.covariance
                for _ in range(frames):
                    mean, cov = tracker.kf.predict(mean, cov)
                track.mean, track.covariance = mean, cov

    @property
    def stride(self) -> int:
        return self._stride

    def set_stride(self, stride: int) -> None:
        """Run with the detector on every ``stride``-th frame (updates ``stride`` frames apart, the frames
        between predicted with :meth:`advance`). DeepSORT counts misses per update, so the track lifetime
        becomes ``max_age_frames / stride`` updates (the same time unseen); a new track has no velocity yet,
        so its box-overlap gate widens with the distance a vehicle covers between updates. Appearance still
        decides first for confirmed tracks. The configured parameters (:attr:`params`) do not change."""
        stride = max(1, int(stride))
        self._stride = stride
        tracker = self._deepsort.tracker
        tracker.max_age = max(1, round(self._params["max_age_frames"] / stride))
        for track in tracker.tracks:
            track._max_age = tracker.max_age
        tracker.max_iou_distance = 1.0 - (1.0 - self._params["max_iou_distance"]) / stride

    def ended_track_ids(self, include_tentative: bool = False) -> list[int]:
        """Ids of tracks deleted since the last call (in deletion order); clears the list.

        By default only tracks that had been confirmed (the only ones :meth:`update` returns by default);
        ``include_tentative`` adds short-lived tentative tracks (mostly false positives).
        """
        ended = [tid for tid, confirmed in self._pending_ended if confirmed or include_tentative]
        self._pending_ended = []
        return ended

    # -- persistence -----------------------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        """The complete tracker state as a ``tracker`` document (``models/state_codec.py``): Kalman states,
        track bookkeeping, id counter, appearance gallery.

        Only live tracks are stored (DeepSORT already dropped deleted tracks and their galleries); each
        gallery holds at most ``nn_budget`` samples, and identical embedding rows (DeepSORT re-adds a
        track's last feature every frame) are stored once, in float16 when that loses nothing.
        """
        tracker = self._deepsort.tracker
        pool: dict[bytes, int] = {}  # embedding bytes -> row in the pool

        def ref(feature: np.ndarray) -> int:
            return pool.setdefault(np.ascontiguousarray(feature, dtype=np.float32).tobytes(), len(pool))

        tracks = [
            {
                "id": int(t.track_id),
                # the dtype is kept exactly (a new track's mean is float32, float64 after one predict)
                "mean": np.asarray(t.mean),
                "cov": np.asarray(t.covariance),
                "hits": int(t.hits),
                "age": int(t.age),
                "tsu": int(t.time_since_update),
                "state": int(t.state),  # TrackState: 1 tentative, 2 confirmed
                "features": [ref(f) for f in t.features],
                # per-frame fields: reset by the next predict(), kept so a restored tracker is identical
                "ltwh": None if t.original_ltwh is None else np.asarray(t.original_ltwh),
                "det_class": None if t.det_class is None else int(t.det_class),
                "det_conf": None if t.det_conf is None else float(t.det_conf),
                "others": None if t.others is None else int(t.others),
                # the last detection's xyxy box (ours; absent from states written before it existed)
                "last_box": getattr(t, "last_box", None),
            }
            for t in tracker.tracks
        ]
        samples = [[int(tid), [ref(f) for f in feats]] for tid, feats in tracker.metric.samples.items()]
        return {
            "params": dict(self._params),
            "deepsort_version": _DEEPSORT_VERSION,
            "next_id": int(tracker._next_id),
            "frame_count": self._frame_count,
            "embed_dim": self._embed_dim,
            "pool": _pack_pool(list(pool), self._embed_dim or 0),
            "tracks": tracks,
            "samples": samples,
            "class_votes": [[tid, [[c, n] for c, n in votes.items()]] for tid, votes in self._class_votes.items()],
            "pending_ended": [[tid, confirmed] for tid, confirmed in self._pending_ended],
        }

    def to_bytes(self) -> bytes:
        """:meth:`to_state` as a standalone ``tracker`` blob (``models/state_codec.py``)."""
        return state_codec.encode(_STATE_KIND, self.to_state(), next_id=self.next_track_id)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> VehicleTracker:
        """Restore a tracker written by :meth:`to_bytes` (with the parameters it was written with).

        Raises:
            TrackerStateError: Corrupt/truncated blob or an unknown format version; the caller should
                log it and start a fresh tracker with a ``first_track_id`` above the ids already emitted
                (``models.state_codec.read_envelope(data).next_id`` survives a corrupt body).
        """
        try:
            _, state = state_codec.decode(data, _STATE_KIND)
        except state_codec.StateFormatError as exc:
            raise TrackerStateError(str(exc)) from None
        return cls.from_state(state)

    @classmethod
    def from_state(cls, state: dict[str, Any], params: dict[str, Any] | None = None) -> VehicleTracker:
        """Restore a :meth:`to_state` document.

        Args:
            params: Constructor parameters to run with from now on (e.g. :meth:`params_from_settings` of the
                current configuration); ``None`` keeps those the state was written with. Tracks, gallery and
                id counter are restored either way; new thresholds apply from the next :meth:`update`.

        Raises:
            TrackerStateError: The document is malformed.
        """
        try:
            return cls._from_state(state, params)
        except TrackerStateError:
            raise
        except Exception as exc:  # malformed document: surface as one error type
            raise TrackerStateError(f"tracker state unreadable: {exc!r}") from exc

    def state_size_bytes(self) -> int:
        """Size of :meth:`to_bytes` (what one camera costs in the state store)."""
        return len(self.to_bytes())

    # -- internals -------------------------------------------------------------------------------

    @classmethod
    def _from_state(cls, state: dict[str, Any], params: dict[str, Any] | None) -> VehicleTracker:
        if state["deepsort_version"] != _DEEPSORT_VERSION:
            logger.info(
                "tracker state written with deep-sort-realtime %s, running %s",
                state["deepsort_version"],
                _DEEPSORT_VERSION,
            )
        if params is not None and params != state["params"]:
            changed = {k: (state["params"].get(k), v) for k, v in params.items() if state["params"].get(k) != v}
            logger.info("tracker restored with changed parameters (old, new): %s", changed)
        self = cls(**(state["params"] if params is None else params))
        self._embed_dim = None if state["embed_dim"] is None else int(state["embed_dim"])
        self._frame_count = int(state["frame_count"])
        features: list[np.ndarray] = []
        if self._embed_dim:
            pool = np.asarray(state["pool"], dtype=np.float32)  # float16 pools widen exactly
            if pool.ndim != 2 or pool.shape[1] != self._embed_dim:
                raise TrackerStateError(f"gallery pool of shape {pool.shape}, embed_dim {self._embed_dim}")
            features = [row.copy() for row in pool]  # one writable array per row, as DeepSORT holds them

        tracker = self._deepsort.tracker
        tracker._next_id = int(state["next_id"])
        for t in state["tracks"]:
            track = tracker.track_class(
                _float_array(t["mean"]),
                _float_array(t["cov"]),
                str(int(t["id"])),  # deep-sort-realtime's own id format (no `today`)
                tracker.n_init,
                tracker.max_age,
                original_ltwh=None if t["ltwh"] is None else _float_array(t["ltwh"]),
                det_class=t["det_class"],
                det_conf=t["det_conf"],
                others=t["others"],
            )
            track.hits, track.age, track.time_since_update = int(t["hits"]), int(t["age"]), int(t["tsu"])
            last_box = t.get("last_box")
            track.last_box = None if last_box is None else [float(v) for v in last_box]
            track.state = int(t["state"])
            track.features = [features[i] for i in t["features"]]
            tracker.tracks.append(track)
        tracker.metric.samples = {str(int(tid)): [features[i] for i in refs] for tid, refs in state["samples"]}
        self._class_votes = {int(tid): {int(c): int(n) for c, n in votes} for tid, votes in state["class_votes"]}
        self._pending_ended = [(int(tid), bool(confirmed)) for tid, confirmed in state["pending_ended"]]
        return self

    def _validate(
        self, xyxy: np.ndarray, confidence: np.ndarray, class_id: np.ndarray, embeddings: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        boxes = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(confidence, dtype=np.float64).reshape(-1)
        classes = np.asarray(class_id).reshape(-1)
        n = len(boxes)
        if len(scores) != n or len(classes) != n:
            raise ValueError(f"{n} boxes but {len(scores)} confidences and {len(classes)} class ids")
        if n == 0:
            embeds = np.empty((0, self._embed_dim or 0), dtype=np.float32)
        else:
            # not copied here: update() hands DeepSORT embeds[keep], a fresh array, so a reused caller
            # buffer can never alter the gallery
            embeds = np.asarray(embeddings, dtype=np.float32)
            if embeds.ndim != 2 or len(embeds) != n:
                raise ValueError(f"embeddings must be ({n}, D), got {embeds.shape}")
            dim = embeds.shape[1]
            if self._embed_dim is None:
                self._embed_dim = dim
            elif dim != self._embed_dim:
                raise ValueError(f"embedding dim {dim}, tracker was started with {self._embed_dim}")
        return boxes, scores, classes, embeds

    def _majority_class(self, track_id: int) -> int:
        votes = self._class_votes.get(track_id)
        if not votes:
            return -1
        # max() keeps the first maximum: scan newest first so ties go to the most recent class
        return max(reversed(votes.items()), key=lambda kv: kv[1])[0]

    def _apply_gallery_cap(self) -> None:
        cap = self._params["gallery_cap"]
        samples = self._deepsort.tracker.metric.samples
        if cap is None:
            return
        sizes = {tid: len(feats) for tid, feats in samples.items()}
        excess = sum(sizes.values()) - cap
        while excess > 0:
            largest = max(sizes, key=sizes.__getitem__)
            if sizes[largest] <= 1:
                break
            sizes[largest] -= 1
            excess -= 1
        for tid, size in sizes.items():
            if size < len(samples[tid]):
                samples[tid] = samples[tid][-size:]


def buffered(xyxy: np.ndarray, share: float) -> np.ndarray:
    """``(N, 4)`` boxes widened by ``share`` of their width and height on every side."""
    xyxy = np.asarray(xyxy, dtype=np.float64).reshape(-1, 4)
    pad = (xyxy[:, 2:] - xyxy[:, :2]) * share
    return np.concatenate([xyxy[:, :2] - pad, xyxy[:, 2:] + pad], axis=1)


def _xyah_to_xyxy(xyah: np.ndarray) -> np.ndarray | None:
    """Kalman state (centre x, y, aspect w/h, height) -> (x1, y1, x2, y2); None when degenerate."""
    x, y, a, h = (float(v) for v in xyah)
    w = a * h
    if not (np.isfinite([x, y, w, h]).all() and w > 0 and h > 0):
        return None
    return np.array([x - w / 2, y - h / 2, x + w / 2, y + h / 2])


def _pack_pool(rows: list[bytes], dim: int) -> np.ndarray:
    """Gallery rows (float32 bytes) as one array; float16 when every value survives the round trip (stage 1
    ships float16 embeddings, so in the pipeline it always does): half the state, bit-identical restore."""
    pool = np.frombuffer(b"".join(rows), dtype=np.float32).reshape(len(rows), dim)
    half = pool.astype(np.float16)
    return half if np.array_equal(half.astype(np.float32), pool) else pool


def _float_array(a: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind != "f":
        raise TrackerStateError(f"expected a float array, got dtype {arr.dtype}")
    return arr


__all__ = ["TrackedVehicle", "TrackerStateError", "VehicleTracker"]
