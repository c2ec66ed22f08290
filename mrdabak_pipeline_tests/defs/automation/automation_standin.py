"""No-op assets generated from the real asset graph, wired to the real automation.

Lets the automation tests (and the PostgreSQL instance test, which loads this file as a code
location) exercise jobs, schedules and sensors without running the pipeline's heavy assets. Every
key, dependency, partitioning, backfill policy and pool is read from the real `Definitions`, so the
stand-in cannot drift from the pipeline (`test_stand_in_mirrors_the_real_graph` checks it).
"""

from __future__ import annotations

from dagster import AssetKey, AssetsDefinition, Definitions, FilesystemIOManager, asset

from mrdabak_pipeline.defs.automation import automation
from mrdabak_pipeline.defs.resources import RawDatabaseResource


def stand_in_assets() -> list[AssetsDefinition]:
    """One no-op asset per real asset key, with the real key's lineage and execution settings."""
    from mrdabak_pipeline.definitions import defs as real

    graph = real.resolve_asset_graph()
    out = []
    for key in sorted(graph.get_all_asset_keys(), key=AssetKey.to_user_string):
        node = graph.get(key)

        @asset(
            key=key,
            deps=sorted(node.parent_keys, key=AssetKey.to_user_string),
            partitions_def=node.partitions_def,
            backfill_policy=node.backfill_policy,
            pool=real.resolve_assets_def(key).op.pool,
            group_name="stand_in",
        )
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
