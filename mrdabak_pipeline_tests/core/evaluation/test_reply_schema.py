"""The reply schema against the app's own parser: what the constrained decoder allows, the app reads.

The schema is checked through the llguidance grammar the decoder really uses, on a byte-level
tokenizer that can spell every string (so acceptance depends on the grammar, not on the vocabulary).
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.domain import (
    DATE_PATTERN,
    MAX_QUANTITY,
    MIN_QUANTITY,
    ORDER_FIELDS,
    REQUIRED_ORDER_FIELDS,
    TIME_PATTERN,
    DinnerType,
    OrderStateError,
    ServingStyle,
    assistant_target,
    normalize_order_state,
    parse_assistant_reply,
)
from mrdabak_pipeline.core.evaluation.constrained import reply_grammar
from mrdabak_pipeline.core.reply_schema import (
    BOUND_KEYWORDS,
    MAX_MESSAGE_CHARS,
    reply_json_schema,
    response_format,
)
from mrdabak_pipeline_tests.fake_openai_api import strict_schema_errors

llguidance = pytest.importorskip("llguidance")


@pytest.fixture(scope="module")
def ll_tok() -> Any:
    import llguidance.hf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<eos>"], show_progress=False)
    tok.train_from_iterator(['{"message":"', '","orderState":{'], trainer)
    return llguidance.hf.from_tokenizer(PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<eos>"))


def accepts(ll_tok: Any, text: str) -> bool:
    """Whether the decoder's grammar lets a model write exactly `text` and stop."""
    matcher = llguidance.LLMatcher(ll_tok, reply_grammar(), log_level=0)
    return matcher.consume_tokens(ll_tok.tokenize_str(text)) and not matcher.is_error() and matcher.is_accepting()


def test_schema_is_derived_from_the_domain() -> None:
    schema = reply_json_schema()
    props = schema["properties"]["orderState"]["properties"]
    assert list(props) == list(ORDER_FIELDS)
    assert props["dinnerType"]["enum"] == [d.value for d in DinnerType]
    assert props["servingStyle"]["enum"] == [s.value for s in ServingStyle]
    assert props["needsMoreInfo"]["items"]["enum"] == list(REQUIRED_ORDER_FIELDS)


def test_field_schemas_are_the_models_own() -> None:
    """Ranges and patterns come from `OrderState` (no second copy here), ASCII digits only."""
    props = reply_json_schema()["properties"]["orderState"]["properties"]
    assert (props["quantity"]["minimum"], props["quantity"]["maximum"]) == (MIN_QUANTITY, MAX_QUANTITY)
    assert (props["deliveryDate"]["pattern"], props["deliveryTime"]["pattern"]) == (DATE_PATTERN, TIME_PATTERN)
    assert "\\d" not in json.dumps(reply_json_schema()) and "title" not in json.dumps(reply_json_schema())
    assert strict_schema_errors(reply_json_schema(strict=True)) == []


def test_strict_variant_is_what_the_api_accepts() -> None:
    fmt = response_format()
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    strict = fmt["json_schema"]["schema"]
    assert strict_schema_errors(strict) == []
    # The local variant would be refused in strict mode (optional keys, bounds): the two differ for a reason.
    assert strict_schema_errors(reply_json_schema())
    assert not BOUND_KEYWORDS & set(str(strict).replace("'", " ").split())
    # Null is how a strict reply says "not known yet"; the app reads it as absent.
    nulls = {k: None for k in ORDER_FIELDS}
    assert parse_assistant_reply(assistant_target("네", nulls)) == ("네", {})


def test_grammar_boundaries(ll_tok: Any) -> None:
    ok = {"dinnerType": "CHAMPAGNE_FEAST", "servingStyle": "GRAND", "quantity": 100, "deliveryDate": "2026-12-31",
          "deliveryTime": "23:59", "deliveryAddress": "서울시 강남구", "readyForConfirmation": True,
          "needsMoreInfo": []}
    assert accepts(ll_tok, assistant_target("확인해 주세요.\n\"따옴표\" \\ 탭\t", ok))
    assert accepts(ll_tok, assistant_target("x" * MAX_MESSAGE_CHARS, {}))
    for bad in ({"quantity": 0}, {"quantity": 101}, {"dinnerType": "valentine"}, {"deliveryTime": "24:00"},
                {"deliveryDate": "2026-13-01"}, {"deliveryDate": "2026-12-32"}, {"needsMoreInfo": ["name"]}):
        assert not accepts(ll_tok, assistant_target("네", bad)), bad
    assert not accepts(ll_tok, assistant_target("x" * (MAX_MESSAGE_CHARS + 1), {}))
    assert not accepts(ll_tok, '{"message":"a","orderState":{},"extra":1}')
    assert not accepts(ll_tok, '{"message": "a", "orderState": {}}')  # the compact form only


TEXT = st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=40)
#: Without raw control characters: the grammar (llguidance's JSON strings) never lets a model write
#: DEL or C1 controls unescaped, which is fine for a spoken reply (\n, \t, quotes: see above).
PRINTABLE = st.text(alphabet=st.characters(exclude_categories=("Cs", "Cc")), max_size=40)
RAW_VALUES: dict[str, st.SearchStrategy[Any]] = {
    "dinnerType": st.sampled_from([*DinnerType, "valentine", "SOUP", ""]),
    "servingStyle": st.sampled_from([*ServingStyle, "deluxe", "BIG"]),
    "quantity": st.integers(-3, 130),
    "deliveryDate": st.dates(date(2000, 1, 1), date(2099, 12, 31)).map(date.isoformat)
    | st.from_regex(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", fullmatch=True),
    "deliveryTime": st.from_regex(r"[0-9]{2}:[0-9]{2}", fullmatch=True),
    "deliveryAddress": PRINTABLE,
    "readyForConfirmation": st.booleans(),
    "needsMoreInfo": st.lists(st.sampled_from([*REQUIRED_ORDER_FIELDS, "name"]), max_size=4),
}
RAW_STATES = st.fixed_dictionaries({}, optional=RAW_VALUES)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=TEXT, raw=RAW_STATES)
def test_what_the_grammar_allows_the_app_parses_unchanged(ll_tok: Any, message: str, raw: dict[str, Any]) -> None:
    text = assistant_target(message, raw)
    if accepts(ll_tok, text):
        try:
            parsed_message, state = parse_assistant_reply(text)
        except OrderStateError as exc:  # a regex cannot know month lengths: 02-30 is the parser's to refuse
            assert [(i.field, i.kind) for i in exc.issues] == [("deliveryDate", "calendar_date")], exc
            return
        assert parsed_message == message
        # Enums, numbers, flags, dates and times are only allowed in their canonical spelling (the
        # parser has nothing to fix). The address's blanks and needsMoreInfo's order and repeats are
        # the parser's to tidy (JSON schema cannot say "an ordered subset" or "collapsed spaces").
        tidied = ("deliveryAddress", "needsMoreInfo")
        assert {k: v for k, v in state.items() if k not in tidied} == {k: v for k, v in raw.items() if k not in tidied}
        assert set(state.get("needsMoreInfo", [])) == set(raw.get("needsMoreInfo", []))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(message=PRINTABLE, raw=RAW_STATES)
def test_every_canonical_reply_is_allowed(ll_tok: Any, message: str, raw: dict[str, Any]) -> None:
    try:
        state = normalize_order_state(raw)
    except OrderStateError:
        return
    assert accepts(ll_tok, assistant_target(message, state)), state
