"""Spark Structured Streaming jobs. Each job is one file submitted with ``spark-submit`` (see its docstring)."""
