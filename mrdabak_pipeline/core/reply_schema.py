"""The JSON schema of the assistant's reply, derived from the domain model (one source of truth).

The app parses ``{"message": ..., "orderState": {...}}`` with `domain.parse_assistant_reply`; this
schema says the same thing in a form a decoder can enforce: token masks for a local model
(`core.evaluation.constrained`) or ``response_format`` for an OpenAI-compatible endpoint. Each
field's schema is pydantic's own for `domain.OrderState` (types, enums, quantity range, date/time
patterns, the missing-field names), minus the null branch and the annotations, so a new dish or
field changes the schema without anyone editing it. Only decoding bounds that are no part of the
domain (message/address lengths, needsMoreInfo's length) are added here.

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

from mrdabak_pipeline.core.domain import ORDER_FIELDS, REQUIRED_ORDER_FIELDS, OrderState

#: The name under which the schema is sent in ``response_format`` (shown in API errors).
SCHEMA_NAME = "mrdabak_reply"
#: Bounds on free text in the constrained (local) variant. Generous for a spoken reply / an
#: address, small enough that a rambling model still closes its JSON within ~1k tokens.
MAX_MESSAGE_CHARS = 400
MAX_ADDRESS_CHARS = 200
#: Value bounds left out of the strict (endpoint) variant; see the module docstring.
BOUND_KEYWORDS = frozenset({"pattern", "format", "minimum", "maximum", "minLength", "maxLength", "minItems", "maxItems"})
#: The keywords kept from pydantic's schema (in this order); titles, defaults and descriptions go.
_KEYWORDS = ("type", "enum", "pattern", "minimum", "maximum", "items")


def _core(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """A field's schema without its null branch, ``$ref`` or annotations."""
    branches = [b for b in schema.get("anyOf", [schema]) if b.get("type") != "null"]
    if len(branches) != 1:
        raise AssertionError(f"unexpected order-state field schema: {schema}")
    branch = branches[0]
    if "$ref" in branch:
        branch = defs[branch["$ref"].rsplit("/", 1)[-1]]
    out = {k: branch[k] for k in _KEYWORDS if k in branch}
    if "items" in out:
        out["items"] = _core(out["items"], defs)
    return out


def _field_schemas(max_address_chars: int | None) -> dict[str, dict[str, Any]]:
    model = OrderState.model_json_schema()
    fields = {name: _core(prop, model.get("$defs", {})) for name, prop in model["properties"].items()}
    if max_address_chars:
        fields["deliveryAddress"] |= {"minLength": 1, "maxLength": max_address_chars}
    fields["needsMoreInfo"]["maxItems"] = len(REQUIRED_ORDER_FIELDS)  # no repeats in the canonical list
    return fields


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
