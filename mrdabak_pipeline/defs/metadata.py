"""Tables for Dagster metadata: `dg.MetadataValue.table` with a typed `dg.TableSchema`.

Why tables and not Markdown: the UI sorts and renders them, the event log keeps the cells typed
(numbers stay numbers), and no asset hand-rolls ``|---|`` strings with its own escaping rules.
Every builder here takes rows the caller has already reduced to what may be shown: metadata lands
in the event log and the UI, so customer text must never be passed in (see the preview columns of
`defs.ingestion` and `defs.preparation`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import dagster as dg
import pyarrow as pa

Cell = str | int | float | bool | None


def _column_type(values: Iterable[Any]) -> str:
    """The TableColumn type of a column: the narrowest of bool, int, float that fits every value."""
    present = [v for v in values if v is not None]
    if present and all(isinstance(v, bool) for v in present):
        return "bool"
    if present and all(isinstance(v, int) and not isinstance(v, bool) for v in present):
        return "int"
    if present and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present):
        return "float"
    return "string"


def _cell(value: Any) -> Cell:
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> dg.TableMetadataValue:
    """`rows` as a typed table with exactly `columns` (missing cells are None, others dropped)."""
    records = [{c: _cell(r.get(c)) for c in columns} for r in rows]
    schema = dg.TableSchema(columns=[dg.TableColumn(c, _column_type(r[c] for r in records)) for c in columns])
    return dg.MetadataValue.table([dg.TableRecord(r) for r in records], schema=schema)


def counts_table(counts: Mapping[str, int], key: str) -> dg.TableMetadataValue:
    """``key | count``, most frequent first (ties by name), so the top reasons read first."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return table([{key: k, "count": int(v)} for k, v in ordered], [key, "count"])


def list_table(items: Iterable[str], column: str) -> dg.TableMetadataValue:
    """A one-column table of messages (warnings, problems); empty means none."""
    return table([{column: i} for i in items], [column])


def arrow_preview(data: pa.Table, columns: Sequence[str], rows: int = 8) -> dg.TableMetadataValue:
    """The first `rows` rows of `columns` of an Arrow table (callers choose text-free columns)."""
    return table(data.select(list(columns)).slice(0, rows).to_pylist(), columns)
