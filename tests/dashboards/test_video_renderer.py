"""The per-camera video renderer: playout pacing, bursts, stalls, viewers (real clip, no HTTP)."""

from __future__ import annotations

import itertools
import json
import threading
import time

import pytest
from synthetic_results import synthetic_messages

from trafficstream.dashboards.buffers import LiveBuffers
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
        self.frames = [
            m
            for m in synthetic_messages(settings, 335, 0.0, evidence=False)
            if m["camera_id"] == MOTORWAY and m["type"] == "frame"
        ]
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

    def __enter__(self) -> BurstFeed:
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


def test_bursts_play_smoothly_at_the_source_rate(streamer, demo_settings, test_output):
    camera = demo_settings.camera(MOTORWAY)
    with BurstFeed(demo_settings, streamer.buffers, batch_s=1.0, delay_s=0.5):
        got = watch(streamer, camera, 6.0)
    stats = streamer.renderer(camera).stats
    frames = [(t, h) for t, h in got if "X-Frame-Index" in h]
    late = [(t, h) for t, h in frames if t > got[0][0] + 2.5]  # after the playout delay has settled
    assert len(late) >= 5, "the video does not play"
    fps = len(late) / (late[-1][0] - late[0][0])
    assert fps <= 32, fps  # paced at the clip's 29.8 fps, never faster
    # No freeze between bursts: the playout delay (a jitter buffer) spans more than a burst period, so the next
    # 1 s burst arrives before the last one has played out (it measures ~1.5 s: period + processing delay).
    assert stats.playout_delay_s > 1.0, stats.playout_delay_s
    indices = [int(h["X-Frame-Index"]) for _, h in frames]
    assert indices == sorted(indices)
    assert streamer.active_streams() == []  # the viewer left
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(late)]
    delays = [t - float(h["X-Capture-Ts"]) for t, h in late]
    # Rate, gaps and delays are measurements (make bench reports them), not pass/fail criteria on a shared machine.
    (test_output / "video-bursts.json").write_text(
        json.dumps(
            {
                "fps": round(fps, 1),
                "max_gap_s": round(max(gaps), 3),
                "max_delay_s": round(max(delays), 3),
                "playout_delay_s": round(stats.playout_delay_s, 3),
                "skipped": stats.skipped,
            }
        )
    )


def test_after_a_stall_the_video_returns_to_live_quickly(streamer, demo_settings, test_output):
    camera = demo_settings.camera(MOTORWAY)
    with BurstFeed(demo_settings, streamer.buffers, batch_s=0.25, delay_s=0.3) as feed:
        threading.Timer(2.0, feed.pause, args=(3.0,)).start()  # camera stalls 2..5 s
        got = watch(streamer, camera, 8.0)
    stall_start = feed.paused_until - 3.0
    resumed = [(t, h) for t, h in got if "X-Capture-Ts" in h and t > got[0][0] + 6.0]
    assert resumed, "video did not resume after the stall"
    # Not stuck behind the stall: nothing is captured during it, and the video gets back to frames captured
    # after it (the renderer shows the newest due frame, it does not work through a backlog).
    assert float(resumed[-1][1]["X-Capture-Ts"]) > stall_start
    delays = [t - float(h["X-Capture-Ts"]) for t, h in resumed]
    # A measurement (make bench reports it), not a pass/fail criterion on a shared machine.
    (test_output / "video-stall.json").write_text(
        json.dumps({"frames_after_stall": len(resumed), "max_delay_after_stall_s": round(max(delays), 3)})
    )


def test_viewers_share_one_renderer(streamer, demo_settings):
    camera = demo_settings.camera(MOTORWAY)
    with BurstFeed(demo_settings, streamer.buffers, batch_s=0.25, delay_s=0.3):
        results: list[list] = [[], []]
        threads = [threading.Thread(target=lambda k=k: results[k].extend(watch(streamer, camera, 3.0))) for k in (0, 1)]
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
