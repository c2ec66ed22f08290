"""The whole chain in-process, on the embedded defaults: seeded DB -> ... -> promoted model.

This is what `make demo` does, minus the CLI: the real Definitions (resources, IO manager, checks),
a real Pipes training subprocess on the `tiny` model, and the evaluation gate. `tiny` starts from
random weights, so there is no prompt-engineered baseline to beat: the report must say so rather
than show a 0 % row, and the fine-tuned model must have learned the app's JSON and real order states,
with the short prompt it was trained with.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance, materialize
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from mrdabak_pipeline.core.ingest.db import make_engine
from mrdabak_pipeline.core.ingest.seed import seed_database

DAILY = ["raw_conversation_logs", "cleaned_sessions", "rejected_sessions", "augmented_sessions", "dataset_shards"]
REST = ["openai_chat_dataset", "huggingface_dataset", "dpo_dataset", "fine_tuned_model", "evaluation_report", "promoted_model"]


def _value(metrics: dict, model: str, key: str) -> float:
    return metrics[model]["all"][key]["value"]


@pytest.mark.e2e
@pytest.mark.timeout(1500)
def test_whole_chain_trains_a_model_that_learns_the_task(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    seed_database(make_engine(os.environ["MRDABAK_DB_URL"]), sessions=160, days=4, seed=7, end_date=date(2026, 11, 20))
    from mrdabak_pipeline.definitions import build_definitions

    defs = build_definitions()
    assets = list(defs.assets)
    resources = defs.resources
    instance = DagsterInstance.ephemeral()

    daily = materialize(
        assets, selection=DAILY, resources=resources, instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: "2026-11-17", ASSET_PARTITION_RANGE_END_TAG: "2026-11-20"},
        run_config={"ops": {"augment_sessions": {"config": {"k": 1}}}},
    )
    assert daily.success
    passed = {e.check_name: e.passed for e in daily.get_asset_check_evaluations()}
    assert passed["conservation"] and passed["no_pii"]

    run_config = {
        "ops": {
            "fine_tuned_model": {"config": {"backend": "local", "base_model": "tiny", "epochs": 10, "num_threads": 1}},
            "evaluation_report": {"config": {"max_items": 30, "max_golden_items": 24, "min_json_validity": 0.5, "max_rule_violation_rate": 0.2}},
        }
    }
    rest = materialize(assets, selection=REST, resources=resources, instance=instance, run_config=run_config)
    assert rest.success

    report = json.loads((Path(os.environ["MRDABAK_DATA_DIR"]) / "storage" / "evaluation_report.json").read_text())
    metrics = report["metrics"]
    assert "base" not in metrics and "No baseline" in report["notes"][0]
    assert _value(metrics, "fine_tuned", "json_valid") >= 0.6
    assert _value(metrics, "fine_tuned", "exact_match") > 0
    # decoded inside the reply schema, the same model's replies are never less often valid
    assert _value(metrics, "fine_tuned_constrained", "json_valid") >= _value(metrics, "fine_tuned", "json_valid")
    assert report["models"]["fine_tuned"]["prompt_id"] == report["fine_tuned_model"]["prompt_id"] == "mrdabak-v2-short"
    assert Path(report["paths"]["markdown"]).read_text().startswith("#")

    # lineage and evaluation metadata are in the instance, as the UI shows them
    event = instance.get_latest_materialization_event(AssetKey("evaluation_report"))
    meta = event.asset_materialization.metadata
    assert "fine_tuned/json_valid" in meta and "summary" in meta
    promoted = instance.get_latest_materialization_event(AssetKey("promoted_model"))
    assert promoted is not None
    tuned = instance.get_latest_materialization_event(AssetKey("fine_tuned_model")).asset_materialization.metadata
    assert "data_high_water_mark" in tuned
