"""VehicleTracker on synthetic scenes: constant-velocity boxes with pixel noise, missed detections, a
crossing pair, vehicles entering and leaving, and per-vehicle embeddings (a shared "vehicle" direction
plus an identity direction, unit-normalised, with per-frame noise), like MobileNetV2 embeddings of cars."""

from __future__ import annotations

import os
import pickle
import struct
import subprocess
import sys
import textwrap
import zlib
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from trafficstream.models import state_codec
from trafficstream.models.tracker import TrackedVehicle, TrackerStateError, VehicleTracker

D = 1280  # MobileNetV2 embedding size
W, H = 1280, 720
CAR, TRUCK, BUS = 2, 7, 5


@dataclass
class Vehicle:
    start: int  # first frame it is in the scene
    x: float  # box centre at `start`
    y: float
    vx: float  # px / frame
    vy: float
    w: float
    h: float
    class_id: int = CAR
    stop: int | None = None  # detector stops seeing it from this frame on (left / occluded for good)


@dataclass
class Frame:
    xyxy: np.ndarray  # (N, 4) float32
    confidence: np.ndarray  # (N,) float32
    class_id: np.ndarray  # (N,) int32
    embeddings: np.ndarray  # (N, D) float32
    vehicle: np.ndarray  # (N,) ground-truth vehicle index


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def make_scene(
    vehicles: list[Vehicle],
    n_frames: int,
    seed: int,
    miss_prob: float = 0.05,
    box_noise: float = 1.0,
    emb_noise: float = 0.25,
    class_noise: float = 0.0,
) -> list[Frame]:
    rng = np.random.default_rng(seed)
    common = _unit(rng.normal(size=D))
    # pairwise cosine distance between vehicles ~0.5, frame-to-frame of one vehicle ~0.03-0.06
    bases = [_unit(0.7 * common + 0.7 * _unit(rng.normal(size=D))) for _ in vehicles]
    frames = []
    for f in range(n_frames):
        rows = []
        for i, v in enumerate(vehicles):
            if f < v.start or (v.stop is not None and f >= v.stop):
                continue
            t = f - v.start
            cx, cy = v.x + v.vx * t, v.y + v.vy * t
            box = np.array([cx - v.w / 2, cy - v.h / 2, cx + v.w / 2, cy + v.h / 2])
            if box[2] < 0 or box[0] > W or box[3] < 0 or box[1] > H:
                continue  # out of view
            if rng.random() < miss_prob:
                continue
            box = np.clip(box + rng.normal(scale=box_noise, size=4), 0, [W, H, W, H])
            if box[2] - box[0] < 4 or box[3] - box[1] < 4:
                continue  # detector won't see a sliver at the frame edge
            cls = v.class_id if rng.random() >= class_noise else TRUCK if v.class_id != TRUCK else CAR
            emb = _unit(bases[i] + rng.normal(scale=emb_noise / np.sqrt(D), size=D))
            rows.append((box, rng.uniform(0.4, 0.95), cls, emb, i))
        order = rng.permutation(len(rows))  # detector output order is arbitrary
        rows = [rows[k] for k in order]
        frames.append(
            Frame(
                xyxy=np.array([r[0] for r in rows], dtype=np.float32).reshape(-1, 4),
                confidence=np.array([r[1] for r in rows], dtype=np.float32),
                class_id=np.array([r[2] for r in rows], dtype=np.int32),
                embeddings=np.array([r[3] for r in rows], dtype=np.float32).reshape(-1, D),
                vehicle=np.array([r[4] for r in rows], dtype=np.int64),
            )
        )
    return frames


def empty_frame() -> Frame:
    return Frame(
        np.empty((0, 4), np.float32),
        np.empty(0, np.float32),
        np.empty(0, np.int32),
        np.empty((0, D), np.float32),
        np.empty(0, np.int64),
    )


def update(tracker: VehicleTracker, frame: Frame, **kw) -> list[TrackedVehicle]:
    return tracker.update(frame.xyxy, frame.confidence, frame.class_id, frame.embeddings, **kw)


def steady_vehicles() -> list[Vehicle]:
    """Five lanes of traffic that stay in view for 100 frames, plus a pair crossing at frame 50."""
    return [
        Vehicle(0, 200, 100, 3.0, 0.2, 110, 60),
        Vehicle(0, 1000, 200, -2.5, 0.0, 90, 55, class_id=TRUCK),
        Vehicle(0, 250, 480, 4.0, -0.3, 120, 70),
        Vehicle(0, 1050, 600, -3.5, 0.0, 100, 65, class_id=BUS),
        Vehicle(0, 150, 700 - 40, 2.0, 0.0, 80, 50),
        # crossing pair: opposite directions, 20 px apart vertically, fully overlapping around frame 50
        Vehicle(0, 400, 330, 4.0, 0.0, 100, 60),
        Vehicle(0, 800, 350, -4.0, 0.0, 100, 60),
    ]


def traffic_vehicles(n_frames: int, seed: int, spawn_every: int = 8, spawn_until: int | None = None) -> list[Vehicle]:
    """Vehicles entering from either side at 6-14 px/frame (~100-200 frames in view)."""
    rng = np.random.default_rng(seed)
    lanes = [120, 240, 360, 480, 600]
    out = []
    for start in range(0, spawn_until or n_frames, spawn_every):
        lane = int(rng.integers(len(lanes)))
        speed = float(rng.uniform(6, 14))
        w, h = float(rng.uniform(70, 130)), float(rng.uniform(45, 75))
        left_to_right = lane % 2 == 0
        x, vx = (-w / 2 + 5, speed) if left_to_right else (W + w / 2 - 5, -speed)
        cls = int(rng.choice([CAR, CAR, CAR, TRUCK, BUS]))
        out.append(Vehicle(start, x, lanes[lane] + float(rng.normal(0, 8)), vx, 0.0, w, h, class_id=cls))
    return out


def ids_per_vehicle(frames: list[Frame], outputs: list[list[TrackedVehicle]]) -> dict[int, set[int]]:
    ids: dict[int, set[int]] = {}
    for frame, vehicles in zip(frames, outputs, strict=True):
        for tv in vehicles:
            assert tv.detection_index is not None
            ids.setdefault(int(frame.vehicle[tv.detection_index]), set()).add(tv.track_id)
    return ids


def run(frames: list[Frame], tracker: VehicleTracker, restore_every: int | None = None) -> tuple[list, VehicleTracker]:
    """Every frame's full output (all tracks) and ended ids, optionally thawing the state every k frames."""
    log = []
    for k, frame in enumerate(frames):
        if restore_every and k and k % restore_every == 0:
            tracker = VehicleTracker.from_bytes(tracker.to_bytes())
        log.append((update(tracker, frame, include_all=True), tracker.ended_track_ids(include_tentative=True)))
    return log, tracker


def new_tracker(**kw) -> VehicleTracker:
    params = {"max_age_frames": 10, "n_init": 3, "max_cosine_distance": 0.3, "max_iou_distance": 0.7, "nn_budget": 20}
    params.update(kw)
    return VehicleTracker(**params)


# -- identity ---------------------------------------------------------------------------------------


def test_steady_vehicles_keep_one_id_each() -> None:
    vehicles = steady_vehicles()
    frames = make_scene(vehicles, 100, seed=1)
    tracker = new_tracker()
    outputs = [update(tracker, f) for f in frames]

    ids = ids_per_vehicle(frames, outputs)
    assert sorted(ids) == list(range(len(vehicles)))
    assert all(len(s) == 1 for s in ids.values()), ids
    assert len({next(iter(s)) for s in ids.values()}) == len(vehicles)  # no two vehicles share an id
    # every frame from the 10th on reports every detected vehicle (confirmed, matched this frame)
    for frame, out in zip(frames[10:], outputs[10:], strict=True):
        assert sorted(tv.detection_index for tv in out) == list(range(len(frame.xyxy)))
    for frame, out in zip(frames, outputs, strict=True):
        for tv in out:
            assert tv.is_confirmed and tv.time_since_update == 0
            assert tv.xyxy == tuple(float(v) for v in frame.xyxy[tv.detection_index])  # exactly the input box
            assert tv.confidence == pytest.approx(float(frame.confidence[tv.detection_index]))
            assert tv.class_id == vehicles[frame.vehicle[tv.detection_index]].class_id


def test_crossing_pair_with_missed_detections_keeps_ids() -> None:
    vehicles = steady_vehicles()[5:]
    frames = make_scene(vehicles, 100, seed=7, miss_prob=0.15)
    tracker = new_tracker()
    ids = ids_per_vehicle(frames, [update(tracker, f) for f in frames])
    assert len(ids[0]) == 1 and len(ids[1]) == 1 and ids[0] != ids[1], ids


def test_empty_frames_coast_on_prediction() -> None:
    frames = make_scene(steady_vehicles()[:2], 20, seed=2, miss_prob=0.0)
    tracker = new_tracker()
    for f in frames:
        last = update(tracker, f)
    empty = empty_frame()
    assert update(tracker, empty) == []
    coasting = update(tracker, empty, include_all=True)
    assert [tv.track_id for tv in coasting] == [tv.track_id for tv in sorted(last, key=lambda t: t.track_id)]
    for tv in coasting:
        assert tv.time_since_update == 2 and tv.confidence is None and tv.detection_index is None
    # the prediction keeps moving: vehicle 0 drives right at 3 px/frame
    moved = {tv.track_id: tv.xyxy for tv in coasting}
    before = {tv.track_id: tv.xyxy for tv in last}
    dx = [moved[t][0] - before[t][0] for t in before]
    assert any(4 < abs(d) < 8 for d in dx), dx
    # plain arrays with no rows at all (and no embeddings) are accepted too
    assert tracker.update(np.empty((0, 4)), [], [], np.empty((0, D))) == []


def test_degenerate_boxes_do_not_shift_embeddings() -> None:
    """deep-sort-realtime drops w/h <= 0 boxes but not their embeddings; the wrapper must drop both."""
    vehicles = steady_vehicles()[:3]
    frames = make_scene(vehicles, 40, seed=3, miss_prob=0.0)
    tracker = new_tracker()
    rng = np.random.default_rng(0)
    outputs = []
    for k, f in enumerate(frames):
        # a zero-width box first, with a garbage embedding, then the real detections
        bad = np.array([[500, 300, 500, 340]], np.float32)
        f2 = Frame(
            np.vstack([bad, f.xyxy]),
            np.r_[0.9, f.confidence],
            np.r_[BUS, f.class_id].astype(np.int32),
            np.vstack([_unit(rng.normal(size=(1, D))), f.embeddings]).astype(np.float32),
            np.r_[-1, f.vehicle],
        )
        out = update(tracker, f2)
        assert all(tv.detection_index != 0 for tv in out)
        outputs.append(out)
        frames[k] = f2
    ids = ids_per_vehicle(frames, outputs)
    assert all(len(s) == 1 for s in ids.values()) and len(ids) == 3, ids


def test_class_is_majority_vote_over_the_track() -> None:
    vehicles = steady_vehicles()[:4]
    frames = make_scene(vehicles, 80, seed=4, class_noise=0.25)
    tracker = new_tracker()
    history: dict[int, list[int]] = {}  # track id -> classes of its matched detections
    seen_flip = False
    for f in frames:
        for tv in update(tracker, f, include_all=True):
            if tv.detection_index is None:
                continue
            classes = history.setdefault(tv.track_id, [])
            classes.append(int(f.class_id[tv.detection_index]))
            counts = Counter(classes)
            top = max(counts.values())
            expected = next(c for c in reversed(classes) if counts[c] == top)  # ties: most recent
            assert tv.class_id == expected
            seen_flip |= tv.class_id != classes[-1]
    assert seen_flip  # the vote did overrule a single noisy detection
    # after 80 frames with 25 % wrong labels, every track reports its vehicle's true class
    final = frames[-1]
    for tv in update(tracker, final):
        assert tv.class_id == vehicles[final.vehicle[tv.detection_index]].class_id


# -- persistence ------------------------------------------------------------------------------------


def roundtrip_scene() -> list[Frame]:
    vehicles = steady_vehicles() + traffic_vehicles(300, seed=11, spawn_every=15)
    return make_scene(vehicles, 300, seed=5, miss_prob=0.08, class_noise=0.1)


@pytest.mark.parametrize(("every", "gallery_cap"), [(10, None), (1, None), (7, 60)])
def test_restore_is_identical_to_one_pass(every: int, gallery_cap: int | None) -> None:
    frames = roundtrip_scene()
    reference, ref_tracker = run(frames, new_tracker(gallery_cap=gallery_cap))
    restored, rt_tracker = run(frames, new_tracker(gallery_cap=gallery_cap), restore_every=every)
    assert sum(len(out) for out, _ in reference) > 1000  # the scene is busy
    assert sum(len(ended) for _, ended in reference) > 5  # and tracks do end
    for k, (a, b) in enumerate(zip(reference, restored, strict=True)):
        assert a == b, f"frame {k} differs"
    assert ref_tracker.to_bytes() == rt_tracker.to_bytes()


def test_restore_in_another_process(tmp_path: Path) -> None:
    """Different process, different PYTHONHASHSEED: the continuation must still match bit for bit."""
    frames = roundtrip_scene()
    reference, _ = run(frames, new_tracker())
    tracker = new_tracker()
    for f in frames[:150]:
        update(tracker, f, include_all=True)
    tracker.ended_track_ids(include_tentative=True)  # delivered in the first "micro-batch"
    (tmp_path / "state.bin").write_bytes(tracker.to_bytes())
    script = textwrap.dedent(
        f"""
        import pickle, sys
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import test_tracker as T
        from trafficstream.models.tracker import VehicleTracker
        tracker = VehicleTracker.from_bytes(open({str(tmp_path / "state.bin")!r}, 'rb').read())
        log, _ = T.run(T.roundtrip_scene()[150:], tracker)
        pickle.dump(log, open({str(tmp_path / "log.pkl")!r}, 'wb'))
        """
    )
    env = dict(os.environ, PYTHONHASHSEED="12345")
    subprocess.run([sys.executable, "-c", script], check=True, env=env, cwd=Path(__file__).parents[2])
    continued = pickle.loads((tmp_path / "log.pkl").read_bytes())
    assert continued == reference[150:]


def test_ended_tracks_reported_after_max_age_and_state_shrinks() -> None:
    max_age = 6
    vehicles = steady_vehicles()[:4]
    vehicles[0].stop = 40  # vehicle 0 is last detected at frame 39
    frames = make_scene(vehicles, 70, seed=6, miss_prob=0.0)
    tracker = new_tracker(max_age_frames=max_age)
    vid0 = None
    sizes = {}
    for k, f in enumerate(frames):
        out = update(tracker, f)
        if k == 39:
            vid0 = next(tv.track_id for tv in out if f.vehicle[tv.detection_index] == 0)
        if k == 39 + max_age + 1:  # pending ended ids survive a restore
            tracker = VehicleTracker.from_bytes(tracker.to_bytes())
        ended = tracker.ended_track_ids()
        sizes[k] = tracker.state_size_bytes()
        # missed for max_age frames (40..45) it coasts; the next miss (frame 46) deletes it
        if k == 39 + max_age + 1:
            assert ended == [vid0]
        else:
            assert ended == [], (k, ended)
    assert sizes[39 + max_age + 1] < sizes[39 + max_age] * 0.85
    assert tracker.num_tracks == 3


def with_false_positive(f: Frame) -> Frame:
    """The frame plus a one-off detection far from every vehicle, with an unrelated embedding."""
    return Frame(
        np.vstack([f.xyxy, [[600, 650, 640, 690]]]).astype(np.float32),
        np.r_[f.confidence, 0.3].astype(np.float32),
        np.r_[f.class_id, CAR].astype(np.int32),
        np.vstack([f.embeddings, _unit(np.ones((1, D)))]).astype(np.float32),
        np.r_[f.vehicle, -1],
    )


def test_tentative_tracks_are_not_reported_by_default() -> None:
    frames = make_scene(steady_vehicles()[:2], 20, seed=8, miss_prob=0.0)
    tracker = new_tracker()
    for f in frames[:15]:
        update(tracker, f)
    assert tracker.ended_track_ids() == []
    update(tracker, with_false_positive(frames[15]))
    fp_id = tracker.next_track_id - 1  # the only new track in that frame
    twin = VehicleTracker.from_bytes(tracker.to_bytes())
    for t in (tracker, twin):
        update(t, frames[16])  # the tentative false positive is missed, hence deleted
    assert tracker.ended_track_ids() == []
    assert twin.ended_track_ids(include_tentative=True) == [fp_id]
    assert tracker.ended_track_ids(include_tentative=True) == []  # consumed by the first call


def test_state_stays_bounded_over_2000_frames() -> None:
    n_frames, nn_budget = 2000, 20
    vehicles = traffic_vehicles(n_frames, seed=9, spawn_every=8, spawn_until=1750)
    frames = make_scene(vehicles, n_frames, seed=10)
    tracker = new_tracker(nn_budget=nn_budget)
    sizes, live = [], []
    for k, f in enumerate(frames):
        update(tracker, f)
        tracker.ended_track_ids()
        if k % 10 == 0:
            sizes.append(tracker.state_size_bytes())
            live.append(tracker.num_tracks)
            # each live track: at most nn_budget gallery rows + Kalman state and bookkeeping
            assert sizes[-1] <= tracker.num_tracks * (nn_budget * D * 4 + 2_000) + 2_000
    assert max(live) >= 10  # busy enough to matter
    warm, late = max(sizes[30:100]), max(sizes[100:175])
    assert late <= 1.3 * warm, (warm, late)  # no growth with the number of vehicles seen
    assert tracker.num_tracks == 0 and sizes[-1] < 2_000  # everyone left: only the id counter remains
    assert tracker.next_track_id > len(vehicles)  # ~one id per vehicle (plus occasional re-inits)
    assert tracker._class_votes == {}


def test_gallery_cap_limits_total_samples() -> None:
    frames = make_scene(traffic_vehicles(300, seed=12, spawn_every=6), 300, seed=13)
    capped = new_tracker(gallery_cap=60)
    uncapped = new_tracker()
    for f in frames:
        update(capped, f)
        update(uncapped, f)
        samples = capped._deepsort.tracker.metric.samples
        assert sum(map(len, samples.values())) <= max(60, len(samples))
    assert capped.state_size_bytes() < uncapped.state_size_bytes()


def test_ids_never_reused_across_restores() -> None:
    first = make_scene(steady_vehicles(), 60, seed=14)
    tracker = new_tracker(max_age_frames=5)
    seen: set[int] = set()
    for f in first:
        seen |= {tv.track_id for tv in update(tracker, f, include_all=True)}
    empty = empty_frame()
    for _ in range(10):  # everyone leaves: no live track keeps the counter "in use"
        update(tracker, empty)
    assert tracker.num_tracks == 0
    restored = VehicleTracker.from_bytes(tracker.to_bytes())
    assert restored.next_track_id == tracker.next_track_id > max(seen)
    second = make_scene(traffic_vehicles(120, seed=15, spawn_every=10), 120, seed=16)
    new_ids: set[int] = set()
    for k, f in enumerate(second):
        if k % 13 == 0:
            restored = VehicleTracker.from_bytes(restored.to_bytes())
        new_ids |= {tv.track_id for tv in update(restored, f, include_all=True)}
    assert new_ids and min(new_ids) > max(seen)
    # a camera whose state was lost starts above the ids it already emitted
    fresh = new_tracker(first_track_id=max(new_ids) + 1)
    out = [update(fresh, f, include_all=True) for f in second[:5]]
    assert min(tv.track_id for vs in out for tv in vs) == max(new_ids) + 1


def test_caller_buffer_reuse_does_not_touch_the_gallery() -> None:
    frames = make_scene(steady_vehicles()[:3], 30, seed=19, miss_prob=0.0)
    reference, _ = run(frames, new_tracker())
    tracker, buf = new_tracker(), np.empty((8, D), np.float32)  # e.g. a reused inference output buffer
    log = []
    for f in frames:
        n = len(f.xyxy)
        buf[:n] = f.embeddings
        out = update(tracker, Frame(f.xyxy, f.confidence, f.class_id, buf[:n], f.vehicle), include_all=True)
        log.append((out, tracker.ended_track_ids(include_tentative=True)))
        buf[:] = np.nan
    assert log == reference


# -- format -----------------------------------------------------------------------------------------


def _busy_state() -> bytes:
    tracker = new_tracker()
    for f in make_scene(steady_vehicles(), 20, seed=17):
        update(tracker, f)
    return tracker.to_bytes()


def test_corrupt_or_foreign_state_is_rejected() -> None:
    blob = _busy_state()
    env = state_codec.read_envelope(blob)
    assert env is not None and env.kind == "tracker" and env.version == state_codec.FORMAT_VERSION
    with pytest.raises(TrackerStateError, match="truncated"):
        VehicleTracker.from_bytes(blob[:5])
    with pytest.raises(TrackerStateError, match="magic"):
        VehicleTracker.from_bytes(b"XXXX" + blob[4:])
    with pytest.raises(TrackerStateError, match="CRC"):
        VehicleTracker.from_bytes(blob[:-10] + bytes(10))
    # another format version (envelope re-signed, so only the version is wrong) or another kind of state
    future = _resign(blob, version=99)
    with pytest.raises(TrackerStateError, match="format v99"):
        VehicleTracker.from_bytes(future)
    assert state_codec.read_envelope(future).next_id == env.next_id  # the id mark survives any version
    with pytest.raises(TrackerStateError, match="expected a tracker state"):
        VehicleTracker.from_bytes(_resign(blob, tag=state_codec.KINDS["violations"]))
    # a pickle is not a state, however well-formed (the format has no pickle anywhere)
    with pytest.raises(TrackerStateError, match="magic"):
        VehicleTracker.from_bytes(pickle.dumps(os.system, protocol=5))
    # a well-formed envelope around a body that is not a tracker document
    odd = state_codec.encode("tracker", {"params": {}, "tracks": "nonsense"})
    with pytest.raises(TrackerStateError, match="unreadable"):
        VehicleTracker.from_bytes(odd)


def _resign(blob: bytes, *, version: int | None = None, tag: bytes | None = None) -> bytes:
    """The blob with its envelope's version / kind tag replaced and the envelope CRC recomputed."""
    head = struct.Struct("<4s4sHqII")
    magic, kind, ver, next_id, resets, body_crc = head.unpack_from(blob)
    new = head.pack(magic, tag or kind, ver if version is None else version, next_id, resets, body_crc)
    return new + struct.pack("<I", zlib.crc32(new)) + blob[state_codec.ENVELOPE_SIZE :]


def test_state_is_deterministic_and_gallery_is_float16_when_lossless() -> None:
    frames = make_scene(steady_vehicles(), 20, seed=17)
    f16 = [
        Frame(f.xyxy, f.confidence, f.class_id, f.embeddings.astype(np.float16).astype(np.float32), f.vehicle)
        for f in frames
    ]
    a, b, half = new_tracker(), new_tracker(), new_tracker()
    for f, g in zip(frames, f16, strict=True):
        update(a, f)
        update(b, f)
        update(half, g)
    assert a.to_bytes() == b.to_bytes()
    _, doc = state_codec.decode(a.to_bytes(), "tracker")
    assert doc["pool"].dtype == np.float32  # float32 embeddings: kept exactly
    _, doc16 = state_codec.decode(half.to_bytes(), "tracker")
    assert doc16["pool"].dtype == np.float16 and doc16["pool"].shape[1] == D
    assert half.state_size_bytes() < 0.6 * a.state_size_bytes()
    restored = VehicleTracker.from_bytes(half.to_bytes())
    for g in f16[:5]:
        assert update(restored, g, include_all=True) == update(half, g, include_all=True)
    assert restored.to_bytes() == half.to_bytes()


def test_from_state_takes_the_current_parameters() -> None:
    tracker = new_tracker(max_age_frames=10, n_init=3)
    frames = make_scene(steady_vehicles()[:3], 30, seed=20, miss_prob=0.0)
    for f in frames[:10]:
        update(tracker, f)
    live = {tv.track_id for tv in update(tracker, frames[10])}
    params = {**tracker.params, "max_age_frames": 2, "nn_budget": 4, "max_cosine_distance": 0.2}
    restored = VehicleTracker.from_state(tracker.to_state(), params=params)
    assert restored.params == params and restored.next_track_id == tracker.next_track_id
    assert VehicleTracker.from_state(tracker.to_state()).params == tracker.params  # None: as written
    ds = restored._deepsort.tracker
    assert ds.max_age == 2 and ds.metric.budget == 4 and ds.metric.matching_threshold == 0.2
    assert all(t._max_age == 2 for t in ds.tracks)
    update(restored, frames[11])
    assert all(len(s) <= 4 for s in ds.metric.samples.values())
    empty = empty_frame()
    for _ in range(3):  # missed for more than the new max age: ended, where the old max age (10) would coast
        update(restored, empty)
    assert restored.num_tracks == 0 and sorted(restored.ended_track_ids()) == sorted(live)


def test_state_survives_bytes_like_input_and_keeps_params() -> None:
    tracker = new_tracker(max_age_frames=7, nn_budget=5, gallery_cap=40)
    for f in make_scene(steady_vehicles(), 15, seed=18):
        update(tracker, f)
    restored = VehicleTracker.from_bytes(memoryview(tracker.to_bytes()))
    assert restored.params == tracker.params
    assert restored.frame_count == 15 and restored.num_tracks == tracker.num_tracks
    samples = restored._deepsort.tracker.metric.samples
    assert samples and all(len(s) <= 5 for s in samples.values())


def test_from_settings_converts_seconds_to_frames() -> None:
    from trafficstream.config import TrackerSettings

    tracker = VehicleTracker.from_settings(TrackerSettings(max_age_s=1.5, n_init=2, nn_budget=10), fps=12.5)
    assert tracker.params == {
        "max_age_frames": 19,
        "n_init": 2,
        "max_cosine_distance": 0.3,
        "max_iou_distance": 0.7,
        "nn_budget": 10,
        "gallery_cap": None,
    }
    assert VehicleTracker.from_settings(TrackerSettings(max_age_s=0.01), fps=5).params["max_age_frames"] == 1
    with pytest.raises(ValueError):
        VehicleTracker.from_settings(TrackerSettings(), fps=0)


def test_input_validation() -> None:
    tracker = new_tracker()
    box = np.array([[10, 10, 50, 40]], np.float32)
    emb = _unit(np.ones((1, D), np.float32))
    with pytest.raises(ValueError, match="confidences"):
        tracker.update(box, [0.5, 0.6], [CAR], emb)
    with pytest.raises(ValueError, match="embeddings"):
        tracker.update(box, [0.5], [CAR], np.vstack([emb, emb]))
    tracker.update(box, [0.5], [CAR], emb)
    with pytest.raises(ValueError, match="dim"):
        tracker.update(box, [0.5], [CAR], emb[:, :128])


def test_strided_updates_predict_between_and_end_tracks_after_the_same_time() -> None:
    """Detector on every 3rd frame: advance() moves tracks through the frames between, predicted() gives
    their boxes, and a track unseen for max_age_frames *frames* ends whatever the stride."""
    tracker = VehicleTracker(max_age_frames=12, n_init=2)
    tracker.set_stride(3)
    emb = np.ones((1, 8), np.float32) / np.sqrt(8)
    speed = 10.0  # px per frame
    for f in range(0, 30, 3):
        if f:
            tracker.advance(2)
        x = 100 + speed * f
        out = tracker.update(np.array([[x, 50, x + 60, 90]]), np.array([0.9]), np.array([2]), emb)
    assert [v.track_id for v in out] == [1]
    (mid,) = tracker.predicted(1)  # frame 28: one frame after the last detection (27)
    assert abs(mid.xyxy[0] - (100 + speed * 28)) < 2.0 and mid.confidence is None
    assert tracker.params["max_age_frames"] == 12  # the configured value stays; DeepSORT runs 12 / 3 updates
    ended = []
    for _ in range(5):  # 5 updates without detections = 15 frames unseen > 12
        tracker.advance(2)
        tracker.update(np.zeros((0, 4)), np.zeros(0), np.zeros(0, int), np.zeros((0, 8), np.float32))
        ended += tracker.ended_track_ids()
    assert ended == [1]


# -- low detections (ByteTrack's second association) -------------------------------------------------------
LOW = 0.25  # the detector's own threshold: rows scoring less are low (stage 1 gives them zero embeddings)


def _lowered(frame: Frame, rows: np.ndarray, score: float = 0.12) -> Frame:
    """``frame`` with ``rows`` scored low and their embeddings zeroed, as stage 1 passes them on."""
    conf, emb = frame.confidence.copy(), frame.embeddings.copy()
    conf[rows], emb[rows] = score, 0.0
    return Frame(frame.xyxy, conf, frame.class_id, emb, frame.vehicle)


def _with_row(frame: Frame, box: list[float], score: float) -> Frame:
    return Frame(
        np.vstack([frame.xyxy, np.asarray([box], np.float32)]),
        np.append(frame.confidence, np.float32(score)),
        np.append(frame.class_id, np.int32(CAR)),
        np.vstack([frame.embeddings, np.zeros((1, D), np.float32)]),
        np.append(frame.vehicle, -1),
    )


def test_low_detections_carry_a_track_through_frames_it_scores_low() -> None:
    """A vehicle that flickers below the detector's threshold for frames 20-29 (motion blur, a lens edge) keeps
    its id and gets a box on every one of them; without the second association those frames have no box."""
    frames = make_scene([Vehicle(0, 100, 300, 8.0, 1.0, 120, 70)], 60, seed=3, miss_prob=0.0)
    frames = [_lowered(f, np.arange(len(f.xyxy))) if 20 <= k < 30 else f for k, f in enumerate(frames)]
    with_low, without = new_tracker(), new_tracker()
    out_low = [update(with_low, f, low_below=LOW) for f in frames]
    out_plain = [update(without, _drop_low(f)) for f in frames]
    assert {tv.track_id for out in out_low for tv in out} == {1}
    assert all(len(out_low[k]) == 1 for k in range(3, 60))
    assert all(out_low[k][0].confidence == pytest.approx(0.12) for k in range(20, 30))
    np.testing.assert_allclose(out_low[25][0].xyxy, frames[25].xyxy[0])  # the low detection's own box
    assert all(not out_plain[k] for k in range(20, 30))


def _drop_low(frame: Frame) -> Frame:
    keep = frame.confidence >= LOW
    return Frame(
        frame.xyxy[keep], frame.confidence[keep], frame.class_id[keep], frame.embeddings[keep], frame.vehicle[keep]
    )


def test_low_detections_never_start_tracks_or_steal_a_confident_match() -> None:
    frames = make_scene([Vehicle(0, 200, 300, 5.0, 0.0, 120, 70)], 40, seed=5, miss_prob=0.0)
    # a low box far from any track every frame (clutter), and one duplicating the vehicle's confident box
    frames = [_with_row(_with_row(f, [900, 500, 1000, 560], 0.15), list(f.xyxy[0] + 3), 0.2) for f in frames]
    tracker = new_tracker()
    outputs = [update(tracker, f, low_below=LOW, include_all=True) for f in frames]
    assert {tv.track_id for out in outputs for tv in out} == {1}  # no track from the clutter
    assert all(tv.confidence is None or tv.confidence >= LOW for out in outputs for tv in out)
    assert tracker.num_tracks == 1


def test_low_detections_leave_the_state_format_and_restores_alone() -> None:
    frames = make_scene(steady_vehicles(), 80, seed=9, miss_prob=0.0)
    rng = np.random.default_rng(2)
    frames = [_lowered(f, np.flatnonzero(rng.random(len(f.xyxy)) < 0.3)) for f in frames]
    one, restored = new_tracker(), new_tracker()
    a = [update(one, f, low_below=LOW) for f in frames]
    b = []
    for k, f in enumerate(frames):
        if k and k % 7 == 0:
            restored = VehicleTracker.from_bytes(restored.to_bytes())
        b.append(update(restored, f, low_below=LOW))
    assert a == b
    ids = ids_per_vehicle(frames, a)
    assert all(len(v) == 1 for v in ids.values()), ids  # 30 % of the boxes low, every vehicle one id


# -- one vehicle, two boxes -------------------------------------------------------------------------


def test_duplicate_and_cut_off_boxes() -> None:
    from trafficstream.models.tracker import cut_off_boxes, duplicate_boxes

    full = np.array([510.0, 236, 590, 291])
    cut = np.array([511.0, 237, 589, 267])  # the part above an occluder: same top and sides
    front = np.array([495.0, 267, 605, 340])  # the occluder, in front in the queue
    behind_taller = np.array([505.0, 200, 595, 268])  # a taller vehicle behind: overlaps, higher top
    shifted = full + [3, 2, 3, 2]
    lit = np.array([511.0, 262, 589, 290])  # at night: the lit lower body, same bottom and sides
    narrower = np.array([530.0, 262, 570, 290])  # same bottom, but not the same sides: not this vehicle's part
    others = np.array([cut, front, behind_taller, shifted, full, lit, narrower])
    assert cut_off_boxes(full[None], others).tolist() == [[True, False, False, True, True, True, False]]
    assert duplicate_boxes(full[None], others).tolist() == [[False, False, False, True, True, False, False]]
    assert cut_off_boxes(cut[None], full[None]).tolist() == [[True]]  # either way round
    assert cut_off_boxes(np.empty((0, 4)), full[None]).shape == (0, 1)


def _queue_frames(pattern: str, seed: int = 0) -> list[Frame]:
    """A stopped queue: vehicle 0 in front, vehicle 1 behind it; per frame, what the detector gives of
    vehicle 1: 'F' its full box, 'C' the part above vehicle 0 (cut at the bottom), 'B' both, '-' nothing."""
    rng = np.random.default_rng(seed)
    base = [_unit(rng.normal(size=D)) for _ in range(2)]
    front, full, cut = [495.0, 267, 605, 340], [510.0, 236, 590, 291], [510.0, 236, 590, 267]
    frames = []
    for what in pattern:
        rows = [(front, 0)] + [(b, 1) for b in {"F": [full], "C": [cut], "B": [full, cut], "-": []}[what]]
        frames.append(
            Frame(
                xyxy=np.array([np.array(b) + rng.normal(0, 0.7, 4) for b, _ in rows], np.float32),
                confidence=np.full(len(rows), 0.6, np.float32),
                class_id=np.full(len(rows), CAR, np.int32),
                embeddings=np.array([_unit(base[v] + rng.normal(0, 0.25 / np.sqrt(D), D)) for _, v in rows], "f4"),
                vehicle=np.array([v for _, v in rows]),
            )
        )
    return frames


def test_a_vehicle_whose_box_alternates_with_its_occluded_part_keeps_one_id() -> None:
    # the pattern of the stop_and_go scene: the full box, a missed frame, the cut box for a while, both at once
    pattern = "F" * 20 + "-" + "C" * 12 + "F" * 6 + "-" + "C" * 8 + "BBB" + "F" * 5 + "C" * 5 + "-" + "F" * 10
    frames = _queue_frames(pattern)
    tracker = new_tracker(max_age_frames=30)
    outputs = [update(tracker, f) for f in frames]
    ids = ids_per_vehicle(frames, outputs)
    assert len(ids[0]) == 1, ids  # the vehicle in front is never merged into the one behind
    assert len(ids[1]) == 1, ids  # one identity for the vehicle behind, whichever box the detector gives
    assert ids[0] != ids[1]
    per_frame = [sorted(v.track_id for v in out) for out in outputs]
    assert all(len(set(p)) == len(p) for p in per_frame)
    assert max(len(p) for p in per_frame) == 2  # never two tracks on one vehicle in a frame
    # the merged-away duplicate ends like any track, so its summary is written once
    ended = tracker.ended_track_ids()
    assert set(ended).isdisjoint(ids[0] | ids[1])
    # and the merge survives a restore: the state still round-trips
    restored = VehicleTracker.from_bytes(tracker.to_bytes())
    assert restored.to_bytes() == tracker.to_bytes()


# -- a confirmed track missed for a few updates ------------------------------------------------------------


def _approaching_frames(missed: range, seed: int = 0, other_looks: bool = False) -> list[Frame]:
    """One vehicle driving towards the camera and to the left: its box grows 9 % a frame and moves ever faster
    (as near a camera), so a constant-velocity Kalman prediction falls behind it; the detector misses it in the
    frames ``missed``. ``other_looks``: from the first frame after the gap, the box is another vehicle."""
    rng = np.random.default_rng(seed)
    looks = [_unit(rng.normal(size=D)) for _ in range(2)]
    frames = []
    for f in range(18):
        h = 40.0 * 1.09**f
        cx, bottom = 700.0 - 1.5 * h, 150.0 + 3.0 * h
        box = np.array([cx - 0.7 * h, bottom - h, cx + 0.7 * h, bottom]) + rng.normal(0, 0.7, 4)
        if f in missed:
            frames.append(empty_frame())
            continue
        who = 1 if other_looks and f >= missed.stop else 0
        frames.append(
            Frame(
                xyxy=box[None].astype(np.float32),
                confidence=np.array([0.7], np.float32),
                class_id=np.array([CAR], np.int32),
                embeddings=_unit(looks[who] + rng.normal(0, 0.25 / np.sqrt(D), D))[None].astype(np.float32),
                vehicle=np.array([who]),
            )
        )
    return frames


@pytest.mark.parametrize("missed", [range(12, 13), range(12, 14)])
def test_a_vehicle_missed_for_a_frame_or_two_near_the_camera_keeps_its_id(missed: range) -> None:
    # DeepSORT alone starts a new id here: its Kalman gate and constant-velocity box lag the vehicle
    frames = _approaching_frames(missed)
    tracker = new_tracker(max_age_frames=30)
    outputs = [update(tracker, f) for f in frames]
    assert sum(1 for out in outputs if out) == len(frames) - len(missed) - 2  # all but the gap and n_init - 1
    assert ids_per_vehicle(frames, outputs) == {0: {1}}
    restored = VehicleTracker.from_bytes(tracker.to_bytes())
    assert restored.to_bytes() == tracker.to_bytes()


def test_another_vehicle_where_a_lost_one_was_predicted_gets_its_own_id() -> None:
    frames = _approaching_frames(range(12, 13), other_looks=True)
    tracker = new_tracker(max_age_frames=30)
    outputs = [update(tracker, f) for f in frames]
    ids = ids_per_vehicle(frames, outputs)
    assert len(ids[0]) == 1 and len(ids[1]) == 1 and ids[0] != ids[1], ids


def test_buffered_boxes() -> None:
    from trafficstream.models.tracker import buffered

    boxes = np.array([[10.0, 20, 30, 60], [0, 0, 4, 2]])
    assert buffered(boxes, 0.0).tolist() == boxes.tolist()
    assert buffered(boxes, 0.5).tolist() == [[0.0, 0, 40, 80], [-2, -1, 6, 3]]
