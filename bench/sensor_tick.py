"""Figure 5: one evaluation of the retrain sensor with ~1M messages in the raw DB.

The real sensor (`defs/automation.retrain_sensor`) is evaluated through Dagster's own
`build_sensor_context`, with the raw DB resource pointed at the seeded DB, so the figure includes
everything a daemon tick pays for except the gRPC hop. The baseline is the same tick on the DB ten
times smaller: a tick that grows with the DB (a scan instead of an index lookup) shows as a ratio
well above 1, even while the absolute number still meets the target.
"""

from __future__ import annotations

from collections.abc import Callable

from bench.common import Profile, Result, median_time
from bench.seeded import SeededDb, seeded_db

TICK_TARGET_S = 0.5


def _tick_fn(db: SeededDb) -> tuple[Callable[[], object], str]:
    """A no-argument callable doing one tick, and what it measures (the real sensor if it exists)."""
    try:
        from dagster import DagsterInstance, build_sensor_context

        from mrdabak_pipeline.defs.automation.automation import retrain_sensor
        from mrdabak_pipeline.defs.resources import RawDatabaseResource
    except ImportError:
        from datetime import datetime

        from mrdabak_pipeline.core.ingest.db import count_sessions_since, make_engine

        engine = make_engine(db.url)
        return (lambda: count_sessions_since(engine, datetime.min)), "count_sessions_since"

    instance = DagsterInstance.ephemeral()
    raw_db = RawDatabaseResource(url=db.url)

    def tick() -> object:
        # A fresh context per tick (as the daemon builds one per evaluation); no cursor and no
        # model yet is the worst case: the count covers the whole table.
        with build_sensor_context(instance=instance, resources={"raw_db": raw_db}) as ctx:
            return retrain_sensor(ctx)

    return tick, "retrain_sensor"


def run(profile: Profile) -> list[Result]:
    import logging

    logging.getLogger("dagster").setLevel(logging.WARNING)  # the sensor logs its decision every tick
    small_n, big_n = profile.sizes
    days = profile.history_days + 1
    small, big = seeded_db(small_n, days), seeded_db(big_n, days)
    tick_small, what = _tick_fn(small)
    tick_big, _ = _tick_fn(big)
    tick_small(), tick_big()  # warm-up: imports, engine creation, SQLite page cache
    repeats = max(5, profile.repeats * 3)
    # interleave so a neighbour's burst hits both sides alike
    t_big, t_small = [], []
    for _ in range(repeats):
        t_big.append(median_time(tick_big, 1))
        t_small.append(median_time(tick_small, 1))
    import statistics

    return [
        Result.measured(
            f"5 {what} tick ({big.messages} messages; baseline {small.messages})",
            statistics.median(t_big), "s", statistics.median(t_small),
            f"value <= {TICK_TARGET_S} s", lambda v, r: v <= TICK_TARGET_S,
        )
    ]
