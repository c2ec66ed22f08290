"""A session table -> the OpenAI chat JSONL lines, column by column, on every core.

`chat_format.session_messages` and `files.json_bytes` define what a line is. Turning two million
turns into Python objects and dicts just to serialize them again was most of the dataset stage,
so for a session table (what the assets store) the same bytes are assembled with Arrow string
kernels: each message is a fixed JSON frame around its escaped text, and a line is the session's system
message (its own start time is in it) plus the session's frames joined by commas. JSON string escaping is two substring
replacements (backslash, quote) for text without control characters (the few texts with control
characters are escaped by orjson itself), and each distinct order state is written once.

Sessions the kernels cannot vouch for (no assistant turn, a role other than user/assistant, a
blank or missing text) go through `chat_format` one by one, so every rule about what is NOT an
example lives there. A property test holds the two paths to the same bytes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from mrdabak_pipeline.core.datasets.chat_format import (
    DEFAULT_VALIDATION_FRACTION,
    TRAIN,
    VALIDATION,
    ChatDataset,
    ExampleCollector,
    Target,
    example_candidates,
    iter_chat_examples,
    line_key,
    split_of,
    system_prefix,
)
from mrdabak_pipeline.core.domain import Session
from mrdabak_pipeline.core.prompts import PromptKind, system_prompt
from mrdabak_pipeline.core.records import datetimes_of, sessions_from_table, state_groups
from mrdabak_pipeline.core.runtime import parallel

#: Session rows per worker chunk below which the table is formatted in this process.
MIN_CHUNK_SESSIONS = 5_000
#: Session rows per chunk at most, in this process too: a chunk's lines are one Arrow string
#: array (under 2 GiB) and its frames are what the stage holds at a time.
MAX_CHUNK_SESSIONS = 4_000
#: Lines of the per-session path handed to the writer at a time.
_LINES_PER_BLOCK = 512
#: The columns and directions of `chat_format._order_key`, for sorting a session table the same
#: way. Nulls first, as `_order_key` puts a missing created_at at datetime.min.
_ORDER_COLUMNS = [(c, "ascending", "at_start") for c in ("created_at", "source_session_id", "variant", "session_id")]
#: Every character Python's ``str.isspace`` accepts: a text made only of these is blank.
_BLANK = "^[\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}]*$"

_USER_OPEN = '{"role":"user","content":"'
_TEXT_OPEN = '{"role":"assistant","content":"'
#: The assistant content is itself JSON (`domain.assistant_target`), escaped once more inside the
#: line: {"message": <text>, "orderState": <state>} as the characters of a JSON string.
_JSON_OPEN = '{"role":"assistant","content":"{\\"message\\":\\"'
_JSON_MIDDLE = '\\",\\"orderState\\":'
_CLOSE = '"}'
_JSON_CLOSE, _JSON_CLOSE_UNTRAINED = '}"}', '}","weight":0}'


def escape_json(values: pa.Array) -> pa.Array:
    """Each string as the inside of its JSON string literal, exactly as orjson writes it."""
    out = pc.replace_substring(pc.replace_substring(values, "\\", "\\\\"), '"', '\\"')
    rows = _control_rows(values)
    if len(rows):  # \n, \t and the rest: orjson's spelling of each
        mask = np.zeros(len(values), dtype=bool)
        mask[rows] = True
        fixed = [_escape_one(s) for s in values.take(pa.array(rows)).to_pylist()]
        out = pc.replace_with_mask(out, pa.array(mask), pa.array(fixed, pa.string()))
    return out


def _control_rows(values: pa.Array) -> np.ndarray:
    """The rows of a string array holding a control character (U+0000..U+001F), from its bytes:
    in UTF-8 no byte below 0x20 is part of any other character."""
    if len(values) == 0 or values.buffers()[2] is None:
        return np.zeros(0, dtype=np.int64)
    offsets = _offsets(values)
    data = np.frombuffer(values.buffers()[2], dtype=np.uint8)[offsets[0] : offsets[-1]]
    hits = np.flatnonzero(data < 0x20)
    if not len(hits):
        return hits
    rows = np.unique(np.searchsorted(offsets, hits + offsets[0], side="right") - 1)
    return rows[values.is_valid().to_numpy(zero_copy_only=False)[rows]]


def _escape_one(text: str) -> str:
    return orjson.dumps(text)[1:-1].decode("utf-8")


def _quoted(values: pa.Array) -> pa.Array:
    return pc.binary_join_element_wise('"', escape_json(values), '"', "")


def state_json(states: pa.StructArray) -> pa.Array:
    """Each order state (records.ORDER_STATE_TYPE) as the JSON object `assistant_target` writes:
    only the keys that are set, in `ORDER_FIELDS` order (null states give "{}")."""
    members = []
    for field, values in zip(states.type, states.flatten(), strict=True):  # flatten: a null state's fields are null
        if pa.types.is_string(field.type):
            text = _quoted(values)
        elif pa.types.is_boolean(field.type):
            text = pc.if_else(values, "true", "false")
        elif pa.types.is_integer(field.type):
            text = values.cast(pa.string())
        else:  # needsMoreInfo: a list of field names
            items = pa.ListArray.from_arrays(values.offsets, _quoted(values.values), mask=values.is_null())
            text = pc.binary_join_element_wise("[", pc.binary_join(items, ","), "]", "")
        members.append(pc.fill_null(pc.binary_join_element_wise(f',"{field.name}":', text, ""), ""))
    joined = pc.binary_join_element_wise(*members, "")
    return pc.binary_join_element_wise("{", pc.utf8_slice_codeunits(joined, 1), "}", "")


@dataclass
class ChunkLines:
    """One slice of a sorted session table as candidates, in order: the skipped sessions, and per
    example what `ExampleCollector.keep` takes (key, source id, created_at, untrained turns, split);
    the lines (each with its newline) come per split, in the same order as their examples."""

    skipped: list[tuple[str, str]]
    examples: list[tuple[bytes, str, Any, int, str]]
    lines: dict[str, pa.Array]


def _turn_index(turns: pa.ChunkedArray | pa.Array) -> tuple[pa.Array, np.ndarray, np.ndarray]:
    """(the turns of every session, flat; first turn of each session; each turn's session)."""
    turns = turns.combine_chunks() if isinstance(turns, pa.ChunkedArray) else turns
    lengths = pc.fill_null(pc.list_value_length(turns), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    starts = np.concatenate(([0], np.cumsum(lengths)))
    return pc.list_flatten(turns), starts, np.repeat(np.arange(len(lengths)), lengths)


def _last_per_session(mask: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """Per session, the flat index of its last turn where `mask` holds; -1 where none does."""
    n = len(starts) - 1
    last = np.full(n, -1, dtype=np.int64)
    nonempty = starts[1:] > starts[:-1]
    if nonempty.any():
        positions = np.where(mask, np.arange(len(mask)), -1)
        last[nonempty] = np.maximum.reduceat(positions, starts[:-1][nonempty])
    return last


def _frames(
    flat: pa.StructArray, is_assistant: np.ndarray, rows: np.ndarray, sessions: np.ndarray, starts: np.ndarray, target: Target
) -> tuple[pa.Array, np.ndarray]:
    """(each given turn as its JSON message, per turn 1 where it gets ``"weight": 0``).

    User and assistant turns are framed apart and interleaved back in turn order.
    """
    is_user = pc.equal(flat.field("role").take(pa.array(rows, pa.int64())), "user").to_numpy(zero_copy_only=False)
    user_rows, assistant_rows = rows[is_user], rows[~is_user]
    contents = flat.field("content")
    user = pc.binary_join_element_wise(_USER_OPEN, escape_json(contents.take(pa.array(user_rows, pa.int64()))), _CLOSE, "")
    text = escape_json(contents.take(pa.array(assistant_rows, pa.int64())))
    untrained = np.zeros(len(rows), dtype=np.int64)
    if target is Target.TEXT:
        assistant = pc.binary_join_element_wise(_TEXT_OPEN, text, _CLOSE, "")
    else:
        # The order state an assistant turn is trained on: its own, else the last one an earlier
        # assistant turn of the session had, else {} (then with weight 0, see session_messages).
        states = flat.field("order_state")
        known = states.is_valid().to_numpy(zero_copy_only=False) & is_assistant
        latest = np.maximum.accumulate(np.where(known, np.arange(len(known)), -1))[assistant_rows]
        latest = np.where(latest >= starts[sessions[~is_user]], latest, -1)  # an earlier session's state is not this one's
        first, group = state_groups(states)  # each distinct state is written once
        texts = escape_json(state_json(states.take(pa.array(first, pa.int64()))))
        state_text = pc.if_else(pa.array(latest >= 0), texts.take(pa.array(group[np.maximum(latest, 0)], pa.int64())), "{}")
        own = known[assistant_rows]
        untrained[~is_user] = ~own
        assistant = pc.binary_join_element_wise(
            _JSON_OPEN,
            escape_json(text),  # the message text inside a JSON string inside a JSON string: twice
            _JSON_MIDDLE,
            state_text,
            pc.if_else(pa.array(own), _JSON_CLOSE, _JSON_CLOSE_UNTRAINED),
            "",
        )
    order = np.empty(len(rows), dtype=np.int64)  # where each turn is in [users..., assistants...]
    order[is_user] = np.arange(len(user_rows))
    order[~is_user] = len(user_rows) + np.arange(len(assistant_rows))
    return pa.concat_arrays([user, assistant]).take(pa.array(order)), untrained


def table_chunk_lines(table: pa.Table, target: Target | str, prompt: PromptKind | str, fraction: float) -> ChunkLines:
    """`chat_format.example_candidates` of every session row of `table`, in row order, lines column-wise."""
    target = Target(target)
    n = table.num_rows
    flat, starts, session_of = _turn_index(table.column("turns"))
    roles = flat.field("role")
    is_assistant = pc.fill_null(pc.equal(roles, "assistant"), False).to_numpy(zero_copy_only=False)
    last = _last_per_session(is_assistant, starts)
    kept = np.arange(len(session_of)) <= last[session_of]  # trailing customer turns are dropped
    contents = flat.field("content")
    odd = pc.invert(pc.fill_null(pc.is_in(roles, value_set=pa.array(["user", "assistant"])), False))
    odd = pc.or_(odd, pc.fill_null(pc.match_substring_regex(contents, _BLANK), True))
    odd_turn = odd.to_numpy(zero_copy_only=False) & kept
    created = datetimes_of(table.column("created_at"))
    no_time = np.array([c is None for c in created], dtype=bool)  # chat_format refuses these
    slow = (last < 0) | (np.bincount(session_of[odd_turn], minlength=n) > 0) | no_time

    fast_rows = np.flatnonzero(kept & ~slow[session_of])
    frames, untrained_turns = _frames(flat, is_assistant, fast_rows, session_of[fast_rows], starts, target)
    fast_sessions = np.flatnonzero(~slow)
    per_session = np.bincount(session_of[fast_rows], minlength=n)[fast_sessions]
    untrained = np.bincount(session_of[fast_rows], weights=untrained_turns, minlength=n)[fast_sessions].astype(np.int64)
    offsets = pa.array(np.concatenate(([0], np.cumsum(per_session))), pa.int32())
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, frames), ",")
    # Each conversation's own system message (its start time is in it), serialized once per minute.
    prefix = pa.array([system_prefix(system_prompt(created[i], prompt)).decode("utf-8") + "," for i in fast_sessions.tolist()], pa.string())
    fast_lines = pc.binary_join_element_wise(prefix, joined, "]}\n", "")

    slow_rows = np.flatnonzero(slow)
    slow_candidates = list(example_candidates(sessions_from_table(table.take(pa.array(slow_rows, pa.int64()))), target, prompt, fraction, False)) if len(slow_rows) else []
    slow_lines = pa.array([c[4] + b"\n" if c[0] != "skip" else None for c in slow_candidates], pa.binary()).cast(pa.string())
    # back in row order: fast rows first in the concatenation, slow rows after
    position = np.empty(n, dtype=np.int64)
    position[fast_sessions] = np.arange(len(fast_sessions))
    position[slow_rows] = len(fast_sessions) + np.arange(len(slow_rows))
    lines = pa.concat_arrays([fast_lines, slow_lines]).take(pa.array(position, pa.int64())) if len(slow_rows) else fast_lines

    ids = table.column("session_id").to_pylist()
    sources = table.column("source_session_id").to_pylist()
    slow_meta = iter(slow_candidates)
    untrained_of = dict(zip(fast_sessions.tolist(), untrained.tolist(), strict=True))
    buffer = memoryview(lines.buffers()[2] or b"")
    bounds = _offsets(lines).tolist()
    splits: dict[str, str] = {}
    out = ChunkLines([], [], {})
    rows: dict[str, list[int]] = {TRAIN: [], VALIDATION: []}
    for i in range(n):
        if slow[i]:
            c = next(slow_meta)
            if c[0] == "skip":
                out.skipped.append((c[1], c[2]))
                continue
            example = (c[0], c[1], c[2], c[3], c[5])
        else:
            src = sources[i] or ids[i]
            split = splits.get(src)
            if split is None:
                split = splits[src] = split_of(src, fraction)
            example = (line_key(buffer[bounds[i] : bounds[i + 1] - 1]), src, created[i], untrained_of[i], split)
        out.examples.append(example)
        rows[example[4]].append(i)
    out.lines = {split: lines.take(pa.array(picked, pa.int64())) for split, picked in rows.items()}
    return out


def _chunk_job(job: tuple[pa.Table, np.ndarray, str, str, float]) -> ChunkLines:
    """Worker side: put the gathered rows in example order (`parallel.gather_rows`), then format."""
    rows, order, *options = job
    return table_chunk_lines(rows.take(pa.array(order, pa.int64())), *options)


def _offsets(lines: pa.Array) -> np.ndarray:
    """Where each string of a string array starts in its data buffer, and where the last one ends."""
    return np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)


def _blocks(lines: pa.Array, dropped: list[int]) -> Iterator[memoryview]:
    """The lines (each with its newline) but the `dropped` ones, as runs of consecutive lines,
    straight from the array's buffer: no copy, whatever is dropped."""
    bounds = _offsets(lines).tolist()
    data = memoryview(lines.buffers()[2] or b"")
    start = 0
    for i in [*dropped, len(lines)]:
        if i > start:
            yield data[bounds[start] : bounds[i]]
        start = i + 1


def iter_chat_blocks(
    sessions: Iterable[Session] | pa.Table,
    target: Target | str = Target.JSON,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    prompt: PromptKind | str = PromptKind.SHORT,
    stats: ChatDataset | None = None,
    workers: int | None = None,
) -> Iterator[tuple[str, bytes | memoryview]]:
    """``(split, lines)``: the lines `chat_format.iter_chat_examples` makes, each ending in a
    newline, in file order, a block of one or more at a time.

    A session table (records.SESSION_SCHEMA) is sorted in Arrow by the example order, cut into
    slices, and each slice formatted column-wise (`table_chunk_lines`), on every core when it is
    big; dedup, counts and the split stay here, in order, so the files are the same bytes
    whatever the number of workers.
    """
    ds = stats if stats is not None else ChatDataset(target=Target(target).value, validation_fraction=validation_fraction)
    if not isinstance(sessions, pa.Table):
        pending: dict[str, list[bytes]] = {TRAIN: [], VALIDATION: []}
        for split, _example, line in iter_chat_examples(sessions, target, validation_fraction, prompt, ds):
            pending[split].append(line)
            if len(pending[split]) >= _LINES_PER_BLOCK:
                yield split, b"\n".join(pending[split]) + b"\n"
                pending[split].clear()
        for split, lines in pending.items():
            if lines:
                yield split, b"\n".join(lines) + b"\n"
        return
    table = sessions
    spread = parallel.chunk_count(table.num_rows, MIN_CHUNK_SESSIONS, workers, per_worker=8)
    parts = max(spread, -(-table.num_rows // MAX_CHUNK_SESSIONS))
    order = pc.sort_indices(table, sort_keys=_ORDER_COLUMNS).to_numpy()
    bounds = [table.num_rows * i // parts for i in range(parts + 1)]
    jobs = (
        (*parallel.gather_rows(table, order[a:b]), Target(target).value, PromptKind(prompt).value, ds.validation_fraction)
        for a, b in zip(bounds, bounds[1:], strict=False)
    )
    collector = ExampleCollector(ds)
    for chunk in parallel.imap(_chunk_job, jobs, workers if spread > 1 else 1):
        for session_id, reason in chunk.skipped:
            collector.skip(session_id, reason)
        dropped: dict[str, list[int]] = {TRAIN: [], VALIDATION: []}
        position = {TRAIN: 0, VALIDATION: 0}
        for example in chunk.examples:
            split = example[4]
            if not collector.keep(*example):
                dropped[split].append(position[split])
            position[split] += 1
        for split, lines in chunk.lines.items():
            for block in _blocks(lines, dropped[split]):
                yield split, block
