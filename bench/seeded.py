"""Seeded raw databases for the benchmarks, built once and cached under ``bench/.cache``.

Seeding 100k sessions (~1M messages) takes about a minute, so a DB is keyed by its parameters and
reused; its seeding time is stored beside it and reported (it is not part of the 60 s chain).
The seed and the end date are fixed so every run measures the same conversations.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import time
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path

from bench.common import cache_dir, emit, run_worker

SEED = 7
END_DATE = date(2025, 6, 30)  # inside daily_partitions (start 2025-01-01) with > 90 days before it


@dataclass(frozen=True)
class SeededDb:
    path: Path
    sessions: int
    messages: int
    days: int
    end_date: date
    seed_seconds: float
    seed_peak_rss_mib: float

    @property
    def url(self) -> str:
        return f"sqlite:///{self.path}"

    def day(self, offset_from_end: int = 0) -> date:
        return self.end_date - timedelta(days=offset_from_end)


def _paths(sessions: int, days: int) -> tuple[Path, Path]:
    stem = f"raw_{sessions}s_{days}d_{END_DATE.isoformat()}_seed{SEED}"
    return cache_dir() / f"{stem}.db", cache_dir() / f"{stem}.json"


def seeded_db(sessions: int, days: int) -> SeededDb:
    """The cached DB for (sessions, days), seeding it in a fresh process if it is not there yet."""
    db, meta = _paths(sessions, days)
    if not (db.exists() and meta.exists()):
        run_worker("seeded", ["--sessions", str(sessions), "--days", str(days)], timeout=3600)
    info = json.loads(meta.read_text())
    return SeededDb(db, info["sessions"], info["messages"], days, END_DATE, info["seed_seconds"], info["seed_peak_rss_mib"])


def _seed(sessions: int, days: int) -> dict[str, float]:
    """Seed into a temp file then rename, so an interrupted run never leaves a half DB in the cache."""
    from bench.common import peak_rss_mib
    from mrdabak_pipeline.core.ingest.db import make_engine
    from mrdabak_pipeline.core.ingest.seed import seed_database

    db, meta = _paths(sessions, days)
    cache_dir().mkdir(parents=True, exist_ok=True)
    tmp = db.with_suffix(".db.tmp")
    tmp.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{tmp}")
    t0 = time.perf_counter()
    summary = seed_database(engine, sessions=sessions, days=days, seed=SEED, end_date=END_DATE)
    seconds = time.perf_counter() - t0
    engine.dispose()
    tmp.replace(db)
    info = {"sessions": summary.sessions, "messages": summary.messages, "seed_seconds": seconds,
            "seed_peak_rss_mib": peak_rss_mib()}
    meta.write_text(json.dumps(info))
    return info


def copy_one_day(src: SeededDb, day: date, dest: Path) -> str:
    """A DB holding only `day`'s sessions, their messages and that day's orphans, copied from `src`.

    The "empty history" baseline of figure 4 then refreshes byte-identical rows; only the amount
    of history around them differs.
    """
    from mrdabak_pipeline.core.ingest.db import create_schema, make_engine

    dest.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{dest}")
    create_schema(engine)
    engine.dispose()
    lo = datetime.combine(day, datetime.min.time()).strftime("%Y-%m-%d %H:%M:%S")
    hi = datetime.combine(day + timedelta(days=1), datetime.min.time()).strftime("%Y-%m-%d %H:%M:%S")
    con = sqlite3.connect(dest)
    try:
        con.execute("ATTACH DATABASE ? AS big", (str(src.path),))
        con.execute(
            "INSERT INTO voice_conversation_session SELECT * FROM big.voice_conversation_session "
            "WHERE CAST(created_at AS TEXT) >= ? AND CAST(created_at AS TEXT) < ?", (lo, hi),
        )
        con.execute(
            "INSERT INTO voice_conversation_message SELECT * FROM big.voice_conversation_message "
            "WHERE session_id IN (SELECT id FROM main.voice_conversation_session) "
            "OR (CAST(created_at AS TEXT) >= ? AND CAST(created_at AS TEXT) < ?)", (lo, hi),
        )
        con.commit()
    finally:
        con.close()
    return f"sqlite:///{dest}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--sessions", type=int, required=True)
    parser.add_argument("--days", type=int, required=True)
    args = parser.parse_args(argv)
    emit(_seed(args.sessions, args.days))


if __name__ == "__main__":
    main()
