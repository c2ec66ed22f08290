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
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from functools import lru_cache
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
from mrdabak_pipeline.core.runtime.files import json_bytes

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


@dataclass
class ChatDataset:
    """The examples of both splits plus what was left out and why."""

    train: list[dict[str, Any]] = field(default_factory=list)
    validation: list[dict[str, Any]] = field(default_factory=list)
    source_sessions: dict[str, set[str]] = field(default_factory=lambda: {TRAIN: set(), VALIDATION: set()})
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (session_id, reason)
    n_train: int = 0  # counted separately: the streaming writer keeps no example lists
    n_validation: int = 0
    duplicates_dropped: int = 0
    untrained_assistant_turns: int = 0
    high_water_mark: datetime | None = None
    target: str = Target.JSON.value
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION

    def counts(self) -> dict[str, int]:
        return {
            "train_examples": self.n_train,
            "validation_examples": self.n_validation,
            "train_source_sessions": len(self.source_sessions[TRAIN]),
            "validation_source_sessions": len(self.source_sessions[VALIDATION]),
            "skipped_sessions": len(self.skipped),
            "duplicates_dropped": self.duplicates_dropped,
            "untrained_assistant_turns": self.untrained_assistant_turns,
        }


def _order_key(s: Session) -> tuple[datetime, str, int, str]:
    return (s.created_at or datetime.min, s.source_session_id, s.variant, s.session_id)


@lru_cache(maxsize=4096)
def system_prefix(system_text: str) -> bytes:
    """The start of a line, up to and including the system message (conversations that started
    in the same minute share it, so it is serialized once per minute, not per example)."""
    return b'{"messages":[' + json_bytes({"role": "system", "content": system_text})


class ExampleCollector:
    """The order-independent bookkeeping of a dataset build: dedup, counts, skips, high-water mark.

    Shared by the in-process generator and the column-wise writer (`chat_lines.iter_chat_blocks`),
    which feeds it candidates computed chunk by chunk; either way the same examples are kept and
    counted.
    """

    def __init__(self, ds: ChatDataset) -> None:
        self.ds = ds
        self.seen: set[bytes] = set()

    def skip(self, session_id: str, reason: str) -> None:
        self.ds.skipped.append((session_id, reason))

    def keep(self, key: bytes, source_session_id: str, created_at: datetime | None, untrained: int, split: str) -> bool:
        """Count a new example; False for an exact duplicate of one already kept."""
        ds = self.ds
        if key in self.seen:
            ds.duplicates_dropped += 1
            return False
        self.seen.add(key)
        if split == TRAIN:
            ds.n_train += 1
        else:
            ds.n_validation += 1
        ds.source_sessions[split].add(source_session_id)
        ds.untrained_assistant_turns += untrained
        if created_at is not None and (ds.high_water_mark is None or created_at > ds.high_water_mark):
            ds.high_water_mark = created_at
        return True

    def collect(self, candidates: Iterable[tuple[Any, ...]]) -> Iterator[tuple[str, list[dict[str, Any]] | None, bytes]]:
        """``(split, messages, line)`` of the candidates (`example_candidates`) that are kept, in order."""
        for c in candidates:
            if c[0] == "skip":
                self.skip(c[1], c[2])
            elif self.keep(c[0], c[1], c[2], c[3], c[5]):
                yield c[5], c[6], c[4]


def _example_line(session: Session, target: Target, prompt: PromptKind | str) -> tuple[list[dict[str, Any]], bytes, bytes]:
    """(messages, JSONL line, dedup key) of one session; raises `ExampleError` like `session_messages`.

    The line is `files.json_bytes({"messages": messages})`, byte for byte, but the system message,
    identical in every example and most of its characters, is serialized once rather than per
    example. Two examples are the same exactly when their lines are (the messages' keys always
    come in the same order), so the key is a digest of the line (`line_key`).
    """
    messages = session_messages(session, target, prompt)
    rest = json_bytes(messages[1:])  # never empty: an example has at least one assistant turn
    line = system_prefix(messages[0]["content"]) + b"," + rest[1:] + b"}"
    return messages, line, line_key(line)


def line_key(line: bytes | memoryview) -> bytes:
    """The dedup key of a JSONL line (without its newline): equal keys, equal examples.

    128 bits of sha256 (hardware-accelerated on current CPUs, faster than blake2b here).
    """
    return hashlib.sha256(line).digest()[:16]


def _untrained(messages: list[dict[str, Any]]) -> int:
    return sum(1 for m in messages if m.get("weight") == 0)


def example_candidates(
    sessions: Iterable[Session], target: Target, prompt: PromptKind | str, fraction: float, keep_messages: bool
) -> Iterator[tuple[Any, ...]]:
    """Per session, in order: ``("skip", session_id, reason)`` or
    ``(key, source_session_id, created_at, untrained, line, split, messages or None)``."""
    for session in sessions:
        try:
            messages, line, key = _example_line(session, target, prompt)
        except ExampleError as exc:
            yield ("skip", session.session_id, str(exc))
            continue
        src = session.source_session_id
        yield (key, src, session.created_at, _untrained(messages), line, split_of(src, fraction), messages if keep_messages else None)


def iter_chat_examples(
    sessions: Iterable[Session],
    target: Target | str = Target.JSON,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    prompt: PromptKind | str = PromptKind.SHORT,
    stats: ChatDataset | None = None,
) -> Iterator[tuple[str, dict[str, Any], bytes]]:
    """``(split, example, JSONL line as UTF-8)`` for every usable session, deduplicated, in file order.

    A generator so a dataset of any size is written line by line: nothing but the 16-byte dedup
    digests (and the sorted sessions the caller already holds) grows with the data. `stats` (a
    `ChatDataset` whose example lists stay empty) receives the counts, skips and high-water mark.
    """
    ds = stats if stats is not None else ChatDataset(target=Target(target).value, validation_fraction=validation_fraction)
    ordered = sorted(sessions, key=_order_key)
    for split, messages, line in ExampleCollector(ds).collect(example_candidates(ordered, Target(target), prompt, ds.validation_fraction, True)):
        yield split, {"messages": messages}, line


def build_chat_dataset(
    sessions: Iterable[Session],
    target: Target | str = Target.JSON,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    prompt: PromptKind | str = PromptKind.SHORT,
) -> ChatDataset:
    """Examples for every usable session, split by source session, in a deterministic order.

    The order (created_at, source id, variant) makes the files byte-identical for the same input,
    so their sha256 identifies the data. Exact duplicate examples (an augmented variant that
    changed nothing) are kept once; sessions that cannot be used are listed with the reason.
    Holds every example in memory: for writing files use `iter_chat_examples` (what
    `dataset_build.write_openai_dataset` does), which streams.
    """
    ds = ChatDataset(target=Target(target).value, validation_fraction=validation_fraction)
    for split, example, _line in iter_chat_examples(sessions, target, validation_fraction, prompt, ds):
        (ds.train if split == TRAIN else ds.validation).append(example)
    return ds


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
