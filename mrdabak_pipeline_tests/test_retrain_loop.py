"""The retrain loop over the real assets (issue 15, item 1).

Seed, train, add 60 new complete conversations *today*, tick `retrain_sensor`, run what it
requests (with test-sized training and evaluation config): the new model must have been trained
on a dataset that holds those conversations, its high-water mark must move past them, and a
second tick with nothing new must request nothing.

Before the fix the sensor requested `train_evaluate_promote_job` on the datasets of the last
nightly refresh, which did not hold today's conversations (today was not even a partition), and
the run resumed the previous model's output folder.
"""

from __future__ import annotations

import json
import os
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, DagsterInstance, Definitions, build_sensor_context
from sqlalchemy import insert

from mrdabak_pipeline.core.datasets.build import write_openai_dataset
from mrdabak_pipeline.core.ingest.db import make_engine, message_table, session_table
from mrdabak_pipeline.core.ingest.seed import generate, seed_database
from mrdabak_pipeline.core.training.retrain_policy import COMPLETE_STATUSES, SEOUL, parse_high_water_mark

RUN_CONFIG = {
    "ops": {
        "augment_sessions": {"config": {"k": 0}},
        "fine_tuned_model": {
            "config": {"base_model": "tiny", "epochs": 1, "max_steps": 2, "num_threads": 1,
                       "overrides": {"eval_strategy": "no"}}
        },
        "evaluation_report": {
            "config": {"max_items": 2, "max_golden_items": 2, "max_new_tokens": 8,
                       "min_json_validity": 0.0, "max_rule_violation_rate": 1.0}
        },
    }
}


def _add_complete_sessions_today(engine: Any, n: int, today: date) -> tuple[list[str], datetime]:
    """`n` seeder conversations created today (Seoul) that ended CONFIRMED/CANCELLED, undamaged."""
    sessions, messages, _ = generate(sessions=3 * n, days=1, seed=2026, end_date=today, damage_rate=0.0)
    chosen = [s for s in sessions if s["status"] in COMPLETE_STATUSES][:n]
    assert len(chosen) == n
    ids = {s["id"] for s in chosen}
    with engine.begin() as conn:
        conn.execute(insert(session_table), chosen)
        conn.execute(insert(message_table), [m for m in messages if m["session_id"] in ids])
    return sorted(ids), max(s["created_at"] for s in chosen)


def _tick(defs: Definitions, instance: DagsterInstance):
    context = build_sensor_context(
        instance=instance, repository_def=defs.get_repository_def(), resources={"raw_db": defs.resources["raw_db"]}
    )
    return defs.resolve_sensor_def("retrain_sensor").evaluate_tick(context)


def _run(defs: Definitions, instance: DagsterInstance, request: Any) -> str:
    """Execute a sensor's RunRequest as the daemon would: its job, partition and tags."""
    job = defs.resolve_job_def(request.job_name)
    result = job.execute_in_process(
        instance=instance, run_config=RUN_CONFIG, partition_key=request.partition_key, tags=request.tags,
        raise_on_error=False,
    )
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "fine_tuned_model" in materialized, [e.message for e in result.all_events if e.is_failure]
    return result.run_id


def _latest(instance: DagsterInstance, key: str) -> tuple[str, dict[str, Any]]:
    entry = instance.get_latest_materialization_event(AssetKey(key))
    assert entry is not None and entry.asset_materialization is not None
    return entry.run_id, {k: getattr(v, "value", v) for k, v in entry.asset_materialization.metadata.items()}


def _lines(*paths: str | None) -> set[bytes]:
    return {line for p in paths if p for line in Path(p).read_bytes().splitlines() if line.strip()}


@pytest.mark.e2e
@pytest.mark.timeout(1200)
def test_new_conversations_today_retrain_a_model_on_them(tmp_path: Path) -> None:
    engine = make_engine(os.environ["MRDABAK_DB_URL"])
    today = datetime.now(SEOUL).date()
    seed_database(engine, sessions=100, days=3, seed=7, end_date=today - timedelta(days=1), damage_rate=0.0)
    from mrdabak_pipeline.definitions import build_definitions

    defs = build_definitions()
    instance = DagsterInstance.ephemeral()

    # 1. No model yet: the sensor asks for the seeded days to be refreshed, and a first model.
    (first_request,) = _tick(defs, instance).run_requests
    assert first_request.job_name == "retrain_job"
    assert first_request.tags["dagster/asset_partition_range_end"] == (today - timedelta(days=1)).isoformat()
    first_run = _run(defs, instance, first_request)
    _, first_model = _latest(instance, "fine_tuned_model")
    first_mark = parse_high_water_mark(first_model["data_high_water_mark"])
    assert first_mark is not None and first_mark.date() == today - timedelta(days=1)

    # 2. 60 new complete conversations today.
    new_ids, newest = _add_complete_sessions_today(engine, 60, today)
    tick = _tick(defs, instance)
    (request,) = tick.run_requests
    assert request.job_name == "retrain_job" and request.partition_key == today.isoformat()
    assert request.tags["mrdabak/new_sessions"] == "60"
    run_id = _run(defs, instance, request)

    # The model of this run trained on the huggingface_dataset built in this run ...
    model_run, model = _latest(instance, "fine_tuned_model")
    dataset_run, dataset = _latest(instance, "huggingface_dataset")
    assert model_run == dataset_run == run_id != first_run
    # ... whose high-water mark, and the model's, moved to (at least) the newest new conversation,
    mark = parse_high_water_mark(model["data_high_water_mark"])
    assert mark is not None and mark >= newest > first_mark
    assert parse_high_water_mark(dataset["data_high_water_mark"]) == mark
    # ... into a new output folder (not a resume of the first model's final checkpoint),
    assert model["model_path"] != first_model["model_path"]
    # ... and which holds every new conversation: today's stored partition has all 60 source ids,
    augmented = pq.read_table(Path(os.environ["MRDABAK_DATA_DIR"]) / "storage" / "augmented_sessions" / f"{today}.parquet")
    stored_ids = set(augmented.column("source_session_id").to_pylist())
    assert set(new_ids) <= stored_ids
    # and the examples made from them (the same writer, on those sessions alone) are all lines of
    # the dataset the model trained on.
    own = augmented.filter(pc.is_in(augmented["source_session_id"], value_set=pa.array(new_ids)))
    alone = write_openai_dataset(own, tmp_path / "only_new")
    assert alone["train_source_sessions"] + alone["validation_source_sessions"] == len(set(new_ids))
    expected = _lines(alone["train_path"], alone["validation_path"])
    trained_on = _lines(dataset["train_jsonl"], dataset.get("validation_jsonl"))
    assert expected and expected <= trained_on
    assert len(trained_on) >= len(expected) + 1  # the older days are still in it

    # 3. Nothing new: the next tick requests nothing.
    again = _tick(defs, instance)
    assert not again.run_requests
    assert "0 new complete conversation(s)" in again.skip_message
    print(json.dumps({"new_sessions": len(new_ids), "model_mark": str(mark), "dataset_lines": len(trained_on)}))
