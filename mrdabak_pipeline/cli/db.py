"""`mrdabak init-db` and `mrdabak seed`: the raw conversation DB's schema and sample data."""

from __future__ import annotations

import argparse
from datetime import date

from sqlalchemy import func, inspect, select

from mrdabak_pipeline.core.db import create_schema, make_engine, session_table
from mrdabak_pipeline.core.seed import seed_database


def _init_db(args: argparse.Namespace) -> int:
    engine = make_engine(args.db_url)
    create_schema(engine)
    print(f"schema ready on {engine.url.render_as_string(hide_password=True)}")
    return 0


def _seed(args: argparse.Namespace) -> int:
    engine = make_engine(args.db_url)
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
        f"{summary.first_day}..{summary.last_day} into {engine.url.render_as_string(hide_password=True)}"
    )
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
    p.set_defaults(func=_seed)
