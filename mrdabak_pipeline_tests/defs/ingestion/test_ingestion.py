"""raw_conversation_logs materializes a day (or a range in one run) with its metadata."""

from __future__ import annotations

from datetime import date

import dagster as dg
import pyarrow.parquet as pq
from dagster import DagsterInstance, materialize

from mrdabak_pipeline.core.ingest.db import make_engine
from mrdabak_pipeline.core.ingest.seed import seed_database
from mrdabak_pipeline.defs.compat import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from mrdabak_pipeline.defs.ingestion.assets import RAW_PREVIEW_COLUMNS, raw_conversation_logs
from mrdabak_pipeline.defs.io_manager import ParquetJsonIOManager
from mrdabak_pipeline.defs.resources import RawDatabaseResource


def test_materialize_one_day_and_a_range(tmp_path):
    url = f"sqlite:///{tmp_path / 'raw.db'}"
    seed_database(make_engine(url), sessions=80, days=3, seed=3, end_date=date(2026, 11, 20), damage_rate=0.2)
    resources = {"raw_db": RawDatabaseResource(url=url), "io_manager": ParquetJsonIOManager(base_dir=str(tmp_path / "st"))}
    instance = DagsterInstance.ephemeral()
    result = materialize([raw_conversation_logs], partition_key="2026-11-19", resources=resources, instance=instance)
    assert result.success
    meta = result.asset_materializations_for_node("raw_conversation_logs")[0].metadata
    assert meta["session_count"].value > 10
    preview = meta["preview"]
    assert isinstance(preview, dg.TableMetadataValue)
    assert [c.name for c in preview.schema.columns] == RAW_PREVIEW_COLUMNS and len(preview.records) == 8
    assert {c.name: c.type for c in preview.schema.columns}["content_chars"] == "int"
    assert sum(r.data["rows"] for r in meta["rows_per_day"].records) == meta["dagster/row_count"].value
    flags = {r.data["flag"]: r.data["count"] for r in meta["flags"].records}
    assert sum(flags.values()) == meta["flagged_rows"].value
    stored = pq.read_table(tmp_path / "st" / "raw_conversation_logs" / "2026-11-19.parquet")
    assert stored.num_rows == meta["dagster/row_count"].value

    # a single-run backfill over three days (range tags, as the UI's backfill sends them)
    result = materialize(
        [raw_conversation_logs], resources=resources, instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: "2026-11-18", ASSET_PARTITION_RANGE_END_TAG: "2026-11-20"},
    )
    assert result.success
    for day in ("2026-11-18", "2026-11-19", "2026-11-20"):
        t = pq.read_table(tmp_path / "st" / "raw_conversation_logs" / f"{day}.parquet")
        assert t.num_rows > 0
        assert set(t.column("partition_date").to_pylist()) == {day}


def test_an_empty_day_is_an_empty_partition_not_an_error(tmp_path):
    url = f"sqlite:///{tmp_path / 'raw.db'}"
    seed_database(make_engine(url), sessions=5, days=1, seed=3, end_date=date(2026, 11, 20))
    result = materialize(
        [raw_conversation_logs], partition_key="2026-01-05",
        resources={"raw_db": RawDatabaseResource(url=url), "io_manager": ParquetJsonIOManager(base_dir=str(tmp_path / "st"))},
    )
    assert result.success
    assert result.asset_materializations_for_node("raw_conversation_logs")[0].metadata["session_count"].value == 0
