"""Jobs, schedules and sensors of `defs/automation/automation.py`, evaluated against a real DagsterInstance.

The asset graph is stood in by no-op assets generated from the real graph (keys, lineage,
partitioning, pools), so these tests exercise the automation policy alone (fast, no training); the
retrain loop over the real assets is `mrdabak_pipeline_tests/test_retrain_loop.py`.
"""

from __future__ import annotations

import http.server
import json
import logging
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
import yaml
from dagster import (
    AssetKey,
    AssetMaterialization,
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    Definitions,
    MetadataValue,
    build_run_status_sensor_context,
    build_schedule_context,
    build_sensor_context,
    instance_for_test,
    job,
    op,
)
from dagster._core.test_utils import create_run_for_test
from sqlalchemy import insert

from mrdabak_pipeline.core.ingest.db import create_schema, session_table
from mrdabak_pipeline.core.runtime.alerts import ALERT_WEBHOOK_ENV
from mrdabak_pipeline.core.training.retrain_policy import MIN_NEW_SESSIONS_ENV
from mrdabak_pipeline.defs.automation import automation
from mrdabak_pipeline.defs.partitions import daily_partitions
from mrdabak_pipeline.defs.resources import RawDatabaseResource
from mrdabak_pipeline_tests.defs.automation.automation_standin import build_stand_in_defs, stand_in_assets

SEOUL = ZoneInfo("Asia/Seoul")
REPO_ROOT = Path(__file__).resolve().parents[3]
T0 = datetime(2025, 3, 9, 9, 0)


@pytest.fixture
def raw_db(tmp_path: Path) -> RawDatabaseResource:
    resource = RawDatabaseResource(url=f"sqlite:///{tmp_path / 'raw.db'}")
    create_schema(resource.get_engine())
    return resource


@pytest.fixture
def defs(raw_db: RawDatabaseResource) -> Definitions:
    return build_stand_in_defs(raw_db)


@pytest.fixture
def instance() -> Iterator[DagsterInstance]:
    with instance_for_test() as inst:
        yield inst


def _add_sessions(raw_db: RawDatabaseResource, n: int, start: datetime, status: str = "CONFIRMED") -> datetime:
    """Insert `n` sessions one minute apart; returns the newest created_at."""
    rows = [
        {
            "id": f"{status}-{start.isoformat()}-{i}",
            "customer_id": i,
            "customer_name": "홍길동",
            "status": status,
            "created_at": start + timedelta(minutes=i),
            "updated_at": start + timedelta(minutes=i, seconds=30),
        }
        for i in range(n)
    ]
    with raw_db.get_engine().begin() as conn:
        conn.execute(insert(session_table), rows)
    return start + timedelta(minutes=n - 1)


def _tick(defs: Definitions, instance: DagsterInstance, raw_db: RawDatabaseResource, cursor: str | None = None):
    context = build_sensor_context(
        instance=instance,
        cursor=cursor,
        resources={"raw_db": raw_db},
        repository_def=defs.get_repository_def(),
    )
    return defs.resolve_sensor_def("retrain_sensor").evaluate_tick(context)


# --- Jobs and schedule --------------------------------------------------------------------------


def test_jobs_select_the_right_assets(defs: Definitions) -> None:
    daily = defs.resolve_job_def("daily_refresh_job")
    assert daily.partitions_def == daily_partitions
    assert {k.to_user_string() for k in daily.asset_layer.executable_asset_keys} == set(automation.DAILY_ASSETS)
    training = defs.resolve_job_def("train_evaluate_promote_job")
    assert {k.to_user_string() for k in training.asset_layer.executable_asset_keys} == set(automation.TRAINING_ASSETS)
    retrain = defs.resolve_job_def("retrain_job")
    assert {k.to_user_string() for k in retrain.asset_layer.executable_asset_keys} == {
        *automation.DAILY_ASSETS, *automation.DATASET_ASSETS, *automation.PREFERENCE_DATASETS, *automation.TRAINING_ASSETS
    }
    assert retrain.partitions_def == daily_partitions
    for job_def in (training, retrain):
        assert job_def.run_tags["mrdabak/pool"] == "gpu"
        assert int(job_def.run_tags["dagster/max_runtime"]) == automation.TRAINING_MAX_RUNTIME_SECONDS


def test_stand_in_mirrors_the_real_graph(defs: Definitions) -> None:
    """The stand-in has exactly the real keys, edges, partitioning and pools (it is generated from
    them; this catches a generator that drops an asset, e.g. dpo_dataset, or invents an edge)."""
    from mrdabak_pipeline.definitions import defs as real

    def shape(d: Definitions) -> dict[str, tuple]:
        graph = d.resolve_asset_graph()
        return {
            k.to_user_string(): (
                sorted(p.to_user_string() for p in graph.get(k).parent_keys),
                graph.get(k).partitions_def,
                graph.get(k).backfill_policy,
                d.resolve_assets_def(k).op.pool,
            )
            for k in graph.get_all_asset_keys()
        }

    stand_in, actual = shape(defs), shape(real)
    assert stand_in == actual
    # spot checks against what the old hand-written stand-in got wrong
    assert stand_in["huggingface_dataset"][0] == ["openai_chat_dataset"]
    assert stand_in["dpo_dataset"][0] == ["augmented_sessions"]
    assert stand_in["fine_tuned_model"][3] == "gpu"
    assert len(stand_in_assets()) == len(actual) == 11


@pytest.mark.parametrize(
    ("fires_at", "expected_partition"),
    [
        (datetime(2025, 3, 10, 2, 0, tzinfo=SEOUL), "2025-03-09"),
        # 02:00 KST on the 10th is still the 9th in UTC: a UTC clock would pick the 8th.
        (datetime(2025, 3, 9, 17, 0, tzinfo=UTC), "2025-03-09"),
        (datetime(2025, 3, 1, 2, 0, tzinfo=SEOUL), "2025-02-28"),
        (datetime(2026, 1, 1, 2, 0, tzinfo=SEOUL), "2025-12-31"),
    ],
)
def test_nightly_schedule_requests_yesterday_in_seoul(
    defs: Definitions, instance: DagsterInstance, fires_at: datetime, expected_partition: str
) -> None:
    schedule = defs.resolve_schedule_def("nightly_refresh_schedule")
    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "Asia/Seoul"
    assert schedule.job_name == "daily_refresh_job"
    context = build_schedule_context(
        instance=instance, scheduled_execution_time=fires_at, repository_def=defs.get_repository_def()
    )
    requests = schedule.evaluate_tick(context).run_requests
    assert requests is not None and len(requests) == 1
    assert requests[0].partition_key == expected_partition


# --- Retrain sensor -----------------------------------------------------------------------------


def test_retrain_skips_below_threshold_with_counts(defs, instance, raw_db) -> None:
    _add_sessions(raw_db, 49, T0)
    _add_sessions(raw_db, 30, T0, status="ABANDONED")  # not complete: never counted
    _add_sessions(raw_db, 30, T0, status="IN_PROGRESS")
    result = _tick(defs, instance, raw_db)
    assert not result.run_requests
    assert "49 new complete conversation(s)" in result.skip_message
    assert "needs 50 (1 more)" in result.skip_message


def test_retrain_requests_one_run_at_threshold_and_never_twice(defs, instance, raw_db) -> None:
    newest = _add_sessions(raw_db, 50, T0)
    first = _tick(defs, instance, raw_db)
    assert first.skip_message is None
    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    assert request.run_key == f"retrain@{newest.isoformat(timespec='microseconds')}"
    # no datasets yet: the run refreshes the day holding the sessions, rebuilds and trains
    assert request.job_name == "retrain_job" and request.partition_key == "2025-03-09"
    assert request.tags["mrdabak/new_sessions"] == "50"
    assert first.cursor == newest.isoformat(timespec="microseconds")

    # Next tick with the advanced cursor: nothing new.
    again = _tick(defs, instance, raw_db, cursor=first.cursor)
    assert not again.run_requests
    assert "0 new complete conversation(s)" in again.skip_message

    # Cursor lost (e.g. sensor reset): the same data yields the same run_key, which the daemon
    # refuses to launch twice.
    replay = _tick(defs, instance, raw_db)
    assert [r.run_key for r in replay.run_requests] == [request.run_key]

    # 50 more conversations after the mark: exactly one new, different request.
    later = _add_sessions(raw_db, 50, newest + timedelta(hours=1))
    second = _tick(defs, instance, raw_db, cursor=first.cursor)
    assert [r.run_key for r in second.run_requests] == [f"retrain@{later.isoformat(timespec='microseconds')}"]


def test_retrain_counts_from_the_current_models_high_water_mark(defs, instance, raw_db) -> None:
    trained_up_to = _add_sessions(raw_db, 120, T0)
    instance.report_runless_asset_event(
        AssetMaterialization(
            asset_key=AssetKey("fine_tuned_model"),
            metadata={"data_high_water_mark": MetadataValue.text(trained_up_to.isoformat())},
        )
    )
    _add_sessions(raw_db, 10, trained_up_to + timedelta(days=1))
    result = _tick(defs, instance, raw_db)  # no cursor: the mark comes from the instance
    assert not result.run_requests
    assert f"10 new complete conversation(s) since {trained_up_to.isoformat(timespec='microseconds')}" in result.skip_message
    assert result.cursor == trained_up_to.isoformat(timespec="microseconds")


def _report_datasets(instance: DagsterInstance, mark: datetime, keys: tuple[str, ...] = automation.DATASET_ASSETS) -> None:
    for key in keys:
        instance.report_runless_asset_event(
            AssetMaterialization(asset_key=AssetKey(key), metadata={"data_high_water_mark": MetadataValue.text(mark.isoformat())})
        )


def test_retrain_refreshes_the_days_the_datasets_miss_then_trains(defs, instance, raw_db) -> None:
    """Before: the sensor launched training on the datasets of the last nightly refresh, which did
    not hold the sessions that triggered it. Now the run covers the days from the datasets' mark
    to the newest session (a partition range: one run, the daily assets run the range at once)."""
    _add_sessions(raw_db, 30, T0 - timedelta(days=3))  # the 6th, 09:00-09:29
    _report_datasets(instance, T0 - timedelta(days=3) + timedelta(minutes=10))  # datasets hold up to the 6th, 09:10
    newest = _add_sessions(raw_db, 30, T0)  # the 9th
    result = _tick(defs, instance, raw_db)
    (request,) = result.run_requests
    assert request.job_name == "retrain_job"
    assert request.partition_key is None
    assert (request.tags["dagster/asset_partition_range_start"], request.tags["dagster/asset_partition_range_end"]) == (
        "2025-03-06", "2025-03-09",
    )
    assert request.run_key == f"retrain@{newest.isoformat(timespec='microseconds')}"


def test_retrain_trains_on_datasets_that_already_hold_the_sessions(defs, instance, raw_db) -> None:
    newest = _add_sessions(raw_db, 60, T0)
    _report_datasets(instance, newest, keys=("openai_chat_dataset",))  # one dataset is not enough
    assert _tick(defs, instance, raw_db).run_requests[0].job_name == "retrain_job"
    _report_datasets(instance, newest)
    (request,) = _tick(defs, instance, raw_db).run_requests
    assert request.job_name == "train_evaluate_promote_job" and request.partition_key is None
    assert "dagster/asset_partition_range_start" not in request.tags


def test_retrain_threshold_from_env(defs, instance, raw_db, monkeypatch) -> None:
    monkeypatch.setenv(MIN_NEW_SESSIONS_ENV, "3")
    _add_sessions(raw_db, 3, T0)
    assert len(_tick(defs, instance, raw_db).run_requests) == 1
    monkeypatch.setenv(MIN_NEW_SESSIONS_ENV, "zero")
    with pytest.raises(Exception, match=MIN_NEW_SESSIONS_ENV):
        _tick(defs, instance, raw_db)


def test_retrain_sensor_settings(defs) -> None:
    sensor = defs.resolve_sensor_def("retrain_sensor")
    assert {target.job_name for target in sensor.targets} == {"train_evaluate_promote_job", "retrain_job"}
    assert 5 * 60 <= sensor.minimum_interval_seconds <= 60 * 60


# --- Run-status sensors -------------------------------------------------------------------------


def _finished_run(instance: DagsterInstance, job_def, event_type: DagsterEventType, **kwargs):
    result = job_def.execute_in_process(instance=instance, raise_on_error=False, **kwargs)
    run = instance.get_run_by_id(result.run_id)
    event = instance.all_logs(result.run_id, of_type=event_type)[0].dagster_event
    return run, event


def test_datasets_follow_a_successful_refresh_once(defs, instance) -> None:
    daily = defs.resolve_job_def("daily_refresh_job")
    run, event = _finished_run(instance, daily, DagsterEventType.RUN_SUCCESS, partition_key="2025-03-09")
    context = build_run_status_sensor_context(
        sensor_name="datasets_after_refresh_sensor", dagster_event=event, dagster_instance=instance, dagster_run=run
    )
    request = automation.datasets_after_refresh_sensor(context)
    assert request.run_key == f"datasets-after-{run.run_id}"
    assert request.tags["mrdabak/after_partition"] == "2025-03-09"
    assert defs.resolve_sensor_def("datasets_after_refresh_sensor").job_name == "datasets_job"

    # A datasets run still waiting in the queue will read this day too: no second request.
    create_run_for_test(instance, job_name="datasets_job", status=DagsterRunStatus.NOT_STARTED)
    skipped = automation.datasets_after_refresh_sensor(context)
    assert "still queued" in skipped.skip_message


@op
def _leaky_op() -> None:
    raise RuntimeError("cannot connect to postgresql://trainer:hunter2pass@db.internal:5432/mrdabak")


@job
def _failing_job() -> None:
    _leaky_op()


class _Capture(http.server.BaseHTTPRequestHandler):
    bodies: list[dict] = []

    def do_POST(self) -> None:  # noqa: N802 - http.server API
        length = int(self.headers["Content-Length"])
        _Capture.bodies.append(json.loads(self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        return None


@pytest.fixture
def webhook() -> Iterator[str]:
    _Capture.bodies = []
    server = http.server.HTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/hook"
    server.shutdown()


def test_failure_sensor_posts_a_redacted_alert(instance, webhook, monkeypatch) -> None:
    run, event = _finished_run(instance, _failing_job, DagsterEventType.RUN_FAILURE)
    context = build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor", dagster_event=event, dagster_instance=instance, dagster_run=run
    ).for_run_failure()

    monkeypatch.delenv(ALERT_WEBHOOK_ENV, raising=False)
    automation.run_failure_alert_sensor(context)
    assert _Capture.bodies == []  # no URL, no request

    monkeypatch.setenv(ALERT_WEBHOOK_ENV, webhook)
    automation.run_failure_alert_sensor(context)
    assert len(_Capture.bodies) == 1
    alert = _Capture.bodies[0]
    assert alert["job"] == "_failing_job" and alert["run_id"] == run.run_id
    assert "_leaky_op" in alert["error"]
    assert "hunter2pass" not in json.dumps(alert) and "postgresql://***@db.internal" in alert["error"]


def test_failure_sensor_survives_a_dead_webhook(instance, monkeypatch) -> None:
    run, event = _finished_run(instance, _failing_job, DagsterEventType.RUN_FAILURE)
    context = build_run_status_sensor_context(
        sensor_name="run_failure_alert_sensor", dagster_event=event, dagster_instance=instance, dagster_run=run
    ).for_run_failure()
    with socket.socket() as sock:  # a port that was free a moment ago: the connection is refused
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv(ALERT_WEBHOOK_ENV, f"http://127.0.0.1:{port}/hook-secret-token")
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    context.log.addHandler(handler)
    automation.run_failure_alert_sensor(context)  # must not raise
    logged = [(r.levelno, r.getMessage()) for r in records]
    assert any(level == logging.ERROR and "_failing_job failed" in msg for level, msg in logged), logged
    assert (logging.WARNING, f"failure alert to ${ALERT_WEBHOOK_ENV} not delivered: URLError") in logged
    assert not any("hook-secret-token" in msg for _, msg in logged), "the webhook URL was logged"


# --- Instance configuration ---------------------------------------------------------------------


def test_local_instance_config(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "dagster.yaml").write_text((REPO_ROOT / "dagster.yaml").read_text())
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    with DagsterInstance.get() as inst:
        assert not inst.telemetry_enabled
        assert inst.run_monitoring_enabled and inst.run_monitoring_max_runtime_seconds > 0
        # a killed run's gpu slots are freed (issue 15 item 3): health-checked workers + slot freeing
        assert type(inst.run_launcher).__name__ == "LocalHealthCheckRunLauncher"
        assert inst.run_launcher.supports_check_run_worker_health
        assert 0 < inst.run_monitoring_settings["free_slots_after_run_end_seconds"] <= 60
        assert inst.run_monitoring_settings["poll_interval_seconds"] <= 60
        pools = inst.get_concurrency_config().pool_config
        assert pools.default_pool_limit == 1
        limits = inst.get_concurrency_config().run_queue_config.tag_concurrency_limits
        assert {"key": "mrdabak/pool", "value": "gpu", "limit": 1} in limits
        assert type(inst.run_storage).__name__ == "SqliteRunStorage"
        assert Path(inst.run_storage._conn_string.removeprefix("sqlite:///")).is_relative_to(tmp_path)  # noqa: SLF001


def test_postgres_instance_config_matches_local_except_storage() -> None:
    local = yaml.safe_load((REPO_ROOT / "dagster.yaml").read_text())
    postgres = yaml.safe_load((REPO_ROOT / "deploy" / "dagster.postgres.yaml").read_text())
    storage = postgres.pop("storage")
    assert postgres == local
    db = storage["postgres"]["postgres_db"]
    assert db.pop("scheme") == "postgresql+psycopg2"
    assert {k: v["env"] for k, v in db.items()} == {
        "hostname": "DAGSTER_PG_HOST",
        "port": "DAGSTER_PG_PORT",
        "username": "DAGSTER_PG_USER",
        "password": "DAGSTER_PG_PASSWORD",
        "db_name": "DAGSTER_PG_DB",
    }


def test_workspace_loads_the_code_location() -> None:
    workspace = yaml.safe_load((REPO_ROOT / "workspace.yaml").read_text())
    (entry,) = workspace["load_from"]
    assert entry["python_module"]["module_name"] == "mrdabak_pipeline.definitions"



# --- The real code location ---------------------------------------------------------------------


def test_real_definitions_wire_the_automation() -> None:
    """The lead's Definitions carry these jobs over the real assets, with the promised policies."""
    from dagster import BackfillPolicy

    from mrdabak_pipeline.definitions import defs as real

    for name in ("daily_refresh_job", "datasets_job", "train_evaluate_promote_job", "retrain_job"):
        assert real.resolve_job_def(name) is not None
    assert real.resolve_schedule_def("nightly_refresh_schedule").job_name == "daily_refresh_job"
    for name in ("datasets_after_refresh_sensor", "retrain_sensor", "run_failure_alert_sensor"):
        assert real.resolve_sensor_def(name) is not None
    graph = real.resolve_asset_graph()
    for key in automation.DAILY_ASSETS:  # a backfill fans out as runs of up to a week of days
        assert graph.get(AssetKey(key)).backfill_policy == BackfillPolicy.multi_run(max_partitions_per_run=7), key
    assert real.resolve_assets_def("fine_tuned_model").op.pool == "gpu"
