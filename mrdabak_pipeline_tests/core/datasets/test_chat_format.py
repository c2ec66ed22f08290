"""Sessions -> chat examples, the stable split and the golden set."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.datasets.chat_format import (
    GOLDEN_PATH,
    TRAIN,
    VALIDATION,
    ExampleError,
    GoldenFormatError,
    load_golden,
    session_messages,
    session_to_example,
    split_of,
)
from mrdabak_pipeline.core.datasets.validation import validate_examples
from mrdabak_pipeline.core.domain import Session, Turn, parse_assistant_reply
from mrdabak_pipeline.core.prompts import PromptKind, now_from_system, parse_now, system_prompt
from mrdabak_pipeline_tests.dataset_helpers import build_chat_dataset, order_session, state


def test_json_target_is_the_app_reply_with_the_turn_state() -> None:
    session = order_session("s1")
    messages = session_to_example(session)["messages"]
    assert messages[0] == {"role": "system", "content": system_prompt(session.created_at, PromptKind.SHORT)}
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant"]
    text, parsed = parse_assistant_reply(messages[-1]["content"])
    assert text == session.turns[-1].content
    assert parsed == session.turns[-1].order_state


def test_text_target_is_the_reply_text_only() -> None:
    session = order_session("s1")
    messages = session_messages(session, "text")
    assert messages[2]["content"] == session.turns[1].content
    assert all("weight" not in m for m in messages)


def test_trailing_user_turns_are_dropped_and_sessions_without_reply_are_rejected() -> None:
    session = order_session("s1")
    session.turns.append(Turn("user", "여보세요?"))
    assert session_messages(session)[-1]["role"] == "assistant"
    with pytest.raises(ExampleError, match="no assistant turn"):
        session_messages(Session("s2", [Turn("user", "안녕하세요")]))
    with pytest.raises(ExampleError, match="unexpected role"):
        session_messages(Session("s3", [Turn("system", "x"), Turn("assistant", "네")]))
    with pytest.raises(ExampleError, match="empty user content"):
        session_messages(Session("s4", [Turn("user", "  "), Turn("assistant", "네")]))


def test_unknown_state_keeps_the_previous_one_but_is_not_trained_on() -> None:
    session = order_session("s1")
    first_state = session.turns[1].order_state
    session.turns.extend([Turn("user", "감사합니다"), Turn("assistant", "네, 좋은 하루 되세요.", None)])
    messages = session_messages(session)
    assert messages[-1]["weight"] == 0
    assert parse_assistant_reply(messages[-1]["content"])[1] == session.turns[3].order_state != first_state
    assert sum("weight" in m for m in messages) == 1


def test_bad_sessions_are_listed_with_a_reason_not_lost() -> None:
    good = [order_session(f"s{i}", name=f"고객{i}") for i in range(3)]
    bad = Session("bad", [Turn("user", "안녕하세요")])
    ds = build_chat_dataset([*good, bad], validation_fraction=0.0)
    assert len(ds.train) == 3 and ds.validation == []
    assert ds.skipped == [("bad", "no assistant turn")]


def test_identical_variants_are_kept_once() -> None:
    original = order_session("s1")
    same = replace(original, session_id="s1#v1", variant=1)
    other = order_session("s1#v2", source="s1", variant=2, name="이영희")
    ds = build_chat_dataset([original, same, other], validation_fraction=0.0)
    assert len(ds.train) == 2 and ds.duplicates_dropped == 1


def test_output_is_deterministic_and_high_water_mark_is_the_newest_session() -> None:
    start = datetime(2025, 3, 1, 9)
    sessions = [order_session(f"s{i}", created_at=start + timedelta(hours=i), name=f"이름{i}") for i in range(30)]
    shuffled = sessions[:]
    random.Random(1).shuffle(shuffled)
    a, b = build_chat_dataset(sessions), build_chat_dataset(shuffled)
    assert a.train == b.train and a.validation == b.validation
    assert a.high_water_mark == start + timedelta(hours=29)


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=40), st.floats(0.0, 0.95), st.floats(0.0, 0.95))
def test_split_is_a_pure_function_of_the_id_and_monotone_in_the_fraction(sid: str, f1: float, f2: float) -> None:
    low, high = sorted((f1, f2))
    assert split_of(sid, low) == split_of(sid, low)
    if split_of(sid, low) == VALIDATION:
        assert split_of(sid, high) == VALIDATION  # raising the fraction never moves a session back


def test_split_fraction_is_close_to_the_request() -> None:
    share = sum(split_of(f"session-{i}", 0.1) == VALIDATION for i in range(5000)) / 5000
    assert 0.085 < share < 0.115
    with pytest.raises(ValueError):
        split_of("x", 1.0)


def test_adding_sessions_never_moves_an_old_session_and_variants_follow_their_source() -> None:
    start = datetime(2025, 3, 1)
    old = [order_session(f"s{i}", created_at=start + timedelta(minutes=i), name=f"가{i}") for i in range(200)]
    variants = [
        order_session(f"s{i}#v1", source=f"s{i}", variant=1, created_at=start + timedelta(minutes=i), name=f"나{i}")
        for i in range(200)
    ]
    new = [order_session(f"n{i}", created_at=start + timedelta(days=1, minutes=i), name=f"다{i}") for i in range(300)]
    before = build_chat_dataset(old + variants)
    after = build_chat_dataset(old + variants + new)
    assert before.source_sessions[VALIDATION] and before.source_sessions[TRAIN]
    assert before.source_sessions[TRAIN] <= after.source_sessions[TRAIN]
    assert before.source_sessions[VALIDATION] <= after.source_sessions[VALIDATION]
    assert not after.source_sessions[TRAIN] & after.source_sessions[VALIDATION]
    # every variant sits with its source: each validation source contributes both of its examples
    assert len(after.validation) == 2 * len(before.source_sessions[VALIDATION]) + sum(
        1 for s in new if split_of(s.source_session_id) == VALIDATION
    )


def test_every_example_carries_its_conversations_now_in_the_chosen_prompt() -> None:
    session = order_session("s1")
    start = session.created_at
    short = session_messages(session)[0]["content"]
    full = session_messages(session, prompt="full")[0]["content"]
    assert now_from_system(short) == now_from_system(full) == parse_now(start).replace(second=0, microsecond=0)
    assert "현재 시각" in short and "CHAMPAGNE_FEAST" in full and "CHAMPAGNE_FEAST" not in short
    # a session moved to another day says that other day
    moved = replace(session, created_at=start + timedelta(days=3))
    assert now_from_system(session_messages(moved)[0]["content"]) == now_from_system(short) + timedelta(days=3)
    with pytest.raises(ExampleError, match="no conversation time"):
        session_messages(replace(session, created_at=None))


def test_golden_set_loads_covers_the_edge_cases_and_passes_the_openai_checks() -> None:
    golden = load_golden()
    assert len(golden) >= 20
    categories = {g.category for g in golden}
    assert {"out_of_domain", "champagne_simple", "missing_fields", "change_of_mind", "complete_order"} <= categories
    for g in golden:
        assert g.messages[0]["content"] == system_prompt(g.now, PromptKind.SHORT)
        assert g.prompt[-1]["role"] == "user"
        assert isinstance(g.reference_state, dict)
    champagne = [g for g in golden if g.category == "champagne_simple"]
    assert all(g.reference_state.get("servingStyle") != "SIMPLE" for g in champagne)
    report = validate_examples([g.as_example() for g in golden])
    assert report.ok and not report.warnings


def test_golden_loader_names_the_bad_line(tmp_path) -> None:
    lines = GOLDEN_PATH.read_text(encoding="utf-8").splitlines()[:2]
    broken = json.loads(lines[1])
    broken["messages"][-1]["content"] = "그냥 텍스트"
    path = tmp_path / "golden.jsonl"
    path.write_text(lines[0] + "\n" + json.dumps(broken, ensure_ascii=False) + "\n", encoding="utf-8")
    with pytest.raises(GoldenFormatError, match=r"golden.jsonl:2: assistant reply is not the app's JSON"):
        load_golden(path)
    path.write_text(lines[0] + "\n" + lines[0] + "\n", encoding="utf-8")
    with pytest.raises(GoldenFormatError, match="duplicate id"):
        load_golden(path)


def test_golden_system_prompt_is_rendered_from_each_conversations_now(tmp_path) -> None:
    golden = load_golden(prompt="full")
    assert all(g.messages[0]["content"] == system_prompt(g.now, PromptKind.FULL) for g in golden)
    assert all(now_from_system(g.messages[0]["content"]) == g.now.replace(second=0) for g in golden)
    assert len({g.now.date() for g in golden}) > 1  # conversations on different days
    assert state()["needsMoreInfo"]  # helper sanity: an empty order misses every field


