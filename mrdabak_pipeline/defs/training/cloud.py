"""The cloud backend of ``fine_tuned_model``: OpenAI / Azure OpenAI jobs that never pay twice.

`run_cloud_fine_tune` is called by the ``fine_tuned_model`` asset (defs/training/assets.py) when its
backend is ``openai`` or ``azure``. The whole run (job, polling, cancellation, deployment) is
`mrdabak_pipeline.core.cloud.run.run_cloud_fine_tune`; this module only maps Dagster config and
resources to its request, the run log and termination to its hooks, and its result to the asset
value plus metadata.

On retry: the job is found again by the fingerprint in its metadata (dataset sha256 +
hyperparameters), so a retried or re-executed run resumes polling the same job and pays nothing.
Terminating the run cancels the job unless ``cancel_on_run_termination`` is False.
"""

from __future__ import annotations

import os
import time
from datetime import date
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from mrdabak_pipeline.core.cloud import (
    API_KEY_ENV,
    DEFAULT_BASE_MODEL,
    ArmTarget,
    AzureServing,
    CloudFineTuneRequest,
    CloudFineTuneResult,
    CloudHooks,
    DatasetChangedError,
    DatasetNotReadyError,
    FineTuningClient,
    JobCreationRefusedError,
    JobFailedError,
    PreflightError,
    job_spec_from,
    make_sdk_client,
)
from mrdabak_pipeline.core.cloud import run_cloud_fine_tune as core_run
from mrdabak_pipeline.core.cloud.azure import ARM_BASE_URL, deployment_sku
from mrdabak_pipeline.core.cloud.client import DEFAULT_AZURE_API_VERSION
from mrdabak_pipeline.core.cloud.run import CHECKPOINT_COLUMNS
from mrdabak_pipeline.defs.metadata import table
from mrdabak_pipeline.defs.resources import DataPathsResource

# Bound a cloud training run (the guide expects 15-30 min; queues can be long). Put these tags on
# the job that materializes fine_tuned_model with a cloud backend.
CLOUD_RUN_TAGS: dict[str, str] = {"dagster/max_runtime": str(6 * 3600)}
RUN_TAG_JOB_ID = "mrdabak/cloud_job_id"

# Indirection so tests can simulate a run that dies or is terminated mid-poll.
_poll_sleep = time.sleep
#: Refusals that a retry cannot fix (nothing was uploaded, or the API said no): fail without retrying.
_FINAL_ERRORS = (DatasetNotReadyError, DatasetChangedError, PreflightError, JobCreationRefusedError)


class CloudFineTuneConfig(dg.Config):
    """One cloud fine-tuning job. Numbers may be given as numbers, numeric text or "auto"."""

    model: str = Field(default=DEFAULT_BASE_MODEL, description="Base model (Azure names are mapped).")
    method: Literal["supervised", "dpo"] = Field(
        default="supervised", description="supervised: openai_chat_dataset; dpo: dpo_dataset's OpenAI pair files."
    )
    training_type: str | None = Field(
        default=None,
        description="Azure AI Foundry training type (trainingType): standard | global_standard | developer. "
        "global_standard is cheaper but may leave the "
        "region; standard keeps data in region; developer is cheapest, no SLA. None: the API's default.",
    )
    serve_until: str | None = Field(
        default=None,
        description="YYYY-MM-DD, the last day the model must answer: a base model retiring earlier is refused before upload.",
    )
    retirement_warning_days: int = Field(default=90, description="Warn when the base model retires within this many days.")
    n_epochs: Any = Field(default="auto", description='Epochs: an integer 1-50 or "auto".')
    batch_size: Any = Field(default="auto", description='Batch size: an integer 1-256 or "auto".')
    learning_rate_multiplier: Any = Field(default="auto", description='A positive number or "auto".')
    beta: Any = Field(default=None, description='DPO only: a number in (0, 2] or "auto".')
    seed: int | None = None
    suffix: str | None = Field(
        default=None,
        description="Model-name suffix; default 'mrdabak-voice-order' (OpenAI, <=64 chars) or "
        "'mrdabak-voice' (Azure, <=18 chars). Validated before any upload.",
    )
    wandb_project: str | None = Field(default=None, description="Weights & Biases project (optional).")
    cancel_on_run_termination: bool = Field(default=True, description="Cancel the job if the run is terminated.")
    poll_interval_s: float = Field(default=15.0, description="Seconds between job polls.")
    max_wait_s: float | None = Field(default=None, description="Give up following after this long (job kept).")
    azure_api_version: str | None = Field(default=None, description="Overrides the resource's api_version.")
    azure_deployment_name: str | None = Field(default=None, description="Default: '<suffix>-<job id tail>'.")
    azure_deploy: bool = Field(default=True, description="Create the Azure deployment after success.")
    azure_deployment_type: Literal["standard", "global_standard", "developer"] = Field(
        default="standard",
        description="standard/global_standard: hourly hosting fee + tokens; developer: tokens only, no SLA, "
        "removed after 24 hours (evaluation).",
    )
    azure_capacity: int = 1


class OpenAIFineTuningResource(dg.ConfigurableResource):
    """Credentials and endpoints for OpenAI / Azure OpenAI fine-tuning.

    Every field is optional so Definitions load (and the local backend runs) without any key;
    a missing key is an error only when a cloud job is actually requested. Unset fields fall
    back to the environment at run time (OPENAI_API_KEY, OPENAI_BASE_URL, AZURE_OPENAI_ENDPOINT,
    AZURE_OPENAI_API_KEY, AZURE_SUBSCRIPTION_ID, AZURE_RESOURCE_GROUP, AZURE_OPENAI_ACCOUNT,
    AZURE_ARM_TOKEN), so secrets never appear in run config.
    """

    api_key: str | None = None
    base_url: str | None = Field(default=None, description="OpenAI-compatible endpoint (default api.openai.com).")
    azure_endpoint: str | None = None
    azure_api_key: str | None = None
    api_version: str = DEFAULT_AZURE_API_VERSION
    max_retries: int = Field(default=5, description="SDK retries with backoff on 429/5xx/connection errors.")
    timeout_s: float = 120.0
    arm_subscription_id: str | None = None
    arm_resource_group: str | None = None
    arm_account_name: str | None = None
    arm_token: str | None = None
    arm_base_url: str = ARM_BASE_URL

    def _get(self, value: str | None, env: str) -> str | None:
        return value or os.environ.get(env) or None

    def resolved_base_url(self, backend: str) -> str | None:
        if backend == "azure":
            return None
        return self._get(self.base_url, "OPENAI_BASE_URL")

    def resolved_azure_endpoint(self) -> str | None:
        return self._get(self.azure_endpoint, "AZURE_OPENAI_ENDPOINT")

    def get_client(self, backend: str, api_version: str | None = None) -> FineTuningClient:
        """A job client for ``backend``; raises `CloudCredentialsError` naming the missing env var."""
        key = self._get(self.azure_api_key if backend == "azure" else self.api_key, API_KEY_ENV.get(backend, ""))
        sdk = make_sdk_client(
            backend,
            api_key=key,
            base_url=self.resolved_base_url(backend),
            azure_endpoint=self.resolved_azure_endpoint(),
            api_version=api_version or self.api_version,
            max_retries=self.max_retries,
            timeout_s=self.timeout_s,
        )
        return FineTuningClient(sdk, backend)

    def arm_target(self, sku: str = "standard", capacity: int = 1) -> ArmTarget | None:
        """The ARM deployment target, or None when any ARM setting is missing (manual step then)."""
        parts = (
            self._get(self.arm_subscription_id, "AZURE_SUBSCRIPTION_ID"),
            self._get(self.arm_resource_group, "AZURE_RESOURCE_GROUP"),
            self._get(self.arm_account_name, "AZURE_OPENAI_ACCOUNT"),
            self._get(self.arm_token, "AZURE_ARM_TOKEN"),
        )
        if not all(parts):
            return None
        sub, rg, account, token = parts
        return ArmTarget(sub, rg, account, token, base_url=self.arm_base_url, sku=sku, capacity=capacity)  # type: ignore[arg-type]


def default_openai_resource() -> OpenAIFineTuningResource:
    """The resource for Definitions: `dagster.EnvVar` for each secret that is set, nothing otherwise.

    EnvVar keeps the value out of the UI and run config; skipping unset ones keeps Definitions
    loadable on machines that only train locally.
    """
    env_fields = {
        "api_key": "OPENAI_API_KEY",
        "azure_api_key": "AZURE_OPENAI_API_KEY",
        "azure_endpoint": "AZURE_OPENAI_ENDPOINT",
        "arm_token": "AZURE_ARM_TOKEN",
    }
    return OpenAIFineTuningResource(**{f: dg.EnvVar(env) for f, env in env_fields.items() if os.environ.get(env)})


def _azure_serving(resource: OpenAIFineTuningResource, config: CloudFineTuneConfig) -> AzureServing:
    """Where an Azure model is deployed: via ARM when every ARM setting is there, else by a person."""
    sku = deployment_sku(config.azure_deployment_type)
    return AzureServing(
        endpoint=resource.resolved_azure_endpoint(),
        deployment_name=config.azure_deployment_name,
        arm_target=resource.arm_target(sku, config.azure_capacity) if config.azure_deploy else None,
        account_name=resource.arm_account_name,
        deployment_type=config.azure_deployment_type,
    )


def _hooks(context: dg.AssetExecutionContext) -> CloudHooks:
    def log(level: str, message: str) -> None:
        getattr(context.log, level)(message)

    return CloudHooks(
        log=log,
        sleep=lambda s: _poll_sleep(s),  # looked up per call: tests swap it
        on_job=lambda job_id: context.instance.add_run_tags(context.run.run_id, {RUN_TAG_JOB_ID: job_id}),
        interrupts=(dg.DagsterExecutionInterruptedError, KeyboardInterrupt),
    )


def cloud_metadata(result: CloudFineTuneResult) -> dict[str, Any]:
    """What the UI shows for a cloud model: ids, numbers, checkpoints, the curve file, app settings."""
    settings = result.settings
    metadata: dict[str, Any] = {
        "model_id": dg.MetadataValue.text(result.model_id or ""),
        "inference_model": dg.MetadataValue.text(result.serving_model or ""),
        "job_id": dg.MetadataValue.text(result.job_id),
        "attached_to_existing_job": dg.MetadataValue.bool(result.attached),
        "uploads_reused": dg.MetadataValue.int(result.uploads_reused),
        "trained_tokens": dg.MetadataValue.int(int(result.trained_tokens or 0)),
        "checkpoints": table(result.checkpoints, CHECKPOINT_COLUMNS),
        "app_settings": dg.MetadataValue.md(
            "application.properties:\n```properties\n" + settings["properties_text"] + "\n```\n"
            "or environment:\n```bash\n" + settings["env_text"] + "\n```"
        ),
    }
    for key, number in (("estimated_cost_usd", result.estimated_cost_usd), ("actual_cost_usd", result.actual_cost_usd)):
        if number is not None:
            metadata[key] = dg.MetadataValue.float(float(number))
    for key, number in result.curve_summary.items():
        if number is not None and key != "steps":
            metadata[key] = dg.MetadataValue.float(float(number))
    if result.curve_png is not None:
        metadata["loss_curve"] = dg.MetadataValue.path(str(result.curve_png))
    if result.curve_error:
        metadata["curve_error"] = dg.MetadataValue.text(result.curve_error)
    if result.deployment_note:
        metadata["azure_deployment"] = dg.MetadataValue.md(result.deployment_note)
    if result.deployment_name:
        metadata["deployment_name"] = dg.MetadataValue.text(result.deployment_name)
    if result.cost_notes:
        metadata["cost_notes"] = dg.MetadataValue.md("\n".join(f"- {n}" for n in result.cost_notes if n))
    metadata["base_model_retires_on"] = dg.MetadataValue.text(
        result.base_model_retires_on.isoformat() if result.base_model_retires_on else "no date announced")
    if result.preflight_warnings:
        metadata["preflight_warnings"] = dg.MetadataValue.md("\n".join(f"- {w}" for w in result.preflight_warnings))
    return metadata


def run_cloud_fine_tune(
    context: dg.AssetExecutionContext,
    resource: OpenAIFineTuningResource,
    config: CloudFineTuneConfig,
    backend: str,
    openai_dataset: dict[str, Any],
    data_paths: DataPathsResource,
    dpo_dataset: dict[str, Any] | None = None,
) -> dg.Output:
    """The cloud branch of ``fine_tuned_model``: config/resources in, `core.cloud.run` does the work.

    ``method: dpo`` trains on `dpo_dataset` (its OpenAI pair files), ``supervised`` on the chat dataset.
    `data_paths` is the run's configured resource (where the loss curve goes), never a default one.
    """
    request = CloudFineTuneRequest(
        spec=job_spec_from(backend, config.model_dump()),  # refused before uploads
        dataset=(dpo_dataset or {}) if config.method == "dpo" else openai_dataset,
        serve_until=date.fromisoformat(config.serve_until) if config.serve_until else None,
        retirement_warning_days=config.retirement_warning_days,
        models_dir=data_paths.sub("models") / "cloud",
        run_id=context.run.run_id,
        poll_interval_s=config.poll_interval_s,
        max_wait_s=config.max_wait_s,
        cancel_on_interrupt=config.cancel_on_run_termination,
        azure=_azure_serving(resource, config) if backend == "azure" else None,
    )
    client = resource.get_client(backend, config.azure_api_version)
    try:
        result = core_run(client, request, _hooks(context))
    except _FINAL_ERRORS as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    except JobFailedError as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={"job_id": exc.job_id, "status": exc.status, "error_code": exc.code or "", "error_message": exc.message or ""},
        ) from exc
    return dg.Output(result.value(), metadata=cloud_metadata(result))
