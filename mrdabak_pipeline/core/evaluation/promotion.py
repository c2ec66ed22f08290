"""The promotion gate, and what the production app should point to once a model passes it.

The gate reads only the figures of an evaluation (``results["metrics"]``), so the same functions
serve the Dagster asset checks, the `promoted_model` asset (which re-checks, in case it is
materialized in a run without the checks) and unit tests on hand-made figures.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mrdabak_pipeline.core.evaluation.generate import trained_in_bf16
from mrdabak_pipeline.core.evaluation.runner import ALL  # the pooled source: the gate's default

BASE, FINE_TUNED = "base", "fine_tuned"
#: The gate's check names (`GateResult.name`).
JSON_VALIDITY = "json_validity"
NOT_WORSE_THAN_BASE = "exact_match_not_worse_than_base"
RULE_VIOLATIONS = "rule_violations"


@dataclass(frozen=True, slots=True)
class GateThresholds:
    """Configurable bars a fine-tuned model must clear. `source` picks the item set (``all`` = both)."""

    min_json_validity: float = 0.9
    max_rule_violation_rate: float = 0.0
    exact_match_tolerance: float = 0.0
    source: str = ALL


@dataclass(frozen=True, slots=True)
class GateResult:
    name: str
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


def _value(figures: Mapping[str, Any], model: str, source: str, metric: str) -> tuple[float | None, int]:
    m = figures.get(model, {}).get(source, {}).get(metric) or {}
    return m.get("value"), int(m.get("n") or 0)


def check_json_validity(figures: Mapping[str, Any], t: GateThresholds) -> GateResult:
    """The fine-tuned model's share of replies the app can parse is at least the threshold."""
    value, n = _value(figures, FINE_TUNED, t.source, "json_valid")
    passed = value is not None and n > 0 and value >= t.min_json_validity
    return GateResult(
        JSON_VALIDITY,
        passed,
        f"fine-tuned JSON validity {value if value is None else f'{value:.3f}'} (n={n}) "
        f"{'>=' if passed else 'is below'} {t.min_json_validity:.3f}",
        {"json_valid": value, "n": n, "threshold": t.min_json_validity},
    )


def check_not_worse_than_base(figures: Mapping[str, Any], t: GateThresholds) -> GateResult:
    """The fine-tuned model's exact match is not below the base model's (minus a tolerance).

    A model fine-tuned from random weights has no baseline (the evaluation ran no base model):
    the comparison is then vacuous and says so, and the other gates decide.
    """
    tuned, n_t = _value(figures, FINE_TUNED, t.source, "exact_match")
    if BASE not in figures:
        return GateResult(
            NOT_WORSE_THAN_BASE, tuned is not None,
            f"no baseline evaluated (base built from random weights); fine-tuned exact match {tuned} (n={n_t})",
            {"fine_tuned_exact_match": tuned, "base_exact_match": None, "tolerance": t.exact_match_tolerance},
        )
    base, n_b = _value(figures, BASE, t.source, "exact_match")
    passed = tuned is not None and base is not None and tuned >= base - t.exact_match_tolerance
    return GateResult(
        NOT_WORSE_THAN_BASE,
        passed,
        f"exact match fine-tuned {tuned} (n={n_t}) vs base {base} (n={n_b}), tolerance {t.exact_match_tolerance}",
        {"fine_tuned_exact_match": tuned, "base_exact_match": base, "tolerance": t.exact_match_tolerance},
    )


def check_rule_violations(figures: Mapping[str, Any], t: GateThresholds) -> GateResult:
    """The fine-tuned model's rate of forbidden orders (CHAMPAGNE_FEAST+SIMPLE) is at most the threshold."""
    value, n = _value(figures, FINE_TUNED, t.source, "rule_violation_rate")
    passed = value is not None and n > 0 and value <= t.max_rule_violation_rate
    return GateResult(
        RULE_VIOLATIONS,
        passed,
        f"fine-tuned rule violation rate {value} (n={n}), allowed at most {t.max_rule_violation_rate}",
        {"rule_violation_rate": value, "n": n, "threshold": t.max_rule_violation_rate},
    )


GATE_CHECKS = (check_json_validity, check_not_worse_than_base, check_rule_violations)
#: Check name (as in `GateResult.name`) -> check; the names the asset checks recompute by.
_CHECKS_BY_NAME = {
    JSON_VALIDITY: check_json_validity,
    NOT_WORSE_THAN_BASE: check_not_worse_than_base,
    RULE_VIOLATIONS: check_rule_violations,
}


def evaluate_gate(figures: Mapping[str, Any], thresholds: GateThresholds) -> list[GateResult]:
    """All gate checks on an evaluation's ``metrics``."""
    return [check(figures, thresholds) for check in GATE_CHECKS]


def gate_to_dict(results: list[GateResult], thresholds: GateThresholds) -> dict[str, Any]:
    return {
        "thresholds": asdict(thresholds),
        "passed": all(r.passed for r in results),
        "checks": [asdict(r) for r in results],
    }


def gate_record(figures: Mapping[str, Any], thresholds: GateThresholds) -> dict[str, Any]:
    """The gate as stored in ``evaluation_report["gate"]``: thresholds, verdict and every check."""
    return gate_to_dict(evaluate_gate(figures, thresholds), thresholds)


# --- Re-reading a stored evaluation report ------------------------------------------------------
#
# The checks and `promoted_model` never trust the stored verdict: they recompute it from the stored
# figures and thresholds, so a report edited or produced by an older gate cannot promote a model.


class PromotionBlockedError(RuntimeError):
    """The stored evaluation does not pass the gate: nothing is promoted."""

    def __init__(self, failed: list[GateResult]) -> None:
        self.failed = failed
        super().__init__("promotion gate not passed: " + "; ".join(c.description for c in failed))


def report_thresholds(report: Mapping[str, Any]) -> GateThresholds:
    """The thresholds the report was evaluated with (``report["gate"]["thresholds"]``)."""
    return GateThresholds(**report["gate"]["thresholds"])


def recheck(report: Mapping[str, Any], name: str) -> GateResult:
    """One gate check (by `GateResult.name`) recomputed on a stored report."""
    check = _CHECKS_BY_NAME[name]
    return check(report["metrics"], report_thresholds(report))


def promotion_record(report: Mapping[str, Any], promoted_at: str) -> dict[str, Any]:
    """What ``promoted.json`` holds for the report's model; raises `PromotionBlockedError` if it fails the gate."""
    failed = [c for c in evaluate_gate(report["metrics"], report_thresholds(report)) if not c.passed]
    if failed:
        raise PromotionBlockedError(failed)
    return {
        **serving_instructions(report["fine_tuned_model"]),
        "promoted_at": promoted_at,
        "report": report["paths"]["markdown"],
        "metrics": {k: v["value"] for k, v in report["metrics"][FINE_TUNED][ALL].items()},
    }


# --- What the production app points to ---------------------------------------------------------


def _lora_rank(adapter_dir: str) -> int | None:
    cfg = Path(adapter_dir) / "adapter_config.json"
    if not cfg.exists():
        return None
    r = json.loads(cfg.read_text(encoding="utf-8")).get("r")
    return int(r) if r else None


def serving_instructions(
    fine_tuned_model: Mapping[str, Any],
    served_name: str = "mrdabak",
    host: str = "localhost",
    port: int = 8000,
) -> dict[str, Any]:
    """How to serve the promoted model and the app's ``voice.llm.*`` settings that point at it.

    Local adapter: vLLM serves the base model with the LoRA adapter under `served_name`; full
    model: vLLM serves the directory under `served_name`. Cloud: the fine-tuned model id on its
    endpoint. The API key is only ever referenced by its environment variable name. The system
    prompt the app must send is the template of the model's recorded prompt id (``voice.llm.prompt``).
    """
    out = _serving(fine_tuned_model, served_name, host, port)
    pid = fine_tuned_model.get("prompt_id")
    out["prompt_id"] = pid
    out["app_settings"]["voice.llm.prompt"] = (
        f"mrdabak_pipeline/prompts/{pid}.txt ({{{{now}}}} = the conversation's now, Asia/Seoul)" if pid else "the full prompt (unversioned)"
    )
    return out


def _serving(fine_tuned_model: Mapping[str, Any], served_name: str, host: str, port: int) -> dict[str, Any]:
    backend = fine_tuned_model.get("backend")
    if backend == "local":
        model_path = str(fine_tuned_model.get("model_path"))
        base = str(fine_tuned_model.get("base_model_path") or fine_tuned_model.get("base_model"))
        if fine_tuned_model.get("is_adapter"):
            cmd = ["vllm", "serve", base, "--enable-lora", "--lora-modules", f"{served_name}={model_path}"]
            rank = _lora_rank(model_path)
            if rank and rank > 16:  # vLLM's default --max-lora-rank is 16
                cmd += ["--max-lora-rank", str(rank)]
        else:
            cmd = ["vllm", "serve", model_path, "--served-model-name", served_name]
        cmd += ["--host", "0.0.0.0", "--port", str(port)]
        return {
            "backend": "local",
            "kind": "adapter" if fine_tuned_model.get("is_adapter") else "full_model",
            "adapter_path": model_path if fine_tuned_model.get("is_adapter") else None,
            "model_path": model_path,
            "base_model_path": base,
            "bf16": trained_in_bf16(fine_tuned_model),
            "serve_command": shlex.join(cmd),
            "app_settings": {
                "voice.llm.api-url": f"http://{host}:{port}/v1",
                "voice.llm.model": served_name,
                "voice.llm.api-key": "any non-empty value (vLLM without --api-key)",
            },
        }
    if backend in ("openai", "azure"):
        # Azure calls a deployment, not the model id; the cloud backend records it when it deploys.
        model_id = fine_tuned_model.get("deployment") or fine_tuned_model.get("model_id")
        default_url = "https://api.openai.com/v1" if backend == "openai" else None
        return {
            "backend": backend,
            "kind": "cloud_model",
            "model_id": model_id,
            "base_url": fine_tuned_model.get("base_url") or default_url,
            "app_settings": {
                "voice.llm.api-url": fine_tuned_model.get("base_url") or default_url,
                "voice.llm.model": model_id,
                "voice.llm.api-key": "${AZURE_OPENAI_API_KEY}" if backend == "azure" else "${OPENAI_API_KEY}",
            },
        }
    raise ValueError(f"unknown fine_tuned_model backend: {backend!r}")
