"""Load shedding of stage 1: which frames of a camera the detector sees, so results stay within the budget.

Each live camera has a capture -> result latency budget (``live.latency_budget_s``, per camera
``latency_budget_s``). Stage 1 decides per frame, just before it works on it:

* ``detected``: decode, detect, embed, as always;
* ``predicted``: no detector pass; stage 2 predicts the camera's tracks onto this frame (Kalman), so every
  frame still gets boxes, ids and a results message. The detection stride ``k`` (detect every k-th frame)
  starts at the camera's ``detect_every``;
* ``skipped``: the frame is too old to make the budget (older than the budget, or what the driver says: below)
  and part of a backlog: it waited in Kafka for more than half the budget (less for an overloaded camera:
  below) before the micro-batch that took it started (the batch's start time is the same for every task of the
  batch, so a backlog split into several tasks is recognised in each), or it is as much older than the camera's
  newest frame waiting in the same task (a live segment's frames are published together when it closes).
  Working on it would only make the fresher frames late too. Stage 2 records it (frames table, ``skip_reason``
  ``stale``) and leaves the tracks alone. (Measured against the queue and fresher frames, not the clock alone:
  when the platform's own delay exceeds the budget, a rule on age alone would skip every frame and leave the
  tracker blind.)

Detected frames are the camera's frame numbers divisible by the stride, whichever task and worker sees them:
a micro-batch split into tasks does not add a detection at each task's first frame, and a retried task
decides the same.

**One stride per camera, set by the driver.** The stride is a camera's, not a worker's: a micro-batch's
frames are split into several tasks run by different Python workers, and a controller in each worker saw
only its slice (the task with the older half of a batch saw late frames, the one with the newer half fresh
ones), so their strides drifted apart (2-3 in one worker, 12-14 in the other, within the same two seconds). The
driver's :class:`StrideController` per camera sees every frame of the batch once stage 2 has produced its
results: the batch's *end-to-end* lateness (:func:`batch_lateness`, its oldest frame's capture -> now). Over
``RAISE_AT`` of the budget the stride goes up by one (by two over the whole budget), under ``LOWER_AT`` it comes
back down towards the camera's own stride, at most once per ``ADJUST_EVERY_S``. The driver hands the strides to
the next micro-batch's tasks as a Spark local property (:data:`STEERING_PROPERTY`, set on the query's thread,
read through ``TaskContext``), so every task of a batch uses the same stride. With it goes the age past which
a frame that is part of a backlog is skipped: the budget less the time a micro-batch takes (a moving average),
so that a frame is skipped when it could no longer make its budget, not only once it has missed it. While the
stride can still go up it is never under half the budget (fewer detections come first). Once the stride is at its
cap, skipping is what holds the budget: the skip age may fall to ``SKIP_FLOOR`` of the budget, and a frame that
waited in Kafka that long counts as a backlog. Shorter waits make shorter micro-batches, which make the skip age
longer again: the two settle where a batch fits the budget. A camera starts at the highest
stride (set before the query starts, the query's thread inherits it) and comes down while its results are
fresh: a job starting at full rate fell behind by seconds in its first micro-batches before its stride caught
up. Outside a streaming query (no
property), and for a camera the driver has not seen yet, a :class:`LoadShedder` adjusts its own stride from the
age of the frames when stage 1 reaches them (up over half the budget, down under a quarter).
With ``live.shed_load`` off, the stride stays at ``detect_every`` and nothing is skipped (the behaviour to
compare against in ``make bench``).

One :class:`LoadShedder` per camera per Python worker (kept in the worker's runtime across micro-batches).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from trafficstream.streaming_jobs.schemas import KIND_FRAME

DETECTED = "detected"
PREDICTED = "predicted"
SKIPPED = "skipped"
SKIP_STALE = "stale"

# The driver's controller, on a batch's end-to-end lateness (its oldest frame, capture -> results produced).
# A frame waits for the batch after the one running when it arrives, then for that batch: the oldest frame's
# lateness is about two batch durations and most frames' less, so holding it between these keeps the 95th
# percentile within the budget.
RAISE_AT = 0.8  # of the budget: a batch this late pushes the stride up (by two past the whole budget)
LOWER_AT = 0.5  # of the budget: a batch this fresh lets it come down
# Outside a streaming query, a worker's own controller on the age of the frames when stage 1 reaches them
# (about one batch duration less than the end-to-end lateness).
LOCAL_RAISE_AT = 0.5
LOCAL_LOWER_AT = 0.25
SKIP_SPREAD = 0.5  # of the budget: a stale frame queued this long, or this much older than a waiting one, is skipped
# Once a camera's stride is at its cap, the driver may lower both (skip age and backlog) down to this share of
# the budget: a micro-batch that takes longer than half the budget leaves a frame queued for half of it no
# chance, and working on it only makes the next batch longer too (measured: four cameras settled at 3.8 s p95
# with the half-budget floor).
SKIP_FLOOR = 0.25
ADJUST_EVERY_S = 1.0  # one stride step per second at most: the lateness of a batch needs time to show
BATCH_EWMA = 0.3  # weight of the newest micro-batch's duration in the expected one


def bounded_skip_age(budget_s: float, age_s: float, floor: float = SKIP_FLOOR) -> float:
    """A skip age kept within [``floor`` of the budget, the budget]: never skip what only the platform's own
    delay made late, always what has missed the budget."""
    return min(budget_s, max(floor * budget_s, age_s))


@dataclass(frozen=True, slots=True)
class Decision:
    analysis: str  # DETECTED | PREDICTED | SKIPPED
    stride: int
    skip_reason: str | None = None


class StrideController:
    """A camera's detection stride from how late its frames are (pure: the clock is passed in)."""

    def __init__(
        self,
        base_stride: int,
        max_stride: int,
        budget_s: float,
        raise_at: float = RAISE_AT,
        lower_at: float = LOWER_AT,
        start_high: bool = False,
    ) -> None:
        if base_stride < 1 or budget_s <= 0:
            raise ValueError("base_stride must be >= 1 and budget_s > 0")
        self.base_stride = base_stride
        self.max_stride = max(base_stride, max_stride)
        self.budget_s = budget_s
        self.raise_at, self.lower_at = raise_at, lower_at
        self.stride = self.max_stride if start_high else base_stride
        self.batch_s: float | None = None  # how long a micro-batch takes (moving average)
        self._last_adjust = float("-inf")

    @property
    def skip_after_s(self) -> float:
        """Age past which stage 1 skips a frame that is part of a backlog: one that old would reach the results
        after the budget (a micro-batch still has to run). Never less than half the budget while the stride can
        still go up (fewer detections come first), nor than ``SKIP_FLOOR`` of it once it is at its cap."""
        if self.batch_s is None:
            return self.budget_s
        floor = SKIP_FLOOR if self.stride >= self.max_stride else SKIP_SPREAD
        return bounded_skip_age(self.budget_s, self.budget_s - self.batch_s, floor)

    def observe(self, lateness_s: float, now: float, batch_s: float | None = None) -> int:
        """The stride after seeing frames ``lateness_s`` late at ``now``, from a micro-batch that took
        ``batch_s`` (stage 1 and 2)."""
        if batch_s is not None and math.isfinite(batch_s) and batch_s >= 0:
            self.batch_s = batch_s if self.batch_s is None else BATCH_EWMA * batch_s + (1 - BATCH_EWMA) * self.batch_s
        if not math.isfinite(lateness_s) or now - self._last_adjust < ADJUST_EVERY_S:
            return self.stride
        if lateness_s > self.raise_at * self.budget_s and self.stride < self.max_stride:
            step = 2 if lateness_s > self.budget_s else 1
            self.stride = min(self.max_stride, self.stride + step)
            self._last_adjust = now
        elif lateness_s < self.lower_at * self.budget_s and self.stride > self.base_stride:
            self.stride -= 1
            self._last_adjust = now
        return self.stride


class LoadShedder:
    """Per-camera decisions of one Python worker (pure: the clock is passed in)."""

    def __init__(self, base_stride: int, max_stride: int, budget_s: float, enabled: bool = True) -> None:
        self.own = StrideController(base_stride, max_stride, budget_s, LOCAL_RAISE_AT, LOCAL_LOWER_AT)
        self.enabled = enabled

    @property
    def stride(self) -> int:
        return self.own.stride

    def decide(
        self,
        frame_index: int,
        capture_ts: float,
        now: float,
        newest_capture_ts: float,
        queued_s: float = 0.0,
        steer: Steer | None = None,
    ) -> Decision:
        """What to do with frame ``frame_index`` captured at ``capture_ts``; ``newest_capture_ts``: capture time of
        the camera's newest frame in the task's input; ``queued_s``: how long the reference waited in Kafka
        before its micro-batch started; ``steer``: the driver's stride and skip age for the camera (None: adjust
        our own stride, skip past the budget)."""
        own = self.own
        if not self.enabled:
            return Decision(DETECTED if frame_index % own.base_stride == 0 else PREDICTED, own.base_stride)
        age = now - capture_ts
        if steer is None:
            k, skip_after = own.stride, own.budget_s
        else:
            k = min(max(steer.stride, own.base_stride), own.max_stride)
            skip_after = bounded_skip_age(own.budget_s, steer.skip_after_s)
        # A backlog: queued, or behind fresher frames, for half the budget (less when the driver's skip age is less:
        # an overloaded camera's batches leave no time for a frame that waited that long).
        backlog_s = min(SKIP_SPREAD * own.budget_s, skip_after)
        if age > skip_after and max(queued_s, newest_capture_ts - capture_ts) > backlog_s:
            return Decision(SKIPPED, k, SKIP_STALE)
        if steer is None:
            k = own.observe(age, now)
        return Decision(DETECTED if frame_index % k == 0 else PREDICTED, k)


def batch_lateness(rows: Iterable[Mapping[str, Any]], now: float) -> dict[str, float]:
    """Per camera, how late the micro-batch's results are: ``now`` less the capture time of its oldest frame
    with a result (stage 1 analysed or predicted it; all of them when every frame was skipped)."""
    oldest: dict[str, float] = {}
    oldest_any: dict[str, float] = {}
    for r in rows:
        cam, cap = r.get("camera_id"), r.get("capture_ts")
        if r.get("kind") != KIND_FRAME or not cam or not isinstance(cap, int | float) or not math.isfinite(cap):
            continue
        oldest_any[cam] = min(oldest_any.get(cam, cap), cap)
        if r.get("analysis") != SKIPPED:
            oldest[cam] = min(oldest.get(cam, cap), cap)
    return {cam: now - oldest.get(cam, cap) for cam, cap in oldest_any.items()}


@dataclass(frozen=True, slots=True)
class Steer:
    """The driver's load shedding for one camera, for the next micro-batch."""

    stride: int  # detect every stride-th frame
    skip_after_s: float  # a frame this old that is part of a backlog is skipped (StrideController.skip_after_s)


STEERING_PROPERTY = "trafficstream.shedding"  # Spark local property: {camera id: [stride, skip_after_s]} as JSON


def encode_steering(steering: Mapping[str, Steer]) -> str:
    doc = {str(k): [int(v.stride), round(float(v.skip_after_s), 3)] for k, v in sorted(steering.items())}
    return json.dumps(doc, separators=(",", ":"))


def decode_steering(text: str | None) -> dict[str, Steer]:
    """The driver's steering; {} for none, a camera left out when its entry is malformed (stage 1 then steers
    itself)."""
    if not text:
        return {}
    try:
        doc = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(doc, dict):
        return {}
    out: dict[str, Steer] = {}
    for cam, v in doc.items():
        if not (isinstance(v, list) and len(v) == 2):
            continue
        stride, skip_after = v
        if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
            continue
        if isinstance(skip_after, bool) or not isinstance(skip_after, int | float) or not math.isfinite(skip_after):
            continue
        out[cam] = Steer(stride, float(skip_after))
    return out
