"""A diverged training run fails before it writes anything over the previous model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mrdabak_pipeline.core.training.config import TrainRecipe
from mrdabak_pipeline.core.training.sft import train_sft
from mrdabak_pipeline_tests.training_data import save_dataset

torch.set_num_threads(1)


def _poison_weights_callback():
    """A TrainerCallback that makes every trainable weight NaN before the first step: real divergence
    (NaN logits, NaN loss), not a faked log line."""
    from transformers import TrainerCallback

    class PoisonWeights(TrainerCallback):
        def on_step_begin(self, args, state, control, model=None, **kwargs):  # noqa: ANN001
            if state.global_step == 0:
                with torch.no_grad():
                    for p in model.parameters():
                        if p.requires_grad:
                            p.fill_(float("nan"))

    return PoisonWeights()


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.integration
def test_diverged_run_raises_and_keeps_the_previous_model(tmp_path: Path) -> None:
    dataset = save_dataset(tmp_path / "hf", n_train=16, n_val=4)
    out, models = tmp_path / "run", tmp_path / "models"
    params = TrainRecipe.from_settings({"num_train_epochs": 1, "per_device_train_batch_size": 8, "logging_steps": 1,
                                        "use_peft": True, "resume": False})
    first = train_sft(params, dataset, out, models, log=lambda s: None)
    before = _files(Path(first["model_path"]))
    assert any(name.endswith(".safetensors") for name in before)

    lines: list[str] = []
    with pytest.raises(RuntimeError, match="training diverged: non-finite loss"):
        train_sft(params, dataset, out, models, log=lines.append, callbacks=[_poison_weights_callback()])
    assert any("loss nan" in line for line in lines)  # the NaN reached the log (not the running mean)
    assert _files(out / "model") == before  # the model the previous run left is untouched
