"""The cloud backend of ``fine_tuned_model`` (OpenAI / Azure OpenAI). STUB: being implemented (issue 6)."""

from __future__ import annotations

from typing import Any, Literal

import dagster as dg


class CloudFineTuneConfig(dg.Config):
    """Hyperparameters and options of one cloud fine-tuning job."""

    model: str = "gpt-4o-mini-2024-07-18"
    method: Literal["supervised", "dpo"] = "supervised"
    n_epochs: str | float | int = "auto"
    batch_size: str | float | int = "auto"
    learning_rate_multiplier: str | float | int = "auto"
    beta: str | float | int | None = None
    seed: int | None = None
    suffix: str = "mrdabak-voice-order"
    wandb_project: str | None = None
    cancel_on_run_termination: bool = True
    poll_interval_s: float = 10.0
    azure_deployment_name: str | None = None


class OpenAIFineTuningResource(dg.ConfigurableResource):
    """OpenAI / Azure OpenAI credentials and endpoint; the key comes from the environment."""

    api_key: str | None = None
    base_url: str | None = None
    azure_endpoint: str | None = None
    api_version: str | None = None


def run_cloud_fine_tune(
    context: dg.AssetExecutionContext,
    resource: OpenAIFineTuningResource,
    config: CloudFineTuneConfig,
    backend: str,
    openai_dataset: dict[str, Any],
) -> dg.Output:
    """Run (or attach to) one cloud fine-tuning job and return the fine_tuned_model value."""
    raise NotImplementedError("cloud fine-tuning is being implemented (issue 6)")
