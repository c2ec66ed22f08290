"""Supervised fine-tuning with TRL's SFTTrainer and peft LoRA (or a full fine-tune).

One function, `train_sft`, used by the Dagster Pipes script (`external/train_entry.py`), the
``mrdabak finetune-hf`` CLI and the tests, so the three never drift apart. Pure: no Dagster import;
progress goes to a plain ``log`` callable (the Pipes script passes ``pipes.log.info``).

Choices that matter:
- Loss on assistant tokens only. Bases whose chat template has ``{% generation %}`` markers (the
  `tiny` base; TRL also patches some well-known templates) train on ``messages`` with
  ``assistant_only_loss``; any other base, or a dataset with ``"weight": 0`` replies (OpenAI's
  "context only"), gets the conversational prompt/completion format, one example per trained
  assistant turn, which TRL masks with ``completion_only_loss``.
- bf16 on a GPU that supports it, fp32 otherwise; activation checkpointing only on a GPU (on CPU it
  costs ~20% and saves memory we do not need).
- Settings: a `config.TrainRecipe` (TRL's own `SFTConfig` / `ModelConfig` fields plus a few
  project knobs); `sft_args` adds what the run decides (device, loss mask, batch layout).
- Throughput on CPU: the default ``grouped`` layout computes no padding: one example per
  micro-batch, gradients accumulated over the batch size, so optimizer steps and their
  contents match TRL's padded batches (figure 3 of ``python -m bench``: ~1.8x the real tokens/s
  of TRL's defaults, same loss).
- Checkpoints go to ``<output>/checkpoints``; a re-run with the same output folder resumes from the
  last one, so a retried Dagster run does not start over.
- A random-init base (tiny) trained with LoRA must also train ``lm_head``: a frozen random output
  layer bounds the logits and the model learns only the JSON shape, not the values.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from mrdabak_pipeline.core.training import distributed
from mrdabak_pipeline.core.training.budget import TimeBudget, budget_callback, budgeted
from mrdabak_pipeline.core.training.config import TINY, Throughput, TrainRecipe
from mrdabak_pipeline.core.training.cpu_speed import cpu_bf16_supported, label_positions_only_head
from mrdabak_pipeline.core.training.gemma3 import ALIASES as GEMMA3_ALIASES
from mrdabak_pipeline.core.training.gemma3 import KO_ALIASES as GEMMA3_KO_ALIASES
from mrdabak_pipeline.core.training.gemma3 import ensure_gemma3, ensure_gemma3_ko
from mrdabak_pipeline.core.training.smollm2 import ensure_smollm2
from mrdabak_pipeline.core.training.tiny import build_tiny_base, is_random_init

Log = Callable[[str], None]

SMOLLM2 = "smollm2-135m"
GEMMA3 = "gemma3"


def device_info() -> dict[str, Any]:
    """Where training will run and in which precision: CUDA (bf16 if supported) else CPU fp32."""
    import torch

    if torch.cuda.is_available():
        bf16 = bool(torch.cuda.is_bf16_supported())
        return {"device": "cuda", "device_name": torch.cuda.get_device_name(0), "bf16": bf16}
    return {"device": "cpu", "device_name": "cpu", "bf16": False}


def load_dialogs(dataset_path: str | Path) -> Any:
    """The ``DatasetDict`` saved by the `huggingface_dataset` asset, reduced to its ``messages`` column."""
    from datasets import DatasetDict, load_from_disk

    ds = load_from_disk(str(dataset_path))
    if not isinstance(ds, DatasetDict) or "train" not in ds:
        raise ValueError(f"{dataset_path}: expected a DatasetDict with a 'train' split")
    for name, split in ds.items():
        if "messages" not in split.column_names:
            raise ValueError(f"{dataset_path}: split {name!r} has no 'messages' column")
    if len(ds["train"]) == 0:
        raise ValueError(f"{dataset_path}: the train split is empty")
    return DatasetDict({k: v.select_columns(["messages"]) for k, v in ds.items()})


def _clean_messages(messages: Sequence[dict[str, Any]]) -> list[dict[str, str]]:
    """Only role/content: OpenAI-format extras (``weight``, null fields from Arrow) confuse templates."""
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def resolve_base_model(name: str, models_dir: str | Path, train_dialogs: Sequence[Sequence[dict]], *,
                       tiny_vocab_size: int = 4096, seed: int = 0) -> str:
    """Turn ``base_model`` into something ``from_pretrained`` loads, absolute when local.

    ``tiny`` is built from the training dialogs into ``models_dir/tiny-<fingerprint>`` (immutable:
    adapters keep pointing at the base they were trained on); ``smollm2-135m`` and ``gemma3``
    (alias ``gemma3-270m``) are converted from their GGUF packages once, ``gemma3-ko`` (gemma3 with
    the Korean-order vocabulary, fast on CPU) is cut from gemma3 once; an existing folder is
    made absolute (adapter_config.json stores it verbatim);
    anything else is treated as a Hugging Face model id (needs a populated cache or network).
    """
    models_dir = Path(models_dir)
    if name == TINY:
        return str(build_tiny_base(train_dialogs, models_dir, vocab_size=tiny_vocab_size, seed=seed))
    if name == SMOLLM2:
        return str(ensure_smollm2(models_dir))
    if name in GEMMA3_ALIASES:
        return str(ensure_gemma3(models_dir))
    if name in GEMMA3_KO_ALIASES:
        return str(ensure_gemma3_ko(models_dir))
    if Path(name).expanduser().exists():
        return str(Path(name).expanduser().absolute())
    return name


def supports_assistant_mask(tokenizer: Any) -> bool:
    """True when TRL can compute an assistant-token mask from this tokenizer's chat template."""
    from trl.chat_template_utils import get_training_chat_template, has_generation_markers

    template = getattr(tokenizer, "chat_template", None)
    if not template:
        return False
    if has_generation_markers(template):
        return True
    try:
        return get_training_chat_template(tokenizer) is not None
    except Exception:  # unsupported template: TRL raises; fall back to prompt/completion
        return False


def _untrained(message: dict[str, Any]) -> bool:
    """OpenAI's ``"weight": 0``: the turn is context only (the dataset could not vouch for it)."""
    return message["role"] == "assistant" and message.get("weight") == 0


def to_prompt_completion(split: Any) -> Any:
    """One conversational prompt/completion example per trained assistant turn (loss on it only).

    Turns with ``weight: 0`` stay in later prompts as context but are never a completion.
    """
    from datasets import Dataset

    rows: dict[str, list] = {"prompt": [], "completion": []}
    for messages in split["messages"]:
        msgs = _clean_messages(messages)
        for i, m in enumerate(msgs):
            if m["role"] == "assistant" and i > 0 and not _untrained(messages[i]):
                rows["prompt"].append(msgs[:i])
                rows["completion"].append([m])
    return Dataset.from_dict(rows)


def _as_messages(split: Any) -> Any:
    """Whole dialogs for assistant-masked training; a dialog is cut before its first ``weight: 0``
    reply, so a context-only turn is never trained on.

    Cutting (rather than switching the whole dataset to per-turn prompt/completion examples, whose
    token count grows with the square of the dialog length) costs only the tail of the few dialogs
    with such a turn.
    """
    from datasets import Dataset

    dialogs = []
    for messages in split["messages"]:
        cut = next((i for i, m in enumerate(messages) if _untrained(m)), len(messages))
        kept = _clean_messages(messages[:cut])
        if any(m["role"] == "assistant" for m in kept):
            dialogs.append(kept)
    return Dataset.from_dict({"messages": dialogs})


def packed_rows(lengths: Sequence[int], max_length: int) -> int:
    """How many ``max_length`` rows TRL's best-fit-decreasing packing makes of examples this long
    (TRL's own `pack_dataset` on placeholder ids, so the count is exactly what training will see)."""
    from datasets import Dataset
    from trl.data_utils import pack_dataset

    if not lengths:
        return 0
    ids = [[0] * min(n, max_length) for n in lengths]
    return len(pack_dataset(Dataset.from_dict({"input_ids": ids}), max_length, "bfd"))


@dataclass(frozen=True)
class PackingPlan:
    """One packed row of ``row_length`` tokens per micro-batch, ``accum`` micro-batches per step."""

    row_length: int
    rows: int
    accum: int
    steps_per_epoch: int
    #: what unpacked batches of ``batch_size`` take per epoch (the number to match)
    target_steps: int


def plan_packing(lengths: Sequence[int], batch_size: int, max_length: int) -> PackingPlan:
    """Row length and accumulation so a packed epoch takes as many optimizer steps as unpacked
    batches of ``batch_size`` examples (same lr schedule, about the same tokens per step).

    Accumulations are tried nearest to ``rows / steps`` first; for each, ``max_length`` rows
    (least waste) unless a bisection must find shorter ones, never shorter than the longest
    example (best-fit-decreasing would truncate it). When no exact match exists (a handful of
    rows), the closest step count wins.
    """
    if not lengths:
        raise ValueError("nothing to pack")
    target = math.ceil(len(lengths) / batch_size)
    longest = min(max(lengths), max_length)
    rows_at: dict[int, int] = {}  # the row count depends only on the row length: pack each once

    def plan_for(row: int, accum: int) -> PackingPlan:
        if row not in rows_at:
            rows_at[row] = packed_rows(lengths, row)
        return PackingPlan(row, rows_at[row], accum, math.ceil(rows_at[row] / accum), target)

    natural = plan_for(max_length, 1).rows / target
    accums = sorted(range(1, math.ceil(plan_for(longest, 1).rows / target) + 1), key=lambda a: (abs(a - natural), a))
    best: PackingPlan | None = None
    for accum in accums[:4]:
        lo, hi = longest, max_length  # steps fall as rows get longer: the longest row with steps >= target
        if plan_for(hi, accum).steps_per_epoch >= target:
            lo = hi
        elif plan_for(lo, accum).steps_per_epoch < target:
            hi = lo
        while lo < hi:
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if plan_for(mid, accum).steps_per_epoch >= target else (lo, mid - 1)
        for plan in (plan_for(lo, accum), plan_for(min(lo + 1, max_length), accum)):
            if best is None or abs(plan.steps_per_epoch - target) < abs(best.steps_per_epoch - target):
                best = plan
        if best.steps_per_epoch == target:
            break
    assert best is not None
    return best


def _example_lengths(tokenizer: Any, dataset: Any) -> list[int]:
    """Token count of each training example as the chat template renders it (whole dialog, or
    prompt + completion)."""
    if "messages" in dataset.column_names:
        convs = dataset["messages"]
    else:
        convs = [list(p) + list(c) for p, c in zip(dataset["prompt"], dataset["completion"], strict=True)]
    return [len(tokenizer.apply_chat_template(c, tokenize=True)["input_ids"]) for c in convs]


def _throughput_args(mode: Throughput, plan: PackingPlan | None = None, *, on_cuda: bool = False,
                     batch_size: int = 1) -> dict[str, Any]:
    """SFTConfig arguments for a batch layout of ``batch_size`` examples per optimizer step.

    ``packed`` follows a `plan_packing` plan: one packed row per micro-batch (several would be
    flattened into one sequence that, without a varlen flash-attention kernel, attends densely:
    ~9x slower on CPU) and the accumulation that keeps optimizer steps and tokens per step like
    unpacked batches, so the lr schedule and final loss stay comparable while no padding is
    computed. Evaluation is packed the same way, one row per batch.
    """
    if mode == "plain":
        return {"packing": False, "padding_free": False}
    if mode == "grouped":
        if on_cuda:
            return {"packing": False, "train_sampling_strategy": "group_by_length"}
        # CPU: a micro-batch of one example has nothing to pad and attends only within itself;
        # wide batches buy nothing on one or two cores. Same sampler order, so same step contents.
        return {"packing": False, "per_device_train_batch_size": 1, "per_device_eval_batch_size": 1,
                "gradient_accumulation_steps": batch_size}
    if mode == "packed":
        return {"packing": True, "packing_strategy": "bfd", "eval_packing": True,
                "per_device_train_batch_size": 1, "per_device_eval_batch_size": 1,
                "gradient_accumulation_steps": plan.accum if plan else 1}  # no plan: nothing to train
    raise ValueError(f"unknown throughput mode {mode!r}: plain, packed or grouped")


def make_progress_callback(log: Log, history: list[dict[str, Any]], budget: TimeBudget | None = None) -> Any:
    """A TrainerCallback that streams step/loss/lr/tokens-per-second lines and keeps the numbers
    (progress as a share of the `budget` when the run has one, else as steps of ``max_steps``).

    Token counts come from the trainer's own logs: SFTTrainer logs ``num_tokens``, the tokens
    trained so far in this process (attention-masked, so padding is not counted); the callback's
    ``num_tokens`` is the last count seen, the final summary log included.
    """
    from transformers import TrainerCallback

    class _Progress(TrainerCallback):
        def __init__(self) -> None:
            self._t: float | None = None
            self._tokens: float = 0.0
            self.num_tokens: float = 0.0

        def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001
            self._t, self._tokens = time.perf_counter(), 0.0

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            logs = dict(logs or {})
            if "num_tokens" in logs:
                self.num_tokens = max(self.num_tokens, float(logs["num_tokens"]))
            now = time.perf_counter()
            row: dict[str, Any] = {"step": state.global_step, "epoch": round(state.epoch or 0.0, 3)}
            if "loss" in logs:
                tokens = float(logs.get("num_tokens", 0.0))
                dt = now - (self._t or now)
                dtok = tokens - self._tokens if tokens >= self._tokens else tokens
                tps = dtok / dt if dt > 0 else 0.0
                self._t, self._tokens = now, tokens
                row |= {"loss": float(logs["loss"]), "learning_rate": float(logs.get("learning_rate", 0.0)),
                        "tokens_per_s": round(tps, 1)}
                where = f" ({budget.share():.0%} of the budget)" if budget else f"/{state.max_steps}"
                log(f"step {state.global_step}{where} epoch {row['epoch']:.2f} "
                    f"loss {row['loss']:.4f} lr {row['learning_rate']:.2e} tok/s {tps:.0f}")
            elif "eval_loss" in logs:
                row["eval_loss"] = float(logs["eval_loss"])
                log(f"eval step {state.global_step} epoch {row['epoch']:.2f} eval_loss {row['eval_loss']:.4f}")
            else:
                return
            history.append(row)

    return _Progress()


def plot_loss_curve(log_history: Sequence[dict[str, Any]], path: str | Path, title: str = "") -> Path:
    """Train and validation loss against the optimizer step, as a PNG (matplotlib, no display)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [(r["step"], r["loss"]) for r in log_history if "loss" in r]
    val = [(r["step"], r["eval_loss"]) for r in log_history if "eval_loss" in r]
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    if train:
        ax.plot(*zip(*train, strict=True), label="train loss")
    if val:
        ax.plot(*zip(*val, strict=True), marker="o", label="validation loss")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.set_title(title or "fine-tuning loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def _dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def last_checkpoint(checkpoint_dir: str | Path) -> str | None:
    """The newest complete ``checkpoint-N`` folder, or None (a fresh start)."""
    from transformers.trainer_utils import get_last_checkpoint

    checkpoint_dir = Path(checkpoint_dir)
    return get_last_checkpoint(str(checkpoint_dir)) if checkpoint_dir.is_dir() else None


def sft_args(recipe: TrainRecipe, *, output_dir: str | Path, on_cuda: bool, bf16: bool, evaluate: bool,
             assistant_mask: bool, plan: PackingPlan | None = None) -> Any:
    """The `trl.SFTConfig` of a run: the recipe's TRL settings, then what the run itself decides.

    Defaults the recipe may override: ``data_seed`` = ``seed``, activation checkpointing on a GPU
    only (on CPU it costs ~20% and saves memory we do not need), NaN/inf losses logged as they are
    (the Trainer's default logs the running mean in their place, hiding a divergence), no
    reporting integrations, no tqdm. Set by the run (refused as overrides, `config.DERIVED`): the
    output folder, the device, the loss mask and the batch layout of ``throughput``, which turns
    the recipe's batch size into micro-batches x accumulation (times any explicit
    ``gradient_accumulation_steps``).
    """
    from trl import SFTConfig

    settings = recipe.sft_settings()
    batch_size = int(settings["per_device_train_batch_size"])
    layout = {"per_device_train_batch_size": batch_size,
              "per_device_eval_batch_size": settings.get("per_device_eval_batch_size", batch_size),
              **_throughput_args(recipe.throughput, plan, on_cuda=on_cuda, batch_size=batch_size)}
    layout["gradient_accumulation_steps"] = (layout.get("gradient_accumulation_steps", 1)
                                             * int(settings.get("gradient_accumulation_steps", 1)))
    if plan is not None:
        layout["max_length"] = plan.row_length
    defaults = {"data_seed": recipe.value("seed"), "activation_checkpointing": on_cuda,
                "logging_nan_inf_filter": False, "report_to": "none", "disable_tqdm": True,
                "dataloader_num_workers": 0}
    derived = {"output_dir": str(output_dir), "use_cpu": not on_cuda, "bf16": bf16,
               "assistant_only_loss": assistant_mask, "completion_only_loss": None if assistant_mask else True}
    if not evaluate:
        derived["eval_strategy"] = "no"
    return SFTConfig(**(defaults | settings | derived | layout))


def train_sft(
    recipe: TrainRecipe,
    dataset_path: str | Path,
    output_dir: str | Path,
    models_dir: str | Path,
    *,
    log: Log = print,
    callbacks: Sequence[Any] = (),
) -> dict[str, Any]:
    """Fine-tune ``recipe.base_model`` on the dataset; write the model to ``output_dir/model``.

    Returns a JSON-able result: ``base_model``, absolute ``base_model_path``, ``model_path``,
    ``is_adapter``, optional ``merged_path``, ``loss_curve_path``, ``log_history``, ``params`` (every
    setting in force, `TrainRecipe.effective`) and ``metrics`` (losses, tokens/s, wall time, device,
    sizes). Raises on bad settings, bad data or a failed run.
    """
    import torch
    from datasets.utils.logging import disable_progress_bar
    from transformers import AutoModelForCausalLM, AutoTokenizer, PrinterCallback
    from trl import SFTTrainer, get_peft_config

    if recipe.method != "sft":  # a DPO recipe's defaults and fields are not SFT's
        raise ValueError(f"train_sft trains method sft; method {recipe.method} is `core.training.dpo.train_dpo`")
    disable_progress_bar()  # progress goes through `log`, one line per logging step
    t0 = time.perf_counter()
    torch.set_num_threads(recipe.num_threads)
    output_dir = Path(output_dir).absolute()
    ckpt_dir = output_dir / "checkpoints"
    model_dir = output_dir / "model"
    dev = device_info()
    log(f"device {dev['device']} ({dev['device_name']}), bf16={dev['bf16']}, threads={recipe.num_threads}")

    ds = load_dialogs(dataset_path)
    train_messages = [_clean_messages(m) for m in ds["train"]["messages"]]
    with distributed.main_process_first():  # data-parallel ranks share one built base
        base_path = resolve_base_model(recipe.base_model, models_dir, train_messages,
                                       tiny_vocab_size=recipe.tiny_vocab_size, seed=recipe.value("seed"))
    log(f"base model {recipe.base_model} -> {base_path}")
    random_base = is_random_init(base_path)
    on_cuda = dev["device"] == "cuda"
    # bf16 unless set: bf16 weights on a GPU that has it; on a CPU with native bf16, autocast over
    # fp32 weights for a pretrained base (~2x faster steps, `cpu_speed`), never for a random-init
    # base (tiny keeps its measured fp32 recipe).
    use_bf16 = bool(recipe.trl["bf16"]) if "bf16" in recipe.trl else (
        dev["bf16"] if on_cuda else (not random_base and cpu_bf16_supported()))
    model_args = recipe.model_config()
    # LoRA under CPU autocast: every matmul runs in bf16 anyway, so the frozen base is stored in
    # bf16 instead of being cast again at every call; the adapter itself stays fp32
    # (`python -m bench.base_models --only cpu_precision`).
    cpu_bf16 = use_bf16 and not on_cuda
    weights_bf16 = use_bf16 and (on_cuda or model_args.use_peft)
    tokenizer = AutoTokenizer.from_pretrained(base_path)
    model = AutoModelForCausalLM.from_pretrained(
        base_path, dtype=torch.bfloat16 if weights_bf16 else torch.float32,
        **({"attn_implementation": model_args.attn_implementation} if model_args.attn_implementation else {}))

    # Whole dialogs with an assistant-token mask when the template allows it (cut before any
    # weight-0 reply); per-turn prompt/completion otherwise.
    assistant_mask = supports_assistant_mask(tokenizer)
    as_examples = _as_messages if assistant_mask else to_prompt_completion
    train_ds = as_examples(ds["train"])
    eval_split = ds.get("validation")
    evaluate = recipe.value("eval_strategy") != "no" and eval_split is not None and len(eval_split) > 0
    eval_ds = as_examples(eval_split) if evaluate else None

    # LoRA through TRL's own ModelConfig -> LoraConfig; a random-init base must also train lm_head.
    if model_args.use_peft and model_args.lora_modules_to_save is None and random_base:
        model_args = replace(model_args, lora_modules_to_save=["lm_head"])
    peft_config = get_peft_config(model_args)
    if cpu_bf16:
        log(f"bf16 autocast on CPU ({'bf16 frozen base, fp32 adapter' if peft_config else 'fp32 weights'})")

    plan = (plan_packing(_example_lengths(tokenizer, train_ds), recipe.value("per_device_train_batch_size"),
                         recipe.value("max_length"))
            if recipe.throughput == "packed" and len(train_ds) else None)
    args = sft_args(recipe, output_dir=ckpt_dir, on_cuda=on_cuda, bf16=use_bf16, evaluate=evaluate,
                    assistant_mask=assistant_mask, plan=plan)
    log(f"batch layout {recipe.throughput}: {args.per_device_train_batch_size} example(s)/row(s) per micro-batch, "
        f"{args.gradient_accumulation_steps} micro-batches per optimizer step"
        + (f", {len(train_ds)} examples packed into {plan.rows} rows of {plan.row_length} tokens, "
           f"{plan.steps_per_epoch} steps/epoch (unpacked: {plan.target_steps})" if plan else ""))
    history: list[dict[str, Any]] = []
    trainer_cls, budget, budget_callbacks = SFTTrainer, recipe.time_budget(), []
    if budget is not None:
        trainer_cls, budget_callbacks = budgeted(SFTTrainer, budget), [budget_callback(budget)]
        log(f"time budget {recipe.max_train_minutes} min: {budget.schedule} learning rate by the clock, "
            f"{budget.warmup:.0%} warm-up; stops when spent")
    progress = make_progress_callback(log, history, budget)
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=train_ds,
        eval_dataset=eval_ds,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[progress, *budget_callbacks, *callbacks],
    )
    trainer.remove_callback(PrinterCallback)
    kept = len(trainer.train_dataset)
    if kept == 0:
        raise ValueError(
            f"all {len(train_ds)} training examples were dropped: no reply token survives truncation "
            f"to max_length={args.max_length} tokens (this tokenizer may spend several tokens per "
            "Korean syllable): raise max_length"
        )
    if kept < len(train_ds):
        log(f"warning: {len(train_ds) - kept} of {len(train_ds)} examples dropped (reply cut off by max_length)")
    resume_from = last_checkpoint(ckpt_dir) if recipe.resume else None
    if resume_from:
        log(f"resuming from {resume_from}")
    if on_cuda:
        torch.cuda.reset_peak_memory_stats()
    t_train = time.perf_counter()
    with label_positions_only_head(recipe.sparse_head and not on_cuda) as sparse:
        if sparse:
            log("LM head on label positions only")
        train_out = trainer.train(resume_from_checkpoint=resume_from)
    train_wall = time.perf_counter() - t_train

    evals = [r["eval_loss"] for r in history if "eval_loss" in r]
    eval_loss = evals[-1] if evals else None
    if eval_ds is not None and eval_loss is None:
        eval_loss = float(trainer.evaluate()["eval_loss"])
    train_losses = [r["loss"] for r in history if "loss" in r]
    # Before anything is saved: a diverged run must not replace the model a previous run left in
    # model_dir (the same run key trains into the same folder).
    losses = [*train_losses, float(train_out.training_loss), *([eval_loss] if eval_loss is not None else [])]
    if not all(math.isfinite(v) for v in losses):
        raise RuntimeError(f"training diverged: non-finite loss; nothing saved, {model_dir} left as it was")

    # Data-parallel: rank 0 writes the files; save_model runs on every rank (FSDP gathers the
    # weights collectively) and writes on rank 0 only.
    main = distributed.is_main()
    if main and model_dir.exists():
        shutil.rmtree(model_dir)
    distributed.barrier()
    trainer.save_model(str(model_dir))
    if main:
        tokenizer.save_pretrained(str(model_dir))
    merged_path = None
    if main and recipe.merge and peft_config is not None:
        merged_path = output_dir / "merged"
        merged = trainer.model.merge_and_unload()
        merged.save_pretrained(str(merged_path))
        tokenizer.save_pretrained(str(merged_path))
        log(f"merged model saved to {merged_path}")

    tps = [r["tokens_per_s"] for r in history if r.get("tokens_per_s")]
    total_tokens = progress.num_tokens
    curve = output_dir / "loss_curve.png"
    if main:
        plot_loss_curve(history, curve, title=f"{recipe.base_model} {'LoRA' if peft_config else 'full'} SFT")
        (output_dir / "log_history.json").write_text(json.dumps(history, indent=1))
    distributed.barrier()  # the model folder is complete before any rank measures it
    n_trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    metrics: dict[str, Any] = {
        "train_loss": float(train_out.training_loss),
        "final_train_loss": train_losses[-1] if train_losses else None,
        "eval_loss": eval_loss,
        "global_step": int(trainer.state.global_step),
        "epochs": float(trainer.state.epoch or 0.0),
        "train_examples": len(train_ds),
        "eval_examples": len(eval_ds) if eval_ds is not None else 0,
        "trained_tokens": total_tokens,
        "tokens_per_s": round(total_tokens / train_wall, 1) if train_wall > 0 and total_tokens else
        (round(sum(tps) / len(tps), 1) if tps else None),
        "train_wall_s": round(train_wall, 2),
        "wall_s": round(time.perf_counter() - t0, 2),
        "resumed_from": Path(resume_from).name if resume_from else None,
        "trainable_params": int(n_trainable),
        "model_size_bytes": _dir_size(model_dir),
        "loss_mask": "assistant_only" if assistant_mask else "completion_only",
        "throughput": recipe.throughput,
        "micro_batch": int(args.per_device_train_batch_size),
        "grad_accum_steps": int(args.gradient_accumulation_steps),
        "packed_rows": plan.rows if plan else None,
        "packed_row_length": plan.row_length if plan else None,
        "peak_gpu_memory_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1) if on_cuda else None,
        **dev,
        "bf16": bool(use_bf16),
        "num_threads": recipe.num_threads,
    }
    log(f"done: {metrics['global_step']} steps, train_loss {metrics['train_loss']:.4f}, "
        f"eval_loss {eval_loss}, {metrics['tokens_per_s']} tok/s, {metrics['train_wall_s']} s")
    return {
        "base_model": recipe.base_model,
        "base_model_path": base_path,
        "model_path": str(model_dir),
        "is_adapter": peft_config is not None,
        "merged_path": str(merged_path) if merged_path else None,
        "loss_curve_path": str(curve),
        "log_history": history,
        "params": recipe.effective(),
        "metrics": metrics,
    }


def load_model_for_inference(path: str | Path, is_adapter: bool, base_model_path: str | None = None,
                             *, device: str | None = None, cpu_bf16: bool = False,
                             merge_adapter: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) ready for ``generate`` from a `fine_tuned_model` value's fields.

    ``is_adapter``: a PEFT adapter folder is loaded with ``AutoPeftModelForCausalLM`` (its
    adapter_config.json names the base; ``base_model_path`` overrides it when the base moved).
    Otherwise ``path`` is a full model folder (a full fine-tune, a merged export, or a base model
    itself — pass ``base_model_path`` as ``path`` with ``is_adapter=False`` to evaluate the base).
    The tokenizer (with its chat template) is read from ``path``, where training saved it.

    Weights are bf16 on a GPU that supports it. On a CPU they stay fp32 unless ``cpu_bf16`` asks
    for bf16 and the CPU runs bf16 natively: meant for models trained under bf16 autocast, which
    already computed in bf16, so inference keeps their numerics and runs on the bf16 units.
    ``merge_adapter`` folds LoRA weights into the base (in fp32, before any cast): the same
    function without the adapter's extra matmuls at every step, for generation-heavy callers.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda":
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    else:
        dtype = torch.bfloat16 if cpu_bf16 and cpu_bf16_supported() else torch.float32
    load_dtype = torch.float32 if is_adapter and merge_adapter else dtype
    path = str(path)
    tokenizer = AutoTokenizer.from_pretrained(path)
    if is_adapter:
        if base_model_path:
            from peft import PeftModel

            base = AutoModelForCausalLM.from_pretrained(base_model_path, dtype=load_dtype)
            model = PeftModel.from_pretrained(base, path)
        else:
            from peft import AutoPeftModelForCausalLM

            model = AutoPeftModelForCausalLM.from_pretrained(path, dtype=load_dtype)
        if merge_adapter:
            model = model.merge_and_unload()
    else:
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    if load_dtype != dtype:  # merged in fp32, now cast for inference
        model.to(dtype)
    model.to(device).eval()
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"  # batched generation continues each prompt from its end
    return model, tokenizer


def generate_reply(model: Any, tokenizer: Any, messages: Sequence[dict[str, str]], max_new_tokens: int = 256) -> str:
    """Greedy assistant reply to a conversation (the prompt ends with the assistant header)."""
    import torch

    enc = tokenizer.apply_chat_template(list(messages), add_generation_prompt=True, tokenize=True,
                                        return_dict=True, return_tensors="pt").to(model.device)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(out[0, enc["input_ids"].shape[1]:], skip_special_tokens=True)


def env_threads(default: int = 1) -> int:
    """``MRDABAK_TORCH_THREADS`` if set: one knob for CI and busy shared machines."""
    return int(os.environ.get("MRDABAK_TORCH_THREADS", default))
