"""The production app's conversation tables, read and written through SQLAlchemy.

The table and column names are the production app's contract: do not rename them. Everything
here works on SQLite (the embedded default) and PostgreSQL (`MRDABAK_DB_URL`).

Timestamps are naive wall-clock times in Asia/Seoul, as the app writes them; a daily partition is
the half-open window [day 00:00, next day 00:00) in that clock.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sqlalchemy import (
    BigInteger,
    Column,
    DateTime,
    Engine,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    and_,
    cast,
    create_engine,
    exists,
    func,
    select,
    type_coerce,
)
from sqlalchemy.sql.elements import ColumnElement

DEFAULT_DB_PATH = Path("data") / "mrdabak.db"
DB_URL_ENV = "MRDABAK_DB_URL"

metadata = MetaData()

session_table = Table(
    "voice_conversation_session",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("customer_id", BigInteger),
    Column("customer_name", String(100)),
    Column("status", String(32), nullable=False),
    Column("created_at", DateTime, nullable=False),
    Column("updated_at", DateTime, nullable=False),
    Index("ix_voice_conversation_session_created_at", "created_at"),
)

message_table = Table(
    "voice_conversation_message",
    metadata,
    # BIGINT on PostgreSQL; SQLite only auto-increments an INTEGER PRIMARY KEY.
    Column("id", BigInteger().with_variant(Integer(), "sqlite"), primary_key=True, autoincrement=True),
    Column("session_id", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("content", Text),
    Column("order_state", Text),
    Column("created_at", DateTime, nullable=False),
    Index("ix_voice_conversation_message_created_at", "created_at"),
    Index("ix_voice_conversation_message_session_id", "session_id"),
)

#: The raw partition's columns: one row per message (or per message-less session).
RAW_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("customer_id", pa.int64()),
        ("customer_name", pa.string()),
        ("status", pa.string()),
        ("session_created_at", pa.timestamp("us")),
        ("session_updated_at", pa.timestamp("us")),
        ("message_id", pa.int64()),
        ("role", pa.string()),
        ("content", pa.string()),
        ("order_state", pa.string()),
        ("message_created_at", pa.timestamp("us")),
        ("is_orphan", pa.bool_()),
        ("decode_error", pa.string()),
        ("partition_date", pa.string()),
    ]
)


def default_db_url() -> str:
    """`MRDABAK_DB_URL`, else a SQLite file under ``data/`` (created on first use)."""
    url = os.environ.get(DB_URL_ENV)
    if url:
        return url
    DEFAULT_DB_PATH.parent.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{DEFAULT_DB_PATH}"


def make_engine(url: str | None = None) -> Engine:
    """An engine for `url` (default: `default_db_url`). SQLite files get their folder created."""
    url = url or default_db_url()
    if url.startswith("sqlite:///") and not url.startswith("sqlite:///:memory:"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    return create_engine(url, future=True)


def create_schema(engine: Engine) -> None:
    """Create both tables and their indexes if missing (idempotent)."""
    metadata.create_all(engine)


def drop_schema(engine: Engine) -> None:
    metadata.drop_all(engine)


# --- Extraction ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Decoded:
    value: Any
    error: str | None


def _text(value: Any, column: str) -> _Decoded:
    """Decode a text cell that may arrive as bytes (SQLite) and may not be UTF-8."""
    if value is None or isinstance(value, str):
        return _Decoded(value, None)
    if isinstance(value, (bytes, bytearray, memoryview)):
        raw = bytes(value)
        try:
            return _Decoded(raw.decode("utf-8"), None)
        except UnicodeDecodeError:
            return _Decoded(raw.decode("utf-8", errors="replace"), f"undecodable_bytes:{column}")
    return _Decoded(str(value), None)


def _timestamp(value: Any, column: str) -> _Decoded:
    """Parse a timestamp cell that may arrive as text (SQLite) and may be garbage."""
    if value is None or isinstance(value, datetime):
        return _Decoded(value, None)
    text = value.decode("utf-8", errors="replace") if isinstance(value, (bytes, bytearray)) else str(value)
    try:
        return _Decoded(datetime.fromisoformat(text.strip()), None)
    except ValueError:
        return _Decoded(None, f"bad_timestamp:{column}")


def _raw_columns(engine: Engine, table: Table, names: list[str]) -> list[ColumnElement[Any]]:
    """Select text as bytes and timestamps as text on SQLite, so one bad cell cannot raise.

    SQLite stores whatever the writer gave it; the sqlite3 driver raises on invalid UTF-8 and
    SQLAlchemy raises on an unparsable DATETIME string. PostgreSQL enforces both at write time,
    so there the columns are read as they are.
    """
    cols = []
    for name in names:
        col = table.c[name]
        if engine.dialect.name == "sqlite" and isinstance(col.type, (String, Text)):
            cols.append(cast(col, LargeBinary).label(name))
        elif engine.dialect.name == "sqlite" and isinstance(col.type, DateTime):
            cols.append(cast(col, Text).label(name))
        else:
            cols.append(col.label(name))
    return cols


_SESSION_COLS = ["id", "customer_id", "customer_name", "status", "created_at", "updated_at"]
_MESSAGE_COLS = ["id", "session_id", "role", "content", "order_state", "created_at"]


def _window_bounds(engine: Engine, start: datetime, end: datetime) -> tuple[Any, Any]:
    # SQLite compares the stored text. Day bounds without microseconds sort at or before both
    # "YYYY-MM-DD HH:MM:SS" and SQLAlchemy's "YYYY-MM-DD HH:MM:SS.ffffff" of the same instant,
    # which is what a half-open [start, end) window needs.
    if engine.dialect.name == "sqlite":
        return start.strftime("%Y-%m-%d %H:%M:%S"), end.strftime("%Y-%m-%d %H:%M:%S")
    return start, end


def _window_column(engine: Engine, col: Any) -> Any:
    """The created_at column as the window predicate compares it.

    On SQLite the bound is text and the column is compared as stored text, but without a CAST in
    the SQL: ``type_coerce`` only tells SQLAlchemy not to treat the bound as a DATETIME, so the
    predicate stays sargable and SQLite range-scans the created_at index. With
    ``CAST(created_at AS TEXT)`` every daily window scanned the whole table (a 90-day backfill
    read the message table 90 times). For text cells, the only kind the app writes, the result is
    the same: numbers never fall inside a "YYYY-MM-DD HH:MM:SS" window either way.
    """
    return type_coerce(col, Text) if engine.dialect.name == "sqlite" else col


#: Rows fetched and decoded per batch: bounds the Python objects alive at once (peak RSS).
_BATCH_ROWS = 50_000
#: The columns of `iter_raw_rows` rows: `RAW_SCHEMA` without the partition tag.
_ROW_SCHEMA = pa.schema([f for f in RAW_SCHEMA if f.name != "partition_date"])
_TS = RAW_SCHEMA.field("message_created_at").type
#: Timestamp text that Arrow's cast parses exactly as `datetime.fromisoformat` does; any other
#: text (padding, other ISO forms, garbage) goes through `_timestamp` cell by cell.
_STRICT_TIMESTAMP = r"^[12]\d{3}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01]) ([01]\d|2[0-3]):[0-5]\d:[0-5]\d(\.\d{6})?$"


def _raw_queries(engine: Engine, start: datetime, end: datetime) -> tuple[Any, Any, Any]:
    """The window's sessions (ordered by id), their messages (unordered), and orphan messages.

    Sessions and messages are read apart and joined in Arrow: the per-session columns are
    fetched once per session instead of once per message, and SQLite does not sort a million
    wide rows (the within-session order is restored in `_window_rows`).
    """
    lo, hi = _window_bounds(engine, start, end)
    s, m = session_table, message_table
    s_created = _window_column(engine, s.c.created_at)
    m_created = _window_column(engine, m.c.created_at)
    in_window = and_(s_created >= lo, s_created < hi)
    m_cols = _raw_columns(engine, m, _MESSAGE_COLS)
    sessions_q = select(*_raw_columns(engine, s, _SESSION_COLS)).where(in_window).order_by(s.c.id)
    messages_q = (
        select(_raw_columns(engine, s, ["id"])[0].label("s_id"), *[c.label(f"m_{c.name}") for c in m_cols])
        .select_from(s.join(m, m.c.session_id == s.c.id))
        .where(in_window)
    )
    orphans_q = (
        select(*[c.label(f"m_{c.name}") for c in m_cols])
        .where(and_(m_created >= lo, m_created < hi))
        .where(~exists().where(s.c.id == m.c.session_id))
        .order_by(m.c.session_id, m.c.created_at, m.c.id)
    )
    return sessions_q, messages_q, orphans_q


def _fetch(conn: Any, query: Any) -> Iterator[tuple[dict[str, tuple[Any, ...]], int]]:
    """The result in column-major batches of `_BATCH_ROWS` rows: (column name -> cells, rows).

    Straight from the DBAPI cursor: SQLAlchemy's Row objects cost a fifth of the extraction
    time and add nothing here (no result processors apply to the BLOB/TEXT casts and ints).
    """
    compiled = query.compile(dialect=conn.dialect)
    params = compiled.construct_params()
    bind = tuple(params[k] for k in compiled.positiontup) if compiled.positional else params
    cursor = conn.connection.cursor()
    try:
        cursor.execute(str(compiled), bind)
        keys = [d[0] for d in cursor.description]
        while rows := cursor.fetchmany(_BATCH_ROWS):
            yield dict(zip(keys, zip(*rows, strict=True), strict=True)), len(rows)
    finally:
        cursor.close()


def iter_raw_batches(engine: Engine, start: datetime, end: datetime) -> Iterator[pa.RecordBatch]:
    """`iter_raw_rows` as Arrow record batches (`RAW_SCHEMA` without ``partition_date``).

    Columns are decoded a batch at a time (Arrow validates UTF-8 and parses timestamps); only
    the cells Arrow rejects go through `_text` / `_timestamp`, so the flags are the same as
    row-by-row decoding at a fraction of the cost.
    """
    sessions_q, messages_q, orphans_q = _raw_queries(engine, start, end)
    with engine.connect() as conn:
        batch = _window_rows(conn, sessions_q, messages_q)
        if batch.num_rows:
            yield batch
        for cols, n in _fetch(conn, orphans_q):
            yield _orphan_batch(cols, n)


def iter_raw_rows(engine: Engine, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
    """Every message of the sessions created in [start, end), plus orphan messages in that window.

    Rows come ordered by session id, then message created_at and id; orphans last. A session with
    no message yields one row with null message columns (cleaning rejects it as empty).
    Undecodable cells are kept, replaced, and flagged in ``decode_error``; nothing raises.
    """
    for batch in iter_raw_batches(engine, start, end):
        yield from batch.to_pylist()


def _decode_text(values: tuple[Any, ...], column: str, errors: dict[int, list[str]], offset: int = 0) -> pa.Array:
    """str (PostgreSQL) or bytes (SQLite) cells as a string array; Arrow validates the UTF-8.

    A bad cell makes Arrow reject the whole slice, so the slice is halved until the bad cells
    are isolated and decoded by `_text` (replaced and flagged): a handful of damaged rows cost a
    few extra conversions, not a Python loop over the batch.
    """
    try:  # binary then cast: Arrow validates the UTF-8 once, faster than per-cell str conversion
        return pa.array(values, pa.binary()).cast(pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    if len(values) <= 16:
        out = []
        for i, value in enumerate(values):
            d = _text(value, column)
            if d.error:
                errors.setdefault(offset + i, []).append(d.error)
            out.append(d.value)
        return pa.array(out, pa.string())
    half = len(values) // 2
    return pa.concat_arrays(
        [
            _decode_text(values[:half], column, errors, offset),
            _decode_text(values[half:], column, errors, offset + half),
        ]
    )


def _decode_timestamps(values: tuple[Any, ...], column: str, errors: dict[int, list[str]], offset: int = 0) -> tuple[pa.Array, pa.Array]:
    """(timestamps, sort key): the key is the stored text on SQLite (what ORDER BY compares)."""
    try:
        text = pa.array(values, pa.string())  # SQLite: the stored text
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        text = None
    if text is None:
        if all(v is None or isinstance(v, datetime) for v in values):  # PostgreSQL: datetimes
            out = pa.array(values, _TS)
            return out, out
        loose: list[int] = list(range(len(values)))
        out, key = pa.nulls(len(values), _TS), pa.nulls(len(values), _TS)
    else:
        key = text
        strict = pc.fill_null(pc.match_substring_regex(text, _STRICT_TIMESTAMP), False)
        try:
            out = pc.if_else(strict, text, pa.scalar(None, pa.string())).cast(_TS)
        except pa.ArrowInvalid:  # has the shape but is no calendar date (2026-02-30)
            strict = pa.array([False] * len(values))
            out = pa.nulls(len(values), _TS)
        loose = pc.indices_nonzero(pc.and_(pc.invert(strict), pc.is_valid(text))).to_pylist()
    if not loose:
        return out, key
    parsed = []
    for i in loose:
        d = _timestamp(values[i], column)
        if d.error:
            errors.setdefault(offset + i, []).append(d.error)
        parsed.append(d.value)
    mask = [False] * len(values)
    for i in loose:
        mask[i] = True
    return pc.replace_with_mask(out, pa.array(mask), pa.array(parsed, _TS)), key


_MESSAGE_FIELDS = (("m_role", "role"), ("m_content", "content"), ("m_order_state", "order_state"))


def _window_rows(conn: Any, sessions_q: Any, messages_q: Any) -> pa.RecordBatch:
    """Every message of the window's sessions joined to its session, one row per message.

    Rows are ordered as ``ORDER BY session.id, message.created_at, message.id`` would order them
    (sessions in the database's id order, then the stored created_at, nulls first); a session
    without messages keeps one row with null message columns. ``decode_error`` lists the session
    cells' flags before the message cells', as row-by-row decoding did.
    """
    s_errors: dict[int, list[str]] = {}
    s_lists: dict[str, list[Any]] = {k: [] for k in _SESSION_COLS}
    for cols, _n in _fetch(conn, sessions_q):  # one row per session: small next to the messages
        for k in _SESSION_COLS:
            s_lists[k].extend(cols[k])
    s_cols = {k: tuple(v) for k, v in s_lists.items()}
    s_key = pa.array(s_cols["id"])
    session_arrays = [
        _decode_text(s_cols["id"], "session_id", s_errors),
        pa.array(s_cols["customer_id"], pa.int64()),
        _decode_text(s_cols["customer_name"], "customer_name", s_errors),
        _decode_text(s_cols["status"], "status", s_errors),
        _decode_timestamps(s_cols["created_at"], "session.created_at", s_errors)[0],
        _decode_timestamps(s_cols["updated_at"], "session.updated_at", s_errors)[0],
    ]
    m_errors: dict[int, list[str]] = {}
    parts: dict[str, list[pa.Array]] = {k: [] for k in ("key", "id", "role", "content", "order_state", "ts", "ts_key")}
    offset = 0
    for cols, n in _fetch(conn, messages_q):
        parts["key"].append(pa.array(cols["s_id"], s_key.type))
        parts["id"].append(pa.array(cols["m_id"], pa.int64()))
        for name, column in _MESSAGE_FIELDS:
            parts[column].append(_decode_text(cols[name], column, m_errors, offset))
        ts, ts_key = _decode_timestamps(cols["m_created_at"], "message.created_at", m_errors, offset)
        parts["ts"].append(ts)
        parts["ts_key"].append(ts_key)
        offset += n
    m_key = pa.chunked_array(parts["key"], s_key.type)
    empty = pc.indices_nonzero(pc.invert(pc.is_in(s_key, value_set=m_key.combine_chunks()))).cast(pa.int32())
    n_empty = len(empty)

    def with_empty(name: str, type_: pa.DataType) -> pa.Array:
        chunks = parts[name] or [pa.array([], type_)]
        key_type = chunks[0].type
        return pa.concat_arrays([*chunks, pa.nulls(n_empty, key_type)])

    position = pa.concat_arrays([pc.index_in(m_key, value_set=s_key).combine_chunks().cast(pa.int32()), empty])
    ts_key = with_empty("ts_key", pa.string())
    message_id = with_empty("id", pa.int64())
    order = pc.sort_indices(
        pa.table({"p": position, "t": ts_key, "m": message_id}),
        sort_keys=[("p", "ascending", "at_start"), ("t", "ascending", "at_start"), ("m", "ascending", "at_start")],
    )
    rows_session = position.take(order)
    n = len(order)
    arrays = [a.take(rows_session) for a in session_arrays]
    arrays.append(message_id.take(order))
    arrays += [with_empty(c, pa.string()).take(order) for c in ("role", "content", "order_state")]
    arrays.append(with_empty("ts", _TS).take(order))
    arrays.append(pa.array([False] * n, pa.bool_()))
    decode_error: list[str | None] = [None] * n
    flagged: set[int] = set()
    if s_errors:
        flagged.update(pc.indices_nonzero(pc.is_in(rows_session, value_set=pa.array(list(s_errors), pa.int32()))).to_pylist())
    if m_errors:
        flagged.update(pc.index_in(pa.array(list(m_errors), order.type), value_set=order).to_pylist())
    for out_row in flagged:
        errs = s_errors.get(rows_session[out_row].as_py(), []) + m_errors.get(order[out_row].as_py(), [])
        decode_error[out_row] = ";".join(errs)
    arrays.append(pa.array(decode_error, pa.string()))
    return pa.RecordBatch.from_arrays(arrays, schema=_ROW_SCHEMA)


def _orphan_batch(cols: dict[str, tuple[Any, ...]], n: int) -> pa.RecordBatch:
    """Orphan messages (their session row does not exist): null session columns."""
    errors: dict[int, list[str]] = {}
    string = pa.string()
    arrays = [
        _decode_text(cols["m_session_id"], "session_id", errors),
        pa.nulls(n, pa.int64()),
        pa.nulls(n, string),
        pa.nulls(n, string),
        pa.nulls(n, _TS),
        pa.nulls(n, _TS),
        pa.array(cols["m_id"], pa.int64()),
        *[_decode_text(cols[name], column, errors) for name, column in _MESSAGE_FIELDS],
        _decode_timestamps(cols["m_created_at"], "message.created_at", errors)[0],
        pa.array([True] * n, pa.bool_()),
    ]
    decode_error: list[str | None] = [None] * n
    for i, errs in errors.items():
        decode_error[i] = ";".join(errs)
    arrays.append(pa.array(decode_error, string))
    return pa.RecordBatch.from_arrays(arrays, schema=_ROW_SCHEMA)


def read_raw_window(engine: Engine, start: datetime, end: datetime, partition_date: str) -> pa.Table:
    """`iter_raw_rows` as an Arrow table with `RAW_SCHEMA`, tagged with its partition date."""
    table = pa.Table.from_batches(list(iter_raw_batches(engine, start, end)), schema=_ROW_SCHEMA)
    table = table.append_column("partition_date", pa.array([partition_date] * table.num_rows, pa.string()))
    return table.combine_chunks()


def count_sessions_since(engine: Engine, after: datetime, statuses: tuple[str, ...] | None = None) -> tuple[int, datetime | None]:
    """How many sessions were created after `after`, and the newest created_at among them.

    One indexed aggregate (`created_at` is indexed): cheap enough for a sensor tick.
    """
    # Strictly after: with microseconds, so a stored "…:59" or "…:59.000000" equal to `after` is
    # excluded whichever of the two formats the writer used.
    lo = after.strftime("%Y-%m-%d %H:%M:%S.%f") if engine.dialect.name == "sqlite" else after
    # the same sargable comparison as the daily windows: no CAST, so the created_at index is used
    created = _window_column(engine, session_table.c.created_at)
    q = select(func.count(), func.max(session_table.c.created_at)).where(created > lo)
    if statuses:
        q = q.where(session_table.c.status.in_(statuses))
    with engine.connect() as conn:
        count, newest = conn.execute(q).one()
    if isinstance(newest, str):
        newest = datetime.fromisoformat(newest)
    return int(count), newest


def session_span_since(engine: Engine, after: datetime, statuses: tuple[str, ...] | None = None) -> tuple[int, datetime | None, datetime | None]:
    """`count_sessions_since` plus the oldest created_at: which days hold the new sessions.

    The retrain sensor refreshes exactly those daily partitions before training. Same sargable
    comparison, one aggregate (MIN and MAX of the indexed column).
    """
    lo = after.strftime("%Y-%m-%d %H:%M:%S.%f") if engine.dialect.name == "sqlite" else after
    created = _window_column(engine, session_table.c.created_at)
    q = select(func.count(), func.min(session_table.c.created_at), func.max(session_table.c.created_at)).where(created > lo)
    if statuses:
        q = q.where(session_table.c.status.in_(statuses))
    with engine.connect() as conn:
        count, oldest, newest = conn.execute(q).one()
    oldest, newest = (datetime.fromisoformat(v) if isinstance(v, str) else v for v in (oldest, newest))
    return int(count), oldest, newest
