"""LiveBuffers: bounded, deduplicated, ordered, and the KPI arithmetic."""

from __future__ import annotations

import json
import threading

import numpy as np
import pytest

from trafficstream.dashboards import buffers as live_buffers
from trafficstream.dashboards.buffers import LiveBuffers, speed_stats, utc_day
from trafficstream.results import crossing_message, encode, event_message

CAM = "cam-a"
T0 = 1_700_000_000.0
M0 = 60 * (T0 // 60)  # a wall-clock minute (flow minutes before 2000 are dropped as implausible)


def frame(index: int, ts: float | None = None, vehicles=(), in_roi=None, flow=None, camera=CAM) -> dict:
    msg = {
        "v": 1,
        "type": "frame",
        "camera_id": camera,
        "frame_index": index,
        "pts_s": index / 30,
        "capture_ts": T0 + index / 30 if ts is None else ts,
        "processed_ts": T0 + 1,
        "vehicles": list(vehicles),
    }
    if in_roi is not None:
        msg["counts"] = {"in_roi": in_roi}
    if flow is not None:
        msg["flow"] = flow
    return msg


def veh(track_id: int, kmh: float | None, cls: str = "car") -> dict:
    return {"id": track_id, "cls": cls, "conf": 0.9, "box": [10, 10, 50, 40], "kmh": kmh, "over": False}


def violation(track_id: int, index: int, ts: float | None = None, camera=CAM) -> dict:
    return {
        "v": 1,
        "type": "violation",
        "camera_id": camera,
        "track_id": track_id,
        "frame_index": index,
        "capture_ts": T0 + index / 30 if ts is None else ts,
        "cls": "car",
        "kmh": 131.2,
        "limit_kmh": 100,
        "over_s": 0.9,
        "evidence_uri": f"file:///ev/{camera}/{track_id}_{index}.jpg",
    }


@pytest.fixture
def buffers() -> LiveBuffers:
    return LiveBuffers([CAM, "cam-b"], max_frames=50)


def test_frames_are_bounded_and_keep_the_newest(buffers):
    for i in range(1000):
        assert buffers.add(frame(i))
    frames = buffers.frames(CAM)
    assert len(frames) == 50
    assert [f.frame_index for f in frames] == list(range(950, 1000))
    assert len(buffers._cameras[CAM].frame_keys) == 50  # the dedup index shrinks with the buffer
    assert buffers.frames("cam-b") == []


def test_duplicate_frames_are_ignored(buffers):
    assert buffers.add(frame(7, vehicles=[veh(1, 90)]))
    version = buffers.version(CAM)
    assert not buffers.add(frame(7, vehicles=[veh(1, 90)]))
    assert not buffers.add_raw(json.dumps(frame(7)).encode())
    assert len(buffers.frames(CAM)) == 1
    assert buffers.version(CAM) == version  # nothing to redraw
    assert buffers.counters["duplicates"] == 2
    # The duplicate's speed must not count twice in the vehicle's mean.
    assert buffers.vehicle_speeds(CAM, 60) == [("car", 90.0)]


def test_restarted_source_is_new_data_not_a_duplicate(buffers):
    buffers.add(frame(0, ts=T0))
    assert buffers.add(frame(0, ts=T0 + 20))  # same index, later capture: the clip was replayed
    assert [f.capture_ts for f in buffers.frames(CAM)] == [T0, T0 + 20]


def test_late_frames_are_inserted_in_order(buffers):
    for i in (0, 1, 2, 5, 6, 3, 4):
        buffers.add(frame(i))
    assert [f.frame_index for f in buffers.frames(CAM)] == [0, 1, 2, 3, 4, 5, 6]
    assert [f.frame_index for f in buffers.frames_after(CAM, buffers.frames(CAM)[3].key)] == [4, 5, 6]
    assert buffers.latest_frame(CAM).frame_index == 6


def test_late_frame_older_than_a_full_buffer_is_dropped(buffers):
    for i in range(100, 150):
        buffers.add(frame(i))
    assert not buffers.add(frame(3))
    assert buffers.add(frame(124, ts=T0 + 124.5 / 30))  # late (and distinct) but inside the kept range
    frames = buffers.frames(CAM)
    assert len(frames) == 50 and frames[0].frame_index == 101
    assert [f.key for f in frames] == sorted(f.key for f in frames)


def test_violations_deduplicated_newest_first_and_capped():
    b = LiveBuffers([CAM], max_frames=10, max_violations=5)
    for i in range(8):
        assert b.add(violation(track_id=i, index=10 * i))
    assert not b.add(violation(track_id=7, index=70))
    got = b.violations(CAM)
    assert [v["track_id"] for v in got] == [7, 6, 5, 4, 3]
    assert b.violations(CAM, limit=2)[0]["kmh"] == 131.2
    assert b.kpis(CAM, 3600).speeding_total == 8


def test_health_deduplicated_and_bounded():
    b = LiveBuffers([CAM], max_health=3)
    for i in range(5):
        assert b.add(
            {
                "v": 1,
                "type": "health",
                "batch_id": i,
                "batch_ms": 800.0,
                "frames": 64,
                "fps": 80.0,
                "ts": T0 + i,
                "lag": {CAM: 12, "bad": "x"},
            }
        )
    assert not b.add({"v": 1, "type": "health", "batch_id": 4, "ts": T0 + 4})
    health = b.health()
    assert [h["batch_id"] for h in health] == [2, 3, 4]
    assert health[-1]["lag"] == {CAM: 12}


def test_invalid_and_unknown_messages_are_dropped(buffers):
    assert not buffers.add_raw(b"not json")
    assert not buffers.add_raw(b'{"v": 2, "type": "frame"}')
    assert not buffers.add(frame(1, camera="elsewhere"))
    assert not buffers.add({"v": 1, "type": "frame", "camera_id": CAM, "frame_index": "1"})
    assert not buffers.add({"v": 1, "type": "violation", "camera_id": CAM})
    assert buffers.counters["invalid"] == 4
    assert buffers.counters["unknown_camera"] == 1
    assert buffers.frames(CAM) == []


def test_speed_stats_85th_percentile():
    assert speed_stats([]) == (None, None)
    speeds = [float(v) for v in range(1, 21)]  # 1..20 km/h
    mean, p85 = speed_stats(speeds)
    assert mean == pytest.approx(10.5)
    # Linear interpolation: rank 0.85 * (20 - 1) = 16.15 -> 17 + 0.15 * (18 - 17)
    assert p85 == pytest.approx(17.15)
    rng = np.random.default_rng(1)
    sample = rng.normal(100, 12, 501).tolist()
    assert speed_stats(sample)[1] == pytest.approx(float(np.percentile(sample, 85)))


def test_kpis(buffers):
    minute = 60 * (T0 // 60)
    # Vehicle 1 seen 10 minutes before the others: outside a 5 min window, inside 15 min.
    buffers.add(frame(0, ts=T0 - 600, vehicles=[veh(1, 70.0)], flow={"minute": minute - 600, "car": 1}))
    speeds = {2: [100.0, 110.0], 3: [80.0, 80.0], 4: [None, 130.0], 5: [60.0, 60.0]}
    for k in range(2):
        buffers.add(
            frame(
                10 + k,
                ts=T0 + k,
                in_roi=4,
                vehicles=[veh(t, s[k], "truck" if t == 3 else "car") for t, s in speeds.items()],
                flow={"minute": minute, "car": 2 + k, "truck": 1},
            )
        )
    # A stale flow update for the same minute (lower count) must not lower the total.
    buffers.add(frame(12, ts=T0 + 2, in_roi=3, vehicles=[], flow={"minute": minute, "car": 2, "truck": 1}))
    buffers.add(violation(4, 11, ts=T0 + 1))
    buffers.add(violation(9, 0, ts=T0 - 600))

    k = buffers.kpis(CAM, window_s=300, now=T0 + 4.5)
    assert k.in_roi == 3  # from the newest frame
    assert k.counted_by_class == {"car": 4, "truck": 1}  # 1 in the earlier minute + max 3 in this one
    assert k.counted_total == 5
    # One speed per vehicle (mean of its estimates): 105, 80, 130, 60.
    assert k.vehicles_window == 4
    assert k.mean_kmh == pytest.approx((105 + 80 + 130 + 60) / 4)
    assert k.p85_kmh == pytest.approx(float(np.percentile([105, 80, 130, 60], 85)))
    assert k.speeding_window == 1 and k.speeding_total == 2
    assert k.lag_s == pytest.approx(2.5)
    assert k.last_frame_index == 12

    wide = buffers.kpis(CAM, window_s=900, now=T0 + 4.5)
    assert wide.vehicles_window == 5 and wide.speeding_window == 2
    assert sorted(buffers.vehicle_speeds(CAM, 300)) == [("car", 60.0), ("car", 105.0), ("car", 130.0), ("truck", 80.0)]
    assert buffers.flow(CAM) == [(minute - 600, "car", 1), (minute, "car", 3), (minute, "truck", 1)]


def test_kpis_of_an_empty_camera(buffers):
    k = buffers.kpis(CAM, 300, now=T0)
    assert (k.in_roi, k.counted_total, k.mean_kmh, k.p85_kmh, k.lag_s) == (None, 0, None, None, None)


def test_track_and_flow_state_stays_bounded(monkeypatch):
    monkeypatch.setattr(live_buffers, "MAX_TRACKS", 100)
    monkeypatch.setattr(live_buffers, "MAX_FLOW_MINUTES", 30)
    b = LiveBuffers([CAM], max_frames=10)
    for i in range(3000):  # 3000 frames, a new vehicle in each, one minute apart every 30 frames
        b.add(frame(i, ts=T0 + i * 2, vehicles=[veh(i, 90.0)], flow={"minute": M0 + 60 * (i // 30), "car": i % 30 + 1}))
    cam = b._cameras[CAM]
    assert len(cam.tracks) <= 100
    assert len(cam.flow) == 30
    # Totals stay exact although old minutes were dropped: 100 minutes x 30 vehicles.
    assert b.kpis(CAM, 60).counted_total == 3000


def test_concurrent_writers_and_readers():
    b = LiveBuffers([CAM], max_frames=100)
    errors: list[BaseException] = []

    def write(offset: int) -> None:
        for i in range(2000):
            b.add(frame(i * 2 + offset, vehicles=[veh(i, 90.0)]))

    def read() -> None:
        try:
            for _ in range(300):
                frames = b.frames_after(CAM, None)
                assert [f.key for f in frames] == sorted(f.key for f in frames)
                b.kpis(CAM, 60)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(k,)) for k in (0, 1)] + [threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(b.frames(CAM)) == 100
    assert b.counters["received"] == 4000


def test_flow_minutes_stay_in_time_order(buffers):
    buffers.add(frame(1, flow={"minute": M0 + 120.0, "car": 2}))
    buffers.add(frame(2, flow={"minute": M0 + 60.0, "bus": 1}))  # a late frame of the previous minute
    buffers.add(frame(3, flow={"minute": M0 + 180.0, "car": 1}))
    assert buffers.flow(CAM) == [(M0 + 60.0, "bus", 1), (M0 + 120.0, "car", 2), (M0 + 180.0, "car", 1)]
    assert buffers.flow(CAM, minutes=2) == [(M0 + 120.0, "car", 2), (M0 + 180.0, "car", 1)]


# -- counting lines and traffic events ---------------------------------------------------------------------
def crossing(track_id: int, day_count: int, ts: float | None = None, line: str = "near", direction: str = "in", **kw):
    return crossing_message(
        camera_id=kw.pop("camera", CAM),
        line_id=line,
        track_id=track_id,
        direction=direction,
        ts=T0 + track_id if ts is None else ts,
        frame_index=10 * track_id,
        lane_id=kw.pop("lane_id", "lane-1"),
        class_name=kw.pop("class_name", "car"),
        speed_kmh=kw.pop("speed_kmh", 88.0),
        day_count=day_count,
    )


def event(event_id: str = "ab12", end_ts: float | None = None, event_type: str = "stopped_vehicle", **kw) -> dict:
    return event_message(
        camera_id=kw.pop("camera", CAM),
        event_id=event_id,
        event_type=event_type,
        start_ts=kw.pop("start_ts", T0),
        detect_ts=kw.pop("detect_ts", T0 + 20),
        end_ts=end_ts,
        track_id=kw.pop("track_id", 7),
        lane_id="lane-2",
        duration_s=kw.pop("duration_s", 20.0),
        **kw,
    )


def test_crossings_are_deduplicated_and_counted_per_line_and_direction(buffers):
    assert buffers.add(crossing(1, 41))
    assert buffers.add(crossing(2, 42))
    assert buffers.add(crossing(3, 7, direction="out"))
    assert buffers.add(crossing(3, 1, line="far"))  # same track, another line: another crossing
    version = buffers.counts_version(CAM)
    assert not buffers.add(crossing(2, 42))  # a replayed micro-batch
    assert not buffers.add_raw(encode(crossing(2, 42)))
    assert buffers.counters["duplicates"] == 2 and buffers.counts_version(CAM) == version
    assert [c["track_id"] for c in buffers.crossings(CAM)] == [3, 3, 2, 1]  # newest first
    counts = {(c.line_id, c.direction): c for c in buffers.line_counts(CAM)}
    assert {k: c.count for k, c in counts.items()} == {("far", "in"): 1, ("near", "in"): 42, ("near", "out"): 7}
    near = counts[("near", "in")]
    assert near.day == utc_day(T0) and near.last_ts == T0 + 2
    assert near.last == {"track_id": 2, "lane_id": "lane-1", "cls": "car", "kmh": 88.0}
    assert buffers.line_counts("cam-b") == [] and buffers.crossings("cam-b") == []


def test_line_count_is_the_newest_days_highest_day_count(buffers):
    day = 86400 * (T0 // 86400)  # 00:00 UTC of T0's day
    buffers.add(crossing(1, 500, ts=day + 3600))
    buffers.add(crossing(2, 498, ts=day + 3500))  # reordered: an earlier crossing arrives later
    (c,) = buffers.line_counts(CAM)
    assert (c.count, c.last_ts) == (500, day + 3600)
    buffers.add(crossing(3, 1, ts=day + 86400 + 5))  # the next UTC day starts from 1
    (c,) = buffers.line_counts(CAM)
    assert (c.day, c.count) == (utc_day(day + 86400), 1)
    buffers.add(crossing(4, 501, ts=day + 3700))  # a late crossing of the day before: today's count stands
    (c,) = buffers.line_counts(CAM)
    assert (c.day, c.count, c.last["track_id"]) == (utc_day(day + 86400), 1, 3)
    assert len(buffers.crossings(CAM)) == 4  # kept all the same


def test_crossings_and_line_counts_stay_bounded(monkeypatch):
    monkeypatch.setattr(live_buffers, "MAX_LINE_COUNTS", 8)
    b = LiveBuffers([CAM])
    for i in range(1, 3001):
        assert b.add(crossing(i, i, ts=T0 + i / 100, line=f"l{i % 20}"))
    cam = b._cameras[CAM]
    assert len(cam.crossings) == live_buffers.MAX_CROSSINGS
    assert len(cam.crossing_keys) <= 4 * live_buffers.MAX_CROSSINGS
    assert len(b.line_counts(CAM)) == 8  # the lines updated most recently
    assert b.crossings(CAM, limit=1)[0]["track_id"] == 3000


def test_a_crossing_without_a_day_count_is_kept_but_not_counted(buffers):
    msg = crossing(1, 5)
    del msg["day_count"]  # an older producer
    assert buffers.add(msg)
    assert len(buffers.crossings(CAM)) == 1 and buffers.line_counts(CAM) == []


def test_traffic_events_latest_report_wins_and_an_ended_event_stays_ended(buffers):
    assert buffers.add(event("aa", detect_ts=T0 + 20))
    assert buffers.add(event("bb", event_type="queue", detect_ts=T0 + 30, track_id=None, max_vehicles=4))
    assert buffers.add(event("cc", event_type="wrong_way", detect_ts=T0 + 25, camera="cam-b", distance_m=42.0))
    version = buffers.events_version
    assert not buffers.add(event("aa", detect_ts=T0 + 20))  # replayed: nothing new
    assert buffers.events_version == version
    assert [e["event_id"] for e in buffers.traffic_events()] == ["bb", "cc", "aa"]  # newest detection first
    assert buffers.add(event("aa", detect_ts=T0 + 20, end_ts=T0 + 95, duration_s=95.0))  # it ended
    assert buffers.events_version == version + 1
    (aa,) = [e for e in buffers.traffic_events() if e["event_id"] == "aa"]
    assert (aa["end_ts"], aa["duration_s"]) == (T0 + 95, 95.0)
    assert not buffers.add(event("aa", detect_ts=T0 + 20))  # a late "open" report does not reopen it
    assert buffers.traffic_events([CAM], ["stopped_vehicle"])[0]["end_ts"] == T0 + 95
    assert [e["event_id"] for e in buffers.traffic_events([CAM])] == ["bb", "aa"]
    assert [e["event_id"] for e in buffers.traffic_events(None, ["wrong_way", "queue"])] == ["bb", "cc"]
    assert buffers.traffic_events(["nope"]) == [] and buffers.traffic_events(event_types=[]) == []
    assert [e["event_id"] for e in buffers.traffic_events(limit=1)] == ["bb"]


def test_traffic_events_stay_bounded(monkeypatch):
    monkeypatch.setattr(live_buffers, "MAX_TRAFFIC_EVENTS", 10)
    b = LiveBuffers([CAM])
    for i in range(100):
        b.add(event(f"{i:x}", detect_ts=T0 + i, end_ts=T0 + i + 1))
    assert len(b.traffic_events()) == 10 and b.traffic_events()[0]["event_id"] == f"{99:x}"
    assert len(b._cameras[CAM].ended_events) <= 40
