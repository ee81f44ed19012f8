"""Stage-2 rows -> the rows of each Delta table, computed on the driver in plain Python / Arrow.

The sinks get a micro-batch's (or a spooled group's) stage-2 rows as one Arrow table on the driver. Each
table's rows are derived from them here, once, whatever writes them afterwards (delta-rs or Spark, see
``streaming_jobs/delta_writers.py``): exactly the declared columns, in order, with their declared types.

How a column is computed is declared as data in :data:`COLUMN_SOURCES` (a small expression per column, else
the payload field of the same name) and checked against the table declarations by the contract test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from functools import cache
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql.types import StructType

from trafficstream import tables
from trafficstream.streaming_jobs.schemas import (
    CROSSING_PAYLOAD,
    DEAD_PAYLOAD,
    EVENT_PAYLOAD,
    FLOW_PAYLOAD,
    FRAME_PAYLOAD,
    KIND_CROSSING,
    KIND_DEAD,
    KIND_EVENT,
    KIND_FLOW,
    KIND_FRAME,
    KIND_TRACK,
    TRACK_PAYLOAD,
    VEHICLE,
    VIOLATION_PAYLOAD,
    from_payload,
)
from trafficstream.streaming_jobs.shedding import DETECTED

# Arrow types of the declared column types (timestamps: UTC microseconds, as Spark and delta-rs store them).
ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "long": pa.int64(),
    "int": pa.int32(),
    "double": pa.float64(),
    "float": pa.float32(),
    "boolean": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
}


def arrow_schema(table: str) -> pa.Schema:
    return pa.schema([pa.field(c.name, ARROW_TYPES[c.type]) for c in tables.table(table).columns])


@dataclass(frozen=True)
class ColumnSources:
    """How a sink computes each declared column of its table from a stage-2 row: an expression in ``exprs``,
    else the payload field of the same name (``{prefix}.{column}``, turned back by :func:`from_payload`).
    Expressions (Spark SQL spelling): a row field (``camera_id``), a payload field (``p.minute_ts``),
    ``timestamp_seconds(x)``, ``to_date(x)``, ``size(x)``, ``(x = 'true')``. Plain data, so the contract
    test checks it against the declarations."""

    payload: StructType
    prefix: str
    exprs: dict[str, str]


_ROW_KEYS = {"camera_id": "camera_id", "frame_index": "frame_index", "pts_s": "pts_s"}  # the stage-2 row's own
_EVENT_DATE = "to_date(timestamp_seconds(capture_ts))"
COLUMN_SOURCES: dict[str, ColumnSources] = {
    tables.FRAMES: ColumnSources(
        FRAME_PAYLOAD,
        "p",
        {
            **_ROW_KEYS,
            "capture_ts": "timestamp_seconds(capture_ts)",
            "processed_ts": "timestamp_seconds(processed_ts)",
            "vehicles": "size(p.vehicles)",
            "batch_id": "batch_id",
            "event_date": _EVENT_DATE,
        },
    ),
    tables.DETECTIONS: ColumnSources(
        VEHICLE,
        "v",
        {  # v: one vehicle of the frame's payload
            **_ROW_KEYS,
            "capture_ts": "timestamp_seconds(capture_ts)",
            "batch_id": "batch_id",
            "event_date": _EVENT_DATE,
        },
    ),
    tables.TRACKS: ColumnSources(TRACK_PAYLOAD, "p", {"camera_id": "camera_id", "updated_batch": "batch_id"}),
    tables.VIOLATIONS: ColumnSources(
        VIOLATION_PAYLOAD,
        "p",
        {
            **_ROW_KEYS,
            "capture_ts": "timestamp_seconds(capture_ts)",
            "evidence_uri": "evidence_uri",
            "evidence_clip_uri": "evidence_clip_uri",
            "batch_id": "batch_id",
            "event_date": _EVENT_DATE,
        },
    ),
    tables.FLOW: ColumnSources(
        FLOW_PAYLOAD,
        "p",
        {"camera_id": "camera_id", "minute": "timestamp_seconds(p.minute_ts)", "updated_batch": "batch_id"},
    ),
    tables.CROSSINGS: ColumnSources(
        CROSSING_PAYLOAD,
        "p",
        {"camera_id": "camera_id", "batch_id": "batch_id", "event_date": "to_date(timestamp_seconds(p.crossing_ts))"},
    ),
    tables.EVENTS: ColumnSources(EVENT_PAYLOAD, "p", {"camera_id": "camera_id", "updated_batch": "batch_id"}),
    tables.DEAD_LETTERS: ColumnSources(
        DEAD_PAYLOAD,
        "p",
        {
            "camera_id": "camera_id",
            "frame_index": "frame_index",
            "dead_ts": "timestamp_seconds(processed_ts)",
            "batch_id": "batch_id",
        },
    ),
}


def column_exprs(table: str) -> list[tuple[str, str, str]]:
    """(column, expression, declared type) of every declared column of ``table``, in order."""
    src = COLUMN_SOURCES[table]
    return [
        (c.name, src.exprs.get(c.name) or from_payload(c, f"{src.prefix}.{c.name}"), c.type)
        for c in tables.table(table).columns
    ]


# -- the expressions ----------------------------------------------------------------------------------------
Getter = Callable[[Mapping[str, Any], Mapping[str, Any]], Any]  # (stage-2 row, its parsed payload) -> value
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _timestamp_seconds(x: Any) -> datetime | None:
    if not isinstance(x, (int, float)) or isinstance(x, bool) or x != x or abs(x) > 1e11:
        return None  # not a number, NaN, or beyond any plausible time (Spark: null / overflow)
    # Spark's timestamp_seconds: whole microseconds, truncated towards zero
    return _EPOCH + timedelta(microseconds=int(x * 1_000_000))


def _to_date(x: Any) -> date | None:
    return x.date() if isinstance(x, datetime) else None


def _size(x: Any) -> int | None:
    return len(x) if isinstance(x, list) else None


_FUNCTIONS: dict[str, Callable[[Any], Any]] = {
    "timestamp_seconds": _timestamp_seconds,
    "to_date": _to_date,
    "size": _size,
}


def compile_expr(expr: str, prefix: str) -> Getter:
    """A getter for one :class:`ColumnSources` expression; ValueError for anything else (caught by the
    contract test, not at run time)."""
    expr = expr.strip()
    if m := re.fullmatch(r"\((.+) = 'true'\)", expr):
        inner = compile_expr(m.group(1), prefix)
        return lambda row, p: None if (v := inner(row, p)) is None else v in ("true", True)
    if m := re.fullmatch(r"(\w+)\((.+)\)", expr):
        fn = _FUNCTIONS.get(m.group(1))
        if fn is None:
            raise ValueError(f"unsupported function in {expr!r}")
        arg = compile_expr(m.group(2), prefix)
        return lambda row, p: fn(arg(row, p))
    if m := re.fullmatch(r"(\w+)\.(\w+)", expr):
        if m.group(1) != prefix:
            raise ValueError(f"{expr!r}: payload fields are {prefix}.<field>")
        field = m.group(2)
        return lambda row, p: p.get(field)
    if re.fullmatch(r"\w+", expr):
        return lambda row, p: row.get(expr)
    raise ValueError(f"unsupported expression {expr!r}")


def _cast(value: Any, typ: str) -> Any:
    """``value`` as the declared type, or None where Spark's cast would give null."""
    if value is None:
        return None
    try:
        if typ in ("long", "int"):
            if isinstance(value, float) and value != value:
                return None
            n = int(value)
            bits = 63 if typ == "long" else 31
            return n if -(2**bits) <= n < 2**bits else None
        if typ in ("double", "float"):
            return float(value) if not isinstance(value, str) else None
        if typ == "string":
            return value if isinstance(value, str) else json.dumps(value)
        if typ == "boolean":
            return value if isinstance(value, bool) else str(value).lower() == "true"
    except (TypeError, ValueError, OverflowError):
        return None
    return value  # timestamp / date: already built by their expression


class RowBuilder:
    """Builds the rows of one table: its declared columns computed by their compiled expressions."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.schema = arrow_schema(table)
        prefix = COLUMN_SOURCES[table].prefix
        self._columns = [(name, compile_expr(expr, prefix), typ) for name, expr, typ in column_exprs(table)]

    def row(self, stage2: Mapping[str, Any], payload: Mapping[str, Any]) -> dict[str, Any]:
        return {name: _cast(get(stage2, payload), typ) for name, get, typ in self._columns}

    def arrow(self, rows: Iterable[dict[str, Any]]) -> pa.Table:
        return pa.Table.from_pylist(list(rows), schema=self.schema)


@cache
def builder(table: str) -> RowBuilder:
    return RowBuilder(table)


# -- stage-2 rows -> table rows -----------------------------------------------------------------------------
def parsed(rows: pa.Table, kind: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """The stage-2 rows of ``kind`` with their JSON payloads parsed (an unparsable payload: empty)."""
    out = []
    for r in rows.filter(pc.equal(rows.column("kind"), kind)).to_pylist():
        try:
            p = json.loads(r["payload"]) if r.get("payload") else {}
        except ValueError:
            p = {}
        out.append((r, p if isinstance(p, dict) else {}))
    return out


def _latest(rows: list[dict[str, Any]], keys: tuple[str, ...], order: Callable[[dict[str, Any]], Any]) -> list:
    """One row per key: the greatest by ``order``."""
    best: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r in rows:
        k = tuple(r[c] for c in keys)
        if k not in best or order(r) > order(best[k]):
            best[k] = r
    return list(best.values())


def frames(rows: pa.Table) -> tuple[pa.Table, pa.Table]:
    """The frames table's rows and the detections' (what the detector saw; boxes predicted between
    detections live on the results topic only)."""
    fb, db = builder(tables.FRAMES), builder(tables.DETECTIONS)
    fr: list[dict[str, Any]] = []
    det: list[dict[str, Any]] = []
    for r, p in parsed(rows, KIND_FRAME):
        fr.append(fb.row(r, p))
        if (p.get("analysis") or DETECTED) == DETECTED:
            det.extend(db.row(r, v) for v in p.get("vehicles") or () if isinstance(v, dict))
    return fb.arrow(fr), db.arrow(det)


def appended(rows: pa.Table, kind: str, table: str) -> pa.Table:
    """Rows of an append table, one per stage-2 row of ``kind``."""
    b = builder(table)
    return b.arrow(b.row(r, p) for r, p in parsed(rows, kind))


def tracks(rows: pa.Table) -> pa.Table:
    b = builder(tables.TRACKS)
    out = [b.row(r, p) for r, p in parsed(rows, KIND_TRACK)]
    # A live summary and the ended one of the same track can meet in one commit: keep the latest.
    keys = tables.table(tables.TRACKS).keys
    return b.arrow(_latest(out, keys, lambda r: (bool(r["ended"]), _num(r["last_frame"]))))


def flow(rows: pa.Table) -> pa.Table:
    """One row per minute and class: the counts are absolute and only grow, so the largest is the latest
    (several micro-batches are committed at once)."""
    b = builder(tables.FLOW)
    keys = tables.table(tables.FLOW).keys
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    for r, p in parsed(rows, KIND_FLOW):
        row = b.row(r, p)
        k = tuple(row[c] for c in keys)
        if k in out:
            prev = out[k]
            row["vehicles"] = max(_num(row["vehicles"]), _num(prev["vehicles"]))
            row["updated_batch"] = max(_num(row["updated_batch"]), _num(prev["updated_batch"]))
        out[k] = row
    return b.arrow(out.values())


def events(rows: pa.Table) -> pa.Table:
    """An event reported open and then closed in the batches of one commit: keep the latest report."""
    b = builder(tables.EVENTS)
    out = [b.row(r, p) for r, p in parsed(rows, KIND_EVENT)]
    keys = tables.table(tables.EVENTS).keys
    return b.arrow(
        _latest(
            out,
            keys,
            lambda r: (
                _num(r["updated_batch"]),
                not r["is_open"],
                -1 if r["frame_index"] is None else r["frame_index"],
            ),
        )
    )


def violations(rendered: pa.Table) -> pa.Table:
    """Violation rows after the evidence step (which added ``evidence_uri`` / ``evidence_clip_uri``)."""
    b = builder(tables.VIOLATIONS)
    return b.arrow(b.row(r, p) for r, p in parsed(rendered, "violation"))


def dead_letters(rows: pa.Table) -> pa.Table:
    return appended(rows, KIND_DEAD, tables.DEAD_LETTERS)


def crossings(rows: pa.Table) -> pa.Table:
    # unique by construction: a track counts once per line and direction (the counter's state says so)
    return appended(rows, KIND_CROSSING, tables.CROSSINGS)


def derive(rows: pa.Table) -> dict[str, pa.Table]:
    """Every table's rows from stage-2 ``rows``, except violations (they need the evidence step first)."""
    fr, det = frames(rows)
    return {
        tables.FRAMES: fr,
        tables.DETECTIONS: det,
        tables.DEAD_LETTERS: dead_letters(rows),
        tables.CROSSINGS: crossings(rows),
        tables.TRACKS: tracks(rows),
        tables.FLOW: flow(rows),
        tables.EVENTS: events(rows),
    }


def _num(x: Any) -> float:
    return float("-inf") if x is None else x
