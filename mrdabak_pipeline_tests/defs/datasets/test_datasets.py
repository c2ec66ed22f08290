"""The datasets group end to end: stored augmented partitions -> files, metadata and blocking checks."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, asset, materialize

from mrdabak_pipeline.core import records
from mrdabak_pipeline.core.datasets.validation import validate_jsonl
from mrdabak_pipeline.defs.datasets import assets as D
from mrdabak_pipeline.defs.io_manager import ParquetJsonIOManager
from mrdabak_pipeline.defs.partitions import daily_partitions
from mrdabak_pipeline.defs.resources import DataPathsResource
from mrdabak_pipeline_tests.dataset_helpers import corrected_session, order_session


@asset(name="augmented_sessions", partitions_def=daily_partitions)
def augmented_stub() -> None:
    """Stands in for the preparation asset: its partitions are written by hand below."""
    raise AssertionError("not materialized in these tests")


ASSETS = [augmented_stub, D.dataset_shards, D.openai_chat_dataset, D.huggingface_dataset, D.dpo_dataset,
          D.openai_chat_format, D.openai_chat_token_limits, D.huggingface_loadable]
DAYS = ("2025-03-01", "2025-03-05")
SELECTION = [AssetKey("openai_chat_dataset"), AssetKey("huggingface_dataset"), AssetKey("dpo_dataset")]


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("MRDABAK_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("MRDABAK_DB_URL", f"sqlite:///{tmp_path / 'unused.db'}")
    folder = tmp_path / "storage" / "augmented_sessions"
    folder.mkdir(parents=True)
    for day, n in (("2025-03-01", 30), ("2025-03-05", 20)):
        start = datetime.fromisoformat(day) + timedelta(hours=9)
        sessions = [
            order_session(f"{day}-s{i}", created_at=start + timedelta(minutes=i), name=f"고객{day[-1]}{i}")
            for i in range(n)
        ]
        if day == "2025-03-01":
            sessions.append(corrected_session("corr-1"))
        pq.write_table(records.sessions_to_table(sessions), folder / f"{day}.parquet")
    return tmp_path


def _shards(config: dict | None = None) -> None:
    """Each stored day's shard, as the nightly refresh makes it."""
    for day in DAYS:
        materialize(ASSETS, selection=[AssetKey("dataset_shards")], partition_key=day, resources={"io_manager": ParquetJsonIOManager(), "data_paths": DataPathsResource()},
                    run_config={"ops": {"dataset_shards": {"config": config}}} if config else None)


def _run(run_config: dict | None = None, raise_on_error: bool = True, shards: dict | None = None):
    _shards(shards)
    return materialize(
        ASSETS,
        selection=SELECTION,
        resources={"io_manager": ParquetJsonIOManager(), "data_paths": DataPathsResource()},
        run_config=run_config,
        raise_on_error=raise_on_error,
    )


def _metadata(result, name: str) -> dict:
    [mat] = result.asset_materializations_for_node(name)
    return {k: getattr(v, "value", v) for k, v in mat.metadata.items()}


def test_datasets_are_written_where_the_metadata_says(data_dir: Path) -> None:
    result = _run()
    assert result.success
    stored = json.loads((data_dir / "storage" / "openai_chat_dataset.json").read_text(encoding="utf-8"))
    meta = _metadata(result, "openai_chat_dataset")
    train = Path(meta["train_path"])
    assert train.is_relative_to(data_dir / "datasets") and train == Path(stored["train_path"])
    assert hashlib.sha256(train.read_bytes()).hexdigest() == meta["train_sha256"] == stored["train_sha256"]
    assert meta["train_examples"] + meta["validation_examples"] == 51
    assert validate_jsonl(train).n_examples == meta["train_examples"]
    assert isinstance(meta["estimated_cost_usd"], float) and meta["estimated_cost_usd"] > 0
    assert meta["token_count_exact"] is True and "o200k_base" in meta["encoding"]
    dist = meta["distributions"]
    assert isinstance(dist, dg.TableMetadataValue)
    assert [(c.name, c.type) for c in dist.schema.columns][:3] == [("split", "string"), ("per_example", "string"), ("min", "float")]
    tokens = {r.data["split"]: r.data for r in dist.records if r.data["per_example"] == "tokens per example"}
    assert set(tokens) == {"train", "validation"} and 0 < tokens["train"]["min"] <= tokens["train"]["max"]
    assert [c.name for c in meta["warnings"].schema.columns] == ["warning"]
    assert stored["data_high_water_mark"] == "2025-03-05T09:19:00.000000"

    hf = _metadata(result, "huggingface_dataset")
    assert Path(hf["path"]).is_dir() and hf["train_examples"] == meta["train_examples"]
    dpo = _metadata(result, "dpo_dataset")
    assert dpo["pair_count"] == 1

    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"openai_chat_format": True, "openai_chat_token_limits": True, "huggingface_loadable": True}


def test_window_keeps_only_the_last_days(data_dir: Path) -> None:
    result = _run({"ops": {"openai_chat_dataset": {"config": {"window_days": 1}}}}, shards={"target": "text"})
    meta = _metadata(result, "openai_chat_dataset")
    assert meta["train_examples"] + meta["validation_examples"] == 20
    assert meta["target"] == "text" and meta["days"] == 1


def test_a_format_error_blocks_the_downstream_dataset(data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = D.assemble_openai_dataset

    def planted(*args, **kwargs) -> dict:
        value = real(*args, **kwargs)
        path = Path(value["train_path"])
        path.write_text(path.read_text(encoding="utf-8") + '{"messages": [{"role": "customer", "content": "안녕"}]}\n', encoding="utf-8")
        value["train_sha256"] = hashlib.sha256(path.read_bytes()).hexdigest()
        return value

    monkeypatch.setattr(D, "assemble_openai_dataset", planted)
    result = _run(raise_on_error=False)
    [fmt] = [e for e in result.get_asset_check_evaluations() if e.check_name == "openai_chat_format"]
    assert fmt.passed is False
    assert fmt.metadata["errors_unrecognized_role"].value == 1
    assert fmt.metadata["errors_example_missing_assistant_message"].value == 1
    problems = [r.data["problem"] for r in fmt.metadata["problems"].records]
    assert any("unrecognized_role" in p for p in problems) and any("missing_assistant_message" in p for p in problems)
    assert result.asset_materializations_for_node("huggingface_dataset") == []
