"""`stages.extract` ships the DB URL to its workers without ever rendering the password as text."""

from __future__ import annotations

import threading
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import create_engine

from mrdabak_pipeline.core.ingest.db import make_engine
from mrdabak_pipeline.core.ingest.seed import seed_database
from mrdabak_pipeline.core.prepare import stages
from mrdabak_pipeline.core.runtime import parallel

PASSWORD = "s3cret-NEVER-RENDER-me"
END = date(2025, 6, 30)
DAYS = 6


def _windows(days: int = DAYS) -> list[stages.Window]:
    first = datetime.combine(END - timedelta(days=days - 1), datetime.min.time())
    return [(first + timedelta(days=i), first + timedelta(days=i + 1), (first + timedelta(days=i)).date().isoformat())
            for i in range(days)]


def _workers_ready_at_once(workers: int | None = None) -> threading.Event:
    """Every window goes to the pool (none is read in this process while workers start)."""
    ready = threading.Event()
    ready.set()
    return ready


class _Captured(Exception):
    pass


def test_jobs_for_workers_never_hold_the_password_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    # The engine never connects: the jobs are caught on their way to the pool.
    engine = create_engine(f"postgresql+psycopg2://mrdabak:{PASSWORD}@db.internal:5432/raw")
    jobs: list[tuple] = []

    def capture(fn, items, workers=None):  # noqa: ANN001, ANN202
        jobs.extend(items)
        raise _Captured

    monkeypatch.setattr(stages, "MIN_CHUNK_DAYS", 2)
    monkeypatch.setattr(parallel, "warm_up", _workers_ready_at_once)
    monkeypatch.setattr(parallel, "imap", capture)
    with pytest.raises(_Captured):
        stages.extract(engine, _windows(), workers=2)
    assert len(jobs) > 1
    for url, windows in jobs:
        assert PASSWORD not in repr((url, windows)) and PASSWORD not in str(url)
        assert url.password == PASSWORD  # the worker still gets the credential, unrendered
        assert windows


@pytest.mark.integration
def test_workers_connect_from_the_unrendered_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'raw.db'}")
    seed_database(engine, sessions=60, days=DAYS, seed=5, end_date=END)
    serial = stages.extract(engine, _windows(), workers=1)
    monkeypatch.setattr(stages, "MIN_CHUNK_DAYS", 2)
    monkeypatch.setattr(parallel, "warm_up", _workers_ready_at_once)
    assert stages.extract(engine, _windows(), workers=2).equals(serial) and serial.num_rows > 0
