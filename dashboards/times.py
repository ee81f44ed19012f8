"""Plausibility of the numbers in results messages, before they reach buffers, figures and the video.

The results topic is input like any other: one message with ``capture_ts = 1e300`` (or a negative one, or
a 400-digit integer) would otherwise make ``datetime.fromtimestamp`` raise on every dashboard tick. Wall-clock
times must fall in 2000..2100 (the range frame references are validated against) and not lie far in the
future: a frame "from 2099" would stay the newest frame of its camera and freeze the live view.
"""

from __future__ import annotations

import math
import numbers
import time
from datetime import datetime
from typing import Any

from trafficstream.messages import MAX_PTS_S, MAX_WALL_TS, MIN_WALL_TS

MAX_FUTURE_S = 3600.0  # clock skew between the pipeline's hosts and the dashboard's that is still believed
MAX_FRAME_INDEX = 2**40  # ~1160 years at 30 frames/s; beyond it an index is garbage, not video
PTS_RANGE = (0.0, float(MAX_PTS_S))
MAX_KMH = 1000.0  # beyond this a speed is garbage: left out of KPIs and histograms (a 1e300 bin range hangs Plotly)
NO_TIME = "--:--:--"


def finite(value: Any, lo: float = -math.inf, hi: float = math.inf) -> float | None:
    """``value`` as a float when it is a real number (not bool) in [lo, hi]; None otherwise (never raises)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):  # numpy scalars are Real too
        return None
    try:
        x = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return x if math.isfinite(x) and lo <= x <= hi else None


def integer(value: Any, lo: int | None = None, hi: int | None = None) -> int | None:
    """``value`` when it is an int (not bool) in [lo, hi]; None otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        return None
    value = int(value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        return None
    return value


def wall_ts(value: Any, now: float | None = None, max_future_s: float | None = MAX_FUTURE_S) -> float | None:
    """Unix seconds when ``value`` is a plausible wall-clock time, else None.

    Plausible: a finite number in 2000..2100 and, unless ``max_future_s`` is None, at most that far ahead
    of ``now`` (default: the current time).
    """
    ts = finite(value, MIN_WALL_TS, MAX_WALL_TS)
    if ts is None or max_future_s is None:
        return ts
    now = time.time() if now is None else now
    return ts if ts <= now + max_future_s else None


def local_datetime(value: Any) -> datetime | None:
    """Naive local datetime of plausible Unix seconds (any future allowed), else None."""
    ts = wall_ts(value, max_future_s=None)
    if ts is None:
        return None
    try:
        return datetime.fromtimestamp(ts)
    except (OverflowError, OSError, ValueError):  # platform limits of localtime()
        return None


def clock(value: Any, fmt: str = "%H:%M:%S") -> str:
    """Local time of day of Unix seconds for display; ``--:--:--`` for anything implausible."""
    when = local_datetime(value)
    return NO_TIME if when is None else when.strftime(fmt)
