"""The cloud backend of ``fine_tuned_model``: OpenAI / Azure OpenAI jobs that never pay twice.

`run_cloud_fine_tune` is called by the ``fine_tuned_model`` asset (defs/training/assets.py) when its
backend is ``openai`` or ``azure``. The job logic lives in `mrdabak_pipeline.core.cloud`; this
module only turns Dagster config/resources into that core's arguments, streams job events into
the run log, and turns the outcome into the asset value plus metadata.

On retry: the job is found again by the fingerprint in its metadata (dataset sha256 +
hyperparameters), so a retried or re-executed run resumes polling the same job and pays nothing.
Terminating the run cancels the job unless ``cancel_on_run_termination`` is False.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from dagster._core.errors import DagsterExecutionInterruptedError
from pydantic import Field

from mrdabak_pipeline.core.cloud import (
    API_KEY_ENV,
    DEFAULT_BASE_MODEL,
    TERMINAL_STATUSES,
    ArmTarget,
    FineTuningClient,
    JobFailedError,
    app_settings,
    build_job_spec,
    default_deployment_name,
    deploy_fine_tuned_model,
    estimated_cost_usd,
    make_sdk_client,
    manual_deployment_steps,
    plot_curve,
)
from mrdabak_pipeline.core.cloud.azure import ARM_BASE_URL
from mrdabak_pipeline.core.cloud.client import DEFAULT_AZURE_API_VERSION
from mrdabak_pipeline.defs.resources import DataPathsResource

# Bound a cloud training run (the guide expects 15-30 min; queues can be long). Put these tags on
# the job that materializes fine_tuned_model with a cloud backend.
CLOUD_RUN_TAGS: dict[str, str] = {"dagster/max_runtime": str(6 * 3600)}
RUN_TAG_JOB_ID = "mrdabak/cloud_job_id"

# Indirection so tests can simulate a run that dies or is terminated mid-poll.
_poll_sleep = time.sleep


class CloudFineTuneConfig(dg.Config):
    """One cloud fine-tuning job. Numbers may be given as numbers, numeric text or "auto"."""

    model: str = Field(default=DEFAULT_BASE_MODEL, description="Base model (Azure names are mapped).")
    method: Literal["supervised", "dpo"] = "supervised"
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
    azure_sku: str = "standard"
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


def _md_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    def cell(v: Any) -> str:
        return f"{v:.4f}" if isinstance(v, float) else ("" if v is None else str(v))

    head = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns) + "\n"
    return head + "".join("| " + " | ".join(cell(r.get(c)) for c in columns) + " |\n" for r in rows)


def _dataset_paths(dataset: dict[str, Any]) -> tuple[Path, Path | None]:
    """Train/validation paths from the openai_chat_dataset value, with a clear error if unusable."""
    if not dataset.get("train_path"):
        raise dg.Failure("openai_chat_dataset has no train_path: materialize it first")
    train = Path(dataset["train_path"])
    if not train.is_file() or train.stat().st_size == 0:
        raise dg.Failure(f"training file {train} is missing or empty")
    valid = Path(dataset["validation_path"]) if dataset.get("validation_path") else None
    if valid is not None and (not valid.is_file() or valid.stat().st_size == 0):
        valid = None  # the API accepts no validation file; an empty one would fail the job
    return train, valid


def run_cloud_fine_tune(
    context: dg.AssetExecutionContext,
    resource: OpenAIFineTuningResource,
    config: CloudFineTuneConfig,
    backend: str,
    openai_dataset: dict[str, Any],
    data_paths: DataPathsResource,
) -> dg.Output:
    """Create (or attach to) the job for this dataset + config, follow it, return the model value.

    `data_paths` is the run's configured resource (where the loss curve goes), never a default one.
    """
    spec = build_job_spec(
        backend=backend,
        model=config.model,
        method=config.method,
        n_epochs=config.n_epochs,
        batch_size=config.batch_size,
        learning_rate_multiplier=config.learning_rate_multiplier,
        beta=config.beta,
        seed=config.seed,
        suffix=config.suffix,
        wandb_project=config.wandb_project,
    )
    train_path, valid_path = _dataset_paths(openai_dataset)
    client = resource.get_client(backend, config.azure_api_version)
    handle = client.create_or_attach(
        spec,
        train_path=train_path,
        validation_path=valid_path,
        train_sha256=openai_dataset.get("train_sha256"),
        validation_sha256=openai_dataset.get("validation_sha256") if valid_path else None,
        run_id=context.run.run_id,
    )
    job_id = handle.job.id
    for up in handle.uploads:
        context.log.info(f"{'reused upload' if up.reused else 'uploaded'} {up.filename} as {up.file_id}")
    context.log.info(
        f"{'attached to existing' if handle.attached else 'created'} {backend} fine-tuning job {job_id} "
        f"(status {handle.job.status}, fingerprint {handle.fingerprint[:12]})"
    )
    try:
        context.instance.add_run_tags(context.run.run_id, {RUN_TAG_JOB_ID: job_id})
    except Exception as exc:  # the tag is a convenience; never fail the (paid) job over it
        context.log.warning(f"could not tag the run with the job id: {exc}")

    def on_event(event: Any) -> None:
        log = {"warn": context.log.warning, "error": context.log.error}.get(event.level, context.log.info)
        log(f"[{job_id}] {event.message}")

    try:
        job = client.follow(
            job_id,
            on_event=on_event,
            on_status=lambda j: context.log.info(f"[{job_id}] status: {j.status}"),
            on_transient=lambda exc, n: context.log.warning(f"[{job_id}] transient error #{n}: {type(exc).__name__}"),
            poll_interval_s=config.poll_interval_s,
            sleep=lambda s: _poll_sleep(s),
            max_wait_s=config.max_wait_s,
        )
    except (DagsterExecutionInterruptedError, KeyboardInterrupt):
        if config.cancel_on_run_termination:
            try:
                if client.retrieve(job_id).status not in TERMINAL_STATUSES:
                    client.cancel(job_id)
                    context.log.warning(f"run terminated: cancelled fine-tuning job {job_id}")
            except Exception as exc:
                context.log.error(f"run terminated; cancelling job {job_id} failed: {exc}")
        else:
            context.log.warning(f"run terminated; job {job_id} keeps running (a retry will attach to it)")
        raise

    try:
        result = client.outcome(job)
    except JobFailedError as exc:
        raise dg.Failure(
            description=str(exc),
            metadata={"job_id": job_id, "status": exc.status, "error_code": exc.code or "", "error_message": exc.message or ""},
        ) from exc

    model_id = result["model_id"]
    serving_model = model_id
    base_url = str(client.sdk.base_url).rstrip("/")
    deployment_md: str | None = None
    azure_endpoint = resource.resolved_azure_endpoint()
    if backend == "azure":
        serving_model = config.azure_deployment_name or default_deployment_name(spec.suffix, job_id)
        base_url = (azure_endpoint or "").rstrip("/") + "/openai/v1"
        target = resource.arm_target(config.azure_sku, config.azure_capacity) if config.azure_deploy else None
        if target is not None:
            deployed = deploy_fine_tuned_model(
                target, serving_model, model_id, poll_interval_s=config.poll_interval_s, sleep=_poll_sleep
            )
            deployment_md = f"Deployed `{model_id}` as `{serving_model}` via ARM ({deployed['provisioning_state']})."
        else:
            deployment_md = manual_deployment_steps(model_id, serving_model, resource.arm_account_name)
        context.log.info(deployment_md.splitlines()[0])

    settings = app_settings(
        backend=backend,
        model=serving_model,
        base_url=resource.resolved_base_url(backend),
        azure_endpoint=azure_endpoint,
    )
    estimate = estimated_cost_usd(spec.model, openai_dataset, spec.n_epochs)
    models_dir = data_paths.sub("models") / "cloud"
    curve_png = plot_curve(result["curve"], models_dir / f"{job_id}_loss_curve.png", title=model_id) if result["curve"] else None

    summary = result["curve_summary"]
    metrics = {
        "job_id": job_id,
        "attached_to_existing_job": handle.attached,
        "trained_tokens": result["trained_tokens"],
        "estimated_cost_usd": estimate,
        "actual_cost_usd": result["actual_cost_usd"],
        "hyperparameters": result["hyperparameters"],
        "checkpoints": result["checkpoints"],
        **{k: v for k, v in summary.items() if v is not None},
    }
    value = {
        "backend": backend,
        "base_model": spec.model,
        "base_model_path": None,
        "model_path": None,
        "is_adapter": False,
        "model_id": model_id,
        "base_url": base_url,
        "inference_model": serving_model,  # what to pass as `model=` on base_url (Azure: deployment)
        "job_id": job_id,
        "fingerprint": handle.fingerprint,
        "app_settings": settings["properties"],
        "metrics": metrics,
    }
    metadata: dict[str, Any] = {
        "model_id": dg.MetadataValue.text(model_id or ""),
        "inference_model": dg.MetadataValue.text(serving_model or ""),
        "job_id": dg.MetadataValue.text(job_id),
        "attached_to_existing_job": handle.attached,
        "uploads_reused": sum(u.reused for u in handle.uploads),
        "trained_tokens": int(result["trained_tokens"] or 0),
        "checkpoints": dg.MetadataValue.md(
            _md_table(result["checkpoints"], ["step", "model", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy"])
            if result["checkpoints"] else "no checkpoints reported"
        ),
        "app_settings": dg.MetadataValue.md(
            "application.properties:\n```properties\n" + settings["properties_text"] + "\n```\n"
            "or environment:\n```bash\n" + settings["env_text"] + "\n```"
        ),
    }
    for key in ("estimated_cost_usd", "actual_cost_usd"):
        if metrics[key] is not None:
            metadata[key] = float(metrics[key])
    for key, number in summary.items():
        if number is not None and key != "steps":
            metadata[key] = float(number)
    if curve_png is not None:
        metadata["loss_curve"] = dg.MetadataValue.path(str(curve_png))
    if result["curve_error"]:
        context.log.warning(result["curve_error"])
        metadata["curve_error"] = result["curve_error"]
    if deployment_md:
        metadata["azure_deployment"] = dg.MetadataValue.md(deployment_md)
    return dg.Output(value, metadata=metadata)
