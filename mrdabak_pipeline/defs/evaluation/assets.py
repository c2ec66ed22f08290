"""Evaluation and promotion: base vs fine-tuned on validation + golden, a blocking gate, the promoted model.

`evaluation_report` runs both models on the same items (local Hugging Face or any OpenAI-compatible
endpoint, whatever `fine_tuned_model` says), writes the report under ``data/reports/evaluation/``
and stores every figure plus the gate thresholds it was configured with. Three blocking checks read
those figures; `promoted_model` only runs after they pass (and re-checks, so a run that selects it
without the checks cannot promote a failing model either).
"""

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import dagster as dg
from pydantic import Field

from mrdabak_pipeline.core.datasets.chat_format import GOLDEN_PATH, load_golden
from mrdabak_pipeline.core.evaluation import promotion
from mrdabak_pipeline.core.evaluation.generate import (
    OpenAIChatGenerator,
    generators_for,
    has_pretrained_base,
    prompt_kinds_for,
    with_constrained_twin,
)
from mrdabak_pipeline.core.evaluation.metrics import items_from_examples
from mrdabak_pipeline.core.evaluation.report import headline_floats, summary_rows, write_report
from mrdabak_pipeline.core.evaluation.runner import evaluate_models, load_split_examples
from mrdabak_pipeline.core.prompts import check_prompt_id, parse_prompt_id
from mrdabak_pipeline.core.runtime.files import atomic_write_bytes
from mrdabak_pipeline.defs.metadata import table
from mrdabak_pipeline.defs.resources import DataPathsResource


class EvaluationConfig(dg.Config):
    """How much to evaluate, how to generate, and the promotion gate's thresholds."""

    max_items: int = 60
    max_golden_items: int = 200  # the whole hand-written set: it is the acceptance check
    batch_size: int = 8
    max_new_tokens: int = 256
    device: str = "auto"
    num_threads: int = 1
    concurrency: int = 4
    constrained: Literal["off", "on", "both"] = Field(
        default="both",
        description="Schema-constrained decoding: off, on (every model), or both (the fine-tuned model once "
        "without and once with it, side by side; the gate reads the plain one, which is what the app gets).",
    )
    sequential_sample: int = 4
    golden_path: str | None = None
    api_key_env: str | None = None
    judge_model: str | None = None
    judge_base_url: str | None = None
    judge_api_key_env: str = "OPENAI_API_KEY"
    worst_n: int = 8
    min_json_validity: float = 0.9
    max_rule_violation_rate: float = 0.0
    exact_match_tolerance: float = 0.0
    gate_source: str = "all"
    fine_tuned_prompt: str | None = Field(
        default=None,
        description="Prompt id to run the fine-tuned model with (e.g. mrdabak-v2-short); unset = the one it was "
        "trained with. A different one than it was trained with is refused.",
    )


#: Config fields `generators_for` takes as they are (``constrained`` is not: "both" is done here).
_GENERATION_OPTIONS = {"batch_size", "max_new_tokens", "device", "num_threads", "api_key_env", "concurrency"}


def _golden_path(config: EvaluationConfig, data_paths: DataPathsResource) -> Path:
    """The golden set to evaluate on: the configured file, else the data root's own, else the packaged one.

    Why a missing set fails instead of being skipped: a report without the golden items looks
    like a complete one, and the gate would then promote on validation figures alone.
    """
    if config.golden_path:
        path = Path(config.golden_path)
        if not path.is_file():
            raise dg.Failure(description=f"configured golden_path {path} does not exist", allow_retries=False)
        return path
    own = data_paths.root_path / "golden" / "golden.jsonl"
    if own.is_file():
        return own
    if not GOLDEN_PATH.is_file():  # a broken install: package data missing from the wheel or image
        raise dg.Failure(description=f"the packaged golden set {GOLDEN_PATH} is missing", allow_retries=False)
    return GOLDEN_PATH


def _report_metadata(
    results: dict[str, Any], gate: dict[str, Any], paths: dict[str, str], source: str, n_items: int, n_skipped: int
) -> dict[str, Any]:
    """Summary and gate as typed tables, every headline figure as a float (plotted over runs), files as paths."""
    models = list(results["metrics"])
    return {
        "summary": table(summary_rows(results, source), ["metric", *models, "delta", "n"]),
        "gate": table(gate["checks"], ["name", "passed", "description"]),
        "gate_passed": dg.MetadataValue.bool(gate["passed"]),
        "report": dg.MetadataValue.path(paths["markdown"]),
        "report_json": dg.MetadataValue.path(paths["json"]),
        "metrics_plot": dg.MetadataValue.path(paths["metrics_plot"]),
        "field_plot": dg.MetadataValue.path(paths["field_plot"]),
        "n_items": dg.MetadataValue.int(n_items),
        "n_skipped": dg.MetadataValue.int(n_skipped),
        **{k: dg.MetadataValue.float(v) for k, v in headline_floats(results, source).items()},
    }


@dg.asset(
    description="Base vs fine-tuned model on the validation split and the golden set: JSON validity, "
    "order-field accuracy, consistency, rules, chrF (+ optional LLM judge), throughput; Markdown/PNG/JSON report.",
    group_name="evaluation",
    kinds={"python", "pytorch", "openai"},
    pool="gpu",
)
def evaluation_report(
    context: dg.AssetExecutionContext,
    config: EvaluationConfig,
    data_paths: DataPathsResource,
    fine_tuned_model: dict,
    huggingface_dataset: dict,
) -> dict:
    val_examples, skipped = load_split_examples(huggingface_dataset, "validation")
    items, item_skips = items_from_examples(val_examples, "validation", config.max_items)
    skipped += item_skips
    golden = _golden_path(config, data_paths)
    # load_golden raises GoldenFormatError naming the line: a broken hand-written set is a bug
    # to fix, not something to evaluate around.
    g_examples = [{"id": g.id, "category": g.category, "messages": g.messages} for g in load_golden(golden)]
    kinds = prompt_kinds_for(fine_tuned_model)
    if config.fine_tuned_prompt:
        check_prompt_id(fine_tuned_model.get("prompt_id"), config.fine_tuned_prompt)
        kinds["fine_tuned"] = parse_prompt_id(config.fine_tuned_prompt)[1]
    notes = [] if has_pretrained_base(fine_tuned_model) else [
        f"No baseline: the base model {fine_tuned_model.get('base_model')!r} is built from random weights, so there is "
        "no prompt-engineered assistant on it to compare with. Use a pretrained base (e.g. gemma3) for that comparison."
    ]
    g_items, g_skips = items_from_examples(g_examples, "golden", config.max_golden_items, last_turn_only=True)
    items += g_items
    skipped += g_skips
    judge = None
    if config.judge_model:
        judge_gen = OpenAIChatGenerator(config.judge_model, base_url=config.judge_base_url, api_key_env=config.judge_api_key_env)
        judge = lambda msgs: judge_gen.complete(msgs, max_tokens=20)[0]  # noqa: E731
    generators = generators_for(
        fine_tuned_model, constrained=config.constrained == "on", **config.model_dump(include=_GENERATION_OPTIONS)
    )
    if config.constrained == "both":
        generators = with_constrained_twin(generators)
    results = evaluate_models(items, generators, skipped, judge, config.sequential_sample, context.log.info,
                              prompt_kinds=kinds, notes=notes)

    thresholds = promotion.GateThresholds(
        min_json_validity=config.min_json_validity,
        max_rule_violation_rate=config.max_rule_violation_rate,
        exact_match_tolerance=config.exact_match_tolerance,
        source=config.gate_source,
    )
    gate = promotion.gate_record(results["metrics"], thresholds)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out_dir = data_paths.sub("reports") / "evaluation" / f"{stamp}_{context.run.run_id[:8]}"
    paths = write_report(results, out_dir, gate, config.worst_n)
    context.add_output_metadata(_report_metadata(results, gate, paths, config.gate_source, len(items), len(skipped)))
    return {
        "report_dir": str(out_dir),
        "paths": paths,
        "generated_at": results["generated_at"],
        "sources": results["sources"],
        "models": results["models"],
        "metrics": results["metrics"],
        "corpus_chrf": results["corpus_chrf"],
        "notes": results["notes"],
        "n_skipped": len(skipped),
        "gate": gate,
        "fine_tuned_model": fine_tuned_model,
    }


def _check_result(result: promotion.GateResult) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(
        passed=result.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=result.description,
        metadata={k: v for k, v in result.metadata.items() if v is not None},
    )


@dg.asset_check(asset=evaluation_report, blocking=True, description="Fine-tuned JSON validity >= min_json_validity.")
def json_validity_gate(evaluation_report: dict) -> dg.AssetCheckResult:
    return _check_result(promotion.recheck(evaluation_report, promotion.JSON_VALIDITY))


@dg.asset_check(asset=evaluation_report, blocking=True, description="Fine-tuned exact match is not below the base model's.")
def exact_match_not_worse_than_base(evaluation_report: dict) -> dg.AssetCheckResult:
    return _check_result(promotion.recheck(evaluation_report, promotion.NOT_WORSE_THAN_BASE))


@dg.asset_check(asset=evaluation_report, blocking=True, description="Fine-tuned rule violations (CHAMPAGNE_FEAST+SIMPLE) <= threshold.")
def rule_violation_gate(evaluation_report: dict) -> dg.AssetCheckResult:
    return _check_result(promotion.recheck(evaluation_report, promotion.RULE_VIOLATIONS))


@dg.asset(
    description="What the production app should point to: the adapter + vLLM command line, or the cloud "
    "model id, with the app's voice.llm.* settings. Only materializes when the evaluation gate passes.",
    group_name="evaluation",
    kinds={"python", "json"},
)
def promoted_model(context: dg.AssetExecutionContext, data_paths: DataPathsResource, evaluation_report: dict) -> dict:
    try:  # re-checked here too: a run may select this asset without the blocking checks
        value = promotion.promotion_record(evaluation_report, datetime.now(UTC).isoformat(timespec="seconds"))
    except promotion.PromotionBlockedError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    # What production reads: replaced whole (temp file + rename), never seen half-written.
    pointer = atomic_write_bytes(
        data_paths.sub("models") / "promoted.json", json.dumps(value, ensure_ascii=False, indent=2).encode("utf-8")
    )
    context.add_output_metadata(
        {
            "backend": value["backend"],
            "serve_command": dg.MetadataValue.text(value.get("serve_command") or "n/a"),
            "app_settings": dg.MetadataValue.json(value["app_settings"]),
            "model": value.get("model_id") or value.get("model_path") or "",
            "pointer": dg.MetadataValue.path(str(pointer)),
            "report": dg.MetadataValue.path(value["report"]),
        }
    )
    return value


evaluation_assets = [evaluation_report, promoted_model]
evaluation_checks = [json_validity_gate, exact_match_not_worse_than_base, rule_violation_gate]
