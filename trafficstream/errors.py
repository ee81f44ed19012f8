"""Exceptions with a user-facing message (no stack trace needed to understand them)."""

from __future__ import annotations


class ConfigError(ValueError):
    """A configuration file, environment variable or CLI flag is invalid. The message names the field."""


class MessageError(ValueError):
    """A Kafka message does not match its schema.

    ``reason`` is a short stable code (used as the dead-letter reason); ``detail`` is human readable.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail
