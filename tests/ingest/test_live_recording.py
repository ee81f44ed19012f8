"""Live recording into segments, without a broker: a local file (and the RTSP server) as the camera."""

from __future__ import annotations

import io
import json
import logging
import os
import threading
import time
from itertools import islice
from pathlib import Path

import pytest

from trafficstream.cameras import Camera
from trafficstream.config import Settings, load_settings
from trafficstream.ingest.live import LiveRecorder, backoff_delays
from trafficstream.ingest.segments import STATE_FILE, load_state, mark_evidence, sweep_segments
from trafficstream.messages import FrameRef
from trafficstream.video import FrameReader, uri_to_path

CLIP = "highway_overpass_1280x720.mp4"  # B-frames and a 3 s GOP: the harder case for remuxing


class CollectingPublisher:
    def __init__(self) -> None:
        self.refs: list[FrameRef] = []

    def publish(self, key: str, value: bytes) -> None:
        self.refs.append(FrameRef.from_json(value))


def _settings(tmp_path: Path, *extra: str) -> Settings:
    return load_settings(
        None,
        [f"storage.var_dir={tmp_path}", "live.segment_seconds=1", "live.reconnect_initial_s=0.05", *extra],
        require_cameras=False,
    )


def _record_one_pass(settings: Settings, camera: Camera, url: str) -> tuple[LiveRecorder, CollectingPublisher]:
    """Record until the file ends once (the recorder reports it as source_lost / ended)."""
    pub = CollectingPublisher()
    stop = threading.Event()

    def on_event(msg: dict) -> None:
        if msg["event"] == "source_lost":
            stop.set()

    recorder = LiveRecorder(camera, settings, pub, on_event, stop, url=url)
    recorder.run()
    return recorder, pub


def _check_refs_decode(refs: list[FrameRef]) -> None:
    readers: dict[Path, FrameReader] = {}
    try:
        for ref in refs:
            path = uri_to_path(ref.source_uri)
            reader = readers.setdefault(path, FrameReader(path))
            assert reader.read(ref.index_in_source, ref.pts_in_source).shape == (ref.height, ref.width, 3)
    finally:
        for reader in readers.values():
            reader.close()


def test_segments_hold_exactly_the_published_frames(tmp_path, data_dir) -> None:
    settings = _settings(tmp_path)
    cam = Camera(id="live-cam", source="rtsp://127.0.0.1:1/cam", speed_limit_kmh=100)
    recorder, pub = _record_one_pass(settings, cam, str(data_dir / "videos" / CLIP))
    refs = pub.refs
    assert len(refs) == 335  # every frame of the clip, each in exactly one segment
    assert [r.frame_index for r in refs] == list(range(len(refs)))
    assert all(b.pts_s > a.pts_s for a, b in zip(refs, refs[1:], strict=False))
    folder = settings.segment_dir(cam.id)
    segments = sorted(folder.glob("*.mkv"))
    assert len(segments) == recorder.segments == 4  # cut at the keyframes (every 90 frames) after >= 1 s
    assert {uri_to_path(r.source_uri) for r in refs} == {s.resolve() for s in segments}
    assert not list(folder.glob(".*.part"))
    for seg in segments:  # each segment's frames are numbered from 0 in it
        idx = [r.source_index for r in refs if uri_to_path(r.source_uri) == seg.resolve()]
        assert idx == list(range(len(idx)))
    _check_refs_decode(refs)
    assert [e["event"] for e in recorder.events] == ["source_lost"] and recorder.events[0]["cause"] == "ended"


def test_sequence_continues_across_an_ingest_restart(tmp_path, data_dir) -> None:
    settings = _settings(tmp_path, "live.segment_seconds=2")
    cam = Camera(id="live-cam", source="rtsp://127.0.0.1:1/cam", speed_limit_kmh=100)
    url = str(data_dir / "videos" / "highway_640x360.mp4")
    _, first = _record_one_pass(settings, cam, url)
    state_file = settings.segment_dir(cam.id) / STATE_FILE
    state = json.loads(state_file.read_text())
    assert state["v"] == 1 and state["next_index"] == len(first.refs) == 341
    _, second = _record_one_pass(settings, cam, url)  # a new process: state comes from the file
    assert second.refs[0].frame_index == first.refs[-1].frame_index + 1
    assert second.refs[0].pts_s > first.refs[-1].pts_s
    assert load_state(settings.segment_dir(cam.id)).next_index == 2 * 341
    _check_refs_decode(first.refs[-3:] + second.refs[:3])


def test_retention_keeps_evidence_longer(tmp_path) -> None:
    now = time.time()
    folder = tmp_path / "cam"
    folder.mkdir()

    def segment(name: str, age_h: float) -> Path:
        p = folder / name
        p.write_bytes(b"x")
        os.utime(p, (now - age_h * 3600, now - age_h * 3600))
        return p

    fresh, old, kept, expired = (
        segment("seg-1.mkv", 1),
        segment("seg-2.mkv", 7),
        segment("seg-3.mkv", 7),
        segment("seg-4.mkv", 800),
    )
    mark_evidence(kept)
    mark_evidence(expired)
    deleted = sweep_segments(folder, 6 * 3600, 720 * 3600, now)
    assert sorted(deleted) == [old, expired]
    assert fresh.exists() and kept.exists() and (folder / "seg-3.mkv.keep").exists()
    assert not (folder / "seg-4.mkv.keep").exists()
    with pytest.raises(FileNotFoundError):
        mark_evidence(old)


def test_backoff_doubles_up_to_the_maximum() -> None:
    assert list(islice(backoff_delays(0.5, 3.0), 6)) == [0.5, 1.0, 2.0, 3.0, 3.0, 3.0]


def test_credentials_never_logged(tmp_path, caplog, capfd) -> None:
    settings = _settings(tmp_path, "live.open_timeout_s=1")
    secret = "s3cr3t-pw"
    from trafficstream.infra.rtsp_server import free_port

    cam = Camera(id="live-cam", source=f"rtsp://admin:{secret}@127.0.0.1:{free_port()}/cam", speed_limit_kmh=100)
    stop = threading.Event()
    events: list[dict] = []

    def on_event(msg: dict) -> None:
        events.append(msg)
        stop.set()

    # A handler that fails (here: its stream is closed) makes logging print the exception being handled to
    # stderr; the open error's message holds the raw URL, so nothing may be logged while it is live.
    broken = io.StringIO()
    handler = logging.StreamHandler(broken)
    broken.close()
    logging.getLogger("trafficstream.ingest").addHandler(handler)
    try:
        with caplog.at_level(logging.DEBUG):
            LiveRecorder(cam, settings, CollectingPublisher(), on_event, stop).run()
    finally:
        logging.getLogger("trafficstream.ingest").removeHandler(handler)
    out, err = capfd.readouterr()
    assert "Logging error" in err  # the broken handler did fail
    assert events and events[0]["event"] == "source_lost" and events[0]["cause"] == "open_failed"
    assert "rtsp://***@127.0.0.1" in caplog.text
    for text in (caplog.text, out, err, json.dumps(events)):
        assert secret not in text and "admin" not in text
