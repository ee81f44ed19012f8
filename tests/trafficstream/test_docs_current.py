"""docs/ is generated from the declarations (``python -m trafficstream.docs``) and must be current."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from trafficstream import docs, results, tables


def test_checked_in_docs_are_current(capsys: pytest.CaptureFixture[str]) -> None:
    code = docs.main(["--check"])
    assert code == 0, capsys.readouterr().err  # "stale generated docs: ...; run `python -m trafficstream.docs`"


def test_check_reports_missing_and_stale_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert docs.main(["--check", "--root", str(tmp_path)]) == 1
    assert "stale generated docs: docs/tables.md" in capsys.readouterr().err
    assert docs.main(["--root", str(tmp_path)]) == 0
    assert docs.main(["--check", "--root", str(tmp_path)]) == 0
    target = tmp_path / "docs" / "tables.md"
    target.write_text(target.read_text().replace("vehicles first counted", "vehicles counted"))
    assert docs.stale(tmp_path) == ["docs/tables.md"]
    assert docs.main(["--check", "--root", str(tmp_path)]) == 1
    assert "run `python -m trafficstream.docs`" in capsys.readouterr().err


def test_rendered_docs_cover_every_declaration() -> None:
    text = docs.render_tables()
    for t in tables.DECLARATIONS.values():
        assert f"## {t.name}" in text
        assert all(f"| `{c.name}` |" in text for c in t.columns)
    schema = json.loads(docs.render_results_schema())
    assert set(schema["$defs"]) == {m.name for m in results.MESSAGE_TYPES} >= {"frame", "crossing", "event"}
    assert "```json" in docs.render_results_md()
