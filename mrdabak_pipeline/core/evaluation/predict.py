"""Try a model outside evaluation: conversations in, the app's replies out (``mrdabak predict`` / ``chat``).

A model is named the way people think of it — ``promoted`` (what production points to), a folder
(an adapter or a full model), a JSON file holding a `fine_tuned_model` / `promoted_model` value, or
an endpoint model id (``ft:...``, or any name with a base URL, e.g. a vLLM served name) — and
resolved to a `ModelSpec`. Replies come from the very generators evaluation uses
(`generate.LocalHFGenerator` / `generate.OpenAIChatGenerator`), batched, so what ``predict`` shows is
what evaluation measured. The system prompt is rendered from each conversation's ``now`` and the
prompt the model was trained with (`prompts`), never stored with the input.

Input line: ``{"id": ..., "now": "2026-12-01T15:00:00+09:00", "messages": [user/assistant turns]}``,
assistant turns in the app's JSON (a string, or the ``{"message", "orderState"}`` object itself).
Output line: ``{"id": ..., "reply": raw text, "parsed": {"message", "orderState"} | null}`` plus
``"error"`` when the line could not be answered.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from mrdabak_pipeline.core import prompts
from mrdabak_pipeline.core.datasets.validation import INVALID_JSON
from mrdabak_pipeline.core.domain import OrderStateError, assistant_target, parse_assistant_reply
from mrdabak_pipeline.core.evaluation.generate import (
    ChatGenerator,
    LocalHFGenerator,
    Messages,
    OpenAIChatGenerator,
    prompt_kinds_for,
    trained_in_bf16,
)

PROMOTED = "promoted"
#: Where the `promoted_model` asset writes its value, under the data dir.
PROMOTED_POINTER = Path("models") / "promoted.json"


class ModelSpecError(ValueError):
    """A ``--model`` value that names no usable model; the message says what was expected."""


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """One model to call: a local folder (adapter or full) or a model id on an OpenAI-compatible API."""

    backend: str  # "local" | "openai" | "azure"
    label: str
    model_path: str | None = None
    base_model_path: str | None = None
    is_adapter: bool = False
    model_id: str | None = None
    base_url: str | None = None
    prompt_id: str | None = None
    #: The prompt when none is recorded nor asked for (see `choose_prompt`).
    default_prompt: prompts.PromptKind = prompts.PromptKind.SHORT
    #: Trained in bf16, so a local model generates in bf16 where the CPU has it (`LocalHFGenerator`).
    bf16: bool = False

    @property
    def is_local(self) -> bool:
        return self.backend == "local"


def spec_from_value(value: Mapping[str, Any], label: str = "") -> ModelSpec:
    """A `fine_tuned_model` value or a `promoted_model` value (they share the field names that matter)."""
    backend = value.get("backend")
    pid = value.get("prompt_id")
    # A value without a prompt id is a model trained before prompts were versioned: evaluation ran
    # it with the full prompt, and so does prediction (one rule: `generate.prompt_kinds_for`).
    default = prompt_kinds_for(value)["fine_tuned"]
    if backend == "local":
        path = value.get("model_path")
        if not path:
            raise ModelSpecError("local model value has no model_path")
        is_adapter = bool(value.get("is_adapter")) or value.get("kind") == "adapter"
        base = value.get("base_model_path") if is_adapter else None
        return ModelSpec("local", label or str(path), model_path=str(path),
                         base_model_path=str(base) if base else None, is_adapter=is_adapter, prompt_id=pid,
                         default_prompt=default, bf16=trained_in_bf16(value))
    if backend in ("openai", "azure"):
        # Azure calls a deployment, not the model id (see promotion.serving_instructions).
        model_id = value.get("deployment") or value.get("model_id")
        if not model_id:
            raise ModelSpecError(f"{backend} model value has no model_id")
        return ModelSpec(str(backend), label or str(model_id), model_id=str(model_id),
                         base_url=value.get("base_url"), prompt_id=pid, default_prompt=default)
    raise ModelSpecError(f"unknown model backend {backend!r}")


def resolve_model(
    spec: str,
    data_dir: Path,
    base_url: str | None = None,
    azure: bool = False,
    base_model: str | None = None,
    prompt_id: str | None = None,
) -> ModelSpec:
    """Turn a ``--model`` value into a `ModelSpec` (see the module docstring for the forms).

    `base_url` makes any name an endpoint model; `base_model` is the base of an adapter folder when
    its adapter_config.json no longer points at it; `prompt_id` records the prompt a bare folder
    or endpoint model was trained with (values carry their own).
    """
    if spec == PROMOTED:
        pointer = data_dir / PROMOTED_POINTER
        if not pointer.exists():
            raise ModelSpecError(f"no promoted model: {pointer} does not exist (materialize promoted_model first)")
        return spec_from_value(json.loads(pointer.read_text(encoding="utf-8")), label=PROMOTED)
    if base_url or azure or spec.startswith("ft:"):
        return ModelSpec("azure" if azure else "openai", spec, model_id=spec, base_url=base_url, prompt_id=prompt_id)
    path = Path(spec)
    if path.is_file() and path.suffix == ".json":
        return spec_from_value(json.loads(path.read_text(encoding="utf-8")), label=spec)
    if path.is_dir():
        is_adapter = (path / "adapter_config.json").exists()
        return ModelSpec("local", spec, model_path=str(path.absolute()),
                         base_model_path=base_model if is_adapter else None, is_adapter=is_adapter,
                         prompt_id=prompt_id)
    raise ModelSpecError(
        f"--model {spec!r}: not 'promoted', a model folder, a model-value .json file, "
        "or an endpoint model (ft:... or any name with --base-url)"
    )


def build_generator(
    spec: ModelSpec,
    *,
    constrained: bool = False,
    batch_size: int = 8,
    max_new_tokens: int = 256,
    device: str = "auto",
    num_threads: int | None = None,
    concurrency: int = 4,
    api_key_env: str | None = None,
) -> ChatGenerator:
    """The evaluation generator for `spec` (nothing is loaded or called until the first reply)."""
    if spec.is_local:
        return LocalHFGenerator(
            str(spec.model_path), base_model_path=spec.base_model_path, is_adapter=spec.is_adapter,
            batch_size=batch_size, max_new_tokens=max_new_tokens, device=device, num_threads=num_threads,
            name=spec.label, constrained=constrained, bf16=spec.bf16,
        )
    key_env = api_key_env or ("AZURE_OPENAI_API_KEY" if spec.backend == "azure" else "OPENAI_API_KEY")
    return OpenAIChatGenerator(
        str(spec.model_id), base_url=spec.base_url, api_key_env=key_env, azure=spec.backend == "azure",
        max_new_tokens=max_new_tokens, concurrency=concurrency, name=spec.label, constrained=constrained,
    )


@dataclass(frozen=True, slots=True)
class PromptChoice:
    """The system prompt a model is run with: its kind and template version."""

    kind: prompts.PromptKind
    version: int

    @property
    def prompt_id(self) -> str:
        return prompts.prompt_id(self.kind, self.version)


def choose_prompt(spec: ModelSpec, requested: str | None = None) -> PromptChoice:
    """The prompt the model was trained with; `requested` (full/short) only for models that record none.

    Running a model with another prompt than its own measures nothing useful, so a conflicting
    request is refused (`prompts.PromptMismatchError`). A model that records nothing gets the
    requested kind, else its spec's default: FULL for an unversioned model value (as evaluation
    runs it), SHORT for a bare folder or endpoint id (what fine-tuned models are trained with).
    """
    if spec.prompt_id:
        version, kind = prompts.parse_prompt_id(spec.prompt_id)
        if requested:
            prompts.check_prompt_id(spec.prompt_id, prompts.prompt_id(requested, version))
        return PromptChoice(kind, version)
    return PromptChoice(prompts.PromptKind(requested or spec.default_prompt), prompts.PROMPT_VERSION)


# --- Input lines -> prompts ---------------------------------------------------------------------


@dataclass(slots=True)
class Conversation:
    """One input line: its id, moment, and turns (assistant turns already in the app's JSON text)."""

    id: Any
    now: datetime
    turns: list[dict[str, str]] = field(default_factory=list)


def _turn(message: Any, pos: int) -> dict[str, str]:
    if not isinstance(message, Mapping):
        raise ValueError(f"messages[{pos}]: not an object")
    role, content = message.get("role"), message.get("content")
    if role not in ("user", "assistant"):
        raise ValueError(f"messages[{pos}]: role must be user or assistant (the system prompt comes from 'now')")
    if role == "assistant" and isinstance(content, Mapping):
        content = assistant_target(str(content.get("message", "")), content.get("orderState"))
    if not isinstance(content, str):
        raise ValueError(f"messages[{pos}]: content must be a string")
    return {"role": str(role), "content": content}


def parse_conversation(obj: Any) -> Conversation:
    """Validate one input object; ValueError says what is wrong (the line gets an error, not a crash)."""
    if not isinstance(obj, Mapping):
        raise ValueError("not a JSON object")
    if "now" not in obj:
        raise ValueError("no 'now': the conversation's moment is needed for its system prompt")
    now = prompts.parse_now(obj["now"])
    messages = obj.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ValueError("no messages list")
    turns = [_turn(m, i) for i, m in enumerate(messages)]
    if turns[-1]["role"] != "user":
        raise ValueError("the last message must be the user's (the reply to it is predicted)")
    return Conversation(obj.get("id"), now, turns)


def prompt_messages(conv: Conversation, choice: PromptChoice) -> Messages:
    """The chat the model sees: the system prompt rendered at the conversation's now, then the turns."""
    system = prompts.system_prompt(conv.now, choice.kind, choice.version)
    return [{"role": "system", "content": system}, *conv.turns]


def parse_reply(text: str) -> dict[str, Any] | None:
    """``{"message", "orderState"}`` as the app would read `text`, or None when it could not."""
    try:
        message, state = parse_assistant_reply(text)
    except OrderStateError:
        return None
    return {"message": message, "orderState": state}


# --- Batched prediction --------------------------------------------------------------------------


@dataclass(slots=True)
class PredictStats:
    """What a run did (no customer text): counts and time."""

    n_lines: int = 0
    n_answered: int = 0
    n_parsed: int = 0
    n_input_errors: int = 0
    n_generation_errors: int = 0
    wall_s: float = 0.0
    new_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "lines": self.n_lines,
            "answered": self.n_answered,
            "parsed": self.n_parsed,
            "json_valid_rate": round(self.n_parsed / self.n_answered, 4) if self.n_answered else None,
            "input_errors": self.n_input_errors,
            "generation_errors": self.n_generation_errors,
            "wall_s": round(self.wall_s, 3),
            "s_per_reply": round(self.wall_s / self.n_answered, 4) if self.n_answered else None,
            "new_tokens": self.new_tokens,
        }


def predict_objects(
    objects: Sequence[Any],
    generator: ChatGenerator,
    choice: PromptChoice,
) -> tuple[list[dict[str, Any]], PredictStats]:
    """One output record per input object, in order; all valid conversations in one batched call."""
    stats = PredictStats(n_lines=len(objects))
    records: list[dict[str, Any]] = []
    prompts_: list[Messages] = []
    slots: list[int] = []
    for pos, obj in enumerate(objects):
        ident = obj.get("id") if isinstance(obj, Mapping) else None
        try:
            conv = parse_conversation(obj)
        except ValueError as exc:
            stats.n_input_errors += 1
            records.append({"id": ident, "reply": None, "parsed": None, "error": f"input: {exc}"})
            continue
        records.append({"id": conv.id, "reply": None, "parsed": None})
        prompts_.append(prompt_messages(conv, choice))
        slots.append(pos)
    if prompts_:
        run = generator.generate(prompts_, mode="batched")
        stats.wall_s, stats.new_tokens = run.wall_s, run.total_new_tokens
        errors = run.errors or [None] * len(prompts_)
        for pos, text, err in zip(slots, run.texts, errors, strict=True):
            rec = records[pos]
            rec["reply"] = text
            rec["parsed"] = parse_reply(text)
            stats.n_answered += 1
            stats.n_parsed += rec["parsed"] is not None
            if err:
                rec["error"] = err
                stats.n_generation_errors += 1
    return records, stats


def read_objects(path: str | Path) -> list[Any]:
    """The input file's non-blank lines as objects; a line that is not JSON becomes None (its output
    line then says "not a JSON object"), so outputs stay aligned with inputs."""
    return [None if obj is INVALID_JSON else obj for obj in _objects(path)]


def _objects(path: str | Path) -> Iterable[Any]:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                try:
                    yield json.loads(line)
                except json.JSONDecodeError:
                    yield INVALID_JSON


def chat_turn(
    generator: ChatGenerator, choice: PromptChoice, conv: Conversation, user_text: str
) -> tuple[str, dict[str, Any] | None]:
    """Add the user's turn, get the reply, keep it in the conversation: (raw reply, parsed or None).

    The reply goes back into the history as the model wrote it, so the next turn sees what a real
    app session would (the app would show an error for an unparseable one; the history keeps it).
    """
    conv.turns.append({"role": "user", "content": user_text})
    run = generator.generate([prompt_messages(conv, choice)], mode="batched")
    if run.errors and run.errors[0]:
        conv.turns.pop()
        raise RuntimeError(run.errors[0])
    text = run.texts[0]
    conv.turns.append({"role": "assistant", "content": text})
    return text, parse_reply(text)


def order_state_lines(state: Mapping[str, Any]) -> list[str]:
    """The order state, one ``key: value`` per known field, for a terminal."""
    return [f"{k}: {json.dumps(v, ensure_ascii=False) if not isinstance(v, str) else v}" for k, v in state.items()]
