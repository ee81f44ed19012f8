"""The Ultralytics export CLI: argument parsing, the error without ultralytics, and what it hands to
``YOLO.export`` (through a stand-in module: no real export)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import pytest

from trafficstream.models.export import MISSING_ULTRALYTICS, export, main, parse_args


@pytest.fixture
def weights(tmp_path: Path) -> Path:
    path = tmp_path / "yolov8n.pt"
    path.write_bytes(b"not a real checkpoint")
    return path


def test_defaults() -> None:
    args = parse_args(["--weights", "yolov8n.pt"])
    assert args.weights == Path("yolov8n.pt")
    assert (args.fmt, args.half, args.batch, args.imgsz, args.device) == ("onnx", False, 1, (384, 640), None)


def test_engine_options() -> None:
    args = parse_args(["--weights", "w.pt", "--format", "engine", "--half", "--batch", "64", "--imgsz", "384", "640"])
    assert (args.fmt, args.half, args.batch, args.imgsz) == ("engine", True, 64, (384, 640))


def test_one_imgsz_is_square() -> None:
    assert parse_args(["--weights", "w.pt", "--imgsz", "640"]).imgsz == (640, 640)


@pytest.mark.parametrize(
    "argv",
    [
        [],  # --weights is required
        ["--weights", "w.pt", "--format", "tflite"],
        ["--weights", "w.pt", "--imgsz", "384", "640", "3"],
        ["--weights", "w.pt", "--imgsz", "16"],
        ["--weights", "w.pt", "--batch", "0"],
    ],
)
def test_bad_arguments(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        parse_args(argv)
    assert exc.value.code == 2


def test_missing_ultralytics(monkeypatch: pytest.MonkeyPatch, weights: Path) -> None:
    monkeypatch.setitem(sys.modules, "ultralytics", None)  # makes `import ultralytics` fail
    with pytest.raises(ImportError, match=r"pip install '\.\[gpu\]'"):
        export(weights, "onnx")


def test_main_reports_missing_ultralytics(
    monkeypatch: pytest.MonkeyPatch, weights: Path, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.setitem(sys.modules, "ultralytics", None)
    assert main(["--weights", str(weights), "--format", "engine", "--half"]) == 1
    out, err = capsys.readouterr()  # main's logging set-up writes to the (captured) stderr
    assert out == ""
    assert f"ERROR trafficstream.models.export: {MISSING_ULTRALYTICS}" in err


def test_missing_weights(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="weights not found"):
        export(tmp_path / "absent.pt")


def test_export_arguments(monkeypatch: pytest.MonkeyPatch, weights: Path, capsys: pytest.CaptureFixture) -> None:
    calls: list[tuple[str, dict]] = []

    class FakeYOLO:
        def __init__(self, path: str) -> None:
            self.path = path

        def export(self, **kwargs: object) -> str:
            calls.append((self.path, kwargs))
            return str(Path(self.path).with_suffix(".engine"))

    monkeypatch.setitem(sys.modules, "ultralytics", types.SimpleNamespace(YOLO=FakeYOLO))
    argv = ["--weights", str(weights), "--format", "engine", "--half", "--batch", "64", "--device", "0"]
    assert main(argv) == 0
    assert calls == [
        (
            str(weights),
            dict(
                format="engine",
                imgsz=[384, 640],
                dynamic=True,
                half=True,
                batch=64,
                simplify=True,
                nms=False,
                device="0",
            ),
        )
    ]
    assert capsys.readouterr().out.strip() == str(weights.with_suffix(".engine"))
