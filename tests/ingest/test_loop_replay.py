"""File cameras replayed as live ones (``--loop``): one continuous camera sequence over many passes."""

from __future__ import annotations

import time

import pytest

from trafficstream.cameras import Camera
from trafficstream.ingest.worker import ingest_camera
from trafficstream.messages import FrameRef
from trafficstream.video import FrameReader, VideoFileSource

CLIP = "highway_640x360.mp4"


class CollectingPublisher:
    def __init__(self) -> None:
        self.refs: list[FrameRef] = []

    def publish(self, key: str, value: bytes) -> None:
        ref = FrameRef.from_json(value)
        assert key == ref.camera_id
        self.refs.append(ref)


@pytest.fixture(scope="module")
def clip(data_dir):
    path = data_dir / "videos" / CLIP
    with VideoFileSource(path) as src:
        pts = [f.pts_s for f in src.frames()]
        fps = src.info.fps
    return path, pts, fps


def test_loop_continues_the_camera_sequence_over_passes(clip) -> None:
    path, pts, fps = clip
    n = len(pts)
    cam = Camera(id="loop-cam", source=str(path), speed_limit_kmh=100)
    pub = CollectingPublisher()
    total = 2 * n + 25
    assert ingest_camera(cam, pub, loop=True, max_frames=total) == total
    refs = pub.refs
    assert [r.frame_index for r in refs] == list(range(total))
    assert all(b.pts_s > a.pts_s for a, b in zip(refs, refs[1:], strict=False))
    duration = pts[-1] + 1.0 / fps
    for r in refs:
        k, i = divmod(r.frame_index, n)
        assert r.source_index == i and r.source_pts_s == pytest.approx(pts[i], abs=1e-6)
        assert r.pts_s == pytest.approx(k * duration + pts[i], abs=1e-5)
    # Every reference names a real frame of the file (what the job's FrameReader checks), across the seams.
    reader = FrameReader(path)
    try:
        for r in refs[n - 3 : n + 3] + refs[2 * n - 2 : 2 * n + 2]:
            assert reader.read(r.index_in_source, r.pts_in_source).shape == (r.height, r.width, 3)
    finally:
        reader.close()


def test_realtime_loop_is_paced_and_bounded_by_seconds(clip) -> None:
    path, _, fps = clip
    cam = Camera(id="loop-cam", source=str(path), speed_limit_kmh=100)
    pub = CollectingPublisher()
    t0 = time.time()
    published = ingest_camera(cam, pub, realtime=True, loop=True, seconds=1.0)
    elapsed = time.time() - t0
    assert 0.9 <= elapsed < 2.0
    assert abs(published - fps * 1.0) <= 3  # about one second of frames, not the whole clip
    assert all(t0 <= r.capture_ts <= t0 + elapsed for r in pub.refs)


def test_without_loop_nothing_changes(clip) -> None:
    path, pts, _ = clip
    cam = Camera(id="file-cam", source=str(path), speed_limit_kmh=100)
    pub = CollectingPublisher()
    assert ingest_camera(cam, pub, max_frames=5) == 5
    assert [(r.frame_index, r.source_index, r.source_pts_s) for r in pub.refs] == [(i, None, None) for i in range(5)]
    assert b"source_index" not in pub.refs[0].to_json()
