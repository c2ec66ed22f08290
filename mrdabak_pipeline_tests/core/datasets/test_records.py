"""Sessions <-> Arrow: the column-wise conversion must equal the plain nested-dict conversion."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.domain import ORDER_FIELDS, Session, Turn
from mrdabak_pipeline.core.records import SESSION_SCHEMA, sessions_from_table, sessions_to_table

T0 = datetime(2025, 3, 1, 12, 0)


def reference_table(sessions: list[Session]) -> pa.Table:
    """The straightforward conversion (one nested dict per session) the fast path must match."""
    rows = [
        {
            "session_id": s.session_id, "source_session_id": s.source_session_id, "variant": s.variant,
            "partition_date": s.partition_date, "customer_name": s.customer_name, "status": s.status,
            "created_at": s.created_at, "tags": list(s.tags),
            "turns": [{"role": t.role, "content": t.content, "order_state": t.order_state, "created_at": t.created_at,
                       "message_id": t.message_id} for t in s.turns],
        }
        for s in sessions
    ]
    return pa.Table.from_pylist(rows, schema=SESSION_SCHEMA)


# Values chosen to collide if states were keyed by naive concatenation: separators, digits,
# colons, the null marker, empty vs missing lists.
_text = st.one_of(st.sampled_from(["", ":", "~", "1:a", "a\x1eb", "\x00", "서울 강남구 1:2", "19:00"]), st.text(max_size=8))
_state = st.one_of(
    st.none(),
    st.just({}),
    st.fixed_dictionaries(
        {},
        optional={
            "dinnerType": _text, "servingStyle": _text, "quantity": st.integers(-5, 200), "deliveryDate": _text,
            "deliveryTime": _text, "deliveryAddress": _text, "readyForConfirmation": st.booleans(),
            "needsMoreInfo": st.lists(_text, max_size=3),
        },
    ).map(lambda d: {k: d[k] for k in ORDER_FIELDS if k in d}),
)
_turn = st.builds(
    Turn, st.sampled_from(["user", "assistant"]), _text, _state,
    st.one_of(st.none(), st.integers(0, 10_000).map(lambda s: T0 + timedelta(seconds=s, microseconds=7))),
    st.one_of(st.none(), st.integers(0, 2**40)),
)
_session = st.builds(
    Session, st.text(min_size=1, max_size=6), st.lists(_turn, max_size=6), customer_name=st.one_of(st.none(), _text),
    status=st.sampled_from(["CONFIRMED", "IN_PROGRESS"]), created_at=st.one_of(st.none(), st.just(T0)),
    variant=st.integers(0, 3), partition_date=st.sampled_from(["", "2025-03-01"]), tags=st.lists(_text, max_size=2),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_session, max_size=8), st.data())
def test_roundtrip_matches_the_reference_conversion(sessions: list[Session], data: Any) -> None:
    # share some state dicts between turns, as cleaning does
    pool = [t.order_state for s in sessions for t in s.turns if t.order_state is not None]
    if pool:
        for s in sessions:
            s.turns = [Turn(t.role, t.content, data.draw(st.sampled_from(pool)), t.created_at, t.message_id)
                       if data.draw(st.booleans()) else t for t in s.turns]
    table = sessions_to_table(sessions)
    assert table.equals(reference_table(sessions))
    back = sessions_from_table(table)
    assert back == sessions
    assert [repr(t.order_state) for s in back for t in s.turns] == [repr(t.order_state) for s in sessions for t in s.turns]
    # a multi-chunk, sliced table (as read from Parquet) converts the same
    if table.num_rows > 2:
        chunked = pa.concat_tables([table.slice(0, 1), table.slice(1, 1), table.slice(2)])
        assert sessions_from_table(chunked) == sessions


def test_empty_input_and_null_turn_lists() -> None:
    assert sessions_to_table([]).equals(reference_table([]))
    assert sessions_from_table(sessions_to_table([])) == []
    table = reference_table([Session("a", [Turn("user", "x")]), Session("b", [])])
    turns = pa.array([[{"role": "user", "content": "x"}], None], SESSION_SCHEMA.field("turns").type)
    table = table.set_column(table.schema.get_field_index("turns"), "turns", turns)
    back = sessions_from_table(table)
    assert [len(s.turns) for s in back] == [1, 0]


def test_equal_states_are_equal_and_distinct_states_stay_distinct() -> None:
    states = [{"quantity": 1}, {"quantity": 1}, {"needsMoreInfo": []}, {}, None, {"needsMoreInfo": [""]},
              {"deliveryAddress": "a:b"}, {"deliveryAddress": "a", "deliveryTime": "b"}]
    s = Session("s", [Turn("assistant", str(i), state) for i, state in enumerate(states)])
    back = sessions_from_table(sessions_to_table([s]))[0]
    assert [t.order_state for t in back.turns] == states
