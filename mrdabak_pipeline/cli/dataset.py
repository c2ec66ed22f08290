"""`mrdabak dataset --format openai|huggingface [--sample]`: the guide's dataset command.

Writes the same files as the ``openai_chat_dataset`` / ``huggingface_dataset`` (/ ``dpo_dataset``)
assets, through the same core functions, for people who just want the files. Sessions come from
the conversation DB (``--db-url`` / ``MRDABAK_DB_URL``), or with ``--sample`` from a throw-away
SQLite DB seeded with realistic sample conversations; either way they go through the same
cleaning, pseudonymization and augmentation as the pipeline.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from mrdabak_pipeline.core import records
from mrdabak_pipeline.core.datasets.build import (
    EmptyDatasetError,
    write_huggingface_dataset,
    write_openai_dataset,
    write_preference_dataset,
)
from mrdabak_pipeline.core.datasets.chat_format import DEFAULT_VALIDATION_FRACTION, Target
from mrdabak_pipeline.core.datasets.validation import DEFAULT_MODEL
from mrdabak_pipeline.core.ingest.db import make_engine, read_raw_window
from mrdabak_pipeline.core.prepare import stages
from mrdabak_pipeline.core.prompts import PromptKind

DATA_DIR_ENV = "MRDABAK_DATA_DIR"


def _with_partition_dates(raw: pa.Table) -> pa.Table:
    """Each row's partition date = the Seoul calendar day its session (or message) was created."""
    created = pc.coalesce(raw["session_created_at"], raw["message_created_at"])
    days = pc.strftime(created, format="%Y-%m-%d")
    index = raw.schema.get_field_index("partition_date")
    return raw.set_column(index, "partition_date", pc.fill_null(days, ""))


def prepared_sessions(db_url: str | None, days: int | None, augment_k: int, seed: int) -> pa.Table:
    """Raw DB rows -> cleaned, pseudonymized, augmented sessions (what ``augmented_sessions`` holds)."""
    engine = make_engine(db_url)
    end = datetime.now() + timedelta(days=1)
    start = end - timedelta(days=days + 1) if days else datetime(1970, 1, 1)
    raw = _with_partition_dates(read_raw_window(engine, start, end, ""))
    cleaned = stages.clean(raw)
    result = cleaned.summary
    if result.rejections:
        counts = ", ".join(f"{k}={v}" for k, v in sorted(result.rejection_counts.items()))
        print(f"quarantined {len(result.rejections)} sessions: {counts}", file=sys.stderr)
    if cleaned.leaks:
        raise SystemExit(f"error: the PII scan found leftovers after pseudonymization: {dict(cleaned.leaks)}")
    return stages.augment(cleaned.table, k=augment_k, seed=seed).table if augment_k else cleaned.table


def _print_openai(value: dict) -> None:
    print(f"train:      {value['train_path']} ({value['train_examples']} examples, sha256 {value['train_sha256'][:12]})")
    if value["validation_path"]:
        print(f"validation: {value['validation_path']} ({value['validation_examples']} examples)")
    enc = value["encoding"]
    cost = value["estimated_cost_usd"]
    print(
        f"tokens: {value['train_tokens']} per epoch x {value['n_epochs']} epochs = {value['billed_tokens']} billed "
        f"({enc['encoding_used']} via {enc['encoding_source']}, exact={enc['exact']}); "
        f"estimated cost on {value['model']}: " + (f"${cost:.2f}" if cost is not None else "unknown")
    )
    for warning in value["warnings"]:
        print(f"WARNING: {warning}", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    out = Path(args.out) if args.out else Path(os.environ.get(DATA_DIR_ENV, "data")) / "datasets"
    with tempfile.TemporaryDirectory(prefix="mrdabak-sample-") as tmp:
        db_url = args.db_url
        if args.sample:
            from mrdabak_pipeline.core.ingest.seed import seed_database

            db_url = f"sqlite:///{Path(tmp) / 'sample.db'}"
            summary = seed_database(make_engine(db_url), sessions=args.sessions, days=args.days or 14, seed=args.seed)
            print(f"seeded {summary.sessions} sample sessions into a temporary DB")
        sessions = prepared_sessions(db_url, args.days, args.augment, args.seed)
    try:
        value = write_openai_dataset(
            sessions, out / "openai", target=args.target, validation_fraction=args.validation_fraction, model=args.model,
            prompt=args.prompt,
        )
    except EmptyDatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if not value["format_ok"]:
        print(f"error: format checks failed: {value['reports']}", file=sys.stderr)
        return 1
    _print_openai(value)
    if args.format == "huggingface":
        hf = write_huggingface_dataset(value["train_path"], value["validation_path"], out / "huggingface")
        print(f"huggingface: {hf['path']} (load_from_disk; JSONL: {hf['train_jsonl']}, {hf['validation_jsonl']})")
    if args.dpo:
        dpo = write_preference_dataset(records.sessions_from_table(sessions), out / "dpo", target=args.target, validation_fraction=args.validation_fraction, prompt=args.prompt)
        print(f"dpo: {dpo['pair_count']} preference pairs in {out / 'dpo'}")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("dataset", help="write fine-tuning datasets (OpenAI chat JSONL / Hugging Face)")
    p.add_argument("--format", choices=("openai", "huggingface"), default="openai")
    p.add_argument("--sample", action="store_true", help="build from freshly seeded sample conversations in a temporary DB")
    p.add_argument("--db-url", default=None, help="SQLAlchemy URL (default: $MRDABAK_DB_URL or data/mrdabak.db)")
    p.add_argument("--out", default=None, help="output folder (default: $MRDABAK_DATA_DIR/datasets)")
    p.add_argument("--target", choices=[t.value for t in Target], default=Target.JSON.value)
    p.add_argument("--prompt", choices=[k.value for k in PromptKind], default=PromptKind.SHORT.value,
                   help="system prompt of the examples (both carry the conversation's now): short (fine-tuning) or full")
    p.add_argument("--validation-fraction", type=float, default=DEFAULT_VALIDATION_FRACTION)
    p.add_argument("--model", default=DEFAULT_MODEL, help="base model for token counts and the cost estimate")
    p.add_argument("--days", type=int, default=None, help="only sessions of the last N days (default: all)")
    p.add_argument("--augment", type=int, default=3, help="augmented variants per session (0 = none)")
    p.add_argument("--sessions", type=int, default=300, help="--sample: how many conversations to seed")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--dpo", action="store_true", help="also write DPO preference pairs")
    p.set_defaults(func=_run)
