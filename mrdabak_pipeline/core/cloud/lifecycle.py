"""Before paying for anything: can this organisation still train, and how long will the base model live?

OpenAI is winding self-serve fine-tuning down (deprecations page, notice of 2026-05-07): new jobs
end for everyone on 2027-01-06, and a fine-tuned model answers only until its *base* model shuts
down (gpt-4o-mini-2024-07-18: 2027-01-14). A run that uploads and trains a model which dies a week
later has wasted the money, so the API is asked first (``GET /models/{model}``) and the answer is
turned into an error (nothing uploaded) or a warning (in the run log and the asset's metadata).

Where the answer comes from:
- OpenAI: the model object's ``shutdown_date`` (``YYYY-MM-DD`` or null), documented on the
  deprecations page as the programmatic way to monitor shutdowns;
- Azure: the model object's ``deprecation.inference`` / ``deprecation.fine_tune`` (unix seconds)
  and ``capabilities.fine_tune`` (Azure's data-plane model schema; not re-verified for 2026).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import openai

#: OpenAI: no new fine-tuning jobs from this day on (developers.openai.com/api/docs/deprecations,
#: "Update to OpenAI's self-serve fine-tuning"). Organisations without recent fine-tuning use were
#: already blocked on 2026-05-07 (never fine-tuned) and 2026-07-02 (no fine-tuned inference in 60 days).
OPENAI_NEW_JOBS_END = date(2027, 1, 6)
OPENAI_DEPRECATIONS_URL = "https://developers.openai.com/api/docs/deprecations"
#: Warn this long before OPENAI_NEW_JOBS_END (every OpenAI run inside the window says so).
OPENAI_END_WARNING_DAYS = 180
DEFAULT_RETIREMENT_WARNING_DAYS = 90


class PreflightError(RuntimeError):
    """The job must not be created (nothing was uploaded): the message says why and what to do."""


class JobCreationRefusedError(RuntimeError):
    """The API refused to create the job for this organisation / resource (HTTP 403)."""


@dataclass(frozen=True)
class ModelLifecycle:
    """What the API says about one base model."""

    model: str
    exists: bool
    retires_on: date | None = None  # inference shutdown: a fine-tune dies with its base
    fine_tune_ends_on: date | None = None  # Azure: last day new fine-tuning jobs are accepted
    fine_tunable: bool | None = None  # None: the API did not say

    def days_left(self, today: date) -> int | None:
        return None if self.retires_on is None else (self.retires_on - today).days


@dataclass(frozen=True)
class Preflight:
    lifecycle: ModelLifecycle
    warnings: list[str] = field(default_factory=list)


def _day(value: Any) -> date | None:
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), tz=UTC).date()
    try:
        return date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def lifecycle_from_model(model: str, data: dict[str, Any]) -> ModelLifecycle:
    """Read either API's model object (OpenAI ``shutdown_date``; Azure ``deprecation``/``capabilities``)."""
    deprecation = data.get("deprecation") or {}
    capabilities = data.get("capabilities") or {}
    fine_tunable = capabilities.get("fine_tune") if isinstance(capabilities, dict) else None
    return ModelLifecycle(
        model=model,
        exists=True,
        retires_on=_day(data.get("shutdown_date")) or _day(deprecation.get("inference")),
        fine_tune_ends_on=_day(deprecation.get("fine_tune")),
        fine_tunable=fine_tunable if isinstance(fine_tunable, bool) else None,
    )


def model_lifecycle(sdk: openai.OpenAI, model: str) -> ModelLifecycle:
    """``GET /models/{model}``; a 404 means "not available to this organisation / resource"."""
    try:
        obj = sdk.models.retrieve(model)
    except openai.NotFoundError:
        return ModelLifecycle(model=model, exists=False)
    return lifecycle_from_model(model, obj.model_dump())


def retirement_warning(lifecycle: ModelLifecycle, today: date, within_days: int) -> str | None:
    """The warning an operator must see when the base model shuts down within ``within_days``."""
    left = lifecycle.days_left(today)
    if left is None or left > within_days:
        return None
    if left < 0:
        return f"base model {lifecycle.model} shut down on {lifecycle.retires_on}: its fine-tunes no longer answer"
    return (f"base model {lifecycle.model} shuts down on {lifecycle.retires_on} ({left} days): every model "
            "fine-tuned from it stops answering that day; retrain on a newer base or locally")


def check_before_upload(
    sdk: openai.OpenAI,
    backend: str,
    model: str,
    *,
    today: date,
    serve_until: date | None = None,
    warn_within_days: int = DEFAULT_RETIREMENT_WARNING_DAYS,
) -> Preflight:
    """Raise `PreflightError` when the job cannot be worth paying for; else the warnings to log.

    ``serve_until`` is the last day the new model must answer (the planned deployment): a base
    model that shuts down earlier is an error, not a warning.
    """
    warnings: list[str] = []
    if backend == "openai":
        if today >= OPENAI_NEW_JOBS_END:
            raise PreflightError(
                f"OpenAI stopped accepting new fine-tuning jobs on {OPENAI_NEW_JOBS_END} ({OPENAI_DEPRECATIONS_URL}): "
                "use backend 'azure' (Azure AI Foundry) or 'local'"
            )
        left = (OPENAI_NEW_JOBS_END - today).days
        if left <= OPENAI_END_WARNING_DAYS:
            warnings.append(f"OpenAI ends self-serve fine-tuning jobs on {OPENAI_NEW_JOBS_END} ({left} days); "
                            "organisations without recent fine-tuning use are already refused. Plan for Azure or local.")
    lifecycle = model_lifecycle(sdk, model)
    if not lifecycle.exists:
        raise PreflightError(f"base model {model!r} is not available to this {backend} organisation/resource "
                             "(GET /models answered 404): check the name (Azure spells gpt-35-turbo) and the region")
    if lifecycle.fine_tunable is False:
        raise PreflightError(f"base model {model!r} cannot be fine-tuned on this {backend} resource")
    if lifecycle.fine_tune_ends_on is not None and lifecycle.fine_tune_ends_on <= today:
        raise PreflightError(f"fine-tuning of {model!r} ended on {lifecycle.fine_tune_ends_on}")
    if lifecycle.retires_on is not None:
        if lifecycle.retires_on <= today:
            raise PreflightError(f"base model {model!r} shut down on {lifecycle.retires_on}")
        if serve_until is not None and lifecycle.retires_on < serve_until:
            raise PreflightError(
                f"base model {model!r} shuts down on {lifecycle.retires_on}, before the planned deployment ends "
                f"({serve_until}): the fine-tuned model would stop answering first. Pick a newer base model."
            )
        warning = retirement_warning(lifecycle, today, warn_within_days)
        if warning:
            warnings.append(warning)
    return Preflight(lifecycle=lifecycle, warnings=warnings)


#: Published shutdown dates (OpenAI deprecations page as reported in Oct 2026; the API's own
#: ``shutdown_date`` wins when a run recorded it). Used only where a model value carries no date.
KNOWN_SHUTDOWNS: dict[str, date] = {
    "gpt-4o-mini-2024-07-18": date(2027, 1, 14),
    "gpt-4o-2024-08-06": date(2027, 1, 14),
    "gpt-4o-2024-11-20": date(2027, 1, 14),
    "gpt-4.1-2025-04-14": date(2027, 1, 14),
    "gpt-4.1-mini-2025-04-14": date(2027, 1, 14),
    "gpt-4.1-nano-2025-04-14": date(2026, 10, 23),
}


def base_of(model_id: str) -> str:
    """The base model of a fine-tune id: OpenAI ``ft:<base>:<org>:<suffix>:<id>``, Azure ``<base>.ft-<job>``."""
    if model_id.startswith("ft:"):
        return model_id.split(":")[1]
    return model_id.split(".ft-")[0]


@dataclass(frozen=True)
class RetirementCheck:
    passed: bool
    message: str
    base_model: str | None = None
    retires_on: date | None = None


def check_model_value(value: dict[str, Any], today: date, within_days: int = DEFAULT_RETIREMENT_WARNING_DAYS) -> RetirementCheck:
    """For a ``fine_tuned_model`` / ``promoted_model`` value: does its base model retire within ``within_days``?

    Local models never retire (the weights are ours). A cloud value's recorded
    ``base_model_retires_on`` wins; otherwise `KNOWN_SHUTDOWNS` for its base model.
    """
    if value.get("backend", "local") == "local":
        return RetirementCheck(True, "local model: the weights are ours, nothing retires")
    base = value.get("base_model") or base_of(str(value.get("model_id") or ""))
    recorded = _day(value.get("base_model_retires_on"))
    retires_on = recorded or KNOWN_SHUTDOWNS.get(base)
    if retires_on is None:
        return RetirementCheck(True, f"no shutdown date announced for {base}", base, None)
    warning = retirement_warning(ModelLifecycle(model=base, exists=True, retires_on=retires_on), today, within_days)
    if warning:
        return RetirementCheck(False, warning, base, retires_on)
    return RetirementCheck(True, f"{base} shuts down on {retires_on} ({(retires_on - today).days} days)", base, retires_on)
