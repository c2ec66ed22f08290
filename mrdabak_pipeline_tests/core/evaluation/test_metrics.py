"""Metric tests on hand-made replies: broken JSON, wrong enums, partial states, rules, consistency."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.domain import assistant_target
from mrdabak_pipeline.core.evaluation.metrics import (
    FIELD_NAMES,
    EvalItem,
    apply_judge,
    bootstrap_interval,
    consistency_groups,
    is_decline,
    items_from_examples,
    parse_judge_score,
    score_replies,
    score_reply,
    summarize,
    wilson_interval,
)
from mrdabak_pipeline_tests.prompt_fixtures import SYSTEM_PROMPT

FULL = {
    "dinnerType": "VALENTINE",
    "servingStyle": "DELUXE",
    "quantity": 2,
    "deliveryDate": "2025-12-24",
    "deliveryTime": "19:00",
    "deliveryAddress": "서울특별시 강남구 테헤란로 1",
    "readyForConfirmation": True,
    "needsMoreInfo": [],
}
PARTIAL = {"dinnerType": "FRENCH", "needsMoreInfo": ["servingStyle", "quantity", "deliveryDate"]}


def _item(state: dict, message: str = "주문 확인 부탁드립니다.", **kw) -> EvalItem:
    ref = assistant_target(message, state)
    from mrdabak_pipeline.core.domain import parse_assistant_reply

    msg, st_ = parse_assistant_reply(ref)
    defaults = dict(item_id="t#0", source="validation", prompt=[{"role": "user", "content": "주문"}])
    return EvalItem(reference=ref, ref_message=msg, ref_state=st_, **{**defaults, **kw})


def _example(ex_id: str, states: list[dict], group: str | None = None, variant: int = 0) -> dict:
    msgs = [{"role": "system", "content": SYSTEM_PROMPT}]
    for i, s in enumerate(states):
        msgs += [{"role": "user", "content": f"요청 {i}"}, {"role": "assistant", "content": assistant_target(f"답 {i}", s)}]
    ex = {"id": ex_id, "messages": msgs, "variant": variant}
    if group:
        ex["source_session_id"] = group
    return ex


# --- intervals ----------------------------------------------------------------------------------


def test_wilson_interval_known_values_and_edges() -> None:
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    lo0, hi0 = wilson_interval(0, 5)
    assert lo0 == 0.0 and 0.4 < hi0 < 0.5  # 0/5 is not "certainly 0"
    assert wilson_interval(0, 0) is None


@given(st.integers(min_value=1, max_value=500), st.data())
@settings(max_examples=60, deadline=None)
def test_wilson_interval_contains_the_estimate(n: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(min_value=0, max_value=n))
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_bootstrap_interval_brackets_the_mean() -> None:
    import numpy as np

    values = np.array([0.0, 1.0] * 20)
    lo, hi = bootstrap_interval(len(values), lambda idx: float(values[idx].mean()))
    assert lo < 0.5 < hi and hi - lo < 0.5


# --- one reply ----------------------------------------------------------------------------------


def test_perfect_reply_scores_everything() -> None:
    it = _item(FULL)
    s = score_reply(it, it.reference)
    assert s.valid_json and s.exact_match and s.ready_correct and all(s.field_correct.values())
    assert s.chrf == pytest.approx(100.0)
    assert not s.rule_violation


def test_equivalent_spellings_still_match() -> None:
    it = _item(FULL)
    reply = json.dumps(
        {"message": "주문 확인 부탁드립니다.", "orderState": {**FULL, "dinnerType": "valentine", "servingStyle": "Deluxe", "quantity": "2"}},
        ensure_ascii=False,
    )
    assert score_reply(it, reply).exact_match


@pytest.mark.parametrize(
    "reply,reason",
    [
        ('{"message": "네", "orderState": {', "malformed_json"),
        ("발렌타인 디너 맞으시죠?", "malformed_json"),
        ('```json\n{"message": "네", "orderState": {}}\n```', "malformed_json"),
        ('{"message": "네", "orderState": {"dinnerType": "PIZZA"}}', "invalid_dinnerType"),
        ('{"message": "네", "orderState": {"servingStyle": "SUPER"}}', "invalid_servingStyle"),
        ('{"message": "네", "orderState": {}, "extra": 1}', "not_a_reply"),
        ('{"message": 3, "orderState": {}}', "invalid_message"),
        ('{"message": "네", "orderState": {"colour": "red"}}', "unknown_keys"),
        ('{"message": "네", "orderState": {"quantity": 0}}', "invalid_quantity"),
        ('{"message": "네", "orderState": {"quantity": true}}', "invalid_quantity"),
        ('{"message": "네", "orderState": []}', "not_an_object"),
    ],
)
def test_unusable_replies_are_invalid_and_wrong_everywhere(reply: str, reason: str) -> None:
    it = _item(PARTIAL)
    s = score_reply(it, reply)
    assert not s.valid_json and s.error_reason == reason and s.error
    assert not any(s.field_correct.values()) and not s.exact_match and not s.ready_correct
    assert s.nmi_fn == 3 and s.chrf == 0.0


def test_partial_state_counts_fields_separately() -> None:
    it = _item(FULL)
    reply = assistant_target("네", {**FULL, "quantity": 3, "deliveryTime": None, "readyForConfirmation": False})
    s = score_reply(it, reply)
    assert s.valid_json and not s.exact_match
    assert s.field_correct == {
        "dinnerType": True,
        "servingStyle": True,
        "quantity": False,
        "deliveryDate": True,
        "deliveryTime": False,
        "deliveryAddress": True,
    }
    assert not s.ready_correct


def test_absent_defaults_equal_explicit_defaults() -> None:
    it = _item({"dinnerType": "ENGLISH"})
    reply = assistant_target("네", {"dinnerType": "ENGLISH", "readyForConfirmation": False, "needsMoreInfo": []})
    assert score_reply(it, reply).exact_match


def test_needs_more_info_counts() -> None:
    it = _item(PARTIAL)
    s = score_reply(it, assistant_target("네", {**PARTIAL, "needsMoreInfo": ["servingStyle", "deliveryAddress"]}))
    assert (s.nmi_tp, s.nmi_fp, s.nmi_fn) == (1, 1, 2)


def test_champagne_feast_simple_is_a_rule_violation() -> None:
    it = _item({"dinnerType": "CHAMPAGNE_FEAST", "servingStyle": "GRAND"})
    s = score_reply(it, assistant_target("네", {"dinnerType": "CHAMPAGNE_FEAST", "servingStyle": "SIMPLE"}))
    assert s.valid_json and s.rule_violation
    ok = score_reply(it, assistant_target("네", {"dinnerType": "CHAMPAGNE_FEAST", "servingStyle": "DELUXE"}))
    assert not ok.rule_violation


@pytest.mark.parametrize(
    "message,declines",
    [
        ("죄송하지만 날씨에 대해서는 답변드릴 수 없습니다. 디너 주문을 도와드릴까요?", True),
        ("그 질문은 디너 주문과 관련이 없어 도와드리기 어렵습니다.", True),
        ("주문과 관계없는 질문에는 답변할 수 없어요.", True),
        ("발렌타인 디너 디럭스로 준비하겠습니다.", False),
        ("죄송하지만 샴페인 축제 디너는 심플 스타일로 제공되지 않습니다.", False),
    ],
)
def test_decline_detection(message: str, declines: bool) -> None:
    assert is_decline(message) is declines


# --- items from examples ------------------------------------------------------------------------


def test_every_assistant_turn_is_an_item_with_its_prompt() -> None:
    ex = _example("s1", [{"needsMoreInfo": ["dinnerType"]}, {"dinnerType": "FRENCH"}])
    items, skipped = items_from_examples([ex], "validation")
    assert not skipped and [it.item_id for it in items] == ["validation:s1#0", "validation:s1#1"]
    assert [m["role"] for m in items[1].prompt] == ["system", "user", "assistant", "user"]
    assert items[1].ref_state == {"dinnerType": "FRENCH"}


def test_unparseable_reference_is_skipped_with_reason_and_max_items_bounds() -> None:
    bad = {"id": "b", "messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "plain text"}]}
    exs = [_example(f"s{i}", [{}, {"dinnerType": "FRENCH"}]) for i in range(5)] + [bad, {"id": "e"}]
    items, skipped = items_from_examples(exs, "validation")
    assert len(items) == 10
    reasons = {s.example_id: s.reason for s in skipped}
    assert "not the app's JSON" in reasons["b#0"] and reasons["e"] == "no messages list"
    bounded, _ = items_from_examples(exs, "validation", max_items=3)
    assert len(bounded) == 3
    assert bounded == items_from_examples(list(reversed(exs)), "validation", max_items=3)[0]  # stable order


def test_weight_zero_turns_are_skipped_and_last_turn_only() -> None:
    ex = _example("s", [{"needsMoreInfo": ["dinnerType"]}, {"dinnerType": "FRENCH"}, FULL])
    ex["messages"][4]["weight"] = 0
    items, skipped = items_from_examples([ex], "validation")
    assert [it.turn_index for it in items] == [0, 2]
    assert [(s.example_id, s.reason) for s in skipped] == [("s#1", "weight 0: not a training target")]
    last, _ = items_from_examples([ex], "golden", last_turn_only=True)
    assert [it.item_id for it in last] == ["golden:s#2"] and last[0].ref_state == FULL


def test_golden_out_of_domain_category_marks_the_item() -> None:
    ex = _example("g1", [{"needsMoreInfo": ["dinnerType"]}])
    ex["category"] = "out_of_domain"
    items, _ = items_from_examples([ex], "golden")
    assert items[0].is_ood and items[0].category == "out_of_domain"


# --- consistency ---------------------------------------------------------------------------------


def test_consistency_compares_after_mapping_reworded_values() -> None:
    v0 = {**FULL, "deliveryAddress": "서울 강남구 1", "deliveryTime": "19:00"}
    v1 = {**FULL, "deliveryAddress": "부산 해운대구 2", "deliveryTime": "18:30"}
    exs = [_example("a0", [v0], group="A", variant=0), _example("a1", [v1], group="A", variant=1)]
    items, _ = items_from_examples(exs, "validation")
    # Each variant answered correctly: states differ raw, but agree after mapping.
    good = score_replies(items, [it.reference for it in items])
    assert [g["consistent"] for g in consistency_groups(items, good)] == [True]
    # Same wrong quantity in both wordings: consistent (wrong, but the same way).
    same_wrong = score_replies(items, [assistant_target("네", {**it.ref_state, "quantity": 5}) for it in items])
    assert consistency_groups(items, same_wrong)[0]["consistent"]
    # Right in one wording, wrong in the other: inconsistent.
    mixed = score_replies(items, [items[0].reference, assistant_target("네", {**items[1].ref_state, "quantity": 5})])
    assert not consistency_groups(items, mixed)[0]["consistent"]
    # An unusable reply makes the group inconsistent.
    broken = score_replies(items, ["{", "{"])
    assert not consistency_groups(items, broken)[0]["consistent"]


def test_without_source_ids_rewordings_group_by_order_flow() -> None:
    flow = [{"dinnerType": "FRENCH", "quantity": 2, "deliveryTime": "19:00"}, FULL]
    reworded = [{"dinnerType": "FRENCH", "quantity": 2, "deliveryTime": "12:00"}, {**FULL, "deliveryAddress": "대구 중구 3"}]
    other = [{"dinnerType": "ENGLISH", "quantity": 1}, FULL]
    exs = [_example("a", flow), _example("b", reworded), _example("c", other)]
    items, _ = items_from_examples(exs, "validation")
    groups = consistency_groups(items, score_replies(items, [it.reference for it in items]))
    assert [(g["turn"], g["n_variants"]) for g in groups] == [(0, 2), (1, 2)]


# --- summary ---------------------------------------------------------------------------------


def test_summary_figures_and_counts() -> None:
    exs = [_example(f"s{i}", [PARTIAL]) for i in range(4)]
    ood = _example("o", [{"needsMoreInfo": ["dinnerType"]}])
    ood["messages"][-1]["content"] = assistant_target("날씨는 답변드릴 수 없습니다.", {"needsMoreInfo": ["dinnerType"]})
    items, _ = items_from_examples([*exs, ood], "validation")
    special = {
        "validation:s0#0": "not json",
        "validation:s1#0": assistant_target("네", {"dinnerType": "CHAMPAGNE_FEAST", "servingStyle": "SIMPLE"}),
        "validation:o#0": assistant_target("죄송하지만 답변드릴 수 없습니다.", {"needsMoreInfo": ["dinnerType"]}),
    }
    preds = [special.get(it.item_id, it.reference) for it in items]
    m = summarize(items, score_replies(items, preds))
    assert m["json_valid"].value == pytest.approx(4 / 5) and m["json_valid"].n == 5
    assert m["exact_match"].value == pytest.approx(3 / 5)
    assert m["rule_violation_rate"].value == pytest.approx(1 / 5)
    assert m["ood_declined"].value == 1.0 and m["ood_declined"].n == 1
    # The four PARTIAL sessions share one order flow: one group, broken by the two wrong replies.
    assert m["consistency"].n == 1 and m["consistency"].value == 0.0
    assert 0 < m["needs_more_info_f1"].value < 1
    for metric in m.values():
        if metric.value is not None:
            assert metric.low <= metric.value <= metric.high


def test_summary_needs_more_info_f1_all_empty_is_perfect() -> None:
    items, _ = items_from_examples([_example("s", [FULL])], "validation")
    m = summarize(items, score_replies(items, [items[0].reference]))
    assert m["needs_more_info_f1"].value == 1.0


# --- judge ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text,score", [('{"score": 4}', 4.0), ("Score: 5", 5.0), ('{"score": 9}', None), ("no idea", None)]
)
def test_parse_judge_score(text: str, score: float | None) -> None:
    assert parse_judge_score(text) == score


def test_apply_judge_skips_invalid_and_survives_failures() -> None:
    items, _ = items_from_examples([_example("s", [PARTIAL, FULL])], "validation")
    scores = score_replies(items, [items[0].reference, "{"])
    assert apply_judge(items, scores, lambda msgs: '{"score": 3}') == 1
    assert scores[0].judge == 3.0 and scores[1].judge is None
    judged = summarize(items, scores)["judge"]
    assert judged.value == 3.0 and judged.n == 1

    def boom(_msgs: list[dict]) -> str:
        raise ConnectionError("down")

    assert apply_judge(items, scores, boom) == 0 and scores[0].judge is None
    assert "judge" not in summarize(items, scores)


#: Replies as a model writes them: free text, or the app's JSON shape with any (valid or broken) state.
_STATE_VALUES = st.fixed_dictionaries(
    {},
    optional={
        "dinnerType": st.sampled_from(["FRENCH", "VALENTINE", "CHAMPAGNE_FEAST", "french", "PIZZA", ""]),
        "servingStyle": st.sampled_from(["SIMPLE", "GRAND", "DELUXE", "Grand", "HUGE"]),
        "quantity": st.one_of(st.integers(-1, 5), st.sampled_from(["2", "두 개", None])),
        "deliveryDate": st.sampled_from(["2025-12-24", "2025-13-40", "내일"]),
        "deliveryTime": st.sampled_from(["19:00", "25:00", "저녁"]),
        "readyForConfirmation": st.booleans(),
        "needsMoreInfo": st.lists(st.sampled_from(["servingStyle", "quantity", "deliveryDate", "deliveryAddress"]), unique=True),
    },
)
_REPLIES = st.one_of(
    st.text(max_size=200),
    st.builds(
        lambda message, state: json.dumps({"message": message, "orderState": state}, ensure_ascii=False),
        st.one_of(st.just("주문 확인 부탁드립니다."), st.text(max_size=40)),
        st.one_of(st.none(), _STATE_VALUES, st.builds(lambda: dict(PARTIAL))),
    ),
)


@given(_REPLIES)
@settings(max_examples=200, deadline=None)
def test_any_reply_scores_consistently(text: str) -> None:
    """Validity agrees with an independent reading of the reply, and the figures agree with each other."""
    item = _item(PARTIAL)
    s = score_reply(item, text)
    try:
        obj = json.loads(text)
    except ValueError:
        obj = None
    app_shaped = isinstance(obj, dict) and set(obj) == {"message", "orderState"} and isinstance(obj["message"], str)
    ref_missing = len(PARTIAL["needsMoreInfo"])
    if s.valid_json:
        assert app_shaped and s.error is None and s.message == obj["message"]
        assert set(s.field_correct) == set(FIELD_NAMES)
        assert 0.0 <= s.chrf <= 100.0
        assert s.nmi_tp + s.nmi_fn == ref_missing
        agrees = all(s.field_correct.values()) and s.ready_correct and s.nmi_fp == s.nmi_fn == 0
        assert s.exact_match == agrees
        assert s.rule_violation == (s.state.get("dinnerType") == "CHAMPAGNE_FEAST" and s.state.get("servingStyle") == "SIMPLE")
    else:
        assert s.error, "an invalid reply says why"
        assert not s.exact_match and s.chrf == 0.0 and not s.declined and not s.rule_violation
        assert s.field_correct == dict.fromkeys(FIELD_NAMES, False)
        assert (s.nmi_tp, s.nmi_fp, s.nmi_fn) == (0, 0, ref_missing)
    if obj == {"message": item.ref_message, "orderState": PARTIAL}:
        assert s.exact_match and s.chrf == 100.0
