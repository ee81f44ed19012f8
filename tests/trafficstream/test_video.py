import numpy as np
import pytest

from trafficstream.video import (
    FrameNotFound,
    FrameReader,
    ReaderPool,
    SourceMissing,
    SourceUnreadable,
    VideoFileSource,
    is_under_roots,
    uri_to_path,
)


@pytest.fixture(scope="module")
def clip(data_dir):
    return data_dir / "videos" / "highway_640x360.mp4"


@pytest.fixture(scope="module")
def index(clip):
    with VideoFileSource(clip) as src:
        return [(f.index, f.pts_s) for f in src.frames()]


def test_source_walks_every_frame_with_container_timestamps(clip, index):
    with VideoFileSource(clip) as src:
        assert (src.info.width, src.info.height) == (640, 360)
        assert 29 < src.info.fps < 31
    assert len(index) == 341
    pts = np.array([p for _, p in index])
    assert pts[0] == 0 and np.all(np.diff(pts) > 0)
    assert np.median(np.diff(pts)) == pytest.approx(1 / 29.97, rel=1e-3)


def test_reader_is_sequential_and_matches_by_pts(clip, index):
    reader = FrameReader(clip)
    with VideoFileSource(clip) as src:
        expected = {f.index: f.image for f in src.frames() if f.index in (0, 5, 6, 50)}
    for i in range(7):
        img = reader.read(*index[i])
    assert np.array_equal(img, expected[6])
    assert reader.decoded == 7 and reader.seeks == 0  # no seek, one decode per frame
    assert np.array_equal(reader.read(*index[50]), expected[50])
    assert reader.seeks == 0
    assert np.array_equal(reader.read(*index[5]), expected[5])  # backwards: one restart
    assert reader.seeks == 1


def test_reader_errors(clip, tmp_path, index):
    reader = FrameReader(clip)
    with pytest.raises(FrameNotFound):
        reader.read(10_000, 10_000 / 29.97)
    # A timestamp within half a frame selects that frame (container rounding must not dead-letter it).
    assert np.array_equal(reader.read(3, index[3][1] + 0.01), reader.read(*index[3]))
    with pytest.raises(SourceMissing):
        FrameReader(tmp_path / "nope.mp4")
    bad = tmp_path / "corrupt.mp4"
    bad.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(SourceUnreadable):
        FrameReader(bad).read(0, 0.0)


def test_pool_reuses_and_bounds(clip, data_dir):
    pool = ReaderPool(max_open=1)
    a = pool.get(clip)
    assert pool.get(clip) is a
    pool.get(data_dir / "videos" / "urban_cctv_640x360.mp4")
    assert pool.get(clip) is not a  # evicted by the bound
    pool.close()


def test_roots(tmp_path):
    root = tmp_path / "data"
    (root / "v").mkdir(parents=True)
    assert is_under_roots(root / "v" / "a.mp4", [root])
    assert not is_under_roots(root / ".." / "secret.mp4", [root])
    assert not is_under_roots(tmp_path / "elsewhere.mp4", [root])
    assert uri_to_path("file:///a%20b/c.mp4").as_posix() == "/a b/c.mp4"
    with pytest.raises(SourceUnreadable):
        uri_to_path("s3://bucket/x.mp4")
