"""The promotion gate on hand-made figures, and the serving instructions it promotes."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from mrdabak_pipeline.core.evaluation.promotion import (
    JSON_VALIDITY,
    NOT_WORSE_THAN_BASE,
    RULE_VIOLATIONS,
    GateThresholds,
    PromotionBlockedError,
    check_json_validity,
    check_not_worse_than_base,
    check_rule_violations,
    evaluate_gate,
    gate_record,
    gate_to_dict,
    promotion_record,
    recheck,
    report_thresholds,
    serving_instructions,
)


def _figures(ft_valid: float = 0.95, ft_exact: float = 0.6, base_exact: float = 0.1, ft_rules: float = 0.0) -> dict:
    def m(v: float) -> dict:
        return {"value": v, "n": 40, "low": max(0.0, v - 0.1), "high": min(1.0, v + 0.1), "method": "wilson"}

    return {
        "fine_tuned": {"all": {"json_valid": m(ft_valid), "exact_match": m(ft_exact), "rule_violation_rate": m(ft_rules)}},
        "base": {"all": {"json_valid": m(0.0), "exact_match": m(base_exact), "rule_violation_rate": m(0.0)}},
    }


def test_gate_passes_on_good_figures() -> None:
    results = evaluate_gate(_figures(), GateThresholds())
    assert [r.passed for r in results] == [True, True, True]
    assert gate_to_dict(results, GateThresholds())["passed"] is True


@pytest.mark.parametrize("threshold,passed", [(0.9, True), (0.95, True), (0.951, False), (1.0, False)])
def test_raising_the_json_threshold_above_what_was_reached_blocks(threshold: float, passed: bool) -> None:
    r = check_json_validity(_figures(ft_valid=0.95), GateThresholds(min_json_validity=threshold))
    assert r.passed is passed and r.metadata["threshold"] == threshold


def test_fine_tuned_worse_than_base_blocks_unless_within_tolerance() -> None:
    figs = _figures(ft_exact=0.30, base_exact=0.35)
    assert not check_not_worse_than_base(figs, GateThresholds()).passed
    assert check_not_worse_than_base(figs, GateThresholds(exact_match_tolerance=0.05 + 1e-9)).passed


def test_rule_violations_threshold() -> None:
    figs = _figures(ft_rules=0.05)
    assert not check_rule_violations(figs, GateThresholds()).passed
    assert check_rule_violations(figs, GateThresholds(max_rule_violation_rate=0.05)).passed


def test_missing_figures_fail_instead_of_passing() -> None:
    empty = {"fine_tuned": {"all": {"json_valid": {"value": None, "n": 0}}}, "base": {}}
    assert [r.passed for r in evaluate_gate(empty, GateThresholds())] == [False, False, False]


def test_without_a_baseline_only_the_fine_tuned_figures_decide() -> None:
    figs = _figures()
    del figs["base"]
    result = check_not_worse_than_base(figs, GateThresholds())
    assert result.passed and "no baseline" in result.description
    figs["fine_tuned"]["all"]["exact_match"] = {"value": None, "n": 0}
    assert not check_not_worse_than_base(figs, GateThresholds()).passed
    assert not check_json_validity(_figures(), GateThresholds(source="golden")).passed


def test_serving_an_adapter_with_vllm(tmp_path: Path) -> None:
    adapter = tmp_path / "adapter dir"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 32, "base_model_name_or_path": "/m/base"}))
    s = serving_instructions({"backend": "local", "base_model_path": "/m/base", "model_path": str(adapter), "is_adapter": True,
                              "prompt_id": "mrdabak-v2-short"})
    argv = shlex.split(s["serve_command"])
    assert argv[:3] == ["vllm", "serve", "/m/base"]
    assert argv[argv.index("--lora-modules") + 1] == f"mrdabak={adapter}"
    assert "--enable-lora" in argv and argv[argv.index("--max-lora-rank") + 1] == "32"
    assert s["app_settings"] == {
        "voice.llm.api-url": "http://localhost:8000/v1",
        "voice.llm.model": "mrdabak",
        "voice.llm.api-key": "any non-empty value (vLLM without --api-key)",
        "voice.llm.prompt": "mrdabak_pipeline/prompts/mrdabak-v2-short.txt ({{now}} = the conversation's now, Asia/Seoul)",
    }
    assert s["prompt_id"] == "mrdabak-v2-short"
    assert s["adapter_path"] == str(adapter)


def test_serving_a_full_model_and_cloud_models() -> None:
    full = serving_instructions({"backend": "local", "base_model_path": "/m/base", "model_path": "/m/full", "is_adapter": False})
    assert shlex.split(full["serve_command"])[:5] == ["vllm", "serve", "/m/full", "--served-model-name", "mrdabak"]
    assert "--enable-lora" not in full["serve_command"]
    cloud = serving_instructions({"backend": "openai", "model_id": "ft:gpt-4o-mini:x", "base_url": None})
    assert cloud["app_settings"]["voice.llm.model"] == "ft:gpt-4o-mini:x"
    assert cloud["app_settings"]["voice.llm.api-url"] == "https://api.openai.com/v1"
    assert cloud["app_settings"]["voice.llm.api-key"] == "${OPENAI_API_KEY}"  # a reference, never the key
    azure = serving_instructions({"backend": "azure", "model_id": "ft:x", "deployment": "mrdabak-ft", "base_url": "https://r.openai.azure.com"})
    assert azure["app_settings"]["voice.llm.model"] == "mrdabak-ft"
    with pytest.raises(ValueError):
        serving_instructions({"backend": "?"})


def _report(figures: dict, thresholds: GateThresholds) -> dict:
    """A stored evaluation_report value, as far as promotion reads it."""
    return {
        "metrics": figures,
        "gate": gate_record(figures, thresholds),
        "paths": {"markdown": "/r/report.md"},
        "fine_tuned_model": {"backend": "openai", "model_id": "ft:gpt-4o-mini:x", "base_url": None, "prompt_id": "mrdabak-v2-short"},
    }


def test_a_passing_report_is_promoted_with_its_serving_settings() -> None:
    record = promotion_record(_report(_figures(), GateThresholds()), "2026-12-01T15:00:00+00:00")
    assert record["model_id"] == "ft:gpt-4o-mini:x" and record["report"] == "/r/report.md"
    assert record["promoted_at"] == "2026-12-01T15:00:00+00:00" and record["prompt_id"] == "mrdabak-v2-short"
    assert record["metrics"]["json_valid"] == 0.95 and record["app_settings"]["voice.llm.api-key"] == "${OPENAI_API_KEY}"


def test_the_stored_verdict_is_never_trusted() -> None:
    """A report whose stored gate says passed, but whose figures fail its thresholds, is not promoted."""
    report = _report(_figures(ft_valid=0.5), GateThresholds())
    report["gate"]["passed"] = True
    with pytest.raises(PromotionBlockedError, match="promotion gate not passed: fine-tuned JSON validity 0.500") as blocked:
        promotion_record(report, "now")
    assert [c.name for c in blocked.value.failed] == [JSON_VALIDITY]
    assert not recheck(report, JSON_VALIDITY).passed and recheck(report, RULE_VIOLATIONS).passed


def test_recheck_uses_the_thresholds_the_report_was_made_with() -> None:
    strict = _report(_figures(ft_valid=0.95), GateThresholds(min_json_validity=0.99, source="all"))
    assert report_thresholds(strict) == GateThresholds(min_json_validity=0.99)
    assert not recheck(strict, JSON_VALIDITY).passed
    assert recheck(_report(_figures(ft_valid=0.95), GateThresholds()), JSON_VALIDITY).passed
    assert recheck(strict, NOT_WORSE_THAN_BASE).name == NOT_WORSE_THAN_BASE
    with pytest.raises(KeyError):
        recheck(strict, "no_such_check")
