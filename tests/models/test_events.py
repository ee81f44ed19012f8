"""Traffic events: wrong way (sustained, trusted, once per track), stopped vehicles (in a running lane, not
queueing, once per stop with its duration at the end), queues (one episode: start, end, maximum length), with
deterministic ids and state that round-trips."""

from __future__ import annotations

import json

import pytest

from trafficstream.cameras import Camera
from trafficstream.models.events import (
    QUEUE,
    STOPPED_VEHICLE,
    WRONG_WAY,
    Event,
    EventDetector,
    event_id,
    queue_chain,
)
from trafficstream.models.lines import LaneArea, TrackPoint, ZoneArea, lane_at

# Two 3.5 m lanes on the road plane, 200 m long: northbound (heading 0, +y) and southbound beside it.
NB = LaneArea("nb", "road", ((0, 0), (3.5, 0), (3.5, 200), (0, 200)), 0.0)
SB = LaneArea("sb", "road", ((-3.5, 0), (0, 0), (0, 200), (-3.5, 200)), 180.0)
LANES = [NB, SB]
QUEUE_ZONE = ZoneArea("approach", "road", ((0, 50), (3.5, 50), (3.5, 150), (0, 150)), "queue", "nb")
BUS_STOP = ZoneArea("bus-stop", "road", ((0, 160), (3.5, 160), (3.5, 180), (0, 180)), "stopping")
CAM = "cam-1"


def point(track_id: int, x: float, y: float, kmh: float | None, heading: float | None = 0.0, **kw) -> TrackPoint:
    """A track's point with its lane looked up as stage 2 will."""
    p = TrackPoint(track_id, road_xy=(x, y), speed_kmh=kmh, heading_deg=None if kmh is None else heading, **kw)
    return TrackPoint(**{**{n: getattr(p, n) for n in p.__dataclass_fields__}, "lane_id": lane_at(LANES, p)})


def detector(**kw) -> EventDetector:
    return EventDetector(CAM, LANES, [QUEUE_ZONE, BUS_STOP], **kw)


def drive(det: EventDetector, frames: list[list[TrackPoint]], dt: float = 0.1, t0: float = 0.0) -> list[Event]:
    out = []
    for i, pts in enumerate(frames):
        out += det.update(t0 + i * dt, pts)
    return out


def straight(track_id: int, y0: float, v_mps: float, n: int, heading: float, x: float = 1.75, dt: float = 0.1):
    return [[point(track_id, x, y0 + v_mps * dt * i, abs(v_mps) * 3.6, heading)] for i in range(n)]


# -- wrong way ----------------------------------------------------------------------------------------------
def test_wrong_way_is_reported_once_after_the_configured_distance() -> None:
    det = detector()
    out = drive(det, straight(9, 150.0, -14.0, 60, 180.0))  # southbound at 50 km/h in the northbound lane
    (ev,) = out
    assert (ev.type, ev.track_id, ev.lane_id, ev.zone_id) == (WRONG_WAY, 9, "nb", None)
    assert ev.start_ts == 0.0 and ev.end_ts == ev.detect_ts
    assert 15.0 <= ev.distance_m < 15.0 + 1.4 + 1e-9  # reported on the first frame past 15 m (1.4 m a frame)
    assert ev.detect_ts == pytest.approx(1.1) and ev.lane_heading_deg == 0.0 and ev.heading_deg == 180.0
    assert ev.event_id == event_id(CAM, WRONG_WAY, "track:9", 0.0)


def test_with_the_traffic_or_untrusted_is_not_wrong_way() -> None:
    assert drive(detector(), straight(1, 10.0, 14.0, 60, 0.0)) == []  # northbound in the northbound lane
    assert drive(detector(), straight(2, 150.0, -14.0, 60, 180.0, x=-1.75)) == []  # southbound lane: fine
    untrusted = [[point(3, 1.75, 150.0 - 1.4 * i, None)] for i in range(60)]  # flagged speeds only
    assert drive(detector(), untrusted) == []


def test_a_short_reversal_under_the_minimum_distance_is_not_wrong_way() -> None:
    back = straight(5, 100.0, -2.0, 50, 180.0)  # 7.2 km/h backwards for 10 m (< 15 m)
    forward = straight(5, 90.0, 10.0, 50, 0.0)
    det = detector()
    assert drive(det, back + forward) == []
    # the stretch ended with the traffic: a second short reversal starts from zero
    assert drive(det, straight(5, 140.0, -2.0, 50, 180.0), t0=20.0) == []


def test_wrong_way_needs_enough_trusted_estimates() -> None:
    det = detector(wrong_way_min_estimates=30)
    out = drive(det, straight(9, 150.0, -14.0, 60, 180.0))
    assert len(out) == 1 and out[0].detect_ts == pytest.approx(2.9)  # the 30th estimate, 40 m in


def test_standing_vehicles_heading_noise_is_not_wrong_way() -> None:
    frames = [[point(4, 1.75, 100.0 - 0.01 * i, 2.0, 180.0)] for i in range(300)]  # 2 km/h < stopped speed
    assert [e.type for e in drive(detector(stopped_min_s=100), frames)] == []


# -- stopped vehicles ---------------------------------------------------------------------------------------
def stop_and_go(track_id: int, y: float, stand_s: float, x: float = 1.75, dt: float = 0.5) -> list[list[TrackPoint]]:
    n = int(stand_s / dt)
    standing = [[point(track_id, x + 0.05 * (i % 2), y, 0.5)] for i in range(n)]
    leaving = [[point(track_id, x, y + 6 * i, 40.0)] for i in range(1, 5)]
    return standing + leaving


def test_a_vehicle_stopped_in_a_lane_is_reported_when_due_and_closed_with_its_duration() -> None:
    det = detector(stopped_min_s=20.0)
    out = drive(det, stop_and_go(3, 100.0, 30.0), dt=0.5)
    opened, closed = out
    assert opened.type == STOPPED_VEHICLE and opened.is_open and opened.lane_id == "nb"
    assert opened.start_ts == 0.0 and opened.detect_ts == 20.0 and opened.duration_s == 20.0
    assert closed.event_id == opened.event_id and not closed.is_open
    assert closed.end_ts == 29.5 and closed.duration_s == 29.5  # the last standing frame
    assert det.open_events() == []


def test_moving_vehicles_or_short_stops_are_not_stopped_vehicles() -> None:
    assert drive(detector(), straight(1, 10.0, 14.0, 400, 0.0)) == []
    assert drive(detector(stopped_min_s=20.0), stop_and_go(2, 100.0, 15.0), dt=0.5) == []


def test_stops_outside_lanes_or_in_stopping_zones_are_not_reported() -> None:
    assert drive(detector(stopped_min_s=5.0), stop_and_go(1, 100.0, 30.0, x=10.0), dt=0.5) == []  # the verge
    assert drive(detector(stopped_min_s=5.0), stop_and_go(2, 170.0, 30.0), dt=0.5) == []  # the bus stop


def test_a_crawling_vehicle_is_not_stopped() -> None:
    # 4 km/h is under the stopped speed, but it moves 3 m every 2.7 s: never 20 s within the stop radius
    frames = [[point(6, 1.75, 20.0 + 1.11 * 0.5 * i, 4.0)] for i in range(120)]
    assert drive(detector(stopped_min_s=20.0), frames, dt=0.5) == []


def test_only_the_head_of_a_queue_behind_a_breakdown_is_a_stopped_vehicle() -> None:
    det = detector(stopped_min_s=10.0, queue_hold_s=0.0)
    frames = [[point(1, 1.75, 140.0, 0.0), point(2, 1.75, 133.0, 0.0), point(3, 1.75, 126.0, 0.0)] for _ in range(40)]
    out = drive(det, frames, dt=0.5)
    assert [(e.type, e.track_id) for e in out] == [(QUEUE, None), (STOPPED_VEHICLE, 1)]


def test_an_evicted_track_closes_its_stop() -> None:
    det = detector(stopped_min_s=5.0)
    opened = drive(det, [[point(8, 1.75, 100.0, 0.0)] for _ in range(20)], dt=0.5)
    assert [e.is_open for e in opened] == [True]
    (closed,) = det.evict(8)
    assert closed.event_id == opened[0].event_id and closed.end_ts == 9.5
    # unseen for forget_after_s: closed by the next frame's bookkeeping instead
    det = detector(stopped_min_s=5.0, forget_after_s=3.0)
    drive(det, [[point(8, 1.75, 100.0, 0.0)] for _ in range(20)], dt=0.5)
    (late,) = det.update(13.0, [])
    assert late.end_ts == 9.5 and det.track_ids() == []


# -- queues -------------------------------------------------------------------------------------------------
def test_queue_chain_runs_back_from_the_front_and_splits_at_gaps() -> None:
    pts = [point(i, 1.75, y, 2.0) for i, y in enumerate([140.0, 133.0, 100.0, 93.0, 86.0])]
    chain = queue_chain(pts, 0.0, 15.0, min_vehicles=3)
    assert chain is not None and chain.track_ids == (2, 3, 4) and chain.length_m == pytest.approx(14 + 4.5)
    assert queue_chain(pts, 0.0, 15.0, min_vehicles=2).track_ids == (0, 1)  # type: ignore[union-attr]
    free = queue_chain(pts, None, 15.0)  # no direction: the biggest group along the main axis
    assert free is not None and set(free.track_ids) == {2, 3, 4}
    truck = [point(1, 1.75, 100.0, 0.0), point(2, 1.75, 90.0, 0.0, class_name="truck")]
    assert queue_chain(truck, 0.0, 15.0).length_m == pytest.approx(10 + 10)  # type: ignore[union-attr]


def queue_frames(ys_per_frame: list[list[float]], kmh: float = 3.0) -> list[list[TrackPoint]]:
    return [[point(i + 1, 1.75, y, kmh) for i, y in enumerate(ys)] for ys in ys_per_frame]


def test_a_queue_episode_has_a_start_an_end_and_its_maximum_length() -> None:
    det = detector(queue_hold_s=3.0, stopped_min_s=600.0)
    four = [120.0, 113.0, 106.0, 99.0]
    five = [*four, 92.0]
    frames = queue_frames([four] * 10 + [five] * 10)  # t 0..4.5, then a fifth vehicle joins until 9.5
    frames += queue_frames([five] * 10, kmh=30.0)  # traffic moves again: slow no more (t 10..14.5)
    out = drive(det, frames, dt=0.5)
    opened, closed = out
    assert opened.type == QUEUE and opened.zone_id == "approach" and opened.lane_id == "nb"
    assert opened.start_ts == 0.0 and opened.detect_ts == 3.0 and opened.is_open
    assert opened.max_length_m == pytest.approx(21 + 4.5) and opened.max_vehicles == 4
    assert closed.event_id == opened.event_id == event_id(CAM, QUEUE, "zone:approach", 0.0)
    assert closed.end_ts == 9.5 and closed.detect_ts == 3.0 and closed.duration_s == 9.5  # closed at 12.5
    assert closed.max_length_m == pytest.approx(28 + 4.5) and closed.max_vehicles == 5
    assert closed.x_m == 1.75 and closed.y_m == 120.0


def test_no_queue_when_too_few_too_short_or_flagged() -> None:
    assert drive(detector(), queue_frames([[120.0, 113.0]] * 40), dt=0.5) == []  # two vehicles < 3
    assert drive(detector(queue_hold_s=3.0), queue_frames([[120.0, 113.0, 106.0]] * 5), dt=0.5) == []  # 2 s
    flagged = [[point(i + 1, 1.75, y, None) for i, y in enumerate([120.0, 113.0, 106.0])] for _ in range(40)]
    assert drive(detector(), flagged, dt=0.5) == []


def test_a_brief_gap_does_not_split_a_queue() -> None:
    q = [120.0, 113.0, 106.0]
    frames = queue_frames([q] * 10 + [q[:2]] * 2 + [q] * 10)  # one vehicle unseen for 1 s < hold
    out = drive(detector(queue_hold_s=3.0, stopped_min_s=600.0), frames, dt=0.5)
    assert [e.is_open for e in out] == [True]


# -- ids and state ------------------------------------------------------------------------------------------
def test_event_ids_are_deterministic_and_distinct() -> None:
    a = event_id(CAM, STOPPED_VEHICLE, "track:3", 1715670000.1234)
    assert a == event_id(CAM, STOPPED_VEHICLE, "track:3", 1715670000.1234001) and len(a) == 20
    assert a != event_id(CAM, STOPPED_VEHICLE, "track:3", 1715670000.125)
    assert a != event_id(CAM, WRONG_WAY, "track:3", 1715670000.1234)
    assert a != event_id("cam-2", STOPPED_VEHICLE, "track:3", 1715670000.1234)


def test_state_round_trip_mid_episode_gives_the_same_events() -> None:
    frames = stop_and_go(30, 100.0, 30.0)  # 60 standing frames of 0.5 s, then it drives off
    for i, f in enumerate(frames):
        f.append(point(20, 1.75, 150.0 - 0.4 * i, 3.0 * 3.6, 180.0))  # wrong way: 15 m by frame 38 (19 s)
        f += [point(k, 1.75, y, 7.0 if i < 50 else 30.0) for k, y in ((1, 140.0), (2, 133.0), (3, 126.0))]
    whole = drive(detector(stopped_min_s=20.0), frames, dt=0.5)
    assert sorted((e.type, e.is_open) for e in whole) == [
        (QUEUE, False),
        (QUEUE, True),
        (STOPPED_VEHICLE, False),
        (STOPPED_VEHICLE, True),
        (WRONG_WAY, False),
    ]
    first = detector(stopped_min_s=20.0)
    head = drive(first, frames[:30], dt=0.5)  # t = 15 s: mid-stop, mid-queue, mid-wrong-way stretch
    assert [e.type for e in head] == [QUEUE]
    doc = json.loads(json.dumps(first.to_doc(), allow_nan=False))
    for restored in (
        EventDetector.from_doc(doc, CAM, LANES, [QUEUE_ZONE, BUS_STOP]),
        detector(stopped_min_s=20.0).restore_tracks(doc),
    ):
        assert head + drive(restored, frames[30:], dt=0.5, t0=15.0) == whole


def test_repeated_frames_change_nothing() -> None:
    det = detector(queue_hold_s=0.0)
    (opened,) = det.update(1.0, queue_frames([[120.0, 113.0, 106.0]])[0])
    assert det.update(1.0, []) == [] and det.update(0.5, []) == []  # a repeat would otherwise end the queue
    assert det.open_events() == [opened]


def test_detector_from_camera_maps_image_lanes_onto_the_road() -> None:
    cam = Camera(
        id="cam",
        source="/videos/v.mp4",
        speed_limit_kmh=50,
        calibration={
            "image_points": [[0, 0], [100, 0], [100, 100], [0, 100]],
            "world_points": [[0, 0], [3.5, 0], [3.5, 20], [0, 20]],
        },
        lanes=[
            {"id": "up", "polygon": [[0, 0], [100, 0], [100, 200], [0, 200]], "direction": [0, -1]},
            {"id": "road", "space": "road", "polygon": [[0, 0], [3, 0], [3, 9]], "direction_deg": 90},
        ],
        zones=[{"id": "z", "polygon": [[0, 0], [100, 0], [100, 100]], "lane": "up", "purpose": "stopping"}],
        events={"stopped_min_s": 7},
    )

    def flip_y(px):  # the image's up is the road's +y
        return px * [1.0, -1.0]

    det = EventDetector.from_camera(cam, flip_y)
    assert det.lanes["up"].heading_deg == pytest.approx(0) and det.lanes["road"].heading_deg == 90
    assert det.zones[0].purpose == "stopping" and det.stopped_min_s == 7
    assert EventDetector.from_camera(cam).lanes["up"].heading_deg is None  # uncalibrated: no direction
