"""Page layout, component ids and the small presentation helpers the callbacks use (no data access)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from datetime import date
from typing import Any

from dash import dcc, html

from trafficstream.config import Settings
from trafficstream.dashboards.buffers import Kpis
from trafficstream.dashboards.figures import empty_figure
from trafficstream.dashboards.times import clock

# -- component ids ----------------------------------------------------------------------------------------
CAMERA = "camera"
WINDOW = "kpi-window"
TABS = "tabs"
TICK = "tick"
STREAM_STATUS = "stream-status"
VIDEO = "live-video"
SPEED_HIST = "speed-histogram"
FLOW = "flow-chart"
CHARTS_STATE = "charts-state"
VIOLATIONS = "violations-log"
VIOLATIONS_STATE = "violations-state"
HEALTH = "health-kpis"
HEALTH_CHART = "health-chart"
HEALTH_STATE = "health-state"
H_DATES = "history-dates"
H_START_TIME = "history-start-time"
H_END_TIME = "history-end-time"
H_LOAD = "history-load"
H_SUMMARY = "history-summary"
H_FLOW = "history-flow"
H_SPEEDS = "history-speeds"

KPI_KEYS = ("in_roi", "counted", "speeding", "mean", "p85", "lag")
KPI_LABELS = {
    "in_roi": "Vehicles in region now",
    "counted": "Vehicles counted",
    "speeding": "Speeding",
    "mean": "Mean speed",
    "p85": "85th percentile speed",
    "lag": "Processing lag",
}
WINDOW_OPTIONS_MIN = (1, 5, 15)
VIOLATION_LOG_SIZE = 50
REFRESH_MS = 1000
GRAPH_CONFIG: dcc.Graph.Config = {"displaylogo": False, "responsive": True}


def kpi_value_id(key: str) -> str:
    return f"kpi-{key}-value"


def kpi_sub_id(key: str) -> str:
    return f"kpi-{key}-sub"


# -- formatting (pure) ------------------------------------------------------------------------------------
def _kmh(value: float | None) -> str:
    return "–" if value is None else f"{value:.0f} km/h"


def format_lag(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.0f} min"


def format_kpis(k: Kpis, window_min: float) -> dict[str, tuple[str, str]]:
    """KPI key -> (value, subtitle)."""
    per_class = ", ".join(f"{cls} {n}" for cls, n in k.counted_by_class.items() if n) or "no vehicles yet"
    last = "no frames yet" if k.last_frame_index is None else f"frame {k.last_frame_index}"
    return {
        "in_roi": ("–" if k.in_roi is None else str(k.in_roi), last),
        "counted": (str(k.counted_total), per_class),
        "speeding": (str(k.speeding_window), f"last {window_min:g} min · {k.speeding_total} since start"),
        "mean": (_kmh(k.mean_kmh), f"{k.vehicles_window} vehicles, last {window_min:g} min"),
        "p85": (_kmh(k.p85_kmh), f"last {window_min:g} min"),
        "lag": (format_lag(k.lag_s), "now − capture time of newest result"),
    }


def stream_status(last_message_wall: float | None, last_error: str | None, now: float | None = None) -> tuple[str, str]:
    """(text, css class) of the results-stream badge."""
    now = time.time() if now is None else now
    if last_message_wall is None:
        text = "waiting for results"
        if last_error:
            text += f" ({last_error})"
        return text, "status status-waiting"
    age = now - last_message_wall
    if age < 5:
        return "live", "status status-live"
    return f"no results for {format_lag(age)}", "status status-stale"


def violation_row(v: Mapping[str, Any], snapshot_href: str | None) -> html.Div:
    when = clock(v.get("capture_ts"))
    kmh = "?" if v.get("kmh") is None else f"{v['kmh']:.0f}"
    if v.get("kmh") is not None and v.get("limit_kmh") is not None and round(v["kmh"]) <= v["limit_kmh"]:
        kmh = f"{v['kmh']:.1f}"  # 100.4 in a 100 zone: do not show "100 km/h (limit 100)"
    limit = "?" if v.get("limit_kmh") is None else f"{v['limit_kmh']:g}"
    over = "" if v.get("over_s") is None else f" · over for {v['over_s']:.1f} s"
    thumb: Any = (
        html.A(
            html.Img(src=snapshot_href, className="thumb", alt=f"evidence track {v['track_id']}"),
            href=snapshot_href,
            target="_blank",
            title="open the evidence snapshot",
        )
        if snapshot_href
        else html.Div("no snapshot", className="thumb thumb-missing")
    )
    return html.Div(
        className="violation",
        key=f"{v['track_id']}-{v['frame_index']}-{v['capture_ts']}",  # React keeps rows when new ones are prepended
        children=[
            thumb,
            html.Div(
                className="violation-text",
                children=[
                    html.Div([html.Span(when, className="v-time"), html.Span(f" #{v['track_id']} {v['cls']}")]),
                    html.Div([html.Strong(f"{kmh} km/h"), f" (limit {limit}){over}"]),
                    html.Div(f"frame {v['frame_index']}", className="v-frame"),
                ],
            ),
        ],
    )


def no_violations() -> html.Div:
    return html.Div("No violations yet", className="empty-note")


def _metric(label: str, value: str) -> html.Div:
    return html.Div([html.Div(label, className="kpi-label"), html.Div(value, className="kpi-value small")])


def health_panel(
    latest: Mapping[str, Any] | None, camera_ids: list[str], video_fps: float | None, video_delay_s: float | None
) -> list[Any]:
    """Pipeline micro-batch figures, consumer lag per camera, and the video stream of the shown camera."""
    video = _metric(
        "Video stream",
        "not watched" if video_fps is None else f"{video_fps:.1f} frames/s, {format_lag(video_delay_s)} behind",
    )
    if latest is None:
        return [
            html.Div(className="health-row", children=[video]),
            html.Div("No pipeline health reports yet", className="empty-note"),
        ]
    lag = latest.get("lag") or {}
    batch_ms, fps = latest.get("batch_ms"), latest.get("fps")
    rows = [html.Tr([html.Td(cid), html.Td(str(lag.get(cid, "–")))]) for cid in camera_ids]
    return [
        html.Div(
            className="health-row",
            children=[
                _metric("Micro-batch", "–" if batch_ms is None else f"{batch_ms:.0f} ms"),
                _metric("Processed", "–" if fps is None else f"{fps:.1f} frames/s"),
                video,
            ],
        ),
        html.Table(
            className="lag-table",
            children=[
                html.Thead(html.Tr([html.Th("camera"), html.Th("consumer lag (frames)")])),
                html.Tbody(rows),
            ],
        ),
        html.Div(f"batch {latest.get('batch_id')} at {clock(latest.get('ts'))}", className="kpi-sub"),
    ]


# -- layout -----------------------------------------------------------------------------------------------
def _kpi_card(key: str) -> html.Div:
    return html.Div(
        className="kpi",
        id=f"kpi-{key}",
        children=[
            html.Div(KPI_LABELS[key], className="kpi-label"),
            html.Div("–", id=kpi_value_id(key), className="kpi-value"),
            html.Div("", id=kpi_sub_id(key), className="kpi-sub"),
        ],
    )


def _graph(graph_id: str, message: str, height_px: int = 300) -> dcc.Graph:
    # An explicit height: the figures are responsive and would otherwise size to an auto-height card.
    return dcc.Graph(id=graph_id, figure=empty_figure(message), config=GRAPH_CONFIG, style={"height": f"{height_px}px"})


def _live_tab() -> html.Div:
    return html.Div(
        className="live-grid",
        children=[
            html.Div(
                className="card video-card",
                children=[
                    html.Img(id=VIDEO, className="video", alt="live video with detections"),
                ],
            ),
            html.Div(className="kpis", children=[_kpi_card(k) for k in KPI_KEYS]),
            html.Div(className="card", children=_graph(SPEED_HIST, "Waiting for results")),
            html.Div(className="card", children=_graph(FLOW, "Waiting for results")),
            html.Div(
                className="card violations-card",
                children=[
                    html.H3("Violations"),
                    html.Div(no_violations(), id=VIOLATIONS, className="violations"),
                ],
            ),
            html.Div(
                className="card health-card",
                children=[
                    html.H3("System health"),
                    html.Div(id=HEALTH),
                    _graph(HEALTH_CHART, "No pipeline health reports yet"),
                ],
            ),
        ],
    )


def _history_tab(today: date) -> html.Div:
    return html.Div(
        className="history",
        children=[
            html.Div(
                className="history-controls",
                children=[
                    html.Div(
                        dcc.DatePickerRange(
                            id=H_DATES,
                            start_date=today.isoformat(),  # what the browser sends back: YYYY-MM-DD
                            end_date=today.isoformat(),
                            display_format="YYYY-MM-DD",
                            updatemode="bothdates",
                        ),
                        className="date-range",
                    ),
                    dcc.Input(
                        id=H_START_TIME, value="00:00", placeholder="HH:MM", debounce=True, className="time-input"
                    ),
                    html.Span("to"),
                    dcc.Input(id=H_END_TIME, value="23:59", placeholder="HH:MM", debounce=True, className="time-input"),
                    html.Button("Show", id=H_LOAD, n_clicks=0, className="button"),
                ],
            ),
            dcc.Loading(html.Div(id=H_SUMMARY, className="history-summary")),
            html.Div(
                className="history-grid",
                children=[
                    html.Div(className="card", children=_graph(H_FLOW, "Pick a range and press Show", 380)),
                    html.Div(className="card", children=_graph(H_SPEEDS, "Pick a range and press Show", 380)),
                ],
            ),
        ],
    )


def build_layout(settings: Settings, today: Callable[[], date] = date.today) -> Callable[[], html.Div]:
    """A layout function (Dash calls it per page load, so the history range defaults to today)."""
    options = [{"label": c.name or c.id, "value": c.id} for c in settings.cameras]
    first = settings.cameras[0].id if settings.cameras else None

    def layout() -> html.Div:
        return html.Div(
            className="app",
            children=[
                html.Header(
                    className="topbar",
                    children=[
                        html.H1("TrafficStream"),
                        html.Div(
                            className="controls",
                            children=[
                                html.Label("Camera", htmlFor=CAMERA),
                                dcc.Dropdown(
                                    id=CAMERA, options=options, value=first, clearable=False, className="camera-select"
                                ),
                                html.Label("KPI window", htmlFor=WINDOW),
                                dcc.Dropdown(
                                    id=WINDOW,
                                    options=[{"label": f"{m} min", "value": m} for m in WINDOW_OPTIONS_MIN],
                                    value=5,
                                    clearable=False,
                                    className="window-select",
                                ),
                            ],
                        ),
                        html.Div("waiting for results", id=STREAM_STATUS, className="status status-waiting"),
                    ],
                ),
                dcc.Tabs(
                    id=TABS,
                    value="live",
                    children=[
                        dcc.Tab(label="Live", value="live", children=_live_tab()),
                        dcc.Tab(label="History", value="history", children=_history_tab(today())),
                    ],
                ),
                dcc.Interval(id=TICK, interval=REFRESH_MS),
                dcc.Store(id=CHARTS_STATE),
                dcc.Store(id=VIOLATIONS_STATE),
                dcc.Store(id=HEALTH_STATE),
            ],
        )

    return layout
