"""evaluation_report + blocking gate + promoted_model, materialized in-process.

The upstream assets are stand-ins with the documented values (docs/ARCHITECTURE.md): a saved
`datasets.DatasetDict` for `huggingface_dataset`, and a `fine_tuned_model` that is either an
OpenAI-compatible endpoint served by a local test server (answers scripted per prompt) or a tiny
random-init local model with a LoRA adapter.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
import torch
from dagster import asset, materialize

from mrdabak_pipeline.core.domain import assistant_target
from mrdabak_pipeline.defs.evaluation.assets import evaluation_assets, evaluation_checks
from mrdabak_pipeline.defs.io_manager import ParquetJsonIOManager
from mrdabak_pipeline.defs.resources import DataPathsResource
from mrdabak_pipeline_tests.fake_openai_api import fake_openai_server
from mrdabak_pipeline_tests.prompt_fixtures import NOW, SYSTEM_PROMPT
from mrdabak_pipeline_tests.tiny_chat_model import build_tiny_adapter, build_tiny_model

torch.set_num_threads(1)

DINNERS = ["VALENTINE", "FRENCH", "ENGLISH", "CHAMPAGNE_FEAST"]


def _examples(n_sessions: int = 5) -> list[dict[str, Any]]:
    out = []
    for i in range(n_sessions):
        for v, time_ in enumerate(["19:00", "18:30"]):
            state = {"dinnerType": DINNERS[i % 4], "servingStyle": "DELUXE", "quantity": i + 1, "deliveryTime": time_}
            out.append(
                {
                    "messages": [
                        {"role": "system", "content": SYSTEM_PROMPT},
                        {"role": "user", "content": f"세션{i} 변형{v}: {DINNERS[i % 4]} 디럭스 {i + 1}개 {time_}"},
                        {"role": "assistant", "content": assistant_target("네, 알겠습니다.", {**state, "needsMoreInfo": ["deliveryDate", "deliveryAddress"]})},
                    ],
                    "source_session_id": f"s{i}",
                    "variant": v,
                }
            )
    return out


GOLDEN = [
    {
        "id": "ood-weather",
        "category": "out_of_domain",
        "now": NOW,
        "messages": [
            {"role": "user", "content": "오늘 서울 날씨 어때요?"},
            {"role": "assistant", "content": assistant_target("죄송하지만 날씨는 답변드릴 수 없습니다. 디너 주문을 도와드릴까요?", {"needsMoreInfo": ["dinnerType"]})},
        ],
    },
    {
        "id": "champagne-simple",
        "category": "rule",
        "now": NOW,
        "messages": [
            {"role": "user", "content": "샴페인 축제 디너 심플로 주세요"},
            {"role": "assistant", "content": assistant_target("샴페인 축제 디너는 그랜드 또는 디럭스로만 제공됩니다.", {"dinnerType": "CHAMPAGNE_FEAST", "needsMoreInfo": ["servingStyle"]})},
        ],
    },
]


@pytest.fixture()
def data_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    from datasets import Dataset, DatasetDict

    root = tmp_path / "data"
    monkeypatch.setenv("MRDABAK_DATA_DIR", str(root))
    ds = DatasetDict({"train": Dataset.from_list(_examples(2)), "validation": Dataset.from_list(_examples())})
    ds.save_to_disk(str(root / "datasets" / "hf"))
    (root / "golden").mkdir(parents=True)
    (root / "golden" / "golden.jsonl").write_text(
        "\n".join(json.dumps(g, ensure_ascii=False) for g in GOLDEN) + "\n", encoding="utf-8"
    )
    return root


def _answers() -> dict[str, str]:
    # last user turn -> the reference reply (validation examples start with a system message, golden ones do not)
    return {ex["messages"][-2]["content"]: ex["messages"][-1]["content"] for ex in _examples() + GOLDEN}


def _run(
    root: Path,
    model_value: dict,
    gate_config: dict | None = None,
    eval_config: dict | None = None,
    selection: list[str] | None = None,
):
    @asset(name="huggingface_dataset")
    def hf_stub() -> dict:
        return {"path": str(root / "datasets" / "hf"), "counts": {"validation": 10}}

    @asset(name="fine_tuned_model")
    def model_stub() -> dict:
        return model_value

    config = {"max_items": 50, "sequential_sample": 2, **(gate_config or {}), **(eval_config or {})}
    return materialize(
        [hf_stub, model_stub, *evaluation_assets, *evaluation_checks],
        resources={
            "data_paths": DataPathsResource(root=str(root)),
            "io_manager": ParquetJsonIOManager(base_dir=str(root / "storage")),
        },
        run_config={"ops": {"evaluation_report": {"config": config}}} if selection is None else None,
        raise_on_error=False,
        selection=selection,
    )


def _started(result, step: str) -> bool:
    return any(e.step_key == step and e.event_type_value == "STEP_START" for e in result.all_events)


def _check_outcomes(result) -> dict[str, bool]:
    return {e.check_name: e.passed for e in result.get_asset_check_evaluations()}


def _cloud_value(base_url: str) -> dict:
    return {"backend": "openai", "base_model": "gpt-4o-mini-2024-07-18", "model_id": "ft:gpt-4o-mini:mrdabak:1", "base_url": base_url, "is_adapter": False}


def test_good_cloud_model_passes_the_gate_and_is_promoted(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "sk-never-write-me-0123456789"
    monkeypatch.setenv("OPENAI_API_KEY", secret)
    answers = _answers()

    def reply(model: str, msgs: list[dict]) -> str:
        if model == "judge-model":
            return '{"score": 4}'
        return answers[msgs[-1]["content"]] if model.startswith("ft:") else "모르겠어요"

    with fake_openai_server(reply) as srv:
        result = _run(data_root, _cloud_value(srv["base_url"]), eval_config={"judge_model": "judge-model", "judge_base_url": srv["base_url"]})
    assert {r["auth"] for r in srv["requests"]} == {f"Bearer {secret}"}
    assert result.success
    assert _check_outcomes(result) == {"json_validity_gate": True, "exact_match_not_worse_than_base": True, "rule_violation_gate": True}
    report = result.output_for_node("evaluation_report")
    ft, base = report["metrics"]["fine_tuned"]["all"], report["metrics"]["base"]["all"]
    assert ft["json_valid"]["value"] == 1.0 and ft["json_valid"]["n"] == 12 and base["json_valid"]["value"] == 0.0
    assert ft["consistency"]["n"] == 5 and ft["consistency"]["value"] == 1.0
    assert report["metrics"]["fine_tuned"]["golden"]["ood_declined"]["value"] == 1.0
    assert report["n_skipped"] == 0
    md = Path(report["paths"]["markdown"]).read_text(encoding="utf-8")
    assert "Promotion gate: PASSED" in md
    items = json.loads(Path(report["paths"]["json"]).read_text(encoding="utf-8"))["items"]
    assert {it["item_id"] for it in items if it["source"] == "golden"} == {"golden:ood-weather#0", "golden:champagne-simple#0"}
    assert Path(report["paths"]["markdown"]).is_relative_to(data_root / "reports" / "evaluation")

    mat = result.asset_materializations_for_node("evaluation_report")[0]
    assert mat.metadata["fine_tuned/json_valid"].value == 1.0 and mat.metadata["base/exact_match"].value == 0.0
    summary = mat.metadata["summary"]
    assert isinstance(summary, dg.TableMetadataValue)
    assert list(report["models"]) == ["base", "fine_tuned", "fine_tuned_constrained"]
    assert [(c.name, c.type) for c in summary.schema.columns] == [
        ("metric", "string"), ("base", "float"), ("fine_tuned", "float"), ("fine_tuned_constrained", "float"),
        ("delta", "float"), ("n", "int"),
    ]
    validity = next(r.data for r in summary.records if r.data["metric"] == "JSON validity")
    assert validity["fine_tuned"] == 1.0 and validity["base"] == 0.0 and validity["delta"] == 1.0 and validity["n"] == 12
    gate = mat.metadata["gate"]
    assert isinstance(gate, dg.TableMetadataValue) and [c.name for c in gate.schema.columns] == ["name", "passed", "description"]
    assert [r.data["passed"] for r in gate.records] == [True, True, True] and mat.metadata["gate_passed"].value is True
    assert isinstance(mat.metadata["n_items"], dg.IntMetadataValue) and mat.metadata["n_items"].value == 12

    promoted = result.output_for_node("promoted_model")
    assert promoted["model_id"] == "ft:gpt-4o-mini:mrdabak:1"
    assert promoted["app_settings"]["voice.llm.model"] == "ft:gpt-4o-mini:mrdabak:1"
    assert promoted["app_settings"]["voice.llm.api-url"] == srv["base_url"]
    assert json.loads((data_root / "models" / "promoted.json").read_text())["model_id"] == promoted["model_id"]

    # The optional judge scored every valid reply; the key reached the server but no file or metadata.
    assert report["metrics"]["fine_tuned"]["all"]["judge"]["value"] == 4.0
    assert "judge" not in report["metrics"]["base"]["all"]  # nothing valid to judge
    for path in data_root.rglob("*"):
        if path.is_file() and path.suffix in (".json", ".md"):
            assert secret not in path.read_text(encoding="utf-8"), path
    for event in result.all_events:
        assert secret not in str(event.event_specific_data), event.event_type_value


def test_threshold_above_what_was_reached_blocks_promotion(data_root: Path) -> None:
    answers = _answers()
    # The tuned model breaks JSON on 2 of 12 prompts: 83% validity.
    broken = set(list(answers)[:2])

    def reply(model: str, msgs: list[dict]) -> str:
        text = msgs[-1]["content"]
        return ("{oops" if text in broken else answers[text]) if model.startswith("ft:") else "모르겠어요"

    with fake_openai_server(reply) as srv:
        passing = _run(data_root, _cloud_value(srv["base_url"]), {"min_json_validity": 0.8})
        blocked = _run(data_root, _cloud_value(srv["base_url"]), {"min_json_validity": 0.9})
    assert _check_outcomes(passing)["json_validity_gate"] is True
    assert passing.output_for_node("promoted_model")["backend"] == "openai"

    assert _check_outcomes(blocked) == {"json_validity_gate": False, "exact_match_not_worse_than_base": True, "rule_violation_gate": True}
    # Blocked by the check: the step never starts, and the run reports the failed check.
    assert not blocked.success and not _started(blocked, "promoted_model")
    assert not blocked.asset_materializations_for_node("promoted_model")
    report = blocked.output_for_node("evaluation_report")
    assert report["gate"]["passed"] is False
    assert report["metrics"]["fine_tuned"]["all"]["json_valid"]["value"] == pytest.approx(10 / 12)

    # Selecting promoted_model alone (no checks in the run) still refuses the stored failing report.
    alone = _run(data_root, _cloud_value("http://127.0.0.1:9/v1"), selection=["promoted_model"])
    assert _started(alone, "promoted_model") and not alone.success
    failure = next(e for e in alone.all_events if e.event_type_value == "STEP_FAILURE")
    assert "promotion gate not passed" in str(failure.event_specific_data.error)


def test_malformed_golden_set_fails_with_the_line(data_root: Path) -> None:
    golden = data_root / "golden" / "golden.jsonl"
    golden.write_text(golden.read_text(encoding="utf-8") + "{broken\n", encoding="utf-8")
    result = _run(data_root, _cloud_value("http://127.0.0.1:9/v1"))
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "evaluation_report"
    assert "golden.jsonl:3: not JSON" in str(failure.event_specific_data.error)


def test_rule_breaking_model_is_blocked(data_root: Path) -> None:
    bad = assistant_target("네", {"dinnerType": "CHAMPAGNE_FEAST", "servingStyle": "SIMPLE"})
    with fake_openai_server(lambda model, msgs: bad if model.startswith("ft:") else "?") as srv:
        result = _run(data_root, _cloud_value(srv["base_url"]), {"max_rule_violation_rate": 0.05})
    outcomes = _check_outcomes(result)
    assert outcomes["rule_violation_gate"] is False and outcomes["json_validity_gate"] is True
    assert not result.asset_materializations_for_node("promoted_model")


def test_local_tiny_models_through_the_asset(data_root: Path, tmp_path: Path) -> None:
    base = build_tiny_model(tmp_path / "models" / "base")
    adapter = build_tiny_adapter(base, tmp_path / "models" / "adapter")
    value = {"backend": "local", "base_model": "tiny", "base_model_path": str(base), "model_path": str(adapter), "is_adapter": True, "model_id": None, "base_url": None}
    result = _run(data_root, value, eval_config={"max_items": 4, "max_golden_items": 1, "max_new_tokens": 16, "batch_size": 4})
    report = result.output_for_node("evaluation_report")
    # Random weights write garbage: the gate must stop them.
    assert report["metrics"]["fine_tuned"]["all"]["json_valid"]["value"] == 0.0
    assert report["metrics"]["fine_tuned"]["all"]["json_valid"]["n"] == 5
    # a random-init base has no prompt-engineered baseline: no base row, and the report says why
    assert "base" not in report["metrics"] and "No baseline" in report["notes"][0]
    # the same model decoded inside the reply schema is reported beside it (constrained="both")
    assert report["models"]["fine_tuned_constrained"]["name"].endswith("+schema")
    assert report["metrics"]["fine_tuned_constrained"]["all"]["json_valid"]["n"] == 5
    gen = report["models"]["fine_tuned"]
    assert gen["generation"]["prompt_tokens_per_request"] > 0 and gen["prompt_id"] == "mrdabak-v2-full"
    assert gen["generation"]["mode"] == "batched" and gen["generation"]["tokens_per_s"] > 0
    assert gen["sequential"]["n_prompts"] == 2
    assert _check_outcomes(result)["json_validity_gate"] is False
    assert not result.asset_materializations_for_node("promoted_model")
    assert result.asset_materializations_for_node("evaluation_report")


# --- Nothing written where it must not be (issue 15, item 4) -----------------------------------


def _passing_reply() -> Any:
    answers = _answers()
    return lambda model, msgs: answers.get(msgs[-1]["content"], "?") if model.startswith("ft:") else "모르겠어요"


def test_configured_golden_path_that_does_not_exist_fails_the_asset(data_root: Path, tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "golden.jsonl"
    with fake_openai_server(_passing_reply()) as srv:
        result = _run(data_root, _cloud_value(srv["base_url"]), eval_config={"golden_path": str(missing)})
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "evaluation_report"
    assert f"configured golden_path {missing} does not exist" in str(failure.event_specific_data.error)
    assert not result.asset_materializations_for_node("evaluation_report")
    assert not (data_root / "models" / "promoted.json").exists()


def test_default_golden_set_is_the_packaged_one(data_root: Path) -> None:
    from mrdabak_pipeline.core.datasets.chat_format import GOLDEN_PATH, load_golden

    (data_root / "golden" / "golden.jsonl").unlink()  # no set of the data root's own
    assert GOLDEN_PATH.parent.parent == Path(__import__("mrdabak_pipeline").__file__).parent
    n_packaged = len(load_golden(GOLDEN_PATH))
    with fake_openai_server(_passing_reply()) as srv:
        result = _run(data_root, _cloud_value(srv["base_url"]), eval_config={"max_golden_items": 3})
    report = result.output_for_node("evaluation_report")
    assert n_packaged >= 3 and report["sources"]["golden"] == 3


def test_missing_packaged_golden_set_fails_loudly(data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from mrdabak_pipeline.defs.evaluation import assets as evaluation_defs

    (data_root / "golden" / "golden.jsonl").unlink()
    monkeypatch.setattr(evaluation_defs, "GOLDEN_PATH", tmp_path / "site-packages" / "golden.jsonl")
    with fake_openai_server(_passing_reply()) as srv:
        result = _run(data_root, _cloud_value(srv["base_url"]))
    failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "evaluation_report"
    assert "packaged golden set" in str(failure.event_specific_data.error)
    assert not result.asset_materializations_for_node("evaluation_report")


def test_promoted_pointer_is_never_left_half_written(data_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that dies midway (disk full) leaves the previous promoted.json whole."""
    import errno
    import pathlib

    # The packaged golden set and a gate that any model passes: this test is about the pointer only.
    (data_root / "golden" / "golden.jsonl").unlink()
    open_gate = {"min_json_validity": 0.0, "max_rule_violation_rate": 1.0, "exact_match_tolerance": 1.0}
    with fake_openai_server(_passing_reply()) as srv:
        first = _run(data_root, _cloud_value(srv["base_url"]), open_gate)
    assert first.success
    models = data_root / "models"
    before = (models / "promoted.json").read_bytes()
    assert json.loads(before)["model_id"] == "ft:gpt-4o-mini:mrdabak:1"

    real_open = pathlib.Path.open

    class _DiskFull:
        """Writes half of what it is given, then fails like a full disk."""

        def __init__(self, fh: Any) -> None:
            self._fh = fh

        def write(self, data: Any) -> int:
            self._fh.write(data[: len(data) // 2])
            self._fh.flush()
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self) -> _DiskFull:
            return self

        def __exit__(self, *exc: object) -> None:
            self._fh.close()

    def open_disk_full(self: pathlib.Path, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        fh = real_open(self, mode, *args, **kwargs)
        return _DiskFull(fh) if "w" in mode and self.parent == models else fh

    monkeypatch.setattr(pathlib.Path, "open", open_disk_full)
    again = _run(data_root, _cloud_value("http://127.0.0.1:9/v1"), selection=["promoted_model"])
    monkeypatch.undo()
    failure = next(e for e in again.all_events if e.event_type_value == "STEP_FAILURE")
    assert failure.step_key == "promoted_model" and "No space left" in str(failure.event_specific_data.error)
    assert (models / "promoted.json").read_bytes() == before  # production still points at a whole file
    assert sorted(p.name for p in models.iterdir()) == ["promoted.json"]  # no temp file left behind
