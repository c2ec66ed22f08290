"""Sessions -> OpenAI chat fine-tuning examples; the stable train/validation split; the golden set.

One example per conversation: the system prompt (`prompts.system_prompt`: the versioned template
of the chosen kind, carrying the moment the conversation started), then the turns. The assistant's side is either the app's
JSON (``{"message": ..., "orderState": {...}}``, `domain.assistant_target`; the default, because
the production app parses it) or the reply text only.

The split hashes the *source* session id, so a session and all its augmented variants land on
the same side, and a session never changes side as data grows: no variant of a validation
conversation can leak into training.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Any

from mrdabak_pipeline.core.domain import (
    OrderStateError,
    Session,
    assistant_target,
    parse_assistant_reply,
)
from mrdabak_pipeline.core.prompts import PromptKind, parse_now, system_prompt

DEFAULT_VALIDATION_FRACTION = 0.1
#: Changing the salt reshuffles every split: only do it on purpose (it invalidates comparisons).
SPLIT_SALT = "mrdabak-split-v1"
TRAIN, VALIDATION = "train", "validation"


def packaged_golden_path() -> Path:
    """The hand-written evaluation set shipped inside the package (``[tool.setuptools.package-data]``).

    Why package data and not the source tree: a wheel, a non-editable install or a container image
    has no ``data/`` folder, and evaluation must find the same set there as in a checkout.
    """
    return Path(str(resources.files("mrdabak_pipeline") / "golden" / "golden.jsonl"))


#: The default golden set (see `packaged_golden_path`).
GOLDEN_PATH = packaged_golden_path()


class Target(StrEnum):
    """What the assistant messages of an example contain."""

    JSON = "json"  # the app's {"message", "orderState"} JSON (default)
    TEXT = "text"  # the reply text only


class ExampleError(ValueError):
    """A session that cannot become a training example; the message is the reason."""


def split_score(source_session_id: str, salt: str = SPLIT_SALT) -> float:
    """A uniform number in [0, 1) that depends on the id only (sha256, not Python's salted hash)."""
    digest = hashlib.sha256(f"{salt}\x00{source_session_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def split_of(source_session_id: str, validation_fraction: float = DEFAULT_VALIDATION_FRACTION, salt: str = SPLIT_SALT) -> str:
    """``"validation"`` for about `validation_fraction` of source sessions, else ``"train"``.

    Raising the fraction only moves sessions from train to validation, never back.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    return VALIDATION if split_score(source_session_id, salt) < validation_fraction else TRAIN


def session_system_prompt(session: Session, prompt: PromptKind | str = PromptKind.SHORT) -> str:
    """The system message of a logged conversation: the `prompt` kind at the session's start.

    The start (`created_at`, Seoul wall clock) is the "now" relative dates in the customer's
    words were said against; without it the example would teach guessing, so it is refused.
    """
    if session.created_at is None:
        raise ExampleError("no conversation time (created_at): its relative dates cannot be resolved")
    return system_prompt(session.created_at, prompt)


def session_messages(session: Session, target: Target | str = Target.JSON, prompt: PromptKind | str = PromptKind.SHORT) -> list[dict[str, Any]]:
    """The chat messages of one session; raises `ExampleError` when there is nothing to learn.

    Trailing customer turns (no reply to learn from) are dropped. With the JSON target an
    assistant turn without an order_state (lost or invalid in the log) keeps the previous state
    as context but gets ``"weight": 0``, so OpenAI does not train on a state we do not know.
    """
    target = Target(target)
    turns = list(session.turns)
    while turns and turns[-1].role != "assistant":
        turns.pop()
    if not turns:
        raise ExampleError("no assistant turn")
    messages: list[dict[str, Any]] = []
    state: Mapping[str, Any] | None = None
    for i, turn in enumerate(turns):
        if turn.role not in ("user", "assistant"):
            raise ExampleError(f"turn {i}: unexpected role {turn.role!r}")
        if not isinstance(turn.content, str) or not turn.content.strip():
            raise ExampleError(f"turn {i}: empty {turn.role} content")
        if turn.role == "user":
            messages.append({"role": "user", "content": turn.content})
            continue
        if target is Target.TEXT:
            messages.append({"role": "assistant", "content": turn.content})
            continue
        known = turn.order_state is not None
        if known:
            state = turn.order_state
        message: dict[str, Any] = {"role": "assistant", "content": assistant_target(turn.content, state)}
        if not known:
            message["weight"] = 0
        messages.append(message)
    return [{"role": "system", "content": session_system_prompt(session, prompt)}, *messages]


def session_to_example(session: Session, target: Target | str = Target.JSON, prompt: PromptKind | str = PromptKind.SHORT) -> dict[str, Any]:
    """An OpenAI chat fine-tuning example: ``{"messages": [...]}``."""
    return {"messages": session_messages(session, target, prompt)}


# --- the golden evaluation set -----------------------------------------------------------------


class GoldenFormatError(ValueError):
    """The golden file is malformed; the message names the line and the problem."""


@dataclass(frozen=True)
class GoldenExample:
    """A hand-written conversation whose last assistant message is the reference answer.

    `messages` starts with the system message rendered for the conversation's `now` (the kind
    `load_golden` was asked for); evaluation re-renders it for each model's own prompt kind.
    """

    id: str
    category: str
    now: datetime
    messages: list[dict[str, str]]

    @property
    def prompt(self) -> list[dict[str, str]]:
        """Everything before the reference: what the model is given."""
        return self.messages[:-1]

    @property
    def reference(self) -> str:
        return self.messages[-1]["content"]

    @property
    def reference_state(self) -> dict[str, Any]:
        return parse_assistant_reply(self.reference)[1]

    def as_example(self) -> dict[str, Any]:
        return {"messages": self.messages}


GOLDEN_KEYS = {"id", "category", "now", "messages"}


def load_golden(path: str | Path | None = None, prompt: PromptKind | str = PromptKind.SHORT) -> list[GoldenExample]:
    """Read and check the golden set; each conversation gets the `prompt` kind's system message.

    A line is ``{"id", "category", "now", "messages": [user/assistant turns...]}`` — the same
    shape `mrdabak predict` reads — with no system message: the prompt is rendered from ``now``
    (the moment the customer spoke, which relative dates refer to), so an edited or versioned
    prompt never leaves the golden set stale.
    """
    path = Path(path) if path else GOLDEN_PATH
    out: list[GoldenExample] = []
    ids: set[str] = set()
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            raise GoldenFormatError(f"{where}: not JSON ({exc.msg})") from None
        if not isinstance(obj, dict) or set(obj) != GOLDEN_KEYS:
            raise GoldenFormatError(f"{where}: expected exactly the keys {sorted(GOLDEN_KEYS)}")
        if obj["id"] in ids:
            raise GoldenFormatError(f"{where}: duplicate id {obj['id']!r}")
        try:
            now = parse_now(obj["now"])
        except ValueError as exc:
            raise GoldenFormatError(f"{where}: {exc}") from None
        messages = obj["messages"]
        if not isinstance(messages, list) or len(messages) < 2:
            raise GoldenFormatError(f"{where}: messages must be [user, ..., assistant]")
        if any(not isinstance(m, dict) or set(m) != {"role", "content"} for m in messages):
            raise GoldenFormatError(f"{where}: each message needs exactly role and content")
        if any(m["role"] not in ("user", "assistant") for m in messages):
            raise GoldenFormatError(f"{where}: only user/assistant messages (the system prompt is rendered from 'now')")
        if messages[0]["role"] != "user" or messages[-1]["role"] != "assistant":
            raise GoldenFormatError(f"{where}: must start with a user turn and end with an assistant reply")
        for m in messages:
            if m["role"] == "assistant":
                try:
                    parse_assistant_reply(m["content"])
                except OrderStateError as exc:
                    raise GoldenFormatError(f"{where}: assistant reply is not the app's JSON: {exc}") from None
        ids.add(obj["id"])
        messages = [{"role": "system", "content": system_prompt(now, prompt)}, *messages]
        out.append(GoldenExample(id=obj["id"], category=obj["category"], now=now, messages=messages))
    if not out:
        raise GoldenFormatError(f"{path}: no examples")
    return out
