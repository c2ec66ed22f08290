"""THE dataset writer: a session table -> one OpenAI chat JSONL line per session, column-wise.

`chat_format.session_messages` defines what an example is (and what is not one), `files.json_bytes`
what its bytes are. Turning two million turns into Python objects and dicts just to serialize them
again was most of the dataset stage, so the same bytes are assembled with Arrow string kernels:
each message is a fixed JSON frame around its escaped text, and a line is the session's system
message (its own start time is in it) plus the session's frames joined by commas. JSON string
escaping is two substring replacements (backslash, quote) for text without control characters
(the few texts with control characters are escaped by orjson itself), and each distinct order
state is written once.

Sessions the kernels cannot vouch for (no assistant turn, a role other than user/assistant, a
blank or missing text, no start time) go through `session_messages` one by one, so every rule
about what is NOT an example lives there. A property test holds the kernels to
``json_bytes({"messages": session_messages(...)})``, byte for byte.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc

from mrdabak_pipeline.core.datasets.chat_format import ExampleError, Target, session_messages
from mrdabak_pipeline.core.prompts import PromptKind, system_prompt
from mrdabak_pipeline.core.records import datetimes_of, sessions_from_table, state_groups
from mrdabak_pipeline.core.runtime.files import json_bytes

#: Session rows formatted at a time: a slice's lines are one Arrow string array (under 2 GiB)
#: and its frames are what the writer holds at a time.
MAX_CHUNK_SESSIONS = 4_000
#: The example order inside a day (`shards.build_shard` puts the day first): the conversation's
#: start, then its source, variant and id. Nulls first (a session without a start is skipped).
ORDER_COLUMNS = [(c, "ascending", "at_start") for c in ("created_at", "source_session_id", "variant", "session_id")]
#: Every character Python's ``str.isspace`` accepts: a text made only of these is blank.
_BLANK = "^[\\t\\n\\x0b\\x0c\\r\\x1c-\\x1f \\x{85}\\x{a0}\\x{1680}\\x{2000}-\\x{200a}\\x{2028}\\x{2029}\\x{202f}\\x{205f}\\x{3000}]*$"
#: What `example_lines` returns: one row per session, in the input's row order.
LINES_SCHEMA = pa.schema(
    [
        ("session_id", pa.string()),
        ("source_session_id", pa.string()),  # the session's own id when it is an original
        ("created_at", pa.timestamp("us")),
        ("untrained", pa.int64()),  # assistant turns with "weight": 0 (their order state is unknown)
        ("line", pa.string()),  # the JSONL line without its newline; null when skipped
        ("skip_reason", pa.string()),  # why the session is not an example; null when it is one
    ]
)


@lru_cache(maxsize=4096)
def system_prefix(system_text: str) -> str:
    """The start of a line, up to and including the system message (conversations that started
    in the same minute share it, so it is serialized once per minute, not per example)."""
    return '{"messages":[' + json_bytes({"role": "system", "content": system_text}).decode("utf-8")


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




def example_lines(table: pa.Table, target: Target | str = Target.JSON, prompt: PromptKind | str = PromptKind.SHORT) -> pa.Table:
    """Each session row of `table` (records.SESSION_SCHEMA) as its example line or its skip reason
    (`LINES_SCHEMA`), in row order, `MAX_CHUNK_SESSIONS` rows at a time."""
    target, prompt = Target(target), PromptKind(prompt)
    parts = [_chunk_lines(table.slice(a, MAX_CHUNK_SESSIONS), target, prompt) for a in range(0, table.num_rows, MAX_CHUNK_SESSIONS)]
    return pa.concat_tables(parts) if parts else LINES_SCHEMA.empty_table()


def _chunk_lines(table: pa.Table, target: Target, prompt: PromptKind) -> pa.Table:
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
    no_time = np.array([c is None for c in created], dtype=bool)  # session_messages refuses these
    slow = (last < 0) | (np.bincount(session_of[odd_turn], minlength=n) > 0) | no_time

    fast_rows = np.flatnonzero(kept & ~slow[session_of])
    frames, untrained_turns = _frames(flat, is_assistant, fast_rows, session_of[fast_rows], starts, target)
    fast_sessions = np.flatnonzero(~slow)
    per_session = np.bincount(session_of[fast_rows], minlength=n)[fast_sessions]
    untrained = np.zeros(n, dtype=np.int64)
    untrained[fast_sessions] = np.bincount(session_of[fast_rows], weights=untrained_turns, minlength=n)[fast_sessions]
    offsets = pa.array(np.concatenate(([0], np.cumsum(per_session))), pa.int32())
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, frames), ",")
    # Each conversation's own system message (its start time is in it), serialized once per minute.
    prefix = pa.array([system_prefix(system_prompt(created[i], prompt)) + "," for i in fast_sessions.tolist()], pa.string())
    lines = pc.binary_join_element_wise(prefix, joined, "]}", "")
    reasons: list[str | None] | pa.Array = [None] * len(fast_sessions)

    slow_rows = np.flatnonzero(slow)
    if len(slow_rows):  # the rules themselves, one session at a time
        slow_lines: list[str | None] = []
        for i, session in zip(slow_rows.tolist(), sessions_from_table(table.take(pa.array(slow_rows, pa.int64()))), strict=True):
            try:
                messages = session_messages(session, target, prompt)
            except ExampleError as exc:
                slow_lines.append(None)
                reasons.append(str(exc))
                continue
            slow_lines.append(json_bytes({"messages": messages}).decode("utf-8"))
            reasons.append(None)
            untrained[i] = sum(1 for m in messages if m.get("weight") == 0)
        position = np.empty(n, dtype=np.int64)  # back in row order: fast rows first, slow rows after
        position[fast_sessions] = np.arange(len(fast_sessions))
        position[slow_rows] = len(fast_sessions) + np.arange(len(slow_rows))
        order = pa.array(position, pa.int64())
        lines = pa.concat_arrays([lines, pa.array(slow_lines, pa.string())]).take(order)
        reasons = pa.array(reasons, pa.string()).take(order)
    else:
        reasons = pa.array(reasons, pa.string())
    ids, sources = table.column("session_id"), table.column("source_session_id")
    sources = pc.if_else(pc.fill_null(pc.equal(sources, ""), True), ids, sources)  # as `Session` does
    columns = [ids, sources, table.column("created_at"), pa.array(untrained), lines, reasons]
    return pa.Table.from_arrays([c if isinstance(c, pa.ChunkedArray) else pa.chunked_array([c]) for c in columns], schema=LINES_SCHEMA)


def _offsets(lines: pa.Array) -> np.ndarray:
    """Where each string of a string array starts in its data buffer, and where the last one ends."""
    return np.frombuffer(lines.buffers()[1], dtype=np.int32, count=len(lines) + 1, offset=lines.offset * 4)
