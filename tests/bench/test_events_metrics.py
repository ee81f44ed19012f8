"""Crossing and event scores against hand-built ground truth: each test perturbs perfect pipeline output in one
known way and checks that exactly that is measured."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import polars as pl
import pytest

from trafficstream.bench.events_metrics import (
    evaluate_events,
    events_on_clip_timeline,
    score_crossings,
    score_events,
    track_vehicles,
    vehicle_of,
)
from trafficstream.config import PROJECT_ROOT

FPS = 10.0
N_FRAMES = 60
LINE = {
    "id": "L",
    "space": "road",
    "points": [[-1.0, 16.0], [13.0, 16.0]],
    "directions": ["towards_camera", "away_from_camera"],
}


def _crossing(vid: int, direction: str, t: float, x: float, height: float = 80.0) -> dict:
    return {
        "line_id": "L",
        "direction": direction,
        "vehicle_id": vid,
        "t_s": t,
        "frame_index": int(t * FPS) + 1,
        "x": x,
        "y": 16.0,
        "height_px": height,
        "visibility": 1.0,
        "in_picture": True,
        "confirmable": True,
        "countable": height >= 40,
    }


def _ground_truth() -> dict:
    """Vehicles 1-8, each with a fixed box of its own on every frame (so a track's boxes say which vehicle it
    is). True crossings of line L: 1, 2 towards the camera, 4 away from it, 3 too small to demand. Events:
    4 drives the wrong way, 5 stops (1-4 s) with 6 and 7 queueing behind it, 8 stops too briefly."""
    frames = [
        {
            "frame_index": f,
            "pts_s": f / FPS,
            "vehicles": [
                {
                    "vehicle_id": v,
                    "class_name": "car",
                    "box": [100.0 * v, 300.0, 100.0 * v + 60, 360.0],
                    "visibility": 1.0,
                    "in_roi": True,
                    "world_x": 1.75,
                    "world_y": 20.0,
                    "speed_kmh": 50.0,
                }
                for v in range(1, 9)
            ],
        }
        for f in range(N_FRAMES)
    ]
    return {
        "camera_id": "synthetic",
        "fps": FPS,
        "n_frames": N_FRAMES,
        "frames": frames,
        "vehicles": [],
        "geometry": {"lines": [LINE], "lanes": [], "zones": [], "events": {}},
        "count_min_height_px": 40.0,
        "crossings": [
            _crossing(1, "towards_camera", 1.0, 1.75),
            _crossing(2, "towards_camera", 2.0, 5.25),
            _crossing(4, "away_from_camera", 2.5, 8.75),
            _crossing(3, "towards_camera", 3.0, 8.75, height=30.0),
        ],
        "events": [
            {"type": "wrong_way", "vehicle_ids": [4], "lane_id": "lane_2", "zone_id": None, "start_s": 1.5,
             "end_s": 4.0, "observable": True},
            {"type": "stopped_vehicle", "vehicle_ids": [5], "lane_id": "lane_0", "zone_id": None, "start_s": 1.0,
             "end_s": 4.0, "observable": True},
            {"type": "queue", "vehicle_ids": [5, 6, 7], "lane_id": "lane_0", "zone_id": "queue_zone",
             "start_s": 2.0, "end_s": 4.5, "max_vehicles": 3, "observable": True},
            {"type": "stopped_vehicle", "vehicle_ids": [8], "lane_id": "lane_1", "zone_id": None, "start_s": 5.0,
             "end_s": None, "observable": False},
        ],
    }  # fmt: skip


GT = _ground_truth()


def _detections(extra: list[dict] | None = None) -> pl.DataFrame:
    """Perfect tracking: vehicle v is track 10 v on every frame."""
    rows = [
        {"camera_id": "synthetic", "frame_index": f["frame_index"], "track_id": 10 * v["vehicle_id"],
         "x1": v["box"][0], "y1": v["box"][1], "x2": v["box"][2], "y2": v["box"][3]}
        for f in GT["frames"]
        for v in f["vehicles"]
    ]  # fmt: skip
    return pl.DataFrame(rows + (extra or []))


def _row(track: int, direction: str, t: float, x: float, line: str = "L") -> dict:
    return {
        "camera_id": "synthetic",
        "line_id": line,
        "track_id": track,
        "direction": direction,
        "crossing_pts_s": t,
        "frame_index": int(t * FPS) + 2,
        "x": x,
        "y": 16.0,
    }


PERFECT_CROSSINGS = [
    _row(10, "towards_camera", 1.01, 1.8),
    _row(20, "towards_camera", 1.98, 5.2),
    _row(40, "away_from_camera", 2.5, 8.75),
]


def _event(kind: str, track: int | None, start: float, detect: float, end: float | None, **kw) -> dict:
    row = {
        "camera_id": "synthetic",
        "event_id": f"{kind}-{track}-{start}",
        "event_type": kind,
        "track_id": track,
        "lane_id": kw.pop("lane_id", None),
        "zone_id": kw.pop("zone_id", None),
        "start_s": start,
        "detect_s": detect,
        "end_s": end,
        "max_vehicles": kw.pop("max_vehicles", None),
    }
    assert not kw
    return row


PERFECT_EVENTS = [
    _event("wrong_way", 40, 1.6, 2.3, 2.3, lane_id="lane_2"),
    _event("stopped_vehicle", 50, 0.6, 3.6, 4.5, lane_id="lane_0"),
    _event("queue", None, 2.0, 4.0, 4.5, lane_id="lane_0", zone_id="queue_zone", max_vehicles=3),
]


def _events(rows: list[dict]) -> pl.DataFrame:
    return pl.DataFrame(rows, infer_schema_length=None)


def test_tracks_are_told_apart_by_their_boxes() -> None:
    extra = [  # track 11 takes over vehicle 1's box for frames 20-29 (an id switch)
        {"camera_id": "synthetic", "frame_index": f, "track_id": 11, "x1": 100.0, "y1": 300.0, "x2": 160.0,
         "y2": 360.0}
        for f in range(20, 30)
    ]  # fmt: skip
    dets = _detections(extra).filter(~((pl.col("track_id") == 10) & pl.col("frame_index").is_between(20, 29)))
    tracks = track_vehicles(GT, dets)
    assert tracks["10"][0] == 1 and 20 not in tracks["10"]
    assert set(tracks["11"].values()) == {1}
    assert vehicle_of(tracks, 11, 0, 100) == 1
    assert vehicle_of(tracks, 20, 5, 6) == 2
    assert vehicle_of(tracks, 20, 500, 600) == 2  # outside its frames: its whole life
    assert vehicle_of(tracks, 99, 0, 100) is None


def test_perfect_crossings_are_exact() -> None:
    result = score_crossings(GT, pl.DataFrame(PERFECT_CROSSINGS), detections=_detections())
    assert result["exact"] is True
    assert (result["true"], result["measured"], result["counted"]) == (3, 3, 3)
    assert result["double"] == result["missed"] == result["spurious"] == result["ignored"] == 0
    towards = result["per_line"]["L"]["towards_camera"]
    assert (towards["true"], towards["measured"], towards["counted"]) == (2, 2, 2)
    assert result["per_line"]["L"]["away_from_camera"]["counted"] == 1
    assert result["max_abs_time_error_s"] == pytest.approx(0.02)
    assert result["params"]["matched_by"] == "detections"


def test_double_missed_spurious_and_ignored_crossings() -> None:
    extra = [  # a second track on vehicle 1 (frames where track 10 is not there)
        {"camera_id": "synthetic", "frame_index": f, "track_id": 11, "x1": 100.0, "y1": 300.0, "x2": 160.0,
         "y2": 360.0}
        for f in range(30, 40)
    ]  # fmt: skip
    dets = _detections(extra).filter(~((pl.col("track_id") == 10) & pl.col("frame_index").is_between(30, 39)))
    rows = [
        _row(10, "towards_camera", 1.0, 1.75),
        _row(11, "towards_camera", 3.5, 1.75),  # vehicle 1 again: a double count
        _row(99, "towards_camera", 2.0, 5.25),  # a track of no vehicle: spurious
        _row(30, "towards_camera", 3.0, 8.75),  # vehicle 3 did cross but is too small: ignored
        _row(40, "towards_camera", 2.5, 8.75),  # vehicle 4 crossed the other way: spurious
        # vehicle 2 and vehicle 4 (away) are not counted: missed
    ]
    result = score_crossings(GT, pl.DataFrame(rows), detections=dets)
    towards = result["per_line"]["L"]["towards_camera"]
    assert towards["double"] == 1 and towards["double_vehicles"] == [1]
    assert towards["missed"] == 1 and towards["missed_vehicles"] == [2]
    assert towards["spurious"] == 2 and towards["spurious_tracks"] == ["40", "99"]
    assert towards["ignored"] == 1
    assert result["per_line"]["L"]["away_from_camera"]["missed"] == 1
    assert (result["double"], result["missed"], result["spurious"], result["exact"]) == (1, 2, 2, False)
    assert result["measured"] == 5 and result["true"] == 3 and result["counted"] == 1
    # A lower bar demands vehicle 3 too: it is counted now, no longer ignored.
    low = score_crossings(GT, pl.DataFrame(rows), detections=dets, min_height_px=20)
    assert low["per_line"]["L"]["towards_camera"]["true"] == 3 and low["ignored"] == 0 and low["counted"] == 2


def test_crossings_matched_by_time_and_place_without_detections() -> None:
    rows = [
        *PERFECT_CROSSINGS,
        _row(12, "towards_camera", 1.3, 1.9),  # next to vehicle 1's crossing: counted twice
        _row(13, "towards_camera", 5.0, 1.75),  # nothing crossed then: spurious
        _row(14, "away_from_camera", 2.6, 1.75),  # at the right time but 7 m from vehicle 4: spurious
    ]
    result = score_crossings(GT, pl.DataFrame(rows))
    assert result["params"]["matched_by"] == "time_position"
    towards = result["per_line"]["L"]["towards_camera"]
    assert (towards["counted"], towards["double"], towards["spurious"], towards["missed"]) == (2, 1, 1, 0)
    away = result["per_line"]["L"]["away_from_camera"]
    assert (away["counted"], away["spurious"]) == (1, 1)
    assert score_crossings(GT, pl.DataFrame(PERFECT_CROSSINGS))["exact"] is True


def test_empty_output_misses_everything_and_other_cameras_are_ignored() -> None:
    other = [dict(r, camera_id="elsewhere") for r in PERFECT_CROSSINGS]
    result = score_crossings(GT, pl.DataFrame(other), detections=_detections())
    assert (result["measured"], result["missed"], result["exact"]) == (0, 3, False)
    empty = pl.DataFrame(schema={"line_id": pl.String, "track_id": pl.Int64, "direction": pl.String,
                                 "crossing_pts_s": pl.Float64})  # fmt: skip
    assert score_crossings(GT, empty)["missed"] == 3


def test_perfect_events_score_one_with_their_timing() -> None:
    result = score_events(GT, _events(PERFECT_EVENTS), detections=_detections())
    for kind in ("wrong_way", "stopped_vehicle", "queue"):
        assert (result[kind]["precision"], result[kind]["recall"]) == (1.0, 1.0), kind
        assert result[kind]["false_positives"] == result[kind]["false_negatives"] == 0
    stop = result["stopped_vehicle"]
    assert stop["true"] == 1  # vehicle 8's stop is too short to demand
    assert stop["mean_start_error_s"] == pytest.approx(-0.4)
    assert stop["mean_detect_delay_s"] == pytest.approx(2.6)
    assert stop["mean_end_error_s"] == pytest.approx(0.5)
    assert result["wrong_way"]["mean_end_error_s"] is None  # reported closed when certain: no end to compare
    assert result["queue"]["matches"][0]["max_vehicles"] == result["queue"]["matches"][0]["true_max_vehicles"] == 3
    assert result["other_types"] == {}


def test_false_positives_duplicates_misses_and_unobservable_events() -> None:
    rows = [
        _event("wrong_way", 20, 1.6, 2.3, 2.3, lane_id="lane_2"),  # vehicle 2 drove the right way
        _event("stopped_vehicle", 50, 0.6, 3.6, None, lane_id="lane_0"),
        _event("stopped_vehicle", 50, 2.0, 3.9, None, lane_id="lane_0"),  # the same stop reported twice
        _event("stopped_vehicle", 60, 1.5, 4.4, 4.6, lane_id="lane_0"),  # a queueing car: not a stopped vehicle
        _event("stopped_vehicle", 80, 5.0, 5.5, None, lane_id="lane_1"),  # unobservable truth: neither
        _event("speeding", 10, 1.0, 1.0, 1.0),
    ]
    result = score_events(GT, _events(rows), detections=_detections())
    ww = result["wrong_way"]
    assert (ww["true_positives"], ww["false_positives"], ww["false_negatives"]) == (0, 1, 1)
    assert (ww["precision"], ww["recall"], ww["missed"]) == (0.0, 0.0, [[4]])
    stop = result["stopped_vehicle"]
    assert (stop["true_positives"], stop["false_positives"], stop["duplicates"], stop["ignored"]) == (1, 2, 1, 1)
    assert stop["precision"] == pytest.approx(1 / 3) and stop["recall"] == 1.0
    assert sorted(stop["false_positive_tracks"]) == ["50", "60"]
    assert stop["mean_end_error_s"] is None  # the match is still open
    assert result["queue"]["recall"] == 0.0 and result["queue"]["precision"] is None
    assert result["other_types"] == {"speeding": 1}


def test_events_without_detections_match_by_lane_and_zone() -> None:
    result = score_events(GT, _events(PERFECT_EVENTS))
    assert result["params"]["matched_by"] == "lane_time"
    assert all(result[k]["recall"] == 1.0 for k in ("wrong_way", "stopped_vehicle", "queue"))
    wrong = [
        _event("stopped_vehicle", 50, 0.6, 3.6, 4.5, lane_id="lane_2"),
        _event("queue", None, 2.0, 4.0, 4.5, lane_id="lane_0", zone_id="other_zone"),
    ]
    result = score_events(GT, _events(wrong))
    assert result["stopped_vehicle"]["precision"] == 0.0 and result["queue"]["precision"] == 0.0


def test_last_report_of_an_event_counts() -> None:
    first = _event("stopped_vehicle", 50, 0.6, 3.6, None, lane_id="lane_0")
    closed = dict(first, end_s=4.4)
    result = score_events(GT, _events([first, closed]), detections=_detections())
    stop = result["stopped_vehicle"]
    assert (stop["reported"], stop["precision"], stop["duplicates"]) == (1, 1.0, 0)
    assert stop["mean_end_error_s"] == pytest.approx(0.4)


def test_wall_clock_event_times_go_back_onto_the_clip_timeline() -> None:
    base = datetime(2026, 1, 5, 12, 0, tzinfo=timezone.utc)
    # Frames published faster than real time: capture time and pts drift apart frame by frame.
    frames = pl.DataFrame(
        {
            "frame_index": list(range(N_FRAMES)),
            "pts_s": [f / FPS for f in range(N_FRAMES)],
            "capture_ts": [base + timedelta(seconds=0.013 * f) for f in range(N_FRAMES)],
        }
    )

    def wall(t: float, frame: int) -> datetime:  # as the job stamps a pts time on the reporting frame
        return base + timedelta(seconds=0.013 * frame) + timedelta(seconds=t - frame / FPS)

    events = pl.DataFrame(
        {
            "event_type": ["stopped_vehicle", "wrong_way"],
            "track_id": [50, 40],
            "start_ts": [wall(0.6, 45), wall(1.6, 23)],
            "detect_ts": [wall(3.6, 45), wall(2.3, 23)],
            "end_ts": [wall(4.5, 45), None],
            "frame_index": [45, 23],
        }
    )
    on_clip = events_on_clip_timeline(events, frames)
    assert on_clip["start_s"].to_list() == pytest.approx([0.6, 1.6], abs=1e-5)
    assert on_clip["detect_s"].to_list() == pytest.approx([3.6, 2.3], abs=1e-5)
    assert on_clip["end_s"][0] == pytest.approx(4.5, abs=1e-5) and on_clip["end_s"][1] is None
    assert events_on_clip_timeline(on_clip, frames) is on_clip  # already on it


def test_a_ground_truth_without_counting_geometry_is_refused() -> None:
    bare = {k: v for k, v in GT.items() if k not in ("geometry", "crossings")}
    with pytest.raises(ValueError, match="counting geometry"):
        evaluate_events(bare, pl.DataFrame(PERFECT_CROSSINGS), _events(PERFECT_EVENTS))


def test_evaluate_events_and_cli(tmp_path: Path) -> None:
    both = evaluate_events(GT, pl.DataFrame(PERFECT_CROSSINGS), _events(PERFECT_EVENTS), detections=_detections())
    assert both["crossings"]["exact"] and both["events"]["stopped_vehicle"]["recall"] == 1.0
    gt_path = tmp_path / "ground_truth.json"
    gt_path.write_text(json.dumps(GT))
    pl.DataFrame(PERFECT_CROSSINGS).write_parquet(tmp_path / "crossings.parquet")
    _events(PERFECT_EVENTS).write_parquet(tmp_path / "events.parquet")
    _detections().write_parquet(tmp_path / "detections.parquet")
    done = subprocess.run(
        [sys.executable, "-m", "trafficstream.bench.events_metrics", "--ground-truth", str(gt_path),
         "--crossings", str(tmp_path / "crossings.parquet"), "--events", str(tmp_path / "events.parquet"),
         "--detections", str(tmp_path / "detections.parquet")],
        cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["crossings"]["exact"] is True and out["events"]["wrong_way"]["precision"] == 1.0
