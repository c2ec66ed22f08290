"""The preparation chain's stages over Arrow tables, each spread over the cores by session chunks.

raw windows -> `extract`; raw rows -> `clean` (cleaning rules, PII pseudonymization and the leak
scan) -> `augment` (variants + the checklist figures). The Dagster assets, the ``mrdabak dataset``
command and the benchmark call these, so all three do the same work the same way.

Each stage cuts its input into chunks of whole sessions (`parallel.session_slices`), runs the
per-session work on each chunk in a worker process and merges the chunk results in order: the
output equals a single-chunk run (tested), and a worker holds only its chunk's Python objects.
What a chunk returns is plain data: Arrow tables, counters, ids; never a list of every session.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from typing import Any

import pyarrow as pa
from sqlalchemy import create_engine
from sqlalchemy.engine import URL, Engine

from mrdabak_pipeline.core import records
from mrdabak_pipeline.core.domain import Session
from mrdabak_pipeline.core.ingest.db import read_raw_window
from mrdabak_pipeline.core.prepare import augment as augment_core
from mrdabak_pipeline.core.prepare import cleaning, pii
from mrdabak_pipeline.core.runtime import parallel

#: Raw rows (messages) per chunk below which cleaning stays in this process.
MIN_CHUNK_ROWS = 20_000
#: Sessions per chunk below which augmentation stays in this process.
MIN_CHUNK_SESSIONS = 5_000
#: Days per chunk of an extraction: ranges shorter than two chunks (a nightly day, the demo's two
#: weeks) are read in this process; a backfill of months is read on every core.
MIN_CHUNK_DAYS = 15
#: Chunks per worker for cleaning and augmentation: a worker holds one chunk's sessions as Python
#: objects at a time (memory), and each chunk starts its text caches cold (time).
CHUNKS_PER_WORKER = 8
#: Sessions kept whole for the asset previews.
PREVIEW_SESSIONS = 8

Window = tuple[datetime, datetime, str]  # [start, end) in the DB's naive local time, partition key


# --- extract -----------------------------------------------------------------------------------


@lru_cache(maxsize=4)
def _worker_engine(url: URL) -> Engine:
    # The parent made the engine (and any SQLite folder) with db.make_engine; a worker only reconnects.
    return create_engine(url)


def _read_windows(job: tuple[URL, Sequence[Window]]) -> pa.Table:
    url, windows = job
    engine = _worker_engine(url)
    return pa.concat_tables([read_raw_window(engine, lo, hi, key) for lo, hi, key in windows])


def extract(engine: Engine, windows: Sequence[Window], workers: int | None = None) -> pa.Table:
    """One window query per partition day, concatenated in order; runs of days read in parallel.

    Workers open their own connection from the engine's URL (a connection cannot cross a fork).
    The URL goes to them as SQLAlchemy's `URL` object, never rendered to text: its password is
    masked (``***``) in every repr, so a traceback or log line about a job cannot show it.
    """
    windows = list(windows)
    parts = parallel.chunk_count(len(windows), MIN_CHUNK_DAYS, workers)
    if parts <= 1:
        return pa.concat_tables([read_raw_window(engine, lo, hi, key) for lo, hi, key in windows])
    ready = parallel.warm_up(workers)
    tables = []
    while windows and not ready.is_set():  # read days here while the workers start
        lo, hi, key = windows.pop(0)
        tables.append(read_raw_window(engine, lo, hi, key))
    if windows:
        url = engine.url
        parts = min(parts, len(windows))
        bounds = [len(windows) * i // parts for i in range(parts + 1)]
        jobs = [(url, windows[a:b]) for a, b in zip(bounds, bounds[1:], strict=False) if b > a]
        tables += parallel.imap(_read_windows, jobs, workers)
    return pa.concat_tables(tables)


# --- clean -------------------------------------------------------------------------------------


@dataclass
class CleanedSessions:
    """What the clean_sessions asset stores and reports, mergeable chunk by chunk."""

    table: pa.Table  # pseudonymized kept sessions, records.SESSION_SCHEMA
    summary: cleaning.CleaningSummary
    pii: pii.PiiReport
    leaks: Counter[str]  # PII found in the output, by kind (counts only: never a value)
    tags: Counter[str]  # scenario tags of the kept sessions
    preview: list[Session] = field(default_factory=list)

    @property
    def session_ids(self) -> list[str]:
        return self.table.column("session_id").to_pylist()

    @classmethod
    def merge(cls, parts: Sequence[CleanedSessions]) -> CleanedSessions:
        report = pii.PiiReport()
        leaks: Counter[str] = Counter()
        tags: Counter[str] = Counter()
        for p in parts:
            report.replaced.update(p.pii.replaced)
            report.sessions_touched += p.pii.sessions_touched
            leaks.update(p.leaks)
            tags.update(p.tags)
        return cls(
            table=parallel.concat((p.table for p in parts), records.SESSION_SCHEMA),
            summary=cleaning.CleaningSummary.merge([p.summary for p in parts]),
            pii=report,
            leaks=leaks,
            tags=tags,
            preview=[s for p in parts for s in p.preview][:PREVIEW_SESSIONS],
        )


def _clean_chunk(job: tuple[pa.Table, cleaning.CleaningConfig]) -> CleanedSessions:
    raw, config = job
    result = cleaning.clean_partition(raw, config)
    forbidden = {s.session_id: pii.known_values(s) for s in result.sessions}
    sessions, report = pii.pseudonymize_sessions(result.sessions)
    scanned: dict[str, list[tuple[str, str]]] = {}
    leaks = Counter(kind for s in sessions for kind, _value in pii.session_leaks(s, forbidden[s.session_id], scanned))
    return CleanedSessions(
        table=records.sessions_to_table(sessions),
        summary=result.summary(),
        pii=report,
        leaks=leaks,
        tags=Counter(t for s in sessions for t in s.tags),
        preview=sessions[:PREVIEW_SESSIONS],
    )


def clean(raw: pa.Table, config: cleaning.CleaningConfig | None = None, workers: int | None = None) -> CleanedSessions:
    """Cleaning rules, then PII pseudonymization, then the leak scan of the output, per chunk."""
    config = config or cleaning.CleaningConfig()
    parts = parallel.chunk_count(raw.num_rows, MIN_CHUNK_ROWS, workers, per_worker=CHUNKS_PER_WORKER)
    jobs = ((chunk, config) for chunk in parallel.session_slices(raw, parts))
    return CleanedSessions.merge(list(parallel.imap(_clean_chunk, jobs, workers)))


# --- augment -----------------------------------------------------------------------------------


@dataclass
class AugmentedSessions:
    """What the augmented_sessions asset stores and reports, mergeable chunk by chunk."""

    table: pa.Table  # originals + variants, records.SESSION_SCHEMA
    source_sessions: int
    checklist: Counter[str]  # cleaning.checklist_counts of the output
    worse_variants: list[str]  # variants with more state mismatches than their original
    preview: list[Session] = field(default_factory=list)

    @property
    def figures(self) -> dict[str, Any]:
        return cleaning.checklist_from_counts(self.checklist)

    @classmethod
    def merge(cls, parts: Sequence[AugmentedSessions]) -> AugmentedSessions:
        checklist: Counter[str] = Counter()
        for p in parts:
            checklist.update(p.checklist)
        variants = [s for p in parts for s in p.preview if s.variant]
        originals = [s for p in parts for s in p.preview if not s.variant]
        return cls(
            table=parallel.concat((p.table for p in parts), records.SESSION_SCHEMA),
            source_sessions=sum(p.source_sessions for p in parts),
            checklist=checklist,
            worse_variants=[i for p in parts for i in p.worse_variants],
            preview=variants[:4] + originals[:2],
        )


def _augment_chunk(job: tuple[pa.Table, int, int]) -> AugmentedSessions:
    table, k, seed = job
    originals = records.sessions_from_table(table)
    mentions: dict[Any, Any] = {}  # texts resolved while making variants, reused by their check
    sessions = augment_core.augment_sessions(originals, k=k, seed=seed, mentions=mentions)
    by_id = {s.session_id: s for s in originals}
    worse = []
    for s in sessions:  # an original is only checked when one of its variants has a mismatch
        n = len(augment_core.state_mismatches(s, mentions)) if s.variant else 0
        original = by_id.get(s.source_session_id)
        if n and n > (len(augment_core.state_mismatches(original, mentions)) if original else 0):
            worse.append(s.session_id)
    return AugmentedSessions(
        table=records.sessions_to_table(sessions),
        source_sessions=len(originals),
        checklist=cleaning.checklist_counts(sessions),
        worse_variants=worse,
        preview=[s for s in sessions if s.variant][:4] + sessions[:2],
    )


def augment(cleaned: pa.Table, k: int, seed: int, workers: int | None = None) -> AugmentedSessions:
    """Each cleaned session plus up to `k` variants (`augment.augment_sessions`), per chunk."""
    parts = parallel.chunk_count(cleaned.num_rows, MIN_CHUNK_SESSIONS, workers, per_worker=CHUNKS_PER_WORKER)
    jobs = ((chunk, k, seed) for chunk in parallel.session_slices(cleaned, parts))
    return AugmentedSessions.merge(list(parallel.imap(_augment_chunk, jobs, workers)))
