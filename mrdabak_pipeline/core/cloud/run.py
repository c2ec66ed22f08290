"""One cloud fine-tuning run, start to finish: find or create the job, follow it, deploy, sum up.

This is the orchestration the ``fine_tuned_model`` asset needs for the ``openai``/``azure``
backends, kept here (no Dagster import) so the asset body only maps config and resources to a
`CloudFineTuneRequest` and the `CloudFineTuneResult` to its value and metadata. Whoever calls it
supplies three hooks instead of a Dagster context: a logger, a sleep (tests make polls instant or
make them die mid-run), and the exception types that mean "the run was terminated", on which the
job is cancelled (or deliberately left running, so a retry attaches to it and pays nothing).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from openai.types.fine_tuning import FineTuningJob

from mrdabak_pipeline.core.cloud.azure import (
    DEPLOYMENT_COST_NOTES,
    TRAINING_COST_NOTES,
    ArmTarget,
    default_deployment_name,
    deploy_fine_tuned_model,
    deployment_sku,
    manual_deployment_steps,
)
from mrdabak_pipeline.core.cloud.client import (
    TERMINAL_STATUSES,
    FineTuningClient,
    JobHandle,
    Upload,
    retries_logged,
)
from mrdabak_pipeline.core.cloud.lifecycle import DEFAULT_RETIREMENT_WARNING_DAYS, check_before_upload
from mrdabak_pipeline.core.cloud.results import plot_curve
from mrdabak_pipeline.core.cloud.spec import JobSpec, app_settings, estimated_cost_usd

#: ``log(level, message)`` with level ``info``, ``warning`` or ``error`` (the `logging` names).
LogFn = Callable[[str, str], None]
#: API event levels -> `LogFn` levels.
_EVENT_LEVELS = {"warn": "warning", "error": "error"}
#: The ``checkpoints`` columns worth showing, in order (the API adds more over time).
CHECKPOINT_COLUMNS = ("step", "model", "train_loss", "train_mean_token_accuracy", "valid_loss", "valid_mean_token_accuracy")


class DatasetNotReadyError(ValueError):
    """The chat dataset value names no usable training file: nothing is uploaded, nothing paid."""


@dataclass(frozen=True, kw_only=True)
class AzureServing:
    """How an Azure job's model becomes callable: a deployment, via ARM or by a person."""

    endpoint: str | None
    deployment_name: str | None = None  # None: '<suffix>-<job id tail>'
    arm_target: ArmTarget | None = None  # None: the report carries the manual steps instead
    account_name: str | None = None
    deployment_type: str = "standard"  # standard | global_standard | developer (azure.DEPLOYMENT_SKUS)


@dataclass(frozen=True, kw_only=True)
class CloudFineTuneRequest:
    """Everything one run needs, as plain values (built by the Dagster shell or a CLI)."""

    spec: JobSpec
    #: supervised: the openai_chat_dataset value (train_path, train_sha256, ...);
    #: dpo: the dpo_dataset value (openai_train_path, openai_train_sha256, ...)
    dataset: Mapping[str, Any]
    models_dir: Path  # where the loss-curve PNG goes
    run_id: str = "manual"  # stored in the job's metadata: which run paid for it
    poll_interval_s: float = 15.0
    max_wait_s: float | None = None
    cancel_on_interrupt: bool = True
    azure: AzureServing | None = None  # required for the azure backend
    serve_until: date | None = None  # the planned deployment's last day: a base model retiring earlier is refused
    retirement_warning_days: int = DEFAULT_RETIREMENT_WARNING_DAYS
    today: date | None = None  # None: date.today() (tests pin it)


@dataclass(frozen=True)
class CloudHooks:
    """The caller's side effects: logging, waiting, and what counts as "the run was stopped"."""

    log: LogFn
    sleep: Callable[[float], None] = time.sleep
    on_job: Callable[[str], None] = lambda job_id: None  # called once the job id is known
    interrupts: tuple[type[BaseException], ...] = (KeyboardInterrupt,)


@dataclass(frozen=True, kw_only=True)
class CloudFineTuneResult:
    """A succeeded job's model, where to call it, and what it cost."""

    backend: str
    base_model: str
    model_id: str
    serving_model: str  # what to pass as ``model=`` on base_url (Azure: the deployment)
    base_url: str
    job_id: str
    fingerprint: str
    attached: bool
    uploads_reused: int
    trained_tokens: int | None
    estimated_cost_usd: float | None
    actual_cost_usd: float | None
    hyperparameters: dict[str, Any]
    checkpoints: list[dict[str, Any]]
    curve_summary: dict[str, float | int | None]
    curve_png: Path | None
    curve_error: str | None
    deployment_note: str | None  # Azure: Markdown saying how the deployment was made (or is to be made)
    settings: dict[str, Any] = field(default_factory=dict)  # spec.app_settings(): the app's voice.llm.*
    base_model_retires_on: date | None = None  # from the API before upload; None: no date announced
    preflight_warnings: list[str] = field(default_factory=list)
    deployment_name: str | None = None  # Azure: what the app's voice.llm.model must say
    cost_notes: list[str] = field(default_factory=list)  # Azure: what the training/deployment types cost

    def metrics(self) -> dict[str, Any]:
        return {
            "job_id": self.job_id,
            "attached_to_existing_job": self.attached,
            "trained_tokens": self.trained_tokens,
            "estimated_cost_usd": self.estimated_cost_usd,
            "actual_cost_usd": self.actual_cost_usd,
            "hyperparameters": self.hyperparameters,
            "checkpoints": self.checkpoints,
            **{k: v for k, v in self.curve_summary.items() if v is not None},
        }

    def value(self) -> dict[str, Any]:
        """The ``fine_tuned_model`` value of a cloud backend (docs/ARCHITECTURE.md)."""
        return {
            "backend": self.backend,
            "base_model": self.base_model,
            "base_model_path": None,
            "model_path": None,
            "is_adapter": False,
            "model_id": self.model_id,
            "base_url": self.base_url,
            "inference_model": self.serving_model,
            "job_id": self.job_id,
            "fingerprint": self.fingerprint,
            "app_settings": self.settings["properties"],
            "deployment_name": self.deployment_name,
            "base_model_retires_on": self.base_model_retires_on.isoformat() if self.base_model_retires_on else None,
            "metrics": self.metrics(),
        }


@dataclass(frozen=True)
class TrainingFiles:
    """The files a job trains on and the sha256 their dataset recorded (None: not recorded)."""

    train: Path
    train_sha256: str | None
    validation: Path | None
    validation_sha256: str | None


#: method -> (the dataset asset it reads, the key prefix of its OpenAI-format files)
_METHOD_DATASETS = {"supervised": ("openai_chat_dataset", ""), "dpo": ("dpo_dataset", "openai_")}


def training_files(dataset: Mapping[str, Any], method: str = "supervised") -> TrainingFiles:
    """The upload files for ``method``: the chat files (SFT) or the DPO pairs' OpenAI files (DPO).

    An empty validation file is dropped: the API accepts a job without one but fails one with an
    empty file. DPO must never upload the SFT file: the API rejects it after the upload was paid for.
    """
    name, prefix = _METHOD_DATASETS[method]
    if not dataset.get(f"{prefix}train_path"):
        raise DatasetNotReadyError(f"{name} has no {prefix}train_path (no examples/pairs yet): materialize it first")
    train = Path(dataset[f"{prefix}train_path"])
    if not train.is_file() or train.stat().st_size == 0:
        raise DatasetNotReadyError(f"training file {train} is missing or empty")
    valid = Path(dataset[f"{prefix}validation_path"]) if dataset.get(f"{prefix}validation_path") else None
    if valid is not None and (not valid.is_file() or valid.stat().st_size == 0):
        valid = None
    return TrainingFiles(train, dataset.get(f"{prefix}train_sha256"), valid,
                         dataset.get(f"{prefix}validation_sha256") if valid else None)


@dataclass
class _Progress:
    """How far creation got: what the cancel guard needs to find the job even without its id."""

    fingerprint: str | None = None
    uploads: list[Upload] = field(default_factory=list)
    job_id: str | None = None


def _start(client: FineTuningClient, request: CloudFineTuneRequest, files: TrainingFiles, hooks: CloudHooks,
           progress: _Progress) -> JobHandle:
    spec = request.spec
    if files.train_sha256:
        progress.fingerprint = spec.fingerprint(files.train_sha256, files.validation_sha256)
    handle = client.create_or_attach(
        spec,
        train_path=files.train,
        validation_path=files.validation,
        train_sha256=files.train_sha256,
        validation_sha256=files.validation_sha256,
        run_id=request.run_id,
        on_upload=progress.uploads.append,
    )
    progress.job_id, progress.fingerprint = handle.job.id, handle.fingerprint
    for up in handle.uploads:
        hooks.log("info", f"{'reused upload' if up.reused else 'uploaded'} {up.filename} as {up.file_id}")
    hooks.log(
        "info",
        f"{'attached to existing' if handle.attached else 'created'} {request.spec.backend} fine-tuning job "
        f"{handle.job.id} (status {handle.job.status}, fingerprint {handle.fingerprint[:12]})",
    )
    try:
        hooks.on_job(handle.job.id)
    except Exception as exc:  # a convenience (e.g. a run tag): never fail the paid job over it
        hooks.log("warning", f"could not record the job id: {exc}")
    return handle


def _follow(client: FineTuningClient, job_id: str, request: CloudFineTuneRequest, hooks: CloudHooks) -> FineTuningJob:
    """Poll to a terminal status (interrupts are handled by the guard around creation and polling)."""
    return client.follow(
        job_id,
        on_event=lambda e: hooks.log(_EVENT_LEVELS.get(e.level, "info"), f"[{job_id}] {e.message}"),
        on_status=lambda j: hooks.log("info", f"[{job_id}] status: {j.status}"),
        on_transient=lambda exc, n: hooks.log("warning", f"[{job_id}] transient error #{n}: {type(exc).__name__}"),
        poll_interval_s=request.poll_interval_s,
        sleep=hooks.sleep,
        max_wait_s=request.max_wait_s,
    )


def _job_of(client: FineTuningClient, spec: JobSpec, progress: _Progress) -> str | None:
    """The job this run created or attached to, even when the stop came before its id was returned."""
    if progress.job_id is not None:
        return progress.job_id
    if progress.fingerprint is None:
        return None
    job = client.find_reusable_job(progress.fingerprint)
    if job is None and progress.uploads:  # backends without metadata: same files + hyperparameters
        valid = progress.uploads[1].file_id if len(progress.uploads) > 1 else None
        job = client.find_reusable_job(progress.fingerprint, spec=spec, training_file=progress.uploads[0].file_id,
                                       validation_file=valid)
    return job.id if job is not None else None


def _on_interrupt(client: FineTuningClient, spec: JobSpec, progress: _Progress, cancel: bool, log: LogFn) -> None:
    try:
        job_id = _job_of(client, spec, progress)
    except Exception as exc:  # the run is ending anyway: report, do not mask the interrupt
        log("error", f"run terminated during job creation; looking the job up failed: {exc}")
        return
    if job_id is None:
        log("warning", "run terminated before any fine-tuning job existed: nothing to cancel")
        return
    if not cancel:
        log("warning", f"run terminated; job {job_id} keeps running (a retry will attach to it)")
        return
    try:
        if client.retrieve(job_id).status not in TERMINAL_STATUSES:
            client.cancel(job_id)
            log("warning", f"run terminated: cancelled fine-tuning job {job_id}")
    except Exception as exc:  # the run is ending anyway: report, do not mask the interrupt
        log("error", f"run terminated; cancelling job {job_id} failed: {exc}")


def _azure_deployment(
    model_id: str, job_id: str, request: CloudFineTuneRequest, hooks: CloudHooks
) -> tuple[str, str, str]:
    """(deployment name, base url, how-it-was-deployed note) for an Azure model."""
    azure = request.azure or AzureServing(endpoint=None)
    name = azure.deployment_name or default_deployment_name(request.spec.suffix, job_id)
    sku = deployment_sku(azure.deployment_type)
    if azure.arm_target is not None:
        deployed = deploy_fine_tuned_model(
            azure.arm_target, name, model_id, poll_interval_s=request.poll_interval_s, sleep=hooks.sleep
        )
        note = f"Deployed `{model_id}` as `{name}` via ARM ({deployed['provisioning_state']})."
    else:
        note = manual_deployment_steps(model_id, name, azure.account_name, sku)
    hooks.log("info", note.splitlines()[0])
    return name, (azure.endpoint or "").rstrip("/") + "/openai/v1", note


def run_cloud_fine_tune(client: FineTuningClient, request: CloudFineTuneRequest, hooks: CloudHooks) -> CloudFineTuneResult:
    """Create (or attach to) the job for this dataset + spec, follow it, deploy (Azure), sum up.

    Raises `DatasetNotReadyError`, `PreflightError` or `DatasetChangedError` before any upload,
    `JobCreationRefusedError` when the API will not create jobs for this organisation,
    `JobFailedError` when the job ends failed or cancelled, `TimeoutError` past ``max_wait_s``
    (the job is kept), and re-raises ``hooks.interrupts``: a stop from the first upload on,
    creation included, cancels the job (unless ``cancel_on_interrupt`` is False).
    """
    spec = request.spec
    files = training_files(request.dataset, spec.method)
    with retries_logged(client.sdk, lambda message: hooks.log("warning", message)):
        checked = check_before_upload(client.sdk, spec.backend, spec.model, today=request.today or date.today(),
                                      serve_until=request.serve_until, warn_within_days=request.retirement_warning_days)
        for warning in checked.warnings:
            hooks.log("warning", warning)
        progress = _Progress()
        try:
            handle = _start(client, request, files, hooks, progress)
            finished = _follow(client, handle.job.id, request, hooks)
        except hooks.interrupts:
            _on_interrupt(client, spec, progress, request.cancel_on_interrupt, hooks.log)
            raise
        return _sum_up(client, request, hooks, handle, finished, checked.warnings, checked.lifecycle.retires_on)


def _sum_up(client: FineTuningClient, request: CloudFineTuneRequest, hooks: CloudHooks, handle: JobHandle,
            finished: FineTuningJob, warnings: list[str], retires_on: date | None) -> CloudFineTuneResult:
    spec = request.spec
    job_id = handle.job.id
    outcome = client.outcome(finished)
    model_id = outcome["model_id"]
    serving_model, base_url, note = model_id, str(client.sdk.base_url).rstrip("/"), None
    cost_notes: list[str] = []
    if spec.backend == "azure":
        serving_model, base_url, note = _azure_deployment(model_id, job_id, request, hooks)
        deployment_type = (request.azure or AzureServing(endpoint=None)).deployment_type
        cost_notes = [TRAINING_COST_NOTES.get(spec.training_type, ""), DEPLOYMENT_COST_NOTES[deployment_type]]
    settings = app_settings(
        backend=spec.backend,
        model=serving_model,
        base_url=base_url if spec.backend == "openai" else None,
        azure_endpoint=request.azure.endpoint if request.azure else None,
    )
    curve = outcome["curve"]
    png = plot_curve(curve, request.models_dir / f"{job_id}_loss_curve.png", title=model_id) if curve else None
    if outcome["curve_error"]:
        hooks.log("warning", outcome["curve_error"])
    return CloudFineTuneResult(
        backend=spec.backend,
        base_model=spec.model,
        model_id=model_id,
        serving_model=serving_model,
        base_url=base_url,
        job_id=job_id,
        fingerprint=handle.fingerprint,
        attached=handle.attached,
        uploads_reused=sum(u.reused for u in handle.uploads),
        trained_tokens=outcome["trained_tokens"],
        estimated_cost_usd=estimated_cost_usd(spec.model, dict(request.dataset), spec.n_epochs),
        actual_cost_usd=outcome["actual_cost_usd"],
        hyperparameters=outcome["hyperparameters"],
        checkpoints=outcome["checkpoints"],
        curve_summary=outcome["curve_summary"],
        curve_png=png,
        curve_error=outcome["curve_error"],
        deployment_note=note,
        settings=settings,
        base_model_retires_on=retires_on,
        preflight_warnings=warnings,
        deployment_name=serving_model if spec.backend == "azure" else None,
        cost_notes=cost_notes,
    )
