"""Ingestion: one daily partition of the production conversation tables, read by time window."""


from collections import Counter
from datetime import datetime

import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetExecutionContext, BackfillPolicy, MetadataValue, Output, asset

from mrdabak_pipeline.core.prepare import stages
from mrdabak_pipeline.defs.partitions import daily_partitions
from mrdabak_pipeline.defs.resources import RawDatabaseResource


def _naive_local(dt: datetime) -> datetime:
    """Partition bounds are tz-aware (Asia/Seoul); the DB stores naive Seoul wall-clock times."""
    return dt.replace(tzinfo=None)


def preview_markdown(table: pa.Table, columns: list[str], rows: int = 8, width: int = 60) -> str:
    """A small Markdown preview of a table for the asset's metadata (long cells are cut)."""
    head = table.select(columns).slice(0, rows).to_pylist()
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in head:
        cells = [str(r[c] if r[c] is not None else "").replace("|", "\\|").replace("\n", " ")[:width] for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


#: What the raw preview shows: ids, roles, sizes and flags. The rows are not pseudonymized yet, so
#: no text (message content, order_state with its deliveryAddress, customer name) may reach the
#: event log or the UI: metadata carries counts and shapes, never customer values.
RAW_PREVIEW_COLUMNS = ["session_id", "message_id", "role", "content_chars", "has_order_state", "is_orphan", "decode_error"]


def raw_preview_table(table: pa.Table) -> pa.Table:
    """The raw table reduced to `RAW_PREVIEW_COLUMNS`: lengths and flags in place of the texts."""
    return pa.table(
        {
            "session_id": table.column("session_id"),
            "message_id": table.column("message_id"),
            "role": table.column("role"),
            "content_chars": pc.utf8_length(table.column("content")),
            "has_order_state": pc.is_valid(table.column("order_state")),
            "is_orphan": table.column("is_orphan"),
            "decode_error": table.column("decode_error"),
        }
    )


@asset(
    group_name="ingestion",
    kinds={"sqlalchemy", "parquet"},
    partitions_def=daily_partitions,
    backfill_policy=BackfillPolicy.single_run(),
    description=(
        "Every message of the voice-order sessions created on the partition's day (Asia/Seoul), "
        "read from the production DB by a time-window query, plus orphan messages of that day. "
        "Rows that cannot be decoded (bad bytes, bad timestamps) are kept and flagged in "
        "`decode_error`; cleaning decides what to do with them."
    ),
)
def raw_conversation_logs(context: AssetExecutionContext, raw_db: RawDatabaseResource) -> Output[pa.Table]:
    windows = []
    for key in context.partition_keys:  # one run may cover a whole range (single-run backfill)
        window = daily_partitions.time_window_for_partition_key(key)
        windows.append((_naive_local(window.start), _naive_local(window.end), key))
    table = stages.extract(raw_db.get_engine(), windows)  # a long range is read on every core
    errors = Counter(e for e in table.column("decode_error").to_pylist() if e)
    per_day = Counter(table.column("partition_date").to_pylist())
    return Output(
        table,
        metadata={
            "dagster/row_count": table.num_rows,
            "session_count": len(pc.unique(table.column("session_id"))),
            "message_count": int(pc.sum(pc.is_valid(table.column("message_id"))).as_py() or 0),
            "orphan_rows": int(pc.sum(table.column("is_orphan")).as_py() or 0),
            "flagged_rows": sum(errors.values()),
            "flags": MetadataValue.json(dict(errors)),
            "rows_per_day": MetadataValue.json(dict(sorted(per_day.items()))),
            "db_dialect": raw_db.dialect,
            "preview": MetadataValue.md(preview_markdown(raw_preview_table(table), RAW_PREVIEW_COLUMNS)),
        },
    )
