"""Column-wise window extraction: row order, message-less sessions, orphans, per-row flags."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import insert, text

from mrdabak_pipeline.core.ingest.db import (
    RAW_SCHEMA,
    create_schema,
    iter_raw_rows,
    make_engine,
    read_raw_window,
    session_table,
)


def test_window_rows_order_flags_and_orphans(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    create_schema(engine)
    day = datetime(2026, 11, 20, 9, 0)
    with engine.begin() as conn:
        conn.execute(insert(session_table), [
            {"id": sid, "customer_id": i, "customer_name": "김민수", "status": "CONFIRMED", "created_at": day, "updated_at": day}
            for i, sid in enumerate(["s2", "s1", "s3"])
        ])
        conn.execute(insert(session_table), [{"id": "old", "customer_id": 9, "customer_name": "x", "status": "CONFIRMED",
                                              "created_at": datetime(2026, 11, 19, 9), "updated_at": day}])
        conn.execute(
            text("INSERT INTO voice_conversation_message (id, session_id, role, content, order_state, created_at) VALUES (:i, :s, :r, :c, :o, :t)"),
            [
                {"i": 10, "s": "s1", "r": "assistant", "c": "네", "o": None, "t": "2026-11-20 09:00:05.000000"},
                {"i": 11, "s": "s1", "r": "user", "c": "안녕", "o": None, "t": "2026-11-20 09:00:01"},
                {"i": 12, "s": "s1", "r": "user", "c": "같은 시각", "o": "{}", "t": "2026-11-20 09:00:01"},
                {"i": 13, "s": "s2", "r": "user", "c": b"\xff\xfe", "o": None, "t": "2026-13-45 25:61:00"},
                {"i": 14, "s": "s2", "r": "assistant", "c": "네", "o": None, "t": " 2026-11-20 09:00:02 "},
                {"i": 15, "s": "gone", "r": "user", "c": "고아", "o": None, "t": "2026-11-20 10:00:00"},
                {"i": 16, "s": "old", "r": "user", "c": "어제 세션", "o": None, "t": "2026-11-20 10:00:00"},
            ],
        )
        conn.execute(text("UPDATE voice_conversation_session SET customer_name = :n WHERE id = 's2'"), {"n": b"\xc3"})
    table = read_raw_window(engine, datetime(2026, 11, 20), datetime(2026, 11, 21), "2026-11-20")
    assert table.schema.equals(RAW_SCHEMA)
    rows = table.to_pylist()
    # sessions by id, messages by stored created_at text (as ORDER BY sorts it) then id,
    # message-less session kept, orphans last
    assert [(r["session_id"], r["message_id"]) for r in rows] == [
        ("s1", 11), ("s1", 12), ("s1", 10), ("s2", 14), ("s2", 13), ("s3", None), ("gone", 15)]
    assert [r["is_orphan"] for r in rows] == [False] * 6 + [True]
    # session cells' flags first, then the message cells', in column order
    assert rows[4]["decode_error"] == "undecodable_bytes:customer_name;undecodable_bytes:content;bad_timestamp:message.created_at"
    assert rows[3]["decode_error"] == "undecodable_bytes:customer_name"
    assert rows[3]["message_created_at"] == datetime(2026, 11, 20, 9, 0, 2)  # padded text still parses
    assert rows[4]["content"] == "\ufffd\ufffd" and rows[4]["message_created_at"] is None
    assert all(r["decode_error"] is None for r in rows if r["session_id"] != "s2")
    assert rows[5]["customer_id"] == 2 and rows[5]["role"] is None
    assert {r["partition_date"] for r in rows} == {"2026-11-20"}
    assert [{k: v for k, v in r.items() if k != "partition_date"} for r in rows] == list(
        iter_raw_rows(engine, datetime(2026, 11, 20), datetime(2026, 11, 21)))
