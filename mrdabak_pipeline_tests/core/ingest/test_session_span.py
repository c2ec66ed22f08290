"""`db.session_span_since`: the retrain sensor's one aggregate (count, oldest, newest after a mark)."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

from sqlalchemy import insert

from mrdabak_pipeline.core.ingest.db import (
    count_sessions_since,
    create_schema,
    make_engine,
    session_span_since,
    session_table,
)

T0 = datetime(2025, 3, 9, 9, 0, 0, 250000)


def test_span_is_strictly_after_the_mark_and_filters_statuses(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'raw.db'}")
    create_schema(engine)
    rows = [
        {"id": f"s{i}", "customer_id": i, "customer_name": "x", "status": "CONFIRMED" if i % 3 else "ABANDONED",
         "created_at": T0 + timedelta(hours=i), "updated_at": T0 + timedelta(hours=i, minutes=5)}
        for i in range(10)
    ]
    with engine.begin() as conn:
        conn.execute(insert(session_table), rows)

    assert session_span_since(engine, datetime.min) == (10, T0, T0 + timedelta(hours=9))
    # strictly after: the session created exactly at the mark is excluded, microseconds included
    assert session_span_since(engine, T0) == (9, T0 + timedelta(hours=1), T0 + timedelta(hours=9))
    complete = session_span_since(engine, T0, ("CONFIRMED",))
    assert complete == (6, T0 + timedelta(hours=1), T0 + timedelta(hours=8))
    # the same count and newest as the older helper
    assert (complete[0], complete[2]) == count_sessions_since(engine, T0, ("CONFIRMED",))
    assert session_span_since(engine, T0 + timedelta(days=1)) == (0, None, None)
