"""The per-camera video renderer: playout pacing, bursts, stalls, viewers (real clip, no HTTP)."""
from __future__ import annotations

import threading
import time

import pytest
from synthetic_results import synthetic_messages

from trafficstream.dashboards.live import LiveBuffers
from trafficstream.dashboards.video import MjpegStreamer

MOTORWAY = "motorway-overpass"


def _headers(part: bytes) -> dict[str, str]:
    head = part.split(b"\r\n\r\n", 1)[0].decode()
    return dict(line.split(": ", 1) for line in head.split("\r\n")[1:])


class BurstFeed:
    """Adds the motorway clip's results to buffers as a pipeline would: bursts every ``batch_s``, frames
    ``delay_s`` after capture; ``pause()`` stops capture and processing for a while (a stalled camera)."""

    def __init__(self, settings, buffers: LiveBuffers, batch_s: float, delay_s: float) -> None:
        self.buffers, self.batch_s, self.delay_s = buffers, batch_s, delay_s
        self.frames = [m for m in synthetic_messages(settings, 335, 0.0, evidence=False)
                       if m["camera_id"] == MOTORWAY and m["type"] == "frame"]
        self.offset = time.time()  # capture time = offset + pts
        self.paused_until = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def pause(self, seconds: float) -> None:
        self.paused_until = time.time() + seconds

    def _run(self) -> None:
        i = 0
        while not self._stop.is_set() and i < len(self.frames):
            now = time.time()
            if now < self.paused_until:
                self.offset += self.batch_s  # nothing is captured while the camera is stalled
            else:
                while i < len(self.frames) and self.offset + self.frames[i]["pts_s"] <= now - self.delay_s:
                    self.buffers.add({**self.frames[i], "capture_ts": self.offset + self.frames[i]["pts_s"]})
                    i += 1
            self._stop.wait(self.batch_s)

    def __enter__(self) -> "BurstFeed":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def watch(streamer: MjpegStreamer, camera, seconds: float) -> list[tuple[float, dict[str, str]]]:
    """(receive time, part headers) of everything one viewer gets in ``seconds``."""
    got: list[tuple[float, dict[str, str]]] = []
    parts = streamer.stream(camera)
    deadline = time.time() + seconds
    for part in parts:
        got.append((time.time(), _headers(part)))
        if time.time() > deadline:
            break
    parts.close()  # as werkzeug does when the client goes away
    return got


@pytest.fixture
def streamer(demo_settings):
    buffers = LiveBuffers.from_settings(demo_settings)
    stop = threading.Event()
    s = MjpegStreamer(demo_settings, buffers, stop)
    yield s
    stop.set()
    s.close()


def test_bursts_play_smoothly_at_the_source_rate(streamer, demo_settings):
    camera = demo_settings.camera(MOTORWAY)
    with BurstFeed(demo_settings, streamer.buffers, batch_s=1.0, delay_s=0.5):
        got = watch(streamer, camera, 6.0)
    frames = [(t, h) for t, h in got if "X-Frame-Index" in h]
    late = [(t, h) for t, h in frames if t > got[0][0] + 2.5]  # after the playout delay has settled
    fps = len(late) / (late[-1][0] - late[0][0])
    assert 20 <= fps <= 32, fps  # 1 s bursts, yet frames leave at about the clip's 29.8 fps
    gaps = [b[0] - a[0] for a, b in zip(late, late[1:])]
    assert max(gaps) < 0.35, max(gaps)  # no freeze between bursts
    delays = [t - float(h["X-Capture-Ts"]) for t, h in late]
    assert max(delays) < 2.2  # about burst period + processing delay + margin, not growing
    indices = [int(h["X-Frame-Index"]) for _, h in frames]
    assert indices == sorted(indices)
    assert streamer.active_streams() == []  # the viewer left


def test_after_a_stall_the_video_returns_to_live_quickly(streamer, demo_settings):
    camera = demo_settings.camera(MOTORWAY)
    with BurstFeed(demo_settings, streamer.buffers, batch_s=0.25, delay_s=0.3) as feed:
        threading.Timer(2.0, feed.pause, args=(3.0,)).start()  # camera stalls 2..5 s
        got = watch(streamer, camera, 8.0)
    resumed = [(t, h) for t, h in got if "X-Capture-Ts" in h and t > got[0][0] + 6.0]
    assert len(resumed) > 20, "video did not resume after the stall"
    assert max(t - float(h["X-Capture-Ts"]) for t, h in resumed) < 1.5  # not stuck behind the stall


def test_viewers_share_one_renderer(streamer, demo_settings):
    camera = demo_settings.camera(MOTORWAY)
    with BurstFeed(demo_settings, streamer.buffers, batch_s=0.25, delay_s=0.3):
        results: list[list] = [[], []]
        threads = [threading.Thread(target=lambda k=k: results[k].extend(watch(streamer, camera, 3.0)))
                   for k in (0, 1)]
        for t in threads:
            t.start()
        time.sleep(1.0)
        assert [s.camera_id for s in streamer.active_streams()] == [MOTORWAY]
        for t in threads:
            t.join()
    a = {h.get("X-Frame-Index") for _, h in results[0]}
    b = {h.get("X-Frame-Index") for _, h in results[1]}
    assert len(a & b) > 20
    renderer = streamer.renderer(camera)
    assert renderer.viewers == 0
    time.sleep(renderer.idle_stop_s + 1)
    assert renderer._thread is None  # nobody watching: the renderer stopped and closed its decoder


def test_missing_source_shows_a_placeholder(streamer, demo_settings, tmp_path):
    camera = demo_settings.camera(MOTORWAY).model_copy(update={"source": str(tmp_path / "gone.mp4")})
    got = watch(streamer, camera, 1.0)
    assert got and "X-Frame-Index" not in got[0][1]  # an image saying so, not a hung <img>
