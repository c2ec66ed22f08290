"""The seeder: deterministic, covers the menu and the scenarios, order_state true to the text."""

from __future__ import annotations

import json
from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.domain import (
    DinnerType,
    ServingStyle,
    is_allowed_combination,
    normalize_order_state,
)
from mrdabak_pipeline.core.seed import SCENARIOS, generate, ro

END = date(2026, 11, 20)


def test_same_seed_same_data_other_seed_other_data():
    a = generate(60, 5, 7, END, 0.2)
    b = generate(60, 5, 7, END, 0.2)
    c = generate(60, 5, 8, END, 0.2)
    assert a[0] == b[0] and a[1] == b[1]
    assert a[0] != c[0]


def test_500_sessions_cover_every_dinner_style_and_scenario():
    sessions, messages, summary = generate(500, 30, 3, END, 0.0)
    assert set(summary.combos) == {(d.value, s.value) for d in DinnerType for s in ServingStyle}
    assert set(summary.scenarios) == set(SCENARIOS)
    # the confirmed orders themselves never break the CHAMPAGNE_FEAST rule
    finals: dict[str, dict] = {}
    for m in messages:
        if m["order_state"]:
            finals[m["session_id"]] = json.loads(m["order_state"])
    assert all(is_allowed_combination(s.get("dinnerType"), s.get("servingStyle")) for s in finals.values())
    confirmed_combos = {(s["dinnerType"], s["servingStyle"]) for s in finals.values() if s.get("servingStyle")}
    assert len(confirmed_combos) == 11  # all allowed combinations end up ordered
    days = {s["created_at"].date() for s in sessions}
    assert min(days) >= date(2026, 10, 22) and max(days) <= END


def test_every_assistant_row_has_a_valid_order_state_when_undamaged():
    _, messages, _ = generate(200, 5, 11, END, 0.0)
    for m in messages:
        if m["role"] == "ASSISTANT":
            state = normalize_order_state(m["order_state"])
            assert state is not None and "needsMoreInfo" in state
            missing = set(state["needsMoreInfo"])
            assert all((f in state) != (f in missing) for f in ("dinnerType", "servingStyle", "quantity"))
        else:
            assert m["order_state"] is None


def test_damage_rate_produces_each_kind():
    _, _, summary = generate(3000, 10, 2, END, 0.3)
    assert len(summary.damage) == 12
    assert 0.25 < sum(summary.damage.values()) / 3000 < 0.35


def test_delivery_fields_match_the_customers_words():
    _, messages, _ = generate(150, 5, 4, END, 0.0)
    for m in messages:
        if m["role"] == "ASSISTANT" and m["order_state"]:
            st_ = json.loads(m["order_state"])
            if "deliveryAddress" in st_:
                said = " ".join(x["content"] for x in messages if x["session_id"] == m["session_id"] and x["role"] == "USER")
                assert st_["deliveryAddress"] in said


@settings(max_examples=200)
@given(st.text(min_size=1, max_size=12))
def test_particle_ro_always_attaches_one_particle(word):
    out = ro(word)
    assert out.startswith(word) and out[len(word):] in {"로", "으로"}
