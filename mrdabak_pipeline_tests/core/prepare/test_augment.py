"""Variants keep order_state true to their text; deterministic; lineage; duplicates dropped."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from mrdabak_pipeline.core.domain import Session, Turn
from mrdabak_pipeline.core.ingest.db import make_engine, read_raw_window
from mrdabak_pipeline.core.ingest.seed import seed_database
from mrdabak_pipeline.core.prepare.augment import (
    MAX_NOW_SHIFT_DAYS,
    MAX_OFFSET_DAYS,
    augment_sessions,
    datetime_mentions,
    render_date,
    render_time,
    state_mismatches,
)
from mrdabak_pipeline.core.prepare.cleaning import clean_partition
from mrdabak_pipeline.core.prepare.pii import pseudonymize_sessions

ANCHOR = date(2025, 3, 1)  # a Saturday


@pytest.mark.parametrize(
    ("text", "values"),
    [
        ("내일 저녁 7시에요", ["2025-03-02", "19:00"]),
        ("모레 점심", ["2025-03-03", "12:00"]),
        ("12월 24일 오후 6시 반", ["2025-12-24", "18:30"]),
        ("다음 주 금요일 19:00", ["2025-03-07", "19:00"]),
        ("이번 주 일요일 오전 11시 30분", ["2025-03-02", "11:30"]),
        ("3월 2일(일) 19:30으로 기록했습니다", ["2025-03-02", "19:30"]),
        ("오늘 7시", ["2025-03-01", "19:00"]),
        ("1시간 뒤에 4개, 101동 1203호", []),
    ],
)
def test_datetime_mentions(text: str, values: list[str]) -> None:
    assert [m.value for m in datetime_mentions(text, ANCHOR)] == values


@pytest.mark.parametrize("style", ["rel", "week", "md", "iso"])
@pytest.mark.parametrize("offset", [0, 1, 2, 5, 9, 40])
def test_render_date_roundtrips(style: str, offset: int) -> None:
    d = date.fromordinal(ANCHOR.toordinal() + offset)
    assert [m.value for m in datetime_mentions(render_date(d, style, ANCHOR), ANCHOR)] == [d.isoformat()]


@pytest.mark.parametrize("style", ["hm", "kt", "lunch"])
@pytest.mark.parametrize("hhmm", ["11:00", "11:30", "12:00", "12:30", "17:00", "19:30", "21:00"])
def test_render_time_roundtrips(style: str, hhmm: str) -> None:
    assert [m.value for m in datetime_mentions(render_time(hhmm, style), ANCHOR)] == [hhmm]


def _session() -> Session:
    state = {"dinnerType": "FRENCH", "deliveryDate": "2025-03-02", "deliveryTime": "19:30", "deliveryAddress": "부산광역시 해운대구 센텀로 10"}
    return Session(
        "src",
        [
            Turn("user", "안녕하세요"),
            Turn("assistant", "안녕하세요, 김민수님! 어떤 디너를 주문하시겠어요?", {"readyForConfirmation": False}),
            Turn("user", "내일 저녁 7시 반에 부산광역시 해운대구 센텀로 10로 보내주세요."),
            Turn("assistant", "3월 2일(일) 19:30에 부산광역시 해운대구 센텀로 10(으)로 배달해 드립니다. 민수님 맞으신가요?", state),
        ],
        customer_name="김민수",
        created_at=datetime(2025, 3, 1, 15, 0),
        partition_date="2025-03-01",
        tags=["greeting"],
    )


def test_variants_change_values_consistently() -> None:
    src = _session()
    out = augment_sessions([src], k=3, seed=1)
    assert out[0] == src  # variant 0 is the original
    assert [s.session_id for s in out] == ["src", "src#v1", "src#v2", "src#v3"]
    assert all(s.source_session_id == "src" and s.partition_date == "2025-03-01" for s in out)
    for v in out[1:]:
        assert not state_mismatches(v), state_mismatches(v)
        state = v.turns[3].order_state
        assert v.customer_name != "김민수" and all("김민수" not in t.content and "민수님" not in t.content for t in v.turns)
        assert v.customer_name in v.turns[1].content and f"{v.customer_name[1:]}님" in v.turns[3].content
        assert state["deliveryAddress"] in v.turns[2].content and state["deliveryAddress"] in v.turns[3].content
        d = date.fromisoformat(state["deliveryDate"])
        assert f"{d.month}월 {d.day}일(" in v.turns[3].content and state["deliveryTime"] in v.turns[3].content
        # the conversation moved to another day, same clock time: its words count from that day
        assert v.created_at.time() == src.created_at.time() and v.created_at != src.created_at
        assert {m.value for m in datetime_mentions(v.turns[2].content, v.created_at.date())} == {state["deliveryDate"], state["deliveryTime"]}
        assert 0 <= (d - v.created_at.date()).days <= MAX_OFFSET_DAYS
        assert state["dinnerType"] == "FRENCH" and v.tags == ["greeting"]
    assert len({(v.turns[3].order_state["deliveryDate"], v.turns[3].order_state["deliveryTime"], v.customer_name) for v in out}) == 4


def test_variants_spread_the_conversation_day_over_the_year() -> None:
    """The logs span a few days; their variants must not: a model that only sees those days
    memorizes their dates instead of counting from the now in its prompt."""
    variants = [v for v in augment_sessions([_session()], k=60, seed=2) if v.variant]
    days = [(v.created_at.date() - _session().created_at.date()).days for v in variants]
    assert all(abs(x) <= MAX_NOW_SHIFT_DAYS for x in days)
    assert len({v.created_at.strftime("%Y-%m") for v in variants}) >= 12
    assert min(days) < -90 and max(days) > 90
    for v in variants:
        assert not state_mismatches(v), state_mismatches(v)
        assert [t.created_at for t in v.turns] == [None] * len(v.turns)  # no clock on these turns: none invented


def test_deterministic_for_a_seed() -> None:
    assert augment_sessions([_session()], k=3, seed=7) == augment_sessions([_session()], k=3, seed=7)
    assert augment_sessions([_session()], k=3, seed=7) != augment_sessions([_session()], k=3, seed=8)


def test_exact_duplicates_dropped_and_k_zero() -> None:
    bare = Session("b", [Turn("user", "안녕"), Turn("assistant", "네")])  # nothing to vary
    assert [s.session_id for s in augment_sessions([bare], k=3, seed=0)] == ["b"]
    assert augment_sessions([_session()], k=0) == [_session()]


def test_every_variant_of_seeded_sessions_matches_its_state(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'raw.db'}")
    seed_database(engine, sessions=150, days=1, seed=11, end_date=date(2025, 3, 1), damage_rate=0.0)
    raw = read_raw_window(engine, datetime(2025, 3, 1), datetime(2025, 3, 2), "2025-03-01")
    sessions, _ = pseudonymize_sessions(clean_partition(raw).sessions)
    variants = augment_sessions(sessions, k=3, seed=3)
    assert len(variants) > 3 * len(sessions)
    before = {s.session_id: len(state_mismatches(s)) for s in sessions}
    clean_originals = [s for s in sessions if "out_of_domain" not in s.tags]
    assert clean_originals and all(not state_mismatches(s) for s in clean_originals)
    for v in variants:
        assert len(state_mismatches(v)) <= before[v.source_session_id], (v.session_id, state_mismatches(v))
