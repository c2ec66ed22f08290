"""No-op assets with the real keys, partitioning and lineage, wired to the real automation.

Lets the automation tests (and the PostgreSQL instance test, which loads this file as a code
location) exercise jobs, schedules and sensors without running the pipeline's heavy assets.
"""

from __future__ import annotations

from dagster import AssetsDefinition, Definitions, FilesystemIOManager, asset

from mrdabak_pipeline.defs import automation
from mrdabak_pipeline.defs.partitions import daily_partitions
from mrdabak_pipeline.defs.resources import RawDatabaseResource

UPSTREAM: dict[str, list[str]] = {
    "raw_conversation_logs": [],
    "cleaned_sessions": ["raw_conversation_logs"],
    "rejected_sessions": ["raw_conversation_logs"],
    "augmented_sessions": ["cleaned_sessions"],
    "openai_chat_dataset": ["augmented_sessions"],
    "huggingface_dataset": ["augmented_sessions"],
    "fine_tuned_model": ["openai_chat_dataset", "huggingface_dataset"],
    "evaluation_report": ["fine_tuned_model"],
    "promoted_model": ["evaluation_report"],
}


def stand_in_assets() -> list[AssetsDefinition]:
    out = []
    for name, upstream in UPSTREAM.items():
        partitions = daily_partitions if name in automation.DAILY_ASSETS else None

        @asset(name=name, deps=upstream, partitions_def=partitions, group_name="stand_in")
        def _noop() -> None:
            return None

        out.append(_noop)
    return out


def build_stand_in_defs(raw_db: RawDatabaseResource | None = None) -> Definitions:
    return Definitions(
        assets=stand_in_assets(),
        jobs=automation.jobs,
        schedules=automation.schedules,
        sensors=automation.sensors,
        resources={"raw_db": raw_db or RawDatabaseResource(), "io_manager": FilesystemIOManager()},
    )


defs = build_stand_in_defs()
