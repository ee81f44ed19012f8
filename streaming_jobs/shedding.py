"""Load shedding of stage 1: which frames of a camera the detector sees, so results stay within the budget.

Each live camera has a capture -> result latency budget (``live.latency_budget_s``, per camera
``latency_budget_s``). Stage 1 decides per frame, just before it works on it:

* ``detected``: decode, detect, embed, as always;
* ``predicted``: no detector pass; stage 2 predicts the camera's tracks onto this frame (Kalman), so every
  frame still gets boxes, ids and a results message. The detection stride ``k`` (detect every k-th frame)
  starts at the camera's ``detect_every``;
* ``skipped``: the frame is already older than the budget and part of a backlog: it waited in Kafka for more
  than half the budget before the micro-batch that took it started (the batch's start time is the same for
  every task of the batch, so a backlog split into several tasks is recognised in each), or it is more than
  half the budget older than the camera's newest frame waiting in the same task (a live segment's frames
  are published together when it closes). Working on it would only make the fresher frames late too. Stage
  2 records it (frames table, ``skip_reason`` ``stale``) and leaves the tracks alone. (Measured against the
  queue and fresher frames, not the clock alone: when the platform's own delay exceeds the budget, a rule on
  age alone would skip every frame and leave the tracker blind.)

Detected frames are the camera's frame numbers divisible by the stride, whichever task and worker sees them:
a micro-batch split into tasks does not add a detection at each task's first frame, and a retried task
decides the same.

When frames reach stage 1 later than half the budget, the stride goes up by one (at most once a second, up to
``live.max_detect_every``); when they arrive within a quarter of the budget it comes back down to the
camera's own stride, so full rate returns when the load drops. With ``live.shed_load`` off, the stride stays
at ``detect_every`` and nothing is skipped (the behaviour to compare against in ``make bench``).

One :class:`LoadShedder` per camera per Python worker (kept in the worker's runtime across micro-batches).
"""

from __future__ import annotations

from dataclasses import dataclass

DETECTED = "detected"
PREDICTED = "predicted"
SKIPPED = "skipped"
SKIP_STALE = "stale"

RAISE_AT = 0.5  # of the budget: frames this late push the stride up
LOWER_AT = 0.25  # of the budget: frames this fresh let it come down
SKIP_SPREAD = 0.5  # of the budget: a stale frame queued this long, or this much older than a waiting one, is skipped
ADJUST_EVERY_S = 1.0  # one stride step per second at most: the lateness of a batch needs time to show


@dataclass(frozen=True, slots=True)
class Decision:
    analysis: str  # DETECTED | PREDICTED | SKIPPED
    stride: int
    skip_reason: str | None = None


class LoadShedder:
    """Per-camera decisions of one Python worker (pure: the clock is passed in)."""

    def __init__(self, base_stride: int, max_stride: int, budget_s: float, enabled: bool = True) -> None:
        if base_stride < 1 or budget_s <= 0:
            raise ValueError("base_stride must be >= 1 and budget_s > 0")
        self.base_stride = base_stride
        self.max_stride = max(base_stride, max_stride)
        self.budget_s = budget_s
        self.enabled = enabled
        self.stride = base_stride
        self._last_adjust = float("-inf")

    def decide(
        self, frame_index: int, capture_ts: float, now: float, newest_capture_ts: float, queued_s: float = 0.0
    ) -> Decision:
        """What to do with frame ``frame_index`` captured at ``capture_ts``; ``newest_capture_ts``: capture time of
        the camera's newest frame in the task's input; ``queued_s``: how long the reference waited in Kafka
        before its micro-batch started."""
        if self.enabled:
            age = now - capture_ts
            spread = SKIP_SPREAD * self.budget_s
            if age > self.budget_s and max(queued_s, newest_capture_ts - capture_ts) > spread:
                return Decision(SKIPPED, self.stride, SKIP_STALE)
            self._adjust(age, now)
        return Decision(DETECTED if frame_index % self.stride == 0 else PREDICTED, self.stride)

    def _adjust(self, age: float, now: float) -> None:
        if now - self._last_adjust < ADJUST_EVERY_S:
            return
        if age > RAISE_AT * self.budget_s and self.stride < self.max_stride:
            self.stride += 1
            self._last_adjust = now
        elif age < LOWER_AT * self.budget_s and self.stride > self.base_stride:
            self.stride -= 1
            self._last_adjust = now
