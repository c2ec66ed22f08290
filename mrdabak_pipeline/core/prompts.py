"""The system prompt the model sees, with the conversation's "now": the contract with the app.

A customer says "내일 저녁 7시" and the order state must say ``2026-12-02`` / ``19:00``: that is only
learnable (and only checkable) when the model is told what day it is. So every example — training,
validation, golden, evaluation and inference — carries the conversation's moment in Asia/Seoul in
its system message. For logged data the moment is the session's start (`Session.created_at`, naive
Seoul wall clock); at inference the app supplies it.

The prompt texts are versioned template files shipped with the package
(``mrdabak_pipeline/prompts/<prompt id>.txt``), so the app can load exactly the text a model was
trained with; ``{{now}}`` in a template is replaced by `now_line`. Two kinds:

- ``full``: the prompt-engineered assistant (menu, rules, JSON shape, an example) — what production
  runs today on a model that was not fine-tuned, and the honest baseline in evaluation;
- ``short``: role + now only — what a fine-tuned model needs, the rest having been learned.

A fine-tuned model records the prompt id it was trained with; evaluation and prediction refuse a
mismatch (`check_prompt_id`).
"""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum
from functools import cache
from importlib import resources
from zoneinfo import ZoneInfo

SEOUL = ZoneInfo("Asia/Seoul")
#: Bump together with new template files when the wording changes; old files stay for old models.
PROMPT_VERSION = 2
KO_WEEKDAYS = ("월", "화", "수", "목", "금", "토", "일")
_NOW_PLACEHOLDER = "{{now}}"
_NOW_RE = re.compile(r"현재 시각: (\d{4}-\d{2}-\d{2})\([월화수목금토일]\) (\d{2}:\d{2}) \(Asia/Seoul\)")


class PromptKind(StrEnum):
    """Which system prompt: the prompt-engineered one or the fine-tuned model's short one."""

    FULL = "full"
    SHORT = "short"


class PromptMismatchError(ValueError):
    """A model is asked to run with a prompt other than the one it was trained with."""


def prompt_id(kind: PromptKind | str = PromptKind.SHORT, version: int = PROMPT_VERSION) -> str:
    """The versioned name of a prompt, e.g. ``mrdabak-v2-short``: recorded with every model."""
    return f"mrdabak-v{version}-{PromptKind(kind).value}"


def parse_prompt_id(value: str) -> tuple[int, PromptKind]:
    """``"mrdabak-v2-short"`` -> ``(2, PromptKind.SHORT)``; ValueError for anything else."""
    m = re.fullmatch(r"mrdabak-v(\d+)-(full|short)", value or "")
    if not m:
        raise ValueError(f"not a prompt id: {value!r} (expected e.g. {prompt_id()!r})")
    return int(m.group(1)), PromptKind(m.group(2))


@cache
def template(pid: str) -> str:
    """The template text of a prompt id, from the package (fails loudly when it is not shipped)."""
    parse_prompt_id(pid)
    path = resources.files("mrdabak_pipeline") / "prompts" / f"{pid}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template {pid!r} in the package (mrdabak_pipeline/prompts/)")
    text = path.read_text(encoding="utf-8").rstrip("\n")
    if _NOW_PLACEHOLDER not in text:
        raise ValueError(f"prompt template {pid!r} has no {_NOW_PLACEHOLDER} placeholder")
    return text


def parse_now(value: str | datetime) -> datetime:
    """An aware datetime in Asia/Seoul; a naive value is read as Seoul wall-clock time (the DB's)."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            raise ValueError(f"now: not an ISO 8601 date-time: {value!r}") from None
    if not isinstance(value, datetime):
        raise ValueError(f"now: expected a date-time, got {type(value).__name__}")
    return value.replace(tzinfo=SEOUL) if value.tzinfo is None else value.astimezone(SEOUL)


def now_line(now: str | datetime) -> str:
    """``현재 시각: 2026-12-01(화) 15:00 (Asia/Seoul)``: date, weekday and minute, nothing more."""
    t = parse_now(now)
    return f"현재 시각: {t:%Y-%m-%d}({KO_WEEKDAYS[t.weekday()]}) {t:%H:%M} (Asia/Seoul)"


def system_prompt(now: str | datetime, kind: PromptKind | str = PromptKind.SHORT, version: int = PROMPT_VERSION) -> str:
    """The system message for a conversation at `now`."""
    return template(prompt_id(kind, version)).replace(_NOW_PLACEHOLDER, now_line(now))


def now_from_system(text: str) -> datetime | None:
    """The moment a rendered system message carries (inverse of `now_line`), or None.

    Lets evaluation re-render an example's system message for another prompt kind (the baseline
    gets the full prompt of the very same moment) without a side channel next to the messages.
    """
    m = _NOW_RE.search(text or "")
    if not m:
        return None
    return datetime.fromisoformat(f"{m.group(1)}T{m.group(2)}").replace(tzinfo=SEOUL)


def with_system_prompt(messages: list[dict], kind: PromptKind | str, now: str | datetime | None = None) -> list[dict]:
    """`messages` with the system message rendered for `kind` at `now` (default: the moment the
    existing system message carries). Raises ValueError when no moment is known."""
    rest = messages[1:] if messages and messages[0].get("role") == "system" else messages
    if now is None:
        now = now_from_system(messages[0]["content"]) if messages and messages[0].get("role") == "system" else None
        if now is None:
            raise ValueError("the conversation carries no moment ('now'): cannot render its system prompt")
    return [{"role": "system", "content": system_prompt(now, kind)}, *rest]


def check_prompt_id(model_prompt_id: str | None, requested: str) -> None:
    """Refuse to run a model with a prompt other than the one it was trained with.

    A model that records no prompt id (a base model, an old run) accepts any prompt.
    """
    if model_prompt_id and model_prompt_id != requested:
        raise PromptMismatchError(
            f"the model was trained with prompt {model_prompt_id!r} but is being run with {requested!r}: "
            "use the prompt it was trained with (or retrain)"
        )
