"""A real RTSP server serving an H.264 MP4 file, for tests and demos of live cameras.

The server is GStreamer's RTSP server (``GstRtspServer``: ``filesrc ! qtdemux ! h264parse ! rtph264pay``, no
re-encoding), reached through Debian's system interpreter, which can import GStreamer's ``gi`` bindings
(``make rtsp-deps`` installs them; the project venv cannot import ``gi``). Two sides in one module:

- ``/usr/bin/python3 infra/rtsp_server.py --file clip.mp4 --port 8554 --mount /cam [--loop]`` serves the file
  on ``rtsp://127.0.0.1:8554/cam`` until SIGTERM / Ctrl-C; ``--loop`` starts the file again at its end
  (one continuous stream, timestamps keep increasing);
- :class:`RtspServer` (venv side, context manager) starts that script as a subprocess with the system
  interpreter (``$TRAFFICSTREAM_GST_PYTHON`` overrides it), waits until the port accepts connections, and
  stops it by process id; ``start()`` again after ``stop()`` restarts it on the same port (reconnect tests).

``gi`` is imported only inside the server process, so the module imports anywhere.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType

log = logging.getLogger(__name__)

DEFAULT_GST_PYTHON = "/usr/bin/python3"
GST_PYTHON_ENV = "TRAFFICSTREAM_GST_PYTHON"
DEBIAN_PACKAGES = (
    "gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 python3-gst-1.0 "
    "gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-plugins-base"
)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def gst_python() -> str:
    return os.environ.get(GST_PYTHON_ENV, DEFAULT_GST_PYTHON)


def gst_available() -> bool:
    """True when the system interpreter can import GStreamer's RTSP server (``make rtsp-deps``)."""
    cmd = [gst_python(), "-c", "import gi; gi.require_version('GstRtspServer', '1.0')"]
    try:
        return subprocess.run(cmd, capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


class RtspServer:
    """The RTSP server as a subprocess of the system interpreter (context manager: started and stopped)."""

    def __init__(
        self,
        file: str | Path,
        *,
        port: int | None = None,
        mount: str = "/cam",
        loop: bool = True,
        host: str = "127.0.0.1",
        log_path: str | Path | None = None,
    ) -> None:
        self.file = Path(file).resolve()
        if not self.file.is_file():
            raise FileNotFoundError(f"video not found: {self.file}")
        self.host = host
        self.port = port or free_port(host)
        self.mount = mount if mount.startswith("/") else "/" + mount
        self.loop = loop
        self.log_path = Path(log_path) if log_path else None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"rtsp://{self.host}:{self.port}{self.mount}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def start(self, timeout_s: float = 30.0) -> RtspServer:
        """Start the server and wait until its port accepts connections."""
        if self.is_running():
            return self
        cmd = [gst_python(), str(Path(__file__).resolve()), "--file", str(self.file), "--host", self.host]
        cmd += ["--port", str(self.port), "--mount", self.mount] + (["--loop"] if self.loop else [])
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        try:
            self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        finally:
            if self.log_path:
                out.close()  # type: ignore[union-attr]
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port):
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"RTSP server exited with code {self._proc.returncode} (GStreamer missing? `make rtsp-deps`)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError(f"RTSP server not listening on {self.host}:{self.port} after {timeout_s}s")
            time.sleep(0.05)
        log.info("RTSP server pid %d serving %s on %s", self._proc.pid, self.file.name, self.url)
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server by its process id (SIGTERM, then SIGKILL)."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout_s)
        log.info("RTSP server pid %d stopped", proc.pid)

    def kill(self) -> None:
        """Kill the server abruptly (SIGKILL): a camera that vanishes without a TEARDOWN."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def __enter__(self) -> RtspServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


# -- the server process (system interpreter with GStreamer) ------------------------------------------------
def _serve(file: Path, host: str, port: int, mount: str, loop: bool) -> int:  # pragma: no cover - subprocess
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    main_loop = GLib.MainLoop()
    location = str(file).replace("\\", "\\\\").replace('"', '\\"')
    launch = f'( filesrc location="{location}" ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1 )'

    def on_configure(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
        if not loop:
            return
        pipeline = media.get_element()
        while pipeline.get_parent() is not None:  # the launch bin sits in the media's pipeline: seek that
            pipeline = pipeline.get_parent()
        bus = pipeline.get_bus()
        started = {"done": False}

        def rewind() -> bool:
            # A non-flushing segment seek: the running time (and so the RTP timestamps) keeps increasing.
            pipeline.seek(1.0, Gst.Format.TIME, Gst.SeekFlags.SEGMENT, Gst.SeekType.SET, 0, Gst.SeekType.NONE, -1)
            return False

        def on_sync(_bus: Gst.Bus, msg: Gst.Message) -> None:
            if msg.type == Gst.MessageType.SEGMENT_DONE:
                GLib.idle_add(rewind)

        def on_state(_media: GstRtspServer.RTSPMedia, state: int) -> None:
            if state == Gst.State.PLAYING and not started["done"]:
                started["done"] = True
                # Segment mode from the start: the end of the file posts SEGMENT_DONE instead of EOS.
                pipeline.seek(
                    1.0,
                    Gst.Format.TIME,
                    Gst.SeekFlags.FLUSH | Gst.SeekFlags.SEGMENT,
                    Gst.SeekType.SET,
                    0,
                    Gst.SeekType.NONE,
                    -1,
                )

        bus.enable_sync_message_emission()
        bus.connect("sync-message", on_sync)
        media.connect("new-state", on_state)

    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)  # every client sees the same "camera"
    factory.set_eos_shutdown(True)
    factory.connect("media-configure", on_configure)
    server = GstRtspServer.RTSPServer()
    server.set_address(host)
    server.set_service(str(port))
    server.get_mount_points().add_factory(mount, factory)
    if server.attach(None) == 0:
        print(f"cannot bind {host}:{port}", file=sys.stderr)
        return 1

    def quit_(*_args: object) -> bool:
        main_loop.quit()
        return False

    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, quit_)
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGINT, quit_)
    print(f"serving {file.name} on rtsp://{host}:{port}{mount} (loop={loop})", flush=True)
    main_loop.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Serve an H.264 MP4 file over RTSP (GStreamer, system python3).")
    parser.add_argument("--file", required=True, type=Path, help="H.264 MP4 file to serve")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8554)
    parser.add_argument("--mount", default="/cam", help="mount path, e.g. /cam")
    parser.add_argument("--loop", action="store_true", help="start the file again at its end")
    args = parser.parse_args(argv)
    if not args.file.is_file():
        print(f"error: {args.file} not found", file=sys.stderr)
        return 2
    mount = args.mount if args.mount.startswith("/") else "/" + args.mount
    return _serve(args.file.resolve(), args.host, args.port, mount, args.loop)


if __name__ == "__main__":
    sys.exit(main())
