"""Hand-built sessions for the dataset tests (no seeder needed, every field known)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from mrdabak_pipeline.core.domain import Session, Turn, missing_fields


def state(ready: bool = False, **fields: Any) -> dict[str, Any]:
    """An order state the way the app writes it: set fields, readiness, what is still missing."""
    s = {k: v for k, v in fields.items() if v is not None}
    s["readyForConfirmation"] = ready
    s["needsMoreInfo"] = missing_fields(s)
    return s


def order_session(
    session_id: str,
    *,
    source: str = "",
    variant: int = 0,
    created_at: datetime = datetime(2025, 3, 1, 12, 0),
    partition_date: str | None = None,
    name: str = "김민수",
) -> Session:
    """A complete FRENCH/GRAND order in four turns."""
    full = state(True, dinnerType="FRENCH", servingStyle="GRAND", quantity=2, deliveryDate="2025-03-02",
                 deliveryTime="19:00", deliveryAddress="서울시 마포구 월드컵북로 396")
    turns = [
        Turn("user", "안녕하세요, 주문하려고요"),
        Turn("assistant", f"안녕하세요, {name}님! 어떤 디너를 주문하시겠어요?", state()),
        Turn("user", "프렌치 디너 그랜드로 두 개, 내일 저녁 7시에 서울시 마포구 월드컵북로 396으로요"),
        Turn("assistant", "프렌치 디너 그랜드 2개, 3월 2일 19시 배달로 확정할까요?", full),
    ]
    return Session(
        session_id=session_id, turns=[Turn(t.role, t.content, t.order_state, created_at + timedelta(seconds=i))
                                      for i, t in enumerate(turns)],
        customer_name=name, status="CONFIRMED", created_at=created_at, source_session_id=source or session_id,
        variant=variant, partition_date=partition_date or created_at.date().isoformat(),
    )


def corrected_session(session_id: str = "corr-1") -> Session:
    """The assistant writes the wrong dinner; the customer says so; the assistant fixes it."""
    return Session(
        session_id=session_id,
        turns=[
            Turn("user", "잉글리시 디너 하나요"),
            Turn("assistant", "프렌치 디너 1개로 준비하겠습니다.", state(dinnerType="FRENCH", quantity=1)),
            Turn("user", "아니요, 잉글리시 디너라고 했는데요"),
            Turn("assistant", "죄송합니다. 잉글리시 디너 1개로 정정했습니다.", state(dinnerType="ENGLISH", quantity=1)),
        ],
        created_at=datetime(2025, 3, 1, 13, 0),
        partition_date="2025-03-01",
    )


def change_of_mind_session(session_id: str = "mind-1") -> Session:
    """The customer changes their mind: the first answer was right, so no preference pair."""
    return Session(
        session_id=session_id,
        turns=[
            Turn("user", "프렌치 디너로 할게요"),
            Turn("assistant", "프렌치 디너로 준비하겠습니다.", state(dinnerType="FRENCH")),
            Turn("user", "아 잠깐만요, 잉글리시 디너로 바꿀게요."),
            Turn("assistant", "네, 잉글리시 디너로 변경했습니다.", state(dinnerType="ENGLISH")),
        ],
        created_at=datetime(2025, 3, 1, 14, 0),
        partition_date="2025-03-01",
    )


@dataclass
class ChatExamples:
    """The examples the dataset writer makes of some sessions, parsed back, with its bookkeeping."""

    train: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    duplicates_dropped: int = 0
    source_sessions: dict[str, set[str]] = field(default_factory=lambda: {"train": set(), "validation": set()})
    high_water_mark: datetime | None = None


def build_chat_dataset(sessions: Iterable[Session], target: str = "json", validation_fraction: float = 0.1, prompt: str = "short") -> ChatExamples:
    """`shards.shards_of` (the one writer) with the lines parsed back, split as the assembly splits them."""
    import orjson

    from mrdabak_pipeline.core.datasets.shards import shards_of

    out = ChatExamples()
    for shard in shards_of(sessions, target=target, prompt=prompt):
        for row in shard.to_pylist():
            if row["line"] is None:
                out.skipped.append((row["session_id"], row["skip_reason"]))
            elif row["duplicate"]:
                out.duplicates_dropped += 1
            else:
                split = "validation" if row["split_score"] < validation_fraction else "train"
                getattr(out, split).append(orjson.loads(row["line"]))
                out.source_sessions[split].add(row["source_session_id"])
                if out.high_water_mark is None or row["created_at"] > out.high_water_mark:
                    out.high_water_mark = row["created_at"]
    return out
