"""Jobs, schedules and sensors: how the pipeline runs day to day without anyone clicking.

Design of the nightly refresh
-----------------------------
The daily assets (``raw_conversation_logs`` -> ``cleaned_sessions``/``rejected_sessions`` ->
``augmented_sessions`` -> ``dataset_shards``) are partitioned by Seoul day; the datasets
(``openai_chat_dataset``, ``huggingface_dataset``) are not: they are assembled from the stored day
shards. So the refresh is two jobs chained by a run-status sensor:

1. ``daily_refresh_job`` (partitioned) fired by ``nightly_refresh_schedule``: at 02:00 Asia/Seoul
   (the partitions' own timezone) it requests the last *complete* day, i.e. yesterday in Seoul.
   (The partitions include today, ``end_offset=1``, so a retrain can read today's conversations;
   the schedule therefore names yesterday itself instead of taking the newest partition.) A
   backfill of a range fans out as runs of up to a week of days each (the daily assets'
   ``BackfillPolicy.multi_run``, `defs/partitions.py`), which the run queue runs side by side.
2. ``datasets_after_refresh_sensor`` (a run-status sensor on SUCCESS of that job) requests
   ``datasets_job``, keyed by the upstream run id, so every successful refresh rebuilds the
   datasets (from the shards: the new day is the only one formatted and counted) once, and a
   failed refresh never publishes half-refreshed datasets.

Declarative automation was considered for "datasets after the daily assets" and is not the
simpler fit here: ``AutomationCondition.eager()`` on an unpartitioned dataset whose upstream is
daily-partitioned never fires (``any_deps_missing`` sees every unmaterialized day since the
partitions' start; checked with ``evaluate_automation_conditions``), so it would need a custom
condition on asset definitions owned by other modules plus the automation condition sensor. The
run-status sensor keeps the policy in this module, with a run key and a tick history per decision.

Retraining is event-driven, not scheduled. ``retrain_sensor`` compares three high-water marks: the
current model's (``fine_tuned_model`` metadata), the datasets' (``openai_chat_dataset`` and
``huggingface_dataset`` metadata: what they hold) and the newest complete conversation in the raw
DB. Once enough complete conversations arrived after the model's mark it requests a run that
trains on them: ``train_evaluate_promote_job`` when the datasets already hold them, otherwise
``retrain_job``, which in ONE run refreshes the Seoul days holding the new conversations (a
partition or a partition range), rebuilds the datasets from every stored day and then trains,
evaluates and promotes. (A run may mix the daily partitions with the unpartitioned assets: the
datasets read every stored partition.) The new dataset has a new sha256 and mark, so training
gets a new output folder instead of resuming the previous model's final checkpoint.
Training runs are limited to one at a time twice over: the training asset's pool ``gpu`` (op
level) and the jobs' ``mrdabak/pool=gpu`` run tag (run queue level, see ``dagster.yaml``, which
also frees the slots of a run whose worker was killed: ``defs/run_launcher.py``).
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import dagster as dg

from mrdabak_pipeline.core.ingest.db import session_span_since
from mrdabak_pipeline.core.runtime.alerts import ALERT_WEBHOOK_ENV, failure_alert, post_webhook
from mrdabak_pipeline.core.training.retrain_policy import (
    COMPLETE_STATUSES,
    decide_retrain,
    format_high_water_mark,
    latest_high_water_mark,
    min_new_sessions_from_env,
    parse_high_water_mark,
)
from mrdabak_pipeline.defs.compat import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    SerializableErrorInfo,
)
from mrdabak_pipeline.defs.partitions import daily_partitions
from mrdabak_pipeline.defs.resources import RawDatabaseResource

DAILY_ASSETS = ("raw_conversation_logs", "cleaned_sessions", "rejected_sessions", "augmented_sessions", "dataset_shards")
DATASET_ASSETS = ("openai_chat_dataset", "huggingface_dataset")
#: Rebuilt with the datasets (fine_tuned_model reads it for the cloud DPO method) but not a source
#: of the training high-water mark: its value carries none.
PREFERENCE_DATASETS = ("dpo_dataset",)
TRAINING_ASSETS = ("fine_tuned_model", "evaluation_report", "promoted_model")
MODEL_ASSET = dg.AssetKey("fine_tuned_model")
#: The datasets the model trains on (local: huggingface_dataset; cloud: openai_chat_dataset).
TRAINED_ON_DATASETS = tuple(dg.AssetKey(k) for k in DATASET_ASSETS)
HIGH_WATER_MARK_KEY = "data_high_water_mark"

#: Run tag limited to 1 concurrent run by dagster.yaml (concurrency > runs > tag_concurrency_limits).
GPU_POOL_TAG = "mrdabak/pool"
#: Local CPU training takes minutes; a cloud fine-tune can queue for hours. Past this, run
#: monitoring (enabled in dagster.yaml) cancels the run and frees the pool.
TRAINING_MAX_RUNTIME_SECONDS = 6 * 60 * 60

# --- Jobs -------------------------------------------------------------------------------------

daily_refresh_job = dg.define_asset_job(
    "daily_refresh_job",
    selection=dg.AssetSelection.assets(*DAILY_ASSETS),
    description="One Seoul day: raw logs -> cleaned/rejected -> augmented sessions -> the day's dataset shard (with their checks).",
    tags={"mrdabak/stage": "refresh"},
)

datasets_job = dg.define_asset_job(
    "datasets_job",
    selection=dg.AssetSelection.assets(*DATASET_ASSETS, *PREFERENCE_DATASETS),
    description="Rebuild the OpenAI chat, Hugging Face and DPO preference datasets from every stored day.",
    tags={"mrdabak/stage": "datasets"},
)

_TRAINING_TAGS = {
    "mrdabak/stage": "training",
    GPU_POOL_TAG: "gpu",
    "dagster/max_runtime": str(TRAINING_MAX_RUNTIME_SECONDS),
}

train_evaluate_promote_job = dg.define_asset_job(
    "train_evaluate_promote_job",
    selection=dg.AssetSelection.assets(*TRAINING_ASSETS),
    description="Fine-tune on the datasets as they are, evaluate on the golden set, and promote only if the checks pass.",
    tags=_TRAINING_TAGS,
)

retrain_job = dg.define_asset_job(
    "retrain_job",
    selection=dg.AssetSelection.assets(*DAILY_ASSETS, *DATASET_ASSETS, *PREFERENCE_DATASETS, *TRAINING_ASSETS),
    description=(
        "Refresh the days (a partition or a range) that hold new conversations, rebuild the datasets "
        "from every stored day, then fine-tune, evaluate and promote: the model trains on the "
        "conversations that triggered it."
    ),
    tags=_TRAINING_TAGS,
)

# --- Schedule ---------------------------------------------------------------------------------

@dg.schedule(
    name="nightly_refresh_schedule",
    job=daily_refresh_job,
    cron_schedule="0 2 * * *",
    execution_timezone=daily_partitions.timezone,
    description=(
        "02:00 Asia/Seoul: materialize yesterday's partition (the app may still write late rows "
        "until midnight, so the refresh waits two hours past the day's end)."
    ),
    default_status=dg.DefaultScheduleStatus.STOPPED,
)
def nightly_refresh_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    """Yesterday in Seoul, whatever clock the daemon runs on (the partitions end today, not yesterday)."""
    seoul_now = context.scheduled_execution_time.astimezone(ZoneInfo(daily_partitions.timezone))  # type: ignore[union-attr]
    day = (seoul_now.date() - timedelta(days=1)).isoformat()
    return dg.RunRequest(run_key=day, partition_key=day)

# --- Sensors ----------------------------------------------------------------------------------


@dg.run_status_sensor(
    run_status=dg.DagsterRunStatus.SUCCESS,
    name="datasets_after_refresh_sensor",
    monitored_jobs=[daily_refresh_job],
    request_job=datasets_job,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="After a successful daily refresh, rebuild the datasets once (keyed by the refresh run).",
)
def datasets_after_refresh_sensor(context: dg.RunStatusSensorContext) -> dg.RunRequest | dg.SkipReason:
    """A queued datasets run will read every stored day when it starts, so one is enough: after a
    30-day backfill this requests one rebuild, not thirty."""
    run = context.dagster_run
    waiting = context.instance.get_runs(
        dg.RunsFilter(job_name=datasets_job.name, statuses=[dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED]),
        limit=1,
    )
    if waiting:
        return dg.SkipReason(f"datasets run {waiting[0].run_id[:8]} is still queued and will include run {run.run_id[:8]}.")
    tags = {"mrdabak/after_run": run.run_id}
    if partition := run.tags.get("dagster/partition"):
        tags["mrdabak/after_partition"] = partition
    return dg.RunRequest(run_key=f"datasets-after-{run.run_id}", tags=tags)


def model_high_water_mark(instance: dg.DagsterInstance) -> datetime | None:
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


def datasets_high_water_mark(instance: dg.DagsterInstance) -> datetime | None:
    """What the datasets hold: the older of the latest ``data_high_water_mark`` of
    ``openai_chat_dataset`` and ``huggingface_dataset`` (None until both exist). Training reads
    one of them, so a conversation counts as in the datasets only once both hold it."""
    marks = []
    for key in TRAINED_ON_DATASETS:
        entry = instance.get_latest_materialization_event(key)
        materialization = entry.asset_materialization if entry else None
        value = materialization.metadata.get(HIGH_WATER_MARK_KEY) if materialization else None
        mark = parse_high_water_mark(getattr(value, "value", value))
        if mark is None:
            return None
        marks.append(mark)
    return min(marks) if marks else None


def _partitions_of(first: str, last: str) -> tuple[str | None, dict[str, str]]:
    """(partition_key, tags) of a `dg.RunRequest` for the days first..last (clamped to the partitions'
    start): one key, or a range, which a run executes in one go whatever the backfill policy."""
    start = daily_partitions.get_first_partition_key() or first
    first, last = max(first, start), max(last, start)
    if first == last:
        return last, {}
    return None, {ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last}


@dg.sensor(
    name="retrain_sensor",
    jobs=[retrain_job, train_evaluate_promote_job],
    minimum_interval_seconds=15 * 60,
    default_status=dg.DefaultSensorStatus.STOPPED,
    description=(
        "Retrain when enough complete conversations (CONFIRMED/CANCELLED) arrived after the data "
        "the current model was trained on, on datasets that hold them (refreshing the days that "
        "hold them first when needed). Threshold: MRDABAK_RETRAIN_MIN_SESSIONS (default 50)."
    ),
)
def retrain_sensor(context: dg.SensorEvaluationContext, raw_db: RawDatabaseResource) -> dg.SensorResult:
    """Cursor = the data high-water mark already covered (by the current model or a requested run).

    Each tick costs one indexed COUNT/MIN/MAX on ``created_at`` and three latest-materialization
    lookups. The run key is derived from the newest conversation's timestamp, so the same data
    never requests training twice, even if the cursor is lost. A failed training run is not
    retried on the same data (the failure sensor reports it; re-execute it from the UI, which
    refreshes and rebuilds again); the next batch of conversations requests a fresh run.
    """
    threshold = min_new_sessions_from_env()
    since = latest_high_water_mark(parse_high_water_mark(context.cursor), model_high_water_mark(context.instance))
    count, oldest, newest = session_span_since(raw_db.get_engine(), since or datetime.min, COMPLETE_STATUSES)
    decision = decide_retrain(
        count, newest, since, threshold, oldest=oldest, dataset_mark=datasets_high_water_mark(context.instance)
    )
    if not decision.should_train or decision.newest is None:
        cursor = format_high_water_mark(since) if since else None
        return dg.SensorResult(skip_reason=dg.SkipReason(decision.reason), cursor=cursor)
    context.log.info(decision.reason)
    mark = format_high_water_mark(decision.newest)
    tags = {"mrdabak/data_high_water_mark": mark, "mrdabak/new_sessions": str(count)}
    if decision.refresh_days is None:
        request = dg.RunRequest(run_key=decision.run_key, job_name=train_evaluate_promote_job.name, tags=tags)
    else:
        partition_key, range_tags = _partitions_of(*decision.refresh_days)
        request = dg.RunRequest(
            run_key=decision.run_key, job_name=retrain_job.name, partition_key=partition_key, tags=tags | range_tags
        )
    return dg.SensorResult(run_requests=[request], cursor=mark)


def _root_cause(error: SerializableErrorInfo) -> str:
    """The innermost exception message: Dagster wraps user errors in "Error occurred while
    executing op ..." and the useful sentence is the cause's (no stack trace in an alert)."""
    while error.cause is not None:
        error = error.cause
    return error.message.strip()


@dg.run_failure_sensor(
    name="run_failure_alert_sensor",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"Logs every failed run of this code location; also POSTs it to ${ALERT_WEBHOOK_ENV} when set.",
)
def run_failure_alert_sensor(context: dg.RunFailureSensorContext) -> None:
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


jobs = [daily_refresh_job, datasets_job, train_evaluate_promote_job, retrain_job]
schedules = [nightly_refresh_schedule]
sensors = [datasets_after_refresh_sensor, retrain_sensor, run_failure_alert_sensor]
