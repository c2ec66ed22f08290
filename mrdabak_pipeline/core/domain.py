"""The Mr. Daebak ordering domain: menu, order state, and the assistant's rules.

Everything downstream (seeding, cleaning, datasets, evaluation) speaks in these terms, so the
menu and the order-state schema live here once. Pure Python: no Dagster, no I/O.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from pydantic_core import PydanticCustomError

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

#: The fields a complete order needs, in canonical order; `needsMoreInfo` lists the ones still missing.
RequiredField = Literal["dinnerType", "servingStyle", "quantity", "deliveryDate", "deliveryTime", "deliveryAddress"]
REQUIRED_ORDER_FIELDS: tuple[str, ...] = get_args(RequiredField)
#: A quantity outside this range is a misread, not an order (the reply schema uses the same bounds).
MIN_QUANTITY, MAX_QUANTITY = 1, 100
#: ASCII digits only (``\d`` would take Arabic-Indic or Devanagari digits, which the app cannot
#: read). Months and days are narrowed as far as a regex goes; the calendar check (02-30) is code.
DATE_PATTERN = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"
TIME_PATTERN = r"^([01][0-9]|2[0-3]):[0-5][0-9]$"
_ASCII_DIGITS = re.compile(r"[0-9]+")


def _nfkc(value: str) -> str:
    """Full-width forms (２, ：) -> ASCII, then strip: how people type on Korean keyboards."""
    return value.strip() if value.isascii() else unicodedata.normalize("NFKC", value).strip()


class OrderState(BaseModel):
    """The order state as the production app reads it: the one definition of its fields.

    Validation is lenient about spelling, strict about meaning, and the lenience is written out
    in the validators below (pydantic's lax mode would also take ``1`` for true, ``"yes"``, a bool
    for a quantity): enums in any case/spacing (``valentine``, ``Deluxe``, ``champagne-feast``),
    a quantity written ``"2"``/``"２"``/``2.0`` (never a bool; ASCII or full-width digits only),
    blanks collapsed in the address (blank -> absent), ``"true"``/``"false"`` as booleans, and
    `needsMoreInfo` put in canonical order without repeats. Unknown keys are refused
    (``extra="forbid"``): the app would silently ignore them, and a model that invents keys is
    wrong. `None` means "not known yet" for every field. Enum fields hold the plain string values.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, use_enum_values=True)

    dinnerType: DinnerType | None = None
    servingStyle: ServingStyle | None = None
    quantity: int | None = Field(default=None, ge=MIN_QUANTITY, le=MAX_QUANTITY)
    deliveryDate: str | None = Field(default=None, pattern=DATE_PATTERN)
    deliveryTime: str | None = Field(default=None, pattern=TIME_PATTERN)
    deliveryAddress: str | None = None
    readyForConfirmation: bool | None = None
    needsMoreInfo: list[RequiredField] | None = None

    @field_validator("dinnerType", "servingStyle", mode="before")
    @classmethod
    def _enum_spelling(cls, value: Any) -> Any:
        if isinstance(value, str):
            return _nfkc(value).upper().replace(" ", "_").replace("-", "_")
        return value

    @field_validator("quantity", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        if isinstance(value, bool):  # pydantic would read True as 1
            raise PydanticCustomError("int_type", "Input should be an integer, not a boolean")
        if isinstance(value, str):
            text = _nfkc(value)
            if not _ASCII_DIGITS.fullmatch(text):
                raise PydanticCustomError("int_parsing", "Input should be a whole number in ASCII digits")
            return int(text)
        return value

    @field_validator("deliveryDate", "deliveryTime", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return _nfkc(value) if isinstance(value, str) else value

    @field_validator("deliveryDate")
    @classmethod
    def _calendar_date(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                date.fromisoformat(value)
            except ValueError:
                raise PydanticCustomError("calendar_date", "Input should be a calendar date") from None
        return value

    @field_validator("deliveryAddress", mode="before")
    @classmethod
    def _collapse_blanks(cls, value: Any) -> Any:
        return (" ".join(value.split()) or None) if isinstance(value, str) else value

    @field_validator("readyForConfirmation", mode="before")
    @classmethod
    def _true_or_false(cls, value: Any) -> Any:
        if isinstance(value, str) and value.strip().lower() in ("true", "false"):
            return value.strip().lower() == "true"
        if value is not None and not isinstance(value, bool):  # not 1/0, "yes", "on": pydantic's lax set
            raise PydanticCustomError("bool_type", "Input should be true or false")
        return value

    @field_validator("needsMoreInfo", mode="before")
    @classmethod
    def _a_list(cls, value: Any) -> Any:
        if value is not None and not isinstance(value, list):  # not a tuple/set/dict's keys
            raise PydanticCustomError("list_type", "Input should be a list of field names")
        return value

    @field_validator("needsMoreInfo")
    @classmethod
    def _canonical_order(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else [f for f in REQUIRED_ORDER_FIELDS if f in value]

    def canonical(self) -> dict[str, Any]:
        """The app's dict: only the fields that are set, in `ORDER_FIELDS` order."""
        return self.model_dump(exclude_none=True)


#: The order-state keys the production app reads, in the app's camelCase and canonical order.
ORDER_FIELDS: tuple[str, ...] = tuple(OrderState.model_fields)
if ORDER_FIELDS[: len(REQUIRED_ORDER_FIELDS)] != REQUIRED_ORDER_FIELDS:  # needsMoreInfo's order is the fields' order
    raise AssertionError("OrderState must declare the required fields first, in RequiredField's order")


def is_allowed_combination(dinner: str | None, style: str | None) -> bool:
    """False only for a known dinner served in a style it does not come in (CHAMPAGNE_FEAST+SIMPLE)."""
    if dinner not in DinnerType.__members__ or style not in ServingStyle.__members__:
        return True
    return ServingStyle(style) in ALLOWED_STYLES[DinnerType(dinner)]


@dataclass(frozen=True, slots=True)
class OrderStateIssue:
    """One thing wrong with an order state (or a reply), for code to group and people to read.

    `field` is the order field at fault, or the unknown key (kind ``extra_forbidden``), or None
    when the whole value is unusable. `kind` is machine-readable: pydantic's error type
    (``enum``, ``greater_than_equal``, ``string_pattern_mismatch``, ``int_parsing``, ...) or one of
    ours (``malformed_json``, ``not_an_object``, ``calendar_date``, ``not_a_reply``).
    """

    field: str | None
    kind: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field is not None else self.message


class OrderStateError(ValueError):
    """An order state (or reply) the app could not use; `issues` say why, most decisive first.

    `reason` is the stable name cleaning counts drops by: ``malformed_json``, ``not_an_object``,
    ``unknown_keys``, or ``invalid_<field>`` for the first field (in `ORDER_FIELDS` order) at fault.
    """

    def __init__(self, issues: Sequence[OrderStateIssue]) -> None:
        self.issues: tuple[OrderStateIssue, ...] = tuple(issues)
        super().__init__("; ".join(str(i) for i in self.issues))

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across worker processes
        return (type(self), (self.issues,))

    @classmethod
    def single(cls, field: str | None, kind: str, message: str) -> OrderStateError:
        return cls([OrderStateIssue(field, kind, message)])

    @classmethod
    def from_validation(cls, exc: ValidationError) -> OrderStateError:
        """Pydantic's errors as issues: unknown keys first, then fields in `ORDER_FIELDS` order."""
        issues = [OrderStateIssue(str(e["loc"][0]) if e["loc"] else None, e["type"], _message(e)) for e in exc.errors(include_url=False)]
        rank = {f: i for i, f in enumerate(ORDER_FIELDS)}
        issues.sort(key=lambda i: (i.kind != "extra_forbidden", rank.get(i.field or "", -1)))
        return cls(issues)

    @property
    def reason(self) -> str:
        first = self.issues[0]
        if first.kind == "extra_forbidden":
            return "unknown_keys"
        return first.kind if first.field is None else f"invalid_{first.field}"


def _message(error: Mapping[str, Any]) -> str:
    """Pydantic's message plus the offending value when it is a short scalar of a coded field (a
    quarantine row then says *what* was wrong); never for the address, which is customer text."""
    value, loc = error.get("input"), error.get("loc") or ()
    if loc and loc[0] != "deliveryAddress" and error["type"] != "extra_forbidden" and isinstance(value, str | int | float):
        return f"{error['msg']}, got {repr(value)[:40]}"
    return str(error["msg"])


def parse_order_state(raw: Mapping[str, Any] | str | None) -> OrderState | None:
    """Parse an order state (a JSON string or a mapping) into the model; None/blank/``null`` -> None.

    Raises `OrderStateError` (structured issues) when the value cannot be made valid: the caller
    decides whether to drop the state or the row.
    """
    if raw is None:
        return None
    if isinstance(raw, str):
        if not raw.strip():
            return None
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise OrderStateError.single(None, "malformed_json", f"malformed JSON: {exc.msg}") from None
        if raw is None:
            return None
    if not isinstance(raw, Mapping):
        raise OrderStateError.single(None, "not_an_object", f"expected a JSON object, got {type(raw).__name__}")
    try:
        return OrderState.model_validate(raw)
    except ValidationError as exc:
        raise OrderStateError.from_validation(exc) from None


def normalize_order_state(raw: Mapping[str, Any] | str | None) -> dict[str, Any] | None:
    """`parse_order_state` as the canonical dict the datasets store (`OrderState.canonical`), or None.

    Only the keys whose value is set, in `ORDER_FIELDS` order, enums as their upper-case values,
    quantities as ints: the JSON bytes of every dataset are built from this dict.
    """
    state = parse_order_state(raw)
    return None if state is None else state.canonical()


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
        raise OrderStateError.single(None, "malformed_json", f"reply is not JSON: {exc}") from None
    if not isinstance(obj, dict) or set(obj) != {"message", "orderState"}:
        raise OrderStateError.single(None, "not_a_reply", "reply must be an object with exactly 'message' and 'orderState'")
    if not isinstance(obj["message"], str):
        raise OrderStateError.single("message", "string_type", "message must be a string")
    state = normalize_order_state(obj["orderState"]) if obj["orderState"] is not None else {}
    return obj["message"], state or {}
