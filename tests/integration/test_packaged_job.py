"""The PACKAGED job (``make package``: wheel / ``--py-files`` zip + entry file), not the source tree, submitted
with the real ``spark-submit`` to a Spark standalone master + worker started from the pyspark distribution on
127.0.0.1. The driver and executors run a Python that has the third-party dependencies but NOT this project:
``trafficstream`` can only come from the shipped zip."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from e2e_helpers import table

from trafficstream import tables
from trafficstream.infra.cluster import StandaloneCluster
from trafficstream.infra.jars import spark_jars_csv
from trafficstream.infra.package import bare_python, build
from trafficstream.infra.pipeline import write_settings
from trafficstream.ingest.worker import run_ingest

pytestmark = pytest.mark.integration
CAMERA = "dual-carriageway"
FRAMES = 24


def test_packaged_job_on_a_standalone_cluster(settings_factory, tmp_path_factory):
    work = tmp_path_factory.mktemp("packaged")
    dist = build(work / "dist")
    py = bare_python(work / "env")
    probe = subprocess.run(
        [str(py), "-c", "import pyspark, onnxruntime, av; import trafficstream"],
        cwd=work,
        capture_output=True,
        text=True,
    )
    assert "No module named 'trafficstream'" in probe.stderr, probe.stderr  # only the zip can provide it

    s = settings_factory(overrides=["spark.max_offsets_per_trigger=12", "spark.min_partitions=null"], name="packaged")
    assert run_ingest(s, [CAMERA], max_frames=FRAMES).total == FRAMES
    config = write_settings(s, work / "deploy.yaml")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(PYSPARK_PYTHON=str(py), PYSPARK_DRIVER_PYTHON=str(py), SPARK_LOCAL_IP="127.0.0.1")
    with StandaloneCluster(work / "cluster", workers=1, cores=2, memory="4g") as cluster:
        cmd = [
            str(Path(sys.executable).parent / "spark-submit"),
            "--master",
            cluster.master_url,
            "--py-files",
            str(dist["py_files"]),
            "--jars",
            spark_jars_csv(),
            "--conf",
            "spark.driver.host=127.0.0.1",
            "--conf",
            "spark.driver.bindAddress=127.0.0.1",
            "--conf",
            "spark.ui.enabled=false",
            "--conf",
            f"spark.pyspark.python={py}",
            "--conf",
            "spark.executor.memory=2g",
            "--conf",
            "spark.cores.max=2",
            str(dist["entry"]),
            "--config",
            str(config),
            "--available-now",
        ]
        done = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=900)
    (work / "job.log").write_text(done.stdout + done.stderr)
    assert done.returncode == 0, done.stderr[-4000:]
    frames = table(s, tables.FRAMES)
    assert frames.height == FRAMES and frames["frame_index"].n_unique() == FRAMES
    assert table(s, tables.DETECTIONS).height > 0
