"""YOLOv8n detector throughput on a GPU host, per backend and batch size, on real letterboxed frames.

    bash bench/gpu.sh [ARGS]                  # on the GPU host: installs .whl/ wheels, then runs this
    python3 bench/gpu.py --data .gpudata [--video PATH] [--batches 1 8 32 64] [--imgsz 384 640] \
        [--backends ort-cuda torch-fp16 ultralytics-predict ort-cpu ort-tensorrt] [--out bench/results/gpu.json]

Standalone on purpose: the GPU host has torch, onnxruntime, onnx, numpy and OpenCV but none of the project's
own dependencies, so this imports nothing from ``trafficstream`` and only numpy and OpenCV at module level;
onnxruntime, torch, onnx and ultralytics are imported when a backend needs them.

``--data`` holds ``yolov8n.onnx`` (Ultralytics export, input ``images`` [B,3,H,W] float32 0..1, dynamic),
``yolov8n.pt`` and the clip. The first 64 frames are decoded and letterboxed as YOLOv8 does.

Backends, in the order they run, each measured only where the host has it (otherwise ``unavailable`` says
why, under the backend's name; a failed or skipped case under ``backend/precision/bN``):

* ``ort-cuda``: onnxruntime CUDAExecutionProvider, fp32 model and an fp16 copy (``ort-cuda/fp16``; made
  by onnxconverter_common's or onnxruntime.transformers' float16 converter, whichever imports, with onnx);
  input and output bound on the GPU (IO binding), so the host-device copies are not timed.
* ``torch-fp16``: ``ultralytics.YOLO(pt).model`` fused, ``.half()`` on CUDA: the raw forward on a GPU tensor.
* ``ultralytics-predict``: ``YOLO.predict(frames, half=True)`` end to end (letterbox, copy, forward, NMS).
* ``ort-cpu``: onnxruntime on the CPU at ``--cpu-batches`` (1 and 8), for reference.
* ``ort-tensorrt``: TensorrtExecutionProvider, fp16, one dynamic-batch engine (cached under ``--trt-cache``);
  last because its engine build may take minutes, and skipped with less than 90 s of ``--budget-s`` left.

Each case: warm-up calls (the first also pays for engine builds), then timed calls until ``--case-budget-s``
has passed (at least ``--reps``, at most ``--max-reps``); ms per batch median/min/max, frames/s = B / median.
The report is one JSON line on stdout, also written to ``--out`` and ``$OUT/gpu.json`` (after every case
too, with ``"partial": true``, so a run cut short by a timeout still leaves its figures).
"""

from __future__ import annotations

import argparse
import gc
import importlib
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

log = logging.getLogger("trafficstream.bench.gpu")

# Run in this order: the quick and most telling cases first, a TensorRT engine build (minutes) last.
BACKENDS = ("ort-cuda", "torch-fp16", "ultralytics-predict", "project", "ort-cpu", "ort-tensorrt")
DEFAULT_VIDEO = "highway_overpass_1280x720.mp4"
PAD_VALUE = 114  # the grey YOLOv8 letterboxes with
TRT_MIN_LEFT_S = 90.0  # a TensorRT engine build is not started with less time left than this


# --------------------------------------------------------------------------------------------- pure helpers


def letterbox(image: np.ndarray, size: tuple[int, int] = (384, 640), color: int = PAD_VALUE) -> np.ndarray:
    """Ultralytics' ``LetterBox(auto=False, scaleup=True)``: scale ``image`` to fit ``size=(h, w)`` keeping its
    aspect ratio, centre it and pad with ``color``. Returns (h, w, C) of the input dtype."""
    if image.ndim != 3 or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"letterbox expects a non-empty (H, W, C) image, got shape {image.shape}")
    dst_h, dst_w = size
    src_h, src_w = image.shape[:2]
    scale = min(dst_h / src_h, dst_w / src_w)
    new_w, new_h = round(src_w * scale), round(src_h * scale)
    if (new_w, new_h) != (src_w, src_h):
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_LINEAR)
    dw, dh = (dst_w - new_w) / 2, (dst_h - new_h) / 2
    top, bottom = round(dh - 0.1), round(dh + 0.1)
    left, right = round(dw - 0.1), round(dw + 0.1)
    out = cv2.copyMakeBorder(image, top, bottom, left, right, cv2.BORDER_CONSTANT, value=(color,) * image.shape[2])
    return out


def to_batch(images: Sequence[np.ndarray]) -> np.ndarray:
    """Letterboxed BGR uint8 (h, w, 3) images -> (N, 3, h, w) float32 RGB in 0..1, C-contiguous."""
    batch = np.stack(images)[..., ::-1].transpose(0, 3, 1, 2)
    out = np.ascontiguousarray(batch, dtype=np.float32)
    out /= 255.0
    return out


def summarise(ms: Sequence[float], batch: int) -> dict[str, Any]:
    """Statistics of one case's per-batch times in milliseconds."""
    if not ms:
        raise ValueError("no timed repetitions")
    median = float(statistics.median(ms))
    return {
        "ms_per_batch_median": round(median, 3),
        "ms_min": round(float(min(ms)), 3),
        "ms_max": round(float(max(ms)), 3),
        "frames_per_s": round(batch / (median / 1000.0), 1) if median > 0 else None,
        "reps": len(ms),
    }


def time_calls(
    fn: Callable[[], object],
    sync: Callable[[], None],
    *,
    warmup: int,
    min_reps: int,
    max_reps: int,
    budget_s: float,
    deadline: float = float("inf"),
) -> tuple[list[float], float | None]:
    """Call ``fn`` ``warmup`` times, then time calls (each followed by ``sync``) until ``budget_s`` has passed
    and at least ``min_reps`` were made, or ``max_reps`` were made, or ``time.perf_counter()`` passes
    ``deadline``. Returns the timed milliseconds and the first warm-up call's milliseconds."""
    first_ms = None
    for i in range(warmup):
        t0 = time.perf_counter()
        fn()
        sync()
        if i == 0:
            first_ms = (time.perf_counter() - t0) * 1000.0
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_reps:
        t0 = time.perf_counter()
        fn()
        sync()
        now = time.perf_counter()
        times.append((now - t0) * 1000.0)
        if (len(times) >= min_reps and now - start >= budget_s) or now >= deadline:
            break
    return times, first_ms


def no_sync() -> None:
    """ONNX Runtime's ``run`` returns once the outputs are ready: nothing to wait for."""


def short_error(exc: BaseException, limit: int = 400) -> str:
    text = f"{type(exc).__name__}: {exc}".strip().replace("\n", " | ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------------------------ frames


def read_frames(video: Path, count: int) -> list[np.ndarray]:
    """The first ``count`` BGR frames of ``video``; a shorter clip is repeated to make up ``count``."""
    cap = cv2.VideoCapture(str(video))
    frames: list[np.ndarray] = []
    try:
        while len(frames) < count:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
    finally:
        cap.release()
    if not frames:
        raise RuntimeError(f"no frames decoded from {video}")
    return [frames[i % len(frames)] for i in range(count)]


def load_frames(video: Path | None, count: int) -> tuple[list[np.ndarray], str]:
    """Real frames when the clip decodes, else seeded random 1280x720 frames (said so in the report)."""
    if video is not None and video.is_file():
        try:
            return read_frames(video, count), str(video)
        except Exception as exc:  # any decoding failure falls back, and is reported
            reason = short_error(exc)
    else:
        reason = f"video not found: {video}"
    log.warning("%s: timing on synthetic frames", reason)
    rng = np.random.default_rng(0)
    return [rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8) for _ in range(count)], f"synthetic ({reason})"


# ------------------------------------------------------------------------------------------------ report


class Bench:
    """Options, the growing report, and the time left."""

    def __init__(self, args: argparse.Namespace, report: dict[str, Any], outputs: list[Path]) -> None:
        self.args = args
        self.report = report
        self.outputs = outputs
        self.started = time.perf_counter()
        self.deadline = self.started + args.budget_s

    def left_s(self) -> float:
        return self.deadline - time.perf_counter()

    def unavailable(self, key: str, reason: str) -> None:
        log.warning("%s unavailable: %s", key, reason)
        self.report["unavailable"][key] = reason
        self.write(partial=True)

    def case(
        self,
        backend: str,
        precision: str,
        batch: int,
        fn: Callable[[], object],
        *,
        sync: Callable[[], None] = no_sync,
        device: str = "cuda",
        scope: str,
        budget_s: float | None = None,
    ) -> bool:
        """Time one case and add it to the report; False (and the reason under ``unavailable``) if it failed
        or there was no time left for it."""
        key = f"{backend}/{precision}/b{batch}"
        if self.left_s() < self.args.min_case_s:
            self.unavailable(key, f"skipped: {self.args.budget_s:.0f} s time budget spent")
            return False
        budget = min(budget_s if budget_s is not None else self.args.case_budget_s, max(0.5, self.left_s() - 2))
        try:
            ms, first_ms = time_calls(
                fn,
                sync,
                warmup=self.args.warmup,
                min_reps=self.args.reps,
                max_reps=self.args.max_reps,
                budget_s=budget,
                deadline=self.deadline,
            )
        except Exception as exc:  # out of memory, provider failure...: recorded, the run goes on
            self.unavailable(key, short_error(exc))
            return False
        row = {"backend": backend, "precision": precision, "batch": batch, **summarise(ms, batch)}
        row.update(device=device, scope=scope, first_call_ms=None if first_ms is None else round(first_ms, 1))
        self.report["cases"].append(row)
        log.info(
            "%-20s %-4s b=%-3d %9.3f ms/batch (min %.3f, max %.3f) %9.1f frames/s, %d reps",
            backend,
            precision,
            batch,
            row["ms_per_batch_median"],
            row["ms_min"],
            row["ms_max"],
            row["frames_per_s"] or 0.0,
            row["reps"],
        )
        self.write(partial=True)
        return True

    def write(self, partial: bool) -> None:
        self.report["partial"] = partial
        self.report["elapsed_s"] = round(time.perf_counter() - self.started, 1)
        text = json.dumps(self.report)
        for path in self.outputs:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_name(path.name + ".tmp")
                tmp.write_text(text + "\n")
                tmp.replace(path)
            except OSError as exc:
                log.warning("cannot write %s: %s", path, exc)
                self.outputs = [p for p in self.outputs if p != path]


def gpu_info() -> tuple[str | None, str | None]:
    """GPU name and driver version from nvidia-smi (None, None where it is missing or fails)."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("nvidia-smi: %s", short_error(exc))
        return None, None
    first = out.strip().splitlines()[0] if out.strip() else ""
    name, _, driver = first.partition(",")
    return (name.strip() or None), (driver.strip() or None)


def import_torch() -> tuple[Any, str | None]:
    """``torch`` with a usable CUDA device, or None and why not."""
    try:
        import torch
    except Exception as exc:  # a broken install is as good as none here
        return None, f"torch not importable: {short_error(exc)}"
    try:
        if not torch.cuda.is_available():
            return torch, f"torch {torch.__version__} sees no CUDA device (torch.version.cuda={torch.version.cuda})"
    except Exception as exc:
        return torch, f"torch.cuda: {short_error(exc)}"
    return torch, None


def import_ultralytics() -> tuple[Any, str | None]:
    # No network on the GPU hosts: keep Ultralytics from probing it, and its settings file out of $HOME.
    os.environ.setdefault("YOLO_OFFLINE", "1")
    os.environ.setdefault("YOLO_CONFIG_DIR", "/tmp/Ultralytics")
    try:
        import ultralytics
    except Exception as exc:  # ImportError, or one of its own imports (torchvision...) failing
        return None, f"ultralytics not importable ({short_error(exc)}); yolov8n.pt needs it to unpickle"
    return ultralytics, None


# ---------------------------------------------------------------------------------------- ONNX Runtime


def fp16_model(onnx_path: Path) -> tuple[bytes | None, str | None]:
    """An fp16 copy of the ONNX model (fp16 input and output too), serialised; or None and why not."""
    try:
        import onnx
    except Exception as exc:
        return None, f"onnx not importable: {short_error(exc)}"
    errors = []
    converter = None
    for module in ("onnxconverter_common.float16", "onnxruntime.transformers.float16"):
        try:
            converter = importlib.import_module(module).convert_float_to_float16
            break
        except Exception as exc:
            errors.append(f"{module}: {short_error(exc, 150)}")
    if converter is None:
        return None, "no float16 converter importable (" + "; ".join(errors) + ")"
    try:
        model = converter(onnx.load(str(onnx_path)), keep_io_types=False)
        return model.SerializeToString(), None
    except Exception as exc:
        return None, f"fp16 conversion failed: {short_error(exc)}"


def ort_session(ort: Any, model: str | bytes, providers: list[Any]) -> Any:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: fallbacks are detected from get_providers() below
    return ort.InferenceSession(model, sess_options=options, providers=providers)


def ort_device_runner(ort: Any, session: Any, blob: np.ndarray, device: str = "cuda") -> Callable[[], object]:
    """``session`` run with its input already on the GPU and its output left there (IO binding), as a GPU
    pipeline would feed it; the host-to-device copy of the frames is not timed."""
    inp, out = session.get_inputs()[0].name, session.get_outputs()[0].name
    value = ort.OrtValue.ortvalue_from_numpy(blob, device, 0)
    binding = session.io_binding()
    binding.bind_ortvalue_input(inp, value)
    binding.bind_output(out, device, 0)

    def run() -> object:
        session.run_with_iobinding(binding)
        return value  # the closure keeps the device input alive

    return run


def ort_host_runner(session: Any, blob: np.ndarray) -> Callable[[], object]:
    """``session.run`` on host arrays: the copies to and from the device are timed too."""
    name = session.get_inputs()[0].name
    return lambda: session.run(None, {name: blob})


def bench_ort_gpu(
    bench: Bench, ort: Any, provider: str, onnx_path: Path, batches: dict[int, np.ndarray], torch: Any
) -> None:
    """``ort-cuda`` (fp32 and fp16 models) or ``ort-tensorrt`` (fp32 model, fp16 engine)."""
    args = bench.args
    backend = "ort-cuda" if provider == "CUDAExecutionProvider" else "ort-tensorrt"
    available = ort.get_available_providers()
    if provider not in available:
        needs = "the onnxruntime-gpu wheel" + (" and TensorRT's libraries" if backend == "ort-tensorrt" else "")
        have = ", ".join(available)
        bench.unavailable(backend, f"onnxruntime {ort.__version__} has no {provider} (has {have}); needs {needs}")
        return
    if not onnx_path.is_file():
        bench.unavailable(backend, f"model not found: {onnx_path}")
        return
    h, w = args.imgsz
    cuda: tuple[str, dict[str, Any]] = ("CUDAExecutionProvider", {"device_id": 0})
    variants: list[tuple[str, str | bytes | None, str | None]]
    if backend == "ort-cuda":
        model16, why = fp16_model(onnx_path)
        variants = [("fp32", str(onnx_path), None), ("fp16", model16, why)]
        providers: list[Any] = [cuda, "CPUExecutionProvider"]
    else:
        if bench.left_s() < TRT_MIN_LEFT_S:
            bench.unavailable(backend, f"skipped: {bench.left_s():.0f} s left, an engine build may take minutes")
            return
        cache = Path(args.trt_cache).resolve()
        cache.mkdir(parents=True, exist_ok=True)
        trt_options = {
            "device_id": 0,
            "trt_fp16_enable": True,
            "trt_engine_cache_enable": True,
            "trt_engine_cache_path": str(cache),
            "trt_timing_cache_enable": True,
            "trt_timing_cache_path": str(cache),
            # One engine for every batch size measured, built on the first call.
            "trt_profile_min_shapes": f"images:1x3x{h}x{w}",
            "trt_profile_opt_shapes": f"images:{max(batches)}x3x{h}x{w}",
            "trt_profile_max_shapes": f"images:{max(batches)}x3x{h}x{w}",
        }
        variants = [("fp16", str(onnx_path), None)]
        providers = [(provider, trt_options), cuda, "CPUExecutionProvider"]
    for precision, model, why in variants:
        key = backend if precision == "fp32" or backend == "ort-tensorrt" else f"{backend}/{precision}"
        if model is None:
            bench.unavailable(key, why or "no model")
            continue
        try:
            session = ort_session(ort, model, providers)
        except Exception as exc:
            bench.unavailable(key, f"session creation failed: {short_error(exc)}")
            continue
        if session.get_providers()[0] != provider:
            bench.unavailable(key, f"{provider} did not load (session providers: {session.get_providers()})")
            del session
            continue
        dtype = np.float16 if session.get_inputs()[0].type == "tensor(float16)" else np.float32
        io_binding = True
        for b, blob in batches.items():
            run = None
            if io_binding:
                try:
                    run = ort_device_runner(ort, session, blob.astype(dtype, copy=False))
                except Exception as exc:  # fall back to host arrays
                    log.warning("%s IO binding failed, timing session.run on host arrays: %s", key, short_error(exc))
                    io_binding = False
            if run is None:
                run = ort_host_runner(session, blob.astype(dtype, copy=False))
            scope = "session run, input and output on the GPU (IO binding)"
            if not io_binding:
                scope = "session run on host arrays (host-device copies included)"
            if not bench.case(backend, precision, b, run, scope=scope) and bench.left_s() < args.min_case_s:
                break
        del session, run
        gc.collect()
        if torch is not None:
            torch.cuda.empty_cache()


def bench_ort_cpu(bench: Bench, ort: Any, onnx_path: Path, batches: dict[int, np.ndarray]) -> None:
    if not onnx_path.is_file():
        bench.unavailable("ort-cpu", f"model not found: {onnx_path}")
        return
    session = ort_session(ort, str(onnx_path), ["CPUExecutionProvider"])
    for b in bench.args.cpu_batches:
        if b not in batches:
            continue
        bench.case(
            "ort-cpu",
            "fp32",
            b,
            ort_host_runner(session, batches[b]),
            device="cpu",
            scope=f"session run, {os.cpu_count()} CPUs (reference)",
            budget_s=min(bench.args.case_budget_s, bench.args.cpu_budget_s),
        )


# ----------------------------------------------------------------------------------------------- PyTorch


def bench_torch(
    bench: Bench,
    torch: Any,
    ultralytics: Any,
    pt_path: Path,
    batches: dict[int, np.ndarray],
    frames: list[np.ndarray],
    wanted: Sequence[str],
) -> None:
    """``torch-fp16`` (raw forward of the fused fp16 model) and ``ultralytics-predict`` (end to end)."""
    sync = torch.cuda.synchronize
    if "torch-fp16" in wanted:
        try:
            model = ultralytics.YOLO(str(pt_path)).model
            try:
                model = model.fuse(verbose=False)
            except TypeError:
                model = model.fuse()
            except Exception as exc:  # unfused is still a figure
                log.warning("fuse failed, timing the unfused model: %s", short_error(exc))
            model = model.to("cuda").half().eval()
        except Exception as exc:
            bench.unavailable("torch-fp16", f"cannot load {pt_path}: {short_error(exc)}")
        else:
            for b, blob in batches.items():
                x = torch.from_numpy(blob).to("cuda").half()

                def forward(x: Any = x) -> object:
                    with torch.inference_mode():
                        return model(x)

                if not bench.case("torch-fp16", "fp16", b, forward, sync=sync, scope="forward, fp16 tensor on the GPU"):
                    if bench.left_s() < bench.args.min_case_s:
                        break
                del x
            del model
            gc.collect()
            torch.cuda.empty_cache()
    if "ultralytics-predict" in wanted:
        try:
            yolo = ultralytics.YOLO(str(pt_path))
        except Exception as exc:
            bench.unavailable("ultralytics-predict", f"cannot load {pt_path}: {short_error(exc)}")
            return
        imgsz = list(bench.args.imgsz)
        for b in batches:
            chunk = frames[:b]

            def predict(chunk: list[np.ndarray] = chunk, b: int = b) -> object:
                return yolo.predict(chunk, imgsz=imgsz, half=True, device=0, batch=b, verbose=False)

            if not bench.case(
                "ultralytics-predict",
                "fp16",
                b,
                predict,
                sync=sync,
                scope=f"YOLO.predict on {frames[0].shape[1]}x{frames[0].shape[0]} BGR frames (letterbox, forward, NMS)",
            ):
                if bench.left_s() < bench.args.min_case_s:
                    break
        del yolo
        gc.collect()
        torch.cuda.empty_cache()


# ------------------------------------------------------------------------------- the project's own interface


def box_agreement(reference: Sequence[np.ndarray], other: Sequence[np.ndarray], iou: float = 0.5) -> float | None:
    """Share of ``reference`` boxes (xyxy per image) that ``other`` has a box for at IoU >= ``iou``."""
    matched = total = 0
    for ref, oth in zip(reference, other, strict=True):
        total += len(ref)
        if not len(ref) or not len(oth):
            continue
        lt = np.maximum(ref[:, None, :2], oth[None, :, :2])
        rb = np.minimum(ref[:, None, 2:], oth[None, :, 2:])
        inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
        area_r = np.prod(ref[:, 2:] - ref[:, :2], axis=1)[:, None]
        area_o = np.prod(oth[:, 2:] - oth[:, :2], axis=1)[None, :]
        matched += int(((inter / (area_r + area_o - inter + 1e-9)) >= iou).any(axis=1).sum())
    return None if total == 0 else round(matched / total, 4)


def bench_project(
    bench: Bench, pt_path: Path, onnx_path: Path, frames: list[np.ndarray], batches: Sequence[int]
) -> None:
    """``trafficstream.models.detector.UltralyticsDetector`` (what the job's tasks build with
    ``detector.backend=ultralytics``) at FP16 on the GPU, whole frames in, Detections out; and how closely its
    boxes agree with the CPU ONNX Runtime backend on the same frames."""
    try:
        from trafficstream.models.detector import UltralyticsDetector, YoloOnnxDetector
    except Exception as exc:
        bench.unavailable("project", f"trafficstream.models not importable: {short_error(exc)}")
        return
    for b in batches:
        det = UltralyticsDetector(pt_path, input_size=bench.args.imgsz, device=0, half=True, batch_size=b)
        chunk = [frames[i % len(frames)] for i in range(b)]

        def run(det: Any = det, chunk: list[np.ndarray] = chunk) -> object:
            return det.detect_batch(chunk)

        bench.case(
            "project",
            "fp16",
            b,
            run,
            scope="UltralyticsDetector.detect_batch on 1280x720 frames (the job's GPU backend: letterbox, forward, "
            "NMS, vehicle classes, Detections)",
        )
    n = min(8, len(frames))
    gpu = UltralyticsDetector(pt_path, input_size=bench.args.imgsz, device=0, half=True).detect_batch(frames[:n])
    cpu = YoloOnnxDetector(onnx_path, input_size=bench.args.imgsz, agnostic_nms=False).detect_batch(frames[:n])
    bench.report["project_agreement"] = {
        "frames": n,
        "cpu_boxes": int(sum(len(d) for d in cpu)),
        "gpu_boxes": int(sum(len(d) for d in gpu)),
        "cpu_boxes_found_on_gpu": box_agreement([d.xyxy for d in cpu], [d.xyxy for d in gpu]),
        "gpu_boxes_found_on_cpu": box_agreement([d.xyxy for d in gpu], [d.xyxy for d in cpu]),
    }
    log.info("project backend agreement: %s", bench.report["project_agreement"])


# -------------------------------------------------------------------------------------------------- main


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=Path(".gpudata"), help="folder with yolov8n.onnx, yolov8n.pt, clip")
    p.add_argument("--video", type=Path, default=None, help=f"clip to take frames from (default DATA/{DEFAULT_VIDEO})")
    p.add_argument("--onnx", type=Path, default=None, help="ONNX model (default DATA/yolov8n.onnx)")
    p.add_argument("--pt", type=Path, default=None, help="Ultralytics checkpoint (default DATA/yolov8n.pt)")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32, 64])
    p.add_argument("--cpu-batches", type=int, nargs="+", default=[1, 8], help="ort-cpu batch sizes")
    p.add_argument("--imgsz", type=int, nargs=2, default=[384, 640], metavar=("H", "W"))
    p.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    p.add_argument("--warmup", type=int, default=3, help="untimed calls per case (>= 1)")
    p.add_argument("--reps", type=int, default=5, help="fewest timed calls per case")
    p.add_argument("--max-reps", type=int, default=200, help="most timed calls per case")
    p.add_argument("--case-budget-s", type=float, default=6.0, help="timed seconds per case, past --reps")
    p.add_argument("--cpu-budget-s", type=float, default=4.0, help="timed seconds per ort-cpu case")
    p.add_argument("--budget-s", type=float, default=230.0, help="whole run; later cases are skipped past it")
    p.add_argument("--min-case-s", type=float, default=3.0, help="a case is not started with less time left")
    p.add_argument("--trt-cache", default="var/bench/trt-cache", help="TensorRT engine and timing cache folder")
    p.add_argument("--out", default="bench/results/gpu.json", help="JSON report file ('' for none)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if any(b < 1 for b in [*args.batches, *args.cpu_batches]) or args.warmup < 1 or args.reps < 1:
        p.error("batch sizes, --warmup and --reps must be >= 1")
    if args.max_reps < args.reps:
        p.error("--max-reps must be >= --reps")
    args.batches = sorted(set(args.batches))
    args.cpu_batches = sorted(set(args.cpu_batches))
    args.imgsz = (args.imgsz[0], args.imgsz[1])
    return args


def package_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    data: Path = args.data
    onnx_path = args.onnx or data / "yolov8n.onnx"
    pt_path = args.pt or data / "yolov8n.pt"
    video = args.video or data / DEFAULT_VIDEO
    if args.video is None and not video.is_file():
        video = next(iter(sorted(data.glob("*.mp4"))), video)
    wanted = list(dict.fromkeys(args.backends))
    outputs = [Path(args.out)] if args.out else []
    if os.environ.get("OUT"):
        outputs.append(Path(os.environ["OUT"]) / "gpu.json")

    # torch first: its CUDA/cuDNN wheels are then loaded when onnxruntime-gpu looks for them.
    torch, torch_why = import_torch()
    gpu_name, driver = gpu_info()
    if torch is not None and torch_why is None:
        gpu_name = torch.cuda.get_device_name(0)
    ort: Any = None
    ort_why: str | None = None
    try:
        import onnxruntime
    except Exception as exc:
        ort_why = f"onnxruntime not importable: {short_error(exc)}"
    else:
        ort = onnxruntime
        # Without torch, let onnxruntime-gpu load the CUDA libraries of NVIDIA's pip wheels, if any.
        if torch is None and "CUDAExecutionProvider" in ort.get_available_providers() and hasattr(ort, "preload_dlls"):
            try:
                ort.preload_dlls()
            except Exception as exc:
                log.warning("onnxruntime.preload_dlls: %s", short_error(exc))
    ultralytics: Any = None
    ultra_why: str | None = "not requested"
    if {"torch-fp16", "ultralytics-predict", "project"} & set(wanted):
        ultralytics, ultra_why = import_ultralytics() if torch_why is None else (None, torch_why)

    report: dict[str, Any] = {
        "gpu": gpu_name,
        "driver": driver,
        "versions": {
            "torch": getattr(torch, "__version__", None),
            "onnxruntime": getattr(ort, "__version__", None),
            "ultralytics": getattr(ultralytics, "__version__", None),
            "cuda": getattr(getattr(torch, "version", None), "cuda", None),
            "cudnn": torch.backends.cudnn.version() if torch is not None and torch_why is None else None,
            "onnx": package_version("onnx"),
            "numpy": np.__version__,
            "opencv": cv2.__version__,
            "python": platform.python_version(),
        },
        "ort_providers": ort.get_available_providers() if ort is not None else [],
        "input": list(args.imgsz),
        "frames": None,
        "cpu_count": os.cpu_count(),
        "cases": [],
        "unavailable": {},
    }
    bench = Bench(args, report, outputs)
    frames, source = load_frames(video, max([*args.batches, *args.cpu_batches]))
    report["frames"] = source
    t0 = time.perf_counter()
    boxed = [letterbox(f, args.imgsz) for f in frames]
    batches = {b: to_batch(boxed[:b]) for b in sorted({*args.batches, *args.cpu_batches})}
    log.info("%d frames from %s letterboxed to %s in %.1f s", len(frames), source, args.imgsz, time.perf_counter() - t0)
    gpu_batches = {b: batches[b] for b in args.batches}
    cpu_batches = {b: batches[b] for b in args.cpu_batches}

    for backend in BACKENDS:
        if backend not in wanted:
            continue
        try:
            if backend in ("ort-cuda", "ort-tensorrt"):
                if ort is None:
                    bench.unavailable(backend, ort_why or "onnxruntime missing")
                    continue
                provider = "CUDAExecutionProvider" if backend == "ort-cuda" else "TensorrtExecutionProvider"
                bench_ort_gpu(bench, ort, provider, onnx_path, gpu_batches, torch if torch_why is None else None)
            elif backend == "torch-fp16" or backend == "ultralytics-predict":
                if backend == "ultralytics-predict" and "torch-fp16" in wanted:
                    continue  # measured together with torch-fp16
                torch_wanted = [b for b in ("torch-fp16", "ultralytics-predict") if b in wanted]
                if ultralytics is None:
                    for name in torch_wanted:
                        bench.unavailable(name, ultra_why or "ultralytics missing")
                    continue
                if not pt_path.is_file():
                    for name in torch_wanted:
                        bench.unavailable(name, f"checkpoint not found: {pt_path}")
                    continue
                bench_torch(bench, torch, ultralytics, pt_path, gpu_batches, frames, torch_wanted)
            elif backend == "project":
                if ultralytics is None or not pt_path.is_file():
                    bench.unavailable(backend, ultra_why or f"checkpoint not found: {pt_path}")
                    continue
                bench_project(bench, pt_path, onnx_path, frames, args.batches)
            elif backend == "ort-cpu":
                if ort is None:
                    bench.unavailable(backend, ort_why or "onnxruntime missing")
                    continue
                bench_ort_cpu(bench, ort, onnx_path, cpu_batches)
        except Exception as exc:  # one backend's failure must not cost the others' figures
            log.exception("%s failed", backend)
            bench.unavailable(backend, short_error(exc))

    bench.write(partial=False)
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    # As a script, bench/ is sys.path[0]: keep its modules (metrics.py, run.py, ...) from shadowing others'.
    if sys.path and Path(sys.path[0] or ".").resolve() == Path(__file__).resolve().parent:
        del sys.path[0]
    sys.exit(main())
