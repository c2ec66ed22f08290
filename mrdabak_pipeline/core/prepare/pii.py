"""PII detection and consistent pseudonymization, before any text can leave for a cloud API.

Two kinds of PII are treated differently:

- Structured identifiers (phone numbers, e-mail addresses, card numbers, resident registration
  numbers) are replaced by a typed placeholder (``[전화번호]``, …). A placeholder can never look
  like the real thing, so `scan_text` can prove afterwards that none is left.
- Customer names and delivery addresses are replaced by realistic Faker ``ko_KR`` values, the
  same real value -> the same fake value everywhere in a session (user text, assistant text,
  order_state, the session's customer_name), so conversations stay coherent for training.

The fake value is drawn from a session-seeded RNG, independent of the real value: it carries no
information about it, the output is deterministic for a (salt, session_id), and the mapping only
lives in memory while one session is processed. Faker runs once per process to fill pools; no
per-message Faker call.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import lru_cache

import phonenumbers
from faker import Faker

from mrdabak_pipeline.core.domain import Session, Turn
from mrdabak_pipeline.core.runtime.bulk import paused_gc

PLACEHOLDERS: dict[str, str] = {
    "rrn": "[주민등록번호]",
    "card": "[카드번호]",
    "phone": "[전화번호]",
    "email": "[이메일]",
}

_SEP = r"[ .\-]?"
#: Structured identifiers, in priority order (an RRN is tried before a card, a card before a phone).
PII_PATTERN = re.compile(
    rf"""
    (?=[0-9+(A-Za-z._%\-])  # every alternative starts with one of these (hot path: skip Hangul fast)
    (?:(?P<rrn>(?<!\d)\d{{2}}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])\s?-?\s?[1-8]\d{{6}}(?!\d))
    |(?P<card>(?<!\d)(?:\d{{4}}(?P<cardsep>[ \-]?)\d{{4}}(?P=cardsep)\d{{4}}(?P=cardsep)\d{{4}}|\d{{4}}[ \-]?\d{{6}}[ \-]?\d{{5}})(?!\d))
    |(?P<phone>
        (?:\+\s?82[ .\-]*(?:\(0\)[ .\-]*|0)?|(?<![\d+])0)
        (?:1[016789]|2|[3-6][1-5]|70|50\d?)
        (?:{_SEP}|\)\s?)\d{{3,4}}{_SEP}\d{{4}}(?!\d)
      |(?<!\d)\(0(?:2|[3-6][1-5]|1[016789]|70)\)\s?\d{{3,4}}{_SEP}\d{{4}}(?!\d)
    )
    |(?P<email>[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{{2,}}))
    """,
    re.VERBOSE,
)

#: The most common Korean surnames (single and double), for the name-in-text heuristic.
SURNAMES = frozenset(
    ["김", "이", "박", "최", "정", "강", "조", "윤", "장", "임", "한", "오", "서", "신", "권", "황", "안", "송", "류", "유", "전", "홍", "고", "문", "양", "손", "배", "백", "허", "남", "심", "노", "하", "곽", "성", "차", "주", "우", "구", "민", "진", "나", "지", "엄", "채", "원", "천", "방", "공", "현", "함", "변", "염", "여", "추", "도", "소", "석", "선", "설", "마", "길", "연", "위", "표", "명", "기", "반", "왕", "금", "옥", "육", "인", "맹", "제", "모", "탁", "국", "어", "은", "편", "용", "예", "경", "봉", "사", "부"]
)
#: Three-syllable words that precede 님/씨 but are roles, not names.
NOT_NAMES = frozenset(
    {"배달원", "배송원", "주문자", "신청자", "구매자", "예약자", "가입자", "사용자", "상담원", "관리자", "담당자", "수령인", "고객님"}
)
#: A full Korean name (surname + given name, 3 syllables) in a name context: before 님/씨/고객님,
#: or after 이름은/성함은.
_NAME_IN_TEXT = re.compile(
    r"(?P<pre>(?:이름은|성함은)\s?)(?P<n1>[가-힣]{3})(?=입니다|이에요|예요|이고|이요|[\s,.!?]|$)"
    r"|(?<![가-힣])(?P<n2>[가-힣]{3})(?=\s?(?:고객)?(?:님|씨))"
)
_SIDO = (
    r"(?:서울|부산|대구|인천|광주|대전|울산|세종|경기|강원|충북|충남|전북|전남|경북|경남|제주|충청북|충청남|전라북|전라남|경상북|경상남)"
    r"(?:특별시|광역시|특별자치시|특별자치도|도|시)?"
)
#: An address said in text: [시·도] 시·군·구 (구) road/town number [-number] [building 동 호].
_ADDRESS_IN_TEXT = re.compile(
    rf"(?:{_SIDO}\s)?(?<![가-힣])[가-힣]{{1,5}}(?:시|군|구)(?:\s[가-힣]{{1,5}}(?:구|시))?"
    rf"\s[가-힣0-9]{{1,12}}(?:로|길|가|거리|동|리|읍|면|마을)\s?(?:지하)?\d{{1,4}}(?:-\d{{1,4}})?"
    rf"(?!\d|개|인분|명)(?:\s[가-힣A-Za-z0-9]{{1,12}}\s\d{{1,4}}동\s\d{{1,5}}호)?"
)


# --- Fake value pools (Faker once per process) ------------------------------------------------


#: Official 시·도 name -> how people write it day to day (first: the shortest).
SIDO_SHORT: dict[str, tuple[str, ...]] = {
    "서울특별시": ("서울", "서울시"), "부산광역시": ("부산", "부산시"), "대구광역시": ("대구", "대구시"),
    "인천광역시": ("인천", "인천시"), "광주광역시": ("광주", "광주시"), "대전광역시": ("대전", "대전시"),
    "울산광역시": ("울산", "울산시"), "세종특별자치시": ("세종", "세종시"), "경기도": ("경기",),
    "강원특별자치도": ("강원", "강원도"), "충청북도": ("충북",), "충청남도": ("충남",),
    "전북특별자치도": ("전북", "전라북도"), "전라남도": ("전남",), "경상북도": ("경북",), "경상남도": ("경남",),
    "제주특별자치도": ("제주", "제주도"),
}


@dataclass(frozen=True)
class AddressParts:
    """Components of a Korean address; `render` writes them in one of several formats."""

    sido: str
    sigungu: str
    road: str  # "테헤란로 123"
    town: str  # "역삼동"
    land_number: str  # "123-45"
    building: str
    dong: int
    ho: int

    def render(self, road: bool = True, with_sido: bool = True, apartment: bool = False, short_sido: int = 0) -> str:
        """도로명/지번, with/without 시·도, with/without 아파트 동·호수. `short_sido` picks how the
        시·도 is said: 0 its official name (서울특별시), 1 the everyday short one (서울), 2 the
        second everyday one where there is one (서울시, 강원도), else the short one: customers say
        all three, and the order state keeps the address as said."""
        short = SIDO_SHORT.get(self.sido, ())
        sido = short[min(short_sido, len(short)) - 1] if short_sido and short else self.sido
        parts = [sido] if with_sido else []
        parts.append(self.sigungu)
        parts.append(self.road if road else f"{self.town} {self.land_number}")
        if apartment:
            parts.append(f"{self.building} {self.dong}동 {self.ho}호")
        return " ".join(parts)


@dataclass(frozen=True)
class FakePools:
    names: tuple[str, ...]
    addresses: tuple[AddressParts, ...]


@lru_cache(maxsize=4)
def fake_pools(seed: int = 20240521, size: int = 600) -> FakePools:
    """Deterministic pools of ko_KR names and address parts, built once (Faker is slow per call)."""
    fake = Faker("ko_KR")
    fake.seed_instance(seed)
    rng = random.Random(seed)
    names = tuple(dict.fromkeys(fake.name() for _ in range(size)))
    sido = [fake.metropolitan_city() if rng.random() < 0.5 else fake.province() for _ in range(size)]
    addresses = tuple(
        AddressParts(
            sido=sido[i],
            sigungu=fake.borough() if sido[i].endswith("시") else fake.city(),
            road=fake.road(),
            town=f"{fake.first_name()[:1]}{rng.choice('산천곡포암정원')}동",
            land_number=f"{rng.randint(1, 999)}-{rng.randint(1, 99)}" if rng.random() < 0.7 else str(rng.randint(1, 999)),
            building=f"{fake.last_name()}{rng.choice(('아파트', '빌라', '타운', '맨션', '하이츠'))}",
            dong=rng.randint(101, 120),
            ho=rng.randint(1, 25) * 100 + rng.randint(1, 4),
        )
        for i in range(size)
    )
    return FakePools(names=names, addresses=addresses)


def random_address(rng: random.Random, pools: FakePools | None = None) -> str:
    """A fake address in a random format (도로명/지번, ±시·도 official or short, ±동·호수)."""
    parts = rng.choice((pools or fake_pools()).addresses)
    return parts.render(road=rng.random() < 0.6, with_sido=rng.random() < 0.7, apartment=rng.random() < 0.4,
                        short_sido=rng.choice((0, 0, 1, 1, 2)))


# --- Detection --------------------------------------------------------------------------------


#: What any `PII_PATTERN` match contains (Unicode digits, as ``\\d`` in the pattern, or an @).
_LEAK_HINT = re.compile(r"[\d@]")


def scan_text(text: str) -> Iterator[tuple[str, str]]:
    """(kind, matched text) for every structured identifier left in `text`."""
    for m in PII_PATTERN.finditer(text):
        kind = next((k for k in PLACEHOLDERS if m.group(k) is not None), "unknown")
        yield kind, m.group(0)


# --- The independent oracle -------------------------------------------------------------------
#
# `PII_PATTERN` decides what the pseudonymizer replaces; proving the output clean with the same
# pattern would only prove that the pattern agrees with itself. The audit below shares no rule
# with it: Google's libphonenumber (the `phonenumbers` port) finds phone numbers however they are
# written, a digit-run rule finds any long number (cards, resident registration numbers, phones
# with odd separators, account numbers), and a loose e-mail shape finds addresses whatever their
# characters. It is deliberately broader than the replacer: whatever it finds in pseudonymized
# output is a miss of the replacer, and the `no_pii` check stops the table.

#: Digits joined by up to three separator characters (space, - . / ( ) _), seven digits or more: one
#: written number long enough to matter (shorter runs are quantities, prices, house numbers).
_DIGIT_RUN = re.compile(r"\d(?:[\s\-./()_]{0,3}\d){6,}")
#: ISO dates and clock times are not identifiers; they are blanked before digit runs are counted.
_DATE_OR_TIME = re.compile(r"(?<!\d)\d{4}-\d{2}-\d{2}(?!\d)|(?<!\d)\d{1,2}:\d{2}(?::\d{2})?(?!\d)")
#: A number this long is an identifier of some kind (the shortest Korean phone number, 02-123-4567,
#: has 9 digits; an RRN 13, a card 15-16), never a quantity, price, date or address number.
MIN_IDENTIFIER_DIGITS = 9
#: Something@something.tld, any characters but whitespace and @ (Hangul local parts included).
_EMAIL_LIKE = re.compile(r"[^\s@]+@[^\s@]+\.[^\s@.]{2,}")
#: Business numbers (1588-xxxx, 080 toll-free, …) belong to companies, not to customers.
_NOT_PERSONAL = frozenset(
    {
        phonenumbers.PhoneNumberType.UAN,
        phonenumbers.PhoneNumberType.TOLL_FREE,
        phonenumbers.PhoneNumberType.PREMIUM_RATE,
        phonenumbers.PhoneNumberType.SHARED_COST,
    }
)


def audit_text(text: str) -> list[tuple[str, str]]:
    """(kind, matched text) for every identifier the independent oracle finds in `text`.

    Kinds: ``phone_number`` (a valid personal number per libphonenumber, Korean by default,
    international with a +), ``long_digit_run`` (≥ `MIN_IDENTIFIER_DIGITS` digits written as one
    number, ISO dates and times aside), ``email_like``. Shares no pattern with `PII_PATTERN` on
    purpose (see above). libphonenumber costs ~30 µs a text, so it only runs where a run of seven
    digits or more remains once dates and times are blanked.
    """
    hits: list[tuple[str, str]] = []
    if "@" in text:
        hits += [("email_like", m.group(0)) for m in _EMAIL_LIKE.finditer(text)]
    if _DIGIT_RUN.search(text) is None:  # hot path: most texts hold no long number at all
        return hits
    runs = [m.group(0) for m in _DIGIT_RUN.finditer(_DATE_OR_TIME.sub(" ", text))]
    hits += [("long_digit_run", r) for r in runs if sum(c.isdigit() for c in r) >= MIN_IDENTIFIER_DIGITS]
    if runs:
        for match in phonenumbers.PhoneNumberMatcher(text, "KR", leniency=phonenumbers.Leniency.VALID):
            if phonenumbers.number_type(match.number) not in _NOT_PERSONAL:
                hits.append(("phone_number", match.raw_string))
    return hits


def known_values(session: Session) -> list[str]:
    """The session's own real name and delivery addresses: what must not survive pseudonymization."""
    values = [session.customer_name] if session.customer_name and len(session.customer_name) >= 2 else []
    values += [t.order_state["deliveryAddress"] for t in session.turns if t.order_state and t.order_state.get("deliveryAddress")]
    return list(dict.fromkeys(values))


def session_leaks(session: Session, forbidden: Iterable[str], scanned: dict[str, list[tuple[str, str]]] | None = None) -> list[tuple[str, str]]:
    """Structured PII, the independent oracle's hits and the session's `forbidden` real values in its output.

    `scanned` memoizes the structured scan per text across the sessions of a chunk (templated
    assistant texts recur in every session); the forbidden values are the session's own.
    """
    hits: list[tuple[str, str]] = []
    forbidden = [v for v in forbidden if v]
    memo = scanned if scanned is not None else {}
    texts = [t.content for t in session.turns] + [session.customer_name or ""]
    texts += [t.order_state.get("deliveryAddress", "") for t in session.turns if t.order_state]
    for text in dict.fromkeys(texts):  # each distinct text once (states repeat the address per turn)
        found = memo.get(text)
        if found is None:  # every structured pattern needs a digit or an @
            found = list(scan_text(text)) + audit_text(text) if _LEAK_HINT.search(text) else []
            if len(memo) >= _SCAN_CACHE_SIZE:
                memo.clear()
            memo[text] = found
        hits.extend(found)
        if forbidden:
            hits.extend(("known_value", v) for v in forbidden if v in text)
    return hits


# --- Pseudonymization -------------------------------------------------------------------------


@dataclass
class PiiReport:
    """How many values of each kind were replaced (never the values themselves)."""

    replaced: Counter[str] = field(default_factory=Counter)
    sessions_touched: int = 0


_SENTINEL_BASE = 0xF0000  # Supplementary Private Use Area: cannot occur in app text, matches no pattern


class _SessionPseudonymizer:
    """Holds one session's real->fake mapping; dropped when the session is done."""

    def __init__(self, session: Session, pools: FakePools, salt: str, report: PiiReport, scans: _ScanCache | None = None) -> None:
        self.rng = random.Random(f"{salt}:{session.session_id}")
        self.pools, self.report = pools, report
        self.scans: _ScanCache = scans if scans is not None else {}
        self.mapping: dict[str, str] = {}
        self.used: set[str] = set()
        self.known: list[tuple[str, str]] = []  # (real, sentinel), longest first
        self.given: list[tuple[str, str]] = []  # (real given name, fake given name), only before 님/씨

    def fake_for(self, real: str, kind: str) -> str:
        fake = self.mapping.get(real)
        if fake is None:
            for _ in range(20):
                fake = self.rng.choice(self.pools.names) if kind == "name" else random_address(self.rng, self.pools)
                if fake != real and fake not in self.used:
                    break
            self.mapping[real] = fake
            self.used.add(fake)
        return fake

    def add_known(self, real: str, kind: str) -> None:
        if real and real not in self.mapping:
            self.fake_for(real, kind)
            self.known.append((real, chr(_SENTINEL_BASE + len(self.known))))
            self.known.sort(key=lambda kv: -len(kv[0]))

    def _structured(self, m: re.Match[str]) -> str:
        for kind, placeholder in PLACEHOLDERS.items():
            if m.group(kind) is not None:
                self.report.replaced[kind] += 1
                return placeholder
        return m.group(0)

    def _name(self, m: re.Match[str]) -> str:
        name = m.group("n1") or m.group("n2")
        if name[0] not in SURNAMES or name in NOT_NAMES:
            return m.group(0)
        self.report.replaced["name_in_text"] += 1
        return (m.group("pre") or "") + self.fake_for(name, "name")

    def _address(self, m: re.Match[str]) -> str:
        self.report.replaced["address_in_text"] += 1
        return self.fake_for(m.group(0), "address")

    def _scan(self, text: str) -> int:
        """Which of the three patterns match `text` (bit flags), once per distinct text.

        A pattern without a match leaves the text as it is and calls no replacement function,
        so skipping it changes nothing; most messages repeat across sessions and match none.
        """
        found = self.scans.get(text)
        if found is None:
            found = 0
            if _STRUCTURED_HINT.search(text) and PII_PATTERN.search(text):
                found |= _HAS_STRUCTURED
            if ("님" in text or "씨" in text or "이름은" in text or "성함은" in text) and _NAME_IN_TEXT.search(text):
                found |= _HAS_NAME
            if _ADDRESS_HINT.search(text) and _ADDRESS_IN_TEXT.search(text):
                found |= _HAS_ADDRESS
            if len(self.scans) >= _SCAN_CACHE_SIZE:
                self.scans.clear()
            self.scans[text] = found
        return found

    def text(self, text: str) -> str:
        hits = []
        for real, sentinel in self.known:
            if real in text:
                text = text.replace(real, sentinel)
                hits.append((real, sentinel))
        for real, fake in self.given:
            if real in text:
                text = given_name_pattern(real).sub(fake, text)
        found = self._scan(text)
        if found & _HAS_STRUCTURED:
            text = PII_PATTERN.sub(self._structured, text)
            found = self._scan(text)
        if found & _HAS_NAME:
            text = _NAME_IN_TEXT.sub(self._name, text)
            found = self._scan(text)
        if found & _HAS_ADDRESS:
            text = _ADDRESS_IN_TEXT.sub(self._address, text)
        for real, sentinel in hits:
            text = text.replace(sentinel, self.mapping[real])
        self.report.replaced["known_value"] += len(hits)
        return text


@lru_cache(maxsize=4096)
def given_name_pattern(given: str) -> re.Pattern[str]:
    """A given name alone only counts in an address context (민수님, 민수 씨): "지원" is also a word."""
    return re.compile(rf"(?<![가-힣]){re.escape(given)}(?=\s?(?:님|씨))")


#: Cheap pre-checks (hot path): the big patterns only run on text that could match them.
_STRUCTURED_HINT = re.compile(r"[0-9@]")
_ADDRESS_HINT = re.compile(r"[가-힣](?:시|군|구) [^\n]*\d")
_HAS_STRUCTURED, _HAS_NAME, _HAS_ADDRESS = 1, 2, 4
#: text -> which patterns match it; per `pseudonymize_sessions` call, bounded.
_ScanCache = dict[str, int]
_SCAN_CACHE_SIZE = 200_000


def pseudonymize_session(session: Session, salt: str = "mrdabak", pools: FakePools | None = None, report: PiiReport | None = None) -> Session:
    """A copy of `session` with PII replaced consistently (see the module docstring)."""
    return _pseudonymize_session(session, salt, pools or fake_pools(), report if report is not None else PiiReport(), {})


def _pseudonymize_session(session: Session, salt: str, pools: FakePools, report: PiiReport, scans: _ScanCache) -> Session:
    p = _SessionPseudonymizer(session, pools, salt, report, scans)
    if session.customer_name and len(session.customer_name) >= 2:
        p.add_known(session.customer_name, "name")
        fake = p.mapping[session.customer_name]
        if len(session.customer_name) == 3 and len(fake) == 3:
            p.given.append((session.customer_name[1:], fake[1:]))  # "민수님" -> "지훈님"
    for t in session.turns:
        if t.order_state and t.order_state.get("deliveryAddress"):
            p.add_known(t.order_state["deliveryAddress"], "address")
    turns = []
    for t in session.turns:
        state = t.order_state
        if state and state.get("deliveryAddress"):
            state = {**state, "deliveryAddress": p.text(state["deliveryAddress"])}
        content = p.text(t.content)
        if state is t.order_state and content == t.content:
            turns.append(t)  # nothing replaced: the (immutable) turn itself
        else:
            turns.append(Turn(t.role, content, state, t.created_at, t.message_id))
    name = p.mapping.get(session.customer_name or "", session.customer_name)
    return replace(session, turns=turns, customer_name=name, tags=list(session.tags))


def pseudonymize_sessions(sessions: Iterable[Session], salt: str = "mrdabak") -> tuple[list[Session], PiiReport]:
    """Pseudonymize every session; the report holds counts by kind, never a value."""
    report = PiiReport()
    pools = fake_pools()
    scans: _ScanCache = {}
    out = []
    with paused_gc():
        for s in sessions:
            before = sum(report.replaced.values())
            out.append(_pseudonymize_session(s, salt, pools, report, scans))
            report.sessions_touched += sum(report.replaced.values()) > before
    return out, report
