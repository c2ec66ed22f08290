"""`mrdabak init-db` and `mrdabak seed`: the raw conversation DB's schema and sample data.

`mrdabak seed` writes synthetic (partly damaged) CONFIRMED/CANCELLED sessions into whatever
`MRDABAK_DB_URL` points at — the variable that also points the pipeline at production, where
such rows would be trained on and would trigger retraining. So it refuses any database but a
SQLite file unless `--allow-non-sqlite` says that is meant, and every seeded session id carries
`SEED_ID_PREFIX` so `mrdabak seed --purge` finds and removes them again (from any database: it
only ever deletes rows with that prefix, which the production app's UUID ids never have).
"""

from __future__ import annotations

import argparse
import sys
from datetime import date

from sqlalchemy import func, inspect, make_url, select

from mrdabak_pipeline.core.ingest.db import create_schema, default_db_url, make_engine, session_table
from mrdabak_pipeline.core.ingest.seed import SEED_ID_PREFIX, count_seeded, purge_seeded, seed_database


def _init_db(args: argparse.Namespace) -> int:
    engine = make_engine(args.db_url)
    create_schema(engine)
    print(f"schema ready on {engine.url.render_as_string(hide_password=True)}")
    return 0


def _seed(args: argparse.Namespace) -> int:
    url = make_url(args.db_url or default_db_url())  # parsed only: refusing needs no driver, no connection
    where = url.render_as_string(hide_password=True)
    if url.get_backend_name() != "sqlite" and not (args.allow_non_sqlite or args.purge):
        print(
            f"error: refusing to seed {url.get_backend_name()} database {where}: synthetic sessions there would be "
            "trained on and trigger retraining. Seed a SQLite file (--db-url sqlite:///data/mrdabak.db), or pass "
            "--allow-non-sqlite if this database is meant for test data (remove it again with --purge).",
            file=sys.stderr,
        )
        return 2
    engine = make_engine(args.db_url)
    if args.purge:
        sessions, messages = purge_seeded(engine)
        print(f"removed {sessions} seeded sessions / {messages} messages (ids starting {SEED_ID_PREFIX!r}) from {where}")
        return 0
    if args.if_empty and inspect(engine).has_table(session_table.name):
        with engine.connect() as conn:
            existing = conn.execute(select(func.count()).select_from(session_table)).scalar_one()
        if existing:
            print(f"raw DB already holds {existing} sessions: not seeding (--if-empty)")
            return 0
    summary = seed_database(
        engine, sessions=args.sessions, days=args.days, seed=args.seed,
        end_date=date.fromisoformat(args.end_date) if args.end_date else None, damage_rate=args.damage_rate,
    )
    print(
        f"seeded {summary.sessions} sessions / {summary.messages} messages over "
        f"{summary.first_day}..{summary.last_day} into {where}"
    )
    seeded_sessions, _ = count_seeded(engine)
    print(f"seeded session ids start with {SEED_ID_PREFIX!r} ({seeded_sessions} in this DB; `mrdabak seed --purge` removes them)")
    print("scenarios:", dict(summary.scenarios))
    print("damaged:", dict(summary.damage))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db-url", default=None, help="SQLAlchemy URL (default: $MRDABAK_DB_URL or data/mrdabak.db)")
    p = sub.add_parser("init-db", parents=[common], help="create the conversation tables (idempotent)")
    p.set_defaults(func=_init_db)
    p = sub.add_parser("seed", parents=[common], help="write realistic sample conversations")
    p.add_argument("--sessions", type=int, default=300)
    p.add_argument("--days", type=int, default=14, help="spread sessions over the last D days")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--end-date", default=None, help="last day (YYYY-MM-DD, default: yesterday in Seoul)")
    p.add_argument("--damage-rate", type=float, default=0.05, help="share of sessions damaged like old rows")
    p.add_argument("--if-empty", action="store_true", help="do nothing when the DB already has sessions")
    p.add_argument(
        "--allow-non-sqlite", action="store_true",
        help="seed a database that is not SQLite (e.g. a PostgreSQL test DB); never production",
    )
    p.add_argument(
        "--purge", action="store_true",
        help=f"remove every seeded session and message (ids starting {SEED_ID_PREFIX!r}) instead of seeding",
    )
    p.set_defaults(func=_seed)
