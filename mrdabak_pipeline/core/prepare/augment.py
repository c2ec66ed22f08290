"""K variants per cleaned session: other customer name, other delivery date/time, other address.

A variant must stay a correct training example, so every change is made consistently in the user
text, the assistant text and the order_state: the delivery date and time are moved by a mapping
(old value -> new value) and every Korean date/time expression that resolves to an old value is
re-written for the new one (내일 저녁 7시, 모레 점심, 내일모레 정오, 12월 24일 오후 6시 반, 12/24,
2026년 12월 31일, 다음 주 금요일, 토요일 밤 아홉 시, 19시 30분, 19:00, the assistant's
"3월 2일(일) 19:30" read-back). Relative expressions are resolved against the session's creation
day — the conversation's "now", which the model sees — as the customer meant them. A variant also
moves that "now" by whole days (up to a year either way; the clock time stays) and re-says every
moved date from its new day (내일 becomes 모레, or "3월 5일" where no relative word fits), so
text, order_state and now agree. Why move it: logs span the few days before a run, and a model
that only ever saw those days memorizes their dates instead of counting from the now it is given.
`datetime_mentions` is the same resolver, public so tests (and checks) can prove that order_state
still matches the text of every variant.

Deterministic for a seed: each (seed, source session, variant) has its own RNG. Pure Python.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable
from datetime import date, timedelta
from typing import Any, NamedTuple

from mrdabak_pipeline.core.domain import Session, Turn
from mrdabak_pipeline.core.prepare.pii import FakePools, fake_pools, given_name_pattern, random_address
from mrdabak_pipeline.core.runtime.bulk import paused_gc

KO_WEEKDAYS = "월화수목금토일"
#: Delivery slots a variant may move an order to (the service delivers lunch and dinner).
TIME_SLOTS: tuple[str, ...] = tuple(f"{h:02d}:{m:02d}" for h in range(11, 22) for m in (0, 30))
#: How far after the conversation day a variant's delivery may fall.
MAX_OFFSET_DAYS = 9
#: How far (days, either way) a variant's conversation day may move from its source's.
MAX_NOW_SHIFT_DAYS = 366

#: Native Korean hour words (한 시 … 열두 시), longest first so 열한 is not read as 열.
KO_HOURS: dict[str, int] = {
    "열두": 12, "열한": 11, "열": 10, "한": 1, "두": 2, "세": 3, "네": 4,
    "다섯": 5, "여섯": 6, "일곱": 7, "여덟": 8, "아홉": 9,
}
_PERIOD = r"오전|오후|저녁|밤|낮|아침|점심"
_DATETIME = re.compile(
    # every alternative starts with one of these: 4x faster on long text
    r"(?=[오내모글다이0-9저밤낮아점정월화수목금토일한두세네열여])"
    r"(?:(?P<rel>내일 ?모레|오늘|내일|모레|글피)"
    r"|(?P<week>(?P<wk>다다음 ?주|다음 ?주|이번 ?주) ?(?P<wd>[월화수목금토일])요일)"
    r"|(?P<ymd>(?<!\d)(?P<yy>20\d\d)년 ?(?P<ym>1[0-2]|0?[1-9])월 ?(?P<yd>3[01]|[12]\d|0?[1-9])일)"
    r"|(?P<md>(?<!\d)(?P<m>1[0-2]|0?[1-9])월 ?(?P<d>3[01]|[12]\d|0?[1-9])일(?P<paren>\([월화수목금토일]\))?)"
    r"|(?P<sl>(?<![\d/])(?P<sm>1[0-2]|0?[1-9])/(?P<sd>3[01]|[12]\d|0?[1-9])(?![\d/]))"
    r"|(?P<iso>(?<!\d)\d{4}-\d{2}-\d{2}(?!\d))"
    r"|(?P<hm>(?<![\d:])(?P<hh>2[0-3]|[01]?\d):(?P<mm>[0-5]\d)(?![\d:]))"
    rf"|(?P<kt>(?:(?P<period>{_PERIOD}) ?)?(?<!\d)(?P<h>2[0-4]|1\d|0?[1-9])시(?!간)"
    r"(?: ?(?P<half>반)| ?(?P<min>[0-5]?\d)분)?)"
    rf"|(?P<kw>(?:(?P<kwp>{_PERIOD}) ?|(?<![가-힣]))(?P<kwh>{'|'.join(KO_HOURS)}) ?시"
    r"(?=[에로요쯤반까경정이입으도는엔]|[^가-힣]|$)(?: ?(?P<kwhalf>반)| ?(?P<kwmin>[0-5]?\d)분)?)"
    r"|(?P<bare>(?<![가-힣])(?P<bwd>[월화수목금토일])요일)"
    r"|(?P<noon>정오)"
    r"|(?P<lunch>점심))"
)
_HINT = re.compile(r"[0-9]|오늘|내일|모레|글피|요일|점심|정오|[한두세네섯곱덟홉열] ?시")
_REL_WORDS = ("오늘", "내일", "모레", "글피")
_REL_OFFSETS = {"오늘": 0, "내일": 1, "모레": 2, "내일모레": 2, "글피": 3}
_WEEK_WORDS = {"이번주": 0, "다음주": 1, "다다음주": 2}


class Mention(NamedTuple):
    """A date or time expression found in text: its span, kind/style and resolved value.

    A named tuple, not a dataclass: millions are made, and a tuple is built several times faster.
    """

    start: int
    end: int
    kind: str  # "date" | "time"
    style: str  # rel | week | bare | md | sl | ymd | iso (dates); hm | kt | kw | noon | lunch (times)
    value: str  # YYYY-MM-DD or HH:MM
    paren: bool = False  # "3월 2일(일)": the weekday in parentheses


def _resolve(m: re.Match[str], anchor: date | None) -> Mention | None:
    style = m.lastgroup  # the outermost named group that matched: which alternative it is
    key = (style, m.group(), anchor)  # the same words on the same day mean the same thing
    meaning = _MEANINGS.get(key, _UNKNOWN)
    if meaning is _UNKNOWN:
        meaning = _meaning(m, style, anchor)
        if len(_MEANINGS) >= _MEANINGS_SIZE:
            _MEANINGS.clear()
        _MEANINGS[key] = meaning
    return None if meaning is None else Mention(m.start(), m.end(), *meaning[2:])


_UNKNOWN: Any = object()
_MEANINGS: dict[tuple[str | None, str, date | None], Mention | None] = {}
_MEANINGS_SIZE = 100_000


def _month_day(month: int, day: int, anchor: date | None) -> date:
    """M월 D일 said without a year: this year's, or next year's when that is more than half a
    year ago (in December, "1월 3일" is next January)."""
    year = anchor.year if anchor else 2000
    d = date(year, month, day)
    if anchor and d < anchor - timedelta(days=180):
        d = date(year + 1, d.month, d.day)
    return d


def _clock(h: int, minute: int, period: str | None) -> Mention | None:
    """A spoken hour with its period as a 24h time. Without a period, 1-10 o'clock means PM: the
    service delivers lunch and dinner (11:00-21:30), nobody orders a dinner for 7 in the morning."""
    if period in ("오전", "아침"):
        h = 0 if h == 12 else h
    elif period in ("오후", "저녁", "밤", "낮", "점심") or 1 <= h <= 10:
        h = h + 12 if h < 12 else h
    if h >= 24:
        return None
    return Mention(0, 0, "time", "", f"{h:02d}:{minute:02d}")


def _meaning(m: re.Match[str], style: str | None, anchor: date | None) -> Mention | None:
    """What match `m` of alternative `style` means (its span is the whole text).

    Relative words count from `anchor`, the conversation's first day (its "now"): 이번 주 is the
    Monday-Sunday week holding it, 다음 주 the week after, a bare 토요일 the next one after today.
    """
    group = m.group
    try:
        if style == "rel":
            if anchor is None:
                return None
            d = anchor + timedelta(days=_REL_OFFSETS[group("rel").replace(" ", "")])
            return Mention(0, 0, "date", "rel", d.isoformat())
        if style == "week":
            if anchor is None:
                return None
            monday = anchor - timedelta(days=anchor.weekday())
            d = monday + timedelta(days=7 * _WEEK_WORDS[group("wk").replace(" ", "")] + KO_WEEKDAYS.index(group("wd")))
            return Mention(0, 0, "date", "week", d.isoformat())
        if style == "bare":
            if anchor is None:
                return None
            ahead = (KO_WEEKDAYS.index(group("bwd")) - anchor.weekday() - 1) % 7 + 1  # 1..7 days ahead
            return Mention(0, 0, "date", "bare", (anchor + timedelta(days=ahead)).isoformat())
        if style == "md":
            d = _month_day(int(group("m")), int(group("d")), anchor)
            return Mention(0, 0, "date", "md", d.isoformat(), bool(group("paren")))
        if style == "sl":
            return Mention(0, 0, "date", "sl", _month_day(int(group("sm")), int(group("sd")), anchor).isoformat())
        if style == "ymd":
            return Mention(0, 0, "date", "ymd", date(int(group("yy")), int(group("ym")), int(group("yd"))).isoformat())
        if style == "iso":
            return Mention(0, 0, "date", "iso", date.fromisoformat(group("iso")).isoformat())
        if style == "hm":
            return Mention(0, 0, "time", "hm", f"{int(group('hh')):02d}:{group('mm')}")
        if style == "kt":
            at = _clock(int(group("h")), 30 if group("half") else int(group("min") or 0), group("period"))
            return at and at._replace(style="kt")
        if style == "kw":
            at = _clock(KO_HOURS[group("kwh")], 30 if group("kwhalf") else int(group("kwmin") or 0), group("kwp"))
            return at and at._replace(style="kw")
        if style in ("noon", "lunch"):
            return Mention(0, 0, "time", style, "12:00")
    except ValueError:  # 2월 30일 and the like: not a date
        return None
    return None


def datetime_mentions(text: str, anchor: date | None) -> list[Mention]:
    """Every date/time expression of `text` with the value it means, relative to `anchor`."""
    if not _HINT.search(text):
        return []
    return [x for m in _DATETIME.finditer(text) if (x := _resolve(m, anchor)) is not None]


def anchor_date(session: Session) -> date | None:
    """The day relative expressions (내일, 다음 주 금요일) count from: when the session began."""
    if session.created_at is not None:
        return session.created_at.date()
    return next((t.created_at.date() for t in session.turns if t.created_at is not None), None)


def state_mismatches(session: Session, mentions: _MentionCache | None = None) -> list[str]:
    """Date/time mentions that match no deliveryDate/deliveryTime of the session's order states.

    Empty for a consistent session: what the text says is what order_state holds. `mentions`
    memoizes `datetime_mentions` per (text, day), e.g. shared with `augment_sessions`, whose
    variants repeat most of their source's texts.
    """
    dates = {t.order_state["deliveryDate"] for t in session.turns if t.order_state and "deliveryDate" in t.order_state}
    times = {t.order_state["deliveryTime"] for t in session.turns if t.order_state and "deliveryTime" in t.order_state}
    anchor = anchor_date(session)
    cache = mentions if mentions is not None else {}
    out = []
    for i, t in enumerate(session.turns):
        for x in _cached_mentions(t.content, anchor, cache):
            if x.value not in (dates if x.kind == "date" else times):
                out.append(f"turn {i}: {t.content[x.start:x.end]!r} means {x.value}, not in order_state")
    addresses = {t.order_state["deliveryAddress"] for t in session.turns if t.order_state and "deliveryAddress" in t.order_state}
    for a in addresses:
        if not any(a in t.content for t in session.turns):
            out.append(f"deliveryAddress {a!r} is said in no turn")
    greets_by_name = any(t.role == "assistant" and "님" in t.content for t in session.turns[:2])
    if session.customer_name and greets_by_name and not any(session.customer_name in t.content for t in session.turns):
        out.append(f"customer_name {session.customer_name!r} is used in no turn")
    return out


# --- Rendering --------------------------------------------------------------------------------


def render_date(d: date, style: str, anchor: date | None, paren: bool = False) -> str:
    """`d` as a Korean expression in `style` that `datetime_mentions` resolves back to `d` from
    `anchor`; where the style cannot say it (내일 for a date next month), "M월 D일" (with the
    year when the month and day alone would mean another year)."""
    if anchor is not None:
        offset = (d - anchor).days
        if style == "rel" and 0 <= offset <= 2:
            return _REL_WORDS[offset]
        if style == "bare" and 1 <= offset <= 6:
            return f"{KO_WEEKDAYS[d.weekday()]}요일"
        week = (d - (anchor - timedelta(days=anchor.weekday()))).days // 7
        if style in ("week", "bare") and offset >= 0 and week in (0, 1):
            return f"{'이번 주' if week == 0 else '다음 주'} {KO_WEEKDAYS[d.weekday()]}요일"
    if style == "iso":
        return d.isoformat()
    if style == "ymd" or (anchor is not None and _month_day(d.month, d.day, anchor) != d):
        return f"{d.year}년 {d.month}월 {d.day}일"
    if style == "sl":
        return f"{d.month}/{d.day}"
    return f"{d.month}월 {d.day}일" + (f"({KO_WEEKDAYS[d.weekday()]})" if paren else "")


#: 1 -> "한", …, 12 -> "열두": how an hour is said with native numbers (한 시, 일곱 시 반).
HOUR_WORDS: dict[int, str] = {v: k for k, v in KO_HOURS.items()}
#: The styles a customer may say a date / a time in (`render_date` / `render_time`).
USER_DATE_STYLES: tuple[str, ...] = ("rel", "week", "bare", "md", "sl", "ymd", "iso")
USER_TIME_STYLES: tuple[str, ...] = ("hm", "kt", "kw", "h24", "noon", "lunch")


def render_time(hhmm: str, style: str, rng: random.Random | None = None) -> str:
    """"19:30" as 19:30 (hm), 저녁 7시 반 / 오후 7시 30분 (kt), 저녁 일곱 시 반 (kw), 19시 30분
    (h24), 정오 (noon) or 점심 (lunch); the last two only for 12:00, else kt."""
    h, m = int(hhmm[:2]), int(hhmm[3:])
    if style == "hm":
        return hhmm
    if (h, m) == (12, 0) and style in ("lunch", "noon"):
        return "점심" if style == "lunch" else "정오"
    half = m == 30 and (rng is None or rng.random() < 0.7)
    tail = "" if m == 0 else (" 반" if half else f" {m}분")
    if style == "h24" and h >= 13:
        return f"{h}시{tail}"
    if h < 12:
        period, h12 = "오전", h
    elif h == 12:
        period, h12 = "낮", 12
    else:
        h12 = h - 12
        evening = h >= 18 and (rng is None or rng.random() < 0.6)
        period = ("밤" if h >= 21 and (rng is None or rng.random() < 0.5) else "저녁") if evening else "오후"
    if style == "kw" and m in (0, 30):
        return f"{period} {HOUR_WORDS[h12]} 시{' 반' if m == 30 else ''}"
    return f"{period} {h12}시{tail}"


# --- Variants ---------------------------------------------------------------------------------


class _Variant:
    """The value mappings of one variant and the rewriting of text and states with them."""

    def __init__(self, session: Session, rng: random.Random, pools: FakePools, mentions: _MentionCache | None = None) -> None:
        self.rng, self.anchor = rng, anchor_date(session)
        self.mentions: _MentionCache = mentions if mentions is not None else {}
        states = [t.order_state for t in session.turns if t.order_state]
        self.names: list[tuple[str, str]] = []
        self.given: list[tuple[str, str]] = []
        if session.customer_name:
            new = rng.choice([n for n in rng.sample(pools.names, 4) if n != session.customer_name] or [session.customer_name])
            self.names.append((session.customer_name, new))
            if len(session.customer_name) == 3 and len(new) == 3:
                self.given.append((session.customer_name[1:], new[1:]))
        self.addresses = {a: random_address(rng, pools) for a in dict.fromkeys(s["deliveryAddress"] for s in states if s.get("deliveryAddress"))}
        old_times = sorted({s["deliveryTime"] for s in states if s.get("deliveryTime")})
        self.times = dict(zip(old_times, rng.sample(TIME_SLOTS, len(old_times)), strict=True)) if len(old_times) <= len(TIME_SLOTS) else {}
        # The conversation happens on another day (`shift`, the clock time stays) and the dates
        # move with it: every date mentioned is resolved from the source's day and re-rendered for
        # its new date from the new day (내일 -> 모레, or "3월 5일" where no relative word fits),
        # so text, state and now agree.
        self.shift = timedelta(days=rng.randint(-MAX_NOW_SHIFT_DAYS, MAX_NOW_SHIFT_DAYS) if self.anchor is not None else 0)
        self.new_anchor = self.anchor + self.shift if self.anchor is not None else None
        old_dates = sorted({s["deliveryDate"] for s in states if s.get("deliveryDate")})
        self.dates: dict[str, str] = {}
        if old_dates and self.new_anchor is not None:
            first = date.fromisoformat(old_dates[0])
            earliest = min(self.times.values(), default="23:59")
            # no delivery earlier today than an hour from now
            soonest = 1 if session.created_at is not None and (session.created_at + timedelta(hours=1)).strftime("%H:%M") > earliest else 0
            delta = timedelta(days=rng.randint(soonest, MAX_OFFSET_DAYS)) + (self.new_anchor - first)
            self.dates = {d: (date.fromisoformat(d) + delta).isoformat() for d in old_dates}
        # how the customer says dates and times in this variant
        self.user_date_style = rng.choice(("rel", "rel", "week", "bare", "md", "md", "ymd", "sl"))
        self.user_time_style = rng.choice(("kt", "kt", "hm", "kw", "h24", "lunch", "noon"))

    def _datetime(self, text: str, role: str) -> str:
        mentions = _cached_mentions(text, self.anchor, self.mentions)
        return self._render(text, mentions, role) if mentions else text

    def _render(self, text: str, mentions: tuple[Mention, ...], role: str) -> str:
        parts, pos = [], 0
        for x in mentions:
            new = self.dates.get(x.value) if x.kind == "date" else self.times.get(x.value)
            if new is None:
                continue
            if x.kind == "date":
                style = self.user_date_style if role == "user" and x.style in USER_DATE_STYLES else x.style
                rendered = render_date(date.fromisoformat(new), style, self.new_anchor, x.paren)
            else:
                style = self.user_time_style if role == "user" and x.style in USER_TIME_STYLES else x.style
                rendered = render_time(new, style, self.rng)
            parts += [text[pos : x.start], rendered]
            pos = x.end
        return "".join(parts) + text[pos:]

    def text(self, text: str, role: str) -> str:
        for old, new in self.addresses.items():
            text = text.replace(old, new)
        for old, new in self.names:
            text = text.replace(old, new)
        for old, new in self.given:
            if old in text:
                text = given_name_pattern(old).sub(new, text)
        return self._datetime(text, role)

    def state(self, state: dict[str, Any] | None) -> dict[str, Any] | None:
        """The state with address, date and time mapped; the same dict when none of them changes
        (states are read-only values, shared like `clean_partition` shares them)."""
        if not state:
            return state
        changes = {}
        for key, mapping in (("deliveryAddress", self.addresses), ("deliveryDate", self.dates), ("deliveryTime", self.times)):
            if key in state:
                old = state[key]
                new = mapping.get(old, old)
                if new is not old:
                    changes[key] = new
        if not changes:
            return state
        out = dict(state)
        out.update(changes)
        return out


#: Resolved mentions per (text, anchor day): the same sentence on the same day resolves the same
#: way in every session and variant. Bounded so a huge partition cannot grow it without limit.
_MentionCache = dict[tuple[str, date | None], tuple[Mention, ...]]
_MENTION_CACHE_SIZE = 200_000


def _cached_mentions(text: str, anchor: date | None, cache: _MentionCache) -> tuple[Mention, ...]:
    key = (text, anchor)
    found = cache.get(key)
    if found is None:
        found = tuple(datetime_mentions(text, anchor))
        if len(cache) >= _MENTION_CACHE_SIZE:
            cache.clear()
        cache[key] = found
    return found


def make_variant(session: Session, index: int, rng: random.Random, pools: FakePools | None = None) -> Session:
    """Variant `index` of `session`: new name, address, conversation day and delivery date/time, said consistently."""
    return _make_variant(session, index, rng, pools or fake_pools(), {})


def _make_variant(session: Session, index: int, rng: random.Random, pools: FakePools, mentions: _MentionCache) -> Session:
    v = _Variant(session, rng, pools, mentions)
    replacements = [*v.addresses.items(), *v.names]
    given, anchor, cache = v.given, v.anchor, v.mentions
    turns = []
    for t in session.turns:  # _Variant.text and .state, inlined: this loop runs for every turn
        content = t.content
        for old, new in replacements:
            content = content.replace(old, new)
        for old, new in given:
            if old in content:
                content = given_name_pattern(old).sub(new, content)
        found = cache.get((content, anchor))
        if found is None:
            content = v._datetime(content, t.role)
        elif found:
            content = v._render(content, found, t.role)
        state = v.state(t.order_state)
        moved = t.created_at + v.shift if t.created_at is not None else None
        if state is t.order_state and content == t.content and moved == t.created_at:
            turns.append(t)  # nothing to change: the (immutable) turn itself
        else:
            turns.append(Turn(t.role, content, state, moved, t.message_id))
    src = session.source_session_id or session.session_id
    return Session(
        session_id=f"{src}#v{index}",
        turns=turns,
        customer_name=v.names[0][1] if v.names else session.customer_name,
        status=session.status,
        created_at=session.created_at + v.shift if session.created_at is not None else None,
        source_session_id=src,
        variant=index,
        partition_date=session.partition_date,
        tags=list(session.tags),
    )


def _duplicate(a: Session, b: Session) -> bool:
    """Exact duplicates: same customer name and the same (role, text, repr(order_state)) turn by
    turn. Compared pairwise with an early exit instead of fingerprinting every variant."""
    if a.customer_name != b.customer_name or len(a.turns) != len(b.turns):
        return False
    for x, y in zip(a.turns, b.turns, strict=True):
        if x is y:
            continue
        if x.role != y.role or x.content != y.content:
            return False
        if x.order_state is not y.order_state and repr(x.order_state) != repr(y.order_state):
            return False
    return True


def augment_sessions(sessions: Iterable[Session], k: int = 3, seed: int = 0, mentions: _MentionCache | None = None) -> list[Session]:
    """Each session (variant 0, unchanged) followed by up to `k` variants, exact duplicates dropped.

    A variant's id is ``f"{source_session_id}#v{i}"`` and it keeps ``source_session_id`` for
    lineage (and so that a train/test split by source never leaks a variant across).
    `mentions` (see `state_mismatches`) lets a caller that checks the variants reuse the texts
    already resolved.
    """
    pools = fake_pools()
    mentions = mentions if mentions is not None else {}
    out: list[Session] = []
    with paused_gc():
        for s in sessions:
            src = s.source_session_id or s.session_id
            original = Session(
                session_id=s.session_id,
                turns=s.turns,
                customer_name=s.customer_name,
                status=s.status,
                created_at=s.created_at,
                source_session_id=src,
                variant=0,
                partition_date=s.partition_date,
                tags=list(s.tags),
            )
            out.append(original)
            kept = [original]
            for i in range(1, k + 1):
                variant = _make_variant(original, i, random.Random(f"{seed}:{src}:{i}"), pools, mentions)
                if not any(_duplicate(variant, other) for other in kept):
                    kept.append(variant)
                    out.append(variant)
    return out
