"""Shared fixtures (isolated data folders, a real PostgreSQL database) and the test tiers.

Every test gets exactly one tier marker, so ``pytest -m unit|integration|e2e`` (``make test-unit``
etc.) selects a tier and ``make test`` still runs them all:

* ``unit``: the pure core (``core/``): no Dagster run, HTTP server, subprocess, worker pool or
  torch model. The whole tier must stay under a minute (``make test-unit``).
* ``integration``: Dagster materializations (``defs/``), the CLI, PostgreSQL, worker processes,
  the local fake OpenAI server, a tiny torch model generating or training in process, wheel
  builds: everything that is neither of the others. Tests in ``core/`` that do one of these
  carry ``@pytest.mark.integration``.
* ``e2e``: whole chains: Pipes training subprocesses, the UI in Chromium, the retrain loop, the
  bench smoke run, real pretrained models.

The tier comes from, first to last: a tier marker on the test (or its module); ``slow`` (the old
name of ``e2e``, still accepted) -> e2e; ``postgres`` -> integration; the test's path (`_TIER_BY_PATH`).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

TIERS = ("unit", "integration", "e2e")
#: Path prefixes (relative to this folder, "/"-separated) -> default tier; first match wins,
#: anything unmatched is integration.
UNIT_ROOT = "core/"  # the only folder that holds unit tests
_TIER_BY_PATH = (
    (UNIT_ROOT, "unit"),
    ("test_end_to_end.py", "e2e"),
    ("test_retrain_loop.py", "e2e"),
    ("test_ui_e2e.py", "e2e"),
    ("test_bench_smoke.py", "e2e"),
)
_HERE = Path(__file__).parent


def _relative(path: Path) -> str:
    return path.relative_to(_HERE).as_posix() if path.is_relative_to(_HERE) else ""


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    """``-m unit`` does not import the test modules outside ``core/`` (Dagster's definitions alone
    take ~6 s of CPU): unit tests live only there, which `pytest_collection_modifyitems` enforces."""
    if config.getoption("markexpr", "") != "unit" or collection_path == _HERE:
        return None
    relative = _relative(collection_path)
    return True if relative and not (relative + "/").startswith(UNIT_ROOT) else None


def _tier(item: pytest.Item) -> str:
    """The tier of a test that carries no tier marker: ``slow``, ``postgres``, then its path."""
    if item.get_closest_marker("slow") is not None:
        return "e2e"
    if item.get_closest_marker("postgres") is not None:
        return "integration"
    relative = _relative(item.path)
    return next((tier for prefix, tier in _TIER_BY_PATH if relative.startswith(prefix)), "integration")


@pytest.hookimpl(tryfirst=True)  # before ``-m`` deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Give every collected test exactly one tier marker; two is a mistake worth stopping for."""
    for item in items:
        tiers = {m.name for m in item.iter_markers() if m.name in TIERS}
        if item.get_closest_marker("slow") is not None and tiers:
            tiers.add("e2e")
        if len(tiers) > 1:
            raise pytest.UsageError(f"{item.nodeid} is in more than one test tier: {sorted(tiers)}")
        tier = tiers.pop() if tiers else _tier(item)
        if tier == "unit" and not _relative(item.path).startswith(UNIT_ROOT):
            raise pytest.UsageError(f"{item.nodeid}: unit tests live under {UNIT_ROOT} (see pytest_ignore_collect)")
        if not item.get_closest_marker(tier):
            item.add_marker(tier)


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
