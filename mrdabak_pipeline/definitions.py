"""The one `Definitions` object of the code location: assets, checks, resources, automation."""

from __future__ import annotations

import importlib
from types import ModuleType

from dagster import (
    Definitions,
    PipesSubprocessClient,
    in_process_executor,
    load_asset_checks_from_modules,
    load_assets_from_modules,
)

from mrdabak_pipeline.defs.io_manager import ParquetJsonIOManager
from mrdabak_pipeline.defs.resources import DataPathsResource, RawDatabaseResource

#: The Dagster shell, one module per asset group (plus automation), in lineage order.
ASSET_MODULES = ("ingestion", "preparation", "datasets", "training", "evaluation")


def _module(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(f"mrdabak_pipeline.defs.{name}")
    except ModuleNotFoundError as exc:  # TODO(lead): strict once every group has landed
        if exc.name != f"mrdabak_pipeline.defs.{name}":
            raise
        return None


def build_definitions() -> Definitions:
    modules = [m for m in map(_module, ASSET_MODULES) if m is not None]
    resources: dict[str, object] = {
        "io_manager": ParquetJsonIOManager(),
        "raw_db": RawDatabaseResource(),
        "data_paths": DataPathsResource(),
        "pipes_subprocess_client": PipesSubprocessClient(),
    }
    cloud = _module("cloud")
    if cloud is not None and hasattr(cloud, "default_openai_resource"):
        resources["openai"] = cloud.default_openai_resource()
    automation = _module("automation")
    return Definitions(
        assets=load_assets_from_modules(modules),
        asset_checks=load_asset_checks_from_modules(modules),
        resources=resources,
        jobs=getattr(automation, "jobs", []),
        schedules=getattr(automation, "schedules", []),
        sensors=getattr(automation, "sensors", []),
        # Steps run in the run worker's process: each step would otherwise pay ~10 s of importing
        # torch/transformers in a fresh subprocess, and training is isolated by Pipes anyway.
        executor=in_process_executor,
    )


defs = build_definitions()
