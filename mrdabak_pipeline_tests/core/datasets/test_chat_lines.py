"""The one JSONL writer (column-wise) writes exactly ``json_bytes({"messages": session_messages(...)})``, or its reason."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.datasets import chat_lines
from mrdabak_pipeline.core.datasets.chat_format import ExampleError, session_messages
from mrdabak_pipeline.core.datasets.shards import shards_of
from mrdabak_pipeline.core.domain import ORDER_FIELDS, REQUIRED_ORDER_FIELDS, Session, Turn
from mrdabak_pipeline.core.records import ORDER_STATE_TYPE, sessions_from_table, sessions_to_table
from mrdabak_pipeline.core.runtime.files import json_bytes
from mrdabak_pipeline_tests.dataset_helpers import change_of_mind_session, corrected_session, order_session

#: Text that stresses JSON escaping and the blank-text rule: quotes, backslashes, every control
#: character, Python-only whitespace (U+001C, U+0085, U+3000), lone-looking escapes, Korean.
_TEXT = st.text(
    alphabet=st.one_of(
        st.sampled_from(list('"\\/{}[],:n ') + ["\x00", "\x1c", "\x1f", "\x7f", "\x85", "\u2028", "\u3000", "\t", "\n", "\r", "\x0b"]),
        st.characters(min_codepoint=0xAC00, max_codepoint=0xAC10),
        st.characters(codec="utf-8", exclude_categories=("Cs",)),
    ),
    max_size=12,
)
_STATE = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "dinnerType": _TEXT,
            "servingStyle": st.sampled_from(["SIMPLE", "GRAND", "DELUXE"]),
            "quantity": st.integers(-5, 10**12),
            "deliveryDate": _TEXT,
            "deliveryTime": st.just("19:00"),
            "deliveryAddress": _TEXT,
            "readyForConfirmation": st.booleans(),
            "needsMoreInfo": st.lists(st.sampled_from(list(REQUIRED_ORDER_FIELDS) + ['a"b', "\\", "x\ny"]), max_size=3),
        },
    ).map(lambda d: {k: d[k] for k in ORDER_FIELDS if k in d}),
)
_TURN = st.builds(Turn, st.sampled_from(["user", "assistant", "assistant", "system", "Bot"]), _TEXT, _STATE)


@st.composite
def _sessions(draw: st.DrawFn) -> list[Session]:
    out = []
    for i in range(draw(st.integers(0, 6))):
        turns = draw(st.lists(_TURN, max_size=7))
        source = draw(st.sampled_from(["", "s0", "s1"]))
        out.append(Session(f"s{i}", turns, customer_name="김민수", created_at=draw(st.one_of(st.none(), st.integers(0, 3).map(lambda m: datetime(2025, 3, 1) + timedelta(minutes=m)))),
                           source_session_id=source, variant=i, partition_date="2025-03-01"))
    return out


def _by_the_rules(session: Session, target: str, prompt: str) -> tuple[str | None, str | None]:
    """(line, skip reason) of one session by `session_messages`, one at a time."""
    try:
        return json_bytes({"messages": session_messages(session, target, prompt)}).decode(), None
    except ExampleError as exc:
        return None, str(exc)


def _both_ways(sessions: list[Session], target: str, prompt: str) -> tuple[list, list]:
    table = sessions_to_table(sessions)
    lines = chat_lines.example_lines(table, target, prompt)
    got = list(zip(lines["line"].to_pylist(), lines["skip_reason"].to_pylist(), strict=True))
    return got, [_by_the_rules(s, target, prompt) for s in sessions_from_table(table)]


@settings(max_examples=60, deadline=None)
@given(_sessions(), st.sampled_from(["json", "text"]), st.sampled_from(["short", "full"]))
def test_table_lines_are_the_per_session_lines_byte_for_byte(sessions: list[Session], target: str, prompt: str) -> None:
    got, expected = _both_ways(sessions, target, prompt)
    assert got == expected


def test_a_day_shard_drops_duplicates_and_lists_skips() -> None:
    sessions = [order_session(f"o{i}", created_at=datetime(2025, 3, 1, 12) + timedelta(minutes=i), name=f"김민{chr(0xAC00 + i)}") for i in range(30)]
    sessions += [corrected_session(), change_of_mind_session(), Session("lonely", [Turn("user", "여보세요")])]
    sessions.append(Session("dup", list(sessions[0].turns), customer_name="김민수", created_at=sessions[0].created_at))  # same words, same moment
    sessions = [replace(s, partition_date="2025-03-01") for s in sessions]
    for target in ("json", "text"):
        [shard] = shards_of(sessions, target=target)
        assert shard["duplicate"].to_pylist().count(True) == 1
        skipped = shard.filter(shard["line"].is_null())
        assert list(zip(skipped["session_id"].to_pylist(), skipped["skip_reason"].to_pylist(), strict=True)) == [("lonely", "no assistant turn")]
        written = shard.filter(shard["n_tokens"].is_valid())
        assert written.num_rows == len(sessions) - 2 and min(written["n_tokens"].to_pylist()) > 0


def test_a_table_is_formatted_in_slices_with_the_same_lines(monkeypatch) -> None:
    sessions = [order_session(f"o{i}", created_at=datetime(2025, 3, 1, 12) + timedelta(minutes=i), name=f"김민{chr(0xAC00 + i)}") for i in range(7)]
    whole, _ = _both_ways(sessions, "json", "short")
    monkeypatch.setattr(chat_lines, "MAX_CHUNK_SESSIONS", 2)
    sliced, expected = _both_ways(sessions, "json", "short")
    assert sliced == expected == whole


@settings(max_examples=100, deadline=None)
@given(st.lists(st.one_of(st.none(), _TEXT), max_size=8), st.integers(0, 3))
def test_escape_json_is_orjson_inside_the_quotes(texts: list[str | None], start: int) -> None:
    values = pa.array(["pad"] * start + texts, pa.string()).slice(start)  # a sliced array too
    expected = [None if t is None else orjson.dumps(t)[1:-1].decode() for t in texts]
    assert chat_lines.escape_json(values).to_pylist() == expected


@settings(max_examples=75, deadline=None)
@given(st.lists(_STATE, max_size=6))
def test_state_json_is_orjson_of_the_set_keys(states: list[dict | None]) -> None:
    column = pa.array(states, ORDER_STATE_TYPE)
    assert chat_lines.state_json(column).to_pylist() == [orjson.dumps(s or {}).decode() for s in states]
