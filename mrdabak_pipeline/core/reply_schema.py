"""The JSON schema of the assistant's reply, derived from the domain model (one source of truth).

The app parses ``{"message": ..., "orderState": {...}}`` with `domain.parse_assistant_reply`; this
schema says the same thing in a form a decoder can enforce: token masks for a local model
(`core.evaluation.constrained`) or ``response_format`` for an OpenAI-compatible endpoint. Enums
come from `DinnerType` / `ServingStyle`, the keys from `ORDER_FIELDS`, the missing-field names from
`REQUIRED_ORDER_FIELDS`, the date/time patterns from the domain's own validators, so a new dish or
field changes the schema without anyone editing it (`_FIELD_SCHEMAS` must cover every field).

Two variants:

- the default one describes the canonical reply exactly as training writes it
  (`domain.assistant_target`): absent fields are omitted, no nulls, compact separators, bounded
  string lengths so an unconstrained string can never eat the whole token budget;
- ``strict=True`` is what OpenAI's structured outputs accept (``"strict": true``): every key
  required, "not known yet" spelled ``null`` (the app reads null as absent), and only the core
  keywords (types, enums, required, additionalProperties) — patterns, numeric ranges and length
  bounds are refused by some API versions (Azure's among them), so there the shape and the enums
  are enforced and the app's parser still checks dates, times and ranges. vLLM accepts it too.
"""

from __future__ import annotations

from typing import Any

from mrdabak_pipeline.core import domain
from mrdabak_pipeline.core.domain import ORDER_FIELDS, REQUIRED_ORDER_FIELDS, DinnerType, ServingStyle

#: The name under which the schema is sent in ``response_format`` (shown in API errors).
SCHEMA_NAME = "mrdabak_reply"
#: Bounds on free text in the constrained (local) variant. Generous for a spoken reply / an
#: address, small enough that a rambling model still closes its JSON within ~1k tokens.
MAX_MESSAGE_CHARS = 400
MAX_ADDRESS_CHARS = 200
#: `domain.normalize_order_state` accepts quantities in this range (see `domain._quantity`).
MIN_QUANTITY, MAX_QUANTITY = 1, 100
#: Value bounds left out of the strict (endpoint) variant; see the module docstring.
BOUND_KEYWORDS = frozenset({"pattern", "format", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems"})

# The domain's validators are the authority on the date/time spelling. Its time pattern is used
# as is; its date pattern (any YYYY-MM-DD digits, then a calendar check in code) is narrowed to
# real months and days, as close as a regex gets: only impossible days such as 02-30 still pass
# the schema and are left to the parser. (test_reply_schema holds both to the domain's parser.)
_TIME_PATTERN = domain._TIME_RE.pattern
_DATE_PATTERN = r"^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$"


def _field_schemas(max_address_chars: int | None) -> dict[str, dict[str, Any]]:
    address: dict[str, Any] = {"type": "string"}
    if max_address_chars:
        address |= {"minLength": 1, "maxLength": max_address_chars}
    return {
        "dinnerType": {"type": "string", "enum": [d.value for d in DinnerType]},
        "servingStyle": {"type": "string", "enum": [s.value for s in ServingStyle]},
        "quantity": {"type": "integer", "minimum": MIN_QUANTITY, "maximum": MAX_QUANTITY},
        "deliveryDate": {"type": "string", "pattern": _DATE_PATTERN},
        "deliveryTime": {"type": "string", "pattern": _TIME_PATTERN},
        "deliveryAddress": address,
        "readyForConfirmation": {"type": "boolean"},
        "needsMoreInfo": {
            "type": "array",
            "items": {"type": "string", "enum": list(REQUIRED_ORDER_FIELDS)},
            "maxItems": len(REQUIRED_ORDER_FIELDS),
        },
    }


def _nullable_unbounded(schema: dict[str, Any]) -> dict[str, Any]:
    out = {k: v for k, v in schema.items() if k not in BOUND_KEYWORDS}
    if isinstance(out.get("items"), dict):
        out["items"] = {k: v for k, v in out["items"].items() if k not in BOUND_KEYWORDS}
    out["type"] = [schema["type"], "null"]
    if "enum" in out:
        out["enum"] = [*out["enum"], None]
    return out


def reply_json_schema(
    strict: bool = False,
    max_message_chars: int | None = MAX_MESSAGE_CHARS,
    max_address_chars: int | None = MAX_ADDRESS_CHARS,
) -> dict[str, Any]:
    """The reply's JSON schema (see the module docstring for the two variants)."""
    fields = _field_schemas(None if strict else max_address_chars)
    if set(fields) != set(ORDER_FIELDS):  # a field added to the domain needs its schema here
        raise AssertionError(f"reply schema out of date: {sorted(set(ORDER_FIELDS) ^ set(fields))}")
    message: dict[str, Any] = {"type": "string"}
    if strict:
        props = {k: _nullable_unbounded(fields[k]) for k in ORDER_FIELDS}
        required = list(ORDER_FIELDS)
    else:
        props = {k: fields[k] for k in ORDER_FIELDS}
        required = []
        if max_message_chars:
            message["maxLength"] = max_message_chars
    return {
        "type": "object",
        "properties": {
            "message": message,
            "orderState": {
                "type": "object",
                "properties": props,
                "required": required,
                "additionalProperties": False,
            },
        },
        "required": ["message", "orderState"],
        "additionalProperties": False,
    }


def response_format() -> dict[str, Any]:
    """``response_format`` for an OpenAI-compatible chat completion (OpenAI, Azure, vLLM)."""
    return {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "schema": reply_json_schema(strict=True), "strict": True},
    }
