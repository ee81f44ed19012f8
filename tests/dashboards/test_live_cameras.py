"""Live cameras on the dashboard: predicted boxes, frame sources (segments, looped files, hostile URIs), the
lag against the camera's budget, and the health panel's analysis / source events."""

from __future__ import annotations

import json
import logging
import shutil
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from trafficstream.cameras import Camera
from trafficstream.dashboards import layout as L
from trafficstream.dashboards import video as dash_video
from trafficstream.dashboards.buffers import FrameSource, LiveBuffers, LiveFrame, summarize_analysis
from trafficstream.dashboards.video import (
    CameraRenderer,
    FrameImages,
    MjpegStreamer,
    NoImage,
    StreamStats,
    draw_overlays,
    frame_location,
)
from trafficstream.results import batch_health_message, camera_event_message, frame_message

MOTORWAY = "motorway-overpass"
T0 = 1_700_000_000.0


def _frame(index: int = 0, *, source=None, analysis: str = "detected", ts: float | None = None) -> LiveFrame:
    return LiveFrame("cam", index, index / 25, T0 + index / 25 if ts is None else ts, None, (), 0, analysis, 3, source)


# -- overlays --------------------------------------------------------------------------------------------
def _top_edge(out: np.ndarray, box: list[int]) -> np.ndarray:
    x1, y1, x2, _ = box
    return out[y1, x1 + 1 : x2].any(axis=1)


def test_predicted_boxes_are_dashed_and_keep_id_and_speed():
    img = np.zeros((720, 1280, 3), np.uint8)
    box = [400, 300, 700, 500]
    v = {"id": 7, "cls": "car", "box": box, "kmh": 88.0, "over": False}
    solid = draw_overlays(img, [v], 100)
    dashed = draw_overlays(img, [v], 100, predicted=True)
    assert _top_edge(solid, box).mean() == 1.0
    top = _top_edge(dashed, box).mean()
    assert 0.3 < top < 0.8, top  # dashes and gaps
    left = dashed[box[1] + 1 : box[3], box[0]].any(axis=1).mean()
    assert 0.3 < left < 0.8, left
    # Same label (id, class, speed) above the box either way.
    label = (slice(box[1] - 30, box[1] - 1), slice(box[0], box[0] + 200))
    assert np.array_equal(solid[label], dashed[label]) and solid[label].any()


def test_caption_says_predicted():
    assert "predicted (detect every 3)" in dash_video.frame_caption("cam", _frame(1, analysis="predicted"))
    assert "predicted" not in dash_video.frame_caption("cam", _frame(0))


# -- messages ----------------------------------------------------------------------------------------------
def _frame_msg(**extra) -> dict:
    msg = frame_message(
        camera_id="cam",
        frame_index=812,
        pts_s=32.48,
        capture_ts=T0,
        processed_ts=T0 + 0.5,
        vehicles=[],
        class_counts={},
        flow_minute=60 * (T0 // 60),
        flow_counts={},
        ms={},
    )
    msg.update(extra)
    return msg


def test_frames_keep_analysis_stride_and_source_and_old_messages_default():
    b = LiveBuffers(["cam"])
    b.add(_frame_msg(analysis="predicted", stride=3, source={"uri": "file:///seg/a.mp4", "index": 12, "pts_s": 0.48}))
    f = b.latest_frame("cam")
    assert f is not None and f.predicted and f.stride == 3 and f.source == FrameSource("file:///seg/a.mp4", 12, 0.48)
    old = _frame_msg(frame_index=813, capture_ts=T0 + 0.04)
    for key in ("analysis", "stride", "source"):
        del old[key]
    b.add(old)
    f = b.latest_frame("cam")
    assert f is not None and f.analysis == "detected" and f.stride == 1 and f.source is None
    b.add(_frame_msg(frame_index=814, capture_ts=T0 + 0.08, source={"uri": 3, "index": -1}, analysis="bogus"))
    f = b.latest_frame("cam")
    assert f is not None and f.source is None and f.analysis == "detected"


# -- frame sources -----------------------------------------------------------------------------------------
def _write_clip(path: Path, frames: int, size=(160, 96), fps: int = 25) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("mpeg4", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        for i in range(frames):
            img = np.full((size[1], size[0], 3), (i * 20) % 255, np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="bgr24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


class SpyReader:
    """Stands in for FrameReader: records what would be opened."""

    opened: list[Path] = []

    def __init__(self, path, fps_override=None) -> None:
        SpyReader.opened.append(Path(path))

    def read(self, index: int, pts_s: float) -> np.ndarray:
        return np.zeros((96, 160, 3), np.uint8)

    def close(self) -> None:
        pass


@pytest.fixture
def spy(monkeypatch):
    SpyReader.opened = []
    monkeypatch.setattr(dash_video, "FrameReader", SpyReader)
    return SpyReader


def test_a_source_outside_the_allowed_roots_is_never_opened(tmp_path, spy, caplog):
    root, outside = tmp_path / "data", tmp_path / "elsewhere"
    clip = root / "cam.mp4"
    for p in (clip, outside / "secret.mp4", root / "other-camera.mp4"):
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"x")
    (root / "link.mp4").symlink_to(outside / "secret.mp4")
    camera = Camera(id="cam", source=str(clip), speed_limit_kmh=50)
    images = FrameImages(camera, [root])
    caplog.set_level(logging.WARNING, logger="trafficstream.dashboards.video")
    hostile = [
        (outside / "secret.mp4").as_uri(),
        "file:///etc/passwd",
        f"file://{root}/../elsewhere/secret.mp4",
        (root / "link.mp4").as_uri(),  # a symlink out of the root
        "relative/cam.mp4",
        "http://attacker.example/x.mp4",
        (root / "other-camera.mp4").as_uri(),  # allowed root, but not this camera's source
    ]
    for i, uri in enumerate(hostile * 2):
        with pytest.raises(NoImage):
            images.read(_frame(i, source=FrameSource(uri, i, i / 25)))
    assert spy.opened == []
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == len(set(warnings)) <= 4, warnings  # once per kind of problem, not per frame
    # The camera's own file, by the message's source or (older messages) by the frame's own index.
    images.read(_frame(1000, source=FrameSource(clip.as_uri(), 5, 0.2)))
    images.read(_frame(3))
    assert spy.opened == [clip.resolve()]  # one reader for both


def test_live_camera_frames_come_from_its_segments(tmp_path):
    segments = tmp_path / "segments"
    camera = Camera(id="live-cam", source="rtsp://user:pw@cam.local/stream", speed_limit_kmh=50)
    seg_dir = segments / camera.id
    _write_clip(seg_dir / "000001.mp4", 10)
    _write_clip(seg_dir / "000002.mp4", 10)
    _write_clip(segments / "other-cam" / "000001.mp4", 10)
    images = FrameImages(camera, [tmp_path / "data", segments], seg_dir)
    # Camera-wide frame index 10, 12 = indices 0, 2 of the second segment.
    a = images.read(_frame(10, source=FrameSource((seg_dir / "000002.mp4").as_uri(), 0, 0.0)))
    b = images.read(_frame(12, source=FrameSource((seg_dir / "000002.mp4").as_uri(), 2, 0.08)))
    assert a.shape == (96, 160, 3) and int(b.mean()) > int(a.mean())
    with pytest.raises(NoImage, match="not this camera"):
        images.read(_frame(13, source=FrameSource((segments / "other-cam" / "000001.mp4").as_uri(), 3, 0.12)))
    with pytest.raises(NoImage, match="without a source"):
        images.read(_frame(14))  # a live camera has no file of its own (source_path raises ValueError)
    with pytest.raises(NoImage, match="missing"):
        images.read(_frame(15, source=FrameSource((seg_dir / "000099.mp4").as_uri(), 0, 0.0)))  # pruned segment
    images.close()


def test_frame_location_of_an_old_message_is_the_camera_file(tmp_path):
    camera = Camera(id="cam", source=str(tmp_path / "c.mp4"), speed_limit_kmh=50)
    assert frame_location(_frame(7), camera, [tmp_path], None) == (tmp_path / "c.mp4", 7, 7 / 25)


# -- lag and budget ----------------------------------------------------------------------------------------
def test_lag_state_against_the_budget():
    assert L.lag_state(1.2, 2.0) == L.LAG_OK
    assert L.lag_state(2.0, 2.0) == L.LAG_OK
    assert L.lag_state(2.4, 2.0) == L.LAG_OVER
    assert L.lag_state(None, 2.0) == L.lag_state(1.0, None) == L.LAG_UNKNOWN
    text, css = L.lag_indicator(3.1, 2.0)
    assert text == "video 3.1 s behind capture (budget 2 s) · over budget" and css.endswith("stale")
    text, css = L.lag_indicator(0.8, 2.0, on_screen=False)
    assert text.startswith("results 0.8 s") and text.endswith("ok") and css.endswith("live")
    assert L.lag_indicator(None, 2.0)[0] == "no frames yet (budget 2 s)"
    stats = StreamStats("cam")
    assert stats.lag_s(T0) is None
    stats.record(_frame(0, ts=T0), T0 + 0.3)
    assert stats.lag_s(T0 + 1.5) == pytest.approx(1.5)


def test_playout_delay_stays_within_the_budget(demo_settings):
    buffers = LiveBuffers.from_settings(demo_settings)
    camera = demo_settings.camera(MOTORWAY)
    renderer = CameraRenderer(camera, buffers, threading.Event(), budget_s=2.0, margin_s=0.15)
    assert renderer.playout_delay(0.5) == pytest.approx(0.65)  # jitter buffer: lag + margin
    assert renderer.playout_delay(1.95) <= 2.0
    assert renderer.playout_delay(6.0) <= 2.0  # a lagging pipeline: skip ahead, do not fall behind
    assert CameraRenderer(camera, buffers, threading.Event()).playout_delay(6.0) == pytest.approx(6.15)
    streamer = MjpegStreamer(demo_settings, buffers, threading.Event())
    assert streamer.renderer(camera).budget_s == demo_settings.budget_s(camera) == 2.0


def test_video_keeps_up_with_a_lagging_pipeline(demo_settings, tmp_path):
    """Results arrive 3 s after capture against a 2 s budget: the video shows the newest frames as they arrive
    (within the pipeline's own lag), never the 3 s + jitter buffer, and marks predicted frames."""
    buffers = LiveBuffers.from_settings(demo_settings)
    stop = threading.Event()
    streamer = MjpegStreamer(demo_settings, buffers, stop)
    camera = demo_settings.camera(MOTORWAY)
    fps, start = 29.97, time.time()

    def feed() -> None:
        i = 0
        while not stop.is_set() and i < 150:
            while i < 150 and start + i / fps <= time.time() - 3.0:
                buffers.add(
                    _frame_msg(
                        camera_id=MOTORWAY,
                        frame_index=i,
                        pts_s=i / fps,
                        capture_ts=start + i / fps,
                        analysis="detected" if i % 3 == 0 else "predicted",
                        stride=3,
                        source={"uri": camera.source_uri(), "index": i, "pts_s": i / fps},
                    )
                )
                i += 1
            stop.wait(0.25)

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    got = []
    parts = streamer.stream(camera)
    deadline = time.time() + 6.0
    try:
        for part in parts:
            head = part.split(b"\r\n\r\n", 1)[0].decode()
            got.append((time.time(), dict(line.split(": ", 1) for line in head.split("\r\n")[1:])))
            if time.time() > deadline:
                break
    finally:
        parts.close()
        stop.set()
        thread.join()
    frames = [(t, h) for t, h in got if "X-Frame-Index" in h]
    assert len(frames) >= 10, "the video does not play"
    assert {h["X-Analysis"] for _, h in frames} == {"detected", "predicted"}
    assert all(h["X-Image"] == "1" for _, h in frames)
    delays = [t - float(h["X-Capture-Ts"]) for t, h in frames]
    # Shown as soon as due: the pipeline's 3 s plus the feed's 0.25 s batching, not 3 s + a jitter buffer.
    assert max(delays) < 3.25 + 1.0, max(delays)
    assert streamer.renderer(camera).stats.playout_delay_s <= 2.0


def test_hostile_sources_show_frames_without_their_image(demo_settings, tmp_path, caplog):
    buffers = LiveBuffers.from_settings(demo_settings)
    stop = threading.Event()
    streamer = MjpegStreamer(demo_settings, buffers, stop)
    camera = demo_settings.camera(MOTORWAY)
    secret = tmp_path / "outside" / "clip.mp4"
    secret.parent.mkdir()
    shutil.copy(camera.source_path(), secret)  # a real video: only the path check keeps it out
    now = time.time()
    for i in range(60):
        buffers.add(
            _frame_msg(
                camera_id=MOTORWAY,
                frame_index=i,
                pts_s=i / 30,
                capture_ts=now - 0.5 + i / 30,
                source={"uri": secret.as_uri(), "index": i, "pts_s": i / 30},
                vehicles=[{"id": 1, "cls": "car", "box": [400, 300, 560, 420], "kmh": 90.0, "over": False}],
            )
        )
    caplog.set_level(logging.WARNING, logger="trafficstream.dashboards.video")
    got = []
    parts = streamer.stream(camera)
    deadline = time.time() + 4.0
    try:
        for part in parts:
            head = part.split(b"\r\n\r\n", 1)[0].decode()
            got.append(dict(line.split(": ", 1) for line in head.split("\r\n")[1:]))
            if time.time() > deadline or sum("X-Frame-Index" in h for h in got) >= 5:
                break
    finally:
        parts.close()
        stop.set()
        streamer.close()
    shown = [h for h in got if "X-Frame-Index" in h]
    assert shown and all(h["X-Image"] == "0" for h in shown)  # the frames (boxes, caption) without the image
    assert [r.getMessage() for r in caplog.records if "allowed roots" in r.getMessage()].__len__() == 1


# -- health: analysis and source events --------------------------------------------------------------------
def _health(batch_id: int, ts: float, analysis: dict | None, batch_ms: float = 1000.0) -> dict:
    return batch_health_message(
        batch_id=batch_id, batch_ms=batch_ms, frames=30, ts=ts, lag={}, delay_s={}, counts={}, analysis=analysis
    )


def _a(detected: int, predicted: int = 0, skipped: int = 0, stride: int = 1) -> dict:
    return {"detected": detected, "predicted": predicted, "skipped": skipped, "stride": stride, "budget_s": 2.0}


def test_health_aggregates_the_analysis_per_camera():
    b = LiveBuffers(["cam", "idle"])
    assert b.analysis("cam") is None
    b.add(_health(0, T0, None))  # an older job: no analysis
    assert b.analysis("cam") is None
    for i in range(12):  # 1 s batches back to back: 10 detected + 20 predicted frames each, 2 skipped
        b.add(_health(i + 1, T0 + 1 + i, {"cam": _a(10, 20, 2, stride=3), "idle": _a(25, stride=1)}))
    b.add(_health(13, T0 + 13, {"cam": _a(10, 20, 2, stride=3)}))  # "idle" has no frames in the last batches
    a = b.analysis("cam", window_s=10.0)
    assert a is not None
    assert a.batches == 10 and a.detected == 100 and a.predicted == 200 and a.skipped == 20
    assert a.detected_fps == pytest.approx(10.0)  # 100 frames over the 10 s the batches cover
    assert a.stride == 3 and a.budget_s == 2.0 and a.skipped_total == 26
    idle = b.analysis("idle", window_s=10.0)
    assert idle is not None and idle.detected == 225 and idle.stride == 1
    assert summarize_analysis(b.health(), "nobody") is not None  # reported, but no frames of it: zero rate
    assert summarize_analysis(b.health(), "nobody").detected_fps == 0.0  # type: ignore[union-attr]
    # Absurd numbers do not survive.
    absurd = {"cam": {"detected": -5, "predicted": "x", "skipped": 1e300, "stride": 0}, "idle": "lots"}
    b.add({**_health(14, T0 + 14, None), "analysis": absurd})  # as if it slipped past validation
    a = b.analysis("cam", window_s=0.5)
    assert a is not None and (a.detected, a.predicted, a.skipped, a.stride) == (0, 0, 0, 3)
    assert L.format_analysis(b.analysis("cam")) == ("9.0/s", "every 3", "180", "18 (26 total)")
    assert L.format_analysis(None) == ("–", "–", "–", "–")


def test_source_events_are_kept_per_camera_not_as_batches():
    b = LiveBuffers(["cam"])
    lost = camera_event_message(camera_id="cam", batch_id=None, ts=T0, event="source_lost", cause="disconnected")
    back = camera_event_message(camera_id="cam", batch_id=None, ts=T0 + 4.5, event="source_restored", gap_s=4.5)
    assert b.add(lost) and not b.add(lost)  # a replay is a duplicate
    events = b.camera_events("cam")
    assert events.source_down and events.last_lost["cause"] == "disconnected"  # type: ignore[index]
    assert "lost" in L.format_source_events(events) and "disconnected" in L.format_source_events(events)
    assert b.add(back)
    events = b.camera_events("cam")
    assert not events.source_down and events.last_restored["gap_s"] == 4.5  # type: ignore[index]
    assert L.format_source_events(events).startswith("restored") and "after 4.5 s" in L.format_source_events(events)
    assert b.health() == []  # camera events are not micro-batches
    b.add(camera_event_message(camera_id="cam", batch_id=3, ts=T0 + 5, event="state_reset", cause="corrupt"))
    assert b.camera_events("cam").resets == 1
    assert not b.add(camera_event_message(camera_id="ghost", batch_id=None, ts=T0, event="source_lost"))
    assert L.format_source_events(b.camera_events("ghost")) == "–"


def test_health_panel_shows_each_camera_against_its_budget():
    from synthetic_results import health_message

    b = LiveBuffers(["cam", "idle"])
    b.add(health_message(1, 900.0, 30, T0, {"cam": 4}, {"cam": _a(10, 20, 3, stride=3)}))
    b.add(camera_event_message(camera_id="idle", batch_id=None, ts=T0, event="source_lost", cause="ended"))
    rows = [
        L.CameraHealth("cam", 2.0, 1.3, True, b.analysis("cam"), b.camera_events("cam")),
        L.CameraHealth("idle", 2.0, 9.0, False, b.analysis("idle"), b.camera_events("idle")),
    ]
    text = str(L.health_panel(b.health()[-1], rows, 29.7, 1.3))
    for expected in ("1.3 s (video)", "9.0 s (results)", "over budget", "every 3", "(ended)", "consumer lag"):
        assert expected in text, expected
    assert "No pipeline health" in str(L.health_panel(None, ["cam"], None, None))


def test_lag_badge_and_health_callbacks(demo_settings):
    from test_dashboard_app import dash_call, key_of

    from trafficstream.dashboards.app import create_app, get_context

    buffers = LiveBuffers.from_settings(demo_settings)
    now = time.time()
    buffers.add(_frame_msg(camera_id=MOTORWAY, frame_index=1, pts_s=0.03, capture_ts=now - 5.0, processed_ts=now))
    buffers.add(_health(1, now - 1, {MOTORWAY: _a(10, 20, 3, stride=3)}))
    buffers.add(camera_event_message(camera_id=MOTORWAY, batch_id=None, ts=now - 2, event="source_lost", cause="ended"))
    app = create_app(demo_settings, buffers=buffers, start_consumer=False)
    try:
        client = app.server.test_client()
        inputs = {"tick.n_intervals": 1, "camera.value": MOTORWAY}
        status, out = dash_call(app, client, key_of(f"{L.VIDEO_LAG}.children", f"{L.VIDEO_LAG}.className"), inputs)
        assert status == 200
        badge = out["response"][L.VIDEO_LAG]
        assert badge["children"].startswith("results 5.") and "over budget" in badge["children"]
        assert badge["className"].endswith("stale")
        key = key_of(
            "health-kpis.children",
            "health-chart.figure",
            "health-state.data",
            "stream-status.children",
            "stream-status.className",
        )
        status, out = dash_call(app, client, key, inputs)
        text = json.dumps(out["response"]["health-kpis"])
        assert status == 200 and "every 3" in text and "(ended)" in text and "over budget" in text
    finally:
        get_context(app).close()
