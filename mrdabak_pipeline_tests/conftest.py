"""Shared fixtures: isolated data folders, a seeded SQLite DB, and a real PostgreSQL database."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

PG_ADMIN_URL = os.environ.get("MRDABAK_TEST_PG_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres")


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test writes under its own tmp folder: never into the repo's data/."""
    data = tmp_path / "data"
    monkeypatch.setenv("MRDABAK_DATA_DIR", str(data))
    monkeypatch.setenv("MRDABAK_DB_URL", f"sqlite:///{tmp_path / 'raw.db'}")
    return data


def _postgres_unavailable(reason: str) -> None:
    """PostgreSQL is required in CI (fail), optional on a laptop (skip)."""
    if os.environ.get("CI", "").lower() in {"1", "true", "yes"}:
        pytest.fail(f"PostgreSQL is required in CI but unreachable: {reason}")
    pytest.skip(f"PostgreSQL unreachable: {reason}")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards."""
    try:
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any connection problem means "not available"
        _postgres_unavailable(str(exc).splitlines()[0])
    name = f"mrdabak_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
