"""Figure 4: the nightly refresh of one new day, with 90 days of history vs on an empty history.

Measured through the real code path the nightly job runs: Dagster's `materialize` of the daily
assets (`raw_conversation_logs` -> `clean_sessions` -> `augment_sessions`, with their inline
checks and the Parquet IO manager) for one partition key, on a persistent (SQLite) instance.

* value: the raw DB holds all ``history_days + 1`` days, the IO manager already stores the 90
  earlier partitions and the instance holds their run/event history (one single-run backfill);
  the last day is refreshed.
* baseline: a fresh instance, empty storage, and a raw DB holding only that day's rows (copied
  byte for byte from the big DB), the same day refreshed.

A refresh whose cost grows with history (a window query that scans the table, a downstream asset
that reads every stored partition) shows up as a ratio above 1.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import Profile, Result, missing
from bench.seeded import copy_one_day, seeded_db

RATIO_TARGET = 1.3


def _assets() -> list[Any]:
    from dagster import load_assets_from_modules

    from mrdabak_pipeline.defs import ingestion, preparation

    return list(load_assets_from_modules([ingestion, preparation]))


def _materialize(assets: list[Any], instance: Any, db_url: str, storage: Path, tags: dict[str, str] | None = None,
                 partition_key: str | None = None) -> float:
    from dagster import materialize

    from mrdabak_pipeline.defs.io_manager import ParquetJsonIOManager
    from mrdabak_pipeline.defs.resources import RawDatabaseResource

    t0 = time.perf_counter()
    result = materialize(
        assets, instance=instance, partition_key=partition_key, tags=tags,
        run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        resources={"io_manager": ParquetJsonIOManager(base_dir=str(storage)), "raw_db": RawDatabaseResource(url=db_url)},
        raise_on_error=True,
    )
    if not result.success:
        raise RuntimeError("materialization failed")
    return time.perf_counter() - t0


def run(profile: Profile) -> list[Result]:
    target = f"ratio <= {RATIO_TARGET}"
    reason = missing("mrdabak_pipeline.defs.preparation")
    if reason:
        return [Result.skipped("4 incremental refresh", "s", target, reason)]
    from dagster import DagsterInstance

    logging.getLogger("dagster").setLevel(logging.WARNING)
    big = seeded_db(profile.sizes[1], profile.history_days + 1)
    new_day = big.day(0).isoformat()
    first, last_history = big.day(profile.history_days).isoformat(), big.day(1).isoformat()
    assets = _assets()
    with tempfile.TemporaryDirectory(prefix="bench-refresh-") as tmp:
        root = Path(tmp)
        one_day_url = copy_one_day(big, big.day(0), root / "one_day.db")
        for home in ("hist_home", "empty_home"):
            (root / home).mkdir()
        with DagsterInstance.local_temp(str(root / "hist_home")) as hist, \
                DagsterInstance.local_temp(str(root / "empty_home")) as empty:
            t_backfill = _materialize(assets, hist, big.url, root / "hist_storage", tags={
                "dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last_history})
            stored = len(list((root / "hist_storage" / "augmented_sessions").glob("*.parquet")))
            print(f"  history: {stored} days stored by one single-run backfill in {t_backfill:.1f} s", flush=True)
            with_history, empty_history = [], []
            for i in range(max(2, profile.repeats)):
                # the empty side starts empty every time: fresh storage folder (the instance's own
                # run history stays small, a handful of runs)
                empty_history.append(_materialize(assets, empty, one_day_url, root / f"empty_storage_{i}",
                                                  partition_key=new_day))
                with_history.append(_materialize(assets, hist, big.url, root / "hist_storage", partition_key=new_day))
    v, b = statistics.median(with_history), statistics.median(empty_history)
    print(f"  refresh {new_day}: with history {[round(x, 2) for x in with_history]} s, "
          f"empty {[round(x, 2) for x in empty_history]} s", flush=True)
    return [Result.measured(
        f"4 nightly refresh of 1 day after {profile.history_days} days of history ({big.sessions} sessions in DB)",
        v, "s", b, target, lambda v_, r: r is not None and r <= RATIO_TARGET,
    )]
