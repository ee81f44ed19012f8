"""Benchmarks: synthetic known-speed traffic clips and the metrics that score pipeline output against them."""
