"""Resources shared by the asset groups: the raw conversation DB and the data folder."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr
from sqlalchemy import Engine

from mrdabak_pipeline.core.ingest.db import make_engine

DATA_DIR_ENV = "MRDABAK_DATA_DIR"


def default_data_dir() -> Path:
    """`MRDABAK_DATA_DIR`, else ``./data``: where every generated artifact goes."""
    return Path(os.environ.get(DATA_DIR_ENV, "data")).absolute()


class RawDatabaseResource(dg.ConfigurableResource):
    """The production app's conversation database (read-only for the pipeline).

    `url` stays unset in code: the URL (which may hold a password) is read from `MRDABAK_DB_URL`
    at run time, so it never shows up in run config or the UI. Unset means the SQLite file under
    ``data/``.
    """

    url: str | None = None
    _engine: Engine | None = PrivateAttr(default=None)

    def get_engine(self) -> Engine:
        if self._engine is None:
            self._engine = make_engine(self.url)
        return self._engine

    @property
    def dialect(self) -> str:
        return self.get_engine().dialect.name


class DataPathsResource(dg.ConfigurableResource):
    """Where datasets, models and reports are written (`MRDABAK_DATA_DIR`, default ``./data``)."""

    root: str | None = None

    @cached_property
    def root_path(self) -> Path:
        path = Path(self.root).absolute() if self.root else default_data_dir()
        path.mkdir(parents=True, exist_ok=True)
        return path

    def sub(self, name: str) -> Path:
        """A sub-folder of the data root, created on demand (``datasets``, ``models``, ``reports``)."""
        path = self.root_path / name
        path.mkdir(parents=True, exist_ok=True)
        return path


@dg.definitions
def shared_resources() -> dg.Definitions:
    """The resources every stage uses, and the executor.

    Steps run in the run worker's process (`in_process_executor`): each step would otherwise pay
    ~10 s of importing torch/transformers in a fresh subprocess, and training is isolated by
    Pipes anyway. Settings (DB URL, data folder) come from the environment at run time, so
    loading the definitions never needs a secret.
    """
    from mrdabak_pipeline.defs.io_manager import ParquetJsonIOManager

    return dg.Definitions(
        resources={"io_manager": ParquetJsonIOManager(), "raw_db": RawDatabaseResource(), "data_paths": DataPathsResource()},
        executor=dg.in_process_executor,
    )
