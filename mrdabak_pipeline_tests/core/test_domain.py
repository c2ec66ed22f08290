"""The order-state model (`domain.OrderState`) and its thin dict front, `normalize_order_state`.

Property tests: canonical states round-trip unchanged (as dicts and as JSON), any input order and
any spelling the app tolerates come out in one canonical form, and what the app cannot read is
refused with a structured reason (field + kind), never guessed at.
"""

from __future__ import annotations

import json
import pickle
import unicodedata
from datetime import date, time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mrdabak_pipeline.core.domain import (
    MAX_QUANTITY,
    MIN_QUANTITY,
    ORDER_FIELDS,
    REQUIRED_ORDER_FIELDS,
    DinnerType,
    OrderState,
    OrderStateError,
    ServingStyle,
    normalize_order_state,
    parse_assistant_reply,
    parse_order_state,
)

ADDRESS = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=30).map(lambda s: " ".join(s.split())).filter(bool)
#: Every field in its canonical spelling, as `normalize_order_state` returns it.
CANONICAL_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "dinnerType": st.sampled_from([d.value for d in DinnerType]),
    "servingStyle": st.sampled_from([s.value for s in ServingStyle]),
    "quantity": st.integers(MIN_QUANTITY, MAX_QUANTITY),
    "deliveryDate": st.dates(date(1, 1, 1), date(9999, 12, 31)).map(date.isoformat),
    "deliveryTime": st.times().map(lambda t: t.strftime("%H:%M")),
    "deliveryAddress": ADDRESS,
    "readyForConfirmation": st.booleans(),
    "needsMoreInfo": st.sets(st.sampled_from(REQUIRED_ORDER_FIELDS)).map(lambda s: [f for f in REQUIRED_ORDER_FIELDS if f in s]),
}
CANONICAL = st.fixed_dictionaries({}, optional=CANONICAL_VALUES).map(lambda d: {k: d[k] for k in ORDER_FIELDS if k in d})
#: Decimal digits of other scripts that NFKC does not turn into ASCII (Arabic-Indic, Devanagari, ...).
FOREIGN_DIGIT = st.characters(categories=("Nd",)).filter(lambda c: not unicodedata.normalize("NFKC", c).isascii())


def issues(raw: Any) -> list[tuple[str | None, str]]:
    """(field, kind) of each issue `normalize_order_state` reports for `raw`."""
    with pytest.raises(OrderStateError) as info:
        normalize_order_state(raw)
    return [(i.field, i.kind) for i in info.value.issues]


def reason(raw: Any) -> str:
    with pytest.raises(OrderStateError) as info:
        normalize_order_state(raw)
    return info.value.reason


def test_the_model_is_where_the_fields_are_declared() -> None:
    assert tuple(OrderState.model_fields) == ORDER_FIELDS
    assert ORDER_FIELDS[: len(REQUIRED_ORDER_FIELDS)] == REQUIRED_ORDER_FIELDS
    assert OrderState.model_config["extra"] == "forbid"


@given(CANONICAL)
def test_canonical_states_round_trip_unchanged(state: dict[str, Any]) -> None:
    assert normalize_order_state(state) == state
    text = json.dumps(state, ensure_ascii=False)
    out = normalize_order_state(text)
    # Same JSON bytes: what the datasets store does not move.
    assert json.dumps(out, ensure_ascii=False) == text and repr(out) == repr(state)
    assert all(type(v) is type(state[k]) for k, v in out.items())  # plain str/int/bool/list, no enum members
    model = parse_order_state(state)
    assert model is not None and OrderState.model_validate(model.canonical()) == model


@given(CANONICAL, st.randoms(use_true_random=False), st.lists(st.sampled_from(REQUIRED_ORDER_FIELDS), max_size=12))
def test_any_key_order_and_any_missing_list_order_come_out_canonical(state: dict[str, Any], rng: Any, missing: list[str]) -> None:
    keys = list(state)
    rng.shuffle(keys)
    shuffled = {k: state[k] for k in keys} | {"needsMoreInfo": missing}
    out = normalize_order_state(shuffled)
    assert list(out) == [k for k in ORDER_FIELDS if k in out]
    assert out["needsMoreInfo"] == [f for f in REQUIRED_ORDER_FIELDS if f in missing]  # ordered, no repeats


@given(st.dictionaries(st.sampled_from(ORDER_FIELDS), st.none(), max_size=8))
def test_null_means_not_known_yet(state: dict[str, None]) -> None:
    assert normalize_order_state(state) == {}
    assert normalize_order_state(None) is None and normalize_order_state("  ") is None and normalize_order_state("null") is None


@pytest.mark.parametrize(
    "raw,expected",
    [
        ({"dinnerType": "valentine"}, {"dinnerType": "VALENTINE"}),
        ({"dinnerType": " champagne-feast "}, {"dinnerType": "CHAMPAGNE_FEAST"}),
        ({"dinnerType": "Champagne Feast"}, {"dinnerType": "CHAMPAGNE_FEAST"}),
        ({"servingStyle": "Deluxe"}, {"servingStyle": "DELUXE"}),
        ({"servingStyle": " GRAND "}, {"servingStyle": "GRAND"}),
        ({"servingStyle": "ＧＲＡＮＤ"}, {"servingStyle": "GRAND"}),  # full-width letters
        ({"quantity": "2"}, {"quantity": 2}),
        ({"quantity": " 3 "}, {"quantity": 3}),
        ({"quantity": "２"}, {"quantity": 2}),  # full-width digit, as Korean keyboards type it
        ({"quantity": 2.0}, {"quantity": 2}),
        ({"deliveryDate": " 2026-12-01 "}, {"deliveryDate": "2026-12-01"}),
        ({"deliveryDate": "２０２６-１２-０１"}, {"deliveryDate": "2026-12-01"}),
        ({"deliveryDate": "2024-02-29"}, {"deliveryDate": "2024-02-29"}),
        ({"deliveryTime": "１９：００"}, {"deliveryTime": "19:00"}),
        ({"deliveryAddress": "  서울시\t강남구\n 역삼동  "}, {"deliveryAddress": "서울시 강남구 역삼동"}),
        ({"deliveryAddress": " \u3000 "}, {}),  # blank is "not known yet"
        ({"readyForConfirmation": "true"}, {"readyForConfirmation": True}),
        ({"readyForConfirmation": " FALSE "}, {"readyForConfirmation": False}),
        ({"needsMoreInfo": []}, {"needsMoreInfo": []}),
    ],
)
def test_spellings_the_app_tolerates(raw: dict[str, Any], expected: dict[str, Any]) -> None:
    assert normalize_order_state(raw) == expected
    assert normalize_order_state(json.dumps(raw, ensure_ascii=False)) == expected


@pytest.mark.parametrize(
    "raw,field,kind",
    [
        ({"dinnerType": "PIZZA"}, "dinnerType", "enum"),
        ({"dinnerType": 1}, "dinnerType", "enum"),
        ({"servingStyle": ["GRAND"]}, "servingStyle", "enum"),
        ({"quantity": True}, "quantity", "int_type"),
        ({"quantity": False}, "quantity", "int_type"),
        ({"quantity": 0}, "quantity", "greater_than_equal"),
        ({"quantity": 101}, "quantity", "less_than_equal"),
        ({"quantity": "2.0"}, "quantity", "int_parsing"),
        ({"quantity": "-1"}, "quantity", "int_parsing"),
        ({"quantity": "두 개"}, "quantity", "int_parsing"),
        ({"quantity": 2.5}, "quantity", "int_from_float"),
        ({"deliveryDate": "2026-02-30"}, "deliveryDate", "calendar_date"),
        ({"deliveryDate": "2025-02-29"}, "deliveryDate", "calendar_date"),
        ({"deliveryDate": "0000-01-01"}, "deliveryDate", "calendar_date"),
        ({"deliveryDate": "2026-13-01"}, "deliveryDate", "string_pattern_mismatch"),
        ({"deliveryDate": "2026-1-01"}, "deliveryDate", "string_pattern_mismatch"),
        ({"deliveryDate": "٢٠٢٦-12-01"}, "deliveryDate", "string_pattern_mismatch"),  # was accepted: \d
        ({"deliveryDate": 20261201}, "deliveryDate", "string_type"),
        ({"deliveryTime": "24:00"}, "deliveryTime", "string_pattern_mismatch"),
        ({"deliveryTime": "7:00"}, "deliveryTime", "string_pattern_mismatch"),
        ({"deliveryTime": "١٩:٠٠"}, "deliveryTime", "string_pattern_mismatch"),
        ({"deliveryAddress": 12}, "deliveryAddress", "string_type"),
        ({"readyForConfirmation": 1}, "readyForConfirmation", "bool_type"),
        ({"readyForConfirmation": "yes"}, "readyForConfirmation", "bool_type"),
        ({"needsMoreInfo": "quantity"}, "needsMoreInfo", "list_type"),
        ({"needsMoreInfo": ["quantity", "name"]}, "needsMoreInfo", "literal_error"),
        ({"needsMoreInfo": ["readyForConfirmation"]}, "needsMoreInfo", "literal_error"),
    ],
)
def test_what_the_app_cannot_read_is_refused_with_a_structured_reason(raw: dict[str, Any], field: str, kind: str) -> None:
    assert issues(raw) == [(field, kind)]
    assert reason(raw) == f"invalid_{field}"


@given(st.dates(), st.times(), st.integers(MIN_QUANTITY, MAX_QUANTITY), st.data())
def test_digits_of_other_scripts_are_refused(day: date, at: time, qty: int, data: st.DataObject) -> None:
    """`\\d` took Arabic-Indic digits ('٢٠٢٦-12-01' was a valid date); the app reads ASCII only."""
    for key, text in (("deliveryDate", day.isoformat()), ("deliveryTime", at.strftime("%H:%M")), ("quantity", str(qty))):
        positions = [i for i, c in enumerate(text) if c.isdigit()]
        i = data.draw(st.sampled_from(positions))
        foreign = text[:i] + data.draw(FOREIGN_DIGIT) + text[i + 1 :]
        assert [f for f, _ in issues({key: foreign})] == [key]
        assert normalize_order_state({key: text}) == {key: qty if key == "quantity" else text}


@given(st.text(alphabet="0123456789-", min_size=10, max_size=10))
def test_a_date_is_valid_exactly_when_it_is_on_the_calendar(text: str) -> None:
    try:
        real = date.fromisoformat(text).isoformat() == text
    except ValueError:
        real = False
    if real:
        assert normalize_order_state({"deliveryDate": text}) == {"deliveryDate": text}
    else:
        assert reason({"deliveryDate": text}) == "invalid_deliveryDate"


@given(CANONICAL, st.text(min_size=1, max_size=12).filter(lambda k: k not in ORDER_FIELDS), st.none() | st.integers())
def test_unknown_keys_are_refused_before_anything_else(state: dict[str, Any], key: str, value: Any) -> None:
    raw = {**state, key: value, "quantity": 0}  # a bad field too: the unknown key still comes first
    assert issues(raw)[0] == (key, "extra_forbidden")
    assert reason(raw) == "unknown_keys"
    assert ("quantity", "greater_than_equal") in issues(raw)


def test_several_issues_are_all_reported_in_field_order() -> None:
    raw = {"needsMoreInfo": ["x"], "deliveryTime": "25:00", "quantity": True}
    assert [f for f, _ in issues(raw)] == ["quantity", "deliveryTime", "needsMoreInfo"]
    assert reason(raw) == "invalid_quantity"


@pytest.mark.parametrize(
    "raw,kind",
    [('{"dinnerType": "VAL', "malformed_json"), ("[1, 2]", "not_an_object"), ('"FRENCH"', "not_an_object"), (["x"], "not_an_object")],
)
def test_whole_value_problems_have_no_field(raw: Any, kind: str) -> None:
    assert issues(raw) == [(None, kind)]
    assert reason(raw) == kind


def test_the_address_never_appears_in_an_error_message() -> None:
    """Quarantine details are read by people; customer text stays out of them."""
    with pytest.raises(OrderStateError) as info:
        normalize_order_state({"deliveryAddress": ["서울시 강남구 비밀로 1"], "dinnerType": "PIZZA"})
    assert "비밀로" not in str(info.value) and "'PIZZA'" in str(info.value)


def test_errors_survive_pickling() -> None:
    """Cleaning runs in worker processes: an error must cross the process boundary intact."""
    with pytest.raises(OrderStateError) as info:
        normalize_order_state({"quantity": 0, "colour": "red"})
    back = pickle.loads(pickle.dumps(info.value))
    assert back.issues == info.value.issues and str(back) == str(info.value) and back.reason == "unknown_keys"


@pytest.mark.parametrize(
    "text,reason_,field",
    [
        ("not json", "malformed_json", None),
        ('{"message": "네"}', "not_a_reply", None),
        ('{"message": null, "orderState": {}}', "invalid_message", "message"),
        ('{"message": "네", "orderState": {"quantity": "٣"}}', "invalid_quantity", "quantity"),
    ],
)
def test_reply_errors_are_structured_too(text: str, reason_: str, field: str | None) -> None:
    with pytest.raises(OrderStateError) as info:
        parse_assistant_reply(text)
    assert info.value.reason == reason_ and info.value.issues[0].field == field
