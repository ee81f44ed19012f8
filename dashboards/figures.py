"""Pure figure builders: plain data (lists, dicts, Polars frames) in, ``go.Figure`` out. No I/O, no state.

Times arrive as Unix seconds or timezone-aware datetimes and are shown in the dashboard host's local time.
Rows whose time is not a plausible wall-clock time (dashboards.times) are left out rather than raising.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone

import plotly.graph_objects as go
import polars as pl

from trafficstream.dashboards.times import MAX_KMH, finite, integer, local_datetime

CLASS_COLORS = {"car": "#1f77b4", "truck": "#ff7f0e", "bus": "#2ca02c", "motorcycle": "#9467bd"}
CLASS_ORDER = ("car", "truck", "bus", "motorcycle")
OTHER_COLOR = "#7f7f7f"
SPEED_BIN_KMH = 5.0


def class_color(cls: str) -> str:
    return CLASS_COLORS.get(cls, OTHER_COLOR)


def _class_sort_key(cls: str) -> tuple[int, str]:
    return (CLASS_ORDER.index(cls) if cls in CLASS_ORDER else len(CLASS_ORDER), cls)


def local_time(value: float | datetime) -> datetime:
    """Naive local datetime (what Plotly should display) from Unix seconds or an aware datetime.

    Raises ``ValueError`` for Unix seconds that are not a plausible wall-clock time (see dashboards.times).
    """
    if isinstance(value, datetime):
        aware = value if value.tzinfo else value.replace(tzinfo=timezone.utc)
        return aware.astimezone().replace(tzinfo=None)
    when = local_datetime(value)
    if when is None:
        raise ValueError(f"not a plausible wall-clock time: {value!r:.40}")
    return when


def _safe_local_time(value: object) -> datetime | None:
    try:
        return local_time(value)  # type: ignore[arg-type]
    except (ValueError, OverflowError, OSError, TypeError):
        return None


def _base_layout(fig: go.Figure, title: str | None, *, uirevision: str | None = None) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0.01, "font": {"size": 14}} if title else None,
        margin={"l": 48, "r": 12, "t": 36 if title else 12, "b": 40},
        template="plotly_white",
        legend={"orientation": "h", "y": -0.22, "x": 0},
        # Same uirevision across updates: a user's zoom / legend toggles survive the live refresh.
        uirevision=uirevision,
    )
    return fig


def empty_figure(message: str, title: str | None = None) -> go.Figure:
    fig = go.Figure()
    fig.add_annotation(
        text=message, showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper", font={"size": 15, "color": "#666"}
    )
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    return _base_layout(fig, title)


def speed_histogram(
    speeds: Sequence[tuple[str, float]] | Mapping[str, Sequence[float]],
    limit_kmh: float | None,
    *,
    title: str = "Vehicle speeds",
    uirevision: str | None = None,
) -> go.Figure:
    """Stacked histogram of per-vehicle speeds by class (5 km/h bins) with the speed limit marked.

    ``speeds``: (class, km/h) pairs or {class: [km/h, ...]}.
    """
    pairs = [(cls, v) for cls, values in speeds.items() for v in values] if isinstance(speeds, Mapping) else speeds
    by_class: dict[str, list[float]] = {}
    for cls, kmh in pairs:  # nulls, NaN and absurd values are left out (they would break the binning)
        value = finite(kmh, 0.0, MAX_KMH)
        if value is not None:
            by_class.setdefault(str(cls), []).append(value)
    n = sum(len(v) for v in by_class.values())
    if n == 0:
        return empty_figure("No speed estimates yet", title)
    fig = go.Figure()
    for cls in sorted(by_class, key=_class_sort_key):
        fig.add_trace(
            go.Histogram(
                x=by_class[cls],
                name=cls,
                marker_color=class_color(cls),
                xbins={"size": SPEED_BIN_KMH},
                hovertemplate="%{x} km/h: %{y} vehicles<extra>" + cls + "</extra>",
            )
        )
    fig.update_layout(barmode="stack", bargap=0.05)
    if limit_kmh is not None:
        fig.add_vline(
            x=limit_kmh,
            line={"color": "#d62728", "dash": "dash", "width": 2},
            annotation_text=f"limit {limit_kmh:g}",
            annotation_position="top right",
        )
    fig.update_xaxes(title_text="km/h")
    fig.update_yaxes(title_text="vehicles", rangemode="tozero")
    return _base_layout(fig, f"{title} ({n} vehicles)", uirevision=uirevision)


def flow_frame(rows: Sequence[tuple[float | datetime, str, int]]) -> pl.DataFrame:
    """(minute, class, vehicles) rows -> Polars frame with a local ``minute`` datetime column.

    Rows with an implausible minute or count are left out (one bad message must not break the chart)."""
    kept = [
        (when, str(c), n)
        for m, c, n in rows
        if (when := _safe_local_time(m)) is not None and integer(n, 0, 2**53) is not None
    ]
    return pl.DataFrame(
        {
            "minute": [when for when, _, _ in kept],
            "class_name": [c for _, c, _ in kept],
            "vehicles": [n for _, _, n in kept],
        },
        schema={"minute": pl.Datetime("us"), "class_name": pl.String, "vehicles": pl.Int64},
    )


BAR_GAP = 0.1  # share of a time bin left empty between flow bars


def flow_chart(
    flow: pl.DataFrame,
    *,
    title: str = "Flow per minute",
    bin_label: str = "minute",
    bin_s: float = 60.0,
    uirevision: str | None = None,
) -> go.Figure:
    """Stacked bars: vehicles per time bin and class.

    ``flow`` has columns minute (naive local or timezone-aware datetime), class_name, vehicles.
    """
    if flow.is_empty():
        return empty_figure("No flow counted yet", title)
    agg = flow.group_by("minute", "class_name").agg(pl.col("vehicles").sum()).sort("minute")
    fig = go.Figure()
    for cls in sorted(agg["class_name"].unique().to_list(), key=_class_sort_key):
        part = agg.filter(pl.col("class_name") == cls)
        fig.add_trace(
            go.Bar(
                x=[local_time(m) if m.tzinfo else m for m in part["minute"].to_list()],
                y=part["vehicles"].to_list(),
                name=cls,
                # Explicit width (date axes count in ms): with a single bin, e.g. the live view's current
                # minute, Plotly would otherwise draw 1 ms wide, invisible bars.
                width=bin_s * 1000 * (1 - BAR_GAP),
                marker_color=class_color(cls),
                hovertemplate="%{x|%H:%M}: %{y} " + cls + "<extra></extra>",
            )
        )
    fig.update_layout(barmode="stack")
    # Show at least 10 bins: with one or two bars Plotly would put ticks every few seconds ("02:53, 02:53").
    xs = [x for trace in fig.data for x in trace.x]
    last, first = max(xs), min(xs)
    half, span = timedelta(seconds=bin_s / 2), timedelta(seconds=bin_s * 10)
    fig.update_xaxes(title_text=None, tickformat="%H:%M\n%b %d", range=[min(first, last - span) - half, last + half])
    fig.update_yaxes(title_text=f"vehicles / {bin_label}", rangemode="tozero")
    total = int(agg["vehicles"].sum())
    return _base_layout(fig, f"{title} ({total} vehicles)", uirevision=uirevision)


def health_chart(health: Sequence[Mapping[str, object]], *, uirevision: str | None = None) -> go.Figure:
    """Micro-batch duration (bars, left axis) and frames/s processed (line, right axis) over time."""
    points = [(when, h) for h in health if (when := _safe_local_time(h.get("ts"))) is not None]
    if not points:
        return empty_figure("No pipeline health reports yet", "Pipeline")
    times = [when for when, _ in points]
    fig = go.Figure()
    fig.add_trace(go.Bar(x=times, y=[h.get("batch_ms") for _, h in points], name="batch ms", marker_color="#aec7e8"))
    fig.add_trace(
        go.Scatter(
            x=times,
            y=[h.get("fps") for _, h in points],
            name="frames/s",
            yaxis="y2",
            mode="lines+markers",
            line={"color": "#1f77b4"},
        )
    )
    fig.update_layout(
        yaxis={"title": {"text": "batch ms"}, "rangemode": "tozero"},
        yaxis2={"title": {"text": "frames/s"}, "overlaying": "y", "side": "right", "rangemode": "tozero"},
    )
    return _base_layout(fig, "Pipeline micro-batches", uirevision=uirevision)


def series_flow_chart(
    counts: pl.DataFrame,
    *,
    title: str,
    order: Sequence[str] = (),
    bin_label: str = "minute",
    bin_s: float = 60.0,
    unit: str = "vehicles",
    empty_message: str = "No crossings in this range",
    uirevision: str | None = None,
) -> go.Figure:
    """One step line per series (a line and direction, or a lane): vehicles per time bin.

    ``counts`` has columns minute (naive local or timezone-aware datetime, the bin's start), series, vehicles;
    ``order``: the series shown first, in this order (the camera's configuration), others after by name. Lines,
    not stacked bars: a vehicle crosses every line of its way, so the series do not add up. Rows whose time or
    count is implausible are left out."""
    rows = []
    for m, series, value in counts.select("minute", "series", "vehicles").iter_rows():
        when, n = _safe_local_time(m), integer(value, 0, 2**53)
        if when is not None and n is not None:
            rows.append((when, str(series), n))
    if not rows:
        return empty_figure(empty_message, title)
    by_series: dict[str, list[tuple[datetime, int]]] = {}
    for when, series, n in sorted(rows, key=lambda r: r[0]):
        by_series.setdefault(series, []).append((when, n))
    rank = {name: i for i, name in enumerate(order)}
    fig = go.Figure()
    for series in sorted(by_series, key=lambda s: (rank.get(s, len(rank)), s)):
        points = by_series[series]
        fig.add_trace(
            go.Scatter(
                x=[when for when, _ in points],
                y=[n for _, n in points],
                name=series,
                mode="lines+markers" if len(points) < 3 else "lines",
                line={"shape": "hv", "width": 2},
                hovertemplate="%{x|%H:%M}: %{y} " + unit + "<extra>" + series + "</extra>",
            )
        )
    xs = [when for points in by_series.values() for when, _ in points]
    last, first = max(xs), min(xs)
    span = timedelta(seconds=bin_s * 10)
    fig.update_xaxes(tickformat="%H:%M\n%b %d", range=[min(first, last - span), last + timedelta(seconds=bin_s)])
    fig.update_yaxes(title_text=f"{unit} / {bin_label}", rangemode="tozero")
    total = sum(n for _, _, n in rows)
    return _base_layout(fig, f"{title} ({total} {unit})", uirevision=uirevision)
