"""The `fine_tuned_model` asset: local SFT or DPO (``method``) through Dagster Pipes, or an OpenAI / Azure job.

The local backend launches `mrdabak_pipeline.external.train_entry` with `PipesSubprocessClient`
(resource key ``pipes_subprocess_client``): the training process can crash or run out of memory
without taking the Dagster process down, and the same script runs on Kubernetes with
``PipesK8sClient`` (swap the resource). The output folder is keyed by the dataset and the
settings (`core.training.config.run_key`), so a retried run finds its checkpoints and resumes
instead of starting over.
The asset sits in the concurrency pool ``gpu`` (limit it to 1 on the instance:
``dagster instance concurrency set gpu 1``), so two trainings never share the accelerator.
"""


import json
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from mrdabak_pipeline.core.training.config import (
    COMMON_KNOBS,
    RECIPE_DEFAULTS,
    Method,
    Throughput,
    TrainRecipe,
    run_key,
)
from mrdabak_pipeline.core.training.distributed import Distributed, launch_command
from mrdabak_pipeline.defs.compat import DagsterPipesExecutionError
from mrdabak_pipeline.defs.metadata import table
from mrdabak_pipeline.defs.resources import DataPathsResource
from mrdabak_pipeline.defs.training.cloud import (
    CloudFineTuneConfig,
    OpenAIFineTuningResource,
    run_cloud_fine_tune,
)
from mrdabak_pipeline.external.train_entry import ERROR_FILE

HIGH_WATER_MARK_KEY = "data_high_water_mark"
TRAIN_ENTRY_MODULE = "mrdabak_pipeline.external.train_entry"
_DEFAULTS = TrainRecipe()


def _knob(short: str, note: str = "") -> Any:
    """A common TRL knob under its short name: None keeps the recipe's value (shown here)."""
    name = COMMON_KNOBS[short]
    default = RECIPE_DEFAULTS.get(name, "TRL's default")
    return Field(default=None, description=f"trl {name}; default {default}. {note}".strip())


#: The logged numbers shown as a table beside the loss-curve file.
LOSS_HISTORY_COLUMNS = ("step", "epoch", "loss", "eval_loss", "learning_rate", "tokens_per_s")

class DistributedConfig(dg.Config):
    """Data-parallel training (`core.training.distributed.Distributed`): 1 process = no launcher."""

    num_processes: int = Field(default=1, description="Training processes per machine (one per GPU).")
    num_machines: int = Field(default=1, description="Machines; >1 needs main_process_ip and the same "
                              "command on every machine with its machine_rank.")
    machine_rank: int = 0
    main_process_ip: str | None = None
    main_process_port: int = 29500
    launcher: Literal["torchrun", "accelerate"] = Field(
        default="torchrun", description="torchrun (any strategy through TRL fields) or accelerate launch.")
    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        default="ddp", description="ddp replicates the model; fsdp/deepspeed shard it (accelerate launcher).")
    accelerate_config: str | None = Field(default=None, description="An `accelerate config` YAML (FSDP/DeepSpeed details).")

    def spec(self) -> Distributed:
        return Distributed(**self.model_dump())


class FineTuneConfig(dg.Config):
    """Run config of `fine_tuned_model` (`TrainRecipe.from_config` reads it; so does
    ``mrdabak finetune-hf --config``). The local defaults train the `tiny` demo model on CPU."""

    backend: Literal["local", "openai", "azure"] = "local"
    method: Method = Field(
        default=_DEFAULTS.method,
        description="local only: sft trains on huggingface_dataset, dpo on dpo_dataset's TRL pairs "
        "(TRL fields are then trl.DPOConfig's: beta, loss_type, ...). A cloud job's method is cloud.method.",
    )
    base_model: str = Field(
        default=_DEFAULTS.base_model,
        description=(
            "'tiny' (built from the data), 'gemma3' (Gemma 3 270M, offline GGUF package, reads Korean), "
            "'gemma3-ko' (gemma3 with its vocabulary cut to Korean orders: ~2x faster on a CPU), "
            "'smollm2-135m' (offline GGUF), a local folder or a HF model id."
        ),
    )
    epochs: float | None = _knob("epochs")
    batch_size: int | None = _knob("batch_size", "Examples per optimizer step (see throughput).")
    learning_rate: float | None = _knob("learning_rate", "~1e-4 for a pretrained LoRA.")
    use_lora: bool | None = _knob("use_lora", "LoRA (trl use_peft) instead of a full fine-tune.")
    max_steps: int | None = _knob("max_steps")
    max_train_minutes: float | None = Field(
        default=_DEFAULTS.max_train_minutes,
        description="Train for this many minutes of wall time, the learning rate following the clock "
        "(the demo's way to fit a time budget on any CPU); epochs and max_steps stay upper bounds.",
    )
    max_length: int | None = _knob("max_length", "Korean costs up to ~3 tokens per syllable.")
    throughput: Throughput = Field(default=_DEFAULTS.throughput, description="Batch layout: grouped, packed or plain.")
    num_threads: int = Field(default=_DEFAULTS.num_threads, description="torch CPU threads (1 is best on a busy box).")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description=(
            "Any trl.SFTConfig / trl.ModelConfig field by name (warmup_steps, lr_scheduler_type, lora_r, "
            "lora_target_modules, save_steps, eval_strategy: 'no', bf16, ...) or project knob (resume, merge, "
            "sparse_head, tiny_vocab_size). Unknown names fail the run before training starts."
        ),
    )
    cloud: CloudFineTuneConfig = Field(default_factory=CloudFineTuneConfig)
    distributed: DistributedConfig = Field(default_factory=DistributedConfig)

    def recipe(self) -> TrainRecipe:
        return TrainRecipe.from_config(self.model_dump(exclude={"backend", "cloud", "distributed"}))


def model_value(result: dict[str, Any], high_water_mark: str | None, prompt_id: str | None = None,
                method: str = "sft") -> dict[str, Any]:
    """The `fine_tuned_model` value (docs/ARCHITECTURE.md) from a core training result.

    `prompt_id` is the system prompt the training examples carried: the model is only ever run
    with it (evaluation and `mrdabak predict` refuse another).
    """
    return {
        "backend": "local",
        "method": method,
        "base_model": result["base_model"],
        "base_model_path": result["base_model_path"],
        "model_path": result["model_path"],
        "is_adapter": result["is_adapter"],
        "merged_path": result.get("merged_path"),
        "model_id": None,
        "base_url": None,
        "loss_curve_path": result["loss_curve_path"],
        "params": result["params"],
        "metrics": result["metrics"],
        "prompt_id": prompt_id,
        HIGH_WATER_MARK_KEY: high_water_mark,
    }


def _with_high_water_mark(out: dg.Output, mark: str | None) -> dg.Output:
    value = dict(out.value) | {HIGH_WATER_MARK_KEY: mark}
    return dg.Output(value, metadata={**out.metadata, HIGH_WATER_MARK_KEY: dg.MetadataValue.text(mark or "")})


def _run_training(context: dg.AssetExecutionContext, client: dg.PipesClient, command: list[str],
                  extras: dict[str, Any], output_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Launch `external.train_entry`; (the result it reported, its materialization metadata).

    A failed process fails the asset with that process's own error (``error.json``), not Pipes' generic one.
    """
    try:
        invocation = client.run(context=context, command=command, extras=extras)
    except DagsterPipesExecutionError as exc:
        error_file = output_dir / ERROR_FILE
        detail = json.loads(error_file.read_text()) if error_file.exists() else {}
        raise dg.Failure(
            description=f"training process failed: {detail.get('error') or exc}",
            metadata={"traceback": dg.MetadataValue.text(detail.get("traceback", "")),
                      "output_dir": dg.MetadataValue.path(str(output_dir))},
        ) from exc
    results = [m for m in invocation.get_custom_messages() if isinstance(m, dict) and "model_path" in m]
    if not results:
        raise dg.Failure(description="training process exited without reporting a result")
    return results[-1], dict(invocation.get_materialize_result().metadata or {})


def _local_metadata(result: dict[str, Any]) -> dict[str, Any]:
    """Paths as links (the loss curve is a file, not an image in the event log) and the numbers."""
    return {
        "dagster/uri": dg.MetadataValue.path(result["model_path"]),
        "model_path": dg.MetadataValue.path(result["model_path"]),
        "base_model_path": dg.MetadataValue.path(result["base_model_path"]),
        "loss_curve": dg.MetadataValue.path(result["loss_curve_path"]),
        "loss_history": table(result["log_history"], LOSS_HISTORY_COLUMNS),
        "hyperparameters": dg.MetadataValue.json(result["params"]),
        "adapter_size_mb": round(result["metrics"]["model_size_bytes"] / 2**20, 3),
    }


@dg.asset(
    group_name="training",
    kinds={"pytorch", "huggingface"},
    pool="gpu",
    description=(
        "Fine-tuned model. local: TRL SFT (peft LoRA or full) on huggingface_dataset, or with method dpo "
        "TRL DPO on dpo_dataset's pairs, in a Pipes "
        "subprocess, GPU (bf16) when present else CPU fp32, resumable from checkpoints; "
        "openai/azure: a cloud fine-tuning job on openai_chat_dataset (method supervised) or dpo_dataset "
        "(method dpo). Value: backend, method, base_model, "
        "base_model_path, model_path, is_adapter, model_id, base_url, metrics, data_high_water_mark."
    ),
)
def fine_tuned_model(
    context: dg.AssetExecutionContext,
    config: FineTuneConfig,
    huggingface_dataset: dict[str, Any],
    openai_chat_dataset: dict[str, Any],
    dpo_dataset: dict[str, Any],
    pipes_subprocess_client: dg.ResourceParam[dg.PipesClient],
    openai: OpenAIFineTuningResource,
    data_paths: DataPathsResource,
) -> dg.Output:
    if config.backend != "local":
        if config.method == "dpo":
            raise dg.Failure(description=f"method is the local trainer's: a {config.backend} DPO job is "
                             "cloud.method: dpo (leave method at sft)", allow_retries=False)
        out = run_cloud_fine_tune(context, openai, config.cloud, config.backend, openai_chat_dataset, data_paths,
                                  dpo_dataset)
        # the examples' system prompt is the trained dataset's: the pairs' for a DPO job
        trained_on = dpo_dataset if config.cloud.method == "dpo" else openai_chat_dataset
        prompt_id = trained_on.get("prompt_id")
        out = dg.Output(dict(out.value) | {"prompt_id": prompt_id, "method": config.cloud.method},
                        metadata={**out.metadata, "prompt_id": prompt_id or ""})
        mark = openai_chat_dataset.get(HIGH_WATER_MARK_KEY) or huggingface_dataset.get(HIGH_WATER_MARK_KEY)
        return _with_high_water_mark(out, mark)

    recipe = config.recipe()  # a bad setting fails here, before any process starts
    dataset, data_extras = _local_training_data(recipe, config.distributed, huggingface_dataset, dpo_dataset)
    command = launch_command(config.distributed.spec(), TRAIN_ENTRY_MODULE)
    models_dir = data_paths.sub("models")
    output_dir = models_dir / "fine_tuned" / run_key(dataset, recipe)
    context.log.info(f"training {recipe.base_model} ({recipe.method}) into {output_dir}")
    result, reported = _run_training(context, pipes_subprocess_client, command, {
        "settings": recipe.settings(),
        **data_extras,
        "output_dir": str(output_dir),
        "models_dir": str(models_dir),
    }, output_dir)
    mark = dataset.get(HIGH_WATER_MARK_KEY) or huggingface_dataset.get(HIGH_WATER_MARK_KEY)
    prompt_id = dataset.get("prompt_id")
    return _with_high_water_mark(
        dg.Output(model_value(result, mark, prompt_id, recipe.method),
                  metadata={"prompt_id": prompt_id or "", **reported, **_local_metadata(result)}),
        mark,
    )


def _local_training_data(recipe: TrainRecipe, distributed: DistributedConfig, huggingface_dataset: dict[str, Any],
                         dpo_dataset: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(the dataset value the run trains on, its Pipes extras): the HF folder for SFT, the TRL pair
    files for DPO. A DPO run without pairs, or across processes, fails here, before any process starts."""
    if recipe.method == "sft":
        return huggingface_dataset, {"dataset_path": str(huggingface_dataset["path"])}
    if distributed.num_processes * distributed.num_machines > 1:
        raise dg.Failure(description="method dpo trains in one process: set distributed.num_processes and "
                         "num_machines to 1", allow_retries=False)
    if not dpo_dataset.get("trl_train_path"):
        raise dg.Failure(
            description=f"method dpo: dpo_dataset has no training pairs (pair_count {dpo_dataset.get('pair_count', 0)}): "
            "pairs come from sessions with a corrected reply; materialize dpo_dataset with more data or train sft",
            allow_retries=False,
        )
    extras = {"pairs_train_path": str(dpo_dataset["trl_train_path"])}
    if dpo_dataset.get("trl_validation_path"):
        extras["pairs_validation_path"] = str(dpo_dataset["trl_validation_path"])
    return dpo_dataset, extras
