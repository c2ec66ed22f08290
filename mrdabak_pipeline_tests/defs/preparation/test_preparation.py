"""Materialize a seeded partition in-process: raw -> cleaned/rejected -> augmented, checks pass."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import dagster as dg
import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, materialize

from mrdabak_pipeline.core import records
from mrdabak_pipeline.core.ingest.db import make_engine
from mrdabak_pipeline.core.ingest.seed import seed_database
from mrdabak_pipeline.core.prepare.augment import state_mismatches
from mrdabak_pipeline.core.prepare.cleaning import REJECTION_REASONS
from mrdabak_pipeline.defs.ingestion.assets import raw_conversation_logs
from mrdabak_pipeline.defs.io_manager import ParquetJsonIOManager
from mrdabak_pipeline.defs.preparation.assets import (
    SESSION_PREVIEW_COLUMNS,
    augment_sessions_asset,
    clean_sessions,
)
from mrdabak_pipeline.defs.resources import DataPathsResource, RawDatabaseResource

DAY = "2025-03-01"


@pytest.fixture
def seeded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    url = f"sqlite:///{tmp_path / 'raw.db'}"
    monkeypatch.setenv("MRDABAK_DB_URL", url)
    monkeypatch.setenv("MRDABAK_DATA_DIR", str(tmp_path / "data"))
    seed_database(make_engine(url), sessions=160, days=1, seed=3, end_date=date(2025, 3, 1), damage_rate=0.15)
    return tmp_path


def _run(tmp_path: Path, instance: DagsterInstance, config: dict | None = None):
    return materialize(
        [raw_conversation_logs, clean_sessions, augment_sessions_asset],
        partition_key=DAY,
        instance=instance,
        resources={
            "raw_db": RawDatabaseResource(),
            "data_paths": DataPathsResource(root=str(tmp_path / "data")),
            "io_manager": ParquetJsonIOManager(base_dir=str(tmp_path / "storage")),
        },
        run_config=config,
    )


def test_materialize_seeded_partition(seeded: Path) -> None:
    with DagsterInstance.ephemeral() as instance:
        result = _run(seeded, instance, {"ops": {"augment_sessions": {"config": {"k": 2, "seed": 5}}}})
        assert result.success
        evaluations = {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}
        assert set(evaluations) == {
            ("rejected_sessions", "conservation"),
            ("rejected_sessions", "rejection_rate"),
            ("cleaned_sessions", "no_pii"),
            ("augmented_sessions", "min_sessions"),
            ("augmented_sessions", "menu_coverage"),
            ("augmented_sessions", "complete_flows"),
            ("augmented_sessions", "error_handling_examples"),
            ("augmented_sessions", "variants_consistent"),
        }
        failed = [k for k, e in evaluations.items() if not e.passed]
        assert not failed, failed

        mats = {m.asset_key.to_user_string(): m for m in result.get_asset_materialization_events()}
        cleaned_md = mats["cleaned_sessions"].materialization.metadata
        rejected_md = mats["rejected_sessions"].materialization.metadata
        augmented_md = mats["augmented_sessions"].materialization.metadata
        assert {"preview", "pii_replaced", "dropped_order_states", "scenario_tags"} <= set(cleaned_md)
        assert {"rejections_by_reason", "row_balance", "rejection_rate"} <= set(rejected_md)
        assert {"coverage", "preview", "variants"} <= set(augmented_md)
        assert rejected_md["row_balance"].data["unaccounted"] == 0
        coverage = augmented_md["coverage"]
        assert isinstance(coverage, dg.TableMetadataValue)
        assert [(c.name, c.type) for c in coverage.schema.columns] == [("item", "string"), ("sessions", "int")]
        assert any(r.data["item"] == "dinner VALENTINE" and r.data["sessions"] > 0 for r in coverage.records)
        reasons = rejected_md["rejections_by_reason"]
        assert [c.name for c in reasons.schema.columns] == ["reason", "count"]
        assert sum(r.data["count"] for r in reasons.records) == rejected_md["rejected_sessions"].value
        counts = [r.data["count"] for r in reasons.records]
        assert counts == sorted(counts, reverse=True)  # most frequent reason first
        preview = cleaned_md["preview"]
        assert [c.name for c in preview.schema.columns] == list(SESSION_PREVIEW_COLUMNS) and preview.records
        assert "deliveryAddress" not in {c.name for c in preview.schema.columns}

    storage = seeded / "storage"
    cleaned = pq.read_table(storage / "cleaned_sessions" / f"{DAY}.parquet")
    rejected = pq.read_table(storage / "rejected_sessions" / f"{DAY}.parquet")
    augmented = pq.read_table(storage / "augmented_sessions" / f"{DAY}.parquet")
    raw = pq.read_table(storage / "raw_conversation_logs" / f"{DAY}.parquet")
    raw_ids = set(raw.column("session_id").to_pylist())
    cleaned_ids = set(cleaned.column("session_id").to_pylist())
    rejected_ids = set(rejected.column("session_id").to_pylist())
    assert cleaned_ids | rejected_ids == raw_ids and not cleaned_ids & rejected_ids
    assert rejected.num_rows > 0
    assert set(rejected.column("reason").to_pylist()) <= set(REJECTION_REASONS)

    # names were pseudonymized: no raw customer name survives in its own session
    raw_names = {r["session_id"]: r["customer_name"] for r in raw.select(["session_id", "customer_name"]).to_pylist()}
    for s in records.sessions_from_table(cleaned):
        real = raw_names[s.session_id]
        assert real and s.customer_name != real
        assert all(real not in t.content for t in s.turns)

    sessions = records.sessions_from_table(augmented)
    assert augmented.schema.equals(records.SESSION_SCHEMA)
    assert {s.variant for s in sessions} == {0, 1, 2}
    assert {s.source_session_id for s in sessions} == cleaned_ids
    assert all(not state_mismatches(s) for s in sessions if "out_of_domain" not in s.tags and "order_state_dropped" not in s.tags)


def test_rejection_rate_threshold_fails_the_check(seeded: Path) -> None:
    with DagsterInstance.ephemeral() as instance:
        result = _run(seeded, instance, {"ops": {"clean_sessions": {"config": {"max_rejection_rate": 0.0}}}})
        evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
        assert not evaluations["rejection_rate"].passed
        assert evaluations["rejection_rate"].metadata["rejection_rate"].value > 0
        assert evaluations["conservation"].passed
