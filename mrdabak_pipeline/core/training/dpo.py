"""Local preference training: TRL's `DPOTrainer` on the same pairs the cloud DPO job gets.

`dpo_dataset` writes each pair twice: OpenAI's shape (``openai_*.jsonl``, what the cloud job uploads)
and TRL's conversational shape (``trl_*.jsonl``: ``{"prompt": [messages], "chosen": [assistant],
"rejected": [assistant]}``), which `DPOTrainer` reads as is. The base model is resolved exactly like
SFT's (`sft.resolve_base_model`: ``tiny`` is built from the pairs' dialogs, GGUF packages are
converted offline), so nothing is downloaded at run time. Without peft, TRL keeps a frozen copy of
the starting model as the reference policy.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrdabak_pipeline.core.training.sft import resolve_base_model

Log = Callable[[str], None]


@dataclass(frozen=True, kw_only=True)
class DpoRecipe:
    """The few DPO settings worth a name; anything else goes through ``overrides`` (trl.DPOConfig fields)."""

    base_model: str = "tiny"
    epochs: float = 1.0
    learning_rate: float = 5e-5
    beta: float = 0.1
    batch_size: int = 2
    max_length: int = 512
    max_steps: int = -1
    seed: int = 0
    overrides: tuple[tuple[str, Any], ...] = ()


def read_pairs(path: str | Path) -> list[dict[str, Any]]:
    """TRL pair records; refuses a file that is not prompt/chosen/rejected (e.g. an SFT file)."""
    rows = [json.loads(line) for line in Path(path).read_text(encoding="utf-8").splitlines() if line.strip()]
    bad = [i for i, r in enumerate(rows, 1) if not all(isinstance(r.get(k), list) and r[k] for k in ("prompt", "chosen", "rejected"))]
    if bad:
        raise ValueError(f"{path}: lines {bad[:5]} are not DPO pairs (prompt/chosen/rejected message lists)")
    if not rows:
        raise ValueError(f"{path} has no preference pairs")
    return rows


def _dialogs(pairs: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    return [[*p["prompt"], *p["chosen"]] for p in pairs] + [[*p["prompt"], *p["rejected"]] for p in pairs]


def train_dpo(
    train_path: str | Path,
    output_dir: str | Path,
    models_dir: str | Path,
    recipe: DpoRecipe,
    *,
    validation_path: str | Path | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Train with `trl.DPOTrainer`, save model + tokenizer to ``output_dir``; the numbers worth keeping."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    train = read_pairs(train_path)
    valid = read_pairs(validation_path) if validation_path else None
    base = resolve_base_model(recipe.base_model, models_dir, _dialogs(train), seed=recipe.seed)
    torch.manual_seed(recipe.seed)
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, torch_dtype=torch.float32)
    args = DPOConfig(
        output_dir=str(output_dir),
        num_train_epochs=recipe.epochs,
        max_steps=recipe.max_steps,
        learning_rate=recipe.learning_rate,
        beta=recipe.beta,
        per_device_train_batch_size=recipe.batch_size,
        per_device_eval_batch_size=recipe.batch_size,
        max_length=recipe.max_length,
        seed=recipe.seed,
        logging_steps=1,
        save_strategy="no",
        eval_strategy="epoch" if valid else "no",
        report_to=[],
        use_cpu=not torch.cuda.is_available(),
        **dict(recipe.overrides),
    )
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(valid) if valid else None,
        processing_class=tokenizer,
    )
    log(f"DPO on {len(train)} pairs from {base} (beta {recipe.beta})")
    result = trainer.train()
    trainer.save_model(str(output_dir))
    tokenizer.save_pretrained(str(output_dir))
    history = [dict(h) for h in trainer.state.log_history]
    accuracies = [h["rewards/accuracies"] for h in history if "rewards/accuracies" in h]
    margins = [h["rewards/margins"] for h in history if "rewards/margins" in h]
    return {
        "method": "dpo",
        "base_model": recipe.base_model,
        "base_model_path": base,
        "model_path": str(Path(output_dir).absolute()),
        "is_adapter": False,
        "pairs": len(train),
        "train_loss": float(result.training_loss),
        "final_reward_accuracy": accuracies[-1] if accuracies else None,
        "final_reward_margin": margins[-1] if margins else None,
        "log_history": history,
    }
