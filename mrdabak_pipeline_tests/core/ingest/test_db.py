"""The raw DB contract: schema, time-window extraction, flagging of undecodable rows."""

from __future__ import annotations

from datetime import date, datetime

import pytest
from sqlalchemy import insert, inspect, text

from mrdabak_pipeline.core.ingest.db import (
    count_sessions_since,
    create_schema,
    make_engine,
    message_table,
    read_raw_window,
    session_table,
)
from mrdabak_pipeline.core.ingest.seed import generate, seed_database

EXPECTED_COLUMNS = {
    "voice_conversation_session": {"id", "customer_id", "customer_name", "status", "created_at", "updated_at"},
    "voice_conversation_message": {"id", "session_id", "role", "content", "order_state", "created_at"},
}


def _check_schema(engine) -> None:
    create_schema(engine)
    create_schema(engine)  # idempotent
    insp = inspect(engine)
    for table, cols in EXPECTED_COLUMNS.items():
        assert {c["name"] for c in insp.get_columns(table)} == cols
    indexed = {tuple(ix["column_names"]) for ix in insp.get_indexes("voice_conversation_message")}
    assert ("created_at",) in indexed and ("session_id",) in indexed
    assert ("created_at",) in {tuple(ix["column_names"]) for ix in insp.get_indexes("voice_conversation_session")}


def test_schema_on_sqlite(tmp_path):
    _check_schema(make_engine(f"sqlite:///{tmp_path / 'x.db'}"))


@pytest.mark.postgres
def test_schema_and_extraction_on_postgres(pg_url):
    engine = make_engine(pg_url)
    _check_schema(engine)
    seed_database(engine, sessions=120, days=3, seed=5, end_date=date(2026, 11, 20), damage_rate=0.3)
    _assert_window_exact(engine, seed=5, sessions=120, days=3, damage_rate=0.3, sqlite=False)
    # message ids auto-increment as BIGINT on PostgreSQL
    assert inspect(engine).get_columns("voice_conversation_message")[0]["type"].python_type is int


def _assert_window_exact(engine, seed, sessions, days, damage_rate, sqlite=True):
    sess_rows, msg_rows, _ = generate(sessions, days, seed, date(2026, 11, 20), damage_rate, sqlite)
    by_day: dict[str, set[str]] = {}
    for s in sess_rows:
        by_day.setdefault(s["created_at"].date().isoformat(), set()).add(s["id"])
    known = {s["id"] for s in sess_rows}
    for day in ("2026-11-18", "2026-11-19", "2026-11-20"):
        start = datetime.fromisoformat(day)
        table = read_raw_window(engine, start, start.replace(day=start.day + 1), day)
        got = set(table.column("session_id").to_pylist())
        orphans = {r["session_id"] for r in table.to_pylist() if r["is_orphan"]}
        assert got - orphans == by_day.get(day, set()), day
        assert orphans.isdisjoint(known)
        expected_msgs = sum(1 for m in msg_rows if m["session_id"] in by_day.get(day, set()))
        assert sum(1 for r in table.to_pylist() if r["message_id"] is not None and not r["is_orphan"]) == expected_msgs
        assert set(table.column("partition_date").to_pylist()) <= {day}


def test_partition_extraction_returns_exactly_that_days_sessions(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    seed_database(engine, sessions=150, days=3, seed=9, end_date=date(2026, 11, 20), damage_rate=0.3)
    _assert_window_exact(engine, seed=9, sessions=150, days=3, damage_rate=0.3)


def test_bad_bytes_and_bad_timestamps_are_flagged_not_fatal(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    create_schema(engine)
    created = datetime(2026, 11, 20, 10, 0)
    with engine.begin() as conn:
        conn.execute(insert(session_table), [{"id": "s1", "customer_id": 1, "customer_name": "김민수", "status": "CONFIRMED", "created_at": created, "updated_at": created}])
        conn.execute(insert(message_table), [{"session_id": "s1", "role": "USER", "content": "안녕하세요", "order_state": None, "created_at": created}])
        conn.execute(
            text("INSERT INTO voice_conversation_message (session_id, role, content, created_at) VALUES (:s, :r, :c, :t)"),
            [
                {"s": "s1", "r": "USER", "c": "주문할게요".encode()[:-1] + b"\xff", "t": "2026-11-20 10:00:05"},
                {"s": "s1", "r": "ASSISTANT", "c": "네", "t": "not-a-date"},
            ],
        )
    table = read_raw_window(engine, datetime(2026, 11, 20), datetime(2026, 11, 21), "2026-11-20")
    rows = table.to_pylist()
    assert len(rows) == 3
    flags = sorted(r["decode_error"] or "" for r in rows)
    assert flags == ["", "bad_timestamp:message.created_at", "undecodable_bytes:content"]
    bad = next(r for r in rows if r["decode_error"] == "undecodable_bytes:content")
    assert bad["content"].startswith("주문할") and "\ufffd" in bad["content"]


def test_count_sessions_since_is_an_aggregate(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    seed_database(engine, sessions=40, days=4, seed=1, end_date=date(2026, 11, 20), damage_rate=0)
    total, newest = count_sessions_since(engine, datetime(2000, 1, 1))
    assert total == 40 and newest is not None
    later, _ = count_sessions_since(engine, newest)
    assert later == 0
    confirmed, _ = count_sessions_since(engine, datetime(2000, 1, 1), ("CONFIRMED",))
    assert 0 < confirmed < 40
