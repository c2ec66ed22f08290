"""Sessions <-> Arrow tables: how conversations are stored as Parquet between assets.

A session is one row; its turns are a list<struct> column, and each order_state is a struct with a
fixed field per order key, so the files open in any Parquet reader (pandas, DuckDB, Spark) with
real columns instead of pickled objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pyarrow as pa

from mrdabak_pipeline.core.domain import ORDER_FIELDS, Session, Turn

ORDER_STATE_TYPE = pa.struct(
    [
        ("dinnerType", pa.string()),
        ("servingStyle", pa.string()),
        ("quantity", pa.int64()),
        ("deliveryDate", pa.string()),
        ("deliveryTime", pa.string()),
        ("deliveryAddress", pa.string()),
        ("readyForConfirmation", pa.bool_()),
        ("needsMoreInfo", pa.list_(pa.string())),
    ]
)
TURN_TYPE = pa.struct(
    [
        ("role", pa.string()),
        ("content", pa.string()),
        ("order_state", ORDER_STATE_TYPE),
        ("created_at", pa.timestamp("us")),
        ("message_id", pa.int64()),
    ]
)
SESSION_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("source_session_id", pa.string()),
        ("variant", pa.int32()),
        ("partition_date", pa.string()),
        ("customer_name", pa.string()),
        ("status", pa.string()),
        ("created_at", pa.timestamp("us")),
        ("tags", pa.list_(pa.string())),
        ("turns", pa.list_(TURN_TYPE)),
    ]
)


def sessions_to_table(sessions: Iterable[Session]) -> pa.Table:
    """Sessions as an Arrow table with `SESSION_SCHEMA` (an empty input gives an empty table)."""
    rows = [
        {
            "session_id": s.session_id,
            "source_session_id": s.source_session_id,
            "variant": s.variant,
            "partition_date": s.partition_date,
            "customer_name": s.customer_name,
            "status": s.status,
            "created_at": s.created_at,
            "tags": list(s.tags),
            "turns": [
                {
                    "role": t.role,
                    "content": t.content,
                    "order_state": t.order_state,
                    "created_at": t.created_at,
                    "message_id": t.message_id,
                }
                for t in s.turns
            ],
        }
        for s in sessions
    ]
    return pa.Table.from_pylist(rows, schema=SESSION_SCHEMA)


def _state(value: dict[str, Any] | None) -> dict[str, Any] | None:
    if value is None:
        return None
    return {k: value[k] for k in ORDER_FIELDS if value.get(k) is not None}


def sessions_from_table(table: pa.Table) -> list[Session]:
    """Inverse of `sessions_to_table`; absent order keys come back absent, not as nulls."""
    out: list[Session] = []
    for row in table.to_pylist():
        turns = [
            Turn(
                role=t["role"],
                content=t["content"],
                order_state=_state(t["order_state"]),
                created_at=t["created_at"],
                message_id=t["message_id"],
            )
            for t in row["turns"] or []
        ]
        out.append(
            Session(
                session_id=row["session_id"],
                turns=turns,
                customer_name=row["customer_name"],
                status=row["status"],
                created_at=row["created_at"],
                source_session_id=row["source_session_id"],
                variant=row["variant"],
                partition_date=row["partition_date"],
                tags=list(row["tags"] or []),
            )
        )
    return out
