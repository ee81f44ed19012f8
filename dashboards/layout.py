"""Page layout, component ids and the small presentation helpers the callbacks use (no data access)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any

from dash import dcc, html

from trafficstream.config import Settings
from trafficstream.dashboards.buffers import EVENT_TYPES, AnalysisSummary, CameraEvents, Kpis, LineCount
from trafficstream.dashboards.figures import empty_figure
from trafficstream.dashboards.times import clock

# -- component ids ----------------------------------------------------------------------------------------
CAMERA = "camera"
WINDOW = "kpi-window"
TABS = "tabs"
TICK = "tick"
STREAM_STATUS = "stream-status"
VIDEO = "live-video"
VIDEO_LAG = "video-lag"
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
LINE_COUNTS = "line-counts"
COUNTS_STATE = "counts-state"
EVENTS = "events-log"
EVENTS_STATE = "events-state"
EVENT_TYPE_FILTER = "events-type-filter"
EVENT_CAMERA_FILTER = "events-camera-filter"
H_LINE_FLOW = "history-line-flow"
H_LANE_FLOW = "history-lane-flow"

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
EVENT_LOG_SIZE = 100
EVENT_LABELS = {
    "wrong_way": "Wrong way",
    "stopped_vehicle": "Stopped vehicle",
    "queue": "Queue",
    "speeding": "Speeding",
}
# Speeding has its own log (violations, with evidence): the events log starts without it, a click adds it.
DEFAULT_EVENT_TYPES = ("wrong_way", "stopped_vehicle", "queue")
EVENT_COLUMNS = ("detected", "camera", "event", "where", "vehicle", "details", "status")
REFRESH_MS = 1000
LAG_OK, LAG_OVER, LAG_UNKNOWN = "ok", "over", "unknown"
LAG_CLASS = {LAG_OK: "status status-live", LAG_OVER: "status status-stale", LAG_UNKNOWN: "status status-waiting"}
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


def lag_state(lag_s: float | None, budget_s: float | None) -> str:
    """ok / over (budget) / unknown: how far behind capture what is shown is, against the camera's budget."""
    if lag_s is None or budget_s is None:
        return LAG_UNKNOWN
    return LAG_OK if lag_s <= budget_s else LAG_OVER


def lag_indicator(lag_s: float | None, budget_s: float | None, on_screen: bool = True) -> tuple[str, str]:
    """(text, css class) of a camera's lag badge. ``on_screen``: the lag of the newest frame the video shows;
    otherwise of the newest result (nobody watches the camera)."""
    state = lag_state(lag_s, budget_s)
    budget = "" if budget_s is None else f" (budget {budget_s:g} s)"
    if lag_s is None:
        return f"no frames yet{budget}", LAG_CLASS[state]
    what = "video" if on_screen else "results"
    verdict = {LAG_OK: "ok", LAG_OVER: "over budget", LAG_UNKNOWN: ""}[state]
    text = f"{what} {format_lag(max(0.0, lag_s))} behind capture{budget}"
    return (f"{text} · {verdict}" if verdict else text), LAG_CLASS[state]


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


@dataclass(frozen=True, slots=True)
class CameraHealth:
    """One camera's row of the health panel."""

    camera_id: str
    budget_s: float | None = None
    lag_s: float | None = None  # now - capture time of the newest frame on screen (or result, when not watched)
    on_screen: bool = False
    analysis: AnalysisSummary | None = None
    events: CameraEvents = CameraEvents()


def format_analysis(a: AnalysisSummary | None) -> tuple[str, str, str, str]:
    """(detected frames/s, stride, predicted, skipped) cells; dashes when no batch reported the analysis."""
    if a is None:
        return "–", "–", "–", "–"
    rate = "–" if a.detected_fps is None else f"{a.detected_fps:.1f}/s"
    stride = "–" if a.stride is None else ("every frame" if a.stride == 1 else f"every {a.stride}")
    skipped = str(a.skipped) + (f" ({a.skipped_total} total)" if a.skipped_total else "")
    return rate, stride, str(a.predicted), skipped


def format_source_events(events: CameraEvents) -> str:
    """The newest source_lost / source_restored of a camera, newest first (state resets counted)."""
    parts = []
    lost, restored = events.last_lost, events.last_restored
    if lost is not None:
        parts.append(f"lost {clock(lost['ts'])}" + (f" ({lost['cause']})" if lost.get("cause") else ""))
    if restored is not None:
        gap = restored.get("gap_s")
        after = "" if gap is None else f" after {format_lag(gap)}"
        parts.append(f"restored {clock(restored['ts'])}{after}")
    if lost is not None and restored is not None and restored["ts"] >= lost["ts"]:
        parts.reverse()  # newest first
    if events.resets:
        parts.append(f"{events.resets} state reset{'s' if events.resets > 1 else ''}")
    return " · ".join(parts) or "–"


def _camera_row(c: CameraHealth, consumer_lag: Any) -> html.Tr:
    text, css = lag_indicator(c.lag_s, c.budget_s, c.on_screen)
    state = lag_state(c.lag_s, c.budget_s)
    behind = "–" if c.lag_s is None else f"{format_lag(max(0.0, c.lag_s))} ({'video' if c.on_screen else 'results'})"
    budget = "–" if c.budget_s is None else f"{c.budget_s:g} s"
    verdict = {LAG_OK: "ok", LAG_OVER: "over budget", LAG_UNKNOWN: ""}[state]
    rate, stride, predicted, skipped = format_analysis(c.analysis)
    return html.Tr(
        [
            html.Td(c.camera_id),
            html.Td(behind, title=text),
            html.Td([budget, " ", html.Span(verdict, className=css)] if verdict else budget, title=text),
            html.Td(rate),
            html.Td(stride),
            html.Td(predicted),
            html.Td(skipped),
            html.Td("–" if consumer_lag is None else str(consumer_lag)),
            html.Td(
                format_source_events(c.events),
                style={"color": "#b00020", "fontWeight": 600} if c.events.source_down else None,
            ),
        ]
    )


HEALTH_COLUMNS = (
    "camera",
    "behind capture",
    "budget",
    "analysed",
    "detect",
    "predicted",
    "skipped",
    "consumer lag (frames)",
    "source",
)


def health_panel(
    latest: Mapping[str, Any] | None,
    cameras: Sequence[CameraHealth | str],
    video_fps: float | None,
    video_delay_s: float | None,
) -> list[Any]:
    """Pipeline micro-batch figures, per camera how far behind capture it is shown against its budget, how its
    frames are analysed (detected frames/s, stride, predicted and skipped frames over the last batches), its
    consumer lag and last source events, and the video stream of the shown camera."""
    video = _metric(
        "Video stream",
        "not watched" if video_fps is None else f"{video_fps:.1f} frames/s, {format_lag(video_delay_s)} behind",
    )
    rows = [CameraHealth(c) if isinstance(c, str) else c for c in cameras]
    lag = (latest.get("lag") if latest else None) or {}
    window = next((r.analysis.window_s for r in rows if r.analysis is not None), None)
    table = html.Table(
        className="lag-table",
        children=[
            html.Thead(html.Tr([html.Th(h) for h in HEALTH_COLUMNS])),
            html.Tbody([_camera_row(r, lag.get(r.camera_id)) for r in rows]),
        ],
    )
    note = (
        f"analysed: detected frames/s, predicted / skipped: frames in the last {window:g} s of micro-batches"
        if window is not None
        else "no analysis reported by the pipeline yet"
    )
    if latest is None:
        return [
            html.Div(className="health-row", children=[video]),
            table,
            html.Div("No pipeline health reports yet", className="empty-note"),
        ]
    batch_ms, fps = latest.get("batch_ms"), latest.get("fps")
    return [
        html.Div(
            className="health-row",
            children=[
                _metric("Micro-batch", "–" if batch_ms is None else f"{batch_ms:.0f} ms"),
                _metric("Processed", "–" if fps is None else f"{fps:.1f} frames/s"),
                video,
            ],
        ),
        table,
        html.Div(f"batch {latest.get('batch_id')} at {clock(latest.get('ts'))} · {note}", className="kpi-sub"),
    ]


def _crossing_text(c: Mapping[str, Any]) -> str:
    """The vehicle of a crossing or event: ``#17 car 97 km/h``."""
    parts = []
    if c.get("track_id") is not None:
        parts.append(f"#{c['track_id']}")
    if c.get("cls"):
        parts.append(str(c["cls"]))
    if c.get("kmh") is not None:
        parts.append(f"{c['kmh']:.0f} km/h")
    return " ".join(parts)


def line_counts_panel(lines: Sequence[tuple[str, Sequence[str]]], counts: Sequence[LineCount], today: str) -> list[Any]:
    """Today's crossings per counting line and direction: ``lines`` are the camera's configured (id, directions),
    shown in that order even before anything crossed; counts of other lines the job reported follow. Only a
    count of ``today`` (the UTC day, YYYY-MM-DD, as ``day_count`` counts) is shown: an older one reads 0."""
    by_key = {(c.line_id, c.direction): c for c in counts}
    keys = [(line_id, d) for line_id, directions in lines for d in directions]
    configured = set(keys)
    keys += sorted(k for k in by_key if k not in configured)
    if not keys:
        return [html.Div("No counting lines on this camera", className="empty-note")]
    rows = []
    for line_id, direction in keys:
        c = by_key.get((line_id, direction))
        count = str(c.count) if c is not None and c.day == today else "0"
        last = "–"
        if c is not None:
            where = f" ({c.last['lane_id']})" if c.last.get("lane_id") else ""
            last = f"{clock(c.last_ts)} {_crossing_text(c.last)}{where}".rstrip()
        rows.append(
            html.Tr(
                [
                    html.Td(line_id),
                    html.Td(direction),
                    html.Td(count, className="count"),
                    html.Td(last, className="kpi-sub"),
                ]
            )
        )
    return [
        html.Table(
            className="lag-table counts-table",
            children=[
                html.Thead(html.Tr([html.Th(h) for h in ("line", "direction", "today", "last crossing")])),
                html.Tbody(rows),
            ],
        ),
        html.Div(f"crossings since 00:00 UTC ({today}), as counted by the pipeline", className="kpi-sub"),
    ]


def selected(value: Any, allowed: Sequence[str]) -> list[str]:
    """The known values of a multi-select (what the browser sends is untrusted); nothing chosen means all."""
    chosen = [value] if isinstance(value, str) else value if isinstance(value, list) else []
    known = [v for v in allowed if v in chosen]
    return known or list(allowed)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min {seconds % 60:.0f} s"
    return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"


def event_details(e: Mapping[str, Any]) -> str:
    """What the event's figures say, in words (only those it carries)."""
    parts = []
    if e.get("distance_m") is not None:
        parts.append(f"{e['distance_m']:.0f} m against the lane")
    if e.get("max_vehicles") is not None:
        parts.append(f"up to {e['max_vehicles']} vehicles")
    if e.get("max_length_m") is not None:
        parts.append(f"{e['max_length_m']:.0f} m long")
    if e.get("duration_s") is not None:
        parts.append(("lasted " if e.get("end_ts") is not None else "for ") + _duration(e["duration_s"]))
    return " · ".join(parts) or "–"


def event_row(e: Mapping[str, Any], camera_name: str | None = None) -> html.Tr:
    """One row of the events log; an event still going on (no ``end_ts``) is marked ongoing."""
    ongoing = e.get("end_ts") is None
    where = " · ".join(f"{k} {e[k + '_id']}" for k in ("lane", "zone") if e.get(f"{k}_id")) or "–"
    status: Any = html.Span("ongoing", className="event-ongoing") if ongoing else f"ended {clock(e['end_ts'])}"
    return html.Tr(
        className="event event-open" if ongoing else "event",
        key=str(e.get("event_id")),
        children=[
            html.Td(clock(e.get("detect_ts")), title=f"began {clock(e.get('start_ts'))}", className="v-time"),
            html.Td(camera_name or str(e.get("camera_id"))),
            html.Td(EVENT_LABELS.get(str(e.get("event_type")), str(e.get("event_type")))),
            html.Td(where),
            html.Td(_crossing_text(e) or "–"),
            html.Td(event_details(e)),
            html.Td(status),
        ],
    )


def no_events() -> html.Div:
    return html.Div("No events", className="empty-note")


def events_table(events: Sequence[Mapping[str, Any]], camera_names: Mapping[str, str] | None = None) -> list[Any]:
    """The events log: ``events`` newest first (as :meth:`LiveBuffers.traffic_events` gives them)."""
    if not events:
        return [no_events()]
    names = camera_names or {}
    return [
        html.Table(
            className="lag-table events-table",
            children=[
                html.Thead(html.Tr([html.Th(h) for h in EVENT_COLUMNS])),
                html.Tbody([event_row(e, names.get(str(e.get("camera_id")))) for e in events]),
            ],
        )
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


def _events_card(camera_options: Sequence[Mapping[str, str]]) -> html.Div:
    return html.Div(
        className="card events-card",
        children=[
            html.Div(
                className="events-head",
                children=[
                    html.H3("Events"),
                    dcc.Dropdown(
                        id=EVENT_TYPE_FILTER,
                        options=[{"label": EVENT_LABELS[t], "value": t} for t in EVENT_TYPES],
                        value=list(DEFAULT_EVENT_TYPES),
                        multi=True,
                        placeholder="all event types",
                        className="events-filter",
                    ),
                    dcc.Dropdown(
                        id=EVENT_CAMERA_FILTER,
                        options=list(camera_options),
                        value=[],
                        multi=True,
                        placeholder="all cameras",
                        className="events-filter",
                    ),
                ],
            ),
            html.Div(no_events(), id=EVENTS, className="events"),
        ],
    )


def _live_tab(camera_options: Sequence[Mapping[str, str]] = ()) -> html.Div:
    return html.Div(
        className="live-grid",
        children=[
            html.Div(
                className="card video-card",
                children=[
                    html.Img(id=VIDEO, className="video", alt="live video with detections"),
                    html.Div(
                        style={"display": "flex", "gap": "12px", "alignItems": "center", "padding": "6px 2px 0"},
                        children=[
                            html.Div("–", id=VIDEO_LAG, className=LAG_CLASS[LAG_UNKNOWN]),
                            html.Div(
                                "solid boxes: detected · dashed: predicted by the tracker between detections",
                                style={"color": "#aab", "fontSize": "12px"},
                            ),
                        ],
                    ),
                ],
            ),
            html.Div(
                className="side",
                children=[
                    html.Div(className="kpis", children=[_kpi_card(k) for k in KPI_KEYS]),
                    html.Div(
                        className="card counts-card",
                        children=[html.H3("Counting lines"), html.Div(id=LINE_COUNTS)],
                    ),
                ],
            ),
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
            _events_card(camera_options),
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
                    html.Div(className="card", children=_graph(H_LINE_FLOW, "Pick a range and press Show", 380)),
                    html.Div(className="card", children=_graph(H_LANE_FLOW, "Pick a range and press Show", 380)),
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
                        dcc.Tab(label="Live", value="live", children=_live_tab(options)),
                        dcc.Tab(label="History", value="history", children=_history_tab(today())),
                    ],
                ),
                dcc.Interval(id=TICK, interval=REFRESH_MS),
                dcc.Store(id=CHARTS_STATE),
                dcc.Store(id=VIOLATIONS_STATE),
                dcc.Store(id=HEALTH_STATE),
                dcc.Store(id=COUNTS_STATE),
                dcc.Store(id=EVENTS_STATE),
            ],
        )

    return layout
