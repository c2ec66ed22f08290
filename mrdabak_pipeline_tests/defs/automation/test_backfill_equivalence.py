"""A backfill over many days gives the same datasets whether it runs as one run or as many.

The daily assets declare ``BackfillPolicy.single_run()``, so a backfill launched from the UI is one
run over the whole range; but a backfill can equally be one run per day (the nightly schedule's
runs, a multi-run backfill, or runs the run queue / ``K8sRunLauncher`` spreads over pods in any
order). Both must leave the same stored partitions and therefore byte-identical datasets: nothing
in cleaning, pseudonymization or augmentation may depend on which days share a run or on the
order the runs finish in (seeds are per session, duplicates are dropped per session, the datasets
read every stored day).

Each side gets its own data folder and instance; the raw DB is the same file, read only.
"""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import dagster as dg
import pyarrow.parquet as pq
import pytest

from mrdabak_pipeline.core.ingest.db import make_engine
from mrdabak_pipeline.core.ingest.seed import seed_database
from mrdabak_pipeline.core.runtime.files import sha256_file
from mrdabak_pipeline.defs.automation.automation import DAILY_ASSETS
from mrdabak_pipeline.defs.compat import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

LAST_DAY = date(2026, 11, 20)
DAYS = [(LAST_DAY - timedelta(days=n)).isoformat() for n in range(3, -1, -1)]  # 4 days, oldest first
# k=1: a variant per session, so augmentation's seeding and duplicate dropping are exercised.
REFRESH_CONFIG = {"ops": {"augment_sessions": {"config": {"k": 1}}}}
SPLITS = ("train", "validation")


def _refresh_as_one_run(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    """A single-run backfill over the range, tagged the way the UI's backfill tags it."""
    result = defs.resolve_job_def("daily_refresh_job").execute_in_process(
        instance=instance, run_config=REFRESH_CONFIG,
        tags={ASSET_PARTITION_RANGE_START_TAG: DAYS[0], ASSET_PARTITION_RANGE_END_TAG: DAYS[-1]},
    )
    assert result.success
    assert {e.partition for e in result.get_asset_materialization_events()} == set(DAYS)


def _refresh_run_per_day(defs: dg.Definitions, instance: dg.DagsterInstance) -> None:
    """One run per day, newest first: spread runs finish in no particular order."""
    for day in reversed(DAYS):
        result = defs.resolve_job_def("daily_refresh_job").execute_in_process(
            instance=instance, run_config=REFRESH_CONFIG, partition_key=day,
        )
        assert result.success
        assert {e.partition for e in result.get_asset_materialization_events()} == {day}


def _build(refresh: Any, data_dir: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Refresh the days into `data_dir`, then rebuild the datasets there; their stored values."""
    monkeypatch.setenv("MRDABAK_DATA_DIR", str(data_dir))  # read by the resources at run time
    from mrdabak_pipeline.definitions import build_definitions

    defs = build_definitions()
    with dg.DagsterInstance.ephemeral() as instance:
        refresh(defs, instance)
        datasets = defs.resolve_job_def("datasets_job").execute_in_process(instance=instance)
        assert datasets.success
    storage = data_dir / "storage"
    return {name: json.loads((storage / f"{name}.json").read_text(encoding="utf-8"))
            for name in ("openai_chat_dataset", "huggingface_dataset", "dpo_dataset")}


@pytest.mark.timeout(600)
def test_a_backfill_as_runs_per_day_gives_the_same_datasets_as_one_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = f"sqlite:///{tmp_path / 'raw.db'}"
    monkeypatch.setenv("MRDABAK_DB_URL", url)
    seed_database(make_engine(url), sessions=60, days=len(DAYS), seed=11, end_date=LAST_DAY, damage_rate=0.1)

    one = _build(_refresh_as_one_run, tmp_path / "one_run", monkeypatch)
    many = _build(_refresh_run_per_day, tmp_path / "per_day", monkeypatch)

    # The stored daily partitions are the same tables (row order included).
    for asset in DAILY_ASSETS:
        for day in DAYS:
            a = pq.read_table(tmp_path / "one_run" / "storage" / asset / f"{day}.parquet")
            b = pq.read_table(tmp_path / "per_day" / "storage" / asset / f"{day}.parquet")
            assert a.equals(b), f"{asset} {day} differs"
    assert pq.read_table(tmp_path / "one_run" / "storage" / "augmented_sessions" / f"{DAYS[0]}.parquet").num_rows > 0

    # openai_chat_dataset: the same JSONL bytes, hash and high-water mark; not an empty dataset.
    a, b = one["openai_chat_dataset"], many["openai_chat_dataset"]
    assert a["train_examples"] > 20 and a["validation_examples"] > 0
    for split in SPLITS:
        train_a, train_b = Path(a[f"{split}_path"]), Path(b[f"{split}_path"])
        assert train_a.is_relative_to(tmp_path / "one_run") and train_b.is_relative_to(tmp_path / "per_day")
        assert train_a.read_bytes() == train_b.read_bytes()
        assert a[f"{split}_sha256"] == b[f"{split}_sha256"] == sha256_file(train_b)
    assert a["data_high_water_mark"] == b["data_high_water_mark"]
    assert a["data_high_water_mark"].startswith(DAYS[-1])

    # huggingface_dataset: the same content hash (its folder is content-addressed) and JSONL bytes.
    a, b = one["huggingface_dataset"], many["huggingface_dataset"]
    assert a["sha256"] == b["sha256"]
    assert (a["train_examples"], a["validation_examples"]) == (b["train_examples"], b["validation_examples"])
    for split in SPLITS:
        assert Path(a[f"{split}_jsonl"]).read_bytes() == Path(b[f"{split}_jsonl"]).read_bytes()
    assert Path(a["path"]).relative_to(tmp_path / "one_run") == Path(b["path"]).relative_to(tmp_path / "per_day")

    # dpo_dataset: the same pairs in the same files (OpenAI and TRL flavours, both splits).
    a, b = one["dpo_dataset"], many["dpo_dataset"]
    hashes = sorted(k for k in a if k.endswith("_sha256"))
    assert len(hashes) == 4 and a["pair_count"] == b["pair_count"]
    assert {k: a[k] for k in hashes} == {k: b[k] for k in hashes}
