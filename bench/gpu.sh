#!/usr/bin/env bash
# GPU detector benchmark: YOLOv8n throughput per backend and batch size (bench/gpu.py), on a GPU host.
#
#   bash bench/gpu.sh [bench/gpu.py ARGS...]       e.g. bash bench/gpu.sh --batches 1 8 --case-budget-s 3
#
# Run from anywhere; it works in the repository root. Needs .gpudata/ holding yolov8n.onnx, yolov8n.pt and
# highway_overpass_1280x720.mp4. Wheels in .whl/ (ultralytics, onnxruntime-gpu, ...) are installed offline
# into /tmp/site first and put on PYTHONPATH. Prints one JSON line on stdout and writes it to
# bench/results/gpu.json (and $OUT/gpu.json when OUT is set); logs go to stderr. Stops after 270 s.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

shopt -s nullglob
wheels=(.whl/*.whl)
shopt -u nullglob
if (( ${#wheels[@]} )); then
  echo "installing ${#wheels[@]} wheel(s) from .whl/ into /tmp/site" >&2
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "${wheels[@]}"
  export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi

nvidia-smi -L || echo "nvidia-smi -L failed" >&2

# The project's detector interface without installing the project (its other dependencies are not needed):
# trafficstream.models -> models/.
if ! python3 -c "import trafficstream.models.detector" 2>/dev/null; then
  mkdir -p /tmp/ts-ns/trafficstream
  cp trafficstream/__init__.py /tmp/ts-ns/trafficstream/
  ln -sfn "$PWD/models" /tmp/ts-ns/trafficstream/models
  export PYTHONPATH=/tmp/ts-ns${PYTHONPATH:+:$PYTHONPATH}
fi

rc=0
timeout 270 python3 bench/gpu.py --data .gpudata "$@" || rc=$?
if (( rc != 0 )); then
  echo "bench/gpu.py exited $rc (124: timed out); the figures so far are in its --out file and \$OUT/gpu.json" >&2
fi
exit "$rc"
