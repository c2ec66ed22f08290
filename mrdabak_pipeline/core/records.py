"""Sessions <-> Arrow tables: how conversations are stored as Parquet between assets.

A session is one row; its turns are a list<struct> column, and each order_state is a struct with a
fixed field per order key, so the files open in any Parquet reader (pandas, DuckDB, Spark) with
real columns instead of pickled objects.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mrdabak_pipeline.core.domain import ORDER_FIELDS, Session, Turn
from mrdabak_pipeline.core.runtime.bulk import paused_gc

#: The order keys that are not text; the struct has every `ORDER_FIELDS` key, in its order, since
#: reading a state back (`_state_dict`) looks each of them up.
_NON_TEXT_ORDER_FIELDS = {
    "quantity": pa.int64(), "readyForConfirmation": pa.bool_(), "needsMoreInfo": pa.list_(pa.string())
}
ORDER_STATE_TYPE = pa.struct([(k, _NON_TEXT_ORDER_FIELDS.get(k, pa.string())) for k in ORDER_FIELDS])
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
    """Sessions as an Arrow table with `SESSION_SCHEMA` (an empty input gives an empty table).

    Built column by column (turns flattened into one struct array plus list offsets) rather
    than from nested per-turn dicts: a million turns convert in about a second.
    """
    with paused_gc():
        sessions = sessions if isinstance(sessions, list) else list(sessions)
        turns = [t for s in sessions for t in s.turns]
        offsets = [0]
        total = 0
        for s in sessions:
            total += len(s.turns)
            offsets.append(total)
        turn_values = pa.StructArray.from_arrays(
            [
                pa.array([t.role for t in turns], pa.string()),
                pa.array([t.content for t in turns], pa.string()),
                _state_array([t.order_state for t in turns]),
                pa.array([t.created_at for t in turns], _TIMESTAMP),
                pa.array([t.message_id for t in turns], pa.int64()),
            ],
            fields=list(TURN_TYPE),
        )
        del turns
        columns = [
            pa.array([s.session_id for s in sessions], pa.string()),
            pa.array([s.source_session_id for s in sessions], pa.string()),
            pa.array([s.variant for s in sessions], pa.int32()),
            pa.array([s.partition_date for s in sessions], pa.string()),
            pa.array([s.customer_name for s in sessions], pa.string()),
            pa.array([s.status for s in sessions], pa.string()),
            pa.array([s.created_at for s in sessions], _TIMESTAMP),
            pa.array([list(s.tags) for s in sessions], pa.list_(pa.string())),
            pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), turn_values, type=pa.list_(TURN_TYPE)),
        ]
    return pa.Table.from_arrays(columns, schema=SESSION_SCHEMA)


_TIMESTAMP = pa.timestamp("us")


def _state_array(states: list[dict[str, Any] | None]) -> pa.Array:
    """Order states as a struct array, each distinct dict object converted once (turns share
    state dicts: `clean_partition` and `sessions_from_table` hand out one per distinct state)."""
    index: dict[int, int] = {}
    distinct: list[dict[str, Any]] = []
    rows: list[int | None] = []
    append = rows.append
    for state in states:
        if state is None:
            append(None)
            continue
        i = index.get(id(state))
        if i is None:
            i = index[id(state)] = len(distinct)
            distinct.append(state)
        append(i)
    return pa.array(distinct, ORDER_STATE_TYPE).take(pa.array(rows, pa.int64()))


def datetimes_of(column: pa.Array | pa.ChunkedArray) -> list[Any]:
    """Naive datetimes (None for nulls), ~10x faster than ``to_pylist`` on a timestamp column."""
    if len(column) == 0:
        return []
    return column.to_numpy(zero_copy_only=False).astype("datetime64[us]").astype(object).tolist()


def _token(values: pa.Array) -> pa.Array:
    """A self-delimiting text per value: its byte length, ':', the value; null -> '~'."""
    text = values if pa.types.is_string(values.type) else values.cast(pa.string())
    return pc.fill_null(pc.binary_join_element_wise(pc.binary_length(text).cast(pa.string()), text, ":"), "~")


def _codes(values: pa.Array) -> tuple[np.ndarray, int]:
    """(per-row code, number of codes): equal values get equal codes, null gets 0."""
    if pa.types.is_list(values.type):  # as text: element count, then self-delimiting elements
        elements = pa.ListArray.from_arrays(values.offsets, _token(values.values))
        count = pc.list_value_length(values).cast(pa.string())
        values = pc.binary_join_element_wise(count, pc.binary_join(elements, ""), ":")
    enc = values.dictionary_encode()
    codes = pc.fill_null(enc.indices, -1).to_numpy(zero_copy_only=False).astype(np.int64) + 1
    return codes, len(enc.dictionary) + 1


def state_groups(column: pa.StructArray) -> tuple[np.ndarray, np.ndarray]:
    """(one row per distinct order state, per-row index into those): equal states share an index.

    Each field is dictionary-encoded on its own and the codes are combined into one integer per
    row (re-numbered before the product could overflow): no per-row Python work, no key strings.
    """
    key = np.zeros(len(column), dtype=np.int64)
    card = 1
    parts = [(pc.cast(column.is_valid(), pa.int8()).to_numpy(zero_copy_only=False).astype(np.int64), 2)]
    parts += [_codes(column.field(f.name)) for f in column.type]
    for codes, size in parts:
        if card * size >= 2**62:
            _, key = np.unique(key, return_inverse=True)
            card = int(key.max()) + 1
        key = key * size + codes
        card *= size
    keys = pa.array(key)
    enc = keys.dictionary_encode()
    first = pc.index_in(enc.dictionary, value_set=keys).to_numpy(zero_copy_only=False)
    return first, enc.indices.to_numpy(zero_copy_only=False)


def _state_dict(row: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if row is None else {k: row[k] for k in ORDER_FIELDS if row[k] is not None}


def _states(column: pa.StructArray) -> list[dict[str, Any] | None]:
    """Order-state structs as dicts holding only the keys that are set, in `ORDER_FIELDS` order.

    Most states repeat (every greeting carries the same one), so each distinct state is
    converted once and equal states come back as one shared dict, as `clean_partition` hands
    them out: order states are values, treat them as read-only (every stage copies before it
    changes one).
    """
    if not len(column):
        return []
    first, group = state_groups(column)
    distinct = [_state_dict(row) for row in column.take(pa.array(first, pa.int64())).to_pylist()]
    return [distinct[g] for g in group.tolist()]


def sessions_from_table(table: pa.Table) -> list[Session]:
    """Inverse of `sessions_to_table`; absent order keys come back absent, not as nulls.

    Column-wise, one record batch at a time (no copy of a multi-chunk Parquet read): each turn
    field is converted once per batch, and equal message texts come back as one shared
    (immutable) string, which keeps millions of turns small in memory.
    """
    out: list[Session] = []
    with paused_gc():
        for batch in table.to_batches():
            out.extend(_sessions_from_batch(batch))
    return out


def _sessions_from_batch(batch: pa.RecordBatch) -> list[Session]:
    n = batch.num_rows
    if not n:
        return []
    turns_col = batch.column("turns")
    first = turns_col.offsets[0].as_py()
    offsets = pc.subtract(turns_col.offsets, first).to_pylist()
    values = turns_col.values.slice(first, offsets[-1])
    enc = values.field("content").dictionary_encode()
    texts = enc.dictionary.to_pylist()
    contents = [texts[c] if c is not None else None for c in enc.indices.to_pylist()]
    del enc, texts
    turns = [
        Turn(*fields)
        for fields in zip(
            values.field("role").to_pylist(),
            contents,
            _states(values.field("order_state")),
            datetimes_of(values.field("created_at")),
            values.field("message_id").to_pylist(),
            strict=True,
        )
    ]
    del contents
    null_turns = set(pc.indices_nonzero(pc.is_null(turns_col)).to_pylist()) if turns_col.null_count else set()
    out: list[Session] = []
    for i, (sid, src, variant, part, name, status, created_at, tags) in enumerate(
        zip(
            batch.column("session_id").to_pylist(),
            batch.column("source_session_id").to_pylist(),
            batch.column("variant").to_pylist(),
            batch.column("partition_date").to_pylist(),
            batch.column("customer_name").to_pylist(),
            batch.column("status").to_pylist(),
            datetimes_of(batch.column("created_at")),
            batch.column("tags").to_pylist(),
            strict=True,
        )
    ):
        turns_i = [] if i in null_turns else turns[offsets[i] : offsets[i + 1]]
        out.append(Session(session_id=sid, turns=turns_i, customer_name=name, status=status, created_at=created_at,
                           source_session_id=src, variant=variant, partition_date=part, tags=list(tags or [])))
    return out
