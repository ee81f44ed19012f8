"""Spark's FAIR scheduler pools: a live micro-batch never queues behind a background Delta commit.

On a small cluster the background committer's jobs (MERGE scans, snapshot rebuilds, evidence rendering) can
hold every task slot while frames wait: measured on the 2-core box, commits took ~3x the task time of the
micro-batches in the first minutes of a live run. With ``spark.scheduler_pools`` on (default) the session runs
the FAIR scheduler; the query runs in pool ``stream`` (weight 1000), the committer in Spark's default pool
(weight 1). ``DELTA_POOL`` is declared for a committer that sets its pool explicitly; today it does not. With
min shares of 0, Spark's FAIR comparator gives a free slot to the pool with the lowest running-tasks/weight
ratio, so a pool with nothing running still gets the next slot: the weights bound the commit's share only while
both pools have tasks running. Running tasks are never pre-empted.

The pool is a driver-side setting per thread (``spark.scheduler.pool`` local property): the query thread sets
it before the query starts (the stream's threads inherit it).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from pyspark import SparkContext

STREAM_POOL = "stream"
DELTA_POOL = "delta"
POOL_PROPERTY = "spark.scheduler.pool"
WEIGHTS = {STREAM_POOL: 1000, DELTA_POOL: 1}


def allocation_xml(weights: dict[str, int] = WEIGHTS) -> str:
    """The FAIR scheduler's allocation file: one FAIR pool per name (min share 0: weights alone decide)."""
    pools = "".join(
        f'  <pool name="{name}"><schedulingMode>FAIR</schedulingMode><weight>{weight}</weight>'
        "<minShare>0</minShare></pool>\n"
        for name, weight in weights.items()
    )
    return f'<?xml version="1.0"?>\n<allocations>\n{pools}</allocations>\n'


def fair_scheduler_conf(directory: Path | None = None) -> dict[str, str]:
    """Spark conf for the FAIR scheduler with this module's pools (written to a file the driver reads once)."""
    folder = Path(directory or tempfile.mkdtemp(prefix="trafficstream-pools-"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "fairscheduler.xml"
    path.write_text(allocation_xml())
    return {"spark.scheduler.mode": "FAIR", "spark.scheduler.allocation.file": path.resolve().as_uri()}


def use_pool(sc: SparkContext, pool: str | None) -> None:
    """Jobs submitted from the calling thread from now on run in ``pool`` (None: the default pool)."""
    sc.setLocalProperty(POOL_PROPERTY, pool)  # type: ignore[arg-type]  # None unsets it
