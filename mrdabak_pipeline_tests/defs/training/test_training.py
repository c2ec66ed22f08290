"""`fine_tuned_model`: a real Pipes subprocess trains the tiny model; failures fail the asset."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import torch
import yaml

from mrdabak_pipeline.core.training.config import COMMON_KNOBS
from mrdabak_pipeline.core.training.sft import generate_reply
from mrdabak_pipeline.defs.io_manager import ParquetJsonIOManager
from mrdabak_pipeline.defs.resources import DataPathsResource
from mrdabak_pipeline.defs.training import assets as training_defs
from mrdabak_pipeline.defs.training.assets import FineTuneConfig, fine_tuned_model
from mrdabak_pipeline.defs.training.cloud import OpenAIFineTuningResource
from mrdabak_pipeline_tests.training_data import DATASET_MARK, dataset_stand_ins, make_dialog, save_dataset

torch.set_num_threads(1)
MARK = DATASET_MARK
QUICK = {"epochs": 2, "batch_size": 8, "use_lora": True, "num_threads": 1, "overrides": {"logging_steps": 1}}

def _materialize(tmp_path: Path, hf_path: Path, config: dict[str, Any], instance: dg.DagsterInstance | None = None,
                 dpo_value: dict[str, Any] | None = None):
    return dg.materialize(
        [*dataset_stand_ins(hf_path, dpo_value), fine_tuned_model],
        resources={
            "io_manager": ParquetJsonIOManager(base_dir=str(tmp_path / "storage")),
            "pipes_subprocess_client": dg.PipesSubprocessClient(),
            "openai": OpenAIFineTuningResource(),
            "data_paths": DataPathsResource(root=str(tmp_path / "data")),
        },
        run_config={"ops": {"fine_tuned_model": {"config": config}}},
        instance=instance,
        raise_on_error=False,
    )


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MRDABAK_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_local_backend_trains_in_a_pipes_process_and_the_adapter_reloads(tmp_path: Path) -> None:
    hf_path = save_dataset(tmp_path / "hf", n_train=24, n_val=6)
    instance = dg.DagsterInstance.ephemeral()
    result = _materialize(tmp_path, hf_path, QUICK, instance)
    assert result.success
    value = result.output_for_node("fine_tuned_model")
    assert value["backend"] == "local" and value["is_adapter"] and value["model_id"] is None
    assert value["data_high_water_mark"] == MARK
    assert Path(value["base_model_path"]).is_absolute()
    assert Path(value["model_path"]).parent.parent == tmp_path / "data" / "models" / "fine_tuned"
    assert value["metrics"]["global_step"] == 6 and value["metrics"]["device"] == "cpu"

    md = result.asset_materializations_for_node("fine_tuned_model")[-1].metadata
    assert md["data_high_water_mark"].value == MARK
    assert md["tokens_per_s"].value > 0  # reported by the training process over Pipes
    assert md["train_wall_s"].value > 0 and md["device"].value == "cpu"
    assert Path(md["loss_curve"].value).read_bytes()[:4] == b"\x89PNG"  # the plot is a linked file
    history = md["loss_history"]  # the numbers as a typed table; the picture is the linked file
    assert [c.name for c in history.schema.columns] == ["step", "epoch", "loss", "eval_loss", "learning_rate", "tokens_per_s"]
    assert history.records[-1].data["step"] == 6
    hyper = md["hyperparameters"].value  # every setting in force: recipe defaults under the run config
    assert hyper["learning_rate"] == 2e-3 and hyper["num_train_epochs"] == 2 and hyper["use_peft"] is True
    assert md["adapter_size_mb"].value > 0
    stored = json.loads((tmp_path / "storage" / "fine_tuned_model.json").read_text())
    assert stored["model_path"] == value["model_path"]

    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any(m.startswith("step 1/6") and "loss" in m and "tok/s" in m for m in logs)

    from peft import AutoPeftModelForCausalLM
    from transformers import AutoTokenizer

    model = AutoPeftModelForCausalLM.from_pretrained(value["model_path"])
    tok = AutoTokenizer.from_pretrained(value["model_path"])
    assert isinstance(generate_reply(model, tok, make_dialog(random.Random(2))[:-1], max_new_tokens=6), str)


@pytest.mark.e2e
@pytest.mark.timeout(400)
def test_a_retried_run_resumes_in_the_same_folder(tmp_path: Path) -> None:
    """Two Pipes launches (~30 s): the second finds the first one's checkpoints and does not start over."""
    hf_path = save_dataset(tmp_path / "hf", n_train=24, n_val=6)
    no_eval = QUICK | {"overrides": {"logging_steps": 1, "eval_strategy": "no"}}
    first = _materialize(tmp_path, hf_path, no_eval)
    again = _materialize(tmp_path, hf_path, no_eval | {"num_threads": 2})  # "how" may change
    assert first.success and again.success
    value, value2 = (r.output_for_node("fine_tuned_model") for r in (first, again))
    assert value2["model_path"] == value["model_path"]
    assert value["metrics"]["resumed_from"] is None
    assert value2["metrics"]["resumed_from"] == "checkpoint-6"


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_a_failing_training_process_fails_the_asset_with_its_error(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    bad = tmp_path / "bad_hf"
    DatasetDict({"train": Dataset.from_dict({"text": ["no messages here"]})}).save_to_disk(str(bad))
    result = _materialize(tmp_path, bad, QUICK)
    assert not result.success
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    message = failure.step_failure_data.user_failure_data.description
    assert "training process failed" in message and "no 'messages' column" in message


def test_unknown_parameter_values_fail_before_any_process_starts(tmp_path: Path) -> None:
    with pytest.raises(dg.DagsterInvalidConfigError):
        dg.materialize(
            [*dataset_stand_ins(tmp_path), fine_tuned_model],
            resources={"pipes_subprocess_client": dg.PipesSubprocessClient(), "openai": OpenAIFineTuningResource(),
                       "data_paths": DataPathsResource(root=str(tmp_path))},
            run_config={"ops": {"fine_tuned_model": {"config": {"backend": "tpu"}}}},
        )


def test_cloud_backend_delegates_and_keeps_the_high_water_mark(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: dict[str, Any] = {}

    def fake_cloud(context, resource, config, backend, dataset, data_paths, dpo_dataset=None):  # noqa: ANN001
        seen.update(backend=backend, model=config.model, dataset=dataset, data_root=data_paths.root)
        return dg.Output({"backend": backend, "model_id": "ft:gpt-4o-mini:x", "model_path": None},
                         metadata={"job_id": "ftjob-1"})

    monkeypatch.setattr(training_defs, "run_cloud_fine_tune", fake_cloud)
    result = _materialize(tmp_path, tmp_path / "unused", {"backend": "openai", "cloud": {"model": "gpt-4o-mini"}})
    assert result.success
    assert seen["backend"] == "openai" and seen["model"] == "gpt-4o-mini"
    assert seen["dataset"]["train_path"] == "unused.jsonl"
    assert seen["data_root"] == str(tmp_path / "data")  # the run's configured data_paths, not a default one
    value = result.output_for_node("fine_tuned_model")
    assert value["model_id"] == "ft:gpt-4o-mini:x" and value["data_high_water_mark"] == MARK
    md = result.asset_materializations_for_node("fine_tuned_model")[-1].metadata
    assert md["job_id"].value == "ftjob-1" and md["data_high_water_mark"].value == MARK


DPO_QUICK = {"method": "dpo", "max_steps": 4, "batch_size": 2, "max_length": 256, "learning_rate": 5e-4,
             "num_threads": 1, "overrides": {"seed": 0}}


def _dpo_value(tmp_path: Path, n_train: int = 8, n_val: int = 2) -> dict[str, Any]:
    """A dpo_dataset stand-in: its value shape with real TRL pair files (train + validation)."""
    from mrdabak_pipeline_tests.training_data import write_dpo_pairs

    return {"format": "dpo", "prompt_id": "mrdabak-v2-short", "pair_count": n_train + n_val,
            "train_pairs": n_train, "validation_pairs": n_val, "data_high_water_mark": MARK,
            "trl_train_path": str(write_dpo_pairs(tmp_path / "dpo" / "trl_train.jsonl", n_train)),
            "trl_validation_path": str(write_dpo_pairs(tmp_path / "dpo" / "trl_validation.jsonl", n_val)),
            "openai_train_path": None}


@pytest.mark.e2e
@pytest.mark.timeout(300)
def test_local_dpo_trains_on_the_dpo_dataset_pairs_in_a_pipes_process(tmp_path: Path) -> None:
    instance = dg.DagsterInstance.ephemeral()
    dpo = _dpo_value(tmp_path)
    result = _materialize(tmp_path, tmp_path / "no_hf_needed", DPO_QUICK, instance, dpo_value=dpo)
    assert result.success
    value = result.output_for_node("fine_tuned_model")
    assert value["method"] == "dpo" and value["backend"] == "local" and not value["is_adapter"]
    assert (Path(value["model_path"]) / "config.json").exists()
    assert Path(value["model_path"]).parent.parent == tmp_path / "data" / "models" / "fine_tuned"
    assert value["prompt_id"] == "mrdabak-v2-short" and value["data_high_water_mark"] == MARK
    assert value["metrics"]["pairs"] == 8 and value["metrics"]["global_step"] == 4
    assert value["metrics"]["eval_pairs"] == 2 and value["metrics"]["eval_loss"] is not None
    assert value["params"]["method"] == "dpo" and value["params"]["learning_rate"] == 5e-4  # the recipe in force
    md = result.asset_materializations_for_node("fine_tuned_model")[-1].metadata
    assert md["method"].value == "dpo" and md["pairs"].value == 8  # reported by the training process over Pipes
    assert [r.data["step"] for r in md["loss_history"].records if r.data.get("loss") is not None] == [1, 2, 3, 4]
    logs = [e.user_message for e in instance.all_logs(result.run_id)]
    assert any(m.startswith("step 4/4") and "loss" in m for m in logs)  # the loss is streamed to the run log


def test_local_dpo_without_pairs_fails_before_any_process_starts(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    launched: list[Any] = []
    monkeypatch.setattr(dg.PipesSubprocessClient, "run", lambda self, **kw: launched.append(kw))
    result = _materialize(tmp_path, tmp_path / "unused", DPO_QUICK)  # the stand-in has pair_count 0
    assert not result.success and launched == []
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "method dpo: dpo_dataset has no training pairs (pair_count 0)" in str(failure.event_specific_data)


def test_method_dpo_is_refused_where_it_makes_no_sense(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    launched: list[Any] = []
    monkeypatch.setattr(dg.PipesSubprocessClient, "run", lambda self, **kw: launched.append(kw))
    monkeypatch.setattr(training_defs, "run_cloud_fine_tune", lambda *a, **k: launched.append(a))
    dpo = _dpo_value(tmp_path)
    for config, said in (
        ({"backend": "openai", "method": "dpo"}, "a openai DPO job is cloud.method: dpo"),
        (DPO_QUICK | {"distributed": {"num_processes": 2}}, "method dpo trains in one process"),
        (DPO_QUICK | {"throughput": "packed"}, "method dpo does not pack"),
        (DPO_QUICK | {"overrides": {"packing": True}}, "'packing' follows"),
    ):
        result = _materialize(tmp_path, tmp_path / "unused", config, dpo_value=dpo)
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        assert not result.success and said in str(failure.event_specific_data), config
    assert launched == []


def test_a_cloud_dpo_job_records_the_pairs_prompt_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def fake_cloud(context, resource, config, backend, dataset, data_paths, dpo_dataset=None):  # noqa: ANN001
        return dg.Output({"backend": backend, "model_id": "ft:gpt-4o-mini:dpo", "model_path": None})

    monkeypatch.setattr(training_defs, "run_cloud_fine_tune", fake_cloud)
    dpo = _dpo_value(tmp_path) | {"prompt_id": "mrdabak-v9-full"}  # the chat stand-in has no prompt_id
    result = _materialize(tmp_path, tmp_path / "unused", {"backend": "openai", "cloud": {"method": "dpo"}}, dpo_value=dpo)
    assert result.success
    value = result.output_for_node("fine_tuned_model")
    assert value["prompt_id"] == "mrdabak-v9-full" and value["method"] == "dpo"
    supervised = _materialize(tmp_path, tmp_path / "unused", {"backend": "openai"}, dpo_value=dpo)
    assert supervised.output_for_node("fine_tuned_model")["prompt_id"] is None  # the chat dataset's


def test_a_bad_setting_fails_the_asset_before_any_process_starts(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    launched: list[Any] = []
    monkeypatch.setattr(dg.PipesSubprocessClient, "run", lambda self, **kw: launched.append(kw))
    result = _materialize(tmp_path, tmp_path / "unused", QUICK | {"overrides": {"learnin_rate": 1e-4}})
    assert not result.success and launched == []
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert "unknown training settings: 'learnin_rate' (did you mean 'learning_rate'?)" in str(failure.event_specific_data)


def test_run_config_knobs_and_overrides_make_the_recipe() -> None:
    recipe = FineTuneConfig(epochs=3, use_lora=True, overrides={"lora_r": 8, "merge": True}).recipe()
    assert recipe.trl == {"num_train_epochs": 3, "use_peft": True, "lora_r": 8} and recipe.merge
    assert FineTuneConfig().recipe() == FineTuneConfig(overrides={}).recipe()  # unset knobs: the recipe's defaults
    with pytest.raises(ValueError, match="'num_train_epochs' is set twice"):
        FineTuneConfig(epochs=3, overrides={"num_train_epochs": 4}).recipe()
    assert set(COMMON_KNOBS) <= set(FineTuneConfig.model_fields)  # every short name is a run config field


@pytest.mark.parametrize("name", ["demo_train.yaml", "demo_train_tiny.yaml"])
def test_demo_run_configs_are_the_same_recipe_for_dagster_and_the_cli(name: str) -> None:
    from mrdabak_pipeline.cli import build_parser
    from mrdabak_pipeline.cli.finetune_hf import recipe_from_args

    path = Path(__file__).parents[3] / "scripts" / name
    body = yaml.safe_load(path.read_text())["ops"]["fine_tuned_model"]["config"]
    recipe = FineTuneConfig(**body).recipe()
    assert recipe == recipe_from_args(build_parser().parse_args(["finetune-hf", "--config", str(path)]))
    if name == "demo_train.yaml":  # the default demo: the pretrained base, LoRA, a fixed time budget
        assert recipe.base_model == "gemma3-ko" and recipe.value("use_peft") is True
        assert recipe.max_train_minutes == 7 and recipe.value("learning_rate") == 1e-3
        assert recipe.value("max_steps") == -1  # the clock, not a step count, ends the run
    else:
        assert recipe.base_model == "tiny" and recipe.value("learning_rate") == 2e-3
        assert recipe.value("num_train_epochs") == 6 and recipe.value("use_peft") is False
