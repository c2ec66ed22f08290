"""Every private Dagster name this project uses, in one place.

Dagster's public API (``import dagster as dg``) is what the rest of the shell uses. The names below
have no public spelling in Dagster 1.13; they are imported here, and only here, so an upgrade that
moves one breaks a single import with an obvious fix, and `grep dagster._` finds the whole list.
Before adding a name, check ``dir(dagster)``: a public one wins (e.g. `dg.DagsterExecutionInterruptedError`
is public, so it is not here).
"""

from __future__ import annotations

# The exception `PipesSubprocessClient.run` raises when the external training process exits non-zero:
# `fine_tuned_model` catches it to turn the process's own error file into a readable failure.
from dagster._core.errors import DagsterPipesExecutionError

# What a custom run launcher's `check_run_worker_health` must return (defs/run_launcher.py): the
# RunLauncher interface itself is not public, so neither is its result type.
from dagster._core.launcher.base import CheckRunHealthResult, WorkerStatus

# The tags a single-run backfill puts on its run (the range of partitions it covers) and the tag
# holding a run's code-server address: read by the retrain sensor and the run launcher; Dagster
# exports no public constant for them.
from dagster._core.storage.tags import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    GRPC_INFO_TAG,
)

# The error type of a failed step's event (the failure sensor reads its root cause); Dagster's
# sensors hand it out but do not export the class.
from dagster._utils.error import SerializableErrorInfo

__all__ = [
    "ASSET_PARTITION_RANGE_END_TAG",
    "ASSET_PARTITION_RANGE_START_TAG",
    "GRPC_INFO_TAG",
    "CheckRunHealthResult",
    "DagsterPipesExecutionError",
    "SerializableErrorInfo",
    "WorkerStatus",
]
