"""Evidence clips: the offender followed and kept sharp, everybody else anonymised, a playable MP4."""

from __future__ import annotations

import av
import numpy as np

from trafficstream.config import DetectorSettings, PrivacySettings, default_data_dir
from trafficstream.models.classes import ROAD_USER_CLASS_IDS
from trafficstream.models.detector import build_detector
from trafficstream.streaming_jobs import evidence_clip as ec


def _boxes(*rows: tuple[float, float, float, float]) -> np.ndarray:
    return np.asarray(rows, np.float32).reshape(-1, 4)


def test_follow_offender_both_ways_coasting_over_short_misses() -> None:
    # the offender moves 10 px a frame; another vehicle stays put; frame 1 misses the offender
    frames = [
        _boxes((0, 0, 50, 30), (300, 0, 350, 30)),
        _boxes((300, 0, 350, 30)),
        _boxes((20, 0, 70, 30), (300, 0, 350, 30)),
        _boxes((30, 0, 80, 30), (300, 0, 350, 30)),
        _boxes((40, 0, 90, 30)),
    ]
    got = ec.follow_offender(frames, 3, (31, 1, 79, 29))
    assert got[3] == (30, 0, 80, 30)  # snapped to the detection
    assert got[4] == (40, 0, 90, 30) and got[2] == (20, 0, 70, 30)
    assert got[1] == (20, 0, 70, 30)  # missed: the last box coasts
    assert got[0] == (0, 0, 50, 30)  # found again (IoU with the coasted box >= 0.3)
    assert ec.follow_offender([], 0, (0, 0, 1, 1)) == []


def test_a_lost_offender_is_not_invented() -> None:
    frames = [_boxes((500, 0, 550, 30))] * 8 + [_boxes((0, 0, 50, 30))]
    got = ec.follow_offender(frames, 8, (0, 0, 50, 30))
    assert got[8] is not None and got[: 8 - ec.MAX_COAST_FRAMES] == [None] * (8 - ec.MAX_COAST_FRAMES)


def test_anonymised_frames_keep_the_offender_sharp() -> None:
    rng = np.random.default_rng(3)
    image = np.repeat(np.repeat(rng.integers(0, 256, (45, 80, 3), dtype=np.uint8), 8, 0), 8, 1)  # 360 x 640
    offender, other = (40.0, 40.0, 200.0, 160.0), (320.0, 40.0, 480.0, 160.0)
    (out,) = ec.anonymised_frames([image], [_boxes(offender, other)], [offender], PrivacySettings())
    keep = (slice(50, 150), slice(50, 190))
    hide = (slice(45, 155), slice(325, 475))
    assert np.array_equal(out[keep], image[keep])
    assert out[hide].astype(float).var() < 0.2 * image[hide].astype(float).var()
    (lost,) = ec.anonymised_frames([image], [_boxes(offender, other)], [None], PrivacySettings())
    assert lost[keep].astype(float).var() < 0.2 * image[keep].astype(float).var()  # not found: hidden too


def test_clip_of_the_real_motorway_with_the_real_detector(tmp_path) -> None:
    source = default_data_dir() / "videos" / "highway_overpass_1280x720.mp4"
    det = DetectorSettings()
    detector = build_detector(
        det.backend,
        default_data_dir() / "models" / "yolov8n.onnx",
        input_size=(det.input_height, det.input_width),
        classes=ROAD_USER_CLASS_IDS,
        threads=2,
        batch_size=4,
    )
    centre_pts = 1.8  # two cars side by side on the near counting line (bench/results/line_counts.json)
    images, times, rate = ec.read_clip(source, centre_pts, 0.0, 0.0, 1)
    assert len(images) == 1 and abs(times[0] - centre_pts) <= 0.5 / rate
    found = detector(images[0]).xyxy
    assert len(found) >= 2
    offender = tuple(float(v) for v in found[np.argmax(found[:, 3])])  # the nearest road user
    target = ec.clip_path(tmp_path, "motorway-overpass", 7, 150)
    assert ec.render_clip(target, source, centre_pts, offender, detector, PrivacySettings(), 0.5, 0.5, 100)
    with av.open(str(target)) as clip:
        stream = clip.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in clip.decode(stream)]
        assert stream.codec_context.name == "h264"
    assert abs(len(frames) - round(rate) - 1) <= 1  # 0.5 s either side of the evidence frame
    assert not list(tmp_path.rglob("*.part"))
    # on the evidence frame: the offender's box is the original, the other vehicles are pixelated
    centre = min(range(len(frames)), key=lambda i: abs(i - len(frames) // 2))
    x1, y1, x2, y2 = (int(v) for v in offender)
    original = images[0][y1 + 4 : y2 - 4, x1 + 4 : x2 - 4].astype(float)
    shown = frames[centre][y1 + 4 : y2 - 4, x1 + 4 : x2 - 4].astype(float)
    assert np.corrcoef(original.ravel(), shown.ravel())[0, 1] > 0.8
    others = [b for b in found if tuple(float(v) for v in b) != offender and (b[3] - b[1]) >= 24]
    for b in others:
        bx1, by1, bx2, by2 = (int(v) for v in b)
        if ec.box_iou(np.asarray([offender], np.float32), np.asarray([b], np.float32))[0, 0] > 0:
            continue  # overlapping the offender: partly kept
        before = images[0][by1:by2, bx1:bx2].astype(float)
        after = frames[centre][by1:by2, bx1:bx2].astype(float)
        assert np.abs(after - before).mean() > 2 or after.var() < 0.5 * before.var()


def test_a_fast_offender_is_followed_at_its_velocity() -> None:
    """At a reduced clip rate the offender moves further than its own width between frames: the box where it
    should be (its last box moved on at its velocity) finds it; a parked vehicle beside the path is not taken."""
    frames = [_boxes((40.0 * k, 0, 40.0 * k + 50, 30), (115, 40, 165, 70)) for k in range(8)]
    got = ec.follow_offender(frames, 2, (80, 0, 130, 30))
    assert got == [(40.0 * k, 0.0, 40.0 * k + 50, 30.0) for k in range(8)]


def test_a_clip_at_a_reduced_rate_keeps_the_evidence_frame(tmp_path) -> None:
    source = default_data_dir() / "videos" / "highway_overpass_1280x720.mp4"
    centre_pts = 1.8
    full, full_times, rate = ec.read_clip(source, centre_pts, 1.0, 1.0, 240)
    every, every_times, slow = ec.read_clip(source, centre_pts, 1.0, 1.0, 240, max_fps=rate / 3)
    assert slow == rate / 3 and abs(len(every) - len(full) / 3) <= 1
    assert min(abs(t - centre_pts) for t in every_times) <= 0.5 / rate  # the evidence frame itself is kept
    assert set(every_times) <= set(full_times)
    assert all(round((b - a) * rate) == 3 for a, b in zip(every_times, every_times[1:], strict=False))


def test_clips_are_rendered_by_a_low_priority_helper_process(tmp_path) -> None:
    """``evidence.clip_nice``: the clip is made in a helper process at that niceness (the live micro-batches
    get the cores first), and it is the same playable clip."""
    import os

    from trafficstream.config import Settings, settings_to_json
    from trafficstream.streaming_jobs import evidence

    settings = Settings()
    assert settings.evidence.clip_nice == 10
    source = default_data_dir() / "videos" / "highway_overpass_1280x720.mp4"
    target = ec.clip_path(tmp_path, "motorway-overpass", 3, 54)
    assert evidence._render_clip_low(settings_to_json(settings), target, source, 1.8, (560.0, 420.0, 700.0, 560.0))
    with av.open(str(target)) as clip:
        frames = sum(1 for _ in clip.decode(clip.streams.video[0]))
    assert 37 <= frames <= 41  # 2 s either side at 10 frames/s (every 3rd frame of 29.97 fps: 39)
    helper = evidence._clip_helper(settings.evidence.clip_nice)
    assert helper.submit(os.getpid).result() != os.getpid()
    assert helper.submit(os.nice, 0).result() >= os.nice(0) + 10


def test_the_violation_names_its_clip_before_the_clip_is_made(tmp_path, monkeypatch) -> None:
    """``render_evidence`` makes the snapshot and names the clip (row and results-topic message carry its URI)
    without rendering it, so the sink can record and publish the violation first; ``render_clips`` then makes
    the clip at that URI. A violation whose frame cannot be read names no clip, and none is made."""
    import json

    import pandas as pd

    from trafficstream.config import EvidenceSettings, Settings, settings_to_json
    from trafficstream.streaming_jobs import evidence
    from trafficstream.video import uri_to_path

    monkeypatch.setattr(evidence, "_evidence_root", lambda _: tmp_path)
    monkeypatch.setattr(evidence, "_keep_segment", lambda *_: None)
    settings = Settings(evidence=EvidenceSettings(clip_before_s=0.3, clip_after_s=0.3, clip_nice=0))
    source = default_data_dir() / "videos" / "highway_overpass_1280x720.mp4"
    payload = {
        "track_id": 3,
        "class_name": "car",
        "speed_kmh": 131.0,
        "limit_kmh": 100.0,
        "over_s": 0.8,
        "source_uri": source.resolve().as_uri(),
        "x1": 560.0,
        "y1": 420.0,
        "x2": 700.0,
        "y2": 560.0,
    }
    missing = {**payload, "track_id": 4, "source_uri": (tmp_path / "gone.mp4").as_uri()}
    rows = pd.DataFrame(
        [
            {"camera_id": "motorway", "frame_index": 54, "pts_s": 1.8, "capture_ts": 1.8, "payload": json.dumps(p)}
            for p in (payload, missing)
        ]
    )
    (named,) = list(evidence.render_evidence(settings_to_json(settings), iter([rows])))
    clip_uri, no_clip = named.evidence_clip_uri
    assert clip_uri == ec.clip_path(tmp_path, "motorway", 3, 54).resolve().as_uri()
    assert not uri_to_path(clip_uri).exists()  # named, not made yet
    assert json.loads(named.message[0])["clip_uri"] == clip_uri
    assert no_clip is None and named.evidence_uri[1] is None

    (made,) = list(evidence.render_clips(settings_to_json(settings), iter([named])))
    assert made.clip_made.tolist() == [True, False]
    with av.open(str(uri_to_path(clip_uri))) as clip:
        assert sum(1 for _ in clip.decode(clip.streams.video[0])) >= 5  # 0.3 s either side at 10 frames/s
    assert sorted(p.name for p in tmp_path.rglob("*.mp4")) == ["track3_frame54.mp4"]
