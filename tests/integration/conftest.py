"""Fixtures for the end-to-end tests live in tests/conftest.py; helpers in e2e_helpers.py."""
