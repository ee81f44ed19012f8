"""Every notebook in notebooks/ runs top to bottom in a real Jupyter kernel (nbclient + ipykernel) on Delta
tables written here with deltalake (tables_fixture.py): once on a 90-minute, two-camera run and once on empty
tables (a run without traffic), where the notebooks show "no data" instead of figures. Any cell error fails.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tables_fixture import write_tables

from trafficstream import tables
from trafficstream.config import DEFAULT_CONFIG

nbrun = pytest.importorskip("nbrun", reason="the notebook runner needs nbclient, nbformat and ipykernel")
pytest.importorskip("ipykernel")
nbformat = nbrun.nbformat
execute_notebook, figures, output_text = nbrun.execute_notebook, nbrun.figures, nbrun.output_text

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
ANALYST_NOTEBOOKS = ("01_traffic_flow.ipynb", "02_speeds.ipynb", "03_violations_review.ipynb")
# figures each analyst notebook shows on the fixture run (every one of its charts)
FIGURES = {"01_traffic_flow.ipynb": 4, "02_speeds.ipynb": 4, "03_violations_review.ipynb": 4}
# the table each one time-travels on
TIME_TRAVEL = {
    "01_traffic_flow.ipynb": tables.FLOW,
    "02_speeds.ipynb": tables.DETECTIONS,
    "03_violations_review.ipynb": tables.VIOLATIONS,
}

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def run_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    base = tmp_path_factory.mktemp("notebook-run")
    counts = write_tables(base / "delta", evidence_root=base / "evidence")
    return base / "delta", counts


@pytest.fixture(scope="module")
def empty_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("notebook-empty") / "delta"
    write_tables(root, empty=True)
    return root


def test_the_analyst_notebooks_exist_and_are_stored_without_outputs():
    names = {p.name for p in NOTEBOOKS}
    assert set(ANALYST_NOTEBOOKS) <= names
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        code = [c for c in nb.cells if c.cell_type == "code"]
        assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name}: clear the outputs"
    for name in ANALYST_NOTEBOOKS:
        nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
        first = next(c for c in nb.cells if c.cell_type == "code").source
        assert "TRAFFICSTREAM_DELTA_ROOT" in first and "var/demo/delta" in first, name
        spark = [c.source for c in nb.cells if c.cell_type == "markdown" and 'spark.read.format("delta")' in c.source]
        assert spark, f"{name}: shows the Spark way to read the table (not executed)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_a_pipeline_run(path: Path, run_root: tuple[Path, dict[str, int]]):
    root, counts = run_root
    nb = execute_notebook(path, root)
    text = output_text(nb)
    if path.name not in FIGURES:
        return
    assert len(figures(nb)) == FIGURES[path.name]
    assert "No data" not in text
    table = TIME_TRAVEL[path.name]
    travel = re.search(rf"{table}: version (\d+) had (\d+) rows; version (\d+) \(current\) has (\d+)", text)
    assert travel is not None, text[-2000:]
    assert int(travel[1]) == 0 and int(travel[3]) == 1
    assert 0 < int(travel[2]) < int(travel[4]) == counts[table]
    if path.name == "03_violations_review.ipynb":
        assert text.count("data:image/jpeg;base64,") == 20  # MAX_EVIDENCE newest, all with their JPEG
        assert f"{counts[tables.VIOLATIONS]} violations, 2 without a readable evidence image" in text


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_on_empty_tables(path: Path, empty_root: Path):
    nb = execute_notebook(path, empty_root)
    if path.name in FIGURES:
        text = output_text(nb)
        assert figures(nb) == []
        assert "No data" in text
        assert f"{TIME_TRAVEL[path.name]}: version 0 had 0 rows; version 1 (current) has 0" in text


def test_speed_limits_from_the_deployment_config(run_root: tuple[Path, dict[str, int]]):
    nb = execute_notebook(
        NOTEBOOKS_DIR / "02_speeds.ipynb", run_root[0], env={"TRAFFICSTREAM_CONFIG": str(DEFAULT_CONFIG)}
    )
    shown = [
        out.data["text/plain"]
        for cell in nb.cells
        if cell.cell_type == "code"
        for out in cell.outputs
        if out.output_type == "execute_result" and "limit_source" in out.data.get("text/plain", "")
    ]
    assert len(shown) == 1
    assert shown[0].count("┆ config") == 2 and "┆ violations" not in shown[0]  # both cameras' limits from the YAML
