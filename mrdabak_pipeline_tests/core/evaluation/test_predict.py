"""Prediction: model specs, prompts from "now", batched replies from a tiny local model and an endpoint,
and constrained decoding that turns an untrained model's garbage into JSON the app can read."""

from __future__ import annotations

import json
import string
from pathlib import Path
from typing import Any

import pytest
import torch

from mrdabak_pipeline.core import prompts
from mrdabak_pipeline.core.domain import assistant_target
from mrdabak_pipeline.core.evaluation import predict
from mrdabak_pipeline.core.evaluation.generate import GenerationResult, LocalHFGenerator
from mrdabak_pipeline.core.reply_schema import SCHEMA_NAME
from mrdabak_pipeline_tests.fake_openai_api import FakeState, serve
from mrdabak_pipeline_tests.tiny_chat_model import build_tiny_adapter, build_tiny_model

torch.set_num_threads(1)
NOW = "2026-12-01T15:00:00+09:00"


def line(ident: str, *user_turns: str, assistant: Any = None) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "user", "content": user_turns[0]}]
    if assistant is not None:
        messages += [{"role": "assistant", "content": assistant}, {"role": "user", "content": user_turns[1]}]
    return {"id": ident, "now": NOW, "messages": messages}


LINES = [
    line("a", "발렌타인 디너 주세요"),
    line("b", "프렌치 디너 " * 6),
    line("c", "샴페인 축제 디너", "내일 저녁 7시요",
         assistant={"message": "몇 인분 드릴까요?", "orderState": {"dinnerType": "CHAMPAGNE_FEAST"}}),
    line("d", "잉글리시 디너 2인분"),
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    # Every printable ASCII character in the vocabulary, as in any real tokenizer (llguidance
    # assumes every byte can be written; the plain tiny vocabulary lacks "v" and some digits).
    base = build_tiny_model(root / "base", extra_corpus=[string.printable])
    return {"base": base, "adapter": build_tiny_adapter(base, root / "adapter")}


class Recorder:
    """A generator that answers a fixed reply and keeps the prompts it was given."""

    name = "recorder"

    def __init__(self, reply: str) -> None:
        self.reply, self.prompts = reply, []

    def generate(self, prompts_: list, mode: str = "batched") -> GenerationResult:
        self.prompts.append(prompts_)
        n = len(prompts_)
        return GenerationResult([self.reply] * n, [3] * n, 0.01, mode, "test", self.name, [None] * n)

    def close(self) -> None:
        pass


# --- model specs and prompts -----------------------------------------------------------------------


@pytest.mark.integration
def test_resolve_model_forms(tiny: dict[str, Path], tmp_path: Path) -> None:
    full = predict.resolve_model(str(tiny["base"]), tmp_path)
    assert full.is_local and not full.is_adapter and full.model_path == str(tiny["base"].absolute())
    adapter = predict.resolve_model(str(tiny["adapter"]), tmp_path, base_model=str(tiny["base"]))
    assert adapter.is_adapter and adapter.base_model_path == str(tiny["base"])
    ft = predict.resolve_model("ft:gpt-4o-mini:org:mrdabak:abc", tmp_path)
    assert ft.backend == "openai" and ft.model_id == "ft:gpt-4o-mini:org:mrdabak:abc"
    served = predict.resolve_model("mrdabak", tmp_path, base_url="http://localhost:8000/v1")
    assert served.model_id == "mrdabak" and served.base_url == "http://localhost:8000/v1"
    with pytest.raises(predict.ModelSpecError, match="promoted"):
        predict.resolve_model("promoted", tmp_path)
    with pytest.raises(predict.ModelSpecError, match="not 'promoted'"):
        predict.resolve_model("no-such-thing", tmp_path)


@pytest.mark.integration
def test_promoted_pointer_and_value_files(tiny: dict[str, Path], tmp_path: Path) -> None:
    # What the promoted_model asset writes for a local adapter (promotion.serving_instructions + extras).
    pointer = tmp_path / "models" / "promoted.json"
    pointer.parent.mkdir(parents=True)
    pointer.write_text(json.dumps({
        "backend": "local", "kind": "adapter", "adapter_path": str(tiny["adapter"]),
        "model_path": str(tiny["adapter"]), "base_model_path": str(tiny["base"]),
        "serve_command": "vllm serve ...", "prompt_id": "mrdabak-v2-short",
    }))
    spec = predict.resolve_model("promoted", tmp_path)
    assert (spec.is_adapter, spec.model_path, spec.base_model_path, spec.label) == (
        True, str(tiny["adapter"]), str(tiny["base"]), "promoted")
    assert spec.prompt_id == "mrdabak-v2-short"
    # A cloud fine_tuned_model value saved as JSON; Azure calls its deployment.
    value = tmp_path / "ft.json"
    value.write_text(json.dumps({"backend": "azure", "model_id": "ft:x", "deployment": "mrdabak-dep",
                                 "base_url": "https://r.openai.azure.com"}))
    cloud = predict.resolve_model(str(value), tmp_path)
    assert (cloud.backend, cloud.model_id, cloud.base_url) == ("azure", "mrdabak-dep", "https://r.openai.azure.com")


def test_a_promoted_bf16_model_is_served_in_bf16(tiny: dict[str, Path], tmp_path: Path) -> None:
    # The promoted value is what `promotion.serving_instructions` writes for a fine_tuned_model value
    # trained under bf16 autocast: prediction and chat then generate in bf16, as evaluation did.
    from mrdabak_pipeline.core.evaluation.promotion import serving_instructions

    trained = {"backend": "local", "model_path": str(tiny["adapter"]), "base_model_path": str(tiny["base"]),
               "is_adapter": True, "prompt_id": "mrdabak-v2-short", "metrics": {"bf16": True}}
    pointer = tmp_path / "models" / "promoted.json"
    pointer.parent.mkdir(parents=True)
    pointer.write_text(json.dumps({**serving_instructions(trained), "metrics": {"exact_match": 0.2}}))
    spec = predict.resolve_model("promoted", tmp_path)
    assert spec.bf16 and predict.build_generator(spec).bf16
    plain = predict.resolve_model(str(tiny["adapter"]), tmp_path, base_model=str(tiny["base"]))
    assert not plain.bf16  # a bare folder says nothing of its training: fp32


def test_choose_prompt() -> None:
    recorded = predict.ModelSpec("local", "m", model_path="/m", prompt_id="mrdabak-v2-full")
    assert predict.choose_prompt(recorded).kind == prompts.PromptKind.FULL
    assert predict.choose_prompt(recorded, "full").prompt_id == "mrdabak-v2-full"
    with pytest.raises(prompts.PromptMismatchError):
        predict.choose_prompt(recorded, "short")
    bare = predict.ModelSpec("local", "m", model_path="/m")
    assert predict.choose_prompt(bare).kind == prompts.PromptKind.SHORT  # what fine-tuned models train with
    assert predict.choose_prompt(bare, "full").kind == prompts.PromptKind.FULL
    # A model value from before prompts were versioned ran with the full prompt in evaluation: same here.
    legacy = predict.spec_from_value({"backend": "openai", "model_id": "ft:old"})
    assert legacy.prompt_id is None and predict.choose_prompt(legacy).kind == prompts.PromptKind.FULL
    versioned = predict.spec_from_value({"backend": "openai", "model_id": "ft:new", "prompt_id": "mrdabak-v2-short"})
    assert predict.choose_prompt(versioned).kind == prompts.PromptKind.SHORT


def test_conversation_validation() -> None:
    conv = predict.parse_conversation(LINES[2])
    # The assistant object becomes the app's JSON text, exactly as training writes it.
    assert conv.turns[1]["content"] == assistant_target("몇 인분 드릴까요?", {"dinnerType": "CHAMPAGNE_FEAST"})
    assert conv.now.isoformat() == NOW
    for bad, reason in [
        ({"id": 1, "messages": [{"role": "user", "content": "x"}]}, "now"),
        ({"now": NOW, "messages": []}, "messages"),
        ({"now": NOW, "messages": [{"role": "system", "content": "x"}, {"role": "user", "content": "y"}]}, "role"),
        ({"now": NOW, "messages": [{"role": "user", "content": "x"}, {"role": "assistant", "content": "{}"}]}, "last"),
        ({"now": "yesterday", "messages": [{"role": "user", "content": "x"}]}, "ISO"),
        (None, "JSON object"),
    ]:
        with pytest.raises(ValueError, match=reason):
            predict.parse_conversation(bad)


def test_system_prompt_rendered_from_now_and_errors_keep_their_line() -> None:
    reply = assistant_target("네", {"dinnerType": "VALENTINE"})
    gen = Recorder(reply)
    objects = [LINES[0], {"id": "bad", "messages": []}, None, LINES[2]]
    choice = predict.PromptChoice(prompts.PromptKind.FULL, prompts.PROMPT_VERSION)
    records, stats = predict.predict_objects(objects, gen, choice)
    assert [r["id"] for r in records] == ["a", "bad", None, "c"]
    assert records[0] == {"id": "a", "reply": reply,
                          "parsed": {"message": "네", "orderState": {"dinnerType": "VALENTINE"}}}
    assert records[1]["reply"] is None and records[1]["error"].startswith("input:")
    assert (stats.n_answered, stats.n_parsed, stats.n_input_errors) == (2, 2, 2)
    (batch,) = gen.prompts  # one batched call for all valid lines
    assert len(batch) == 2
    assert batch[0][0] == {"role": "system", "content": prompts.system_prompt(NOW, prompts.PromptKind.FULL)}
    assert "2026-12-01(화) 15:00" in batch[0][0]["content"]
    assert [m["role"] for m in batch[1]] == ["system", "user", "assistant", "user"]


# --- local tiny model ------------------------------------------------------------------------------------


@pytest.mark.integration
def test_predict_local_adapter_batched(tiny: dict[str, Path], tmp_path: Path) -> None:
    spec = predict.resolve_model(str(tiny["adapter"]), tmp_path)
    gen = predict.build_generator(spec, batch_size=3, max_new_tokens=8, device="cpu")
    records, stats = predict.predict_objects(LINES, gen, predict.choose_prompt(spec))
    gen.close()
    assert [r["id"] for r in records] == ["a", "b", "c", "d"]
    assert all(isinstance(r["reply"], str) and r["reply"] for r in records)
    assert stats.n_answered == 4 and stats.new_tokens > 0


@pytest.mark.integration
def test_constrained_decoding_makes_an_untrained_model_write_the_apps_json(tiny: dict[str, Path]) -> None:
    """The untrained tiny model writes garbage; with the schema mask the same weights write JSON
    the app parses, every time (and without it, never)."""
    choice = predict.PromptChoice(prompts.PromptKind.SHORT, prompts.PROMPT_VERSION)
    out = {}
    for constrained in (False, True):
        gen = LocalHFGenerator(str(tiny["base"]), batch_size=2, max_new_tokens=600, device="cpu",
                               constrained=constrained)
        out[constrained] = predict.predict_objects(LINES, gen, choice)
        gen.close()
    free, free_stats = out[False]
    masked, masked_stats = out[True]
    assert free_stats.n_parsed == 0 and all(r["parsed"] is None for r in free)
    assert masked_stats.n_parsed == len(LINES)
    for r in masked:
        raw = json.loads(r["reply"])
        assert set(raw) == {"message", "orderState"} and raw["message"] == r["parsed"]["message"]
    # It stops at the closing brace instead of running to the token limit.
    assert masked_stats.new_tokens < len(LINES) * 600


@pytest.mark.integration
def test_constrained_batch_equals_one_by_one(tiny: dict[str, Path]) -> None:
    """Per-row grammar state: a row's reply does not depend on the rows it is batched with."""
    prompts_ = [predict.prompt_messages(predict.parse_conversation(x), predict.PromptChoice(
        prompts.PromptKind.SHORT, prompts.PROMPT_VERSION)) for x in LINES]
    gen = LocalHFGenerator(str(tiny["base"]), batch_size=4, max_new_tokens=600, device="cpu", constrained=True)
    batched = gen.generate(prompts_, mode="batched")
    sequential = gen.generate(prompts_, mode="sequential")
    gen.close()
    assert batched.texts == sequential.texts


# --- OpenAI-compatible endpoint ------------------------------------------------------------------------------


@pytest.mark.integration
def test_predict_on_an_endpoint_with_response_format() -> None:
    def reply(model: str, messages: list[dict[str, Any]]) -> str:
        turns = sum(m["role"] == "user" for m in messages)
        return assistant_target(f"{turns}번째 말씀 확인했습니다", {"dinnerType": "FRENCH", "quantity": turns})

    state = FakeState(chat_reply=reply, check_chat_model=False)
    with serve(state) as server:
        spec = predict.resolve_model("mrdabak", Path("."), base_url=server.openai_base_url)
        for constrained in (False, True):
            gen = predict.build_generator(spec, constrained=constrained, concurrency=2)
            records, stats = predict.predict_objects(LINES, gen, predict.choose_prompt(spec))
            gen.close()
            assert stats.n_parsed == 4 and stats.n_generation_errors == 0
            assert records[2]["parsed"] == {"message": "2번째 말씀 확인했습니다",
                                            "orderState": {"dinnerType": "FRENCH", "quantity": 2}}
    plain, masked = state.chat_requests[:4], state.chat_requests[4:]
    assert all("response_format" not in r["body"] for r in plain)
    fmt = masked[0]["body"]["response_format"]
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["name"] == SCHEMA_NAME and fmt["json_schema"]["strict"]
    assert masked[0]["body"]["messages"][0]["content"] == prompts.system_prompt(NOW, prompts.PromptKind.SHORT)


@pytest.mark.integration
def test_endpoint_refusing_the_schema_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A schema the API refuses (here the local, non-strict one sent as strict) fails every request."""
    from mrdabak_pipeline.core import reply_schema

    monkeypatch.setattr(reply_schema, "response_format", lambda: {
        "type": "json_schema",
        "json_schema": {"name": SCHEMA_NAME, "schema": reply_schema.reply_json_schema(), "strict": True}})
    with serve(FakeState(check_chat_model=False)) as server:
        gen = predict.build_generator(predict.resolve_model("m", Path("."), base_url=server.openai_base_url),
                                      constrained=True)
        with pytest.raises(RuntimeError, match="strict mode|required"):
            predict.predict_objects(LINES[:1], gen, predict.PromptChoice(prompts.PromptKind.SHORT, 2))
