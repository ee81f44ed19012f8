"""Vision primitives for the streaming workers: vehicle detection (YOLOv8 on ONNX Runtime, optional
Ultralytics/TensorRT), appearance embeddings for DeepSORT, letterboxing, NMS and region-of-interest tests.

Everything here is numpy in, numpy out (no torch), and works on BGR frames as decoded by OpenCV / PyAV.
"""
