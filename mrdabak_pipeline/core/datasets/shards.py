"""A day's dataset shard: its sessions as example lines, checked and token-counted once.

Each daily partition of augmented sessions becomes one shard as it is prepared (the
``dataset_shards`` asset): one row per session with its JSONL line (`chat_lines.example_lines`,
the one writer) or the reason it is not an example, whether it repeats an earlier line of the day,
its split score, and what the validator (`validation.validate_range`, the one validator) says of
the line: messages, tokens, assistant tokens, format issues. The datasets are then assembled from
the shards of the window (`build.assemble_openai_dataset`): copying lines and adding up figures,
so a nightly run formats and tokenizes one new day, not the whole history.

What makes shards assemble into exactly the files one pass over all the days would write:

* Order: a shard is sorted by the example order (`chat_lines.ORDER_COLUMNS`) and the shards are
  concatenated by day, so the files are in (day, example order) whichever runs built which days.
* Duplicates: an exact duplicate (an augmented variant that changed nothing) is dropped within its
  day; two days never share a line, because every line's system message holds its conversation's
  date and time (`prompts.system_prompt`).
* Split: the score is a hash of the source session id (`chat_format.split_score`), so the
  validation fraction is chosen at assembly, and a session never changes side.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Iterator
from datetime import date, timedelta
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from mrdabak_pipeline.core import records
from mrdabak_pipeline.core.cloud.spec import DEFAULT_BASE_MODEL
from mrdabak_pipeline.core.datasets.chat_format import SPLIT_SALT, Target, split_score
from mrdabak_pipeline.core.datasets.chat_lines import ORDER_COLUMNS, example_lines
from mrdabak_pipeline.core.datasets.tokens import resolve_encoding
from mrdabak_pipeline.core.datasets.validation import example_issues, validate_range
from mrdabak_pipeline.core.domain import Session
from mrdabak_pipeline.core.prompts import PromptKind, prompt_id

SHARD_SCHEMA = pa.schema(
    [
        ("partition_date", pa.string()),
        ("session_id", pa.string()),
        ("source_session_id", pa.string()),
        ("created_at", pa.timestamp("us")),
        ("split_score", pa.float64()),  # validation when below the dataset's validation fraction
        ("untrained", pa.int64()),  # assistant turns with "weight": 0
        ("line", pa.string()),  # null: skipped (see skip_reason)
        ("skip_reason", pa.string()),
        ("duplicate", pa.bool_()),  # the same line as an earlier example of the day: not written
        ("n_messages", pa.int64()),  # the validator's figures of the line (null when not written)
        ("n_tokens", pa.int64()),
        ("n_assistant_tokens", pa.int64()),
        ("issues", pa.list_(pa.string())),  # format errors and warnings of the line, too_long aside
        ("target", pa.string()),
        ("prompt_id", pa.string()),
        ("encoding", pa.string()),  # ResolvedEncoding.metadata() as JSON: what the tokens were counted with
    ]
)


def build_shard(
    sessions: pa.Table,
    *,
    target: Target | str = Target.JSON,
    prompt: PromptKind | str = PromptKind.SHORT,
    model: str = DEFAULT_BASE_MODEL,
    num_threads: int | None = None,
) -> pa.Table:
    """The shard rows (`SHARD_SCHEMA`) of a session table of one or more days, by day, in example order."""
    table = sessions.take(pc.sort_indices(sessions, sort_keys=[("partition_date", "ascending", "at_start"), *ORDER_COLUMNS]))
    lines = example_lines(table, target, prompt)
    line = lines.column("line").combine_chunks()
    duplicate = _repeats(line, table.column("partition_date").combine_chunks())
    written = pc.and_(pc.is_valid(line), pc.invert(pa.array(duplicate))).to_numpy(zero_copy_only=False)
    resolved = resolve_encoding(model)
    kept = line.filter(pa.array(written))
    report = validate_range(jsonl_bytes(kept), model=model, encoding=resolved, num_threads=num_threads, max_listed=sys.maxsize)
    rows = np.flatnonzero(written)
    figures = {name: np.zeros(len(line), dtype=np.int64) for name in ("n_messages", "n_tokens", "n_assistant_tokens")}
    for name, values in (("n_messages", report.n_messages), ("n_tokens", report.n_tokens), ("n_assistant_tokens", report.n_assistant_tokens)):
        figures[name][rows] = values
    issues: list[list[str] | None] = [None] * len(line)
    for i, codes in zip(rows.tolist(), example_issues(report), strict=True):
        issues[i] = codes
    scores = {s: split_score(s, SPLIT_SALT) for s in set(lines.column("source_session_id").to_pylist())}
    n = table.num_rows
    mask = ~written
    return pa.table(
        {
            "partition_date": table.column("partition_date"),
            "session_id": lines.column("session_id"),
            "source_session_id": lines.column("source_session_id"),
            "created_at": lines.column("created_at"),
            "split_score": pa.array([scores[s] for s in lines.column("source_session_id").to_pylist()], pa.float64()),
            "untrained": lines.column("untrained"),
            "line": line,
            "skip_reason": lines.column("skip_reason"),
            "duplicate": pa.array(duplicate),
            **{name: pa.array(values, pa.int64(), mask=mask) for name, values in figures.items()},
            "issues": pa.array(issues, pa.list_(pa.string())),
            "target": pa.array([Target(target).value] * n, pa.string()),
            "prompt_id": pa.array([prompt_id(prompt)] * n, pa.string()),
            "encoding": pa.array([json.dumps(resolved.metadata())] * n, pa.string()),
        },
        schema=SHARD_SCHEMA,
    )


def shards_of(
    sessions: Iterable[Session] | pa.Table, *, target: Target | str = Target.JSON,
    prompt: PromptKind | str = PromptKind.SHORT, model: str = DEFAULT_BASE_MODEL,
) -> Iterator[pa.Table]:
    """One shard per day of `sessions` (sessions or a records.SESSION_SCHEMA table), oldest first:
    what the ``dataset_shards`` asset stores, for callers that hold the sessions themselves."""
    table = sessions if isinstance(sessions, pa.Table) else records.sessions_to_table(sessions)
    days = pc.unique(table.column("partition_date")).to_pylist()
    for day in sorted(days, key=lambda d: (d is not None, d or "")):
        where = pc.is_null(table.column("partition_date")) if day is None else pc.equal(table.column("partition_date"), day)
        yield build_shard(table.filter(where), target=target, prompt=prompt, model=model)


def _repeats(line: pa.Array, day: pa.Array) -> np.ndarray:
    """True for each line that equals an earlier line of the same day (nulls never repeat)."""
    keys = pc.binary_join_element_wise(pc.fill_null(day, ""), line, "\n")  # null where line is null
    codes = pc.fill_null(keys.dictionary_encode().indices, -1).to_numpy(zero_copy_only=False)
    present = np.flatnonzero(codes >= 0)
    _, first = np.unique(codes[present], return_index=True)
    out = np.zeros(len(line), dtype=bool)
    out[present] = True
    out[present[first]] = False
    return out


def jsonl_bytes(lines: pa.Array) -> bytes:
    """The lines as the bytes of a JSONL file (each with its newline)."""
    if not len(lines):
        return b""
    joined = pc.binary_join_element_wise(lines, "", "\n")
    offsets = np.frombuffer(joined.buffers()[1], dtype=np.int32, count=len(joined) + 1, offset=joined.offset * 4)
    return joined.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


def window_days(days: Iterable[str], window: int | None) -> list[str]:
    """The days of the last `window` calendar days counted back from the newest one present
    (all when None), oldest first: anchored on the data, so the same shards give the same dataset
    whenever it runs."""
    days = sorted(days)
    if window is None or not days:
        return days
    if window < 1:
        raise ValueError(f"window must be at least 1 day, got {window}")
    first = (date.fromisoformat(days[-1]) - timedelta(days=window - 1)).isoformat()
    return [d for d in days if d >= first]


def shard_settings(shard: pa.Table) -> dict[str, Any]:
    """What a shard was built with: target, prompt id and the token encoding's metadata."""
    if not shard.num_rows:
        return {}
    return {"target": shard["target"][0].as_py(), "prompt_id": shard["prompt_id"][0].as_py(), "encoding": json.loads(shard["encoding"][0].as_py())}
