"""defs.metadata: typed tables for asset metadata (column types, order, empty tables, Arrow previews)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from mrdabak_pipeline.defs.metadata import arrow_preview, counts_table, list_table, table


def _types(value: dg.TableMetadataValue) -> dict[str, str]:
    return {c.name: c.type for c in value.schema.columns}


def test_column_types_are_the_narrowest_that_fit() -> None:
    rows = [
        {"flag": True, "n": 1, "x": 1, "name": "a", "none": None, "path": Path("/p")},
        {"flag": False, "n": 2, "x": 2.5, "name": None, "none": None, "path": Path("/q")},
    ]
    value = table(rows, ["flag", "n", "x", "name", "none", "path", "absent"])
    # bool is an int subclass: it must not make an int column, nor an int a bool column
    assert _types(value) == {"flag": "bool", "n": "int", "x": "float", "name": "string", "none": "string",
                             "path": "string", "absent": "string"}
    assert value.records[0].data == {"flag": True, "n": 1, "x": 1, "name": "a", "none": None, "path": "/p", "absent": None}
    assert _types(table([{"n": 1}, {"n": True}], ["n"]))["n"] == "string"  # mixed bool/int: neither


@given(st.dictionaries(st.text(min_size=1, max_size=8), st.integers(min_value=0, max_value=10**6), max_size=12))
def test_counts_table_holds_every_count_most_frequent_first(counts: dict[str, int]) -> None:
    value = counts_table(counts, "reason")
    rows = [(r.data["reason"], r.data["count"]) for r in value.records]
    assert dict(rows) == counts and len(rows) == len(counts)
    assert rows == sorted(rows, key=lambda kv: (-kv[1], kv[0]))
    assert [c.name for c in value.schema.columns] == ["reason", "count"]


def test_empty_lists_and_previews_are_empty_tables_with_their_columns() -> None:
    assert list_table([], "warning").records == [] and _types(list_table([], "warning")) == {"warning": "string"}
    assert [r.data["warning"] for r in list_table(["a", "b"], "warning").records] == ["a", "b"]
    data = pa.table({"id": ["s1", "s2", "s3"], "n": [1, 2, 3], "text": ["secret"] * 3})
    preview = arrow_preview(data, ["id", "n"], rows=2)
    assert [r.data for r in preview.records] == [{"id": "s1", "n": 1}, {"id": "s2", "n": 2}]
    assert "text" not in _types(preview)  # only the columns asked for reach the metadata
    assert arrow_preview(data.slice(0, 0), ["id", "n"]).records == []
