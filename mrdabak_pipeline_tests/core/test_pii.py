"""Every PII kind is replaced; names and addresses consistently within a session."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.domain import Session, Turn
from mrdabak_pipeline.core.pii import (
    PLACEHOLDERS,
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
    assert not list(scan_text(out))


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


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=st.sampled_from("0123456789-+ .()@abc가나다님씨이름은"), max_size=40))
def test_output_never_contains_structured_pii(text: str) -> None:
    assert not list(scan_text(one(text)))
