"""Presentation helpers (KPI texts, status badge, violation rows, line counts, events log) and the layout's ids."""

from __future__ import annotations

from trafficstream.dashboards import layout as L
from trafficstream.dashboards.buffers import Kpis, LineCount

T0 = 1_700_000_000.0


def test_format_kpis():
    k = Kpis(
        "cam",
        in_roi=4,
        counted_total=17,
        counted_by_class={"car": 15, "truck": 2, "bus": 0},
        speeding_window=3,
        speeding_total=9,
        mean_kmh=96.44,
        p85_kmh=121.6,
        vehicles_window=12,
        lag_s=1.26,
        last_frame_index=812,
        last_capture_ts=T0,
    )
    f = L.format_kpis(k, 5)
    assert f["in_roi"] == ("4", "frame 812")
    assert f["counted"] == ("17", "car 15, truck 2")
    assert f["speeding"] == ("3", "last 5 min · 9 since start")
    assert f["mean"][0] == "96 km/h" and f["p85"][0] == "122 km/h"
    assert f["lag"][0] == "1.3 s"
    empty = L.format_kpis(Kpis("cam", None, 0, {}, 0, 0, None, None, 0, None, None, None), 1)
    assert empty["in_roi"] == ("–", "no frames yet") and empty["mean"][0] == "–" and empty["lag"][0] == "–"
    assert L.format_lag(125) == "2 min"


def test_stream_status():
    assert L.stream_status(None, None)[0] == "waiting for results"
    assert "brokers are down" in L.stream_status(None, "1/1 brokers are down")[0]
    assert L.stream_status(T0 - 1, None, now=T0) == ("live", "status status-live")
    text, css = L.stream_status(T0 - 30, None, now=T0)
    assert text == "no results for 30.0 s" and css.endswith("stale")


def test_violation_row_links_the_snapshot():
    v = {
        "camera_id": "cam",
        "track_id": 3,
        "frame_index": 40,
        "capture_ts": T0,
        "cls": "car",
        "kmh": 131.2,
        "limit_kmh": 100.0,
        "over_s": 0.9,
        "evidence_uri": "file:///x.jpg",
    }
    row = L.violation_row(v, "/snapshot/cam/3_40.jpg")
    text = str(row.to_plotly_json())
    assert "/snapshot/cam/3_40.jpg" in text and "131 km/h" in text and "limit 100" in text and "#3 car" in text
    assert row.children[0].target == "_blank"  # a click opens the evidence
    assert "100.4 km/h" in str(L.violation_row({**v, "kmh": 100.4}, None).to_plotly_json())
    assert "no snapshot" in str(L.violation_row(v, None).to_plotly_json())


def _ids(component) -> set[str]:
    """Every component id in a Dash tree."""
    found = set()
    stack = [component]
    while stack:
        c = stack.pop()
        if isinstance(c, (list, tuple)):
            stack.extend(c)
            continue
        if getattr(c, "id", None):
            found.add(c.id)
        children = getattr(c, "children", None)
        if children is not None and not isinstance(children, str):
            stack.append(children)
    return found


def test_layout_has_the_counting_lines_events_and_history_line_components(demo_settings):
    ids = _ids(L.build_layout(demo_settings)())
    for i in (
        L.LINE_COUNTS,
        L.COUNTS_STATE,
        L.EVENTS,
        L.EVENTS_STATE,
        L.EVENT_TYPE_FILTER,
        L.EVENT_CAMERA_FILTER,
        L.H_LINE_FLOW,
        L.H_LANE_FLOW,
        L.VIDEO,
        L.VIOLATIONS,
        L.H_FLOW,
    ):
        assert i in ids, i


def _count(line: str, direction: str, count: int, day: str = "2023-11-14", **last) -> LineCount:
    return LineCount(
        line, direction, day, count, T0, {"track_id": 5, "lane_id": None, "cls": "car", "kmh": 92.4, **last}
    )


def test_line_counts_panel_lists_configured_lines_first_and_only_todays_counts():
    lines = [("near", ("towards", "away")), ("far", ("towards", "away"))]
    counts = [
        _count("near", "towards", 812, lane_id="lane-2"),
        _count("far", "towards", 790, day="2023-11-13"),  # yesterday's: 0 today
        _count("gantry", "north", 3),  # a line the config does not know (yet): shown after
    ]
    panel = L.line_counts_panel(lines, counts, "2023-11-14")
    rows = [tuple(td.children for td in tr.children[:3]) for tr in panel[0].children[1].children]
    assert rows == [
        ("near", "towards", "812"),
        ("near", "away", "0"),
        ("far", "towards", "0"),
        ("far", "away", "0"),
        ("gantry", "north", "3"),
    ]
    text = str(panel)
    assert "#5 car 92 km/h (lane-2)" in text and "00:00 UTC (2023-11-14)" in text
    assert "No counting lines" in str(L.line_counts_panel([], [], "2023-11-14"))


def test_event_rows_mark_ongoing_events_and_say_what_happened():
    stopped = {
        "event_id": "a1",
        "camera_id": "cam",
        "event_type": "stopped_vehicle",
        "track_id": 7,
        "lane_id": "lane-2",
        "zone_id": None,
        "start_ts": T0,
        "detect_ts": T0 + 20,
        "end_ts": None,
        "duration_s": 20.0,
        "cls": "truck",
        "kmh": 0.4,
    }
    row = L.event_row(stopped, "Motorway")
    assert row.className == "event event-open"
    text = str(row.to_plotly_json())
    assert "ongoing" in text and "Stopped vehicle" in text and "lane lane-2" in text and "#7 truck 0 km/h" in text
    assert "Motorway" in text and "for 20 s" in text
    ended = L.event_row({**stopped, "end_ts": T0 + 140, "duration_s": 140.0})
    assert ended.className == "event" and "ongoing" not in str(ended.to_plotly_json())
    assert "lasted 2 min 20 s" in str(ended.to_plotly_json()) and "cam" in str(ended.to_plotly_json())
    queue = {**stopped, "event_type": "queue", "track_id": None, "cls": None, "kmh": None, "lane_id": None}
    queue.update(zone_id="z1", max_vehicles=7, max_length_m=48.3, duration_s=None)
    assert L.event_details(queue) == "up to 7 vehicles · 48 m long"
    assert L.event_details({"distance_m": 21.0}) == "21 m against the lane"
    assert "zone z1" in str(L.event_row(queue).to_plotly_json())
    table = L.events_table([stopped, queue], {"cam": "Motorway"})
    assert len(table[0].children[1].children) == 2
    assert "No events" in str(L.events_table([]))


def test_selected_filter_values():
    assert L.selected(None, ("a", "b")) == ["a", "b"] and L.selected([], ("a", "b")) == ["a", "b"]
    assert L.selected(["b", "zzz", 3], ("a", "b")) == ["b"] and L.selected("a", ("a", "b")) == ["a"]
    assert L.selected({"x": 1}, ("a", "b")) == ["a", "b"]  # not what a dropdown sends: no filter
