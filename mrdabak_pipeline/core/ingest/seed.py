"""Sample data that looks like production: realistic, varied Korean ordering conversations.

The seeder plays both sides of a conversation with a small state machine so that every assistant
row carries an order_state that is true to the text (what the customer said so far, what is still
missing). A model fine-tuned on this data must understand customers it never saw, so the
customer's side is composed from many independent choices per slot — greeting, dinner name or
synonym (샴페인 디너 = CHAMPAGNE_FEAST), style, quantity (2개, 두 개, 둘, 세 세트, 3인분), date
(오늘, 모레, 이번 주 토요일, 12월 24일, 12/24, 2026년 12월 31일), time (저녁 7시 반, 일곱 시,
19:30, 밤 9시, 정오, 점심때), road or 지번 address with or without 동/호, word order, fillers,
politeness, spacing slips and typos — and the scenarios cover what the model must learn: one-shot
and several-fields-at-once orders, step-by-step orders, a change of mind on any field, a change
after the summary, menu questions, the CHAMPAGNE_FEAST-only-GRAND/DELUXE correction,
out-of-domain questions, unclear input, a misheard value the customer corrects, abandoned and
cancelled sessions.

Relative dates count from the conversation's "now", the session's created_at (Asia/Seoul wall
clock), which the model sees in its system prompt: 이번 주 is the Monday-Sunday week holding it,
다음 주 the next one, a bare 토요일 the next Saturday after today; `augment.datetime_mentions`
resolves them the same way. Times are HH:MM (24h); 1-10시 without a period means PM.

A configurable share of sessions is damaged the way old production rows are (bad JSON, odd role
spellings, empty content, duplicates, …) so that cleaning has real work. Seeded session ids start
with `SEED_ID_PREFIX`, so seeded rows can be found and removed (`purge_seeded`) wherever they were
written. Deterministic for a given (seed, end_date).
"""

from __future__ import annotations

import json
import random
import re
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from faker import Faker
from sqlalchemy import Engine, delete, func, insert, inspect, select, text

from mrdabak_pipeline.core.domain import (
    ALLOWED_STYLES,
    DINNER_ITEMS,
    DINNER_KO,
    ORDER_FIELDS,
    STYLE_ITEMS,
    STYLE_KO,
    DinnerType,
    ServingStyle,
    SessionStatus,
    missing_fields,
)
from mrdabak_pipeline.core.ingest.db import create_schema, message_table, session_table
from mrdabak_pipeline.core.prepare.augment import HOUR_WORDS, datetime_mentions
from mrdabak_pipeline.core.prepare.pii import PII_PATTERN

SEOUL = ZoneInfo("Asia/Seoul")

#: Every seeded session id starts with this (a UUID follows), so seeded rows are recognizable in
#: any database without a schema change: the production app's ids are bare UUIDs.
SEED_ID_PREFIX = "seed-"

#: Scenario -> weight. Every scenario except `abandoned`/`cancelled` ends in a confirmation.
#: Orders said in one or two breaths (`one_shot`, `several_fields`) weigh more than slot-by-slot
#: ones: reading several fields out of one sentence is the hard part of the task, and they are
#: short dialogs, so a training minute sees more of them.
SCENARIOS: dict[str, float] = {
    "multi_turn": 0.08,
    "one_shot": 0.14,
    "several_fields": 0.16,
    "change_of_mind": 0.13,
    "correction_after_summary": 0.08,
    "assistant_mistake": 0.05,
    "champagne_simple": 0.06,
    "menu_question": 0.06,
    "out_of_domain": 0.07,
    "unclear": 0.05,
    "abandoned": 0.07,
    "cancelled": 0.05,
}

#: Damage kinds -> weight, applied to a `damage_rate` share of sessions. The kinds marked
#: SQLITE_ONLY cannot be written to PostgreSQL (it validates encodings and timestamps).
DAMAGE: dict[str, float] = {
    "bad_json": 0.16,
    "old_role_spelling": 0.14,
    "enum_spelling": 0.10,
    "unicode_noise": 0.10,
    "duplicate_retry": 0.10,
    "empty_content": 0.08,
    "unknown_role": 0.06,
    "too_long": 0.05,
    "empty_session": 0.05,
    "orphan_messages": 0.06,
    "bad_bytes": 0.05,
    "bad_timestamp": 0.05,
}
SQLITE_ONLY = {"bad_bytes", "bad_timestamp"}
OLD_USER_ROLES = ("USER", "User", "customer", "Customer", "human")
OLD_ASSISTANT_ROLES = ("ASSISTANT", "Assistant", "bot", "ai", "agent")

KO_WEEKDAYS = ("월", "화", "수", "목", "금", "토", "일")
#: Native Korean numbers before a counter (두 개, 세 세트) and said alone (둘, 셋).
KO_COUNT = {1: "한", 2: "두", 3: "세", 4: "네", 5: "다섯", 6: "여섯", 7: "일곱", 8: "여덟", 9: "아홉", 10: "열"}
KO_ALONE = {1: "하나", 2: "둘", 3: "셋", 4: "넷", 5: "다섯", 6: "여섯", 7: "일곱", 8: "여덟", 9: "아홉", 10: "열"}
#: Kept for callers of the old name.
KO_NUM = KO_COUNT

#: How customers call each dinner (the first, canonical name is the most common); misspellings
#: included on purpose.
DINNER_WORDS: dict[DinnerType, tuple[str, ...]] = {
    DinnerType.VALENTINE: ("발렌타인 디너", "발렌타인 디너", "발렌타인", "밸런타인 디너", "발렌타인데이 디너", "발렌타인 코스"),
    DinnerType.FRENCH: ("프렌치 디너", "프렌치 디너", "프렌치", "프랑스식 디너", "프렌치 코스", "프랜치 디너"),
    DinnerType.ENGLISH: ("잉글리시 디너", "잉글리시 디너", "잉글리시", "잉글리쉬 디너", "영국식 디너", "잉글리시 코스"),
    DinnerType.CHAMPAGNE_FEAST: ("샴페인 축제 디너", "샴페인 축제 디너", "샴페인 디너", "샴페인 축제", "샴페인 피스트", "샴페인 파티 디너"),
}
STYLE_WORDS: dict[ServingStyle, tuple[str, ...]] = {
    ServingStyle.SIMPLE: ("심플", "심플", "씸플"),
    ServingStyle.GRAND: ("그랜드", "그랜드", "그렌드"),
    ServingStyle.DELUXE: ("디럭스", "디럭스", "딜럭스"),
}

OUT_OF_DOMAIN = (
    "오늘 날씨 어때요?",
    "주식 뭐 사면 좋을까요?",
    "근처에 맛있는 카페 추천해 주세요.",
    "비트코인 가격 알려줘.",
    "영어 번역 좀 해줄 수 있어요?",
    "내일 야구 경기 누가 이길까요?",
    "혹시 택시도 불러 주실 수 있나요?",
    "요즘 볼 만한 영화 있어요?",
    "다이어트 식단 좀 짜 주세요",
)
UNCLEAR = (
    "음... 그거 있잖아요 그거", "아 뭐더라, 저번에 먹은 거요", "ㅇㅇ 그걸로", "잘 모르겠어요 아무거나요?",
    "그 뭐냐 그 비싼 거", "어... 그냥 알아서 해 주세요", "ㅎㅎ 추천 좀",
)
GREETINGS = (
    "안녕하세요", "여보세요", "안녕하세요, 주문하려고요", "저기요, 디너 주문 가능한가요?", "안녕하세요~",
    "주문 좀 할게요", "디너 배달 되나요?", "네 안녕하세요", "수고하십니다. 주문 좀 하려고 하는데요", "안녕하세요 ㅎㅎ",
    "저녁 배달 주문하고 싶어서요", "여보세요? 미스터 대박이죠?",
)
CONFIRM = (
    "네, 맞아요. 주문할게요.", "네 그렇게 해 주세요", "좋아요, 확정해 주세요.", "네 맞습니다", "네네 그걸로 주문해 주세요",
    "맞아요!", "네 좋습니다. 진행해 주세요", "응 맞아", "네, 그대로 부탁드립니다.", "완벽해요. 주문할게요",
)
#: A cancellation is a reason (often none) and a request, said at any point of the order.
CANCEL_REASONS = (
    "", "", "", "음, 다시 생각해 볼게요. ", "죄송한데 ", "아 ", "아 이번엔 안 되겠네요. ", "일정이 바뀌어서요. ",
    "갑자기 약속이 생겼어요. ", "생각해 보니 좀 부담되네요. ", "모임이 미뤄졌대요. ", "집에서 해 먹기로 했어요. ",
)
CANCEL_ASKS = (
    "취소해 주세요", "그냥 취소할게요.", "주문 취소해 주세요", "다음에 다시 주문할게요. 이번 건 취소요.", "주문 안 할게요",
    "없던 걸로 해 주세요", "이번 주문은 취소할게요", "다음에 시킬게요", "취소요", "주문 취소요",
)


def cancel_phrase(rng: random.Random) -> str:
    """What a customer says to call the whole order off."""
    return f"{rng.choice(CANCEL_REASONS)}{rng.choice(CANCEL_ASKS)}"

OPENERS = ("", "", "", "", "", "음 ", "어 ", "아 ", "그럼 ", "저기 ", "음... ", "네 ", "그러니까 ", "일단 ")
#: The delivery hours (the service brings lunch and dinner), with the usual half hours.
DELIVERY_SLOTS: tuple[time, ...] = tuple(time(h, m) for h in range(11, 22) for m in (0, 30))


@dataclass
class SeedSummary:
    """What was written: counts by scenario, damage kind and requested dinner×style."""

    sessions: int = 0
    messages: int = 0
    scenarios: Counter[str] = field(default_factory=Counter)
    damage: Counter[str] = field(default_factory=Counter)
    combos: Counter[tuple[str, str]] = field(default_factory=Counter)
    first_day: date | None = None
    last_day: date | None = None
    session_scenarios: dict[str, str] = field(default_factory=dict)  # session id -> scenario


# --- Korean particles -------------------------------------------------------------------------


def _final_consonant(word: str) -> int | None:
    """The final consonant index of the word's last syllable (0: none), or None if not Hangul.
    Digits are read the Sino-Korean way (일, 이, 삼, …; 0 as 영)."""
    last = word.rstrip()[-1:] if word.strip() else ""
    if "가" <= last <= "힣":
        return (ord(last) - 0xAC00) % 28
    if last.isdigit():
        return 0 if last in "2459" else 1
    return None


def ro(word: str) -> str:
    """Attach the particle 로/으로 the way Korean does: 으로 after a final consonant other than ㄹ."""
    final = _final_consonant(word)
    return f"{word}{'으로' if final not in (None, 0, 8) else '로'}"


def _pick(word: str, after_vowel: str, after_consonant: str) -> str:
    final = _final_consonant(word)
    return f"{word}{after_consonant if final else after_vowel}"


def copula(word: str) -> str:
    """word + 예요/이에요 (두 개예요, 19:30이에요)."""
    return _pick(word, "예요", "이에요")


def yo(word: str) -> str:
    """word + 요/이요, the short answer (두 개요, 내일이요)."""
    return _pick(word, "요", "이요")


def topic(word: str) -> str:
    return _pick(word, "는", "은")


def subject(word: str) -> str:
    return _pick(word, "가", "이")


def obj(word: str) -> str:
    return _pick(word, "를", "을")


# --- What the customer says -------------------------------------------------------------------


def dinner_word(dinner: DinnerType, rng: random.Random) -> str:
    return rng.choice(DINNER_WORDS[dinner])


def style_word(style: ServingStyle, rng: random.Random) -> str:
    word = rng.choice(STYLE_WORDS[style])
    return word + " 스타일" if rng.random() < 0.4 else word


def quantity_phrase(qty: int, dinner: DinnerType | None, rng: random.Random) -> str:
    """2개, 두 개, 두개, 둘, 2세트, 두 세트, 2인분 (인분 not for the two-person CHAMPAGNE_FEAST)."""
    forms = [f"{qty}개", f"{qty}개", f"{KO_COUNT[qty]} 개", f"{KO_COUNT[qty]} 개", f"{KO_COUNT[qty]}개", f"{qty}세트", f"{KO_COUNT[qty]} 세트"]
    if qty <= 5:  # 하나, 둘 … 다섯 alone; 여섯 and up need their counter
        forms.append(KO_ALONE[qty])
    if dinner is not DinnerType.CHAMPAGNE_FEAST:
        forms.append(f"{qty}인분")
    return rng.choice(forms)


def _monday(d: date) -> date:
    return d - timedelta(days=d.weekday())


def date_phrase(day: date, today: date, rng: random.Random) -> str:
    """A way to say `day` on `today` that means exactly `day` (never 이번 주 X요일 for a day
    already past; a bare X요일 only for the next six days)."""
    offset = (day - today).days
    week = (day - _monday(today)).days // 7
    wd = KO_WEEKDAYS[day.weekday()]
    forms: list[str] = []
    if offset == 0:
        forms += ["오늘"] * 4
    elif offset == 1:
        forms += ["내일"] * 4
    elif offset == 2:
        forms += ["모레", "모레", "내일모레", "내일 모레"]
    elif offset == 3:
        forms += ["글피"]
    if offset >= 1 and week == 0:
        forms += [f"이번 주 {wd}요일", f"이번 주 {wd}요일", f"이번주 {wd}요일"]
    elif week == 1:
        forms += [f"다음 주 {wd}요일", f"다음 주 {wd}요일", f"다음주 {wd}요일"]
    if 1 <= offset <= 6:
        forms += [f"{wd}요일", f"{wd}요일"]
    forms += [f"{day.month}월 {day.day}일"] * 3 + [f"{day.month}월{day.day}일", f"{day.month}/{day.day}", f"{day.year}년 {day.month}월 {day.day}일"]
    if rng.random() < 0.05:
        forms.append(day.isoformat())
    return rng.choice(forms)


_PERIODS: dict[int, tuple[str, ...]] = {11: ("오전",), 12: ("낮", "점심", "오후"), 17: ("오후", "저녁"), 21: ("밤", "저녁", "오후")}


def time_phrase(at: time, rng: random.Random) -> str:
    """A Korean way of saying a time of day that means exactly `at` (HH:MM 24h): 저녁 7시 반,
    오후 7시 30분, 일곱 시, 7시반, 19시 30분, 19:30, 밤 9시, 정오, 점심때."""
    h, m = at.hour, at.minute
    if rng.random() < 0.15:
        return at.strftime("%H:%M")
    if (h, m) == (12, 0) and rng.random() < 0.4:
        return rng.choice(("정오", "점심", "점심때", "점심시간"))
    periods = _PERIODS.get(h, ("저녁", "저녁", "오후") if 18 <= h <= 20 else ("오후", "낮"))
    period = rng.choice(periods) + rng.choice((" ", " ", "")) if rng.random() < 0.7 else ""
    h12 = h - 12 if h > 12 else h
    tail = {0: ("", "", " 정각"), 30: (" 반", " 반", "반", " 30분")}.get(m, (f" {m}분",))
    if rng.random() < 0.3 and m in (0, 30):  # native hour words: 일곱 시 반
        return f"{period}{HOUR_WORDS[h12]}{rng.choice((' 시', '시'))}{' 반' if m == 30 else ''}"
    if not period and h >= 13 and rng.random() < 0.3:  # 19시 30분
        return f"{h}시{rng.choice(tail)}"
    return f"{period}{h12}시{rng.choice(tail)}"


#: The six fields an order needs, in the order the assistant asks for them.
FIELDS: tuple[str, ...] = ("dinnerType", "servingStyle", "quantity", "deliveryDate", "deliveryTime", "deliveryAddress")
_FIELD_WORDS = {
    "dinnerType": ("메뉴", "디너"), "servingStyle": ("스타일", "서빙 스타일"), "quantity": ("수량", "개수"),
    "deliveryDate": ("날짜", "배달 날짜"), "deliveryTime": ("시간", "배달 시간"), "deliveryAddress": ("주소", "배달 주소"),
}


@dataclass(frozen=True)
class _Order:
    """The values one customer means; a change of mind replaces one of them."""

    dinner: DinnerType
    style: ServingStyle
    qty: int
    day: date
    at: time
    address: str

    def state_value(self, f: str) -> Any:
        return {
            "dinnerType": self.dinner.value, "servingStyle": self.style.value, "quantity": self.qty,
            "deliveryDate": self.day.isoformat(), "deliveryTime": self.at.strftime("%H:%M"), "deliveryAddress": self.address,
        }[f]


def spoken_date(d: date, at: time | None = None) -> str:
    """How the assistant reads a delivery back: 12월 24일(수) 19:00."""
    return f"{d.month}월 {d.day}일({KO_WEEKDAYS[d.weekday()]})" + (f" {at.strftime('%H:%M')}" if at else "")


class _Conversation:
    """Plays customer and assistant; the assistant's order_state follows what was said."""

    def __init__(self, rng: random.Random, fake: Faker, created: datetime, name: str) -> None:
        self.rng, self.fake, self.t, self.name = rng, fake, created, name
        self.now = created  # the conversation's "now": relative dates count from it
        self.state: dict[str, Any] = {}
        self.rows: list[dict[str, Any]] = []

    # -- emitting rows --
    def _tick(self) -> datetime:
        self.t += timedelta(seconds=self.rng.randint(4, 45))
        return self.t

    def user(self, content: str) -> None:
        self.rows.append({"role": "USER", "content": content, "order_state": None, "created_at": self._tick()})

    def assistant(self, content: str, ready: bool = False) -> None:
        state = {k: self.state[k] for k in ORDER_FIELDS if self.state.get(k) is not None}
        state["readyForConfirmation"] = ready
        state["needsMoreInfo"] = missing_fields(state)
        self.rows.append(
            {
                "role": "ASSISTANT",
                "content": content,
                "order_state": json.dumps(state, ensure_ascii=False),
                "created_at": self._tick(),
            }
        )

    # -- values --
    def deliverable(self, day: date, at: time) -> bool:
        """Not in the past, and not sooner than an hour from now."""
        return datetime.combine(day, at) >= self.now + timedelta(hours=1)

    def delivery(self, avoid: tuple[date, time] | None = None) -> tuple[date, time]:
        while True:
            offset = self.rng.choices(range(31), weights=[2, 4, 3, 2, 1.5, 1.5, 1.5] + [0.7] * 7 + [0.1] * 17)[0]
            day, at = self.now.date() + timedelta(days=offset), self.rng.choice(DELIVERY_SLOTS)
            if self.deliverable(day, at) and (day, at) != avoid:
                return day, at

    def address(self) -> str:
        """A road (도로명) or lot (지번) address, sometimes without the province, sometimes with an
        apartment building and 동/호; never one that reads as a date, time or quantity."""
        while True:
            base = self.fake.road_address() if self.rng.random() < 0.6 else self.fake.land_address()
            if self.rng.random() < 0.2:
                base = base.split(" ", 1)[1]
            r = self.rng.random()
            if r < 0.3:
                base += f" {self.fake.building_name()} {self.rng.randint(101, 120)}동 {self.rng.randint(1, 25)}0{self.rng.randint(1, 4)}호"
            elif r < 0.45:
                base += f" {self.rng.randint(101, 120)}동 {self.rng.randint(1, 25)}0{self.rng.randint(1, 4)}호"
            elif r < 0.55:
                base += f" {self.rng.randint(1, 5)}층"
            if not datetime_mentions(base, self.now.date()) and not _QUANTITY.search(base):
                return base

    # -- what the customer says --
    def value_phrase(self, f: str, o: _Order) -> str:
        rng = self.rng
        if f == "dinnerType":
            return dinner_word(o.dinner, rng)
        if f == "servingStyle":
            return style_word(o.style, rng)
        if f == "quantity":
            return quantity_phrase(o.qty, o.dinner, rng)
        if f == "deliveryDate":
            return date_phrase(o.day, self.now.date(), rng)
        if f == "deliveryTime":
            return time_phrase(o.at, rng)
        return o.address

    def say(self, fields: Iterable[str], o: _Order, greeting: str = "") -> str:
        """One customer utterance giving `fields` of `o`, composed from independent choices."""
        rng = self.rng
        fs = set(fields)
        order = self._order_part(fs, o)
        deliv = self._delivery_part(fs, o, alone=not order)
        if order and deliv:
            sentences = rng.choice(
                (
                    lambda: f"{order[1]}{' ' if order[1].endswith('?') else '. '}{deliv}",
                    lambda: f"{order[1]}{' ' if order[1].endswith('?') else ', '}{deliv}",
                    lambda: f"{self._when_where(fs, o)} {order[0]} {rng.choice(DELIVER_VERBS)}",
                    lambda: f"{order[0]}, {self._when_where(fs, o)} {rng.choice(DELIVER_VERBS)}",
                )
            )()
        elif order:
            sentences = order[1]
        else:
            sentences = deliv
        if rng.random() < 0.1 and "deliveryAddress" in fs:
            sentences += f" {rng.choice(('연락처는', '전화번호는'))} {copula(self.fake.phone_number())}."
        opener = rng.choice(OPENERS)
        joint = ", " if greeting and not greeting.endswith(("?", "~", "!", "ㅎ")) and rng.random() < 0.5 else " "
        text_ = f"{greeting}{joint}{opener}{sentences}" if greeting else f"{opener}{sentences}"
        return _noisy(text_, rng, o.address if "deliveryAddress" in fs else "")

    def _order_part(self, fs: set[str], o: _Order) -> tuple[str, str] | None:
        """(noun phrase, verb) for the dinner/style/quantity fields in `fs`, or None."""
        rng = self.rng
        d = dinner_word(o.dinner, rng) if "dinnerType" in fs else ""
        s = style_word(o.style, rng) if "servingStyle" in fs else ""
        q = quantity_phrase(o.qty, o.dinner, rng) if "quantity" in fs else ""
        if not (d or s or q):
            return None
        options = {
            (1, 0, 0): (f"{d}",),
            (1, 1, 0): (f"{d} {s}", f"{d}, {ro(s)}", f"{d} {ro(s)}", f"{s} {d}"),
            (1, 0, 1): (f"{d} {q}", f"{ro(d)} {q}", f"{d} {q}"),
            (1, 1, 1): (f"{d} {s} {q}", f"{d} {ro(s)} {q}", f"{d} {q} {ro(s)}", f"{s} {d} {q}", f"{d} {q}, {s}"),
            (0, 1, 0): (f"{s}", f"스타일은 {s}", f"{s}"),
            (0, 1, 1): (f"{ro(s)} {q}", f"{s} {q}", f"{q} {ro(s)}"),
            (0, 0, 1): (f"{q}", f"{q}", f"수량은 {q}"),
        }[(bool(d), bool(s), bool(q))]
        np_ = rng.choice(options)
        verb = rng.choice(ORDER_VERBS if not np_.endswith("로") else ORDER_VERBS_AFTER_RO)
        if verb.startswith("로 "):  # attaches as 로/으로
            return np_, f"{ro(np_)} {verb[2:]}"
        if verb == "요":
            return np_, yo(np_)
        return np_, f"{np_} {verb}"

    def _when(self, fs: set[str], o: _Order) -> str:
        rng = self.rng
        d = date_phrase(o.day, self.now.date(), rng) if "deliveryDate" in fs else ""
        t = time_phrase(o.at, rng) if "deliveryTime" in fs else ""
        return f"{d}{rng.choice((' ', ' ', ', ')) if d and t else ''}{t}"

    def _when_where(self, fs: set[str], o: _Order) -> str:
        """The delivery phrase used before a verb: 내일 저녁 7시에 …로 / …로 모레 정오에."""
        when = self._when(fs, o)
        where = ro(o.address) if "deliveryAddress" in fs else ""
        when = f"{when}{self.rng.choice(('에', '에', '까지'))}" if when else ""
        parts = [p for p in (when, where) if p]
        if len(parts) == 2 and self.rng.random() < 0.4:
            parts.reverse()
        return " ".join(parts)

    def _delivery_part(self, fs: set[str], o: _Order, alone: bool) -> str:
        """A sentence giving the date/time/address fields in `fs` ('' when none)."""
        rng = self.rng
        when = self._when(fs, o)
        addr = o.address if "deliveryAddress" in fs else ""
        if not (when or addr):
            return ""
        if when and addr:
            return rng.choice(
                (
                    lambda: f"{self._when_where(fs, o)} {rng.choice(DELIVER_VERBS)}",
                    lambda: f"주소는 {addr}이고 {when}에 {rng.choice(('받고 싶어요', '받을게요', '와 주세요'))}.",
                    lambda: f"{when}에 {rng.choice(('받을게요', '받고 싶어요'))}. 주소는 {copula(addr)}.",
                    lambda: f"배달은 {when}에 {ro(addr)} {rng.choice(('부탁드려요', '부탁드립니다', '해 주세요'))}.",
                )
            )()
        if when:
            return rng.choice(
                (
                    f"{when}에 {rng.choice(('받고 싶어요', '받을게요', '배달해 주세요', '와 주세요', '가능할까요?'))}",
                    f"{yo(when)}",
                    f"배달은 {ro(when)} 해 주세요",
                    f"{when}에 부탁드려요.",
                    f"{when}{rng.choice(('쯤', '쯤에', '에'))} 가져다 주시면 돼요",
                )
            )
        return rng.choice(
            (
                f"주소는 {copula(addr)}.", f"{ro(addr)} 보내주세요.", f"배달지는 {addr}입니다.", f"{yo(addr)}",
                f"받는 곳은 {copula(addr)}", f"주소 불러 드릴게요. {addr}입니다.",
            )
        )

    def change(self, f: str, old: _Order, new: _Order, after_summary: bool) -> str:
        """The customer changes field `f` (a change of mind, not a correction: no 아니요/잘못,
        which would make the previous, right answer look wrong to the DPO builder)."""
        rng = self.rng
        was, now = self.value_phrase(f, old), self.value_phrase(f, new)
        noun = rng.choice(_FIELD_WORDS[f])
        lead = rng.choice(("아 그런데 ", "아 참, ", "죄송한데 ", "", "음 ")) if after_summary else rng.choice(("아 잠깐만요, ", "아 ", "", "음 ", "저기 "))
        forms = [
            f"{lead}{ro(now)} 바꿀게요.",
            f"{lead}{was} 말고 {ro(now)} 해 주세요.",
            f"{lead}{topic(noun)} {ro(now)} 변경해 주세요.",
            f"{lead}{obj(noun)} {ro(now)} 바꿔 주실 수 있나요?",
            f"{lead}생각해 보니 {subject(now)} 낫겠어요. {ro(now)} 해 주세요.",
        ]
        if f == "quantity" and new.qty == old.qty + 1:
            forms += [f"{lead}{rng.choice(('하나', '한 개'))} 더 추가해 주세요."]
        if f == "deliveryTime":
            forms += [f"{lead}{ro(now)} {'늦춰' if new.at > old.at else '당겨'} 주세요."]
        if f == "deliveryAddress":
            forms += [f"{lead}주소를 바꿔야 할 것 같아요. {copula(now)}."]
        return _noisy(rng.choice(forms), rng, new.address if f == "deliveryAddress" else "")


ORDER_VERBS = (
    "주문할게요", "주세요", "부탁드려요", "부탁드립니다", "주문하고 싶어요", "시킬게요", "로 할게요", "로 할게요", "요",
    "주문하려고요", "준비해 주세요", "주문 가능할까요?", "주문하고 싶은데 가능할까요?", "부탁드려도 될까요?", "줘", "로 할게",
    "먹고 싶어요", "해 주세요",
)
ORDER_VERBS_AFTER_RO = ("주문할게요", "주세요", "부탁드려요", "해 주세요", "할게요", "부탁드립니다", "주문하려고요", "해 줘")
DELIVER_VERBS = (
    "보내주세요", "배달해 주세요", "배달 부탁드려요", "갖다 주세요", "부탁드립니다", "보내 주실 수 있을까요?", "보내줘",
    "배달해 주시면 감사하겠습니다", "와 주세요",
)
_QUANTITY = re.compile(r"(?:\d+|[한두세네열]|다섯|여섯|일곱|여덟|아홉) ?(?:개|세트|인분)")
#: Slips real customers make; applied outside the address, which must stay verbatim.
_SLIPS = (("할게요", "할께요"), ("주세요", "주세여"), ("요.", "요~"), ("요.", "용."), ("습니다.", "습니다!"), ("해 주세요", "해주세요"), ("부탁드려요", "부탁해요"))


#: Spaces customers drop, each a spelling that still means the same (다음주, 두개, 7시반).
_SPACE_SLIPS = (
    (re.compile(r"(이번|다음) 주"), r"\1주"),
    (re.compile(r"(?<![가-힣])([한두세네]|다섯|여섯|일곱|여덟|아홉|열) (개|세트)"), r"\1\2"),
    (re.compile(r"시 반"), "시반"),
    (re.compile(r"([가-힣]) (디너|스타일|코스)"), r"\1\2"),
    (re.compile(r"(해|보내|갖다|와|가져다) 주"), r"\1주"),
    (re.compile(r"(저녁|오후|밤|낮|오전|점심) (\d)"), r"\1\2"),
    (re.compile(r"([한두세네섯곱덟홉열]) 시(?!킬)"), r"\1시"),
)


def _noisy(text_: str, rng: random.Random, keep: str) -> str:
    """Sometimes a slip: a typo, a dropped space, a trailing ㅎㅎ or no final period. The address
    `keep` is left as it is (order_state holds it verbatim)."""
    if rng.random() > 0.3:
        return text_
    head, sep, tail = text_.partition(keep) if keep else (text_, "", "")

    def slip(part: str) -> str:
        r = rng.random()
        if r < 0.35:
            old, new = rng.choice(_SLIPS)
            return part.replace(old, new, 1)
        if r < 0.7:
            for pattern, repl in rng.sample(_SPACE_SLIPS, 3):
                part = pattern.sub(repl, part)
            return part
        if r < 0.85:
            return part.rstrip(".") + rng.choice((" ㅎㅎ", "~", "!!", " ^^"))
        return part.rstrip(".")

    if sep and rng.random() < 0.5:
        return head + sep + slip(tail)
    return slip(head) + sep + tail


# --- What the assistant says ------------------------------------------------------------------


def _ack(c: _Conversation, fields: Iterable[str], verb: str = "기록했습니다") -> str:
    """The assistant reads back the fields just given, from its state (so text = state)."""
    st, fs = c.state, set(fields)
    pieces = []
    order = []
    if "dinnerType" in fs and "dinnerType" in st:
        order.append(DINNER_KO[DinnerType(st["dinnerType"])])
    if "servingStyle" in fs and "servingStyle" in st:
        order.append(f"{STYLE_KO[ServingStyle(st['servingStyle'])]} 스타일")
    if "quantity" in fs and "quantity" in st:
        order.append(f"{st['quantity']}개")
    if order:
        pieces.append(" ".join(order))
    day = date.fromisoformat(st["deliveryDate"]) if "deliveryDate" in fs and "deliveryDate" in st else None
    at = st["deliveryTime"] if "deliveryTime" in fs and "deliveryTime" in st else None
    if day and at:
        pieces.append(spoken_date(day, time.fromisoformat(at)))
    elif day:
        pieces.append(spoken_date(day))
    elif at:
        pieces.append(at)
    if "deliveryAddress" in fs and "deliveryAddress" in st:
        pieces.append(f"배달 주소 {st['deliveryAddress']}")
    if not pieces:
        return ""
    lead = c.rng.choice(("네, ", "네, ", "알겠습니다. ", "좋습니다. ", ""))
    return f"{lead}{', '.join(pieces[:-1]) + ', ' if len(pieces) > 1 else ''}{ro(pieces[-1])} {verb}."


_ASK = {
    "dinnerType": ("어떤 디너로 하시겠어요? 발렌타인, 프렌치, 잉글리시, 샴페인 축제 디너가 있습니다.", "어떤 디너를 원하시나요?"),
    "servingStyle": ("서빙 스타일은 심플, 그랜드, 디럭스 중 어떤 걸로 하시겠어요?", "스타일은 심플, 그랜드, 디럭스 중에 골라 주세요."),
    "quantity": ("몇 개 준비해 드릴까요?", "수량은 몇 개로 할까요?"),
    "deliveryDate": ("배달 날짜와 시간을 알려주세요.", "언제 배달해 드릴까요?"),
    "deliveryTime": ("몇 시에 배달해 드릴까요?", "배달 시간은 언제로 할까요?"),
    "deliveryAddress": ("배달 받으실 주소를 알려주세요.", "주소를 알려 주시겠어요?"),
}


def _ask_missing(c: _Conversation) -> str:
    missing = missing_fields(c.state)
    return " ".join(c.rng.choice(_ASK[f]) for f in missing[:2] if not (f == "deliveryTime" and "deliveryDate" in missing[:2]))


def _summary(c: _Conversation) -> str:
    st = c.state
    d = DinnerType(st["dinnerType"])
    s = ServingStyle(st["servingStyle"])
    when = datetime.strptime(f"{st['deliveryDate']} {st['deliveryTime']}", "%Y-%m-%d %H:%M")
    return (
        f"주문 내용을 확인하겠습니다. {DINNER_KO[d]} {STYLE_KO[s]} 스타일 {st['quantity']}개, "
        f"{spoken_date(when.date(), when.time())}에 {ro(st['deliveryAddress'])} 배달해 드립니다. "
        f"구성은 {', '.join(DINNER_ITEMS[d])}이며 {ro(', '.join(STYLE_ITEMS[s]))} 준비됩니다. 이대로 주문할까요?"
    )


def _next(c: _Conversation, ack: str) -> None:
    """The assistant's reply after the state changed: read-back, then what is
    missing, or the summary (ready for confirmation) when nothing is."""
    if missing_fields(c.state):
        c.assistant(f"{ack} {_ask_missing(c)}".strip())
    else:
        c.assistant(f"{ack + ' ' if ack and c.rng.random() < 0.3 else ''}{_summary(c)}", ready=True)


# --- Scenarios --------------------------------------------------------------------------------


def _plan(rng: random.Random, scenario: str) -> list[list[str]]:
    """Which fields the customer gives in which turn."""
    if scenario == "one_shot":
        return [list(FIELDS)]
    if scenario == "several_fields":
        fs = list(FIELDS)
        rng.shuffle(fs)
        if rng.random() < 0.7:  # date and time usually go together
            fs.remove("deliveryTime")
            fs.insert(fs.index("deliveryDate") + 1, "deliveryTime")
        cuts = sorted(rng.sample(range(2, 5), rng.choice((1, 2))))
        return [fs[a:b] for a, b in zip([0, *cuts], [*cuts, len(fs)], strict=True) if fs[a:b]]
    units = [["dinnerType"], ["servingStyle"], ["quantity"]]
    units += [["deliveryDate", "deliveryTime"]] if rng.random() < 0.75 else [["deliveryDate"], ["deliveryTime"]]
    units += [["deliveryAddress"]]
    plan = [units[0]]
    for u in units[1:]:  # customers often say two or three things in one breath
        if rng.random() < 0.5:
            plan[-1] = plan[-1] + u
        else:
            plan.append(u)
    return plan


def _alternative(c: _Conversation, o: _Order, f: str) -> _Order:
    """`o` with field `f` set to another valid value: what the customer first says before
    changing their mind to `o`."""
    rng = c.rng
    if f == "dinnerType":
        return replace(o, dinner=rng.choice([d for d in DinnerType if d is not o.dinner and o.style in ALLOWED_STYLES[d]]))
    if f == "servingStyle":
        # in the enum's order, not the frozenset's: the same data whatever PYTHONHASHSEED
        return replace(o, style=rng.choice([s for s in ServingStyle if s in ALLOWED_STYLES[o.dinner] and s is not o.style]))
    if f == "quantity":
        return replace(o, qty=rng.choice([q for q in (o.qty - 1, o.qty + 1, o.qty + 2) if 1 <= q <= 10 and q != o.qty]))
    if f == "deliveryDate":
        days = [o.day + timedelta(days=k) for k in (-2, -1, 1, 2, 3, 7) if c.deliverable(o.day + timedelta(days=k), o.at)]
        return replace(o, day=rng.choice(days))
    if f == "deliveryTime":
        times = [t for t in DELIVERY_SLOTS if t != o.at and c.deliverable(o.day, t)]
        if not times:  # the day's last deliverable slot: the customer first names another day instead
            return _alternative(c, o, "deliveryDate")
        return replace(o, at=rng.choice(times))
    return replace(o, address=c.address())


def _menu_question(c: _Conversation, o: _Order) -> bool:
    """The customer asks about the menu; True when they then pick the dinner they asked about."""
    rng = c.rng
    kind = rng.choice(("dinner", "dinner", "style", "all", "champagne"))
    if kind == "dinner":
        word = dinner_word(o.dinner, rng)
        c.user(rng.choice((f"{topic(word)} 뭐가 나와요?", f"{word}에는 어떤 음식이 들어가요?", f"{word} 구성이 어떻게 돼요?", f"혹시 {topic(word)} 뭐가 포함돼 있나요?")))
        c.assistant(f"{topic(DINNER_KO[o.dinner])} {ro(', '.join(DINNER_ITEMS[o.dinner]))} 구성됩니다. 이 디너로 주문하시겠어요?")
        if rng.random() < 0.6:
            c.user(rng.choice(("네, 그걸로 할게요.", "좋아요 그걸로 주세요", "오 괜찮네요. 그걸로요", "네 그걸로 주문할게요")))
            c.state["dinnerType"] = o.dinner.value
            _next(c, _ack(c, ["dinnerType"]))
            return True
        c.user(rng.choice(("음 다른 것도 볼게요.", "잠깐만요, 좀 더 생각해 볼게요.", "다른 건 뭐 있어요?")))
        c.assistant(f"네, 천천히 골라 주세요. {_ASK['dinnerType'][0]}")
        return False
    if kind == "style":
        word = style_word(o.style, rng)
        c.user(rng.choice((f"{topic(word)} 어떻게 나와요?", "스타일마다 뭐가 달라요?", f"{topic(word)} 뭐가 다른가요?")))
        c.assistant(" ".join(f"{STYLE_KO[s]} 스타일은 {ro(', '.join(STYLE_ITEMS[s]))} 준비됩니다." for s in ServingStyle) + f" {_ASK['dinnerType'][1]}")
        return False
    if kind == "all":
        c.user(rng.choice(("메뉴가 뭐뭐 있어요?", "어떤 디너들이 있나요?", "메뉴 좀 알려 주세요")))
        c.assistant("발렌타인, 프렌치, 잉글리시, 샴페인 축제 디너가 있고, 서빙 스타일은 심플, 그랜드, 디럭스 중에 고르실 수 있습니다. 어떤 디너로 하시겠어요?")
        return False
    c.user(rng.choice(("샴페인 디너는 몇 명이 먹을 수 있어요?", "샴페인 축제 디너는 몇 인분이에요?")))
    c.assistant("샴페인 축제 디너는 두 분이 드실 수 있는 2인용 디너입니다. 어떤 디너로 하시겠어요?")
    return False


DECLINE = "죄송하지만 저는 미스터 대박 디너 주문만 도와드릴 수 있어요."


def _play(c: _Conversation, scenario: str, dinner: DinnerType, style: ServingStyle, qty: int) -> str:
    """Run one scenario; returns the session status."""
    rng = c.rng
    if scenario == "champagne_simple":  # asked SIMPLE, is told the rule, ends GRAND or DELUXE
        style = rng.choice((ServingStyle.GRAND, ServingStyle.DELUXE))
    day, at = c.delivery()
    final = _Order(dinner, style, qty, day, at, c.address())
    said = final
    change = rng.choice(FIELDS) if scenario in ("change_of_mind", "correction_after_summary") else None
    if change:
        said = _alternative(c, final, change)
    if scenario == "champagne_simple":
        said = replace(final, style=ServingStyle.SIMPLE)
    plan = _plan(rng, scenario)
    if scenario == "champagne_simple":  # dinner and style in one breath
        plan = [[f for f in ch if f != "servingStyle"] for ch in plan]
        next(ch for ch in plan if "dinnerType" in ch).insert(1, "servingStyle")
        plan = [ch for ch in plan if ch]
    c.state = {}
    greet = f"안녕하세요, {c.name}님! 미스터 대박 디너 서비스입니다."
    prefaced = scenario in ("out_of_domain", "unclear", "menu_question")
    # Customers often open with the order itself, with or without a hello: the first reply then
    # reads the order back, never the rote greeting (a model that only ever saw "hello" first
    # learns to greet whatever the customer says).
    greeting = rng.choice(GREETINGS) if rng.random() < 0.5 else ""
    if not prefaced and rng.random() < (0.8 if scenario == "one_shot" else 0.5):
        plan_first_in_greeting = True
    else:
        greeting = greeting or rng.choice(GREETINGS)
        plan_first_in_greeting = False
        c.user(greeting)
        c.assistant(f"{greet} {rng.choice(('어떤 디너를 주문하시겠어요?', '무엇을 도와드릴까요?', '어떤 디너로 준비해 드릴까요?'))}")

    ood_at = None  # the turn after which an off-topic aside comes, mid-order
    if scenario == "out_of_domain":
        ood_at = rng.randrange(max(1, len(plan) - 1)) if rng.random() < 0.5 else None  # an aside in the middle of the order
        if ood_at is None:
            c.user(rng.choice(OUT_OF_DOMAIN))
            c.assistant(f"{DECLINE} 어떤 디너를 준비해 드릴까요?")
        if ood_at is None and rng.random() < 0.3:
            c.user(rng.choice(("아 그럼 됐어요.", "아 네 알겠어요. 다음에 할게요")))
            c.assistant("알겠습니다. 필요하실 때 언제든 다시 불러 주세요.")
            return SessionStatus.ABANDONED.value
    elif scenario == "unclear":
        c.user(rng.choice(UNCLEAR))
        c.assistant("말씀을 정확히 이해하지 못했어요. 발렌타인, 프렌치, 잉글리시, 샴페인 축제 디너 중 어떤 것을 원하시나요?")
    elif scenario == "menu_question" and _menu_question(c, said):
        plan = [ch for ch in ([f for f in ch if f != "dinnerType"] for ch in plan) if ch]

    change_at = None
    if scenario == "change_of_mind" and change:
        change_at = rng.randint(next(i for i, ch in enumerate(plan) if change in ch), len(plan) - 1)
    stop_at = rng.randrange(len(plan)) if scenario == "abandoned" else None
    # half of the cancellations come mid-order, the rest after the read-back
    cancel_at = rng.randrange(len(plan)) if scenario == "cancelled" and rng.random() < 0.5 else None
    mistake = rng.choice(("quantity", "deliveryTime")) if scenario == "assistant_mistake" else None

    for i, chunk in enumerate(plan):
        c.user(c.say(chunk, said, greeting=greeting if i == 0 and plan_first_in_greeting else ""))
        simple_champagne = "servingStyle" in chunk and said.dinner is DinnerType.CHAMPAGNE_FEAST and said.style is ServingStyle.SIMPLE
        for f in chunk:
            if not (f == "servingStyle" and simple_champagne):
                c.state[f] = said.state_value(f)
        if simple_champagne:
            others = _ack(c, [f for f in chunk if f != "servingStyle"])
            c.assistant(f"{others + ' ' if others else ''}죄송합니다. 샴페인 축제 디너는 그랜드 또는 디럭스 스타일로만 제공됩니다. 어떤 스타일로 하시겠어요?")
            said = replace(said, style=final.style)
            word = style_word(final.style, rng)
            c.user(rng.choice((f"그럼 {ro(word)} 할게요.", f"아 그렇구나. 그럼 {ro(word)} 바꿔서 주세요", f"{yo(word)}", f"그러면 {word}로 부탁드려요")))
            c.state["servingStyle"] = final.style.value
            _next(c, _ack(c, ["servingStyle"]))
        elif mistake in chunk:  # the assistant mishears, the customer corrects: a DPO pair
            right = said
            wrong = _alternative(c, said, mistake)
            c.state[mistake] = wrong.state_value(mistake)
            c.assistant(f"{_ack(c, chunk)} {_ask_missing(c) or '이대로 진행할까요?'}".strip())
            c.user(rng.choice(("아니요, ", "아니요 ", "그게 아니라 ", "잘못 들으셨어요. ")) + f"{subject(c.value_phrase(mistake, wrong))} 아니라 {yo(c.value_phrase(mistake, right))}.")
            c.state[mistake] = right.state_value(mistake)
            _next(c, _ack(c, [mistake], verb="정정했습니다"))
            mistake = None
        else:
            _next(c, _ack(c, chunk))
        if i == stop_at:
            if rng.random() < 0.5:
                c.user(rng.choice(("잠시만요, 나중에 다시 할게요.", "아 전화 왔네요. 이따가 다시 할게요", "생각 좀 해 보고 다시 올게요")))
                c.assistant("네, 편하실 때 언제든 다시 말씀해 주세요.")
            return SessionStatus.ABANDONED.value
        if i == cancel_at:
            break
        if i == change_at and change:
            said = _change(c, change, said, final)
            change = None
        if i == ood_at and i < len(plan) - 1:  # the order so far stands; ask for what is still missing
            c.user(rng.choice(OUT_OF_DOMAIN))
            c.assistant(f"{DECLINE} {_ask_missing(c)}".strip())
    if scenario == "correction_after_summary" and change:
        said = _change(c, change, said, final)

    if scenario == "cancelled":
        c.user(cancel_phrase(rng))
        c.state = {}
        c.assistant("주문을 취소했습니다. 다음에 또 이용해 주세요.")
        return SessionStatus.CANCELLED.value
    c.user(rng.choice(CONFIRM))
    c.assistant("주문이 확정되었습니다. 감사합니다! 맛있는 식사 되세요.", ready=True)
    return SessionStatus.CONFIRMED.value


def _change(c: _Conversation, f: str, said: _Order, final: _Order) -> _Order:
    """The customer changes field `f` from what they said to `final`'s value; the assistant
    follows and re-reads what is missing or the whole order."""
    after_summary = not missing_fields(c.state)
    c.user(c.change(f, said, final, after_summary))
    c.state[f] = final.state_value(f)
    _next(c, _ack(c, [f], verb="변경했습니다"))
    return replace(said, **{_ORDER_ATTR[f]: getattr(final, _ORDER_ATTR[f])})


_ORDER_ATTR = {"dinnerType": "dinner", "servingStyle": "style", "quantity": "qty", "deliveryDate": "day", "deliveryTime": "at", "deliveryAddress": "address"}


def _damage(kind: str, rows: list[dict[str, Any]], rng: random.Random) -> list[dict[str, Any]]:
    """Damage one session's rows in place of the given kind; returns the rows to write."""
    users = [r for r in rows if r["role"] == "USER"]
    assistants = [r for r in rows if r["role"] == "ASSISTANT"]
    if kind == "bad_json":
        r = rng.choice(assistants)
        r["order_state"] = (r["order_state"] or "{}")[: rng.randint(3, 20)]
    elif kind == "old_role_spelling":
        u, a = rng.choice(OLD_USER_ROLES), rng.choice(OLD_ASSISTANT_ROLES)
        for r in rows:
            r["role"] = u if r["role"] == "USER" else a
    elif kind == "enum_spelling":
        r = rng.choice(assistants)
        st = json.loads(r["order_state"])
        if "dinnerType" in st:
            st["dinnerType"] = st["dinnerType"].lower()
        if "servingStyle" in st:
            st["servingStyle"] = st["servingStyle"].title()
        if "quantity" in st:
            st["quantity"] = str(st["quantity"])
        r["order_state"] = json.dumps(st, ensure_ascii=False)
    elif kind == "unicode_noise":
        for r in users:
            r["content"] = "\ufeff" + r["content"].replace(" ", "\u00a0", 1).replace("7", "７") + "\u200b\r\n"
    elif kind == "duplicate_retry":
        r = rng.choice(users)
        rows.insert(rows.index(r) + 1, dict(r))
    elif kind == "empty_content":
        rng.choice(users)["content"] = rng.choice(("", None, "   "))
    elif kind == "unknown_role":
        r = dict(rng.choice(users))
        r["role"] = rng.choice(("operator", "system_debug", "SUPERVISOR"))
        rows.insert(rng.randint(1, len(rows)), r)
    elif kind == "too_long":
        r = rng.choice(users)
        r["content"] = r["content"] + " 그리고" * 2500
    elif kind == "empty_session":
        return []
    elif kind == "bad_bytes":
        r = rng.choice(users)
        r["content"] = r["content"].encode("utf-8")[:-1] + b"\xff\xfe"
    elif kind == "bad_timestamp":
        rng.choice(rows)["created_at"] = rng.choice(("not-a-date", "2026-13-45 25:61:00"))
    return rows


def generate(
    sessions: int, days: int, seed: int, end_date: date | None = None, damage_rate: float = 0.05,
    allow_sqlite_only_damage: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], SeedSummary]:
    """Build session rows and message rows (without ids) for `sessions` conversations.

    Sessions are spread uniformly over the `days` days ending at `end_date` (default: yesterday
    in Seoul, so every seeded day is a complete partition). Dinner×style combinations are dealt
    round-robin from a shuffled deck of all 12 (CHAMPAGNE_FEAST+SIMPLE becomes the correction
    scenario), so 500 sessions always cover every combination. Session ids start with
    `SEED_ID_PREFIX`.
    """
    rng = random.Random(seed)
    fake = Faker("ko_KR")
    fake.seed_instance(seed)
    end = end_date or (datetime.now(SEOUL).date() - timedelta(days=1))
    first = end - timedelta(days=days - 1)
    combos = [(d, s) for d in DinnerType for s in ServingStyle]
    damage_kinds = [k for k in DAMAGE if allow_sqlite_only_damage or k not in SQLITE_ONLY]
    damage_w = [DAMAGE[k] for k in damage_kinds]
    scenario_names, scenario_w = list(SCENARIOS), list(SCENARIOS.values())
    summary = SeedSummary(first_day=first, last_day=end)
    session_rows: list[dict[str, Any]] = []
    message_rows: list[dict[str, Any]] = []
    deck: list[tuple[DinnerType, ServingStyle]] = []
    for _ in range(sessions):
        if not deck:
            deck = combos[:]
            rng.shuffle(deck)
        dinner, style = deck.pop()
        scenario = rng.choices(scenario_names, weights=scenario_w)[0]
        if dinner is DinnerType.CHAMPAGNE_FEAST and style is ServingStyle.SIMPLE:
            scenario = "champagne_simple"
        elif scenario == "champagne_simple":
            scenario = "multi_turn"
        day = first + timedelta(days=rng.randrange(days))
        created = datetime.combine(day, time(9)) + timedelta(seconds=rng.randint(0, 13 * 3600))
        sid = SEED_ID_PREFIX + str(uuid.UUID(int=rng.getrandbits(128), version=4))
        name = fake.name()
        conv = _Conversation(rng, fake, created, name)
        status = _play(conv, scenario, dinner, style, rng.choice((1, 1, 1, 2, 2, 2, 3, 3, 4, 5, 6, 8, 10)))
        rows = conv.rows
        summary.scenarios[scenario] += 1
        summary.combos[(dinner.value, style.value)] += 1
        summary.session_scenarios[sid] = scenario
        orphan = False
        if rng.random() < damage_rate:
            kind = rng.choices(damage_kinds, weights=damage_w)[0]
            summary.damage[kind] += 1
            rows = _damage(kind, rows, rng)
            orphan = kind == "orphan_messages"
        for r in rows:
            r["session_id"] = sid
            message_rows.append(r)
        if not orphan:
            session_rows.append(
                {
                    "id": sid, "customer_id": rng.randint(1, 10**9), "customer_name": name, "status": status,
                    "created_at": created, "updated_at": conv.t,
                }
            )
        summary.sessions += 1
        summary.messages += len(rows)
    return session_rows, message_rows, summary


def seed_database(
    engine: Engine, sessions: int = 300, days: int = 14, seed: int = 42, end_date: date | None = None,
    damage_rate: float = 0.05, batch_size: int = 20_000,
) -> SeedSummary:
    """Create the schema if needed and append `sessions` generated conversations to the DB.

    Refusing a production database is the CLI's job (`mrdabak seed`); this function writes
    wherever it is pointed, marked with `SEED_ID_PREFIX` so `purge_seeded` can take it back.
    """
    create_schema(engine)
    sqlite = engine.dialect.name == "sqlite"
    session_rows, message_rows, summary = generate(sessions, days, seed, end_date, damage_rate, sqlite)
    clean = [r for r in message_rows if isinstance(r["created_at"], datetime) and not isinstance(r["content"], bytes)]
    raw = [r for r in message_rows if not (isinstance(r["created_at"], datetime) and not isinstance(r["content"], bytes))]
    with engine.begin() as conn:
        for i in range(0, len(session_rows), batch_size):
            conn.execute(insert(session_table), session_rows[i : i + batch_size])
        for i in range(0, len(clean), batch_size):
            conn.execute(insert(message_table), clean[i : i + batch_size])
        if raw:  # undecodable bytes / bad timestamps bypass SQLAlchemy's type processing (SQLite only)
            conn.execute(
                text(
                    "INSERT INTO voice_conversation_message (session_id, role, content, order_state, created_at) "
                    "VALUES (:session_id, :role, :content, :order_state, :created_at)"
                ),
                [{**r, "created_at": r["created_at"] if isinstance(r["created_at"], str) else r["created_at"].isoformat(sep=" ")} for r in raw],
            )
    return summary


# --- Finding and removing seeded rows ---------------------------------------------------------


def is_seeded(session_id: str | None) -> bool:
    """Whether a session id is one `generate` made."""
    return bool(session_id) and str(session_id).startswith(SEED_ID_PREFIX)


def _seeded(column: Any) -> Any:
    # LIKE with the prefix literally: "-" is not a wildcard; no "_" or "%" in the prefix
    return column.like(f"{SEED_ID_PREFIX}%")


def count_seeded(engine: Engine) -> tuple[int, int]:
    """(sessions, messages) written by the seeder in `engine`'s database (0, 0 without tables)."""
    if not inspect(engine).has_table(message_table.name):
        return 0, 0
    with engine.connect() as conn:
        sessions = conn.execute(select(func.count()).select_from(session_table).where(_seeded(session_table.c.id))).scalar_one()
        messages = conn.execute(select(func.count()).select_from(message_table).where(_seeded(message_table.c.session_id))).scalar_one()
    return int(sessions), int(messages)


def purge_seeded(engine: Engine) -> tuple[int, int]:
    """Delete every seeded session and message (orphans included), in one transaction; returns
    (sessions, messages) removed. Rows of the production app (bare UUID ids) are never touched."""
    if not inspect(engine).has_table(message_table.name):
        return 0, 0
    with engine.begin() as conn:
        messages = conn.execute(delete(message_table).where(_seeded(message_table.c.session_id))).rowcount
        sessions = conn.execute(delete(session_table).where(_seeded(session_table.c.id))).rowcount
    return int(sessions or 0), int(messages or 0)


# --- Measuring the variety of what customers say ----------------------------------------------

_DINNER_RE = re.compile("|".join(sorted({re.escape(w) for ws in DINNER_WORDS.values() for w in ws} | {re.escape(w) for w in DINNER_KO.values()}, key=len, reverse=True)))
_STYLE_RE = re.compile("|".join(sorted({re.escape(w) for ws in STYLE_WORDS.values() for w in ws} | set(STYLE_KO.values()), key=len, reverse=True)))
_QTY_SLOT = re.compile(
    r"(?:\d+|(?<![가-힣])(?:[한두세네열]|다섯|여섯|일곱|여덟|아홉)) ?(?:개|세트|인분)"
    r"|(?<![가-힣])(?:하나|둘|셋|넷|다섯)(?= ?더|[^가-힣]|$|요|용|로|만|이요|으로)"
)


def utterance_template(content: str, anchor: date | None, known: Iterable[str] = ()) -> str:
    """A customer utterance with its values replaced by slots: the known values (addresses,
    names) by <V>, phone numbers by <PHONE>, dates and times (`augment.datetime_mentions`) by
    <DATE>/<TIME>, dinner and style names by <DINNER>/<STYLE>, quantities by <QTY>, other digits
    by <N>. Two utterances with one template differ only in values, not in phrasing."""
    out = content
    for value in sorted((v for v in known if v), key=len, reverse=True):
        out = out.replace(value, "\x00")
    out = PII_PATTERN.sub("\x01", out)
    parts, pos = [], 0
    for m in datetime_mentions(out, anchor):
        parts += [out[pos : m.start], "\x02" if m.kind == "date" else "\x03"]
        pos = m.end
    out = "".join(parts) + out[pos:]
    out = _DINNER_RE.sub("\x04", out)
    out = _STYLE_RE.sub("\x05", out)
    out = _QTY_SLOT.sub("\x06", out)
    out = re.sub(r"\d+", "<N>", out)
    for code, slot in zip("\x00\x01\x02\x03\x04\x05\x06", ("<V>", "<PHONE>", "<DATE>", "<TIME>", "<DINNER>", "<STYLE>", "<QTY>"), strict=True):
        out = out.replace(code, slot)
    return " ".join(out.split())


def utterance_templates(session_rows: Iterable[dict[str, Any]], message_rows: Iterable[dict[str, Any]]) -> Counter[str]:
    """How often each customer-utterance template occurs in generated rows (see
    `utterance_template`); its length is the variety of phrasing a model trained on them sees."""
    sessions = {s["id"]: s for s in session_rows}
    known: dict[str, set[str]] = {}
    for m in message_rows:
        if m["role"] == "ASSISTANT" and isinstance(m["order_state"], str):
            try:
                address = json.loads(m["order_state"]).get("deliveryAddress")
            except (ValueError, AttributeError):
                continue
            if address:
                known.setdefault(m["session_id"], set()).add(address)
    out: Counter[str] = Counter()
    for m in message_rows:
        s = sessions.get(m["session_id"])
        if m["role"] != "USER" or not isinstance(m["content"], str) or s is None:
            continue
        values = known.get(m["session_id"], set()) | {s["customer_name"]}
        out[utterance_template(m["content"], s["created_at"].date(), values)] += 1
    return out
