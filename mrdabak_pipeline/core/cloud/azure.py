"""Azure's extra step: a fine-tuned model answers only once it is *deployed*.

With ARM credentials (subscription, resource group, account and a management-plane bearer token,
e.g. ``az account get-access-token --query accessToken -o tsv``) the deployment is created with
the documented ARM ``PUT .../accounts/{account}/deployments/{name}``. Without them the pipeline
does not guess: it records the exact manual step (portal or ``az`` command) in metadata.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

ARM_BASE_URL = "https://management.azure.com"
ARM_API_VERSION = "2024-10-01"
_DEPLOYMENT_RE = re.compile(r"[^A-Za-z0-9_.-]+")


#: Deployment type -> ARM sku name (Microsoft Learn: "Deploy a fine-tuned model" uses ``standard``;
#: "Deploy a fine-tuned model for testing" uses ``developertier``; Global Standard is ``GlobalStandard``).
DEPLOYMENT_SKUS: dict[str, str] = {"standard": "standard", "global_standard": "GlobalStandard", "developer": "developertier"}
#: What each deployment type costs, recorded with the model so nobody is surprised by the bill.
DEPLOYMENT_COST_NOTES: dict[str, str] = {
    "standard": "Standard (regional): hourly hosting fee while deployed + per-token; data stays in region.",
    "global_standard": "Global Standard: hourly hosting fee while deployed + per-token (global rates); "
    "traffic may be processed outside the region.",
    "developer": "Developer: no hourly hosting fee, per-token only; no SLA, no data residency; "
    "the deployment is removed after 24 hours (evaluation only).",
}
TRAINING_COST_NOTES: dict[str | None, str] = {
    None: "training type: the API's default for the model (billed per training hour on Azure).",
    "Standard": "training type Standard: regional training (data stays in region), regional price.",
    "GlobalStandard": "training type Global Standard: cheaper, faster queues; data and weights may leave the region.",
    "Developer": "training type Developer: lowest price, no SLA, preemptible capacity.",
}


def deployment_sku(deployment_type: str) -> str:
    """The ARM sku name of a deployment type (``standard``/``global_standard``/``developer``)."""
    if deployment_type not in DEPLOYMENT_SKUS:
        raise ValueError(f"deployment type must be one of {sorted(DEPLOYMENT_SKUS)}, got {deployment_type!r}")
    return DEPLOYMENT_SKUS[deployment_type]


class AzureDeploymentError(RuntimeError):
    """ARM refused or never finished the deployment (status and ARM's message included)."""


@dataclass(frozen=True)
class ArmTarget:
    """Where the deployment goes; ``token`` is a secret (kept out of repr, logs and metadata)."""

    subscription_id: str
    resource_group: str
    account_name: str
    token: str
    base_url: str = ARM_BASE_URL
    api_version: str = ARM_API_VERSION
    sku: str = "standard"
    capacity: int = 1

    def __repr__(self) -> str:  # the token must never be printed
        return f"ArmTarget({self.subscription_id!r}, {self.resource_group!r}, {self.account_name!r}, token=***)"

    def deployment_url(self, deployment: str) -> str:
        return (
            f"{self.base_url.rstrip('/')}/subscriptions/{self.subscription_id}/resourceGroups/"
            f"{self.resource_group}/providers/Microsoft.CognitiveServices/accounts/{self.account_name}"
            f"/deployments/{deployment}"
        )


def default_deployment_name(suffix: str, job_id: str) -> str:
    """``<suffix>-<job id tail>``: unique per job, within Azure's 64-character name rule."""
    tail = job_id.rsplit("-", 1)[-1][-8:]
    return _DEPLOYMENT_RE.sub("-", f"{suffix}-{tail}")[:64]


def deployment_body(model_id: str, sku: str = "standard", capacity: int = 1) -> dict[str, Any]:
    return {
        "sku": {"name": sku, "capacity": capacity},
        "properties": {"model": {"format": "OpenAI", "name": model_id, "version": "1"}},
    }


def deploy_fine_tuned_model(
    target: ArmTarget,
    deployment: str,
    model_id: str,
    *,
    client: httpx.Client | None = None,
    poll_interval_s: float = 10.0,
    max_wait_s: float = 1800.0,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """PUT the deployment and wait for ``provisioningState == Succeeded``; idempotent (PUT)."""
    url = target.deployment_url(deployment)
    params = {"api-version": target.api_version}
    headers = {"Authorization": f"Bearer {target.token}"}
    own = client is None
    http = client or httpx.Client(timeout=60.0)
    try:
        resp = http.put(url, params=params, headers=headers, json=deployment_body(model_id, target.sku, target.capacity))
        if resp.status_code >= 400:
            raise AzureDeploymentError(f"ARM PUT deployment {deployment!r} -> {resp.status_code}: {resp.text[:500]}")
        started = time.monotonic()
        while True:
            state = (resp.json().get("properties") or {}).get("provisioningState", "Unknown")
            if state == "Succeeded":
                return {"deployment": deployment, "provisioning_state": state, "method": "arm"}
            if state in ("Failed", "Canceled"):
                raise AzureDeploymentError(f"deployment {deployment!r} ended {state}: {resp.text[:500]}")
            if time.monotonic() - started > max_wait_s:
                raise AzureDeploymentError(f"deployment {deployment!r} still {state} after {max_wait_s:.0f}s")
            sleep(poll_interval_s)
            resp = http.get(url, params=params, headers=headers)
            if resp.status_code >= 400:
                raise AzureDeploymentError(f"ARM GET deployment {deployment!r} -> {resp.status_code}: {resp.text[:500]}")
    finally:
        if own:
            http.close()


def manual_deployment_steps(model_id: str, deployment: str, account_name: str | None = None, sku: str = "standard") -> str:
    """Markdown for the person who deploys by hand (no ARM credentials configured)."""
    account = account_name or "<your-azure-openai-resource>"
    return (
        "No ARM credentials configured: deploy the model yourself.\n\n"
        "Portal: Azure AI Foundry -> Models + endpoints -> Custom models -> select "
        f"`{model_id}` -> Deploy, deployment name `{deployment}`.\n\n"
        "Or with the Azure CLI:\n```\n"
        f"az cognitiveservices account deployment create -g <resource-group> -n {account} \\\n"
        f"  --deployment-name {deployment} --model-name {model_id} --model-version 1 \\\n"
        f"  --model-format OpenAI --sku-name {sku} --sku-capacity 1\n```"
    )
