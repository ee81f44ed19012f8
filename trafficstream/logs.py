"""Logging set-up shared by every CLI (logging, not prints)."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    # py4j and Kafka clients are chatty at INFO.
    for noisy in ("py4j", "py4j.clientserver", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
