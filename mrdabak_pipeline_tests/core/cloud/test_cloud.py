"""core.cloud: spec validation, result parsing, and the job client against the local fake API."""

from __future__ import annotations

import base64
import inspect
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mrdabak_pipeline.core.cloud import (
    JOB_SPEC_OPTIONS,
    ArmTarget,
    CloudCredentialsError,
    CloudSpecError,
    FineTuningClient,
    JobFailedError,
    app_settings,
    build_job_spec,
    default_deployment_name,
    deploy_fine_tuned_model,
    estimated_cost_usd,
    job_spec_from,
    make_sdk_client,
    manual_deployment_steps,
    parse_hparam,
    parse_result_csv,
    plot_curve,
    summarize_curve,
    training_cost_usd,
    validate_suffix,
)
from mrdabak_pipeline.core.domain import assistant_target
from mrdabak_pipeline_tests.fake_openai_api import FakeOpenAIServer, FakeState, serve
from mrdabak_pipeline_tests.prompt_fixtures import SYSTEM_PROMPT

KEY = "sk-test-core-0123456789abcdef"
FAST = {"poll_interval_s": 0.001}

# ----------------------------------------------------------------------------- spec


def test_suffix_limits_differ_by_backend() -> None:
    assert validate_suffix(None, "openai") == "mrdabak-voice-order"
    assert validate_suffix(None, "azure") == "mrdabak-voice"
    assert validate_suffix("a" * 64, "openai") == "a" * 64
    with pytest.raises(CloudSpecError, match="at most 64"):
        validate_suffix("a" * 65, "openai")
    with pytest.raises(CloudSpecError, match="at most 18"):
        validate_suffix("mrdabak-voice-order", "azure")
    with pytest.raises(CloudSpecError, match="letters, digits"):
        validate_suffix("대박-voice", "openai")
    with pytest.raises(CloudSpecError, match="empty"):
        validate_suffix("", "openai")


@given(st.text(alphabet=st.sampled_from("abcXYZ019-_"), min_size=1, max_size=18))
def test_suffix_accepts_every_allowed_string(suffix: str) -> None:
    assert validate_suffix(suffix, "azure") == suffix


@given(st.text(min_size=1, max_size=30).filter(lambda s: any(not (c.isascii() and (c.isalnum() or c in "-_")) for c in s)))
def test_suffix_rejects_any_other_character(suffix: str) -> None:
    with pytest.raises(CloudSpecError):
        validate_suffix(suffix, "openai")


@given(st.integers(min_value=1, max_value=50))
def test_integer_hparam_from_number_or_text(n: int) -> None:
    assert parse_hparam(n, "n_epochs", integer=True, low=1, high=50) == n
    assert parse_hparam(str(n), "n_epochs", integer=True, low=1, high=50) == n


@given(st.one_of(st.integers(max_value=0), st.integers(min_value=51), st.just(2.5), st.just("three"), st.just(True)))
def test_integer_hparam_rejects_out_of_range_and_junk(value: object) -> None:
    with pytest.raises(CloudSpecError, match="n_epochs"):
        parse_hparam(value, "n_epochs", integer=True, low=1, high=50)  # type: ignore[arg-type]


def test_auto_and_float_hparams() -> None:
    assert parse_hparam("AUTO", "x", integer=False, low=0.1, high=2) == "auto"
    assert parse_hparam(None, "x", integer=False, low=0.1, high=2) == "auto"
    assert parse_hparam("0.1", "x", integer=False, low=0.01, high=2) == 0.1
    with pytest.raises(CloudSpecError):
        parse_hparam(float("nan"), "x", integer=False, low=0.01, high=2)


def test_method_payloads_supervised_and_dpo() -> None:
    sft = build_job_spec(n_epochs=3, batch_size="1", learning_rate_multiplier=0.1, seed=42)
    assert sft.method_payload() == {
        "type": "supervised",
        "supervised": {"hyperparameters": {"n_epochs": 3, "batch_size": 1, "learning_rate_multiplier": 0.1}},
    }
    dpo = build_job_spec(method="dpo", beta="0.2")
    assert dpo.method_payload()["dpo"]["hyperparameters"]["beta"] == 0.2
    assert build_job_spec(method="dpo").method_payload()["dpo"]["hyperparameters"]["beta"] == "auto"
    with pytest.raises(CloudSpecError, match="beta only applies"):
        build_job_spec(beta=0.1)
    with pytest.raises(CloudSpecError, match="method"):
        build_job_spec(method="reinforcement")
    assert build_job_spec(backend="azure", model="gpt-3.5-turbo").model == "gpt-35-turbo"


def test_job_spec_from_takes_every_spec_option_and_nothing_else() -> None:
    assert set(JOB_SPEC_OPTIONS) == set(inspect.signature(build_job_spec).parameters) - {"backend"}
    settings = {"n_epochs": "3", "seed": 42, "suffix": "s", "poll_interval_s": 5.0, "file": "train.jsonl"}
    assert job_spec_from("azure", settings) == build_job_spec(backend="azure", n_epochs=3, seed=42, suffix="s")


def test_fingerprint_changes_with_data_and_hyperparameters_only() -> None:
    spec = build_job_spec(n_epochs=3)
    fp = spec.fingerprint("a" * 64, "b" * 64)
    assert fp == build_job_spec(n_epochs="3", wandb_project="w").fingerprint("a" * 64, "b" * 64)
    assert fp != build_job_spec(n_epochs=4).fingerprint("a" * 64, "b" * 64)
    assert fp != spec.fingerprint("c" * 64, "b" * 64)
    assert fp != spec.fingerprint("a" * 64, None)
    meta = spec.job_metadata("a" * 64, None, "run-1")
    assert len(meta) <= 16 and all(len(k) <= 64 and len(v) <= 512 for k, v in meta.items())


def test_costs_and_app_settings() -> None:
    assert training_cost_usd("gpt-4o-mini-2024-07-18", 1_000_000) == 3.0
    assert training_cost_usd("gpt-4o-2024-08-06", 1_000_000) == 25.0
    assert training_cost_usd("unknown-model", 10) is None
    ds = {"train_tokens": 100_000, "estimated_cost_usd": 0.9}
    assert estimated_cost_usd("gpt-4o-mini-2024-07-18", ds, 2) == 0.6  # explicit epochs: recomputed
    assert estimated_cost_usd("gpt-4o-mini-2024-07-18", ds, "auto") == 0.9  # the dataset's own estimate
    assert estimated_cost_usd("gpt-4o-mini-2024-07-18", {"train_tokens": 100_000}, "auto") == 0.9  # 3 epochs
    assert estimated_cost_usd("gpt-4o-mini-2024-07-18", {}, 3) is None
    s = app_settings(backend="openai", model="ft:gpt-4o-mini:org:x:1")
    assert s["properties"] == {
        "voice.llm.api-url": "https://api.openai.com/v1/chat/completions",
        "voice.llm.model": "ft:gpt-4o-mini:org:x:1",
        "voice.llm.api-key": "${OPENAI_API_KEY}",
    }
    assert "export VOICE_LLM_MODEL=ft:gpt-4o-mini:org:x:1" in s["env_text"]
    az = app_settings(backend="azure", model="mrdabak-voice-abc", azure_endpoint="https://r.openai.azure.com/")
    assert az["env"]["VOICE_LLM_API_URL"] == "https://r.openai.azure.com/openai/v1/chat/completions"
    assert az["env"]["VOICE_LLM_API_KEY"] == "${AZURE_OPENAI_API_KEY}"


# ----------------------------------------------------------------------------- result file

OPENAI_CSV = "step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n1,2.0,0.5,2.1,0.4\n2,1.0,0.7,,\n3,0.5,0.9,0.8,0.8\n"
AZURE_CSV = (
    "step,train_loss,train_mean_token_accuracy,valid_loss,validation_mean_token_accuracy,full_valid_loss\n"
    "1,1.5,0.6,1.6,0.55,\n2,0.9,0.8,1.0,0.75,0.95\n"
)


def test_result_csv_by_column_name_plain_and_base64() -> None:
    rows = parse_result_csv(base64.b64encode(OPENAI_CSV.encode()))
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert rows[1]["valid_loss"] is None and rows[2]["valid_accuracy"] == 0.8
    summary = summarize_curve(rows)
    assert summary["final_train_loss"] == 0.5 and summary["min_valid_loss"] == 0.8 and summary["steps"] == 3
    az = parse_result_csv(AZURE_CSV)
    assert az[1] == {"step": 2, "train_loss": 0.9, "train_accuracy": 0.8, "valid_loss": 1.0,
                     "valid_accuracy": 0.75, "full_valid_loss": 0.95, "full_valid_accuracy": None}


@given(st.permutations(["step", "train_loss", "valid_loss", "train_accuracy"]),
       st.lists(st.floats(min_value=0, max_value=10, allow_nan=False), min_size=1, max_size=5))
def test_result_csv_column_order_does_not_matter(columns: list[str], losses: list[float]) -> None:
    lines = [",".join(columns)]
    for i, loss in enumerate(losses, start=1):
        values = {"step": str(i), "train_loss": repr(loss), "valid_loss": "", "train_accuracy": "0.5"}
        lines.append(",".join(values[c] for c in columns))
    rows = parse_result_csv("\n".join(lines))
    assert [r["train_loss"] for r in rows] == losses
    assert all(r["valid_loss"] is None for r in rows)


def test_result_csv_garbage_is_a_clear_error() -> None:
    from mrdabak_pipeline.core.cloud import ResultFileError

    with pytest.raises(ResultFileError):
        parse_result_csv("not,a,metrics\nfile,at,all")
    with pytest.raises(ResultFileError):
        parse_result_csv(b"\x00\x01garbage")


def test_plot_curve_writes_png(tmp_path: Path) -> None:
    path = plot_curve(parse_result_csv(OPENAI_CSV), tmp_path / "curve.png", title="t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# ----------------------------------------------------------------------------- client vs fake API


def write_dataset(tmp_path: Path, n: int = 8, tag: str = "") -> tuple[Path, Path]:
    def line(i: int) -> str:
        return json.dumps({"messages": [
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": f"발렌타인 디너 {i}인분 주세요{tag}"},
            {"role": "assistant", "content": assistant_target("네, 준비해 드릴게요.", {"dinnerType": "valentine", "quantity": i})},
        ]}, ensure_ascii=False)

    train, valid = tmp_path / "train.jsonl", tmp_path / "validation.jsonl"
    train.write_text("\n".join(line(i) for i in range(1, n + 1)) + "\n", encoding="utf-8")
    valid.write_text(line(99) + "\n", encoding="utf-8")
    return train, valid


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with serve(FakeState(api_key=KEY)) as srv:
        yield srv


def client_for(srv: FakeOpenAIServer) -> FineTuningClient:
    return FineTuningClient(make_sdk_client("openai", api_key=KEY, base_url=srv.openai_base_url))


def test_missing_key_is_a_clear_error() -> None:
    with pytest.raises(CloudCredentialsError, match="OPENAI_API_KEY"):
        make_sdk_client("openai", api_key=None)
    with pytest.raises(CloudCredentialsError, match="AZURE_OPENAI_API_KEY"):
        make_sdk_client("azure", api_key="", azure_endpoint="https://x")


@pytest.mark.integration
def test_happy_path_streams_each_event_once_and_collects_results(server: FakeOpenAIServer, tmp_path: Path) -> None:
    train, valid = write_dataset(tmp_path)
    client = client_for(server)
    handle = client.create_or_attach(build_job_spec(n_epochs=3), train_path=train, validation_path=valid, run_id="r1")
    assert not handle.attached and [u.reused for u in handle.uploads] == [False, False]
    events, statuses = [], []
    job = client.follow(handle.job.id, on_event=lambda e: events.append(e.message),
                        on_status=lambda j: statuses.append(j.status), **FAST)
    assert statuses == ["queued", "running", "succeeded"]
    assert events[0].startswith("Created fine-tuning job") and events[-1] == "The job has successfully completed"
    assert len(events) == len(set(events)) == len(server.state.events[job.id])
    out = client.outcome(job)
    assert out["model_id"].startswith("ft:gpt-4o-mini-2024-07-18:") and ":mrdabak-voice-order:" in out["model_id"]
    assert out["trained_tokens"] > 0 and out["actual_cost_usd"] == training_cost_usd(job.model, out["trained_tokens"])
    assert [c["step"] for c in out["checkpoints"]] == [2, 4, 6]
    assert len(out["curve"]) == 6 and out["curve_summary"]["final_train_loss"] == pytest.approx(2.0 / 6, abs=1e-3)
    assert out["curve_error"] is None
    job_meta = server.state.jobs[job.id]["metadata"]
    assert job_meta["mrdabak_fingerprint"] == handle.fingerprint and job_meta["mrdabak_run_id"] == "r1"


@pytest.mark.integration
def test_same_data_and_hyperparameters_attach_instead_of_paying_twice(server: FakeOpenAIServer, tmp_path: Path) -> None:
    train, valid = write_dataset(tmp_path)
    client = client_for(server)
    spec = build_job_spec(n_epochs=3)
    first = client.create_or_attach(spec, train_path=train, validation_path=valid, run_id="r1")
    client.retrieve(first.job.id)  # now "queued": still attachable
    again = client.create_or_attach(spec, train_path=train, validation_path=valid, run_id="r2")
    assert again.attached and again.job.id == first.job.id and again.uploads == []
    assert server.state.jobs_created == 1 and server.state.uploads == 2
    # other hyperparameters: a new job, but the uploads are reused (deduplicated by content hash)
    other = client.create_or_attach(build_job_spec(n_epochs=4), train_path=train, validation_path=valid, run_id="r3")
    assert not other.attached and [u.reused for u in other.uploads] == [True, True]
    assert server.state.jobs_created == 2 and server.state.uploads == 2


@pytest.mark.integration
def test_failed_or_cancelled_jobs_are_not_reused(server: FakeOpenAIServer, tmp_path: Path) -> None:
    train, valid = write_dataset(tmp_path)
    client = client_for(server)
    spec = build_job_spec()
    first = client.create_or_attach(spec, train_path=train, validation_path=valid)
    client.cancel(first.job.id)
    second = client.create_or_attach(spec, train_path=train, validation_path=valid)
    assert not second.attached and server.state.jobs_created == 2


@pytest.mark.integration
def test_backend_without_metadata_matches_on_files_and_hyperparameters(server: FakeOpenAIServer, tmp_path: Path) -> None:
    train, valid = write_dataset(tmp_path)
    client = client_for(server)
    first = client.create_or_attach(build_job_spec(n_epochs=2), train_path=train, validation_path=valid)
    server.state.jobs[first.job.id]["metadata"] = None  # e.g. an older Azure API version
    for _ in range(3):
        client.retrieve(first.job.id)  # running: "auto" resolved server-side
    again = client.create_or_attach(build_job_spec(n_epochs=2), train_path=train, validation_path=valid)
    assert again.attached and again.job.id == first.job.id
    different = client.create_or_attach(build_job_spec(n_epochs=5), train_path=train, validation_path=valid)
    assert not different.attached


@pytest.mark.integration
def test_failed_job_raises_with_code_and_message(server: FakeOpenAIServer, tmp_path: Path) -> None:
    train, valid = write_dataset(tmp_path)
    server.state.script_next_job("validating_files", "failed", error_code="invalid_training_file",
                                 error_message="line 3 has no messages")
    client = client_for(server)
    handle = client.create_or_attach(build_job_spec(), train_path=train, validation_path=valid)
    job = client.follow(handle.job.id, **FAST)
    with pytest.raises(JobFailedError, match="invalid_training_file: line 3 has no messages") as err:
        client.outcome(job)
    assert err.value.code == "invalid_training_file" and err.value.status == "failed"


@pytest.mark.integration
def test_rate_limits_and_server_errors_are_retried(server: FakeOpenAIServer, tmp_path: Path) -> None:
    train, valid = write_dataset(tmp_path)
    client = client_for(server)
    server.state.inject(429, count=2, path_contains="/files", method="POST")
    server.state.inject(500, count=2, path_contains="/fine_tuning/jobs", method="POST")
    handle = client.create_or_attach(build_job_spec(), train_path=train, validation_path=valid)
    assert server.state.jobs_created == 1 and server.state.uploads == 2
    # more consecutive failures than the SDK retries (5): the poll loop keeps going
    server.state.inject(503, count=8, path_contains=f"/fine_tuning/jobs/{handle.job.id}", method="GET")
    transient: list[int] = []
    job = client.follow(handle.job.id, on_transient=lambda exc, n: transient.append(n), **FAST)
    assert job.status == "succeeded" and transient == [1]
    posts = [p for m, p in server.state.requests if m == "POST" and p.endswith("/fine_tuning/jobs")]
    assert len(posts) == 3  # 2 x 500, then created exactly once


@pytest.mark.integration
def test_follow_survives_a_server_restart_and_unknown_statuses(server: FakeOpenAIServer, tmp_path: Path) -> None:
    train, valid = write_dataset(tmp_path)
    server.state.script_next_job("validating_files", "queued", "paused_for_review", "running", "running", "succeeded")
    client = client_for(server)
    handle = client.create_or_attach(build_job_spec(), train_path=train, validation_path=valid)
    statuses: list[str] = []
    restarted = threading.Event()

    def on_status(job: object) -> None:
        statuses.append(job.status)  # type: ignore[attr-defined]
        if job.status == "queued" and not restarted.is_set():  # type: ignore[attr-defined]
            restarted.set()
            threading.Thread(target=server.restart, kwargs={"down_for_s": 0.2}).start()
            time.sleep(0.05)  # the next poll hits a server that is down

    job = client.follow(handle.job.id, on_status=on_status, **FAST)
    assert job.status == "succeeded" and "paused_for_review" in statuses
    assert server.state.jobs_created == 1


@pytest.mark.integration
def test_azure_client_and_arm_deployment(tmp_path: Path) -> None:
    state = FakeState(api_key=KEY, arm_token="arm-token-xyz", result_base64=False)
    with serve(state) as srv:
        sdk = make_sdk_client("azure", api_key=KEY, azure_endpoint=srv.url, api_version="2025-04-01-preview")
        client = FineTuningClient(sdk, "azure")
        train, valid = write_dataset(tmp_path)
        spec = build_job_spec(backend="azure", n_epochs=3, batch_size=1, learning_rate_multiplier=0.1, seed=42)
        handle = client.create_or_attach(spec, train_path=train, validation_path=valid)
        job = client.follow(handle.job.id, **FAST)
        out = client.outcome(job)
        assert len(out["curve"]) == 6  # plain-text CSV this time
        assert all(p.startswith("/openai/") for _, p in state.requests)
        name = default_deployment_name(spec.suffix, job.id)
        target = ArmTarget("sub-1", "rg-1", "acct", "arm-token-xyz", base_url=srv.url)
        assert "arm-token-xyz" not in repr(target)
        with httpx.Client() as http:
            res = deploy_fine_tuned_model(target, name, out["model_id"], client=http, poll_interval_s=0.001)
        assert res["provisioning_state"] == "Succeeded"
        assert state.deployments[name]["properties"]["model"]["name"] == out["model_id"]
        reply = sdk.chat.completions.create(model=name, messages=[{"role": "user", "content": "안녕하세요"}])
        assert json.loads(reply.choices[0].message.content)["orderState"]["dinnerType"] == "valentine"
    assert f"--deployment-name {name}" in manual_deployment_steps(out["model_id"], name)
