"""The documented PostgreSQL instance (deploy/dagster.postgres.yaml), used for real.

A fresh database per test run at 127.0.0.1:5432 (user postgres, trust auth). Runs, event logs and
schedule state must land in PostgreSQL tables, read back with a plain SQL connection. In CI
(`CI=true`) an unreachable server is a failure, not a skip: the instance config is only proven by
this test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest
from dagster import DagsterInstance
from dagster._core.test_utils import in_process_test_workspace
from dagster._core.types.loadable_target_origin import LoadableTargetOrigin
from psycopg2 import sql

from mrdabak_pipeline.defs.automation import automation
from mrdabak_pipeline_tests.defs.automation import automation_standin

pytestmark = pytest.mark.postgres

REPO_ROOT = Path(__file__).resolve().parents[2]
PG = {"host": os.environ.get("MRDABAK_TEST_PG_HOST", "127.0.0.1"), "port": 5432, "user": "postgres"}


def _admin_connection() -> psycopg2.extensions.connection:
    try:
        conn = psycopg2.connect(dbname="postgres", connect_timeout=5, **PG)
    except psycopg2.OperationalError as exc:
        message = f"PostgreSQL at {PG['host']}:{PG['port']} is unreachable: {exc}".strip()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    conn.autocommit = True
    return conn


@pytest.fixture
def pg_database() -> Iterator[str]:
    """CREATE a uniquely named database, DROP it afterwards (even if the test failed)."""
    admin = _admin_connection()
    name = f"mrdabak_dagster_test_{uuid.uuid4().hex[:12]}"
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield name
    finally:
        with admin.cursor() as cur:
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        admin.close()


@pytest.fixture
def pg_instance(pg_database: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DagsterInstance]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((REPO_ROOT / "deploy" / "dagster.postgres.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    for key, value in {"HOST": PG["host"], "PORT": str(PG["port"]), "USER": PG["user"], "PASSWORD": "", "DB": pg_database}.items():
        monkeypatch.setenv(f"DAGSTER_PG_{key}", value)
    with DagsterInstance.get() as instance:
        yield instance


def _query(database: str, statement: str, *params: object) -> list[tuple]:
    with psycopg2.connect(dbname=database, connect_timeout=5, **PG) as conn, conn.cursor() as cur:
        cur.execute(statement, params)
        return cur.fetchall()


def test_runs_event_logs_and_schedules_live_in_postgres(pg_instance: DagsterInstance, pg_database: str) -> None:
    assert type(pg_instance.run_storage).__name__ == "PostgresRunStorage"
    assert type(pg_instance.event_log_storage).__name__ == "PostgresEventLogStorage"
    assert type(pg_instance.schedule_storage).__name__ == "PostgresScheduleStorage"

    # A partitioned run of the nightly job (stand-in assets), executed on this instance.
    job = automation_standin.defs.resolve_job_def("daily_refresh_job")
    result = job.execute_in_process(instance=pg_instance, partition_key="2025-03-09")
    assert result.success
    (status,) = _query(pg_database, "SELECT status FROM runs WHERE run_id = %s", result.run_id)[0]
    assert status == "SUCCESS"
    events = dict(
        _query(pg_database, "SELECT dagster_event_type, count(*) FROM event_logs WHERE run_id = %s GROUP BY 1", result.run_id)
    )
    assert events["ASSET_MATERIALIZATION"] == len(automation.DAILY_ASSETS), events
    assert events.get("RUN_SUCCESS", events.get("PIPELINE_SUCCESS")) == 1, events  # stored under its legacy name
    partitions = _query(pg_database, "SELECT DISTINCT partition FROM event_logs WHERE run_id = %s AND partition IS NOT NULL", result.run_id)
    assert partitions == [("2025-03-09",)]

    # Schedule state: start the nightly schedule through the loaded code location.
    origin = LoadableTargetOrigin(python_file=automation_standin.__file__, attribute="defs", working_directory=str(REPO_ROOT))
    with in_process_test_workspace(pg_instance, origin) as workspace:
        (entry,) = workspace.get_code_location_entries().values()
        assert entry.code_location is not None, entry.load_error
        (repo,) = entry.code_location.get_repositories().values()
        pg_instance.start_schedule(repo.get_schedule("nightly_refresh_schedule"))
        pg_instance.start_sensor(repo.get_sensor("retrain_sensor"))
    stored = {
        (kind, status, name)
        for kind, status, body in _query(pg_database, "SELECT job_type, status, job_body FROM jobs")
        for name in ("nightly_refresh_schedule", "retrain_sensor")
        if f'"{name}"' in body
    }
    assert stored == {("SCHEDULE", "RUNNING", "nightly_refresh_schedule"), ("SENSOR", "RUNNING", "retrain_sensor")}

    # A second instance on the same database (another webserver/daemon) sees all of it.
    with DagsterInstance.get() as other:
        run = other.get_run_by_id(result.run_id)
        assert run is not None and run.tags["dagster/partition"] == "2025-03-09"
        assert {s.instigator_name for s in other.all_instigator_state()} == {"nightly_refresh_schedule", "retrain_sensor"}
