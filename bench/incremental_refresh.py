"""Figure 4: the nightly refresh of one new day, with 90 days of history vs on an empty history.

Measured through the real code path the nightly job runs: Dagster's `materialize` of the daily
assets (`raw_conversation_logs` -> `clean_sessions` -> `augment_sessions` -> `dataset_shards`, with
their inline checks and the Parquet IO manager) for one partition key, on a persistent (SQLite)
instance. (Before the day shards, the last step was not part of the refresh: the datasets run
formatted and counted every stored day instead.)

* value: the raw DB holds all ``history_days + 1`` days, the IO manager already stores the 90
  earlier partitions and the instance holds their run/event history (one single-run backfill);
  the last day is refreshed. This runs at the profile's smaller size (a backfill at the big size
  would cost as much as figure 1 again); a second row refreshes a day of the big DB (~1M
  messages) with the history in the raw DB only, which is where cost grows with history.
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
from bench.seeded import SeededDb, copy_one_day, seeded_db

RATIO_TARGET = 1.3


def _assets() -> list[Any]:
    """The daily assets the nightly job refreshes, the day's dataset shard included."""
    from dagster import load_assets_from_modules

    from mrdabak_pipeline.defs.datasets.assets import dataset_shards
    from mrdabak_pipeline.defs.ingestion import assets as ingestion
    from mrdabak_pipeline.defs.preparation import assets as preparation

    return [*load_assets_from_modules([ingestion, preparation]), dataset_shards]


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


def _scenario(db: SeededDb, history_days: int, repeats: int, backfill: bool) -> tuple[float, float, str]:
    """Median seconds to refresh the DB's last day (with history, on an empty history) + a note."""
    from dagster import DagsterInstance

    assets = _assets()
    new_day = db.day(0).isoformat()
    first, last_history = db.day(history_days).isoformat(), db.day(1).isoformat()
    with tempfile.TemporaryDirectory(prefix="bench-refresh-") as tmp:
        root = Path(tmp)
        one_day_url = copy_one_day(db, db.day(0), root / "one_day.db")
        for home in ("hist_home", "empty_home"):
            (root / home).mkdir()
        with DagsterInstance.local_temp(str(root / "hist_home")) as hist, \
                DagsterInstance.local_temp(str(root / "empty_home")) as empty:
            note = "history = raw DB only"
            if backfill:
                t_backfill = _materialize(assets, hist, db.url, root / "hist_storage", tags={
                    "dagster/asset_partition_range_start": first, "dagster/asset_partition_range_end": last_history})
                stored = len(list((root / "hist_storage" / "augmented_sessions").glob("*.parquet")))
                note = f"history = raw DB + {stored} stored days + their runs (backfilled in {t_backfill:.0f} s)"
            with_history, empty_history = [], []
            for i in range(max(2, repeats)):
                # the empty side starts empty every time: a fresh storage folder (its instance only
                # ever holds these few runs); the two sides alternate so load drift hits both
                empty_history.append(_materialize(assets, empty, one_day_url, root / f"empty_storage_{i}",
                                                  partition_key=new_day))
                with_history.append(_materialize(assets, hist, db.url, root / "hist_storage", partition_key=new_day))
    print(f"  {db.sessions} sessions, {note}: refresh {new_day} with history "
          f"{[round(x, 2) for x in with_history]} s, empty {[round(x, 2) for x in empty_history]} s", flush=True)
    return statistics.median(with_history), statistics.median(empty_history), note


def run(profile: Profile) -> list[Result]:
    target = f"ratio <= {RATIO_TARGET}"
    reason = missing("mrdabak_pipeline.defs.preparation.assets")
    if reason:
        return [Result.skipped("4 incremental refresh", "s", target, reason)]
    logging.getLogger("dagster").setLevel(logging.WARNING)
    days = profile.history_days + 1
    small, big = seeded_db(profile.sizes[0], days), seeded_db(profile.sizes[1], days)
    check = lambda v, r: r is not None and r <= RATIO_TARGET  # noqa: E731
    # Full history (DB + stored partitions + run history) at the smaller traffic: a single-run
    # backfill of 90 days at the big size would cost as much as figure 1 again, with k=3.
    v, b, _ = _scenario(small, profile.history_days, profile.repeats, backfill=True)
    out = [Result.measured(
        f"4 nightly refresh of 1 day after {profile.history_days} days of full history "
        f"({small.sessions} sessions / {small.messages} messages in DB)", v, "s", b, target, check)]
    # The raw DB at the big size: what grows fastest with history is the window queries.
    v, b, _ = _scenario(big, profile.history_days, profile.repeats, backfill=False)
    out.append(Result.measured(
        f"4 nightly refresh of 1 day, {profile.history_days} days of history in the raw DB only "
        f"({big.sessions} sessions / {big.messages} messages)", v, "s", b, target, check))
    return out
