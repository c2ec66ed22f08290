"""The hand-written golden set: every line well-formed, every reference order state exactly right.

The golden set is the yardstick a fine-tuned model is promoted by, so a wrong reference silently
punishes a right model. These checks are deliberately independent of the production code that
produces or scores states: the relative-date oracle below is a small resolver written here from
the "now" contract (Asia/Seoul; 이번 주 / 다음 주 are Mon–Sun weeks), not a call into the app or
the seeder. The set must also stay out of what the seeder can produce, or a model trained on
seeded data would be graded on text it memorized.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections import Counter
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

import mrdabak_pipeline
from mrdabak_pipeline.core.domain import (
    REQUIRED_ORDER_FIELDS,
    assistant_target,
    is_allowed_combination,
    missing_fields,
    parse_assistant_reply,
)
from mrdabak_pipeline.core.evaluation.metrics import is_decline
from mrdabak_pipeline.core.ingest import seed
from mrdabak_pipeline.core.ingest.db import make_engine, message_table

GOLDEN = Path(mrdabak_pipeline.__file__).parent / "golden" / "golden.jsonl"
CATEGORIES = {
    "complete_order",
    "missing_fields",
    "change_of_mind",
    "correction_after_summary",
    "champagne_simple",
    "out_of_domain",
    "unclear_input",
    "cancellation",
    "relative_dates",
    "number_words",
    "addresses",
}
KEYS = {"id", "category", "now", "messages"}
WEEKDAYS = "월화수목금토일"


def _items() -> list[dict[str, Any]]:
    return [json.loads(line) for line in GOLDEN.read_text(encoding="utf-8").splitlines() if line.strip()]


ITEMS = _items()


def _now(item: dict[str, Any]) -> datetime:
    now = datetime.fromisoformat(item["now"])
    assert now.utcoffset() == timedelta(hours=9), f"{item['id']}: now must be Asia/Seoul (+09:00)"
    return now


def _turns(item: dict[str, Any]) -> list[tuple[str, dict[str, Any], str, str]]:
    """(user text, parsed state, reply message, raw reply) for each user turn and the reply after it."""
    msgs = item["messages"]
    out = []
    for i in range(0, len(msgs) - 1, 2):
        message, state = parse_assistant_reply(msgs[i + 1]["content"])
        out.append((msgs[i]["content"], state, message, msgs[i + 1]["content"]))
    return out


def _pairs(item: dict[str, Any]) -> list[tuple[str, dict[str, Any], str]]:
    """(user text, parsed reference state, reply message) for each user turn and the reply after it."""
    return [t[:3] for t in _turns(item)]


# --- an independent resolver for the dates a customer says -------------------------------------

_DATE_WORDS = re.compile(
    r"(?P<abs>(?:(?P<y>\d{4})년\s*)?(?P<m>\d{1,2})월\s*(?P<d>\d{1,2})일)"
    r"|(?P<week>이번\s*주|다음\s*주|담주)\s*(?P<wd>[월화수목금토일])요일"
    r"|(?P<rel>오늘|내일|모레|글피)"
    r"|(?P<eve>크리스마스\s*이브)|(?P<xmas>크리스마스)|(?P<val>발렌타인\s*데이)"
)
_REL_DAYS = {"오늘": 0, "내일": 1, "모레": 2, "글피": 3}


def _month_day(today: date, month: int, day: int) -> date:
    """A month/day without a year: this year's, or next year's once this year's has passed."""
    d = date(today.year, month, day)
    return d if d >= today else date(today.year + 1, month, day)


def resolve_date(text: str, now: datetime) -> date | None:
    """The delivery date a customer's sentence names, or None; the last date expression wins
    ("목요일이 아니라 다음 주 목요일" means the second one)."""
    today = now.date()
    found: date | None = None
    for m in _DATE_WORDS.finditer(unicodedata.normalize("NFKC", text)):
        if m["abs"]:
            found = (
                date(int(m["y"]), int(m["m"]), int(m["d"]))
                if m["y"]
                else _month_day(today, int(m["m"]), int(m["d"]))
            )
        elif m["week"]:
            monday = today - timedelta(days=today.weekday())
            if not m["week"].startswith("이번"):
                monday += timedelta(days=7)
            found = monday + timedelta(days=WEEKDAYS.index(m["wd"]))
        elif m["rel"]:
            found = today + timedelta(days=_REL_DAYS[m["rel"]])
        elif m["eve"]:
            found = _month_day(today, 12, 24)
        elif m["xmas"]:
            found = _month_day(today, 12, 25)
        elif m["val"]:
            found = _month_day(today, 2, 14)
    return found


@pytest.mark.parametrize(
    ("text", "now", "expected"),
    [
        ("내일 저녁", "2026-04-30T20:00:00+09:00", date(2026, 5, 1)),
        ("모레요", "2026-12-30T11:00:00+09:00", date(2027, 1, 1)),
        ("글피 점심", "2026-03-09T10:00:00+09:00", date(2026, 3, 12)),
        ("이번 주 일요일", "2026-08-31T09:00:00+09:00", date(2026, 9, 6)),
        ("다음 주 금요일", "2026-07-12T19:00:00+09:00", date(2026, 7, 17)),  # said on a Sunday
        ("담주 월요일", "2026-10-10T14:00:00+09:00", date(2026, 10, 12)),
        ("1월 1일 정오", "2026-12-28T10:30:00+09:00", date(2027, 1, 1)),
        ("2026년 12월 31일", "2026-11-30T16:20:00+09:00", date(2026, 12, 31)),
        ("크리스마스 이브 저녁", "2026-12-01T15:00:00+09:00", date(2026, 12, 24)),
        ("목요일이 아니라 다음 주 목요일이에요", "2026-02-17T09:45:00+09:00", date(2026, 2, 26)),
        ("하루 미뤄서 토요일로", "2026-07-29T09:00:00+09:00", None),
    ],
)
def test_the_test_resolver_itself(text: str, now: str, expected: date | None) -> None:
    assert resolve_date(text, datetime.fromisoformat(now)) == expected


# --- the file ----------------------------------------------------------------------------------


def test_golden_set_size_ids_and_categories() -> None:
    assert len(ITEMS) >= 80
    ids = [it["id"] for it in ITEMS]
    assert len(ids) == len(set(ids)), [i for i, n in Counter(ids).items() if n > 1]
    per_category = Counter(it["category"] for it in ITEMS)
    assert set(per_category) == CATEGORIES, set(per_category) ^ CATEGORIES
    assert all(n >= 5 for n in per_category.values()), per_category


@pytest.mark.parametrize("item", ITEMS, ids=[it["id"] for it in ITEMS])
def test_golden_item_is_a_correct_conversation(item: dict[str, Any]) -> None:
    assert set(item) == KEYS
    now = _now(item)
    msgs = item["messages"]
    assert len(msgs) >= 2 and len(msgs) % 2 == 0
    for i, m in enumerate(msgs):
        assert set(m) == {"role", "content"}
        assert m["role"] == ("user" if i % 2 == 0 else "assistant"), (
            "turns alternate user/assistant, no system message"
        )
        assert m["content"].strip() == m["content"] and m["content"]
    for user, state, message, reply in _turns(item):
        # The app's exact form: compact JSON, keys in ORDER_FIELDS order, no null fields.
        assert reply == assistant_target(message, state), reply
        assert "readyForConfirmation" in state and "needsMoreInfo" in state
        assert state["needsMoreInfo"] == missing_fields(state)
        if state["readyForConfirmation"]:
            assert not missing_fields(state) and all(state.get(f) for f in REQUIRED_ORDER_FIELDS)
        assert is_allowed_combination(state.get("dinnerType"), state.get("servingStyle"))
        # What the reply says about the date and time is what its state holds.
        for y, mo, d, wd in re.findall(
            r"(?:(\d{4})년 )?(\d{1,2})월 (\d{1,2})일\(([월화수목금토일])\)", message
        ):
            said = date(int(y) if y else int(state.get("deliveryDate", str(now.year))[:4]), int(mo), int(d))
            assert WEEKDAYS[said.weekday()] == wd, f"{said} is not a {wd}요일"
            assert said.isoformat() == state.get("deliveryDate"), message
        for hhmm in re.findall(r"\b\d{2}:\d{2}\b", message):
            assert hhmm == state.get("deliveryTime"), message
        # An explicit day in what the customer said fixes the delivery date: checked by our resolver.
        expected = resolve_date(user, now)
        if expected is not None:
            assert state.get("deliveryDate") == expected.isoformat(), f"{user!r} at {now} means {expected}"
            assert expected >= now.date()


def test_every_relative_dates_item_is_checked_by_the_resolver() -> None:
    for item in (it for it in ITEMS if it["category"] == "relative_dates"):
        assert any(resolve_date(u, _now(item)) for u, _, _ in _pairs(item)), item["id"]
    resolved = sum(1 for it in ITEMS for u, _, _ in _pairs(it) if resolve_date(u, _now(it)))
    assert resolved >= 40  # most of the set states a day; the oracle must actually be exercised


def test_out_of_domain_references_decline_and_nothing_else_does() -> None:
    """metrics.is_decline marks out-of-domain items: a stray decline elsewhere would skew that metric."""
    for item in ITEMS:
        message, _ = parse_assistant_reply(item["messages"][-1]["content"])
        assert is_decline(message) == (item["category"] == "out_of_domain"), (item["id"], message)


def test_champagne_simple_requests_never_become_simple() -> None:
    items = [it for it in ITEMS if it["category"] == "champagne_simple"]
    for item in items:
        assert any("심플" in u or "싼" in u for u, _, _ in _pairs(item)), item["id"]
        states = [s for _, s, _ in _pairs(item)]
        assert states[-1].get("dinnerType") == "CHAMPAGNE_FEAST"
        assert states[-1].get("servingStyle") in (None, "GRAND", "DELUXE")


def test_every_field_changes_somewhere() -> None:
    """Changes of mind and corrections cover each of the six fields at least once."""
    changed: set[str] = set()
    for item in ITEMS:
        states = [s for _, s, _ in _pairs(item)]
        for before, after in zip(states, states[1:], strict=False):
            changed |= {
                f for f in REQUIRED_ORDER_FIELDS if before.get(f) and after.get(f) and before[f] != after[f]
            }
    assert changed == set(REQUIRED_ORDER_FIELDS)


def test_the_production_loader_reads_every_line() -> None:
    from mrdabak_pipeline.core.datasets.chat_format import load_golden

    assert [g.id for g in load_golden(GOLDEN)] == [it["id"] for it in ITEMS]


def _norm(text: str) -> str:
    return " ".join(unicodedata.normalize("NFKC", text).split())


def test_no_golden_utterance_is_something_the_seeder_says(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'seeded.db'}")
    seed.seed_database(engine, sessions=400, days=30, seed=42, end_date=date(2026, 11, 20), damage_rate=0.0)
    with engine.connect() as conn:
        seeded = {
            _norm(c)
            for (c,) in conn.execute(select(message_table.c.content).where(message_table.c.role == "USER"))
            if c
        }
    engine.dispose()
    assert len(seeded) > 300  # the seeder really produced its variety
    seeded |= {_norm(t) for t in (*seed.OUT_OF_DOMAIN, *seed.UNCLEAR, *seed.GREETINGS, *seed.CONFIRM)}
    golden_users = {_norm(m["content"]) for it in ITEMS for m in it["messages"] if m["role"] == "user"}
    assert not golden_users & seeded, sorted(golden_users & seeded)
