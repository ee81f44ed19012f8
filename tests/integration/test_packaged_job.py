"""The PACKAGED job (``make package``: wheel / ``--py-files`` zip + entry file), not the source tree, submitted
with the real ``spark-submit`` to a Spark standalone master + worker started from the pyspark distribution on
127.0.0.1. The driver and executors run a Python that has the third-party dependencies but NOT this project:
``trafficstream`` can only come from the shipped zip."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from e2e_helpers import table

from trafficstream import tables
from trafficstream.infra.cluster import StandaloneCluster
from trafficstream.infra.jars import spark_jars_csv
from trafficstream.infra.package import build
from trafficstream.infra.pipeline import write_settings
from trafficstream.ingest.worker import run_ingest

pytestmark = pytest.mark.integration
CAMERA = "dual-carriageway"
FRAMES = 24


def _bare_python(root: Path) -> Path:
    """A virtualenv that sees the project's dependencies (our venv's site-packages) but not the project."""
    subprocess.run(
        [getattr(sys, "_base_executable", sys.executable), "-m", "venv", "--without-pip", str(root)], check=True
    )
    py = root / "bin" / "python"
    site = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    # A plain path line: our site-packages' own .pth files (the editable install's finder) are NOT run.
    (Path(site) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return py


def test_packaged_job_on_a_standalone_cluster(settings_factory, tmp_path_factory):
    work = tmp_path_factory.mktemp("packaged")
    dist = build(work / "dist")
    py = _bare_python(work / "env")
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
