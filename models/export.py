"""Export YOLOv8 weights with Ultralytics for the detector: ONNX for ONNX Runtime, a TensorRT engine for GPU hosts.

    python -m trafficstream.models.export --weights yolov8n.pt --format onnx|engine [--half] [--batch 64] \
        [--imgsz 384 640] [--device 0]

Always a dynamic-shape export without NMS inside (the detectors run their own NMS), simplified; ``--batch`` is
the largest batch a TensorRT engine's profile takes. An engine must be built on the GPU model it will run on.
Needs the GPU extras (``pip install '.[gpu]'``); prints the exported file's path.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trafficstream.logs import setup_logging

log = logging.getLogger("trafficstream.models.export")

FORMATS = ("onnx", "engine")
MISSING_ULTRALYTICS = "exporting needs ultralytics, from the GPU extras: pip install '.[gpu]'"


def export(
    weights: str | Path,
    fmt: str = "onnx",
    imgsz: tuple[int, int] = (384, 640),
    half: bool = False,
    batch: int = 1,
    device: str | None = None,
) -> Path:
    """Export ``weights`` (an Ultralytics ``.pt``) to ``fmt``; returns the written file.

    Raises ``FileNotFoundError`` for missing weights (Ultralytics would try to download them) and
    ``ImportError`` when ultralytics is not installed."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    weights = Path(weights)
    if not weights.is_file():
        raise FileNotFoundError(f"weights not found: {weights}")
    try:
        from ultralytics import YOLO  # heavy (torch): imported only to export
    except ImportError as exc:
        raise ImportError(MISSING_ULTRALYTICS) from exc
    kwargs: dict[str, Any] = dict(
        format=fmt, imgsz=list(imgsz), dynamic=True, half=half, batch=batch, simplify=True, nms=False
    )
    if device is not None:
        kwargs["device"] = device
    log.info("exporting %s: %s", weights, kwargs)
    out = YOLO(str(weights)).export(**kwargs)
    if not out:
        raise RuntimeError(f"ultralytics export of {weights} to {fmt} returned no file")
    return Path(out)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--weights", type=Path, required=True, help="Ultralytics checkpoint, e.g. yolov8n.pt")
    p.add_argument("--format", dest="fmt", choices=FORMATS, default="onnx")
    p.add_argument("--half", action="store_true", help="fp16 (a GPU export)")
    p.add_argument("--batch", type=int, default=1, help="batch size (the engine profile's largest)")
    p.add_argument("--imgsz", type=int, nargs="+", default=[384, 640], metavar="PX", help="H W, or one size")
    p.add_argument("--device", default=None, help="e.g. 0 or cpu (Ultralytics' choice if unset)")
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if len(args.imgsz) > 2 or min(args.imgsz) < 32:
        p.error("--imgsz takes one or two sizes (H W) of at least 32 pixels")
    if args.batch < 1:
        p.error("--batch must be >= 1")
    args.imgsz = (args.imgsz[0], args.imgsz[-1])
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    setup_logging(args.log_level)
    try:
        path = export(args.weights, args.fmt, args.imgsz, half=args.half, batch=args.batch, device=args.device)
    except (ImportError, FileNotFoundError) as exc:
        log.error("%s", exc)
        return 1
    log.info("exported %s", path)
    sys.stdout.write(f"{path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
