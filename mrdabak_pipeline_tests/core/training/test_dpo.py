"""core.training.dpo: TRL's DPOTrainer on dpo_dataset's TRL pairs, tiny model, CPU (a few seconds)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mrdabak_pipeline.core.training.config import TrainRecipe
from mrdabak_pipeline.core.training.dpo import read_pairs, train_dpo
from mrdabak_pipeline_tests.training_data import write_dpo_pairs


def test_read_pairs_refuses_an_sft_file(tmp_path: Path) -> None:
    sft = tmp_path / "train.jsonl"
    sft.write_text(json.dumps({"messages": [{"role": "user", "content": "x"}]}) + "\n", encoding="utf-8")
    with pytest.raises(ValueError, match="not DPO pairs"):
        read_pairs(sft)


@pytest.mark.integration  # a torch model trains: not the unit tier
@pytest.mark.timeout(300)
def test_dpo_trains_the_tiny_model_on_cpu(tmp_path: Path) -> None:
    pairs = write_dpo_pairs(tmp_path / "trl_train.jsonl")
    recipe = TrainRecipe(method="dpo", trl={"max_steps": 4, "per_device_train_batch_size": 2, "max_length": 256,
                                            "learning_rate": 5e-4, "seed": 0})
    result = train_dpo(recipe, pairs, tmp_path / "out", tmp_path / "models", log=lambda m: None)
    assert result["method"] == "dpo" and result["metrics"]["pairs"] == 8
    assert (Path(result["model_path"]) / "config.json").exists()
    assert result["metrics"]["final_reward_accuracy"] is not None and result["metrics"]["train_loss"] > 0
    losses = [h["loss"] for h in result["log_history"] if "loss" in h]
    assert len(losses) == 4 and losses[-1] < losses[0]  # the preference is being learned


def test_the_method_knob_checks_dpo_fields_and_refuses_what_dpo_does_not_do() -> None:
    recipe = TrainRecipe.from_settings({"method": "dpo", "beta": 0.3})
    assert recipe.trainer_settings()["beta"] == 0.3 and recipe.value("learning_rate") == 5e-5  # DPO defaults
    assert TrainRecipe().value("learning_rate") == 2e-3  # SFT keeps its own
    with pytest.raises(ValueError, match="trl.SFTConfig"):
        TrainRecipe.from_settings({"beta": 0.3})  # beta is DPO's: an SFT run refuses it
    with pytest.raises(ValueError, match="does not pack"):
        TrainRecipe(method="dpo", throughput="packed")
    with pytest.raises(ValueError, match="merge is not supported"):
        TrainRecipe(method="dpo", merge=True)
    with pytest.raises(ValueError, match="unknown method"):
        TrainRecipe(method="ppo")  # type: ignore[arg-type]
