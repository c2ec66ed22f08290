"""Replies from a model for a list of chat prompts: local Hugging Face models or any OpenAI-compatible API.

Both paths take the same prompts (OpenAI chat messages) and return the same `GenerationResult`,
so the cloud model and the local model are measured the same way. Local generation is greedy and
batched with left padding (a decoder continues from the right end of every row, so padding must
sit on the left); prompts are sorted by length before batching to keep padding small. The
``sequential`` mode generates one prompt at a time, so a benchmark can show what batching buys.
Throughput is the number of generated tokens (up to and including the end-of-turn token) per
second of wall time. ``constrained=True`` keeps replies inside the app's JSON schema
(`core.reply_schema`): token masks for a local model (`constrained.JsonSchemaLogitsProcessor`),
``response_format`` json_schema for an endpoint.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from mrdabak_pipeline.core.prompts import PromptKind, parse_prompt_id

Messages = list[dict[str, str]]
Mode = Literal["batched", "sequential"]

#: Chat templates end an assistant turn with one of these; generation stops at the first one.
END_OF_TURN_TOKENS: tuple[str, ...] = ("<|im_end|>", "<|eot_id|>", "<|end|>", "<end_of_turn>")


@dataclass(slots=True)
class GenerationResult:
    """Replies aligned with the prompts, plus how long it took and per-prompt errors."""

    texts: list[str]
    new_tokens: list[int]
    wall_s: float
    mode: str
    backend: str
    model: str
    errors: list[str | None] = field(default_factory=list)
    n_truncated: int = 0
    #: Prompt tokens of each request (system prompt + conversation), in the model's own tokenizer
    #: (local) or as the endpoint billed them (usage.prompt_tokens): what a shorter prompt saves.
    prompt_tokens: list[int] = field(default_factory=list)

    @property
    def total_new_tokens(self) -> int:
        return int(sum(self.new_tokens))

    @property
    def tokens_per_s(self) -> float:
        return self.total_new_tokens / self.wall_s if self.wall_s > 0 else 0.0

    def stats(self) -> dict[str, Any]:
        """The figures a report needs (no texts)."""
        return {
            "backend": self.backend,
            "model": self.model,
            "mode": self.mode,
            "n_prompts": len(self.texts),
            "new_tokens": self.total_new_tokens,
            "wall_s": round(self.wall_s, 4),
            "tokens_per_s": round(self.tokens_per_s, 2),
            "n_errors": sum(e is not None for e in self.errors),
            "n_truncated": self.n_truncated,
            "prompt_tokens_per_request": round(sum(self.prompt_tokens) / len(self.prompt_tokens), 1) if self.prompt_tokens else None,
            "seconds_per_reply": round(self.wall_s / len(self.texts), 4) if self.texts else None,
        }


class ChatGenerator(Protocol):
    """Anything that turns chat prompts into replies."""

    name: str

    def generate(self, prompts: Sequence[Messages], mode: Mode = "batched") -> GenerationResult: ...

    def close(self) -> None: ...


# --- Local Hugging Face models -----------------------------------------------------------------


def json_object_closed(text: str) -> bool:
    """True once `text` holds a complete top-level JSON object (from its first ``{``).

    Strings and escapes are tracked, so a brace inside the customer's message does not count.
    """
    depth, in_string, escaped, started = 0, False, False, False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"' and started:
            in_string = True
        elif ch == "{":
            depth, started = depth + 1, True
        elif ch == "}" and started:
            depth -= 1
            if depth == 0:
                return True
    return False


def reply_length(row: Sequence[int], eos_ids: Sequence[int], pad_id: int | None) -> int:
    """How many of a generated row's tokens were generated: up to and including its end-of-turn
    token, or up to the padding `generate` appends once `ReplyObjectClosed` stopped the row
    (those positions were never generated: counting them would inflate tokens per second)."""
    for k, t in enumerate(row):
        if t in eos_ids:
            return k + 1
        if t == pad_id:
            return k
    return len(row)


class ReplyObjectClosed:
    """Stop a row once its reply holds one complete JSON object: the app reads exactly one.

    A fine-tuned model ends its turn right there anyway; a base model given the prompt-engineered
    prompt often goes on (another "고객:" line, more examples) until `max_new_tokens`, which costs
    minutes on a CPU and would only make its reply unparseable — stopping gives the baseline its
    best chance and the evaluation its time back. (A `transformers.StoppingCriteria`.)
    """

    def __init__(self, tokenizer: Any, prompt_len: int) -> None:
        self.tokenizer, self.prompt_len = tokenizer, prompt_len

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        rows = input_ids[:, self.prompt_len :].tolist()
        done = [json_object_closed(self.tokenizer.decode(r, skip_special_tokens=True)) for r in rows]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


@dataclass
class LocalHFGenerator:
    """Greedy generation with a local causal LM, optionally with a PEFT adapter on top.

    The model is loaded on first use (with `training.sft.load_model_for_inference`, so evaluation
    loads exactly what training saved; an adapter is merged into its base, which generates the
    same replies without the adapter's extra work per step) and freed by `close`, so evaluating a
    base and a fine-tuned model one after the other never holds both in (GPU) memory. Only local
    directories are accepted: nothing is fetched from a hub. `bf16`: the model was trained under
    bf16 autocast, so on a CPU with native bf16 it generates in bf16 too (see the loader).
    """

    model_path: str
    base_model_path: str | None = None
    is_adapter: bool = False
    batch_size: int = 8
    max_new_tokens: int = 256
    device: str = "auto"
    num_threads: int | None = None
    name: str | None = None
    constrained: bool = False
    bf16: bool = False
    _model: Any = field(default=None, init=False, repr=False)
    _tokenizer: Any = field(default=None, init=False, repr=False)
    _ll_tokenizer: Any = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.batch_size = max(1, self.batch_size)
        self.name = self.name or Path(self.model_path).name

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch

        from mrdabak_pipeline.core.training.sft import load_model_for_inference

        if self.num_threads:
            torch.set_num_threads(self.num_threads)
        device = self.device
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if not Path(self.model_path).is_dir():
            raise OSError(f"{self.model_path}: no such model directory (nothing is fetched from a hub)")
        # The same loader training uses to check its own output: adapter on its base, or a full model.
        model, tokenizer = load_model_for_inference(
            self.model_path, self.is_adapter, self.base_model_path, device=device, cpu_bf16=self.bf16,
            merge_adapter=True,
        )
        tokenizer.padding_side = "left"
        tokenizer.truncation_side = "left"  # keep the latest turns when a dialog is too long
        self._model, self._tokenizer, self._device = model, tokenizer, device

    def _eos_ids(self) -> list[int]:
        tok = self._tokenizer
        ids = {tok.eos_token_id} if tok.eos_token_id is not None else set()
        vocab = tok.get_vocab()
        ids.update(vocab[t] for t in END_OF_TURN_TOKENS if t in vocab)
        return sorted(ids)

    def _constraint(self, batch_size: int, prompt_len: int) -> list[Any]:
        """``logits_processor`` for one batch: empty, or the schema mask (tokenizer view cached)."""
        if not self.constrained:
            return []
        from mrdabak_pipeline.core.evaluation import constrained

        if self._ll_tokenizer is None:
            vocab = self._model.get_output_embeddings().weight.shape[0]
            self._ll_tokenizer = constrained.ll_tokenizer(self._tokenizer, vocab, self._eos_ids())
        grammar = constrained.reply_grammar()
        return [constrained.JsonSchemaLogitsProcessor(self._ll_tokenizer, grammar, batch_size, prompt_len)]

    def generate(self, prompts: Sequence[Messages], mode: Mode = "batched") -> GenerationResult:
        import torch
        from transformers import LogitsProcessorList, StoppingCriteriaList

        self._load()
        tok, model = self._tokenizer, self._model
        texts = [tok.apply_chat_template(list(p), tokenize=False, add_generation_prompt=True) for p in prompts]
        eos_ids = self._eos_ids()
        max_pos = getattr(model.config, "max_position_embeddings", None) or 4096
        max_prompt = max(8, max_pos - self.max_new_tokens)
        batch_size = self.batch_size if mode == "batched" else 1
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out_texts = [""] * len(texts)
        out_tokens = [0] * len(texts)
        prompt_tokens = [0] * len(texts)
        n_truncated = 0
        start = time.perf_counter()
        for b in range(0, len(order), batch_size):
            idx = order[b : b + batch_size]
            full = tok([texts[i] for i in idx], add_special_tokens=False)["input_ids"]
            n_truncated += sum(len(ids) > max_prompt for ids in full)
            for i, ids in zip(idx, full, strict=True):
                prompt_tokens[i] = min(len(ids), max_prompt)
            enc = tok(
                [texts[i] for i in idx],
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=max_prompt,
                add_special_tokens=False,
            ).to(self._device)
            with torch.inference_mode():
                out = model.generate(
                    **enc,
                    max_new_tokens=self.max_new_tokens,
                    do_sample=False,
                    pad_token_id=tok.pad_token_id,
                    eos_token_id=eos_ids,
                    logits_processor=LogitsProcessorList(self._constraint(len(idx), enc["input_ids"].shape[1])),
                    stopping_criteria=StoppingCriteriaList([ReplyObjectClosed(tok, enc["input_ids"].shape[1])]),
                )
            new = out[:, enc["input_ids"].shape[1] :].tolist()
            for row, i in zip(new, idx, strict=True):
                cut = reply_length(row, eos_ids, tok.pad_token_id)
                out_tokens[i] = cut
                out_texts[i] = tok.decode(row[:cut], skip_special_tokens=True).strip()
        wall = time.perf_counter() - start
        return GenerationResult(
            texts=out_texts,
            new_tokens=out_tokens,
            wall_s=wall,
            mode=mode,
            backend="local",
            model=self.name,
            errors=[None] * len(texts),
            n_truncated=n_truncated,
            prompt_tokens=prompt_tokens,
        )

    def close(self) -> None:
        self._model = self._tokenizer = self._ll_tokenizer = None
        try:
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        except ImportError:  # pragma: no cover - torch is a dependency
            pass


# --- OpenAI-compatible chat endpoints ----------------------------------------------------------


@dataclass
class OpenAIChatGenerator:
    """Replies from any OpenAI-compatible chat endpoint (OpenAI, Azure OpenAI, vLLM, a test server).

    The API key is read from the environment variable named by `api_key_env` at call time and
    never stored in results. ``batched`` mode sends up to `concurrency` requests at once;
    ``sequential`` sends one after another. A failed request becomes an empty reply with its error
    recorded (it then scores as invalid JSON); only when every request fails is it an error, since
    that means the endpoint itself is unusable. `client` replaces the SDK client (tests).
    """

    model: str
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    azure: bool = False
    api_version: str | None = None
    max_new_tokens: int = 256
    concurrency: int = 4
    timeout_s: float = 60.0
    max_retries: int = 2
    client: Any = field(default=None, repr=False)
    name: str | None = None
    constrained: bool = False

    def __post_init__(self) -> None:
        self.concurrency = max(1, self.concurrency)
        self.name = self.name or self.model

    def _get_client(self) -> Any:
        if self.client is None:
            import openai

            # Local servers (vLLM, tests) accept any key; the real services reject a missing one
            # with a clear 401 that ends up in the per-item errors.
            key = os.environ.get(self.api_key_env) or "EMPTY"
            if self.azure:
                if not self.base_url:
                    raise ValueError("azure backend needs base_url (the Azure OpenAI endpoint)")
                self.client = openai.AzureOpenAI(
                    azure_endpoint=self.base_url,
                    api_key=key,
                    api_version=self.api_version or os.environ.get("OPENAI_API_VERSION", "2024-10-21"),
                    timeout=self.timeout_s,
                    max_retries=self.max_retries,
                )
            else:
                self.client = openai.OpenAI(
                    base_url=self.base_url, api_key=key, timeout=self.timeout_s, max_retries=self.max_retries
                )
        return self.client

    def complete(self, messages: Messages, max_tokens: int | None = None) -> tuple[str, int]:
        """One chat completion, greedy: (reply text, completion tokens)."""
        text, completion_tokens, _prompt_tokens = self._complete(messages, max_tokens)
        return text, completion_tokens

    def _complete(self, messages: Messages, max_tokens: int | None = None) -> tuple[str, int, int]:
        """One chat completion, greedy: (reply text, completion tokens, prompt tokens)."""
        extra: dict[str, Any] = {}
        if self.constrained:
            from mrdabak_pipeline.core.reply_schema import response_format

            extra["response_format"] = response_format()
        resp = self._get_client().chat.completions.create(
            model=self.model,
            messages=list(messages),
            temperature=0,
            max_tokens=max_tokens or self.max_new_tokens,
            **extra,
        )
        text = resp.choices[0].message.content or ""
        usage = getattr(resp, "usage", None)
        return (text.strip(), int(getattr(usage, "completion_tokens", 0) or 0),
                int(getattr(usage, "prompt_tokens", 0) or 0))

    def generate(self, prompts: Sequence[Messages], mode: Mode = "batched") -> GenerationResult:
        def one(p: Messages) -> tuple[str, int, str | None, int]:
            try:
                text, n, n_prompt = self._complete(p)
                return text, n, None, n_prompt
            except Exception as exc:  # noqa: BLE001 - recorded per item, see class docstring
                return "", 0, f"{type(exc).__name__}: {exc}", 0

        start = time.perf_counter()
        workers = self.concurrency if mode == "batched" else 1
        with ThreadPoolExecutor(max_workers=workers) as pool:
            results = list(pool.map(one, prompts))
        wall = time.perf_counter() - start
        errors = [r[2] for r in results]
        if results and all(e is not None for e in errors):
            raise RuntimeError(f"every request to {self.base_url or 'the OpenAI API'} failed; first: {errors[0]}")
        return GenerationResult(
            texts=[r[0] for r in results],
            new_tokens=[r[1] for r in results],
            wall_s=wall,
            mode=mode,
            backend="azure" if self.azure else "openai",
            model=self.name,
            errors=errors,
            prompt_tokens=[r[3] for r in results],
        )

    def close(self) -> None:
        if self.client is not None and hasattr(self.client, "close"):
            self.client.close()
        self.client = None


# --- From the fine_tuned_model asset value -----------------------------------------------------


def generators_for(
    model: Mapping[str, Any],
    batch_size: int = 8,
    max_new_tokens: int = 256,
    device: str = "auto",
    num_threads: int | None = None,
    api_key_env: str | None = None,
    concurrency: int = 4,
    constrained: bool = False,
) -> dict[str, ChatGenerator]:
    """``{"base": ..., "fine_tuned": ...}`` generators for a `fine_tuned_model` value.

    Local: the base is the pretrained model the adapter/full fine-tune started from, the
    fine-tuned one is the adapter or full model dir. A base built from random weights (``tiny``)
    has no prompt-engineered baseline to offer, so it gets no generator (`has_pretrained_base`)
    rather than a 0 % row that compares with nothing. Cloud: both are called on the same endpoint,
    the base by its model name and the fine-tuned one by its id. Which system prompt each one
    gets is `prompt_kinds_for`.
    `constrained` keeps both models' replies inside the reply schema (see the module docstring).
    """
    backend = model.get("backend")
    if backend == "local":
        tuned_path = model.get("model_path")
        if not tuned_path:
            raise ValueError("fine_tuned_model (local) has no model_path")
        base_path = model.get("base_model_path") or model.get("base_model")
        if not base_path:
            raise ValueError("fine_tuned_model (local) has neither base_model_path nor base_model")
        # Both models run in the precision the fine-tune trained in (`trained_in_bf16`), so the
        # comparison is on equal terms.
        common = dict(batch_size=batch_size, max_new_tokens=max_new_tokens, device=device, num_threads=num_threads,
                      constrained=constrained, bf16=trained_in_bf16(model))
        base = {"base": LocalHFGenerator(str(base_path), name=f"base:{Path(str(base_path)).name}", **common)}
        return {
            **(base if has_pretrained_base(model) else {}),
            "fine_tuned": LocalHFGenerator(
                str(tuned_path),
                base_model_path=str(base_path),
                is_adapter=bool(model.get("is_adapter")),
                name=f"fine_tuned:{Path(str(tuned_path)).name}",
                **common,
            ),
        }
    if backend in ("openai", "azure"):
        if not model.get("model_id"):
            raise ValueError(f"fine_tuned_model ({backend}) has no model_id")
        key_env = api_key_env or ("AZURE_OPENAI_API_KEY" if backend == "azure" else "OPENAI_API_KEY")
        common = dict(
            base_url=model.get("base_url"),
            api_key_env=key_env,
            azure=backend == "azure",
            max_new_tokens=max_new_tokens,
            concurrency=concurrency,
            constrained=constrained,
        )
        return {
            "base": OpenAIChatGenerator(str(model.get("base_model")), **common),
            "fine_tuned": OpenAIChatGenerator(str(model["model_id"]), **common),
        }
    raise ValueError(f"unknown fine_tuned_model backend: {backend!r}")


def trained_in_bf16(model: Mapping[str, Any]) -> bool:
    """Whether a model value was trained in bf16 (on a GPU, or under CPU autocast).

    A `fine_tuned_model` value says so in its training metrics; a `promoted_model` value (whose
    ``metrics`` are the evaluation's) carries it as ``bf16``.
    """
    return bool(model.get("bf16", (model.get("metrics") or {}).get("bf16")))


#: Base model names that are built from random weights (nothing was pretrained).
RANDOM_INIT_BASES = frozenset({"tiny"})


def has_pretrained_base(model: Mapping[str, Any]) -> bool:
    """False when the fine-tuned model started from random weights: there is no base to prompt."""
    return not (model.get("backend") == "local" and model.get("base_model") in RANDOM_INIT_BASES)


#: The evaluation's name for the fine-tuned model decoded inside the reply schema.
FINE_TUNED_CONSTRAINED = "fine_tuned_constrained"


def with_constrained_twin(generators: Mapping[str, ChatGenerator]) -> dict[str, ChatGenerator]:
    """`generators` plus the fine-tuned model once more, decoded inside the reply schema.

    The report then shows the same model with and without constrained decoding side by side;
    the promotion gate keeps reading the plain ``fine_tuned`` row (what the app gets without it).
    The twin is a shallow copy made before anything is loaded, so it loads its own weights when
    its turn comes and the two never hold memory at the same time.
    """
    twin = copy.copy(generators["fine_tuned"])
    twin.constrained = True  # type: ignore[attr-defined]
    twin.name = f"{twin.name}+schema"
    return {**generators, FINE_TUNED_CONSTRAINED: twin}


def prompt_kinds_for(model: Mapping[str, Any]) -> dict[str, PromptKind]:
    """The system prompt each generator of `generators_for` runs with.

    The base is today's production assistant: the prompt-engineered ``full`` prompt. The
    fine-tuned model runs with the prompt it was trained with (its recorded ``prompt_id``);
    a model that records none (trained before prompts were versioned) had the full prompt.
    """
    recorded = model.get("prompt_id")
    tuned = parse_prompt_id(recorded)[1] if recorded else PromptKind.FULL
    return {"base": PromptKind.FULL, "fine_tuned": tuned, FINE_TUNED_CONSTRAINED: tuned}
