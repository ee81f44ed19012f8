"""Pure figure builders."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import polars as pl
import pytest

from trafficstream.dashboards import figures

T0 = 1_700_000_000.0


def test_speed_histogram_stacks_classes_and_marks_the_limit():
    fig = figures.speed_histogram(
        [("car", 92.0), ("truck", 81.5), ("car", 118.0), ("motorcycle", 99.0)], 100, uirevision="cam"
    )
    names = [t.name for t in fig.data]
    assert names == ["car", "truck", "motorcycle"]  # fixed class order, stable colours
    assert list(fig.data[0].x) == [92.0, 118.0]
    assert fig.data[0].xbins.size == figures.SPEED_BIN_KMH
    assert fig.data[0].marker.color == figures.CLASS_COLORS["car"]
    assert fig.layout.barmode == "stack"
    assert [s.x0 for s in fig.layout.shapes] == [100]  # the limit line
    assert "4 vehicles" in fig.layout.title.text
    assert fig.layout.uirevision == "cam"


def test_speed_histogram_accepts_a_mapping_and_handles_no_data():
    fig = figures.speed_histogram({"bus": [55, 61]}, None)
    assert [t.name for t in fig.data] == ["bus"] and not fig.layout.shapes
    empty = figures.speed_histogram([], 100)
    assert not empty.data
    assert "No speed estimates yet" in empty.layout.annotations[0].text


def test_flow_frame_and_chart():
    rows = [(T0, "car", 12), (T0, "truck", 2), (T0 + 60, "car", 9)]
    df = figures.flow_frame(rows)
    assert df.columns == ["minute", "class_name", "vehicles"]
    assert df["minute"][0] == datetime.fromtimestamp(T0)  # local time for display
    fig = figures.flow_chart(df)
    assert [t.name for t in fig.data] == ["car", "truck"]
    assert list(fig.data[0].y) == [12, 9] and list(fig.data[1].y) == [2]
    assert fig.layout.barmode == "stack"
    assert "23 vehicles" in fig.layout.title.text
    lo, hi = fig.layout.xaxis.range  # at least 10 minutes shown, ending half a bin after the last bar
    last = datetime.fromtimestamp(T0 + 60)
    assert hi == last + timedelta(seconds=30) and hi - lo >= timedelta(minutes=10)


def test_flow_chart_converts_aware_times_to_local():
    utc = datetime(2025, 11, 21, 8, 30, tzinfo=timezone.utc)
    df = pl.DataFrame(
        {"minute": [utc], "class_name": ["car"], "vehicles": [4]},
        schema={"minute": pl.Datetime("us", "UTC"), "class_name": pl.String, "vehicles": pl.Int64},
    )
    fig = figures.flow_chart(df, bin_label="15 min", bin_s=900)
    assert fig.data[0].x[0] == utc.astimezone().replace(tzinfo=None)
    # One bin only (the live view's current minute): the bar still spans most of its bin, in ms on a date axis.
    assert fig.data[0].width == pytest.approx(900_000 * (1 - figures.BAR_GAP))
    assert fig.layout.yaxis.title.text == "vehicles / 15 min"


def test_flow_chart_without_rows_says_so():
    fig = figures.flow_chart(figures.flow_frame([]))
    assert not fig.data and "No flow counted yet" in fig.layout.annotations[0].text


def test_health_chart():
    health = [{"ts": T0 + i, "batch_ms": 800.0 + i, "fps": 70.0 + i} for i in range(3)]
    fig = figures.health_chart(health)
    bars, line = fig.data
    assert list(bars.y) == [800.0, 801.0, 802.0]
    assert list(line.y) == [70.0, 71.0, 72.0] and line.yaxis == "y2"
    assert not figures.health_chart([]).data


@pytest.mark.parametrize("value", [T0, datetime.fromtimestamp(T0, timezone.utc)])
def test_local_time(value):
    assert figures.local_time(value) == datetime.fromtimestamp(T0)


def _series(rows) -> pl.DataFrame:
    return pl.DataFrame(
        rows, schema={"minute": pl.Datetime("us", "UTC"), "series": pl.String, "vehicles": pl.Int64}, orient="row"
    )


def test_series_flow_chart_draws_one_step_line_per_series_in_configured_order():
    t = datetime(2025, 11, 21, 8, 0, tzinfo=timezone.utc)
    counts = _series(
        [
            (t, "near · away", 1),
            (t, "near · towards", 12),
            (t, "far · towards", 11),
            (t + timedelta(minutes=15), "near · towards", 9),
            (t + timedelta(minutes=15), "far · towards", 0),
            (t + timedelta(minutes=15), "zzz · other", 2),
        ]
    )
    fig = figures.series_flow_chart(
        counts,
        title="Crossings per 15 min",
        order=["near · towards", "near · away", "far · towards"],
        bin_label="15 min",
        bin_s=900,
        unit="crossings",
    )
    assert [tr.name for tr in fig.data] == ["near · towards", "near · away", "far · towards", "zzz · other"]
    near = fig.data[0]
    assert near.type == "scatter" and near.line.shape == "hv" and list(near.y) == [12, 9]
    assert near.x[0] == t.astimezone().replace(tzinfo=None)  # local time for display
    assert "35 crossings" in fig.layout.title.text and fig.layout.yaxis.title.text == "crossings / 15 min"
    lo, hi = fig.layout.xaxis.range
    assert hi - lo >= timedelta(minutes=150)  # at least 10 bins shown


def test_series_flow_chart_without_rows_or_with_garbage_says_so():
    empty = figures.series_flow_chart(_series([]), title="Lanes", empty_message="No crossings in this range")
    assert not empty.data and "No crossings in this range" in empty.layout.annotations[0].text
    garbage = pl.DataFrame({"minute": [1e300, None, T0], "series": ["a", "b", "c"], "vehicles": [1, 2, -4]})
    assert not figures.series_flow_chart(garbage, title="x").data
