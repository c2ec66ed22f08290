"""Preference pairs from conversations where an assistant turn was corrected.

A correction is evidence of what the assistant *should* have said. Two signals count:

* the customer says the assistant got it wrong (``아니요``, ``잘못``, ``틀렸``, ``그게 아니라`` ...)
  and the next assistant turn changes an order field the wrong answer had already set: the
  corrected turn is preferred, the original one is not;
* an order field is changed by the very next assistant turn with no customer turn in between
  (the app or an operator overwrote it).

Newly filled fields do not count (the customer supplying an address is not a correction), which
also keeps false alarms from the keyword match (a place name like "정정동") out of the pairs.

A plain change of mind (``프렌치로 바꿀게요``) is *not* a correction — the first answer was right
for what had been said — so it needs an explicit negation, not just a changed state.

The prompt is the conversation up to the customer turn the wrong answer replied to, so both
answers are alternatives to the same context. Records are written in OpenAI's DPO format
(``input`` / ``preferred_output`` / ``non_preferred_output``) and TRL's conversational
``prompt`` / ``chosen`` / ``rejected``. Finding no pairs is normal, not an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from mrdabak_pipeline.core.datasets.chat_format import (
    DEFAULT_VALIDATION_FRACTION,
    TRAIN,
    ExampleError,
    Target,
    session_messages,
    split_of,
)
from mrdabak_pipeline.core.domain import REQUIRED_ORDER_FIELDS, Session
from mrdabak_pipeline.core.prompts import PromptKind

#: The customer telling the assistant it got something wrong (Korean, spoken style).
CORRECTION_RE = re.compile(
    r"(^|[\s,.!?])아니(요|예요|에요|야|오|죠)?([\s,.!?]|$)|아닌데|아니라|아니고|잘못|틀렸|틀려|틀린|정정해|정정 부탁|"
    r"그게 아니|제가 말한 건|말씀드린 건|라고 했는데|라고 했잖아"
)


def is_correction(text: str) -> bool:
    """Whether a customer message says the previous answer was wrong."""
    return bool(CORRECTION_RE.search(text))


@dataclass(frozen=True)
class PreferencePair:
    session_id: str
    source_session_id: str
    reason: str  # "customer_correction" | "state_fixed"
    prompt: list[dict[str, Any]]
    chosen: dict[str, Any]
    rejected: dict[str, Any]

    def openai_record(self) -> dict[str, Any]:
        return {
            "input": {"messages": self.prompt},
            "preferred_output": [self.chosen],
            "non_preferred_output": [self.rejected],
        }

    def trl_record(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "chosen": [self.chosen], "rejected": [self.rejected]}


def _state(message: dict[str, Any]) -> dict[str, Any]:
    return json.loads(message["content"]).get("orderState") or {}


def corrected_fields(wrong: dict[str, Any], fixed: dict[str, Any]) -> list[str]:
    """Order fields the wrong answer had set that the fixed answer sets differently.

    Only *changed* values count: a field filled in for the first time is new information from
    the customer (an address, a time), not evidence that the earlier answer was wrong.
    """
    before, after = _state(wrong), _state(fixed)
    return [f for f in REQUIRED_ORDER_FIELDS if before.get(f) is not None and after.get(f) != before.get(f)]


def session_pairs(session: Session, target: Target | str = Target.JSON, prompt: PromptKind | str = PromptKind.SHORT) -> list[PreferencePair]:
    """Every corrected assistant turn of one session as a preference pair."""
    target = Target(target)
    try:
        messages = session_messages(session, target, prompt)
    except ExampleError:
        return []
    pairs: list[PreferencePair] = []
    for i, wrong in enumerate(messages):
        if wrong["role"] != "assistant" or wrong.get("weight") == 0 or messages[i - 1]["role"] != "user":
            continue
        nxt = messages[i + 1] if i + 1 < len(messages) else None
        if nxt is None:
            continue
        if nxt["role"] == "assistant":
            fixed, reason = nxt, "state_fixed"
            if target is Target.TEXT or not corrected_fields(wrong, fixed):
                continue
        elif nxt["role"] == "user" and is_correction(nxt["content"]) and i + 2 < len(messages):
            fixed, reason = messages[i + 2], "customer_correction"
            if fixed["role"] != "assistant" or fixed.get("weight") == 0:
                continue
            if target is Target.JSON and not corrected_fields(wrong, fixed):
                continue  # nothing the assistant had said was changed: no evidence of a better answer
        else:
            continue
        if fixed["content"] == wrong["content"]:
            continue
        pairs.append(
            PreferencePair(
                session_id=session.session_id,
                source_session_id=session.source_session_id,
                reason=reason,
                prompt=messages[:i],
                chosen={"role": "assistant", "content": fixed["content"]},
                rejected={"role": "assistant", "content": wrong["content"]},
            )
        )
    return pairs


@dataclass
class PreferenceDataset:
    train: list[PreferencePair]
    validation: list[PreferencePair]

    def counts(self) -> dict[str, int]:
        reasons: dict[str, int] = {}
        for p in self.train + self.validation:
            reasons[p.reason] = reasons.get(p.reason, 0) + 1
        return {"train_pairs": len(self.train), "validation_pairs": len(self.validation), **{f"pairs_{k}": v for k, v in sorted(reasons.items())}}


def build_preference_dataset(
    sessions: Iterable[Session],
    target: Target | str = Target.JSON,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    prompt: PromptKind | str = PromptKind.SHORT,
) -> PreferenceDataset:
    """Pairs from all sessions, split by source session exactly like the SFT examples."""
    out = PreferenceDataset([], [])
    seen: set[str] = set()
    for session in sorted(sessions, key=lambda s: (s.source_session_id, s.variant, s.session_id)):
        for pair in session_pairs(session, target, prompt):
            key = json.dumps(pair.openai_record(), ensure_ascii=False, sort_keys=True)
            if key in seen:
                continue
            seen.add(key)
            split = split_of(pair.source_session_id, validation_fraction)
            (out.train if split == TRAIN else out.validation).append(pair)
    return out
