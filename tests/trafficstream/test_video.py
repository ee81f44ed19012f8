import numpy as np
import pytest

from trafficstream.video import (
    FrameMismatch,
    FrameNotFound,
    FrameReader,
    KeyIndex,
    ReaderPool,
    SourceMissing,
    SourceUnreadable,
    VideoFileSource,
    is_under_roots,
    key_index,
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


@pytest.fixture(scope="module")
def motorway(data_dir):
    """The 1280x720 sample: keyframes every 90 frames, so jumps can enter the decoder at a keyframe."""
    path = data_dir / "videos" / "highway_overpass_1280x720.mp4"
    with VideoFileSource(path) as src:
        frames = [(f.index, f.pts_s, f.image) for f in src.frames()]
    return path, frames


def test_key_index_lists_every_frame_and_its_keyframes(motorway):
    path, frames = motorway
    keys = key_index(path)
    assert keys is not None and len(keys.pts) == len(frames)
    assert keys.keyframes[0] == 0 and len(keys.keyframes) >= 2
    assert keys.keyframe_at_or_before(keys.keyframes[1] + 5) == keys.keyframes[1]
    assert keys.keyframe_at_or_before(keys.keyframes[1] - 1) == 0


def test_reader_jumps_to_keyframes_and_returns_the_same_frames(motorway):
    """Out of order and far apart (other workers' slices, shed frames, replays): every frame is the one a
    sequential decode gives, and far fewer frames are decoded than by restarting from the first."""
    path, frames = motorway
    keys = key_index(path)
    second = int(keys.keyframes[1])
    order = [second + 20, 3, len(frames) - 2, second + 1, second + 2, 40, second]
    reader = FrameReader(path)
    for i in order:
        index, pts, image = frames[i]
        assert np.array_equal(reader.read(index, pts), image), i
    assert reader.seeks >= 3
    restart_cost = sum(i + 1 for i in order)  # decoding from the first frame each time
    assert reader.decoded < restart_cost / 2
    # sequential reading goes on without seeking when no keyframe lies between
    before = reader.seeks
    for i in range(second + 1, second + 6):
        assert np.array_equal(reader.read(*frames[i][:2]), frames[i][2])
    assert reader.seeks == before


def test_a_bogus_reference_after_a_jump_is_still_refused(motorway):
    path, frames = motorway
    reader = FrameReader(path)
    index, pts, _ = frames[200]
    with pytest.raises(FrameMismatch):
        reader.read(index + 1, pts)  # a real timestamp under another frame's index
    assert isinstance(reader._keys, KeyIndex)  # one bad reference does not stop the seeking
    assert np.array_equal(reader.read(*frames[250][:2]), frames[250][2])


def test_a_packet_index_that_disagrees_with_the_frames_falls_back_to_decoding(motorway):
    """A damaged file whose packets do not match its decoded frames: the frame is still found, by decoding
    from the start, and the reader stops seeking in it."""
    path, frames = motorway
    reader = FrameReader(path)
    good = key_index(path)
    # a packet the decoder drops (as a corrupt one): past it, every packet's rank is one above its frame's index
    pts = np.insert(good.pts, 1, good.pts[0] + 1)
    reader._keys = KeyIndex(pts, np.where(good.keyframes > 0, good.keyframes + 1, 0))
    index, pts, image = frames[200]
    assert np.array_equal(reader.read(index, pts), image)
    assert reader._keys is None
