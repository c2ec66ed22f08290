"""Generation: a tiny random-init local model (base and PEFT adapter) and an OpenAI-compatible server."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from mrdabak_pipeline.core.domain import assistant_target
from mrdabak_pipeline.core.evaluation.generate import (
    FINE_TUNED_CONSTRAINED,
    LocalHFGenerator,
    OpenAIChatGenerator,
    ReplyObjectClosed,
    generators_for,
    json_object_closed,
    prompt_kinds_for,
    reply_length,
    trained_in_bf16,
    with_constrained_twin,
)
from mrdabak_pipeline_tests.fake_openai_api import fake_openai_server
from mrdabak_pipeline_tests.prompt_fixtures import SYSTEM_PROMPT
from mrdabak_pipeline_tests.tiny_chat_model import build_tiny_adapter, build_tiny_model

torch.set_num_threads(1)

PROMPTS = [
    [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": "발렌타인 디너 " * k}]
    for k in (1, 5, 2, 9, 3)
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    base = build_tiny_model(root / "base")
    adapter = build_tiny_adapter(base, root / "adapter")
    return {"base": base, "adapter": adapter}


@pytest.mark.integration
def test_batched_left_padded_generation_equals_one_by_one(tiny: dict[str, Path]) -> None:
    gen = LocalHFGenerator(str(tiny["base"]), batch_size=3, max_new_tokens=12)
    batched = gen.generate(PROMPTS, mode="batched")
    sequential = gen.generate(PROMPTS, mode="sequential")
    gen.close()
    # Prompts of different lengths share a batch: with left padding and the attention mask,
    # greedy outputs must not depend on the company a prompt keeps.
    assert batched.texts == sequential.texts
    assert len(batched.texts) == len(PROMPTS) and all(1 <= n <= 12 for n in batched.new_tokens)
    assert batched.total_new_tokens == sequential.total_new_tokens
    stats = batched.stats()
    assert stats["mode"] == "batched" and stats["tokens_per_s"] > 0 and stats["n_errors"] == 0
    assert sequential.stats()["mode"] == "sequential"


@pytest.mark.integration
def test_adapter_loads_on_its_base_and_changes_outputs(tiny: dict[str, Path]) -> None:
    base = LocalHFGenerator(str(tiny["base"]), max_new_tokens=10).generate(PROMPTS[:2])
    # No base path given: it is read from adapter_config.json.
    tuned = LocalHFGenerator(str(tiny["adapter"]), is_adapter=True, max_new_tokens=10).generate(PROMPTS[:2])
    assert tuned.texts != base.texts and tuned.backend == "local"


@pytest.mark.integration
def test_generators_for_local_value(tiny: dict[str, Path]) -> None:
    value = {
        "backend": "local",
        "base_model": "tiny",
        "base_model_path": str(tiny["base"]),
        "model_path": str(tiny["adapter"]),
        "is_adapter": True,
    }
    # "tiny" is built from random weights: no prompt-engineered baseline exists, so no base generator
    assert set(generators_for(value, batch_size=2, max_new_tokens=4)) == {"fine_tuned"}
    value["base_model"] = "some-pretrained-base"
    gens = generators_for(value, batch_size=2, max_new_tokens=4)
    assert set(gens) == {"base", "fine_tuned"}
    assert gens["fine_tuned"].is_adapter and gens["base"].model_path == str(tiny["base"])
    out = gens["fine_tuned"].generate(PROMPTS[:1])
    assert out.new_tokens[0] <= 4
    assert out.prompt_tokens[0] == len(gens["fine_tuned"]._tokenizer.apply_chat_template(PROMPTS[0], add_generation_prompt=True, tokenize=True)["input_ids"])


@pytest.mark.integration
def test_evaluation_merges_the_adapter_into_the_same_function(tiny: dict[str, Path]) -> None:
    from peft import PeftModel

    from mrdabak_pipeline.core.training.sft import load_model_for_inference

    merged, tok = load_model_for_inference(tiny["adapter"], True, str(tiny["base"]), device="cpu", merge_adapter=True)
    unmerged, _ = load_model_for_inference(tiny["adapter"], True, str(tiny["base"]), device="cpu")
    assert isinstance(unmerged, PeftModel) and not isinstance(merged, PeftModel)
    ids = tok.apply_chat_template(PROMPTS[3], add_generation_prompt=True, tokenize=True, return_tensors="pt",
                                  return_dict=True)["input_ids"]
    with torch.no_grad():
        a, b = merged(ids).logits, unmerged(ids).logits
    assert torch.allclose(a, b, atol=1e-4)  # the same function, minus the adapter's extra matmuls
    base, _ = load_model_for_inference(tiny["base"], False, device="cpu")
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, a, atol=1e-4)  # and the adapter is really in it


def test_a_row_stopped_early_counts_only_its_generated_tokens() -> None:
    eos, pad = [7, 9], 0
    assert reply_length([5, 6, 7, 0, 0], eos, pad) == 3  # the end-of-turn token counts
    assert reply_length([5, 6, 0, 0, 0], eos, pad) == 2  # stopped at a closed object, then padded
    assert reply_length([5, 6, 5, 6], eos, pad) == 4  # ran to max_new_tokens
    assert reply_length([5, 7, 7], [7], 7) == 2  # pad is eos (tiny, SmolLM2): counted once
    assert reply_length([], eos, None) == 0


def test_evaluation_runs_in_the_precision_the_model_trained_in() -> None:
    assert trained_in_bf16({"metrics": {"bf16": True}}) is True
    assert trained_in_bf16({"metrics": {"bf16": False}}) is False
    assert trained_in_bf16({"backend": "openai"}) is False
    # a promoted_model value: its `metrics` are the evaluation's, the training precision is `bf16`
    assert trained_in_bf16({"bf16": True, "metrics": {"exact_match": 0.5}}) is True
    gens = generators_for({"backend": "local", "base_model": "gemma3-ko", "base_model_path": "/b", "model_path": "/m",
                           "is_adapter": True, "metrics": {"bf16": True}})
    assert gens["base"].bf16 and gens["fine_tuned"].bf16  # both sides of the comparison alike


def test_base_runs_the_full_prompt_and_the_fine_tuned_model_its_own() -> None:
    assert prompt_kinds_for({"prompt_id": "mrdabak-v2-short"}) == {"base": "full", "fine_tuned": "short", FINE_TUNED_CONSTRAINED: "short"}
    assert prompt_kinds_for({})["fine_tuned"] == "full"  # unversioned: the old full prompt


@pytest.mark.integration
def test_constrained_twin_is_the_same_model_decoded_inside_the_schema(tiny: dict[str, Path]) -> None:
    value = {"backend": "local", "base_model": "tiny", "base_model_path": str(tiny["base"]),
             "model_path": str(tiny["adapter"]), "is_adapter": True}
    gens = with_constrained_twin(generators_for(value, batch_size=2, max_new_tokens=4))
    plain, twin = gens["fine_tuned"], gens[FINE_TUNED_CONSTRAINED]
    assert not plain.constrained and twin.constrained and twin.model_path == plain.model_path
    assert twin.name == plain.name + "+schema"


@pytest.mark.integration
def test_long_prompt_is_truncated_from_the_left_not_crashing(tiny: dict[str, Path]) -> None:
    gen = LocalHFGenerator(str(tiny["base"]), max_new_tokens=4)
    gen._load()
    gen._model.config.max_position_embeddings = 32
    out = gen.generate(PROMPTS[:2])
    assert out.n_truncated == 2 and len(out.texts) == 2


def test_missing_local_model_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        LocalHFGenerator(str(tmp_path / "nope")).generate(PROMPTS[:1])
    with pytest.raises(ValueError, match="no model_path"):
        generators_for({"backend": "local", "base_model_path": "x"})
    with pytest.raises(ValueError, match="unknown"):
        generators_for({"backend": "bedrock"})


@pytest.mark.integration
def test_openai_compatible_endpoint_same_result_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    good = assistant_target("네, 발렌타인 디너입니다.", {"dinnerType": "VALENTINE"})
    monkeypatch.setenv("TEST_EVAL_KEY", "sk-test-secret")

    def reply(model: str, messages: list[dict]) -> str:
        if "boom" in messages[-1]["content"]:
            raise RuntimeError("scripted failure")
        return good if model.startswith("ft:") else "음... 잘 모르겠어요"

    with fake_openai_server(reply) as srv:
        value = {"backend": "openai", "base_model": "gpt-4o-mini", "model_id": "ft:gpt-4o-mini:mrdabak", "base_url": srv["base_url"]}
        gens = generators_for(value, api_key_env="TEST_EVAL_KEY", max_new_tokens=50, concurrency=3)
        prompts = [*PROMPTS[:3], [{"role": "user", "content": "boom"}]]
        tuned = gens["fine_tuned"].generate(prompts)
        base = gens["base"].generate(prompts, mode="sequential")
        for g in gens.values():
            g.close()
        assert tuned.texts[:3] == [good] * 3 and base.texts[0] == "음... 잘 모르겠어요"
        # A failing request is an empty reply with its error, not a crashed evaluation.
        assert tuned.texts[3] == "" and "InternalServerError" in (tuned.errors[3] or "")
        assert tuned.stats()["n_errors"] == 1 and tuned.new_tokens[0] > 0
        bodies = [r["body"] for r in srv["requests"]]
        assert all(b["temperature"] == 0 and b["max_tokens"] == 50 for b in bodies)
        assert {b["model"] for b in bodies} == {"gpt-4o-mini", "ft:gpt-4o-mini:mrdabak"}
        assert srv["requests"][0]["auth"] == "Bearer sk-test-secret"


@pytest.mark.integration
def test_openai_endpoint_that_always_fails_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    def reply(model: str, messages: list[dict]) -> str:
        raise RuntimeError("down")

    with fake_openai_server(reply) as srv:
        gen = OpenAIChatGenerator("m", base_url=srv["base_url"], max_retries=0)
        with pytest.raises(RuntimeError, match="every request"):
            gen.generate(PROMPTS[:2])


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(alphabet=st.sampled_from(list('{}[]"\\:, a가\n')), max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(st.text(max_size=4), _JSON, max_size=4), st.sampled_from([True, False]))
def test_reply_is_closed_exactly_when_the_whole_object_is_there(obj: dict, ascii_only: bool) -> None:
    text = json.dumps(obj, ensure_ascii=ascii_only)
    assert json_object_closed(text) and json_object_closed("noise " + text + " and more")
    assert not any(json_object_closed(text[:k]) for k in range(len(text)))


@pytest.mark.integration
def test_generation_stops_when_the_reply_object_is_complete(tiny: dict[str, Path]) -> None:
    gen = LocalHFGenerator(str(tiny["base"]), max_new_tokens=40)
    gen._load()
    stop = ReplyObjectClosed(gen._tokenizer, 0)
    ids = gen._tokenizer(['{"message":"네 {x}","orderState":{}}', '{"message":"'], return_tensors="pt", padding=True)["input_ids"]
    assert stop(ids, None).tolist() == [True, False]
