"""Sample data that looks like production: realistic Korean ordering conversations.

The seeder plays both sides of a conversation with a small state machine so that every assistant
row carries an order_state that is true to the text (what the customer said so far, what is still
missing). Scenarios cover what the model must learn — complete flows, one-shot orders, changes of
mind, the CHAMPAGNE_FEAST-only-GRAND/DELUXE correction, out-of-domain questions, unclear input,
abandoned and cancelled sessions — and a configurable share of sessions is damaged the way old
production rows are (bad JSON, odd role spellings, empty content, duplicates, …) so that cleaning
has real work. Deterministic for a given (seed, end_date).
"""

from __future__ import annotations

import json
import random
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from faker import Faker
from sqlalchemy import Engine, insert, text

from mrdabak_pipeline.core.db import create_schema, message_table, session_table
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

SEOUL = ZoneInfo("Asia/Seoul")

#: Scenario -> weight. Every scenario except `abandoned`/`cancelled` ends in a confirmation.
SCENARIOS: dict[str, float] = {
    "multi_turn": 0.24,
    "assistant_mistake": 0.06,
    "one_shot": 0.14,
    "change_of_mind": 0.12,
    "champagne_simple": 0.10,
    "out_of_domain": 0.10,
    "unclear": 0.08,
    "abandoned": 0.12,
    "cancelled": 0.06,
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

OUT_OF_DOMAIN = (
    "오늘 날씨 어때요?",
    "주식 뭐 사면 좋을까요?",
    "근처에 맛있는 카페 추천해 주세요.",
    "비트코인 가격 알려줘.",
    "영어 번역 좀 해줄 수 있어요?",
    "내일 야구 경기 누가 이길까요?",
)
UNCLEAR = ("음... 그거 있잖아요 그거", "아 뭐더라, 저번에 먹은 거요", "ㅇㅇ 그걸로", "잘 모르겠어요 아무거나요?")
GREETINGS = ("안녕하세요", "여보세요", "안녕하세요, 주문하려고요", "저기요, 디너 주문 가능한가요?")
CONFIRM = ("네, 맞아요. 주문할게요.", "네 그렇게 해 주세요", "좋아요, 확정해 주세요.", "네 맞습니다")
KO_WEEKDAYS = ("월", "화", "수", "목", "금", "토", "일")
KO_NUM = {1: "한", 2: "두", 3: "세", 4: "네", 5: "다섯"}


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


@dataclass
class _Delivery:
    day: date
    at: time
    phrase: str  # how the customer said it


class _Conversation:
    """Plays customer and assistant; the assistant's order_state follows what was said."""

    def __init__(self, rng: random.Random, fake: Faker, created: datetime, name: str) -> None:
        self.rng, self.fake, self.t, self.name = rng, fake, created, name
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

    # -- phrases --
    def delivery(self) -> _Delivery:
        today = self.t.date()
        offset = self.rng.choice((0, 1, 1, 1, 2, 2, 3, 4, 5, 6))
        day = today + timedelta(days=offset)
        hour, minute = self.rng.choice(((18, 0), (19, 0), (19, 30), (20, 0), (12, 0), (12, 30), (18, 30), (17, 0)))
        at = time(hour, minute)
        if offset == 0:
            day_word = "오늘"
        elif offset == 1:
            day_word = "내일"
        elif offset == 2:
            day_word = "모레"
        elif self.rng.random() < 0.5:
            day_word = f"{day.month}월 {day.day}일"
        else:
            day_word = f"{'이번 주' if day.isocalendar()[1] == today.isocalendar()[1] else '다음 주'} {KO_WEEKDAYS[day.weekday()]}요일"
        return _Delivery(day, at, f"{day_word} {time_phrase(at, self.rng)}")

    def address(self) -> str:
        base = self.fake.road_address() if self.rng.random() < 0.6 else self.fake.land_address()
        if self.rng.random() < 0.5:
            base += f" {self.fake.building_name()} {self.rng.randint(101, 120)}동 {self.rng.randint(1, 25)}0{self.rng.randint(1, 4)}호"
        return base


def ro(word: str) -> str:
    """Attach the particle 로/으로 the way Korean does: 으로 after a final consonant other than ㄹ."""
    last = word.rstrip()[-1:] if word.strip() else ""
    if "가" <= last <= "힣":
        final = (ord(last) - 0xAC00) % 28
        return f"{word}{'으로' if final not in (0, 8) else '로'}"
    return f"{word}{'으로' if last in '0136789' else '로'}"


def time_phrase(at: time, rng: random.Random) -> str:
    """A Korean way of saying a time of day: 저녁 7시, 오후 6시 반, 점심, 19:00."""
    if rng.random() < 0.2:
        return at.strftime("%H:%M")
    if at.hour == 12 and at.minute == 0 and rng.random() < 0.5:
        return "점심"
    period = "저녁" if at.hour >= 18 else ("오후" if at.hour >= 12 else "오전")
    hour12 = at.hour - 12 if at.hour > 12 else at.hour
    return f"{period} {hour12}시{' 반' if at.minute == 30 else ''}"


def spoken_date(d: date, at: time) -> str:
    """How the assistant reads a delivery back: 12월 24일(수) 19:00."""
    return f"{d.month}월 {d.day}일({KO_WEEKDAYS[d.weekday()]}) {at.strftime('%H:%M')}"


def _dinner_phrase(dinner: DinnerType, style: ServingStyle | None, qty: int | None, rng: random.Random) -> str:
    q = f" {KO_NUM.get(qty, str(qty))} 개" if qty and rng.random() < 0.5 else (f" {qty}인분" if qty else "")
    s = f" {STYLE_KO[style]} 스타일로" if style else ""
    return rng.choice(
        (
            f"{DINNER_KO[dinner]}{s}{q} 주문하고 싶어요",
            f"{DINNER_KO[dinner]}{q} 부탁드려요.{s and ' ' + s.strip() + ' 해주세요'}",
            f"{DINNER_KO[dinner].replace(' 디너', '')}{s}{q}로 할게요",
        )
    ).replace("  ", " ")


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


def _ask_missing(c: _Conversation) -> str:
    ask = {
        "dinnerType": "어떤 디너로 하시겠어요? 발렌타인, 프렌치, 잉글리시, 샴페인 축제 디너가 있습니다.",
        "servingStyle": "서빙 스타일은 심플, 그랜드, 디럭스 중 어떤 걸로 하시겠어요?",
        "quantity": "몇 개 준비해 드릴까요?",
        "deliveryDate": "배달 날짜와 시간을 알려주세요.",
        "deliveryTime": "몇 시에 배달해 드릴까요?",
        "deliveryAddress": "배달 받으실 주소를 알려주세요.",
    }
    missing = missing_fields(c.state)
    return " ".join(ask[f] for f in missing[:2] if not (f == "deliveryTime" and "deliveryDate" in missing[:2]))


def _fill_details(c: _Conversation, delivery: _Delivery, address: str, phone: str | None) -> None:
    """The customer gives date/time and address (sometimes in two turns), assistant tracks them."""
    if c.rng.random() < 0.5:
        c.user(f"{delivery.phrase}에 {ro(address)} 보내주세요.")
        c.state.update(deliveryDate=delivery.day.isoformat(), deliveryTime=delivery.at.strftime("%H:%M"), deliveryAddress=address)
    else:
        c.user(f"{delivery.phrase}에 받고 싶어요.")
        c.state.update(deliveryDate=delivery.day.isoformat(), deliveryTime=delivery.at.strftime("%H:%M"))
        c.assistant(f"{ro(spoken_date(delivery.day, delivery.at))} 기록했습니다. {_ask_missing(c)}")
        extra = f" 연락처는 {phone}입니다." if phone else ""
        c.user(f"주소는 {address}예요.{extra}")
        c.state["deliveryAddress"] = address


def _play(c: _Conversation, scenario: str, dinner: DinnerType, style: ServingStyle, qty: int) -> str:
    """Run one scenario; returns the session status."""
    rng = c.rng
    delivery, address = c.delivery(), c.address()
    phone = c.fake.phone_number() if rng.random() < 0.3 else None
    c.user(rng.choice(GREETINGS))
    c.state = {}
    c.assistant(f"안녕하세요, {c.name}님! 미스터 대박 디너 서비스입니다. 어떤 디너를 주문하시겠어요?")

    if scenario == "out_of_domain":
        c.user(rng.choice(OUT_OF_DOMAIN))
        c.assistant("죄송하지만 저는 미스터 대박 디너 주문만 도와드릴 수 있어요. 어떤 디너를 준비해 드릴까요?")
        if rng.random() < 0.3:
            c.user("아 그럼 됐어요.")
            c.assistant("알겠습니다. 필요하실 때 언제든 다시 불러 주세요.")
            return SessionStatus.ABANDONED.value
    if scenario == "unclear":
        c.user(rng.choice(UNCLEAR))
        c.assistant("말씀을 정확히 이해하지 못했어요. 발렌타인, 프렌치, 잉글리시, 샴페인 축제 디너 중 어떤 것을 원하시나요?")

    if scenario == "one_shot":
        c.user(f"{_dinner_phrase(dinner, style, qty, rng)}. {delivery.phrase}에 {ro(address)} 보내주세요.")
        c.state.update(
            dinnerType=dinner.value, servingStyle=style.value, quantity=qty,
            deliveryDate=delivery.day.isoformat(), deliveryTime=delivery.at.strftime("%H:%M"), deliveryAddress=address,
        )
    elif scenario == "champagne_simple":
        c.user(_dinner_phrase(DinnerType.CHAMPAGNE_FEAST, ServingStyle.SIMPLE, qty, rng))
        c.state.update(dinnerType=DinnerType.CHAMPAGNE_FEAST.value, quantity=qty)
        c.assistant("죄송합니다. 샴페인 축제 디너는 그랜드 또는 디럭스 스타일로만 제공됩니다. 어떤 스타일로 하시겠어요?")
        style = rng.choice((ServingStyle.GRAND, ServingStyle.DELUXE))
        c.user(f"그럼 {ro(STYLE_KO[style])} 할게요.")
        c.state["servingStyle"] = style.value
        c.assistant(f"{STYLE_KO[style]} 스타일로 준비하겠습니다. {_ask_missing(c)}")
        _fill_details(c, delivery, address, phone)
    else:
        first = dinner
        if scenario == "change_of_mind":
            first = rng.choice([d for d in DinnerType if d is not dinner and style in ALLOWED_STYLES[d]])
        c.user(_dinner_phrase(first, None, None, rng))
        c.state["dinnerType"] = first.value
        c.assistant(f"{DINNER_KO[first]}는 {ro(', '.join(DINNER_ITEMS[first]))} 구성됩니다. {_ask_missing(c)}")
        if scenario == "change_of_mind":
            c.user(f"아 잠깐만요, {ro(DINNER_KO[dinner])} 바꿀게요.")
            c.state["dinnerType"] = dinner.value
            c.assistant(f"네, {ro(DINNER_KO[dinner])} 변경했습니다. {_ask_missing(c)}")
        c.user(f"{STYLE_KO[style]} 스타일로 {qty}개요.")
        c.state.update(servingStyle=style.value, quantity=qty)
        if scenario == "assistant_mistake":  # mishears the quantity, is corrected: a DPO pair
            wrong = qty + rng.choice((1, 2))
            c.state["quantity"] = wrong
            c.assistant(f"{STYLE_KO[style]} 스타일 {wrong}개로 준비하겠습니다. {_ask_missing(c)}")
            c.user(f"아니요, {wrong}개가 아니라 {qty}개요.")
            c.state["quantity"] = qty
        if scenario == "abandoned":
            c.assistant(_ask_missing(c))
            return SessionStatus.ABANDONED.value
        c.assistant(f"{STYLE_KO[style]} 스타일 {qty}개로 준비하겠습니다. {_ask_missing(c)}")
        _fill_details(c, delivery, address, phone)

    c.assistant(_summary(c), ready=True)
    if scenario == "cancelled":
        c.user("음, 다시 생각해 볼게요. 취소해 주세요.")
        c.state = {}
        c.assistant("주문을 취소했습니다. 다음에 또 이용해 주세요.")
        return SessionStatus.CANCELLED.value
    c.user(rng.choice(CONFIRM))
    c.assistant("주문이 확정되었습니다. 감사합니다! 맛있는 식사 되세요.", ready=True)
    return SessionStatus.CONFIRMED.value


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
    scenario), so 500 sessions always cover every combination.
    """
    rng = random.Random(seed)
    fake = Faker("ko_KR")
    fake.seed_instance(seed)
    end = end_date or (datetime.now(SEOUL).date() - timedelta(days=1))
    first = end - timedelta(days=days - 1)
    combos = [(d, s) for d in DinnerType for s in ServingStyle]
    damage_kinds = [k for k in DAMAGE if allow_sqlite_only_damage or k not in SQLITE_ONLY]
    damage_w = [DAMAGE[k] for k in damage_kinds]
    summary = SeedSummary(first_day=first, last_day=end)
    session_rows: list[dict[str, Any]] = []
    message_rows: list[dict[str, Any]] = []
    deck: list[tuple[DinnerType, ServingStyle]] = []
    for _ in range(sessions):
        if not deck:
            deck = combos[:]
            rng.shuffle(deck)
        dinner, style = deck.pop()
        scenario = rng.choices(list(SCENARIOS), weights=list(SCENARIOS.values()))[0]
        if dinner is DinnerType.CHAMPAGNE_FEAST and style is ServingStyle.SIMPLE:
            scenario = "champagne_simple"
        elif scenario == "champagne_simple":
            scenario = "multi_turn"
        day = first + timedelta(days=rng.randrange(days))
        created = datetime.combine(day, time(9)) + timedelta(seconds=rng.randint(0, 13 * 3600))
        sid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        name = fake.name()
        conv = _Conversation(rng, fake, created, name)
        status = _play(conv, scenario, dinner, style, rng.choice((1, 1, 1, 2, 2, 3, 4)))
        rows = conv.rows
        summary.scenarios[scenario] += 1
        summary.combos[(dinner.value, style.value)] += 1
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
    """Create the schema if needed and append `sessions` generated conversations to the DB."""
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
