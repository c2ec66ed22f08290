"""`mrdabak predict` and `mrdabak chat` end to end: files and piped stdin in, JSONL and a transcript out."""

from __future__ import annotations

import io
import json
import string
from pathlib import Path
from typing import Any

import pytest
import torch

from mrdabak_pipeline.cli import main
from mrdabak_pipeline.core import prompts
from mrdabak_pipeline.core.domain import assistant_target
from mrdabak_pipeline_tests.fake_openai_api import FakeState, serve
from mrdabak_pipeline_tests.tiny_chat_model import build_tiny_model

torch.set_num_threads(1)
NOW = "2026-12-01T15:00:00+09:00"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "m", extra_corpus=[string.printable])


def write_input(path: Path) -> Path:
    rows = [
        {"id": "a", "now": NOW, "messages": [{"role": "user", "content": "발렌타인 디너 주세요"}]},
        {"id": "b", "now": NOW, "messages": [
            {"role": "user", "content": "프렌치 디너"},
            {"role": "assistant", "content": assistant_target("몇 인분요?", {"dinnerType": "FRENCH"})},
            {"role": "user", "content": "두 명이요"}]},
        {"id": "c", "messages": [{"role": "user", "content": "now가 없어요"}]},
    ]
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + "\n", encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


def test_predict_local_model_constrained(tiny: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.jsonl"
    rc = main(["predict", "--model", str(tiny), "--input", str(write_input(tmp_path / "in.jsonl")),
               "--output", str(out), "--constrained", "--max-new-tokens", "600", "--device", "cpu"])
    assert rc == 0
    rows = read_jsonl(out)
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    for r in rows[:2]:
        assert set(r) == {"id", "reply", "parsed"}
        assert r["parsed"] is not None and json.loads(r["reply"])["message"] == r["parsed"]["message"]
    assert rows[2]["parsed"] is None and "now" in rows[2]["error"]
    summary = json.loads(capsys.readouterr().err.strip().splitlines()[-1])
    assert summary["parsed"] == 2 and summary["input_errors"] == 1 and summary["constrained"] is True
    assert summary["prompt_id"] == prompts.prompt_id(prompts.PromptKind.SHORT)


def test_predict_promoted_endpoint_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    state = FakeState(chat_reply=lambda model, messages: assistant_target(
        f"{model} 응답", {"dinnerType": "VALENTINE", "needsMoreInfo": ["servingStyle"]}), check_chat_model=False)
    with serve(state) as server:
        data = tmp_path / "data"
        monkeypatch.setenv("MRDABAK_DATA_DIR", str(data))
        (data / "models").mkdir(parents=True)
        (data / "models" / "promoted.json").write_text(json.dumps({
            "backend": "openai", "kind": "cloud_model", "model_id": "ft:gpt-4o-mini:org:mrdabak:x",
            "base_url": server.openai_base_url, "prompt_id": "mrdabak-v2-full"}))
        out = tmp_path / "out.jsonl"
        assert main(["predict", "--model", "promoted", "--input", str(write_input(tmp_path / "in.jsonl")),
                     "--output", str(out)]) == 0
    rows = read_jsonl(out)
    assert rows[0]["parsed"] == {"message": "ft:gpt-4o-mini:org:mrdabak:x 응답",
                                 "orderState": {"dinnerType": "VALENTINE", "needsMoreInfo": ["servingStyle"]}}
    # The promoted model's own prompt (full), rendered at each line's now.
    sent = state.chat_requests[0]["body"]["messages"][0]["content"]
    assert sent == prompts.system_prompt(NOW, prompts.PromptKind.FULL)
    with pytest.raises(SystemExit, match="trained with prompt"):
        main(["predict", "--model", "promoted", "--prompt", "short", "--input", str(tmp_path / "in.jsonl"),
              "--output", str(out)])


def test_chat_shows_reply_and_order_state_per_turn(monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    def reply(model: str, messages: list[dict[str, Any]]) -> str:
        users = [m["content"] for m in messages if m["role"] == "user"]
        if len(users) == 1:
            return assistant_target("몇 인분 드릴까요?", {"dinnerType": "VALENTINE", "needsMoreInfo": ["quantity"]})
        if "깨진" in users[-1]:
            return "이건 JSON이 아니에요"
        return assistant_target(f"{len(users)}번째 턴", {"dinnerType": "VALENTINE", "quantity": 2})

    state = FakeState(chat_reply=reply, check_chat_model=False)
    with serve(state) as server:
        monkeypatch.setattr("sys.stdin", io.StringIO("발렌타인 디너요\n\n2인분\n깨진 답 주세요\n/reset\n처음부터요\n/quit\n무시\n"))
        assert main(["chat", "--model", "mrdabak", "--base-url", server.openai_base_url, "--now", NOW]) == 0
    out = capsys.readouterr().out
    assert "2026-12-01(화) 15:00" in out
    assert "상담원: 몇 인분 드릴까요?" in out and "dinnerType: VALENTINE" in out and 'needsMoreInfo: ["quantity"]' in out
    assert "상담원: 2번째 턴" in out and "quantity: 2" in out
    assert "could not parse" in out and "raw: 이건 JSON이 아니에요" in out
    assert "[new conversation]" in out and "상담원: 몇 인분 드릴까요?" in out.split("[new conversation]")[1]
    bodies = [r["body"]["messages"] for r in state.chat_requests]
    assert len(bodies) == 4  # the blank line is skipped, nothing after /quit is sent
    # Turn 2 carries turn 1's reply as the model wrote it; /reset starts from the system prompt again.
    assert [m["role"] for m in bodies[1]] == ["system", "user", "assistant", "user"]
    assert json.loads(bodies[1][2]["content"])["message"] == "몇 인분 드릴까요?"
    assert [m["role"] for m in bodies[3]] == ["system", "user"]


def test_chat_with_a_local_model(tiny: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("발렌타인 디너 주세요\n내일 저녁이요\n"))
    assert main(["chat", "--model", str(tiny), "--constrained", "--max-new-tokens", "600", "--device", "cpu",
                 "--now", NOW]) == 0
    out = capsys.readouterr().out
    assert out.count("상담원: ") == 2 and out.count("order state:") == 2 and "could not parse" not in out
