"""Loading ONNX models into ONNX Runtime sessions, with errors that name the file."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import onnxruntime as ort

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A model file is missing, unreadable, or not the model the caller expects. The message names the path."""


class ModelNotFoundError(ModelLoadError, FileNotFoundError):
    """The model file does not exist."""


def default_providers() -> list[str]:
    """CUDA when this onnxruntime build has it, else CPU. TensorRT is left out on purpose: its engine
    build takes minutes on first use; the Ultralytics backend is the TensorRT path."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def check_model_path(model_path: str | Path, what: str = "model") -> Path:
    path = Path(model_path).expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"{what} file not found: {path}")
    return path


def create_session(
    model_path: str | Path,
    threads: int = 0,
    providers: Sequence[str | tuple[str, dict[str, Any]]] | None = None,
    what: str = "model",
) -> ort.InferenceSession:
    """One InferenceSession for ``model_path``.

    ``threads > 0`` caps intra-op threads: Spark runs one session per task slot, so letting each grab
    every core oversubscribes the executor. Execution is sequential because YOLO / MobileNet graphs are
    a single chain, where the parallel executor only adds scheduling overhead.
    """
    path = check_model_path(model_path, what)
    options = ort.SessionOptions()
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: ORT warns about unused initialisers in Ultralytics exports
    if threads > 0:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    chosen = list(providers) if providers else default_providers()
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=chosen)
    except Exception as exc:  # ORT raises its own pybind types (InvalidProtobuf, Fail, NoSuchFile, ...)
        raise ModelLoadError(f"cannot load {what} {path}: {exc}") from exc
    log.info("loaded %s %s (providers %s, threads %s)", what, path, session.get_providers(), threads or "auto")
    return session
