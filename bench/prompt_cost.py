"""Figure 7: what the short prompt saves per request — the fine-tuned model (short prompt) vs the
prompt-engineered assistant (full prompt), on the golden set's conversations.

Both sides are the same conversations cut before their reference reply, rendered by
`core.prompts` for each conversation's own moment, once with the ``short`` prompt a fine-tuned
model runs with and once with the ``full`` prompt the prompt-engineered assistant needs. Tokens
per request are counted as the cloud bills them (the OpenAI encoding of the default cloud base,
offline) and, when the Gemma 3 base is installed, with its own tokenizer. Latency per turn is the
time to the first generated token (the prefill a longer prompt costs on every turn), one request
at a time, on the locally built tiny model: the same weights for both prompts, so only the prompt
differs. Accuracy beside it comes from the evaluation report (`make demo`), not from here.
"""

from __future__ import annotations

import statistics
from typing import Any

from bench.common import Profile, Result, cache_dir, missing

NUM_THREADS = 1


def _requests(kind: str) -> list[list[dict[str, str]]]:
    from mrdabak_pipeline.core.datasets.chat_format import load_golden

    return [g.prompt for g in load_golden(prompt=kind)]


def _openai_tokens(requests: list[list[dict[str, str]]]) -> float:
    """Mean prompt tokens per request under the cloud base's encoding (+3 per message, +3 priming:
    OpenAI's documented chat overhead)."""
    from mrdabak_pipeline.core.datasets.tokens import resolve_encoding, token_counter
    from mrdabak_pipeline.core.datasets.validation import DEFAULT_MODEL

    count = token_counter(resolve_encoding(DEFAULT_MODEL).encoding)
    per = [sum(count([m["content"]], 1)[0] + 3 for m in r) + 3 for r in requests]
    return statistics.fmean(per)


def _gemma_tokens(requests: list[list[dict[str, str]]]) -> float | None:
    try:
        from transformers import AutoTokenizer

        from mrdabak_pipeline.core.training.gemma3 import ensure_gemma3
    except ImportError:
        return None
    try:
        tok = AutoTokenizer.from_pretrained(str(ensure_gemma3(cache_dir() / "models")))
    except Exception as exc:  # noqa: BLE001 - the package is optional here; say why and go on
        print(f"  [gemma3 tokenizer unavailable: {type(exc).__name__}: {exc}]", flush=True)
        return None
    return statistics.fmean(len(tok.apply_chat_template(r, add_generation_prompt=True, tokenize=True)["input_ids"]) for r in requests)


def _first_token_latency(requests: dict[str, list[list[dict[str, str]]]], repeats: int) -> dict[str, float]:
    """Median seconds to the first new token per request, full vs short, interleaved."""
    import torch

    from mrdabak_pipeline.core.evaluation.generate import LocalHFGenerator
    from mrdabak_pipeline.core.training.sft import TINY, resolve_base_model

    torch.set_num_threads(NUM_THREADS)
    corpus = [r for rs in requests.values() for r in rs]
    base = resolve_base_model(TINY, cache_dir() / "models", corpus)
    gen = LocalHFGenerator(base, batch_size=1, max_new_tokens=1, device="cpu", num_threads=NUM_THREADS)
    try:
        gen.generate(corpus[:2], "sequential")  # load + warm-up
        times: dict[str, list[float]] = {k: [] for k in requests}
        for _ in range(max(1, repeats)):
            for kind, rs in requests.items():
                times[kind].append(gen.generate(rs, "sequential").wall_s / len(rs))
    finally:
        gen.close()
    return {k: statistics.median(v) for k, v in times.items()}


def run(profile: Profile) -> list[Result]:
    reason = missing("mrdabak_pipeline.core.prompts", "mrdabak_pipeline.core.evaluation.generate")
    if reason:
        return [Result.skipped("7 prompt tokens per request", "tokens", "ratio >= 5", reason)]
    requests = {"full": _requests("full"), "short": _requests("short")}
    n = len(requests["short"])
    out: list[Result] = []
    full, short = _openai_tokens(requests["full"]), _openai_tokens(requests["short"])
    out.append(Result.measured(f"7 prompt tokens/request, full vs short prompt (OpenAI encoding, {n} golden turns)",
                               full, "tokens", short, "ratio >= 5", lambda v, r: r is not None and r >= 5))
    g_full, g_short = _gemma_tokens(requests["full"]), _gemma_tokens(requests["short"])
    if g_full is not None and g_short is not None:
        out.append(Result.measured("7 prompt tokens/request, full vs short prompt (Gemma 3 tokenizer)",
                                   g_full, "tokens", g_short, "ratio >= 5", lambda v, r: r is not None and r >= 5))
    subset: dict[str, Any] = {k: v[: max(4, profile.gen_prompts)] for k, v in requests.items()}
    lat = _first_token_latency(subset, profile.repeats)
    out.append(Result.measured(f"7 seconds to first token per turn, full vs short prompt (tiny model, 1 thread, "
                               f"{len(subset['short'])} turns)", lat["full"], "s", lat["short"], "info"))
    return out
