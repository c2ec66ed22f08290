"""OpenAI / Azure OpenAI fine-tuning jobs that never pay twice (pure: no Dagster import)."""

from __future__ import annotations

import importlib
from typing import Any

#: Where each public name lives. Loaded on first use: the token counting in `validation` needs
#: only `spec`'s price table, and importing the client pulls in the OpenAI SDK (0.6 s), which
#: every worker process of the preparation stages would otherwise pay for at start.
_WHERE: dict[str, str] = {
    "DatasetChangedError": "mrdabak_pipeline.core.cloud.client",
    "retries_logged": "mrdabak_pipeline.core.cloud.client",
    "JobCreationRefusedError": "mrdabak_pipeline.core.cloud.lifecycle",
    "PreflightError": "mrdabak_pipeline.core.cloud.lifecycle",
    "ModelLifecycle": "mrdabak_pipeline.core.cloud.lifecycle",
    "check_before_upload": "mrdabak_pipeline.core.cloud.lifecycle",
    "model_lifecycle": "mrdabak_pipeline.core.cloud.lifecycle",
    "retirement_warning": "mrdabak_pipeline.core.cloud.lifecycle",
    "OPENAI_NEW_JOBS_END": "mrdabak_pipeline.core.cloud.lifecycle",
    "AZURE_TRAINING_TYPES": "mrdabak_pipeline.core.cloud.spec",
    "DEPLOYMENT_SKUS": "mrdabak_pipeline.core.cloud.azure",
    "TrainingFiles": "mrdabak_pipeline.core.cloud.run",
    "training_files": "mrdabak_pipeline.core.cloud.run",
    "API_KEY_ENV": "mrdabak_pipeline.core.cloud.client",
    "DEFAULT_BASE_MODEL": "mrdabak_pipeline.core.cloud.spec",
    "DEFAULT_SUFFIX": "mrdabak_pipeline.core.cloud.spec",
    "FAILED_STATUSES": "mrdabak_pipeline.core.cloud.client",
    "SUFFIX_MAX_LEN": "mrdabak_pipeline.core.cloud.spec",
    "TERMINAL_STATUSES": "mrdabak_pipeline.core.cloud.client",
    "ArmTarget": "mrdabak_pipeline.core.cloud.azure",
    "AzureServing": "mrdabak_pipeline.core.cloud.run",
    "AzureDeploymentError": "mrdabak_pipeline.core.cloud.azure",
    "CloudCredentialsError": "mrdabak_pipeline.core.cloud.client",
    "CloudFineTuneRequest": "mrdabak_pipeline.core.cloud.run",
    "CloudFineTuneResult": "mrdabak_pipeline.core.cloud.run",
    "CloudHooks": "mrdabak_pipeline.core.cloud.run",
    "CloudSpecError": "mrdabak_pipeline.core.cloud.spec",
    "DatasetNotReadyError": "mrdabak_pipeline.core.cloud.run",
    "FineTuningClient": "mrdabak_pipeline.core.cloud.client",
    "JobFailedError": "mrdabak_pipeline.core.cloud.client",
    "JobHandle": "mrdabak_pipeline.core.cloud.client",
    "JobSpec": "mrdabak_pipeline.core.cloud.spec",
    "ResultFileError": "mrdabak_pipeline.core.cloud.results",
    "Upload": "mrdabak_pipeline.core.cloud.client",
    "app_settings": "mrdabak_pipeline.core.cloud.spec",
    "azure_model_name": "mrdabak_pipeline.core.cloud.spec",
    "build_job_spec": "mrdabak_pipeline.core.cloud.spec",
    "JOB_SPEC_OPTIONS": "mrdabak_pipeline.core.cloud.spec",
    "job_spec_from": "mrdabak_pipeline.core.cloud.spec",
    "decode_result_file": "mrdabak_pipeline.core.cloud.results",
    "default_deployment_name": "mrdabak_pipeline.core.cloud.azure",
    "deploy_fine_tuned_model": "mrdabak_pipeline.core.cloud.azure",
    "describe_job": "mrdabak_pipeline.core.cloud.client",
    "estimated_cost_usd": "mrdabak_pipeline.core.cloud.spec",
    "make_sdk_client": "mrdabak_pipeline.core.cloud.client",
    "manual_deployment_steps": "mrdabak_pipeline.core.cloud.azure",
    "parse_hparam": "mrdabak_pipeline.core.cloud.spec",
    "parse_result_csv": "mrdabak_pipeline.core.cloud.results",
    "plot_curve": "mrdabak_pipeline.core.cloud.results",
    "run_cloud_fine_tune": "mrdabak_pipeline.core.cloud.run",
    "sha256_file": "mrdabak_pipeline.core.runtime.files",
    "summarize_curve": "mrdabak_pipeline.core.cloud.results",
    "training_cost_usd": "mrdabak_pipeline.core.cloud.spec",
    "validate_suffix": "mrdabak_pipeline.core.cloud.spec",
}
__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value
    return value
