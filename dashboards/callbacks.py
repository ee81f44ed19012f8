"""Dash callbacks: read snapshots from the context's services, hand them to figures / layout helpers.

Every live callback runs on the 1 s interval and writes only its own components; charts and the health
graph are rebuilt only when their data changed (a version number kept in a Store) and at most every
CHART_REFRESH_S, and new violations are prepended with a Patch instead of re-sending the log. The lag badge
under the video says how far behind capture the newest frame on screen is, against the camera's budget. The
counting-line table and the events log are re-sent only when their data (or the UTC day, or the filters)
changed.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from typing import Any

import dash
from dash import Input, Output, Patch, State, html
from dash.exceptions import PreventUpdate

from trafficstream import tables
from trafficstream.dashboards import figures
from trafficstream.dashboards import layout as L
from trafficstream.dashboards.buffers import EVENT_TYPES, speed_stats, utc_day
from trafficstream.dashboards.context import DashboardContext
from trafficstream.dashboards.history import (
    BINS,
    choose_bin,
    complete_bins,
    lane_flow,
    line_flow,
    line_series,
    local_range,
    resample_flow,
)
from trafficstream.dashboards.video import StreamStats, snapshot_url

log = logging.getLogger(__name__)
LIVE_FLOW_MINUTES = 30
# Charts redraw at most this often (KPIs and the violations log every tick): a 5-minute histogram does not
# change meaningfully within a second, and each Plotly redraw costs the browser CPU the video needs.
CHART_REFRESH_S = 2.0
HISTORY_TABLES = (tables.FLOW, tables.TRACKS, tables.VIOLATIONS)
# What every history chart is drawn from: the Load button, the tab, the camera and the range fields.
HISTORY_INPUTS = (
    Input(L.H_LOAD, "n_clicks"),
    Input(L.TABS, "value"),
    Input(L.CAMERA, "value"),
    State(L.H_DATES, "start_date"),
    State(L.H_DATES, "end_date"),
    State(L.H_START_TIME, "value"),
    State(L.H_END_TIME, "value"),
)


def _violation_key(v: dict[str, Any]) -> list[float]:
    return [v["capture_ts"], v["frame_index"], v["track_id"]]


def register_callbacks(app: dash.Dash, ctx: DashboardContext) -> None:
    settings, buffers = ctx.settings, ctx.buffers
    cameras = {c.id: c for c in settings.cameras}

    def camera_or_stop(camera_id: str | None):
        if camera_id not in cameras:
            raise PreventUpdate
        return cameras[camera_id]

    @app.callback(Output(L.VIDEO, "src"), Input(L.CAMERA, "value"))
    def video_src(camera_id: str | None) -> str:
        camera_or_stop(camera_id)
        return app.get_relative_path(f"/video/{camera_id}.mjpg")

    def watched() -> dict[str, StreamStats]:
        return {s.camera_id: s for s in ctx.streamer.active_streams()}

    def lag_of(camera_id: str, streams: dict[str, StreamStats], now: float) -> tuple[float | None, bool]:
        """(now - capture time of the newest frame on screen, True), or of the newest result when the camera's
        video shows nothing (False)."""
        stream = streams.get(camera_id)
        if stream is not None and stream.last_capture_ts is not None:
            return stream.lag_s(now), True
        newest = buffers.latest_frame(camera_id)
        return (None if newest is None else now - newest.capture_ts), False

    @app.callback(
        Output(L.VIDEO_LAG, "children"),
        Output(L.VIDEO_LAG, "className"),
        Input(L.TICK, "n_intervals"),
        Input(L.CAMERA, "value"),
    )
    def video_lag(_n: int | None, camera_id: str | None) -> tuple[str, str]:
        camera = camera_or_stop(camera_id)
        lag, on_screen = lag_of(camera.id, watched(), time.time())
        return L.lag_indicator(lag, settings.budget_s(camera), on_screen)

    kpi_outputs = [Output(L.kpi_value_id(k), "children") for k in L.KPI_KEYS] + [
        Output(L.kpi_sub_id(k), "children") for k in L.KPI_KEYS
    ]

    @app.callback(kpi_outputs, Input(L.TICK, "n_intervals"), Input(L.CAMERA, "value"), Input(L.WINDOW, "value"))
    def kpis(_n: int | None, camera_id: str | None, window_min: float | None) -> list[str]:
        camera_or_stop(camera_id)
        window_min = window_min or 5
        formatted = L.format_kpis(buffers.kpis(camera_id, window_min * 60), window_min)  # type: ignore[arg-type]
        return [formatted[k][0] for k in L.KPI_KEYS] + [formatted[k][1] for k in L.KPI_KEYS]

    @app.callback(
        Output(L.SPEED_HIST, "figure"),
        Output(L.FLOW, "figure"),
        Output(L.CHARTS_STATE, "data"),
        Input(L.TICK, "n_intervals"),
        Input(L.CAMERA, "value"),
        Input(L.WINDOW, "value"),
        State(L.CHARTS_STATE, "data"),
    )
    def charts(_n: int | None, camera_id: str | None, window_min: float | None, state: dict | None):
        camera = camera_or_stop(camera_id)
        window_min = window_min or 5
        version = buffers.version(camera_id)  # type: ignore[arg-type]
        now = time.time()
        if (
            state
            and state.get("camera") == camera_id
            and state.get("window") == window_min
            and (state.get("version") == version or now - state.get("at", 0) < CHART_REFRESH_S)
        ):
            raise PreventUpdate  # nothing new, or redrawn moments ago: leave the graphs alone
        speeds = buffers.vehicle_speeds(camera.id, window_min * 60)
        hist = figures.speed_histogram(
            speeds, camera.speed_limit_kmh, title=f"Vehicle speeds, last {window_min:g} min", uirevision=camera.id
        )
        flow = figures.flow_chart(
            figures.flow_frame(buffers.flow(camera.id, LIVE_FLOW_MINUTES)),
            title=f"Flow per minute, last {LIVE_FLOW_MINUTES} min",
            uirevision=camera.id,
        )
        return hist, flow, {"camera": camera_id, "window": window_min, "version": version, "at": now}

    @app.callback(
        Output(L.VIOLATIONS, "children"),
        Output(L.VIOLATIONS_STATE, "data"),
        Input(L.TICK, "n_intervals"),
        Input(L.CAMERA, "value"),
        State(L.VIOLATIONS_STATE, "data"),
    )
    def violations(_n: int | None, camera_id: str | None, state: dict | None):
        camera_or_stop(camera_id)
        items = buffers.violations(camera_id, limit=L.VIOLATION_LOG_SIZE)  # type: ignore[arg-type]
        same_camera = bool(state) and state.get("camera") == camera_id  # type: ignore[union-attr]

        def row(v: dict[str, Any]) -> html.Div:
            url = snapshot_url(v.get("evidence_uri"), settings.evidence_root)
            return L.violation_row(v, app.get_relative_path(url) if url else None)

        if not items:
            if same_camera and state.get("count") == 0:  # type: ignore[union-attr]
                raise PreventUpdate
            return [L.no_violations()], {"camera": camera_id, "newest": None, "count": 0}
        newest = _violation_key(items[0])
        if not same_camera or not state.get("count"):  # type: ignore[union-attr]
            return [row(v) for v in items], {"camera": camera_id, "newest": newest, "count": len(items)}
        fresh = [v for v in items if _violation_key(v) > state["newest"]]  # type: ignore[index]
        if not fresh:
            raise PreventUpdate
        patch = Patch()
        for v in reversed(fresh):  # oldest first, so the newest ends up on top
            patch.prepend(row(v))
        count = state["count"] + len(fresh)  # type: ignore[index]
        for i in range(count - 1, L.VIOLATION_LOG_SIZE - 1, -1):  # trim the tail, highest index first
            del patch[i]
        return patch, {"camera": camera_id, "newest": newest, "count": min(count, L.VIOLATION_LOG_SIZE)}

    @app.callback(
        Output(L.LINE_COUNTS, "children"),
        Output(L.COUNTS_STATE, "data"),
        Input(L.TICK, "n_intervals"),
        Input(L.CAMERA, "value"),
        State(L.COUNTS_STATE, "data"),
    )
    def line_counts(_n: int | None, camera_id: str | None, state: dict | None):
        camera = camera_or_stop(camera_id)
        today = utc_day(time.time())
        key = {"camera": camera.id, "version": buffers.counts_version(camera.id), "day": today}
        if state == key:
            raise PreventUpdate
        lines = [(line.id, line.directions) for line in camera.lines]
        return L.line_counts_panel(lines, buffers.line_counts(camera.id), today), key

    camera_ids = list(cameras)
    camera_names = {c.id: c.name or c.id for c in settings.cameras}

    @app.callback(
        Output(L.EVENTS, "children"),
        Output(L.EVENTS_STATE, "data"),
        Input(L.TICK, "n_intervals"),
        Input(L.EVENT_TYPE_FILTER, "value"),
        Input(L.EVENT_CAMERA_FILTER, "value"),
        State(L.EVENTS_STATE, "data"),
    )
    def events(_n: int | None, types: Any, cams: Any, state: dict | None):
        types, cams = L.selected(types, EVENT_TYPES), L.selected(cams, camera_ids)
        key = {"version": buffers.events_version, "types": types, "cameras": cams}
        if state == key:
            raise PreventUpdate
        items = buffers.traffic_events(cams, types, limit=L.EVENT_LOG_SIZE)
        return L.events_table(items, camera_names), key

    @app.callback(
        Output(L.HEALTH, "children"),
        Output(L.HEALTH_CHART, "figure"),
        Output(L.HEALTH_STATE, "data"),
        Output(L.STREAM_STATUS, "children"),
        Output(L.STREAM_STATUS, "className"),
        Input(L.TICK, "n_intervals"),
        Input(L.CAMERA, "value"),
        State(L.HEALTH_STATE, "data"),
    )
    def health(_n: int | None, camera_id: str | None, state: dict | None):
        history = buffers.health(limit=120)
        streams, now = watched(), time.time()
        video = streams.get(camera_id) if camera_id else None
        rows = []
        for cam in cameras.values():
            lag, on_screen = lag_of(cam.id, streams, now)
            rows.append(
                L.CameraHealth(
                    cam.id,
                    budget_s=settings.budget_s(cam),
                    lag_s=lag,
                    on_screen=on_screen,
                    analysis=buffers.analysis(cam.id),
                    events=buffers.camera_events(cam.id),
                )
            )
        panel = L.health_panel(
            history[-1] if history else None,
            rows,
            video.fps() if video else None,
            video.playout_delay_s if video else None,
        )
        error = ctx.consumer.status.last_error if ctx.consumer else None
        status_text, status_class = L.stream_status(buffers.last_message_wall, error)
        version, now = buffers.health_version, time.time()
        if state and (state.get("version") == version or now - state.get("at", 0) < CHART_REFRESH_S):
            return panel, dash.no_update, state, status_text, status_class
        chart = figures.health_chart(history, uirevision="health")
        return panel, chart, {"version": version, "at": now}, status_text, status_class

    @app.callback(
        Output(L.H_SUMMARY, "children"),
        Output(L.H_FLOW, "figure"),
        Output(L.H_SPEEDS, "figure"),
        *HISTORY_INPUTS,
    )
    def history(
        _clicks: int,
        tab: str,
        camera_id: str | None,
        start_date: str | None,
        end_date: str | None,
        start_time: str | None,
        end_time: str | None,
    ):
        if tab != "history":
            raise PreventUpdate  # Delta reads only when somebody looks at them
        camera = camera_or_stop(camera_id)
        try:
            start, end = local_range(start_date or "", end_date or "", start_time or "", end_time or "")
        except ValueError as exc:
            msg = f"Invalid range: {exc}"
            return html.Div(msg, className="error-note"), figures.empty_figure(msg), figures.empty_figure(msg)
        t0 = time.perf_counter()
        try:
            result = ctx.history.query(camera.id, start, end)
        except Exception as exc:  # a half-written or foreign table must not break the page
            log.exception("history query failed for %s", camera.id)
            msg = f"Could not read the Delta tables: {exc}"
            return html.Div(msg, className="error-note"), figures.empty_figure(msg), figures.empty_figure(msg)
        every = choose_bin(start, end)
        label, bin_s = BINS[every]
        flow = resample_flow(result.flow, every)
        if len(result.missing) == len(HISTORY_TABLES):
            note = "No data yet: the pipeline has not written any tables under " + str(ctx.history.delta_root)
            empty = figures.empty_figure("No data yet")
            return html.Div(note, className="empty-note"), empty, empty
        flow_fig = (
            figures.empty_figure("No data yet (flow table missing)")
            if tables.FLOW in result.missing
            else figures.flow_chart(flow, title=f"Flow per {label}", bin_label=label, bin_s=bin_s)
        )
        speeds = result.speeds
        speed_fig = (
            figures.empty_figure("No data yet (tracks table missing)")
            if tables.TRACKS in result.missing
            else figures.speed_histogram(
                {cls: grp["speed_kmh"].to_list() for (cls,), grp in speeds.group_by("class_name")},
                camera.speed_limit_kmh,
                title="Speed distribution (one speed per vehicle)",
            )
        )
        mean, p85 = speed_stats(speeds["speed_kmh"].to_list())
        speed_text = "" if mean is None else f", mean {mean:.0f} km/h, 85th percentile {p85:.0f} km/h"
        parts = [
            f"{camera.name or camera.id}: {start:%Y-%m-%d %H:%M} – {end - timedelta(minutes=1):%Y-%m-%d %H:%M}",
            f"{int(flow['vehicles'].sum()) if not flow.is_empty() else 0} vehicles counted",
            f"{speeds.height} with speeds{speed_text}",
            f"{result.violations} violations",
        ]
        if result.missing:
            parts.append("missing tables: " + ", ".join(result.missing))
        log.info("history %s %s..%s in %.0f ms", camera.id, start, end, (time.perf_counter() - t0) * 1000)
        return html.Div(" · ".join(parts)), flow_fig, speed_fig

    @app.callback(
        Output(L.H_LINE_FLOW, "figure"),
        Output(L.H_LANE_FLOW, "figure"),
        *HISTORY_INPUTS,
    )
    def history_lines(
        _clicks: int,
        tab: str,
        camera_id: str | None,
        start_date: str | None,
        end_date: str | None,
        start_time: str | None,
        end_time: str | None,
    ):
        """Flow per counting line and direction, and per lane, from the crossings table."""
        if tab != "history":
            raise PreventUpdate
        camera = camera_or_stop(camera_id)
        try:
            start, end = local_range(start_date or "", end_date or "", start_time or "", end_time or "")
        except ValueError as exc:
            msg = f"Invalid range: {exc}"
            return figures.empty_figure(msg), figures.empty_figure(msg)
        try:
            crossings = ctx.history.crossings(camera.id, start, end)
        except Exception as exc:  # a half-written or foreign table must not break the page
            log.exception("crossings query failed for %s", camera.id)
            msg = f"Could not read the crossings table: {exc}"
            return figures.empty_figure(msg), figures.empty_figure(msg)
        if crossings is None:
            msg = "No data yet (crossings table missing)" if camera.lines else "No counting lines on this camera"
            return figures.empty_figure(msg), figures.empty_figure(msg)
        every = choose_bin(start, end)
        label, bin_s = BINS[every]
        empty = "No crossings in this range" if camera.lines or not crossings.is_empty() else "No counting lines"
        line_fig = figures.series_flow_chart(
            complete_bins(line_flow(crossings, every), start, end, every),
            title=f"Crossings per {label}, per line and direction",
            order=[line_series(line.id, d) for line in camera.lines for d in line.directions],
            bin_label=label,
            bin_s=bin_s,
            unit="crossings",
            empty_message=empty,
        )
        lane_fig = figures.series_flow_chart(
            complete_bins(lane_flow(crossings, every), start, end, every),
            title=f"Vehicles per {label}, per lane (first line crossed)",
            order=[lane.id for lane in camera.lanes],
            bin_label=label,
            bin_s=bin_s,
            empty_message=empty,
        )
        return line_fig, lane_fig
