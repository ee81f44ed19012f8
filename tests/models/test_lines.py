"""Counting lines: one crossing per (line, track, direction), hysteresis against jitter, finite segments,
sub-frame crossing times, state that round-trips and stays bounded."""

from __future__ import annotations

import json

import numpy as np
import pytest

from trafficstream.cameras import Camera
from trafficstream.models import state_codec
from trafficstream.models.lines import (
    Crossing,
    LaneArea,
    Line,
    LineCounter,
    TrackPoint,
    angle_between_deg,
    image_direction_heading,
    lane_at,
    lines_from_camera,
    step_crossing,
    unit_of_heading,
)
from trafficstream.models.speed import heading_deg

# Drawn left to right across the image: walking A -> B the right-hand side is down the screen.
IMAGE_LINE = Line("stop-bar", (0.0, 100.0), (200.0, 100.0), "image", ("down", "up"), hysteresis=5.0)
DT = 0.1


def run(counter: LineCounter, ys: list[float], x: float = 100.0, track_id: int = 1, t0: float = 0.0) -> list[Crossing]:
    """One track moving through image points (x, ys[i]) at t0 + i * DT."""
    out = []
    for i, y in enumerate(ys):
        out += counter.update(t0 + i * DT, [TrackPoint(track_id, image_xy=(x, y))])
    return out


def test_geometry_sides_and_segment() -> None:
    assert IMAGE_LINE.offset((50, 90)) == pytest.approx(-10)  # above the line: left of A -> B as displayed
    assert IMAGE_LINE.offset((50, 110)) == pytest.approx(10)
    assert IMAGE_LINE.along((50, 0)) == pytest.approx(0.25)
    u, q, on = step_crossing(IMAGE_LINE, (50, 90), (50, 130))  # type: ignore[misc]
    assert u == pytest.approx(0.25) and q == pytest.approx((50, 100)) and on
    assert step_crossing(IMAGE_LINE, (250, 90), (250, 130))[2] is False  # type: ignore[index]
    assert step_crossing(IMAGE_LINE, (50, 90), (60, 95)) is None
    # On the road plane (a map, +y up) the right-hand side of a west -> east line is south (-y).
    road = Line("gantry", (-5.0, 10.0), (5.0, 10.0), "road", ("southbound", "northbound"))
    assert road.offset((0, 9)) == pytest.approx(1) and road.offset((0, 11)) == pytest.approx(-1)
    with pytest.raises(ValueError, match="same"):
        Line("x", (1.0, 1.0), (1.0, 1.0))


def test_heading_helpers() -> None:
    assert angle_between_deg(350, 10) == pytest.approx(20) and angle_between_deg(0, 180) == pytest.approx(180)
    ux, uy = unit_of_heading(90)
    assert (ux, uy) == pytest.approx((1, 0)) and heading_deg(ux, uy) == pytest.approx(90)

    def flip_y(px: np.ndarray) -> np.ndarray:  # image up (-y) is road +y: heading 0
        return np.asarray(px, dtype=float) * [1.0, -1.0]

    assert image_direction_heading((10, 10), (0, -3), flip_y) == pytest.approx(0)
    assert image_direction_heading((10, 10), (1, 0), flip_y) == pytest.approx(90)
    beyond = image_direction_heading((10, 10), (0, -1), lambda px: np.full((len(px), 2), np.nan))
    assert beyond is None


@pytest.mark.parametrize(
    "ys, direction, to_side, t",
    [
        # offsets -3 at t=0.4 and +1 at t=0.5: the line is passed 3/4 of the way through the frame interval
        ([81 + 4 * i for i in range(12)], "down", 1, 0.475),
        ([119 - 4 * i for i in range(12)], "up", -1, 0.475),
    ],
)
def test_straight_crossing_each_direction(ys: list[float], direction: str, to_side: int, t: float) -> None:
    counter = LineCounter([IMAGE_LINE])
    out = run(counter, ys)
    assert len(out) == 1
    c = out[0]
    assert (c.line_id, c.track_id, c.direction, c.to_side) == ("stop-bar", 1, direction, to_side)
    assert c.t == pytest.approx(t) and (c.x, c.y) == pytest.approx((100, 100))
    assert c.t_confirmed == pytest.approx(0.6)  # the first frame 5 px beyond the line (y 105 / 95)
    assert counter.counted(1) == {"stop-bar": [direction]}


def test_jitter_around_the_line_never_counts() -> None:
    counter = LineCounter([IMAGE_LINE])
    rng = np.random.default_rng(1)
    ys = [60.0, 70, 80, 90] + list(100 + rng.uniform(-4.5, 4.5, 200)) + [90.0, 80, 70]
    assert run(counter, ys) == []  # crosses the line dozens of times, never 5 px beyond on the far side


def test_a_track_stopping_on_the_line_and_wiggling_counts_once_when_it_leaves() -> None:
    counter = LineCounter([IMAGE_LINE])
    wiggle = [100 + (3 if i % 2 else -3) for i in range(100)]  # 100 side changes while standing on the line
    ys = [60.0, 70, 80, 90, *wiggle, 104, 110, 120, 130]
    out = run(counter, ys)
    assert [c.direction for c in out] == ["down"]
    # the crossing that counted is the last change of side: 97 (frame 102) -> 103 (frame 103), half-way
    assert out[0].t == pytest.approx(10.25) and out[0].t_confirmed == pytest.approx(10.5)  # y 110


def test_passing_beside_the_end_does_not_count() -> None:
    counter = LineCounter([IMAGE_LINE])
    assert run(counter, [60 + 5 * i for i in range(20)], x=205.0) == []  # 5 px right of B
    assert len(run(counter, [60 + 5 * i for i in range(20)], x=199.0, track_id=2)) == 1  # 1 px inside
    # going round the end onto the other side, then wiggling back over the segment: still nothing
    path = [(250, 60), (250, 100), (250, 120), (190, 120), (190, 102), (190, 98), (190, 103), (190, 130)]
    out = []
    for i, xy in enumerate(path):
        out += counter.update(10 + i * DT, [TrackPoint(3, image_xy=xy)])
    assert out == []


def test_back_and_forth_counts_once_per_direction() -> None:
    counter = LineCounter([IMAGE_LINE])
    down, up = list(range(80, 121, 4)), list(range(120, 79, -4))
    out = run(counter, [*down, *up, *down, *up])
    assert [c.direction for c in out] == ["down", "up"]


def test_a_track_born_next_to_the_line_is_never_armed() -> None:
    # an id that appears within the hysteresis of the line (id flicker) cannot count the passage again
    assert run(LineCounter([IMAGE_LINE]), [98 + 4 * i for i in range(10)]) == []


def test_crossing_carries_lane_class_and_speed_of_the_first_point_past_the_line() -> None:
    counter = LineCounter([IMAGE_LINE])
    lanes = [LaneArea("left", "image", ((0, 0), (100, 0), (100, 200), (0, 200)), 0.0)]
    out = []
    for i, y in enumerate(range(80, 121, 4)):
        p = TrackPoint(7, image_xy=(50, y), class_name="bus", speed_kmh=30.0 + i)
        out += counter.update(i * DT, [TrackPoint(**{**_fields(p), "lane_id": lane_at(lanes, p)})])
    (c,) = out
    assert (c.lane_id, c.class_name, c.speed_kmh) == ("left", "bus", 35.0)  # y 100 at frame 5: on the line
    assert c.to_dict()["direction"] == "down"


def _fields(p: TrackPoint) -> dict:
    return {name: getattr(p, name) for name in p.__dataclass_fields__}


def test_road_line_names_directions_like_the_image_and_spans_missing_points() -> None:
    # Drawn west -> east on the road plane: a vehicle heading 0 (+y) goes from its right to its left.
    gantry = Line("gantry", (-5.0, 10.0), (5.0, 10.0), "road", ("southbound", "northbound"), hysteresis=1.0)
    counter = LineCounter([gantry])
    out = []
    for i in range(20):
        y = 0.0 + i  # 1 m per 0.1 s; the road point is missing (beyond the horizon) on frames 9-11
        road = None if 9 <= i <= 11 else (0.5, y)
        out += counter.update(i * DT, [TrackPoint(4, image_xy=(300, 400 - 10 * i), road_xy=road)])
    (c,) = out
    assert c.direction == "northbound" and c.space == "road"
    assert c.t == pytest.approx(1.0) and c.y == pytest.approx(10)  # interpolated between t=0.8 and t=1.2


def test_state_round_trip_mid_track_gives_the_same_crossings() -> None:
    ys = [60 + 3 * i for i in range(30)]
    whole = run(LineCounter([IMAGE_LINE]), ys)
    first = LineCounter([IMAGE_LINE])
    part = run(first, ys[:12])  # stopped 4 px before the line, armed: the crossing is still to come
    assert part == []
    doc = json.loads(json.dumps(first.to_doc(), allow_nan=False))
    _, decoded = state_codec.decode(state_codec.encode("camera", {"lines": doc}), "camera")
    for restored in (LineCounter.from_doc(decoded["lines"]), LineCounter([IMAGE_LINE]).restore_tracks(doc)):
        rest = run(restored, ys[12:], t0=12 * DT)
        assert rest == whole and len(rest) == 1


def test_a_redrawn_line_forgets_its_per_track_state_on_restore() -> None:
    first = LineCounter([IMAGE_LINE])
    run(first, [60, 70, 80])  # armed above the line
    moved = Line("stop-bar", (0.0, 300.0), (200.0, 300.0), "image", ("down", "up"), hysteresis=5.0)
    restored = LineCounter([moved]).restore_tracks(first.to_doc())
    assert restored.track_ids() == [1] and restored._tracks[1].lines == {}
    kept = LineCounter([IMAGE_LINE]).restore_tracks(first.to_doc())
    assert kept._tracks[1].lines["stop-bar"].armed == -1


def test_stale_and_ended_tracks_are_forgotten() -> None:
    counter = LineCounter([IMAGE_LINE], forget_after_s=5.0)
    counter.update(0.0, [TrackPoint(1, image_xy=(10, 10)), TrackPoint(2, image_xy=(20, 10))])
    counter.update(4.0, [TrackPoint(2, image_xy=(20, 12))])
    assert sorted(counter.track_ids()) == [1, 2]
    counter.update(6.0, [TrackPoint(3, image_xy=(30, 10))])  # track 1 unseen for 6 s > 5 s
    assert sorted(counter.track_ids()) == [2, 3]
    counter.evict(2)
    assert counter.track_ids() == [3] and len(counter) == 1


def test_repeated_or_non_finite_input_is_ignored() -> None:
    counter = LineCounter([IMAGE_LINE])
    counter.update(1.0, [TrackPoint(1, image_xy=(100, 60))])
    assert counter.update(1.0, [TrackPoint(1, image_xy=(100, 140))]) == []  # same time: a repeat
    assert counter.update(0.5, [TrackPoint(1, image_xy=(100, 140))]) == []  # earlier: ignored
    assert counter.update(2.0, [TrackPoint(1, image_xy=(float("nan"), 140))]) == []
    assert counter.update(float("inf"), [TrackPoint(1, image_xy=(100, 140))]) == []
    assert len(counter.update(3.0, [TrackPoint(1, image_xy=(100, 140))])) == 1  # from y 60 straight through


def test_lines_from_camera_take_the_hysteresis_of_their_space() -> None:
    cam = Camera(
        id="cam",
        source="/videos/v.mp4",
        speed_limit_kmh=50,
        lines=[{"id": "a", "points": [[0, 10], [100, 10]]}],
        events={"crossing_hysteresis_px": 12},
    )
    (line,) = lines_from_camera(cam)
    assert (line.id, line.space, line.a, line.b, line.hysteresis) == ("a", "image", (0, 10), (100, 10), 12)
    assert line.directions == ("left_to_right", "right_to_left")
    assert LineCounter.from_camera(cam).lines == [line]


def test_lanes_at_matches_lane_at_point_by_point() -> None:
    from trafficstream.models.lines import lanes_at

    lanes = [
        LaneArea("a", "image", ((0, 0), (100, 0), (100, 200), (0, 200)), 0.0),
        LaneArea("b", "road", ((0, 0), (3.5, 0), (3.5, 50), (0, 50)), 180.0),
        LaneArea("c", "image", ((50, 0), (300, 0), (300, 200), (50, 200)), 0.0),  # overlaps a: a comes first
    ]
    points = [
        TrackPoint(1, image_xy=(60, 10)),  # a (and c)
        TrackPoint(2, image_xy=(200, 10)),  # c
        TrackPoint(3, image_xy=(500, 10), road_xy=(1.0, 10.0)),  # b
        TrackPoint(4, image_xy=None, road_xy=None),  # nowhere
        TrackPoint(5, image_xy=(500, 500), road_xy=(9.0, 10.0)),  # nowhere
    ]
    assert lanes_at(lanes, points) == [lane_at(lanes, p) for p in points] == ["a", "c", "b", None, None]
    assert lanes_at(lanes, []) == [] and lanes_at([], points) == [None] * 5
