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


def iter_raw_rows(engine: Engine, start: datetime, end: datetime) -> Iterator[dict[str, Any]]:
    """Every message of the sessions created in [start, end), plus orphan messages in that window.

    A session with no message yields one row with null message columns (cleaning rejects it as
    empty). Undecodable cells are kept, replaced, and flagged in ``decode_error``; nothing raises.
    """
    lo, hi = _window_bounds(engine, start, end)
    s, m = session_table, message_table
    s_cols = _raw_columns(engine, s, _SESSION_COLS)
    m_cols = _raw_columns(engine, m, _MESSAGE_COLS)
    s_created = cast(s.c.created_at, Text) if engine.dialect.name == "sqlite" else s.c.created_at
    m_created = cast(m.c.created_at, Text) if engine.dialect.name == "sqlite" else m.c.created_at
    sessions_q = (
        select(*s_cols, *[c.label(f"m_{c.name}") for c in m_cols])
        .select_from(s.outerjoin(m, m.c.session_id == s.c.id))
        .where(and_(s_created >= lo, s_created < hi))
        .order_by(s.c.id, m.c.created_at, m.c.id)
    )
    orphans_q = (
        select(*[c.label(f"m_{c.name}") for c in m_cols])
        .where(and_(m_created >= lo, m_created < hi))
        .where(~exists().where(s.c.id == m.c.session_id))
        .order_by(m.c.session_id, m.c.created_at, m.c.id)
    )
    with engine.connect() as conn:
        for row in conn.execution_options(yield_per=20_000).execute(sessions_q).mappings():
            yield _decode_row(row, orphan=False)
        for row in conn.execution_options(yield_per=20_000).execute(orphans_q).mappings():
            yield _decode_row(row, orphan=True)


def _decode_row(row: Any, orphan: bool) -> dict[str, Any]:
    errors: list[str] = []

    def text(key: str, column: str) -> Any:
        d = _text(row.get(key), column)
        if d.error:
            errors.append(d.error)
        return d.value

    def ts(key: str, column: str) -> Any:
        d = _timestamp(row.get(key), column)
        if d.error:
            errors.append(d.error)
        return d.value

    out = {
        "session_id": text("m_session_id", "session_id") if orphan else text("id", "session_id"),
        "customer_id": None if orphan else row.get("customer_id"),
        "customer_name": None if orphan else text("customer_name", "customer_name"),
        "status": None if orphan else text("status", "status"),
        "session_created_at": None if orphan else ts("created_at", "session.created_at"),
        "session_updated_at": None if orphan else ts("updated_at", "session.updated_at"),
        "message_id": row.get("m_id"),
        "role": text("m_role", "role"),
        "content": text("m_content", "content"),
        "order_state": text("m_order_state", "order_state"),
        "message_created_at": ts("m_created_at", "message.created_at"),
        "is_orphan": orphan,
    }
    out["decode_error"] = ";".join(errors) or None
    return out


def read_raw_window(engine: Engine, start: datetime, end: datetime, partition_date: str) -> pa.Table:
    """`iter_raw_rows` as an Arrow table with `RAW_SCHEMA`, tagged with its partition date."""
    rows = list(iter_raw_rows(engine, start, end))
    for r in rows:
        r["partition_date"] = partition_date
    return pa.Table.from_pylist(rows, schema=RAW_SCHEMA)


def count_sessions_since(engine: Engine, after: datetime, statuses: tuple[str, ...] | None = None) -> tuple[int, datetime | None]:
    """How many sessions were created after `after`, and the newest created_at among them.

    One indexed aggregate (`created_at` is indexed): cheap enough for a sensor tick.
    """
    # Strictly after: with microseconds, so a stored "…:59" or "…:59.000000" equal to `after` is
    # excluded whichever of the two formats the writer used.
    lo = after.strftime("%Y-%m-%d %H:%M:%S.%f") if engine.dialect.name == "sqlite" else after
    created = cast(session_table.c.created_at, Text) if engine.dialect.name == "sqlite" else session_table.c.created_at
    q = select(func.count(), func.max(session_table.c.created_at)).where(created > lo)
    if statuses:
        q = q.where(session_table.c.status.in_(statuses))
    with engine.connect() as conn:
        count, newest = conn.execute(q).one()
    if isinstance(newest, str):
        newest = datetime.fromisoformat(newest)
    return int(count), newest
