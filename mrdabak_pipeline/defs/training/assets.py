"""The `fine_tuned_model` asset: local SFT through Dagster Pipes, or an OpenAI / Azure job.

The local backend launches `mrdabak_pipeline.external.train_entry` with `PipesSubprocessClient`
(resource key ``pipes_subprocess_client``): the training process can crash or run out of memory
without taking the Dagster process down, and the same script runs on Kubernetes with
``PipesK8sClient`` (swap the resource). The output folder is keyed by the dataset and the
hyperparameters, so a retried run finds its checkpoints and resumes instead of starting over.
The asset sits in the concurrency pool ``gpu`` (limit it to 1 on the instance:
``dagster instance concurrency set gpu 1``), so two trainings never share the accelerator.
"""


import base64
import hashlib
import json
import sys
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from dagster._core.errors import DagsterPipesExecutionError
from pydantic import Field

from mrdabak_pipeline.core.training.sft import TrainParams
from mrdabak_pipeline.defs.resources import DataPathsResource
from mrdabak_pipeline.defs.training.cloud import (
    CloudFineTuneConfig,
    OpenAIFineTuningResource,
    run_cloud_fine_tune,
)
from mrdabak_pipeline.external.train_entry import ERROR_FILE

HIGH_WATER_MARK_KEY = "data_high_water_mark"
TRAIN_ENTRY_MODULE = "mrdabak_pipeline.external.train_entry"
_DEFAULTS = TrainParams()


class FineTuneConfig(dg.Config):
    """Run config of `fine_tuned_model`. The local defaults train the `tiny` demo model on CPU."""

    backend: Literal["local", "openai", "azure"] = "local"
    base_model: str = Field(
        default=_DEFAULTS.base_model,
        description=(
            "'tiny' (built from the data), 'gemma3' (Gemma 3 270M, offline GGUF package, reads Korean), "
            "'smollm2-135m' (offline GGUF), a local folder or a HF model id."
        ),
    )
    use_lora: bool = _DEFAULTS.use_lora
    lora_r: int = _DEFAULTS.lora_r
    lora_alpha: int = _DEFAULTS.lora_alpha
    lora_dropout: float = _DEFAULTS.lora_dropout
    target_modules: str = Field(
        default="all-linear", description="'all-linear' or comma-separated module names, e.g. 'q_proj,v_proj'."
    )
    modules_to_save: list[str] | None = Field(
        default=None, description="None: ['lm_head'] for a random-init base (tiny), else nothing."
    )
    epochs: float = _DEFAULTS.epochs
    batch_size: int = _DEFAULTS.batch_size
    learning_rate: float = Field(default=_DEFAULTS.learning_rate, description="2e-3 for tiny; ~1e-4 for a pretrained LoRA.")
    lr_scheduler: str = _DEFAULTS.lr_scheduler
    warmup: float = Field(default=_DEFAULTS.warmup, description="< 1: ratio of the steps; >= 1: steps.")
    max_length: int = _DEFAULTS.max_length
    seed: int = _DEFAULTS.seed
    grad_accum: int = _DEFAULTS.grad_accum
    num_threads: int = Field(default=_DEFAULTS.num_threads, description="torch CPU threads (1 is best on a busy box).")
    throughput: Literal["plain", "packed", "grouped"] = _DEFAULTS.throughput
    logging_steps: int = Field(default=_DEFAULTS.logging_steps, description="Log a progress line every N steps.")
    evaluate: bool = Field(default=True, description="Validation loss after every epoch.")
    save_steps: int = Field(default=_DEFAULTS.save_steps, description="Checkpoint every N steps; 0 = every epoch.")
    resume: bool = Field(default=True, description="Resume from the last checkpoint of the same dataset + settings.")
    merge: bool = Field(default=False, description="Also export a merged full model (merge_and_unload).")
    max_steps: int = _DEFAULTS.max_steps
    cloud: CloudFineTuneConfig = Field(default_factory=CloudFineTuneConfig)

    def train_params(self) -> TrainParams:
        local = {k: v for k, v in self.model_dump().items() if k not in {"backend", "cloud"}}
        if local["target_modules"] != "all-linear":
            local["target_modules"] = [m.strip() for m in local["target_modules"].split(",") if m.strip()]
        return TrainParams.from_dict(local)


def run_key(dataset: dict[str, Any], params: TrainParams) -> str:
    """Same dataset + same result-changing settings -> same folder, so a retry resumes there."""
    volatile = {"num_threads", "resume", "logging_steps", "merge", "evaluate"}
    settings = {k: v for k, v in params.to_dict().items() if k not in volatile}
    blob = json.dumps({"dataset": dataset, "params": settings}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _loss_curve_md(result: dict[str, Any]) -> str:
    """Loss curve inline (data URI, so the UI shows it without a file server) plus the numbers."""
    lines = []
    png = Path(result["loss_curve_path"])
    if png.exists():
        lines.append(f"![loss curve](data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()})\n")
    lines.append("| step | epoch | train loss | validation loss | lr | tokens/s |\n|---:|---:|---:|---:|---:|---:|")
    for r in result["log_history"]:
        lines.append(
            f"| {r['step']} | {r['epoch']} | {r.get('loss', '')} | {r.get('eval_loss', '')} | "
            f"{r.get('learning_rate', '')} | {r.get('tokens_per_s', '')} |"
        )
    return "\n".join(lines)


def model_value(result: dict[str, Any], high_water_mark: str | None, prompt_id: str | None = None) -> dict[str, Any]:
    """The `fine_tuned_model` value (docs/ARCHITECTURE.md) from a core training result.

    `prompt_id` is the system prompt the training examples carried: the model is only ever run
    with it (evaluation and `mrdabak predict` refuse another).
    """
    return {
        "backend": "local",
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


@dg.asset(
    group_name="training",
    kinds={"pytorch", "huggingface"},
    pool="gpu",
    description=(
        "Fine-tuned model. local: TRL SFT (peft LoRA or full) on huggingface_dataset in a Pipes "
        "subprocess, GPU (bf16) when present else CPU fp32, resumable from checkpoints; "
        "openai/azure: a cloud fine-tuning job on openai_chat_dataset. Value: backend, base_model, "
        "base_model_path, model_path, is_adapter, model_id, base_url, metrics, data_high_water_mark."
    ),
)
def fine_tuned_model(
    context: dg.AssetExecutionContext,
    config: FineTuneConfig,
    huggingface_dataset: dict[str, Any],
    openai_chat_dataset: dict[str, Any],
    pipes_subprocess_client: dg.PipesSubprocessClient,
    openai: OpenAIFineTuningResource,
    data_paths: DataPathsResource,
) -> dg.Output:
    if config.backend != "local":
        out = run_cloud_fine_tune(context, openai, config.cloud, config.backend, openai_chat_dataset, data_paths)
        out = dg.Output(dict(out.value) | {"prompt_id": openai_chat_dataset.get("prompt_id")},
                        metadata={**out.metadata, "prompt_id": openai_chat_dataset.get("prompt_id") or ""})
        mark = openai_chat_dataset.get(HIGH_WATER_MARK_KEY) or huggingface_dataset.get(HIGH_WATER_MARK_KEY)
        return _with_high_water_mark(out, mark)

    params = config.train_params()
    models_dir = data_paths.sub("models")
    output_dir = models_dir / "fine_tuned" / run_key(huggingface_dataset, params)
    context.log.info(f"training {params.base_model} into {output_dir}")
    try:
        invocation = pipes_subprocess_client.run(
            context=context,
            command=[sys.executable, "-m", TRAIN_ENTRY_MODULE],
            extras={
                "params": params.to_dict(),
                "dataset_path": str(huggingface_dataset["path"]),
                "output_dir": str(output_dir),
                "models_dir": str(models_dir),
            },
        )
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
    result = results[-1]
    reported = invocation.get_materialize_result().metadata
    mark = huggingface_dataset.get(HIGH_WATER_MARK_KEY)
    metrics = result["metrics"]
    return dg.Output(
        model_value(result, mark, huggingface_dataset.get("prompt_id")),
        metadata={
            "prompt_id": huggingface_dataset.get("prompt_id") or "",
            **reported,
            "dagster/uri": dg.MetadataValue.path(result["model_path"]),
            "model_path": dg.MetadataValue.path(result["model_path"]),
            "base_model_path": dg.MetadataValue.path(result["base_model_path"]),
            "loss_curve": dg.MetadataValue.path(result["loss_curve_path"]),
            "loss_history": dg.MetadataValue.md(_loss_curve_md(result)),
            "hyperparameters": dg.MetadataValue.json(result["params"]),
            "adapter_size_mb": round(metrics["model_size_bytes"] / 2**20, 3),
            HIGH_WATER_MARK_KEY: dg.MetadataValue.text(mark or ""),
        },
    )
