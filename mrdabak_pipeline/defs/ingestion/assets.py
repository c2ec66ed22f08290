"""Ingestion: one daily partition of the production conversation tables, read by time window."""


from collections import Counter
from datetime import datetime

import dagster as dg
import pyarrow as pa
import pyarrow.compute as pc

from mrdabak_pipeline.core.prepare import stages
from mrdabak_pipeline.defs.metadata import arrow_preview, counts_table
from mrdabak_pipeline.defs.metadata import table as table_of_rows
from mrdabak_pipeline.defs.partitions import DAILY, daily_partitions
from mrdabak_pipeline.defs.resources import RawDatabaseResource


def _naive_local(dt: datetime) -> datetime:
    """Partition bounds are tz-aware (Asia/Seoul); the DB stores naive Seoul wall-clock times."""
    return dt.replace(tzinfo=None)


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


@dg.asset(
    group_name="ingestion",
    kinds={"sqlalchemy", "parquet"},
    **DAILY,
    description=(
        "Every message of the voice-order sessions created on the partition's day (Asia/Seoul), "
        "read from the production DB by a time-window query, plus orphan messages of that day. "
        "Rows that cannot be decoded (bad bytes, bad timestamps) are kept and flagged in "
        "`decode_error`; cleaning decides what to do with them."
    ),
)
def raw_conversation_logs(context: dg.AssetExecutionContext, raw_db: RawDatabaseResource) -> dg.Output[pa.Table]:
    windows = []
    for key in context.partition_keys:  # one run may cover several days (a backfill run)
        window = daily_partitions.time_window_for_partition_key(key)
        windows.append(stages.Window(_naive_local(window.start), _naive_local(window.end), key))
    table = stages.extract(raw_db.get_engine(), windows)
    errors = Counter(e for e in table.column("decode_error").to_pylist() if e)
    per_day = Counter(table.column("partition_date").to_pylist())
    return dg.Output(
        table,
        metadata={
            "dagster/row_count": dg.MetadataValue.int(table.num_rows),
            "session_count": dg.MetadataValue.int(len(pc.unique(table.column("session_id")))),
            "message_count": dg.MetadataValue.int(int(pc.sum(pc.is_valid(table.column("message_id"))).as_py() or 0)),
            "orphan_rows": dg.MetadataValue.int(int(pc.sum(table.column("is_orphan")).as_py() or 0)),
            "flagged_rows": dg.MetadataValue.int(sum(errors.values())),
            "flags": counts_table(errors, "flag"),
            "rows_per_day": table_of_rows([{"day": d, "rows": n} for d, n in sorted(per_day.items())], ["day", "rows"]),
            "db_dialect": raw_db.dialect,
            "preview": arrow_preview(raw_preview_table(table), RAW_PREVIEW_COLUMNS),
        },
    )
