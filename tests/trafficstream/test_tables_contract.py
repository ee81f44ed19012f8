"""The Delta tables are declared once (trafficstream.tables) and the job's schemas derive from the declarations."""

from __future__ import annotations

import re

import pytest

from trafficstream import tables
from trafficstream.tables import Column, Table

NAMES = {
    "FRAMES": "frames",
    "DETECTIONS": "detections",
    "TRACKS": "tracks",
    "VIOLATIONS": "violations",
    "FLOW": "flow",
    "DEAD_LETTERS": "dead_letters",
    "CROSSINGS": "crossings",
    "EVENTS": "events",
}


def test_name_constants_and_the_vehicle_jobs_tables():
    assert {k: getattr(tables, k) for k in NAMES} == NAMES
    assert tables.ALL_TABLES == tuple(NAMES.values())
    assert tuple(t.name for t in tables.tables_of(tables.VEHICLE_JOB)) == tables.ALL_TABLES
    assert set(tables.ALL_TABLES) <= set(tables.DECLARATIONS)


def test_every_declaration_is_well_formed():
    for name, t in tables.DECLARATIONS.items():
        assert t.name == name and t.grain and t.columns
        assert all(c.type in tables.COLUMN_TYPES and c.doc for c in t.columns), name
        assert set(t.partition_by) <= set(t.column_names) and set(t.keys) <= set(t.column_names)
        if t.write == tables.MERGE:  # the sinks' MERGE guard
            assert t.keys and "updated_batch" in t.column_names, name


def test_column_docs_are_derived_from_the_declarations():
    for name, t in tables.DECLARATIONS.items():
        assert list(tables.COLUMNS[name]) == list(t.column_names)


def test_invalid_declarations_and_unknown_tables_are_refused():
    with pytest.raises(ValueError, match="unknown type"):
        Column("x", "int64")
    with pytest.raises(ValueError, match="not declared"):
        Table("t", "row", (Column("a", "long"),), partition_by=("b",), write=tables.APPEND)
    with pytest.raises(ValueError, match="duplicate"):
        Table("t", "row", (Column("a", "long"), Column("a", "int")), partition_by=(), write=tables.APPEND)
    with pytest.raises(KeyError, match="no table 'traffic_stats_v9' is declared"):
        tables.table("traffic_stats_v9")
    with pytest.raises(KeyError, match="no column"):
        tables.table(tables.FRAMES).column("nope")


# -- the Spark side (pyspark is importable without a JVM) -------------------------------------------------------
@pytest.fixture(scope="module")
def spark_side():
    pytest.importorskip("pyspark")
    from trafficstream.streaming_jobs import schemas, sinks, table_rows

    return schemas, sinks, table_rows


def test_table_schemas_are_the_declarations(spark_side):
    schemas, sinks, _ = spark_side
    assert list(sinks.TABLE_SCHEMAS) == list(tables.ALL_TABLES)
    for name, (struct, partitions) in sinks.TABLE_SCHEMAS.items():
        t = tables.table(name)
        assert [(f.name, f.dataType) for f in struct.fields] == [
            (c.name, schemas.spark_type(c.type)) for c in t.columns
        ], name
        assert partitions == list(t.partition_by)
    assert schemas.spark_schema(tables.FLOW) == schemas.spark_schema(tables.table(tables.FLOW))


def test_every_written_column_is_computed_from_a_declared_source(spark_side):
    """What each sink selects, checked without Spark: declared columns only, each from an existing field, each
    expression one the driver-side derivation evaluates."""
    schemas, _, sinks = spark_side
    row_columns = set(schemas.TRACKED.fieldNames()) | {"batch_id", "evidence_uri", "evidence_clip_uri"}  # by the sinks
    assert set(sinks.COLUMN_SOURCES) == set(tables.ALL_TABLES)
    for name, src in sinks.COLUMN_SOURCES.items():
        t = tables.table(name)
        assert set(src.exprs) <= set(t.column_names), name
        payload = {f.name: f.dataType for f in src.payload.fields}
        for c in t.columns:
            if c.name not in src.exprs:  # the payload field of the same name, in its payload representation
                assert payload.get(c.name) == schemas.payload_type(c), (name, c.name)
        for col, expr, typ in sinks.column_exprs(name):
            assert typ == t.column(col).type
            sinks.compile_expr(expr, src.prefix)  # raises for an expression it cannot evaluate
            for ident, call in re.findall(r"([A-Za-z_]\w*(?:\.\w+)?)\s*(\(?)", re.sub(r"'[^']*'", "", expr)):
                if call:  # a SQL function
                    continue
                struct, _, field = ident.rpartition(".")
                if struct:
                    assert struct == src.prefix and field in payload, (name, col, expr)
                else:
                    assert ident in row_columns, (name, col, expr)


def test_payloads_carry_table_columns_with_their_declared_types(spark_side):
    schemas, _, _ = spark_side
    for payload, table in (
        (schemas.VEHICLE, tables.DETECTIONS),
        (schemas.FRAME_PAYLOAD, tables.FRAMES),
        (schemas.TRACK_PAYLOAD, tables.TRACKS),
        (schemas.VIOLATION_PAYLOAD, tables.VIOLATIONS),
        (schemas.FLOW_PAYLOAD, tables.FLOW),
        (schemas.DEAD_PAYLOAD, tables.DEAD_LETTERS),
    ):
        t = tables.table(table)
        shared = [f for f in payload.fields if f.name in t.column_names and f.name != "vehicles"]
        assert shared, table
        for f in shared:
            assert f.dataType == schemas.payload_type(t.column(f.name)), (table, f.name)
    # timestamps travel as unix seconds, booleans as "true"/"false"
    assert schemas.TRACK_PAYLOAD["first_seen_ts"].dataType.simpleString() == "double"
    assert schemas.VEHICLE["over_limit"].dataType.simpleString() == "string"
    assert schemas.from_payload(tables.table(tables.TRACKS).column("ended"), "p.ended") == "(p.ended = 'true')"
