"""What a running dashboard holds: settings, live buffers, the consumer, history and video services."""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field

from trafficstream.config import Settings
from trafficstream.dashboards.buffers import LiveBuffers
from trafficstream.dashboards.consumer import ResultsConsumer
from trafficstream.dashboards.history import HistoryStore
from trafficstream.dashboards.video import MjpegStreamer

log = logging.getLogger(__name__)


@dataclass
class DashboardContext:
    settings: Settings
    buffers: LiveBuffers
    history: HistoryStore
    streamer: MjpegStreamer
    consumer: ResultsConsumer | None
    stop_event: threading.Event = field(default_factory=threading.Event)

    def close(self) -> None:
        """Stop the video streams and the consumer (idempotent)."""
        self.stop_event.set()
        self.streamer.close()
        if self.consumer is not None:
            self.consumer.stop()
