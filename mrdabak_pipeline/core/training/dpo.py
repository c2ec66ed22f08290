"""Local preference training: TRL's `DPOTrainer` on the same pairs the cloud DPO job gets.

`dpo_dataset` writes each pair twice: OpenAI's shape (``openai_*.jsonl``, what the cloud job uploads)
and TRL's conversational shape (``trl_*.jsonl``: ``{"prompt": [messages], "chosen": [assistant],
"rejected": [assistant]}``), which `DPOTrainer` reads as is. The run is configured by the same
`TrainRecipe` as SFT, with ``method: dpo``: its TRL fields are `trl.DPOConfig`'s (``beta``,
``loss_type``, ...) over `config.DPO_RECIPE_DEFAULTS`, LoRA through ``use_peft`` like SFT. The base
model is resolved exactly like SFT's (`sft.resolve_base_model`: ``tiny`` is built from the pairs'
dialogs, GGUF packages are converted offline, a folder such as an SFT run's model is used as is), so
nothing is downloaded at run time. Without peft, TRL keeps a frozen copy of the starting model as the
reference policy. The result has the shape of `sft.train_sft`'s (plus ``method`` and the reward
numbers), so the Pipes entry point and `fine_tuned_model` treat both alike.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mrdabak_pipeline.core.training.config import TrainRecipe
from mrdabak_pipeline.core.training.sft import (
    device_info,
    last_checkpoint,
    make_progress_callback,
    plot_loss_curve,
    resolve_base_model,
)

Log = Callable[[str], None]


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


def dpo_args(recipe: TrainRecipe, *, output_dir: str | Path, on_cuda: bool, evaluate: bool) -> Any:
    """The `trl.DPOConfig` of a run: the recipe's DPO settings, then what the run decides (the
    folder, the device, no evaluation without a validation split). Activation checkpointing only on
    a GPU, as for SFT. NaN/inf losses are logged as
    they are, so a divergence shows (the Trainer's default hides it behind the running mean)."""
    from trl import DPOConfig

    settings = recipe.trainer_settings()
    defaults = {"logging_nan_inf_filter": False, "report_to": "none", "disable_tqdm": True,
                "dataloader_num_workers": 0, "bf16": on_cuda and device_info()["bf16"],
                "gradient_checkpointing": on_cuda}  # TRL's DPO default is on: ~20% slower on CPU, no need
    derived: dict[str, Any] = {"output_dir": str(output_dir), "use_cpu": not on_cuda}
    if not evaluate:
        derived["eval_strategy"] = "no"
    return DPOConfig(**(defaults | settings | derived))


def train_dpo(
    recipe: TrainRecipe,
    train_path: str | Path,
    output_dir: str | Path,
    models_dir: str | Path,
    *,
    validation_path: str | Path | None = None,
    log: Log = print,
) -> dict[str, Any]:
    """Train ``recipe.base_model`` on the pairs with `trl.DPOTrainer`; the model goes to
    ``output_dir/model``, checkpoints to ``output_dir/checkpoints`` (a retry resumes there).

    Returns `sft.train_sft`'s result shape (``base_model``, ``base_model_path``, ``model_path``,
    ``is_adapter``, ``loss_curve_path``, ``log_history``, ``params``, ``metrics``) plus
    ``method: "dpo"``; the metrics add ``pairs`` and the final reward accuracy / margin.
    """
    import torch
    from datasets import Dataset
    from datasets.utils.logging import disable_progress_bar
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import DPOTrainer, get_peft_config

    if recipe.method != "dpo":
        raise ValueError(f"train_dpo needs a recipe with method dpo, got {recipe.method!r}")
    disable_progress_bar()
    t0 = time.perf_counter()
    torch.set_num_threads(recipe.num_threads)
    output_dir = Path(output_dir).absolute()
    ckpt_dir, model_dir = output_dir / "checkpoints", output_dir / "model"
    dev = device_info()
    on_cuda = dev["device"] == "cuda"
    train = read_pairs(train_path)
    valid = read_pairs(validation_path) if validation_path else None
    base = resolve_base_model(recipe.base_model, models_dir, _dialogs(train),
                              tiny_vocab_size=recipe.tiny_vocab_size, seed=recipe.value("seed"))
    log(f"base model {recipe.base_model} -> {base}; DPO on {len(train)} pairs (beta {recipe.value('beta')})")
    torch.manual_seed(recipe.value("seed"))
    tokenizer = AutoTokenizer.from_pretrained(base)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16 if on_cuda and dev["bf16"] else torch.float32)
    peft_config = get_peft_config(recipe.model_config())
    evaluate = bool(valid) and recipe.value("eval_strategy") != "no"
    args = dpo_args(recipe, output_dir=ckpt_dir, on_cuda=on_cuda, evaluate=evaluate)
    history: list[dict[str, Any]] = []
    trainer = DPOTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(train),
        eval_dataset=Dataset.from_list(valid) if evaluate and valid else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[make_progress_callback(log, history)],
    )
    trainer.remove_callback(PrinterCallback)
    resume_from = last_checkpoint(ckpt_dir) if recipe.resume else None
    if resume_from:
        log(f"resuming from {resume_from}")
    t_train = time.perf_counter()
    train_out = trainer.train(resume_from_checkpoint=resume_from)
    train_wall = time.perf_counter() - t_train
    if not math.isfinite(float(train_out.training_loss)):
        raise RuntimeError(f"DPO diverged: non-finite loss; nothing saved, {model_dir} left as it was")

    if model_dir.exists():
        shutil.rmtree(model_dir)
    trainer.save_model(str(model_dir))
    tokenizer.save_pretrained(str(model_dir))
    logs = [dict(h) for h in trainer.state.log_history]
    accuracies = [h["rewards/accuracies"] for h in logs if "rewards/accuracies" in h]
    margins = [h["rewards/margins"] for h in logs if "rewards/margins" in h]
    evals = [r["eval_loss"] for r in history if "eval_loss" in r]
    train_losses = [r["loss"] for r in history if "loss" in r]
    curve = output_dir / "loss_curve.png"
    plot_loss_curve(history, curve, title=f"{recipe.base_model} {'LoRA' if peft_config else 'full'} DPO")
    (output_dir / "log_history.json").write_text(json.dumps(history, indent=1))
    metrics: dict[str, Any] = {
        "train_loss": float(train_out.training_loss),
        "final_train_loss": train_losses[-1] if train_losses else None,
        "eval_loss": evals[-1] if evals else None,
        "global_step": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0.0),
        "pairs": len(train),
        "eval_pairs": len(valid) if evaluate and valid else 0,
        "final_reward_accuracy": float(accuracies[-1]) if accuracies else None,
        "final_reward_margin": float(margins[-1]) if margins else None,
        "train_wall_s": round(train_wall, 2),
        "wall_s": round(time.perf_counter() - t0, 2),
        "resumed_from": Path(resume_from).name if resume_from else None,
        "trainable_params": int(sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)),
        "model_size_bytes": sum(f.stat().st_size for f in model_dir.rglob("*") if f.is_file()),
        **dev,
        "num_threads": recipe.num_threads,
    }
    log(f"done: {metrics['global_step']} DPO steps, train_loss {metrics['train_loss']:.4f}, "
        f"reward accuracy {metrics['final_reward_accuracy']}, {metrics['train_wall_s']} s")
    return {
        "method": "dpo",
        "base_model": recipe.base_model,
        "base_model_path": base,
        "model_path": str(model_dir),
        "is_adapter": peft_config is not None,
        "merged_path": None,
        "loss_curve_path": str(curve),
        "log_history": history,
        "params": recipe.effective(),
        "metrics": metrics,
    }
