"""The traffic staff dashboard: app factory, a stoppable background server, and the CLI entry point.

python -m trafficstream.dashboards --config infra/config/demo.yaml [--set dashboard.port=8051]
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import dash
from werkzeug.serving import BaseWSGIServer, make_server

from trafficstream.config import Settings, add_config_arguments, check_cameras_against_sources, settings_from_args
from trafficstream.dashboards.auth import configure_auth
from trafficstream.dashboards.buffers import LiveBuffers
from trafficstream.dashboards.callbacks import register_callbacks
from trafficstream.dashboards.consumer import ResultsConsumer
from trafficstream.dashboards.context import DashboardContext
from trafficstream.dashboards.history import HistoryStore
from trafficstream.dashboards.layout import build_layout
from trafficstream.dashboards.video import MjpegStreamer, register_routes
from trafficstream.errors import ConfigError
from trafficstream.logs import setup_logging

log = logging.getLogger(__name__)
CONTEXT_KEY = "trafficstream"
ASSETS = Path(__file__).resolve().parent / "assets"


def create_app(
    settings: Settings,
    *,
    buffers: LiveBuffers | None = None,
    start_consumer: bool = True,
) -> dash.Dash:
    """Build the Dash app. Unless told otherwise it starts the results consumer thread right away.

    ``buffers`` lets a caller (tests, the demo) bring pre-filled buffers; stop everything with
    ``get_context(app).close()``.
    """
    buffers = buffers or LiveBuffers.from_settings(settings)
    stop_event = threading.Event()
    consumer = ResultsConsumer(settings, buffers) if start_consumer else None
    ctx = DashboardContext(
        settings=settings,
        buffers=buffers,
        history=HistoryStore(settings.delta_root),
        streamer=MjpegStreamer(settings, buffers, stop_event),
        consumer=consumer,
        stop_event=stop_event,
    )
    app = dash.Dash(
        __name__,
        title="TrafficStream",
        update_title="",  # no "Updating..." flicker in the tab title every second (None and "" both disable it)
        assets_folder=str(ASSETS),
        suppress_callback_exceptions=True,  # the inactive tab's components are not mounted
    )
    app.layout = build_layout(settings)
    app.server.extensions[CONTEXT_KEY] = ctx
    private = configure_auth(app.server, settings)  # before any route is hit; covers video and snapshots too
    register_routes(app.server, settings, ctx.streamer, private=private)
    register_callbacks(app, ctx)
    if consumer is not None:
        consumer.start()
    return app


def get_context(app: dash.Dash) -> DashboardContext:
    return app.server.extensions[CONTEXT_KEY]


@dataclass
class ServerHandle:
    """A dashboard served from a background thread (demo, tests)."""

    app: dash.Dash
    server: BaseWSGIServer
    thread: threading.Thread

    @property
    def url(self) -> str:
        return f"http://{self.server.host}:{self.server.server_port}"

    @property
    def context(self) -> DashboardContext:
        return get_context(self.app)

    def stop(self, timeout_s: float = 10.0) -> None:
        self.context.close()  # ends the MJPEG generators so their threads return
        self.server.shutdown()
        self.thread.join(timeout_s)
        self.server.server_close()

    def __enter__(self) -> ServerHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _make_server(app: dash.Dash, host: str, port: int) -> BaseWSGIServer:
    # Threaded: every MJPEG viewer holds a connection (and a thread) for as long as it watches.
    return make_server(host, port, app.server, threaded=True)


def serve_in_thread(
    settings: Settings,
    *,
    port: int | None = None,
    buffers: LiveBuffers | None = None,
    start_consumer: bool = True,
) -> ServerHandle:
    """Start the dashboard in a daemon thread; ``port=0`` picks a free port (see ``handle.url``)."""
    app = create_app(settings, buffers=buffers, start_consumer=start_consumer)
    try:
        server = _make_server(app, settings.dashboard.host, settings.dashboard.port if port is None else port)
    except BaseException:
        get_context(app).close()
        raise
    thread = threading.Thread(target=server.serve_forever, name="dashboard-http", daemon=True)
    thread.start()
    handle = ServerHandle(app, server, thread)
    log.info("dashboard serving on %s", handle.url)
    return handle


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m trafficstream.dashboards", description="TrafficStream live dashboard"
    )
    add_config_arguments(parser)
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
        setup_logging(settings.log_level)
        # ROIs drawn on the video must fit its frames; the videos themselves may be elsewhere (a warning).
        check_cameras_against_sources(settings, require_sources=False)
    except ConfigError as exc:
        parser.exit(2, f"error: {exc}\n")
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per callback request otherwise
    try:
        app = create_app(settings)
    except ConfigError as exc:
        parser.exit(2, f"error: {exc}\n")
    ctx = get_context(app)
    try:
        server = _make_server(app, settings.dashboard.host, settings.dashboard.port)
    except OSError as exc:
        ctx.close()
        parser.exit(1, f"error: cannot listen on {settings.dashboard.host}:{settings.dashboard.port}: {exc}\n")

    def _terminate(signum: int, _frame: object) -> None:
        log.info("signal %d: shutting down", signum)
        ctx.stop_event.set()
        # shutdown() waits for serve_forever to return, which runs in this (the main) thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _terminate)
    log.info(
        "dashboard on http://%s:%d (results topic %r at %s)",
        settings.dashboard.host,
        server.server_port,
        settings.kafka.results_topic,
        settings.kafka.bootstrap_servers,
    )
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        log.info("interrupted: shutting down")
    finally:
        ctx.close()
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
