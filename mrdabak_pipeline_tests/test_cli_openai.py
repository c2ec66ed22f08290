"""`mrdabak openai-jobs list|check|cancel` and `mrdabak finetune-openai` against the local fake API."""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mrdabak_pipeline.cli import openai_jobs
from mrdabak_pipeline_tests.core.cloud.test_cloud import write_dataset
from mrdabak_pipeline_tests.fake_openai_api import FakeOpenAIServer, FakeState, serve

KEY = "sk-cli-test-key-4242"


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="mrdabak")
    openai_jobs.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(list(argv))
    return args.func(args)


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    with serve(FakeState(api_key=KEY)) as srv:
        monkeypatch.setenv("OPENAI_API_KEY", KEY)
        monkeypatch.setenv("OPENAI_BASE_URL", srv.openai_base_url)
        yield srv


def test_finetune_then_rerun_attaches_and_prints_app_settings(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    train, valid = write_dataset(tmp_path)
    argv = ("finetune-openai", "--file", str(train), "--validation-file", str(valid), "--model",
            "gpt-4o-mini-2024-07-18", "--suffix", "mrdabak-voice-order", "--n-epochs", "3", "--poll-interval", "0.001")
    assert run(*argv) == 0
    out = capsys.readouterr().out
    (job,) = server.state.jobs.values()
    assert "created job " + job["id"] in out and "Fine-tuning job started" in out
    assert f"voice.llm.model={job['fine_tuned_model']}" in out
    assert f"voice.llm.api-url={server.openai_base_url}/chat/completions" in out
    assert "voice.llm.api-key=${OPENAI_API_KEY}" in out and KEY not in out

    assert run(*argv) == 0
    assert "attached to existing job " + job["id"] in capsys.readouterr().out
    assert server.state.jobs_created == 1 and server.state.uploads == 2


def test_list_check_and_cancel(server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train, _ = write_dataset(tmp_path)
    assert run("finetune-openai", "--file", str(train), "--no-wait") == 0
    (job_id,) = server.state.jobs
    capsys.readouterr()
    assert run("openai-jobs", "list") == 0
    assert job_id in capsys.readouterr().out
    assert run("openai-jobs", "check", job_id) == 0
    out = capsys.readouterr().out
    summary = json.loads(out[: out.index("}") + 1])
    assert summary["id"] == job_id and summary["status"] == "queued"  # the check itself polled once
    assert "Created fine-tuning job" in out
    assert run("openai-jobs", "cancel", job_id) == 0
    assert f"{job_id}: cancelled" in capsys.readouterr().out
    assert server.state.jobs[job_id]["status"] == "cancelled"


def test_bad_input_is_one_clear_error_line(
    server: FakeOpenAIServer, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    train, _ = write_dataset(tmp_path)
    assert run("finetune-openai", "--file", str(train), "--suffix", "mr daebak!") == 1
    assert "error: suffix 'mr daebak!' may only use letters" in capsys.readouterr().err
    assert run("finetune-openai", "--file", str(train), "--azure", "--suffix", "mrdabak-voice-order") == 1
    assert "azure allows at most 18" in capsys.readouterr().err
    assert server.state.uploads == 0  # nothing was paid for
    assert run("openai-jobs", "check", "ftjob-missing") == 1
    assert "404" in capsys.readouterr().err
    monkeypatch.delenv("OPENAI_API_KEY")
    assert run("openai-jobs", "list") == 1
    assert "set OPENAI_API_KEY" in capsys.readouterr().err
