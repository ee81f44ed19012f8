"""FAIR scheduler pools: micro-batches before background Delta commits."""

from __future__ import annotations

import threading
import xml.etree.ElementTree as ET

from trafficstream.streaming_jobs.scheduling import (
    DELTA_POOL,
    POOL_PROPERTY,
    STREAM_POOL,
    WEIGHTS,
    allocation_xml,
    fair_scheduler_conf,
    use_pool,
)


def test_allocation_file_declares_each_pool_with_its_weight(tmp_path):
    conf = fair_scheduler_conf(tmp_path)
    assert conf["spark.scheduler.mode"] == "FAIR"
    root = ET.parse(tmp_path / "fairscheduler.xml").getroot()
    pools = {p.get("name"): p for p in root.iter("pool")}
    assert set(pools) == {STREAM_POOL, DELTA_POOL}
    assert int(pools[STREAM_POOL].findtext("weight")) > int(pools[DELTA_POOL].findtext("weight")) * 100
    assert all(p.findtext("schedulingMode") == "FAIR" and p.findtext("minShare") == "0" for p in pools.values())
    assert allocation_xml({"a": 3}).count("<pool ") == 1


def test_the_session_runs_fair_with_the_pools_and_jobs_run_in_the_thread_pool(spark):
    sc = spark.sparkContext
    assert sc.getConf().get("spark.scheduler.mode") == "FAIR"
    for name, weight in WEIGHTS.items():
        pool = sc._jsc.sc().getPoolForName(name)
        assert pool.isDefined() and pool.get().weight() == weight

    seen: dict[str, object] = {}

    def committer() -> None:  # like DeltaCommitter.run: its own thread, its own pool
        use_pool(sc, DELTA_POOL)
        seen["pool"] = sc.getLocalProperty(POOL_PROPERTY)
        seen["rows"] = spark.range(10).count()
        use_pool(sc, None)

    thread = threading.Thread(target=committer)
    thread.start()
    thread.join()
    assert seen == {"pool": DELTA_POOL, "rows": 10}
    assert sc.getLocalProperty(POOL_PROPERTY) in (None, STREAM_POOL)  # another thread's pool did not leak here
