"""The one `Definitions` object of the code location: assets, checks, resources, automation."""

from dagster import (
    Definitions,
    PipesSubprocessClient,
    in_process_executor,
    load_asset_checks_from_modules,
    load_assets_from_modules,
)

from mrdabak_pipeline.defs import automation, cloud, datasets, evaluation, ingestion, preparation, training
from mrdabak_pipeline.defs.io_manager import ParquetJsonIOManager
from mrdabak_pipeline.defs.resources import DataPathsResource, RawDatabaseResource

#: The Dagster shell, one module per asset group, in lineage order.
ASSET_MODULES = (ingestion, preparation, datasets, training, evaluation)


def build_definitions() -> Definitions:
    """Resources read their settings (DB URL, data folder, API keys) from the environment at run
    time, so building the definitions never needs a secret."""
    return Definitions(
        assets=load_assets_from_modules(ASSET_MODULES),
        asset_checks=load_asset_checks_from_modules(ASSET_MODULES),
        resources={
            "io_manager": ParquetJsonIOManager(),
            "raw_db": RawDatabaseResource(),
            "data_paths": DataPathsResource(),
            "pipes_subprocess_client": PipesSubprocessClient(),
            "openai": cloud.default_openai_resource(),
        },
        jobs=automation.jobs,
        schedules=automation.schedules,
        sensors=automation.sensors,
        # Steps run in the run worker's process: each step would otherwise pay ~10 s of importing
        # torch/transformers in a fresh subprocess, and training is isolated by Pipes anyway.
        executor=in_process_executor,
    )


defs = build_definitions()
