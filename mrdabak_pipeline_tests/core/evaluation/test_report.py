"""The evaluation runner and the report: renders, links its plots, and carries every figure in JSON."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from mrdabak_pipeline.core.domain import assistant_target
from mrdabak_pipeline.core.evaluation.generate import GenerationResult, Messages
from mrdabak_pipeline.core.evaluation.metrics import items_from_examples
from mrdabak_pipeline.core.evaluation.promotion import GateThresholds, evaluate_gate, gate_to_dict
from mrdabak_pipeline.core.evaluation.report import (
    headline_floats,
    render_markdown,
    summary_rows,
    summary_table,
    worst_examples,
    write_report,
)
from mrdabak_pipeline.core.evaluation.runner import evaluate_models
from mrdabak_pipeline_tests.prompt_fixtures import SYSTEM_PROMPT

GARBAGE = "@@ 깨진 | 출력 <img src=x> `code`"


class ScriptedGenerator:
    """Answers by looking the last user message up in a dict (the default is garbage)."""

    def __init__(self, name: str, answers: dict[str, str]) -> None:
        self.name = name
        self.answers = answers
        self.closed = False
        self.calls: list[str] = []

    def generate(self, prompts: Sequence[Messages], mode: str = "batched") -> GenerationResult:
        self.calls.append(mode)
        texts = [self.answers.get(p[-1]["content"], GARBAGE) for p in prompts]
        return GenerationResult(texts, [len(t) for t in texts], 0.5, mode, "scripted", self.name, [None] * len(texts))

    def close(self) -> None:
        self.closed = True


def _examples() -> list[dict]:
    out = []
    for i, (dinner, addr) in enumerate([("VALENTINE", "서울 강남구 1"), ("FRENCH", "부산 해운대구 2")]):
        for v, time_ in enumerate(["19:00", "18:30"]):
            state = {"dinnerType": dinner, "quantity": 2, "deliveryTime": time_, "deliveryAddress": addr, "needsMoreInfo": ["servingStyle", "deliveryDate"]}
            out.append(
                {
                    "id": f"s{i}v{v}",
                    "source_session_id": f"s{i}",
                    "variant": v,
                    "messages": [
                        {"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": f"{dinner} 2인분 {time_} {addr}"},
                        {"role": "assistant", "content": assistant_target("네, 알겠습니다.", state)},
                    ],
                }
            )
    return out


@pytest.fixture()
def results() -> dict:
    items, skipped = items_from_examples(_examples(), "validation")
    golden, g_skipped = items_from_examples(
        [{"id": "g1", "category": "out_of_domain", "messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "오늘 날씨 어때?"},
            {"role": "assistant", "content": assistant_target("죄송하지만 날씨는 답변드릴 수 없습니다.", {})},
        ]}, {"id": "g2", "messages": [{"role": "assistant", "content": "not json"}]}],
        "golden",
    )
    all_items = items + golden
    perfect = {it.prompt[-1]["content"]: it.reference for it in all_items}
    base = ScriptedGenerator("base-model", {})
    tuned = ScriptedGenerator("tuned-model", perfect)
    res = evaluate_models(all_items, {"base": base, "fine_tuned": tuned}, [*skipped, *g_skipped], sequential_sample=2)
    assert base.closed and tuned.closed and tuned.calls == ["batched", "sequential"]
    return res


def test_runner_figures_per_source_and_overall(results: dict) -> None:
    assert results["sources"] == {"golden": 1, "validation": 4}
    ft, base = results["metrics"]["fine_tuned"], results["metrics"]["base"]
    assert ft["all"]["json_valid"]["value"] == 1.0 and ft["all"]["json_valid"]["n"] == 5
    assert base["all"]["json_valid"]["value"] == 0.0
    assert ft["all"]["exact_match"]["value"] == 1.0 and base["all"]["exact_match"]["value"] == 0.0
    assert ft["validation"]["consistency"] == {**ft["validation"]["consistency"], "value": 1.0, "n": 2}
    assert base["validation"]["consistency"]["value"] == 0.0
    assert ft["golden"]["ood_declined"]["value"] == 1.0 and ft["golden"]["ood_declined"]["n"] == 1
    assert results["skipped"][0]["example_id"] == "g2#0"
    assert results["models"]["fine_tuned"]["sequential"]["n_prompts"] == 2
    assert len(results["items"]) == 5 and set(results["items"][0]["predictions"]) == {"base", "fine_tuned"}


def test_report_renders_with_plots_and_json(results: dict, tmp_path: Path) -> None:
    gate = gate_to_dict(evaluate_gate(results["metrics"], GateThresholds()), GateThresholds())
    paths = write_report(results, tmp_path / "r", gate=gate, worst_n=3)
    md = Path(paths["markdown"]).read_text(encoding="utf-8")
    assert "## Promotion gate: PASSED" in md
    assert "| JSON validity | 0.0% [0%–43%] | 100.0% [57%–100%] | +100.0% | 5 |" in md
    assert "![metrics](metrics.png)" in md and "## validation" in md and "## golden" in md
    assert "## Worst examples (fine_tuned)" in md and "g2#0" in md
    # Model output cannot break the table (pipe) or inject HTML/code spans into the report.
    assert "@@ 깨진 \\| 출력 &lt;img src=x&gt; 'code'" in md and "<img" not in md
    for key in ("metrics_plot", "field_plot"):
        data = Path(paths[key]).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    stored = json.loads(Path(paths["json"]).read_text(encoding="utf-8"))
    assert stored["metrics"] == results["metrics"] and stored["gate"]["passed"] is True


def test_summary_table_rows_and_worst_examples(results: dict) -> None:
    table = summary_table(results, "validation")
    lines = table.splitlines()
    assert lines[0] == "| metric | base | fine_tuned | Δ | n |"
    assert any(line.startswith("| accuracy: deliveryAddress |") for line in lines)
    worst = worst_examples(results, "base", n=2)
    assert len(worst) == 2 and not worst[0]["predictions"]["base"]["valid_json"]
    assert "BLOCKED" not in render_markdown(results)  # no gate given: no gate section


def test_headline_floats_for_dagster_plots(results: dict) -> None:
    floats = headline_floats(results)
    assert floats["fine_tuned/json_valid"] == 1.0 and floats["base/json_valid"] == 0.0
    assert floats["fine_tuned/tokens_per_s"] > 0 and "fine_tuned/tokens_per_s_sequential" in floats
    assert all(isinstance(v, float) for v in floats.values())


def test_runner_refuses_no_items() -> None:
    with pytest.raises(ValueError, match="no evaluation items"):
        evaluate_models([], {})


def test_load_split_examples_from_disk_then_jsonl(tmp_path: Path) -> None:
    from datasets import Dataset, DatasetDict

    from mrdabak_pipeline.core.evaluation.runner import load_split_examples

    exs = _examples()
    DatasetDict({"train": Dataset.from_list(exs[:1]), "validation": Dataset.from_list(exs)}).save_to_disk(str(tmp_path / "hf"))
    rows, skipped = load_split_examples({"path": str(tmp_path / "hf")})
    assert len(rows) == 4 and rows[1]["source_session_id"] == "s0" and not skipped

    jsonl = tmp_path / "validation.jsonl"
    jsonl.write_text("\n".join(json.dumps(e, ensure_ascii=False) for e in exs) + "\n[1]\n{bad\n", encoding="utf-8")
    rows, skipped = load_split_examples({"path": str(tmp_path / "missing"), "validation_jsonl": str(jsonl)})
    assert len(rows) == 4 and [s.example_id for s in skipped] == ["line 5", "line 6"]
    with pytest.raises(ValueError, match="no readable 'validation' split"):
        load_split_examples({"counts": {}})


def test_summary_rows_are_the_summary_table_as_numbers(results: dict) -> None:
    rows = summary_rows(results, "validation")
    table_lines = summary_table(results, "validation").splitlines()[2:]
    assert [r["metric"] for r in rows] == [line.split(" | ")[0].removeprefix("| ") for line in table_lines]
    validity = rows[0]
    assert validity["metric"] == "JSON validity" and validity["base"] == 0.0 and validity["fine_tuned"] == 1.0
    assert validity["delta"] == 1.0 and isinstance(validity["n"], int) and validity["n"] > 0
    assert all(r["delta"] is None for r in rows if r["base"] is None or r["fine_tuned"] is None)
