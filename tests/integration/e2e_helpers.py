"""Helpers for end-to-end tests: run the real job code on the shared SparkSession and read results back."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from trafficstream.config import Settings
from trafficstream.streaming_jobs.vehicle_pipeline import QUERY_NAME, start_query


def run_available_now(spark, settings: Settings) -> dict:
    """Process everything in the frames topic with the job's own query, then stop (Trigger.AvailableNow)."""
    query, writer = start_query(spark, settings, available_now=True)
    try:
        query.awaitTermination()
    finally:
        writer.close()
    if query.exception() is not None:
        raise AssertionError(f"query failed: {query.exception()}")
    return writer.last


def checkpoint_dir(settings: Settings) -> Path:
    return settings.checkpoint_root / QUERY_NAME


def forget_last_commit(settings: Settings) -> int:
    """Simulate a crash after the sinks ran but before Spark committed the batch: Spark will replay it."""
    commits = sorted((checkpoint_dir(settings) / "commits").glob("[0-9]*"), key=lambda p: int(p.name))
    last = commits[-1]
    last.unlink()
    crc = last.with_name(f".{last.name}.crc")
    crc.unlink(missing_ok=True)
    return int(last.name)


def table(settings: Settings, name: str) -> pl.DataFrame:
    return pl.read_delta(str(settings.delta_root / name))


def run_notebook(path: Path, env: dict[str, str]) -> dict:
    """Execute a notebook's code cells in order in one namespace (what "Run all" does); returns it."""
    import json
    import os

    namespace: dict = {"__name__": "__notebook__"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] == "code":
                exec(compile("".join(cell["source"]), f"{path.name}:{cell['id']}", "exec"), namespace)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return namespace
