"""Absurd results messages (times in the year 10^292, negative or NaN times, 400-digit integers, wrong types,
missing fields) go through the live buffers, figures, layout helpers, callbacks and the video renderer
without raising; they are dropped and counted, and the good messages around them still show. Crossings and
traffic events included: hostile ids, counts and times never reach the counts table or the events log."""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from typing import Any

import numpy as np
import polars as pl
import pytest
from test_dashboard_app import dash_call, key_of

from trafficstream.dashboards import figures
from trafficstream.dashboards import layout as L
from trafficstream.dashboards.app import create_app, get_context
from trafficstream.dashboards.buffers import LiveBuffers, LiveFrame
from trafficstream.dashboards.times import NO_TIME, clock, wall_ts
from trafficstream.dashboards.video import MjpegStreamer, draw_overlays, vehicle_label
from trafficstream.results import crossing_message, event_message
from trafficstream.video import FrameReader

MOTORWAY = "motorway-overpass"
HUGE = 10**400  # a valid JSON integer, too large for a float
_MISSING = object()  # drop the field
ABSURD_TIMES = [
    1e300,
    -1e300,
    -5.0,
    0.0,
    1e10,
    math.nan,
    math.inf,
    -math.inf,
    None,
    "2024-01-01",
    HUGE,
    True,
    [1],
    {"t": 1},
    time.time() + 86400 * 365 * 50,
]


def frame_msg(now: float, index: int = 1, **fields: Any) -> dict[str, Any]:
    msg = {
        "v": 1,
        "type": "frame",
        "camera_id": MOTORWAY,
        "frame_index": index,
        "pts_s": 1.0,
        "capture_ts": now,
        "processed_ts": now + 0.5,
        "vehicles": [{"id": 3, "cls": "car", "conf": 0.9, "box": [400, 300, 560, 420], "kmh": 97.0, "over": False}],
        "counts": {"in_roi": 1, "car": 1},
        "flow": {"minute": 60 * (now // 60), "car": 1},
    }
    msg.update(fields)
    return {k: v for k, v in msg.items() if v is not _MISSING}


def violation_msg(now: float, **fields: Any) -> dict[str, Any]:
    msg = {
        "v": 1,
        "type": "violation",
        "camera_id": MOTORWAY,
        "track_id": 3,
        "frame_index": 40,
        "capture_ts": now,
        "cls": "car",
        "kmh": 131.2,
        "limit_kmh": 100,
        "over_s": 0.9,
        "evidence_uri": None,
    }
    msg.update(fields)
    return {k: v for k, v in msg.items() if v is not _MISSING}


def crossing_msg(now: float, **fields: Any) -> dict[str, Any]:
    msg = crossing_message(
        camera_id=MOTORWAY,
        line_id="near",
        track_id=3,
        direction="towards_camera",
        ts=now,
        frame_index=40,
        lane_id="lane-2",
        class_name="car",
        speed_kmh=97.0,
        day_count=812,
    )
    msg.update(fields)
    return {k: v for k, v in msg.items() if v is not _MISSING}


def event_msg(now: float, **fields: Any) -> dict[str, Any]:
    msg = event_message(
        camera_id=MOTORWAY,
        event_id="5f0c2a9e41d7b83c6a12",
        event_type="stopped_vehicle",
        start_ts=now - 20,
        detect_ts=now,
        track_id=7,
        lane_id="lane-2",
        duration_s=20.0,
    )
    msg.update(fields)
    return {k: v for k, v in msg.items() if v is not _MISSING}


def health_msg(now: float, **fields: Any) -> dict[str, Any]:
    msg = {
        "v": 1,
        "type": "health",
        "batch_id": 7,
        "batch_ms": 812.0,
        "frames": 64,
        "fps": 78.8,
        "ts": now,
        "lag": {MOTORWAY: 12},
    }
    msg.update(fields)
    return msg


def absurd_messages(now: float) -> list[dict[str, Any]]:
    """Every kind of garbage a results topic could carry."""
    out: list[dict[str, Any]] = []
    for t in ABSURD_TIMES:
        out += [
            frame_msg(now, capture_ts=t),
            violation_msg(now, capture_ts=t),
            health_msg(now, ts=t),
            frame_msg(now, index=500, processed_ts=t, flow={"minute": t, "car": 2}),
            crossing_msg(now, ts=t, track_id=900),
            event_msg(now, event_id="e1", detect_ts=t),
            event_msg(now, event_id="e2", start_ts=t),
            event_msg(now, event_id="e3", end_ts=t) if t is not None else event_msg(now, event_id="e3", end_ts=[t]),
        ]
    for index in (HUGE, 10**30, -1, "3", 1.5, None, True):
        out += [frame_msg(now, index=index), violation_msg(now, frame_index=index, track_id=index)]
    for pts in (1e300, -1.0, math.nan, HUGE, "0.1"):
        out.append(frame_msg(now, pts_s=pts))
    for field in ("capture_ts", "frame_index", "pts_s", "camera_id", "vehicles", "flow", "counts"):
        out.append(frame_msg(now, **{field: _MISSING}))
    for cam in ([MOTORWAY], {"id": MOTORWAY}, 7, None):
        out += [frame_msg(now, camera_id=cam), violation_msg(now, camera_id=cam)]
    bad_vehicles = [
        {"id": HUGE, "cls": ["car"], "box": [math.nan, 1, 2, 3], "kmh": HUGE},
        {"id": "x", "box": ["a", "b", "c", "d"], "kmh": "fast", "over": "false"},
        {"id": 5, "box": [1e300, -1e300, math.inf, 4], "kmh": 1e300},
        "not a vehicle",
        None,
        42,
    ]
    out.append(frame_msg(now, index=600, vehicles=bad_vehicles))
    out.append(frame_msg(now, index=601, vehicles="nope", counts={"in_roi": HUGE}))
    out.append(frame_msg(now, index=602, flow={"minute": 60 * (now // 60), "car": HUGE, "bus": -3, "truck": "9"}))
    out.append(frame_msg(now, index=603, flow=["minute", 1]))
    for bad in (HUGE, -1, 0, "812", 1.5, True, None, 10**12):  # day counts: kept as crossings, never counted
        out.append(crossing_msg(now, line_id="absurd", track_id=1000 + len(out), day_count=bad))
    for line_id in ("", "x" * 5000, "../../etc", "a b", None, 7, ["near"], {"id": "near"}):
        out += [crossing_msg(now, line_id=line_id), crossing_msg(now, direction=line_id, track_id=901)]
    for track_id in (HUGE, -1, "3", None, 1.5, True):
        out += [crossing_msg(now, track_id=track_id), event_msg(now, event_id="e4", track_id=track_id)]
    out += [
        crossing_msg(now, track_id=902, kmh=HUGE, cls=["car"], lane_id={"x": 1}, frame_index=HUGE),
        crossing_msg(now, track_id=903, camera_id="elsewhere"),
        *(crossing_msg(now, **{"track_id": 904, f: _MISSING}) for f in ("line_id", "direction", "track_id", "ts")),
    ]
    for event_id in ("", "NOT-HEX", "g" * 10, "a" * 65, HUGE, None, ["ab"], "ab\n"):
        out.append(event_msg(now, event_id=event_id))
    for event_type in ("fire", "", None, 3, ["queue"], "QUEUE"):
        out.append(event_msg(now, event_id="e5", event_type=event_type))
    out += [
        event_msg(
            now,
            event_id="e6",
            duration_s=HUGE,
            distance_m=1e300,
            max_length_m=math.nan,
            max_vehicles=HUGE,
            kmh=-5,
            cls={"a": 1},
            lane_id="x" * 500,
            zone_id=3,
            frame_index=-1,
        ),
        *(
            event_msg(now, **{"event_id": "e7", f: _MISSING})
            for f in ("event_id", "event_type", "start_ts", "detect_ts")
        ),
        {"v": 1, "type": "crossing"},
        {"v": 1, "type": "event"},
    ]
    out += [
        violation_msg(now, kmh=HUGE, limit_kmh=math.nan, over_s=1e300, cls={"a": 1}, evidence_uri=5),
        health_msg(now, batch_id=[1, 2], batch_ms=HUGE, fps=math.nan, frames=HUGE, lag={MOTORWAY: HUGE}),
        health_msg(now, lag="lots"),
        {"v": 1, "type": "frame"},
        {"v": 1, "type": "violation"},
        {"v": 1, "type": "health"},
    ]
    return out


def test_wall_ts_accepts_only_plausible_times():
    now = 1_700_000_000.0
    assert wall_ts(now, now) == now and wall_ts(int(now), now) == now
    assert wall_ts(now + 600, now) == now + 600  # clock skew between hosts
    for t in ABSURD_TIMES:
        assert wall_ts(t, now) is None, t
    assert clock(1e300) == clock(math.nan) == clock(HUGE) == clock(None) == NO_TIME
    assert clock(now) != NO_TIME


def test_buffers_drop_absurd_messages_and_keep_the_good_ones(demo_settings):
    buffers = LiveBuffers.from_settings(demo_settings)
    now = time.time()
    good = [frame_msg(now - 2 + i / 30, index=i) for i in range(30)] + [violation_msg(now - 1), health_msg(now - 1)]
    good += [crossing_msg(now - 1), event_msg(now - 1)]
    for msg in good:
        assert buffers.add(msg)
    absurd = absurd_messages(now)
    for msg in absurd:
        buffers.add(msg)  # never raises
    for text in (
        b'{"v":1,"type":"frame","camera_id":"motorway-overpass","frame_index":1,"pts_s":0,"capture_ts":NaN}',
        b'{"v":1,"type":"frame","camera_id":"motorway-overpass","frame_index":1,"pts_s":0,"capture_ts":1e999}',
        b'{"v":1,"type":"health","ts":-Infinity}',
        json.dumps(frame_msg(1e300)).encode(),
    ):
        assert not buffers.add_raw(text)
    assert buffers.counters["invalid"] > len(ABSURD_TIMES) * 3 and buffers.counters["unknown_camera"] >= 8

    frames = buffers.frames(MOTORWAY)
    assert all(wall_ts(f.capture_ts, now) is not None for f in frames)
    assert all(0 <= f.frame_index < 10**12 for f in frames)
    assert buffers.latest_frame(MOTORWAY).capture_ts <= now + 1  # no frame "from 2076" became the newest
    k = buffers.kpis(MOTORWAY, 300)
    assert k.last_frame_index is not None and 0 <= k.lag_s < 60
    assert all(0 <= kmh <= 1000 for _, kmh in buffers.vehicle_speeds(MOTORWAY, 300))
    assert all(wall_ts(m, now) is not None and 0 <= n <= 10**9 for m, _, n in buffers.flow(MOTORWAY))
    assert all(wall_ts(h["ts"], now) is not None for h in buffers.health())
    assert all(wall_ts(v["capture_ts"], now) is not None for v in buffers.violations(MOTORWAY))
    counts = buffers.line_counts(MOTORWAY)
    assert [(c.line_id, c.direction, c.count) for c in counts] == [("near", "towards_camera", 812)]
    for c in buffers.crossings(MOTORWAY):
        assert c["line_id"] in ("near", "absurd") and c["direction"] == "towards_camera"
        assert wall_ts(c["ts"], now) is not None and 0 <= c["track_id"] < 2**63
        assert c["kmh"] is None or 0 <= c["kmh"] <= 1000
        assert c["lane_id"] in ("lane-2", None) and c["cls"] in ("car", None)
    # The good event, and those whose required fields were sane (their absurd figures left out).
    events = {e["event_id"]: e for e in buffers.traffic_events()}
    assert sorted(events) == ["5f0c2a9e41d7b83c6a12", "e4", "e6"]
    assert events["e4"]["track_id"] is None and events["5f0c2a9e41d7b83c6a12"]["track_id"] == 7
    figures_of_e6 = ("duration_s", "distance_m", "max_length_m", "max_vehicles", "kmh", "cls", "lane_id", "zone_id")
    assert all(events["e6"][k] is None for k in (*figures_of_e6, "frame_index"))
    for e in events.values():
        assert all(wall_ts(e[k], now) is not None for k in ("start_ts", "detect_ts")) and e["end_ts"] is None
    for f in frames:  # what reaches the overlay is drawable
        for v in f.vehicles:
            box = v.get("box")
            assert box is None or (len(box) == 4 and all(math.isfinite(c) for c in box))


def test_figures_and_layout_helpers_survive_absurd_values():
    now = time.time()
    assert (
        figures.flow_frame(
            [
                (1e300, "car", 1),
                (-5.0, "car", 1),
                (math.nan, "bus", 2),
                (None, "car", 1),
                (now, "car", HUGE),
                (now, "truck", 3),
            ]
        ).height
        == 1
    )
    figures.flow_chart(figures.flow_frame([(1e300, "car", 1)]))  # empty: "No flow counted yet"
    chart = figures.health_chart(
        [{"ts": 1e300, "batch_ms": 1.0}, {"ts": "x"}, {"ts": math.nan}, {"ts": now, "batch_ms": 800.0, "fps": 70.0}]
    )
    assert len(chart.data[0].x) == 1
    assert "No pipeline health" in str(figures.health_chart([{"ts": -1e300}]).layout.annotations)
    hist = figures.speed_histogram(
        [("car", math.nan), ("car", 1e300), ("bus", HUGE), ("car", 90.0), ("car", None)], 100
    )  # type: ignore[list-item]
    assert sum(len(t.x) for t in hist.data) == 1
    figures.speed_histogram({"car": [None, math.inf, np.float32(80.0)]}, 100)  # type: ignore[list-item]
    with pytest.raises(ValueError):
        figures.local_time(1e300)

    row = L.violation_row(
        {
            "track_id": 3,
            "frame_index": 40,
            "capture_ts": 1e300,
            "cls": "car",
            "kmh": 1e300,
            "limit_kmh": 100.0,
            "over_s": 1e300,
        },
        None,
    )
    assert NO_TIME in str(row.to_plotly_json())
    panel = L.health_panel(
        {"ts": math.nan, "batch_id": [1], "batch_ms": None, "fps": None, "lag": {}}, [MOTORWAY], None, None
    )
    assert NO_TIME in str(panel)
    event = L.event_row({"event_id": "ab", "event_type": "fire", "start_ts": 1e300, "detect_ts": HUGE, "end_ts": -1.0})
    assert NO_TIME in str(event.to_plotly_json()) and "fire" in str(event.to_plotly_json())
    series = pl.DataFrame(
        {"minute": [1e300, math.nan, now, -5.0], "series": ["a", "b", "c", "d"], "vehicles": [1, 2, 2**62, 1]}
    )
    assert not figures.series_flow_chart(series, title="lines").data


def test_overlay_drawing_survives_garbage_vehicles():
    img = np.zeros((120, 200, 3), np.uint8)
    vehicles = [
        {"id": 1, "box": [math.nan, 1, 2, 3]},
        {"id": 2, "box": ["a", "b", "c", "d"], "kmh": "x"},
        {"id": 3, "box": [1e300, -1e300, math.inf, 4], "kmh": HUGE, "over": "false"},
        {"id": HUGE, "cls": ["car"], "box": [10, 10, 60, 50], "kmh": math.nan},
    ]
    out = draw_overlays(img, vehicles, 100, caption="x")
    assert out.shape == img.shape and out.any()
    assert vehicle_label({"id": 1, "kmh": HUGE}) == "#1"


@pytest.fixture
def absurd_app(demo_settings):
    buffers = LiveBuffers.from_settings(demo_settings)
    now = time.time()
    for i in range(60):
        buffers.add(frame_msg(now - 3 + i / 30, index=i))
    buffers.add(violation_msg(now - 1))
    buffers.add(health_msg(now - 1))
    buffers.add(crossing_msg(now - 1))
    buffers.add(event_msg(now - 1))
    for msg in absurd_messages(now):
        buffers.add(msg)
    app = create_app(demo_settings, buffers=buffers, start_consumer=False)
    yield app
    get_context(app).close()


def test_every_live_callback_answers_after_absurd_messages(absurd_app):
    client = absurd_app.server.test_client()
    base = {"tick.n_intervals": 1, "camera.value": MOTORWAY}
    kpis = key_of(
        *[f"{L.kpi_value_id(k)}.children" for k in L.KPI_KEYS], *[f"{L.kpi_sub_id(k)}.children" for k in L.KPI_KEYS]
    )
    calls = [
        (kpis, {**base, "kpi-window.value": 5}),
        ("..speed-histogram.figure...flow-chart.figure...charts-state.data..", {**base, "kpi-window.value": 5}),
        ("..violations-log.children...violations-state.data..", base),
        (key_of(f"{L.VIDEO_LAG}.children", f"{L.VIDEO_LAG}.className"), base),
        (key_of(f"{L.LINE_COUNTS}.children", f"{L.COUNTS_STATE}.data"), base),
        (
            key_of(f"{L.EVENTS}.children", f"{L.EVENTS_STATE}.data"),
            {"tick.n_intervals": 1, f"{L.EVENT_TYPE_FILTER}.value": [], f"{L.EVENT_CAMERA_FILTER}.value": []},
        ),
        (  # what the browser sends is untrusted too
            key_of(f"{L.EVENTS}.children", f"{L.EVENTS_STATE}.data"),
            {"tick.n_intervals": 1, f"{L.EVENT_TYPE_FILTER}.value": {"x": HUGE}, f"{L.EVENT_CAMERA_FILTER}.value": 7},
        ),
        (
            key_of(
                "health-kpis.children",
                "health-chart.figure",
                "health-state.data",
                "stream-status.children",
                "stream-status.className",
            ),
            base,
        ),
    ]
    for output, inputs in calls:
        for tick in (1, 2):  # "on every tick"
            status, out = dash_call(absurd_app, client, output, {**inputs, "tick.n_intervals": tick})
            assert status == 200, output
            assert "1e+300" not in json.dumps(out) and str(HUGE)[:20] not in json.dumps(out)


def test_video_renderer_keeps_streaming_through_absurd_frames(demo_settings, caplog):
    buffers = LiveBuffers.from_settings(demo_settings)
    stop = threading.Event()
    streamer = MjpegStreamer(demo_settings, buffers, stop)
    camera = demo_settings.camera(MOTORWAY)
    reader = FrameReader(camera.source_path())
    fps = reader.info.fps
    reader.close()
    start = time.time()
    # A frame that slipped past validation (as if an older dashboard had stored it): the renderer skips it.
    with buffers._lock:
        buffers._cameras[MOTORWAY].add_frame(LiveFrame(MOTORWAY, 10**30, 1e300, start - 0.5, None, (), 0), None)

    def feed() -> None:
        i = 0
        while not stop.is_set() and i < 300:
            now = time.time()
            while i < 300 and start + i / fps <= now - 0.3:
                buffers.add(
                    frame_msg(
                        start + i / fps,
                        index=i,
                        pts_s=i / fps,
                        vehicles=[
                            {"id": 1, "cls": "car", "box": [math.nan, 1, 2, 3], "kmh": HUGE},
                            {"id": 2, "cls": "car", "box": [400, 300, 560, 420], "kmh": 1e300},
                        ],
                    )
                )
                for msg in absurd_messages(now)[::7]:
                    buffers.add(msg)
                i += 1
            stop.wait(0.1)

    thread = threading.Thread(target=feed, daemon=True)
    caplog.set_level(logging.WARNING, logger="trafficstream.dashboards.video")
    thread.start()
    got = []
    parts = streamer.stream(camera)
    deadline = time.time() + 60  # a behaviour check, not a rate: other processes may load the machine
    try:
        for part in parts:
            head = part.split(b"\r\n\r\n", 1)[0].decode()
            got.append(dict(line.split(": ", 1) for line in head.split("\r\n")[1:]))
            if time.time() > deadline or sum("X-Frame-Index" in h for h in got) >= 10:
                break
    finally:
        parts.close()
        stop.set()
        thread.join()
        streamer.close()
    shown = [int(h["X-Frame-Index"]) for h in got if "X-Frame-Index" in h]
    assert len(shown) >= 10 and max(shown) < 300 and shown == sorted(shown)
    assert not [r for r in caplog.records if "failed" in r.getMessage()]
