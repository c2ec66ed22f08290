"""Every cleaning rule on hand-made raw rows, plus a hypothesis test of conservation."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.ingest.db import RAW_SCHEMA
from mrdabak_pipeline.core.prepare.cleaning import (
    CleaningConfig,
    checklist_figures,
    clean_partition,
    conservation_violations,
    normalize_role,
    normalize_text,
    scenario_tags,
)

T0 = datetime(2025, 3, 1, 12, 0)
DAY = "2025-03-01"
READY = {
    "dinnerType": "FRENCH", "servingStyle": "GRAND", "quantity": 2, "deliveryDate": "2025-03-02",
    "deliveryTime": "19:00", "deliveryAddress": "서울특별시 강남구 테헤란로 123", "readyForConfirmation": True, "needsMoreInfo": [],
}


def msg(sid: str, mid: int, role: str | None, content: str | None, state: Any = None, *, t: datetime | None = None,
        orphan: bool = False, error: str | None = None, name: str | None = "김민수") -> dict[str, Any]:
    return {
        "session_id": sid, "customer_id": 1, "customer_name": None if orphan else name, "status": None if orphan else "CONFIRMED",
        "session_created_at": None if orphan else T0, "session_updated_at": None if orphan else T0, "message_id": mid,
        "role": role, "content": content, "order_state": json.dumps(state, ensure_ascii=False) if isinstance(state, dict) else state,
        "message_created_at": t or (T0 + timedelta(seconds=mid) if mid is not None else None), "is_orphan": orphan, "decode_error": error, "partition_date": DAY,
    }


def exchange(sid: str, start: int = 1, state: Any = None) -> list[dict[str, Any]]:
    return [msg(sid, start, "user", "안녕하세요"), msg(sid, start + 1, "assistant", "안녕하세요, 김민수님!", state or {"readyForConfirmation": False})]


def table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=RAW_SCHEMA)


def only(result: Any, reason: str | None = None):
    if reason:
        assert [r.reason for r in result.rejections] == [reason], result.rejections
        assert not result.sessions
        return result.rejections[0]
    assert not result.rejections, result.rejections
    assert len(result.sessions) == 1
    return result.sessions[0]


def test_text_normalization() -> None:
    assert normalize_text("\ufeff내일\u00a0저녁 ７시\u200b요\r\n") == "내일 저녁 7시요"
    assert normalize_text("  a   b \r\n\r\n\r\n c ") == "a b\n\nc"
    assert normalize_text("ㅋㅋ ㅇㅇ") == "ㅋㅋ ㅇㅇ"  # no NFKC: compatibility jamo survive
    decomposed = "\u1100\u1161"  # 가 as conjoining jamo
    assert normalize_text(decomposed) == "가"
    assert normalize_text("０１０－１２３４") == "010-1234"


def test_roles() -> None:
    for spelling in ("USER", "User", "Customer", "human", " user "):
        assert normalize_role(spelling) == "user"
    for spelling in ("ASSISTANT", "Assistant", "bot", "ai", "agent"):
        assert normalize_role(spelling) == "assistant"
    assert normalize_role("operator") is None and normalize_role(None) is None


def test_kept_session_is_ordered_and_normalized() -> None:
    rows = [
        msg("s", 3, "Assistant", "네, 프렌치 디너요.", {"dinnerType": "french", "quantity": "2"}, t=T0 + timedelta(seconds=5)),
        msg("s", 2, "human", "\ufeff프렌치\u00a0디너 ２개요\r\n", t=T0 + timedelta(seconds=5)),  # same time: id decides
        msg("s", 1, "USER", "안녕하세요", t=T0),
    ]
    s = only(clean_partition(table(rows)))
    assert [t.message_id for t in s.turns] == [1, 2, 3]
    assert [t.role for t in s.turns] == ["user", "user", "assistant"]
    assert s.turns[1].content == "프렌치 디너 2개요"
    assert s.turns[2].order_state == {"dinnerType": "FRENCH", "quantity": 2}
    assert s.partition_date == DAY and s.status == "CONFIRMED" and s.customer_name == "김민수"


def test_bad_order_state_is_dropped_with_reason() -> None:
    rows = [msg("s", 1, "user", "안녕"), msg("s", 2, "assistant", "네", '{"dinnerType": "VAL'), msg("s", 3, "user", "음"),
            msg("s", 4, "assistant", "네?", {"dinnerType": "PIZZA"})]
    r = clean_partition(table(rows))
    s = only(r)
    assert s.turns[1].order_state is None and s.turns[3].order_state is None
    assert r.dropped_order_states == {"malformed_json": 1, "invalid_dinnerType": 1}
    assert "order_state_dropped" in s.tags


def test_duplicates_collapsed_and_empty_messages_dropped() -> None:
    rows = exchange("s") + [msg("s", 3, "user", "네 맞아요", t=T0 + timedelta(seconds=3)), msg("s", 4, "user", "네 맞아요", t=T0 + timedelta(seconds=3)),
                            msg("s", 5, "user", "   "), msg("s", 6, "user", None), msg("s", 7, "assistant", "확정되었습니다.")]
    r = clean_partition(table(rows))
    s = only(r)
    assert [t.content for t in s.turns] == ["안녕하세요", "안녕하세요, 김민수님!", "네 맞아요", "확정되었습니다."]
    assert r.collapsed_duplicates == {"consecutive_duplicate": 1}
    assert r.dropped_messages == {"empty_content": 2}
    assert r.row_balance()["unaccounted"] == 0


def test_rejection_reasons() -> None:
    cfg = CleaningConfig(max_message_chars=50)
    assert only(clean_partition(table([msg("e", None, None, None)])), "empty_session").n_rows == 1
    assert only(clean_partition(table([msg("o", 1, "user", "a", orphan=True), msg("o", 2, "user", "b", orphan=True)])), "orphan_messages").n_rows == 2
    rej = only(clean_partition(table(exchange("u") + [msg("u", 9, "operator", "x")])), "unknown_role")
    assert "operator" in rej.detail and rej.n_rows == 3
    rej = only(clean_partition(table([*exchange("b"), msg("b", 9, "user", "a\ufffd", error="undecodable_bytes:content")])), "undecodable_row")
    assert rej.detail == "undecodable_bytes:content"
    only(clean_partition(table([*exchange("l"), msg("l", 9, "user", "그리고 " * 30)]), cfg), "message_too_long")
    only(clean_partition(table([msg("n", 1, "user", "여보세요"), msg("n", 2, "user", "여보세요?")])), "no_exchange")
    only(clean_partition(table([msg("a", 1, "assistant", "안녕하세요"), msg("a", 2, "user", "안녕")])), "no_exchange")
    only(clean_partition(table([{**msg("x", 1, "user", "a"), "session_id": None}])), "missing_session_id")


def test_error_handling_examples_are_kept_and_tagged() -> None:
    rows = [
        msg("s", 1, "user", "안녕하세요"), msg("s", 2, "assistant", "안녕하세요, 김민수님! 미스터 대박입니다."),
        msg("s", 3, "user", "오늘 날씨 어때요?"), msg("s", 4, "assistant", "죄송하지만 저는 미스터 대박 디너 주문만 도와드릴 수 있어요."),
        msg("s", 5, "user", "샴페인 축제 디너 심플로요"),
        msg("s", 6, "assistant", "죄송합니다. 샴페인 축제 디너는 그랜드 또는 디럭스 스타일로만 제공됩니다.", {"dinnerType": "CHAMPAGNE_FEAST"}),
        msg("s", 7, "user", "디럭스요"), msg("s", 8, "assistant", "확인하겠습니다.", {**READY, "dinnerType": "CHAMPAGNE_FEAST", "servingStyle": "DELUXE"}),
    ]
    s = only(clean_partition(table(rows)))
    assert {"greeting", "complete_flow", "out_of_domain", "champagne_simple_correction"} <= set(s.tags)
    figures = checklist_figures([s])
    assert figures["error_handling"] == 2 and figures["complete_flows"] == 1
    assert figures["missing_dinners"] == ["VALENTINE", "FRENCH", "ENGLISH"] and figures["styles"]["DELUXE"] == 1


def test_scenario_tags_need_a_greeting_for_a_complete_flow() -> None:
    from mrdabak_pipeline.core.domain import Turn

    assert scenario_tags([Turn("user", "프렌치"), Turn("assistant", "확인", READY)]) == []


def test_conservation_violations() -> None:
    assert conservation_violations({"a", "b"}, ["a"], ["b"]) == {"missing": [], "in_both_or_twice": [], "unknown": []}
    assert conservation_violations({"a", "b", "c"}, ["a", "z"], ["a"]) == {"missing": ["b", "c"], "in_both_or_twice": ["a"], "unknown": ["z"]}


_roles = st.sampled_from(["user", "USER", "assistant", "bot", "operator", None])
_text = st.one_of(st.none(), st.text(max_size=40), st.sampled_from(["안녕하세요", "\ufeff ７시\u200b", "   "]))
_state = st.one_of(st.none(), st.text(max_size=20), st.sampled_from(['{"dinnerType": "valentine", "quantity": "2"}', '{"x":1}', "[]", "null"]))
_row = st.fixed_dictionaries(
    {
        "session_id": st.one_of(st.none(), st.sampled_from(["a", "b", "c", "d"])),
        "message_id": st.one_of(st.none(), st.integers(0, 50)),
        "role": _roles,
        "content": _text,
        "order_state": _state,
        "message_created_at": st.one_of(st.none(), st.datetimes(datetime(2025, 3, 1), datetime(2025, 3, 2))),
        "is_orphan": st.booleans(),
        "decode_error": st.one_of(st.none(), st.just("bad_timestamp:message.created_at")),
        "customer_name": st.one_of(st.none(), st.text(max_size=5)),
        "status": st.one_of(st.none(), st.sampled_from(["CONFIRMED", "weird"])),
        "partition_date": st.just(DAY),
    }
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_row, max_size=25), st.integers(1, 60))
def test_arbitrary_rows_never_crash_and_conserve(rows: list[dict[str, Any]], max_chars: int) -> None:
    r = clean_partition(pa.Table.from_pylist(rows, schema=RAW_SCHEMA), CleaningConfig(max_message_chars=max_chars))
    raw_ids = {sid if sid is not None else "" for sid in (row["session_id"] for row in rows)}
    v = conservation_violations(raw_ids, [s.session_id for s in r.sessions], [x.session_id for x in r.rejections])
    assert not any(v.values()), v
    assert r.row_balance()["unaccounted"] == 0
    for s in r.sessions:
        assert {t.role for t in s.turns} <= {"user", "assistant"}
        assert all(t.content and len(t.content) <= max_chars for t in s.turns)


_json_value = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-3, 120), st.floats(allow_nan=False, allow_infinity=False),
              st.sampled_from(["valentine", " Deluxe ", "FRENCH", "2", "２", "2025-03-02", "2025-02-30", "19:00", "7:00", " 서울  강남구 ", "", "true"])),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["x", "quantity"]), inner, max_size=2),
    max_leaves=4,
)
_state_obj = st.dictionaries(st.sampled_from([*READY.keys(), "extra"]), st.one_of(_json_value, st.lists(st.sampled_from(["quantity", "dinnerType", "bogus"]), max_size=3)), max_size=5)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(_state_obj.map(lambda d: json.dumps(d, ensure_ascii=False)), st.text(max_size=12)), min_size=1, max_size=6))
def test_order_states_parse_exactly_as_normalize_order_state(states: list[str]) -> None:
    """Cleaning keeps what `normalize_order_state` gives, or drops the state with the reason its
    structured error names (the stable counter names: malformed_json, unknown_keys, invalid_<field>)."""
    from mrdabak_pipeline.core.domain import ORDER_FIELDS, OrderStateError, normalize_order_state

    rows = [msg("s", 1, "user", "안녕하세요")]
    rows += [msg("s", 2 + i, "assistant", f"네 {i}", state) for i, state in enumerate(states)]
    r = clean_partition(table(rows))
    s = only(r)
    drops = {d.message_id: d for d in r.state_drops}
    for i, text in enumerate(states):
        turn = s.turns[1 + i]
        try:
            expected = normalize_order_state(text)
        except OrderStateError as exc:
            assert turn.order_state is None and drops[turn.message_id].reason == exc.reason
            assert exc.reason in {"malformed_json", "not_an_object", "unknown_keys", *(f"invalid_{f}" for f in ORDER_FIELDS)}
            assert drops[turn.message_id].detail == str(exc)
        else:
            assert turn.order_state == expected and repr(turn.order_state) == repr(expected)
            assert turn.message_id not in drops
