"""Training configuration: TRL's `SFTConfig` and `ModelConfig` are the config.

A local fine-tune is one `TrainRecipe`: the few project knobs TRL has no field for (which base
model, the batch layout, CPU threads, the sparse LM head, the tiny vocabulary, resume, merge, a
wall-clock budget) and, in ``trl``, values for `trl.SFTConfig` / `trl.ModelConfig` fields over
`RECIPE_DEFAULTS` (the measured tiny demo recipe, where it departs from TRL's own defaults). No
field list is copied from TRL: names are checked against TRL's dataclasses, so a typo is refused
with the closest names instead of being ignored, and a field the trainer decides itself (output
folder, device, loss mask, batch layout) is refused with what decides it.

The Dagster run config, the ``mrdabak finetune-hf`` CLI (YAML or flags) and the Pipes extras all
carry the same flat, JSON-able settings (`TrainRecipe.from_config`, `settings` / `from_settings`).
`run_key` names the output folder: same dataset + same result-changing settings -> same folder, so
a retried run finds its checkpoints and resumes.

Importing this module is cheap; the first validation imports trl (a few seconds, once).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import MISSING, dataclass, field, fields
from functools import cache
from typing import Any, Literal, get_args

from mrdabak_pipeline.core.training.budget import TimeBudget, budget_from_recipe

Throughput = Literal["plain", "packed", "grouped"]
THROUGHPUTS: tuple[str, ...] = get_args(Throughput)
#: What a local run learns from: ``sft`` the chat dialogs (huggingface_dataset, `sft.train_sft`),
#: ``dpo`` the preference pairs (dpo_dataset's TRL files, `dpo.train_dpo`).
Method = Literal["sft", "dpo"]
METHODS: tuple[str, ...] = get_args(Method)

#: The default base: a 2-layer model built from the training data (`tiny.build_tiny_base`).
TINY = "tiny"

#: The project's recipe where it departs from TRL's defaults, by TRL field name. These are the
#: measured `tiny` demo settings: a full fine-tune (lr 2e-3) learns far better than LoRA on a
#: random-init base (258 seeded multi-turn dialogs: validation loss 0.78 after 8 epochs vs 1.29
#: for LoRA+lm_head after 6). For a pretrained base on a GPU start from the guide's
#: ``use_peft: true, learning_rate: 1e-4, num_train_epochs: 3, per_device_train_batch_size: 4``.
#: ``warmup_steps`` < 1 is a ratio of the total steps (transformers' semantics). Checkpoints at
#: every epoch (setting ``save_steps`` alone switches to step checkpoints); validation loss after
#: every epoch when the dataset has a validation split (``eval_strategy: "no"`` skips it).
#: What TRL already defaults to the same value (max_length 1024, seed 42, LoRA r 16 / alpha 32 /
#: dropout 0.05, no LoRA) is not repeated here.
RECIPE_DEFAULTS: Mapping[str, Any] = {
    "num_train_epochs": 10.0,
    "per_device_train_batch_size": 16,
    "learning_rate": 2e-3,
    "lr_scheduler_type": "cosine",
    "warmup_steps": 0.05,
    "logging_steps": 5,
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "eval_strategy": "epoch",
    "lora_target_modules": "all-linear",
}

#: The recipe of ``method: dpo`` where it departs from TRL's `DPOConfig` defaults (beta 0.1 is
#: TRL's): preference tuning nudges a model that already answers, so one short epoch at a low rate
#: (TRL's documented starting point is 5e-7 for a large pretrained model; 5e-5 moves the tiny demo
#: model within an epoch), small batches (each example is two sequences plus the reference's two).
DPO_RECIPE_DEFAULTS: Mapping[str, Any] = {
    "num_train_epochs": 1.0,
    "per_device_train_batch_size": 2,
    "learning_rate": 5e-5,
    "max_length": 512,
    "logging_steps": 1,
    "save_strategy": "epoch",
    "save_total_limit": 2,
    "eval_strategy": "epoch",
    "lora_target_modules": "all-linear",
}

#: Short names the Dagster run config and the CLI accept for the TRL fields most runs change
#: (the guide's and OpenAI's fine-tuning words). Everywhere else settings go by their TRL name.
COMMON_KNOBS: Mapping[str, str] = {
    "epochs": "num_train_epochs",
    "batch_size": "per_device_train_batch_size",
    "learning_rate": "learning_rate",
    "use_lora": "use_peft",
    "max_steps": "max_steps",
    "max_length": "max_length",
}

_LAYOUT = "the batch layout, set by `throughput` (plain, packed or grouped)"
_MASK = "the chat template: an assistant-token mask when it has generation markers, else per-reply completions"
#: TRL fields `train_sft` sets itself, with what decides them: an override would be ignored or
#: contradict it, so it is refused.
DERIVED: Mapping[str, str] = {
    "output_dir": "the run folder (<output>/checkpoints)",
    "use_cpu": "the device (CUDA when present, else CPU)",
    "assistant_only_loss": _MASK,
    "completion_only_loss": _MASK,
    "packing": _LAYOUT,
    "packing_strategy": _LAYOUT,
    "padding_free": _LAYOUT,
    "eval_packing": _LAYOUT,
    "train_sampling_strategy": _LAYOUT,
    "model_name_or_path": "`base_model`",
    "model_revision": "`base_model` (a local folder or a cached model id)",
    "dtype": "`bf16`: bf16 weights on a GPU that supports it, and for the frozen base of LoRA under CPU "
             "autocast; fp32 weights otherwise",
    "lora_task_type": "the model kind: a causal LM (CAUSAL_LM)",
    "load_in_8bit": "nothing: quantized training is not supported here",
    "load_in_4bit": "nothing: quantized training is not supported here",
    "bnb_4bit_quant_type": "nothing: quantized training is not supported here",
    "use_bnb_nested_quant": "nothing: quantized training is not supported here",
    "bnb_4bit_quant_storage": "nothing: quantized training is not supported here",
}

#: Settings that change how a run goes, not what it learns: left out of `run_key`, so a retry with
#: more threads, without evaluation or with other logging resumes in the same folder.
VOLATILE: frozenset[str] = frozenset({
    "num_threads", "resume", "merge", "sparse_head",
    "logging_steps", "logging_strategy", "logging_first_step", "eval_strategy", "eval_steps",
    "per_device_eval_batch_size", "save_total_limit", "report_to", "disable_tqdm", "dataloader_num_workers",
})


@cache
def trl_fields(method: str = "sft") -> tuple[frozenset[str], frozenset[str]]:
    """The init field names of the trainer config of `method` (`trl.SFTConfig` or `trl.DPOConfig`)
    and of `trl.ModelConfig` (disjoint in TRL 1.x)."""
    from trl import DPOConfig, ModelConfig, SFTConfig

    trainer = DPOConfig if method == "dpo" else SFTConfig
    return (frozenset(f.name for f in fields(trainer) if f.init),
            frozenset(f.name for f in fields(ModelConfig) if f.init))


def trl_default(name: str, method: str = "sft") -> Any:
    """TRL's own default for a field of the trainer config of `method` or `ModelConfig`."""
    from trl import DPOConfig, ModelConfig, SFTConfig

    for cls in ((DPOConfig, ModelConfig) if method == "dpo" else (SFTConfig, ModelConfig)):
        for f in fields(cls):
            if f.name == name:
                return f.default_factory() if f.default is MISSING and f.default_factory is not MISSING else f.default
    raise KeyError(name)


def _knob_names() -> frozenset[str]:
    return frozenset(f.name for f in fields(TrainRecipe) if f.name != "trl")


def check_trl_settings(settings: Mapping[str, Any], method: str = "sft") -> None:
    """Refuse names that are no field of the trainer config of `method` (`SFTConfig` or
    `DPOConfig`) or `ModelConfig`, or that the trainer decides itself."""
    sft, model = trl_fields(method)
    derived = sorted(k for k in settings if k in DERIVED)
    if derived:
        raise ValueError("training settings set by the trainer, not by config: "
                         + "; ".join(f"{k!r} follows {DERIVED[k]}" for k in derived))
    unknown = sorted(set(settings) - sft - model)
    if unknown:
        known = sorted(sft | model | _knob_names())
        shorts = {short: name for short, name in COMMON_KNOBS.items() if short != name}
        hints = []
        for k in unknown:
            close = [shorts[k]] if k in shorts else difflib.get_close_matches(k, known, n=3)
            hints.append(f"{k!r}" + (f" (did you mean {', '.join(map(repr, close))}?)" if close else ""))
        trainer = "trl.DPOConfig" if method == "dpo" else "trl.SFTConfig"
        raise ValueError(f"unknown training settings: {', '.join(hints)}; settings are fields of {trainer} "
                         "or trl.ModelConfig, or the project knobs " + ", ".join(sorted(_knob_names())))


@dataclass(frozen=True)
class TrainRecipe:
    """Everything a local fine-tune depends on: project knobs + TRL field values (``trl``).

    Build it with `from_settings` (flat: knobs and TRL names side by side) or `from_config` (the
    run config shape, with `COMMON_KNOBS` short names and ``overrides``); a bad name raises.
    """

    #: 'tiny' (built from the data), 'smollm2-135m', 'gemma3' (alias 'gemma3-270m'), 'gemma3-ko', a folder or a HF id.
    base_model: str = TINY
    #: "grouped" (default) = no padding computed: on CPU ONE example per micro-batch with gradient
    #: accumulation over the batch size (the same examples per optimizer step and the same steps as
    #: "plain": TRL normalizes the loss over the accumulated tokens, so the optimization matches;
    #: figure 3, 1 thread: 1.76x the real tokens/s of "plain", identical train loss); on a GPU,
    #: length-grouped batches (``group_by_length``), where wide batches pay.
    #: "packed" = TRL best-fit-decreasing packing, padding-free, one row (<= ``max_length``) per
    #: micro-batch with accumulation sized to keep the unpacked step count (`sft.plan_packing`):
    #: 1.3-1.4x on CPU; several rows per micro-batch would be flattened into one sequence that,
    #: without a varlen flash-attention kernel, attends densely: ~9x slower.
    #: "plain" = TRL defaults (no packing, pad to the longest in the batch).
    throughput: Throughput = "grouped"
    #: torch CPU threads (1 is best on a busy shared box).
    num_threads: int = 1
    #: On CPU, project the LM head only at label positions (`cpu_speed.label_positions_only_head`;
    #: same loss, the 262k-vocab head of gemma3 is the step's largest matmul). GPUs already do this.
    sparse_head: bool = True
    tiny_vocab_size: int = 4096
    #: Continue from the last checkpoint in the output folder (a retried run does not start over).
    resume: bool = True
    #: Also export a merged full model (LoRA only: ``merge_and_unload``).
    merge: bool = False
    #: Train for this many minutes of wall time, the learning-rate schedule following the clock
    #: (`budget.TimeBudget`); epochs and ``max_steps`` stay upper bounds. None = by steps only.
    max_train_minutes: float | None = None
    #: ``sft`` (chat dialogs) or ``dpo`` (preference pairs; TRL fields are then `trl.DPOConfig`'s,
    #: over `DPO_RECIPE_DEFAULTS`). A local trainer's choice: a cloud job's is ``cloud.method``.
    method: Method = "sft"
    #: `SFTConfig` / `ModelConfig` field values over `RECIPE_DEFAULTS`.
    trl: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.throughput not in THROUGHPUTS:
            raise ValueError(f"unknown throughput {self.throughput!r}: one of {', '.join(THROUGHPUTS)}")
        if not isinstance(self.num_threads, int) or self.num_threads < 1:
            raise ValueError(f"num_threads must be a positive integer, got {self.num_threads!r}")
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}: one of {', '.join(METHODS)}")
        if self.method == "dpo" and self.throughput == "packed":
            raise ValueError("method dpo does not pack: a preference pair is two sequences scored against "
                             "the reference model; use throughput grouped or plain")
        if self.method == "dpo" and self.merge:
            raise ValueError("merge is not supported with method dpo: train with use_lora and merge the "
                             "saved adapter afterwards, or train the full model (the default)")
        if self.method == "dpo" and self.max_train_minutes is not None:
            raise ValueError("max_train_minutes is not supported with method dpo: bound it with epochs or max_steps")
        object.__setattr__(self, "trl", dict(self.trl))
        check_trl_settings(self.trl, self.method)
        if self.max_train_minutes is not None:  # refused here, not after the model has loaded
            if not (isinstance(self.max_train_minutes, int | float) and self.max_train_minutes > 0):
                raise ValueError(f"max_train_minutes must be a positive number, got {self.max_train_minutes!r}")
            self.time_budget()  # a warm-up ratio and a schedule with a wall-clock form
        try:
            json.dumps(self.settings())
        except (TypeError, ValueError) as exc:  # Pipes extras and the run key are JSON
            raise ValueError(f"training settings must be JSON values: {exc}") from exc

    @classmethod
    def from_settings(cls, settings: Mapping[str, Any]) -> TrainRecipe:
        """Flat settings, knobs and TRL names side by side (what `settings` returns)."""
        knobs = _knob_names()
        if "trl" in settings:
            raise ValueError("'trl' is not a setting: give TRL fields by name, side by side with the knobs")
        return cls(**{k: v for k, v in settings.items() if k in knobs},
                   trl={k: v for k, v in settings.items() if k not in knobs})

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TrainRecipe:
        """The run config shape shared by Dagster and the CLI: knobs, `COMMON_KNOBS` by their short
        names (None = the recipe's default) and ``overrides`` (any TRL field or knob by name)."""
        overrides = dict(config.get("overrides") or {})
        flat: dict[str, Any] = {}
        for key, value in config.items():
            if key == "overrides" or value is None:
                continue
            name = COMMON_KNOBS.get(key, key)
            if name in overrides:
                raise ValueError(f"{name!r} is set twice: as {key!r} and in overrides")
            flat[name] = value
        return cls.from_settings(flat | overrides)

    def settings(self) -> dict[str, Any]:
        """Flat and JSON-able: the Pipes extras; `from_settings` reads it back unchanged."""
        return {**{k: getattr(self, k) for k in sorted(_knob_names())}, **self.trl}

    def with_settings(self, **settings: Any) -> TrainRecipe:
        """A copy with some settings replaced (knobs or TRL fields)."""
        return TrainRecipe.from_settings(self.settings() | settings)

    def effective(self) -> dict[str, Any]:
        """Every setting this recipe fixes: knobs, then `RECIPE_DEFAULTS` under the explicit TRL
        values (TRL's defaults fill the rest). The run's hyperparameters and its run key."""
        defaults = DPO_RECIPE_DEFAULTS if self.method == "dpo" else RECIPE_DEFAULTS
        effective = {**{k: getattr(self, k) for k in sorted(_knob_names())}, **defaults, **self.trl}
        if "save_steps" in self.trl and "save_strategy" not in self.trl:
            effective["save_strategy"] = "steps"  # asking for a cadence means step checkpoints
        return effective

    def value(self, name: str) -> Any:
        """One TRL field as this recipe sets it: explicit, else `RECIPE_DEFAULTS`, else TRL's default."""
        effective = self.effective()
        return effective[name] if name in effective else trl_default(name, self.method)

    def trainer_settings(self) -> dict[str, Any]:
        """The trainer config fields (`SFTConfig` or `DPOConfig`, by `method`) this recipe sets."""
        trainer, _ = trl_fields(self.method)
        return {k: v for k, v in self.effective().items() if k in trainer}

    def sft_settings(self) -> dict[str, Any]:
        """The `SFTConfig` fields this recipe sets (`RECIPE_DEFAULTS` under the explicit values)."""
        return self.trainer_settings()

    def time_budget(self) -> TimeBudget | None:
        """The wall-clock budget of a ``max_train_minutes`` run (a fresh clock each call), else None."""
        if self.max_train_minutes is None:
            return None
        schedule = self.value("lr_scheduler_type")  # a string, or TRL's SchedulerType enum by default
        return budget_from_recipe(self.max_train_minutes, float(self.value("warmup_steps")),
                                  str(getattr(schedule, "value", schedule)))

    def model_config(self) -> Any:
        """`trl.ModelConfig` of this recipe (the LoRA part goes through `trl.get_peft_config`)."""
        from trl import ModelConfig

        _, model = trl_fields()
        return ModelConfig(**{k: v for k, v in self.effective().items() if k in model})


def _number_blind(value: Any) -> Any:
    """10 and 10.0 alike (YAML, JSON and the Dagster config type the same setting differently)."""
    if isinstance(value, bool) or not isinstance(value, int | float | list | tuple | dict):
        return value
    if isinstance(value, dict):
        return {k: _number_blind(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_number_blind(v) for v in value]
    return float(value)


def run_key(dataset: Mapping[str, Any], recipe: TrainRecipe) -> str:
    """Same dataset value + same result-changing settings -> same key (the output folder's name),
    so a retried run resumes there. Settings are compared as in force (an explicit default equals
    the default, 10 equals 10.0); `VOLATILE` ones do not count."""
    settings = {k: _number_blind(v) for k, v in recipe.effective().items() if k not in VOLATILE}
    blob = json.dumps({"dataset": dataset, "settings": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
