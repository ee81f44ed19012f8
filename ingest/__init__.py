"""Ingest: watch camera sources and publish one frame reference per frame to Kafka (never pixels)."""
