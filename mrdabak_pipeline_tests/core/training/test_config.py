"""Training settings: TRL's own field names, checked; the demo recipe; the run key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.training.config import TrainRecipe, run_key
from mrdabak_pipeline.core.training.sft import sft_args


@pytest.mark.parametrize(("settings_", "message"), [
    ({"learnin_rate": 1e-4}, "unknown training settings: 'learnin_rate' (did you mean 'learning_rate'?)"),
    ({"epochs": 3}, "'epochs' (did you mean 'num_train_epochs'?)"),  # a run config short name, not a field
    ({"output_dir": "/tmp/x"}, "'output_dir' follows the run folder"),
    ({"packing": True}, "'packing' follows the batch layout, set by `throughput`"),
    ({"dtype": "float16"}, "'dtype' follows `bf16`"),
    ({"throughput": "fast"}, "unknown throughput 'fast'"),
    ({"lora_target_modules": {"q_proj"}}, "must be JSON values"),
])
def test_bad_settings_are_refused_with_what_to_do(settings_: dict, message: str) -> None:
    with pytest.raises(ValueError) as err:
        TrainRecipe.from_settings(settings_)
    assert message in str(err.value)


def test_the_default_recipe_is_the_measured_tiny_demo_on_cpu(tmp_path: Path) -> None:
    """The old TrainParams defaults, now as TRL arguments: full fine-tune, lr 2e-3, 10 epochs, batches
    of 16 (grouped on CPU: 1 dialog per micro-batch x 16), cosine with 5% warmup, epoch checkpoints."""
    args = sft_args(TrainRecipe(), output_dir=tmp_path, on_cuda=False, bf16=False, evaluate=True, assistant_mask=True)
    assert (args.learning_rate, args.num_train_epochs, args.lr_scheduler_type.value) == (2e-3, 10.0, "cosine")
    assert (args.warmup_steps, args.weight_decay, args.max_length, args.seed, args.data_seed) == (0.05, 0.0, 1024, 42, 42)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (1, 16)
    assert args.save_strategy.value == "epoch" and args.save_total_limit == 2 and args.eval_strategy.value == "epoch"
    assert args.logging_steps == 5 and not args.logging_nan_inf_filter and not args.activation_checkpointing
    assert args.use_cpu and not args.bf16 and args.assistant_only_loss and args.max_steps == -1
    assert TrainRecipe().model_config().use_peft is False


def test_overrides_reach_the_sft_config_and_the_layout_keeps_the_batch(tmp_path: Path) -> None:
    recipe = TrainRecipe.from_settings({"max_grad_norm": 0.5, "lr_scheduler_type": "constant", "save_steps": 3,
                                        "gradient_accumulation_steps": 2, "per_device_train_batch_size": 4,
                                        "throughput": "plain", "seed": 7})
    args = sft_args(recipe, output_dir=tmp_path, on_cuda=False, bf16=False, evaluate=False, assistant_mask=False)
    assert args.max_grad_norm == 0.5 and args.lr_scheduler_type.value == "constant"
    assert args.save_strategy.value == "steps" and args.save_steps == 3  # a cadence alone means step checkpoints
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (4, 2)
    assert args.data_seed == 7 and args.eval_strategy.value == "no" and args.completion_only_loss
    grouped = sft_args(recipe.with_settings(throughput="grouped"), output_dir=tmp_path, on_cuda=False, bf16=False,
                       evaluate=False, assistant_mask=True)
    assert (grouped.per_device_train_batch_size, grouped.gradient_accumulation_steps) == (1, 8)


def test_lora_settings_go_through_trls_model_config() -> None:
    from trl import get_peft_config

    recipe = TrainRecipe.from_settings({"use_peft": True, "lora_r": 4, "lora_target_modules": ["q_proj", "v_proj"]})
    lora = get_peft_config(recipe.model_config())
    assert lora.r == 4 and lora.lora_alpha == 32 and set(lora.target_modules) == {"q_proj", "v_proj"}
    assert get_peft_config(TrainRecipe.from_settings({"use_peft": True}).model_config()).target_modules == "all-linear"


_KNOB_VALUES = st.fixed_dictionaries({}, optional={
    "base_model": st.sampled_from(["tiny", "gemma3", "/models/x"]),
    "throughput": st.sampled_from(["plain", "packed", "grouped"]),
    "num_threads": st.integers(1, 8),
    "resume": st.booleans(),
    "merge": st.booleans(),
    "learning_rate": st.floats(1e-6, 1e-1),
    "num_train_epochs": st.floats(0.5, 20),
    "lora_r": st.integers(1, 64),
    "use_peft": st.booleans(),
    "lora_target_modules": st.lists(st.sampled_from(["q_proj", "k_proj", "v_proj"]), min_size=1, unique=True),
})


@settings(max_examples=50, deadline=None)
@given(_KNOB_VALUES)
def test_settings_round_trip_through_json(values: dict) -> None:
    """What the Pipes extras carry (JSON) reads back to the same recipe and the same run key."""
    recipe = TrainRecipe.from_settings(values)
    again = TrainRecipe.from_settings(json.loads(json.dumps(recipe.settings())))
    assert again == recipe and run_key({"path": "/d"}, again) == run_key({"path": "/d"}, recipe)


def test_run_key_changes_with_data_or_result_changing_settings_only() -> None:
    ds = {"path": "/x", "data_high_water_mark": "2025-03-14T12:00:00+09:00"}
    base = run_key(ds, TrainRecipe())
    how = TrainRecipe.from_settings({"num_threads": 2, "resume": False, "logging_steps": 1, "eval_strategy": "no"})
    assert run_key(ds, how) == base  # how, not what: same folder, a retry resumes
    assert run_key(ds, TrainRecipe.from_settings({"learning_rate": 2e-3})) == base  # the default, said explicitly
    assert run_key(ds, TrainRecipe.from_settings({"num_train_epochs": 10})) == base  # 10 (YAML) is 10.0
    assert run_key(ds, TrainRecipe.from_settings({"learning_rate": 1e-4})) != base
    assert run_key(ds, TrainRecipe.from_settings({"lora_r": 8})) != base
    assert run_key(ds, TrainRecipe.from_settings({"base_model": "gemma3"})) != base
    assert run_key(ds | {"data_high_water_mark": "2025-03-15"}, TrainRecipe()) != base
