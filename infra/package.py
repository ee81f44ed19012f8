"""``make package``: what ``spark-submit`` needs to run the job on a cluster, built from this checkout.

    dist/trafficstream-<version>-py3-none-any.whl   pip-installable (executor images, driver host)
    dist/trafficstream-<version>.zip                the same files for ``--py-files`` (Python imports from zips)
    dist/vehicle_pipeline.py                        the entry file ``spark-submit`` runs

Why several: ``--py-files`` ships only *our* pure-Python code to every executor (the zip); the third-party
dependencies (numpy, onnxruntime, av, opencv, deep-sort-realtime, ...) have native code and must already be on
the executors: in the executor image, or as a packed virtualenv/conda env shipped with ``--archives``
(``venv-pack``/``conda-pack``; see infra/README.md). Models are not baked in: ``detector.model_path`` and
``tracker.embedder_path`` point at shared storage the executors read.

    python -m trafficstream.infra.package [--dist dist]
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from trafficstream.config import PROJECT_ROOT

log = logging.getLogger(__name__)
JOB_FILE = PROJECT_ROOT / "streaming_jobs" / "vehicle_pipeline.py"


def build(dist: Path) -> dict[str, Path]:
    """Build the wheel, the ``--py-files`` zip and the entry file into ``dist``; returns their paths."""
    dist.mkdir(parents=True, exist_ok=True)
    for old in dist.glob("trafficstream-*"):
        old.unlink()
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(dist), str(PROJECT_ROOT)], check=True
    )
    wheel = next(dist.glob("trafficstream-*.whl"))
    version = wheel.name.split("-")[1]
    zip_path = dist / f"trafficstream-{version}.zip"
    shutil.copyfile(wheel, zip_path)  # a wheel is a zip with the packages at its root: importable as is
    entry = dist / "vehicle_pipeline.py"
    shutil.copyfile(JOB_FILE, entry)
    log.info("built %s, %s, %s", wheel.name, zip_path.name, entry.name)
    return {"wheel": wheel, "py_files": zip_path, "entry": entry}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trafficstream.infra.package", description=__doc__.splitlines()[0])
    parser.add_argument("--dist", type=Path, default=PROJECT_ROOT / "dist")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for kind, path in build(args.dist).items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())


def bare_python(root: Path) -> Path:
    """A virtualenv whose Python sees this venv's site-packages (the dependencies) but not this project: the
    shipped zip is then the only ``trafficstream`` the driver and executors can import (the packaged-job test,
    the scaling bench). A plain path line: the editable install's own .pth finder is not run."""
    py = root / "bin" / "python"
    if not py.exists():
        base = getattr(sys, "_base_executable", sys.executable)
        subprocess.run([base, "-m", "venv", "--without-pip", str(root)], check=True)
    purelib = subprocess.run(
        [str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()
    (Path(purelib) / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    return py
