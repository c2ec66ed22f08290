"""Asset checks that say, every time a model is (re)materialized, when its cloud base model shuts down.

A fine-tuned OpenAI/Azure model answers only while its base model lives (OpenAI: gpt-4o-mini-2024-07-18
shuts down 2027-01-14). The check warns (it does not block: the model still works today) once that
day is within ``RETIREMENT_WARNING_DAYS``; the logic is `core.cloud.lifecycle.check_model_value`.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import dagster as dg

from mrdabak_pipeline.core.cloud.lifecycle import DEFAULT_RETIREMENT_WARNING_DAYS, check_model_value

RETIREMENT_WARNING_DAYS = DEFAULT_RETIREMENT_WARNING_DAYS


def retirement_result(value: dict[str, Any], today: date | None = None) -> dg.AssetCheckResult:
    checked = check_model_value(value, today or date.today(), RETIREMENT_WARNING_DAYS)
    return dg.AssetCheckResult(
        passed=checked.passed,
        severity=dg.AssetCheckSeverity.WARN,
        description=checked.message,
        metadata={"base_model": checked.base_model or "", "retires_on": checked.retires_on.isoformat() if checked.retires_on else ""},
    )


@dg.asset_check(asset="fine_tuned_model", description="Warns when the cloud base model shuts down within 90 days.")
def fine_tuned_base_model_not_retiring(fine_tuned_model: dict[str, Any]) -> dg.AssetCheckResult:
    return retirement_result(fine_tuned_model)


@dg.asset_check(asset="promoted_model", description="Warns when the promoted model's cloud base shuts down within 90 days.")
def promoted_base_model_not_retiring(promoted_model: dict[str, Any]) -> dg.AssetCheckResult:
    return retirement_result(promoted_model)
