"""The preparation chain's stages over Arrow tables: the functions the assets, ``mrdabak dataset``
and the benchmark call, so all three do the same work the same way.

raw windows -> `extract`; raw rows -> `clean` (cleaning rules, PII pseudonymization and the leak
scan) -> `augment` (variants + the checklist figures). Each runs in the calling process: a run
holds one day, or the few days of a backfill run (`defs/partitions.py`), and a backfill of many
days is spread over processes and machines by Dagster, as many runs. What a stage returns is plain
data: Arrow tables, counters, ids, a few preview sessions; never a list of every session.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import pyarrow as pa
from sqlalchemy.engine import Engine

from mrdabak_pipeline.core import records
from mrdabak_pipeline.core.domain import Session
from mrdabak_pipeline.core.ingest.db import read_raw_window
from mrdabak_pipeline.core.prepare import augment as augment_core
from mrdabak_pipeline.core.prepare import cleaning, pii

#: Sessions kept whole for the asset previews.
PREVIEW_SESSIONS = 8


class Window(NamedTuple):
    """One partition day's time window, in the DB's naive local time."""

    start: datetime
    end: datetime  # exclusive
    partition_key: str


def extract(engine: Engine, windows: Sequence[Window]) -> pa.Table:
    """One window query per partition day, concatenated in order."""
    return pa.concat_tables([read_raw_window(engine, w.start, w.end, w.partition_key) for w in windows])


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


def clean(raw: pa.Table, config: cleaning.CleaningConfig | None = None) -> CleanedSessions:
    """Cleaning rules, then PII pseudonymization, then the leak scan of the output."""
    result = cleaning.clean_partition(raw, config or cleaning.CleaningConfig())
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


def augment(cleaned: pa.Table, k: int, seed: int) -> AugmentedSessions:
    """Each cleaned session plus up to `k` variants (`augment.augment_sessions`) and the variant checks."""
    originals = records.sessions_from_table(cleaned)
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
