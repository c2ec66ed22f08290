"""Figure 6: generation for evaluation, batched vs one prompt at a time, on the tiny model.

Both sides are `core.evaluation.generate.LocalHFGenerator.generate` (``"batched"`` vs
``"sequential"``) on the same prompts, greedy, same thread count. The model is figure 3's trained
adapter when that figure ran in this profile (realistic reply lengths), else the random-init tiny
base (every reply runs to ``max_new_tokens``). Prompts are validation conversations cut before an
assistant turn, as the evaluation does.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from bench.common import Profile, Result, cache_dir, missing

NUM_THREADS = 1
BATCH_SIZE = 8


def _prompts(path: Path, n: int) -> list[list[dict[str, str]]]:
    """Up to `n` prompts: each validation example up to its last assistant turn (cut there)."""
    prompts = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            msgs = [{"role": m["role"], "content": m["content"]} for m in json.loads(line)["messages"]]
            last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
            if last:
                prompts.append(msgs[:last])
            if len(prompts) >= n:
                break
    return prompts


def _model(profile: Profile, dataset: Path) -> dict[str, Any]:
    from bench.training_throughput import trained_model

    trained = trained_model(profile)
    if trained and Path(trained["model_path"]).exists():
        return {"model_path": trained["model_path"], "base_model_path": trained["base_model_path"],
                "is_adapter": trained["is_adapter"], "what": "tiny model after figure 3's training"}
    from mrdabak_pipeline.core.training.sft import TINY, load_dialogs, resolve_base_model

    dialogs = [list(d) for d in load_dialogs(dataset)["train"]["messages"]]
    base = resolve_base_model(TINY, cache_dir() / "models", dialogs)
    return {"model_path": base, "base_model_path": None, "is_adapter": False, "what": "random-init tiny base"}


def run(profile: Profile) -> list[Result]:
    reason = missing("mrdabak_pipeline.core.evaluation.generate", "mrdabak_pipeline.core.training.sft")
    if reason:
        return [Result.skipped("6 generation tokens/s", "tokens/s", "ratio > 1", reason)]
    import torch

    from bench.prep_chain import output_dir
    from bench.seeded import seeded_db
    from bench.training_throughput import dataset_dir
    from mrdabak_pipeline.core.evaluation.generate import LocalHFGenerator

    torch.set_num_threads(NUM_THREADS)
    dataset = dataset_dir(profile)
    prompts = _prompts(output_dir(seeded_db(profile.sizes[0], profile.history_days + 1)) / "validation.jsonl",
                       profile.gen_prompts)
    model = _model(profile, dataset)
    gen = LocalHFGenerator(model["model_path"], model["base_model_path"], model["is_adapter"], batch_size=BATCH_SIZE,
                           max_new_tokens=profile.gen_max_new_tokens, device="cpu", num_threads=NUM_THREADS)
    try:
        gen.generate(prompts[:2], "batched")  # warm-up: load weights, first-call allocations
        batched, sequential = [], []
        for _ in range(max(1, profile.repeats - 1)):  # interleaved against load drift
            batched.append(gen.generate(prompts, "batched"))
            sequential.append(gen.generate(prompts, "sequential"))
    finally:
        gen.close()
    tps_b = statistics.median(r.tokens_per_s for r in batched)
    tps_s = statistics.median(r.tokens_per_s for r in sequential)
    same = sum(a == b for a, b in zip(batched[0].texts, sequential[0].texts, strict=True)) / len(prompts)
    print(f"  {model['what']}: {len(prompts)} prompts, {batched[0].total_new_tokens} new tokens batched / "
          f"{sequential[0].total_new_tokens} sequential; identical replies {same:.0%}", flush=True)
    return [
        Result.measured(f"6 generation tokens/s, batch {BATCH_SIZE} vs one-by-one ({len(prompts)} prompts)",
                        tps_b, "tokens/s", tps_s, "ratio > 1", lambda v, r: r is not None and r > 1.0),
        Result.measured("6 replies identical batched vs one-by-one", same, "share", None, "info (fp32 padding noise)"),
    ]
