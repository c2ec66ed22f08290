"""Jobs, schedules and sensors: how the pipeline runs day to day without anyone clicking.

Design of the nightly refresh
-----------------------------
The daily assets (``raw_conversation_logs`` -> ``cleaned_sessions``/``rejected_sessions`` ->
``augmented_sessions``) are partitioned by Seoul day; the datasets (``openai_chat_dataset``,
``huggingface_dataset``) are not, and one Dagster run cannot mix a partition key with unpartitioned
assets. So the refresh is two jobs chained by a run-status sensor:

1. ``daily_refresh_job`` (partitioned) fired by ``nightly_refresh_schedule``, built with
   `build_schedule_from_partitioned_job`: at 02:00 Asia/Seoul (the partitions' own timezone) it
   requests the last *complete* day, i.e. yesterday in Seoul. Range backfills of this job run as
   one run per asset because the daily assets declare ``BackfillPolicy.single_run()``.
2. ``datasets_after_refresh_sensor`` (a run-status sensor on SUCCESS of that job) requests
   ``datasets_job``, keyed by the upstream run id, so every successful refresh rebuilds the
   datasets exactly once, and a failed refresh never publishes half-refreshed datasets.

Declarative automation (``AutomationCondition.eager()`` on the dataset assets) would also work,
but it puts policy on asset definitions owned by other modules and needs the automation daemon
sensor on; here the whole operating policy lives in this one module, with run keys and a tick
history per decision that a user can read in the UI.

Retraining is event-driven, not scheduled: ``retrain_sensor`` counts complete conversations newer
than the data the current model saw and requests ``train_evaluate_promote_job`` once enough have
arrived. Training runs are limited to one at a time twice over: the training asset's pool ``gpu``
(op level) and the job's ``mrdabak/pool=gpu`` run tag (run queue level, see ``dagster.yaml``).
"""

from __future__ import annotations

import os
from datetime import datetime

from dagster import (
    AssetKey,
    AssetSelection,
    DagsterInstance,
    DagsterRunStatus,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunsFilter,
    RunStatusSensorContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    build_schedule_from_partitioned_job,
    define_asset_job,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)
from dagster._utils.error import SerializableErrorInfo

from mrdabak_pipeline.core.alerts import ALERT_WEBHOOK_ENV, failure_alert, post_webhook
from mrdabak_pipeline.core.db import count_sessions_since
from mrdabak_pipeline.core.retrain_policy import (
    COMPLETE_STATUSES,
    decide_retrain,
    format_high_water_mark,
    latest_high_water_mark,
    min_new_sessions_from_env,
    parse_high_water_mark,
)
from mrdabak_pipeline.defs.resources import RawDatabaseResource

DAILY_ASSETS = ("raw_conversation_logs", "cleaned_sessions", "rejected_sessions", "augmented_sessions")
DATASET_ASSETS = ("openai_chat_dataset", "huggingface_dataset")
TRAINING_ASSETS = ("fine_tuned_model", "evaluation_report", "promoted_model")
MODEL_ASSET = AssetKey("fine_tuned_model")
HIGH_WATER_MARK_KEY = "data_high_water_mark"

#: Run tag limited to 1 concurrent run by dagster.yaml (concurrency > runs > tag_concurrency_limits).
GPU_POOL_TAG = "mrdabak/pool"
#: Local CPU training takes minutes; a cloud fine-tune can queue for hours. Past this, run
#: monitoring (enabled in dagster.yaml) cancels the run and frees the pool.
TRAINING_MAX_RUNTIME_SECONDS = 6 * 60 * 60

# --- Jobs -------------------------------------------------------------------------------------

daily_refresh_job = define_asset_job(
    "daily_refresh_job",
    selection=AssetSelection.assets(*DAILY_ASSETS),
    description="One Seoul day: raw logs -> cleaned/rejected -> augmented sessions (with their checks).",
    tags={"mrdabak/stage": "refresh"},
)

datasets_job = define_asset_job(
    "datasets_job",
    selection=AssetSelection.assets(*DATASET_ASSETS),
    description="Rebuild the OpenAI chat and Hugging Face datasets from every stored day.",
    tags={"mrdabak/stage": "datasets"},
)

train_evaluate_promote_job = define_asset_job(
    "train_evaluate_promote_job",
    selection=AssetSelection.assets(*TRAINING_ASSETS),
    description="Fine-tune, evaluate on the golden set, and promote only if the checks pass.",
    tags={
        "mrdabak/stage": "training",
        GPU_POOL_TAG: "gpu",
        "dagster/max_runtime": str(TRAINING_MAX_RUNTIME_SECONDS),
    },
)

# --- Schedule ---------------------------------------------------------------------------------

nightly_refresh_schedule = build_schedule_from_partitioned_job(
    daily_refresh_job,
    name="nightly_refresh_schedule",
    hour_of_day=2,
    minute_of_hour=0,
    description=(
        "02:00 Asia/Seoul: materialize yesterday's partition (the app may still write late rows "
        "until midnight, so the refresh waits two hours past the day's end)."
    ),
    default_status=DefaultScheduleStatus.STOPPED,
)

# --- Sensors ----------------------------------------------------------------------------------


@run_status_sensor(
    run_status=DagsterRunStatus.SUCCESS,
    name="datasets_after_refresh_sensor",
    monitored_jobs=[daily_refresh_job],
    request_job=datasets_job,
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description="After a successful daily refresh, rebuild the datasets once (keyed by the refresh run).",
)
def datasets_after_refresh_sensor(context: RunStatusSensorContext) -> RunRequest | SkipReason:
    """A queued datasets run will read every stored day when it starts, so one is enough: after a
    30-day backfill this requests one rebuild, not thirty."""
    run = context.dagster_run
    waiting = context.instance.get_runs(
        RunsFilter(job_name=datasets_job.name, statuses=[DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED]),
        limit=1,
    )
    if waiting:
        return SkipReason(f"datasets run {waiting[0].run_id[:8]} is still queued and will include run {run.run_id[:8]}.")
    tags = {"mrdabak/after_run": run.run_id}
    if partition := run.tags.get("dagster/partition"):
        tags["mrdabak/after_partition"] = partition
    return RunRequest(run_key=f"datasets-after-{run.run_id}", tags=tags)


def model_high_water_mark(instance: DagsterInstance) -> datetime | None:
    """The ``data_high_water_mark`` of the latest ``fine_tuned_model`` materialization, if any.

    One indexed lookup of the asset's latest event: cheap enough for every tick, and it makes a
    manual retrain from the UI move the mark as well.
    """
    entry = instance.get_latest_materialization_event(MODEL_ASSET)
    materialization = entry.asset_materialization if entry else None
    if materialization is None:
        return None
    value = materialization.metadata.get(HIGH_WATER_MARK_KEY)
    return parse_high_water_mark(getattr(value, "value", value))


@sensor(
    name="retrain_sensor",
    job=train_evaluate_promote_job,
    minimum_interval_seconds=15 * 60,
    default_status=DefaultSensorStatus.STOPPED,
    description=(
        "Retrain when enough complete conversations (CONFIRMED/CANCELLED) arrived after the data "
        "the current model was trained on. Threshold: MRDABAK_RETRAIN_MIN_SESSIONS (default 50)."
    ),
)
def retrain_sensor(context: SensorEvaluationContext, raw_db: RawDatabaseResource) -> SensorResult:
    """Cursor = the data high-water mark already covered (by the current model or a requested run).

    Each tick costs one indexed COUNT/MAX on ``created_at``. The run key is derived from the newest
    conversation's timestamp, so the same data never requests training twice, even if the cursor
    is lost. A failed training run is not retried on the same data (the failure sensor reports it;
    re-execute from the UI); the next batch of conversations requests a fresh run.
    """
    threshold = min_new_sessions_from_env()
    since = latest_high_water_mark(parse_high_water_mark(context.cursor), model_high_water_mark(context.instance))
    count, newest = count_sessions_since(raw_db.get_engine(), since or datetime.min, COMPLETE_STATUSES)
    decision = decide_retrain(count, newest, since, threshold)
    if not decision.should_train or decision.newest is None:
        cursor = format_high_water_mark(since) if since else None
        return SensorResult(skip_reason=SkipReason(decision.reason), cursor=cursor)
    context.log.info(decision.reason)
    mark = format_high_water_mark(decision.newest)
    request = RunRequest(
        run_key=decision.run_key,
        tags={"mrdabak/data_high_water_mark": mark, "mrdabak/new_sessions": str(count)},
    )
    return SensorResult(run_requests=[request], cursor=mark)


def _root_cause(error: SerializableErrorInfo) -> str:
    """The innermost exception message: Dagster wraps user errors in "Error occurred while
    executing op ..." and the useful sentence is the cause's (no stack trace in an alert)."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


@run_failure_sensor(
    name="run_failure_alert_sensor",
    minimum_interval_seconds=30,
    default_status=DefaultSensorStatus.RUNNING,
    description=f"Logs every failed run of this code location; also POSTs it to ${ALERT_WEBHOOK_ENV} when set.",
)
def run_failure_alert_sensor(context: RunFailureSensorContext) -> None:
    """Secrets never leave: the alert text is redacted and the webhook URL is never logged."""
    run = context.dagster_run
    # The run event only says which steps failed; the step events carry the exception.
    step_errors = [
        f"{event.step_key}: {_root_cause(event.step_failure_data.error)}"
        for event in context.get_step_failure_events()
        if event.step_failure_data.error is not None
    ]
    error = "\n".join([context.failure_event.message or "", *step_errors])
    alert = failure_alert(run.job_name, run.run_id, error, run.tags.get("dagster/partition"))
    context.log.error(alert["text"])
    url = os.environ.get(ALERT_WEBHOOK_ENV)
    if not url:
        return
    try:
        status = post_webhook(url, alert)
        context.log.info(f"failure alert delivered to ${ALERT_WEBHOOK_ENV} (HTTP {status})")
    except OSError as exc:  # URLError and timeouts are OSErrors; a dead webhook must not fail the sensor
        context.log.warning(f"failure alert to ${ALERT_WEBHOOK_ENV} not delivered: {type(exc).__name__}")


jobs = [daily_refresh_job, datasets_job, train_evaluate_promote_job]
schedules = [nightly_refresh_schedule]
sensors = [datasets_after_refresh_sensor, retrain_sensor, run_failure_alert_sensor]
