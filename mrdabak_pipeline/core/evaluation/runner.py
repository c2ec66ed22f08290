"""One evaluation: the same items through every model, scored, summarized per source and overall.

Each model generates once over all items (validation + golden together, so batching is used
fully); the scores are then sliced per source. The returned dict is plain JSON-able data: it is
what the report renders, what the promotion gate reads, and what the Dagster asset stores.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mrdabak_pipeline.core.datasets.validation import INVALID_JSON, read_jsonl
from mrdabak_pipeline.core.evaluation.generate import ChatGenerator, Messages
from mrdabak_pipeline.core.evaluation.metrics import (
    EvalItem,
    ItemScore,
    SkippedItem,
    apply_judge,
    consistency_groups,
    corpus_chrf,
    score_replies,
    summarize,
)
from mrdabak_pipeline.core.prompts import PromptKind, prompt_id, with_system_prompt

ALL = "all"


def read_chat_jsonl(path: str | Path, source: str) -> tuple[list[dict[str, Any]], list[SkippedItem]]:
    """Chat examples from a JSONL file; a line that is not a JSON object is skipped with its reason."""
    examples: list[dict[str, Any]] = []
    skipped: list[SkippedItem] = []
    for lineno, obj in read_jsonl(path):
        if obj is INVALID_JSON or not isinstance(obj, dict):
            skipped.append(SkippedItem(source, f"line {lineno}", "not a JSON object"))
        else:
            examples.append(obj)
    return examples, skipped


def _find_split_path(value: Mapping[str, Any], split: str) -> str | None:
    """A JSONL path for `split` among the usual spellings of a dataset asset value."""
    for key in (f"{split}_jsonl", f"{split}_path", split):
        if isinstance(value.get(key), str) and str(value[key]).endswith(".jsonl"):
            return str(value[key])
    for key in ("jsonl", "paths", "files"):
        nested = value.get(key)
        if isinstance(nested, Mapping):
            found = _find_split_path(nested, split)
            if found:
                return found
    return None


def load_split_examples(
    dataset: Mapping[str, Any], split: str = "validation"
) -> tuple[list[dict[str, Any]], list[SkippedItem]]:
    """The `split` examples of a `huggingface_dataset` / `openai_chat_dataset` asset value.

    Prefers the ``save_to_disk`` folder (``path``), which keeps any extra columns such as
    ``source_session_id`` that the consistency metric groups by; falls back to the split's JSONL.
    """
    path = dataset.get("path")
    if isinstance(path, str) and Path(path).is_dir():
        from datasets import load_from_disk

        dd = load_from_disk(path)
        if split in dd:
            return dd[split].to_list(), []
    jsonl = _find_split_path(dataset, split)
    if jsonl and Path(jsonl).exists():
        return read_chat_jsonl(jsonl, split)
    raise ValueError(f"dataset value has no readable {split!r} split (keys: {sorted(dataset)})")


def _last_user(prompt: Sequence[Mapping[str, str]]) -> str:
    return next((m["content"] for m in reversed(prompt) if m["role"] == "user"), "")


def evaluate_models(
    items: Sequence[EvalItem],
    generators: Mapping[str, ChatGenerator],
    skipped: Sequence[SkippedItem] = (),
    judge: Callable[[Messages], str] | None = None,
    sequential_sample: int = 0,
    log: Callable[[str], None] = lambda _msg: None,
    prompt_kinds: Mapping[str, PromptKind | str] | None = None,
    notes: Sequence[str] = (),
) -> dict[str, Any]:
    """Generate, score and summarize every model on `items`.

    `prompt_kinds` gives each model its own system prompt (``full`` for the prompt-engineered
    base, the trained-with kind for the fine-tuned model), rendered for the moment each item's
    conversation took place; the prompt tokens per request and the seconds per reply are
    reported next to the accuracy, since the short prompt is half of what fine-tuning buys.
    `notes` are sentences the report shows as they are (e.g. why there is no baseline).

    `judge` (messages -> answer text) adds the optional LLM-as-judge score. `sequential_sample` > 0
    also generates that many prompts one by one, so the report can compare batched and sequential
    throughput on the same model. Each generator is closed after use (frees GPU memory before the
    next model loads).
    """
    if not items:
        raise ValueError("no evaluation items: the validation split and the golden set are both empty")
    prompts = [it.prompt for it in items]
    sources = sorted({it.source for it in items})
    results: dict[str, Any] = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "models": {},
        "sources": {s: sum(it.source == s for it in items) for s in sources},
        "metrics": {},
        "corpus_chrf": {},
        "consistency_groups": {},
        "skipped": [asdict(s) for s in skipped],
        "skipped_by_reason": dict(Counter(s.reason.split(":")[0] for s in skipped)),
        "notes": list(notes),
    }
    per_model_scores: dict[str, list[ItemScore]] = {}
    for name, gen in generators.items():
        kind = (prompt_kinds or {}).get(name)
        model_prompts = [with_system_prompt(p, kind) for p in prompts] if kind else prompts
        log(f"generating {len(prompts)} replies with {name} ({gen.name}), prompt {prompt_id(kind) if kind else 'as given'}")
        try:
            run = gen.generate(model_prompts, mode="batched")
            seq = gen.generate(model_prompts[:sequential_sample], mode="sequential") if sequential_sample > 0 else None
        finally:
            gen.close()
        scores = score_replies(items, run.texts)
        for sc, err in zip(scores, run.errors, strict=True):
            if err and not sc.error:
                sc.error = err
        if judge is not None:
            n_judged = apply_judge(items, scores, judge)
            log(f"judge scored {n_judged} replies of {name}")
        per_model_scores[name] = scores
        results["models"][name] = {
            "name": gen.name,
            "prompt_id": prompt_id(kind) if kind else None,
            "generation": run.stats(),
            "sequential": seq.stats() if seq else None,
        }
        results["metrics"][name] = {}
        results["corpus_chrf"][name] = {}
        for source in [*sources, ALL]:
            idx = [i for i, it in enumerate(items) if source == ALL or it.source == source]
            sub_items = [items[i] for i in idx]
            sub_scores = [scores[i] for i in idx]
            results["metrics"][name][source] = {k: m.to_dict() for k, m in summarize(sub_items, sub_scores).items()}
            results["corpus_chrf"][name][source] = corpus_chrf(sub_items, sub_scores)
        results["consistency_groups"][name] = consistency_groups(items, scores)
        log(f"{name}: " + ", ".join(f"{k}={v['value']}" for k, v in results["metrics"][name][ALL].items() if "/" not in k))

    results["items"] = [
        {
            "item_id": it.item_id,
            "source": it.source,
            "category": it.category,
            "is_ood": it.is_ood,
            "last_user": _last_user(it.prompt),
            "reference": it.reference,
            "predictions": {
                name: {
                    k: v
                    for k, v in scores[i].to_dict().items()
                    if k not in ("item_id", "is_ood")
                }
                for name, scores in per_model_scores.items()
            },
        }
        for i, it in enumerate(items)
    ]
    return results
