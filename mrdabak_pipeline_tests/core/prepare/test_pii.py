"""Every PII kind is replaced; names and addresses consistently within a session.

The replacer (`PII_PATTERN`) is never its own judge here: outputs are checked with `audit_text`,
the independent oracle (libphonenumber, a digit-run rule, a loose e-mail shape), and inputs are
generated from the formats the README documents, not from the pattern.
"""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.domain import Session, Turn
from mrdabak_pipeline.core.prepare.pii import (
    MIN_IDENTIFIER_DIGITS,
    PLACEHOLDERS,
    audit_text,
    known_values,
    pseudonymize_session,
    pseudonymize_sessions,
    scan_text,
    session_leaks,
)

ADDRESS = "서울특별시 강남구 테헤란로 123 래미안아파트 101동 1203호"


def one(text: str) -> str:
    return pseudonymize_session(Session("x", [Turn("user", text)])).turns[0].content


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("010-1234-5678", "phone"), ("010 1234 5678", "phone"), ("010.1234.5678", "phone"), ("01012345678", "phone"),
        ("+82 10-1234-5678", "phone"), ("+82-10-1234-5678", "phone"), ("+821012345678", "phone"), ("+82 (0)10 1234 5678", "phone"),
        ("02-123-4567", "phone"), ("(02) 1234-5678", "phone"), ("031-123-4567", "phone"), ("070-1234-5678", "phone"),
        ("kim.minsu+order@example.co.kr", "email"), ("a_b@mail.com", "email"),
        ("1234-5678-9012-3456", "card"), ("1234 5678 9012 3456", "card"), ("1234567890123456", "card"), ("3782-822463-10005", "card"),
        ("900101-1234567", "rrn"), ("9001011234567", "rrn"), ("851231 - 2345678", "rrn"),
    ],
)
def test_structured_pii_is_replaced(text: str, kind: str) -> None:
    assert [k for k, _ in scan_text(f"제 정보는 {text}입니다")] == [kind]
    out = one(f"제 정보는 {text}입니다")
    assert out == f"제 정보는 {PLACEHOLDERS[kind]}입니다"
    assert audit_text(f"제 정보는 {text}입니다"), "the independent oracle must see the input's identifier"
    assert audit_text(out) == []


@pytest.mark.parametrize("text", ["2025-03-02 19:30", "3월 2일(일) 19:30", "4개", "101동 1203호", "테헤란로 123-45", "1588-1234"])
def test_ordinary_numbers_are_not_pii(text: str) -> None:
    assert one(text) == text


def test_names_and_addresses_consistent_within_a_session() -> None:
    state = {"dinnerType": "FRENCH", "deliveryAddress": ADDRESS}
    s = Session(
        "s1",
        [
            Turn("user", f"주소는 {ADDRESS}예요. 연락처는 010-9876-5432입니다."),
            Turn("assistant", f"김민수님, {ADDRESS}로 배달해 드릴게요. 민수님 감사합니다.", state),
            Turn("user", "제 이름은 박지성입니다. 남편 이영호 씨가 받아요."),
        ],
        customer_name="김민수",
    )
    out = pseudonymize_session(s)
    fake_name, fake_addr = out.customer_name, out.turns[1].order_state["deliveryAddress"]
    assert fake_name != "김민수" and fake_addr != ADDRESS
    assert fake_addr in out.turns[0].content and fake_addr in out.turns[1].content
    assert out.turns[1].content.startswith(f"{fake_name}님") and f"{fake_name[1:]}님 감사" in out.turns[1].content
    assert "[전화번호]" in out.turns[0].content
    for real in ("김민수", "민수님", ADDRESS, "박지성", "이영호", "010-9876"):
        assert all(real not in t.content for t in out.turns), real
    assert not session_leaks(out, known_values(s))
    assert out.turns[1].order_state["dinnerType"] == "FRENCH"
    # deterministic per session, and the input is not modified
    assert pseudonymize_session(s) == out and s.customer_name == "김민수"


def test_role_words_are_not_names() -> None:
    assert one("배달원님 감사합니다, 고객님") == "배달원님 감사합니다, 고객님"
    assert one("저는 배고파요") == "저는 배고파요"


def test_address_said_in_text_only_is_replaced() -> None:
    text = "서울 강남구 테헤란로 123로 와주세요"
    out = one(text)
    assert "테헤란로 123" not in out and out.endswith("로 와주세요")


def test_report_counts_kinds_not_values() -> None:
    s = Session("s", [Turn("user", "010-1111-2222, a@b.com")], customer_name="최영희")
    _, report = pseudonymize_sessions([s])
    assert report.replaced["phone"] == 1 and report.replaced["email"] == 1 and report.sessions_touched == 1
    assert "010" not in repr(report) and "최영희" not in repr(report)


# --- The independent oracle and what the replacer misses ------------------------------------------

_CONTEXT_BEFORE = st.sampled_from(["", "연락처는 ", "제 번호 ", "네, ", "받는 분 번호: "])
_CONTEXT_AFTER = st.sampled_from(["", "입니다", "로 연락 주세요.", " 이에요", "!"])
_MOBILE = st.tuples(st.sampled_from(["010", "011", "016", "017", "018", "019"]), st.integers(2000, 9999), st.integers(0, 9999))
_AREA = st.tuples(st.sampled_from(["02", "031", "032", "042", "051", "053", "064", "070"]), st.integers(200, 9999), st.integers(0, 9999))


@st.composite
def documented_phone(draw: st.DrawFn) -> str:
    """A Korean phone number written in one of the README's formats (not derived from PII_PATTERN)."""
    prefix, middle, last = draw(st.one_of(_MOBILE, _AREA))
    sep = draw(st.sampled_from(["-", ".", " ", ""]))
    body = f"{middle}{sep}{last:04d}"
    form = draw(st.sampled_from(["plain", "paren", "intl", "intl0"]))
    if form == "paren" and prefix == "02":
        return f"(02) {body}"
    if form == "intl":
        return f"+82 {prefix[1:]}{sep or ' '}{body}"
    if form == "intl0":
        return f"+82 (0){prefix[1:]} {body}"
    return f"{prefix}{sep}{body}"


@st.composite
def documented_identifier(draw: st.DrawFn) -> tuple[str, str]:
    """(kind, value): a phone, RRN, card or e-mail address as people write them."""
    kind = draw(st.sampled_from(["phone", "rrn", "card", "email"]))
    if kind == "phone":
        return kind, draw(documented_phone())
    if kind == "rrn":
        birth = draw(st.dates(min_value=date(1930, 1, 1), max_value=date(2020, 12, 31)))
        rest = draw(st.integers(1, 8)), draw(st.integers(0, 999_999))
        return kind, f"{birth:%y%m%d}{draw(st.sampled_from(['-', '']))}{rest[0]}{rest[1]:06d}"
    if kind == "card":
        groups = draw(st.lists(st.integers(0, 9999), min_size=4, max_size=4))
        return kind, draw(st.sampled_from(["-", " ", ""])).join(f"{g:04d}" for g in groups)
    user = draw(st.from_regex(r"[a-z][a-z0-9._]{1,12}[a-z0-9]", fullmatch=True))
    return kind, f"{user}@{draw(st.sampled_from(['naver.com', 'daum.net', 'example.co.kr', 'gmail.com']))}"


@settings(max_examples=300, deadline=None)
@given(documented_identifier(), _CONTEXT_BEFORE, _CONTEXT_AFTER)
def test_documented_identifiers_leave_nothing_the_oracle_finds(ident: tuple[str, str], before: str, after: str) -> None:
    kind, value = ident
    text = f"{before}{value}{after}"
    assert audit_text(text), f"oracle blind to {value!r}: the property below would prove nothing"
    out = one(text)
    assert audit_text(out) == [], (text, out)
    assert out == f"{before}{PLACEHOLDERS[kind]}{after}"


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("연락처는 010 - 4821 - 7739입니다", "phone_number"),  # spaces around the dashes
        ("010/4821/7739로 주세요", "phone_number"),  # slashes
        ("82-10-4821-7739 이에요", "phone_number"),  # country code without the +
        ("0 1 0 4 8 2 1 7 7 3 9", "phone_number"),  # digit by digit
        ("+1 415 555 2671로 연락 주세요", "phone_number"),  # a foreign number
        ("국민은행 110-123-456789로 환불해 주세요", "long_digit_run"),  # an account number
        ("주민번호 880412.1234567", "long_digit_run"),  # RRN with a dot
        ("메일은 홍길동@네이버.com 입니다", "email_like"),  # non-ASCII local part and domain
    ],
)
def test_oracle_catches_what_the_replacer_misses(text: str, kind: str) -> None:
    assert list(scan_text(text)) == [], "precondition: a case PII_PATTERN does not match"
    out = one(text)
    assert kind in {k for k, _ in audit_text(out)}
    leaks = session_leaks(Session("x", [Turn("user", out)]), [])
    assert kind in {k for k, _ in leaks}, "the no_pii check's scan must report the miss"


@pytest.mark.parametrize(
    "text",
    [
        "3월 2일(일) 19:30에 배달해 드릴게요",
        "2025-03-02 19:30",
        "2025-03-02T19:30:00 주문",
        "발렌타인 디너 디럭스 4개, 58,000원",
        "서울특별시 강남구 테헤란로 123-45 래미안 101동 1203호",
        "고객센터 1588-1234",  # a company's number, not a customer's
        "[전화번호]로 연락드릴게요 [이메일]",
        "12345678",  # below MIN_IDENTIFIER_DIGITS and not a valid phone number
    ],
)
def test_oracle_ignores_ordinary_text(text: str) -> None:
    assert audit_text(text) == []


def test_digit_run_threshold() -> None:
    assert MIN_IDENTIFIER_DIGITS == 9  # the shortest Korean number, 02-123-4567
    assert {k for k, _ in audit_text("9" * MIN_IDENTIFIER_DIGITS)} == {"long_digit_run"}
    assert audit_text("9" * (MIN_IDENTIFIER_DIGITS - 1)) == []


def test_fake_addresses_say_the_province_the_ways_customers_do() -> None:
    """서울특별시 / 서울 / 서울시: the state keeps the address as said, so training data must show all."""
    import random

    from mrdabak_pipeline.core.prepare.pii import SIDO_SHORT, AddressParts, random_address

    parts = AddressParts("서울특별시", "마포구", "와우산로 94", "서교동", "12-3", "홍익빌", 101, 502)
    assert [parts.render(short_sido=i).split()[0] for i in range(3)] == ["서울특별시", "서울", "서울시"]
    assert AddressParts("경기도", "고양시", "중앙로 1", "장항동", "1", "x", 1, 1).render(short_sido=2).startswith("경기 고양시")
    rng = random.Random(0)
    firsts = {random_address(rng).split()[0] for _ in range(3000)}
    assert {"서울특별시", "서울", "서울시", "경기도", "경기"} <= firsts
    assert all(short for short in SIDO_SHORT.values())
    # a short form is still found and replaced when said in text
    out = one("서울시 마포구 와우산로 94로 와주세요")
    assert "와우산로 94" not in out and out.endswith("로 와주세요")
