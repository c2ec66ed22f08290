"""The Mr. Daebak ordering domain: menu, order state, and the assistant's rules.

Everything downstream (seeding, cleaning, datasets, evaluation) speaks in these terms, so the
menu and the order-state schema live here once. Pure Python: no Dagster, no I/O.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from mrdabak_pipeline.core.runtime.files import json_line


class DinnerType(StrEnum):
    VALENTINE = "VALENTINE"
    FRENCH = "FRENCH"
    ENGLISH = "ENGLISH"
    CHAMPAGNE_FEAST = "CHAMPAGNE_FEAST"


class ServingStyle(StrEnum):
    SIMPLE = "SIMPLE"
    GRAND = "GRAND"
    DELUXE = "DELUXE"


class SessionStatus(StrEnum):
    IN_PROGRESS = "IN_PROGRESS"
    CONFIRMED = "CONFIRMED"
    CANCELLED = "CANCELLED"
    ABANDONED = "ABANDONED"


#: Korean display names, used by the seeder and the system prompt.
DINNER_KO: dict[DinnerType, str] = {
    DinnerType.VALENTINE: "발렌타인 디너",
    DinnerType.FRENCH: "프렌치 디너",
    DinnerType.ENGLISH: "잉글리시 디너",
    DinnerType.CHAMPAGNE_FEAST: "샴페인 축제 디너",
}
STYLE_KO: dict[ServingStyle, str] = {
    ServingStyle.SIMPLE: "심플",
    ServingStyle.GRAND: "그랜드",
    ServingStyle.DELUXE: "디럭스",
}
DINNER_ITEMS: dict[DinnerType, tuple[str, ...]] = {
    DinnerType.VALENTINE: ("와인", "스테이크", "하트 모양 접시", "큐피드 장식"),
    DinnerType.FRENCH: ("커피", "와인", "샐러드", "스테이크"),
    DinnerType.ENGLISH: ("에그 스크램블", "베이컨", "빵", "스테이크"),
    DinnerType.CHAMPAGNE_FEAST: ("샴페인", "바게트빵 4개", "커피 포트", "와인", "스테이크"),
}
STYLE_ITEMS: dict[ServingStyle, tuple[str, ...]] = {
    ServingStyle.SIMPLE: ("플라스틱 식기", "종이 냅킨"),
    ServingStyle.GRAND: ("도자기 식기", "면 냅킨", "나무 쟁반"),
    ServingStyle.DELUXE: ("꽃병의 꽃", "도자기 식기", "린넨 냅킨", "나무 쟁반", "유리잔"),
}
#: CHAMPAGNE_FEAST is a dinner for two and is only served GRAND or DELUXE.
ALLOWED_STYLES: dict[DinnerType, frozenset[ServingStyle]] = {
    d: frozenset(ServingStyle) for d in DinnerType
} | {DinnerType.CHAMPAGNE_FEAST: frozenset({ServingStyle.GRAND, ServingStyle.DELUXE})}

#: The order-state keys the production app reads, in the app's camelCase and canonical order.
ORDER_FIELDS: tuple[str, ...] = (
    "dinnerType",
    "servingStyle",
    "quantity",
    "deliveryDate",
    "deliveryTime",
    "deliveryAddress",
    "readyForConfirmation",
    "needsMoreInfo",
)
#: The fields a complete order needs; `needsMoreInfo` lists the ones still missing.
REQUIRED_ORDER_FIELDS: tuple[str, ...] = ORDER_FIELDS[:6]

_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIME_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def is_allowed_combination(dinner: str | None, style: str | None) -> bool:
    """False only for a known dinner served in a style it does not come in (CHAMPAGNE_FEAST+SIMPLE)."""
    if dinner not in DinnerType.__members__ or style not in ServingStyle.__members__:
        return True
    return ServingStyle(style) in ALLOWED_STYLES[DinnerType(dinner)]


class OrderStateError(ValueError):
    """An order_state that cannot be turned into the app's schema; the message is the reason."""


def _enum_value(enum: type[StrEnum], value: Any, key: str) -> str:
    if not isinstance(value, str):
        raise OrderStateError(f"{key}: expected a string, got {type(value).__name__}")
    token = unicodedata.normalize("NFKC", value).strip().upper().replace(" ", "_").replace("-", "_")
    if token not in enum.__members__:
        raise OrderStateError(f"{key}: unknown value {value!r}")
    return token


def _quantity(value: Any) -> int:
    if isinstance(value, bool):
        raise OrderStateError("quantity: expected an integer, got bool")
    if isinstance(value, int):
        q = value
    elif isinstance(value, float) and value.is_integer():
        q = int(value)
    elif isinstance(value, str) and unicodedata.normalize("NFKC", value).strip().isdigit():
        q = int(unicodedata.normalize("NFKC", value).strip())
    else:
        raise OrderStateError(f"quantity: not an integer: {value!r}")
    if not 1 <= q <= 100:
        raise OrderStateError(f"quantity: out of range: {q}")
    return q


def _bool(value: Any, key: str) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in {"true", "false"}:
        return value.strip().lower() == "true"
    raise OrderStateError(f"{key}: expected a boolean, got {value!r}")


def normalize_order_state(raw: Mapping[str, Any] | str | None) -> dict[str, Any] | None:
    """Parse and canonicalize an order_state (a JSON string or a mapping).

    Returns a dict holding only the known keys whose value is not null, in `ORDER_FIELDS` order,
    with enum spellings (``valentine``, ``Deluxe``) upper-cased and quantities given as strings
    turned into ints. ``None``/empty input gives ``None``. Raises `OrderStateError` with a
    human-readable reason when the value cannot be made valid: the caller decides whether to drop
    the state or the row.
    """
    if raw is None:
        return None
    if isinstance(raw, str):
        text = raw.strip()
        if not text:
            return None
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise OrderStateError(f"malformed JSON: {exc.msg}") from None
        if raw is None:
            return None
    if not isinstance(raw, Mapping):
        raise OrderStateError(f"expected a JSON object, got {type(raw).__name__}")
    unknown = set(raw) - set(ORDER_FIELDS)
    if unknown:
        raise OrderStateError(f"unknown keys: {sorted(unknown)}")
    out: dict[str, Any] = {}
    for key in ORDER_FIELDS:
        value = raw.get(key)
        if value is None:
            continue
        if key == "dinnerType":
            out[key] = _enum_value(DinnerType, value, key)
        elif key == "servingStyle":
            out[key] = _enum_value(ServingStyle, value, key)
        elif key == "quantity":
            out[key] = _quantity(value)
        elif key == "deliveryDate":
            if not isinstance(value, str) or not _DATE_RE.match(value.strip()):
                raise OrderStateError(f"deliveryDate: not YYYY-MM-DD: {value!r}")
            try:
                datetime.strptime(value.strip(), "%Y-%m-%d")
            except ValueError:
                raise OrderStateError(f"deliveryDate: not a calendar date: {value!r}") from None
            out[key] = value.strip()
        elif key == "deliveryTime":
            if not isinstance(value, str) or not _TIME_RE.match(value.strip()):
                raise OrderStateError(f"deliveryTime: not HH:MM: {value!r}")
            out[key] = value.strip()
        elif key == "deliveryAddress":
            if not isinstance(value, str):
                raise OrderStateError("deliveryAddress: expected a string")
            if value.strip():
                out[key] = " ".join(value.split())
        elif key == "readyForConfirmation":
            out[key] = _bool(value, key)
        elif key == "needsMoreInfo":
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise OrderStateError("needsMoreInfo: expected a list of field names")
            bad = [v for v in value if v not in REQUIRED_ORDER_FIELDS]
            if bad:
                raise OrderStateError(f"needsMoreInfo: unknown fields {bad}")
            out[key] = [f for f in REQUIRED_ORDER_FIELDS if f in value]
    return out


def missing_fields(state: Mapping[str, Any]) -> list[str]:
    """The required fields not yet present, in canonical order: what `needsMoreInfo` should say."""
    return [f for f in REQUIRED_ORDER_FIELDS if state.get(f) in (None, "")]


@dataclass(frozen=True, slots=True)
class Turn:
    """One message of a conversation after cleaning: role is ``user`` or ``assistant``."""

    role: str
    content: str
    order_state: dict[str, Any] | None = None
    created_at: datetime | None = None
    message_id: int | None = None


@dataclass(slots=True)
class Session:
    """One conversation. Augmented variants keep the id of the session they came from."""

    session_id: str
    turns: list[Turn]
    customer_name: str | None = None
    status: str = SessionStatus.IN_PROGRESS.value
    created_at: datetime | None = None
    source_session_id: str = ""
    variant: int = 0
    partition_date: str = ""
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.source_session_id:
            self.source_session_id = self.session_id

    @property
    def final_order_state(self) -> dict[str, Any] | None:
        """The last assistant order_state: what the order ended up as."""
        for turn in reversed(self.turns):
            if turn.role == "assistant" and turn.order_state is not None:
                return turn.order_state
        return None


# --- The assistant's contract with the production app ---------------------------------------

# The system prompt lives in versioned template files: see core/prompts.py.


def assistant_target(message: str, order_state: Mapping[str, Any] | None) -> str:
    """The JSON reply the production app parses: ``{"message": ..., "orderState": {...}}``.

    Compact separators and no ASCII escaping keep Korean readable and token counts low.
    """
    return json_line({"message": message, "orderState": dict(order_state or {})})


def parse_assistant_reply(text: str) -> tuple[str, dict[str, Any]]:
    """Inverse of `assistant_target`, strict: raises `OrderStateError` when the app could not use it."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, TypeError) as exc:
        raise OrderStateError(f"reply is not JSON: {exc}") from None
    if not isinstance(obj, dict) or set(obj) != {"message", "orderState"}:
        raise OrderStateError("reply must be an object with exactly 'message' and 'orderState'")
    if not isinstance(obj["message"], str):
        raise OrderStateError("message must be a string")
    state = normalize_order_state(obj["orderState"]) if obj["orderState"] is not None else {}
    return obj["message"], state or {}
