"""Preference pairs from corrected assistant turns."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import pytest

from mrdabak_pipeline.core.datasets.build import write_preference_dataset
from mrdabak_pipeline.core.datasets.dpo import build_preference_dataset, is_correction, session_pairs
from mrdabak_pipeline.core.datasets.validation import format_errors
from mrdabak_pipeline.core.domain import Session, Turn, parse_assistant_reply
from mrdabak_pipeline_tests.dataset_helpers import (
    change_of_mind_session,
    corrected_session,
    order_session,
    state,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("아니요, 잉글리시 디너라고 했는데요", True),
        ("아니 그게 아니라 두 개요", True),
        ("주소가 잘못됐어요", True),
        ("수량이 틀렸어요", True),
        ("아 잠깐만요, 프렌치 디너로 바꿀게요.", False),
        ("네, 맞아요. 주문할게요.", False),
        ("아니면 내일 받을게요", False),
        ("안녕하세요", False),
        ("경상북도 안양시 정정동 795로 보내주세요", False),
    ],
)
def test_correction_detection(text: str, expected: bool) -> None:
    assert is_correction(text) is expected


def test_customer_correction_becomes_a_pair_on_the_same_context() -> None:
    [pair] = session_pairs(corrected_session())
    assert pair.reason == "customer_correction"
    assert pair.prompt[0]["role"] == "system" and pair.prompt[-1] == {"role": "user", "content": "잉글리시 디너 하나요"}
    assert parse_assistant_reply(pair.chosen["content"])[1]["dinnerType"] == "ENGLISH"
    assert parse_assistant_reply(pair.rejected["content"])[1]["dinnerType"] == "FRENCH"
    record = pair.openai_record()
    assert set(record) == {"input", "preferred_output", "non_preferred_output"}
    assert format_errors({"messages": record["input"]["messages"] + record["preferred_output"]}) == []
    trl = pair.trl_record()
    assert trl["prompt"] == pair.prompt and trl["chosen"] == [pair.chosen] and trl["rejected"] == [pair.rejected]


def test_change_of_mind_and_clean_orders_give_no_pairs() -> None:
    assert session_pairs(change_of_mind_session()) == []
    assert session_pairs(order_session("s1")) == []


def test_state_fixed_by_the_next_assistant_turn() -> None:
    session = Session(
        "fix-1",
        [
            Turn("user", "발렌타인 디너 세 개요"),
            Turn("assistant", "발렌타인 디너 2개로 준비하겠습니다.", state(dinnerType="VALENTINE", quantity=2)),
            Turn("assistant", "발렌타인 디너 3개로 준비하겠습니다.", state(dinnerType="VALENTINE", quantity=3)),
        ],
        created_at=datetime(2025, 3, 1),
    )
    [pair] = session_pairs(session)
    assert pair.reason == "state_fixed"
    assert parse_assistant_reply(pair.chosen["content"])[1]["quantity"] == 3
    assert session_pairs(session, "text") == []  # without states there is no evidence of a fix


def test_a_newly_filled_field_is_not_a_correction() -> None:
    s = corrected_session()
    s.turns[2] = Turn("user", "아니요, 주소는 서울시 마포구 396이에요")
    s.turns[3] = Turn("assistant", "주소를 기록했습니다.", state(dinnerType="FRENCH", quantity=1, deliveryAddress="서울시 마포구 396"))
    assert session_pairs(s) == []


def test_correction_without_a_changed_state_is_not_a_pair() -> None:
    s = corrected_session()
    s.turns[3] = Turn("assistant", "다시 확인해 보니 프렌치 디너 1개 맞습니다.", s.turns[1].order_state)
    assert session_pairs(s) == []
    assert len(session_pairs(s, "text")) == 1  # the text target only has the customer's word


def test_files_in_both_formats_and_no_pairs_is_not_an_error(tmp_path: Path) -> None:
    sessions = [corrected_session(f"corr-{i}") for i in range(30)] + [change_of_mind_session()]
    pref = build_preference_dataset(sessions)
    assert len(pref.train) + len(pref.validation) == 1  # the 30 corrected sessions are identical: kept once
    value = write_preference_dataset(sessions, tmp_path)
    assert value["pair_count"] == 1 and value["pairs_customer_correction"] == 1
    split = "train" if pref.train else "validation"
    openai = [json.loads(x) for x in Path(value[f"openai_{split}_path"]).read_text(encoding="utf-8").splitlines()]
    trl = [json.loads(x) for x in Path(value[f"trl_{split}_path"]).read_text(encoding="utf-8").splitlines()]
    assert set(openai[0]) == {"input", "preferred_output", "non_preferred_output"}
    assert set(trl[0]) == {"prompt", "chosen", "rejected"}

    empty = write_preference_dataset([order_session("s1")], tmp_path)
    assert empty["pair_count"] == 0 and empty["openai_train_path"] is None
    assert not (tmp_path / f"openai_{split}.jsonl").exists()  # the latest build has none: no stale pointer
    assert Path(value[f"openai_{split}_path"]).is_file()  # the previous value's file is its own (content-addressed)
