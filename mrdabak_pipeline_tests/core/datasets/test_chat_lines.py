"""The column-wise JSONL writer must write exactly what the per-session writer writes."""

from __future__ import annotations

from datetime import datetime, timedelta

import orjson
import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.datasets import chat_lines
from mrdabak_pipeline.core.datasets.chat_format import ChatDataset, iter_chat_examples
from mrdabak_pipeline.core.domain import ORDER_FIELDS, REQUIRED_ORDER_FIELDS, Session, Turn
from mrdabak_pipeline.core.records import ORDER_STATE_TYPE, sessions_from_table, sessions_to_table
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


def _both_ways(sessions: list[Session], target: str, prompt: str) -> tuple[tuple[bytes, dict], tuple[bytes, dict]]:
    table = sessions_to_table(sessions)
    serial, chunked = ChatDataset(), ChatDataset()
    expected = b"".join(line + b"\n" for _, _, line in iter_chat_examples(sessions_from_table(table), target, 0.5, prompt, serial))
    got = b"".join(bytes(block) for _, block in chat_lines.iter_chat_blocks(table, target, 0.5, prompt, chunked))
    return (got, chunked.counts() | {"skipped": chunked.skipped}), (expected, serial.counts() | {"skipped": serial.skipped})


@settings(max_examples=60, deadline=None)
@given(_sessions(), st.sampled_from(["json", "text"]), st.sampled_from(["short", "full"]))
def test_table_lines_are_the_per_session_lines_byte_for_byte(sessions: list[Session], target: str, prompt: str) -> None:
    got, expected = _both_ways(sessions, target, prompt)
    assert got == expected


def test_real_sessions_give_the_same_files_and_skips() -> None:
    sessions = [order_session(f"o{i}", created_at=datetime(2025, 3, 1, 12) + timedelta(minutes=i), name=f"김민{chr(0xAC00 + i)}") for i in range(30)]
    sessions += [corrected_session(), change_of_mind_session(), Session("lonely", [Turn("user", "여보세요")])]
    sessions.append(Session("dup", list(sessions[0].turns), customer_name="김민수", created_at=sessions[0].created_at))  # same words, same moment
    for target in ("json", "text"):
        (got, got_counts), (expected, counts) = _both_ways(sessions, target, "short")
        assert got == expected and got_counts == counts
        assert counts["duplicates_dropped"] == 1 and counts["skipped"] == [("lonely", "no assistant turn")]


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


def test_a_small_table_is_cut_into_chunks_but_formatted_in_this_process(monkeypatch) -> None:
    sessions = [order_session(f"o{i}", created_at=datetime(2025, 3, 1, 12) + timedelta(minutes=i), name=f"김민{chr(0xAC00 + i)}") for i in range(7)]
    (whole, _), _ = _both_ways(sessions, "json", "short")
    calls = []
    real_imap = chat_lines.parallel.imap

    def spy(fn, items, workers=None):
        items = list(items)
        calls.append((len(items), workers))
        return real_imap(fn, items, workers)

    monkeypatch.setattr(chat_lines, "MAX_CHUNK_SESSIONS", 2)
    monkeypatch.setattr(chat_lines.parallel, "imap", spy)
    (chunked, _), (expected, _) = _both_ways(sessions, "json", "short")
    assert chunked == expected == whole
    assert calls == [(4, 1)]  # four chunks of at most two sessions, no worker process
