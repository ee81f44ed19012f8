"""Presentation helpers: KPI texts, status badge, violation rows."""

from __future__ import annotations

from trafficstream.dashboards import layout as L
from trafficstream.dashboards.buffers import Kpis

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
